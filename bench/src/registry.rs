//! `r1`, `r2`: registry lookups per second, 64 outstanding from one client node:
//! against the embedded registry of the remote workloads' server process (QUIC),
//! and against a real etcd (`EtcdStore` used directly), started here when an
//! `etcd` binary is installed (otherwise `r2` is skipped, with a note on stderr).

use remora::Node;
use remora_integration_tests::etcd::EtcdServer;
use remora_registry::{EtcdOptions, EtcdStore, Registry};

use crate::drive::outstanding;
use crate::echo::{EchoActor, EchoRef};
use crate::{figure, median, rate, Scale};

const WIDTH: u64 = 64;

/// Lookups of one name with 64 outstanding; the median rate of a few runs.
async fn lookups(registry: &Registry, name: &str, n: u64, reps: usize) -> f64 {
    let go = |n: u64| {
        outstanding(n, WIDTH, |calls| {
            let registry = registry.clone();
            let name = name.to_owned();
            async move {
                while calls.next().is_some() {
                    let found: EchoRef = registry.lookup(&name).await.expect("lookup");
                    drop(found);
                }
            }
        })
    };
    go(WIDTH * 10).await;
    let mut rates = Vec::new();
    for _ in 0..reps {
        rates.push(rate(n, go(n).await));
    }
    median(&mut rates)
}

/// `r1`: the embedded registry over QUIC (the remote workloads' server process).
pub async fn r1(registry: &Registry, scale: Scale) {
    let n = scale.count(100_000, 10_000);
    let rate = lookups(registry, "echo", n, scale.reps().min(3)).await;
    figure("r1.rate", rate, "lookups/s");
}

/// `r2`: etcd, through `EtcdStore` on the client node.
pub async fn r2(scale: Scale) {
    let Some(etcd) = EtcdServer::start_if_installed() else {
        eprintln!("r2: skipped (no etcd)");
        return;
    };
    let node = Node::builder().build().await.expect("node");
    let store = EtcdStore::connect_with(EtcdOptions::new([etcd.url()]))
        .await
        .expect("etcd store");
    let registry = Registry::with_store(&node, store);
    let echo: EchoRef = node.spawn(EchoActor);
    registry.bind("echo", &echo).await.expect("bind");
    let n = scale.count(20_000, 3_000);
    let rate = lookups(&registry, "echo", n, scale.reps().min(3)).await;
    figure("r2.rate", rate, "lookups/s");
    node.shutdown().await;
}
