//! What the dashboard's page shows, as the JSON it is pushed: one [`Snapshot`]
//! of the cluster per survey, with rates computed from the survey before it.
//!
//! Rates are differences of counters between two readings of the same run of a
//! node (same id and incarnation) divided by the time between the readings: a
//! node that restarted, an actor new since, or a first reading has none (`null`
//! on the page), never a made-up zero.

use std::collections::HashMap;
use std::time::Instant;

use remora::inspect::{ActorInfo, ActorState, ConnInfo, MethodStats, NodeInfo};
use remora::{ActorId, NodeId, ObjectId};
use serde::Serialize;

use crate::bindings::{Bindings, Bound};

/// The cluster as the page draws it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Milliseconds since the Unix epoch when the survey ended.
    pub at_ms: u64,
    /// The registry's address, as given to `--registry`.
    pub registry: String,
    /// The nodes the registry knows, by name then id.
    pub nodes: Vec<NodeView>,
    /// Nodes seen only as the peers of known nodes' connections (clients that
    /// bind nothing), for the graph.
    pub peers: Vec<PeerView>,
    /// Traffic between nodes, from each node's connections.
    pub edges: Vec<EdgeView>,
    /// The registry's names.
    pub names: Vec<NameView>,
    /// The registry's groups and their members.
    pub groups: Vec<GroupView>,
    /// What went wrong reading the registry, if anything.
    pub error: Option<String>,
}

/// One node: what its inspector said, or why it did not answer.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub id: NodeId,
    pub name: Option<String>,
    pub addr: String,
    /// `up`, or `unreachable` (inspection failed or missed its deadline; the
    /// node stays listed until the registry drops its entries).
    pub status: &'static str,
    pub error: Option<String>,
    pub uptime_ms: Option<u64>,
    pub version: Option<String>,
    /// Calls started per second over every method (the inspector's left out).
    pub calls_per_s: Option<f64>,
    /// Errors answered so far, over every method.
    pub errors: u64,
    pub errors_per_s: Option<f64>,
    /// How many actors it runs.
    pub actor_count: usize,
    /// Its actors, the fullest mailboxes first, at most [`MAX_ACTORS`].
    pub actors: Vec<ActorView>,
    /// Its methods, the inspector's left out.
    pub methods: Vec<MethodView>,
}

/// One actor, with its mailbox for the bar.
#[derive(Clone, Debug, Serialize)]
pub struct ActorView {
    pub id: ActorId,
    /// Its spawn name, else its type's last path segment.
    pub label: String,
    pub interface: String,
    /// The object id other nodes call it by, once exported.
    pub object: Option<ObjectId>,
    /// The registry names bound to it.
    pub names: Vec<String>,
    /// The registry groups it is a member of.
    pub groups: Vec<String>,
    pub busy: bool,
    pub mailbox_kind: String,
    pub length: usize,
    pub capacity: usize,
    pub handled: u64,
    pub handled_per_s: Option<f64>,
    pub panics: u64,
    pub restarts: u64,
}

/// One method of one interface on a node.
#[derive(Clone, Debug, Serialize)]
pub struct MethodView {
    pub interface: String,
    pub method: String,
    pub calls: u64,
    pub calls_per_s: Option<f64>,
    pub errors: u64,
    pub errors_per_s: Option<f64>,
}

/// A node known only as a connection's peer.
#[derive(Clone, Debug, Serialize)]
pub struct PeerView {
    pub id: NodeId,
    pub name: Option<String>,
}

/// Traffic from one node to another, as the sender's connection counts it.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeView {
    pub from: NodeId,
    pub to: NodeId,
    /// The receiver's name as the sender knows it (its certificate name if
    /// it has none).
    pub to_name: String,
    /// UDP bytes per second sent (QUIC), else bytes received by the other side.
    pub bytes_per_s: Option<f64>,
    /// QUIC stream frames per second sent.
    pub frames_per_s: Option<f64>,
    /// Calls waiting for replies now.
    pub pending_calls: usize,
}

/// A bound name.
#[derive(Clone, Debug, Serialize)]
pub struct NameView {
    pub name: String,
    pub interface: String,
    pub node: NodeId,
}

/// A group and where its members live.
#[derive(Clone, Debug, Serialize)]
pub struct GroupView {
    pub group: String,
    pub interface: String,
    pub members: Vec<NodeId>,
}

/// The most actors a node's view carries: the page stays readable, and a
/// survey small, on a node of thousands.
pub const MAX_ACTORS: usize = 50;

/// The inspector's interface: its calls are the dashboard's own, left out of
/// a node's methods and rates.
const INSPECTOR_INTERFACE: &str = "remora.Inspector";

