//! One connection to a peer node, over any transport: the driver of its protocol
//! [`Core`]. It feeds the core what the transport reads and what proxies send,
//! writes the frames the core gives back on their lanes, hands answers to waiting
//! callers, runs the core's deadlines on one timer task, and serves incoming calls
//! against this node's exports. Both transports (QUIC, in-process channels) are
//! thinner still: they move bytes between a [`Transport`] and [`Connection::drain`].
//!
//! A call for an object whose mailbox is full is held here, with the calls to
//! that object behind it, by a task that hands them over as room comes; the
//! reader goes on with other objects' calls. What is held is bounded: at most the
//! node's `window` calls per object (the peer's credit, see
//! [`protocol`](super::protocol)), and a reader stops reading while the calls held
//! for its peer pass [`Connection::held_budget`] bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::answers::{AnswerKey, Answers};
use super::backlog::Backlog;
use super::exports::Delivery;
use super::host::Host;
use super::marshal::{Answer, Args, MarshalCx, Replier};
use super::protocol::{
    encode_reply, frame_call, frame_call_lent, Core, Event, OutCall, Sinks, Transmit,
};
pub(crate) use super::protocol::{CallTags, Lane, ValueFrame};
use super::route::Payload;
use crate::error::CallError;
use crate::hash::HashMap;
use crate::id::NodeId;
use crate::local::caller::Caller;
use crate::local::cancel::{CancelSignal, Unwanted};
use crate::local::stop::StopReason;
use crate::wire::codec::{DecodeError, Encoded, FrameReader, Limits};
use crate::wire::{Frame, Hello, Incoming, ObjectId, Session};

/// What the reader of a connection does after a frame.
pub(crate) enum Step {
    /// Read the next frame.
    Continue,
    /// Wait for this (room for the calls held for the peer) before reading on.
    Wait(Delivery),
    /// Close the connection.
    Close,
}

/// What a transport's reader does after [`Connection::drain`].
pub(crate) enum Drained {
    /// Every complete frame was handled: read more bytes.
    More,
    /// An oversize frame: reset the stream (QUIC) or drop the transport (one stream).
    Reset,
    /// The connection must close.
    Close,
}

/// How one burst of [`Connection::drain_now`] ended.
pub(crate) enum Burst {
    /// As the drain ends.
    Drained(Drained),
    /// Wait for this before handling more.
    Wait(Delivery),
    /// The replies backlog is past its budget: wait for it to shrink
    /// ([`Connection::backlog_shrinks`]) before handling more.
    Backlog,
}

/// The reader of one of our call lanes, which a caller awaiting its answer
/// may read with while nobody else does (see `stream_reader`, QUIC's).
pub(crate) trait LaneReader: Send + Sync {
    /// Reads the lane as the caller `cx` wakes, if nobody else does; quinn
    /// then wakes `cx` when more arrives. True if it read: the caller must
    /// [`LaneReader::hand_back`] the lane once it stops waiting.
    fn lead(&self, cx: &mut Context<'_>) -> bool;
    /// Gives the lane back to its reader task after [`LaneReader::lead`].
    fn hand_back(&self);
}

/// Sends encoded frames (length-prefixed) to the peer. False once the transport is gone.
pub(crate) trait Transport: Send + Sync {
    fn send(&self, lane: Lane, frame: Vec<u8>) -> bool;
    /// [`Transport::send`] for a call sent while other calls of this
    /// connection are in flight: their replies will bring more calls, so the
    /// transport may hold it until the tasks already queued on the sending
    /// thread have run (a scheduler tick), and write what gathered in one go:
    /// Nagle's rule, with the tick as its timer. A call with nothing else in
    /// flight goes through [`Transport::send`], now. The frame is lent from
    /// the encoder's buffer: a transport that gathers frames copies it in.
    fn send_corked(&self, lane: Lane, frame: &[u8]) -> bool {
        self.send(lane, frame.to_vec())
    }
    /// [`Transport::send`] for a frame lent from an encoder's buffer, which a
    /// transport that batches frames copies into its batch.
    fn send_lent(&self, lane: Lane, frame: &[u8]) -> bool {
        self.send(lane, frame.to_vec())
    }
    /// Runs `handle`, which handles a burst of frames that arrived together
    /// without pausing: the transport may hold what it sends meanwhile (on
    /// this connection or any other) and write it all when `handle` returns,
    /// so that replies to calls that came in one packet leave in one.
    fn burst(&self, handle: &mut dyn FnMut()) {
        handle()
    }
    /// Whether values can move over this transport unencoded (one process).
    fn carries_values(&self) -> bool {
        false
    }
    /// Sends a value frame; only on links that carry values.
    fn send_value(&self, _lane: Lane, _frame: ValueFrame) -> bool {
        false
    }
    /// Tears the transport down (the connection is closing).
    fn close(&self) {}
    /// Bytes written by the connection and not yet handed to the network.
    fn queued(&self) -> usize {
        0
    }
    /// The peer stopped sending on the stream whose replies go to `lane`.
    fn lane_closed(&self, _lane: Lane) {}
    /// Nothing more will be sent on `lane` (a pipe stream that ended): its
    /// stream may be finished once what is queued is written.
    fn lane_done(&self, _lane: Lane) {}
    /// Replies written and not yet sent, if the transport can fall behind (a
    /// peer that does not read them).
    fn replies_backlog(&self) -> Option<&Backlog> {
        None
    }
    /// The reader of the replies on our call lane `lane`, which a caller
    /// awaiting its answer may read itself (QUIC; see `stream_reader`).
    fn reader(&self, _lane: u16) -> Option<Arc<dyn LaneReader>> {
        None
    }
    /// The transport's estimate of a round trip to the peer (none in one
    /// process), which a call's budget is charged on arrival.
    fn round_trip(&self) -> Duration {
        Duration::ZERO
    }
    /// QUIC's statistics of the connection, if it is one.
    fn quic_stats(&self) -> Option<quinn::ConnectionStats> {
        None
    }
}

/// The least a call's budget is charged on arrival, on top of nothing in one
/// process: so that the callee's deadline is never later than its caller's,
/// whatever the time between the budget's reading and the frame's.
const MIN_TRANSIT: Duration = Duration::from_millis(1);

/// The share of a call's budget also charged on arrival (1/64, about 1.6 %):
/// time for the callee, once its deadline passed, to stop, answer and have its
/// own calls cancelled before its caller's deadline, on a busy machine too.
const UNWIND_SHARE: u32 = 64;

/// An ask of ours waiting for its answer: dropped before it (its caller gave
/// up), it tells the core, which sends the peer a `Cancel`. `None`: answered.
/// Either way, a lane it read while waiting goes back to its reader task.
struct Pending<'a> {
    conn: &'a Connection,
    id: Option<u64>,
    /// Its answer's slot, until the answer is taken.
    key: Option<AnswerKey>,
    led: Option<Arc<dyn LaneReader>>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(reader) = self.led.take() {
            reader.hand_back();
        }
        if let Some(id) = self.id.filter(|_| !self.conn.is_closed()) {
            self.conn.drive(|core| core.abandon(id));
        }
        // After the core forgot the call: an answer on its way is dropped.
        if let Some(key) = self.key {
            self.conn.answers.close(key);
        }
    }
}

