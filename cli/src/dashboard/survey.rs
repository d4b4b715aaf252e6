//! One look at the cluster: the registry's names and groups, the nodes they
//! live on, and each node's inspector, read concurrently, each under a
//! deadline, so that a dead node costs a survey its deadline and no more.
//!
//! A node is known to the dashboard when the registry knows it: it serves the
//! registry, or an entry (a name or a group membership) points at an object of
//! it, at the address the entry carries. The registry drops a node's entries
//! when the node stops renewing its lease, so a killed node leaves the page
//! within its lease; until then it shows as unreachable. Nodes that bind nothing
//! (clients) are seen only as peers of known nodes' connections.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use remora::inspect::InspectorRef;
use remora::{Node, NodeId};
use remora_registry::{Entry, Registry, RemoteStore};

use super::view::{self, Counters, GroupView, NameView, PeerView, Reading, Snapshot};
use crate::bindings::Bindings;
use crate::inspect::ask;

/// Reads the cluster, survey after survey; keeps the last readings for rates.
pub struct Surveyor {
    node: Node,
    registry_addr: String,
    /// The registry in use (its node is shown too).
    store: RemoteStore,
    /// The same, for listing (this handle binds nothing, so holds no lease).
    registry: Registry,
    deadline: Duration,
    last: HashMap<NodeId, Counters>,
}

impl Surveyor {
    pub fn new(node: Node, registry_addr: String, store: RemoteStore, deadline: Duration) -> Self {
        Surveyor {
            registry: Registry::with_store(&node, store.clone()),
            node,
            registry_addr,
            store,
            deadline,
            last: HashMap::new(),
        }
    }

    /// One survey: the cluster now, rates against the previous survey.
    pub async fn survey(&mut self) -> Snapshot {
        let mut snapshot = Snapshot {
            registry: self.registry_addr.clone(),
            ..Snapshot::default()
        };
        let (names, groups) = match self.entries().await {
            Ok(entries) => entries,
            Err(err) => {
                snapshot.error = Some(err);
                (Vec::new(), Vec::new())
            }
        };
        let mut known: BTreeMap<NodeId, String> = BTreeMap::new();
        for entry in names.iter().chain(&groups) {
            if let Some(addr) = &entry.target.addr {
                known.entry(entry.node()).or_insert_with(|| addr.clone());
            }
        }
        // The registry's own node, under the address it was given.
        let registry_node = self.store.service();
        let registry_id = self.node.wire_ref(&registry_node).node;
        known.insert(registry_id, self.store.addr());
        let bindings = Bindings::new(&names, &groups);

        let readings = join_all(known.iter().map(|(id, addr)| self.read(*id, addr))).await;
        let mut last = HashMap::new();
        for ((id, addr), reading) in known.iter().zip(readings) {
            match reading {
                Ok(reading) => {
                    let before = self.last.get(id);
                    snapshot.edges.extend(view::edges(&reading, before));
                    snapshot
                        .nodes
                        .push(view::node_view(addr, &reading, before, &bindings));
                    last.insert(*id, Counters::of(&reading));
                }
                Err(err) => snapshot.nodes.push(view::unreachable_view(*id, addr, err)),
            }
        }
        self.last = last;
        // The dashboard's own connections are not the cluster's traffic.
        let me = self.node.id();
        snapshot.edges.retain(|e| e.from != me && e.to != me);
        snapshot.peers = peers(&snapshot, &known);
        snapshot
            .nodes
            .sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        snapshot.names = names
            .iter()
            .map(|e| NameView {
                name: e.name.clone(),
                interface: e.interface.clone(),
                node: e.node(),
            })
            .collect();
        snapshot.groups = group_views(&groups);
        snapshot.at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        snapshot
    }

    /// The registry's names and group memberships, within the deadline.
    async fn entries(&self) -> Result<(Vec<Entry>, Vec<Entry>), String> {
        let both = async {
            let names = self.registry.list("").await?;
            let groups = self.registry.list_groups("").await?;
            Ok::<_, remora_registry::RegistryError>((names, groups))
        };
        match tokio::time::timeout(self.deadline, both).await {
            Ok(Ok(entries)) => Ok(entries),
            Ok(Err(err)) => Err(format!("reading the registry failed: {err}")),
            Err(_) => Err(format!(
                "the registry at {} did not answer within {:?}",
                self.registry_addr, self.deadline
            )),
        }
    }

    /// One node's inspector: node, actors, connections and methods, asked at
    /// once, all within the deadline.
    async fn read(&self, id: NodeId, addr: &str) -> Result<Reading, String> {
        let read = async {
            let inspector = self.inspector(id, addr).await?;
            let (node, actors, conns, methods) = tokio::join!(
                inspector.node(),
                inspector.actors(),
                inspector.conns(),
                inspector.methods()
            );
            let said = |err: remora::inspect::InspectError| err.to_string();
            Ok(Reading {
                at: Instant::now(),
                node: ask(node).map_err(said)?,
                actors: ask(actors).map_err(said)?,
                conns: ask(conns).map_err(said)?,
                methods: ask(methods).map_err(said)?,
            })
        };
        match tokio::time::timeout(self.deadline, read).await {
            Ok(reading) => reading,
            Err(_) => Err(format!("no answer within {:?}", self.deadline)),
        }
    }

    /// The inspector of node `id` at `addr`; connecting to a node already
    /// connected returns at once.
    async fn inspector(&self, id: NodeId, addr: &str) -> Result<InspectorRef, String> {
        let reached = self.node.connect(addr).await.map_err(|e| e.to_string())?;
        if reached != id {
            // Another run of the node answers there: the entries are stale.
            return Err(format!("{addr} is now node {reached}"));
        }
        self.node
            .reference(id, remora::inspect::INSPECTOR_OBJECT)
            .map_err(|e| e.to_string())
    }
}

/// Nodes at the far end of edges that the registry does not know.
fn peers(snapshot: &Snapshot, known: &BTreeMap<NodeId, String>) -> Vec<PeerView> {
    let mut names: BTreeMap<NodeId, Option<String>> = BTreeMap::new();
    for edge in &snapshot.edges {
        if !known.contains_key(&edge.to) {
            names.insert(edge.to, Some(edge.to_name.clone()));
        }
    }
    names
        .into_iter()
        .map(|(id, name)| PeerView { id, name })
        .collect()
}

/// Group members (an entry each, named by its group), gathered per group.
fn group_views(members: &[Entry]) -> Vec<GroupView> {
    let mut groups: BTreeMap<&str, GroupView> = BTreeMap::new();
    for member in members {
        let view = groups.entry(&member.name).or_insert_with(|| GroupView {
            group: member.name.clone(),
            interface: member.interface.clone(),
            members: Vec::new(),
        });
        view.members.push(member.node());
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora::{ObjectId, WireRef};

    fn member(group: &str, node: u128) -> Entry {
        Entry {
            name: group.to_owned(),
            target: WireRef {
                node: NodeId::from_u128(node),
                incarnation: 1,
                object: ObjectId::from_u128(9),
                interface: 0,
                addr: Some("127.0.0.1:1".into()),
            },
            interface: "T".into(),
            owner: NodeId::from_u128(node),
        }
    }

    #[test]
    fn group_members_are_gathered_per_group() {
        let records = [member("a", 1), member("b", 1), member("a", 2)];
        let groups = group_views(&records);
        let summary: Vec<(&str, Vec<NodeId>)> = groups
            .iter()
            .map(|g| (g.group.as_str(), g.members.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", vec![NodeId::from_u128(1), NodeId::from_u128(2)]),
                ("b", vec![NodeId::from_u128(1)])
            ]
        );
    }
}
