//! `compute`: RMI's compute engine. An engine process binds `compute` in the
//! registry; a client looks it up and submits tasks. A task is a value (copied to
//! the engine); the client also passes a reference to its own progress listener,
//! and the engine calls it back while it works.
//!
//! The last task is too long to wait for: the client gives up on it by dropping
//! its call. The engine is told (a `Cancel` goes after the call), notices at its
//! next check of [`remora::is_cancelled`], stops early and says so: it prints a
//! line and tells the client's listener (a `#[oneway]` tell, which a handler
//! whose call was given up may still send; its asks would fail with `Cancelled`).
//!
//! One command runs the engine as a child process and the client here:
//!
//! ```text
//! cargo run --release -p remora-samples --bin compute
//! ```
//!
//! Or by hand, sharing a cluster root (`remora cert init DIR`):
//!
//! ```text
//! REMORA_CREDENTIALS=DIR compute engine                  # prints READY <addr>
//! REMORA_CREDENTIALS=DIR compute client --registry <addr>
//! ```

use std::time::Duration;

use remora::{Actor, Node};
use remora_registry::{MemoryStore, Registry, RegistryServer};
use remora_samples::args::{exit_code, required};
use remora_testing::{announce, node_builder, serve_until_signal, LocalCluster};
use serde::{Deserialize, Serialize};

/// Work a client submits: a plain value, copied to the engine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Task {
    /// How many primes are there below `below`?
    CountPrimes { below: u64 },
    /// Which start below `below` has the longest Collatz chain, and how long is it?
    LongestCollatz { below: u64 },
}

impl Task {
    fn name(&self) -> String {
        match self {
            Task::CountPrimes { below } => format!("primes below {below}"),
            Task::LongestCollatz { below } => format!("longest Collatz chain below {below}"),
        }
    }
}

/// The engine: runs tasks, reporting progress to whoever submitted them.
#[remora::remote]
pub trait Compute {
    /// Runs `task`, calling `progress` back at every quarter; returns the answer.
    async fn execute(&mut self, task: Task, progress: ProgressRef) -> Result<String, String>;
}

/// A client's progress listener (an actor on the client's node).
#[remora::remote]
pub trait Progress {
    /// `percent` of `task` is done.
    async fn update(&mut self, task: String, percent: u8);
    /// Every update so far, in order.
    async fn log(&mut self) -> Vec<(String, u8)>;
    /// The engine stopped `task` early, `percent` done, because its caller gave it up.
    #[oneway]
    async fn stopped(&mut self, task: String, percent: u8);
    /// The tasks the engine stopped early, so far.
    async fn stops(&mut self) -> Vec<(String, u8)>;
}

/// How many numbers the engine works through between checks of whether the
/// task was given up (and chances for other work on its thread).
const CHECK_EVERY: u64 = 2_000;

struct Engine;
impl Actor for Engine {}