/// A call from the peer to one of this node's objects, with its arguments as
/// read (`Args`) or held (`Payload`).
pub(crate) struct InCall<A> {
    pub(crate) id: u64,
    pub(crate) target: ObjectId,
    pub(crate) interface: u64,
    pub(crate) method: u64,
    pub(crate) args: A,
    pub(crate) one_way: bool,
    pub(crate) tags: CallTags,
    /// The lane its reply goes on.
    pub(crate) replies: Lane,
    /// When its caller stops waiting (from its budget), for an ask.
    pub(crate) deadline: Option<Instant>,
    /// Set if its caller gives it up (a `Cancel`), for an ask.
    pub(crate) cancel: Option<Arc<CancelSignal>>,
    /// When its frame arrived: its method's latency counts from here.
    pub(crate) arrived: Instant,
}

impl<A> InCall<A> {
    /// The call without its arguments, and the arguments.
    fn split(self) -> (InCall<()>, A) {
        let InCall {
            id,
            target,
            interface,
            method,
            args,
            one_way,
            tags,
            replies,
            deadline,
            cancel,
            arrived,
        } = self;
        let bare = InCall {
            id,
            target,
            interface,
            method,
            args: (),
            one_way,
            tags,
            replies,
            deadline,
            cancel,
            arrived,
        };
        (bare, args)
    }
}

impl InCall<()> {
    /// The call with `args`.
    fn with_args<A>(self, args: A) -> InCall<A> {
        InCall {
            id: self.id,
            target: self.target,
            interface: self.interface,
            method: self.method,
            args,
            one_way: self.one_way,
            tags: self.tags,
            replies: self.replies,
            deadline: self.deadline,
            cancel: self.cancel,
            arrived: self.arrived,
        }
    }
}

impl<'a> InCall<Args<'a>> {
    /// The call, owning its arguments, to be held.
    fn hold(self) -> InCall<Payload> {
        let (call, args) = self.split();
        call.with_args(match args {
            Args::Encoded(bytes) => Payload::Bytes(Encoded::from_slice(bytes)),
            Args::Moved(value) => Payload::Value(value),
        })
    }
}

impl InCall<Payload> {
    /// Roughly what holding it costs, in bytes.
    fn size(&self) -> usize {
        let args = match &self.args {
            Payload::Bytes(bytes) => bytes.len(),
            Payload::Value(_) => 0,
        };
        args + std::mem::size_of::<Self>()
    }

    /// Runs `f` on the call with its arguments borrowed.
    fn with<R>(self, f: impl FnOnce(InCall<Args<'_>>) -> R) -> R {
        let (call, args) = self.split();
        args.with(|args| f(call.with_args(args)))
    }
}

/// The calls held for objects whose mailboxes are full, in order per object:
/// for each, the calls behind the one its task waits to hand over.
#[derive(Default)]
struct Held {
    calls: HashMap<ObjectId, VecDeque<InCall<Payload>>>,
    bytes: usize,
}

impl Held {
    /// Calls held: those queued, and the one each object's task hands over.
    fn count(&self) -> usize {
        self.calls.values().map(|queue| queue.len() + 1).sum()
    }
}

/// What waits on the core's output in the runtime.
pub(crate) struct Live;

impl Sinks for Live {
    type Call = AnswerKey;
    type Watch = oneshot::Sender<StopReason>;
    type Task = tokio::task::AbortHandle;
    type Serve = Arc<CancelSignal>;
}

/// The core and the deadline its timer task sleeps to.
struct Driven {
    core: Core<Live>,
    /// The instant the timer task will wake at (None: it waits to be told).
    armed: Option<Instant>,
}

/// Frames up to this size are read without room from the receive budget
/// ([`Connection::room_for_frame`]): a read holds one anyway.
pub(crate) const SMALL_FRAME: usize = 64 << 10;

/// What a connection may buffer of frames being received: two of the largest
/// frames, headers included.
fn receive_budget(limits: &Limits) -> usize {
    limits
        .max_frame
        .saturating_add(4)
        .saturating_mul(2)
        .min(Semaphore::MAX_PERMITS)
}

/// How long a duplicate connection lives on after losing the tie-break.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct Connection {
    pub(crate) node: Weak<Host>,
    pub(crate) peer: Hello,
    /// The node that dialed this connection: when two nodes dial each other at once,
    /// both keep the one dialed by the smaller node id.
    pub(crate) dialer: NodeId,
    /// Who the peer is, as the transport authenticated it: what handlers of its
    /// calls see through [`crate::caller()`].
    pub(crate) caller: Arc<Caller>,
    state: Mutex<Driven>,
    /// Where the answers to our asks wait for their callers.
    answers: Answers,
    transport: Box<dyn Transport>,
    /// Whether the core has closed (read without the lock).
    closed: AtomicBool,
    /// Bytes the transport has read from the peer so far.
    received: AtomicU64,
    closed_notify: Notify,
    /// Wakes the timer task when a deadline comes before the one it sleeps to.
    timer: Arc<Notify>,
    /// Wakes callers waiting for credit (or for the connection to close).
    credit: Notify,
    /// Whether the core owes the peer credit (read without the lock).
    owes: AtomicBool,
    /// Calls from the peer held for full mailboxes.
    held: Mutex<Held>,
    /// Objects with calls held (read without the lock).
    holding: AtomicUsize,
    /// Wakes readers waiting for the calls held to shrink.
    held_room: Notify,
    /// Room for large frames being received ([`Connection::room_for_frame`]).
    receiving: Arc<Semaphore>,
    values: bool,
    /// What this node accepts from the peer.
    pub(crate) limits: Limits,
    /// What the peer accepts from this node: our limits, with its frame size if
    /// smaller (from its `Hello`).
    send_limits: Limits,
    /// Pipe streams over this connection (see `pipes`).
    pub(crate) pipes: super::pipes::Streams,
    /// Closed because a new incarnation of the peer answers at its address.
    restarted: AtomicBool,
    /// Whether calls from the peer get deadlines from their budgets.
    propagate: bool,
}

