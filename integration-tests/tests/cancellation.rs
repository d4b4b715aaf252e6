//! Deadlines travel with calls and callers that give up are told (issue 13),
//! over both transports: a chain of three nodes given up at its head stops
//! everywhere, a call given up while queued never runs, an `#[abortable]`
//! handler is dropped at its await (a plain one runs on and sees
//! `cancelled()`), and a handler's deadline is never later than its caller's.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use remora::{CallError, Interface, Node};
use remora_integration_tests::chain::{ChainRef, ChainStats, Link};
use remora_integration_tests::*;
use tokio::time::{timeout, Instant};

/// A link spawned on `owner` and reached from `from`.
fn link_on(owner: &Node, from: &Node) -> (ChainRef, Arc<ChainStats>) {
    let (remote, _local, stats) = link_with_local(owner, from);
    (remote, stats)
}

/// Starts a `hold` on `link` (sent on its first poll) and waits until its
/// handler runs: the link is busy until `stats.permits` lets it go.
async fn hold_busy<'a>(
    link: &'a ChainRef,
    stats: &ChainStats,
) -> Pin<Box<impl Future<Output = Result<u64, CallError>> + 'a>> {
    let mut busy = Box::pin(link.hold());
    assert!(poll_once(&mut busy).await.is_pending());
    until("the link is busy", || {
        stats.running.load(Ordering::SeqCst) == 1
    })
    .await;
    busy
}

/// [`link_on`], with the owner's own reference to the link.
fn link_with_local(owner: &Node, from: &Node) -> (ChainRef, ChainRef, Arc<ChainStats>) {
    let (link, stats) = Link::new();
    let local: ChainRef = owner.spawn(link);
    (reach(from, owner, &local), local, stats)
}

