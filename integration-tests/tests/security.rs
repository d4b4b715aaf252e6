//! A malicious member of the cluster: `remora-hostile`, a process of its own with a
//! valid certificate, sends crafted frames over QUIC to a victim node in this
//! process, beside an honest member. Each attack is refused (the attacker reads
//! the refusal, the victim logs it and counts it), the victim's tables stay
//! bounded, and the honest member keeps being served. See SECURITY.md.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remora::{Node, NodeId, StopReason};
use remora_integration_tests::spy::Spy;
use remora_integration_tests::*;
use remora_registry::{MemoryStore, RegistryServer, REGISTRY_OBJECT};
use tokio::time::timeout;

/// The victim's log, as the lines `tracing` wrote.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    /// Captures the log of everything this thread runs (the tests run on a
    /// current-thread runtime: the nodes' tasks too) until the guard drops.
    fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (log.clone(), tracing::subscriber::set_default(subscriber))
    }

    fn contains(&self, text: &str) -> bool {
        String::from_utf8_lossy(&self.0.lock().unwrap()).contains(text)
    }
}

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A node of the cluster in `dir`, named `name`, listening on loopback.
async fn member(dir: &Path, name: &str, builder: remora::NodeBuilder) -> Node {
    builder
        .name(name)
        .credentials(dir)
        .listen("127.0.0.1:0")
        .peer_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("node builds")
}

/// A cluster root in a fresh directory.
fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    remora::Credentials::create_cluster(dir.path()).unwrap();
    dir
}

/// Runs `remora-hostile` against `victim` with `attack`; returns what it printed.
async fn attack(dir: &Path, victim: &Node, name: &str, attack: &[String]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_remora-hostile"));
    command
        .arg("--ca")
        .arg(dir)
        .arg("--addr")
        .arg(victim.listen_addr().unwrap().to_string())
        .arg("--name")
        .arg(name)
        .args(attack);
    // The nodes run on this thread: wait for the attacker beside them.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("remora-hostile runs");
    assert!(
        output.status.success(),
        "remora-hostile failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn args(words: &[&dyn std::fmt::Display]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// A counter on `owner`, reached from `holder` over their connection.
async fn counter_on(owner: &Node, holder: &Node) -> (CounterRef, CounterRef) {
    let local: CounterRef = owner.spawn(Tally::default());
    holder
        .connect(owner.listen_addr().unwrap().to_string())
        .await
        .unwrap();
    let remote: CounterRef = holder.resolve(&owner.wire_ref(&local)).unwrap();
    (local, remote)
}

#[tokio::test]
async fn an_impostor_is_refused_at_the_handshake_before_and_after_the_real_node() {
    let (log, _guard) = Log::capture();
    let dir = cluster();
    let victim = member(dir.path(), "victim", Node::builder()).await;
    let honest = member(dir.path(), "honest", Node::builder()).await;
    let claim = args(&[&"impersonate", &honest.id(), &honest.incarnation()]);

    // Before the honest node has ever connected: the claim is refused all the same.
    let said = attack(dir.path(), &victim, "mallory", &claim).await;
    assert!(
        said.starts_with("REFUSED") && said.contains("not the one this certificate proves"),
        "{said}"
    );
    assert_eq!(victim.stats().impostors_refused, 1);
    assert!(log.contains("refused a peer claiming a node id its certificate does not prove"));

    // The honest node connects, and the victim's calls to its objects go to it.
    let (on_honest, from_victim) = counter_on(&honest, &victim).await;
    assert_eq!(from_victim.add(5).await, Ok(5));
    // Again, now that the victim knows it: still refused, and the victim's calls
    // still reach the honest node.
    let said = attack(dir.path(), &victim, "mallory", &claim).await;
    assert!(said.starts_with("REFUSED"), "{said}");
    assert_eq!(victim.stats().impostors_refused, 2);
    assert_eq!(from_victim.add(1).await, Ok(6));
    assert_eq!(on_honest.add(0).await, Ok(6), "the honest node ran both");
    // A member claiming its own id with a made-up incarnation is refused too.
    let said = attack(
        dir.path(),
        &victim,
        "mallory",
        &args(&[&"impersonate", &NodeId::random(), &1]),
    )
    .await;
    assert!(said.starts_with("REFUSED"), "{said}");
}

#[tokio::test]
async fn a_member_cannot_stop_or_fail_actors_it_did_not_spawn_nor_the_registry() {
    let (log, _guard) = Log::capture();
    let dir = cluster();
    let victim = member(
        dir.path(),
        "victim",
        Node::builder().allow_control_from(["operator"]),
    )
    .await;
    let registry = RegistryServer::serve(&victim, MemoryStore::new()).unwrap();
    let honest = member(dir.path(), "honest", Node::builder()).await;
    let (local, remote) = counter_on(&victim, &honest).await;
    let object = victim.wire_ref(&local).object;
    registry.bind("counter", &local).await.unwrap();

    for how in ["stop", "link"] {
        let said = attack(dir.path(), &victim, "mallory", &args(&[&how, &object])).await;
        assert!(
            said.starts_with("REFUSED unauthorized") && said.contains("`mallory` is neither"),
            "{how}: {said}"
        );
    }
    let said = attack(
        dir.path(),
        &victim,
        "mallory",
        &args(&[&"stop", &REGISTRY_OBJECT]),
    )
    .await;
    assert!(
        said.starts_with("REFUSED unauthorized") && said.contains("service of its node"),
        "{said}"
    );
    // Even a name on the allow list cannot stop the registry.
    let said = attack(
        dir.path(),
        &victim,
        "operator",
        &args(&[&"stop", &REGISTRY_OBJECT]),
    )
    .await;
    assert!(said.starts_with("REFUSED"), "{said}");
    assert_eq!(victim.stats().exits_refused, 4);
    assert!(log.contains("refused to stop an actor for a peer"));

    // The honest member is served: the counter runs, the registry answers.
    assert_eq!(remote.add(3).await, Ok(3));
    let from_honest =
        remora_registry::Registry::connect(&honest, &victim.listen_addr().unwrap().to_string())
            .await
            .unwrap();
    let found: CounterRef = from_honest.lookup("counter").await.unwrap();
    assert_eq!(found.add(1).await, Ok(4));

    // The node the victim allows may stop it.
    let stopped = victim.monitor(&local);
    let said = attack(dir.path(), &victim, "operator", &args(&[&"stop", &object])).await;
    assert_eq!(said, "SILENT");
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Normal));
}

