//! Reads a node's counters into Prometheus metric families, when scraped.
//!
//! Every figure comes from where the [`Inspector`](crate::inspect::Inspector)
//! reads it (`inspect::collect`, [`Node::stats`]): the endpoint adds no
//! counter and no work to a call, only reads at scrape time.
//!
//! Label values (interface, method and actor type names, peers' names) go
//! through prometheus-client's label encoder, which escapes them; nothing
//! here formats the exposition by hand.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, MetricEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;

use crate::inspect::collect;
use crate::local::stats::{BUCKETS, ERROR_KINDS};
use crate::node::{Node, WeakNode};

/// The node's figures, read on each scrape. Holds its node weakly: the
/// endpoint does not keep a dropped node alive.
pub(super) struct NodeCollector {
    node: WeakNode,
    /// Per (interface, method), the `ok` count last exposed (see
    /// [`NodeCollector::ok_count`]).
    ok_exposed: Mutex<HashMap<(String, String), u64>>,
}

impl NodeCollector {
    pub(super) fn new(node: WeakNode) -> Self {
        NodeCollector {
            node,
            ok_exposed: Mutex::new(HashMap::new()),
        }
    }

    /// Calls counted `ok`: handlers started, less those that panicked. A
    /// handler counts from its start, so one that a scrape sees running and
    /// that panics afterwards would take `ok` down by one, which Prometheus
    /// reads as a counter reset (a spike in `rate`); the count exposed never
    /// goes below the last one, and the panic shows under `Panicked` only.
    fn ok_count(&self, interface: &str, method: &str, started: u64, panicked: u64) -> u64 {
        let now = started.saturating_sub(panicked);
        let mut exposed = self.ok_exposed.lock();
        let last = exposed
            .entry((interface.to_owned(), method.to_owned()))
            .or_insert(0);
        *last = (*last).max(now);
        *last
    }
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector").finish_non_exhaustive()
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        // A node dropped between the request and now: an empty answer.
        let Some(node) = self.node.upgrade() else {
            return Ok(());
        };
        node_families(&node, &mut encoder)?;
        self.method_families(&node, &mut encoder)?;
        actor_families(&node, &mut encoder)?;
        connection_families(&node, &mut encoder)
    }
}

fn node_families(node: &Node, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let info = collect::node(node);
    let id = info.id.to_string();
    let labels = [
        ("id", id.as_str()),
        ("name", info.name.as_deref().unwrap_or("")),
        ("version", info.version.as_str()),
    ];
    let mut family = encoder.encode_descriptor(
        "remora_node_info",
        "The node: its id, name and the version of remora it runs; always 1.",
        None,
        MetricType::Gauge,
    )?;
    family.encode_family(&labels)?.encode_gauge(&1u64)?;
    gauge(
        encoder,
        "remora_uptime_seconds",
        "Seconds since the node started.",
        node.uptime().as_secs_f64(),
    )?;

    let stats = node.stats();
    let gauges: [(&str, &str, usize); 8] = [
        (
            "remora_exports",
            "Objects other nodes may call.",
            stats.exports,
        ),
        (
            "remora_leases_granted",
            "Leases other nodes hold on this node's exports.",
            stats.leases_granted,
        ),
        (
            "remora_leases_held",
            "Objects of other nodes this node holds leases on.",
            stats.leases_held,
        ),
        (
            "remora_handshakes",
            "Incoming QUIC handshakes in flight.",
            stats.handshakes,
        ),
        (
            "remora_exactly_once_replies",
            "Replies of #[exactly_once] calls remembered for retries.",
            stats.exactly_once_replies,
        ),
        (
            "remora_calls_held",
            "Calls from other nodes held because their actor's mailbox is full.",
            stats.calls_held,
        ),
        (
            "remora_queued_bytes",
            "Bytes written to other nodes that the network has not taken yet.",
            stats.queued_bytes,
        ),
        (
            "remora_pipe_streams",
            "Pipe streams open on the node's connections.",
            stats.pipe_streams,
        ),
    ];
    for (name, help, value) in gauges {
        gauge(encoder, name, help, value as u64)?;
    }
    let counters: [(&str, &str, u64); 7] = [
        (
            "remora_handshakes_retried",
            "Incoming handshakes answered with a QUIC Retry.",
            stats.handshakes_retried,
        ),
        (
            "remora_handshakes_refused",
            "Incoming handshakes refused: too many in flight, or from one address.",
            stats.handshakes_refused,
        ),
        (
            "remora_impostors_refused",
            "Peers refused because their Hello claimed a node id their certificate does not prove.",
            stats.impostors_refused,
        ),
        (
            "remora_exits_refused",
            "Requests from peers to stop an actor they have no authority over.",
            stats.exits_refused,
        ),
        (
            "remora_asks_dropped",
            "Asks from other nodes dropped unrun: their connection was lost while they waited.",
            stats.asks_dropped,
        ),
        (
            "remora_calls_cancelled",
            "Calls dropped unrun because their caller gave them up while queued.",
            stats.calls_cancelled,
        ),
        (
            "remora_calls_expired",
            "Calls from other nodes dropped unrun because their deadline passed first.",
            stats.calls_expired,
        ),
    ];
    for (name, help, value) in counters {
        counter(encoder, name, help, value)?;
    }
    Ok(())
}

