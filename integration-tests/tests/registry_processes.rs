//! The registry across OS processes: a node process binds a name, is killed
//! (SIGKILL: no goodbye), and its name vanishes once its lease lapses, for the
//! embedded registry and for etcd. Also: a registry that is read-only for nodes
//! not on its allow list, by certificate identity.

use std::time::Duration;

use remora::{Credentials, Node};
use remora_integration_tests::etcd::EtcdServer;
use remora_integration_tests::*;
use remora_registry::{
    EtcdOptions, EtcdStore, MemoryStore, Registry, RegistryError, RegistryServer,
};
use tokio::time::{sleep, Instant};

const TEST_NODE: &str = env!("CARGO_BIN_EXE_remora-test-node");

/// Bound on how long a dead node's name may survive it (lease 1.5 s, plus the
/// backend's expiry granularity; etcd's lease TTLs are whole seconds).
const VANISHES_WITHIN: Duration = Duration::from_secs(15);

fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    Credentials::create_cluster(dir.path()).unwrap();
    dir
}

async fn node_of(dir: &std::path::Path, name: &str) -> Node {
    Node::builder()
        .name(name)
        .listen("127.0.0.1:0")
        .credentials(dir)
        .build()
        .await
        .unwrap()
}

/// Kills `child` and waits until `registry` no longer knows `name`.
async fn kill_and_expect_expiry(mut child: ChildNode, registry: &Registry, name: &str) {
    let found: CounterRef = registry.lookup(name).await.unwrap();
    assert_eq!(found.add(1).await, Ok(1), "bound to the child's counter");
    child.kill();
    let killed = Instant::now();
    loop {
        match registry.lookup::<CounterRef>(name).await {
            Err(RegistryError::NotBound { .. }) => break,
            Ok(_) => {}
            Err(other) => panic!("{other:?}"),
        }
        assert!(
            killed.elapsed() < VANISHES_WITHIN,
            "{name} outlived its killed node by {VANISHES_WITHIN:?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_names_vanish_from_the_embedded_registry() {
    let dir = cluster();
    let home = node_of(dir.path(), "home").await;
    let registry = RegistryServer::serve(&home, MemoryStore::new()).unwrap();
    let addr = home.listen_addr().unwrap().to_string();
    let child = ChildNode::spawn_with(
        TEST_NODE,
        dir.path(),
        &[
            "--registry",
            &addr,
            "--bind",
            "doomed",
            "--lease-ms",
            "1500",
        ],
    );
    kill_and_expect_expiry(child, &registry, "doomed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(etcd),
    ignore = "etcd is not installed (apt-get install etcd-server)"
)]
async fn a_killed_nodes_names_vanish_from_etcd() {
    let etcd = EtcdServer::start();
    let dir = cluster();
    let prefix = format!("/test-{}/", uuid::Uuid::new_v4());
    let child = ChildNode::spawn_with(
        TEST_NODE,
        dir.path(),
        &[
            "--etcd",
            etcd.url(),
            "--etcd-prefix",
            &prefix,
            "--bind",
            "doomed",
            "--lease-ms",
            "1500",
        ],
    );
    let home = node_of(dir.path(), "home").await;
    let store = EtcdStore::connect_with(EtcdOptions::new([etcd.url()]).with_prefix(prefix))
        .await
        .unwrap();
    let registry = Registry::with_store(&home, store);
    kill_and_expect_expiry(child, &registry, "doomed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_nodes_may_write_to_a_guarded_registry() {
    let dir = cluster();
    // Identities are certificate names: each node gets its own certificate.
    let issue = |name: &str| {
        let out = dir.path().join(name);
        Credentials::issue_named_node(dir.path(), &out, name).unwrap();
        out
    };
    let (writer_dir, reader_dir) = (issue("writer"), issue("reader"));
    let home = node_of(dir.path(), "home").await;
    let local = RegistryServer::new(MemoryStore::new())
        .allow_writes_from(["writer"])
        .start(&home)
        .unwrap();
    let addr = home.listen_addr().unwrap().to_string();
    let connect = |dir: std::path::PathBuf| {
        let addr = addr.clone();
        async move {
            let node = Node::builder()
                .credentials(dir)
                .listen("127.0.0.1:0")
                .build()
                .await
                .unwrap();
            let registry = Registry::connect(&node, &addr).await.unwrap();
            (node, registry)
        }
    };
    let (writer, writes) = connect(writer_dir).await;
    let (reader, reads) = connect(reader_dir).await;

    let counter: CounterRef = writer.spawn(Tally::default());
    writes.bind("open", &counter).await.unwrap();
    let theirs: CounterRef = reader.spawn(Tally::default());
    match reads.bind("sneaky", &theirs).await {
        Err(RegistryError::Unauthorized { caller, operation }) => {
            assert_eq!(caller, "reader");
            assert!(operation.contains("bind"), "{operation}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reads.unbind("open").await,
        Err(RegistryError::Unauthorized { .. })
    ));
    // Reading is open to every node of the cluster; the serving node may write.
    let found: CounterRef = reads.lookup("open").await.unwrap();
    assert_eq!(found.add(7).await, Ok(7));
    local.bind("home's", &counter).await.unwrap();
    assert_eq!(reads.list("").await.unwrap().len(), 2);
}
