//! Failure seen across nodes, over both transports: monitors of actors on another
//! node resolve with the reason that node reports (stop, panic), or with the loss
//! of the node; remote stop; links across nodes; node monitors.

use remora::{Node, StopReason};
use remora_integration_tests::*;
use tokio::time::timeout;

/// What the scenarios need of a pair of nodes.
trait Scenario {
    fn counter(&self) -> (CounterRef, CounterRef);
    async fn lose_server(&self);
}

impl Scenario for Pair {
    /// A counter on the server, and the client's proxy for it.
    fn counter(&self) -> (CounterRef, CounterRef) {
        let local: CounterRef = self.server.spawn(Tally::default());
        let remote = reach(&self.client, &self.server, &local);
        (local, remote)
    }

    /// Loses the connection: cut the wire, or shut the server down.
    async fn lose_server(&self) {
        match &self.wire {
            Some(wire) => wire.cut(),
            None => self.server.shutdown().await,
        }
    }
}

async fn a_remote_stop_reaches_the_monitor_with_its_reason(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (local, remote) = pair.counter();
    assert_eq!(remote.add(1).await, Ok(1));
    let watching = pair.client.monitor(&remote);
    pair.server.stop(&local);
    assert_eq!(timeout(SAFETY, watching).await, Ok(StopReason::Normal));
    // Once stopped, a new monitor resolves at once with the same reason.
    assert_eq!(
        timeout(SAFETY, pair.client.monitor(&remote)).await,
        Ok(StopReason::Normal)
    );
}

async fn a_remote_panic_reaches_the_monitor_as_panicked(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (_local, remote) = pair.counter();
    let watching = pair.client.monitor(&remote);
    assert!(remote.crash("kaputt".into()).await.is_err());
    assert_eq!(
        timeout(SAFETY, watching).await,
        Ok(StopReason::Panicked {
            message: "kaputt".into()
        })
    );
}

async fn a_lost_node_resolves_monitors_with_node_down(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (_local, remote) = pair.counter();
    assert_eq!(remote.add(1).await, Ok(1));
    let actor = pair.client.monitor(&remote);
    let node = pair.client.monitor_node(pair.server.id());
    pair.lose_server().await;
    let server = pair.server.id();
    assert_eq!(
        timeout(SAFETY, actor).await,
        Ok(StopReason::NodeDown { node: server })
    );
    assert_eq!(
        timeout(SAFETY, node).await,
        Ok(StopReason::NodeDown { node: server })
    );
}

/// A pair whose server lets the client (named `operator`) stop its actors.
async fn operated(transport: Transport) -> Pair {
    Pair::with_each(
        transport,
        Node::builder().allow_control_from(["operator"]),
        Node::builder().name("operator"),
    )
    .await
}

async fn a_node_stops_an_actor_on_another_node(transport: Transport) {
    let pair = operated(transport).await;
    let (local, remote) = pair.counter();
    let stopped = pair.server.monitor(&local);
    pair.client.stop(&remote);
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Normal));
}

async fn links_cross_nodes_both_ways(transport: Transport) {
    let pair = operated(transport).await;
    // A remote failure stops the local actor.
    let (_far, far_remote) = pair.counter();
    let near: CounterRef = pair.client.spawn(Tally::default());
    pair.client.link(&near, &far_remote);
    let near_stopped = pair.client.monitor(&near);
    assert!(far_remote.crash("far".into()).await.is_err());
    match timeout(SAFETY, near_stopped).await.unwrap() {
        StopReason::Linked { reason, .. } => assert_eq!(
            *reason,
            StopReason::Panicked {
                message: "far".into()
            }
        ),
        other => panic!("{other:?}"),
    }

    // A local failure stops the remote actor.
    let (far, far_remote) = pair.counter();
    let near: CounterRef = pair.client.spawn(Tally::default());
    pair.client.link(&near, &far_remote);
    let far_stopped = pair.server.monitor(&far);
    assert!(near.crash("near".into()).await.is_err());
    match timeout(SAFETY, far_stopped).await.unwrap() {
        StopReason::Linked { reason, .. } => {
            assert!(matches!(*reason, StopReason::Panicked { .. }))
        }
        other => panic!("{other:?}"),
    }

    // An orderly stop does not propagate.
    let (far, far_remote) = pair.counter();
    let near: CounterRef = pair.client.spawn(Tally::default());
    pair.client.link(&near, &far_remote);
    pair.server.stop(&far);
    assert_eq!(
        timeout(SAFETY, pair.client.monitor(&far_remote)).await,
        Ok(StopReason::Normal)
    );
    assert_eq!(near.add(2).await, Ok(2), "still running");
}

async fn a_node_without_authority_neither_stops_nor_fails_another_nodes_actor(
    transport: Transport,
) {
    // The client is not on the server's allow list (it has none).
    let pair = Pair::new(transport).await;
    let (local, remote) = pair.counter();
    pair.client.stop(&remote);
    until("the stop is refused", || {
        pair.server.stats().exits_refused == 1
    })
    .await;
    assert_eq!(remote.add(1).await, Ok(1), "still running");

    // A link whose near end fails cannot take the far end down either.
    let near: CounterRef = pair.client.spawn(Tally::default());
    pair.client.link(&near, &remote);
    assert!(near.crash("near".into()).await.is_err());
    until("the link's exit is refused", || {
        pair.server.stats().exits_refused == 2
    })
    .await;
    assert_eq!(remote.add(1).await, Ok(2), "still running");
    assert!(!pair.server.is_stopped(&local));
    // Monitoring is allowed: it only observes.
    let stopped = pair.client.monitor(&remote);
    pair.server.stop(&local);
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Normal));
}

both_transports!(
    a_node_without_authority_neither_stops_nor_fails_another_nodes_actor,
    a_remote_stop_reaches_the_monitor_with_its_reason,
    a_remote_panic_reaches_the_monitor_as_panicked,
    a_lost_node_resolves_monitors_with_node_down,
    a_node_stops_an_actor_on_another_node,
    links_cross_nodes_both_ways,
);
