//! The protocol core of one connection, in quinn-proto's style: a state machine
//! that knows nothing of sockets, channels, tasks or clocks.
//!
//! A [`Core`] owns what a connection decides: call ids (through its
//! [`Session`]), the calls waiting for a reply and their deadlines, the monitors
//! each side holds on the other's objects, and what a lost connection means for
//! all of them. A driver feeds it input and pulls its output:
//!
//! - input: [`Core::acquire`] then [`Core::call`] (the one send path of every
//!   proxy: ask, tell, receipt, exactly-once attempt), [`Core::abandon`] (a
//!   caller gave its call up: a `Cancel` follows it), [`Core::serving`] and
//!   [`Core::served`] (the peer's asks we serve, which its `Cancel` may name;
//!   one naming anything else is ignored and reported), [`Core::reply`],
//!   [`Core::owe`], [`Core::monitor`], [`Core::watched`], [`Core::handle_frame`],
//!   [`Core::handle_value`], [`Core::handle_timeout`], [`Core::close`];
//! - output: [`Core::poll_transmit`] (frames to write, on their lane),
//!   [`Core::poll_event`] (answers for waiting callers and watchers, monitor tasks
//!   to cancel), [`Core::poll_timeout`] (when to call `handle_timeout` next).
//!
//! Time is an argument (`now`, a `tokio::time::Instant` as data), never read here, so the unit tests below drive two
//! cores against each other with a virtual clock: deterministic, no sockets, no
//! sleeping. [`Connection`](super::connection::Connection) is the driver shared by
//! both transports (QUIC and in-process channels), which only move bytes.
//!
//! What a waiter, a watcher and a monitor task are is the driver's business
//! ([`Sinks`]): answer slots, oneshot senders and task handles in the runtime,
//! plain numbers in the tests.
//!
//! **Credit.** Each side may have at most the peer's `window` (from its `Hello`)
//! calls outstanding per target object: an ask until its answer, a tell until the
//! peer gives it back in a `Credit` frame, which it does once the tell is in the
//! object's mailbox (or refused). A sender out of credit for a target waits or is
//! refused ([`Core::acquire`]); a receiver therefore holds at most `window` calls
//! per peer and object that wait for room in a full mailbox, and never has to stop
//! reading a lane for one slow object.
//!
//! **Lanes.** Calls go out on a bounded set of ordered lanes ([`MAX_LANES`]
//! streams over QUIC). A target with calls outstanding stays on its lane, so its
//! calls arrive in order; a target with none outstanding has nothing in flight to
//! overtake, and is placed afresh on the least busy lane. A connection so uses a
//! bounded number of streams however many objects it calls, and a large call to
//! one object holds up another only when more objects than lanes are busy at once.

mod deadlines;

use std::collections::hash_map::Entry;
use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::marshal::{Answer, Args, Moved};
use crate::error::{CallError, NodeLabel};
use crate::hash::HashMap;
use crate::id::NodeId;
use crate::local::stop::StopReason;
use crate::wire::codec::{encode_lent, encode_to_vec, EncodeError, Encoded, Limits};
use crate::wire::{Call, CallContext, Frame, Hello, Incoming, ObjectId, Session, SessionError};
use deadlines::Deadlines;

/// Which ordered stream of frames a frame belongs to. Frames of one lane arrive in
/// order; lanes do not wait for each other (a large call to one actor never holds
/// up a small call to another).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// Handshake, pings, leases and monitors.
    Control,
    /// Calls (asks and tells) from this node to the peer's objects: one of at
    /// most [`MAX_LANES`] (see the module doc).
    Call(u16),
    /// Replies to the calls that came in on the peer's lane with this number.
    Reply(u64),
    /// The items of one pipe stream (see `remote::pipes`), in order, ended by its
    /// `PipeEnd`: a stream of its own over QUIC, so that a pipe never holds up
    /// calls or other pipes.
    Pipe(u64),
}

/// The most call lanes a connection opens toward its peer.
pub(crate) const MAX_LANES: usize = 16;

/// What a call carries besides its arguments: its call chain (cycle detection),
/// for an exactly-once method its logical id (0 for none), and its context (the
/// remaining budget: filled in as the call is framed, read as it arrives).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CallTags {
    pub(crate) chain: u64,
    pub(crate) once: u64,
    pub(crate) context: CallContext,
}

/// A call or reply moved as a value, not encoded: between nodes of one process, for
/// values without references.
pub(crate) enum ValueFrame {
    Call {
        id: u64,
        target: ObjectId,
        interface: u64,
        method: u64,
        args: Moved,
        one_way: bool,
        tags: CallTags,
    },
    Reply {
        call: u64,
        value: Moved,
    },
    /// One item of a pipe stream (see `pipes`).
    PipeItem {
        stream: u64,
        item: Moved,
    },
}

