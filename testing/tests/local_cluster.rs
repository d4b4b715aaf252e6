//! `LocalCluster` with the greeter node (`examples/greeter/`): two node processes
//! that this process calls and that call each other; their shutdown on SIGTERM when
//! the cluster is dropped; `terminate` and `kill` one at a time; a binary that never
//! says READY. Unix only: it reads exit statuses' signals.

#![cfg(unix)]

#[path = "../examples/greeter/interface.rs"]
mod interface;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;

use interface::GreeterRef;
use remora::Node;
use remora_testing::{ClusterError, ClusterNode, LocalCluster};

const GREETER: &str = env!("CARGO_BIN_EXE_remora-testing-greeter");

/// What the greeter prints once `serve_until_signal` has returned.
const STOPPED: &str = "stopped by a signal";

/// A reference, held by `me`, to the greeter that `node` announced.
async fn greeter_of(me: &Node, node: &ClusterNode) -> GreeterRef {
    let id = me.connect(&node.addr).await.unwrap();
    let object = node.ready[0].parse().unwrap();
    me.reference(id, object).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_node_processes_call_each_other_and_stop_on_sigterm_when_dropped() {
    let mut cluster = LocalCluster::new().unwrap();
    cluster.start(GREETER, ["north"]).unwrap();
    cluster.start(GREETER, ["south"]).unwrap();
    let me = cluster.builder().build().await.unwrap();
    let north = greeter_of(&me, &cluster.nodes()[0]).await;
    let south = greeter_of(&me, &cluster.nodes()[1]).await;

    assert_eq!(
        north.greet("test".into()).await,
        Ok("hello test, from north".to_owned())
    );
    assert_eq!(
        north.meet(south).await,
        Ok(Ok("hello north, from south".to_owned())),
        "north called south with the reference it was passed"
    );

    let mut outputs: Vec<_> = cluster
        .nodes()
        .iter_mut()
        .map(|node| node.output.take().unwrap())
        .collect();
    drop(cluster);
    // Both processes are reaped, so their output has ended.
    for output in &mut outputs {
        let mut rest = String::new();
        output.read_to_string(&mut rest).unwrap();
        assert_eq!(
            rest.trim_end(),
            STOPPED,
            "the node shut down on SIGTERM rather than being killed"
        );
    }
}

#[test]
fn terminate_is_a_clean_exit_and_kill_a_sigkill() {
    let mut cluster = LocalCluster::new().unwrap();
    let status = cluster
        .start(GREETER, ["east"])
        .unwrap()
        .terminate()
        .unwrap();
    assert!(status.success(), "a clean exit on SIGTERM, got {status:?}");
    let status = cluster.start(GREETER, ["west"]).unwrap().kill().unwrap();
    assert_eq!(status.signal(), Some(9), "SIGKILL, got {status:?}");
    assert_eq!(
        cluster.nodes()[1].terminate().unwrap().signal(),
        Some(9),
        "an ended process stays ended: how it ended, and no signal sent"
    );
}

#[test]
fn a_binary_that_does_not_say_ready_is_refused() {
    let mut cluster = LocalCluster::new().unwrap();
    // Without a name, the greeter prints its usage to standard error and exits.
    let err = cluster.start(GREETER, [""; 0]).unwrap_err();
    assert!(
        matches!(&err, ClusterError::NotReady { got, .. } if got.is_empty()),
        "{err}"
    );
    assert!(cluster.nodes().is_empty());
}
