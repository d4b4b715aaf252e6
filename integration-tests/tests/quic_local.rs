//! The QUIC transport between nodes of one process (ephemeral cluster credentials):
//! the same scenarios as in-process, over real sockets on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use remora::{CallError, Interface, Node, StopReason};
use remora_integration_tests::*;
use tokio::time::timeout;

async fn listening() -> Node {
    Node::builder().listen("127.0.0.1:0").build().await.unwrap()
}

/// A server listening on loopback, a client connected to it, and a proxy.
async fn pair() -> (Node, Node, CounterRef, CounterRef) {
    let server = listening().await;
    let client = node().await;
    let addr = server.listen_addr().unwrap().to_string();
    let peer = client.connect(&addr).await.unwrap();
    assert_eq!(peer, server.id());
    let counter: CounterRef = server.spawn(Tally::default());
    let remote: CounterRef = reach(&client, &server, &counter);
    (server, client, counter, remote)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_tells_travel_over_quic_in_order() {
    let (_server, _client, local, remote) = pair().await;
    assert_eq!(remote.add(2).await, Ok(2));
    for n in 0..300 {
        remote.bump(n).await.unwrap();
    }
    let mut expected = vec![2];
    expected.extend(0..300);
    assert_eq!(remote.seen().await.unwrap(), expected);
    assert_eq!(local.total().await, Ok(2 + (0..300).sum::<u64>()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_pass_both_ways_over_quic() {
    let (server, client, _local, _remote) = pair().await;
    let broker: BrokerRef = server.spawn(Keeper::default());
    let broker: BrokerRef = reach(&client, &server, &broker);
    let mine: CounterRef = client.spawn(Tally::default());
    assert_eq!(broker.hold(mine.clone()).await, Ok(true));
    assert_eq!(broker.add_through(5).await, Ok(5));
    assert_eq!(mine.total().await, Ok(5));
    let back = broker.give().await.unwrap().unwrap();
    assert!(Interface::core(&back).is_local());
}

/// Two actors sharing one log of the calls they handled, in the order they ran.
#[remora::remote]
pub trait Probe {
    async fn big(&mut self, bytes: Vec<u8>) -> usize;
    async fn small(&mut self, n: u64) -> u64;
}

struct Logged(Arc<Mutex<Vec<String>>>);

impl remora::Actor for Logged {}

impl Probe for Logged {
    async fn big(&mut self, bytes: Vec<u8>) -> usize {
        self.0.lock().unwrap().push("big".into());
        bytes.len()
    }

    async fn small(&mut self, n: u64) -> u64 {
        self.0.lock().unwrap().push(format!("small {n}"));
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_argument_to_one_actor_does_not_hold_up_a_small_call_to_another() {
    // Frames of 64 MiB need a raised limit on both sides (the default is 16 MiB).
    let big_frames = |b: remora::NodeBuilder| b.max_frame_size(80 << 20);
    let server = big_frames(Node::builder().listen("127.0.0.1:0"))
        .build()
        .await
        .unwrap();
    let client = big_frames(Node::builder()).build().await.unwrap();
    client
        .connect(server.listen_addr().unwrap().to_string())
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let one: ProbeRef = server.spawn(Logged(log.clone()));
    let one: ProbeRef = reach(&client, &server, &one);
    let another: ProbeRef = server.spawn(Logged(log.clone()));
    let another: ProbeRef = reach(&client, &server, &another);
    // 64 MiB on one actor's stream...
    let before = server.stats().bytes_received;
    let big = tokio::spawn(async move { one.big(vec![7u8; 64 << 20]).await });
    // ...known to be on the wire (the server has read a few MiB of it)...
    until("the large call got going", || {
        server.stats().bytes_received >= before + (4 << 20)
    })
    .await;
    assert!(
        log.lock().unwrap().is_empty(),
        "the large call is still arriving"
    );
    // ...while small calls to another actor arrive on their own stream and run
    // before it: on a shared stream they would queue behind its 64 MiB.
    for n in 1..=20 {
        assert_eq!(another.small(n).await, Ok(n));
    }
    let smalls: Vec<String> = (1..=20).map(|n| format!("small {n}")).collect();
    assert_eq!(
        *log.lock().unwrap(),
        smalls,
        "all small calls ran, the large one not yet"
    );
    assert_eq!(timeout(SAFETY, big).await.unwrap().unwrap(), Ok(64 << 20));
    assert_eq!(log.lock().unwrap().last().map(String::as_str), Some("big"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_collapse_to_one_connection() {
    let a = listening().await;
    let b = listening().await;
    let a_addr = a.listen_addr().unwrap().to_string();
    let b_addr = b.listen_addr().unwrap().to_string();
    let (ab, ba) = tokio::join!(a.connect(&b_addr), b.connect(&a_addr));
    assert_eq!((ab.unwrap(), ba.unwrap()), (b.id(), a.id()));
    // Whatever connection each side kept, calls work both ways.
    let on_b: CounterRef = b.spawn(Tally::default());
    let on_a: CounterRef = a.spawn(Tally::default());
    let from_a: CounterRef = reach(&a, &b, &on_b);
    let from_b: CounterRef = reach(&b, &a, &on_a);
    for _ in 0..3 {
        assert_eq!(from_a.add(1).await.map(|_| ()), Ok(()));
        assert_eq!(from_b.add(1).await.map(|_| ()), Ok(()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_peer_is_node_down_for_its_monitors_and_later_calls() {
    let (server, client, _local, remote) = pair().await;
    assert_eq!(remote.add(1).await, Ok(1));
    let gone = client.monitor(&remote);
    server.shutdown().await;
    assert!(matches!(
        timeout(SAFETY, gone).await.unwrap(),
        StopReason::NodeDown { .. }
    ));
    // The route redials the peer's address; the node is gone, so that fails too.
    let err = remote.add(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            CallError::NodeDown { .. } | CallError::ConnectFailed { .. }
        ),
        "{err:?}"
    );
    assert!(!err.may_have_executed());
}

/// A node gone is named as a person knows it: the name it was built with and
/// the address it listens at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gone_is_named_by_its_name_and_address() {
    let server = Node::builder()
        .name("ledger-1")
        .listen("127.0.0.1:0")
        .build()
        .await
        .unwrap();
    let addr = server.listen_addr().unwrap().to_string();
    let client = node().await;
    client.connect(&addr).await.unwrap();
    let counter: CounterRef = server.spawn(Tally::default());
    let remote: CounterRef = reach(&client, &server, &counter);
    assert_eq!(remote.add(1).await, Ok(1));
    // (A call in flight through a shutdown may be answered ActorStopped, or wait
    // out its handler: the exact NodeDown text is asserted across processes, with
    // kill -9, in quic_processes.rs.)
    server.shutdown().await;
    until("the connection is gone", || client.stats().connections == 0).await;
    // Redialled, the node is still known by its name.
    let again = remote.add(1).await.unwrap_err();
    assert!(
        again
            .to_string()
            .contains(&format!("\"ledger-1\" at {addr}")),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_is_connect_failed_at_the_connect_timeout() {
    // A peer timeout far longer than the test: only the connect timeout can end it.
    let client = Node::builder()
        .peer_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    // A port nobody listens on: the handshake never completes.
    let err = timeout(SAFETY, client.connect("127.0.0.1:9"))
        .await
        .expect("the connect timeout, not the peer timeout, ends the dial")
        .unwrap_err();
    let CallError::ConnectFailed { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("connect timeout"), "{reason}");
    assert!(
        err.to_string()
            .starts_with("could not connect to 127.0.0.1:9: "),
        "{err}"
    );
    assert!(!err.may_have_executed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_to_a_third_node_is_dialed_by_its_receiver() {
    let a = node().await;
    let b = listening().await;
    let c = listening().await;
    a.connect(b.listen_addr().unwrap().to_string())
        .await
        .unwrap();
    a.connect(c.listen_addr().unwrap().to_string())
        .await
        .unwrap();
    // B has never heard of C.
    let counter_on_c: CounterRef = c.spawn(Tally::default());
    let counter: CounterRef = reach(&a, &c, &counter_on_c);
    let broker_on_b: BrokerRef = b.spawn(Keeper::default());
    let broker: BrokerRef = reach(&a, &b, &broker_on_b);
    assert_eq!(broker.hold(counter).await, Ok(true));
    // B calls C: it dials C at the address the reference carries.
    assert_eq!(broker.add_through(5).await, Ok(5));
    assert_eq!(counter_on_c.total().await, Ok(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_the_server_does_not_have_is_unknown_method_over_quic() {
    let (server, client, counter, _remote) = pair().await;
    let newer: CounterV2Ref = client
        .reference(server.id(), server.export(&counter).unwrap())
        .unwrap();
    let err = newer.reset_all().await.unwrap_err();
    assert!(matches!(err, CallError::UnknownMethod { .. }), "{err:?}");
    assert_eq!(newer.add(3).await, Ok(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argument_over_the_peers_frame_limit_fails_that_call_only() {
    let server = Node::builder()
        .listen("127.0.0.1:0")
        .max_frame_size(64 * 1024)
        .build()
        .await
        .unwrap();
    let client = node().await;
    client
        .connect(server.listen_addr().unwrap().to_string())
        .await
        .unwrap();
    let counter: CounterRef = server.spawn(Tally::default());
    let remote: CounterRef = reach(&client, &server, &counter);
    let other: CounterRef = server.spawn(Tally::default());
    let other: CounterRef = reach(&client, &server, &other);
    let mut watch = Box::pin(client.monitor(&other));
    assert!(
        timeout(Duration::ZERO, &mut watch).await.is_err(),
        "watching"
    );
    // The client's limit is 16 MiB, the server's 64 KiB, which the server
    // announced when they connected: the client refuses the call itself.
    let err = remote.echo_bytes(vec![1; 256 * 1024]).await.unwrap_err();
    assert!(
        matches!(err, CallError::TooLarge { max: 65536, len } if len > 256 * 1024),
        "{err:?}"
    );
    assert!(!err.may_have_executed());
    // Nothing was sent, so nothing was reset or lost: both actors answer on the
    // one connection there was, and the monitor over it never fired.
    assert_eq!(remote.add(1).await, Ok(1));
    assert_eq!(other.add(1).await, Ok(1));
    assert_eq!(client.stats().connections, 1);
    assert_eq!(server.stats().connections, 1);
    assert!(
        timeout(Duration::ZERO, &mut watch).await.is_err(),
        "still up"
    );
}

/// A call alone in flight reads its lane's replies itself while it waits (quinn
/// wakes its task, not the lane's reader task). A reply too large to read
/// without room from the receive budget is left to the reader task, which
/// waits for the room; the caller has its answer all the same, and so has the
/// next call on the lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_calls_large_reply_is_read_past_its_room_over_quic() {
    let (_server, client, _counter, remote) = pair().await;
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    for round in 0..3 {
        let back = timeout(SAFETY, remote.echo_bytes(big.clone())).await;
        assert!(
            back.as_ref().is_ok_and(|back| back.as_ref() == Ok(&big)),
            "round {round}: {:?}",
            back.map(|b| b.map(|b| b.len()))
        );
        assert_eq!(timeout(SAFETY, remote.add(1)).await, Ok(Ok(round + 1)));
    }
    assert_eq!(client.stats().connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_panic_is_panicked_and_a_wrong_interface_is_a_mismatch_over_quic() {
    let (server, client, counter, remote) = pair().await;
    let err = remote.crash("quic boom".into()).await.unwrap_err();
    assert_eq!(
        err,
        CallError::Panicked {
            message: "quic boom".into()
        }
    );
    assert!(matches!(
        timeout(SAFETY, server.monitor(&counter)).await.unwrap(),
        StopReason::Panicked { .. }
    ));
    let broker: BrokerRef = server.spawn(Keeper::default());
    let wrong: CounterRef = client
        .reference(server.id(), server.export(&broker).unwrap())
        .unwrap();
    let err = wrong.add(1).await.unwrap_err();
    assert!(
        matches!(&err, CallError::InterfaceMismatch { found, .. } if found == "Broker"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_over_quic_is_skipped_and_the_connection_keeps_working() {
    let (server, client, _counter, remote) = pair().await;
    assert_eq!(remote.add(1).await, Ok(1));
    assert!(client.inject_raw(server.id(), vec![0, 0, 0, 3, 0xc1, 0xc1, 0xc1]));
    assert!(client.inject_raw(server.id(), vec![0, 0, 0, 2, 0x81, 0x63]));
    assert_eq!(
        remote.add(1).await,
        Ok(2),
        "the server skipped them and serves on"
    );
}

/// A node behind NAT gives out the address it advertises, not the one it
/// listens on: references to its objects carry it, and a node handed one dials
/// it (here an address where nothing listens, so the dial fails naming it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_carry_the_advertised_address_and_peers_dial_it() {
    let server = Node::builder()
        .listen("127.0.0.1:0")
        .advertise("127.0.0.1:9")
        .build()
        .await
        .unwrap();
    assert_eq!(server.public_addr().as_deref(), Some("127.0.0.1:9"));
    assert_ne!(server.listen_addr().unwrap().port(), 9);
    let counter: CounterRef = server.spawn(Tally::default());
    let wire = server.wire_ref(&counter);
    assert_eq!(wire.addr.as_deref(), Some("127.0.0.1:9"));
    let stranger = Node::builder()
        .connect_timeout(std::time::Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let remote: CounterRef = stranger.resolve(&wire).unwrap();
    match remote.add(1).await {
        Err(err @ CallError::ConnectFailed { .. }) => {
            let CallError::ConnectFailed { label, .. } = &err else {
                unreachable!()
            };
            assert_eq!(label.addr(), Some("127.0.0.1:9"));
            let prefix = format!(
                "could not connect to node at 127.0.0.1:9 (id {}): ",
                server.id()
            );
            assert!(err.to_string().starts_with(&prefix), "{err}");
        }
        other => panic!("{other:?}"),
    }
    // Over the address it listens on, the object answers.
    let client = Node::builder().build().await.unwrap();
    client
        .connect(server.listen_addr().unwrap().to_string())
        .await
        .unwrap();
    let reached: CounterRef = client.resolve(&wire).unwrap();
    assert_eq!(reached.add(1).await, Ok(1));
}
