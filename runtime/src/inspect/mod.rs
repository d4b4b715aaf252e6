//! Introspection: every node answers what it hosts and how it is doing, through
//! an ordinary remote interface ([`Inspector`]) at a well-known object id
//! ([`INSPECTOR_OBJECT`]), as the spawner is served at its own.
//!
//! - [`Inspector::node`]: id, name, incarnation, uptime, address, version.
//! - [`Inspector::actors`]: each actor's type, interface, mailbox (kind,
//!   length, capacity), whether it is busy, messages handled, panics,
//!   restarts and supervisor.
//! - [`Inspector::conns`]: each connection's peer, bytes, lanes, calls in
//!   flight, and QUIC's figures (round trip, congestion window, losses).
//! - [`Inspector::leases`]: exports and who holds leases on them until when,
//!   the leases this node holds, the exactly-once table's size, open pipes.
//! - [`Inspector::methods`]: per interface and method, calls, errors by
//!   [`CallError`] kind, and a latency histogram.
//! - [`Inspector::limits`]: what peers make the node hold (bytes queued and
//!   partly received, calls held, lanes) and its handshakes in flight,
//!   retried and refused.
//!
//! The answers are plain serde structs, so any program of the cluster (the
//! `remora inspect` and `remora top` commands) decodes them. Any member of
//! the cluster may ask (mutual TLS already keeps strangers out), unless the
//! node names who may ([`NodeBuilder::allow_inspection_from`]).
//!
//! The service is started on its first call: a node nobody inspects runs no
//! actor for it. The counters behind `methods` and `actors` are kept always,
//! as relaxed atomics reached by position (see the README's "Inspecting a
//! cluster" for their cost).
//!
//! ```
//! use remora::{Actor, Node};
//!
//! #[remora::remote]
//! pub trait Counter {
//!     async fn add(&mut self, n: u64) -> u64;
//! }
//! struct Tally(u64);
//! impl Actor for Tally {}
//! impl Counter for Tally {
//!     async fn add(&mut self, n: u64) -> u64 { self.0 += n; self.0 }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder().build().await?;
//! let counter: CounterRef = node.spawn(Tally(0));
//! counter.add(1).await?;
//! counter.add(2).await?;
//!
//! let inspector = node.inspector();
//! let add = inspector.methods().await??.into_iter()
//!     .find(|m| m.interface == "Counter" && m.method == "add")
//!     .unwrap();
//! assert_eq!(add.calls, 2);
//! let actors = inspector.actors().await??;
//! assert!(actors.iter().any(|a| a.interface == "Counter" && a.handled == 2));
//! # Ok(()) }
//! ```
//!
//! [`NodeBuilder::allow_inspection_from`]: crate::NodeBuilder::allow_inspection_from

pub(crate) mod collect;
mod info;
mod service;

pub use info::{
    ActorInfo, ActorState, ConnInfo, ExportInfo, HeldLease, Latency, LeaseHolder, LeaseInfo,
    LimitsInfo, MailboxInfo, MethodStats, NodeInfo, QuicFigures,
};
pub(crate) use service::{start as start_service, InspectPolicy};
pub use service::{Inspector, InspectorRef};

use serde::{Deserialize, Serialize};

use crate::error::CallError;
use crate::id::NodeId;
use crate::node::Node;
use crate::wire::ObjectId;

/// The object id every node's [`Inspector`] answers at: knowing a node's
/// address is enough to inspect it.
pub const INSPECTOR_OBJECT: ObjectId =
    ObjectId::from_u128(0x7265_6d6f_7261_2d69_6e73_7065_6374_0000);

/// Why an inspection was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum InspectError {
    /// The node lets only the certificate names on its allow list inspect it
    /// ([`NodeBuilder::allow_inspection_from`](crate::NodeBuilder::allow_inspection_from)),
    /// and the caller's is not one of them.
    #[error("not allowed: node {node} lets only the certificate names on its allow list inspect it (NodeBuilder::allow_inspection_from), and `{identity}` is not one; use the credentials of an allowed name (remora cert node DIR --name NAME)")]
    NotAllowed {
        /// The node that refused.
        node: NodeId,
        /// The caller's certificate name.
        identity: String,
    },
    /// The inspection call itself failed: the node is unreachable, the call
    /// timed out, or the node is of another cluster.
    #[error("{0}")]
    Call(#[from] CallError),
}

/// Connects `node` to the node listening at `addr` (QUIC, mutual TLS: `node`
/// needs credentials of the same cluster) and returns that node's inspector.
///
/// Fails with a [`CallError::ConnectFailed`] when nothing answers at `addr`
/// or the node there does not accept `node`'s certificate (another cluster).
pub async fn connect(node: &Node, addr: &str) -> Result<InspectorRef, CallError> {
    let peer = node.connect(addr).await?;
    node.reference(peer, INSPECTOR_OBJECT)
}

impl Node {
    /// A reference to this node's [`Inspector`], for reading its figures in
    /// code (a peer's: [`connect`], or [`Node::reference`] with
    /// [`INSPECTOR_OBJECT`]). Starts the service on first use.
    pub fn inspector(&self) -> InspectorRef {
        service::local(self)
    }
}
