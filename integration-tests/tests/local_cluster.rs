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
