//! `i1`, `i2`: BENCH.md's w1 and w2 between two nodes of this process, over the
//! in-process transport (channels instead of QUIC, but every call encoded, framed
//! and decoded as on the network).

use std::time::Instant;

use remora::Node;

use crate::drive::{median_run, outstanding, Latencies};
use crate::echo::{EchoActor, EchoRef};
use crate::{figure, median, rate, Scale};

/// Two connected nodes and a reference, held by the client node, to an echo actor
/// on the server node.
struct Pair {
    server: Node,
    client: Node,
    _wire: remora::remote::inproc::Wire,
    remote: EchoRef,
}

impl Pair {
    async fn new() -> Pair {
        let server = Node::builder().build().await.expect("server node builds");
        let client = Node::builder().build().await.expect("client node builds");
        let wire = remora::remote::inproc::connect(&client, &server)
            .await
            .expect("in-process connection");
        let echo: EchoRef = server.spawn(EchoActor);
        let object = server.export(&echo).expect("echo exported");
        let remote: EchoRef = client
            .reference(server.id(), object)
            .expect("remote reference");
        Pair {
            server,
            client,
            _wire: wire,
            remote,
        }
    }

    async fn shutdown(self) {
        self.client.shutdown().await;
        self.server.shutdown().await;
    }
}

/// `i1.p50`, `i1.p99` (µs), `i1.rate` (calls/s): one call outstanding, 20 000
/// calls after 2 000 warm-up.
pub async fn i1(scale: Scale) {
    let warmup = scale.count(2_000, 1_000);
    let n = scale.count(20_000, 10_000);
    let pair = Pair::new().await;
    let remote = &pair.remote;
    for i in 0..warmup {
        assert_eq!(remote.echo(i).await.expect("echo answered"), i);
    }
    let mut runs = Vec::new();
    for _ in 0..scale.reps() {
        let mut lat = Latencies::new(n);
        for i in 0..n {
            let started = Instant::now();
            let v = remote.echo(i).await.expect("echo answered");
            lat.push(started);
            assert_eq!(v, i);
        }
        runs.push(lat.finish());
    }
    let run = median_run(&runs);
    figure("i1.p50", run.p50_us, "us");
    figure("i1.p99", run.p99_us, "us");
    figure("i1.rate", run.rate, "calls/s");
    pair.shutdown().await;
}

/// `i2.rate` (calls/s): 200 000 calls, 64 outstanding from the client node.
pub async fn i2(scale: Scale) {
    const WIDTH: u64 = 64;
    let n = scale.count(200_000, 50_000);
    let pair = Pair::new().await;
    let run = |n: u64| {
        outstanding(n, WIDTH, |calls| {
            let remote = pair.remote.clone();
            async move {
                while let Some(i) = calls.next() {
                    assert_eq!(remote.echo(i).await.expect("echo answered"), i);
                }
            }
        })
    };
    run(WIDTH * 100).await;
    let mut rates = Vec::new();
    for _ in 0..scale.reps() {
        rates.push(rate(n, run(n).await));
    }
    figure("i2.rate", median(&mut rates), "calls/s");
    pair.shutdown().await;
}