/// A call on its way out: which method of which object, its arguments and tags.
pub(crate) struct OutCall<'a> {
    pub(crate) target: ObjectId,
    pub(crate) interface: u64,
    pub(crate) method: u64,
    pub(crate) args: Args<'a>,
    pub(crate) tags: CallTags,
    /// The deadline whose remaining budget the call carries (None: it carries
    /// none, for no deadline or a node that does not propagate them).
    pub(crate) budget_until: Option<Instant>,
}

/// Something for the driver to write, on its lane.
pub(crate) enum Transmit {
    /// An encoded, length-prefixed frame.
    Frame(Lane, Vec<u8>),
    /// A value frame (only on links that carry values).
    Value(Lane, ValueFrame),
}

/// What stands for a waiting caller, a watcher and a monitor task: the driver's
/// types (answer slots, oneshot senders, task handles), or plain numbers in tests.
pub(crate) trait Sinks {
    /// Where an ask's answer goes.
    type Call;
    /// Where the stop reason of an object we monitor goes.
    type Watch;
    /// The task that waits for one of our objects to stop, for the peer's monitor.
    type Task;
    /// How a call of the peer's that we serve is told that the peer gave it up.
    type Serve;
}

/// Output for the driver, other than frames.
pub(crate) enum Event<S: Sinks> {
    /// A call of ours is answered: a reply, an error, its deadline, or the loss of
    /// the connection.
    Answered {
        waiter: S::Call,
        outcome: Result<Answer, CallError>,
    },
    /// An object we monitor stopped (`Some`), or the connection was lost (`None`).
    Down {
        watcher: S::Watch,
        reason: Option<StopReason>,
    },
    /// A peer's monitor ended (demonitored, replaced, or the connection lost):
    /// cancel its task.
    Cancel(S::Task),
    /// Credit came back after a call found none: wake the callers waiting for it.
    Credit,
    /// The peer gave up a call of its that we serve: tell it.
    Cancelled(S::Serve),
    /// The peer sent a `Cancel` naming no call of its that we serve (unknown,
    /// answered already): ignored, for the driver to count.
    CancelIgnored { call: u64 },
}

/// A call waiting for its reply.
struct AwaitingReply<W> {
    waiter: W,
    target: ObjectId,
    /// The lane it went on: a `Cancel` follows it there.
    lane: u16,
    /// What a `Timeout` reports (its deadline is in [`Core::deadlines`]).
    timeout: Duration,
}

/// The calls outstanding to one of the peer's objects, and the lane they go on.
struct Flow {
    outstanding: u32,
    lane: u16,
}

/// The protocol state of one connection (see the module doc).
pub(crate) struct Core<S: Sinks> {
    session: Session,
    peer: Hello,
    /// The limits of what the peer accepts: ours, with the peer's frame size
    /// (from its `Hello`) where it is smaller. Every frame we build fits them.
    limits: Limits,
    /// Whether the link carries value frames (one process).
    values: bool,
    waiting: HashMap<u64, AwaitingReply<S::Call>>,
    /// `(deadline, call id)` of every waiting call, earliest first. An entry
    /// whose call was answered stays until it is the earliest, where it is
    /// dropped at once (the earliest is always a waiting call's), or until such
    /// entries outnumber the waiting calls (see [`Core::unwait`]). A call's
    /// deadline is added and its answer usually comes in the same order, so
    /// this mostly costs a push and a pop at the two ends of a ring.
    deadlines: Deadlines,
    /// Our monitors of the peer's objects, by watch id.
    watching: HashMap<u64, S::Watch>,
    next_watch: u64,
    /// The peer's monitors of our objects, by the peer's watch id.
    watched: HashMap<u64, S::Task>,
    /// The peer's asks we serve (not answered yet), by the peer's call id: what
    /// a `Cancel` from the peer may name. Another connection's calls are not
    /// here, so a peer can give up only its own.
    serving: HashMap<u64, S::Serve>,
    /// Calls outstanding per target of the peer (only targets with some).
    flows: HashMap<ObjectId, Flow>,
    /// Targets placed on each lane opened so far.
    lanes: Vec<u32>,
    /// Calls the peer may have outstanding per target of ours (its `Hello`),
    /// at most [`Limits::MAX_WINDOW`].
    window: u32,
    /// Whether a caller found no credit since credit last came back.
    starved: bool,
    /// Tells of the peer to give back, per target of ours (see [`Core::owe`]).
    owed: HashMap<ObjectId, u32>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event<S>>,
    closed: bool,
}

