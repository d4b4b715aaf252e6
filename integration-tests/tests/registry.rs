//! The registry's behaviour, one suite run three ways: a registry node over the
//! embedded `MemoryStore`, a registry node over a real etcd, and nodes using an
//! `EtcdStore` directly (no registry node). Nodes talk QUIC on loopback.
//!
//! Then what a member with a valid certificate cannot do to another node's lease
//! (renew it, end it, bind under it, guess it), whether it reaches the registry
//! node over QUIC or in-process; and the registry service coming back after it
//! stopped or panicked.
//!
//! etcd runs as a child process started per test on free loopback ports; without
//! an `etcd` binary the etcd variants are compiled as ignored (`cargo test` counts
//! them as not run), or the build fails with `REMORA_REQUIRE_ETCD=1`, as in CI
//! (see `integration-tests/etcd_probe.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use remora::remote::inproc;
use remora::{CallError, Node, StopReason};
use remora_integration_tests::etcd::EtcdServer;
use remora_integration_tests::spy::Spy;
use remora_integration_tests::*;
use remora_registry::{
    EtcdOptions, EtcdStore, Event, LeaseId, MemoryStore, Pick, Record, Registry, RegistryError,
    RegistryServer, RegistryServiceRef, RemoteStore, Store, REGISTRY_OBJECT,
};
use tokio::time::{sleep, timeout, Instant};

/// How the nodes of a test reach their registry.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A registry node over `MemoryStore`.
    Memory,
    /// A registry node over `EtcdStore`.
    EtcdNode,
    /// Every node on `EtcdStore` directly.
    EtcdDirect,
}

/// A registry and a way to add nodes that use it.
struct World {
    kind: Kind,
    home: Node,
    addr: String,
    etcd: Option<(EtcdServer, String)>,
    lease: Duration,
}

impl World {
    async fn new(kind: Kind) -> World {
        World::with_server(kind, |server| server).await
    }

    async fn with_server(
        kind: Kind,
        configure: impl FnOnce(RegistryServer) -> RegistryServer,
    ) -> World {
        let etcd = match kind {
            Kind::Memory => None,
            Kind::EtcdNode | Kind::EtcdDirect => {
                let server = EtcdServer::start();
                let prefix = format!("/test-{}/", uuid::Uuid::new_v4());
                Some((server, prefix))
            }
        };
        let home = Node::builder()
            .name("home")
            .listen("127.0.0.1:0")
            .build()
            .await
            .unwrap();
        let mut world = World {
            kind,
            addr: home.listen_addr().unwrap().to_string(),
            home,
            etcd,
            lease: Duration::from_secs(2),
        };
        let server = match kind {
            Kind::Memory => Some(RegistryServer::new(MemoryStore::new())),
            Kind::EtcdNode => Some(RegistryServer::new(world.etcd_store().await)),
            Kind::EtcdDirect => None,
        };
        if let Some(server) = server {
            configure(server).start(&world.home).unwrap();
        }
        world.lease = Duration::from_secs(2);
        world
    }

    async fn etcd_store(&self) -> EtcdStore {
        let (server, prefix) = self.etcd.as_ref().expect("an etcd world");
        EtcdStore::connect_with(EtcdOptions::new([server.url().to_owned()]).with_prefix(prefix))
            .await
            .unwrap()
    }

    /// A new node named `name`, listening on loopback, with its registry handle.
    async fn node(&self, name: &str) -> (Node, Registry) {
        let node = Node::builder()
            .name(name)
            .listen("127.0.0.1:0")
            .peer_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap();
        let registry = self.registry(&node).await.unwrap();
        (node, registry)
    }

    async fn registry(&self, node: &Node) -> Result<Registry, RegistryError> {
        let builder = Registry::builder().lease_ttl(self.lease);
        match self.kind {
            Kind::Memory | Kind::EtcdNode => builder.connect(node, &self.addr).await,
            Kind::EtcdDirect => Ok(builder.with_store(node, self.etcd_store().await)),
        }
    }
}

/// Polls `check` every 50 ms until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The next watch event, within 10 s.
async fn next_event(watch: &mut remora_registry::Watch) -> Event {
    timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch goes on")
        .expect("no watch error")
}