impl Connection {
    /// A connection to the peer whose `Hello` `session` has received, dialed by
    /// `dialer`; the transport authenticated the peer's name as `identity` (see
    /// [`Caller::identity`]). Starts its timer task.
    pub(crate) fn start(
        node: Weak<Host>,
        session: Session,
        identity: String,
        transport: Box<dyn Transport>,
        limits: Limits,
        dialer: NodeId,
    ) -> Arc<Self> {
        let values = transport.carries_values();
        let core = Core::new(session, limits, values);
        let peer = core.peer().clone();
        let send_limits = core.send_limits();
        // Pipe stream ids: even from the node with the smaller id, odd from the
        // other (both sides decide alike, whoever dialed).
        let even = node.upgrade().is_some_and(|host| host.id() < peer.node);
        let propagate = node
            .upgrade()
            .is_none_or(|host| host.propagates_deadlines());
        let caller = match node.upgrade() {
            Some(host) => Caller::new(peer.node, identity).counting(host.asks_dropped()),
            None => Caller::new(peer.node, identity),
        };
        let conn = Arc::new(Connection {
            node,
            dialer,
            caller: Arc::new(caller),
            peer,
            state: Mutex::new(Driven { core, armed: None }),
            answers: Answers::default(),
            transport,
            closed: AtomicBool::new(false),
            received: AtomicU64::new(0),
            closed_notify: Notify::new(),
            timer: Arc::new(Notify::new()),
            credit: Notify::new(),
            owes: AtomicBool::new(false),
            held: Mutex::new(Held::default()),
            holding: AtomicUsize::new(0),
            held_room: Notify::new(),
            receiving: Arc::new(Semaphore::new(receive_budget(&limits))),
            values,
            limits,
            send_limits,
            pipes: super::pipes::Streams::new(even),
            restarted: AtomicBool::new(false),
            propagate,
        });
        tokio::spawn(run_deadlines(Arc::downgrade(&conn), conn.timer.clone()));
        conn
    }

    /// The transport (for the pipe streams' lanes).
    pub(crate) fn transport(&self) -> &dyn Transport {
        &*self.transport
    }

    /// What a pipe stream of a closed connection fails with: `NodeRestarted`
    /// if a new incarnation of the peer answers at its address, else `NodeDown`.
    fn lost_error(&self) -> CallError {
        if self.restarted.load(Ordering::Acquire) {
            return CallError::NodeRestarted {
                node: self.peer.node,
                label: self.peer.label(),
                may_have_executed: true,
            };
        }
        self.node_down(true)
    }

    fn node_down(&self, may_have_executed: bool) -> CallError {
        CallError::NodeDown {
            node: self.peer.node,
            label: self.peer.label(),
            may_have_executed,
        }
    }

    /// Runs `op` on the core, then does what it asked for: writes the frames it
    /// queued, arms the timer, and (once the lock is released) delivers its
    /// events and tears the transport down if it closed.
    pub(super) fn drive<R>(&self, op: impl FnOnce(&mut Core<Live>) -> R) -> R {
        let mut state = self.state.lock();
        let out = op(&mut state.core);
        // Frames the core originates (pongs, monitor reports): rare, written
        // under the lock so that they keep their order.
        while let Some(transmit) = state.core.poll_transmit() {
            if !self.write(transmit) {
                state.core.close();
            }
        }
        self.settle(state);
        out
    }

    /// Writes one frame; false if the transport refused it (it is gone).
    fn write(&self, transmit: Transmit) -> bool {
        match transmit {
            Transmit::Frame(lane, bytes) => self.transport.send(lane, bytes),
            Transmit::Value(lane, frame) => self.transport.send_value(lane, frame),
        }
    }

    /// Takes the core's events and arms the timer for an earlier deadline under
    /// the lock; then, unlocked, delivers the events (waking callers), wakes the
    /// timer and notices a close.
    fn settle(&self, mut state: parking_lot::MutexGuard<'_, Driven>) {
        // Usually one event or none: the first is kept aside so that a reply
        // allocates nothing here.
        let first = state.core.poll_event();
        let rest: Vec<Event<Live>> = if first.is_some() {
            std::iter::from_fn(|| state.core.poll_event()).collect()
        } else {
            Vec::new()
        };
        let next = state.core.poll_timeout();
        let wake = next.is_some_and(|next| state.armed.is_none_or(|armed| next < armed));
        if wake {
            state.armed = next;
        }
        let closed_now = state.core.is_closed() && !self.closed.swap(true, Ordering::AcqRel);
        drop(state);
        for event in first.into_iter().chain(rest) {
            self.deliver_event(event);
        }
        if wake || closed_now {
            self.timer.notify_one();
        }
        if closed_now {
            let why = self.lost_error();
            tracing::info!(peer = %self.peer.node, %why, "disconnected");
            self.pipes.fail_all(why);
            self.transport.close();
            self.closed_notify.notify_waiters();
            // Asks from the peer still queued will find nobody to answer.
            self.caller.leave();
            self.credit.notify_waiters();
            self.held_room.notify_waiters();
            self.receiving.close();
            if let Some(node) = self.node.upgrade() {
                node.forget_peer(&self.peer, self);
            }
        }
    }

    /// Takes credit for one call to `target` now: the lane it goes on, or
    /// `MailboxFull` if the peer holds its `window` of calls to it already.
    pub(crate) fn try_reserve(&self, target: ObjectId) -> Result<u16, CallError> {
        let mut state = self.state.lock();
        if state.core.is_closed() {
            return Err(self.node_down(false));
        }
        let window = state.core.window();
        state.core.acquire(target).ok_or(CallError::MailboxFull {
            capacity: window as usize,
        })
    }