#[tokio::test]
async fn the_spawner_may_stop_what_it_spawned_and_no_other_member_may() {
    let dir = cluster();
    let victim = member(dir.path(), "victim", Node::builder()).await;
    victim
        .register_factory_fn(
            "counter",
            |node: &Node, start: u64| -> Result<CounterRef, String> {
                Ok(node.spawn(Tally {
                    total: start,
                    seen: Vec::new(),
                }))
            },
        )
        .unwrap();
    let honest = member(dir.path(), "honest", Node::builder()).await;
    honest
        .connect(victim.listen_addr().unwrap().to_string())
        .await
        .unwrap();
    let spawned: CounterRef = honest
        .spawn_on(victim.id(), "counter", 10u64)
        .await
        .unwrap();
    let object = honest.wire_ref(&spawned).object;
    let said = attack(dir.path(), &victim, "mallory", &args(&[&"stop", &object])).await;
    assert!(said.starts_with("REFUSED"), "{said}");
    assert_eq!(spawned.add(1).await, Ok(11));
    let stopped = honest.monitor(&spawned);
    honest.stop(&spawned);
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Normal));
    assert_eq!(victim.stats().exits_refused, 1);
}

#[tokio::test]
async fn a_members_monitors_are_bounded_and_end_with_its_connection() {
    let (log, _guard) = Log::capture();
    let dir = cluster();
    let victim = member(dir.path(), "victim", Node::builder()).await;
    let honest = member(dir.path(), "honest", Node::builder()).await;
    let (local, remote) = counter_on(&victim, &honest).await;
    let object = victim.wire_ref(&local).object;
    // 70 000 monitors reusing one id (each replaces the last), then 70 000 under
    // fresh ids: 65 536 at most are kept, the rest refused.
    let said = attack(
        dir.path(),
        &victim,
        "mallory",
        &args(&[&"monitor", &object, &70_000]),
    )
    .await;
    let refused = 1 + 70_000 - 65_536;
    assert_eq!(said, format!("REFUSED {refused} DOWN 0"));
    assert_eq!(victim.stats().monitors_refused, refused);
    assert!(log.contains("refused a monitor"));
    // The attacker is gone: its monitors go with its connection.
    until("the attacker's monitors are dropped", || {
        victim.stats().monitored == 0
    })
    .await;
    // The honest member's monitor still works, and the actor still answers.
    assert_eq!(remote.add(2).await, Ok(2));
    // A monitor is set up when first polled.
    let mut stopped = Box::pin(honest.monitor(&remote));
    assert!(poll_once(&mut stopped).await.is_pending());
    until("the honest monitor is set up", || {
        victim.stats().monitored == 1
    })
    .await;
    victim.stop(&local);
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Normal));
}

