//! Reference leases (distributed GC), over both transports and across processes:
//! a proxy on another node keeps an actor alive past many lease periods; dropping
//! the last proxy withdraws it promptly; pinned actors stay.
//!
//! What lets an export go when its holder does not say goodbye is the owner's
//! lease expiry, and nothing else: losing the peer (a cut wire, the QUIC peer
//! timeout) neither releases it early nor is needed to release it. Each such test
//! sets the lease and the peer timeout far apart, so that the two mechanisms give
//! different observations: released while the connection is still up (a holder
//! that does not renew; a killed holder with a peer timeout longer than the
//! safety net), or still held after the peer was declared down, released only
//! once the lease has run out (a cut wire; a killed holder with a short peer
//! timeout). The holders are lost for real: a cut wire, or a child process killed
//! with SIGKILL (no `Release`, no connection close).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remora::{
    Actor, CallError, Context, Credentials, Node, SpawnOptions, StopReason, Unreferenced,
};
use remora_integration_tests::*;
use tokio::time::{timeout, Instant};

/// Short, so that the tests see several lease periods.
const LEASE: Duration = Duration::from_millis(300);

/// The lease of a holder that renews often (every 100–150 ms), so that its last
/// renewal before it is lost is recent.
const HOLDER_LEASE: Duration = Duration::from_millis(200);

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

/// Still running after `time`.
async fn outlives(stopped: &mut (impl Future<Output = StopReason> + Unpin), time: Duration) {
    assert!(
        timeout(time, stopped).await.is_err(),
        "stopped within {time:?}"
    );
}

/// Waits (bounded) for the counter to stop as unreferenced; when it did.
async fn unreferenced(stopped: &mut (impl Future<Output = StopReason> + Unpin)) -> Instant {
    assert_eq!(
        timeout(SAFETY, stopped).await,
        Ok(StopReason::Unreferenced),
        "the counter was not let go within {SAFETY:?}"
    );
    Instant::now()
}

async fn a_proxy_keeps_its_actor_alive_and_dropping_it_lets_go(transport: Transport) {
    let pair = leased_pair(transport).await;
    let (keeper, mut stopped) = pair.remote_only(SpawnOptions::new()).await;
    assert!(pair.client.stats().leases_held >= 1);
    outlives(&mut stopped, LEASE * 5).await;
    assert!(pair.server.stats().leases_granted >= 1);
    // The client's keeper calls it back: it is alive, and it is the same actor.
    assert_eq!(keeper.add_through(5).await, Ok(5));
    assert_eq!(keeper.add_through(1).await, Ok(6));
    // The keeper lets go of its proxy: the release goes out at once.
    assert_eq!(keeper.hold_many(Vec::new()).await, Ok(0));
    assert_eq!(timeout(SAFETY, stopped).await, Ok(StopReason::Unreferenced));
    assert_eq!(pair.client.stats().leases_held, 0);
}

/// The owner's lease expiry alone lets go of an export whose holder stays
/// connected but does not renew: the holder's node keeps the default lease (ten
/// minutes), so it renews every five, never within this test, while the server
/// grants `LEASE`. Nothing is released and no connection is lost: the holder
/// still has its proxy, its node still answers, and only its proxy finds the
/// actor gone.
async fn a_holder_that_does_not_renew_loses_the_lease_while_connected(transport: Transport) {
    let server = Node::builder().lease(LEASE);
    let pair = Pair::with_each(transport, server, Node::builder()).await;
    let mut connection = Box::pin(pair.server.monitor_node(pair.client.id()));
    let before_the_grant = Instant::now();
    let (keeper, mut stopped) = pair.remote_only(SpawnOptions::new()).await;
    let at = unreferenced(&mut stopped).await;
    // Not before the lease granted with the reference ran out.
    assert!(
        at - before_the_grant >= LEASE,
        "let go {:?} after the grant, within the lease ({LEASE:?})",
        at - before_the_grant
    );
    assert!(
        poll_once(&mut connection).await.is_pending(),
        "the connection to the holder was lost"
    );
    assert_eq!(pair.client.stats().leases_held, 1, "the holder released it");
    assert_eq!(pair.server.stats().leases_granted, 0);
    // The holder's node answers; its proxy's call fails (`add_through` says MAX).
    assert_eq!(keeper.add_through(1).await, Ok(u64::MAX));
}

