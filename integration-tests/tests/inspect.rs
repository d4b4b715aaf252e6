//! The inspector (`remora::inspect`) asked from another node, over both
//! transports: the per-method counters count exactly the calls made and the
//! errors by kind, the actor list shows a busy actor's mailbox, and an allow
//! list refuses the names it leaves out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use remora::inspect::{ActorState, InspectError, InspectorRef, MethodStats, INSPECTOR_OBJECT};
use remora::{Actor, Mailbox, Node, Restart, SpawnOptions};
use remora_integration_tests::*;
use tokio::sync::Notify;
use tokio::time::timeout;

/// The server's inspector, as the client reaches it.
fn inspector(client: &Node, server: &Node) -> InspectorRef {
    client.reference(server.id(), INSPECTOR_OBJECT).unwrap()
}

/// The figures of `interface.method`.
fn method<'a>(stats: &'a [MethodStats], interface: &str, method: &str) -> &'a MethodStats {
    stats
        .iter()
        .find(|m| m.interface == interface && m.method == method)
        .unwrap_or_else(|| panic!("no figures for {interface}.{method} in {stats:?}"))
}

async fn the_method_counters_count_exactly_the_calls_made(transport: Transport) {
    let pair = Pair::with_each(
        transport,
        Node::builder().name("server"),
        Node::builder().name("client"),
    )
    .await;
    let (server, client) = (&pair.server, &pair.client);
    let counter: CounterRef = server.spawn(Tally::default());
    let restart = Restart {
        max: 3,
        within: std::time::Duration::from_secs(60),
    };
    let crasher: CounterRef = server.spawn_with(
        Tally::default(),
        SpawnOptions::new().restart(restart, Tally::default),
    );
    let remote = reach(client, server, &counter);
    for n in 1..=3 {
        assert_eq!(remote.add(n).await.unwrap(), n * (n + 1) / 2);
    }
    // A call from the server itself: counted, not timed.
    assert_eq!(counter.add(4).await, Ok(10));
    let remote_crasher = reach(client, server, &crasher);
    assert!(matches!(
        remote_crasher.crash("on purpose".into()).await,
        Err(remora::CallError::Panicked { .. })
    ));
    // Once restarted, it answers again.
    assert_eq!(remote_crasher.total().await, Ok(0));
    // A newer build's method the server lacks, twice.
    let newer: CounterV2Ref = client
        .reference(server.id(), server.export(&counter).unwrap())
        .unwrap();
    for _ in 0..2 {
        assert!(matches!(
            newer.reset_all().await,
            Err(remora::CallError::UnknownMethod { .. })
        ));
    }

    let stats = inspector(client, server).methods().await.unwrap().unwrap();
    let add = method(&stats, "Counter", "add");
    assert_eq!(add.calls, 4, "{add:?}");
    assert!(add.errors.is_empty(), "{add:?}");
    assert_eq!(
        add.latency.count(),
        3,
        "only the calls from the client are timed"
    );
    assert!(add.latency.quantile(0.5).is_some());
    let crash = method(&stats, "Counter", "crash");
    assert_eq!((crash.calls, crash.errors.get("Panicked")), (1, Some(&1)));
    let unknown = method(&stats, "Counter", "?");
    assert_eq!(unknown.calls, 2);
    assert_eq!(unknown.errors.get("UnknownMethod"), Some(&2), "{unknown:?}");
    let total = method(&stats, "Counter", "total");
    assert_eq!((total.calls, total.error_count()), (1, 0));
    let seen = method(&stats, "Counter", "seen");
    assert_eq!((seen.calls, seen.latency.count()), (0, 0));

    let actors = inspector(client, server).actors().await.unwrap().unwrap();
    let find = |r: &CounterRef| {
        let object = server.export(r).unwrap();
        actors
            .iter()
            .find(|a| a.object == Some(object))
            .unwrap_or_else(|| panic!("actor of {object} missing from {actors:?}"))
            .clone()
    };
    let (counted, crashed) = (find(&counter), find(&crasher));
    assert_eq!((counted.handled, counted.panics), (4, 0));
    assert_eq!(counted.interface, "Counter");
    assert!(counted.actor_type.ends_with("Tally"), "{counted:?}");
    assert_eq!(
        (crashed.handled, crashed.panics, crashed.restarts),
        (2, 1, 1)
    );
}

/// Holds its caller's call until released; tells queue behind it meanwhile.
#[remora::remote]
pub trait Gate {
    async fn hold(&mut self) -> u64;
    #[oneway]
    async fn knock(&mut self);
}

struct Door {
    held: Arc<AtomicBool>,
    release: Arc<Notify>,
    knocks: u64,
}

impl Actor for Door {}

impl Gate for Door {
    async fn hold(&mut self) -> u64 {
        self.held.store(true, Ordering::SeqCst);
        // Bounded: a test that forgets to release still ends.
        let _ = timeout(SAFETY, self.release.notified()).await;
        self.knocks
    }
    async fn knock(&mut self) {
        self.knocks += 1;
    }
}

