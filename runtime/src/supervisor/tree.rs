//! The supervisor actor: its messages, its children's states, and the plan it
//! follows when they fail (restart one, restart all in order, escalate, give up).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::member::Member;
use super::{Strategy, SupervisorEvent};
use crate::id::{stable_id, ActorId};
use crate::interface::Interface;
use crate::local::actor::{Actor, Context, Restart};
use crate::local::cell::ActorCell;
use crate::local::dispatch::{Dispatch, Lent};
use crate::local::mailbox::Envelope;
use crate::local::route::LocalRoute;
use crate::local::stop::StopReason;
use crate::node::Node;
use crate::reference::{RefCore, Route};

pub(super) type SupRoute = LocalRoute<SupMsg>;

/// The supervisor actor's reference (an interface written by hand: its messages
/// carry trait objects and never leave the node).
#[derive(Clone)]
pub(super) struct SupRef {
    core: RefCore<SupMsg>,
}

impl SupRef {
    /// The route to the supervisor (always local: it is spawned here).
    pub(super) fn route(&self) -> Option<&Arc<SupRoute>> {
        match self.core.route() {
            Route::Local(route) => Some(route),
            Route::Remote(_) => None,
        }
    }
}

impl Interface for SupRef {
    const NAME: &'static str = "remora.Supervisor";
    const ID: u64 = stable_id(Self::NAME);
    type Msg = SupMsg;

    fn from_core(core: RefCore<SupMsg>) -> Self {
        SupRef { core }
    }

    fn core(&self) -> &RefCore<SupMsg> {
        &self.core
    }
}

pub(super) enum SupMsg {
    /// News from a child.
    Report { child: ActorId, report: Report },
    /// From this supervisor's parent: pause every child, then report `Halted`.
    Pause,
    /// From this supervisor's parent, after `Halted`: restart every child in order.
    Restart,
}

pub(super) enum Report {
    Halted { failure: Option<String> },
    Started,
    Exited(StopReason),
}

impl Dispatch<Tree> for SupMsg {
    async fn dispatch(self, tree: Lent<'_, Tree>) {
        tree.exclusive().handle(self)
    }

    /// No reply slots: nobody waits for a supervisor's messages.
    fn settle_deadline(&mut self, _at: tokio::time::Instant) {}
}

/// Children a supervisor has not taken into its state yet. Not a message: a
/// supervisor stopping drops its queued messages, and must still stop every child.
pub(super) struct Roster {
    /// `None` once the supervisor has stopped its children.
    joining: Mutex<Option<Vec<Child>>>,
}

impl Roster {
    /// Adds a child; false if the supervisor has already stopped its children.
    pub(super) fn enlist(&self, child: Child) -> bool {
        match &mut *self.joining.lock() {
            Some(children) => {
                children.push(child);
                true
            }
            None => false,
        }
    }

    /// The children enlisted since the last call; with `close`, no more can join.
    fn take(&self, close: bool) -> Vec<Child> {
        let mut joining = self.joining.lock();
        let children = joining.take().unwrap_or_default();
        if !close {
            *joining = Some(Vec::new());
        }
        children
    }
}

impl Default for Roster {
    fn default() -> Self {
        Roster {
            joining: Mutex::new(Some(Vec::new())),
        }
    }
}

/// Queues `msg` for the supervisor behind `route`; `Err` if it has stopped.
pub(super) fn push(route: &SupRoute, msg: SupMsg) -> Result<(), ()> {
    route.push(Envelope::new(msg)).map_err(|_| ())
}

/// Tells the supervisor when `child` ends. The task holds the supervisor's route:
/// a supervisor runs at least as long as its children.
pub(super) fn watch_exit(node: &Node, supervisor: Arc<SupRoute>, child: ActorId, cell: &ActorCell) {
    let stopped = cell.monitor();
    node.spawn_task(async move {
        let reason = stopped.await;
        let report = Report::Exited(reason);
        let _ = push(&supervisor, SupMsg::Report { child, report });
    });
}

