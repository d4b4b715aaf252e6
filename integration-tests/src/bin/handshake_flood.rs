//! What a half-open handshake flood costs a node (issue 16's figure): starts a
//! server node in a child process (`remora-test-node`, default settings), floods
//! it from this process with half-open Initials (see `remora_integration_tests::
//! flood`) at `--rate` a second for `--secs`, while a client node of this process
//! keeps calling the server's counter (one call at a time, at most one a
//! millisecond), and prints, as `NAME<TAB>VALUE<TAB>UNIT` lines, the server's
//! resident memory at idle and at its peak during the flood (`VmRSS` sampled
//! every 50 ms, and `VmHWM`), the Initials sent, and the client's call latencies
//! before and during the flood. The Initials are made before the flood starts, so
//! that the rate does not depend on how fast this process makes them.
//!
//! ```text
//! cargo run --release -p remora-integration-tests --bin remora-handshake-flood -- \
//!     [--rate 10000] [--secs 10] [--sockets 4] [--validate]
//! ```
//! `--validate` answers the node's Retries (a flood from a real address).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use remora::Node;
use remora_integration_tests::figures::{figure, mib, status_kib};
use remora_integration_tests::flood::Flood;
use remora_integration_tests::{ChildNode, CounterRef};

/// Rounds of Initials a second: the rate is spread over them.
const TICKS: u64 = 100;

#[derive(Clone)]
struct Options {
    rate: u64,
    secs: u64,
    sockets: usize,
    validate: bool,
}

fn options() -> Options {
    let mut options = Options {
        rate: 10_000,
        secs: 10,
        sockets: 4,
        validate: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u64 {
            args.next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--rate" => options.rate = number("--rate"),
            "--secs" => options.secs = number("--secs"),
            "--sockets" => options.sockets = number("--sockets") as usize,
            "--validate" => options.validate = true,
            other => panic!("unknown argument {other}"),
        }
    }
    options
}

/// The `q` quantile of `latencies` (sorted in place), in microseconds.
fn quantile(latencies: &mut [Duration], q: f64) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    latencies.sort();
    let at = ((latencies.len() - 1) as f64 * q).round() as usize;
    latencies[at].as_secs_f64() * 1e6
}

/// Calls `counter` until `stop`, one call at a time and at most one a
/// millisecond; the latency of each, and how many failed.
async fn calls(counter: &CounterRef, stop: &AtomicBool) -> (Vec<Duration>, u64) {
    let (mut latencies, mut failed) = (Vec::new(), 0);
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) {
        pace.tick().await;
        let started = Instant::now();
        match counter.add(1).await {
            Ok(_) => latencies.push(started.elapsed()),
            Err(err) => {
                failed += 1;
                eprintln!("call failed: {err}");
            }
        }
    }
    (latencies, failed)
}

/// A flood of `addr` whose Initials (unless it validates) are made in advance.
fn prepared(addr: std::net::SocketAddr, options: &Options) -> Flood {
    let mut flood = Flood::new(addr, options.sockets, options.validate).expect("flood sockets");
    if !options.validate {
        let started = Instant::now();
        let initials = options.rate * options.secs;
        flood.prepare(initials as usize).expect("Initials");
        eprintln!("made {initials} Initials in {:?}", started.elapsed());
    }
    flood
}

/// Floods for `options.secs` at `options.rate`, paced in `TICKS` rounds a second
/// (a round that ran late is caught up on, none runs ahead).
fn flood(mut flood: Flood, options: &Options) -> Flood {
    let per_tick = (options.rate / TICKS).max(1) as usize;
    let tick = Duration::from_secs(1) / TICKS as u32;
    let started = Instant::now();
    for round in 0..options.secs * TICKS {
        if options.validate {
            flood.send(per_tick).expect("flood sends");
        } else {
            flood.send_prepared(per_tick).expect("flood sends");
        }
        let next = started + tick * (round as u32 + 1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    flood.answer().expect("flood reads");
    flood
}

#[tokio::main]
async fn main() {
    let options = options();
    let node_binary = std::env::current_exe()
        .expect("this executable")
        .with_file_name("remora-test-node");
    let dir = tempfile::tempdir().expect("a directory for the cluster");
    remora::Credentials::create_cluster(dir.path()).expect("a cluster");
    let server = ChildNode::spawn(node_binary.to_str().expect("a path"), dir.path());
    let pid = server.child.id();
    let client = Node::builder()
        .credentials(dir.path())
        .build()
        .await
        .expect("the client node");
    client.connect(&server.addr).await.expect("connected");
    let counter: CounterRef = client
        .reference(server.id, server.counter)
        .expect("a reference");

    // Before: a second of calls, then the server's idle memory.
    let stop = AtomicBool::new(false);
    let stopper = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::SeqCst);
    };
    let ((mut before, _), ()) = tokio::join!(calls(&counter, &stop), stopper);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = status_kib(pid, "VmRSS");
    let addr: std::net::SocketAddr = server.addr.parse().expect("the server's address");
    let ready = prepared(addr, &options);

    // The flood, with calls and memory samples alongside.
    let flooding = std::thread::spawn({
        let options = options.clone();
        move || {
            let started = Instant::now();
            let flood = flood(ready, &options);
            (flood, started.elapsed())
        }
    });
    let flood_stop = AtomicBool::new(false);
    let sampler = async {
        let mut peak = idle;
        while !flood_stop.load(Ordering::SeqCst) {
            peak = peak.max(status_kib(pid, "VmRSS"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    };
    let watcher = async {
        while !flooding.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        flood_stop.store(true, Ordering::SeqCst);
    };
    let ((mut during, failed), peak, ()) =
        tokio::join!(calls(&counter, &flood_stop), sampler, watcher);
    let (flood, took) = flooding.join().expect("the flood thread");
    let hwm = status_kib(pid, "VmHWM");
    let peak = peak.max(hwm);

    figure("flood.initials", flood.sent as f64, "Initials");
    figure(
        "flood.rate",
        flood.sent as f64 / took.as_secs_f64(),
        "Initials/s",
    );
    figure("flood.retries_seen", flood.retries as f64, "Retries");
    if options.validate {
        figure("flood.retries_answered", flood.answered as f64, "Initials");
    }
    figure("server.rss_idle", mib(idle), "MiB");
    figure("server.rss_peak", mib(peak), "MiB");
    figure("server.rss_above_idle", mib(peak - idle), "MiB");
    figure("client.calls_before", before.len() as f64, "calls/s");
    figure("client.p50_before", quantile(&mut before, 0.5), "us");
    figure("client.calls_during", during.len() as f64, "calls");
    figure("client.failed_during", failed as f64, "calls");
    figure("client.p50_during", quantile(&mut during, 0.5), "us");
    figure("client.p99_during", quantile(&mut during, 0.99), "us");
    client.shutdown().await;
    drop(server);
}
