//! Reference leases (distributed GC), over both transports and across processes:
//! a proxy on another node keeps an actor alive past many lease periods; dropping
//! the last proxy withdraws it promptly; a holder that dies or loses its
//! connection lets it go after the lease; pinned actors stay.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remora::{
    Actor, CallError, Context, Credentials, Node, SpawnOptions, StopReason, Unreferenced,
};
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
    on_unreferenced_may_keep_the_actor,
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

/// A counter whose `on_unreferenced` keeps it the first `keep` times it is told.
struct Sticky {
    total: u64,
    keep: u32,
    told: Arc<AtomicU32>,
    stopped: Arc<std::sync::Mutex<Option<StopReason>>>,
}

impl Actor for Sticky {
    async fn on_unreferenced(&mut self, _ctx: &Context) -> Unreferenced {
        let told = self.told.fetch_add(1, Ordering::SeqCst) + 1;
        match told <= self.keep {
            true => Unreferenced::Keep,
            false => Unreferenced::Stop,
        }
    }

    async fn on_stop(&mut self, reason: &StopReason) {
        *self.stopped.lock().unwrap() = Some(reason.clone());
    }
}

impl Counter for Sticky {
    async fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }
    async fn bump(&mut self, n: u64) {
        self.total += n;
    }
    async fn total(&mut self) -> u64 {
        self.total
    }
    async fn seen(&mut self) -> Vec<u64> {
        Vec::new()
    }
    async fn crash(&mut self, why: String) -> u64 {
        panic!("{why}")
    }
    async fn nap(&mut self, ms: u64) -> u64 {
        ms
    }
    async fn echo_bytes(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }
}

/// Waits (bounded) until `told` reaches `n`.
async fn told_reaches(told: &AtomicU32, n: u32) {
    let deadline = tokio::time::Instant::now() + SAFETY;
    while told.load(Ordering::SeqCst) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "on_unreferenced ran {} times, not {n}",
            told.load(Ordering::SeqCst)
        );
        tokio::time::sleep(LEASE / 10).await;
    }
}

/// `on_unreferenced` decides: kept, the actor stays exported and its stored
/// `WireRef` resolves again; told again once that reference goes too, it stops.
async fn on_unreferenced_may_keep_the_actor(transport: Transport) {
    let pair = leased_pair(transport).await;
    let told = Arc::new(AtomicU32::new(0));
    let stopped_with = Arc::new(std::sync::Mutex::new(None));
    let sticky = Sticky {
        total: 0,
        keep: 1,
        told: told.clone(),
        stopped: stopped_with.clone(),
    };
    let keeper: BrokerRef = pair.client.spawn(Keeper::default());
    let keeper = reach(&pair.server, &pair.client, &keeper);
    let counter: CounterRef = pair.server.spawn(sticky);
    let mut stopped = Box::pin(pair.server.monitor(&counter));
    // Kept outside Remora, as a database would keep it.
    let stored = pair.server.wire_ref(&counter);
    assert_eq!(keeper.hold(counter).await, Ok(true));
    assert_eq!(keeper.add_through(5).await, Ok(5));
    // The only proxy goes: the actor is told, and keeps itself.
    assert_eq!(keeper.hold_many(Vec::new()).await, Ok(0));
    told_reaches(&told, 1).await;
    outlives(&mut stopped, 3).await;
    assert_eq!(
        told.load(Ordering::SeqCst),
        1,
        "told once, not at every sweep"
    );
    // Still exported: the stored reference works from the other node, same state.
    let again: CounterRef = pair.client.resolve(&stored).expect("still exported");
    assert_eq!(again.add(1).await, Ok(6));
    outlives(&mut stopped, 3).await;
    // That proxy goes too: told a second time, it stops.
    drop(again);
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Unreferenced));
    assert_eq!(told.load(Ordering::SeqCst), 2);
    assert_eq!(
        *stopped_with.lock().unwrap(),
        Some(StopReason::Unreferenced)
    );
    // And its export is gone.
    let gone: CounterRef = pair.client.resolve(&stored).expect("a proxy");
    assert!(matches!(
        gone.add(1).await,
        Err(CallError::NoSuchObject | CallError::ActorStopped)
    ));
}