impl<S: Sinks> Core<S> {
    /// The core of a connection whose handshake `session` has completed; `limits`
    /// are this node's own.
    ///
    /// # Panics
    /// If the session has not received the peer's `Hello` (a driver bug).
    pub(crate) fn new(session: Session, limits: Limits, values: bool) -> Self {
        let peer = session
            .peer()
            .cloned()
            .expect("a connection core starts after the handshake");
        // A peer cannot talk us below the smallest limit a node may have (a
        // handshake and one lease entry fit), whatever its Hello says.
        let peers = usize::try_from(peer.max_frame).unwrap_or(usize::MAX);
        let limits = Limits {
            max_frame: limits.max_frame.min(peers.max(Limits::MIN_MAX_FRAME)),
            ..limits
        };
        let window = peer.window.clamp(1, Limits::MAX_WINDOW);
        Core {
            session,
            peer,
            limits,
            values,
            waiting: HashMap::default(),
            deadlines: Deadlines::default(),
            watching: HashMap::default(),
            next_watch: 1,
            watched: HashMap::default(),
            serving: HashMap::default(),
            flows: HashMap::default(),
            lanes: Vec::new(),
            window,
            starved: false,
            owed: HashMap::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    /// What the peer accepts: every frame sent on this connection fits these.
    pub(crate) fn send_limits(&self) -> Limits {
        self.limits
    }

    /// Whether the link carries value frames (one process).
    pub(crate) fn carries_values(&self) -> bool {
        self.values
    }

    /// Who the peer said it is in its `Hello`.
    pub(crate) fn peer(&self) -> &Hello {
        &self.peer
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Our monitors of the peer's objects, still waiting.
    pub(crate) fn monitors(&self) -> usize {
        self.watching.len()
    }

    /// Calls waiting for a reply.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    /// The calls to one of its objects the peer lets us have outstanding.
    pub(crate) fn window(&self) -> u32 {
        self.window
    }

    /// Call lanes opened so far.
    pub(crate) fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Calls waiting for their replies.
    pub(crate) fn pending(&self) -> usize {
        self.waiting.len()
    }

    /// Takes credit for one call to `target` and gives the lane it goes on; None
    /// if `window` calls to it are outstanding already (the caller waits for an
    /// [`Event::Credit`], or is refused). Every acquired credit is given back:
    /// by the call's answer (an ask), by the peer's `Credit` (a tell), or by
    /// [`Core::unacquire`] if the call never leaves.
    pub(crate) fn acquire(&mut self, target: ObjectId) -> Option<u16> {
        match self.flows.entry(target) {
            Entry::Occupied(mut flow) => {
                let flow = flow.get_mut();
                if flow.outstanding >= self.window {
                    self.starved = true;
                    return None;
                }
                flow.outstanding += 1;
                Some(flow.lane)
            }
            Entry::Vacant(vacant) => {
                // The least busy lane; a new one while every open lane is busy.
                let quietest = (0..self.lanes.len()).min_by_key(|&lane| self.lanes[lane]);
                let lane = match quietest {
                    Some(lane) if self.lanes[lane] == 0 || self.lanes.len() >= MAX_LANES => lane,
                    _ => {
                        self.lanes.push(0);
                        self.lanes.len() - 1
                    }
                };
                self.lanes[lane] += 1;
                let lane = lane as u16;
                vacant.insert(Flow {
                    outstanding: 1,
                    lane,
                });
                Some(lane)
            }
        }
    }

    /// Gives back the credit of a call to `target` that never left.
    pub(crate) fn unacquire(&mut self, target: ObjectId) {
        self.give_back(target, 1);
    }

    /// `n` calls to `target` are no longer outstanding. A target with none left
    /// leaves its lane. Credit for targets without calls outstanding (a peer's
    /// mistake or malice) changes nothing.
    fn give_back(&mut self, target: ObjectId, n: u32) {
        let Entry::Occupied(mut flow) = self.flows.entry(target) else {
            return;
        };
        let left = flow.get().outstanding.saturating_sub(n);
        flow.get_mut().outstanding = left;
        if left == 0 {
            let flow = flow.remove();
            if let Some(placed) = self.lanes.get_mut(usize::from(flow.lane)) {
                *placed = placed.saturating_sub(1);
            }
        }
        if std::mem::take(&mut self.starved) {
            self.events.push_back(Event::Credit);
        }
    }

    /// A tell of the peer to `target` is in the object's mailbox, or was refused:
    /// its credit goes back to the peer with the next [`Core::flush_credit`].
    pub(crate) fn owe(&mut self, target: ObjectId) {
        *self.owed.entry(target).or_insert(0) += 1;
    }

    /// Sends the peer the credit owed to it (in frames within the limit).
    pub(crate) fn flush_credit(&mut self) {
        if self.owed.is_empty() || self.closed {
            self.owed.clear();
            return;
        }
        let grants: Vec<(ObjectId, u32)> = self.owed.drain().collect();
        for chunk in grants.chunks(grants_per_frame(self.limits.max_frame)) {
            let frame = Frame::Credit {
                grants: chunk.to_vec(),
            };
            if let Err(err) = self.send(Lane::Control, &frame) {
                tracing::warn!(%err, "credit not sent");
            }
        }
    }

    fn node_down(&self, may_have_executed: bool) -> CallError {
        CallError::NodeDown {
            node: self.peer.node,
            label: self.peer.label(),
            may_have_executed,
        }
    }

    /// Sends a call: [`Core::register`] then [`frame_call`], the one send path of
    /// every proxy (the driver runs the two halves apart, framing outside its
    /// lock; tests drive this whole). An ask names where its
    /// answer goes and how long it may take (`reply`); a tell (`None`) expects no
    /// reply. Fails without sending anything if the connection is closed or the
    /// call does not fit in a frame.
    ///
    /// The call's frame is handed back for the caller to write rather than
    /// queued: callers on several threads then write at once instead of one at a
    /// time behind the core's lock, and one caller's frames still leave in the
    /// order it made them. If the write fails, the driver [`forget`](Core::forget)s
    /// the call (it never left) and closes the core.
    #[cfg(test)]
    pub(crate) fn call(
        &mut self,
        now: Instant,
        call: OutCall<'_>,
        reply: Option<(S::Call, Duration)>,
    ) -> Result<(u64, Transmit), CallError> {
        let one_way = reply.is_none();
        let target = call.target;
        let lane = self.acquire(target).ok_or(CallError::MailboxFull {
            capacity: self.window as usize,
        })?;
        let reply = reply
            .map(|(waiter, timeout)| (waiter, Some(crate::deadline::after(now, timeout)), timeout));
        let id = self.register(now, target, lane, reply).inspect_err(|_| {
            self.unacquire(target);
        })?;
        match frame_call(&self.limits, self.values, id, lane, call, one_way, now) {
            Ok(transmit) => Ok((id, transmit)),
            Err(err) => {
                self.forget(id);
                self.unacquire(target);
                Err(err)
            }
        }
    }

    /// The first half of [`Core::call`], for a driver that frames the call
    /// itself outside its lock ([`frame_call`]): takes the call's id and, for an
    /// ask, records where its answer goes and its deadline. Registered before the
    /// frame is written, so that no reply can arrive first. An ask's `reply`
    /// names its waiter, its deadline (None: none) and the timeout a `Timeout`
    /// reports.
    pub(crate) fn register(
        &mut self,
        now: Instant,
        target: ObjectId,
        lane: u16,
        reply: Option<(S::Call, Option<Instant>, Duration)>,
    ) -> Result<u64, CallError> {
        if self.closed {
            return Err(self.node_down(false));
        }
        let id = self.session.next_call_id();
        if let Some((waiter, deadline, timeout)) = reply {
            let deadline = deadline.unwrap_or_else(|| crate::deadline::after(now, Duration::MAX));
            self.waiting.insert(
                id,
                AwaitingReply {
                    waiter,
                    target,
                    lane,
                    timeout,
                },
            );
            self.deadlines.push(deadline, id);
        }
        Ok(id)
    }

    /// The waiter of our call `call`, whose reply arrived: taken out, deadline
    /// and all, so that the driver hands it the answer without holding its lock
    /// while the reply is copied and the caller woken (None: a late or unknown
    /// reply, which is dropped). [`Core::handle_frame`] does the same through
    /// an event.
    pub(crate) fn answered(&mut self, call: u64) -> Option<S::Call> {
        let waiting = self.unwait(call)?;
        self.give_back(waiting.target, 1);
        Some(waiting.waiter)
    }

    /// Forgets call `call`, whose frame never left (the driver tells its caller
    /// itself, and gives its credit back with [`Core::unacquire`]). Gives its
    /// waiter back.
    pub(crate) fn forget(&mut self, call: u64) -> Option<S::Call> {
        self.unwait(call).map(|waiting| waiting.waiter)
    }

    /// Our caller gave up call `call` (it dropped the call's future) before its
    /// answer came: its waiter is dropped, its credit comes back, and the peer
    /// is told with a `Cancel` on the call's lane (after the call, so that it
    /// never arrives first). Nothing for an answered or unknown call.
    pub(crate) fn abandon(&mut self, call: u64) {
        let Some(waiting) = self.unwait(call) else {
            return;
        };
        self.give_back(waiting.target, 1);
        self.cancel(call, waiting.lane);
    }

    /// Takes call `call` out of the waiting calls, and its deadline's entry
    /// with it if that is on top (with any others of answered calls under it).
    /// Entries below stay until they surface, unless they come to outnumber
    /// the waiting calls: then all are swept, so the heap holds at most twice
    /// the waiting calls (plus a few).
    fn unwait(&mut self, call: u64) -> Option<AwaitingReply<S::Call>> {
        let waiting = self.waiting.remove(&call)?;
        self.drop_answered_deadlines();
        Some(waiting)
    }

    /// Restores the heap's promise (see [`Core::deadlines`]) after calls left
    /// `waiting`.
    fn drop_answered_deadlines(&mut self) {
        while let Some((_, call)) = self.deadlines.peek() {
            if self.waiting.contains_key(&call) {
                break;
            }
            self.deadlines.pop();
        }
        if self.deadlines.len() > 2 * self.waiting.len() + 64 {
            let waiting = &self.waiting;
            self.deadlines.retain(|call| waiting.contains_key(&call));
        }
    }

    /// Queues a `Cancel` of our call `call`, which went on call lane `lane`.
    fn cancel(&mut self, call: u64, lane: u16) {
        if let Err(err) = self.send(Lane::Call(lane), &Frame::Cancel { call }) {
            tracing::debug!(call, %err, "cancel not sent");
        }
    }

    /// We serve the peer's ask `call`; `serve` is how it learns that the peer
    /// gave it up. Until [`Core::served`], a `Cancel` of it reaches it.
    pub(crate) fn serving(&mut self, call: u64, serve: S::Serve) {
        if !self.closed {
            self.serving.insert(call, serve);
        }
    }

    /// The peer's ask `call` is answered (or was refused): a `Cancel` of it
    /// now changes nothing.
    pub(crate) fn served(&mut self, call: u64) -> Option<S::Serve> {
        self.serving.remove(&call)
    }

    /// The peer's asks we serve now.
    #[cfg(test)]
    pub(crate) fn serving_count(&self) -> usize {
        self.serving.len()
    }

    /// Queues a control frame (leases, exits, pings).
    pub(crate) fn send(&mut self, lane: Lane, frame: &Frame<'_>) -> Result<(), CallError> {
        if self.closed {
            return Err(self.node_down(false));
        }
        let bytes = self.encode(frame)?;
        self.transmits.push_back(Transmit::Frame(lane, bytes));
        Ok(())
    }

    /// Queues frames encoded outside the driver's lock (a pipe's batch of
    /// items, see `wire::codec::encode_pipe_item`) on `lane` as one write, in
    /// order.
    pub(crate) fn send_encoded(&mut self, lane: Lane, out: Vec<u8>) -> Result<(), CallError> {
        if self.closed {
            return Err(self.node_down(false));
        }
        if !out.is_empty() {
            self.transmits.push_back(Transmit::Frame(lane, out));
        }
        Ok(())
    }

    /// The frame answering the peer's call `call` on `lane`, for the replier to
    /// write (as [`Core::call`] hands back its frame); None once closed. See
    /// [`frame_reply`], which the driver calls outside its lock.
    #[cfg(test)]
    pub(crate) fn reply(
        &self,
        lane: Lane,
        call: u64,
        outcome: Result<Encoded, CallError>,
    ) -> Option<Transmit> {
        if self.closed {
            return None;
        }
        frame_reply(&self.limits, lane, call, outcome)
    }

    /// Asks the peer to tell us when `object` stops; the reason goes to `watcher`
    /// (or the loss of the connection, as `None`). Returns the watch id, for
    /// [`Core::demonitor`].
    pub(crate) fn monitor(
        &mut self,
        object: ObjectId,
        watcher: S::Watch,
    ) -> Result<u64, CallError> {
        let watch = self.next_watch;
        self.send(Lane::Control, &Frame::Monitor { watch, object })?;
        self.next_watch += 1;
        self.watching.insert(watch, watcher);
        Ok(watch)
    }

    /// We no longer need monitor `watch`: the peer may forget it.
    pub(crate) fn demonitor(&mut self, watch: u64) {
        if self.watching.remove(&watch).is_some() {
            let _ = self.send(Lane::Control, &Frame::Demonitor { watch });
        }
    }

    /// How many monitors the peer has on our objects, not counting `watch` (which
    /// a new monitor of that id would replace).
    pub(crate) fn watching_count(&self, watch: u64) -> usize {
        self.watched.len() - usize::from(self.watched.contains_key(&watch))
    }

    /// How many monitors the peer has on our objects.
    pub(crate) fn watched_count(&self) -> usize {
        self.watched.len()
    }

    /// The peer's monitor `watch` of one of our objects waits in `task`. A watch id
    /// the peer reuses replaces the earlier monitor, whose task is cancelled.
    pub(crate) fn watched(&mut self, watch: u64, task: S::Task) {
        if self.closed {
            self.events.push_back(Event::Cancel(task));
            return;
        }
        if let Some(replaced) = self.watched.insert(watch, task) {
            self.events.push_back(Event::Cancel(replaced));
        }
    }

    /// The object of the peer's monitor `watch` stopped (or was never there): tell
    /// the peer.
    pub(crate) fn down(&mut self, watch: u64, reason: StopReason) {
        self.watched.remove(&watch);
        let _ = self.send(Lane::Control, &Frame::Down { watch, reason });
    }

    /// Interprets one frame from the peer. Replies, pings, `Down` and `Demonitor`
    /// are handled here (their effects come out of `poll_event`/`poll_transmit`);
    /// what needs the node (calls to run, monitors of its objects, exits, leases)
    /// is returned. An error means the connection must close.
    pub(crate) fn handle_frame<'a>(
        &mut self,
        frame: Frame<'a>,
    ) -> Result<Incoming<'a>, SessionError> {
        match self.session.receive(frame)? {
            Incoming::Reply { call, outcome } => {
                self.answer(
                    call,
                    outcome.map(|bytes| Answer::Bytes(Encoded::from_slice(bytes))),
                );
                Ok(Incoming::Nothing)
            }
            Incoming::Answer(pong) => {
                let _ = self.send(Lane::Control, &pong);
                Ok(Incoming::Nothing)
            }
            Incoming::Down { watch, reason } => {
                if let Some(watcher) = self.watching.remove(&watch) {
                    self.events.push_back(Event::Down {
                        watcher,
                        reason: Some(reason),
                    });
                }
                Ok(Incoming::Nothing)
            }
            Incoming::Demonitor { watch } => {
                if let Some(task) = self.watched.remove(&watch) {
                    self.events.push_back(Event::Cancel(task));
                }
                Ok(Incoming::Nothing)
            }
            Incoming::Credit { grants } => {
                for (target, n) in grants {
                    self.give_back(target, n);
                }
                Ok(Incoming::Nothing)
            }
            Incoming::Cancel { call } => {
                match self.serving.remove(&call) {
                    Some(serve) => self.events.push_back(Event::Cancelled(serve)),
                    // Never ours to cancel: another's call, or one already answered.
                    None => self.events.push_back(Event::CancelIgnored { call }),
                }
                Ok(Incoming::Nothing)
            }
            other => Ok(other),
        }
    }

    /// Interprets one value frame from the peer: a reply is handled here, a call is
    /// given back for the node to run.
    pub(crate) fn handle_value(&mut self, frame: ValueFrame) -> Option<ValueFrame> {
        match frame {
            ValueFrame::Reply { call, value } => {
                self.answer(call, Ok(Answer::Value(value)));
                None
            }
            other @ (ValueFrame::Call { .. } | ValueFrame::PipeItem { .. }) => Some(other),
        }
    }

    /// The answer to our call `call` arrived (a late one, after its deadline, is
    /// dropped).
    fn answer(&mut self, call: u64, outcome: Result<Answer, CallError>) {
        if let Some(waiting) = self.unwait(call) {
            self.give_back(waiting.target, 1);
            self.events.push_back(Event::Answered {
                waiter: waiting.waiter,
                outcome,
            });
        }
    }

    /// Fails every call whose deadline is at or before `now` with `Timeout` (it was
    /// sent, so it may have run), and tells the peer with a `Cancel` (a call
    /// still queued there is dropped, a running handler told). Its credit comes
    /// back: the peer may still hold the call, so a target can briefly have more
    /// than `window` calls there, which the peer answers with `Overloaded`
    /// rather than hold.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some((deadline, call)) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(waiting) = self.unwait(call) {
                self.give_back(waiting.target, 1);
                self.cancel(call, waiting.lane);
                self.events.push_back(Event::Answered {
                    waiter: waiting.waiter,
                    outcome: Err(CallError::Timeout {
                        after: waiting.timeout,
                        may_have_executed: true,
                    }),
                });
            }
        }
    }

    /// When [`Core::handle_timeout`] should run next: the earliest deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|(deadline, _)| deadline)
    }

    /// The next frame to write.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Whether [`Core::poll_event`] has anything.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next answer, stop reason or cancellation for the driver to deliver.
    pub(crate) fn poll_event(&mut self) -> Option<Event<S>> {
        self.events.pop_front()
    }

    /// The connection is lost: every call waiting fails with `NodeDown` (sent, so
    /// it may have run), our monitors learn of the loss, the peer's are cancelled,
    /// and nothing more is sent.
    pub(crate) fn close(&mut self) {
        self.end(None);
    }

    /// The peer's process is gone, replaced by a new incarnation of the node (it
    /// answered at the peer's address): every call waiting fails with
    /// `NodeRestarted` (sent, so it may have run in the old process), our
    /// monitors resolve with `StopReason::NodeRestarted`, and the connection
    /// closes as [`Core::close`] does.
    pub(crate) fn close_restarted(&mut self) {
        self.end(Some(self.peer.node));
    }

    /// Closes the connection; `restarted`: the peer's node restarted.
    fn end(&mut self, restarted: Option<NodeId>) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        self.transmits.clear();
        self.deadlines.clear();
        self.flows.clear();
        self.owed.clear();
        self.serving.clear();
        if std::mem::take(&mut self.starved) {
            // Those waiting for credit learn that the connection is gone.
            self.events.push_back(Event::Credit);
        }
        let (lost, reason) = match restarted {
            None => (self.node_down(true), None),
            Some(node) => (
                CallError::NodeRestarted {
                    node,
                    label: self.peer.label(),
                    may_have_executed: true,
                },
                Some(StopReason::NodeRestarted { node }),
            ),
        };
        for (_, waiting) in self.waiting.drain() {
            self.events.push_back(Event::Answered {
                waiter: waiting.waiter,
                outcome: Err(lost.clone()),
            });
        }
        for (_, watcher) in self.watching.drain() {
            self.events.push_back(Event::Down {
                watcher,
                reason: reason.clone(),
            });
        }
        for (_, task) in self.watched.drain() {
            self.events.push_back(Event::Cancel(task));
        }
    }

    fn encode(&self, frame: &Frame<'_>) -> Result<Vec<u8>, CallError> {
        encode_frame(&self.limits, frame)
    }
}

