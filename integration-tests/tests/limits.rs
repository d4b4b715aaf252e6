//! What peers can make a node hold, and what a node builds for its peers, stays
//! within the limits the nodes set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remora::remote::{inproc, HandshakeLimits};
use remora::{Actor, CallError, Interface, Mailbox, Node, SpawnOptions};
use remora_integration_tests::flood::{Flood, Lingering};
use remora_integration_tests::*;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;

#[remora::remote]
pub trait Gate {
    /// Reports `n` as entered, waits for a permit, then returns `n`.
    async fn pass(&mut self, n: u64) -> u64;
}

struct Turnstile {
    entered: mpsc::UnboundedSender<u64>,
    permits: Arc<Semaphore>,
}

impl Actor for Turnstile {}

impl Gate for Turnstile {
    async fn pass(&mut self, n: u64) -> u64 {
        let _ = self.entered.send(n);
        self.permits.acquire().await.expect("open").forget();
        n
    }
}

/// A remote ask refused by a mailbox over its cap is answered `Overloaded` (it
/// did not run), not `ActorStopped`; the calls before it run.
async fn a_capped_mailbox_refuses_a_remote_ask_as_overloaded(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(0));
    let actor = Turnstile {
        entered: entered_tx,
        permits: permits.clone(),
    };
    let opts = SpawnOptions::default().mailbox(Mailbox::unbounded_with_cap(1));
    let local: GateRef = pair.server.spawn_with(actor, opts);
    let remote: GateRef = reach(&pair.client, &pair.server, &local);
    // One call runs (and waits), the next fills the mailbox's one place.
    let running = tokio::spawn({
        let remote = remote.clone();
        async move { remote.pass(1).await }
    });
    assert_eq!(timeout(SAFETY, entered.recv()).await.unwrap(), Some(1));
    let queued = tokio::spawn({
        let remote = remote.clone();
        async move { remote.pass(2).await }
    });
    until("the second call queued", || {
        Interface::core(&local).mailbox_depth() == 1
    })
    .await;
    let err = timeout(SAFETY, remote.pass(3)).await.unwrap().unwrap_err();
    assert_eq!(err, CallError::Overloaded { cap: 1 });
    assert!(!err.may_have_executed());
    permits.add_permits(2);
    assert_eq!(timeout(SAFETY, running).await.unwrap().unwrap(), Ok(1));
    assert_eq!(timeout(SAFETY, queued).await.unwrap().unwrap(), Ok(2));
    assert_eq!(timeout(SAFETY, entered.recv()).await.unwrap(), Some(2));
    assert!(entered.try_recv().is_err(), "the refused call did not run");
}

both_transports!(a_capped_mailbox_refuses_a_remote_ask_as_overloaded);

/// More proxies on one peer than one lease frame can list under the peer's frame
/// limit: renewals go out in several frames, and none of the leases lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_proxies_than_one_renewal_frame_lists_all_stay_alive() {
    const ACTORS: usize = 300;
    let lease = Duration::from_millis(400);
    // 4 KiB frames list about 118 object ids; 300 need three renewal frames.
    let server = Node::builder()
        .max_frame_size(4096)
        .lease(lease)
        .build()
        .await
        .unwrap();
    let client = Node::builder().lease(lease).build().await.unwrap();
    let _wire = inproc::connect_serializing(&client, &server).await.unwrap();
    let mut remotes = Vec::new();
    for _ in 0..ACTORS {
        // Only the client refers to each actor: a lapsed lease stops it.
        let local: CounterRef = server.spawn(Tally::default());
        remotes.push(reach(&client, &server, &local));
    }
    until("every proxy's lease granted", || {
        server.stats().leases_granted == ACTORS
    })
    .await;
    // Three leases later (renewed at half of one, a lapsed export is withdrawn
    // within 1.25): still all held, and every actor answers.
    tokio::time::sleep(lease * 3).await;
    assert_eq!(server.stats().leases_granted, ACTORS);
    for (n, remote) in remotes.iter().enumerate() {
        assert_eq!(remote.add(1).await, Ok(1), "actor {n}");
    }
    assert_eq!(server.stats().actors, ACTORS);
}

/// A member that completes TLS but never sends its `Hello` is dropped after the
/// peer timeout (its own keep-alive pings would keep it forever otherwise), and
/// the node goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_says_hello_is_dropped_after_the_peer_timeout() {
    let dir = tempfile::tempdir().unwrap();
    remora::Credentials::create_cluster(dir.path()).unwrap();
    let server = Node::builder()
        .credentials(dir.path())
        .listen("127.0.0.1:0")
        .peer_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let addr = server.listen_addr().unwrap();
    let silent = remora_integration_tests::raw::RawPeer::connect(dir.path(), "silent", addr).await;
    let closed = timeout(SAFETY, silent.conn.closed())
        .await
        .expect("the node closed the silent member's connection");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(close) if close.reason.as_ref() == b"no Hello in time"),
        "{closed:?}"
    );
    assert_eq!(server.stats().connections, 0);
    // A member that does say Hello is served.
    let client = Node::builder()
        .credentials(dir.path())
        .build()
        .await
        .unwrap();
    assert_eq!(client.connect(addr.to_string()).await, Ok(server.id()));
}

/// What one flood did, and what the node showed while it ran.
struct Flooded {
    flood: remora_integration_tests::flood::Flood,
    /// The most handshakes the node had in flight at any poll.
    peak: usize,
    /// Calls the connected client completed while the flood ran.
    calls: u64,
}

