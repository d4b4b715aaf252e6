//! The adversarial limits tests with the node under test in a process of its
//! own (`remora-limits-node`, or `remora-test-node`), over QUIC on loopback:
//! the attacker (a hostile member, a flood, a client that floods) and a
//! legitimate client run in the test's process, and every bound is checked on
//! the node's own counters, read through its inspector (`Inspector::limits`,
//! `Inspector::conns`). `limits.rs` runs the same scenarios within one process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remora::inspect::{InspectorRef, INSPECTOR_OBJECT};
use remora::{CallError, Mailbox, Node};
use remora_integration_tests::flood::{flood_while_calling, Flooded, Lingering};
use remora_integration_tests::limits::{DialerRef, HatchRef, HopperRef, UnderTest};
use remora_integration_tests::raw::{read_replies_in_order, RawPeer};
use remora_integration_tests::*;
use tokio::time::timeout;

const LIMITS_NODE: &str = env!("CARGO_BIN_EXE_remora-limits-node");

/// The tell flood across OS processes: a client floods a busy counter in a
/// child process with `try_tell`s until the child holds the default window of
/// its calls (a 1 024-message mailbox full, then 256 calls held, the running
/// ask among them). Its own outbox stays small, its calls to another actor of
/// that process go through meanwhile, and every tell accepted runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tell_flood_across_processes_is_held_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    remora::Credentials::create_cluster(dir.path()).unwrap();
    let server = ChildNode::spawn(env!("CARGO_BIN_EXE_remora-test-node"), dir.path());
    let client = Node::builder()
        .credentials(dir.path())
        .build()
        .await
        .unwrap();
    client.connect(&server.addr).await.unwrap();
    let counter: CounterRef = client.reference(server.id, server.counter).unwrap();
    let broker: BrokerRef = client.reference(server.id, server.broker).unwrap();
    // The counter naps (long enough for the flood), holding one of the window.
    // A remote call sends its frame on its first poll: the nap is first in line.
    let mut nap = Box::pin(counter.nap(4_000));
    assert!(poll_once(&mut nap).await.is_pending());
    let window = remora::wire::Limits::DEFAULT_WINDOW as u64;
    let room = Mailbox::DEFAULT_CAPACITY as u64;
    let (mut accepted, mut refused_in_a_row) = (0u64, 0);
    let deadline = tokio::time::Instant::now() + SAFETY;
    while refused_in_a_row < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "flood not held in time"
        );
        match counter.bump(1).try_tell() {
            Ok(()) => {
                accepted += 1;
                refused_in_a_row = 0;
            }
            Err(CallError::MailboxFull { capacity }) => {
                assert_eq!(capacity as u64, window);
                // Held, or credit still on its way back: look again shortly.
                refused_in_a_row += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, room + window - 1, "mailbox + window - the nap");
    // The node holds the rest of the window (the nap has the other place).
    let inspector: InspectorRef = client.reference(server.id, INSPECTOR_OBJECT).unwrap();
    let held = timeout(SAFETY, inspector.limits()).await.unwrap();
    assert_eq!(held.unwrap().unwrap().calls_held as u64, window - 1);
    let queued = client.stats().queued_bytes;
    assert!(queued < 64 << 10, "client queued {queued} bytes");
    assert_eq!(
        timeout(SAFETY, broker.give()).await.unwrap(),
        Ok(None),
        "another actor of that process answers meanwhile"
    );
    assert_eq!(timeout(SAFETY, nap).await.unwrap(), Ok(4_000));
    assert_eq!(
        timeout(SAFETY, counter.total()).await.unwrap(),
        Ok(accepted),
        "every tell accepted ran"
    );
}