/// Encodes `frame` within `limits`; a frame over the limit is a `Marshalling` error.
fn encode_frame(limits: &Limits, frame: &Frame<'_>) -> Result<Vec<u8>, CallError> {
    encode_to_vec(frame, limits).map_err(frame_error)
}

/// A frame that did not encode, as the caller sees it.
fn frame_error(err: EncodeError) -> CallError {
    CallError::Marshalling {
        what: "the frame".into(),
        type_name: "Frame".into(),
        reason: err.to_string(),
    }
}

/// How many credit grants one frame of `max_frame` bytes can carry: a grant
/// takes at most 40 bytes encoded (an object id's 34, a u32's 5, a header), and
/// the frame's own header well under 64.
fn grants_per_frame(max_frame: usize) -> usize {
    (max_frame.saturating_sub(64) / 40).max(1)
}

/// The frame of call `id` (registered with [`Core::register`]) on call lane
/// `lane` (from [`Core::acquire`]), framed at `now`: a pure function of its
/// arguments, so a driver runs it outside its lock. Moved arguments go as a value
/// frame where the link carries them (`values`). The call carries what is left
/// of its budget now.
#[allow(clippy::too_many_arguments)]
pub(crate) fn frame_call(
    limits: &Limits,
    values: bool,
    id: u64,
    lane: u16,
    call: OutCall<'_>,
    one_way: bool,
    now: Instant,
) -> Result<Transmit, CallError> {
    let lane = Lane::Call(lane);
    match framing(id, call, one_way, now) {
        Framing::Encoded(frame) => encode_to_vec(&frame, limits)
            .map(|out| Transmit::Frame(lane, out))
            .map_err(call_frame_error),
        Framing::Moved(frame) if values => Ok(Transmit::Value(lane, frame)),
        Framing::Moved(_) => Err(moved_on_encoded_link()),
    }
}

