//! Remora's benchmark runner: the workloads of `shared/BENCH.md`, one
//! `NAME<TAB>VALUE<TAB>UNIT` line per figure on stdout, progress on stderr.
//!
//! ```text
//! cargo run --release -p remora-bench -- [--quick] [--no-propagation] [--only NAME[,NAME...]]
//! ```
//! `--only` takes a workload (`l1`, `i2`, `base.quic`, ...), a prefix of one (`base`,
//! `i`) or one of its figures (`base.quic.p50` runs the QUIC call baselines), or a
//! comma-separated list of those (`p,base.quic.uni`: the pipe workloads alternated
//! with their baselines); `--quick` runs each workload for about a second, as a
//! smoke check; `--no-propagation` builds the remote workloads' nodes with
//! `propagate_deadlines(false)`, to measure what deadline propagation costs.

mod alloc;
mod drive;
mod echo;
mod frames;
mod inproc;
mod local;
mod paired;
mod quic_base;
mod registry;
mod remote;

use std::time::Duration;

/// How hard to push: full runs follow BENCH.md's counts, quick runs divide them.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub quick: bool,
}

impl Scale {
    /// `full` in a full run; a ~1 s share of it in a quick run.
    pub fn count(self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// Repetitions whose median is reported (for a latency workload: the repetition
    /// with the median p50, whole; see `drive::median_run`).
    pub fn reps(self) -> usize {
        if self.quick {
            1
        } else {
            5
        }
    }
}

/// Prints one figure line.
pub fn figure(name: &str, value: f64, unit: &str) {
    if value >= 100.0 {
        println!("{name}\t{value:.0}\t{unit}");
    } else {
        println!("{name}\t{value:.2}\t{unit}");
    }
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub fn rate(count: u64, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

fn main() {
    // The raw-QUIC baselines' server, a child this benchmark spawns (see quic_base).
    if std::env::args().nth(1).as_deref() == Some(quic_base::SERVER_COMMAND) {
        quic_base::serve();
    }
    // The remote workloads' Remora server, also a child of this benchmark.
    if std::env::args().nth(1).as_deref() == Some(remote::SERVER_COMMAND) {
        let dir = std::env::args().nth(2).expect("credentials directory");
        if std::env::args().nth(3).as_deref() == Some("no-propagation") {
            remote::PROPAGATE.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        remote::serve(std::path::Path::new(&dir));
    }
    let mut quick = false;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--no-propagation" => {
                remote::PROPAGATE.store(false, std::sync::atomic::Ordering::Relaxed)
            }
            "--only" => match args.next() {
                Some(names) => only = Some(names.split(',').map(str::to_owned).collect()),
                None => usage("--only needs a workload name"),
            },
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument `{other}`")),
        }
    }
    let scale = Scale { quick };
    // A workload runs when `--only` names a prefix of it, or one of its figures.
    let selected = move |name: &str| {
        only.as_deref().is_none_or(|only| {
            only.iter().any(|o| {
                name.starts_with(o.as_str())
                    || o.strip_prefix(name).is_some_and(|f| f.starts_with('.'))
            })
        })
    };

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("cores\t{cores}\tn");

    // REMORA_BENCH_THREADS=1 is for diagnosis only (CPU cost without cross-thread
    // wake-ups); reported figures use the default worker count, as BENCH.md says.
    let mut builder = match std::env::var("REMORA_BENCH_THREADS").ok().as_deref() {
        Some("1") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    // The benchmark body runs as a task, as BENCH.md's peer figures do.
    runtime
        .block_on(async move {
            tokio::spawn(async move {
                if selected("base.mpsc") || selected("base.ask") {
                    local::baselines(scale).await;
                }
                if selected("l1") {
                    local::l1(scale).await;
                }
                if selected("l2") {
                    local::l2(scale).await;
                }
                if selected("l3") {
                    local::l3(scale).await;
                }
                if selected("l4") {
                    local::l4(scale).await;
                }
                // A full run alternates the remote workloads with their baselines:
                // the call baselines (base.quic.framed.rate among them) with w1–w3,
                // the unidirectional ones with p1, p2.
                let call_base = ["p50", "p99", "rate", "framed", "payload"]
                    .iter()
                    .any(|f| selected(&format!("base.quic.{f}")));
                let uni_base = selected("base.quic.uni");
                let pairs = paired::Pairs {
                    calls: call_base && ["w1", "w2", "w3"].iter().any(|w| selected(w)),
                    pipes: uni_base && ["p1", "p2"].iter().any(|p| selected(p)),
                };
                if call_base && !pairs.calls {
                    quic_base::baselines(scale, &selected).await;
                }
                if uni_base && !pairs.pipes {
                    quic_base::uni_baselines(scale).await;
                }
                if selected("i1") {
                    inproc::i1(scale).await;
                }
                if selected("i2") {
                    inproc::i2(scale).await;
                }
                if pairs.calls || pairs.pipes {
                    paired::run(scale, pairs, &selected).await;
                } else if ["w1", "w2", "w3", "w4", "r1", "p1", "p2"]
                    .iter()
                    .any(|w| selected(w))
                {
                    remote::run(scale, &selected).await;
                }
                if selected("r2") {
                    registry::r2(scale).await;
                }
            })
            .await
        })
        .expect("a benchmark panicked");
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("remora-bench: {problem}");
    }
    eprintln!("usage: remora-bench [--quick] [--no-propagation] [--only NAME[,NAME...]]");
    eprintln!("  NAME: a workload, a prefix of one or one of its figures:");
    eprintln!("        base (base.mpsc, base.ask, base.quic, base.quic.uni), l1, l2, l3, l4,");
    eprintln!("        i1, i2 (in-process: values moved, and .enc: encoded as on the network),");
    eprintln!("        w1, w2, w3, w4 (remote calls), p1, p2 (remote pipes: u64s, 64 KiB blobs),");
    eprintln!("        r1, r2 (registry lookups: embedded, etcd)");
    eprintln!("  --no-propagation: remote calls carry no deadline (what propagation costs)");
    std::process::exit(if problem.is_empty() { 0 } else { 2 })
}