impl NodeCollector {
    fn method_families(&self, node: &Node, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let methods = collect::methods(node);
        let mut calls = encoder.encode_descriptor(
            "remora_calls",
            "Calls to this node's actors by outcome: ok (the handler ran and did not panic; \
             application errors inside the reply are ok here) or the CallError kind its caller \
             was answered with. Method ? counts calls naming a method the interface lacks.",
            None,
            MetricType::Counter,
        )?;
        for m in &methods {
            let (interface, method) = (m.interface.as_str(), m.method.as_str());
            let error = |kind: &str| m.errors.get(kind).copied().unwrap_or(0);
            if method == "?" {
                // Refused before any handler: UnknownMethod is their only outcome.
                let labels = method_labels(interface, method, "UnknownMethod");
                labeled_counter(&mut calls, &labels, error("UnknownMethod"))?;
                continue;
            }
            let ok = self.ok_count(interface, method, m.calls, error("Panicked"));
            labeled_counter(&mut calls, &method_labels(interface, method, "ok"), ok)?;
            for kind in ERROR_KINDS {
                let labels = method_labels(interface, method, kind);
                labeled_counter(&mut calls, &labels, error(kind))?;
            }
        }

        let mut durations = encoder.encode_descriptor(
            "remora_call_duration_seconds",
            "Time from the arrival of a call from another node to its handler's end (calls \
             from this node itself are not timed). Buckets are powers of two of microseconds; \
             the sum is not kept (it would cost every call an atomic add), so _sum is NaN.",
            None,
            MetricType::Histogram,
        )?;
        let bounds = bucket_bounds();
        for m in methods.iter().filter(|m| m.method != "?") {
            let labels = [
                ("interface", m.interface.as_str()),
                ("method", m.method.as_str()),
            ];
            let buckets: Vec<(f64, u64)> = bounds
                .iter()
                .zip(&m.latency.buckets)
                .map(|(bound, n)| (*bound, *n))
                .collect();
            durations
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(f64::NAN, m.latency.count(), &buckets, None)?;
        }
        Ok(())
    }
}

/// The `le` bounds of the latency buckets, in seconds: bucket `i` holds the
/// durations under 2^i µs (`local::stats::bucket`), so its bound is 2^i µs.
/// (A duration of exactly 2^i µs, to the nanosecond, falls in the next one.)
/// The last bucket, from 2^30 µs on, is `+Inf`.
fn bucket_bounds() -> Vec<f64> {
    (0..BUCKETS - 1).map(|i| (1u64 << i) as f64 / 1e6).collect()
}

fn method_labels<'a>(
    interface: &'a str,
    method: &'a str,
    outcome: &'a str,
) -> [(&'a str, &'a str); 3] {
    [
        ("interface", interface),
        ("method", method),
        ("outcome", outcome),
    ]
}

/// Actors by interface and type, and their mailboxes: one series per kind of
/// actor, not per actor. Actors come and go by the thousand in some programs
/// (one per session, say), and a series per actor id would grow Prometheus's
/// index without bound; a single actor's mailbox is what `remora top` shows.
fn actor_families(node: &Node, encoder: &mut DescriptorEncoder) -> fmt::Result {
    #[derive(Default)]
    struct Kind {
        actors: u64,
        busy: u64,
        queued: u64,
        longest: u64,
    }
    let mut kinds: BTreeMap<(String, String), Kind> = BTreeMap::new();
    for actor in collect::actors(node) {
        let kind = kinds
            .entry((actor.interface, actor.actor_type))
            .or_default();
        let queued = actor.mailbox.length as u64;
        kind.actors += 1;
        kind.busy += u64::from(actor.state == crate::inspect::ActorState::Busy);
        kind.queued += queued;
        kind.longest = kind.longest.max(queued);
    }
    type Read = fn(&Kind) -> u64;
    let families: [(&str, &str, Read); 4] = [
        ("remora_actors", "Actors running, by interface and Rust type.", |k| k.actors),
        ("remora_actors_busy", "Actors running a handler now, by interface and Rust type.", |k| k.busy),
        ("remora_mailbox_messages", "Messages queued in the mailboxes of the actors of an interface and type, not yet taken.", |k| k.queued),
        ("remora_mailbox_messages_max", "The longest mailbox among the actors of an interface and type.", |k| k.longest),
    ];
    for (name, help, read) in families {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for ((interface, actor_type), kind) in &kinds {
            let labels = [
                ("interface", interface.as_str()),
                ("type", actor_type.as_str()),
            ];
            family.encode_family(&labels)?.encode_gauge(&read(kind))?;
        }
    }
    Ok(())
}

