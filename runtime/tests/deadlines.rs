//! Deadlines users choose: `Duration::MAX` (as `with_timeout` or as a node's
//! `default_timeout`) means "no deadline" on every path a call can take (inline,
//! queued, waiting for mailbox room, a receipt, another node), never an `Instant`
//! overflow panic.

mod support;

use std::sync::Arc;
use std::time::Duration;

use remora::remote::inproc;
use remora::{Actor, Interface, Mailbox, Node, SpawnOptions};
use support::until;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;

const SAFETY: Duration = Duration::from_secs(5);

#[remora::remote]
pub trait Gate {
    /// Reports `n` as entered, waits for a permit, then returns `n`.
    async fn pass(&mut self, n: u64) -> u64;
    #[oneway]
    async fn note(&mut self, n: u64);
    async fn echo(&self, n: u64) -> u64;
}

struct Turnstile {
    entered: mpsc::UnboundedSender<u64>,
    permits: Arc<Semaphore>,
    noted: u64,
}

impl Actor for Turnstile {}

impl Gate for Turnstile {
    async fn pass(&mut self, n: u64) -> u64 {
        let _ = self.entered.send(n);
        self.permits.acquire().await.expect("open").forget();
        n
    }

    async fn note(&mut self, n: u64) {
        self.noted += n;
    }

    async fn echo(&self, n: u64) -> u64 {
        n + self.noted
    }
}

