//! `remora inspect`: what a node hosts and how it is doing, as tables or JSON,
//! read from its inspector (`remora::inspect`) as a member of its cluster.

use remora::inspect::{
    ActorInfo, ActorState, ConnInfo, InspectError, InspectorRef, LeaseInfo, MethodStats, NodeInfo,
};
use remora::{CallError, Node, NodeId};
use remora_registry::Registry;
use serde::Serialize;

use crate::bindings::{Bindings, Bound};
use crate::table::{table, table_of};

/// Which part of a node to show.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Every part below, one after the other.
    All,
    /// The node: id, name, incarnation, uptime, address, version.
    Node,
    /// Its actors: type, interface, mailbox, state, counters (and their
    /// registry names and groups, with --registry).
    Actors,
    /// Its connections: peer, bytes, lanes, calls in flight, QUIC figures.
    Conns,
    /// Its exports and the leases on them, and the leases it holds.
    Leases,
    /// Per interface and method: calls, errors by kind, latency.
    Methods,
}

#[derive(clap::Args)]
pub struct Args {
    /// The node's address, such as 127.0.0.1:7000.
    addr: String,
    /// What to show.
    #[arg(value_enum, default_value = "all")]
    view: View,
    /// Print JSON (one document) instead of tables, for scripts.
    #[arg(long)]
    json: bool,
    /// Show each actor's registry names and groups, as the registry at this
    /// address (or several, comma-separated) binds them. A node does not know
    /// its names: without this, they are not shown.
    #[arg(long, value_name = "REG_ADDR")]
    registry: Option<String>,
    #[command(flatten)]
    credentials: crate::Credentials,
}

pub async fn run(args: Args) -> Result<(), String> {
    let (node, inspector) = connect(&args.addr, &args.credentials, "remora-inspect").await?;
    let shown = show(&node, &inspector, &args, args.view).await;
    node.shutdown().await;
    print!("{}", shown?);
    Ok(())
}

/// A node of the cluster `credentials` name, connected to the node at `addr`,
/// and that node's inspector; the error says what to do.
pub async fn connect(
    addr: &str,
    credentials: &crate::Credentials,
    name: &str,
) -> Result<(Node, InspectorRef), String> {
    let node = credentials
        .builder()
        .name(name)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    match remora::inspect::connect(&node, addr).await {
        Ok(inspector) => Ok((node, inspector)),
        Err(err) => {
            node.shutdown().await;
            Err(explain(addr, &InspectError::Call(err), credentials))
        }
    }
}

/// What went wrong, said for a user at a terminal.
pub fn explain(addr: &str, err: &InspectError, credentials: &crate::Credentials) -> String {
    match err {
        InspectError::Call(CallError::ConnectFailed { reason, .. })
            if reason.contains("cluster root") =>
        {
            format!(
                "wrong cluster: the node at {addr} is not of the cluster of these credentials \
                 ({reason}); pass --credentials DIR of its cluster{}",
                credentials.hint()
            )
        }
        InspectError::Call(CallError::ConnectFailed { reason, .. }) => format!(
            "unreachable: no node answers at {addr} ({reason}); check the address and that \
             the node listens there{}",
            credentials.hint()
        ),
        InspectError::Call(CallError::NoSuchObject) => format!(
            "the node at {addr} serves no inspector (a node of a Remora version before \
             `remora inspect`); upgrade it"
        ),
        InspectError::Call(err) => format!("inspecting {addr} failed: {err}"),
        InspectError::NotAllowed { .. } => format!("{err}"),
        other => format!("{other}"),
    }
}

