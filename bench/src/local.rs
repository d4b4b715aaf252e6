//! Local workloads (one process, one node) and their bare-tokio baselines.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use remora::{Actor, Node};
use tokio::sync::{mpsc, oneshot};

use crate::{alloc, figure, median, rate, Scale};

/// `base.mpsc.rate`: tokio mpsc(1024), one producer, one consumer task summing u64.
/// `base.ask.ns`: the same channel plus a oneshot per request, sequential round trips.
pub async fn baselines(scale: Scale) {
    let n = scale.count(10_000_000, 1_000_000);
    let mut rates = Vec::new();
    for _ in 0..scale.reps() {
        let (tx, mut rx) = mpsc::channel::<u64>(1024);
        let consumer = tokio::spawn(async move {
            let mut sum = 0u64;
            while let Some(v) = rx.recv().await {
                sum = sum.wrapping_add(v);
            }
            sum
        });
        let start = Instant::now();
        for i in 0..n {
            tx.send(i).await.expect("consumer alive");
        }
        drop(tx);
        let sum = consumer.await.expect("consumer ran");
        rates.push(rate(n, start.elapsed()));
        assert_eq!(sum, n * (n - 1) / 2);
    }
    figure("base.mpsc.rate", median(&mut rates), "msgs/s");

    let n = scale.count(1_000_000, 100_000);
    let mut nanos = Vec::new();
    for _ in 0..scale.reps() {
        let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(1024);
        let server = tokio::spawn(async move {
            while let Some((v, reply)) = rx.recv().await {
                let _ = reply.send(v + 1);
            }
        });
        let start = Instant::now();
        for i in 0..n {
            let (rtx, rrx) = oneshot::channel();
            tx.send((i, rtx)).await.expect("server alive");
            assert_eq!(rrx.await.expect("server replied"), i + 1);
        }
        nanos.push(start.elapsed().as_nanos() as f64 / n as f64);
        drop(tx);
        server.await.expect("server ran");
    }
    figure("base.ask.ns", median(&mut nanos), "ns");
}

#[remora::remote]
pub trait Summer {
    #[oneway]
    async fn add(&mut self, v: u64);
    async fn total(&mut self) -> u64;
    async fn inc(&mut self, v: u64) -> u64;
}

#[derive(Default)]
struct Sum(u64);
impl Actor for Sum {}
impl Summer for Sum {
    async fn add(&mut self, v: u64) {
        self.0 = self.0.wrapping_add(v);
    }
    async fn total(&mut self) -> u64 {
        self.0
    }
    async fn inc(&mut self, v: u64) -> u64 {
        v + 1
    }
}

async fn node() -> Node {
    Node::builder().build().await.expect("node builds")
}

/// `l1.rate`: 10 M tells from one producer to one summing actor.
pub async fn l1(scale: Scale) {
    let n = scale.count(10_000_000, 1_000_000);
    let node = node().await;
    let mut rates = Vec::new();
    for _ in 0..scale.reps() {
        let summer: SummerRef = node.spawn(Sum::default());
        let start = Instant::now();
        for i in 0..n {
            summer.add(i).await.expect("tell accepted");
        }
        let total = summer.total().await.expect("ask answered");
        rates.push(rate(n, start.elapsed()));
        assert_eq!(total, n * (n - 1) / 2);
    }
    figure("l1.rate", median(&mut rates), "msgs/s");
    node.shutdown().await;
}

/// `l2.ns`: 1 M sequential asks; `l2.allocs_per_call`: the heap allocations one
/// costs (the whole process's, counted over the same asks).
pub async fn l2(scale: Scale) {
    let n = scale.count(1_000_000, 100_000);
    let node = node().await;
    let summer: SummerRef = node.spawn(Sum::default());
    let (mut nanos, mut allocs) = (Vec::new(), Vec::new());
    for _ in 0..scale.reps() {
        let start = Instant::now();
        let ((), made) = alloc::counting(async {
            for i in 0..n {
                assert_eq!(summer.inc(i).await.expect("ask answered"), i + 1);
            }
        })
        .await;
        nanos.push(start.elapsed().as_nanos() as f64 / n as f64);
        allocs.push(made as f64 / n as f64);
    }
    figure("l2.ns", median(&mut nanos), "ns");
    figure("l2.allocs_per_call", median(&mut allocs), "allocs");
    node.shutdown().await;
}

#[remora::remote]
pub trait Idle {
    async fn ping(&mut self) -> u8;
}

struct Sleeper;
impl Actor for Sleeper {}
impl Idle for Sleeper {
    async fn ping(&mut self) -> u8 {
        1
    }
}

