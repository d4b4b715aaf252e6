//! Who may ask what of this node's actors, and what was refused.
//!
//! Holding a reference is the capability to call an actor and to watch it (a
//! monitor, which only observes); stopping it is more. A peer may stop one of this
//! node's actors (an `Exit` frame: [`Node::stop`](crate::Node::stop) of a remote
//! reference, or a link whose other end failed) only if
//! - it spawned the actor here ([`Node::spawn_on`](crate::Node::spawn_on)), or
//! - its certificate name is on the node's allow list
//!   ([`NodeBuilder::allow_control_from`](crate::NodeBuilder::allow_control_from)),
//!
//! and never if the actor is a service of the node, exported under a chosen id
//! (the registry, the spawner: [`Node::export_as`](crate::Node::export_as)). The
//! node that hosts an actor may always stop it; that takes no frame. Every refusal
//! is counted ([`Refusals`], in [`NodeStats`](crate::NodeStats)), logged, and
//! answered to the peer with `Unauthorized`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::CallError;
use crate::id::NodeId;

/// What a peer asking to stop an actor is checked against.
pub(crate) struct Target {
    /// The actor is a service of its node (exported under a chosen id).
    pub(crate) service: bool,
    /// The node that spawned it here, if a peer did.
    pub(crate) spawned_by: Option<NodeId>,
}

/// The node's rule for stopping its actors from outside.
#[derive(Debug, Default)]
pub(crate) struct ControlPolicy {
    /// Certificate names allowed to stop (and link to) any actor but a service.
    allowed: HashSet<String>,
}

impl ControlPolicy {
    pub(crate) fn new(allowed: HashSet<String>) -> ControlPolicy {
        ControlPolicy { allowed }
    }

    /// Whether the peer `node`, whose certificate names it `identity`, may stop
    /// `target`; the refusal says why.
    pub(crate) fn may_stop(
        &self,
        target: &Target,
        node: NodeId,
        identity: &str,
    ) -> Result<(), CallError> {
        if target.service {
            return Err(CallError::Unauthorized {
                reason: "a service of its node (exported under a chosen id) cannot be \
                         stopped by another node"
                    .into(),
            });
        }
        if target.spawned_by == Some(node) || self.allowed.contains(identity) {
            return Ok(());
        }
        Err(CallError::Unauthorized {
            reason: format!(
                "only the node that spawned the actor, or a node named on the \
                 allow list (NodeBuilder::allow_control_from), may stop it; \
                 `{identity}` is neither"
            ),
        })
    }
}

/// Counts of what peers asked and were refused (or had ignored), since the node
/// started.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// Peers whose `Hello` claimed a node id their certificate does not prove.
    pub(crate) impostors: AtomicU64,
    /// `Exit`s (remote stops, links) from peers without the authority.
    pub(crate) exits: AtomicU64,
    /// Monitors refused: over the bound per connection.
    pub(crate) monitors: AtomicU64,
    /// Object ids in `Renew` and `Release` frames that name nothing this node
    /// exports (or holds no lease of that peer on): ignored.
    pub(crate) lease_ids: AtomicU64,
    /// `Cancel` frames naming no call their connection is serving (unknown,
    /// answered already, or another connection's): ignored.
    pub(crate) cancels: AtomicU64,
}

impl Refusals {
    pub(crate) fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAWNER: NodeId = NodeId::from_u128(1);
    const OTHER: NodeId = NodeId::from_u128(2);

    fn actor(spawned_by: Option<NodeId>) -> Target {
        Target {
            service: false,
            spawned_by,
        }
    }

    #[test]
    fn the_spawner_may_stop_its_actor_and_another_node_may_not() {
        let policy = ControlPolicy::default();
        assert_eq!(policy.may_stop(&actor(Some(SPAWNER)), SPAWNER, "a"), Ok(()));
        let refused = policy.may_stop(&actor(Some(SPAWNER)), OTHER, "b");
        assert!(
            matches!(&refused, Err(CallError::Unauthorized { reason }) if reason.contains("`b`")),
            "{refused:?}"
        );
        // An actor its own node spawned: no peer is its spawner.
        assert!(policy.may_stop(&actor(None), SPAWNER, "a").is_err());
    }

    #[test]
    fn a_name_on_the_allow_list_may_stop_any_actor_but_a_service() {
        let policy = ControlPolicy::new(["admin".to_owned()].into());
        assert_eq!(policy.may_stop(&actor(None), OTHER, "admin"), Ok(()));
        assert_eq!(
            policy.may_stop(&actor(Some(SPAWNER)), OTHER, "admin"),
            Ok(())
        );
        assert!(policy.may_stop(&actor(None), OTHER, "admin2").is_err());
        let service = Target {
            service: true,
            spawned_by: Some(SPAWNER),
        };
        assert!(policy.may_stop(&service, OTHER, "admin").is_err());
        assert!(policy.may_stop(&service, SPAWNER, "admin").is_err());
    }
}