/// What one node's inspector answered in one survey.
#[derive(Clone, Debug)]
pub struct Reading {
    pub at: Instant,
    pub node: NodeInfo,
    pub actors: Vec<ActorInfo>,
    pub conns: Vec<ConnInfo>,
    pub methods: Vec<MethodStats>,
}

/// A node's counters at one reading: what the next reading's rates are
/// differences from.
#[derive(Debug)]
pub struct Counters {
    at: Instant,
    incarnation: u64,
    handled: HashMap<ActorId, u64>,
    methods: HashMap<(String, String), (u64, u64)>,
    /// Per peer: bytes sent (or received, without QUIC) and frames sent.
    conns: HashMap<NodeId, (u64, u64)>,
}

impl Counters {
    pub fn of(reading: &Reading) -> Counters {
        Counters {
            at: reading.at,
            incarnation: reading.node.incarnation,
            handled: reading.actors.iter().map(|a| (a.id, a.handled)).collect(),
            methods: reading
                .methods
                .iter()
                .map(|m| (method_key(m), (m.calls, m.error_count())))
                .collect(),
            conns: reading.conns.iter().map(|c| (c.peer, traffic(c))).collect(),
        }
    }

    /// The seconds since this reading, if `reading` is of the same run of the
    /// node and later.
    fn secs_before(&self, reading: &Reading) -> Option<f64> {
        let secs = reading.at.checked_duration_since(self.at)?.as_secs_f64();
        (self.incarnation == reading.node.incarnation && secs > 0.0).then_some(secs)
    }
}

fn method_key(m: &MethodStats) -> (String, String) {
    (m.interface.clone(), m.method.clone())
}

fn traffic(c: &ConnInfo) -> (u64, u64) {
    match &c.quic {
        Some(q) => (q.bytes_sent, q.stream_frames_sent),
        None => (c.bytes_received, 0),
    }
}

/// `now - before` per second, if there was a before.
fn per_s(now: u64, before: Option<u64>, secs: Option<f64>) -> Option<f64> {
    Some(now.saturating_sub(before?) as f64 / secs?)
}

/// A node that answered, with rates against `before` (its previous reading),
/// and its actors' names and groups as `bindings` has them.
pub fn node_view(
    addr: &str,
    reading: &Reading,
    before: Option<&Counters>,
    bindings: &Bindings,
) -> NodeView {
    let secs = before.and_then(|b| b.secs_before(reading));
    let before = before.filter(|_| secs.is_some());
    let mut actors: Vec<ActorView> = reading
        .actors
        .iter()
        .map(|a| {
            let handled = before.and_then(|b| b.handled.get(&a.id).copied());
            actor_view(a, handled, secs, bindings.of(reading.node.id, a))
        })
        .collect();
    // The fullest mailboxes first; a node of many actors sends only those.
    actors.sort_by_key(|a| (std::cmp::Reverse(a.length), a.id));
    actors.truncate(MAX_ACTORS);
    let methods: Vec<MethodView> = reading
        .methods
        .iter()
        // The dashboard's own reads (and `remora inspect`'s) are not the node's work.
        .filter(|m| m.interface != INSPECTOR_INTERFACE)
        .map(|m| {
            let was = before.and_then(|b| b.methods.get(&method_key(m)).copied());
            let errors = m.error_count();
            MethodView {
                interface: m.interface.clone(),
                method: m.method.clone(),
                calls: m.calls,
                calls_per_s: per_s(m.calls, was.map(|w| w.0).or(before.map(|_| 0)), secs),
                errors,
                errors_per_s: per_s(errors, was.map(|w| w.1).or(before.map(|_| 0)), secs),
            }
        })
        .collect();
    let sum = |f: fn(&MethodView) -> Option<f64>| -> Option<f64> {
        secs?;
        Some(methods.iter().filter_map(f).sum())
    };
    NodeView {
        id: reading.node.id,
        name: reading.node.name.clone(),
        addr: addr.to_owned(),
        status: "up",
        error: None,
        uptime_ms: Some(reading.node.uptime_ms),
        version: Some(reading.node.version.clone()),
        calls_per_s: sum(|m| m.calls_per_s),
        errors: methods.iter().map(|m| m.errors).sum(),
        errors_per_s: sum(|m| m.errors_per_s),
        actor_count: reading.actors.len(),
        actors,
        methods,
    }
}