#[tokio::test]
async fn made_up_lease_renewals_are_ignored_and_counted() {
    let (log, _guard) = Log::capture();
    let dir = cluster();
    let victim = member(dir.path(), "victim", Node::builder()).await;
    let honest = member(dir.path(), "honest", Node::builder()).await;
    let (_local, remote) = counter_on(&victim, &honest).await;
    let before = victim.stats();
    let said = attack(dir.path(), &victim, "mallory", &args(&[&"renew", &800_000])).await;
    // One refusal a frame of 20 000 ids.
    assert_eq!(said, "SENT 800000 READ REFUSED 40");
    assert!(log.contains("ignored lease ids"));
    let after = victim.stats();
    assert_eq!(after.lease_ids_ignored, 800_000);
    assert_eq!(
        after.leases_granted, before.leases_granted,
        "no lease recorded"
    );
    assert_eq!(remote.add(1).await, Ok(1));
}

#[tokio::test]
async fn a_member_cannot_keep_a_killed_writers_registry_lease_alive() {
    let (log, _guard) = Log::capture();
    let dir = cluster();
    let victim = member(dir.path(), "victim", Node::builder()).await;
    let store = Spy::default();
    let registry = RegistryServer::new(store.clone()).start(&victim).unwrap();
    let addr = victim.listen_addr().unwrap().to_string();
    // The writer, a process of its own, binds a name under a 2 s lease.
    // (It waits for the child's READY: beside the victim, which runs on this thread.)
    let credentials = dir.path().to_owned();
    let mut writer = tokio::task::spawn_blocking(move || {
        ChildNode::spawn_with(
            env!("CARGO_BIN_EXE_remora-test-node"),
            &credentials,
            &["--registry", &addr, "--bind", "w", "--lease-ms", "2000"],
        )
    })
    .await
    .unwrap();
    let lease = store.granted()[0];
    assert!(registry.lookup::<CounterRef>("w").await.is_ok());
    writer.kill();
    let killed = tokio::time::Instant::now();
    // Mallory learnt the lease id, and keeps renewing it for 4 s.
    let hex = format!("{:032x}", lease.as_u128());
    let renewing = args(&[&"registry-renew", &hex, &4]);
    let attacking = attack(dir.path(), &victim, "mallory", &renewing);
    let vanished = async {
        let deadline = killed + SAFETY;
        while registry.lookup::<CounterRef>("w").await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "the name stayed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        killed.elapsed()
    };
    let (said, gone_after) = tokio::join!(attacking, vanished);
    let refused: u32 = said
        .strip_prefix("REFUSED ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        refused >= 5 && said.ends_with("ACCEPTED 0 OTHER 0"),
        "{said}"
    );
    assert!(
        gone_after < Duration::from_secs(4),
        "gone after {gone_after:?}"
    );
    assert!(log.contains("mallory"));
}