async fn bind_lookup_and_call_from_another_node(kind: Kind) {
    let world = World::new(kind).await;
    let (server, registry) = world.node("server").await;
    let counter: CounterRef = server.spawn(Tally::default());
    registry.bind("bank/counter", &counter).await.unwrap();

    let (_client, registry) = world.node("client").await;
    let found: CounterRef = registry.lookup("bank/counter").await.unwrap();
    assert_eq!(found.add(40).await, Ok(40));
    assert_eq!(counter.add(2).await, Ok(42), "the same actor");
}

async fn bind_refuses_a_taken_name_and_rebind_replaces_it(kind: Kind) {
    let world = World::new(kind).await;
    let (node, registry) = world.node("server").await;
    let first: CounterRef = node.spawn(Tally::default());
    let second: CounterRef = node.spawn(Tally::default());
    first.add(1).await.unwrap();
    second.add(2).await.unwrap();
    registry.bind("c", &first).await.unwrap();
    assert_eq!(
        registry.bind("c", &second).await,
        Err(RegistryError::AlreadyBound { name: "c".into() })
    );
    let (_other, theirs) = world.node("other").await;
    let found: CounterRef = theirs.lookup("c").await.unwrap();
    assert_eq!(found.total().await, Ok(1));

    registry.rebind("c", &second).await.unwrap();
    let found: CounterRef = theirs.lookup("c").await.unwrap();
    assert_eq!(found.total().await, Ok(2));

    theirs.unbind("c").await.unwrap();
    assert_eq!(
        theirs.lookup::<CounterRef>("c").await,
        Err(RegistryError::NotBound { name: "c".into() })
    );
    assert_eq!(
        registry.unbind("c").await,
        Err(RegistryError::NotBound { name: "c".into() })
    );
    // Unbound, the name is free again.
    registry.bind("c", &first).await.unwrap();
}

async fn lookup_is_typed(kind: Kind) {
    let world = World::new(kind).await;
    let (node, registry) = world.node("server").await;
    let counter: CounterRef = node.spawn(Tally::default());
    registry.bind("thing", &counter).await.unwrap();
    let (_client, registry) = world.node("client").await;
    assert_eq!(
        registry.lookup::<BrokerRef>("thing").await,
        Err(RegistryError::WrongInterface {
            name: "thing".into(),
            expected: "Broker".into(),
            found: "Counter".into(),
        })
    );
    assert!(registry.lookup::<CounterRef>("thing").await.is_ok());
}

async fn names_are_checked(kind: Kind) {
    let world = World::new(kind).await;
    let (node, registry) = world.node("server").await;
    let counter: CounterRef = node.spawn(Tally::default());
    for (name, bad) in [("", "empty"), ("a\nb", "control")] {
        match registry.bind(name, &counter).await {
            Err(RegistryError::InvalidName { reason, .. }) => {
                assert!(reason.contains(bad), "{reason}")
            }
            other => panic!("{name:?}: {other:?}"),
        }
    }
    assert!(matches!(
        registry.join("a/b", &counter).await,
        Err(RegistryError::InvalidName { .. })
    ));
}

async fn list_shows_names_under_a_prefix_in_order(kind: Kind) {
    let world = World::new(kind).await;
    let (node, registry) = world.node("server").await;
    let counter: CounterRef = node.spawn(Tally::default());
    let broker: BrokerRef = node.spawn(Keeper::default());
    registry.bind("app/b", &broker).await.unwrap();
    registry.bind("app/a", &counter).await.unwrap();
    registry.bind("other", &counter).await.unwrap();
    registry.join("workers", &counter).await.unwrap();

    let (_client, registry) = world.node("client").await;
    let listed = registry.list("app/").await.unwrap();
    let names: Vec<(&str, &str)> = listed
        .iter()
        .map(|e| (e.name.as_str(), e.interface.as_str()))
        .collect();
    assert_eq!(names, [("app/a", "Counter"), ("app/b", "Broker")]);
    assert!(listed
        .iter()
        .all(|e| e.node() == node.id() && e.owner == node.id()));
    let all = registry.list("").await.unwrap();
    assert_eq!(all.len(), 3, "group members are not names: {all:?}");
}

