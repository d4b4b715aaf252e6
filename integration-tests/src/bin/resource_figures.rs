//! What a tell flood and many idle connections cost a node (issue 16's figures):
//! starts a server node in a child process (`remora-test-node`, default
//! settings) and prints `NAME<TAB>VALUE<TAB>UNIT` lines.
//!
//! - `tells`: for `--secs` (20), four tasks of this process tell the server's
//!   counter as fast as their credit lets them, while a fifth keeps it busy with
//!   5 ms naps (a slow actor, its mailbox full most of the time) and a client
//!   asks another actor of the server once a millisecond. Prints the server's
//!   and this process's resident memory at idle and at the peak (`VmRSS`
//!   sampled every 50 ms, and `VmHWM`), the tells sent, and the client's p50.
//! - `idle`: `--clients` (1 000) client nodes of this process connect to the
//!   server and call its counter once each; prints the server's resident
//!   memory per connection.
//! - `restart`: how long a call in flight to a node that is killed (`kill -9`)
//!   and restarted at its address takes to fail, and how, with default settings
//!   (6 s peer timeout): `fresh`: the new process has a new key and nobody dials
//!   it (the keep-alive finds the loss); `same-key`: it kept its `node.key`
//!   (its stateless reset tells); `dialed`: a new key, and the client dials the
//!   address as soon as the new process is up. Each `--rounds` (3) times; prints
//!   the stall from the kill, and from the new process being ready.
//!
//! ```text
//! cargo run --release -p remora-integration-tests --bin remora-resource-figures -- \
//!     tells [--secs 20] | idle [--clients 1000] | restart [--rounds 3]
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remora::Node;
use remora_integration_tests::figures::{figure, mib, status_kib};
use remora_integration_tests::{BrokerRef, ChildNode, CounterRef};

/// The median of `latencies` (sorted in place), in microseconds.
fn median(latencies: &mut [Duration]) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    latencies.sort();
    latencies[latencies.len() / 2].as_secs_f64() * 1e6
}

fn number(args: &mut impl Iterator<Item = String>, name: &str) -> u64 {
    args.next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name} takes a number"))
}

struct Server {
    child: ChildNode,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
}

fn server() -> Server {
    let binary = std::env::current_exe()
        .expect("this executable")
        .with_file_name("remora-test-node");
    let dir = tempfile::tempdir().expect("a directory for the cluster");
    remora::Credentials::create_cluster(dir.path()).expect("a cluster");
    let child = ChildNode::spawn(binary.to_str().expect("a path"), dir.path());
    Server {
        child,
        dir: dir.path().to_owned(),
        _dir: dir,
    }
}

async fn client(server: &Server) -> Node {
    let node = Node::builder()
        .credentials(&server.dir)
        .build()
        .await
        .expect("a client node");
    node.connect(&server.child.addr).await.expect("connected");
    node
}

async fn tells(secs: u64) {
    let server = server();
    let pid = server.child.child.id();
    let node = client(&server).await;
    let counter: CounterRef = node
        .reference(server.child.id, server.child.counter)
        .expect("a reference");
    let broker: BrokerRef = node
        .reference(server.child.id, server.child.broker)
        .expect("a reference");
    counter.add(0).await.expect("the counter answers");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, own_idle) = (
        status_kib(pid, "VmRSS"),
        status_kib(std::process::id(), "VmRSS"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (counter, stop, sent) = (counter.clone(), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match counter.bump(1).await {
                    Ok(()) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => eprintln!("tell failed: {err}"),
                }
            }
        }));
    }
    let napper = tokio::spawn({
        let (counter, stop) = (counter.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = counter.nap(5).await;
            }
        }
    });
    let asker = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut latencies = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(1));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let started = Instant::now();
                if broker.give().await.is_ok() {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }
    });
    let (mut peak, mut own_peak) = (idle, own_idle);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        peak = peak.max(status_kib(pid, "VmRSS"));
        own_peak = own_peak.max(status_kib(std::process::id(), "VmRSS"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("a flood task");
    }
    napper.await.expect("the napper");
    let mut latencies = asker.await.expect("the asker");
    let peak = peak.max(status_kib(pid, "VmHWM"));
    let told = sent.load(Ordering::SeqCst);
    let total = counter.total().await.expect("the counter answers");
    figure("tells.sent", told as f64, "tells");
    figure("tells.rate", told as f64 / secs as f64, "tells/s");
    figure("tells.lost", (told - total) as f64, "tells");
    figure("server.rss_idle", mib(idle), "MiB");
    figure("server.rss_peak", mib(peak), "MiB");
    figure("server.rss_above_idle", mib(peak - idle), "MiB");
    figure("client.rss_above_idle", mib(own_peak - own_idle), "MiB");
    figure("client.asks_during", latencies.len() as f64, "asks");
    figure("client.p50_during", median(&mut latencies), "us");
    node.shutdown().await;
}