impl Compute for Engine {
    async fn execute(&mut self, task: Task, progress: ProgressRef) -> Result<String, String> {
        let name = task.name();
        let (below, quarters) = match task {
            Task::CountPrimes { below } | Task::LongestCollatz { below } => (below, 4),
        };
        if below > 50_000_000 {
            return Err(format!(
                "{name}: too large for this engine (at most 50 000 000)"
            ));
        }
        let step = below.div_ceil(quarters).max(1);
        let mut primes = 0u64;
        let mut best = (1u64, 1u64);
        let mut start = 1;
        for quarter in 1..=quarters {
            let end = (start + step).min(below);
            for n in start..end {
                if n % CHECK_EVERY == 0 {
                    // Lets the runtime look for a Cancel, then asks.
                    tokio::task::yield_now().await;
                    if remora::is_cancelled() {
                        let percent = u8::try_from(n * 100 / below).unwrap_or(100);
                        println!(
                            "engine: {name} given up by its caller at {percent}%: stopping early"
                        );
                        // A tell still goes: nobody waits for it.
                        let _ = progress.stopped(name.clone(), percent).await;
                        return Err(format!("{name}: given up at {percent}%"));
                    }
                }
                match task {
                    Task::CountPrimes { .. } => primes += u64::from(is_prime(n)),
                    Task::LongestCollatz { .. } => {
                        let len = collatz_len(n);
                        if len > best.1 {
                            best = (n, len);
                        }
                    }
                }
            }
            start = end;
            // The callback: a call on a reference the client passed in.
            let percent = u8::try_from(quarter * 100 / quarters).unwrap_or(100);
            progress
                .update(name.clone(), percent)
                .await
                .map_err(|e| format!("progress listener unreachable: {e}"))?;
        }
        Ok(match task {
            Task::CountPrimes { .. } => format!("{primes} primes below {below}"),
            Task::LongestCollatz { .. } => {
                format!(
                    "{} starts the longest chain below {below} ({} steps)",
                    best.0, best.1
                )
            }
        })
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn collatz_len(mut n: u64) -> u64 {
    let mut steps = 1;
    while n != 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}

#[derive(Default)]
struct Listener {
    log: Vec<(String, u8)>,
    stops: Vec<(String, u8)>,
}
impl Actor for Listener {}

impl Progress for Listener {
    async fn update(&mut self, task: String, percent: u8) {
        println!("  progress: {task}: {percent}%");
        self.log.push((task, percent));
    }

    async fn log(&mut self) -> Vec<(String, u8)> {
        self.log.clone()
    }

    async fn stopped(&mut self, task: String, percent: u8) {
        println!("  the engine stopped {task} early, at {percent}%");
        self.stops.push((task, percent));
    }

    async fn stops(&mut self) -> Vec<(String, u8)> {
        self.stops.clone()
    }
}

/// How long the client waits for the long task before giving it up.
const PATIENCE: Duration = Duration::from_millis(500);

type Failure = Box<dyn std::error::Error>;

async fn engine() -> Result<(), Failure> {
    let node = node_builder()
        .name("compute-engine")
        .listen("127.0.0.1:0")
        .build()
        .await?;
    let registry = RegistryServer::serve(&node, MemoryStore::new())?;
    let engine: ComputeRef = node.spawn(Engine);
    registry.rebind("compute", &engine).await?;
    announce(&node);
    serve_until_signal(&node).await;
    Ok(())
}

async fn client(registry_addr: &str) -> Result<(), Failure> {
    let node: Node = node_builder().name("compute-client").build().await?;
    let registry = Registry::connect(&node, registry_addr).await?;
    let engine: ComputeRef = registry.lookup("compute").await?;
    println!("client: looked up `compute`");
    let listener: ProgressRef = node.spawn(Listener::default());
    let tasks = [
        Task::CountPrimes { below: 100_000 },
        Task::LongestCollatz { below: 100_000 },
        Task::CountPrimes {
            below: 1_000_000_000,
        },
    ];
    for task in tasks {
        println!("client: submitting {}", task.name());
        match engine.execute(task, listener.clone()).await? {
            Ok(answer) => println!("client: answer: {answer}"),
            Err(refused) => println!("client: the engine refused: {refused}"),
        }
    }
    // A long task, given up by dropping its call (the timeout drops it).
    let long = Task::CountPrimes { below: 50_000_000 };
    println!(
        "client: submitting {}, waiting {PATIENCE:?} for it",
        long.name()
    );
    let call = engine.execute(long, listener.clone());
    if tokio::time::timeout(PATIENCE, call).await.is_err() {
        println!("client: gave up on it (dropped the call)");
        // The engine says when it stopped (a bounded wait).
        for _ in 0..200 {
            if !listener.stops().await?.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match listener.stops().await?.first() {
            Some((task, percent)) => {
                println!("client: the engine stopped {task} at {percent}%")
            }
            None => println!("client: the engine did not say it stopped within 2 s"),
        }
    }
    let updates = listener.log().await?;
    println!("client: {} progress callbacks received", updates.len());
    node.shutdown().await;
    Ok(())
}

/// The engine as a child process, the client here.
async fn everything() -> Result<(), Failure> {
    let me = std::env::current_exe()?;
    let mut cluster = LocalCluster::new()?;
    let addr = cluster.start(&me, ["engine"])?.addr.clone();
    println!("engine process listening on {addr}, bound as `compute`");
    std::env::set_var(remora_testing::CREDENTIALS_ENV, cluster.credentials());
    client(&addr).await?;
    cluster.terminate();
    println!("stopped the engine process");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => everything().await,
        Some("engine") => engine().await,
        Some("client") => match required(&args, "--registry", "ADDR") {
            Ok(addr) => client(&addr).await,
            Err(e) => Err(e.into()),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}: use `engine`, `client --registry ADDR`, or nothing"
        )
        .into()),
    };
    exit_code("compute", result)
}
