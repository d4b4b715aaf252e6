//! Remote spawn and placement, each scenario over both transports: in-process
//! channels, and QUIC on loopback between nodes of this process.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use remora::remote::inproc;
use remora::NodeId;
use remora::{Actor, CallError, Factory, Interface, Node, SpawnError};
use remora_integration_tests::*;
use remora_registry::{MemoryStore, Placement, PlacementError, Registry, RegistryServer};
use tokio::time::timeout;

/// A bound on a whole scenario; never a performance bound.
const SCENARIO: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Transport {
    InProc,
    Quic,
}

/// Runs each scenario once per transport, as its own test.
macro_rules! on_both_transports {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn inproc() {
                run(super::$scenario(Transport::InProc)).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic() {
                run(super::$scenario(Transport::Quic)).await
            }
        }
    )*};
}

async fn run(scenario: impl Future<Output = ()>) {
    timeout(SCENARIO, scenario)
        .await
        .expect("the scenario finishes")
}

/// Nodes connected pairwise over one transport, each with a registry handle on
/// one shared registry (served by node 0 over QUIC; a shared store in-process).
struct Cluster {
    nodes: Vec<Node>,
    registries: Vec<Registry>,
    _wires: Vec<inproc::Wire>,
}

async fn cluster(transport: Transport, n: usize) -> Cluster {
    let mut nodes = Vec::new();
    for i in 0..n {
        let builder = Node::builder().name(format!("node{i}"));
        let builder = match transport {
            Transport::InProc => builder,
            Transport::Quic => builder.listen("127.0.0.1:0"),
        };
        nodes.push(builder.build().await.unwrap());
    }
    let mut wires = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            match transport {
                Transport::InProc => {
                    wires.push(inproc::connect(&nodes[i], &nodes[j]).await.unwrap())
                }
                Transport::Quic => {
                    let addr = nodes[j].listen_addr().unwrap().to_string();
                    assert_eq!(nodes[i].connect(&addr).await.unwrap(), nodes[j].id());
                }
            }
        }
    }
    let registries = match transport {
        Transport::InProc => {
            let store = MemoryStore::new();
            nodes
                .iter()
                .map(|node| Registry::with_store(node, store.clone()))
                .collect()
        }
        Transport::Quic => {
            let mut registries =
                vec![RegistryServer::serve(&nodes[0], MemoryStore::new()).unwrap()];
            let addr = nodes[0].listen_addr().unwrap().to_string();
            for node in &nodes[1..] {
                registries.push(Registry::connect(node, &addr).await.unwrap());
            }
            registries
        }
    };
    Cluster {
        nodes,
        registries,
        _wires: wires,
    }
}

/// A gauge that reads a fixed value: spawned through the `Factory` trait.
#[remora::remote]
pub trait Gauge {
    async fn read(&mut self) -> u64;
}

struct Fixed(u64);

impl Actor for Fixed {}

impl Gauge for Fixed {
    async fn read(&mut self) -> u64 {
        self.0
    }
}

impl Factory for Fixed {
    type Args = u64;
    type Ref = GaugeRef;
    fn create(value: u64) -> Result<Fixed, String> {
        if value > 1000 {
            return Err(format!("{value} is past the gauge's scale of 1000"));
        }
        Ok(Fixed(value))
    }
}

/// Registers the test factories on `node`: "counter" (a closure: a `Tally`
/// starting at its argument), "gauge" (the `Factory` trait), "boom" (panics).
fn register(node: &Node) {
    node.register_factory_fn(
        "counter",
        |node: &Node, start: u64| -> Result<CounterRef, String> {
            Ok(node.spawn(Tally {
                total: start,
                seen: Vec::new(),
            }))
        },
    )
    .unwrap();
    node.register_factory::<Fixed>("gauge").unwrap();
    node.register_factory_fn(
        "boom",
        |_: &Node, why: String| -> Result<CounterRef, String> { panic!("{why}") },
    )
    .unwrap();
}

/// The node `r`'s actor runs on, as `holder` sees it.
fn home<R: Interface>(holder: &Node, r: &R) -> NodeId
where
    R::Msg: remora::rt::Unmarshal,
{
    holder.wire_ref(r).node
}

