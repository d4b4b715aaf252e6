//! Each mailbox kind's behaviour when the actor is busy: who waits, who is refused,
//! and with which error.
//!
//! Every test parks the actor inside a handler (`block`) that reports `Entered` and then
//! waits for a permit the test hands out, so "the actor is busy" is a fact, not a timing
//! guess. Pending-ness is checked by polling a future once (`poll_once`), never by
//! waiting and hoping.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use remora::{Actor, CallError, Interface, Mailbox, Node, SpawnOptions};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;

/// A safety net for waits that must succeed; never reached unless something hangs.
const SAFETY: Duration = Duration::from_secs(5);
/// The deadline given to calls that are expected to time out.
const SHORT: Duration = Duration::from_millis(50);

#[remora::remote]
pub trait Worker {
    /// Reports `Entered`, then waits until the test adds a permit to `release`.
    #[oneway]
    async fn block(&mut self);
    /// Records `n` and reports `Pushed(n)`.
    #[oneway]
    async fn push(&mut self, n: u64);
    /// Everything pushed so far, in handling order.
    async fn seen(&mut self) -> Vec<u64>;
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Entered,
    Pushed(u64),
}

struct Busy {
    events: mpsc::UnboundedSender<Event>,
    release: Arc<Semaphore>,
    seen: Vec<u64>,
}

impl Actor for Busy {}

impl Worker for Busy {
    async fn block(&mut self) {
        let _ = self.events.send(Event::Entered);
        self.release
            .acquire()
            .await
            .expect("the semaphore is never closed")
            .forget();
    }

    async fn push(&mut self, n: u64) {
        self.seen.push(n);
        let _ = self.events.send(Event::Pushed(n));
    }

    async fn seen(&mut self) -> Vec<u64> {
        self.seen.clone()
    }
}

/// A worker plus the handles the test drives it with.
struct Harness {
    worker: WorkerRef,
    events: mpsc::UnboundedReceiver<Event>,
    release: Arc<Semaphore>,
}

impl Harness {
    fn spawn(node: &Node, mailbox: Mailbox) -> Harness {
        let (tx, events) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let worker = node.spawn_with(
            Busy {
                events: tx,
                release: release.clone(),
                seen: Vec::new(),
            },
            SpawnOptions::new().mailbox(mailbox),
        );
        Harness {
            worker,
            events,
            release,
        }
    }

    async fn next_event(&mut self) -> Event {
        timeout(SAFETY, self.events.recv())
            .await
            .expect("the actor reported nothing")
            .expect("the actor is gone")
    }

    /// Parks the actor inside `block` and returns once it is there (its mailbox empty).
    async fn park(&mut self) {
        timeout(SAFETY, self.worker.block())
            .await
            .expect("block was not accepted")
            .expect("block failed");
        assert_eq!(self.next_event().await, Event::Entered);
    }

    fn unpark(&self) {
        self.release.add_permits(1);
    }

    fn depth(&self) -> usize {
        Interface::core(&self.worker).mailbox_depth()
    }
}

/// Polls `fut` exactly once.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