/// [`frame_call`] on a link of encoded frames, the frame lent to `take` from
/// this thread's scratch buffer ([`encode_lent`]) rather than returned in a
/// buffer of its own: for a transport that copies it into a batch anyway.
#[allow(clippy::too_many_arguments)]
pub(crate) fn frame_call_lent<R>(
    limits: &Limits,
    id: u64,
    lane: u16,
    call: OutCall<'_>,
    one_way: bool,
    now: Instant,
    take: impl FnOnce(Lane, &[u8]) -> R,
) -> Result<R, CallError> {
    let lane = Lane::Call(lane);
    match framing(id, call, one_way, now) {
        Framing::Encoded(frame) => {
            encode_lent(&frame, limits, |bytes| take(lane, bytes)).map_err(call_frame_error)
        }
        Framing::Moved(_) => Err(moved_on_encoded_link()),
    }
}

/// A call about to be framed: its frame, or (moved arguments) its value frame.
enum Framing<'a> {
    Encoded(Frame<'a>),
    Moved(ValueFrame),
}

/// Call `id` as a frame carrying what is left at `now` of its budget.
fn framing(id: u64, mut call: OutCall<'_>, one_way: bool, now: Instant) -> Framing<'_> {
    let budget = call.budget_until.map(|d| d.saturating_duration_since(now));
    call.tags.context.budget = CallContext::with_budget(budget).budget;
    match call.args {
        Args::Encoded(args) => {
            let call = Call {
                id,
                target: call.target,
                interface: call.interface,
                method: call.method,
                args,
                chain: call.tags.chain,
                once: call.tags.once,
                context: call.tags.context,
            };
            Framing::Encoded(match one_way {
                true => Frame::Tell(call),
                false => Frame::Call(call),
            })
        }
        Args::Moved(args) => Framing::Moved(ValueFrame::Call {
            id,
            target: call.target,
            interface: call.interface,
            method: call.method,
            args,
            one_way,
            tags: call.tags,
        }),
    }
}

/// A call's frame that did not encode, as its caller sees it.
fn call_frame_error(err: EncodeError) -> CallError {
    match err {
        // Over what the peer accepts: refused here, not sent to be reset.
        EncodeError::Oversize { len, max } => CallError::TooLarge { len, max },
        err => frame_error(err),
    }
}

/// Moved arguments on a link that carries only encoded frames.
fn moved_on_encoded_link() -> CallError {
    CallError::Marshalling {
        what: "the arguments".into(),
        type_name: "a moved value".into(),
        reason: "this connection carries encoded frames only".into(),
    }
}

/// [`encode_reply`]'s frame in a buffer of its own, to be written on `lane`.
#[cfg(test)]
pub(crate) fn frame_reply(
    limits: &Limits,
    lane: Lane,
    call: u64,
    outcome: Result<Encoded, CallError>,
) -> Option<Transmit> {
    encode_reply(limits, call, outcome, <[u8]>::to_vec).map(|bytes| Transmit::Frame(lane, bytes))
}

/// The frame answering the peer's call `call`, lent to `take` (see
/// [`encode_lent`]): a pure function, so a replier runs it outside the driver's
/// lock. A reply too large for a frame is answered with
/// [`CallError::ReplyFailed`] instead (the call ran), so the caller is never
/// left waiting. None if not even that frame encodes.
pub(crate) fn encode_reply<R>(
    limits: &Limits,
    call: u64,
    outcome: Result<Encoded, CallError>,
    take: impl FnOnce(&[u8]) -> R,
) -> Option<R> {
    let frame = match &outcome {
        Ok(value) => Frame::Reply { call, value },
        Err(error) => Frame::Error {
            call,
            error: error.clone(),
        },
    };
    // `take` is called once, by whichever encoding succeeds.
    let mut take = Some(take);
    let mut lend = |frame: &Frame<'_>| {
        encode_lent(frame, limits, |bytes| take.take().map(|take| take(bytes))).map_err(frame_error)
    };
    let sent = lend(&frame).or_else(|error| {
        let error = match (error, &outcome) {
            (CallError::Marshalling { reason, .. }, Ok(_)) => CallError::ReplyFailed {
                type_name: "(encoded)".into(),
                reason: format!("{reason}, the frame limit of this connection"),
            },
            (error, _) => error,
        };
        lend(&Frame::Error { call, error })
    });
    sent.ok().flatten()
}