on_both_transports!(
    spawn_on_creates_the_actor_on_the_peer,
    unknown_factories_are_refused_with_the_known_ones,
    a_factory_of_another_interface_is_wrong_interface,
    bad_arguments_are_refused_and_the_spawner_serves_on,
    placement_local_and_node,
    placement_round_robin_spreads_evenly,
    placement_random_reaches_every_node,
    placement_least_loaded_picks_the_emptiest_node,
    placement_without_nodes_and_after_withdrawal,
);

async fn spawn_on_creates_the_actor_on_the_peer(transport: Transport) {
    let c = cluster(transport, 2).await;
    let (client, worker) = (&c.nodes[0], &c.nodes[1]);
    register(worker);
    let before = worker.stats().actors;
    let counter: CounterRef = client
        .spawn_on(worker.id(), "counter", 40u64)
        .await
        .unwrap();
    assert_eq!(
        worker.stats().actors,
        before + 1,
        "the actor runs on the worker"
    );
    assert!(!counter.core().is_local());
    assert_eq!(home(client, &counter), worker.id());
    assert_eq!(counter.add(2).await, Ok(42), "made from its arguments");
    // The trait-registered factory.
    let gauge: GaugeRef = client.spawn_on(worker.id(), "gauge", 7u64).await.unwrap();
    assert_eq!(gauge.read().await, Ok(7));
    assert_eq!(worker.stats().actors, before + 2);
    // A spawn on this node itself: local, through the same factory table.
    register(client);
    let mine: CounterRef = client.spawn_on(client.id(), "counter", 1u64).await.unwrap();
    assert!(mine.core().is_local());
    assert_eq!(mine.add(1).await, Ok(2));
    // The factories a node has, listed locally and through its spawner.
    let names: Vec<String> = worker.factories().into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["boom", "counter", "gauge"]);
    let spawner: remora::SpawnerRef = client
        .reference(worker.id(), remora::SPAWNER_OBJECT)
        .unwrap();
    let listed = spawner.factories().await.unwrap();
    assert_eq!(listed, worker.factories());
    assert_eq!(listed[2].interface, "Gauge");
    assert_eq!(listed[2].args, "u64");
}

async fn unknown_factories_are_refused_with_the_known_ones(transport: Transport) {
    let c = cluster(transport, 3).await;
    let (client, worker, bare) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    register(worker);
    let before = worker.stats().actors;
    let err = client
        .spawn_on::<CounterRef, _>(worker.id(), "countr", 0u64)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SpawnError::UnknownFactory {
            node: worker.id(),
            name: "countr".into(),
            known: vec!["boom".into(), "counter".into(), "gauge".into()],
        }
    );
    assert!(err.to_string().contains("boom, counter, gauge"), "{err}");
    assert_eq!(worker.stats().actors, before, "nothing was spawned");
    // A node that registered no factory serves no spawner: the same error, none known.
    let err = client
        .spawn_on::<CounterRef, _>(bare.id(), "counter", 0u64)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SpawnError::UnknownFactory {
            node: bare.id(),
            name: "counter".into(),
            known: Vec::new(),
        }
    );
    // A node this one is not connected to.
    let stranger = NodeId::random();
    let err = client
        .spawn_on::<CounterRef, _>(stranger, "counter", 0u64)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SpawnError::Call(CallError::ConnectFailed { .. })),
        "{err:?}"
    );
}

async fn a_factory_of_another_interface_is_wrong_interface(transport: Transport) {
    let c = cluster(transport, 2).await;
    let (client, worker) = (&c.nodes[0], &c.nodes[1]);
    register(worker);
    let before = worker.stats().actors;
    let err = client
        .spawn_on::<BrokerRef, _>(worker.id(), "counter", 0u64)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SpawnError::WrongInterface {
            factory: "counter".into(),
            expected: "Broker".into(),
            found: "Counter".into(),
        }
    );
    assert_eq!(worker.stats().actors, before, "refused before spawning");
    // The same check on a local spawn.
    register(client);
    let err = client
        .spawn_on::<GaugeRef, _>(client.id(), "counter", 0u64)
        .await
        .unwrap_err();
    assert!(matches!(err, SpawnError::WrongInterface { .. }), "{err:?}");
}

