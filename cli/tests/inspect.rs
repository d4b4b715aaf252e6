//! `remora inspect` and `remora top` against a `LocalCluster` of three node
//! processes (`remora-fixture-node`): every actor the test spawned shows, with
//! the right mailbox length while one is held busy; `--json` parses; a node of
//! another cluster, and a node whose allow list leaves the caller out, are
//! refused with errors that say so.

use std::process::{Command, Output};
use std::time::Duration;

use remora::inspect::{ActorInfo, ActorState, InspectorRef, NodeInfo, INSPECTOR_OBJECT};
use remora::{Node, NodeId, ObjectId};
use remora_testing::LocalCluster;

include!("../fixture/interface.rs");

const REMORA: &str = env!("CARGO_BIN_EXE_remora");
const FIXTURE: &str = env!("CARGO_BIN_EXE_remora-fixture-node");
const SAFETY: Duration = Duration::from_secs(10);

/// `remora ARGS...`, run to its end (off the runtime's threads).
async fn remora(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(REMORA)
            .args(&args)
            .output()
            .expect("remora runs")
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// `remora inspect ADDR VIEW --json` with the cluster's credentials, parsed.
async fn inspect_json<T: serde::de::DeserializeOwned>(addr: &str, view: &str, dir: &str) -> T {
    let out = remora(args(&[
        "inspect",
        addr,
        view,
        "--json",
        "--credentials",
        dir,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

fn object(me: &Node, turnstile: &TurnstileRef) -> ObjectId {
    me.wire_ref(turnstile).object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_every_actor_with_its_mailbox_across_a_cluster() {
    let mut cluster = LocalCluster::new().unwrap();
    for _ in 0..3 {
        cluster.start(FIXTURE, [""; 0]).unwrap();
    }
    let dir = cluster.credentials().to_str().unwrap().to_owned();
    let me = cluster.builder().name("test").build().await.unwrap();
    let mut nodes: Vec<(String, NodeId, Vec<TurnstileRef>)> = Vec::new();
    for node in cluster.nodes().iter() {
        let id: NodeId = node.ready[0].parse().unwrap();
        assert_eq!(me.connect(&node.addr).await, Ok(id));
        let mut spawned = Vec::new();
        for _ in 0..2 {
            spawned.push(
                me.spawn_on::<TurnstileRef, _>(id, "turnstile", ())
                    .await
                    .unwrap(),
            );
        }
        nodes.push((node.addr.clone(), id, spawned));
    }

    // The first turnstile of the second node is held busy, five knocks behind it.
    let (busy_addr, busy_node, turnstiles) = &nodes[1];
    let held = turnstiles[0].clone();
    let holding = tokio::spawn({
        let held = held.clone();
        async move { held.hold(SAFETY.as_millis() as u64).await }
    });
    let inspector: InspectorRef = me.reference(*busy_node, INSPECTOR_OBJECT).unwrap();
    let held_object = object(&me, &held);
    // Waits until the held turnstile's (handled, queued) are as `wanted` says.
    let until = |wanted: fn(u64, usize) -> bool| {
        let inspector = inspector.clone();
        async move {
            let deadline = tokio::time::Instant::now() + SAFETY;
            loop {
                let actors = inspector.actors().await.unwrap().unwrap();
                let held = actors.iter().find(|a| a.object == Some(held_object));
                let held = held.expect("the held turnstile is listed");
                if wanted(held.handled, held.mailbox.length) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not as wanted: {held:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Its hold runs first, then the knocks queue behind it.
    until(|handled, _| handled == 1).await;
    for _ in 0..5 {
        held.knock().await.unwrap();
    }
    until(|handled, queued| handled == 1 && queued == 5).await;

    for (addr, id, spawned) in &nodes {
        let actors: Vec<ActorInfo> = inspect_json(addr, "actors", &dir).await;
        for turnstile in spawned {
            let object = object(&me, turnstile);
            let actor = actors
                .iter()
                .find(|a| a.object == Some(object))
                .unwrap_or_else(|| panic!("{object} missing on {id}: {actors:?}"));
            assert_eq!(actor.interface, "fixture.Turnstile");
            assert_eq!(
                (actor.mailbox.kind.as_str(), actor.mailbox.capacity),
                ("bounded", 1024)
            );
            if object == held_object {
                assert_eq!(
                    (actor.state, actor.mailbox.length),
                    (ActorState::Busy, 5),
                    "{actor:?}"
                );
            } else {
                assert_eq!(actor.mailbox.length, 0, "{actor:?}");
            }
        }
        let ours = actors.iter().filter(|a| a.interface == "fixture.Turnstile");
        assert_eq!(ours.count(), 2, "only what the test spawned: {actors:?}");
        let node: NodeInfo = inspect_json(addr, "node", &dir).await;
        assert_eq!((node.id, node.name.as_deref()), (*id, Some("fixture")));
    }

    // The tables: a row per actor, the held one with its mailbox.
    let out = remora(args(&[
        "inspect",
        busy_addr,
        "actors",
        "--credentials",
        &dir,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("ACTOR"), "{table}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("fixture.Turnstile"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows.iter()
            .any(|r| r.contains(" 5/1024 ") && r.contains(" busy ")),
        "{table}"
    );

    // All parts as one JSON document.
    let all: serde_json::Value = inspect_json(busy_addr, "all", &dir).await;
    for part in ["node", "actors", "conns", "leases", "methods"] {
        assert!(all.get(part).is_some(), "{part} missing: {all}");
    }

    // `top`, twice, busiest first.
    let out = remora(args(&[
        "top",
        busy_addr,
        "--iterations",
        "2",
        "--interval-ms",
        "100",
        "--credentials",
        &dir,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screens = text(&out.stdout);
    let headers: Vec<&str> = screens
        .lines()
        .filter(|l| l.starts_with("remora top "))
        .collect();
    assert_eq!(headers.len(), 2, "{screens}");
    let first_rows: Vec<&str> = screens
        .lines()
        .skip_while(|l| !l.starts_with("ACTOR"))
        .skip(1)
        .take(1)
        .collect();
    assert!(
        first_rows[0].contains(" 5/1024 "),
        "the busiest first: {screens}"
    );

    turnstiles[1].release_all().await.unwrap();
    assert_eq!(
        tokio::time::timeout(SAFETY, holding)
            .await
            .unwrap()
            .unwrap(),
        Ok(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_or_off_the_allow_list_is_refused_clearly() {
    let mut cluster = LocalCluster::new().unwrap();
    let open = cluster.start(FIXTURE, [""; 0]).unwrap().addr.clone();
    let guarded = cluster
        .start(FIXTURE, ["--allow-inspection", "operator"])
        .unwrap()
        .addr
        .clone();
    let dir = cluster.credentials().to_str().unwrap().to_owned();

    let other = LocalCluster::new().unwrap();
    let other_dir = other.credentials().to_str().unwrap().to_owned();
    let out = remora(args(&["inspect", &open, "--credentials", &other_dir])).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("wrong cluster") && err.contains("--credentials"),
        "{err}"
    );

    let out = remora(args(&["inspect", &guarded, "node", "--credentials", &dir])).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("not allowed") && err.contains("remora-inspect"),
        "names the refused identity: {err}"
    );

    // Nothing listens at a port just freed: unreachable, said so.
    let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let out = remora(args(&["inspect", &addr, "--credentials", &dir])).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unreachable"),
        "{}",
        text(&out.stderr)
    );
}

/// `--registry`: an actor bound under a name shows that name (and its group),
/// in the table, in `--json` (`names`, `groups`) and in `top`; an actor bound
/// to nothing shows none; without `--registry` the node alone cannot say, so
/// neither the column nor the fields are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_registry_an_actor_shows_the_names_bound_to_it() {
    let mut cluster = LocalCluster::new().unwrap();
    let registry = cluster
        .start(FIXTURE, ["--serve-registry", "5000"])
        .unwrap()
        .addr
        .clone();
    // A turnstile of its own, bound as `north` and in the group `turnstiles`.
    let bound_on = cluster
        .start(FIXTURE, ["--registry", &registry, "--bind", "north"])
        .unwrap();
    let (addr, id): (String, NodeId) = (bound_on.addr.clone(), bound_on.ready[0].parse().unwrap());
    let dir = cluster.credentials().to_str().unwrap().to_owned();
    let me = cluster.builder().name("test").build().await.unwrap();
    let names = remora_registry::Registry::connect(&me, &registry)
        .await
        .unwrap();
    let north: TurnstileRef = names.lookup("north").await.unwrap();
    let north_object = object(&me, &north);
    // Spawned (so exported, with an object id) but bound to nothing.
    assert_eq!(me.connect(&addr).await, Ok(id));
    let unbound: TurnstileRef = me.spawn_on(id, "turnstile", ()).await.unwrap();
    let unbound_object = object(&me, &unbound);

    let out = remora(args(&[
        "inspect",
        &addr,
        "actors",
        "--json",
        "--registry",
        &registry,
        "--credentials",
        &dir,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let actors: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by_object = |object: ObjectId| {
        let object = serde_json::to_value(object).unwrap();
        actors
            .iter()
            .find(|a| a["object"] == object)
            .unwrap_or_else(|| panic!("{object} missing: {actors:?}"))
            .clone()
    };
    let north_json = by_object(north_object);
    assert_eq!(
        north_json["names"],
        serde_json::json!(["north"]),
        "{north_json}"
    );
    assert_eq!(
        north_json["groups"],
        serde_json::json!(["turnstiles"]),
        "{north_json}"
    );
    let unbound_json = by_object(unbound_object);
    assert_eq!(
        unbound_json["names"],
        serde_json::json!([]),
        "{unbound_json}"
    );
    assert_eq!(
        unbound_json["groups"],
        serde_json::json!([]),
        "{unbound_json}"
    );
    // Still the node's own fields, as before.
    let _: Vec<ActorInfo> = serde_json::from_slice(&out.stdout).unwrap();

    // The table: a BOUND AS column, `north` on one turnstile's row only.
    let out = remora(args(&[
        "inspect",
        &addr,
        "actors",
        "--registry",
        &registry,
        "--credentials",
        &dir,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.lines().next().unwrap().contains("BOUND AS"),
        "{table}"
    );
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("fixture.Turnstile"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    let named: Vec<&&str> = rows
        .iter()
        .filter(|r| r.contains(" north ") && r.contains(" turnstiles "))
        .collect();
    assert_eq!(named.len(), 1, "{table}");

    // `all --json` carries them too.
    let out = remora(args(&[
        "inspect",
        &addr,
        "all",
        "--json",
        "--registry",
        &registry,
        "--credentials",
        &dir,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = all["actors"].as_array().expect("actors");
    assert!(
        listed
            .iter()
            .any(|a| a["names"] == serde_json::json!(["north"])),
        "{all}"
    );

    // Without --registry: no names, no column.
    let plain: Vec<serde_json::Value> = inspect_json(&addr, "actors", &dir).await;
    assert!(plain.iter().all(|a| a.get("names").is_none()), "{plain:?}");
    let out = remora(args(&["inspect", &addr, "actors", "--credentials", &dir])).await;
    assert!(
        !text(&out.stdout).contains("BOUND AS"),
        "{}",
        text(&out.stdout)
    );

    // `top --registry`.
    let out = remora(args(&[
        "top",
        &addr,
        "--iterations",
        "1",
        "--registry",
        &registry,
        "--credentials",
        &dir,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screen = text(&out.stdout);
    assert!(
        screen.contains("BOUND AS") && screen.contains(" north "),
        "{screen}"
    );
}
