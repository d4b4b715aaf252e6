//! A full run's remote workloads and the raw-QUIC baselines they are held against
//! (BENCH.md's ratios `w1.p50 / base.quic.p50`, `w2.rate / base.quic.rate`,
//! `w3.mbps / base.quic.payload.mbps`), run in alternation: a baseline repetition,
//! then the workload's, and so on, as BENCH.md's peer table was measured.
//!
//! On a shared 2-vCPU machine the speed of everything drifts by tens of percent
//! over minutes; run one after the other, a baseline and its workload would be
//! compared across such drift. Alternated, each pair is seconds apart, and the
//! medians compare like with like.

use crate::drive::{median_of, median_run};
use crate::quic_base::Baseline;
use crate::remote::{w1_calls, w1_figures, w2_calls, w3_calls, Remote};
use crate::{figure, Scale};

/// Runs base and Remora repetitions in turn; prints both sides' figures, then the
/// remote workloads that have no baseline.
pub async fn run(scale: Scale, selected: impl Fn(&str) -> bool) {
    let base = Baseline::start().await;
    let remote = Remote::start().await;
    base.warm_up(scale).await;
    remote.warm_up(scale).await;

    let (mut pings, mut w1) = (Vec::new(), Vec::new());
    for _ in 0..scale.reps() {
        pings.push(base.ping(w1_calls(scale)).await);
        w1.push(remote.w1(w1_calls(scale)).await);
    }
    let ping = median_run(&pings);
    figure("base.quic.p50", ping.p50_us, "us");
    figure("base.quic.p99", ping.p99_us, "us");
    w1_figures(&w1);

    let (mut base_rates, mut w2) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        base_rates.push(base.pipelined(w2_calls(scale)).await);
        w2.push(remote.pipelined(w2_calls(scale), false).await);
    }
    figure("base.quic.rate", median_of(base_rates), "calls/s");
    figure("w2.rate", median_of(w2), "calls/s");

    let (mut base_mbps, mut w3) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        base_mbps.push(base.bulk(w3_calls(scale)).await);
        w3.push(remote.payload(w3_calls(scale)).await);
    }
    figure("base.quic.payload.mbps", median_of(base_mbps), "MB/s");
    figure("w3.mbps", median_of(w3), "MB/s");

    base.stop().await;
    remote.rest(scale, &selected).await;
    remote.stop().await;
}