fn turnstile() -> (Turnstile, mpsc::UnboundedReceiver<u64>, Arc<Semaphore>) {
    let (entered, reports) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(0));
    let actor = Turnstile {
        entered,
        permits: permits.clone(),
        noted: 0,
    };
    (actor, reports, permits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_call_without_deadline_waits_on_every_path() {
    let node = Node::builder().build().await.unwrap();
    let (actor, mut entered, permits) = turnstile();
    let opts = SpawnOptions::default().mailbox(Mailbox::bounded(1));
    let gate: GateRef = node.spawn_with(actor, opts);
    let gate = gate.with_timeout(Duration::MAX);
    assert_eq!(Interface::core(&gate).timeout(), Duration::MAX);

    // Inline: runs at once.
    assert_eq!(gate.echo(1).await, Ok(1));
    // Busy actor: of the next two (spawned, so in either order) one queues (its
    // deadline computed) and the other waits for mailbox room (a deadline too).
    let busy = tokio::spawn({
        let gate = gate.clone();
        async move { gate.pass(2).await }
    });
    assert_eq!(timeout(SAFETY, entered.recv()).await.unwrap(), Some(2));
    let queued = tokio::spawn({
        let gate = gate.clone();
        async move { gate.echo(3).await }
    });
    let waiting_for_room = tokio::spawn({
        let gate = gate.clone();
        async move { gate.note(10).receipt().await }
    });
    permits.add_permits(1);
    assert_eq!(timeout(SAFETY, busy).await.unwrap().unwrap(), Ok(2));
    let echoed = timeout(SAFETY, queued).await.unwrap().unwrap();
    assert!(
        matches!(echoed, Ok(3) | Ok(13)),
        "the echo ran before or after the note: {echoed:?}"
    );
    assert_eq!(
        timeout(SAFETY, waiting_for_room).await.unwrap().unwrap(),
        Ok(())
    );
    assert_eq!(gate.echo(0).await, Ok(10), "the note ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_default_without_deadline_serves_remote_calls() {
    let server = Node::builder().build().await.unwrap();
    let client = Node::builder()
        .default_timeout(Duration::MAX)
        .build()
        .await
        .unwrap();
    let _wire = inproc::connect_serializing(&client, &server).await.unwrap();
    let (actor, mut entered, permits) = turnstile();
    let gate: GateRef = server.spawn(actor);
    let object = server.export(&gate).unwrap();
    let remote: GateRef = client.reference(server.id(), object).unwrap();
    assert_eq!(Interface::core(&remote).timeout(), Duration::MAX);

    let held = tokio::spawn({
        let remote = remote.clone();
        async move { remote.pass(7).await }
    });
    assert_eq!(timeout(SAFETY, entered.recv()).await.unwrap(), Some(7));
    permits.add_permits(1);
    assert_eq!(timeout(SAFETY, held).await.unwrap().unwrap(), Ok(7));
    assert_eq!(remote.note(5).receipt().await, Ok(()));
    assert_eq!(remote.echo(1).await, Ok(6));
    let once = remote.with_timeout(Duration::MAX);
    assert_eq!(once.echo(2).await, Ok(7));
}

/// On a paused clock: the lease task's first look comes within its longest tick
/// (a minute), not a quarter of `Duration::MAX`.
#[tokio::test(start_paused = true)]
async fn a_lease_and_a_retention_without_end_are_accepted() {
    let forever = |builder: remora::NodeBuilder| {
        builder
            .lease(Duration::MAX)
            .exactly_once_retention(Duration::MAX)
    };
    let server = forever(Node::builder()).build().await.unwrap();
    let client = forever(Node::builder()).build().await.unwrap();
    let _wire = inproc::connect_serializing(&client, &server).await.unwrap();
    let (actor, _entered, _permits) = turnstile();
    let gate: GateRef = server.spawn(actor);
    let object = server.export(&gate).unwrap();
    let remote: GateRef = client.reference(server.id(), object).unwrap();
    assert_eq!(remote.note(4).receipt().await, Ok(()));
    assert_eq!(remote.echo(1).await, Ok(5));
    // The client's lease task runs: it takes the lease, and gives it back once
    // the last reference is gone.
    let minutes = Duration::from_secs(180);
    until("lease taken", minutes, || {
        server.stats().leases_granted == 1
    })
    .await;
    drop(remote);
    until("lease released", minutes, || {
        server.stats().leases_granted == 0
    })
    .await;
}

#[remora::remote]
pub trait Clockwatch {
    /// Waits `first` (if any), then notes the deadline its handler sees.
    async fn seen(&mut self, first: Duration);
    /// Holds the actor until a permit comes.
    async fn hold(&mut self);
}

type Seen = Arc<parking_lot::Mutex<Vec<Option<tokio::time::Instant>>>>;

struct Watcher {
    permits: Arc<Semaphore>,
    seen: Seen,
}

impl Actor for Watcher {}

impl Clockwatch for Watcher {
    async fn seen(&mut self, first: Duration) {
        if !first.is_zero() {
            tokio::time::sleep(first).await;
        }
        self.seen.lock().push(remora::deadline());
    }

    async fn hold(&mut self) {
        self.permits.acquire().await.expect("open").forget();
    }
}

/// A local call outside any deadline reads the clock only when it must (its
/// handler asks, waits or is queued), and its handler's deadline is still its
/// caller's: on a paused clock, exactly the instant of the ask plus the
/// timeout, whether the handler asks at once, asks after waiting 3 s, or is
/// queued 3 s behind another call.
#[tokio::test(start_paused = true)]
async fn a_local_handlers_deadline_is_its_callers_however_late_it_asks() {
    let node = Node::builder().build().await.unwrap();
    let permits = Arc::new(Semaphore::new(0));
    let seen = Seen::default();
    let watch: ClockwatchRef = node.spawn(Watcher {
        permits: permits.clone(),
        seen: seen.clone(),
    });
    let patience = Duration::from_secs(10);
    let watch = watch.with_timeout(patience);
    let last = || seen.lock().pop().expect("the handler noted its deadline");

    let asked = tokio::time::Instant::now();
    assert_eq!(watch.seen(Duration::ZERO).await, Ok(()));
    assert_eq!(last(), Some(asked + patience));

    let asked = tokio::time::Instant::now();
    assert_eq!(watch.seen(Duration::from_secs(3)).await, Ok(()));
    assert_eq!(tokio::time::Instant::now(), asked + Duration::from_secs(3));
    assert_eq!(last(), Some(asked + patience), "fixed when it first waited");

    let busy = tokio::spawn({
        let watch = watch.clone();
        async move { watch.hold().await }
    });
    tokio::task::yield_now().await;
    let asked = tokio::time::Instant::now();
    let queued = tokio::spawn({
        let watch = watch.clone();
        async move { watch.seen(Duration::ZERO).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(Interface::core(&watch).mailbox_depth(), 1, "it is queued");
    tokio::time::advance(Duration::from_secs(3)).await;
    permits.add_permits(1);
    assert_eq!(busy.await.unwrap(), Ok(()));
    assert_eq!(queued.await.unwrap(), Ok(()));
    assert_eq!(last(), Some(asked + patience), "settled when it was queued");
}