/// Floods `server` from four sockets, in rounds of 100 Initials, for at least
/// `rounds` rounds and until the client has completed 20 calls during it (at most
/// 300 rounds), polling the node's handshakes in flight meanwhile: none may pass
/// `bound`.
async fn flood(
    server: &Node,
    validate: bool,
    rounds: usize,
    calls: &Arc<AtomicU64>,
    bound: usize,
) -> Flooded {
    let addr = server.listen_addr().unwrap();
    let before = calls.load(Ordering::SeqCst);
    let flooding = tokio::task::spawn_blocking({
        let calls = calls.clone();
        move || {
            let mut flood = Flood::new(addr, 4, validate).expect("flood sockets");
            for round in 0..300 {
                if round >= rounds && calls.load(Ordering::SeqCst) >= before + 20 {
                    break;
                }
                flood.send(100).expect("flood sends");
                std::thread::sleep(Duration::from_millis(2));
                flood.answer().expect("flood reads");
            }
            flood
        }
    });
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + SAFETY * 6;
    while !flooding.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood did not end"
        );
        let handshakes = server.stats().handshakes;
        assert!(handshakes <= bound, "{handshakes} handshakes in flight");
        peak = peak.max(handshakes);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let flood = flooding.await.unwrap();
    Flooded {
        flood,
        peak,
        calls: calls.load(Ordering::SeqCst) - before,
    }
}

/// A flood of half-open handshakes (real Initials, never completed) while a
/// connected node keeps calling: the node works on at most `retry_above` of them
/// and asks the rest to prove their address (a QUIC Retry, which the flood never
/// answers); the connected node's calls all succeed, and a node that connects
/// during the flood gets through (it answers the Retry). A flood that does answer
/// Retries, from one address, gets that address's share and is refused past it.
/// Every handshake ends within the peer timeout twice (TLS, then `Hello`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_handshake_flood_is_held_to_the_handshake_budget() {
    let limits = HandshakeLimits::default()
        .retry_above(16)
        .max_in_flight(64)
        .max_per_address(8);
    let server = Node::builder()
        .handshake_limits(limits)
        .peer_timeout(Duration::from_secs(3));
    let pair = Pair::with_each(Transport::Quic, server, Node::builder()).await;
    let local: CounterRef = pair.server.spawn(Tally::default());
    let remote = reach(&pair.client, &pair.server, &local);
    let calls = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let caller = tokio::spawn({
        let (calls, done) = (calls.clone(), done.clone());
        async move {
            for n in 1..=1_000_000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let total = timeout(SAFETY, remote.add(1)).await;
                assert_eq!(total, Ok(Ok(n)), "call {n} during the flood");
                calls.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    // Half-open, never answered: Retries past 16 in flight, nothing refused.
    let late = tokio::spawn({
        let server = pair.server.clone();
        async move {
            until("the flood is being retried", || {
                server.stats().handshakes_retried > 0
            })
            .await;
            let late = Node::builder().build().await.unwrap();
            let addr = server.listen_addr().unwrap().to_string();
            let connected = timeout(SAFETY, late.connect(addr))
                .await
                .expect("connected in time");
            (late, connected)
        }
    });
    // (In flight: at most the flood's 16, and the late node's one.)
    let flooded = flood(&pair.server, false, 30, &calls, 16 + 1).await;
    let (late, connected) = timeout(SAFETY, late).await.unwrap().unwrap();
    assert_eq!(
        connected,
        Ok(pair.server.id()),
        "a node connects during the flood"
    );
    let stats = pair.server.stats();
    assert!(
        flooded.flood.sent >= 3000,
        "{} Initials",
        flooded.flood.sent
    );
    assert!(flooded.flood.retries > 0 && stats.handshakes_retried > 0);
    assert_eq!(stats.handshakes_refused, 0);
    assert!(
        flooded.peak > 0,
        "the flood's handshakes were seen in flight"
    );
    assert!(
        flooded.calls >= 20,
        "{} calls during the flood",
        flooded.calls
    );
    let through_late: CounterRef = late
        .reference(pair.server.id(), pair.server.export(&local).unwrap())
        .unwrap();
    assert!(timeout(SAFETY, through_late.total()).await.unwrap().is_ok());

    // Answering the Retries proves the address: its share (8) is kept, the rest
    // refused. (In flight: at most 16 unproved, the first flood's, and 8 from the
    // one proved address; the maximum, 64, is never reached.)
    let flooded = flood(&pair.server, true, 10, &calls, 16 + 8).await;
    let stats = pair.server.stats();
    assert!(flooded.flood.answered > 0, "the flood answered Retries");
    assert!(stats.handshakes_refused > 0, "{stats:?}");
    assert!(
        flooded.calls >= 20,
        "{} calls during the flood",
        flooded.calls
    );

    done.store(true, Ordering::SeqCst);
    timeout(SAFETY, caller).await.unwrap().unwrap();
    // Every half-open handshake runs out of time (3 s for TLS) and is let go.
    until("every flooded handshake ended", || {
        pair.server.stats().handshakes == 0
    })
    .await;
    assert_eq!(pair.server.stats().connections, 2);
}

/// A client that keeps its handshake alive (a PING every 200 ms, each restarting
/// the node's idle timer) but never finishes it is let go after the peer timeout:
/// TLS has a deadline of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_kept_alive_but_never_finished_ends_after_the_peer_timeout() {
    let server = Node::builder()
        .listen("127.0.0.1:0")
        .peer_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let addr = server.listen_addr().unwrap();
    let mut lingering = Lingering::start(addr).unwrap();
    let mut seen = false;
    let mut ended = false;
    // At most SAFETY (50 rounds of 200 ms).
    for _ in 0..50 {
        lingering.ping().unwrap();
        let handshakes = server.stats().handshakes;
        seen |= handshakes == 1;
        if seen && handshakes == 0 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen, "the handshake was in flight");
    assert!(ended, "the handshake ended while the client kept it alive");
    assert_eq!(server.stats().connections, 0);
}