/// One connection calls a hundred thousand distinct objects across processes:
/// the node under test calls them (a thousand at a time, each dropped after
/// its call) on the test's node; every call is answered, and the node never
/// has more than its 16 call lanes open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_distinct_objects_across_processes_all_answer() {
    const OBJECTS: usize = 100_000;
    const BATCH: usize = 1_000;
    let under = UnderTest::start(LIMITS_NODE, &[]).await;
    let dialer: DialerRef = under.reference(under.node.dialer);
    let mut answered = 0;
    for _ in 0..OBJECTS / BATCH {
        let counters: Vec<CounterRef> = (0..BATCH)
            .map(|_| under.client.spawn(Tally::default()))
            .collect();
        let calling = tokio::spawn({
            let dialer = dialer.clone();
            async move { dialer.add_one_each(counters).await }
        });
        // Its lanes while the batch is being called, and once it is.
        let deadline = tokio::time::Instant::now() + SAFETY;
        while !calling.is_finished() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a batch answers in time"
            );
            let lanes = under.stats().await.call_lanes;
            assert!(lanes <= 16, "{lanes} call lanes");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let batch = calling.await.unwrap();
        answered += batch.expect("the dialer answers") as usize;
        let lanes = under.stats().await.call_lanes;
        assert!(lanes <= 16, "{lanes} call lanes");
    }
    assert_eq!(answered, OBJECTS);
}

/// A member writes a large frame, all but its last byte, on each of six
/// streams to a node in another process: the node buffers two of them (its
/// receive budget, two of the largest frames) and leaves the others unread,
/// keeps serving the test's node, and reads the rest as room comes once the
/// first frames complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_holding_partial_frames_across_processes_gets_two_frames_of_room() {
    const MAX_FRAME: usize = 1 << 20;
    const STREAMS: usize = 6;
    let under = UnderTest::start(LIMITS_NODE, &["--max-frame-size", "1048576"]).await;
    let hostile = RawPeer::connect(under.dir.path(), "hostile", under.node.addr).await;
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
    under
        .until("two frames of room taken", |s| {
            s.receiving_bytes == 2 * whole
        })
        .await;
    // The test's node is served meanwhile.
    let counter: CounterRef = under.reference(under.node.counter);
    assert_eq!(timeout(SAFETY, counter.add(2)).await.unwrap(), Ok(2));
    assert_eq!(
        under.stats().await.receiving_bytes,
        2 * whole,
        "still two frames"
    );
    // The others were read no further than one read each (at most 256 KiB).
    let received = from_member(&under, &hostile).await;
    assert!(
        received < (3 * whole) as u64 + 8192,
        "{received} bytes read of {STREAMS} frames"
    );
    // The frames complete (as garbage, skipped): the others get their room in turn.
    for (send, _) in &mut streams {
        send.write_all(&body[..1]).await.unwrap();
    }
    under
        .until("every frame read", |s| s.receiving_bytes == 0)
        .await;
    let received = from_member(&under, &hostile).await;
    assert!(
        received >= (STREAMS * whole) as u64,
        "all {STREAMS} frames were read in the end: {received} bytes"
    );
    assert_eq!(timeout(SAFETY, counter.add(3)).await.unwrap(), Ok(5));
}

/// Bytes the node under test has read from `member`'s connection.
async fn from_member(under: &UnderTest, member: &RawPeer) -> u64 {
    let conns = under.conns().await;
    let conn = conns
        .iter()
        .find(|c| c.peer == member.id())
        .expect("the member's connection is open");
    conn.bytes_received
}

