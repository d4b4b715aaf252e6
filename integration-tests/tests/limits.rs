//! What peers can make a node hold, and what a node builds for its peers, stays
//! within the limits the nodes set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remora::remote::{inproc, HandshakeLimits};
use remora::{Actor, CallError, Interface, Mailbox, Node, SpawnOptions};
use remora_integration_tests::flood::{flood_while_calling, Flooded, Lingering};
use remora_integration_tests::limits::{Bin, HopperRef};
use remora_integration_tests::raw::read_replies_in_order;
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

#[remora::remote]
pub trait Valve {
    /// Waits for a permit, then records `n`.
    #[oneway]
    async fn put(&mut self, n: u64);
}

struct Tank {
    got: mpsc::UnboundedSender<u64>,
    permits: Arc<Semaphore>,
}

impl Actor for Tank {}

impl Valve for Tank {
    async fn put(&mut self, n: u64) {
        self.permits.acquire().await.expect("open").forget();
        let _ = self.got.send(n);
    }
}

/// The server's window in the flood tests: calls a peer may have outstanding
/// to one of its actors.
const WINDOW: u32 = 8;
/// The flooded actor's mailbox: room for this many.
const ROOM: usize = 4;

/// A client tells a busy actor on another node as fast as `try_tell` lets it:
/// once the actor's mailbox is full, the server holds exactly its window of
/// the client's calls and no more, `try_tell` says `MailboxFull`, an awaited
/// tell waits until its deadline, the client's other calls go through, and
/// nothing accepted is lost: every message runs, in order.
async fn a_tell_flood_is_held_to_the_window(transport: Transport, mailbox: Mailbox) {
    let server = Node::builder().call_window(WINDOW);
    let pair = Pair::with_each(transport, server, Node::builder()).await;
    let (got_tx, mut got) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(0));
    let tank = Tank {
        got: got_tx,
        permits: permits.clone(),
    };
    let local: ValveRef = pair
        .server
        .spawn_with(tank, SpawnOptions::default().mailbox(mailbox));
    let remote: ValveRef = reach(&pair.client, &pair.server, &local);
    // One message runs (and waits), ROOM fill the mailbox, WINDOW are held.
    let expected = 1 + ROOM as u64 + u64::from(WINDOW);
    let mut accepted = 0u64;
    let deadline = tokio::time::Instant::now() + SAFETY;
    for _ in 0..100_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "flood not held in time"
        );
        match remote.put(accepted).try_tell() {
            Ok(()) => accepted += 1,
            Err(CallError::MailboxFull { capacity }) => {
                assert_eq!(capacity, WINDOW as usize, "the window is the room");
                if pair.server.stats().calls_held == WINDOW as usize {
                    break;
                }
                // Credit for the messages taken in is on its way back.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, expected, "running + mailbox + window");
    assert_eq!(pair.server.stats().calls_held, WINDOW as usize);
    assert_eq!(
        remote.put(999).try_tell(),
        Err(CallError::MailboxFull {
            capacity: WINDOW as usize
        })
    );
    // An awaited tell waits for room, and gives up at its deadline unsent.
    let impatient = remote.with_timeout(Duration::from_millis(50));
    assert_eq!(
        impatient.put(999).await,
        Err(CallError::Timeout {
            after: Duration::from_millis(50),
            may_have_executed: false
        })
    );
    // Another actor on the same node is not held up.
    let other: CounterRef = pair.server.spawn(Tally::default());
    let other = reach(&pair.client, &pair.server, &other);
    assert_eq!(timeout(SAFETY, other.add(5)).await.unwrap(), Ok(5));
    // The client keeps no backlog: what it may send is what the server holds.
    let queued = pair.client.stats().queued_bytes;
    assert!(queued < 64 << 10, "client queued {queued} bytes");
    // A waiting tell goes out when room comes, after everything before it.
    let patient = tokio::spawn({
        let remote = remote.clone();
        async move { remote.put(expected).await }
    });
    permits.add_permits(expected as usize + 1);
    assert_eq!(timeout(SAFETY, patient).await.unwrap().unwrap(), Ok(()));
    for n in 0..=expected {
        assert_eq!(timeout(SAFETY, got.recv()).await.unwrap(), Some(n));
    }
    until("nothing held", || pair.server.stats().calls_held == 0).await;
    assert!(
        got.try_recv().is_err(),
        "the refused and timed-out tells never ran"
    );
}

async fn a_tell_flood_at_a_bounded_mailbox_is_held_to_the_window(transport: Transport) {
    a_tell_flood_is_held_to_the_window(transport, Mailbox::bounded(ROOM)).await;
}

/// A capped (unbounded) mailbox refuses a tell at its cap locally; a remote tell,
/// which has left its sender, is held instead, so that it is not dropped.
async fn a_tell_flood_at_a_capped_mailbox_is_held_not_dropped(transport: Transport) {
    a_tell_flood_is_held_to_the_window(transport, Mailbox::unbounded_with_cap(ROOM)).await;
}

mod flood {
    use super::*;
    both_transports!(
        a_tell_flood_at_a_bounded_mailbox_is_held_to_the_window,
        a_tell_flood_at_a_capped_mailbox_is_held_not_dropped
    );
}

/// A member writes a large frame, all but its last byte, on each of six
/// streams: the node buffers two of them (its receive budget, two of the
/// largest frames) and leaves the others unread, keeps serving other nodes,
/// and reads the rest as room comes once the first frames complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_holding_partial_frames_on_many_streams_gets_two_frames_of_room() {
    const MAX_FRAME: usize = 1 << 20;
    const STREAMS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    remora::Credentials::create_cluster(dir.path()).unwrap();
    let build = || {
        Node::builder()
            .credentials(dir.path())
            .listen("127.0.0.1:0")
            .max_frame_size(MAX_FRAME)
    };
    let server = build().build().await.unwrap();
    let addr = server.listen_addr().unwrap();
    let hostile =
        remora_integration_tests::raw::RawPeer::connect(dir.path(), "hostile", addr).await;
    let _control = hostile.hello().await;
    let frame = (MAX_FRAME as u32).to_be_bytes();
    let body = vec![0xc1u8; MAX_FRAME]; // 0xc1: never valid MessagePack
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let (mut send, recv) = timeout(SAFETY, hostile.conn.open_bi())
            .await
            .expect("the node lets a member that said Hello open lanes")
            .unwrap();
        send.write_all(&frame).await.unwrap();
        send.write_all(&body[..MAX_FRAME - 1]).await.unwrap();
        streams.push((send, recv));
    }
    let whole = MAX_FRAME + 4;
    until("two frames of room taken", || {
        server.stats().receiving_bytes == 2 * whole
    })
    .await;
    // Another node is served meanwhile.
    let client = build().build().await.unwrap();
    client.connect(addr.to_string()).await.unwrap();
    let local: CounterRef = server.spawn(Tally::default());
    let remote = reach(&client, &server, &local);
    assert_eq!(timeout(SAFETY, remote.add(2)).await.unwrap(), Ok(2));
    assert_eq!(
        server.stats().receiving_bytes,
        2 * whole,
        "still two frames"
    );
    // The others were read no further than one read each (at most 256 KiB).
    let received = server.stats().bytes_received;
    assert!(
        received < (3 * whole) as u64 + 8192,
        "{received} bytes read of {STREAMS} frames"
    );
    // The frames complete (as garbage, skipped): the others get their room in turn.
    for (send, _) in &mut streams {
        send.write_all(&body[..1]).await.unwrap();
    }
    until("every frame read", || server.stats().receiving_bytes == 0).await;
    let received = server.stats().bytes_received;
    assert!(
        received >= (STREAMS * whole) as u64,
        "all {STREAMS} frames were read in the end: {received} bytes"
    );
    assert_eq!(timeout(SAFETY, remote.add(3)).await.unwrap(), Ok(5));
}

