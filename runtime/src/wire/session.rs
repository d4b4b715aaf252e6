//! One connection's protocol state, free of I/O: the handshake, call ids, and
//! at-most-once suppression of duplicate calls. A transport feeds it the frames it
//! reads and sends the frames it is given; the same state machine serves every
//! transport, and is tested here without any.

use std::collections::BTreeSet;

use crate::id::NodeId;

use super::codec::Limits;
use super::frame::{Call, Frame, Hello, ObjectId, MAGIC, PROTOCOL_VERSION};
use crate::error::CallError;
use crate::local::stop::StopReason;

/// This side of a connection.
#[derive(Debug)]
pub struct Session {
    local: Hello,
    peer: Option<Hello>,
    next_call: u64,
    seen: Seen,
}

/// What a received frame means for the node.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// The peer introduced itself; the connection is ready.
    Ready(Hello),
    /// A call to run (`one_way` for tells: no reply is expected).
    Call {
        /// The call.
        call: Call<'a>,
        /// True for a tell.
        one_way: bool,
    },
    /// The answer to one of our calls: the encoded value or the error.
    Reply {
        /// Our call id.
        call: u64,
        /// The outcome.
        outcome: Result<&'a [u8], CallError>,
    },
    /// A `Ping` to answer with this `Pong`.
    Answer(Frame<'static>),
    /// The peer asks to be told when `object` stops.
    Monitor {
        /// The peer's id for the monitor.
        watch: u64,
        /// The object.
        object: ObjectId,
    },
    /// The peer cancels a monitor.
    Demonitor {
        /// The peer's id for it.
        watch: u64,
    },
    /// An object we monitor stopped.
    Down {
        /// Our id for the monitor.
        watch: u64,
        /// Why it stopped.
        reason: StopReason,
    },
    /// The peer asks us to stop `object`.
    Exit {
        /// The object.
        object: ObjectId,
        /// Why.
        reason: StopReason,
    },
    /// The peer refused a control frame of ours about its `object`.
    Refused {
        /// The object.
        object: ObjectId,
        /// Why.
        error: CallError,
    },
    /// The peer holds (renews) leases on these objects of ours.
    Renew {
        /// The objects.
        objects: Vec<ObjectId>,
    },
    /// The peer holds no more proxies for these objects of ours.
    Release {
        /// The objects.
        objects: Vec<ObjectId>,
    },
    /// The peer gave back room for calls to its objects.
    Credit {
        /// Objects and the calls given back.
        grants: Vec<(ObjectId, u32)>,
    },
    /// The peer gave up on its call `call` (see [`Frame::Cancel`]).
    Cancel {
        /// The peer's call id.
        call: u64,
    },
    /// A pipe frame (`PipeOpen`, `PipeItem`, `PipeCredit`, `PipeEnd`,
    /// `PipeClose`), for the node's pipe streams.
    Pipe(Frame<'a>),
    /// Nothing to do (a duplicate call, a pong).
    Nothing,
}

/// Why a connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer is not a Remora node of this protocol version.
    #[error(transparent)]
    Refused(CallError),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Violation(String),
}

