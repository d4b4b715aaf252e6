//! The frames nodes exchange, and their encoding.
//!
//! A frame is a MessagePack value (rmp-serde, compact array form) behind a 4-byte
//! big-endian length. Method arguments and replies travel as nested byte strings:
//! the protocol routes them without knowing their types, and only the target's
//! generated dispatcher decodes them, into the declared types (no gadget chains).

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. A peer speaking another one is refused
/// at connect with [`CallError::VersionMismatch`](crate::CallError::VersionMismatch).
pub const PROTOCOL_VERSION: u32 = 9;

/// The first bytes of every `Hello`, so that a stray connection is told apart from
/// a peer of another version.
pub const MAGIC: u32 = 0x5245_4d4f; // "REMO"

pub use crate::id::{NodeId, ObjectId};

/// One frame on a connection between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame<'a> {
    /// The first frame each side sends.
    Hello(Hello),
    /// A call that expects a reply (an ask).
    Call(#[serde(borrow)] Call<'a>),
    /// A one-way call (a tell): no reply, no error frame.
    Tell(#[serde(borrow)] Call<'a>),
    /// The value a call returned, as the encoded bytes of the method's output.
    Reply {
        /// The call it answers.
        call: u64,
        /// The encoded return value.
        #[serde(borrow, with = "serde_bytes")]
        value: &'a [u8],
    },
    /// Why a call did not return a value.
    Error {
        /// The call it answers.
        call: u64,
        /// What went wrong.
        error: crate::CallError,
    },
    /// The sender drops its leases on these objects (its last proxies are gone).
    Release {
        /// Objects released.
        objects: Vec<ObjectId>,
    },
    /// The sender holds proxies for these objects: it takes or renews leases on them.
    Renew {
        /// Objects renewed.
        objects: Vec<ObjectId>,
    },
    /// Liveness probe; answered with `Pong` carrying the same nonce.
    Ping(u64),
    /// The answer to a `Ping`.
    Pong(u64),
    /// Tell the sender with `Down` when this object stops (a monitor from another node).
    Monitor {
        /// The sender's id for this monitor.
        watch: u64,
        /// The object watched.
        object: ObjectId,
    },
    /// The sender no longer needs this monitor.
    Demonitor {
        /// The monitor's id.
        watch: u64,
    },
    /// A monitored object stopped, for this reason.
    Down {
        /// The monitor's id.
        watch: u64,
        /// Why it stopped.
        reason: crate::StopReason,
    },
    /// Stop this object, for this reason (a linked actor failed, or a node stops
    /// an actor it holds a reference to).
    Exit {
        /// The object to stop.
        object: ObjectId,
        /// Why.
        reason: crate::StopReason,
    },
    /// Room the sender made for calls to its objects: each `(object, n)` gives
    /// back `n` of the receiver's tells to `object` that are now in its mailbox
    /// (or were refused). See [`Hello::window`].
    Credit {
        /// Objects and the calls to them given back.
        grants: Vec<(ObjectId, u32)>,
    },
    /// The sender refused a control frame about one of its objects (an `Exit`
    /// from a node without the authority, a `Monitor` over its bound): why.
    Refused {
        /// The object the refused frame named.
        object: ObjectId,
        /// Why (`Unauthorized`).
        error: crate::CallError,
    },
    /// Opens pipe stream `stream` (numbered by the sender: even from the node with
    /// the smaller id, odd from the other) to the receiver's pipe end `pipe`: to take its
    /// items with `credit` of them and `bytes` of their encodings granted (a
    /// receiving half), or to give it items (a sending half, both 0: the
    /// receiver grants them).
    PipeOpen {
        /// The stream.
        stream: u64,
        /// The pipe end, exported as an object.
        pipe: ObjectId,
        /// Items granted to the receiver.
        credit: u32,
        /// Bytes granted to the receiver: it may send an item while any are
        /// left (each costs its encoded length plus a fixed overhead).
        bytes: u64,
    },
    /// One item of a pipe stream, encoded; on the stream's own lane.
    PipeItem {
        /// The stream.
        stream: u64,
        /// The encoded item.
        #[serde(borrow, with = "serde_bytes")]
        item: &'a [u8],
    },
    /// The side that takes a stream's items has room for `items` more, and
    /// `bytes` more of them (`u64::MAX`: no byte budget).
    PipeCredit {
        /// The stream.
        stream: u64,
        /// Items granted.
        items: u32,
        /// Bytes granted.
        bytes: u64,
    },
    /// No more items on a stream: every sender is gone (`error` None), or the
    /// items' source failed. On the stream's own lane, after its last item.
    PipeEnd {
        /// The stream.
        stream: u64,
        /// Why, if it was not a clean end.
        error: Option<crate::CallError>,
    },
    /// The side that takes a stream's items is gone, or refuses the stream
    /// (`error`): stop sending.
    PipeClose {
        /// The stream.
        stream: u64,
        /// Why, if it was not a plain drop of the receiving half.
        error: Option<crate::CallError>,
    },
    /// The sender gave up on its call `call` (its caller dropped the call, or the
    /// call's deadline passed): a call still queued is dropped unrun, a running
    /// handler is told ([`cancelled`](crate::cancelled)). Sent on the call's own
    /// lane, after it. A `Cancel` naming no call of the sender's still being
    /// served on this connection is ignored (and counted).
    Cancel {
        /// The call, as its `Call` frame numbered it.
        call: u64,
    },
}

impl Frame<'_> {
    /// The length of the encoded bytes the frame carries (a call's arguments, a
    /// reply's value, a pipe item), 0 for a frame of fields only.
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Call(call) | Frame::Tell(call) => call.args.len(),
            Frame::Reply { value, .. } => value.len(),
            Frame::PipeItem { item, .. } => item.len(),
            _ => 0,
        }
    }
}

