//! Why an actor stopped: the one vocabulary that the local core, monitors, links,
//! supervisors and the wire (`Down` and `Exit` frames) share. It names nothing
//! above it, so every layer may use it.

use std::fmt;
use std::time::Duration;

use crate::id::NodeId;

/// Why an actor stopped, as [`Node::monitor`](crate::Node::monitor) reports it (also for an actor on
/// another node: its node sends the reason).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum StopReason {
    /// It was asked to stop ([`Node::stop`](crate::Node::stop), [`Context::stop`](crate::Context::stop)) or nothing can reach it
    /// any more (every reference was dropped).
    Normal,
    /// A handler or hook panicked and the restart policy did not (or could no longer) restart it.
    Panicked {
        /// The panic's message, when it was a string.
        message: String,
    },
    /// Its node shut down.
    Shutdown,
    /// It lives on another node, and the connection to that node was lost.
    NodeDown {
        /// The node.
        node: NodeId,
    },
    /// It lived on another node, which has restarted since (a new incarnation
    /// answers at its address): the actor is gone with the old one.
    NodeRestarted {
        /// The node that was.
        node: NodeId,
    },
    /// Its node does not know it (it never exported it, or no longer does).
    NoSuchObject,
    /// Nothing refers to it any more: every other node's lease on it was released
    /// or lapsed, and no reference to it remains on its node (RMI's
    /// `unreferenced`), and its [`Actor::on_unreferenced`](crate::Actor::on_unreferenced) chose to stop. Pin an
    /// actor (`SpawnOptions::pinned`) to keep it regardless.
    Unreferenced,
    /// An actor it was linked to ([`Node::link`](crate::Node::link)) stopped abnormally.
    Linked {
        /// The linked actor that stopped, as its node and actor id (or object id).
        peer: String,
        /// Why that one stopped.
        reason: Box<StopReason>,
    },
    /// A [`Supervisor`](crate::Supervisor) gave up: its children failed more than
    /// `max` times within `within`. The supervisor stops with this reason, and so do
    /// the children it stops (the child whose failure crossed the limit stops
    /// with its own `Panicked`).
    RestartLimit {
        /// Restarts the supervisor allowed inside the window.
        max: u32,
        /// The window.
        within: Duration,
        /// The failure that crossed the limit, naming the child.
        last: String,
    },
}

impl StopReason {
    /// Whether this is an orderly end (`Normal`, `Shutdown`) rather than a failure:
    /// links propagate only failures, as in Erlang.
    pub fn is_normal(&self) -> bool {
        matches!(self, StopReason::Normal | StopReason::Shutdown)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Normal => f.write_str("normal"),
            StopReason::Panicked { message } => write!(f, "panicked: {message}"),
            StopReason::Shutdown => f.write_str("node shutdown"),
            StopReason::NodeDown { node } => write!(f, "node {node} is unreachable"),
            StopReason::NodeRestarted { node } => write!(f, "node {node} has restarted"),
            StopReason::NoSuchObject => f.write_str("its node does not know it"),
            StopReason::Unreferenced => f.write_str("unreferenced: no lease or reference remains"),
            StopReason::Linked { peer, reason } => {
                write!(f, "linked actor {peer} stopped: {reason}")
            }
            StopReason::RestartLimit { max, within, last } => write!(
                f,
                "restart limit reached ({max} restarts within {within:?}); last failure: {last}"
            ),
        }
    }
}