    /// Takes credit for one call to `target`, waiting for it until `deadline`
    /// (`Timeout`: the call never left).
    pub(crate) async fn reserve(
        &self,
        target: ObjectId,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<u16, CallError> {
        loop {
            let credit = self.credit.notified();
            let mut credit = std::pin::pin!(credit);
            credit.as_mut().enable();
            match self.try_reserve(target) {
                Err(CallError::MailboxFull { .. }) => {}
                reserved => return reserved,
            }
            if tokio::time::timeout_at(deadline, credit).await.is_err() {
                return Err(CallError::Timeout {
                    after: timeout,
                    may_have_executed: false,
                });
            }
        }
    }

    /// Sends a call over the core, with the credit reserved for it on `lane`:
    /// the one send path of asks, tells, receipts and exactly-once attempts.
    /// The core registers it, and its frame is written here, outside the
    /// core's lock; a frame the transport refused was not sent.
    fn submit(
        &self,
        lane: u16,
        call: OutCall<'_>,
        reply: Option<(AnswerKey, Due)>,
    ) -> Result<(u64, bool), CallError> {
        let one_way = reply.is_none();
        let target = call.target;
        let now = reply
            .as_ref()
            .and_then(|(_, due)| due.read_at)
            .unwrap_or_else(Instant::now);
        let reply = reply.map(|(tx, due)| (tx, due.deadline, due.timeout));
        let (id, values, corked) = {
            let mut state = self.state.lock();
            let registered = state.core.register(now, target, lane, reply);
            if registered.is_err() {
                state.core.unacquire(target);
            }
            let values = state.core.carries_values();
            // An ask among others in flight: their replies bring more calls.
            let corked = !one_way && state.core.pending() > 1;
            self.settle(state);
            (registered?, values, corked)
        };
        // Framed (encoded) outside the lock, as callers on other threads may be.
        // A corked call's frame is lent to the transport, which copies it into
        // the batch it is gathering: no buffer of its own.
        let framed = match corked && !values {
            true => frame_call_lent(
                &self.send_limits,
                id,
                lane,
                call,
                one_way,
                now,
                |lane, frame| self.transport.send_corked(lane, frame),
            ),
            false => frame_call(&self.send_limits, values, id, lane, call, one_way, now)
                .map(|transmit| self.write(transmit)),
        };
        let written = match framed {
            Ok(written) => written,
            Err(err) => {
                self.drive(|core| {
                    core.forget(id);
                    core.unacquire(target);
                });
                return Err(err);
            }
        };
        if written {
            return Ok((id, corked));
        }
        // Never left: its waiter goes quietly (this caller is told here, and
        // closes its slot).
        self.drive(|core| {
            core.forget(id);
            core.unacquire(target);
            core.close();
        });
        Err(self.node_down(false))
    }

    /// Calls `call.method` on the peer's object and awaits its answer until
    /// `due.deadline` (None: none; waiting for credit first, then the core's
    /// deadline); a `Timeout` reports `due.timeout`. Dropped before its answer,
    /// the call is given up: the peer is told with a `Cancel`.
    pub(crate) async fn ask(&self, call: OutCall<'_>, mut due: Due) -> Result<Answer, CallError> {
        let lane = match self.try_reserve(call.target) {
            Ok(lane) => lane,
            Err(CallError::MailboxFull { .. }) => {
                let until = due
                    .deadline
                    .unwrap_or_else(|| crate::deadline::after(Instant::now(), Duration::MAX));
                // Boxed: waiting for credit is rare, and every call's future
                // would otherwise carry its state.
                let lane = Box::pin(self.reserve(call.target, until, due.timeout)).await?;
                // The clock moved on while the call waited.
                due.read_at = None;
                lane
            }
            Err(err) => return Err(err),
        };
        let key = self.answers.open();
        let (id, corked) = match self.submit(lane, call, Some((key, due))) {
            Ok(sent) => sent,
            Err(err) => {
                self.answers.close(key);
                return Err(err);
            }
        };
        let mut pending = Pending {
            conn: self,
            id: Some(id),
            key: Some(key),
            led: None,
        };
        let answers = &self.answers;
        // An ask with none other in flight reads its lane while it waits, if
        // nobody else does: quinn wakes this task, not the reader task (see
        // `stream_reader`). Among others, the reader task reads each chunk of
        // replies for all of them.
        let outcome = match corked {
            true => std::future::poll_fn(|cx| answers.poll(key, Some(cx))).await,
            false => {
                std::future::poll_fn(|cx| {
                    // Answered already, by whoever read the reply? (Looked at
                    // without a waker: reading below may answer it, and must
                    // not wake this task.)
                    if let Poll::Ready(outcome) = answers.poll(key, None) {
                        return Poll::Ready(outcome);
                    }
                    match &pending.led {
                        Some(reader) => {
                            reader.lead(cx);
                        }
                        None => {
                            if let Some(reader) = self.transport.reader(lane) {
                                if reader.lead(cx) {
                                    pending.led = Some(reader);
                                }
                            }
                        }
                    }
                    answers.poll(key, Some(cx))
                })
                .await
            }
        };
        pending.key = None;
        pending.id = None;
        outcome
    }

    /// A one-way call on `lane`, whose credit the caller reserved
    /// ([`Connection::try_reserve`], [`Connection::reserve`]), sent now.
    pub(crate) fn tell(&self, lane: u16, call: OutCall<'_>) -> Result<(), CallError> {
        self.submit(lane, call, None).map(drop)
    }

    /// The peer stopped sending on the stream whose replies go to `lane`.
    pub(crate) fn lane_closed(&self, lane: Lane) {
        self.transport.lane_closed(lane);
    }

    /// Bytes this connection has written and the transport not yet sent.
    pub(crate) fn queued(&self) -> usize {
        self.transport.queued()
    }

    /// Calls from the peer held for full mailboxes now.
    pub(crate) fn held(&self) -> usize {
        self.held.lock().count()
    }

    /// Room for a frame of `size` bytes (its header included) that a reader has
    /// begun to receive, out of the connection's receive budget (two of the
    /// largest frames): held until the frame is read. A reader waits for it
    /// before reading the frame's body, so that a peer cannot make the node
    /// buffer more than the budget in partial frames, however many streams it
    /// writes on; a frame with its room always completes, so two large frames
    /// never wait for each other. Frames up to [`SMALL_FRAME`] bytes need none.
    /// None once the connection closed.
    pub(crate) async fn room_for_frame(&self, size: usize) -> Option<OwnedSemaphorePermit> {
        let size = u32::try_from(size).ok()?;
        self.receiving.clone().acquire_many_owned(size).await.ok()
    }

    /// The bytes of replies queued for the peer past which its calls are read
    /// no further: two of the largest frames it accepts.
    pub(crate) fn backlog_budget(&self) -> usize {
        self.send_limits.max_frame.saturating_mul(2)
    }

    /// Bytes of frames being received, out of the receive budget.
    pub(crate) fn receiving(&self) -> usize {
        receive_budget(&self.limits).saturating_sub(self.receiving.available_permits())
    }

    /// Call lanes this connection has opened toward the peer.
    pub(crate) fn lanes(&self) -> usize {
        self.state.lock().core.lanes()
    }

    /// Sends bytes that may not be a frame at all (tests of malformed input).
    pub(crate) fn send_raw(&self, lane: Lane, bytes: Vec<u8>) -> bool {
        self.transport.send(lane, bytes)
    }

    /// Sends one control frame on `lane` (leases, exits).
    pub(crate) fn send(&self, lane: Lane, frame: &Frame<'_>) -> Result<(), CallError> {
        let queued = self.drive(|core| core.send(lane, frame));
        self.written(queued)
    }

    /// Queues frames encoded outside the lock (a pipe's batch of items) on
    /// `lane`, in one write.
    pub(crate) fn send_encoded(&self, lane: Lane, out: Vec<u8>) -> Result<(), CallError> {
        let queued = self.drive(|core| core.send_encoded(lane, out));
        self.written(queued)
    }

    /// What a frame queued on the core came to: sent, unless writing it (or
    /// anything meanwhile) closed the connection.
    fn written(&self, queued: Result<(), CallError>) -> Result<(), CallError> {
        match queued {
            Ok(()) if self.is_closed() => Err(self.node_down(false)),
            other => other,
        }
    }

    /// Whether calls may move plain values over this connection unencoded.
    pub(crate) fn carries_values(&self) -> bool {
        self.values
    }

    /// What the peer accepts: every frame sent here must fit these.
    pub(crate) fn send_limits(&self) -> &Limits {
        &self.send_limits
    }

    /// Counts `bytes` read from the peer (the transport calls this as it reads).
    pub(crate) fn count_received(&self, bytes: usize) {
        self.received.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes read from the peer so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Hands every complete frame buffered in `reader` to the connection (replies to
    /// what arrives go to `replies`): malformed frames are logged and skipped, a full
    /// mailbox is waited for (a slow actor slows its callers). The one place where
    /// the decisions about bad input are made, for every transport.
    ///
    /// `arrived`: when the transport received the bytes (for in-process links,
    /// when they were sent): what the budgets of the calls among them count from.
    pub(crate) async fn drain(
        self: &Arc<Self>,
        reader: &mut FrameReader,
        replies: Lane,
        arrived: Instant,
    ) -> Drained {
        loop {
            match self.drain_now(reader, replies, arrived) {
                Burst::Drained(drained) => return drained,
                Burst::Wait(waiting) => waiting.await,
                Burst::Backlog => self.backlog_shrinks(replies).await,
            }
        }
    }

    /// [`Connection::drain`] without waiting: handles the frames already read
    /// in one burst, or says what to wait for before handling more. A reader
    /// that cannot wait (a caller reading its own answer) hands that to one
    /// that can.
    pub(crate) fn drain_now(
        self: &Arc<Self>,
        reader: &mut FrameReader,
        replies: Lane,
        arrived: Instant,
    ) -> Burst {
        // A peer that does not read its replies has its calls read no further
        // (only on the lanes calls come in on: replies to our calls are always
        // read, so two nodes never wait for each other).
        let backlog = self.backlog_of(replies);
        if backlog.is_some_and(|backlog| backlog.bytes() > self.backlog_budget())
            && !self.is_closed()
        {
            return Burst::Backlog;
        }
        // The frames already read are handled in one burst, without a
        // pause: what they send (replies, above all) is written together.
        let mut burst = None;
        self.transport.burst(&mut || {
            burst = Some(self.handle_read(reader, replies, arrived, backlog));
        });
        // A transport whose burst did not run the handler handled nothing.
        burst.unwrap_or(Burst::Drained(Drained::More))
    }

    /// The replies backlog the lane `replies` counts against: only the peer's
    /// call lanes have one.
    fn backlog_of(&self, replies: Lane) -> Option<&Backlog> {
        match replies {
            Lane::Reply(_) => self.transport.replies_backlog(),
            _ => None,
        }
    }

    /// Waits until the replies backlog of `replies` is within its budget (or
    /// the connection closed): what [`Burst::Backlog`] asks for.
    pub(crate) async fn backlog_shrinks(&self, replies: Lane) {
        if let Some(backlog) = self.backlog_of(replies) {
            backlog
                .within(self.backlog_budget(), || self.is_closed())
                .await;
        }
    }

    /// Handles the complete frames `reader` holds, until it holds no more, a
    /// frame asks to wait, or the replies backlog grew past its budget (the
    /// caller waited for it to be within before the first frame).
    fn handle_read(
        self: &Arc<Self>,
        reader: &mut FrameReader,
        replies: Lane,
        arrived: Instant,
        backlog: Option<&Backlog>,
    ) -> Burst {
        let mut first = true;
        loop {
            let over = backlog.is_some_and(|backlog| backlog.bytes() > self.backlog_budget());
            if over && !first {
                return Burst::Backlog;
            }
            first = false;
            let frame = match reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.flush_credit();
                    return Burst::Drained(Drained::More);
                }
                Err(DecodeError::Malformed(why)) => {
                    tracing::warn!(peer = %self.peer.node, %why, "malformed frame skipped");
                    continue;
                }
                Err(err @ DecodeError::Oversize { .. }) => {
                    tracing::warn!(peer = %self.peer.node, %err, "oversize frame: resetting the stream");
                    return Burst::Drained(Drained::Reset);
                }
            };
            match self.on_frame(frame, replies, arrived) {
                Step::Continue => {}
                Step::Wait(waiting) => return Burst::Wait(waiting),
                Step::Close => return Burst::Drained(Drained::Close),
            }
        }
    }

    /// Handles one frame from the peer, read on a lane whose replies go to `replies`.
    pub(crate) fn on_frame(
        self: &Arc<Self>,
        frame: Frame<'_>,
        replies: Lane,
        arrived: Instant,
    ) -> Step {
        // The hot path of a reply: the core gives its waiter up under the lock,
        // the answer is copied and the caller woken outside it.
        let answer = match &frame {
            Frame::Reply { call, value } => Some((*call, Ok(*value))),
            Frame::Error { call, error } => Some((*call, Err(error.clone()))),
            _ => None,
        };
        if let Some((call, outcome)) = answer {
            let waiter = {
                let mut state = self.state.lock();
                let waiter = state.core.answered(call);
                if state.core.has_events() {
                    // Credit came back to callers waiting for it.
                    self.settle(state);
                }
                waiter
            };
            if let Some(waiter) = waiter {
                self.answers.answer(
                    waiter,
                    outcome.map(|value| Answer::Bytes(Encoded::from_slice(value))),
                );
            }
            return Step::Continue;
        }
        if let Frame::PipeItem { .. } = frame {
            // The hot path of a pipe: an item concerns its stream alone (the
            // core has nothing to do with it once the peer said Hello).
            self.on_pipe(frame);
            return Step::Continue;
        }
        // An ask is registered as served with the frame, so that a `Cancel`
        // behind it on its lane always finds it.
        let cancel = matches!(frame, Frame::Call(_)).then(Arc::<CancelSignal>::default);
        let handled = self.drive(|core| {
            let incoming = core.handle_frame(frame);
            if let (Ok(Incoming::Call { call, .. }), Some(cancel)) = (&incoming, &cancel) {
                core.serving(call.id, cancel.clone());
            }
            incoming
        });
        match handled {
            Ok(Incoming::Call { call, one_way }) => self.serve(InCall {
                id: call.id,
                target: call.target,
                interface: call.interface,
                method: call.method,
                args: Args::Encoded(call.args),
                one_way,
                tags: CallTags {
                    chain: call.chain,
                    once: call.once,
                    context: call.context,
                },
                replies,
                deadline: self.deadline_of(&call.context, arrived),
                cancel,
                arrived,
            }),
            Ok(Incoming::Monitor { watch, object }) => {
                self.on_monitor(watch, object);
                Step::Continue
            }
            Ok(Incoming::Exit { object, reason }) => {
                self.on_exit(object, reason);
                Step::Continue
            }
            Ok(Incoming::Refused { object, error }) => {
                tracing::warn!(peer = %self.peer.node, %object, %error, "the peer refused a request about its object");
                Step::Continue
            }
            Ok(Incoming::Renew { objects }) => {
                let ignored = self
                    .node
                    .upgrade()
                    .map(|node| node.renew_for(self.peer.node, &objects));
                if let Some(Some((object, ignored))) = ignored {
                    // Once per frame: the holder learns its proxies are stale.
                    let error = CallError::Unauthorized {
                        reason: format!("{ignored} object ids of a lease renewal name nothing this node exports"),
                    };
                    let _ = self.send(Lane::Control, &Frame::Refused { object, error });
                }
                Step::Continue
            }
            Ok(Incoming::Release { objects }) => {
                if let Some(node) = self.node.upgrade() {
                    node.release_for(self.peer.node, &objects);
                }
                Step::Continue
            }
            Ok(Incoming::Pipe(frame)) => {
                self.on_pipe(frame);
                Step::Continue
            }
            // Replies, pings and monitor reports were the core's to handle.
            Ok(_) => Step::Continue,
            Err(err) => {
                tracing::warn!(peer = %self.peer.node, %err, "closing connection");
                Step::Close
            }
        }
    }

    /// Runs an incoming call on the exported object it names, or holds it
    /// behind calls to the same object held for a full mailbox.
    fn serve(self: &Arc<Self>, call: InCall<Args<'_>>) -> Step {
        if self.holding.load(Ordering::Acquire) > 0 {
            return self.hold(call.hold());
        }
        self.serve_now(call);
        Step::Continue
    }

    /// Hands an incoming call to its object now. A full mailbox makes the call
    /// the first held for its object, and a task hands it (and those held
    /// behind it) over as room comes.
    fn serve_now(self: &Arc<Self>, call: InCall<Args<'_>>) {
        let (id, target, one_way, replies) = (call.id, call.target, call.one_way, call.replies);
        match self.deliver_payload(call) {
            Ok(None) => {
                if one_way {
                    self.owe(target);
                }
            }
            Ok(Some(delivery)) => {
                let mut held = self.held.lock();
                if held.calls.insert(target, VecDeque::new()).is_none() {
                    self.holding.fetch_add(1, Ordering::AcqRel);
                }
                drop(held);
                tokio::spawn(self.clone().release_held(target, delivery, one_way));
            }
            Err(err) => {
                if one_way {
                    tracing::debug!(call = id, %err, "a tell failed");
                    self.owe(target);
                } else {
                    self.reply(replies, id, Err(err));
                }
            }
        }
    }

    /// Holds `call` behind the calls held for its object (or serves it, if
    /// there are none); refuses it with `Overloaded` past the node's window
    /// (a peer that ignores its credit). Past the held-bytes budget, the reader
    /// waits before reading on.
    fn hold(self: &Arc<Self>, call: InCall<Payload>) -> Step {
        let window = self.limits.window as usize;
        let mut held = self.held.lock();
        let Some(queue) = held.calls.get_mut(&call.target) else {
            drop(held);
            call.with(|call| self.serve_now(call));
            return Step::Continue;
        };
        // The one being handed over, and those queued behind it.
        if 1 + queue.len() >= window {
            drop(held);
            let (id, target) = (call.id, call.target);
            if call.one_way {
                tracing::warn!(peer = %self.peer.node, object = %target, "a tell over the peer's credit dropped");
                self.owe(target);
            } else {
                self.reply(call.replies, id, Err(CallError::Overloaded { cap: window }));
            }
            return Step::Continue;
        }
        let size = call.size();
        queue.push_back(call);
        held.bytes += size;
        if held.bytes <= self.held_budget() {
            return Step::Continue;
        }
        drop(held);
        let conn = self.clone();
        Step::Wait(Box::pin(async move { conn.held_shrinks().await }))
    }

    /// The bytes of calls held for this peer past which its readers stop
    /// reading: two of the largest frames.
    pub(crate) fn held_budget(&self) -> usize {
        self.limits.max_frame.saturating_mul(2)
    }

    /// Resolves once the calls held for the peer are within budget (or the
    /// connection closed).
    async fn held_shrinks(&self) {
        loop {
            let room = self.held_room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            if self.held.lock().bytes <= self.held_budget() || self.is_closed() {
                return;
            }
            room.await;
        }
    }

    /// The task that hands the calls held for `target` to it as room comes:
    /// first the one whose `delivery` waits, then those behind it, in order.
    async fn release_held(self: Arc<Self>, target: ObjectId, delivery: Delivery, one_way: bool) {
        delivery.await;
        if one_way {
            self.owe(target);
        }
        loop {
            let next = {
                let mut held = self.held.lock();
                let next = held.calls.get_mut(&target).and_then(VecDeque::pop_front);
                match next {
                    Some(call) => {
                        held.bytes -= call.size();
                        call
                    }
                    None => {
                        held.calls.remove(&target);
                        self.holding.fetch_sub(1, Ordering::AcqRel);
                        break;
                    }
                }
            };
            self.held_room.notify_waiters();
            let (id, one_way, replies) = (next.id, next.one_way, next.replies);
            match next.with(|call| self.deliver_payload(call)) {
                Ok(None) => {}
                Ok(Some(delivery)) => {
                    self.flush_credit();
                    delivery.await;
                }
                Err(err) if !one_way => self.reply(replies, id, Err(err)),
                Err(_) => {}
            }
            if one_way {
                self.owe(target);
            }
        }
        self.held_room.notify_waiters();
        self.flush_credit();
    }

    /// A tell of the peer to `target` is in its mailbox (or refused): its
    /// credit goes back with the next [`Connection::flush_credit`].
    fn owe(&self, target: ObjectId) {
        self.state.lock().core.owe(target);
        self.owes.store(true, Ordering::Release);
    }

    /// Sends the peer the credit owed to it.
    fn flush_credit(&self) {
        if self.owes.swap(false, Ordering::AcqRel) {
            self.drive(Core::flush_credit);
        }
    }

    /// Runs a call on the exported object it names, whether its arguments came
    /// encoded or as a value.
    fn deliver_payload(
        self: &Arc<Self>,
        call: InCall<Args<'_>>,
    ) -> Result<Option<Delivery>, CallError> {
        let (call, args) = call.split();
        let InCall {
            id,
            target,
            interface,
            method,
            one_way,
            tags,
            replies,
            deadline,
            cancel,
            arrived,
            ..
        } = call;
        let node = self.node.upgrade().ok_or(CallError::NoSuchObject)?;
        // Given up already (a `Cancel` came while it was held), or arrived past
        // its deadline: its caller has had its answer. Not run, and counted.
        if let Some(why) = given_up(cancel.as_deref(), deadline) {
            self.forget_served(id);
            let counter = match why {
                Unwanted::Cancelled => &node.given_up().cancelled,
                _ => &node.given_up().expired,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let exported = node.exported(&target).ok_or(CallError::NoSuchObject)?;
        if exported.interface_id() != interface {
            return Err(CallError::InterfaceMismatch {
                expected: interface,
                found: exported.interface_name().to_owned(),
            });
        }
        // A retry of an exactly-once call goes to the reply memory first: the
        // delivery it repeats may be running right now, in its chain, which is no
        // cycle.
        if tags.once != 0 && !one_way {
            return self.deliver_once(
                node, exported, id, method, args, tags, replies, deadline, cancel,
            );
        }
        refuse_cycle(&*exported, tags.chain, method)?;
        let cx = MarshalCx {
            host: node,
            conn: Some(self.clone()),
        };
        // An answer after the call was given up (its caller's Cancel, or its
        // deadline: the last moment at which it could still arrive in time)
        // is not sent: the caller has had its answer already.
        let late = Late {
            deadline,
            cancel: cancel.clone(),
        };
        let replier = match one_way {
            true => Replier::new(|_| {}),
            false => Replier::to_call(
                CallReply {
                    conn: self.clone(),
                    id,
                    replies,
                    late,
                },
                self.carries_values(),
            ),
        }
        .within(cx.clone())
        .sent_by(self.caller.clone())
        .in_chain(tags.chain)
        .until(deadline)
        .arrived_at(arrived);
        let replier = match (one_way, cancel) {
            (true, _) => replier,
            (false, Some(cancel)) => replier.awaited().cancelled_by(cancel, true),
            (false, None) => replier.awaited(),
        };
        #[cfg(feature = "otel")]
        let replier = replier.traced(self.call_span(&*exported, &tags, id));
        cx.enter(|| exported.deliver(method, args, &self.limits, replier, one_way))
    }

    /// The span the handler of the peer's call `id` runs in (see `crate::trace`).
    #[cfg(feature = "otel")]
    fn call_span(&self, exported: &dyn super::Exported, tags: &CallTags, id: u64) -> tracing::Span {
        crate::trace::call_span(
            tags.context.trace,
            exported.interface_name(),
            self.peer.node,
            id,
        )
    }

    /// The peer's ask `call` is answered, or will never be: a `Cancel` of it
    /// now changes nothing.
    fn forget_served(&self, call: u64) {
        self.state.lock().core.served(call);
    }

    /// Delivers a call of an `#[exactly_once]` method: the first delivery of its
    /// logical id runs it; a retry is answered from the node's memory of the reply,
    /// or waits for the delivery that is running it. Replies go encoded, so that
    /// they can be remembered.
    ///
    /// A `Cancel` of such a call (`cancel`) drops it only while it is queued:
    /// once running, it runs to its end, so that its reply can be remembered
    /// (a handler half done would leave retries nothing to be answered with).
    #[allow(clippy::too_many_arguments)]
    fn deliver_once(
        self: &Arc<Self>,
        node: Arc<Host>,
        exported: Arc<dyn super::Exported>,
        id: u64,
        method: u64,
        args: Args<'_>,
        tags: CallTags,
        replies: Lane,
        deadline: Option<Instant>,
        cancel: Option<Arc<CancelSignal>>,
    ) -> Result<Option<Delivery>, CallError> {
        use super::once::Admit;
        let key = (self.peer.node, tags.once);
        let conn = self.clone();
        let late = Late {
            deadline,
            cancel: cancel.clone(),
        };
        let answer = Box::new(move |outcome| match late.is_late() {
            true => conn.forget_served(id),
            false => conn.reply(replies, id, outcome),
        });
        let Admit::Run(answer) = node.once_table().admit(Instant::now(), key, answer) else {
            return Ok(None);
        };
        if let Err(cycle) = refuse_cycle(&*exported, tags.chain, method) {
            // Not run: a retry may run it.
            node.once_table()
                .complete(Instant::now(), key, &Err(cycle.clone()));
            return Err(cycle);
        }
        let cx = MarshalCx {
            host: node.clone(),
            conn: Some(self.clone()),
        };
        let remembering = node.clone();
        let replier = Replier::new(move |outcome| {
            remembering
                .once_table()
                .complete(Instant::now(), key, &outcome);
            answer(outcome);
        })
        .within(cx.clone())
        .sent_by(self.caller.clone())
        .in_chain(tags.chain)
        .until(deadline)
        .awaited();
        let replier = match cancel {
            Some(cancel) => replier.cancelled_by(cancel, false),
            None => replier,
        };
        #[cfg(feature = "otel")]
        let replier = replier.traced(self.call_span(&*exported, &tags, id));
        let delivered = cx.enter(|| exported.deliver(method, args, &self.limits, replier, false));
        if let Err(err) = &delivered {
            // Refused before running: retries waiting for it get the same answer,
            // and a later retry may run it.
            node.once_table()
                .complete(Instant::now(), key, &Err(err.clone()));
        }
        delivered
    }

    /// When the caller of a call that `arrived` with `context` stops waiting:
    /// its budget from its arrival, less the transport's round trip (at least
    /// [`MIN_TRANSIT`]), since the reply too must arrive in time, and less
    /// [`UNWIND_SHARE`] of it, time to unwind. None: no deadline (or this node
    /// does not propagate them).
    fn deadline_of(&self, context: &crate::wire::CallContext, arrived: Instant) -> Option<Instant> {
        let budget = context.budget()?;
        if !self.propagate {
            return None;
        }
        let transit = self.transport.round_trip().max(MIN_TRANSIT) + budget / UNWIND_SHARE;
        Some(crate::deadline::after(
            arrived,
            budget.saturating_sub(transit),
        ))
    }

    /// Handles a value frame from the peer (one process), read on a lane whose
    /// replies go to `replies`. A call arrives when it is taken: the clock is
    /// read for calls only, not for the replies and pipe items beside them.
    pub(crate) fn on_value(self: &Arc<Self>, frame: ValueFrame, replies: Lane) -> Step {
        let cancel = matches!(frame, ValueFrame::Call { one_way: false, .. })
            .then(Arc::<CancelSignal>::default);
        let handled = self.drive(|core| {
            let handled = core.handle_value(frame);
            if let (Some(ValueFrame::Call { id, .. }), Some(cancel)) = (&handled, &cancel) {
                core.serving(*id, cancel.clone());
            }
            handled
        });
        let (id, target, interface, method, args, one_way, tags) = match handled {
            Some(ValueFrame::Call {
                id,
                target,
                interface,
                method,
                args,
                one_way,
                tags,
            }) => (id, target, interface, method, args, one_way, tags),
            Some(ValueFrame::PipeItem { stream, item }) => {
                self.on_pipe_value(stream, item);
                return Step::Continue;
            }
            _ => return Step::Continue,
        };
        let arrived = Instant::now();
        self.serve(InCall {
            id,
            target,
            interface,
            method,
            args: Args::Moved(args),
            one_way,
            tags,
            replies,
            deadline: self.deadline_of(&tags.context, arrived),
            cancel,
            arrived,
        })
    }

    fn reply(&self, lane: Lane, call: u64, outcome: Result<Encoded, CallError>) {
        self.forget_served(call);
        if self.is_closed() {
            return;
        }
        let sent = encode_reply(&self.send_limits, call, outcome, |frame| {
            self.transport.send_lent(lane, frame)
        });
        if sent == Some(false) {
            self.close();
        }
    }

    /// Writes a reply's frame outside the core's lock (replies of different calls
    /// have no order to keep); a transport that refuses it is gone.
    fn write_reply(&self, frame: Option<Transmit>) {
        if frame.is_some_and(|frame| !self.write(frame)) {
            self.close();
        }
    }

    /// The transport is gone: every call in flight fails with `NodeDown`.
    pub(crate) fn close(&self) {
        self.drive(|core| core.close());
    }

    /// The peer's node restarted (a new incarnation answers at its address):
    /// every call in flight fails with `NodeRestarted`, and the connection closes.
    pub(crate) fn close_restarted(&self) {
        self.restarted.store(true, Ordering::Release);
        self.drive(|core| core.close_restarted());
    }

    /// Closes a connection that lost a simultaneous-dial tie-break, after a grace
    /// period: the peer may still be reading our Hello on it, and replies to calls
    /// already made on it still arrive.
    pub(crate) fn retire(self: &Arc<Self>) {
        let conn = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETIRE_GRACE).await;
            conn.close();
        });
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Calls to the peer waiting for their replies.
    pub(crate) fn pending_calls(&self) -> usize {
        self.state.lock().core.pending()
    }

    /// QUIC's statistics of the connection (none in one process).
    pub(crate) fn quic_stats(&self) -> Option<quinn::ConnectionStats> {
        self.transport.quic_stats()
    }

    /// Our monitors of the peer's objects, still waiting (none once closed).
    pub(crate) fn monitors(&self) -> usize {
        self.state.lock().core.monitors()
    }

    /// The peer's monitors of our objects (none once closed).
    pub(crate) fn monitored(&self) -> usize {
        self.state.lock().core.watched_count()
    }

    /// Resolves once the connection is closed.
    pub(crate) async fn closed(&self) {
        let notified = self.closed_notify.notified();
        if !self.closed.load(Ordering::Acquire) {
            notified.await;
        }
    }
}

impl Connection {
    /// Hands one of the core's events to whoever waits for it.
    fn deliver_event(&self, event: Event<Live>) {
        match event {
            Event::Answered { waiter, outcome } => self.answers.answer(waiter, outcome),
            Event::Down { watcher, reason } => {
                // None: the connection is lost, which the dropped sender says.
                if let Some(reason) = reason {
                    let _ = watcher.send(reason);
                }
            }
            Event::Cancel(task) => task.abort(),
            Event::Credit => self.credit.notify_waiters(),
            Event::Cancelled(signal) => signal.cancel(),
            Event::CancelIgnored { call } => {
                tracing::debug!(peer = %self.peer.node, call, "a Cancel naming no call served here ignored");
                if let Some(node) = self.node.upgrade() {
                    node.refusals().cancels.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// When an ask must be answered: by its `deadline` (None: none), with the
/// `timeout` a `Timeout` reports. `read_at` is when the caller read the clock to
/// set them, if it has not waited since: the call's frame measures its budget
/// from it, so that a call reads the clock once, not twice. (The arguments'
/// encoding between the two is not counted against the budget; the callee keeps
/// back a share of the budget and the round trip anyway.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct Due {
    pub(crate) deadline: Option<Instant>,
    pub(crate) timeout: Duration,
    pub(crate) read_at: Option<Instant>,
}

impl Due {
    /// A deadline set without reading the clock for it (or long enough ago
    /// that the clock must be read again).
    pub(crate) fn unread(deadline: Option<Instant>, timeout: Duration) -> Due {
        Due {
            deadline,
            timeout,
            read_at: None,
        }
    }
}

/// Where the answer to the peer's call `id` goes: back on `replies`, unless it
/// comes too late. A [`Replier`] holds it in place: answering a call from a
/// connection boxes no closure.
pub(crate) struct CallReply {
    conn: Arc<Connection>,
    id: u64,
    replies: Lane,
    late: Late,
}

impl CallReply {
    /// Sends `answer` (a value only on a link that carries values), or only
    /// forgets the call if its caller has had its answer already.
    pub(crate) fn answer(self, answer: Result<Answer, CallError>) {
        let CallReply {
            conn,
            id,
            replies,
            late,
        } = self;
        match answer {
            _ if late.is_late() => conn.forget_served(id),
            Ok(Answer::Value(value)) => {
                conn.forget_served(id);
                if !conn.is_closed() {
                    let frame = ValueFrame::Reply { call: id, value };
                    conn.write_reply(Some(Transmit::Value(replies, frame)));
                }
            }
            Ok(Answer::Bytes(bytes)) => conn.reply(replies, id, Ok(bytes)),
            Err(err) => conn.reply(replies, id, Err(err)),
        }
    }
}

/// When the answer to a call from the peer comes too late to be sent: once its
/// caller gave it up, or its deadline passed.
struct Late {
    deadline: Option<Instant>,
    cancel: Option<Arc<CancelSignal>>,
}

impl Late {
    fn is_late(&self) -> bool {
        given_up(self.cancel.as_deref(), self.deadline).is_some()
    }
}

/// Why a call from the peer is not to run, if it is not: its caller gave it
/// up (`cancel` set) or its `deadline` passed.
fn given_up(cancel: Option<&CancelSignal>, deadline: Option<Instant>) -> Option<Unwanted> {
    if cancel.is_some_and(CancelSignal::is_cancelled) {
        return Some(Unwanted::Cancelled);
    }
    deadline
        .is_some_and(|deadline| Instant::now() >= deadline)
        .then_some(Unwanted::Expired)
}

/// Fails a call of `method` in `chain` that comes back to a handler of its chain
/// waiting for it: a cycle. The caller names the method; the interface is what is
/// known here.
fn refuse_cycle(exported: &dyn super::Exported, chain: u64, method: u64) -> Result<(), CallError> {
    if exported.refuses_cycle(chain, method) {
        return Err(CallError::Cycle {
            method: exported.interface_name().to_owned(),
        });
    }
    Ok(())
}

/// The connection's timer task: sleeps to the core's earliest deadline (or until
/// told of an earlier one) and fails the calls whose deadline has passed. One
/// timer a connection, not one a call: a call whose deadline is later than the
/// armed one costs nothing here.
async fn run_deadlines(conn: Weak<Connection>, timer: Arc<Notify>) {
    loop {
        let notified = timer.notified();
        let armed = {
            let Some(conn) = conn.upgrade() else { return };
            if conn.is_closed() {
                return;
            }
            let armed = conn.state.lock().armed;
            armed
        };
        match armed {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = notified => continue,
                }
            }
            None => {
                notified.await;
                continue;
            }
        }
        let Some(conn) = conn.upgrade() else { return };
        let mut state = conn.state.lock();
        state.core.handle_timeout(Instant::now());
        state.armed = state.core.poll_timeout();
        // The `Cancel`s of the calls that timed out.
        while let Some(transmit) = state.core.poll_transmit() {
            if !conn.write(transmit) {
                state.core.close();
            }
        }
        conn.settle(state);
    }
}
