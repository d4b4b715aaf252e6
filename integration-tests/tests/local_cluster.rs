//! `LocalCluster` with the test node: three node processes sharing a generated
//! cluster root, called from this process, one of them killed.

use remora::{CallError, StopReason};
use remora_integration_tests::*;
use remora_testing::LocalCluster;
use tokio::time::timeout;

const TEST_NODE: &str = env!("CARGO_BIN_EXE_remora-test-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_cluster_of_node_processes() {
    let mut cluster = LocalCluster::new().unwrap();
    let dir = cluster.credentials().to_str().unwrap().to_owned();
    for _ in 0..3 {
        cluster
            .start(TEST_NODE, ["--credentials", &dir, "--until-signal"])
            .unwrap();
    }
    let me = cluster
        .builder()
        .peer_timeout(std::time::Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let mut counters = Vec::new();
    for node in cluster.nodes().iter() {
        // READY <addr> <node id> <counter> <broker>
        let id = node.ready[0].parse().unwrap();
        assert_eq!(me.connect(&node.addr).await, Ok(id));
        let counter: CounterRef = me.reference(id, node.ready[1].parse().unwrap()).unwrap();
        counters.push(counter);
    }
    for (i, counter) in counters.iter().enumerate() {
        assert_eq!(counter.add(i as u64 + 1).await, Ok(i as u64 + 1));
    }
    let gone = me.monitor(&counters[1]);
    cluster.nodes()[1].kill().unwrap();
    assert!(matches!(
        timeout(SAFETY, gone).await,
        Ok(StopReason::NodeDown { .. })
    ));
    assert!(matches!(
        counters[1].add(1).await,
        Err(CallError::NodeDown { .. } | CallError::ConnectFailed { .. })
    ));
    assert_eq!(counters[2].add(1).await, Ok(4), "the others keep serving");
}

/// A node process stopped with SIGTERM shuts its node down, which tells its
/// peers before the process exits: they see `NodeDown` at once, not at their
/// (here one minute) peer timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_process_stopped_gracefully_is_down_for_its_peers_at_once() {
    let mut cluster = LocalCluster::new().unwrap();
    let dir = cluster.credentials().to_str().unwrap().to_owned();
    cluster
        .start(TEST_NODE, ["--credentials", &dir, "--until-signal"])
        .unwrap();
    let me = cluster
        .builder()
        .peer_timeout(std::time::Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let node = &cluster.nodes()[0];
    let id = node.ready[0].parse().unwrap();
    me.connect(&node.addr).await.unwrap();
    let counter: CounterRef = me.reference(id, node.ready[1].parse().unwrap()).unwrap();
    assert_eq!(counter.add(1).await, Ok(1));
    let gone = tokio::spawn(me.monitor(&counter));
    until("the monitor is in place", || me.stats().monitors == 1).await;
    assert!(cluster.nodes()[0].terminate().unwrap().success());
    // Its actor stopped for the shutdown, and its connection closed: whichever
    // the monitor hears of first, it hears well before the peer timeout.
    let reason = timeout(SAFETY, gone).await.unwrap().unwrap();
    assert!(
        matches!(reason, StopReason::Shutdown | StopReason::NodeDown { .. }),
        "{reason:?}"
    );
    // Then the connection's close arrived: nothing waits for the peer timeout.
    until("the closed connection is gone", || {
        me.stats().connections == 0
    })
    .await;
}