async fn a_pinned_actor_stays_without_leases(transport: Transport) {
    let pair = leased_pair(transport).await;
    let (keeper, mut stopped) = pair.remote_only(SpawnOptions::new().pinned(true)).await;
    assert_eq!(keeper.hold_many(Vec::new()).await, Ok(0));
    outlives(&mut stopped, LEASE * 5).await;
}

/// A pinned actor stays whatever its leases do, but a lease its holder stopped
/// renewing still lapses: the owner does not keep (or count) it for good. The
/// holder's node keeps the default lease (ten minutes), so it never renews
/// within this test, while the server grants `LEASE`.
async fn a_pinned_actors_lapsed_lease_is_dropped(transport: Transport) {
    let server = Node::builder().lease(LEASE);
    let pair = Pair::with_each(transport, server, Node::builder()).await;
    let (_keeper, mut stopped) = pair.remote_only(SpawnOptions::new().pinned(true)).await;
    assert_eq!(pair.server.stats().leases_granted, 1);
    until("the unrenewed lease lapsed", || {
        pair.server.stats().leases_granted == 0
    })
    .await;
    outlives(&mut stopped, LEASE).await;
}

both_transports!(
    a_proxy_keeps_its_actor_alive_and_dropping_it_lets_go,
    a_pinned_actors_lapsed_lease_is_dropped,
    a_holder_that_does_not_renew_loses_the_lease_while_connected,
    a_pinned_actor_stays_without_leases,
    on_unreferenced_may_keep_the_actor,
);

/// A lost connection releases nothing: the server learns of the cut at once, and
/// the counter stays until the lease its holder last renewed runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_wire_keeps_the_lease_until_it_runs_out() {
    const OWNER_LEASE: Duration = Duration::from_secs(2);
    let server = Node::builder().lease(OWNER_LEASE);
    let client = Node::builder().lease(HOLDER_LEASE);
    let pair = Pair::with_each(Transport::InProcess, server, client).await;
    let (_keeper, mut stopped) = pair.remote_only(SpawnOptions::new()).await;
    let lost = pair.server.monitor_node(pair.client.id());
    let cut = Instant::now();
    pair.wire.as_ref().expect("an in-process wire").cut();
    let down = StopReason::NodeDown {
        node: pair.client.id(),
    };
    assert_eq!(timeout(SAFETY, lost).await, Ok(down));
    assert!(
        poll_once(&mut stopped).await.is_pending(),
        "let go when the connection was lost"
    );
    let at = unreferenced(&mut stopped).await;
    // Renewed within the last 150 ms before the cut: the lease ran ~2 s past it.
    assert!(
        at - cut >= OWNER_LEASE * 3 / 4,
        "let go {:?} after the cut, before its lease ({OWNER_LEASE:?}) ran out",
        at - cut
    );
}

const TEST_NODE: &str = env!("CARGO_BIN_EXE_remora-test-node");