async fn watch_reports_changes_in_order(kind: Kind) {
    let world = World::new(kind).await;
    let (_watcher, theirs) = world.node("watcher").await;
    let mut watch = theirs.watch("svc/").await.unwrap();
    let (node, registry) = world.node("server").await;
    let one: CounterRef = node.spawn(Tally::default());
    let two: CounterRef = node.spawn(Tally::default());
    let (one_id, two_id) = (node.wire_ref(&one).object, node.wire_ref(&two).object);

    registry.bind("svc/a", &one).await.unwrap();
    registry.bind("elsewhere", &one).await.unwrap();
    registry.rebind("svc/a", &two).await.unwrap();
    registry.unbind("svc/a").await.unwrap();
    registry.bind("svc/b", &one).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(match next_event(&mut watch).await {
            Event::Bound(e) => ("bound", e.object(), e.name),
            Event::Unbound(e) => ("unbound", e.object(), e.name),
        });
    }
    assert_eq!(
        seen,
        [
            ("bound", one_id, "svc/a".to_owned()),
            ("bound", two_id, "svc/a".to_owned()),
            ("unbound", two_id, "svc/a".to_owned()),
            ("bound", one_id, "svc/b".to_owned()),
        ]
    );
}

async fn a_stopped_actor_is_unbound_at_once(kind: Kind) {
    let world = World::new(kind).await;
    let (node, registry) = world.node("server").await;
    let counter: CounterRef = node.spawn(Tally::default());
    let mut watch = registry.watch("").await.unwrap();
    registry.bind("short-lived", &counter).await.unwrap();
    assert!(matches!(next_event(&mut watch).await, Event::Bound(_)));
    node.stop(&counter);
    match next_event(&mut watch).await {
        Event::Unbound(e) => assert_eq!(e.name, "short-lived"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        registry.lookup::<CounterRef>("short-lived").await,
        Err(RegistryError::NotBound { .. })
    ));
}

async fn a_node_that_goes_away_loses_its_names(kind: Kind) {
    let world = World::new(kind).await;
    let (node, registry) = world.node("server").await;
    let counter: CounterRef = node.spawn(Tally::default());
    registry.bind("mine", &counter).await.unwrap();
    node.shutdown().await;
    let (_client, theirs) = world.node("client").await;
    // Shut down, the node's actors stop (unbinding their names) and its lease
    // ends; bounded by the lease in any case.
    assert!(
        eventually(Duration::from_secs(10), || async {
            matches!(
                theirs.lookup::<CounterRef>("mine").await,
                Err(RegistryError::NotBound { .. })
            )
        })
        .await,
        "the name outlived its node"
    );
}

