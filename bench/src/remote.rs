//! `w1`–`w4`, `p1`, `p2`: BENCH.md's remote workloads, Remora against Remora
//! across two OS processes on loopback, over QUIC with mutual TLS as in production.
//!
//! The server is this binary again (`remora-bench __remora-server DIR`): a node
//! listening on 127.0.0.1 under the cluster credentials in DIR, serving the
//! registry (embedded store) with one echo actor bound as `echo` for w1–w3, p1
//! and p2, and eight as `w4/0`..`w4/7`. It prints `READY <addr>` and exits when
//! its stdin closes. The client looks the actors up by name, as BENCH.md says.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use remora::{Actor, Credentials, Node};
use remora_registry::{MemoryStore, Registry, RegistryServer};

use crate::drive::{median_of, median_run, outstanding, repeat, Latencies, LatencyRun};
use crate::echo::{EchoActor, EchoRef};
use crate::{alloc, figure, median, rate, Scale};

pub const SERVER_COMMAND: &str = "__remora-server";

/// Whether calls carry their deadlines (`--no-propagation` turns it off on both
/// sides, to measure what propagation costs: `NodeBuilder::propagate_deadlines`).
pub static PROPAGATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn propagate() -> bool {
    PROPAGATE.load(std::sync::atomic::Ordering::Relaxed)
}
const W4_SERVERS: usize = 8;

/// The server child: never returns.
pub fn serve(dir: &Path) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let node = Node::builder()
            .listen("127.0.0.1:0")
            .credentials(dir)
            .propagate_deadlines(propagate())
            .build()
            .await
            .expect("server node");
        let registry = RegistryServer::serve(&node, MemoryStore::new()).expect("registry");
        let echo: EchoRef = node.spawn(EchoActor);
        registry.bind("echo", &echo).await.expect("bind");
        for i in 0..W4_SERVERS {
            let actor: EchoRef = node.spawn(EchoActor);
            registry
                .bind(&format!("w4/{i}"), &actor)
                .await
                .expect("bind");
        }
        let line = format!("READY {}", node.listen_addr().expect("listening"));
        println!("{line}");
        tokio::task::spawn_blocking(|| {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        })
        .await
        .expect("stdin watcher");
        drop(registry);
    });
    std::process::exit(0)
}

/// The server process, the client node connected to it, and references.
pub struct Remote {
    child: Child,
    dir: PathBuf,
    client: Node,
    registry: Registry,
    echo: EchoRef,
    servers: Vec<EchoRef>,
}

