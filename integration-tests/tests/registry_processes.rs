//! The registry across OS processes: a node process binds a name, is killed
//! (SIGKILL: no goodbye), and its name vanishes once its lease lapses, for the
//! embedded registry and for etcd. Also: a registry that is read-only for nodes
//! not on its allow list, by certificate identity.

use std::time::Duration;

use remora::{CallError, Credentials, Node};
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

/// Starts a worker process that binds `name` through the registry at `addrs`
/// (several, comma-separated: processes sharing one store) under a 1.5 s lease.
fn worker(dir: &std::path::Path, addrs: &str, name: &str) -> ChildNode {
    ChildNode::spawn_with(
        TEST_NODE,
        dir,
        &[
            "--registry",
            addrs,
            "--bind",
            name,
            "--join",
            "workers",
            "--lease-ms",
            "1500",
        ],
    )
}

/// Waits until every name in `names` resolves to a counter that answers,
/// through `registry`; returns how long that took.
async fn until_all_found(registry: &Registry, names: &[&str], within: Duration) -> Duration {
    let start = Instant::now();
    'poll: loop {
        assert!(
            start.elapsed() < within,
            "not every one of {names:?} was back within {within:?}"
        );
        for name in names {
            let found = match registry.lookup::<CounterRef>(name).await {
                Ok(found) => found,
                Err(_) => {
                    sleep(Duration::from_millis(50)).await;
                    continue 'poll;
                }
            };
            if found.add(0).await.is_err() {
                sleep(Duration::from_millis(50)).await;
                continue 'poll;
            }
        }
        return start.elapsed();
    }
}

/// A registry process (an embedded store: its names die with it) killed and
/// restarted on its address while its workers live: every worker's handle dials
/// it again, takes a new lease and binds its names again, and a client's handle
/// finds them, within a lease or so. A worker that died meanwhile stays gone, and
/// the client's watch says it was lost, then resumes with the net change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registry_gets_every_live_workers_names_back() {
    let dir = cluster();
    let mut first = ChildNode::spawn_with(TEST_NODE, dir.path(), &["--serve-registry"]);
    let addr = first.addr.clone();
    let _w1 = worker(dir.path(), &addr, "w1");
    let mut w2 = worker(dir.path(), &addr, "w2");
    let client = node_of(dir.path(), "client").await;
    let registry = Registry::connect(&client, &addr).await.unwrap();
    until_all_found(&registry, &["w1", "w2"], VANISHES_WITHIN).await;
    let mut watch = registry.watch("").await.unwrap();
    let group = registry.group::<CounterRef>("workers").await.unwrap();
    assert_eq!(group.live(), 2);

    first.kill();
    w2.kill();
    let _second = ChildNode::spawn_with(
        TEST_NODE,
        dir.path(),
        &["--serve-registry", "--listen", &addr],
    );
    let restarted = Instant::now();
    // A new client sees what the workers put back; the old client's handle finds
    // the new registry once it notices the old one is gone (its call fails).
    let newcomer = node_of(dir.path(), "newcomer").await;
    let fresh = Registry::connect(&newcomer, &addr).await.unwrap();
    until_all_found(&fresh, &["w1"], VANISHES_WITHIN).await;
    let workers_back = restarted.elapsed();
    until_all_found(&registry, &["w1"], VANISHES_WITHIN).await;
    println!(
        "after the registry restarted: every live worker's name back in {workers_back:?}, \
         found by the old client's handle in {:?}",
        restarted.elapsed()
    );
    assert!(matches!(
        fresh.lookup::<CounterRef>("w2").await,
        Err(RegistryError::NotBound { .. })
    ));
    // The group follows: w1 is back in it, w2 is not, and calls reach w1.
    let members = fresh.members::<CounterRef>("workers").await.unwrap();
    assert_eq!(
        members.len(),
        1,
        "only the live worker is back in the group"
    );
    let deadline = Instant::now() + VANISHES_WITHIN;
    while group.live() != 1 || group.call(|c| async move { c.add(0).await }).await.is_err() {
        assert!(Instant::now() < deadline, "the group never settled on w1");
        sleep(Duration::from_millis(100)).await;
    }

    // The watch: lost once, then the net change (w2 unbound), never a frozen view.
    let first_event = tokio::time::timeout(VANISHES_WITHIN, watch.next())
        .await
        .unwrap();
    assert!(
        matches!(first_event, Some(Err(RegistryError::WatchLost { .. }))),
        "{first_event:?}"
    );
    let deadline = Instant::now() + VANISHES_WITHIN;
    loop {
        let event = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("w2's unbinding reported")
            .expect("the watch goes on")
            .expect("resumed");
        if let remora_registry::Event::Unbound(entry) = event {
            if entry.name == "w2" {
                break;
            }
        }
    }
}