async fn idle(clients: usize) {
    let server = server();
    let pid = server.child.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = status_kib(pid, "VmRSS");
    let mut nodes = Vec::new();
    // A few at a time: more than the handshake budget at once would be retried.
    for batch in 0..clients.div_ceil(16) {
        let mut connecting = Vec::new();
        for _ in (batch * 16)..((batch + 1) * 16).min(clients) {
            connecting.push(async {
                let node = client(&server).await;
                let counter: CounterRef = node
                    .reference(server.child.id, server.child.counter)
                    .expect("a reference");
                counter.add(1).await.expect("a call");
                node
            });
        }
        for node in futures_lite(connecting).await {
            nodes.push(node);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = status_kib(pid, "VmRSS");
    figure("idle.clients", nodes.len() as f64, "nodes");
    figure("server.rss_before", mib(before), "MiB");
    figure("server.rss_after", mib(after), "MiB");
    figure(
        "server.per_connection",
        (after - before) as f64 / nodes.len() as f64,
        "KiB",
    );
    for node in nodes {
        node.shutdown().await;
    }
}

/// Runs `futures` concurrently, in order of their results.
async fn futures_lite<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, fut) in out.iter_mut().zip(pinned.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *slot = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|value| value.expect("ready")).collect()
}

/// One restart of a node with a call in flight: `(stall from the kill, stall
/// from the new process's READY, the call's error)`.
async fn restart_once(how: &str) -> (Duration, Duration, String) {
    let binary = std::env::current_exe()
        .expect("this executable")
        .with_file_name("remora-test-node");
    let binary = binary.to_str().expect("a path");
    let dir = tempfile::tempdir().expect("a directory for the cluster");
    remora::Credentials::create_cluster(dir.path()).expect("a cluster");
    // `same-key`: the node's certificate and key in a directory of their own.
    let keys = tempfile::tempdir().expect("a directory for the node's key");
    remora::Credentials::issue_named_node(dir.path(), keys.path(), "branch").expect("issued");
    let node_dir = if how == "same-key" {
        keys.path()
    } else {
        dir.path()
    };
    let mut first = ChildNode::spawn(binary, node_dir);
    let client = Node::builder()
        .credentials(dir.path())
        .build()
        .await
        .expect("a client node");
    client.connect(&first.addr).await.expect("connected");
    let counter: CounterRef = client.reference(first.id, first.counter).expect("a ref");
    let probe: BrokerRef = client.reference(first.id, first.broker).expect("a ref");
    let call = tokio::spawn(async move { counter.nap(120_000).await });
    assert_eq!(probe.give().await, Ok(None), "the node answers");
    let addr = first.addr.clone();
    let killed = Instant::now();
    first.kill();
    let second = tokio::task::spawn_blocking({
        let (binary, node_dir) = (binary.to_owned(), node_dir.to_owned());
        move || ChildNode::spawn_at(&binary, &node_dir, &addr)
    })
    .await
    .expect("restarted");
    let ready = Instant::now();
    if how == "dialed" {
        client
            .connect(&second.addr)
            .await
            .expect("the new process answers");
    }
    let outcome = call.await.expect("the call's task");
    let err = outcome.expect_err("the call cannot succeed");
    let kind = format!("{err:?}");
    let kind = kind.split([' ', '{']).next().unwrap_or("?").to_owned();
    (killed.elapsed(), ready.elapsed(), kind)
}

async fn restarts(rounds: u32) {
    for how in ["fresh", "same-key", "dialed"] {
        for round in 0..rounds {
            let (from_kill, from_ready, kind) = restart_once(how).await;
            figure(
                &format!("restart.{how}.{round}.from_kill ({kind})"),
                from_kill.as_secs_f64() * 1e3,
                "ms",
            );
            figure(
                &format!("restart.{how}.{round}.from_ready ({kind})"),
                from_ready.as_secs_f64() * 1e3,
                "ms",
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("tells") => {
            let mut secs = 20;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--secs" => secs = number(&mut args, "--secs"),
                    other => panic!("unknown argument {other}"),
                }
            }
            tells(secs).await;
        }
        Some("idle") => {
            let mut clients = 1000;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--clients" => clients = number(&mut args, "--clients") as usize,
                    other => panic!("unknown argument {other}"),
                }
            }
            idle(clients).await;
        }
        Some("restart") => {
            let mut rounds = 3;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--rounds" => rounds = number(&mut args, "--rounds") as u32,
                    other => panic!("unknown argument {other}"),
                }
            }
            restarts(rounds).await;
        }
        _ => panic!(
            "usage: remora-resource-figures tells [--secs N] | idle [--clients N] | restart [--rounds N]"
        ),
    }
}
