//! The inspector: the remote interface, the actor behind it, who may call it,
//! and its start on first call.

use std::collections::HashSet;

use parking_lot::Mutex;

use super::info::{ActorInfo, ConnInfo, LeaseInfo, LimitsInfo, MethodStats, NodeInfo};
use super::{collect, InspectError, INSPECTOR_OBJECT};
use crate::error::CallError;
use crate::local::actor::{Actor, SpawnOptions};
use crate::node::{Node, WeakNode};

/// A node's introspection service, at [`INSPECTOR_OBJECT`] on every node. See
/// the [module](super) for what each method answers; `remora inspect` prints
/// them. Each fails with [`InspectError::NotAllowed`] for a caller the node's
/// allow list leaves out.
#[remora::remote(name = "remora.Inspector")]
pub trait Inspector {
    /// The node: id, name, incarnation, uptime, address, version, table sizes.
    async fn node(&mut self) -> Result<NodeInfo, InspectError>;
    /// Every actor of the node, by id.
    async fn actors(&mut self) -> Result<Vec<ActorInfo>, InspectError>;
    /// Every open connection, by peer.
    async fn conns(&mut self) -> Result<Vec<ConnInfo>, InspectError>;
    /// Exports, the leases on them, the leases this node holds.
    async fn leases(&mut self) -> Result<LeaseInfo, InspectError>;
    /// Per interface and method: calls, errors by kind, latency.
    async fn methods(&mut self) -> Result<Vec<MethodStats>, InspectError>;
    /// What peers make the node hold (bytes queued and partly received, calls
    /// held, lanes) and its handshakes. A method of its own, not fields of
    /// `node`: a reader of an older build still decodes `node` (fields are
    /// encoded by position), and asking an older node for this one is a clear
    /// `UnknownMethod`.
    async fn limits(&mut self) -> Result<LimitsInfo, InspectError>;
}

/// Who may inspect a node: anyone of the cluster, or the names on its list.
#[derive(Debug, Default)]
pub(crate) struct InspectPolicy {
    allowed: HashSet<String>,
    /// The service, once started.
    service: Mutex<Option<InspectorRef>>,
}

impl InspectPolicy {
    pub(crate) fn new(allowed: HashSet<String>) -> InspectPolicy {
        InspectPolicy {
            allowed,
            service: Mutex::new(None),
        }
    }

    /// Whether the current call may go on: from this node, or from a peer
    /// whose certificate name is listed (or any peer, with no list).
    fn check(&self, node: &Node) -> Result<(), InspectError> {
        let Some(caller) = crate::caller() else {
            return Ok(());
        };
        if self.allowed.is_empty() || self.allowed.contains(caller.identity()) {
            return Ok(());
        }
        tracing::info!(peer = %caller.node(), identity = caller.identity(), "inspection refused: not on the allow list");
        Err(InspectError::NotAllowed {
            node: node.id(),
            identity: caller.identity().to_owned(),
        })
    }
}

/// The actor behind a node's inspector.
struct InspectService {
    node: WeakNode,
}

impl InspectService {
    /// The node, if the call may go on.
    fn allowed(&self) -> Result<Node, InspectError> {
        let node = self
            .node
            .upgrade()
            .ok_or(InspectError::Call(CallError::ActorStopped))?;
        node.inspection().check(&node)?;
        Ok(node)
    }
}

impl Actor for InspectService {}

impl Inspector for InspectService {
    async fn node(&mut self) -> Result<NodeInfo, InspectError> {
        Ok(collect::node(&self.allowed()?))
    }

    async fn actors(&mut self) -> Result<Vec<ActorInfo>, InspectError> {
        Ok(collect::actors(&self.allowed()?))
    }

    async fn conns(&mut self) -> Result<Vec<ConnInfo>, InspectError> {
        Ok(collect::conns(&self.allowed()?))
    }

    async fn leases(&mut self) -> Result<LeaseInfo, InspectError> {
        Ok(collect::leases(&self.allowed()?))
    }

    async fn methods(&mut self) -> Result<Vec<MethodStats>, InspectError> {
        Ok(collect::methods(&self.allowed()?))
    }

    async fn limits(&mut self) -> Result<LimitsInfo, InspectError> {
        Ok(collect::limits(&self.allowed()?))
    }
}

/// The node's inspector, started (and exported at [`INSPECTOR_OBJECT`]) if it
/// does not run.
pub(super) fn local(node: &Node) -> InspectorRef {
    let mut service = node.inspection().service.lock();
    if let Some(running) = service.as_ref().filter(|r| !node.is_stopped(*r)) {
        return running.clone();
    }
    let inspector: InspectorRef = node.spawn_with(
        InspectService {
            node: node.downgrade(),
        },
        SpawnOptions::new().name("remora.inspector"),
    );
    if let Err(err) = node.export_as(&inspector, INSPECTOR_OBJECT) {
        tracing::warn!(%err, "could not export the inspector; peers cannot inspect this node");
    }
    *service = Some(inspector.clone());
    inspector
}

/// Lets the node start its inspector on the first call to [`INSPECTOR_OBJECT`].
pub(crate) fn start(node: &Node) {
    let weak = node.downgrade();
    node.host().set_builtin(Box::new(move |object| {
        if *object != INSPECTOR_OBJECT {
            return None;
        }
        let node = weak.upgrade().filter(|n| !n.is_shut_down())?;
        local(&node);
        Some(())
    }));
}