/// Everything asked for, read from the node (and the registry) and rendered.
async fn show(
    me: &Node,
    inspector: &InspectorRef,
    args: &Args,
    view: View,
) -> Result<String, String> {
    let failed = |err: InspectError| explain(&args.addr, &err, &args.credentials);
    let mut report = Report::default();
    if matches!(view, View::All | View::Node) {
        report.node = Some(ask(inspector.node().await).map_err(failed)?);
    }
    if matches!(view, View::All | View::Actors) {
        let actors = ask(inspector.actors().await).map_err(failed)?;
        let bindings = match &args.registry {
            Some(addr) => {
                let registry = connect_registry(me, addr, &args.credentials).await?;
                Some(read_bindings(&registry, addr).await?)
            }
            None => None,
        };
        let node = me.wire_ref(inspector).node;
        report.actors = Some(actor_rows(actors, node, bindings.as_ref()));
    }
    if matches!(view, View::All | View::Conns) {
        report.conns = Some(ask(inspector.conns().await).map_err(failed)?);
    }
    if matches!(view, View::All | View::Leases) {
        report.leases = Some(ask(inspector.leases().await).map_err(failed)?);
    }
    if matches!(view, View::All | View::Methods) {
        report.methods = Some(ask(inspector.methods().await).map_err(failed)?);
    }
    if args.json {
        return render_json(&report, view);
    }
    Ok(report.render())
}

/// The registry at `addr`, read through `me`; the error says what to do.
pub async fn connect_registry(
    me: &Node,
    addr: &str,
    credentials: &crate::Credentials,
) -> Result<Registry, String> {
    Registry::connect(me, addr)
        .await
        .map_err(|e| format!("the registry at {addr}: {e}{}", credentials.hint()))
}

/// Every name and group of `registry` (at `addr`), by the object each points at.
pub async fn read_bindings(registry: &Registry, addr: &str) -> Result<Bindings, String> {
    Bindings::read(registry)
        .await
        .map_err(|e| format!("reading the registry at {addr} failed: {e}"))
}

/// The actors of node `node` as shown: with what `bindings` says of each, if
/// the registry was read.
pub fn actor_rows(
    actors: Vec<ActorInfo>,
    node: NodeId,
    bindings: Option<&Bindings>,
) -> Vec<ActorRow> {
    actors
        .into_iter()
        .map(|actor| ActorRow {
            bound: bindings.map(|b| b.of(node, &actor).clone()),
            actor,
        })
        .collect()
}

/// An actor as `remora inspect` and `remora top` show it: what its node says,
/// and (with `--registry`) its names and groups, as `names` and `groups` beside
/// the node's fields in JSON (absent without `--registry`).
#[derive(Clone, Debug, Serialize)]
pub struct ActorRow {
    #[serde(flatten)]
    pub actor: ActorInfo,
    #[serde(flatten)]
    pub bound: Option<Bound>,
}

/// An inspector's answer, with the call's error and the node's refusal as one.
pub fn ask<T>(answer: Result<Result<T, InspectError>, CallError>) -> Result<T, InspectError> {
    answer.map_err(InspectError::Call)?
}

/// What `remora inspect` read from a node.
#[derive(Default, Serialize)]
struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<NodeInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actors: Option<Vec<ActorRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conns: Option<Vec<ConnInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leases: Option<LeaseInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<Vec<MethodStats>>,
}

/// One part as its own JSON document (`all`: an object of every part).
fn render_json(report: &Report, view: View) -> Result<String, String> {
    let text = match view {
        View::All => serde_json::to_string_pretty(report),
        View::Node => serde_json::to_string_pretty(&report.node),
        View::Actors => serde_json::to_string_pretty(&report.actors),
        View::Conns => serde_json::to_string_pretty(&report.conns),
        View::Leases => serde_json::to_string_pretty(&report.leases),
        View::Methods => serde_json::to_string_pretty(&report.methods),
    };
    text.map(|t| t + "\n")
        .map_err(|e| format!("cannot write JSON: {e}"))
}

