//! A supervisor's children as it sees them ([`Member`]: pause, restart, stop), and
//! an actor child's side of the link ([`ChildSide`], the runtime's [`Supervision`]
//! hook), which reports to the supervisor and waits for its [`Directive`]s.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::tree::{push, watch_exit, Child, Report, Roster, SupMsg, SupRoute};
use crate::local::cell::ActorCell;
use crate::local::stop::StopReason;
use crate::local::supervision::Control;
use crate::local::supervision::{Directive, Supervision};
use crate::node::Node;

/// What a supervisor holds of a child: how to pause, restart and stop it.
pub(super) trait Member: Send + Sync {
    /// Pause after the current message, then report `Halted`.
    fn pause(&self);
    /// Answers its `Halted`: restart.
    fn restart(&self);
    /// Stop for good, whether running or halted.
    fn stop(&self, reason: StopReason);
    /// Resolves when it has stopped.
    fn stopped(&self) -> Pin<Box<dyn Future<Output = StopReason> + Send>>;
}

/// Between a supervisor and one actor child: the pause request and, while the
/// child is halted, the answer it waits for.
#[derive(Default)]
struct Shared {
    pause: AtomicBool,
    halted: Mutex<Option<Halted>>,
}

struct Halted {
    reply: oneshot::Sender<Directive>,
    /// The panic it halted on, if it did not just pause.
    failure: Option<String>,
}

/// The child's side ([`Supervision`]), kept in its slot.
pub(super) struct ChildSide {
    /// Weak: a supervisor is kept running by its handles and by the tasks that
    /// watch its children, not by a stopped child's lingering references.
    parent: Weak<SupRoute>,
    roster: Arc<Roster>,
    node: Node,
    shared: Arc<Shared>,
    cell: OnceLock<Arc<ActorCell>>,
    attached: AtomicBool,
}

impl ChildSide {
    pub(super) fn new(parent: &Arc<SupRoute>, roster: &Arc<Roster>, node: &Node) -> Self {
        ChildSide {
            parent: Arc::downgrade(parent),
            roster: roster.clone(),
            node: node.clone(),
            shared: Arc::default(),
            cell: OnceLock::new(),
            attached: AtomicBool::new(false),
        }
    }

    /// Whether its supervisor took it (false: the supervisor had stopped).
    pub(super) fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }
}

impl Supervision for ChildSide {
    fn attach(&self, cell: &Arc<ActorCell>, control: Weak<dyn Control>) {
        let _ = self.cell.set(cell.clone());
        let member = ActorMember {
            cell: cell.clone(),
            control: control.clone(),
            shared: self.shared.clone(),
        };
        let child = Child::new(cell.id, Box::new(member));
        let added = (self.parent.upgrade()).filter(|_| self.roster.enlist(child));
        match added {
            Some(parent) => {
                watch_exit(&self.node, parent, cell.id, cell);
                self.attached.store(true, Ordering::Release);
            }
            // The supervisor is gone: the child must not run unsupervised.
            None => cell.request_stop(StopReason::Normal),
        }
    }

    fn pause_requested(&self) -> bool {
        self.shared.pause.load(Ordering::Acquire)
    }

    fn supervisor(&self) -> Option<crate::id::ActorId> {
        self.parent.upgrade().map(|parent| parent.cell.id)
    }

    fn halted(&self, failure: Option<String>) -> Pin<Box<dyn Future<Output = Directive> + Send>> {
        // Without a supervisor to answer: a panic stops it, a pause ends as asked.
        let cell = self.cell.get().cloned();
        let fallback = {
            let failure = failure.clone();
            move || match failure {
                Some(message) => StopReason::Panicked { message },
                None => cell
                    .and_then(|cell| cell.stop_requested())
                    .unwrap_or(StopReason::Normal),
            }
        };
        let (reply, answer) = oneshot::channel();
        // Reporting covers a pending pause request too.
        self.shared.pause.store(false, Ordering::Release);
        *self.shared.halted.lock() = Some(Halted {
            reply,
            failure: failure.clone(),
        });
        let id = self.cell.get().map(|cell| cell.id);
        let reported = match (self.parent.upgrade(), id) {
            (Some(parent), Some(child)) => {
                let report = Report::Halted { failure };
                push(&parent, SupMsg::Report { child, report }).is_ok()
            }
            _ => false,
        };
        if !reported {
            self.shared.halted.lock().take();
        }
        Box::pin(async move {
            match answer.await {
                Ok(directive) => directive,
                // The supervisor stopped without answering.
                Err(_) => Directive::Stop(fallback()),
            }
        })
    }

    fn started(&self) {
        let (Some(parent), Some(cell)) = (self.parent.upgrade(), self.cell.get()) else {
            return;
        };
        let report = SupMsg::Report {
            child: cell.id,
            report: Report::Started,
        };
        let _ = push(&parent, report);
    }
}

/// The supervisor's side of an actor child.
struct ActorMember {
    cell: Arc<ActorCell>,
    control: Weak<dyn Control>,
    shared: Arc<Shared>,
}

impl Member for ActorMember {
    fn pause(&self) {
        self.shared.pause.store(true, Ordering::Release);
        if let Some(control) = self.control.upgrade() {
            control.wake();
        }
    }

    fn restart(&self) {
        // A pause asked for before it halted (on a panic) is answered by this.
        self.shared.pause.store(false, Ordering::Release);
        if let Some(waiting) = self.shared.halted.lock().take() {
            let _ = waiting.reply.send(Directive::Restart);
        }
    }

    fn stop(&self, reason: StopReason) {
        let waiting = self.shared.halted.lock().take();
        match waiting {
            // A child that panicked and is not restarted stops as `Panicked`, as
            // under the runtime's own restart policy.
            Some(waiting) => {
                let reason = match waiting.failure {
                    Some(message) => StopReason::Panicked { message },
                    None => reason,
                };
                let _ = waiting.reply.send(Directive::Stop(reason));
            }
            None => match self.control.upgrade() {
                Some(control) => control.stop(reason),
                None => self.cell.request_stop(reason),
            },
        }
    }

    fn stopped(&self) -> Pin<Box<dyn Future<Output = StopReason> + Send>> {
        Box::pin(self.cell.monitor())
    }
}

impl Drop for ActorMember {
    /// The supervisor is gone: a child waiting for it must not wait forever
    /// (dropping the reply makes it stop).
    fn drop(&mut self) {
        self.shared.halted.lock().take();
    }
}

/// The supervisor's side of a child supervisor: the same requests, as messages.
pub(super) struct SupervisorMember {
    cell: Arc<ActorCell>,
    /// Weak: a parent must not keep its child supervisor running.
    route: Weak<SupRoute>,
}

impl SupervisorMember {
    pub(super) fn new(route: &Arc<SupRoute>) -> Self {
        SupervisorMember {
            cell: route.cell.clone(),
            route: Arc::downgrade(route),
        }
    }
}

impl Member for SupervisorMember {
    fn pause(&self) {
        if let Some(route) = self.route.upgrade() {
            let _ = push(&route, SupMsg::Pause);
        }
    }

    fn restart(&self) {
        if let Some(route) = self.route.upgrade() {
            let _ = push(&route, SupMsg::Restart);
        }
    }

    fn stop(&self, reason: StopReason) {
        self.cell.request_stop(reason);
        if let Some(route) = self.route.upgrade() {
            route.slot.schedule();
        }
    }

    fn stopped(&self) -> Pin<Box<dyn Future<Output = StopReason> + Send>> {
        Box::pin(self.cell.monitor())
    }
}