/// A member asks a node in another process for large replies and never reads
/// them: the node queues at most its backlog budget of replies (beyond what
/// QUIC itself buffers), stops reading that member's calls meanwhile, serves
/// the test's node, and answers every call once the member reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_its_replies_across_processes_is_read_no_further() {
    use remora::wire::codec::encode;
    use remora::wire::{Call, Frame, Limits};
    const MAX_FRAME: usize = 1 << 20;
    const CALLS: u64 = 80;
    let under = UnderTest::start(LIMITS_NODE, &["--max-frame-size", "1048576"]).await;
    let hostile = RawPeer::connect(under.dir.path(), "greedy", under.node.addr).await;
    let _control = hostile.hello().await;
    let (mut send, mut recv) = hostile.conn.open_bi().await.unwrap();
    let limits = Limits::default();
    let mut calls = Vec::new();
    for id in 1..=CALLS {
        let call = Call {
            id,
            // `seen()` of the big counter answers about 900 KB.
            target: under.node.big,
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
    under
        .until("the replies queue up", |s| s.queued_bytes > budget / 2)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = under.stats().await.queued_bytes;
    assert!(
        queued <= budget + MAX_FRAME,
        "{queued} bytes of replies queued (budget {budget})"
    );
    // The test's node is served meanwhile.
    let counter: CounterRef = under.reference(under.node.counter);
    assert_eq!(timeout(SAFETY, counter.add(2)).await.unwrap(), Ok(2));
    // Once the member reads, every call is answered, with the whole list.
    read_replies_in_order(&mut recv, limits, CALLS, 800_000, SAFETY).await;
    under.until("nothing queued", |s| s.queued_bytes == 0).await;
}

/// Large messages from the test's node into a mailbox bounded in bytes, in
/// another process: the mailbox takes what fits its byte bound (not its 1 024
/// places), the rest wait (held, then at the sender for credit), and every one
/// runs in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_across_processes_fill_a_mailbox_to_its_byte_bound() {
    const SIZE: usize = 200 << 10;
    const MAX_BYTES: usize = 1 << 20;
    const WINDOW: usize = 8;
    let under = UnderTest::start(
        LIMITS_NODE,
        &[
            "--call-window",
            "8",
            "--max-frame-size",
            "4194304",
            "--hopper-bytes",
            "1048576",
        ],
    )
    .await;
    let hopper: HopperRef = under.reference(under.node.hopper);
    let hatch: HatchRef = under.reference(under.node.hatch);
    // One runs (and waits), five fill the byte bound (1 000 KiB of 1 024), the
    // window's worth waits.
    let fit = MAX_BYTES / (SIZE + 16);
    let expected = 1 + fit + WINDOW;
    let mut accepted = 0;
    let deadline = tokio::time::Instant::now() + SAFETY;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "not held in time");
        match hopper.load(vec![7; SIZE]).try_tell() {
            Ok(()) => {
                accepted += 1;
                assert!(
                    accepted <= expected,
                    "{accepted} accepted: more than the byte bound and the window hold"
                );
            }
            Err(CallError::MailboxFull { .. }) => {
                if under.stats().await.calls_held == WINDOW {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, expected);
    let (depth, bytes) = timeout(SAFETY, hatch.queued()).await.unwrap().unwrap();
    assert_eq!(depth as usize, fit, "the bytes, not the places, bound it");
    let bytes = bytes as usize;
    assert!(
        bytes <= MAX_BYTES && bytes >= fit * SIZE,
        "{bytes} bytes queued"
    );
    assert_eq!(under.stats().await.calls_held, WINDOW);
    timeout(SAFETY, hatch.open(expected as u64))
        .await
        .unwrap()
        .unwrap();
    let mut finished = Vec::new();
    let deadline = tokio::time::Instant::now() + SAFETY;
    while finished.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all ran in time"
        );
        finished.extend(timeout(SAFETY, hatch.finished()).await.unwrap().unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(finished, vec![SIZE as u64; expected], "every one ran, once");
    let (depth, bytes) = timeout(SAFETY, hatch.queued()).await.unwrap().unwrap();
    assert_eq!((depth, bytes), (0, 0), "the mailbox emptied");
    under.until("nothing held", |s| s.calls_held == 0).await;
}

/// Floods the node under test (see [`flood_while_calling`]), reading its
/// handshakes in flight through its inspector.
async fn flood(
    under: &UnderTest,
    validate: bool,
    rounds: usize,
    calls: &Arc<AtomicU64>,
    bound: usize,
) -> Flooded {
    flood_while_calling(under.node.addr, validate, rounds, calls, bound, || async {
        under.stats().await.handshakes
    })
    .await
}

/// A flood of half-open handshakes (real Initials, never completed) at a node
/// in another process while the test's node keeps calling it: the node works
/// on at most `retry_above` of them and asks the rest to prove their address
/// (a QUIC Retry, which the flood never answers); the calls all succeed, and a
/// node that connects during the flood gets through (it answers the Retry). A
/// flood that does answer Retries, from one address, gets that address's share
/// and is refused past it. Every handshake ends within the peer timeout twice
/// (TLS, then `Hello`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_handshake_flood_across_processes_is_held_to_the_budget() {
    let under = UnderTest::start(
        LIMITS_NODE,
        &[
            "--retry-above",
            "16",
            "--max-in-flight",
            "64",
            "--max-per-address",
            "8",
            "--peer-timeout-ms",
            "3000",
        ],
    )
    .await;
    let remote: CounterRef = under.reference(under.node.counter);
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
    let under = Arc::new(under);
    let late = tokio::spawn({
        let under = under.clone();
        async move {
            under
                .until("the flood is being retried", |s| s.handshakes_retried > 0)
                .await;
            let late = Node::builder()
                .credentials(under.dir.path())
                .build()
                .await
                .unwrap();
            let connected = timeout(SAFETY, late.connect(under.node.addr.to_string()))
                .await
                .expect("connected in time");
            (late, connected)
        }
    });
    // (In flight: at most the flood's 16, and the late node's one.)
    let flooded = flood(&under, false, 30, &calls, 16 + 1).await;
    let (late, connected) = timeout(SAFETY, late).await.unwrap().unwrap();
    assert_eq!(
        connected,
        Ok(under.node.id),
        "a node connects during the flood"
    );
    let stats = under.stats().await;
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
    let through_late: CounterRef = late.reference(under.node.id, under.node.counter).unwrap();
    assert!(timeout(SAFETY, through_late.total()).await.unwrap().is_ok());

    // Answering the Retries proves the address: its share (8) is kept, the rest
    // refused. (In flight: at most 16 unproved, the first flood's, and 8 from the
    // one proved address; the maximum, 64, is never reached.)
    let flooded = flood(&under, true, 10, &calls, 16 + 8).await;
    let stats = under.stats().await;
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
    let stats = under
        .until("every flooded handshake ended", |s| s.handshakes == 0)
        .await;
    assert_eq!(stats.connections, 2, "the test's node and the late one");
}