/// `l3`: spawn 1 M idle actors (spawn rate, heap bytes per actor), then stop them.
///
/// The bytes are the counting allocator's (`alloc`): heap bytes live once every
/// actor is spawned and answering, minus those live before the first spawn, over
/// the count. The benchmark's `Vec` of references is allocated before, so it is
/// left out; what a reference holds on the heap is counted, as part of an actor
/// someone can reach.
pub async fn l3(scale: Scale) {
    let n = scale.count(1_000_000, 200_000);
    let mut rates = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..scale.reps().min(3) {
        let node = node().await;
        let mut refs: Vec<IdleRef> = Vec::with_capacity(n as usize);
        let before = alloc::live_bytes();
        let cpu = ThreadCpu::now();
        let start = Instant::now();
        for _ in 0..n {
            refs.push(node.spawn(Sleeper));
        }
        let took = start.elapsed();
        let cpu = cpu.since();
        // Every actor is alive and answering: ask the last one.
        assert_eq!(refs.last().expect("spawned").ping().await, Ok(1));
        let after = alloc::live_bytes();
        rates.push(rate(n, took));
        bytes.push(after.saturating_sub(before) as f64 / n as f64);
        // Progress: the repetitions differ (their medians are the figures).
        eprintln!(
            "l3: spawned {n} actors in {took:?} ({cpu}), {:.0} heap bytes each",
            bytes[bytes.len() - 1]
        );
        let stop = Instant::now();
        node.shutdown().await;
        eprintln!("l3: stopped {n} actors in {:?}", stop.elapsed());
        assert_eq!(node.stats().actors, 0);
    }
    figure("l3.spawn_rate", median(&mut rates), "actors/s");
    figure("l3.bytes_per_actor", median(&mut bytes), "bytes");
}

/// What this thread spent, from `/proc/thread-self/stat`: user and system time
/// and minor page faults. `l3` prints it beside a repetition's spawn time, since
/// the loop never awaits: a slow repetition shows whether the time went to the
/// spawns or to the kernel mapping fresh memory for them (first touch of a page).
#[derive(Clone, Copy, Debug, Default)]
struct ThreadCpu {
    user_ms: u64,
    system_ms: u64,
    faults: u64,
}

impl ThreadCpu {
    /// Now, or zeros where `/proc` cannot say (not Linux).
    fn now() -> ThreadCpu {
        let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
            return ThreadCpu::default();
        };
        // The fields after the command (in parentheses, which may hold spaces):
        // state is field 3, minflt 10, utime 14, stime 15 (clock ticks of 10 ms).
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let field = |n: usize| -> u64 {
            after
                .split_whitespace()
                .nth(n - 3)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        ThreadCpu {
            user_ms: field(14) * 10,
            system_ms: field(15) * 10,
            faults: field(10),
        }
    }

    fn since(self) -> ThreadCpu {
        let now = ThreadCpu::now();
        ThreadCpu {
            user_ms: now.user_ms.saturating_sub(self.user_ms),
            system_ms: now.system_ms.saturating_sub(self.system_ms),
            faults: now.faults.saturating_sub(self.faults),
        }
    }
}

impl std::fmt::Display for ThreadCpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user {} ms, system {} ms, {} page faults",
            self.user_ms, self.system_ms, self.faults
        )
    }
}

#[remora::remote]
pub trait Skynet {
    async fn run(&mut self, num: u64, size: u64) -> u64;
}

struct Branch {
    node: Node,
}
impl Actor for Branch {}
impl Skynet for Branch {
    async fn run(&mut self, num: u64, size: u64) -> u64 {
        if size == 1 {
            return num;
        }
        let step = size / 10;
        let children: Vec<SkynetRef> = (0..10)
            .map(|_| {
                self.node.spawn(Branch {
                    node: self.node.clone(),
                })
            })
            .collect();
        let sums = join_all(
            children
                .iter()
                .enumerate()
                .map(|(i, child)| child.run(num + i as u64 * step, step)),
        )
        .await;
        sums.into_iter().map(|s| s.expect("child answered")).sum()
    }
}

/// `l4.ms`: skynet, 1 M leaves in a tree of actors with 10 children each.
pub async fn l4(scale: Scale) {
    let leaves = scale.count(1_000_000, 100_000);
    let mut millis = Vec::new();
    for _ in 0..scale.reps().min(3) {
        let node = node().await;
        let root: SkynetRef = node.spawn(Branch { node: node.clone() });
        let start = Instant::now();
        let sum = root
            .with_timeout(Duration::from_secs(600))
            .run(0, leaves)
            .await
            .expect("skynet answered");
        millis.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(sum, leaves * (leaves - 1) / 2);
        node.shutdown().await;
    }
    figure("l4.ms", median(&mut millis), "ms");
}
