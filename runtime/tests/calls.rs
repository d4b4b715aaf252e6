//! Call semantics on one node: asks return values, tells keep their order, deadlines
//! and stopped actors give the documented errors, and the generated proxy has the
//! identities and traits the design promises.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

mod support;

use remora::rt::Method;
use remora::{stable_id, Actor, CallError, Interface, Mailbox, Node, SpawnOptions};
use support::until;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::timeout;

const SAFETY: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(50);

#[remora::remote]
pub trait Counter {
    async fn add(&mut self, n: u64) -> u64;
    async fn total(&self) -> u64;
    #[oneway]
    async fn reset(&mut self);
}

#[remora::remote]
pub trait Recorder {
    #[oneway]
    async fn record(&mut self, n: u64);
    /// Records `n` and returns how many values have been recorded.
    async fn record_ask(&mut self, n: u64) -> usize;
    #[oneway]
    async fn record_from(&mut self, sender: u32, seq: u32);
    async fn values(&self) -> Vec<u64>;
    async fn by_sender(&self) -> Vec<(u32, u32)>;
    /// Keeps the actor busy until its brake is released (see [`Brake`]).
    #[oneway]
    async fn pause(&mut self);
}

#[remora::remote]
pub trait Shapes {
    async fn nothing(&mut self);
    async fn constant(&self) -> String;
    async fn join(&mut self, a: String, b: u8, c: Vec<i32>, d: (bool, char)) -> String;
    async fn pair(&self) -> (u64, Option<String>);
    /// A default body runs on the actor like any other method.
    async fn doubled(&mut self, n: u64) -> u64 {
        n * 2
    }
    /// Application errors stay inside `Ok`.
    async fn checked_div(&self, a: u64, b: u64) -> Result<u64, String>;
}