/// A client that keeps its handshake with a node in another process alive (a
/// PING every 200 ms, each restarting the node's idle timer) but never
/// finishes it is let go after the peer timeout: TLS has a deadline of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_kept_alive_across_processes_ends_after_the_peer_timeout() {
    let under = UnderTest::start(LIMITS_NODE, &["--peer-timeout-ms", "1000"]).await;
    under
        .until("the test's node's handshake ended", |s| s.handshakes == 0)
        .await;
    let mut lingering = Lingering::start(under.node.addr).unwrap();
    let mut seen = false;
    let mut ended = false;
    // At most SAFETY (50 rounds of 200 ms).
    for _ in 0..50 {
        lingering.ping().unwrap();
        let handshakes = under.stats().await.handshakes;
        seen |= handshakes == 1;
        if seen && handshakes == 0 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen, "the handshake was in flight");
    assert!(ended, "the handshake ended while the client kept it alive");
    assert_eq!(
        under.stats().await.connections,
        1,
        "the test's node's alone"
    );
}

/// A member that completes TLS with a node in another process but never sends
/// its `Hello` is dropped after the peer timeout (its own keep-alive pings
/// would keep it forever otherwise), and the node goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_says_hello_across_processes_is_dropped() {
    let under = UnderTest::start(LIMITS_NODE, &["--peer-timeout-ms", "500"]).await;
    let silent = RawPeer::connect(under.dir.path(), "silent", under.node.addr).await;
    let closed = timeout(SAFETY, silent.conn.closed())
        .await
        .expect("the node closed the silent member's connection");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(close) if close.reason.as_ref() == b"no Hello in time"),
        "{closed:?}"
    );
    let stats = under
        .until("the silent member's connection gone", |s| s.handshakes == 0)
        .await;
    assert_eq!(stats.connections, 1, "the test's node's alone");
    let counter: CounterRef = under.reference(under.node.counter);
    assert_eq!(timeout(SAFETY, counter.add(1)).await.unwrap(), Ok(1));
}
