//! Reads a node's tables and counters into the inspector's answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::info::{
    ActorInfo, ActorState, ConnInfo, ExportInfo, HeldLease, Latency, LeaseHolder, LeaseInfo,
    LimitsInfo, MailboxInfo, MethodStats, NodeInfo, QuicFigures,
};
use crate::id::ActorId;
use crate::local::stats::{InterfaceStats, MethodCounters, ERROR_KINDS};
use crate::node::Node;
use crate::wire::ObjectId;

pub(crate) fn node(node: &Node) -> NodeInfo {
    let stats = node.stats();
    NodeInfo {
        id: node.id(),
        name: node.name().map(str::to_owned),
        incarnation: node.incarnation(),
        uptime_ms: millis(node.uptime()),
        listen: node.public_addr(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol: crate::wire::PROTOCOL_VERSION,
        actors: stats.actors,
        exports: stats.exports,
        connections: stats.connections,
        leases_granted: stats.leases_granted,
        leases_held: stats.leases_held,
        exactly_once_replies: stats.exactly_once_replies,
        pipe_streams: stats.pipe_streams,
    }
}

pub(super) fn limits(node: &Node) -> LimitsInfo {
    let stats = node.stats();
    LimitsInfo {
        connections: stats.connections,
        bytes_received: stats.bytes_received,
        queued_bytes: stats.queued_bytes,
        calls_held: stats.calls_held,
        call_lanes: stats.call_lanes,
        receiving_bytes: stats.receiving_bytes,
        handshakes: stats.handshakes,
        handshakes_retried: stats.handshakes_retried,
        handshakes_refused: stats.handshakes_refused,
    }
}

pub(crate) fn actors(node: &Node) -> Vec<ActorInfo> {
    // The object each exported actor is called by.
    let objects: HashMap<ActorId, ObjectId> = node
        .host()
        .export_list()
        .into_iter()
        .filter_map(|(object, export, _, _)| Some((export.actor()?, object)))
        .collect();
    let mut actors: Vec<ActorInfo> = node
        .actor_controls()
        .into_iter()
        .map(|(id, control)| {
            let figures = control.figures();
            let mailbox = figures.mailbox;
            ActorInfo {
                id,
                name: figures.name.as_deref().map(str::to_owned),
                actor_type: figures.actor_type.to_owned(),
                interface: figures.interface.to_owned(),
                object: objects.get(&id).copied(),
                mailbox: MailboxInfo {
                    kind: mailbox.kind_name().to_owned(),
                    length: figures.queued,
                    capacity: mailbox.capacity().or(mailbox.cap()).unwrap_or(0),
                },
                state: match figures.busy {
                    true => ActorState::Busy,
                    false => ActorState::Idle,
                },
                handled: figures.handled,
                panics: figures.panics,
                restarts: figures.restarts,
                supervisor: figures.supervisor,
            }
        })
        .collect();
    actors.sort_by_key(|a| a.id);
    actors
}

pub(crate) fn conns(node: &Node) -> Vec<ConnInfo> {
    let mut conns: Vec<ConnInfo> = node
        .host()
        .connections()
        .into_iter()
        .map(|conn| {
            let quic = conn.quic_stats().map(|stats| QuicFigures {
                rtt_us: micros(stats.path.rtt),
                cwnd: stats.path.cwnd,
                congestion_events: stats.path.congestion_events,
                sent_packets: stats.path.sent_packets,
                lost_packets: stats.path.lost_packets,
                bytes_sent: stats.udp_tx.bytes,
                bytes_received: stats.udp_rx.bytes,
                stream_frames_sent: stats.frame_tx.stream,
                stream_frames_received: stats.frame_rx.stream,
            });
            ConnInfo {
                peer: conn.peer.node,
                name: conn.peer.name.clone(),
                addr: conn.peer.listen.clone(),
                identity: conn.caller.identity().to_owned(),
                transport: match quic {
                    Some(_) => "quic",
                    None => "in-process",
                }
                .to_owned(),
                bytes_received: conn.received(),
                bytes_queued: conn.queued(),
                call_lanes: conn.lanes(),
                pending_calls: conn.pending_calls(),
                calls_held: conn.held(),
                pipe_streams: conn.pipes.count(),
                quic,
            }
        })
        .collect();
    conns.sort_by_key(|c| c.peer);
    conns
}

pub(crate) fn leases(node: &Node) -> LeaseInfo {
    let host = node.host();
    let now = tokio::time::Instant::now();
    let mut exports: Vec<ExportInfo> = host
        .export_list()
        .into_iter()
        .map(|(object, export, pinned, service)| {
            let mut leases: Vec<LeaseHolder> = host
                .granted_leases()
                .holders(&object)
                .into_iter()
                .filter(|(_, until)| *until > now)
                .map(|(holder, until)| LeaseHolder {
                    node: holder,
                    expires_in_ms: millis(until - now),
                })
                .collect();
            leases.sort_by_key(|l| l.node);
            ExportInfo {
                object,
                interface: export.interface_name().to_owned(),
                actor: export.actor(),
                pinned,
                service,
                leases,
            }
        })
        .collect();
    exports.sort_by_key(|e| (e.actor, e.object));
    let mut held: Vec<HeldLease> = host
        .held_leases()
        .list()
        .into_iter()
        .map(|(node, object, proxies)| HeldLease {
            node,
            object,
            proxies,
        })
        .collect();
    held.sort_by_key(|h| (h.node, h.object));
    let stats = node.stats();
    LeaseInfo {
        exports,
        held,
        exactly_once_replies: stats.exactly_once_replies,
        pipe_streams: stats.pipe_streams,
    }
}

pub(crate) fn methods(node: &Node) -> Vec<MethodStats> {
    let mut interfaces: Vec<Arc<InterfaceStats>> = node.interfaces();
    interfaces.sort_by_key(|i| i.name);
    let mut out = Vec::new();
    for interface in interfaces {
        for (method, counters) in interface.methods() {
            out.push(method_stats(interface.name, method, counters));
        }
        let unknown = method_stats(interface.name, "?", &interface.unknown);
        if unknown.calls > 0 {
            out.push(unknown);
        }
    }
    out
}

fn method_stats(interface: &str, method: &str, counters: &MethodCounters) -> MethodStats {
    use std::sync::atomic::Ordering::Relaxed;
    let errors: BTreeMap<String, u64> = ERROR_KINDS
        .iter()
        .zip(&counters.errors)
        .map(|(kind, n)| ((*kind).to_owned(), n.load(Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect();
    MethodStats {
        interface: interface.to_owned(),
        method: method.to_owned(),
        calls: counters.calls.load(Relaxed),
        errors,
        latency: Latency::from_buckets(counters.latency.read()),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