/// When an `#[exactly_once]` call is sent again: its deadline, whether it left
/// this node, and the back-off between attempts. The caller drives it: before
/// each attempt [`Retry::attempt`], after each outcome [`Retry::next`].
#[derive(Debug)]
pub(crate) struct Retry {
    /// The node called.
    peer: NodeId,
    /// Its name and address, as the latest attempt's error gave them.
    label: NodeLabel,
    deadline: Instant,
    timeout: Duration,
    pause: Duration,
    sent: bool,
    /// Whether an attempt is known to have left this node (it was lost with its
    /// connection after it was sent).
    left: bool,
    /// How long the node may stay unreachable before the call gives up.
    give_up: Duration,
    /// Since when every attempt to reach the node has failed.
    unreachable_since: Option<Instant>,
}

/// What to do after an attempt of an exactly-once call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next<T> {
    /// Send it again (same logical id) at this instant.
    RetryAt(Instant),
    /// The call is over, with this outcome.
    Done(Result<T, CallError>),
}

/// The first pause between attempts, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_millis(500);

impl Retry {
    /// A call to a node `peer` made at `now` that may take `timeout`; it gives
    /// up once the node has been unreachable for `give_up` (every dial failing).
    pub(crate) fn new(peer: NodeId, now: Instant, timeout: Duration, give_up: Duration) -> Retry {
        Retry {
            peer,
            label: NodeLabel::default(),
            give_up,
            unreachable_since: None,
            deadline: crate::deadline::after(now, timeout),
            timeout,
            pause: FIRST_PAUSE,
            sent: false,
            left: false,
        }
    }