async fn a_chain_given_up_at_its_head_stops_everywhere(transport: Transport) {
    let ([a, b, c], _wires) = three_nodes(transport).await;
    let (to_b, on_b) = link_on(&b, &a);
    let (to_c, on_c) = link_on(&c, &a);
    let started = Instant::now();
    let head = to_b.with_timeout(Duration::from_millis(200));
    let outcome = timeout(SAFETY, head.forward(Some(to_c))).await.unwrap();
    assert!(
        matches!(outcome, Err(CallError::Timeout { .. })),
        "{outcome:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The chain ends from its far end inwards, each callee's deadline a few ms
    // before its caller's: C sees its call given up, B's call to C ends with
    // Cancelled, no handler runs on. A busy machine may be late scheduling the
    // last of that by A's error, so the end is awaited (bounded), then checked.
    until("the chain has ended", || {
        let (b_now, c_now) = (on_b.counts(), on_c.counts());
        c_now.saw_cancelled == 1 && !b_now.outcomes.is_empty() && b_now.running + c_now.running == 0
    })
    .await;
    let (b_now, c_now) = (on_b.counts(), on_c.counts());
    assert_eq!(c_now.saw_cancelled, 1, "{c_now:?}");
    assert_eq!(b_now.outcomes, ["Cancelled"], "{b_now:?}");
    assert_eq!((b_now.running, c_now.running), (0, 0));
    assert_eq!((b_now.entered, c_now.entered), (1, 1));
    // Neither node dropped anything unrun: both calls were running.
    assert_eq!(b.stats().calls_expired + c.stats().calls_expired, 0);
}

async fn a_call_given_up_while_queued_never_runs(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (link, local, stats) = link_with_local(&pair.server, &pair.client);
    let depth = || Interface::core(&local).mailbox_depth();
    let busy = hold_busy(&link, &stats).await;
    // Queued behind the busy handler (a remote call sends on its first poll),
    // then given up by dropping it: a Cancel follows it on its lane.
    let mut queued = Box::pin(link.tick());
    assert!(poll_once(&mut queued).await.is_pending());
    until("the tick is queued", || depth() == 1).await;
    drop(queued);
    // A second tick on the same lane, behind the Cancel: once it is queued,
    // the Cancel has been read.
    let mut second = Box::pin(link.tick());
    assert!(poll_once(&mut second).await.is_pending());
    until("the second tick is queued", || depth() == 2).await;
    stats.permits.add_permits(1);
    assert_eq!(timeout(SAFETY, busy).await.unwrap(), Ok(2));
    // Calls from one sender run in order: had the dropped tick run, this is 2.
    assert_eq!(timeout(SAFETY, second).await.unwrap(), Ok(1));
    assert_eq!(stats.ticks.load(Ordering::SeqCst), 1);
    assert_eq!(pair.server.stats().calls_cancelled, 1);
}

/// A call alone in flight reads its lane's replies itself while it waits
/// (over QUIC), and hands the lane back to its reader task when it stops
/// waiting, given up or answered: a call sent behind it, which leaves the
/// reading to others, still has its answer.
async fn a_caller_that_gives_up_hands_its_lane_back(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (link, _local, stats) = link_with_local(&pair.server, &pair.client);
    // The lane is open (and its reader there) once a call went over it.
    assert_eq!(timeout(SAFETY, link.tick()).await.unwrap(), Ok(1));
    let busy = hold_busy(&link, &stats).await;
    // Sent while the first is in flight: it does not read the lane.
    let mut second = Box::pin(link.tick());
    assert!(poll_once(&mut second).await.is_pending());
    // The first gives up; the handler it leaves (a plain one runs on) lets
    // the second run once it has its permit.
    drop(busy);
    stats.permits.add_permits(1);
    assert_eq!(timeout(SAFETY, second).await.unwrap(), Ok(2));
    assert_eq!(timeout(SAFETY, link.tick()).await.unwrap(), Ok(3));
}

async fn a_local_call_given_up_while_queued_never_runs() {
    let node = node().await;
    let (link, stats) = Link::new();
    let link: ChainRef = node.spawn(link);
    let busy = hold_busy(&link, &stats).await;
    let mut queued = Box::pin(link.tick());
    assert!(poll_once(&mut queued).await.is_pending());
    assert_eq!(Interface::core(&link).mailbox_depth(), 1);
    drop(queued);
    stats.permits.add_permits(1);
    assert_eq!(timeout(SAFETY, busy).await.unwrap(), Ok(2));
    assert_eq!(timeout(SAFETY, link.tick()).await.unwrap(), Ok(1));
    assert_eq!(stats.ticks.load(Ordering::SeqCst), 1);
    assert_eq!(node.stats().calls_cancelled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_local_actors_a_call_given_up_while_queued_never_runs() {
    a_local_call_given_up_while_queued_never_runs().await;
}

async fn an_abortable_handler_is_dropped_at_its_await_and_a_plain_one_is_not(transport: Transport) {
    let pair = Pair::new(transport).await;
    let (link, stats) = link_on(&pair.server, &pair.client);
    let mut abortable = Box::pin(link.wait_abortable());
    assert!(poll_once(&mut abortable).await.is_pending());
    until("the abortable handler runs", || {
        stats.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(abortable);
    until("it is dropped", || {
        stats.running.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(stats.dropped_midway.load(Ordering::SeqCst), 1);
    assert_eq!(stats.saw_cancelled.load(Ordering::SeqCst), 0);

    let mut plain = Box::pin(link.wait_plain());
    assert!(poll_once(&mut plain).await.is_pending());
    until("the plain handler runs", || {
        stats.entered.load(Ordering::SeqCst) == 2
    })
    .await;
    drop(plain);
    until("it ends", || stats.running.load(Ordering::SeqCst) == 0).await;
    assert_eq!(
        stats.saw_cancelled.load(Ordering::SeqCst),
        1,
        "it saw cancelled()"
    );
    assert_eq!(
        stats.dropped_midway.load(Ordering::SeqCst),
        1,
        "and ran to its end"
    );
    // The link takes calls as before.
    assert_eq!(timeout(SAFETY, link.tick()).await.unwrap(), Ok(1));
}

async fn a_handlers_deadline_is_never_later_than_its_callers(transport: Transport) {
    let ([a, b, c], _wires) = three_nodes(transport).await;
    // A is a handler on node a (its deadline is read where it runs), B on b.
    let (head, on_a) = Link::new();
    let head: ChainRef = a.spawn(head);
    let (to_b, on_b) = link_on(&b, &a);
    let (to_c, on_c) = link_on(&c, &a);
    // Each hop charges the budget the round trip and 1/64 of it: a frame that
    // spent longer than that between its budget's reading and its arrival (a
    // starved thread on a busy machine) would land past A's; at a second and
    // more the share is many times any delay seen here.
    for patience in [1_000, 5_000] {
        let patience = Duration::from_millis(patience);
        let asked = Instant::now();
        let first = head
            .with_timeout(patience)
            .deadline_seen(Some(to_b.clone()));
        assert_eq!(timeout(SAFETY, first).await.unwrap(), Ok(true));
        let at_a = on_a
            .deadlines
            .lock()
            .pop()
            .flatten()
            .expect("A has a deadline");
        let at_b = on_b
            .deadlines
            .lock()
            .pop()
            .flatten()
            .expect("B has one too");
        assert!(
            at_a <= asked + patience + SAFETY && at_a >= asked + patience,
            "A's deadline is {:?} after the ask, for a patience of {patience:?}",
            at_a.checked_duration_since(asked)
        );
        assert!(at_b <= at_a, "B's is {:?} past A's", at_b - at_a);
        assert!(at_a - at_b < patience / 2, "B has most of it");
        // One hop further, from B to C.
        let second = to_b
            .with_timeout(patience)
            .deadline_seen(Some(to_c.clone()));
        assert_eq!(timeout(SAFETY, second).await.unwrap(), Ok(true));
        let at_b = on_b
            .deadlines
            .lock()
            .pop()
            .flatten()
            .expect("B has a deadline");
        let at_c = on_c
            .deadlines
            .lock()
            .pop()
            .flatten()
            .expect("C has one too");
        assert!(at_c <= at_b, "C's is {:?} past B's", at_c - at_b);
    }
    // Without a deadline, none travels.
    let forever = to_b.with_timeout(Duration::MAX);
    assert_eq!(forever.deadline_seen(None).await, Ok(true));
    assert_eq!(on_b.deadlines.lock().pop(), Some(None));
}

/// A call given up while queued is dropped unrun with its arguments when its
/// actor reaches it in the mailbox: a pipe half it carried closes then, so the
/// producer on the caller's side hears of it (its send fails with the item
/// back) instead of waiting for a consumer that never runs.
async fn a_call_given_up_while_queued_closes_its_pipe_halves(transport: Option<Transport>) {
    let node;
    let mut _pair = None;
    let (link, local, stats) = match transport {
        Some(transport) => {
            let pair = Pair::new(transport).await;
            let reached = link_with_local(&pair.server, &pair.client);
            _pair = Some(pair);
            reached
        }
        None => {
            node = remora_integration_tests::node().await;
            let (link, stats) = Link::new();
            let local: ChainRef = node.spawn(link);
            (local.clone(), local, stats)
        }
    };
    let depth = || Interface::core(&local).mailbox_depth();
    let busy = hold_busy(&link, &stats).await;
    let (tx, rx) = remora::pipe::channel::<u64>(4);
    let mut queued = Box::pin(link.drain(rx));
    assert!(poll_once(&mut queued).await.is_pending());
    until("the drain is queued", || depth() == 1).await;
    assert!(!tx.is_closed(), "the pipe is open while its call waits");
    drop(queued);
    // A tick behind it on the same lane: once it is queued, the `Cancel` (sent
    // before it) has been read. Then the busy handler ends, and the actor
    // reaches the given-up call and drops it unrun.
    let mut tick = Box::pin(link.tick());
    assert!(poll_once(&mut tick).await.is_pending());
    until("the tick is queued", || depth() == 2).await;
    stats.permits.add_permits(1);
    assert_eq!(timeout(SAFETY, busy).await.unwrap(), Ok(2));
    assert_eq!(timeout(SAFETY, tick).await.unwrap(), Ok(1));
    timeout(SAFETY, tx.closed())
        .await
        .expect("the pipe closes once its given-up call is dropped");
    assert!(matches!(
        tx.send(7).await,
        Err(remora::pipe::SendError::Closed(7))
    ));
    assert_eq!(
        stats.entered.load(Ordering::SeqCst),
        1,
        "the drain never ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_local_actors_a_call_given_up_closes_its_pipe_halves() {
    a_call_given_up_while_queued_closes_its_pipe_halves(None).await;
}

async fn a_remote_call_given_up_while_queued_closes_its_pipe_halves(transport: Transport) {
    a_call_given_up_while_queued_closes_its_pipe_halves(Some(transport)).await;
}

both_transports!(
    a_caller_that_gives_up_hands_its_lane_back,
    a_remote_call_given_up_while_queued_closes_its_pipe_halves,
    a_chain_given_up_at_its_head_stops_everywhere,
    a_call_given_up_while_queued_never_runs,
    an_abortable_handler_is_dropped_at_its_await_and_a_plain_one_is_not,
    a_handlers_deadline_is_never_later_than_its_callers,
);
