//! One connection to a peer node, over any transport: drives the protocol
//! [`Session`], matches replies to calls, serves incoming calls against this node's
//! exports, and fails every call in flight when the connection is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::exports::Waiting;
use super::host::Host;
use super::marshal::MarshalCx;
use crate::error::CallError;
use crate::local::caller::Caller;
use crate::remote::marshal::{Answer, Args, Moved, Replier};
use crate::wire::codec::{encode, DecodeError, FrameReader, Limits};
use crate::wire::{Call, Frame, Hello, Incoming, ObjectId, Session};

/// What the reader of a connection does after a frame.
pub(crate) enum Step {
    /// Read the next frame.
    Continue,
    /// Wait for this delivery (a full mailbox) before reading on.
    Wait(Waiting),
    /// Close the connection.
    Close,
}

/// Which ordered stream of frames a frame belongs to. Frames of one lane arrive in
/// order; lanes do not wait for each other (a large call to one actor never holds
/// up a small call to another).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// Handshake and pings.
    Control,
    /// Calls (asks and tells) from this node to one object of the peer.
    Call(ObjectId),
    /// Replies to the calls that came in on the peer's lane with this number.
    Reply(u64),
}

/// What a transport's reader does after [`Connection::drain`].
pub(crate) enum Drained {
    /// Every complete frame was handled: read more bytes.
    More,
    /// An oversize frame: reset the stream (QUIC) or drop the link (one stream).
    Reset,
    /// The connection must close.
    Close,
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
}

/// What a call carries besides its arguments: its call chain (cycle detection) and,
/// for an exactly-once method, its logical id (0 for none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CallTags {
    pub(crate) chain: u64,
    pub(crate) once: u64,
}

/// Sends encoded frames (length-prefixed) to the peer. False once the link is gone.
pub(crate) trait Link: Send + Sync {
    fn send(&self, lane: Lane, frame: Vec<u8>) -> bool;
    /// Whether values can move over this link unencoded (one process).
    fn carries_values(&self) -> bool {
        false
    }
    /// Sends a value frame; only on links that carry values.
    fn send_value(&self, _lane: Lane, _frame: ValueFrame) -> bool {
        false
    }
    /// Tears the transport down (the connection is closing).
    fn close(&self) {}
}

type Pending = oneshot::Sender<Result<Answer, CallError>>;

/// How long a duplicate connection lives on after losing the tie-break.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct Connection {
    pub(crate) node: Weak<Host>,
    pub(crate) peer: Hello,
    /// The node that dialed this connection: when two nodes dial each other at once,
    /// both keep the one dialed by the smaller node id.
    pub(crate) dialer: uuid::Uuid,
    /// Who the peer is, as the transport authenticated it: what handlers of its
    /// calls see through [`crate::caller()`].
    caller: Arc<Caller>,
    session: Mutex<Session>,
    pending: Mutex<HashMap<u64, Pending>>,
    link: Box<dyn Link>,
    closed: AtomicBool,
    closed_notify: tokio::sync::Notify,
    pub(super) monitors: super::monitors::Monitors,
    pub(crate) limits: Limits,
}

impl Connection {
    /// A connection to `peer`, whose name the transport authenticated as `identity`
    /// (see [`Caller::identity`]).
    pub(crate) fn new(
        node: Weak<Host>,
        session: Session,
        peer: Hello,
        identity: String,
        link: Box<dyn Link>,
        limits: Limits,
    ) -> Self {
        Connection {
            node,
            dialer: peer.node,
            caller: Arc::new(Caller::new(peer.node, identity)),
            peer,
            session: Mutex::new(session),
            pending: Mutex::new(HashMap::new()),
            link,
            closed: AtomicBool::new(false),
            closed_notify: tokio::sync::Notify::new(),
            monitors: Default::default(),
            limits,
        }
    }

    pub(crate) fn dialed_by(mut self, dialer: uuid::Uuid) -> Self {
        self.dialer = dialer;
        self
    }

    fn node_down(&self, may_have_executed: bool) -> CallError {
        CallError::NodeDown {
            node: self.peer.node.to_string(),
            may_have_executed,
        }
    }

    /// Sends bytes that may not be a frame at all (tests of malformed input).
    pub(crate) fn send_raw(&self, lane: Lane, bytes: Vec<u8>) -> bool {
        self.link.send(lane, bytes)
    }