/// Two registry processes sharing one etcd; workers and a client know both. One
/// is killed for good: the workers' handles move to the other and keep their
/// leases alive (their names outlive several leases), and the client's handle
/// finds them through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_handles_fail_over_to_another_registry_process_on_the_same_etcd() {
    let etcd = EtcdServer::start();
    let dir = cluster();
    let prefix = format!("/test-{}/", uuid::Uuid::new_v4());
    let serve = [
        "--serve-registry",
        "--etcd",
        etcd.url(),
        "--etcd-prefix",
        &prefix,
    ];
    let mut a = ChildNode::spawn_with(TEST_NODE, dir.path(), &serve);
    let b = ChildNode::spawn_with(TEST_NODE, dir.path(), &serve);
    let both = format!("{},{}", a.addr, b.addr);
    let _workers = [
        worker(dir.path(), &both, "w1"),
        worker(dir.path(), &both, "w2"),
    ];
    let client = node_of(dir.path(), "client").await;
    let registry = Registry::connect(&client, &both).await.unwrap();
    until_all_found(&registry, &["w1", "w2"], VANISHES_WITHIN).await;

    a.kill();
    // Four leases later, the names are still there: renewed through `b`.
    sleep(Duration::from_secs(6)).await;
    let found = until_all_found(&registry, &["w1", "w2"], VANISHES_WITHIN).await;
    println!("found through the other registry {found:?} after looking");
    let listed = registry.list("").await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
}

/// A client holding `named::<CounterRef>("svc")` keeps calling while the server
/// process is killed and restarted on its port: the calls in between fail with
/// honest errors, and then its calls reach the new actor, with no lookup in the
/// test's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_proxy_follows_its_server_through_a_restart() {
    let dir = cluster();
    let home = node_of(dir.path(), "home").await;
    let _serving = RegistryServer::serve(&home, MemoryStore::new()).unwrap();
    let addr = home.listen_addr().unwrap().to_string();
    let mut server = worker(dir.path(), &addr, "svc");
    let client = node_of(dir.path(), "client").await;
    let registry = Registry::connect(&client, &addr).await.unwrap();
    let svc = registry.named::<CounterRef>("svc");
    assert_eq!(svc.call(|c| async move { c.add(2).await }).await, Ok(2));
    assert_eq!(svc.call(|c| async move { c.add(3).await }).await, Ok(5));

    let port = server.addr.clone();
    server.kill();
    // A call while the server is down: it fails, honestly (it was sent, so it
    // may have run as far as this node can tell).
    let during = tokio::spawn({
        let registry = registry.clone();
        async move {
            let svc = registry.named::<CounterRef>("svc");
            svc.call(|c| async move { c.add(100).await }).await
        }
    });
    sleep(Duration::from_millis(200)).await;
    let _restarted = ChildNode::spawn_with(
        TEST_NODE,
        dir.path(),
        &[
            "--listen",
            &port,
            "--registry",
            &addr,
            "--bind",
            "svc",
            "--lease-ms",
            "1500",
        ],
    );
    match during.await.unwrap() {
        Err(RegistryError::Call(err)) => assert!(
            matches!(
                err,
                CallError::NodeDown { .. } | CallError::NodeRestarted { .. }
            ) && err.may_have_executed(),
            "{err:?}"
        ),
        other => panic!("{other:?}"),
    }
    // The named proxy's calls reach the new actor (a fresh counter) once one
    // has found the old one gone.
    let deadline = Instant::now() + VANISHES_WITHIN;
    let mut failed = 0;
    let total = loop {
        match svc.call(|c| async move { c.add(1).await }).await {
            Ok(total) => break total,
            Err(RegistryError::Call(err)) => {
                assert!(
                    matches!(
                        err,
                        CallError::NodeDown { .. }
                            | CallError::NodeRestarted { .. }
                            | CallError::ConnectFailed { .. }
                    ),
                    "{err:?}"
                );
                failed += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "never reached the new server");
        sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        total, 1,
        "the new actor, not the old one ({failed} calls failed first)"
    );
    assert!(failed <= 1, "{failed} calls failed after the restart");
}

/// A group member whose process stops answering (SIGSTOP: its connection is up
/// but silent, its node not yet known down) costs the group's callers one
/// timeout, not one in every turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_whose_process_stops_answering_costs_callers_one_timeout() {
    let dir = cluster();
    let home = node_of(dir.path(), "home").await;
    let _serving = RegistryServer::serve(&home, MemoryStore::new()).unwrap();
    let addr = home.listen_addr().unwrap().to_string();
    let stuck = worker(dir.path(), &addr, "s1");
    let _live = worker(dir.path(), &addr, "s2");
    let client = node_of(dir.path(), "client").await;
    let registry = Registry::connect(&client, &addr).await.unwrap();
    let group = registry.group::<CounterRef>("workers").await.unwrap();
    assert_eq!(group.live(), 2);
    // Both members answer (and are connected).
    for _ in 0..4 {
        group.call(|c| async move { c.add(1).await }).await.unwrap();
    }
    let pid = stuck.child.id().to_string();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    assert!(stop.unwrap().success());
    let mut timeouts = 0;
    for _ in 0..10 {
        let call = group
            .call(|c| async move { c.with_timeout(Duration::from_millis(300)).add(1).await })
            .await;
        match call {
            Ok(_) => {}
            Err(RegistryError::Call(CallError::Timeout { .. })) => timeouts += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert_eq!(
        timeouts, 1,
        "callers waited on the stopped member {timeouts} times"
    );
}
