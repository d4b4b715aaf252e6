//! References on the wire.
//!
//! A reference travels as a [`WireRef`]: (node, incarnation, object, interface).
//! Sending a reference to a local actor exports it under a random 128-bit id, the
//! capability to call it; the receiving node turns a `WireRef` back into a proxy:
//! local if the object is its own, over the same connection if it lives on the
//! sender, over another connection if it lives on a third node.

use crate::id::NodeId;
use serde::{Deserialize, Serialize};

use crate::wire::ObjectId;

/// A reference as plain data: what travels inside a call, and what a naming
/// service stores. [`Node::wire_ref`](crate::Node::wire_ref) makes one (exporting a local actor),
/// [`Node::resolve`](crate::Node::resolve) turns one back into a typed proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireRef {
    /// The node the object lives on.
    pub node: NodeId,
    /// That node's run: a restarted node refuses references to its previous run.
    pub incarnation: u64,
    /// The object's id on its node (the capability to call it).
    pub object: ObjectId,
    /// The object's interface id (`stable_id` of the interface name).
    pub interface: u64,
    /// Where the object's node accepts connections, if it listens.
    pub addr: Option<String>,
}