async fn node() -> Node {
    Node::builder().build().await.expect("node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_refuses_try_tell_when_full_and_makes_tell_wait_for_room() {
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::bounded(3));
    h.park().await;
    assert_eq!(h.depth(), 0);

    for n in 0..3 {
        assert_eq!(h.worker.push(n).try_tell(), Ok(()));
    }
    assert_eq!(h.depth(), 3);
    assert_eq!(
        h.worker.push(99).try_tell(),
        Err(CallError::MailboxFull { capacity: 3 })
    );

    // An awaiting tell waits for room: polled once, it is still pending.
    let mut waiting = h.worker.push(3);
    assert!(poll_once(&mut waiting).await.is_pending());
    assert!(poll_once(&mut waiting).await.is_pending());
    assert_eq!(h.depth(), 3, "the waiting tell is not in the mailbox yet");

    h.unpark();
    assert_eq!(
        timeout(SAFETY, waiting).await.expect("tell never got room"),
        Ok(())
    );
    assert_eq!(
        timeout(SAFETY, h.worker.seen()).await.unwrap(),
        Ok(vec![0, 1, 2, 3]),
        "the refused try_tell was not queued; the waiting tell came after the queued ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_tell_on_a_full_mailbox_times_out_undelivered() {
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::bounded(2));
    h.park().await;
    h.worker.push(0).try_tell().unwrap();
    h.worker.push(1).try_tell().unwrap();

    let err = h.worker.with_timeout(SHORT).push(2).await.unwrap_err();
    assert_eq!(
        err,
        CallError::Timeout {
            after: SHORT,
            may_have_executed: false
        }
    );
    assert!(!err.may_have_executed());

    // An ask meets the same wall before it is delivered.
    let err = h.worker.with_timeout(SHORT).seen().await.unwrap_err();
    assert_eq!(
        err,
        CallError::Timeout {
            after: SHORT,
            may_have_executed: false
        }
    );
    assert_eq!(h.depth(), 2, "timed-out sends left nothing behind");

    h.unpark();
    assert_eq!(
        timeout(SAFETY, h.worker.seen()).await.unwrap(),
        Ok(vec![0, 1]),
        "the timed-out tell never ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_tell_waits_until_the_actor_takes_the_message() {
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::rendezvous());
    // `park` itself relies on the rendezvous: its tell returns once `block` is taken.
    h.park().await;

    // The actor is busy: the sender waits for it to take the message.
    let mut first = h.worker.push(1);
    assert!(poll_once(&mut first).await.is_pending());
    assert!(poll_once(&mut first).await.is_pending());

    // Nobody is taking messages now: try_tell is refused, another tell waits its turn.
    assert_eq!(
        h.worker.push(98).try_tell(),
        Err(CallError::MailboxFull { capacity: 0 })
    );
    let mut second = h.worker.push(2);
    assert!(poll_once(&mut second).await.is_pending());
    assert!(poll_once(&mut first).await.is_pending());
    assert_eq!(h.depth(), 0, "a rendezvous mailbox holds nothing itself");

    h.unpark();
    assert_eq!(timeout(SAFETY, first).await.unwrap(), Ok(()));
    assert_eq!(timeout(SAFETY, second).await.unwrap(), Ok(()));
    assert_eq!(
        timeout(SAFETY, h.worker.seen()).await.unwrap(),
        Ok(vec![1, 2]),
        "the refused try_tell never ran; the waiting tells ran in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_tell_that_is_never_taken_times_out_undelivered() {
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::rendezvous());
    h.park().await;

    // The actor never took the message before the deadline, so it never will.
    let err = h.worker.with_timeout(SHORT).push(7).await.unwrap_err();
    assert_eq!(
        err,
        CallError::Timeout {
            after: SHORT,
            may_have_executed: false
        }
    );

    h.unpark();
    assert_eq!(
        timeout(SAFETY, h.worker.seen()).await.unwrap(),
        Ok(vec![]),
        "the timed-out message was withdrawn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_try_tell_succeeds_only_while_the_actor_is_waiting() {
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::rendezvous());
    h.park().await;
    assert_eq!(
        h.worker.push(4).try_tell(),
        Err(CallError::MailboxFull { capacity: 0 }),
        "busy actor"
    );
    h.unpark();
    // Once the actor is back to waiting for messages, a try_tell hands one over.
    // There is no event for "the actor is waiting", so retry (yielding) until it is.
    timeout(SAFETY, async {
        loop {
            match h.worker.push(5).try_tell() {
                Ok(()) => break,
                Err(CallError::MailboxFull { capacity: 0 }) => tokio::task::yield_now().await,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("the idle actor never accepted a try_tell");
    assert_eq!(h.next_event().await, Event::Pushed(5));
    assert_eq!(
        timeout(SAFETY, h.worker.seen()).await.unwrap(),
        Ok(vec![5]),
        "refused try_tells did not run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_with_cap_never_waits_and_reports_overloaded_past_the_cap() {
    const CAP: usize = 5;
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::unbounded_with_cap(CAP));
    h.park().await;

    for n in 0..CAP as u64 {
        // Each awaiting tell is done on its first poll: no waiting even with the actor busy.
        let mut tell = h.worker.push(n);
        assert_eq!(poll_once(&mut tell).await, Poll::Ready(Ok(())));
    }
    assert_eq!(h.depth(), CAP);

    assert_eq!(
        h.worker.push(100).try_tell(),
        Err(CallError::Overloaded { cap: CAP })
    );
    {
        let mut over = h.worker.push(101);
        assert_eq!(
            poll_once(&mut over).await,
            Poll::Ready(Err(CallError::Overloaded { cap: CAP }))
        );
    }
    let err = h.worker.seen().await.unwrap_err();
    assert_eq!(err, CallError::Overloaded { cap: CAP });
    assert!(!err.may_have_executed());
    assert_eq!(h.depth(), CAP, "refused sends do not count");

    h.unpark();
    for n in 0..CAP as u64 {
        assert_eq!(h.next_event().await, Event::Pushed(n));
    }
    assert_eq!(h.depth(), 0);

    // Drained: sends are accepted again.
    assert_eq!(h.worker.push(6).try_tell(), Ok(()));
    assert_eq!(
        timeout(SAFETY, h.worker.seen()).await.unwrap(),
        Ok(vec![0, 1, 2, 3, 4, 6])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_resolves_only_once_the_actor_has_taken_the_message() {
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::bounded(4));
    h.park().await;

    let mut receipt = Box::pin(h.worker.push(1).receipt());
    assert!(poll_once(&mut receipt).await.is_pending());
    assert_eq!(h.depth(), 1, "queued, not taken");
    assert!(poll_once(&mut receipt).await.is_pending());

    h.unpark();
    assert_eq!(timeout(SAFETY, receipt).await.unwrap(), Ok(()));
    assert_eq!(h.next_event().await, Event::Pushed(1));

    // On an idle actor a receipt comes back as soon as the actor dequeues.
    assert_eq!(
        timeout(SAFETY, h.worker.push(2).receipt()).await.unwrap(),
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_times_out_as_may_have_executed_while_the_message_is_queued() {
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::unbounded());
    h.park().await;
    let err = h
        .worker
        .with_timeout(SHORT)
        .push(1)
        .receipt()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Timeout {
            after: SHORT,
            may_have_executed: true
        }
    );
    assert_eq!(h.depth(), 1, "the message stays queued and may still run");
    h.unpark();
    assert_eq!(h.next_event().await, Event::Pushed(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_of_a_message_dropped_by_a_stopping_actor_is_actor_stopped() {
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::bounded(4));
    h.park().await;
    let mut receipt = Box::pin(h.worker.push(1).receipt());
    assert!(poll_once(&mut receipt).await.is_pending());
    node.stop(&h.worker);
    h.unpark();
    assert_eq!(
        timeout(SAFETY, receipt).await.unwrap(),
        Err(CallError::ActorStopped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_refuses_sends_to_a_stopped_actor() {
    let node = node().await;
    for mailbox in [
        Mailbox::rendezvous(),
        Mailbox::bounded(2),
        Mailbox::unbounded_with_cap(2),
    ] {
        let h = Harness::spawn(&node, mailbox);
        node.stop(&h.worker);
        timeout(SAFETY, node.monitor(&h.worker)).await.unwrap();
        assert_eq!(
            h.worker.push(1).try_tell(),
            Err(CallError::ActorStopped),
            "{mailbox:?}"
        );
        assert_eq!(
            timeout(SAFETY, h.worker.push(1)).await.unwrap(),
            Err(CallError::ActorStopped),
            "{mailbox:?}"
        );
        assert_eq!(
            timeout(SAFETY, h.worker.push(1).receipt()).await.unwrap(),
            Err(CallError::ActorStopped),
            "{mailbox:?}"
        );
        assert_eq!(h.depth(), 0, "{mailbox:?}");
    }
}

/// A tell that is still waiting (for room, or for a rendezvous) when the actor stops
/// was never accepted: it must fail with `ActorStopped`, like any send to a stopped
/// actor, rather than report success for a message that is then dropped unhandled.
async fn waiting_tell_when_the_actor_stops(mailbox: Mailbox) {
    let node = node().await;
    let mut h = Harness::spawn(&node, mailbox);
    h.park().await;
    if mailbox.capacity() != Some(0) {
        h.worker.push(0).try_tell().unwrap(); // fills bounded(1)
    }
    let mut waiting = h.worker.push(1);
    assert!(poll_once(&mut waiting).await.is_pending());
    node.stop(&h.worker);
    h.unpark();
    let outcome = timeout(SAFETY, waiting).await.unwrap();
    assert_eq!(
        timeout(SAFETY, node.monitor(&h.worker)).await.unwrap(),
        remora::StopReason::Normal
    );
    let mut handled = Vec::new();
    while let Ok(event) = h.events.try_recv() {
        handled.push(event);
    }
    assert_eq!(
        handled,
        vec![],
        "queued messages of a stopped actor never run"
    );
    assert_eq!(
        outcome,
        Err(CallError::ActorStopped),
        "{mailbox:?}: the waiting tell reported success, but its message was dropped unhandled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tell_waiting_for_room_fails_when_the_actor_stops() {
    waiting_tell_when_the_actor_stops(Mailbox::bounded(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendezvous_tell_waiting_for_the_actor_fails_when_it_stops() {
    waiting_tell_when_the_actor_stops(Mailbox::rendezvous()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_waiting_for_room_fails_when_the_actor_stops() {
    let node = node().await;
    let mut h = Harness::spawn(&node, Mailbox::bounded(1));
    h.park().await;
    h.worker.push(0).try_tell().unwrap();
    let mut waiting = Box::pin(h.worker.seen());
    assert!(poll_once(&mut waiting).await.is_pending());
    node.stop(&h.worker);
    h.unpark();
    assert_eq!(
        timeout(SAFETY, waiting).await.unwrap(),
        Err(CallError::ActorStopped)
    );
}

#[test]
fn mailbox_kinds_report_their_capacity_and_cap() {
    assert_eq!(Mailbox::rendezvous().capacity(), Some(0));
    assert_eq!(Mailbox::rendezvous().cap(), None);
    assert_eq!(Mailbox::bounded(7).capacity(), Some(7));
    assert_eq!(Mailbox::bounded(7).cap(), None);
    assert_eq!(Mailbox::unbounded_with_cap(9).capacity(), None);
    assert_eq!(Mailbox::unbounded_with_cap(9).cap(), Some(9));
    assert_eq!(
        Mailbox::unbounded().cap(),
        Some(Mailbox::DEFAULT_UNBOUNDED_CAP)
    );
    assert_eq!(
        Mailbox::default(),
        Mailbox::bounded(Mailbox::DEFAULT_CAPACITY)
    );
}

#[test]
#[should_panic(expected = "Mailbox::rendezvous()")]
fn bounded_zero_panics_pointing_at_rendezvous() {
    let _ = Mailbox::bounded(0);
}

#[test]
#[should_panic(expected = "could never accept a message")]
fn unbounded_with_cap_zero_panics() {
    let _ = Mailbox::unbounded_with_cap(0);
}
