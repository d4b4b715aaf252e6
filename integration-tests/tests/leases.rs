//! Reference leases (distributed GC), over both transports and across processes:
//! a proxy on another node keeps an actor alive past many lease periods; dropping
//! the last proxy withdraws it promptly; a holder that dies or loses its
//! connection lets it go after the lease; pinned actors stay.

use std::future::Future;
use std::time::Duration;

use remora::{Credentials, Node, SpawnOptions, StopReason};
use remora_integration_tests::*;
use tokio::time::timeout;

/// Short, so that the tests see several lease periods.
const LEASE: Duration = Duration::from_millis(300);

async fn leased_pair(transport: Transport) -> Pair {
    Pair::with(transport, || Node::builder().lease(LEASE)).await
}

/// What the scenarios need of a pair of nodes.
trait Scenario {
    async fn remote_only(
        &self,
        options: SpawnOptions<Tally>,
    ) -> (BrokerRef, impl Future<Output = StopReason> + Unpin);
}

impl Scenario for Pair {
    /// A counter on the server whose only reference is held by a keeper on the
    /// client (a proxy, so a lease); the server's proxy to that keeper; a monitor
    /// of the counter.
    async fn remote_only(
        &self,
        options: SpawnOptions<Tally>,
    ) -> (BrokerRef, impl Future<Output = StopReason> + Unpin) {
        let keeper: BrokerRef = self.client.spawn(Keeper::default());
        let keeper = reach(&self.server, &self.client, &keeper);
        let counter: CounterRef = self.server.spawn_with(Tally::default(), options);
        let stopped = Box::pin(self.server.monitor(&counter));
        assert_eq!(keeper.hold(counter).await, Ok(true));
        (keeper, stopped)
    }
}

/// Still running after `periods` leases.
async fn outlives(stopped: &mut (impl Future<Output = StopReason> + Unpin), periods: u32) {
    assert!(
        timeout(LEASE * periods, stopped).await.is_err(),
        "stopped within {periods} leases"
    );
}

async fn a_proxy_keeps_its_actor_alive_and_dropping_it_lets_go(transport: Transport) {
    let pair = leased_pair(transport).await;
    let (keeper, mut stopped) = pair.remote_only(SpawnOptions::new()).await;
    assert!(pair.client.stats().leases_held >= 1);
    outlives(&mut stopped, 5).await;
    assert!(pair.server.stats().leases_granted >= 1);
    // The client's keeper calls it back: it is alive, and it is the same actor.
    assert_eq!(keeper.add_through(5).await, Ok(5));
    assert_eq!(keeper.add_through(1).await, Ok(6));
    // The keeper lets go of its proxy: the release goes out at once.
    assert_eq!(keeper.hold_many(Vec::new()).await, Ok(0));
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Unreferenced));
    assert_eq!(pair.client.stats().leases_held, 0);
}

async fn a_lost_holder_lets_go_after_the_lease(transport: Transport) {
    let pair = leased_pair(transport).await;
    let (_keeper, mut stopped) = pair.remote_only(SpawnOptions::new()).await;
    outlives(&mut stopped, 3).await;
    match &pair.wire {
        Some(wire) => wire.cut(),
        None => pair.client.shutdown().await,
    }
    // Nobody renews now; within a lease and a quarter (plus a sweep) it is gone.
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Unreferenced));
}

async fn a_pinned_actor_stays_without_leases(transport: Transport) {
    let pair = leased_pair(transport).await;
    let (keeper, mut stopped) = pair.remote_only(SpawnOptions::new().pinned(true)).await;
    assert_eq!(keeper.hold_many(Vec::new()).await, Ok(0));
    outlives(&mut stopped, 5).await;
}

both_transports!(
    a_proxy_keeps_its_actor_alive_and_dropping_it_lets_go,
    a_lost_holder_lets_go_after_the_lease,
    a_pinned_actor_stays_without_leases,
);

const TEST_NODE: &str = env!("CARGO_BIN_EXE_remora-test-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_process_lets_go_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    Credentials::create_cluster(dir.path()).unwrap();
    let lease_ms = LEASE.as_millis().to_string();
    let mut child = ChildNode::spawn_with(
        TEST_NODE,
        dir.path(),
        &["--listen", "127.0.0.1:0", "--ref-lease-ms", &lease_ms],
    );
    let server = Node::builder()
        .credentials(dir.path())
        .listen("127.0.0.1:0")
        .lease(LEASE)
        .build()
        .await
        .unwrap();
    server.connect(&child.addr).await.unwrap();
    let keeper: BrokerRef = server.reference(child.id, child.broker).unwrap();
    let counter: CounterRef = server.spawn(Tally::default());
    let mut stopped = Box::pin(server.monitor(&counter));
    assert_eq!(keeper.hold(counter).await, Ok(true));
    outlives(&mut stopped, 5).await;
    assert_eq!(keeper.add_through(2).await, Ok(2));
    child.kill();
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Unreferenced));
}
