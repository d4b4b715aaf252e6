//! How the call workloads are driven, shared by the in-process, raw-QUIC and remote
//! ones: a sequential loop timed call by call (`*.p50`, `*.p99`), and a fixed number
//! of calls kept outstanding by worker tasks (`*.rate`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

/// Per-call latencies of one sequential run.
pub struct Latencies {
    samples: Vec<Duration>,
    start: Instant,
}

/// What one sequential run measured.
#[derive(Clone, Copy, Debug)]
pub struct LatencyRun {
    pub p50_us: f64,
    pub p99_us: f64,
    /// Calls per second over the whole run.
    pub rate: f64,
}

impl Latencies {
    /// Starts a run of `n` calls; the run's clock starts now.
    pub fn new(n: u64) -> Self {
        Latencies {
            samples: Vec::with_capacity(n as usize),
            start: Instant::now(),
        }
    }

    /// Records one call that started at `started`.
    pub fn push(&mut self, started: Instant) {
        self.samples.push(started.elapsed());
    }

    /// Stops the run's clock; the percentiles of the recorded calls.
    pub fn finish(mut self) -> LatencyRun {
        let took = self.start.elapsed();
        let n = self.samples.len();
        assert!(n > 0, "a latency run without calls");
        self.samples.sort_unstable();
        let at = |q: usize| self.samples[(n * q / 100).min(n - 1)].as_secs_f64() * 1e6;
        LatencyRun {
            p50_us: at(50),
            p99_us: at(99),
            rate: n as f64 / took.as_secs_f64(),
        }
    }
}

/// The run with the median p50, whole: its p99 and rate come from the same run
/// as its p50. (Medians taken figure by figure could mix runs, and report a p50,
/// a p99 and a rate that no single run measured together.)
pub fn median_run(runs: &[LatencyRun]) -> LatencyRun {
    assert!(!runs.is_empty(), "no runs to take a median of");
    let mut runs = runs.to_vec();
    runs.sort_by(|a, b| a.p50_us.total_cmp(&b.p50_us));
    runs[runs.len() / 2]
}

/// Hands out call numbers `0..total` to the workers of [`outstanding`].
#[derive(Clone)]
pub struct Calls {
    next: Arc<AtomicU64>,
    total: u64,
}

impl Calls {
    /// The next call to make, or `None` once all have been handed out.
    pub fn next(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.total).then_some(i)
    }
}

/// Makes `total` calls with `width` calls outstanding: `width` tasks, each making
/// sequential calls while [`Calls::next`] hands out numbers. `worker` builds one
/// such task. Returns the time from the first call to the last reply.
pub async fn outstanding<W, Fut>(total: u64, width: u64, worker: W) -> Duration
where
    W: Fn(Calls) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let calls = Calls {
        next: Arc::new(AtomicU64::new(0)),
        total,
    };
    let tasks: Vec<Fut> = (0..width).map(|_| worker(calls.clone())).collect();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for task in tasks {
        set.spawn(task);
    }
    while let Some(done) = set.join_next().await {
        done.expect("a benchmark worker panicked");
    }
    start.elapsed()
}

/// Runs `run` `times` times, in order.
pub async fn repeat<T, F: std::future::Future<Output = T>>(
    times: usize,
    mut run: impl FnMut() -> F,
) -> Vec<T> {
    let mut out = Vec::with_capacity(times);
    for _ in 0..times {
        out.push(run().await);
    }
    out
}

/// The median of `values`.
pub fn median_of(mut values: Vec<f64>) -> f64 {
    crate::median(&mut values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p50_us: f64, p99_us: f64, rate: f64) -> LatencyRun {
        LatencyRun {
            p50_us,
            p99_us,
            rate,
        }
    }

    #[test]
    fn the_median_run_keeps_its_own_p99_and_rate() {
        // Figure by figure, the medians would be p50 20, p99 300, rate 2 000: no run.
        let runs = [
            run(30.0, 100.0, 1_000.0),
            run(10.0, 300.0, 2_000.0),
            run(20.0, 400.0, 3_000.0),
        ];
        let median = median_run(&runs);
        assert_eq!(
            (median.p50_us, median.p99_us, median.rate),
            (20.0, 400.0, 3_000.0)
        );
        let one = median_run(&runs[..1]);
        assert_eq!((one.p50_us, one.p99_us, one.rate), (30.0, 100.0, 1_000.0));
    }
}