impl Remote {
    pub async fn start() -> Remote {
        let dir = std::env::temp_dir().join(format!("remora-bench-{}", std::process::id()));
        Credentials::create_cluster(&dir).expect("cluster credentials");
        let exe = std::env::current_exe().expect("own executable");
        let mut child = Command::new(exe)
            .arg(SERVER_COMMAND)
            .arg(&dir)
            .arg(if propagate() {
                "propagate"
            } else {
                "no-propagation"
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("server child starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("READY line");
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.first(), Some(&"READY"), "server said {line:?}");
        // Progress, and what a profile of one side needs (README: profiling).
        eprintln!(
            "remote: client pid {}, server pid {}",
            std::process::id(),
            child.id()
        );
        let client = Node::builder()
            .credentials(&dir)
            .propagate_deadlines(propagate())
            .build()
            .await
            .expect("client node");
        let registry = Registry::connect(&client, parts[1])
            .await
            .expect("registry");
        let echo = registry.lookup("echo").await.expect("lookup echo");
        let mut servers = Vec::new();
        for i in 0..W4_SERVERS {
            servers.push(registry.lookup(&format!("w4/{i}")).await.expect("lookup"));
        }
        Remote {
            child,
            dir,
            client,
            registry,
            echo,
            servers,
        }
    }

    pub async fn stop(mut self) {
        self.client.shutdown().await;
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The remote workloads against one server process, without their baselines.
pub async fn run(scale: Scale, selected: impl Fn(&str) -> bool) {
    let remote = Remote::start().await;
    remote.warm_up(scale).await;
    remote.calls(scale, &selected).await;
    remote.pipes(scale, &selected).await;
    remote.rest(scale, &selected).await;
    remote.stop().await;
}

/// BENCH.md: w1 is 20 000 calls (after 2 000 warm-up), w2 200 000, w3 5 000.
pub fn w1_calls(scale: Scale) -> u64 {
    scale.count(20_000, 3_000)
}

pub fn w2_calls(scale: Scale) -> u64 {
    scale.count(200_000, 30_000)
}

pub fn w3_calls(scale: Scale) -> u64 {
    scale.count(5_000, 800)
}

/// `p1`: 500 000 items (BENCH.md names no count: a few seconds' worth here).
pub fn p1_items(scale: Scale) -> u64 {
    scale.count(500_000, 50_000)
}

/// `p2`: 10 000 blobs of 64 KiB (655 MB; BENCH.md names no count either).
pub fn p2_items(scale: Scale) -> u64 {
    scale.count(10_000, 1_000)
}

/// What one `w2` repetition measured.
#[derive(Clone, Copy, Debug)]
pub struct W2Run {
    /// Calls/s.
    pub rate: f64,
    /// Heap allocations per call in this process, the client's.
    pub client_allocs: f64,
    /// Heap allocations per call in the server's process.
    pub server_allocs: f64,
}

/// Prints `w2.rate` and `w2.allocs_per_call.client`, `.server`, the medians of
/// `runs`; returns `w2.rate` as printed.
pub fn w2_figures(runs: &[W2Run]) -> f64 {
    let median = |of: fn(&W2Run) -> f64| median_of(runs.iter().map(of).collect());
    let rate = median(|run| run.rate);
    figure("w2.rate", rate, "calls/s");
    figure(
        "w2.allocs_per_call.client",
        median(|run| run.client_allocs),
        "allocs",
    );
    figure(
        "w2.allocs_per_call.server",
        median(|run| run.server_allocs),
        "allocs",
    );
    rate
}

pub fn w1_figures(runs: &[LatencyRun]) {
    let run = median_run(runs);
    figure("w1.p50", run.p50_us, "us");
    figure("w1.p99", run.p99_us, "us");
    figure("w1.rate", run.rate, "calls/s");
}

impl Remote {
    /// w1's 2 000 warm-up calls, then a little of w2 and w3.
    pub async fn warm_up(&self, scale: Scale) {
        for i in 0..scale.count(2_000, 500) {
            assert_eq!(self.echo.echo(i).await.expect("echo"), i);
        }
        self.pipelined(PIPELINE_WIDTH * 50, false).await;
        self.payload(PAYLOAD_WIDTH * 4).await;
        self.p1(P1_CAPACITY * 100).await;
        self.p2(P2_CAPACITY * 4).await;
    }

    /// `w1`, `w2`, `w3` on their own, those selected (a full run alternates them
    /// with their baselines instead, see `paired`).
    pub async fn calls(&self, scale: Scale, selected: &impl Fn(&str) -> bool) {
        if selected("w1") {
            let runs = repeat(scale.reps(), || self.w1(w1_calls(scale))).await;
            w1_figures(&runs);
        }
        if selected("w2") {
            w2_figures(&repeat(3, || self.w2(w2_calls(scale))).await);
        }
        if selected("w3") {
            let mbps = repeat(3, || self.payload(w3_calls(scale))).await;
            figure("w3.mbps", median_of(mbps), "MB/s");
        }
    }

    /// `p1`, `p2` on their own, those selected (a full run alternates them with
    /// their baselines instead, see `paired`).
    pub async fn pipes(&self, scale: Scale, selected: &impl Fn(&str) -> bool) {
        if selected("p1") {
            let rates = repeat(3, || self.p1(p1_items(scale))).await;
            figure("p1.rate", median_of(rates), "items/s");
        }
        if selected("p2") {
            let mbps = repeat(3, || self.p2(p2_items(scale))).await;
            figure("p2.mbps", median_of(mbps), "MB/s");
        }
    }

    /// `w1`: `n` calls, one outstanding.
    pub async fn w1(&self, n: u64) -> LatencyRun {
        let mut lat = Latencies::new(n);
        for i in 0..n {
            let started = Instant::now();
            let v = self.echo.echo(i).await.expect("echo");
            lat.push(started);
            assert_eq!(v, i);
        }
        lat.finish()
    }

    /// `w2`: `n` echo calls, 64 outstanding, and the heap allocations they cost
    /// each side. The server's count is read (`Echo::allocations`) before and
    /// after the calls; what the readings themselves cost it (the first one's
    /// reply, the second one's request) is measured by two readings in a row
    /// beforehand, and taken off.
    pub async fn w2(&self, n: u64) -> W2Run {
        let server = || async { self.echo.allocations().await.expect("allocations") };
        let first = server().await;
        let before = server().await;
        let packets = self.packets().await;
        let (rate, client) = alloc::counting(self.pipelined(n, false)).await;
        let now = self.packets().await;
        let per = |i: usize| (now[i] - packets[i]) as f64 / n as f64;
        eprintln!(
            "w2: per call {:.3} packets sent ({:.0} bytes), {:.3} stream frames received ({:.0} bytes)",
            per(0),
            per(1),
            per(2),
            per(3),
        );
        let after = server().await;
        let server = (after - before).saturating_sub(before - first);
        W2Run {
            rate,
            client_allocs: client as f64 / n as f64,
            server_allocs: server as f64 / n as f64,
        }
    }

    /// Progress: the client's QUIC packets and UDP bytes sent, stream frames and
    /// UDP bytes received so far, summed over its connections (how well calls
    /// and replies are batched).
    async fn packets(&self) -> [u64; 4] {
        let conns = self.client.inspector().conns().await;
        let conns = conns.expect("inspect").expect("inspect allowed");
        conns
            .iter()
            .filter_map(|conn| conn.quic.as_ref())
            .fold([0; 4], |sum, quic| {
                [
                    sum[0] + quic.sent_packets,
                    sum[1] + quic.bytes_sent,
                    sum[2] + quic.stream_frames_received,
                    sum[3] + quic.bytes_received,
                ]
            })
    }

    /// `w2`'s calls (or, `once`, `w2.once`'s: an `#[exactly_once]` method, not in
    /// BENCH.md: what the guarantee costs): `n` echo calls, 64 outstanding from one
    /// client node; calls/s.
    async fn pipelined(&self, n: u64, once: bool) -> f64 {
        let took = outstanding(n, PIPELINE_WIDTH, |calls| {
            let echo = self.echo.clone();
            async move {
                while let Some(i) = calls.next() {
                    let back = if once {
                        echo.echo_once(i).await
                    } else {
                        echo.echo(i).await
                    };
                    assert_eq!(back.expect("echo"), i);
                }
            }
        })
        .await;
        rate(n, took)
    }

    /// `w3`: `n` calls of `echo_bytes` with 64 KiB, 8 outstanding; MB/s of
    /// payload sent plus received.
    pub async fn payload(&self, n: u64) -> f64 {
        let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 31 % 251) as u8).collect();
        let took = outstanding(n, PAYLOAD_WIDTH, |calls| {
            let echo = self.echo.clone();
            let payload = payload.clone();
            async move {
                while calls.next().is_some() {
                    let back = echo.echo_bytes(payload.clone()).await.expect("echo_bytes");
                    assert_eq!(back.len(), PAYLOAD);
                }
            }
        })
        .await;
        (n as f64 * PAYLOAD as f64 * 2.0) / took.as_secs_f64() / 1e6
    }

    /// `p1`: `n` numbers through one pipe of capacity 64, from the server's
    /// producer task to this task; items/s from the call to the stream's end.
    pub async fn p1(&self, n: u64) -> f64 {
        let start = Instant::now();
        let mut items = self.echo.count(n, P1_CAPACITY).await.expect("count");
        let mut next = 0;
        while let Some(item) = items.next().await {
            assert_eq!(item.expect("a p1 item"), next, "p1 items out of order");
            next += 1;
        }
        assert_eq!(next, n, "p1 stream ended early");
        rate(n, start.elapsed())
    }

    /// `p2`: `n` blobs of 64 KiB through one pipe of capacity 16, from the
    /// server's producer task to this task; MB/s of payload.
    pub async fn p2(&self, n: u64) -> f64 {
        let start = Instant::now();
        let mut blobs = self
            .echo
            .blobs(n, PAYLOAD as u64, P2_CAPACITY)
            .await
            .expect("blobs");
        let mut received = 0;
        while let Some(blob) = blobs.next().await {
            assert_eq!(blob.expect("a p2 item").len(), PAYLOAD);
            received += 1;
        }
        assert_eq!(received, n, "p2 stream ended early");
        (n as f64 * PAYLOAD as f64) / start.elapsed().as_secs_f64() / 1e6
    }

    /// The workloads without a raw-QUIC counterpart: `w2.once`, `w4`, `r1`.
    pub async fn rest(&self, scale: Scale, selected: &impl Fn(&str) -> bool) {
        if selected("w2.once") {
            let rates = repeat(3, || self.pipelined(w2_calls(scale), true)).await;
            figure("w2.once.rate", median_of(rates), "calls/s");
        }
        if selected("w4") {
            w4(self, scale).await;
        }
        if selected("r1") {
            crate::registry::r1(&self.registry, scale).await;
        }
    }
}

/// Calls outstanding in w2; in w3, and its payload size.
const PIPELINE_WIDTH: u64 = 64;
const PAYLOAD_WIDTH: u64 = 8;
const PAYLOAD: usize = 64 * 1024;
/// The pipes' capacities: p1's is BENCH.md's; p2's is 1 MiB of blobs in flight.
const P1_CAPACITY: u64 = 64;
const P2_CAPACITY: u64 = 16;

/// `w4`'s client actor: drives calls to its own server actor.
#[remora::remote]
pub trait FanIn {
    /// Makes `calls` echo calls to this actor's server with `width` of them
    /// outstanding; returns how many were answered with their own value.
    async fn drive(&mut self, calls: u64, width: u64) -> u64;
}

/// Serves [`FanIn`] against one server actor.
struct FanInClient {
    server: EchoRef,
}

impl Actor for FanInClient {}

impl FanIn for FanInClient {
    async fn drive(&mut self, calls: u64, width: u64) -> u64 {
        let server = &self.server;
        let mut in_flight = FuturesUnordered::new();
        let (mut sent, mut answered) = (0, 0);
        loop {
            while sent < calls && (in_flight.len() as u64) < width {
                let i = sent;
                in_flight.push(async move { (i, server.echo(i).await) });
                sent += 1;
            }
            match in_flight.next().await {
                Some((i, Ok(back))) => answered += u64::from(back == i),
                Some((_, Err(err))) => panic!("w4 echo failed: {err}"),
                None => return answered,
            }
        }
    }
}

/// How long one `drive` may take before w4 gives up on it (the default 30 s
/// deadline of a call is too short for a slow full run).
const W4_DEADLINE: Duration = Duration::from_secs(600);

/// `w4`: fan-in: 8 client actors on the client node, each calling its own server
/// actor with 32 calls outstanding (from inside its handler); calls/s over all.
async fn w4(remote: &Remote, scale: Scale) {
    const PER_CLIENT: u64 = 32;
    let n = scale.count(200_000, 30_000);
    let clients: Vec<FanInRef> = remote
        .servers
        .iter()
        .map(|server| {
            let client: FanInRef = remote.client.spawn(FanInClient {
                server: server.clone(),
            });
            client.with_timeout(W4_DEADLINE)
        })
        .collect();
    let go = |n: u64| {
        let share = n / clients.len() as u64;
        let clients = &clients;
        async move {
            let start = Instant::now();
            let answered = join_all(clients.iter().map(|c| c.drive(share, PER_CLIENT))).await;
            let took = start.elapsed();
            for answered in answered {
                assert_eq!(answered.expect("the w4 client actor answers"), share);
            }
            rate(share * clients.len() as u64, took)
        }
    };
    go(PER_CLIENT * 20 * clients.len() as u64).await;
    let mut rates = Vec::new();
    for _ in 0..scale.reps().min(3) {
        rates.push(go(n).await);
    }
    figure("w4.rate", median(&mut rates), "calls/s");
    for client in &clients {
        remote.client.stop(client);
    }
}