/// Who is speaking: sent once, first, by each side of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The sender's node id.
    pub node: NodeId,
    /// The sender's incarnation: changes every time the node process starts.
    pub incarnation: u64,
    /// Where the sender accepts connections, if it listens: a peer handed a
    /// reference to one of its objects by a third node dials it here.
    pub listen: Option<String>,
    /// The sender's name ([`NodeBuilder::name`](crate::NodeBuilder::name)), if it
    /// has one: for people, in the errors that concern the node. At most
    /// [`Hello::MAX_NAME`] bytes.
    pub name: Option<String>,
    /// The largest frame body the sender accepts, in bytes: the peer refuses to
    /// send it a larger call ([`CallError::TooLarge`](crate::CallError::TooLarge))
    /// rather than have the stream reset.
    pub max_frame: u64,
    /// How many calls to one of the sender's objects the peer may have
    /// outstanding: asks count until answered, tells until the sender gives them
    /// back with [`Frame::Credit`] (once they are in the object's mailbox). A
    /// peer out of room waits (a tell) or is refused (`try_tell`).
    pub window: u32,
}

impl Hello {
    /// The longest name a `Hello` may carry, in bytes; a longer one is a
    /// protocol violation.
    pub const MAX_NAME: usize = 256;

    /// The sender as errors name it: its name and where it listens.
    pub fn label(&self) -> crate::NodeLabel {
        crate::NodeLabel::new(self.name.as_deref(), self.listen.as_deref())
    }
}

/// A call of one method on one exported object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call<'a> {
    /// Unique per sending node and connection: replies and duplicates are matched on it.
    pub id: u64,
    /// The exported object called.
    pub target: ObjectId,
    /// The interface the caller believes the object serves (`stable_id` of its name).
    pub interface: u64,
    /// The method (`stable_id("Interface.method")`).
    pub method: u64,
    /// The encoded argument struct.
    #[serde(borrow, with = "serde_bytes")]
    pub args: &'a [u8],
    /// The call chain the call belongs to (0: none): an actor busy with a call of
    /// the same chain refuses it as a cycle.
    pub chain: u64,
    /// For an `#[exactly_once]` method, the logical call's id, the same in every
    /// retry (0: at most once): the receiver runs it once and answers retries
    /// from its memory of the reply.
    pub once: u64,
    /// What the call carries about the call it is made for: its deadline now
    /// (and room for more, such as a trace context, without reshaping the frame).
    pub context: CallContext,
}

/// The optional context of a call, beside its arguments: one MessagePack array
/// whose entries are each optional (`nil` when absent), so a call without any
/// costs two bytes. Entries added later go at the end, with `#[serde(default)]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    /// The call's remaining budget in microseconds, as the caller measured it
    /// when it built the frame; `None`: no deadline. A duration, not an instant:
    /// the two nodes' clocks are not compared. The receiver's deadline for the
    /// call is its arrival plus this budget, less the connection's round trip
    /// (the reply must travel back in time) and a share of the budget (time
    /// to unwind). See
    /// [`NodeBuilder::propagate_deadlines`](crate::NodeBuilder::propagate_deadlines).
    #[serde(default)]
    pub budget: Option<u64>,
    /// The W3C trace context of the caller's span (nodes built with the `otel`
    /// feature): the callee's `remora.call` span is its child. Absent, it is
    /// not written at all (the array is one entry shorter), so a node without
    /// the feature sends nothing extra.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// A W3C trace context (`traceparent`): the trace, the caller's span in it, and
/// the trace flags (sampled: bit 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The trace id (16 bytes, big-endian), never 0 in a valid context.
    pub trace_id: u128,
    /// The caller's span id (8 bytes, big-endian), never 0 in a valid context.
    pub span_id: u64,
    /// The W3C trace flags.
    pub flags: u8,
}

impl CallContext {
    /// A context carrying `budget` (saturating at `u64::MAX` microseconds).
    pub fn with_budget(budget: Option<std::time::Duration>) -> CallContext {
        CallContext {
            budget: budget.map(|b| u64::try_from(b.as_micros()).unwrap_or(u64::MAX)),
            trace: None,
        }
    }

    /// The budget as a duration.
    pub fn budget(&self) -> Option<std::time::Duration> {
        self.budget.map(std::time::Duration::from_micros)
    }
}
