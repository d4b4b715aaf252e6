//! What the [`Inspector`](super::Inspector) answers: plain serde structs, so
//! that a program of another build (the `remora` CLI) decodes them, and
//! `serde_json` prints them for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{ActorId, NodeId, ObjectId};

/// A node: who it is, since when, where, and its table sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeInfo {
    /// Its id.
    pub id: NodeId,
    /// Its name ([`NodeBuilder::name`](crate::NodeBuilder::name)), if it has one.
    pub name: Option<String>,
    /// This run of it: a new value every time it starts.
    pub incarnation: u64,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Where peers dial it, if it listens.
    pub listen: Option<String>,
    /// The version of the `remora` crate it runs.
    pub version: String,
    /// The wire protocol's version it speaks.
    pub protocol: u32,
    /// Actors running.
    pub actors: usize,
    /// Objects other nodes may call.
    pub exports: usize,
    /// Open connections to other nodes.
    pub connections: usize,
    /// Leases other nodes hold on its exports.
    pub leases_granted: usize,
    /// Objects of other nodes it holds leases on.
    pub leases_held: usize,
    /// Replies of `#[exactly_once]` calls remembered for retries.
    pub exactly_once_replies: usize,
    /// Pipe streams open on its connections.
    pub pipe_streams: usize,
}

/// What peers make a node hold, and its incoming handshakes: the
/// [`NodeStats`](crate::NodeStats) counters of the same names, where each one's
/// bound is said. For a program that checks a node's limits from outside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LimitsInfo {
    /// Open connections to other nodes.
    pub connections: usize,
    /// Bytes read from other nodes over the connections open now.
    pub bytes_received: u64,
    /// Bytes written to other nodes that the network has not taken yet.
    pub queued_bytes: usize,
    /// Calls from other nodes held because their actor's mailbox is full.
    pub calls_held: usize,
    /// Call lanes (QUIC streams) open toward other nodes.
    pub call_lanes: usize,
    /// Bytes of large frames being received from other nodes.
    pub receiving_bytes: usize,
    /// Incoming QUIC handshakes in flight now.
    pub handshakes: usize,
    /// Incoming handshakes answered with a QUIC Retry since the node started.
    pub handshakes_retried: u64,
    /// Incoming handshakes refused since the node started.
    pub handshakes_refused: u64,
}

/// Whether an actor is at work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ActorState {
    /// Nothing runs on it, nothing waits for it.
    Idle,
    /// A handler (or a lifecycle hook) runs on it, or it is about to take a
    /// queued message.
    Busy,
}

/// An actor's mailbox: its kind, what it holds, how much it may hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MailboxInfo {
    /// `rendezvous`, `bounded` or `unbounded`.
    pub kind: String,
    /// Messages queued now, not yet taken by the actor.
    pub length: usize,
    /// Room: the bounded capacity (0 for rendezvous), or an unbounded
    /// mailbox's hard cap.
    pub capacity: usize,
}

/// One actor of the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActorInfo {
    /// Its id on its node.
    pub id: ActorId,
    /// The name it was spawned with ([`SpawnOptions::name`](crate::SpawnOptions::name)).
    pub name: Option<String>,
    /// Its Rust type.
    pub actor_type: String,
    /// The interface it is reached through.
    pub interface: String,
    /// The object id other nodes call it by, once exported. Its registry names
    /// are not here (a node does not know them: a binding lives in the
    /// registry); a registry entry whose target has this node's id and this
    /// object id names this actor, which is how `remora inspect --registry`
    /// shows them.
    pub object: Option<ObjectId>,
    /// Its mailbox.
    pub mailbox: MailboxInfo,
    /// Idle or busy, as of the moment it was looked at.
    pub state: ActorState,
    /// Messages whose handler started, since it was spawned.
    pub handled: u64,
    /// Panics of its handlers and hooks.
    pub panics: u64,
    /// Times it was restarted with fresh state.
    pub restarts: u64,
    /// Its supervisor's actor, if a supervisor of this node runs it.
    pub supervisor: Option<ActorId>,
}

/// What QUIC says of a connection (quinn's connection statistics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuicFigures {
    /// Smoothed round-trip time, in microseconds.
    pub rtt_us: u64,
    /// Congestion window, in bytes.
    pub cwnd: u64,
    /// Congestion events so far.
    pub congestion_events: u64,
    /// Packets sent, and lost.
    pub sent_packets: u64,
    /// Packets deemed lost.
    pub lost_packets: u64,
    /// UDP bytes sent.
    pub bytes_sent: u64,
    /// UDP bytes received.
    pub bytes_received: u64,
    /// QUIC stream frames sent.
    pub stream_frames_sent: u64,
    /// QUIC stream frames received.
    pub stream_frames_received: u64,
}