    /// The time left for an attempt starting at `now`, or the call's `Timeout`.
    pub(crate) fn attempt(&self, now: Instant) -> Result<Duration, CallError> {
        if now >= self.deadline {
            return Err(CallError::Timeout {
                after: self.timeout,
                may_have_executed: self.sent,
            });
        }
        Ok(self.deadline - now)
    }

    /// The attempt left this node (it may run from now on).
    pub(crate) fn sent(&mut self) {
        self.sent = true;
    }

    /// What follows an attempt that ended at `now` with `outcome`: a lost
    /// connection (or none yet) means again, after a pause that doubles up to
    /// half a second, within the deadline, until the node has been unreachable
    /// (every dial failing) for `give_up`: then the call ends with `NodeDown`.
    /// Anything else ends the call. An
    /// error that says the call did not run, after an earlier attempt left
    /// this node, is made to say that it may have ([`CallError::sent_earlier`]):
    /// that attempt may have run.
    pub(crate) fn next<T>(&mut self, now: Instant, outcome: Result<T, CallError>) -> Next<T> {
        match outcome {
            Err(err @ (CallError::NodeDown { .. } | CallError::ConnectFailed { .. })) => {
                self.left |= err.may_have_executed();
                if let CallError::NodeDown { label, .. } | CallError::ConnectFailed { label, .. } =
                    &err
                {
                    self.label = label.clone().or(&self.label);
                }
                if matches!(err, CallError::ConnectFailed { .. }) {
                    let since = *self.unreachable_since.get_or_insert(now);
                    if now.saturating_duration_since(since) >= self.give_up {
                        return Next::Done(Err(CallError::NodeDown {
                            node: self.peer,
                            label: self.label.clone(),
                            may_have_executed: self.left,
                        }));
                    }
                } else {
                    self.unreachable_since = None;
                }
                let at = (now + self.pause).min(self.deadline);
                self.pause = (self.pause * 2).min(LONGEST_PAUSE);
                Next::RetryAt(at)
            }
            Err(err) if self.left && !err.may_have_executed() => {
                Next::Done(Err(err.sent_earlier(self.peer, self.label.clone())))
            }
            outcome => Next::Done(outcome),
        }
    }
}

#[cfg(test)]
mod tests;