fn actor_view(a: &ActorInfo, before: Option<u64>, secs: Option<f64>, bound: &Bound) -> ActorView {
    let type_name = a.actor_type.split('<').next().unwrap_or(&a.actor_type);
    ActorView {
        id: a.id,
        label: a.name.clone().unwrap_or_else(|| {
            type_name
                .rsplit("::")
                .next()
                .unwrap_or(type_name)
                .to_owned()
        }),
        interface: a.interface.clone(),
        object: a.object,
        names: bound.names.clone(),
        groups: bound.groups.clone(),
        busy: a.state == ActorState::Busy,
        mailbox_kind: a.mailbox.kind.clone(),
        length: a.mailbox.length,
        capacity: a.mailbox.capacity,
        handled: a.handled,
        handled_per_s: per_s(a.handled, before, secs),
        panics: a.panics,
        restarts: a.restarts,
    }
}

/// A node the registry knows that did not answer in time.
pub fn unreachable_view(id: NodeId, addr: &str, error: String) -> NodeView {
    NodeView {
        id,
        name: None,
        addr: addr.to_owned(),
        status: "unreachable",
        error: Some(error),
        uptime_ms: None,
        version: None,
        calls_per_s: None,
        errors: 0,
        errors_per_s: None,
        actor_count: 0,
        actors: Vec::new(),
        methods: Vec::new(),
    }
}

/// The edges out of the node `reading` is of: one per connection.
pub fn edges(reading: &Reading, before: Option<&Counters>) -> Vec<EdgeView> {
    let secs = before.and_then(|b| b.secs_before(reading));
    reading
        .conns
        .iter()
        .map(|c| {
            let (bytes, frames) = traffic(c);
            let was = before.and_then(|b| b.conns.get(&c.peer).copied());
            EdgeView {
                from: reading.node.id,
                to: c.peer,
                to_name: c.name.clone().unwrap_or_else(|| c.identity.clone()),
                bytes_per_s: per_s(bytes, was.map(|w| w.0), secs),
                frames_per_s: c
                    .quic
                    .as_ref()
                    .and_then(|_| per_s(frames, was.map(|w| w.1), secs)),
                pending_calls: c.pending_calls,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reading(at: Instant, incarnation: u64, handled: u64, calls: u64) -> Reading {
        let node: NodeInfo = serde_json::from_value(serde_json::json!({
            "id": NodeId::from_u128(7), "name": "n", "incarnation": incarnation,
            "uptime_ms": 1, "listen": null, "version": "0", "protocol": 1, "actors": 1,
            "exports": 0, "connections": 0, "leases_granted": 0, "leases_held": 0,
            "exactly_once_replies": 0, "pipe_streams": 0
        }))
        .unwrap();
        let actor: ActorInfo = serde_json::from_value(serde_json::json!({
            "id": 3, "name": null, "actor_type": "a::b::Tally<c::D>", "interface": "T",
            "object": null, "mailbox": {"kind": "bounded", "length": 4, "capacity": 8},
            "state": "busy", "handled": handled, "panics": 0, "restarts": 0,
            "supervisor": null
        }))
        .unwrap();
        let method: MethodStats = serde_json::from_value(serde_json::json!({
            "interface": "T", "method": "m", "calls": calls,
            "errors": {"Panicked": calls / 10}, "latency": {"buckets": []}
        }))
        .unwrap();
        Reading {
            at,
            node,
            actors: vec![actor],
            conns: Vec::new(),
            methods: vec![method],
        }
    }

    #[test]
    fn rates_are_differences_over_time_of_one_run() {
        let t0 = Instant::now();
        let first = reading(t0, 1, 10, 100);
        let view = node_view("a", &first, None, &Bindings::default());
        assert_eq!(
            view.actors[0].handled_per_s, None,
            "no rate from one reading"
        );
        assert_eq!(view.calls_per_s, None);
        assert_eq!(view.actors[0].label, "Tally");
        assert_eq!((view.actors[0].length, view.actors[0].capacity), (4, 8));

        let second = reading(t0 + Duration::from_secs(2), 1, 30, 300);
        let view = node_view(
            "a",
            &second,
            Some(&Counters::of(&first)),
            &Bindings::default(),
        );
        assert_eq!(view.actors[0].handled_per_s, Some(10.0));
        assert_eq!(view.calls_per_s, Some(100.0));
        assert_eq!((view.errors, view.errors_per_s), (30, Some(10.0)));

        // A restarted node (new incarnation) starts over: no rates.
        let restarted = reading(t0 + Duration::from_secs(3), 2, 1, 1);
        let view = node_view(
            "a",
            &restarted,
            Some(&Counters::of(&second)),
            &Bindings::default(),
        );
        assert_eq!(view.actors[0].handled_per_s, None);
        assert_eq!(view.calls_per_s, None);
    }
}