async fn groups_round_robin_and_skip_failed_members(kind: Kind) {
    let world = World::new(kind).await;
    let mut members = Vec::new();
    for i in 0..3 {
        let (node, registry) = world.node(&format!("member{i}")).await;
        let counter: CounterRef = node.spawn(Tally::default());
        counter.add(i * 100).await.unwrap();
        registry.join("workers", &counter).await.unwrap();
        members.push((node, counter, registry));
    }
    let (_client, registry) = world.node("client").await;
    assert_eq!(
        registry
            .members::<CounterRef>("workers")
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(matches!(
        registry.members::<BrokerRef>("workers").await,
        Err(RegistryError::WrongInterface { .. })
    ));
    let group = registry.group::<CounterRef>("workers").await.unwrap();
    assert_eq!(group.live(), 3);

    // Round-robin: six calls, two to each member.
    let mut hits = BTreeMap::new();
    for _ in 0..6 {
        let total = group.call(|c| async move { c.add(0).await }).await.unwrap();
        *hits.entry(total).or_insert(0) += 1;
    }
    assert_eq!(hits, BTreeMap::from([(0, 2), (100, 2), (200, 2)]));

    // A member's node goes down: at most one call fails (it may have been picked
    // before the registry noticed), then only live members are called.
    members[1].0.shutdown().await;
    let mut failures = 0;
    let mut hits = BTreeMap::new();
    for _ in 0..8 {
        match group.call(|c| async move { c.add(0).await }).await {
            Ok(total) => *hits.entry(total).or_insert(0) += 1,
            Err(RegistryError::Call(err)) => {
                assert!(!matches!(err, CallError::Timeout { .. }), "{err:?}");
                failures += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(failures <= 1, "{failures} calls failed");
    assert!(!hits.contains_key(&100), "{hits:?}");
    assert_eq!(hits.values().sum::<i32>(), 8 - failures);

    // Leaving takes a member out; an empty group is an error, not a hang.
    // (Each member leaves through its own node's handle: a reference is only
    // meaningful to the node that holds it.)
    members[0].2.leave("workers", &members[0].1).await.unwrap();
    members[2].2.leave("workers", &members[2].1).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            matches!(group.pick(), Err(RegistryError::NoMembers { .. }))
        })
        .await
    );
    assert!(matches!(
        group.call(|c| async move { c.add(0).await }).await,
        Err(RegistryError::NoMembers { .. })
    ));
}

async fn random_groups_reach_every_member(kind: Kind) {
    let world = World::new(kind).await;
    let (node, registry) = world.node("members").await;
    for i in 0..3 {
        let counter: CounterRef = node.spawn(Tally::default());
        counter.add(i).await.unwrap();
        registry.join("pool", &counter).await.unwrap();
    }
    let group = registry
        .group_with::<CounterRef>("pool", Pick::Random)
        .await
        .unwrap();
    let mut hits = BTreeMap::new();
    for _ in 0..200 {
        let total = group
            .call(|c| async move { c.total().await })
            .await
            .unwrap();
        *hits.entry(total).or_insert(0) += 1;
    }
    // 200 uniform picks among 3 miss a member with probability ~1e-35.
    assert_eq!(hits.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Memory).await
                }
            )*
        }
        mod etcd_node {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(etcd), ignore = "etcd is not installed (apt-get install etcd-server)")]
                async fn $case() {
                    super::$case(super::Kind::EtcdNode).await
                }
            )*
        }
        mod etcd_direct {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(etcd), ignore = "etcd is not installed (apt-get install etcd-server)")]
                async fn $case() {
                    super::$case(super::Kind::EtcdDirect).await
                }
            )*
        }
    };
}

