//! The remote workloads and the raw-QUIC baselines they are held against
//! (BENCH.md's ratios `w1.p50 / base.quic.p50`, `w2.rate / base.quic.rate`,
//! `w2.rate / base.quic.framed.rate`, `w3.mbps / base.quic.payload.mbps`,
//! `p1.rate / base.quic.uni.rate`, `p2.mbps / base.quic.uni.mbps`), run in
//! alternation: a baseline repetition, then the workload's, and so on, as
//! BENCH.md's peer table was measured. The two ratios of w2, and those of p1
//! and p2, are printed too.
//!
//! On a shared 2-vCPU machine the speed of everything drifts by tens of percent
//! over minutes; run one after the other, a baseline and its workload would be
//! compared across such drift. Alternated, each pair is seconds apart, and the
//! medians compare like with like.

use crate::drive::{median_of, median_run};
use crate::quic_base::{framed_echoes, Baseline};
use crate::remote::{
    p1_items, p2_items, w1_calls, w1_figures, w2_calls, w2_figures, w3_calls, Remote,
};
use crate::{figure, Scale};

/// What to alternate: the call workloads (`w1`–`w3`) with the call baselines,
/// the pipe workloads (`p1`, `p2`) with the unidirectional-stream baselines.
#[derive(Clone, Copy, Debug)]
pub struct Pairs {
    pub calls: bool,
    pub pipes: bool,
}

/// Runs base and Remora repetitions in turn; prints both sides' figures, then the
/// selected remote workloads that are not paired.
pub async fn run(scale: Scale, pairs: Pairs, selected: impl Fn(&str) -> bool) {
    let base = Baseline::start().await;
    let remote = Remote::start().await;
    base.warm_up(scale).await;
    remote.warm_up(scale).await;

    if pairs.calls {
        calls(&base, &remote, scale, &selected).await;
    } else {
        remote.calls(scale, &selected).await;
    }
    if pairs.pipes {
        pipes(&base, &remote, scale, &selected).await;
    } else {
        remote.pipes(scale, &selected).await;
    }

    base.stop().await;
    remote.rest(scale, &selected).await;
    remote.stop().await;
}

/// The call baselines, each repetition followed by one of its workload's (when
/// selected).
async fn calls(base: &Baseline, remote: &Remote, scale: Scale, selected: &impl Fn(&str) -> bool) {
    let (mut pings, mut w1) = (Vec::new(), Vec::new());
    for _ in 0..scale.reps() {
        pings.push(base.ping(w1_calls(scale)).await);
        if selected("w1") {
            w1.push(remote.w1(w1_calls(scale)).await);
        }
    }
    let ping = median_run(&pings);
    figure("base.quic.p50", ping.p50_us, "us");
    figure("base.quic.p99", ping.p99_us, "us");
    if !w1.is_empty() {
        w1_figures(&w1);
    }

    let (mut base_rates, mut framed, mut w2) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        base_rates.push(base.pipelined(w2_calls(scale)).await);
        framed.push(base.framed(framed_echoes(scale)).await);
        if selected("w2") {
            w2.push(remote.w2(w2_calls(scale)).await);
        }
    }
    let (base_rate, framed) = (median_of(base_rates), median_of(framed));
    figure("base.quic.rate", base_rate, "calls/s");
    figure("base.quic.framed.rate", framed, "echoes/s");
    if !w2.is_empty() {
        let w2 = w2_figures(&w2);
        figure("w2.rate/base.quic.rate", w2 / base_rate, "ratio");
        figure("w2.rate/base.quic.framed.rate", w2 / framed, "ratio");
    }

    let (mut base_mbps, mut w3) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        base_mbps.push(base.bulk(w3_calls(scale)).await);
        if selected("w3") {
            w3.push(remote.payload(w3_calls(scale)).await);
        }
    }
    figure("base.quic.payload.mbps", median_of(base_mbps), "MB/s");
    if !w3.is_empty() {
        figure("w3.mbps", median_of(w3), "MB/s");
    }
}

/// The unidirectional-stream baselines, each repetition followed by one of its
/// pipe workload's (when selected).
async fn pipes(base: &Baseline, remote: &Remote, scale: Scale, selected: &impl Fn(&str) -> bool) {
    let (mut base_rates, mut batched, mut p1) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        base_rates.push(base.uni_rate(p1_items(scale)).await);
        batched.push(base.uni_batched_rate(p1_items(scale)).await);
        if selected("p1") {
            p1.push(remote.p1(p1_items(scale)).await);
        }
    }
    let base_rate = median_of(base_rates);
    figure("base.quic.uni.rate", base_rate, "items/s");
    figure("base.quic.uni.batched.rate", median_of(batched), "items/s");
    if !p1.is_empty() {
        let p1 = median_of(p1);
        figure("p1.rate", p1, "items/s");
        figure("p1.rate/base.quic.uni.rate", p1 / base_rate, "ratio");
    }

    let (mut base_mbps, mut p2) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        base_mbps.push(base.uni_mbps(p2_items(scale)).await);
        if selected("p2") {
            p2.push(remote.p2(p2_items(scale)).await);
        }
    }
    let base_mbps = median_of(base_mbps);
    figure("base.quic.uni.mbps", base_mbps, "MB/s");
    if !p2.is_empty() {
        let p2 = median_of(p2);
        figure("p2.mbps", p2, "MB/s");
        figure("p2.mbps/base.quic.uni.mbps", p2 / base_mbps, "ratio");
    }
}