impl Session {
    /// A session for the node `node` in its incarnation `incarnation`, reachable at
    /// `listen` if it listens, accepting what `limits` allow (frame bodies up to
    /// `max_frame` bytes, `window` calls outstanding per object).
    pub fn new(node: NodeId, incarnation: u64, listen: Option<String>, limits: &Limits) -> Self {
        Session {
            local: Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                node,
                incarnation,
                listen,
                name: None,
                max_frame: limits.max_frame as u64,
                window: limits.window,
            },
            peer: None,
            next_call: 1,
            seen: Seen::default(),
        }
    }

    /// This session with the node's name in its `Hello` (cut to
    /// [`Hello::MAX_NAME`] bytes, at a character boundary).
    pub fn named(mut self, name: Option<&str>) -> Self {
        self.local.name = name.map(|name| {
            let mut end = name.len().min(Hello::MAX_NAME);
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name[..end].to_owned()
        });
        self
    }

    /// The frame to send first.
    pub fn hello(&self) -> Frame<'static> {
        Frame::Hello(self.local.clone())
    }

    /// The peer, once its `Hello` has arrived.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// A fresh id for an outgoing call.
    pub fn next_call_id(&mut self) -> u64 {
        let id = self.next_call;
        self.next_call += 1;
        id
    }

    /// Interprets one received frame.
    pub fn receive<'a>(&mut self, frame: Frame<'a>) -> Result<Incoming<'a>, SessionError> {
        match frame {
            Frame::Hello(hello) => {
                if self.peer.is_some() {
                    return Err(SessionError::Violation("a second Hello".into()));
                }
                if hello.magic != MAGIC {
                    return Err(SessionError::Violation(
                        "not a Remora peer (bad magic)".into(),
                    ));
                }
                if hello.version != PROTOCOL_VERSION {
                    return Err(SessionError::Refused(CallError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: hello.version,
                    }));
                }
                if hello
                    .name
                    .as_ref()
                    .is_some_and(|n| n.len() > Hello::MAX_NAME)
                {
                    return Err(SessionError::Violation(format!(
                        "a node name over {} bytes",
                        Hello::MAX_NAME
                    )));
                }
                self.peer = Some(hello.clone());
                Ok(Incoming::Ready(hello))
            }
            _ if self.peer.is_none() => Err(SessionError::Violation(
                "a frame before the peer's Hello".into(),
            )),
            Frame::Call(call) | Frame::Tell(call) if !self.seen.first_time(call.id) => {
                tracing::debug!(call = call.id, "duplicate call discarded");
                Ok(Incoming::Nothing)
            }
            Frame::Call(call) => Ok(Incoming::Call {
                call,
                one_way: false,
            }),
            Frame::Tell(call) => Ok(Incoming::Call {
                call,
                one_way: true,
            }),
            Frame::Reply { call, value } => Ok(Incoming::Reply {
                call,
                outcome: Ok(value),
            }),
            Frame::Error { call, error } => Ok(Incoming::Reply {
                call,
                outcome: Err(error),
            }),
            Frame::Ping(nonce) => Ok(Incoming::Answer(Frame::Pong(nonce))),
            Frame::Pong(_) => Ok(Incoming::Nothing),
            Frame::Renew { objects } => Ok(Incoming::Renew { objects }),
            Frame::Release { objects } => Ok(Incoming::Release { objects }),
            Frame::Monitor { watch, object } => Ok(Incoming::Monitor { watch, object }),
            Frame::Demonitor { watch } => Ok(Incoming::Demonitor { watch }),
            Frame::Down { watch, reason } => Ok(Incoming::Down { watch, reason }),
            Frame::Exit { object, reason } => Ok(Incoming::Exit { object, reason }),
            Frame::Credit { grants } => Ok(Incoming::Credit { grants }),
            Frame::Refused { object, error } => Ok(Incoming::Refused { object, error }),
            Frame::Cancel { call } => Ok(Incoming::Cancel { call }),
            pipe @ (Frame::PipeOpen { .. }
            | Frame::PipeItem { .. }
            | Frame::PipeCredit { .. }
            | Frame::PipeEnd { .. }
            | Frame::PipeClose { .. }) => Ok(Incoming::Pipe(pipe)),
        }
    }
}

/// Call ids seen from the peer: every id from 1 below `next`, plus the ones in
/// `above`, plus 0 if `zero`. Peers allocate ids in order from 1, so the set above
/// stays as small as the calls in flight; 0 and `u64::MAX` are call ids like any
/// other (`next` counts past the largest).
#[derive(Debug)]
struct Seen {
    zero: bool,
    next: u128,
    above: BTreeSet<u64>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            zero: false,
            next: 1,
            above: BTreeSet::new(),
        }
    }
}

/// How many out-of-order ids are remembered before the oldest are assumed seen.
const MAX_ABOVE: usize = 1 << 16;

impl Seen {
    fn first_time(&mut self, id: u64) -> bool {
        if id == 0 {
            return !std::mem::replace(&mut self.zero, true);
        }
        // The usual case, the id after the last: no set to touch unless it
        // closes a gap (`above` never holds `next` itself).
        if u128::from(id) == self.next {
            self.next += 1;
            if !self.above.is_empty() {
                self.advance();
            }
            return true;
        }
        if u128::from(id) < self.next || !self.above.insert(id) {
            return false;
        }
        self.advance();
        if self.above.len() > MAX_ABOVE {
            // A gap that never fills (a lost call): move past it.
            if let Some(lowest) = self.above.pop_first() {
                self.next = u128::from(lowest) + 1;
                self.advance();
            }
        }
        true
    }

    /// Moves `next` over the ids seen just above it.
    fn advance(&mut self) {
        while u64::try_from(self.next).is_ok_and(|next| self.above.remove(&next)) {
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Session, Session) {
        let mut a = Session::new(NodeId::from_u128(1), 7, None, &Limits::default());
        let mut b = Session::new(NodeId::from_u128(2), 9, None, &Limits::default());
        let hello_a = a.hello();
        let hello_b = b.hello();
        assert!(
            matches!(b.receive(hello_a), Ok(Incoming::Ready(h)) if h.node == NodeId::from_u128(1))
        );
        assert!(matches!(a.receive(hello_b), Ok(Incoming::Ready(h)) if h.incarnation == 9));
        (a, b)
    }

    fn call(id: u64) -> Frame<'static> {
        Frame::Call(Call {
            id,
            target: ObjectId::from_u128(5),
            interface: 1,
            method: 2,
            args: b"args",
            chain: 0,
            once: 0,
            context: Default::default(),
        })
    }