suite!(
    bind_lookup_and_call_from_another_node,
    bind_refuses_a_taken_name_and_rebind_replaces_it,
    lookup_is_typed,
    names_are_checked,
    list_shows_names_under_a_prefix_in_order,
    watch_reports_changes_in_order,
    a_stopped_actor_is_unbound_at_once,
    a_node_that_goes_away_loses_its_names,
    groups_round_robin_and_skip_failed_members,
    random_groups_reach_every_member,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_replaced_and_the_nodes_names_put_back() {
    let store = Spy::default();
    let node = Node::builder().build().await.unwrap();
    let registry = Registry::builder()
        .lease_ttl(Duration::from_millis(300))
        .with_store(&node, store.clone());
    let counter: CounterRef = node.spawn(Tally::default());
    registry.bind("kept", &counter).await.unwrap();
    // The store forgets the lease (as a restarted registry would).
    let granted = store.granted();
    assert_eq!(granted.len(), 1);
    store.revoke(granted[0], node.id()).await.unwrap();
    assert_eq!(store.get("names/kept").await.unwrap(), None);
    assert!(
        eventually(Duration::from_secs(10), || async {
            registry.lookup::<CounterRef>("kept").await.is_ok()
        })
        .await,
        "the name was not bound again under a new lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_no_registry_says_why() {
    let node = Node::builder().build().await.unwrap();
    // A node that serves no registry.
    let bare = Node::builder().listen("127.0.0.1:0").build().await.unwrap();
    let addr = bare.listen_addr().unwrap().to_string();
    assert!(matches!(
        Registry::connect(&node, &addr).await.err(),
        Some(RegistryError::Call(CallError::NoSuchObject))
    ));
    // Nothing listening there at all.
    drop(bare);
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let node = Node::builder()
        .peer_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    assert!(matches!(
        timeout(Duration::from_secs(20), Registry::connect(&node, &addr))
            .await
            .expect("gives up within the peer timeout"),
        Err(RegistryError::Call(CallError::ConnectFailed { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_of_another_nodes_object_survives_a_blip_but_not_its_loss() {
    use remora::remote::inproc;
    let (binder, host) = (node().await, node().await);
    let wire = inproc::connect(&binder, &host).await.unwrap();
    let registry = Registry::builder()
        .lease_ttl(Duration::from_secs(1))
        .with_store(&binder, MemoryStore::new());
    let counter: CounterRef = host.spawn(Tally::default());
    registry
        .bind("far", &reach(&binder, &host, &counter))
        .await
        .unwrap();

    // The connection drops once the binding's monitor watches over it, and comes
    // back at once: the binding watches again over the new connection (a binding
    // that took the blip for a loss would have removed the name instead), and the
    // name stays.
    let monitors = || binder.stats().monitors;
    until("the binding's monitor watches", || monitors() == 1).await;
    wire.cut();
    until("the cut ends the monitor", || monitors() == 0).await;
    let wire = inproc::connect(&binder, &host).await.unwrap();
    until("the binding watches again", || monitors() == 1).await;
    // The host has let go of the cut connection too (seen once under load: a call
    // right after the reconnect went unanswered until its deadline).
    until("the host holds the new connection only", || {
        host.stats().connections == 1
    })
    .await;
    let found: CounterRef = registry.lookup("far").await.expect("still bound");
    assert_eq!(found.add(1).await, Ok(1));

    // Lost for good: the name goes within about a lease time.
    wire.cut();
    assert!(
        eventually(Duration::from_secs(10), || async {
            matches!(
                registry.lookup::<CounterRef>("far").await,
                Err(RegistryError::NotBound { .. })
            )
        })
        .await,
        "the name outlived the connection to its object's node"
    );
}

// ---- leases belong to their owners ----

/// A node of the cluster that speaks the registry's wire interface itself, as a
/// misbehaving member can: it calls `RegistryService` directly, with any lease id.
struct Member {
    node: Node,
    service: RegistryServiceRef,
    /// The in-process connection to the registry node (None over QUIC).
    _wire: Option<inproc::Wire>,
}

impl Member {
    /// A record under `key` for `r`, in this node's name.
    fn record(&self, key: &str, r: &CounterRef) -> Record {
        Record {
            key: key.to_owned(),
            target: self.node.wire_ref(r),
            interface: "Counter".to_owned(),
            owner: self.node.id(),
        }
    }

    /// A lease of `ttl` for this node.
    async fn grant(&self, ttl: Duration) -> LeaseId {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap();
        self.service.grant(ttl_ms).await.unwrap().unwrap()
    }

    /// The record under `key`, as any node reads it.
    async fn get(&self, key: &str) -> Option<Record> {
        self.service.get(key.to_owned()).await.unwrap().unwrap()
    }
}

/// A member of the cluster that reaches the registry node `home` at `addr` over
/// `transport`: a certificate named `name`, or the default name (`remora-node`)
/// that every unnamed node shares.
async fn member(home: &Node, addr: &str, name: Option<&str>, transport: Transport) -> Member {
    let mut builder = Node::builder().peer_timeout(Duration::from_secs(2));
    if let Some(name) = name {
        builder = builder.name(name);
    }
    match transport {
        Transport::Quic => {
            let node = builder.listen("127.0.0.1:0").build().await.unwrap();
            let store = RemoteStore::connect(&node, addr).await.unwrap();
            let service = store.service().clone();
            Member {
                node,
                service,
                _wire: None,
            }
        }
        Transport::InProcess => {
            let node = builder.build().await.unwrap();
            let wire = inproc::connect(&node, home).await.unwrap();
            let service = node.reference(home.id(), REGISTRY_OBJECT).unwrap();
            Member {
                node,
                service,
                _wire: Some(wire),
            }
        }
    }
}

impl World {
    async fn member(&self, name: Option<&str>, transport: Transport) -> Member {
        member(&self.home, &self.addr, name, transport).await
    }
}

/// Asserts that `answer` is the registry's refusal of `identity`.
#[track_caller]
fn refused<T: std::fmt::Debug>(
    answer: Result<Result<T, RegistryError>, CallError>,
    identity: &str,
) {
    match answer {
        Ok(Err(RegistryError::Unauthorized { caller, operation })) => {
            assert_eq!(caller, identity);
            assert!(
                operation.contains("another node") || operation.contains("in the name of node"),
                "{operation}"
            );
        }
        other => panic!("expected {identity} to be refused, got {other:?}"),
    }
}

async fn a_member_cannot_use_another_nodes_lease(kind: Kind, transport: Transport) {
    let world = World::new(kind).await;
    let writer = world.member(None, transport).await;
    let counter: CounterRef = writer.node.spawn(Tally::default());
    let lease = writer.grant(Duration::from_secs(60)).await;
    let bound = writer.record("names/w", &counter);
    writer
        .service
        .create(bound.clone(), lease)
        .await
        .unwrap()
        .unwrap();

    // One attacker with a certificate name of its own, one with the writer's own
    // (default) name: leases belong to nodes, not to names.
    for (name, identity) in [(Some("mallory"), "mallory"), (None, "remora-node")] {
        let attacker = world.member(name, transport).await;
        let decoy: CounterRef = attacker.node.spawn(Tally::default());
        let service = &attacker.service;
        refused(service.keep_alive(lease).await, identity);
        refused(service.revoke(lease).await, identity);
        // In its own name...
        let own = |key: &str| attacker.record(key, &decoy);
        refused(service.create(own("names/a"), lease).await, identity);
        refused(service.put(own("names/w"), lease).await, identity);
        // ...and in the writer's.
        let forged = |key: &str| Record {
            owner: writer.node.id(),
            ..own(key)
        };
        refused(service.create(forged("names/a"), lease).await, identity);
        refused(service.put(forged("names/w"), lease).await, identity);
    }

    // Nothing changed: the name is the writer's, under a lease that still lives
    // and that the writer alone ends.
    assert_eq!(writer.get("names/w").await, Some(bound.clone()));
    assert_eq!(writer.get("names/a").await, None);
    assert_eq!(writer.service.keep_alive(lease).await, Ok(Ok(())));
    assert_eq!(writer.service.revoke(lease).await, Ok(Ok(())));
    assert_eq!(writer.get("names/w").await, None);
    assert_eq!(
        writer.service.keep_alive(lease).await,
        Ok(Err(RegistryError::LeaseExpired))
    );
}

async fn guessed_lease_ids_are_expired(kind: Kind, transport: Transport) {
    let world = World::new(kind).await;
    let writer = world.member(None, transport).await;
    let counter: CounterRef = writer.node.spawn(Tally::default());
    let lease = writer.grant(Duration::from_secs(60)).await;
    let bound = writer.record("names/w", &counter);
    writer
        .service
        .create(bound.clone(), lease)
        .await
        .unwrap()
        .unwrap();
    let attacker = world.member(Some("mallory"), transport).await;
    let decoy: CounterRef = attacker.node.spawn(Tally::default());
    let next = LeaseId::from_u128(lease.as_u128().wrapping_add(1));
    let previous = LeaseId::from_u128(lease.as_u128().wrapping_sub(1));
    for guess in [
        LeaseId::from_u128(1),
        LeaseId::from_u128(2),
        next,
        previous,
        LeaseId::random(),
    ] {
        let service = &attacker.service;
        let expired = Ok(Err(RegistryError::LeaseExpired));
        assert_eq!(service.keep_alive(guess).await, expired, "{guess}");
        let mine = attacker.record("names/squat", &decoy);
        assert_eq!(service.create(mine.clone(), guess).await, expired);
        assert_eq!(
            service.put(mine, guess).await,
            Ok(Err(RegistryError::LeaseExpired))
        );
        assert_eq!(service.revoke(guess).await, Ok(Ok(())), "nothing to end");
    }
    assert_eq!(attacker.get("names/squat").await, None);
    assert_eq!(attacker.get("names/w").await, Some(bound));
    assert_eq!(writer.service.keep_alive(lease).await, Ok(Ok(())));
}

async fn a_killed_writers_names_go_within_its_lease_whatever_others_do(
    kind: Kind,
    transport: Transport,
) {
    let world = World::new(kind).await;
    let writer = world.member(None, transport).await;
    let counter: CounterRef = writer.node.spawn(Tally::default());
    let ttl = Duration::from_secs(2);
    let lease = writer.grant(ttl).await;
    let bound = writer.record("names/doomed", &counter);
    writer
        .service
        .create(bound.clone(), lease)
        .await
        .unwrap()
        .unwrap();
    let attacker = world.member(Some("mallory"), transport).await;

    // The writer renews once more, then dies without a word (no revoke).
    assert_eq!(writer.service.keep_alive(lease).await, Ok(Ok(())));
    let renewed = Instant::now();
    let Member { node, _wire, .. } = writer;
    node.shutdown().await;
    drop((node, _wire));

    // The attacker keeps renewing the dead writer's lease, and is refused each time.
    let mut refusals = 0;
    let gone = loop {
        match attacker.service.keep_alive(lease).await {
            Ok(Err(RegistryError::Unauthorized { caller, .. })) => {
                assert_eq!(caller, "mallory");
                refusals += 1;
            }
            Ok(Err(RegistryError::LeaseExpired)) => {}
            other => panic!("{other:?}"),
        }
        if attacker.get("names/doomed").await.is_none() {
            break renewed.elapsed();
        }
        assert!(renewed.elapsed() < SAFETY, "the name outlived its lease");
        sleep(Duration::from_millis(100)).await;
    };
    // etcd grants at least its minimum time to live (0.75 s with the tests'
    // election timeout, so the 2 s asked) and reaps every 500 ms.
    assert!(
        gone >= ttl - Duration::from_millis(200),
        "gone after {gone:?}"
    );
    assert!(gone < ttl + Duration::from_secs(2), "gone after {gone:?}");
    assert!(refusals >= 5, "{refusals} refusals");
    assert_eq!(
        attacker.service.keep_alive(lease).await,
        Ok(Err(RegistryError::LeaseExpired))
    );
}

async fn the_registry_answers_again_after_its_service_is_stopped(kind: Kind, transport: Transport) {
    let world = World::new(kind).await;
    let client = world.member(Some("client"), transport).await;
    let counter: CounterRef = client.node.spawn(Tally::default());
    let lease = client.grant(Duration::from_secs(60)).await;
    let kept = client.record("names/kept", &counter);
    client
        .service
        .create(kept.clone(), lease)
        .await
        .unwrap()
        .unwrap();
    let attacker = world.member(Some("mallory"), transport).await;

    for round in 0..2 {
        // Stopped on its node, as an operator (or a bug) might.
        let running: RegistryServiceRef = world
            .home
            .reference(world.home.id(), REGISTRY_OBJECT)
            .unwrap();
        world.home.stop(&running);
        assert_eq!(world.home.monitor(&running).await, StopReason::Normal);
        // The references taken before answer again, from a fresh service over the
        // same store: the names, the leases and their owners are as they were.
        assert!(
            eventually(SAFETY, || async {
                matches!(
                    client.service.get("names/kept".into()).await,
                    Ok(Ok(Some(_)))
                )
            })
            .await,
            "round {round}: the registry did not come back"
        );
        assert_eq!(client.get("names/kept").await, Some(kept.clone()));
        assert_eq!(client.service.keep_alive(lease).await, Ok(Ok(())));
        refused(attacker.service.keep_alive(lease).await, "mallory");
        // Calls made on the registry's own node come from that node.
        let fresh: RegistryServiceRef = world
            .home
            .reference(world.home.id(), REGISTRY_OBJECT)
            .unwrap();
        let own = fresh.grant(60_000).await.unwrap().unwrap();
        assert_eq!(fresh.keep_alive(own).await, Ok(Ok(())));
        refused(client.service.keep_alive(own).await, "client");
        refused(fresh.keep_alive(lease).await, "this node");
    }
    // A node's own registry handle, and new nodes, work as before.
    let (_reader, registry) = world.node("reader").await;
    let listed = registry.list("").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].owner, client.node.id());
}

async fn the_registry_answers_again_after_its_service_panics(transport: Transport) {
    let home = Node::builder()
        .name("home")
        .listen("127.0.0.1:0")
        .build()
        .await
        .unwrap();
    let local = RegistryServer::new(Spy::default()).start(&home).unwrap();
    let addr = home.listen_addr().unwrap().to_string();
    let client = member(&home, &addr, Some("client"), transport).await;
    let counter: CounterRef = client.node.spawn(Tally::default());
    let lease = client.grant(Duration::from_secs(60)).await;
    let kept = client.record("names/kept", &counter);
    client
        .service
        .create(kept.clone(), lease)
        .await
        .unwrap()
        .unwrap();

    // More panics than the service restarts in place (5 a minute): the first ones
    // restart it, the later ones replace it with a fresh actor. Each time the
    // registry answers again, with what it held.
    for round in 0..8 {
        match client.service.get("boom".into()).await {
            Err(CallError::Panicked { .. }) => {}
            other => panic!("round {round}: {other:?}"),
        }
        assert!(
            eventually(SAFETY, || async {
                client.service.get("names/kept".into()).await == Ok(Ok(Some(kept.clone())))
            })
            .await,
            "round {round}: the registry did not come back"
        );
    }
    assert_eq!(client.service.keep_alive(lease).await, Ok(Ok(())));
    assert_eq!(local.list("").await.unwrap().len(), 1);
    // A node that shuts down does not bring its registry back.
    home.shutdown().await;
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        home.stats().actors,
        0,
        "a registry came back after shutdown"
    );
    assert!(client.service.get("names/kept".into()).await.is_err());
}

macro_rules! lease_suite {
    ($($case:ident),* $(,)?) => {
        mod leases {
            use super::{Kind, Transport};
            mod memory_quic {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        super::super::$case(super::Kind::Memory, super::Transport::Quic).await
                    }
                )*
            }
            mod memory_in_process {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        super::super::$case(super::Kind::Memory, super::Transport::InProcess).await
                    }
                )*
            }
            mod etcd_node_quic {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    #[cfg_attr(not(etcd), ignore = "etcd is not installed (apt-get install etcd-server)")]
                    async fn $case() {
                        super::super::$case(super::Kind::EtcdNode, super::Transport::Quic).await
                    }
                )*
            }
            mod etcd_node_in_process {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    #[cfg_attr(not(etcd), ignore = "etcd is not installed (apt-get install etcd-server)")]
                    async fn $case() {
                        super::super::$case(super::Kind::EtcdNode, super::Transport::InProcess).await
                    }
                )*
            }
        }
    };
}