impl Report {
    fn render(&self) -> String {
        let mut parts = Vec::new();
        if let Some(node) = &self.node {
            parts.push(node_text(node));
        }
        if let Some(actors) = &self.actors {
            parts.push(actors_table(actors, &[]));
        }
        if let Some(conns) = &self.conns {
            parts.push(conns_table(conns));
        }
        if let Some(leases) = &self.leases {
            parts.push(leases_table(leases));
        }
        if let Some(methods) = &self.methods {
            parts.push(methods_table(methods));
        }
        parts.join("\n")
    }
}

fn node_text(node: &NodeInfo) -> String {
    let rows = [
        ["id".into(), node.id.to_string()],
        ["name".into(), opt(&node.name)],
        ["incarnation".into(), format!("{:016x}", node.incarnation)],
        ["uptime".into(), duration(node.uptime_ms)],
        ["address".into(), opt(&node.listen)],
        [
            "version".into(),
            format!("{} (protocol {})", node.version, node.protocol),
        ],
        ["actors".into(), node.actors.to_string()],
        ["exports".into(), node.exports.to_string()],
        ["connections".into(), node.connections.to_string()],
        [
            "leases".into(),
            format!("{} granted, {} held", node.leases_granted, node.leases_held),
        ],
        [
            "exactly-once replies".into(),
            node.exactly_once_replies.to_string(),
        ],
        ["pipe streams".into(), node.pipe_streams.to_string()],
    ];
    table(["NODE", ""], &rows)
}

/// The actors, with a RATE column when `rates` (messages per second, by
/// position) are given, and BOUND AS (registry names) and GROUPS columns when
/// the registry was read.
pub fn actors_table(actors: &[ActorRow], rates: &[Option<f64>]) -> String {
    let registry = actors.iter().any(|a| a.bound.is_some());
    let rows: Vec<Vec<String>> = actors
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let a = &row.actor;
            let rate = match rates.get(i) {
                Some(Some(rate)) => format!("{rate:.0}"),
                _ => "-".into(),
            };
            let mut cells = vec![
                a.id.to_string(),
                a.name.clone().unwrap_or_else(|| short_type(&a.actor_type)),
            ];
            if registry {
                let bound = row.bound.as_ref();
                cells.push(listed(bound.map_or(&[], |b| &b.names)));
                cells.push(listed(bound.map_or(&[], |b| &b.groups)));
            }
            cells.extend([
                a.interface.clone(),
                format!("{}/{}", a.mailbox.length, a.mailbox.capacity),
                a.mailbox.kind.clone(),
                match a.state {
                    ActorState::Idle => "idle".into(),
                    ActorState::Busy => "busy".into(),
                    _ => "?".into(),
                },
                a.handled.to_string(),
                rate,
                format!("{}/{}", a.panics, a.restarts),
                a.supervisor.map_or("-".into(), |s| s.to_string()),
            ]);
            cells
        })
        .collect();
    let mut header = vec!["ACTOR", "NAME"];
    if registry {
        header.extend(["BOUND AS", "GROUPS"]);
    }
    header.extend([
        "INTERFACE",
        "MAILBOX",
        "KIND",
        "STATE",
        "HANDLED",
        "RATE/S",
        "PANICS/RESTARTS",
        "SUPERVISOR",
    ]);
    let rows: Vec<&[String]> = rows.iter().map(Vec::as_slice).collect();
    table_of(&header, &rows)
}

/// Names as one cell: comma-separated, `-` for none.
fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

fn conns_table(conns: &[ConnInfo]) -> String {
    let rows: Vec<[String; 9]> = conns
        .iter()
        .map(|c| {
            let quic = c.quic.as_ref();
            [
                c.peer.to_string(),
                c.name.clone().unwrap_or_else(|| c.identity.clone()),
                opt(&c.addr),
                c.transport.clone(),
                quic.map_or("-".into(), |q| format!("{:.2}ms", q.rtt_us as f64 / 1000.0)),
                quic.map_or("-".into(), |q| format!("{}/{}", q.cwnd, q.lost_packets)),
                match quic {
                    Some(q) => format!("{}/{}", bytes(q.bytes_sent), bytes(q.bytes_received)),
                    None => format!("-/{}", bytes(c.bytes_received)),
                },
                format!("{}/{}", c.call_lanes, c.pipe_streams),
                format!("{}/{}", c.pending_calls, c.calls_held),
            ]
        })
        .collect();
    let header = [
        "PEER",
        "NAME",
        "ADDRESS",
        "TRANSPORT",
        "RTT",
        "CWND/LOST",
        "SENT/RECEIVED",
        "LANES/PIPES",
        "PENDING/HELD",
    ];
    table(header, &rows)
}

