//! `i1`, `i2`: BENCH.md's w1 and w2 between two nodes of this process, over the
//! in-process transport (channels instead of QUIC), each measured two ways:
//!
//! - `i1`, `i2` (values moved): nodes joined by `inproc::connect`, as an
//!   application joins them. An `echo(u64)` holds no references, so its argument
//!   and reply *move* to the other node as they are: nothing is encoded. These
//!   figures are the transport's own cost, not the network's encoding.
//! - `i1.enc`, `i2.enc` (encoded as on the network): nodes joined by
//!   `inproc::connect_serializing`: every call and reply is encoded, framed and
//!   decoded exactly as between processes. Set beside `i1`/`i2`, they show what
//!   the encoding costs; set beside `w1`/`w2`, what QUIC, TLS and the second
//!   process cost on top.
//!
//! The two are measured in alternating repetitions (a moved one, then an
//! encoded one), so that both see the same drift of a shared machine.

use std::time::Instant;

use remora::Node;

use crate::drive::{median_run, outstanding, Latencies, LatencyRun};
use crate::echo::{EchoActor, EchoRef};
use crate::{alloc, figure, median, rate, Scale};

/// How the two nodes of a [`Pair`] exchange calls.
#[derive(Clone, Copy, Debug)]
enum Exchange {
    /// `inproc::connect`: plain values move unencoded.
    Moved,
    /// `inproc::connect_serializing`: everything encoded as on the network.
    Encoded,
}

impl Exchange {
    /// The figure prefix of `workload` measured this way: `i1`, `i1.enc`.
    fn prefix(self, workload: &str) -> String {
        match self {
            Exchange::Moved => workload.to_owned(),
            Exchange::Encoded => format!("{workload}.enc"),
        }
    }
}

/// Both ways, in the order their figures are printed.
const EXCHANGES: [Exchange; 2] = [Exchange::Moved, Exchange::Encoded];

/// Two connected nodes and a reference, held by the client node, to an echo actor
/// on the server node.
struct Pair {
    server: Node,
    client: Node,
    _wire: remora::remote::inproc::Wire,
    remote: EchoRef,
}

impl Pair {
    async fn new(exchange: Exchange) -> Pair {
        let server = Node::builder().build().await.expect("server node builds");
        let client = Node::builder().build().await.expect("client node builds");
        let wire = match exchange {
            Exchange::Moved => remora::remote::inproc::connect(&client, &server).await,
            Exchange::Encoded => {
                remora::remote::inproc::connect_serializing(&client, &server).await
            }
        }
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

    /// One pair per exchange, in [`EXCHANGES`] order.
    async fn both() -> Vec<Pair> {
        let mut pairs = Vec::new();
        for exchange in EXCHANGES {
            pairs.push(Pair::new(exchange).await);
        }
        pairs
    }

    async fn shutdown(self) {
        self.client.shutdown().await;
        self.server.shutdown().await;
    }

    /// `n` calls, one outstanding, timed call by call.
    async fn sequential(&self, n: u64) -> LatencyRun {
        let mut lat = Latencies::new(n);
        for i in 0..n {
            let started = Instant::now();
            let v = self.remote.echo(i).await.expect("echo answered");
            lat.push(started);
            assert_eq!(v, i);
        }
        lat.finish()
    }

    /// `n` calls with `width` outstanding; calls/s.
    async fn pipelined(&self, n: u64, width: u64) -> f64 {
        let took = outstanding(n, width, |calls| {
            let remote = self.remote.clone();
            async move {
                while let Some(i) = calls.next() {
                    assert_eq!(remote.echo(i).await.expect("echo answered"), i);
                }
            }
        })
        .await;
        rate(n, took)
    }
}

/// `i1.p50`, `i1.p99` (µs), `i1.rate` (calls/s), and the same for `i1.enc`: one
/// call outstanding, 20 000 calls after 2 000 warm-up.
pub async fn i1(scale: Scale) {
    let warmup = scale.count(2_000, 1_000);
    let n = scale.count(20_000, 10_000);
    let pairs = Pair::both().await;
    for pair in &pairs {
        pair.sequential(warmup).await;
    }
    let mut runs: Vec<Vec<LatencyRun>> = vec![Vec::new(); pairs.len()];
    for _ in 0..scale.reps() {
        for (pair, runs) in pairs.iter().zip(&mut runs) {
            runs.push(pair.sequential(n).await);
        }
    }
    for (exchange, runs) in EXCHANGES.iter().zip(&runs) {
        let name = exchange.prefix("i1");
        let run = median_run(runs);
        figure(&format!("{name}.p50"), run.p50_us, "us");
        figure(&format!("{name}.p99"), run.p99_us, "us");
        figure(&format!("{name}.rate"), run.rate, "calls/s");
    }
    for pair in pairs {
        pair.shutdown().await;
    }
}

/// `i2.rate` and `i2.enc.rate` (calls/s): 200 000 calls, 64 outstanding from the
/// client node; `i2.allocs_per_call` and `i2.enc.allocs_per_call`: the heap
/// allocations one costs, both nodes' (the whole process's), over the same calls.
pub async fn i2(scale: Scale) {
    const WIDTH: u64 = 64;
    let n = scale.count(200_000, 50_000);
    let pairs = Pair::both().await;
    for pair in &pairs {
        pair.pipelined(WIDTH * 100, WIDTH).await;
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
    let mut allocs: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
    for _ in 0..scale.reps() {
        for ((pair, rates), allocs) in pairs.iter().zip(&mut rates).zip(&mut allocs) {
            let (rate, made) = alloc::counting(pair.pipelined(n, WIDTH)).await;
            rates.push(rate);
            allocs.push(made as f64 / n as f64);
        }
    }
    for ((exchange, rates), allocs) in EXCHANGES.iter().zip(&mut rates).zip(&mut allocs) {
        let name = exchange.prefix("i2");
        figure(&format!("{name}.rate"), median(rates), "calls/s");
        figure(&format!("{name}.allocs_per_call"), median(allocs), "allocs");
    }
    for pair in pairs {
        pair.shutdown().await;
    }
}