/// A server node (`lease`, `peer_timeout`) connected to a child process that
/// holds the only reference to a counter of the server, renewing its lease every
/// 100–150 ms with the same peer timeout; the counter's monitor.
async fn held_by_a_child(
    credentials: &std::path::Path,
    lease: Duration,
    peer_timeout: Duration,
) -> (Node, ChildNode, impl Future<Output = StopReason> + Unpin) {
    Credentials::create_cluster(credentials).unwrap();
    let (holder_lease, timeout_ms) = (
        HOLDER_LEASE.as_millis().to_string(),
        peer_timeout.as_millis().to_string(),
    );
    let child = ChildNode::spawn_with(
        TEST_NODE,
        credentials,
        &[
            "--listen",
            "127.0.0.1:0",
            "--ref-lease-ms",
            &holder_lease,
            "--peer-timeout-ms",
            &timeout_ms,
        ],
    );
    let server = Node::builder()
        .credentials(credentials)
        .listen("127.0.0.1:0")
        .lease(lease)
        .peer_timeout(peer_timeout)
        .build()
        .await
        .unwrap();
    server.connect(&child.addr).await.unwrap();
    let keeper: BrokerRef = server.reference(child.id, child.broker).unwrap();
    let counter: CounterRef = server.spawn(Tally::default());
    let stopped = Box::pin(server.monitor(&counter));
    assert_eq!(keeper.hold(counter).await, Ok(true));
    assert_eq!(keeper.add_through(2).await, Ok(2));
    (server, child, stopped)
}

/// A holder killed outright (no `Release`, no connection close) is let go when
/// its lease runs out, while the server still counts it connected: the peer
/// timeout is set beyond the safety net, so it cannot be what let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_let_go_at_lease_expiry_before_the_peer_timeout() {
    const OWNER_LEASE: Duration = Duration::from_secs(1);
    const PEER_TIMEOUT: Duration = Duration::from_secs(60);
    assert!(PEER_TIMEOUT > SAFETY * 2);
    let dir = tempfile::tempdir().unwrap();
    let (server, mut child, mut stopped) =
        held_by_a_child(dir.path(), OWNER_LEASE, PEER_TIMEOUT).await;
    let mut lost = Box::pin(server.monitor_node(child.id));
    outlives(&mut stopped, OWNER_LEASE * 2).await;
    let killed = Instant::now();
    child.kill();
    let at = unreferenced(&mut stopped).await;
    assert!(
        poll_once(&mut lost).await.is_pending(),
        "the peer was declared down before its lease ran out"
    );
    assert!(
        at - killed >= OWNER_LEASE / 2,
        "let go {:?} after the kill, before its lease ({OWNER_LEASE:?}) ran out",
        at - killed
    );
    assert_eq!(server.stats().leases_granted, 0);
}

/// A holder killed outright, with a peer timeout much shorter than the lease: the
/// server declares the peer down first, and still keeps the counter until the
/// lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_outlives_the_peer_timeout_until_its_lease_runs_out() {
    const OWNER_LEASE: Duration = Duration::from_secs(6);
    const PEER_TIMEOUT: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let (server, mut child, mut stopped) =
        held_by_a_child(dir.path(), OWNER_LEASE, PEER_TIMEOUT).await;
    let lost = server.monitor_node(child.id);
    let killed = Instant::now();
    child.kill();
    let down = StopReason::NodeDown { node: child.id };
    assert_eq!(timeout(SAFETY, lost).await, Ok(down));
    assert!(
        poll_once(&mut stopped).await.is_pending(),
        "let go when the peer timed out"
    );
    let at = unreferenced(&mut stopped).await;
    // Renewed within the last 150 ms before the kill: the lease ran ~6 s past it,
    // the peer timed out after ~1 s.
    assert!(
        at - killed >= OWNER_LEASE * 3 / 4,
        "let go {:?} after the kill, before its lease ({OWNER_LEASE:?}) ran out",
        at - killed
    );
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
    async fn nap_once(&mut self, ms: u64) -> u64 {
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
    outlives(&mut stopped, LEASE * 3).await;
    assert_eq!(
        told.load(Ordering::SeqCst),
        1,
        "told once, not at every sweep"
    );
    // Still exported: the stored reference works from the other node, same state.
    let again: CounterRef = pair.client.resolve(&stored).expect("still exported");
    assert_eq!(again.add(1).await, Ok(6));
    outlives(&mut stopped, LEASE * 3).await;
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