fn leases_table(leases: &LeaseInfo) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for export in &leases.exports {
        let holders = if export.leases.is_empty() {
            "-".to_owned()
        } else {
            let each = export
                .leases
                .iter()
                .map(|l| format!("{} until +{}", l.node, duration(l.expires_in_ms)));
            each.collect::<Vec<_>>().join(", ")
        };
        let kept = match (export.service, export.pinned) {
            (true, _) => "service",
            (false, true) => "pinned",
            (false, false) => "leased",
        };
        rows.push([
            export.object.to_string(),
            export.interface.clone(),
            export.actor.map_or("-".into(), |a| a.to_string()),
            kept.into(),
            holders,
        ]);
    }
    let mut out = table(["EXPORT", "INTERFACE", "ACTOR", "KEPT", "LEASES"], &rows);
    let held: Vec<[String; 3]> = leases
        .held
        .iter()
        .map(|h| {
            [
                h.node.to_string(),
                h.object.to_string(),
                h.proxies.to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(["HELD ON NODE", "OBJECT", "PROXIES"], &held));
    out.push_str(&format!(
        "\nexactly-once replies remembered: {}; pipe streams open: {}\n",
        leases.exactly_once_replies, leases.pipe_streams
    ));
    out
}

/// Per method: calls, errors by kind, latency quantiles (bucket tops).
fn methods_table(methods: &[MethodStats]) -> String {
    let rows: Vec<[String; 6]> = methods
        .iter()
        .map(|m| {
            let errors = if m.errors.is_empty() {
                "-".to_owned()
            } else {
                let each = m.errors.iter().map(|(kind, n)| format!("{kind}={n}"));
                each.collect::<Vec<_>>().join(" ")
            };
            let q = |q: f64| {
                m.latency
                    .quantile(q)
                    .map_or("-".into(), |d| format!("<{}", micros(d)))
            };
            [
                m.interface.clone(),
                m.method.clone(),
                m.calls.to_string(),
                errors,
                format!("{} / {}", q(0.5), q(0.99)),
                m.latency.count().to_string(),
            ]
        })
        .collect();
    let header = [
        "INTERFACE",
        "METHOD",
        "CALLS",
        "ERRORS",
        "P50 / P99",
        "TIMED",
    ];
    table(header, &rows)
}

/// `remora_integration_tests::Tally` as `Tally`.
fn short_type(name: &str) -> String {
    let bare = name.split('<').next().unwrap_or(name);
    bare.rsplit("::").next().unwrap_or(bare).to_owned()
}

fn opt(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".into())
}

fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

fn micros(d: std::time::Duration) -> String {
    let us = d.as_micros();
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{}ms", us / 1000),
        _ => format!("{}s", us / 1_000_000),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..10_000 => format!("{n}B"),
        10_000..10_000_000 => format!("{}KiB", n >> 10),
        _ => format!("{}MiB", n >> 20),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_figures_read_short() {
        assert_eq!(short_type("remora_integration_tests::Tally"), "Tally");
        assert_eq!(short_type("a::Pool<b::Job>"), "Pool");
        assert_eq!(duration(1_500), "1.5s");
        assert_eq!(duration(61_000), "1m1s");
        assert_eq!(micros(std::time::Duration::from_micros(2048)), "2ms");
        assert_eq!(bytes(20_480), "20KiB");
    }
}