    #[test]
    fn frames_before_hello_are_a_violation() {
        let mut b = Session::new(NodeId::from_u128(2), 1, None, &Limits::default());
        assert!(matches!(
            b.receive(call(1)),
            Err(SessionError::Violation(_))
        ));
    }

    #[test]
    fn another_protocol_version_is_refused_with_both_versions() {
        let mut b = Session::new(NodeId::from_u128(2), 1, None, &Limits::default());
        let mut hello = Session::new(NodeId::from_u128(1), 1, None, &Limits::default())
            .local
            .clone();
        hello.version = PROTOCOL_VERSION + 1;
        assert_eq!(
            b.receive(Frame::Hello(hello)),
            Err(SessionError::Refused(CallError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1
            }))
        );
    }

    #[test]
    fn a_name_travels_in_the_hello_and_an_overlong_one_is_a_violation() {
        let mut b = Session::new(NodeId::from_u128(2), 1, None, &Limits::default());
        let named =
            Session::new(NodeId::from_u128(1), 1, None, &Limits::default()).named(Some("bank-1"));
        assert!(matches!(
            b.receive(named.hello()),
            Ok(Incoming::Ready(h)) if h.name.as_deref() == Some("bank-1")
        ));
        // Our own name is cut to the limit, at a character boundary.
        let long = "é".repeat(Hello::MAX_NAME);
        let cut =
            Session::new(NodeId::from_u128(1), 1, None, &Limits::default()).named(Some(&long));
        let Frame::Hello(hello) = cut.hello() else {
            unreachable!()
        };
        assert_eq!(hello.name.as_ref().map(String::len), Some(Hello::MAX_NAME));
        // A peer that sends a longer one broke the protocol.
        let mut b = Session::new(NodeId::from_u128(2), 1, None, &Limits::default());
        let mut hello = hello;
        hello.name = Some("x".repeat(Hello::MAX_NAME + 1));
        assert!(matches!(
            b.receive(Frame::Hello(hello)),
            Err(SessionError::Violation(reason)) if reason.contains("name")
        ));
    }

    #[test]
    fn call_ids_zero_and_max_are_calls_like_any_other() {
        let (_a, mut b) = pair();
        for id in [0, u64::MAX, 1, u64::MAX - 1] {
            assert!(
                matches!(b.receive(call(id)), Ok(Incoming::Call { .. })),
                "{id}"
            );
            assert_eq!(b.receive(call(id)), Ok(Incoming::Nothing), "again {id}");
        }
    }

    #[test]
    fn a_duplicate_call_is_delivered_once() {
        let (mut a, mut b) = pair();
        let id = a.next_call_id();
        assert!(matches!(
            b.receive(call(id)),
            Ok(Incoming::Call { one_way: false, .. })
        ));
        assert_eq!(b.receive(call(id)), Ok(Incoming::Nothing));
    }

    #[test]
    fn out_of_order_ids_are_each_delivered_once() {
        let (_, mut b) = pair();
        for id in [3, 1, 2, 5, 4] {
            assert!(
                matches!(b.receive(call(id)), Ok(Incoming::Call { .. })),
                "{id}"
            );
        }
        for id in 1..=5 {
            assert_eq!(b.receive(call(id)), Ok(Incoming::Nothing), "{id}");
        }
        assert_eq!(b.seen.next, 6);
        assert!(b.seen.above.is_empty());
    }

    proptest::proptest! {
        /// Whatever the order (in order, gaps, repeats, 0), an id is new exactly
        /// when a plain set of the ids seen so far says so.
        #[test]
        fn an_id_is_first_seen_once_in_any_order(
            ids in proptest::collection::vec(
                proptest::prop_oneof![0u64..40, 1u64..4, proptest::strategy::Just(u64::MAX)],
                0..200,
            ),
        ) {
            let mut seen = Seen::default();
            let mut plain = std::collections::HashSet::new();
            for id in ids {
                proptest::prop_assert_eq!(seen.first_time(id), plain.insert(id), "id {}", id);
                proptest::prop_assert!(!seen.above.contains(&(seen.next as u64)));
            }
        }
    }

    #[test]
    fn pings_are_answered_and_replies_matched() {
        let (_, mut b) = pair();
        assert_eq!(
            b.receive(Frame::Ping(3)),
            Ok(Incoming::Answer(Frame::Pong(3)))
        );
        assert_eq!(
            b.receive(Frame::Error {
                call: 4,
                error: CallError::ActorStopped
            }),
            Ok(Incoming::Reply {
                call: 4,
                outcome: Err(CallError::ActorStopped)
            })
        );
    }
}
