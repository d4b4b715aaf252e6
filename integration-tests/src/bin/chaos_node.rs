//! A node process of the chaos suite (`remora-chaos` starts them): serves a
//! `Journal` actor that journals every call it runs to `--journal PATH`, prints
//! `READY <listen addr> <node id> <incarnation> <journal object>`, and runs until
//! it is killed or its standard input closes.
//!
//! `registry` mode also serves the cluster's registry (a `MemoryStore`, leases
//! capped at `--max-lease-ms`); `worker` mode binds its journal in the registry
//! at `--registry ADDR` under a lease of `--lease-ms`: `slot/<K>` (rebind: the
//! slot's current process) and `inc/<K>/<incarnation>` (bind: this process's
//! own, which only its lease's expiry removes).
//!
//! ```text
//! remora-chaos-node registry|worker --credentials DIR --journal PATH
//!     [--listen 127.0.0.1:0] [--registry ADDR --slot K --lease-ms N]
//!     [--max-lease-ms N] [--peer-timeout-ms N] [--ref-lease-ms N] [--call-timeout-ms N]
//! ```

use std::io::Read;
use std::time::Duration;

use remora::Node;
use remora_integration_tests::chaos::{JournalActor, JournalRef};
use remora_registry::{MemoryStore, Registry, RegistryServer};

struct Args {
    mode: String,
    credentials: String,
    journal: String,
    listen: String,
    registry: Option<String>,
    slot: u32,
    lease: Duration,
    max_lease: Duration,
    peer_timeout: Duration,
    ref_lease: Duration,
    call_timeout: Duration,
}

fn millis(value: Option<String>, flag: &str) -> Duration {
    let ms: u64 = value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{flag} N (milliseconds)"));
    Duration::from_millis(ms)
}

fn parse() -> Args {
    let mut argv = std::env::args().skip(1);
    let mut args = Args {
        mode: argv.next().expect("registry | worker"),
        credentials: String::new(),
        journal: String::new(),
        listen: "127.0.0.1:0".into(),
        registry: None,
        slot: 0,
        lease: Duration::from_secs(2),
        max_lease: Duration::from_secs(2),
        peer_timeout: Duration::from_secs(2),
        ref_lease: Duration::from_secs(2),
        call_timeout: Duration::from_secs(1),
    };
    while let Some(flag) = argv.next() {
        let value = argv.next();
        match flag.as_str() {
            "--credentials" => args.credentials = value.expect("--credentials DIR"),
            "--journal" => args.journal = value.expect("--journal PATH"),
            "--listen" => args.listen = value.expect("--listen ADDR"),
            "--registry" => args.registry = value,
            "--slot" => args.slot = value.and_then(|v| v.parse().ok()).expect("--slot K"),
            "--lease-ms" => args.lease = millis(value, &flag),
            "--max-lease-ms" => args.max_lease = millis(value, &flag),
            "--peer-timeout-ms" => args.peer_timeout = millis(value, &flag),
            "--ref-lease-ms" => args.ref_lease = millis(value, &flag),
            "--call-timeout-ms" => args.call_timeout = millis(value, &flag),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse();
    let node = Node::builder()
        .name(format!("chaos-{}", args.mode))
        .listen(args.listen.clone())
        .credentials(args.credentials.clone())
        .peer_timeout(args.peer_timeout)
        .lease(args.ref_lease)
        .default_timeout(args.call_timeout)
        .build()
        .await
        .expect("node starts");
    let actor = JournalActor::open(node.clone(), args.journal.as_ref(), args.call_timeout)
        .expect("journal opens");
    let journal: JournalRef = node.spawn(actor);
    // Held to the end: the registry handle renews this node's lease.
    let _registry = match args.mode.as_str() {
        "registry" => RegistryServer::new(MemoryStore::new())
            .max_lease(args.max_lease)
            .start(&node)
            .expect("registry serves"),
        "worker" => {
            let addr = args.registry.as_deref().expect("--registry ADDR");
            let registry = Registry::builder()
                .lease_ttl(args.lease)
                .connect(&node, addr)
                .await
                .expect("registry");
            let own = format!("inc/{}/{}", args.slot, node.incarnation());
            registry.bind(&own, &journal).await.expect("bind");
            let slot = format!("slot/{}", args.slot);
            registry.rebind(&slot, &journal).await.expect("rebind");
            registry
        }
        other => panic!("unknown mode {other}"),
    };
    println!(
        "READY {} {} {} {}",
        node.listen_addr().expect("listening"),
        node.id(),
        node.incarnation(),
        node.export(&journal).expect("export"),
    );
    // Until the parent closes our stdin (or kills us: the usual end here).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await;
    node.shutdown().await;
}