async fn the_actor_list_shows_a_busy_actors_mailbox(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (server, client) = (&pair.server, &pair.client);
    let (held, release) = (Arc::new(AtomicBool::new(false)), Arc::new(Notify::new()));
    let door = Door {
        held: held.clone(),
        release: release.clone(),
        knocks: 0,
    };
    let gate: GateRef = server.spawn_with(door, SpawnOptions::new().mailbox(Mailbox::bounded(16)));
    let idle: CounterRef = server.spawn(Tally::default());
    let object = server.export(&gate).unwrap();
    let idle_object = server.export(&idle).unwrap();
    let holding = tokio::spawn({
        let gate = gate.clone();
        async move { gate.hold().await }
    });
    until("the gate holds its call", || held.load(Ordering::SeqCst)).await;
    for _ in 0..5 {
        gate.knock().await.unwrap();
    }

    let actors = inspector(client, server).actors().await.unwrap().unwrap();
    let busy = actors.iter().find(|a| a.object == Some(object)).unwrap();
    assert_eq!(busy.state, ActorState::Busy);
    assert_eq!(busy.mailbox.length, 5, "{busy:?}");
    assert_eq!(
        (busy.mailbox.kind.as_str(), busy.mailbox.capacity),
        ("bounded", 16)
    );
    let calm = actors
        .iter()
        .find(|a| a.object == Some(idle_object))
        .unwrap();
    assert_eq!((calm.state, calm.mailbox.length), (ActorState::Idle, 0));
    assert!(
        actors
            .iter()
            .any(|a| a.interface == "remora.Inspector" && a.state == ActorState::Busy),
        "the inspector is at work answering: {actors:?}"
    );

    release.notify_one();
    assert_eq!(timeout(SAFETY, holding).await.unwrap().unwrap(), Ok(0));
    // Behind the knocks: once it answers, they have all been handled.
    release.notify_one();
    assert_eq!(gate.hold().await, Ok(5));
    let actors = server.inspector().actors().await.unwrap().unwrap();
    let done = actors.iter().find(|a| a.object == Some(object)).unwrap();
    assert_eq!((done.mailbox.length, done.handled), (0, 7));
}

async fn an_allow_list_refuses_the_names_it_leaves_out(transport: Transport) {
    let server = || {
        Node::builder()
            .name("server")
            .allow_inspection_from(["operator"])
    };
    let allowed = Pair::with_each(transport, server(), Node::builder().name("operator")).await;
    let node = inspector(&allowed.client, &allowed.server)
        .node()
        .await
        .unwrap();
    assert_eq!(node.unwrap().id, allowed.server.id());

    let refused = Pair::with_each(transport, server(), Node::builder().name("intruder")).await;
    let answer = inspector(&refused.client, &refused.server)
        .actors()
        .await
        .unwrap();
    match answer {
        Err(err @ InspectError::NotAllowed { .. }) => {
            assert_eq!(
                err,
                InspectError::NotAllowed {
                    node: refused.server.id(),
                    identity: "intruder".into()
                }
            );
            assert!(err.to_string().contains("allow_inspection_from"), "{err}");
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }
    // The node itself may always look.
    assert!(refused.server.inspector().actors().await.unwrap().is_ok());
}

async fn a_node_describes_itself_and_its_connections(transport: Transport) {
    let pair = Pair::with_each(
        transport,
        Node::builder().name("server"),
        Node::builder().name("client"),
    )
    .await;
    let (server, client) = (&pair.server, &pair.client);
    let counter: CounterRef = server.spawn(Tally::default());
    let broker: BrokerRef = server.spawn(Keeper {
        held: Some(counter.clone()),
    });
    // The counter's reference travels to the client: the client holds a lease.
    let remote = reach(client, server, &broker)
        .give()
        .await
        .unwrap()
        .unwrap();
    remote.add(1).await.unwrap();
    let inspector = inspector(client, server);
    let node = inspector.node().await.unwrap().unwrap();
    assert_eq!(
        (node.id, node.name.as_deref(), node.incarnation),
        (server.id(), Some("server"), server.incarnation())
    );
    assert_eq!(node.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(node.connections, 1);

    let conns = inspector.conns().await.unwrap().unwrap();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let conn = &conns[0];
    assert_eq!(
        (conn.peer, conn.name.as_deref()),
        (client.id(), Some("client"))
    );
    assert!(conn.bytes_received > 0 || conn.transport == "in-process");
    match transport {
        Transport::Quic => {
            let quic = conn.quic.as_ref().expect("QUIC figures");
            assert!(
                quic.bytes_received > 0 && quic.stream_frames_received > 0,
                "{quic:?}"
            );
        }
        Transport::InProcess => assert_eq!(conn.quic, None),
    }

    // The client holds a lease on the counter it has a proxy for.
    let leases = inspector.leases().await.unwrap().unwrap();
    let object = client.wire_ref(&remote).object;
    let export = leases.exports.iter().find(|e| e.object == object).unwrap();
    assert!(
        export
            .leases
            .iter()
            .any(|l| l.node == client.id() && l.expires_in_ms > 0),
        "{export:?}"
    );
    let theirs = client.inspector().leases().await.unwrap().unwrap();
    assert!(
        theirs
            .held
            .iter()
            .any(|h| h.node == server.id() && h.object == object),
        "{theirs:?}"
    );
}

both_transports!(
    the_method_counters_count_exactly_the_calls_made,
    the_actor_list_shows_a_busy_actors_mailbox,
    an_allow_list_refuses_the_names_it_leaves_out,
    a_node_describes_itself_and_its_connections,
);