    /// Sends one frame on `lane`.
    pub(super) fn send(&self, lane: Lane, frame: &Frame<'_>) -> Result<(), CallError> {
        let mut out = Vec::new();
        encode(frame, &mut out, &self.limits).map_err(|err| CallError::Marshalling {
            what: "the frame".into(),
            type_name: "Frame".into(),
            reason: err.to_string(),
        })?;
        if self.link.send(lane, out) {
            Ok(())
        } else {
            Err(self.node_down(false))
        }
    }

    /// Whether calls may move plain values over this connection unencoded.
    pub(crate) fn carries_values(&self) -> bool {
        self.link.carries_values()
    }

    /// Sends a call's frame (encoded or value) on its lane.
    #[allow(clippy::too_many_arguments)]
    fn send_call(
        &self,
        id: u64,
        target: ObjectId,
        interface: u64,
        method: u64,
        args: Args<'_>,
        one_way: bool,
        tags: CallTags,
    ) -> Result<(), CallError> {
        let lane = Lane::Call(target);
        match args {
            Args::Encoded(args) => {
                let call = Call {
                    id,
                    target,
                    interface,
                    method,
                    args,
                    chain: tags.chain,
                    once: tags.once,
                };
                self.send(
                    lane,
                    &if one_way {
                        Frame::Tell(call)
                    } else {
                        Frame::Call(call)
                    },
                )
            }
            Args::Moved(args) => {
                let frame = ValueFrame::Call {
                    id,
                    target,
                    interface,
                    method,
                    args,
                    one_way,
                    tags,
                };
                if self.link.send_value(lane, frame) {
                    Ok(())
                } else {
                    Err(self.node_down(false))
                }
            }
        }
    }