async fn bad_arguments_are_refused_and_the_spawner_serves_on(transport: Transport) {
    let c = cluster(transport, 2).await;
    let (client, worker) = (&c.nodes[0], &c.nodes[1]);
    register(worker);
    register(client);
    let before = worker.stats().actors;
    for target in [worker.id(), client.id()] {
        // Arguments that do not decode into the factory's type.
        let err = client
            .spawn_on::<CounterRef, _>(target, "counter", "forty".to_owned())
            .await
            .unwrap_err();
        match &err {
            SpawnError::BadArguments { factory, reason } => {
                assert_eq!(factory, "counter");
                assert!(reason.contains("u64"), "names the expected type: {reason}");
            }
            other => panic!("expected BadArguments, got {other:?}"),
        }
        // Arguments the factory refuses.
        let err = client
            .spawn_on::<GaugeRef, _>(target, "gauge", 5000u64)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SpawnError::BadArguments {
                factory: "gauge".into(),
                reason: "5000 is past the gauge's scale of 1000".into(),
            }
        );
        // A factory that panics.
        let err = client
            .spawn_on::<CounterRef, _>(target, "boom", "no luck".to_owned())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SpawnError::Panicked {
                factory: "boom".into(),
                message: "no luck".into(),
            }
        );
        // Arguments holding a reference.
        let held: CounterRef = client.spawn(Tally::default());
        let err = client
            .spawn_on::<CounterRef, _>(target, "counter", held)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SpawnError::BadArguments { reason, .. } if reason.contains("reference")),
            "{err:?}"
        );
    }
    assert_eq!(worker.stats().actors, before, "nothing was spawned");
    // The spawner survived all of it.
    let counter: CounterRef = client.spawn_on(worker.id(), "counter", 3u64).await.unwrap();
    assert_eq!(counter.total().await, Ok(3));
}

/// A cluster of a client (node 0, no factories) and `workers` workers, each
/// offering spawning in the group "workers".
async fn workers(transport: Transport, workers: usize) -> Cluster {
    let c = cluster(transport, workers + 1).await;
    for (node, registry) in c.nodes.iter().zip(&c.registries).skip(1) {
        register(node);
        registry.offer_spawning("workers").await.unwrap();
    }
    c
}

/// How many of `refs` live on each node.
fn spread(holder: &Node, refs: &[CounterRef]) -> HashMap<NodeId, usize> {
    let mut spread = HashMap::new();
    for r in refs {
        *spread.entry(home(holder, r)).or_default() += 1;
    }
    spread
}

async fn placement_local_and_node(transport: Transport) {
    let c = workers(transport, 3).await;
    let client = &c.nodes[0];
    let registry = &c.registries[0];
    let mut expected: Vec<NodeId> = c.nodes[1..].iter().map(Node::id).collect();
    let mut listed = registry
        .placer("workers", Placement::Local)
        .nodes()
        .await
        .unwrap();
    expected.sort();
    listed.sort();
    assert_eq!(listed, expected, "the group lists the workers");
    // Local: on the client itself, which is not in the group.
    register(client);
    let local = registry.placer("workers", Placement::Local);
    let r: CounterRef = local.spawn("counter", 5u64).await.unwrap();
    assert!(r.core().is_local());
    assert_eq!(r.total().await, Ok(5));
    // Node(id): every spawn on that node.
    let target = c.nodes[2].id();
    let placer = registry.placer("workers", Placement::Node(target));
    let mut refs = Vec::new();
    for n in 0..3u64 {
        refs.push(placer.spawn::<CounterRef, _>("counter", n).await.unwrap());
    }
    assert_eq!(spread(client, &refs), HashMap::from([(target, 3)]));
    assert_eq!(refs[2].add(1).await, Ok(3));
    // Node(id) of a connected node outside the group: reached directly.
    let outside = registry.placer("nobody", Placement::Node(c.nodes[1].id()));
    let r: CounterRef = outside.spawn("counter", 0u64).await.unwrap();
    assert_eq!(home(client, &r), c.nodes[1].id());
}

async fn placement_round_robin_spreads_evenly(transport: Transport) {
    let c = workers(transport, 3).await;
    let client = &c.nodes[0];
    let placer = c.registries[0].placer("workers", Placement::RoundRobin);
    let mut refs = Vec::new();
    for n in 0..6u64 {
        refs.push(placer.spawn::<CounterRef, _>("counter", n).await.unwrap());
    }
    let expected: HashMap<NodeId, usize> = c.nodes[1..].iter().map(|n| (n.id(), 2)).collect();
    assert_eq!(spread(client, &refs), expected);
    // In turn: the second round visits the nodes in the first round's order.
    let first: Vec<NodeId> = refs[..3].iter().map(|r| home(client, r)).collect();
    let second: Vec<NodeId> = refs[3..].iter().map(|r| home(client, r)).collect();
    assert_eq!(first, second);
    for (n, r) in refs.iter().enumerate() {
        assert_eq!(
            r.total().await,
            Ok(n as u64),
            "each made from its own arguments"
        );
    }
    for worker in &c.nodes[1..] {
        assert!(worker.stats().actors >= 2);
    }
}

