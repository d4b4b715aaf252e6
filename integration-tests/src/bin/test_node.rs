//! A node process for the multi-process tests: listens on loopback with the cluster
//! credentials of a directory, serves a counter and a broker, prints
//! `READY <listen addr> <node id> <counter object> <broker object> <streamer object>
//! <chain link object> <chain probe object>` (the address
//! first, as `remora_testing::LocalCluster` reads it), and runs until its
//! standard input closes (the test dropped it) or it is killed; with
//! `--until-signal` (under a `LocalCluster`) until SIGTERM or SIGINT instead.
//!
//! With `--bind NAME` it binds the counter under NAME in a registry (the one served
//! at `--registry ADDR`, or etcd at `--etcd URL` under `--etcd-prefix P`) with a
//! lease of `--lease-ms N`, before printing READY. `--ref-lease-ms N` sets the
//! node's reference lease time, `--peer-timeout-ms N` its peer timeout (QUIC
//! takes the shorter of the two ends' timeouts, so a test that wants a long one
//! sets it on both).
//!
//! `--join GROUP` adds the counter to a registry group as well.
//!
//! With `--serve-registry` it serves a registry itself (a `RegistryServer` over a
//! `MemoryStore`, or over etcd with `--etcd URL --etcd-prefix P`), and binds
//! through it.
//!
//! ```text
//! remora-test-node --credentials DIR [--listen 127.0.0.1:0] [--serve-registry]
//!     [--registry ADDR | --etcd URL --etcd-prefix P] [--bind NAME] [--lease-ms N]
//!     [--ref-lease-ms N] [--peer-timeout-ms N] [--name NAME (default test-node)]
//! ```

use std::io::Read;
use std::time::Duration;

use remora::Node;
use remora_integration_tests::chain::{ChainProbeRef, ChainRef, Link, Probe};
use remora_integration_tests::{BrokerRef, CounterRef, Keeper, StreamerRef, Tally, Tap};
use remora_registry::{EtcdOptions, EtcdStore, MemoryStore, Registry, RegistryServer};

#[tokio::main]
async fn main() {
    let mut credentials = None;
    let mut listen = "127.0.0.1:0".to_owned();
    let mut name = "test-node".to_owned();
    let (mut registry, mut etcd, mut prefix, mut bind, mut lease_ms) =
        (None, None, None, None, 10_000u64);
    let (mut ref_lease, mut peer_timeout) = (None, None);
    let mut until_signal = false;
    let mut serve_registry = false;
    let mut join = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--credentials" => credentials = args.next(),
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--name" => name = args.next().expect("--name NAME"),
            "--registry" => registry = args.next(),
            "--etcd" => etcd = args.next(),
            "--etcd-prefix" => prefix = args.next(),
            "--bind" => bind = args.next(),
            "--until-signal" => until_signal = true,
            "--serve-registry" => serve_registry = true,
            "--join" => join = args.next(),
            "--lease-ms" => lease_ms = args.next().expect("--lease-ms N").parse().expect("ms"),
            "--ref-lease-ms" => {
                let ms: u64 = args.next().expect("--ref-lease-ms N").parse().expect("ms");
                ref_lease = Some(Duration::from_millis(ms));
            }
            "--peer-timeout-ms" => {
                let ms: u64 = args
                    .next()
                    .expect("--peer-timeout-ms N")
                    .parse()
                    .expect("ms");
                peer_timeout = Some(Duration::from_millis(ms));
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let credentials = credentials.expect("--credentials DIR");
    let mut builder = Node::builder()
        .name(name)
        .listen(listen)
        .credentials(credentials);
    if let Some(lease) = ref_lease {
        builder = builder.lease(lease);
    }
    if let Some(timeout) = peer_timeout {
        builder = builder.peer_timeout(timeout);
    }
    let node = builder.build().await.expect("node starts");
    let counter: CounterRef = node.spawn(Tally::default());
    let broker: BrokerRef = node.spawn(Keeper::default());
    let streamer: StreamerRef = node.spawn(Tap::default());
    // A link of a chain of calls, and the probe that reads its counts.
    let (link, stats) = Link::new();
    let link: ChainRef = node.spawn(link);
    let probe: ChainProbeRef = node.spawn(Probe {
        stats,
        link: link.clone(),
    });
    let builder = Registry::builder().lease_ttl(Duration::from_millis(lease_ms));
    let registry = match (registry, etcd.clone()) {
        _ if serve_registry => {
            let server = match (&etcd, &prefix) {
                (Some(url), Some(prefix)) => {
                    let options = EtcdOptions::new([url.clone()]).with_prefix(prefix.clone());
                    let store = EtcdStore::connect_with(options).await.expect("etcd");
                    RegistryServer::new(store).start(&node)
                }
                _ => RegistryServer::new(MemoryStore::new()).start(&node),
            };
            Some(server.expect("serving a registry"))
        }
        (Some(addr), _) => Some(builder.connect(&node, &addr).await.expect("registry")),
        (None, Some(url)) => {
            let options = EtcdOptions::new([url]).with_prefix(prefix.expect("--etcd-prefix P"));
            let store = EtcdStore::connect_with(options).await.expect("etcd");
            Some(builder.with_store(&node, store))
        }
        (None, None) => None,
    };
    if let Some(name) = bind {
        let registry = registry
            .as_ref()
            .expect("--bind needs --registry or --etcd");
        // rebind: a restarted node takes its name back before the old binding's
        // lease ends.
        registry.rebind(&name, &counter).await.expect("bind");
    }
    if let Some(group) = join {
        let registry = registry.as_ref().expect("--join needs a registry");
        registry.join(&group, &counter).await.expect("join");
    }
    let ready = [
        node.id().to_string(),
        node.export(&counter).expect("export").to_string(),
        node.export(&broker).expect("export").to_string(),
        node.export(&streamer).expect("export").to_string(),
        node.export(&link).expect("export").to_string(),
        node.export(&probe).expect("export").to_string(),
    ];
    if until_signal {
        // Started by a LocalCluster (stdin is closed): until SIGTERM or SIGINT,
        // handled from the moment READY is out.
        remora_testing::announce_with(&node, ready);
        remora_testing::serve_until_signal(&node).await;
        return;
    }
    println!(
        "READY {} {}",
        node.listen_addr().expect("listening"),
        ready.join(" ")
    );
    // Until the parent closes our stdin (or kills us).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .expect("stdin watcher");
    node.shutdown().await;
}
