//! The QUIC transport across real OS processes on loopback: a test node runs in a
//! child process under the cluster credentials of a temporary directory.

use std::time::Duration;

use remora::{CallError, Credentials, Node, NodeLabel, StopReason};
use remora_integration_tests::*;
use tokio::time::timeout;

const TEST_NODE: &str = env!("CARGO_BIN_EXE_remora-test-node");

fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    Credentials::create_cluster(dir.path()).unwrap();
    dir
}

async fn client_of(dir: &std::path::Path) -> Node {
    Node::builder()
        .credentials(dir)
        .peer_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_runs_in_another_process() {
    let dir = cluster();
    let server = ChildNode::spawn(TEST_NODE, dir.path());
    let client = client_of(dir.path()).await;
    assert_eq!(client.connect(&server.addr).await, Ok(server.id));
    let counter: CounterRef = client.reference(server.id, server.counter).unwrap();
    assert_eq!(counter.add(20).await, Ok(20));
    assert_eq!(counter.add(22).await, Ok(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_pass_between_processes() {
    let dir = cluster();
    let server = ChildNode::spawn(TEST_NODE, dir.path());
    let client = client_of(dir.path()).await;
    client.connect(&server.addr).await.unwrap();
    let broker: BrokerRef = client.reference(server.id, server.broker).unwrap();
    let mine: CounterRef = client.spawn(Tally::default());
    assert_eq!(broker.hold(mine.clone()).await, Ok(true));
    // The other process calls back into this one through the reference.
    assert_eq!(broker.add_through(3).await, Ok(3));
    assert_eq!(mine.total().await, Ok(3));
    assert_eq!(broker.give().await.unwrap(), Some(mine));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_turns_calls_in_flight_into_node_down() {
    let dir = cluster();
    let mut server = ChildNode::spawn(TEST_NODE, dir.path());
    let client = client_of(dir.path()).await;
    client.connect(&server.addr).await.unwrap();
    let counter: CounterRef = client.reference(server.id, server.counter).unwrap();
    let probe: BrokerRef = client.reference(server.id, server.broker).unwrap();
    let gone = client.monitor(&counter);
    // A remote call sends its frame on its first poll.
    let mut slow = Box::pin(counter.nap(60_000));
    assert!(poll_once(&mut slow).await.is_pending());
    assert_eq!(
        probe.add_through(0).await,
        Ok(0),
        "the server is up and reading"
    );
    server.kill();
    // Noticed by the keep-alive within the peer timeout (3 s here), never the 30 s deadline.
    let err = timeout(SAFETY, slow)
        .await
        .expect("no call outlives the peer timeout")
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::NodeDown {
                may_have_executed: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        timeout(SAFETY, gone).await.unwrap(),
        StopReason::NodeDown { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_at_the_handshake() {
    let ours = cluster();
    let theirs = cluster();
    let server = ChildNode::spawn(TEST_NODE, ours.path());
    let stranger = client_of(theirs.path()).await;
    let err = timeout(SAFETY, stranger.connect(&server.addr))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, CallError::ConnectFailed { .. }), "{err:?}");
    // The error says why, and what to do.
    let text = err.to_string();
    assert!(
        text.contains("not signed by this node's cluster root")
            && text.contains("remora cert init")
            && text.contains(&server.addr),
        "{text}"
    );
    // Without a connection it cannot reach anything on that node.
    let counter = stranger.reference::<CounterRef>(server.id, server.counter);
    assert!(
        matches!(counter, Err(CallError::ConnectFailed { .. })),
        "{counter:?}"
    );
    // A member of the cluster still gets in.
    let member = client_of(ours.path()).await;
    assert_eq!(member.connect(&server.addr).await, Ok(server.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_handed_a_reference_to_a_third_process_dials_it() {
    let dir = cluster();
    let b = ChildNode::spawn(TEST_NODE, dir.path());
    let c = ChildNode::spawn(TEST_NODE, dir.path());
    let a = client_of(dir.path()).await;
    a.connect(&b.addr).await.unwrap();
    a.connect(&c.addr).await.unwrap();
    let counter_on_c: CounterRef = a.reference(c.id, c.counter).unwrap();
    let broker_on_b: BrokerRef = a.reference(b.id, b.broker).unwrap();
    // B (another process) receives a reference to C (a third process) and calls it.
    assert_eq!(broker_on_b.hold(counter_on_c.clone()).await, Ok(true));
    assert_eq!(broker_on_b.add_through(7).await, Ok(7));
    assert_eq!(counter_on_c.total().await, Ok(7));
}

/// An `#[exactly_once]` call sent to a node that is then killed and restarted
/// at the same address: its retry reaches the new process, which is not the
/// node it was sent to, so the call fails with `NodeRestarted`, and says that it
/// may have run (the earlier process had it, and its reply died with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_call_sent_before_a_restart_may_have_run() {
    let dir = cluster();
    let mut first = ChildNode::spawn(TEST_NODE, dir.path());
    let client = client_of(dir.path()).await;
    client.connect(&first.addr).await.unwrap();
    let counter: CounterRef = client.reference(first.id, first.counter).unwrap();
    let probe: BrokerRef = client.reference(first.id, first.broker).unwrap();
    let mut call = Box::pin(counter.nap_once(60_000));
    assert!(poll_once(&mut call).await.is_pending());
    // The call went out on its first poll; the server is up and answering.
    assert_eq!(probe.give().await, Ok(None));
    let addr = first.addr.clone();
    first.kill();
    let second = ChildNode::spawn_at(TEST_NODE, dir.path(), &addr);
    assert_ne!(second.id, first.id);
    let err = timeout(SAFETY, call).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            CallError::NodeRestarted {
                may_have_executed: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.may_have_executed());
}

/// A node killed and restarted at its address: the client learns it the moment
/// the new process answers it (here, a dial), not a peer timeout later (a minute
/// on both sides, so that only the new process can tell). Calls in flight to the
/// old process fail with `NodeRestarted` (they may have run there), an
/// `#[exactly_once]` call too (its reply memory died with the process), and
/// monitors of the old process's actors resolve with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_restarted_node_fail_as_soon_as_its_new_process_answers() {
    const PATIENT: Duration = Duration::from_secs(60);
    let patient = PATIENT.as_millis().to_string();
    let dir = cluster();
    let mut first = ChildNode::spawn_with(TEST_NODE, dir.path(), &["--peer-timeout-ms", &patient]);
    let client = Node::builder()
        .credentials(dir.path())
        .peer_timeout(PATIENT)
        .build()
        .await
        .unwrap();
    client.connect(&first.addr).await.unwrap();
    let counter: CounterRef = client.reference(first.id, first.counter).unwrap();
    let probe: BrokerRef = client.reference(first.id, first.broker).unwrap();
    let mut plain = Box::pin(counter.nap(60_000));
    let mut once = Box::pin(counter.nap_once(60_000));
    let watching = tokio::spawn(client.monitor(&probe));
    assert!(poll_once(&mut plain).await.is_pending());
    assert!(poll_once(&mut once).await.is_pending());
    until("the monitor is in place", || client.stats().monitors == 1).await;
    // Both calls went out on their first poll; the server is up and answering.
    assert_eq!(probe.give().await, Ok(None));
    let addr = first.addr.clone();
    first.kill();
    let second = ChildNode::spawn_with(
        TEST_NODE,
        dir.path(),
        &["--listen", &addr, "--peer-timeout-ms", &patient],
    );
    // The old connection is still open: nothing has told the client yet.
    assert!(poll_once(&mut plain).await.is_pending());
    assert_eq!(client.connect(&addr).await, Ok(second.id));
    // The new process answered: the plain call has failed already.
    let old = first.id;
    match poll_once(&mut plain).await {
        std::task::Poll::Ready(Err(err)) => assert_eq!(
            err,
            CallError::NodeRestarted {
                node: old,
                label: NodeLabel::new(Some("test-node"), Some(&addr)),
                may_have_executed: true
            }
        ),
        other => panic!("not failed when the new process answered: {other:?}"),
    }
    let err = timeout(SAFETY, once).await.unwrap().unwrap_err();
    assert_eq!(
        err,
        CallError::NodeRestarted {
            node: old,
            label: NodeLabel::new(Some("test-node"), Some(&addr)),
            may_have_executed: true
        }
    );
    assert!(err.to_string().contains("its reply died with it"), "{err}");
    // The message names the node as a person knows it: name, address, then id.
    assert!(
        err.to_string().starts_with(&format!(
            "node \"test-node\" at {addr} (id {old}) restarted since"
        )),
        "{err}"
    );
    assert_eq!(
        timeout(SAFETY, watching).await.unwrap().unwrap(),
        StopReason::NodeRestarted { node: old }
    );
    assert_eq!(client.stats().connections, 1);
}

/// A node restarted with the same key (its `node.key` kept on disk) answers the
/// packets of its earlier process's connections with QUIC stateless resets that
/// they accept: the client learns of the restart from its next keep-alive,
/// without dialing, and its call in flight fails with `NodeRestarted` (a peer
/// timeout would have made it `NodeDown`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_its_key_is_noticed_from_its_stateless_reset() {
    let dir = cluster();
    let node_dir = tempfile::tempdir().unwrap();
    Credentials::issue_named_node(dir.path(), node_dir.path(), "branch").unwrap();
    let mut first = ChildNode::spawn(TEST_NODE, node_dir.path());
    // The default peer timeout (6 s): keep-alives every 2 s.
    let client = Node::builder()
        .credentials(dir.path())
        .build()
        .await
        .unwrap();
    client.connect(&first.addr).await.unwrap();
    let counter: CounterRef = client.reference(first.id, first.counter).unwrap();
    let probe: BrokerRef = client.reference(first.id, first.broker).unwrap();
    let mut call = Box::pin(counter.nap(60_000));
    assert!(poll_once(&mut call).await.is_pending());
    assert_eq!(probe.give().await, Ok(None));
    let addr = first.addr.clone();
    first.kill();
    let second = ChildNode::spawn_at(TEST_NODE, node_dir.path(), &addr);
    assert_ne!(second.id, first.id);
    let err = timeout(SAFETY, call).await.unwrap().unwrap_err();
    assert_eq!(
        err,
        CallError::NodeRestarted {
            node: first.id,
            label: NodeLabel::new(Some("test-node"), Some(&addr)),
            may_have_executed: true
        }
    );
    assert_eq!(
        client.stats().connections,
        1,
        "connected to the new process"
    );
}

/// An `#[exactly_once]` call to a node killed for good gives up once the node
/// has been unreachable for a peer timeout, with `NodeDown` (it may have run),
/// not at its 30 s deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_call_to_a_node_gone_for_good_gives_up_before_its_deadline() {
    let dir = cluster();
    let mut server = ChildNode::spawn(TEST_NODE, dir.path());
    let client = Node::builder()
        .credentials(dir.path())
        .peer_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    client.connect(&server.addr).await.unwrap();
    let counter: CounterRef = client.reference(server.id, server.counter).unwrap();
    assert_eq!(
        remora::Interface::core(&counter).timeout(),
        remora::DEFAULT_TIMEOUT
    );
    let mut call = Box::pin(counter.nap_once(60_000));
    assert!(poll_once(&mut call).await.is_pending());
    server.kill();
    // Detected within the peer timeout, then a peer timeout of failed dials:
    // well within SAFETY (10 s), a third of the call's deadline.
    let err = timeout(SAFETY, call)
        .await
        .expect("given up before the deadline")
        .unwrap_err();
    assert_eq!(
        err,
        CallError::NodeDown {
            node: server.id,
            label: NodeLabel::new(Some("test-node"), Some(&server.addr)),
            may_have_executed: true
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "node \"test-node\" at {} (id {}) is down (the call was sent and may have run)",
            server.addr, server.id
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_to_a_restarted_node_fails_instead_of_reaching_new_actors() {
    let dir = cluster();
    let mut first = ChildNode::spawn(TEST_NODE, dir.path());
    let client = client_of(dir.path()).await;
    client.connect(&first.addr).await.unwrap();
    let old: CounterRef = client.reference(first.id, first.counter).unwrap();
    assert_eq!(old.add(1).await, Ok(1));
    let addr = first.addr.clone();
    let gone = client.monitor(&old);
    first.kill();
    timeout(SAFETY, gone).await.unwrap();
    // A new node process on the same address: a new incarnation.
    let second = ChildNode::spawn_at(TEST_NODE, dir.path(), &addr);
    assert_ne!(second.id, first.id);
    let err = timeout(SAFETY, old.add(1)).await.unwrap().unwrap_err();
    assert!(matches!(err, CallError::NodeRestarted { .. }), "{err:?}");
    assert!(!err.may_have_executed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_of_an_actor_on_a_restarted_node_says_so() {
    // A silent peer is given up after the smaller of the two peer timeouts: at a
    // minute on both sides, the client cannot notice the loss by itself during
    // the test. It notices when the test disconnects, once the new node is up.
    const PATIENT: Duration = Duration::from_secs(60);
    let patient = PATIENT.as_millis().to_string();
    let dir = cluster();
    let mut first = ChildNode::spawn_with(TEST_NODE, dir.path(), &["--peer-timeout-ms", &patient]);
    let client = Node::builder()
        .credentials(dir.path())
        .peer_timeout(PATIENT)
        .build()
        .await
        .unwrap();
    client.connect(&first.addr).await.unwrap();
    let old: CounterRef = client.reference(first.id, first.counter).unwrap();
    assert_eq!(old.add(1).await, Ok(1));
    // Both monitors watch (on tasks of their own, as a user's would) before the
    // node goes.
    let watching = tokio::spawn(client.monitor(&old));
    let node_watch = tokio::spawn(client.monitor_node(first.id));
    until("the monitor is in place", || client.stats().monitors == 1).await;
    let addr = first.addr.clone();
    first.kill();
    // Back on the same address (READY: it listens) before the client notices the
    // loss: a restart, not a crash.
    let second = ChildNode::spawn_with(
        TEST_NODE,
        dir.path(),
        &["--listen", &addr, "--peer-timeout-ms", &patient],
    );
    assert_ne!(second.id, first.id);
    assert!(
        client.disconnect(first.id),
        "the client noticed the loss before the restart"
    );
    let node = first.id;
    assert_eq!(
        timeout(SAFETY, watching).await.unwrap().unwrap(),
        StopReason::NodeRestarted { node }
    );
    assert_eq!(
        timeout(SAFETY, node_watch).await.unwrap().unwrap(),
        StopReason::NodeRestarted { node }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_across_processes_gets_the_stop_reason() {
    let dir = cluster();
    let server = ChildNode::spawn(TEST_NODE, dir.path());
    let client = client_of(dir.path()).await;
    client.connect(&server.addr).await.unwrap();
    let counter: CounterRef = client.reference(server.id, server.counter).unwrap();
    let watching = client.monitor(&counter);
    assert!(counter.crash("over there".into()).await.is_err());
    assert_eq!(
        timeout(SAFETY, watching).await,
        Ok(StopReason::Panicked {
            message: "over there".into()
        })
    );
}

/// A chain A → B → C across three processes (A is this one), given up at its
/// head: A's deadline (200 ms) reaches B and C with the calls; C's handler waits
/// for something that never comes. A gets its `Timeout`, C's handler sees
/// `cancelled()` and B's call to C ends with `Cancelled`: nothing runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_across_processes_given_up_at_its_head_stops_everywhere() {
    use remora_integration_tests::chain::{ChainProbeRef, ChainRef};
    let dir = cluster();
    let b = ChildNode::spawn(TEST_NODE, dir.path());
    let c = ChildNode::spawn(TEST_NODE, dir.path());
    let a = client_of(dir.path()).await;
    a.connect(&b.addr).await.unwrap();
    a.connect(&c.addr).await.unwrap();
    let to_b: ChainRef = a.reference(b.id, b.link).unwrap();
    let to_c: ChainRef = a.reference(c.id, c.link).unwrap();
    let probe_b: ChainProbeRef = a.reference(b.id, b.probe).unwrap();
    let probe_c: ChainProbeRef = a.reference(c.id, c.probe).unwrap();
    // B dials C before the chain starts, so that the chain's time is its own.
    assert_eq!(to_b.deadline_seen(Some(to_c.clone())).await, Ok(true));
    let head = to_b.with_timeout(Duration::from_millis(200));
    let outcome = timeout(SAFETY, head.forward(Some(to_c))).await.unwrap();
    assert!(
        matches!(outcome, Err(CallError::Timeout { .. })),
        "{outcome:?}"
    );
    // The chain ends from its far end inwards, each callee's deadline a few ms
    // before its caller's; a busy machine may be late scheduling the last of
    // it by A's error, so the end is awaited (bounded), then checked.
    let mut tries = 0;
    let (on_b, on_c) = loop {
        let (on_b, on_c) = (
            probe_b.counts().await.unwrap(),
            probe_c.counts().await.unwrap(),
        );
        let ended = on_c.saw_cancelled == 1 && !on_b.outcomes.is_empty();
        if ended && on_b.running + on_c.running == 0 || tries == 100 {
            break (on_b, on_c);
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(on_c.saw_cancelled, 1, "{on_c:?}");
    assert_eq!(on_b.outcomes, ["Cancelled"], "{on_b:?}");
    assert_eq!((on_b.running, on_c.running), (0, 0), "{on_b:?} {on_c:?}");
    assert_eq!((on_b.entered, on_c.entered), (1, 1));
}

/// A call given up while queued in another process never runs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_given_up_while_queued_in_another_process_never_runs() {
    use remora_integration_tests::chain::{ChainCounts, ChainProbeRef, ChainRef};
    let dir = cluster();
    let server = ChildNode::spawn(TEST_NODE, dir.path());
    let client = client_of(dir.path()).await;
    client.connect(&server.addr).await.unwrap();
    let link: ChainRef = client.reference(server.id, server.link).unwrap();
    let probe: ChainProbeRef = client.reference(server.id, server.probe).unwrap();
    // Polls the probe (bounded) until `ready` holds of the link's counts.
    let wait_for = |what: &'static str, ready: fn(&ChainCounts) -> bool| {
        let probe = probe.clone();
        async move {
            for _ in 0..2_500 {
                if ready(&probe.counts().await.unwrap()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            panic!("not within the time limit: {what}");
        }
    };
    let mut busy = Box::pin(link.hold());
    assert!(poll_once(&mut busy).await.is_pending());
    wait_for("the link is busy", |counts| counts.running == 1).await;
    // Sent (on its first poll) and queued behind `hold`, then given up: its
    // Cancel follows it on its lane, before the next tick.
    let mut queued = Box::pin(link.tick());
    assert!(poll_once(&mut queued).await.is_pending());
    drop(queued);
    let mut second = Box::pin(link.tick());
    assert!(poll_once(&mut second).await.is_pending());
    // Both ticks in the mailbox: the Cancel between them has been read.
    wait_for("both ticks are queued", |counts| counts.queued == 2).await;
    probe.release().await.unwrap();
    assert_eq!(timeout(SAFETY, busy).await.unwrap(), Ok(2));
    // In order behind the dropped one: had it run, this would be 2.
    assert_eq!(timeout(SAFETY, second).await.unwrap(), Ok(1));
    assert_eq!(probe.counts().await.unwrap().ticks, 1);
}