lease_suite!(
    a_member_cannot_use_another_nodes_lease,
    guessed_lease_ids_are_expired,
    a_killed_writers_names_go_within_its_lease_whatever_others_do,
    the_registry_answers_again_after_its_service_is_stopped,
);

mod panics {
    use remora_integration_tests::Transport;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_registry_answers_again_after_its_service_panics_quic() {
        super::the_registry_answers_again_after_its_service_panics(Transport::Quic).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_registry_answers_again_after_its_service_panics_in_process() {
        super::the_registry_answers_again_after_its_service_panics(Transport::InProcess).await
    }
}

/// A group member that stops answering (its actor is stuck in a long call) costs
/// the group's callers one timeout, not one in every turn: a member whose call
/// timed out is skipped for a while, then tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_answering_costs_callers_one_timeout() {
    let node = Node::builder().build().await.unwrap();
    let registry = Registry::with_store(&node, MemoryStore::new());
    let stuck: CounterRef = node.spawn(Tally::default());
    let healthy: CounterRef = node.spawn(Tally::default());
    registry.join("g", &stuck).await.unwrap();
    registry.join("g", &healthy).await.unwrap();
    let group = registry.group::<CounterRef>("g").await.unwrap();
    assert_eq!(group.live(), 2);
    // Stuck for longer than the whole run.
    let mut nap = Box::pin(stuck.nap(30_000));
    assert!(poll_once(&mut nap).await.is_pending());
    let mut timeouts = 0;
    for _ in 0..10 {
        let call = group
            .call(|c| async move { c.with_timeout(Duration::from_millis(100)).add(1).await })
            .await;
        match call {
            Ok(_) => {}
            Err(RegistryError::Call(CallError::Timeout { .. })) => timeouts += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(
        timeouts, 1,
        "callers waited on the stuck member {timeouts} times"
    );
    assert_eq!(healthy.add(0).await, Ok(9));
    // Back after its demotion: it is tried again (and times out again).
    tokio::time::sleep(remora_registry::DEMOTED_FOR).await;
    let mut again = 0;
    for _ in 0..2 {
        let call = group
            .call(|c| async move { c.with_timeout(Duration::from_millis(100)).add(1).await })
            .await;
        again += usize::from(call.is_err());
    }
    assert_eq!(again, 1, "the member is probed again after its demotion");
}
