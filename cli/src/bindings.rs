//! Which registry names and groups point at which actor. A node does not know
//! its names: a binding lives in the registry, as a name → wire reference
//! (node id, object id). A node's inspector reports, for each exported actor,
//! the object id other nodes call it by ([`ActorInfo::object`]). The two meet
//! on (node id, object id) here, for `remora inspect`, `remora top` and the
//! dashboard alike.
//!
//! An actor has at most one object id (the runtime exports an actor once), so
//! an actor never exported has no names, and a name bound to another node's
//! object with the same id is not this actor's: object ids are only unique per
//! node (well-known services share theirs).

use std::collections::HashMap;

use remora::inspect::ActorInfo;
use remora::{NodeId, ObjectId};
use remora_registry::{Entry, Registry, RegistryError};
use serde::Serialize;

/// The names and group memberships the registry holds for one actor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Bound {
    /// The names bound to it, in the registry's order.
    pub names: Vec<String>,
    /// The groups it is a member of, in the registry's order.
    pub groups: Vec<String>,
}

/// What one registry read said, indexed by where each entry points.
#[derive(Debug, Default)]
pub struct Bindings {
    by_object: HashMap<(NodeId, ObjectId), Bound>,
}

/// What an actor no entry points at is bound to: nothing.
static UNBOUND: Bound = Bound {
    names: Vec::new(),
    groups: Vec::new(),
};

impl Bindings {
    /// The index of `names` ([`Registry::list`]) and `groups`
    /// ([`Registry::list_groups`]: an entry per member, named by its group).
    pub fn new(names: &[Entry], groups: &[Entry]) -> Bindings {
        let mut by_object: HashMap<(NodeId, ObjectId), Bound> = HashMap::new();
        for entry in names {
            let bound = by_object.entry((entry.node(), entry.object())).or_default();
            bound.names.push(entry.name.clone());
        }
        for entry in groups {
            let bound = by_object.entry((entry.node(), entry.object())).or_default();
            bound.groups.push(entry.name.clone());
        }
        Bindings { by_object }
    }

    /// Every name and group membership of `registry`, read now.
    pub async fn read(registry: &Registry) -> Result<Bindings, RegistryError> {
        let names = registry.list("").await?;
        let groups = registry.list_groups("").await?;
        Ok(Bindings::new(&names, &groups))
    }

    /// What the registry binds to `actor`, an actor of the node `node`
    /// (nothing, for an actor never exported).
    pub fn of(&self, node: NodeId, actor: &ActorInfo) -> &Bound {
        actor
            .object
            .and_then(|object| self.by_object.get(&(node, object)))
            .unwrap_or(&UNBOUND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora::WireRef;

    fn entry(name: &str, node: u128, object: u128) -> Entry {
        Entry {
            name: name.to_owned(),
            target: WireRef {
                node: NodeId::from_u128(node),
                incarnation: 1,
                object: ObjectId::from_u128(object),
                interface: 0,
                addr: None,
            },
            interface: "T".into(),
            owner: NodeId::from_u128(node),
        }
    }

    fn actor(object: Option<u128>) -> ActorInfo {
        serde_json::from_value(serde_json::json!({
            "id": 3, "name": null, "actor_type": "T", "interface": "T",
            "object": object.map(ObjectId::from_u128),
            "mailbox": {"kind": "bounded", "length": 0, "capacity": 8},
            "state": "idle", "handled": 0, "panics": 0, "restarts": 0,
            "supervisor": null
        }))
        .unwrap()
    }

    #[test]
    fn an_actor_gets_the_names_and_groups_of_its_node_and_object() {
        let names = [entry("a", 1, 9), entry("b", 1, 9), entry("c", 2, 9)];
        let groups = [entry("g", 1, 9), entry("h", 1, 8)];
        let bindings = Bindings::new(&names, &groups);
        let bound = bindings.of(NodeId::from_u128(1), &actor(Some(9)));
        assert_eq!(bound.names, ["a", "b"]);
        assert_eq!(bound.groups, ["g"]);
        // Object 9 of node 2 is another object.
        let other = bindings.of(NodeId::from_u128(2), &actor(Some(9)));
        assert_eq!(
            (other.names.as_slice(), other.groups.len()),
            (&["c".to_owned()][..], 0)
        );
        // Never exported: no object id, no names.
        assert_eq!(
            bindings.of(NodeId::from_u128(1), &actor(None)),
            &Bound::default()
        );
    }
}