/// A member asks for large replies and never reads them: the node queues at
/// most its backlog budget of replies (beyond what QUIC itself buffers), stops
/// reading that member's calls meanwhile, serves other nodes, and answers
/// every call once the member reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_its_replies_has_its_calls_read_no_further() {
    use remora::wire::codec::encode;
    use remora::wire::{Call, Frame, Limits};
    const MAX_FRAME: usize = 1 << 20;
    const CALLS: u64 = 80;
    let dir = tempfile::tempdir().unwrap();
    remora::Credentials::create_cluster(dir.path()).unwrap();
    let server = Node::builder()
        .credentials(dir.path())
        .listen("127.0.0.1:0")
        .max_frame_size(MAX_FRAME)
        .build()
        .await
        .unwrap();
    let addr = server.listen_addr().unwrap();
    // `seen()` answers about 900 KB: 100 000 large numbers.
    let big: CounterRef = server.spawn(Tally {
        total: 0,
        seen: vec![u64::MAX; 100_000],
    });
    let target = server.export(&big).unwrap();
    let hostile = remora_integration_tests::raw::RawPeer::connect(dir.path(), "greedy", addr).await;
    let _control = hostile.hello().await;
    let (mut send, mut recv) = hostile.conn.open_bi().await.unwrap();
    let limits = Limits::default();
    let mut calls = Vec::new();
    for id in 1..=CALLS {
        let call = Call {
            id,
            target,
            interface: remora::stable_id("Counter"),
            method: remora::stable_id("Counter.seen"),
            args: &[0x90], // no arguments: an empty array
            chain: 0,
            once: 0,
            context: Default::default(),
        };
        encode(&Frame::Call(call), &mut calls, &limits).unwrap();
    }
    send.write_all(&calls).await.unwrap();
    // The replies pile up to the budget (QUIC buffers 32 MiB of them first).
    let budget = 2 * MAX_FRAME;
    until("the replies queue up", || {
        server.stats().queued_bytes > budget / 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = server.stats().queued_bytes;
    assert!(
        queued <= budget + MAX_FRAME,
        "{queued} bytes of replies queued (budget {budget})"
    );
    // Another node is served meanwhile.
    let client = Node::builder()
        .credentials(dir.path())
        .build()
        .await
        .unwrap();
    client.connect(addr.to_string()).await.unwrap();
    let local: CounterRef = server.spawn(Tally::default());
    let remote = reach(&client, &server, &local);
    assert_eq!(timeout(SAFETY, remote.add(2)).await.unwrap(), Ok(2));
    // Once the member reads, every call is answered, with the whole list.
    read_replies_in_order(&mut recv, limits, CALLS, 800_000, SAFETY).await;
    until("nothing queued", || server.stats().queued_bytes == 0).await;
}

/// Floods `server` (see [`flood_while_calling`]), reading its handshakes in
/// flight directly.
async fn flood(
    server: &Node,
    validate: bool,
    rounds: usize,
    calls: &Arc<AtomicU64>,
    bound: usize,
) -> Flooded {
    let addr = server.listen_addr().unwrap();
    flood_while_calling(addr, validate, rounds, calls, bound, || {
        std::future::ready(server.stats().handshakes)
    })
    .await
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

/// Large messages from another node into a mailbox bounded in bytes: the
/// mailbox takes what fits its byte bound (not its 1 024 places), the rest wait
/// (held, then at the sender for credit), and every one runs in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_fill_a_mailbox_to_its_byte_bound_not_its_places() {
    const SIZE: usize = 200 << 10;
    const MAX_BYTES: usize = 1 << 20;
    let server = Node::builder().call_window(WINDOW).max_frame_size(4 << 20);
    let pair = Pair::with_each(Transport::Quic, server, Node::builder()).await;
    let (got_tx, mut got) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(0));
    let bin = Bin {
        got: got_tx,
        permits: permits.clone(),
    };
    let mailbox = Mailbox::bounded(1024).max_bytes(MAX_BYTES);
    let local: HopperRef = pair
        .server
        .spawn_with(bin, SpawnOptions::default().mailbox(mailbox));
    let remote: HopperRef = reach(&pair.client, &pair.server, &local);
    // One runs (and waits), five fill the byte bound (1 000 KiB of 1 024), the
    // window's worth waits.
    let fit = MAX_BYTES / (SIZE + 16);
    let expected = 1 + fit + WINDOW as usize;
    let mut accepted = 0;
    let deadline = tokio::time::Instant::now() + SAFETY;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "not held in time");
        match remote.load(vec![7; SIZE]).try_tell() {
            Ok(()) => accepted += 1,
            Err(CallError::MailboxFull { .. }) => {
                if pair.server.stats().calls_held == WINDOW as usize {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, expected);
    let core = Interface::core(&local);
    assert_eq!(
        core.mailbox_depth(),
        fit,
        "the bytes, not the places, bound it"
    );
    let bytes = core.mailbox_bytes();
    assert!(
        bytes <= MAX_BYTES && bytes >= fit * SIZE,
        "{bytes} bytes queued"
    );
    permits.add_permits(expected);
    for _ in 0..expected {
        assert_eq!(timeout(SAFETY, got.recv()).await.unwrap(), Some(SIZE));
    }
    until("the mailbox empties", || core.mailbox_bytes() == 0).await;
}

/// When a peer is lost, its asks still waiting in a mailbox are dropped unrun
/// (nobody can take their answers; the node counts them), while its tells, which
/// were accepted, still run.
async fn a_lost_peers_queued_asks_are_dropped_unrun_and_its_tells_run(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let ask_permits = Arc::new(Semaphore::new(0));
    let gate: GateRef = pair.server.spawn(Turnstile {
        entered: entered_tx,
        permits: ask_permits.clone(),
    });
    let (got_tx, mut got) = mpsc::unbounded_channel();
    let tell_permits = Arc::new(Semaphore::new(0));
    let tank: ValveRef = pair.server.spawn(Tank {
        got: got_tx,
        permits: tell_permits.clone(),
    });
    let remote_gate = reach(&pair.client, &pair.server, &gate);
    let remote_tank = reach(&pair.client, &pair.server, &tank);
    // One ask runs (and waits), four wait in the mailbox; five tells likewise.
    // A remote ask sends its frame on its first poll: these go out in order.
    let mut asks = Vec::new();
    for n in 1..=5 {
        let mut ask = Box::pin(remote_gate.pass(n));
        assert!(poll_once(&mut ask).await.is_pending());
        asks.push(ask);
    }
    assert_eq!(timeout(SAFETY, entered.recv()).await.unwrap(), Some(1));
    for n in 0..5 {
        remote_tank.put(n).await.expect("accepted");
    }
    until("four asks and four tells queued", || {
        Interface::core(&gate).mailbox_depth() == 4 && Interface::core(&tank).mailbox_depth() == 4
    })
    .await;
    assert_eq!(pair.server.stats().asks_dropped, 0);
    // The server loses the client.
    match &pair.wire {
        Some(wire) => wire.cut(),
        None => assert!(pair.server.disconnect(pair.client.id())),
    }
    for ask in asks {
        let err = timeout(SAFETY, ask).await.unwrap().unwrap_err();
        assert!(matches!(err, CallError::NodeDown { .. }), "{err:?}");
    }
    ask_permits.add_permits(5);
    tell_permits.add_permits(5);
    for n in 0..5 {
        assert_eq!(
            timeout(SAFETY, got.recv()).await.unwrap(),
            Some(n),
            "tells run"
        );
    }
    until("the queued asks dropped", || {
        pair.server.stats().asks_dropped == 4
    })
    .await;
    until("the gate's mailbox empty", || {
        Interface::core(&gate).mailbox_depth() == 0
    })
    .await;
    assert!(entered.try_recv().is_err(), "no queued ask ran");
    assert_eq!(
        ask_permits.available_permits(),
        4,
        "only the running ask took one"
    );
}

mod lost_peer {
    use super::*;
    both_transports!(a_lost_peers_queued_asks_are_dropped_unrun_and_its_tells_run);
}