async fn placement_random_reaches_every_node(transport: Transport) {
    let c = workers(transport, 3).await;
    let client = &c.nodes[0];
    let placer = c.registries[0].placer("workers", Placement::Random);
    let mut refs = Vec::new();
    // Missing one of three nodes in 60 fair picks has odds of about 3 in 10^10.
    for _ in 0..60 {
        refs.push(
            placer
                .spawn::<CounterRef, _>("counter", 0u64)
                .await
                .unwrap(),
        );
        if spread(client, &refs).len() == 3 {
            break;
        }
    }
    let spread = spread(client, &refs);
    assert_eq!(spread.len(), 3, "every node was picked: {spread:?}");
    assert_eq!(spread.values().sum::<usize>(), refs.len());
}

async fn placement_least_loaded_picks_the_emptiest_node(transport: Transport) {
    let c = workers(transport, 3).await;
    let client = &c.nodes[0];
    let workers = &c.nodes[1..];
    let base: Vec<usize> = workers.iter().map(|w| w.stats().actors).collect();
    // Load the workers unevenly: 6, 3 and 0 extra actors.
    let mut ballast: Vec<CounterRef> = Vec::new();
    for (worker, extra) in workers.iter().zip([6, 3, 0]) {
        for _ in 0..extra {
            ballast.push(worker.spawn(Tally::default()));
        }
    }
    let placer = c.registries[0].placer("workers", Placement::LeastLoaded);
    let first: CounterRef = placer.spawn("counter", 0u64).await.unwrap();
    assert_eq!(home(client, &first), workers[2].id(), "the emptiest node");
    // Every pick is a node that ran the fewest actors just before it.
    for _ in 0..6 {
        let loads: HashMap<NodeId, usize> =
            workers.iter().map(|w| (w.id(), w.stats().actors)).collect();
        let least = *loads.values().min().unwrap();
        let r: CounterRef = placer.spawn("counter", 0u64).await.unwrap();
        let picked = home(client, &r);
        assert_eq!(
            loads[&picked], least,
            "picked {picked} with loads {loads:?}"
        );
    }
    // Seven spawns filled the two lighter nodes evenly, and never the heaviest.
    let added: Vec<usize> = workers
        .iter()
        .zip(&base)
        .map(|(w, base)| w.stats().actors - base)
        .collect();
    assert_eq!(added, [6, 3 + 2, 7 - 2]);
}

async fn placement_without_nodes_and_after_withdrawal(transport: Transport) {
    let c = cluster(transport, 3).await;
    let registry = &c.registries[0];
    let placer = registry.placer("workers", Placement::RoundRobin);
    let err = placer
        .spawn::<CounterRef, _>("counter", 0u64)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PlacementError::NoNodes {
            group: "workers".into()
        }
    );
    // Two nodes offer; one withdraws by stopping the spawner it offered.
    let mut offered = Vec::new();
    for (node, registry) in c.nodes.iter().zip(&c.registries).skip(1) {
        register(node);
        offered.push(registry.offer_spawning("workers").await.unwrap());
    }
    assert_eq!(placer.nodes().await.unwrap().len(), 2);
    c.nodes[1].stop(&offered[0]);
    let mut left = placer.nodes().await.unwrap();
    for _ in 0..100 {
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = placer.nodes().await.unwrap();
    }
    assert_eq!(left, [c.nodes[2].id()]);
    for _ in 0..3 {
        let r: CounterRef = placer.spawn("counter", 0u64).await.unwrap();
        assert_eq!(home(&c.nodes[0], &r), c.nodes[2].id());
    }
    // The withdrawn node still spawns for those who name it.
    let r: CounterRef = c.nodes[0]
        .spawn_on(c.nodes[1].id(), "counter", 0u64)
        .await
        .unwrap();
    assert_eq!(home(&c.nodes[0], &r), c.nodes[1].id());
}