/// The supervisor's state: its children in start order and what it is doing.
pub(super) struct Tree {
    roster: Arc<Roster>,
    strategy: Strategy,
    limit: Restart,
    /// When past restarts happened, inside the window.
    restarts: VecDeque<Instant>,
    children: Vec<Child>,
    mode: Mode,
    /// Restarted by the parent: report `Started` once every child runs again.
    owe_started: bool,
    parent: Option<Weak<SupRoute>>,
    events: broadcast::Sender<SupervisorEvent>,
    ctx: Option<Context>,
}

enum Mode {
    /// Restarting whichever child has halted.
    Serving,
    /// One for all: first every child halts (`Down`), then each is restarted in
    /// start order, one at a time (`Up`).
    RestartAll(Phase),
    /// Every child halts, then this supervisor reports to its parent.
    Quiesce(Goal),
    /// Halted itself: waiting for its parent's word, or stopping.
    Halted,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Down,
    Up,
}

enum Goal {
    /// The restart limit was crossed: report this (as the failure's message).
    Escalate(StopReason),
    /// The parent asked for a pause.
    Pause,
}

pub(super) struct Child {
    id: ActorId,
    member: Box<dyn Member>,
    state: State,
}

impl Child {
    pub(super) fn new(id: ActorId, member: Box<dyn Member>) -> Self {
        Child {
            id,
            member,
            state: State::Running,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Running,
    /// Asked to pause; its `Halted` has not arrived yet.
    Pausing,
    /// Waiting for a directive.
    Halted,
    /// Told to restart; its `Started` has not arrived yet.
    Restarting,
}

impl Actor for Tree {
    async fn on_start(&mut self, ctx: &Context) {
        self.ctx = Some(ctx.clone());
    }

    /// Stops the children, last started first, each before the next.
    async fn on_stop(&mut self, reason: &StopReason) {
        self.mode = Mode::Halted;
        let late = self.roster.take(true);
        self.children.extend(late);
        while let Some(child) = self.children.pop() {
            let stopped = child.member.stopped();
            child.member.stop(reason.clone());
            let reason = stopped.await;
            self.emit(SupervisorEvent::ChildStopped {
                child: child.id,
                reason,
            });
        }
    }
}

impl Tree {
    pub(super) fn new(
        strategy: Strategy,
        limit: Restart,
        roster: Arc<Roster>,
        parent: Option<Weak<SupRoute>>,
        events: broadcast::Sender<SupervisorEvent>,
    ) -> Self {
        Tree {
            roster,
            strategy,
            limit,
            restarts: VecDeque::new(),
            children: Vec::new(),
            mode: Mode::Serving,
            owe_started: false,
            parent,
            events,
            ctx: None,
        }
    }

    fn handle(&mut self, msg: SupMsg) {
        // Enlisted before any report of theirs was sent.
        let joined = self.roster.take(false);
        self.children.extend(joined);
        match msg {
            SupMsg::Report { child, report } => self.report(child, report),
            SupMsg::Pause => {
                if matches!(self.mode, Mode::Serving | Mode::RestartAll(_)) {
                    self.mode = Mode::Quiesce(Goal::Pause);
                }
            }
            SupMsg::Restart => {
                if matches!(self.mode, Mode::Halted) {
                    // A restarted supervisor starts with a clean record, as a new
                    // OTP supervisor process would.
                    self.restarts.clear();
                    self.mode = Mode::RestartAll(Phase::Up);
                    self.owe_started = true;
                }
            }
        }
        self.advance();
    }

    fn report(&mut self, id: ActorId, report: Report) {
        let Some(index) = self.children.iter().position(|c| c.id == id) else {
            return;
        };
        match report {
            Report::Halted { failure } => {
                self.children[index].state = State::Halted;
                if let Some(message) = failure {
                    tracing::warn!(supervisor = ?self.id(), child = %id, %message, "child failed");
                    self.emit(SupervisorEvent::ChildFailed {
                        child: id,
                        message: message.clone(),
                    });
                    // While halting for a parent, the parent's decision covers it.
                    if matches!(self.mode, Mode::Serving | Mode::RestartAll(_)) {
                        self.failed(format!("{id}: {message}"));
                    }
                }
            }
            Report::Started => {
                if self.children[index].state == State::Restarting {
                    self.children[index].state = State::Running;
                    self.emit(SupervisorEvent::ChildRestarted { child: id });
                }
            }
            Report::Exited(reason) => {
                self.children.remove(index);
                self.emit(SupervisorEvent::ChildStopped { child: id, reason });
            }
        }
    }

    /// A child failed: within the limit, plan its restart (or everyone's); past it, give up.
    fn failed(&mut self, failure: String) {
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.limit.within)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.limit.max as usize {
            let reason = self.limit_reason(failure.clone());
            tracing::error!(supervisor = ?self.id(), %reason, "supervisor gives up");
            self.emit(SupervisorEvent::LimitReached { last: failure });
            match &self.parent {
                Some(_) => self.mode = Mode::Quiesce(Goal::Escalate(reason)),
                None => self.give_up(reason),
            }
            return;
        }
        self.restarts.push_back(now);
        if self.strategy == Strategy::OneForAll {
            self.mode = Mode::RestartAll(Phase::Down);
        }
    }

    /// Moves the plan along as far as the children's states allow.
    fn advance(&mut self) {
        loop {
            match &self.mode {
                Mode::Serving => {
                    for index in 0..self.children.len() {
                        if self.children[index].state == State::Halted {
                            self.restart(index);
                        }
                    }
                    return;
                }
                Mode::RestartAll(Phase::Down) => {
                    if !self.all_halted() {
                        return;
                    }
                    self.mode = Mode::RestartAll(Phase::Up);
                }
                Mode::RestartAll(Phase::Up) => {
                    if self.any(State::Restarting) {
                        return; // one at a time, in start order
                    }
                    if let Some(index) = self.children.iter().position(|c| c.state == State::Halted)
                    {
                        self.restart(index);
                        return;
                    }
                    self.mode = Mode::Serving;
                    if std::mem::take(&mut self.owe_started) {
                        self.tell_parent(Report::Started);
                    }
                }
                Mode::Quiesce(_) => {
                    if !self.all_halted() {
                        return;
                    }
                    let Mode::Quiesce(goal) = std::mem::replace(&mut self.mode, Mode::Halted)
                    else {
                        return;
                    };
                    self.owe_started = false;
                    let (failure, reason) = match goal {
                        Goal::Escalate(reason) => (Some(reason.to_string()), Some(reason)),
                        Goal::Pause => (None, None),
                    };
                    let reported = self.tell_parent(Report::Halted { failure });
                    // The parent is stopping (and stops this supervisor too); past
                    // its limit, this one still stops with its own reason.
                    if let (false, Some(reason)) = (reported, reason) {
                        self.give_up(reason);
                    }
                    return;
                }
                Mode::Halted => return,
            }
        }
    }

    /// Asks every running child to pause; whether all have halted by now.
    fn all_halted(&mut self) -> bool {
        for child in &mut self.children {
            if child.state == State::Running {
                child.state = State::Pausing;
                child.member.pause();
            }
        }
        !self.any(State::Pausing) && !self.any(State::Restarting)
    }

    fn any(&self, state: State) -> bool {
        self.children.iter().any(|c| c.state == state)
    }

    fn restart(&mut self, index: usize) {
        let child = &mut self.children[index];
        child.state = State::Restarting;
        child.member.restart();
    }

    /// A root supervisor past its limit: stop, and with it every child (`on_stop`).
    fn give_up(&mut self, reason: StopReason) {
        self.mode = Mode::Halted;
        if let Some(control) = self.ctx.as_ref().and_then(|ctx| ctx.control.upgrade()) {
            control.stop(reason);
        }
    }

    fn limit_reason(&self, last: String) -> StopReason {
        StopReason::RestartLimit {
            max: self.limit.max,
            within: self.limit.within,
            last,
        }
    }

    /// Sends `report` to the parent; false without one.
    fn tell_parent(&self, report: Report) -> bool {
        let (Some(parent), Some(id)) = (self.parent.as_ref().and_then(Weak::upgrade), self.id())
        else {
            return false;
        };
        push(&parent, SupMsg::Report { child: id, report }).is_ok()
    }

    fn id(&self) -> Option<ActorId> {
        self.ctx.as_ref().map(Context::id)
    }

    fn emit(&self, event: SupervisorEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }
}