    /// Calls `method` on object `target` of the peer and awaits its answer (tells go
    /// through [`Connection::tell`]); `chain` is the call chain it belongs to.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn call(
        &self,
        target: ObjectId,
        interface: u64,
        method: u64,
        args: Args<'_>,
        timeout: Duration,
        tags: CallTags,
    ) -> Result<Answer, CallError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.node_down(false));
        }
        let id = self.session.lock().next_call_id();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        // Closed between the check and the insert: `close` may have missed us.
        if self.closed.load(Ordering::Acquire) {
            self.pending.lock().remove(&id);
            return Err(self.node_down(false));
        }
        if let Err(err) = self.send_call(id, target, interface, method, args, false, tags) {
            self.pending.lock().remove(&id);
            return Err(err);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            // The connection dropped the call: it was sent, so it may have run.
            Ok(Err(_)) => Err(self.node_down(true)),
            Err(_) => {
                self.pending.lock().remove(&id);
                Err(CallError::Timeout {
                    after: timeout,
                    may_have_executed: true,
                })
            }
        }
    }

    /// Hands every complete frame buffered in `reader` to the connection (replies to
    /// what arrives go to `replies`): malformed frames are logged and skipped, a full
    /// mailbox is waited for (a slow actor slows its callers). The one place where
    /// the decisions about bad input are made, for every transport.
    pub(crate) async fn drain(
        self: &Arc<Self>,
        reader: &mut FrameReader,
        replies: Lane,
    ) -> Drained {
        loop {
            let frame = match reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Drained::More,
                Err(DecodeError::Malformed(why)) => {
                    tracing::warn!(peer = %self.peer.node, %why, "malformed frame skipped");
                    continue;
                }
                Err(err @ DecodeError::Oversize { .. }) => {
                    tracing::warn!(peer = %self.peer.node, %err, "oversize frame: resetting the stream");
                    return Drained::Reset;
                }
            };
            match self.on_frame(frame, replies) {
                Step::Continue => {}
                Step::Wait(waiting) => waiting.await,
                Step::Close => return Drained::Close,
            }
        }
    }

    /// Handles one frame from the peer, read on a lane whose replies go to `replies`.
    pub(crate) fn on_frame(self: &Arc<Self>, frame: Frame<'_>, replies: Lane) -> Step {
        let incoming = self.session.lock().receive(frame);
        match incoming {
            Ok(Incoming::Ready(_)) | Ok(Incoming::Nothing) => Step::Continue,
            Ok(Incoming::Call { call, one_way }) => self.serve(call, one_way, replies),
            Ok(Incoming::Reply { call, outcome }) => {
                if let Some(waiter) = self.pending.lock().remove(&call) {
                    let _ = waiter.send(outcome.map(|bytes| Answer::Bytes(bytes.to_vec())));
                }
                Step::Continue
            }
            Ok(Incoming::Answer(frame)) => match self.send(Lane::Control, &frame) {
                Ok(()) => Step::Continue,
                Err(_) => Step::Close,
            },
            Ok(Incoming::Monitor { watch, object }) => {
                self.on_monitor(watch, object);
                Step::Continue
            }
            Ok(Incoming::Demonitor { watch }) => {
                self.on_demonitor(watch);
                Step::Continue
            }
            Ok(Incoming::Down { watch, reason }) => {
                self.on_down(watch, reason);
                Step::Continue
            }
            Ok(Incoming::Exit { object, reason }) => {
                self.on_exit(object, reason);
                Step::Continue
            }
            Ok(Incoming::Renew { objects }) => {
                if let Some(node) = self.node.upgrade() {
                    node.granted_leases()
                        .renew(self.peer.node, &objects, node.lease_time());
                }
                Step::Continue
            }
            Ok(Incoming::Release { objects }) => {
                if let Some(node) = self.node.upgrade() {
                    node.granted_leases().release(self.peer.node, &objects);
                }
                Step::Continue
            }
            Err(err) => {
                tracing::warn!(peer = %self.peer.node, %err, "closing connection");
                Step::Close
            }
        }
    }

    /// Runs an incoming call on the exported object it names.
    fn serve(self: &Arc<Self>, call: Call<'_>, one_way: bool, replies: Lane) -> Step {
        let id = call.id;
        match self.deliver(call, one_way, replies) {
            Ok(None) => Step::Continue,
            Ok(Some(waiting)) => Step::Wait(waiting),
            Err(err) => {
                if one_way {
                    tracing::debug!(call = id, %err, "a tell failed");
                } else {
                    self.reply(replies, id, Err(err));
                }
                Step::Continue
            }
        }
    }

    fn deliver(
        self: &Arc<Self>,
        call: Call<'_>,
        one_way: bool,
        replies: Lane,
    ) -> Result<Option<Waiting>, CallError> {
        self.deliver_payload(
            call.id,
            call.target,
            call.interface,
            call.method,
            Args::Encoded(call.args),
            one_way,
            CallTags {
                chain: call.chain,
                once: call.once,
            },
            replies,
        )
    }

    /// Runs a call on the exported object it names, whether its arguments came
    /// encoded or as a value; replies go to `replies`.
    #[allow(clippy::too_many_arguments)]
    fn deliver_payload(
        self: &Arc<Self>,
        id: u64,
        target: ObjectId,
        interface: u64,
        method: u64,
        args: Args<'_>,
        one_way: bool,
        tags: CallTags,
        replies: Lane,
    ) -> Result<Option<Waiting>, CallError> {
        let node = self.node.upgrade().ok_or(CallError::NoSuchObject)?;
        let exported = node.exported(&target).ok_or(CallError::NoSuchObject)?;
        if exported.interface_id() != interface {
            return Err(CallError::InterfaceMismatch {
                expected: interface,
                found: exported.interface_name().to_owned(),
            });
        }
        if exported.refuses_cycle(tags.chain, method) {
            // The caller names the method; the interface is what we know here.
            return Err(CallError::Cycle {
                method: exported.interface_name().to_owned(),
            });
        }
        if tags.once != 0 && !one_way {
            return self.deliver_once(node, exported, id, method, args, tags, replies);
        }
        let cx = MarshalCx {
            host: node,
            conn: Some(self.clone()),
        };
        let replier = if one_way {
            Replier::new(|_| {})
        } else if self.carries_values() {
            let conn = self.clone();
            Replier::with_values(move |answer| match answer {
                Ok(Answer::Value(value)) => {
                    if !conn
                        .link
                        .send_value(replies, ValueFrame::Reply { call: id, value })
                    {
                        tracing::debug!(call = id, "reply lost: the link is gone");
                    }
                }
                Ok(Answer::Bytes(bytes)) => conn.reply(replies, id, Ok(bytes)),
                Err(err) => conn.reply(replies, id, Err(err)),
            })
        } else {
            let conn = self.clone();
            Replier::new(move |outcome| conn.reply(replies, id, outcome))
        }
        .within(cx.clone())
        .sent_by(self.caller.clone())
        .in_chain(tags.chain);
        cx.enter(|| exported.deliver(method, args, &self.limits, replier))
    }

    /// Delivers a call of an `#[exactly_once]` method: the first delivery of its
    /// logical id runs it; a retry is answered from the node's memory of the reply,
    /// or waits for the delivery that is running it. Replies go encoded, so that
    /// they can be remembered.
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
    ) -> Result<Option<Waiting>, CallError> {
        use super::once::Admit;
        let key = (self.peer.node, tags.once);
        let conn = self.clone();
        let answer = Box::new(move |outcome| conn.reply(replies, id, outcome));
        let Admit::Run(answer) = node.once_table().admit(key, answer) else {
            return Ok(None);
        };
        let cx = MarshalCx {
            host: node.clone(),
            conn: Some(self.clone()),
        };
        let remembering = node.clone();
        let replier = Replier::new(move |outcome| {
            remembering.once_table().complete(key, &outcome);
            answer(outcome);
        })
        .within(cx.clone())
        .sent_by(self.caller.clone())
        .in_chain(tags.chain);
        let delivered = cx.enter(|| exported.deliver(method, args, &self.limits, replier));
        if let Err(err) = &delivered {
            // Refused before running: retries waiting for it get the same answer,
            // and a later retry may run it.
            node.once_table().complete(key, &Err(err.clone()));
        }
        delivered
    }

    /// Handles a value frame from the peer (one process), read on a lane whose
    /// replies go to `replies`.
    pub(crate) fn on_value(self: &Arc<Self>, frame: ValueFrame, replies: Lane) -> Step {
        match frame {
            ValueFrame::Reply { call, value } => {
                if let Some(waiter) = self.pending.lock().remove(&call) {
                    let _ = waiter.send(Ok(Answer::Value(value)));
                }
                Step::Continue
            }
            ValueFrame::Call {
                id,
                target,
                interface,
                method,
                args,
                one_way,
                tags,
            } => match self.deliver_payload(
                id,
                target,
                interface,
                method,
                Args::Moved(args),
                one_way,
                tags,
                replies,
            ) {
                Ok(None) => Step::Continue,
                Ok(Some(waiting)) => Step::Wait(waiting),
                Err(err) => {
                    if !one_way {
                        self.reply(replies, id, Err(err));
                    }
                    Step::Continue
                }
            },
        }
    }

    fn reply(&self, lane: Lane, call: u64, outcome: Result<Vec<u8>, CallError>) {
        let sent = match &outcome {
            Ok(value) => self.send(lane, &Frame::Reply { call, value }),
            Err(error) => self.send(
                lane,
                &Frame::Error {
                    call,
                    error: error.clone(),
                },
            ),
        };
        if let Err(err) = sent {
            // A reply too large for the frame limit still gets an answer.
            if !matches!(err, CallError::NodeDown { .. }) {
                let _ = self.send(lane, &Frame::Error { call, error: err });
            }
        }
    }

    /// The link is gone: every call in flight fails with `NodeDown`.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.link.close();
        self.closed_notify.notify_waiters();
        let pending: Vec<Pending> = self.pending.lock().drain().map(|(_, tx)| tx).collect();
        for waiter in pending {
            let _ = waiter.send(Err(self.node_down(true)));
        }
        self.monitors.close();
        if let Some(node) = self.node.upgrade() {
            node.forget_peer(&self.peer, self);
        }
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

    /// Resolves once the connection is closed.
    pub(crate) async fn closed(&self) {
        let notified = self.closed_notify.notified();
        if !self.closed.load(Ordering::Acquire) {
            notified.await;
        }
    }

    /// A one-way call, sent now without waiting.
    pub(crate) fn tell(
        &self,
        target: ObjectId,
        interface: u64,
        method: u64,
        args: Args<'_>,
    ) -> Result<(), CallError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.node_down(false));
        }
        let id = self.session.lock().next_call_id();
        self.send_call(
            id,
            target,
            interface,
            method,
            args,
            true,
            CallTags::default(),
        )
    }
}