/// Connections, and per peer what QUIC counts of it (the in-process
/// transport has no wire: its connections have no bytes or round trips).
fn connection_families(node: &Node, encoder: &mut DescriptorEncoder) -> fmt::Result {
    let conns = collect::conns(node);
    let mut family = encoder.encode_descriptor(
        "remora_connections",
        "Connections to other nodes open now, by transport (quic or in-process).",
        None,
        MetricType::Gauge,
    )?;
    for transport in ["quic", "in-process"] {
        let open = conns.iter().filter(|c| c.transport == transport).count();
        family
            .encode_family(&[("transport", transport)])?
            .encode_gauge(&(open as u64))?;
    }

    let peers: Vec<(String, String)> = conns
        .iter()
        .map(|c| (c.peer.to_string(), c.name.clone().unwrap_or_default()))
        .collect();
    let peer_labels = |i: usize| {
        [
            ("peer", peers[i].0.as_str()),
            ("peer_name", peers[i].1.as_str()),
        ]
    };

    let mut pending = encoder.encode_descriptor(
        "remora_calls_pending",
        "Calls to a peer waiting for their replies.",
        None,
        MetricType::Gauge,
    )?;
    for (i, conn) in conns.iter().enumerate() {
        pending
            .encode_family(&peer_labels(i))?
            .encode_gauge(&(conn.pending_calls as u64))?;
    }

    type Read = fn(&crate::inspect::QuicFigures) -> u64;
    let quic_counters: [(&str, &str, Read); 3] = [
        (
            "remora_bytes_sent",
            "UDP bytes sent to a peer over QUIC (headers and retransmissions included).",
            |q| q.bytes_sent,
        ),
        (
            "remora_bytes_received",
            "UDP bytes received from a peer over QUIC.",
            |q| q.bytes_received,
        ),
        (
            "remora_lost_packets",
            "QUIC packets to a peer deemed lost.",
            |q| q.lost_packets,
        ),
    ];
    for (name, help, read) in quic_counters {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (i, conn) in conns.iter().enumerate() {
            if let Some(quic) = &conn.quic {
                labeled_counter(&mut family, &peer_labels(i), read(quic))?;
            }
        }
    }
    let mut rtt = encoder.encode_descriptor(
        "remora_rtt_seconds",
        "QUIC's smoothed round-trip time to a peer.",
        None,
        MetricType::Gauge,
    )?;
    for (i, conn) in conns.iter().enumerate() {
        if let Some(quic) = &conn.quic {
            rtt.encode_family(&peer_labels(i))?
                .encode_gauge(&(quic.rtt_us as f64 / 1e6))?;
        }
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A counter named `name` (prometheus-client adds `_total`).
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn labeled_counter(
    family: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    family
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::local::stats::bucket;

    #[test]
    fn a_duration_is_under_the_le_bound_of_its_bucket_and_not_under_the_one_below() {
        let bounds = bucket_bounds();
        assert_eq!(bounds.len(), BUCKETS - 1, "the last bucket is +Inf");
        assert_eq!((bounds[0], bounds[10]), (1e-6, 0.001024));
        for micros in [
            0,
            1,
            2,
            3,
            999,
            1000,
            1023,
            1024,
            1025,
            65_535,
            1 << 29,
            (1 << 30) - 1,
        ] {
            for extra_nanos in [0, 1, 999] {
                let d = Duration::from_micros(micros) + Duration::from_nanos(extra_nanos);
                let i = bucket(d);
                assert!(d.as_secs_f64() < bounds[i], "{d:?} in bucket {i}");
                if i > 0 {
                    assert!(d.as_secs_f64() >= bounds[i - 1], "{d:?} in bucket {i}");
                }
            }
        }
        // Past the last finite bound: the +Inf bucket.
        assert_eq!(bucket(Duration::from_micros(1 << 30)), BUCKETS - 1);
    }

    #[test]
    fn the_ok_count_never_goes_down() {
        let collector = NodeCollector::new(WeakNode::dangling());
        assert_eq!(collector.ok_count("I", "m", 3, 0), 3);
        // A call seen running panics after the scrape: ok stays.
        assert_eq!(collector.ok_count("I", "m", 3, 1), 3);
        assert_eq!(collector.ok_count("I", "m", 5, 1), 4);
        assert_eq!(collector.ok_count("I", "other", 1, 0), 1);
    }
}