/// A connection to another node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The peer's node id.
    pub peer: NodeId,
    /// The peer's name, if it has one.
    pub name: Option<String>,
    /// Where the peer listens, if it does.
    pub addr: Option<String>,
    /// The name on the peer's certificate.
    pub identity: String,
    /// `quic` or `in-process`.
    pub transport: String,
    /// Bytes read from the peer.
    pub bytes_received: u64,
    /// Bytes written to the peer and not yet sent.
    pub bytes_queued: usize,
    /// Call lanes (streams, over QUIC) open toward the peer.
    pub call_lanes: usize,
    /// Calls to the peer waiting for their replies.
    pub pending_calls: usize,
    /// Calls from the peer held for full mailboxes.
    pub calls_held: usize,
    /// Pipe streams open on the connection.
    pub pipe_streams: usize,
    /// QUIC's figures (none in one process).
    pub quic: Option<QuicFigures>,
}

/// A lease a node holds on an export of this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LeaseHolder {
    /// The holder (the nil id: granted for a reference on its way, its holder
    /// not known yet).
    pub node: NodeId,
    /// Milliseconds until it lapses unless renewed.
    pub expires_in_ms: u64,
}

/// An object this node exports, and who holds leases on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExportInfo {
    /// Its object id.
    pub object: ObjectId,
    /// Its interface (`pipe` for a pipe end).
    pub interface: String,
    /// The actor behind it, if it is one.
    pub actor: Option<ActorId>,
    /// Kept whatever the leases say (explicit exports, pinned actors, services).
    pub pinned: bool,
    /// Exported under a chosen id: a service of the node.
    pub service: bool,
    /// The leases on it.
    pub leases: Vec<LeaseHolder>,
}

/// Objects of another node this node holds leases on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HeldLease {
    /// The node the object lives on.
    pub node: NodeId,
    /// The object.
    pub object: ObjectId,
    /// Proxies of it on this node.
    pub proxies: usize,
}

/// Exports and leases, both ways.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// What this node exports, with the leases other nodes hold on each.
    pub exports: Vec<ExportInfo>,
    /// What this node holds leases on.
    pub held: Vec<HeldLease>,
    /// Replies of `#[exactly_once]` calls remembered for retries.
    pub exactly_once_replies: usize,
    /// Pipe streams open on its connections.
    pub pipe_streams: usize,
}

/// A latency histogram: `buckets[i]` counts calls that took less than 2^i µs
/// (and at least 2^(i-1) µs); the last bucket holds everything longer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Latency {
    /// Counts per log2 bucket of microseconds.
    pub buckets: Vec<u64>,
}

impl Latency {
    /// How many calls were timed.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// An upper bound of the `q` quantile (0.0 to 1.0): the top of the bucket
    /// it falls in; None if nothing was timed.
    ///
    /// ```
    /// let latency = remora::inspect::Latency::from_buckets(vec![0, 0, 3, 1]);
    /// assert_eq!(latency.count(), 4);
    /// // Three calls under 4 µs (bucket 2), one under 8 µs (bucket 3).
    /// assert_eq!(latency.quantile(0.5), Some(std::time::Duration::from_micros(4)));
    /// assert_eq!(latency.quantile(0.99), Some(std::time::Duration::from_micros(8)));
    /// ```
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(1u64 << i.min(62)));
            }
        }
        None
    }

    /// A histogram of these bucket counts.
    pub fn from_buckets(buckets: Vec<u64>) -> Latency {
        Latency { buckets }
    }
}

/// One method of one interface on this node: its calls, its errors by kind,
/// and the latency of the calls from other nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodStats {
    /// The interface's wire name.
    pub interface: String,
    /// The method's name (`?` for calls naming a method the interface lacks).
    pub method: String,
    /// Calls whose handler started (for `?`: calls refused as unknown).
    pub calls: u64,
    /// Calls answered with an error (or dropped unanswered), by the
    /// [`CallError`](crate::CallError) variant's name; kinds with no error are
    /// left out.
    pub errors: BTreeMap<String, u64>,
    /// Calls from other nodes, from their arrival to their handler's end.
    pub latency: Latency,
}

impl MethodStats {
    /// Errors of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}