#[remora::remote]
pub trait Hang {
    /// Reports `n` as entered, waits for a permit on the actor's semaphore, then returns `n`.
    async fn wait_then(&mut self, n: u64) -> u64;
    async fn echo(&mut self, n: u64) -> u64;
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Insufficient {
    pub balance: u64,
}

#[remora::remote(name = "bank.Account")]
pub trait Account {
    async fn deposit(&mut self, amount: u64) -> u64;
    async fn withdraw(&mut self, amount: u64) -> Result<u64, Insufficient>;
    async fn transfer(&mut self, to: AccountRef, amount: u64) -> Result<u64, Insufficient>;
    async fn balance(&self) -> u64;
}

/// A trait with no methods still makes a (useless but valid) interface.
#[remora::remote]
pub trait Empty {}

struct Tally(u64);
impl Actor for Tally {}
impl Counter for Tally {
    async fn add(&mut self, n: u64) -> u64 {
        self.0 += n;
        self.0
    }
    async fn total(&self) -> u64 {
        self.0
    }
    async fn reset(&mut self) {
        self.0 = 0;
    }
}

#[derive(Default)]
struct Log {
    values: Vec<u64>,
    senders: Vec<(u32, u32)>,
    brake: Brake,
}

/// Holds an actor in a handler until the test lets go, so that whatever is sent
/// to it meanwhile has to wait in its mailbox (an idle actor runs a call on the
/// caller's task instead, and its mailbox is never used).
#[derive(Clone)]
struct Brake {
    /// Notified once the handler holding the actor has started.
    engaged: Arc<Notify>,
    /// The handler returns once this has a permit.
    release: Arc<Semaphore>,
}

impl Default for Brake {
    fn default() -> Self {
        Brake {
            engaged: Arc::new(Notify::new()),
            release: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Brake {
    async fn hold(&self) {
        self.engaged.notify_one();
        self.release.acquire().await.expect("never closed").forget();
    }

    fn release(&self) {
        self.release.add_permits(1);
    }
}
impl Actor for Log {}
impl Recorder for Log {
    async fn record(&mut self, n: u64) {
        self.values.push(n);
    }
    async fn record_ask(&mut self, n: u64) -> usize {
        self.values.push(n);
        self.values.len()
    }
    async fn record_from(&mut self, sender: u32, seq: u32) {
        self.senders.push((sender, seq));
    }
    async fn values(&self) -> Vec<u64> {
        self.values.clone()
    }
    async fn by_sender(&self) -> Vec<(u32, u32)> {
        self.senders.clone()
    }
    async fn pause(&mut self) {
        self.brake.hold().await;
    }
}

struct Shape {
    calls: u32,
}
impl Actor for Shape {}
impl Shapes for Shape {
    async fn nothing(&mut self) {
        self.calls += 1;
    }
    async fn constant(&self) -> String {
        "constant".to_owned()
    }
    async fn join(&mut self, a: String, b: u8, c: Vec<i32>, d: (bool, char)) -> String {
        self.calls += 1;
        format!("{a}/{b}/{c:?}/{d:?}/{}", self.calls)
    }
    async fn pair(&self) -> (u64, Option<String>) {
        (u64::from(self.calls), Some("calls".to_owned()))
    }
    async fn checked_div(&self, a: u64, b: u64) -> Result<u64, String> {
        a.checked_div(b).ok_or_else(|| format!("{a} / 0"))
    }
}

struct Stuck {
    entered: mpsc::UnboundedSender<u64>,
    release: Arc<Semaphore>,
}
impl Actor for Stuck {}
impl Hang for Stuck {
    async fn wait_then(&mut self, n: u64) -> u64 {
        let _ = self.entered.send(n);
        self.release.acquire().await.unwrap().forget();
        n
    }
    async fn echo(&mut self, n: u64) -> u64 {
        n
    }
}

struct Ledger {
    balance: u64,
}
impl Actor for Ledger {}
impl Account for Ledger {
    async fn deposit(&mut self, amount: u64) -> u64 {
        self.balance += amount;
        self.balance
    }
    async fn withdraw(&mut self, amount: u64) -> Result<u64, Insufficient> {
        if amount > self.balance {
            return Err(Insufficient {
                balance: self.balance,
            });
        }
        self.balance -= amount;
        Ok(self.balance)
    }
    async fn transfer(&mut self, to: AccountRef, amount: u64) -> Result<u64, Insufficient> {
        let left = self.withdraw(amount).await?;
        to.deposit(amount)
            .await
            .expect("the receiving account answers");
        Ok(left)
    }
    async fn balance(&self) -> u64 {
        self.balance
    }
}

struct Nothing;
impl Actor for Nothing {}
impl Empty for Nothing {}

async fn node() -> Node {
    Node::builder().build().await.expect("node")
}

/// A `Hang` actor, the receiver of its "entered" reports, and its release valve.
fn spawn_stuck(node: &Node) -> (HangRef, mpsc::UnboundedReceiver<u64>, Arc<Semaphore>) {
    let (entered, reports) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let h = node.spawn(Stuck {
        entered,
        release: release.clone(),
    });
    (h, reports, release)
}

async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// A `Log` with `mailbox`, held busy in `pause` (it has started: the brake is
/// engaged) until the returned brake is released; nothing is queued yet.
async fn busy_log(node: &Node, mailbox: Mailbox) -> (RecorderRef, Brake) {
    let brake = Brake::default();
    let log = Log {
        brake: brake.clone(),
        ..Log::default()
    };
    let r: RecorderRef = node.spawn_with(log, SpawnOptions::new().mailbox(mailbox));
    r.pause().await.unwrap();
    timeout(SAFETY, brake.engaged.notified()).await.unwrap();
    assert_eq!(depth(&r), 0);
    (r, brake)
}

fn depth(r: &RecorderRef) -> usize {
    Interface::core(r).mailbox_depth()
}

#[tokio::test]
async fn asks_return_the_handlers_values() {
    let node = node().await;
    let c: CounterRef = node.spawn(Tally(10));
    assert_eq!(c.add(1).await, Ok(11));
    assert_eq!(c.add(4).await, Ok(15));
    assert_eq!(c.total().await, Ok(15), "a &self method");
    assert_eq!(c.reset().await, Ok(()));
    assert_eq!(c.total().await, Ok(0));
    assert_eq!(c.reset().try_tell(), Ok(()));
    assert_eq!(c.reset().receipt().await, Ok(()));
    assert_eq!(c.add(2).await, Ok(2));
}

#[tokio::test]
async fn methods_with_no_args_several_args_tuples_and_default_bodies() {
    let node = node().await;
    let s: ShapesRef = node.spawn(Shape { calls: 0 });
    assert_eq!(s.nothing().await, Ok(()));
    assert_eq!(s.constant().await, Ok("constant".to_owned()));
    assert_eq!(
        s.join("a".into(), 7, vec![-1, 2], (true, 'x')).await,
        Ok("a/7/[-1, 2]/(true, 'x')/2".to_owned())
    );
    assert_eq!(s.pair().await, Ok((2, Some("calls".to_owned()))));
    assert_eq!(s.doubled(21).await, Ok(42));
    assert_eq!(s.checked_div(9, 3).await, Ok(Ok(3)));
    assert_eq!(
        s.checked_div(9, 0).await,
        Ok(Err("9 / 0".to_owned())),
        "an application error is a value, not a CallError"
    );
}

/// Sends `0..n` from one sender to a busy `r`: queued without waiting while there
/// is room (all of them, or none for a rendezvous mailbox), then one that has to
/// wait for room, then (once `brake` is released) the rest. Returns how many were
/// queued before the release.
async fn send_to_busy(r: &RecorderRef, brake: &Brake, n: u64) -> u64 {
    let mut sent = 0;
    while sent < n && r.record(sent).try_tell().is_ok() {
        sent += 1;
    }
    let queued = sent;
    assert_eq!(
        depth(r),
        queued as usize,
        "every tell so far waits in the mailbox"
    );
    if sent < n {
        // Unconstrained: out of budget, the first poll would not even try to send.
        let mut waiting = r.record(sent);
        let first_poll = tokio::task::unconstrained(poll_once(&mut waiting)).await;
        assert!(first_poll.is_pending(), "no room: this tell waits");
        brake.release();
        timeout(SAFETY, waiting).await.unwrap().unwrap();
        sent += 1;
    } else {
        brake.release();
    }
    for v in sent..n {
        r.record(v).await.unwrap();
    }
    queued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_from_one_sender_arrive_in_order_through_a_small_mailbox() {
    let node = node().await;
    // A small mailbox in front of a busy actor: the first tells queue, the next
    // waits for room, and order must survive both.
    let (r, brake) = busy_log(&node, Mailbox::bounded(8)).await;
    assert_eq!(send_to_busy(&r, &brake, 1000).await, 8);
    let values = timeout(SAFETY, r.values()).await.unwrap().unwrap();
    assert_eq!(values, (0..1000).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_from_one_sender_arrive_in_order_for_every_mailbox_kind() {
    let node = node().await;
    for (mailbox, queued) in [
        (Mailbox::rendezvous(), 0),
        (Mailbox::bounded(1), 1),
        (Mailbox::default(), 300),
        (Mailbox::unbounded(), 300),
    ] {
        let (r, brake) = busy_log(&node, mailbox).await;
        assert_eq!(send_to_busy(&r, &brake, 300).await, queued, "{mailbox:?}");
        let values = timeout(SAFETY, r.values()).await.unwrap().unwrap();
        assert_eq!(values, (0..300).collect::<Vec<u64>>(), "{mailbox:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_tells_and_asks_keep_the_senders_order() {
    let node = node().await;
    let (r, brake) = busy_log(&node, Mailbox::default()).await;
    // While the actor is busy every call queues, the asks too (an ask is in the
    // mailbox once its first poll returns). The budget is lifted: a task out of
    // it would defer the sends instead of making them.
    let asks = tokio::task::unconstrained(async {
        let mut asks = Vec::new();
        for n in 0..300u64 {
            match n % 3 {
                0 => {
                    let mut ask = Box::pin(r.record_ask(n));
                    assert!(poll_once(&mut ask).await.is_pending());
                    asks.push((n, ask));
                }
                1 => r.record(n).try_tell().unwrap(),
                _ => r.record(n).await.unwrap(),
            }
            assert_eq!(depth(&r), n as usize + 1, "call {n} waits in the mailbox");
        }
        asks
    })
    .await;
    brake.release();
    for (n, ask) in asks {
        // Every call queued before the ask has been handled when it runs.
        assert_eq!(timeout(SAFETY, ask).await.unwrap(), Ok(n as usize + 1));
    }
    assert_eq!(r.values().await, Ok((0..300).collect::<Vec<u64>>()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_senders_messages_stay_in_order_among_concurrent_senders() {
    const SENDERS: u32 = 4;
    const PER_SENDER: u32 = 250;
    let node = node().await;
    let (r, brake) = busy_log(&node, Mailbox::bounded(16)).await;
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_SENDER {
                r.record_from(sender, seq).await.unwrap();
            }
        }));
    }
    // The senders fill the mailbox of the busy actor and wait for room.
    until("the senders filled the mailbox", SAFETY, || depth(&r) == 16).await;
    brake.release();
    for task in tasks {
        timeout(SAFETY, task).await.unwrap().unwrap();
    }
    let got = r.by_sender().await.unwrap();
    assert_eq!(got.len(), (SENDERS * PER_SENDER) as usize);
    for sender in 0..SENDERS {
        let seqs: Vec<u32> = got
            .iter()
            .filter(|(s, _)| *s == sender)
            .map(|(_, seq)| *seq)
            .collect();
        assert_eq!(seqs, (0..PER_SENDER).collect::<Vec<_>>(), "sender {sender}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_past_its_deadline_times_out_as_may_have_executed() {
    let node = node().await;
    let (h, mut entered, release) = spawn_stuck(&node);
    let err = h.with_timeout(SHORT).wait_then(1).await.unwrap_err();
    assert_eq!(
        err,
        CallError::Timeout {
            after: SHORT,
            may_have_executed: true
        }
    );
    assert!(err.may_have_executed());
    assert!(err.to_string().contains("may have run"), "{err}");
    assert_eq!(
        timeout(SAFETY, entered.recv()).await.unwrap(),
        Some(1),
        "it was indeed delivered"
    );

    // The abandoned call still completes on the actor; its late reply goes nowhere and
    // the actor keeps serving.
    release.add_permits(1);
    assert_eq!(timeout(SAFETY, h.echo(5)).await.unwrap(), Ok(5));
    assert!(!node.is_stopped(&h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_timeout_changes_only_the_new_reference() {
    let node = node().await;
    let c: CounterRef = node.spawn(Tally(0));
    let short = c.with_timeout(SHORT);
    assert_eq!(Interface::core(&c).timeout(), remora::DEFAULT_TIMEOUT);
    assert_eq!(Interface::core(&short).timeout(), SHORT);
    assert_eq!(
        Interface::core(&short.clone()).timeout(),
        SHORT,
        "clones keep it"
    );
    assert_eq!(short, c, "same actor, options aside");
    assert_eq!(short.add(3).await, Ok(3));
    assert_eq!(c.total().await, Ok(3));
}

#[tokio::test]
async fn calls_on_a_stopped_actor_fail_with_actor_stopped_and_did_not_run() {
    let node = node().await;
    let c: CounterRef = node.spawn(Tally(0));
    assert_eq!(c.add(1).await, Ok(1));
    node.stop(&c);
    timeout(SAFETY, node.monitor(&c)).await.unwrap();

    let err = c.add(1).await.unwrap_err();
    assert_eq!(err, CallError::ActorStopped);
    assert!(!err.may_have_executed());
    assert_eq!(c.total().await, Err(CallError::ActorStopped));
    assert_eq!(c.reset().await, Err(CallError::ActorStopped));
    assert_eq!(c.reset().try_tell(), Err(CallError::ActorStopped));
    assert_eq!(c.reset().receipt().await, Err(CallError::ActorStopped));
    assert_eq!(
        c.with_timeout(SHORT).add(1).await,
        Err(CallError::ActorStopped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_ask_is_answered_actor_stopped_when_the_actor_stops_first() {
    let node = node().await;
    let (h, mut entered, release) = spawn_stuck(&node);
    let mut first = Box::pin(h.wait_then(1));
    assert!(poll_once(&mut first).await.is_pending());
    assert_eq!(timeout(SAFETY, entered.recv()).await.unwrap(), Some(1));
    let mut queued = Box::pin(h.echo(2));
    assert!(poll_once(&mut queued).await.is_pending());
    node.stop(&h);
    release.add_permits(1);
    assert_eq!(
        timeout(SAFETY, first).await.unwrap(),
        Ok(1),
        "the current message finishes"
    );
    let err = timeout(SAFETY, queued).await.unwrap().unwrap_err();
    assert_eq!(err, CallError::ActorStopped);
    assert!(!err.may_have_executed());
}

#[tokio::test]
async fn references_can_be_passed_as_arguments_and_called_from_handlers() {
    let node = node().await;
    let alice: AccountRef = node.spawn(Ledger { balance: 100 });
    let bob: AccountRef = node.spawn(Ledger { balance: 5 });
    assert_eq!(alice.transfer(bob.clone(), 30).await, Ok(Ok(70)));
    assert_eq!(bob.balance().await, Ok(35));
    assert_eq!(
        bob.transfer(alice.clone(), 36).await,
        Ok(Err(Insufficient { balance: 35 }))
    );
    assert_eq!(alice.balance().await, Ok(70));
    assert_eq!(bob.balance().await, Ok(35));
}

fn assert_reference<T: Clone + Send + Sync + Unpin + std::fmt::Debug + Eq + 'static>() {}

#[test]
fn generated_references_are_clone_send_sync_static() {
    assert_reference::<CounterRef>();
    assert_reference::<RecorderRef>();
    assert_reference::<AccountRef>();
    assert_reference::<EmptyRef>();
}

#[tokio::test]
async fn tell_and_ask_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let node = node().await;
    let c: CounterRef = node.spawn(Tally(0));
    let ask = c.add(1);
    is_send(&ask);
    assert_eq!(ask.await, Ok(1));
    let tell = c.reset();
    is_send(&tell);
    assert_eq!(tell.await, Ok(()));
    let receipt = c.reset().receipt();
    is_send(&receipt);
    assert_eq!(receipt.await, Ok(()));
}

#[test]
fn a_named_interface_takes_its_identity_from_the_name() {
    assert_eq!(<AccountRef as Interface>::NAME, "bank.Account");
    assert_eq!(<AccountRef as Interface>::ID, stable_id("bank.Account"));
    assert_eq!(
        <__RemoraAccount_deposit as Method>::NAME,
        "bank.Account.deposit"
    );
    assert_eq!(
        <__RemoraAccount_deposit as Method>::ID,
        stable_id("bank.Account.deposit")
    );
    assert_eq!(
        <__RemoraAccount_transfer as Method>::ID,
        stable_id("bank.Account.transfer")
    );
    assert_ne!(
        <__RemoraAccount_deposit as Method>::ID,
        <__RemoraAccount_withdraw as Method>::ID
    );
}

#[test]
fn a_default_named_interface_takes_its_identity_from_the_trait() {
    assert_eq!(<CounterRef as Interface>::NAME, "Counter");
    assert_eq!(<CounterRef as Interface>::ID, stable_id("Counter"));
    assert_eq!(<CounterRef as Interface>::ID, 0x9d1c_372f_e940_04c3);
    assert_eq!(<__RemoraCounter_add as Method>::NAME, "Counter.add");
    assert_eq!(
        <__RemoraCounter_add as Method>::ID,
        stable_id("Counter.add")
    );
    assert_eq!(
        <__RemoraCounter_reset as Method>::ID,
        stable_id("Counter.reset")
    );
    assert_eq!(<EmptyRef as Interface>::ID, stable_id("Empty"));
    assert_ne!(
        <CounterRef as Interface>::ID,
        <RecorderRef as Interface>::ID
    );
}

#[tokio::test]
async fn references_are_equal_iff_they_reach_the_same_actor() {
    let node = node().await;
    let a: CounterRef = node.spawn(Tally(0));
    let b: CounterRef = node.spawn(Tally(0));
    let a2 = a.clone();
    assert_eq!(a, a2);
    assert_eq!(a, a.with_timeout(SHORT));
    assert_ne!(a, b);
    assert_ne!(a2, b);
    // Equality says nothing about liveness: a stopped actor's references stay equal.
    node.stop(&a);
    timeout(SAFETY, node.monitor(&a)).await.unwrap();
    assert_eq!(a, a2);
}

#[tokio::test]
async fn an_interface_without_methods_can_be_spawned() {
    let node = node().await;
    let e: EmptyRef = node.spawn(Nothing);
    assert!(!node.is_stopped(&e));
    assert_eq!(Interface::core(&e).mailbox_depth(), 0);
    drop(e.clone());
    node.stop(&e);
    assert_eq!(
        timeout(SAFETY, node.monitor(&e)).await.unwrap(),
        remora::StopReason::Normal
    );
}

#[tokio::test]
async fn spawn_accepts_a_turbofish_reference_type() {
    let node = node().await;
    let c = node.spawn::<CounterRef, _>(Tally(41));
    assert_eq!(c.add(1).await, Ok(42));
}

/// A call's future owns its reference: calls can be spawned as tasks of their
/// own, from a temporary clone or from the reference itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_spawned_calls_all_run() {
    let node = Node::builder().build().await.unwrap();
    let r: CounterRef = node.spawn(Tally(0));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                tokio::spawn(r.clone().add(1))
            } else {
                tokio::spawn(r.add(1))
            }
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=1000).collect::<Vec<u64>>(), "each call ran once");
    drop(r);
}
