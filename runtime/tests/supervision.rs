//! Supervisors: one-for-one and one-for-all restarts, restart limits, escalation
//! through nested supervisors, and the stops a supervisor does not undo.
//!
//! Every child writes its starts and stops into a shared log; the supervisor's
//! events and monitors say when a restart or a stop has happened, so no test
//! sleeps to let things settle.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use remora::{
    Actor, ActorId, CallError, Context, Interface, Node, Restart, StopReason, Strategy, Supervisor,
    SupervisorError, SupervisorEvent, SupervisorEvents,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;

const SAFETY: Duration = Duration::from_secs(5);

const ROOMY: Restart = Restart {
    max: 10,
    within: Duration::from_secs(60),
};

#[remora::remote]
pub trait Worker {
    async fn get(&mut self) -> u64;
    async fn set(&mut self, value: u64);
    /// Panics at once with `message`.
    async fn boom(&mut self, message: String) -> u64;
    /// Reports that it entered, waits for a release, then panics with `message`.
    async fn boom_later(&mut self, message: String) -> u64;
    /// Stops itself through its `Context`.
    async fn quit(&mut self);
    async fn id(&self) -> ActorId;
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Start(&'static str),
    Stop(&'static str, StopReason),
}

/// What the children share with the test: the log and a gate for `boom_later`.
#[derive(Clone)]
struct Kit {
    log: Arc<Mutex<Vec<Ev>>>,
    entered: mpsc::UnboundedSender<&'static str>,
    release: Arc<Semaphore>,
}

struct Watch {
    log: Arc<Mutex<Vec<Ev>>>,
    entered: mpsc::UnboundedReceiver<&'static str>,
    release: Arc<Semaphore>,
}

fn kit() -> (Kit, Watch) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let kit = Kit {
        log: log.clone(),
        entered: tx,
        release: release.clone(),
    };
    let watch = Watch {
        log,
        entered: rx,
        release,
    };
    (kit, watch)
}

impl Kit {
    /// A factory of fresh `W`s (value 0) named `name`.
    fn factory(&self, name: &'static str) -> impl FnMut() -> W + Send + 'static {
        let kit = self.clone();
        move || W::new(name, &kit)
    }

    fn log(&self, ev: Ev) {
        self.log.lock().unwrap().push(ev);
    }
}

impl Watch {
    fn events(&self) -> Vec<Ev> {
        self.log.lock().unwrap().clone()
    }

    fn starts(&self, name: &'static str) -> usize {
        self.events()
            .iter()
            .filter(|e| **e == Ev::Start(name))
            .count()
    }

    fn stops(&self) -> Vec<Ev> {
        self.events()
            .into_iter()
            .filter(|e| matches!(e, Ev::Stop(..)))
            .collect()
    }

    async fn entered(&mut self) -> &'static str {
        timeout(SAFETY, self.entered.recv())
            .await
            .expect("the child never entered the handler")
            .expect("the child is gone")
    }
}

struct W {
    name: &'static str,
    value: u64,
    kit: Kit,
    ctx: Option<Context>,
    panic_on_start: bool,
}

impl W {
    fn new(name: &'static str, kit: &Kit) -> W {
        W {
            name,
            value: 0,
            kit: kit.clone(),
            ctx: None,
            panic_on_start: false,
        }
    }
}

impl Actor for W {
    async fn on_start(&mut self, ctx: &Context) {
        self.kit.log(Ev::Start(self.name));
        self.ctx = Some(ctx.clone());
        if self.panic_on_start {
            panic!("{} failed to start", self.name);
        }
    }

    async fn on_stop(&mut self, reason: &StopReason) {
        self.kit.log(Ev::Stop(self.name, reason.clone()));
    }
}

impl Worker for W {
    async fn get(&mut self) -> u64 {
        self.value
    }
    async fn set(&mut self, value: u64) {
        self.value = value;
    }
    async fn boom(&mut self, message: String) -> u64 {
        panic!("{message}")
    }
    async fn boom_later(&mut self, message: String) -> u64 {
        let _ = self.kit.entered.send("boom_later");
        self.kit.release.acquire().await.unwrap().forget();
        panic!("{message}")
    }
    async fn quit(&mut self) {
        self.ctx.as_ref().expect("on_start ran").stop();
    }
    async fn id(&self) -> ActorId {
        self.ctx.as_ref().expect("on_start ran").id()
    }
}

async fn node() -> Node {
    Node::builder().build().await.expect("node")
}

fn supervisor(node: &Node, strategy: Strategy, limit: Restart) -> Supervisor {
    Supervisor::builder()
        .strategy(strategy)
        .limit(limit)
        .start(node)
}

async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

async fn stopped<R: Interface>(node: &Node, r: &R) -> StopReason {
    timeout(SAFETY, node.monitor(r))
        .await
        .expect("the actor did not stop")
}

async fn sup_stopped(sup: &Supervisor) -> StopReason {
    timeout(SAFETY, sup.monitor())
        .await
        .expect("the supervisor did not stop")
}

/// Reads events up to and including the first that `wanted` accepts.
async fn until(
    events: &mut SupervisorEvents,
    wanted: impl Fn(&SupervisorEvent) -> bool,
) -> Vec<SupervisorEvent> {
    let mut seen = Vec::new();
    loop {
        let event = timeout(SAFETY, events.next())
            .await
            .unwrap_or_else(|_| panic!("the awaited event never came; saw {seen:?}"))
            .unwrap_or_else(|| panic!("the supervisor stopped first; saw {seen:?}"));
        let done = wanted(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// The children restarted, in order, until all of `ids` have been.
async fn restarts(events: &mut SupervisorEvents, ids: &[ActorId]) -> Vec<ActorId> {
    let mut order = Vec::new();
    while !ids.iter().all(|id| order.contains(id)) {
        let seen = until(events, |e| {
            matches!(e, SupervisorEvent::ChildRestarted { .. })
        })
        .await;
        if let Some(SupervisorEvent::ChildRestarted { child }) = seen.last() {
            order.push(*child);
        }
    }
    order
}

fn panicked(message: &str) -> StopReason {
    StopReason::Panicked {
        message: message.into(),
    }
}

// ---------------------------------------------------------------- strategies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restarts_only_the_child_that_panicked() {
    let node = node().await;
    let (k, w) = kit();
    let sup = supervisor(&node, Strategy::OneForOne, ROOMY);
    let mut events = sup.events();
    let a: WorkerRef = sup.child(k.factory("a")).unwrap();
    let b: WorkerRef = sup.child(k.factory("b")).unwrap();
    let (a_id, b_id) = (a.id().await.unwrap(), b.id().await.unwrap());
    a.set(5).await.unwrap();
    b.set(7).await.unwrap();

    assert_eq!(
        a.boom("a broke".into()).await,
        Err(CallError::Panicked {
            message: "a broke".into()
        })
    );
    // Sent after the panic's answer: it waits for the restart, then sees fresh state.
    assert_eq!(a.get().await, Ok(0));
    let seen = until(&mut events, |e| {
        matches!(e, SupervisorEvent::ChildRestarted { .. })
    })
    .await;
    assert_eq!(
        seen,
        vec![
            SupervisorEvent::ChildFailed {
                child: a_id,
                message: "a broke".into()
            },
            SupervisorEvent::ChildRestarted { child: a_id },
        ]
    );

    assert_eq!(b.get().await, Ok(7), "the sibling keeps its state");
    assert_eq!(b.id().await, Ok(b_id));
    assert_eq!((w.starts("a"), w.starts("b")), (2, 1));
    assert_eq!(w.stops(), vec![], "restarts are not stops");
    assert!(!sup.is_stopped());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_restarts_every_child_in_start_order() {
    let node = node().await;
    let (k, w) = kit();
    let sup = supervisor(&node, Strategy::OneForAll, ROOMY);
    let mut events = sup.events();
    let a: WorkerRef = sup.child(k.factory("a")).unwrap();
    let b: WorkerRef = sup.child(k.factory("b")).unwrap();
    let c: WorkerRef = sup.child(k.factory("c")).unwrap();
    let ids = [
        a.id().await.unwrap(),
        b.id().await.unwrap(),
        c.id().await.unwrap(),
    ];
    for (n, child) in [&a, &b, &c].into_iter().enumerate() {
        child.set(10 + n as u64).await.unwrap();
    }

    assert!(matches!(
        b.boom("b broke".into()).await,
        Err(CallError::Panicked { .. })
    ));
    assert_eq!(restarts(&mut events, &ids).await, ids.to_vec());
    for child in [&a, &b, &c] {
        assert_eq!(child.get().await, Ok(0), "every child has fresh state");
    }
    // Each on_start finished before the next child was restarted.
    assert_eq!(
        w.events()[3..],
        [Ev::Start("a"), Ev::Start("b"), Ev::Start("c")]
    );
    assert_eq!(w.stops(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_keep_working_across_restarts_and_queued_calls_reach_the_fresh_state() {
    let node = node().await;
    let (k, mut w) = kit();
    let sup = supervisor(&node, Strategy::OneForOne, ROOMY);
    let a: WorkerRef = sup.child(k.factory("a")).unwrap();
    let kept = a.clone();
    let id = a.id().await.unwrap();
    a.set(3).await.unwrap();

    let doomed = tokio::spawn({
        let a = a.clone();
        async move { a.boom_later("mid-queue".into()).await }
    });
    assert_eq!(w.entered().await, "boom_later");
    // Queued behind the handler that is about to panic.
    let mut queued = Box::pin(a.get());
    assert!(poll_once(&mut queued).await.is_pending());
    assert_eq!(Interface::core(&a).mailbox_depth(), 1);
    w.release.add_permits(1);
    assert_eq!(
        timeout(SAFETY, doomed).await.unwrap().unwrap(),
        Err(CallError::Panicked {
            message: "mid-queue".into()
        })
    );
    assert_eq!(timeout(SAFETY, queued).await.unwrap(), Ok(0));

    assert_eq!(
        kept.id().await,
        Ok(id),
        "same actor behind the old reference"
    );
    kept.set(9).await.unwrap();
    assert_eq!(a.get().await, Ok(9));
    assert_eq!(node.stats().actors, 2, "the supervisor and its one child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_on_start_is_a_failure_the_supervisor_restarts() {
    let node = node().await;
    let (k, w) = kit();
    let sup = supervisor(&node, Strategy::OneForOne, ROOMY);
    let mut events = sup.events();
    let mut fresh = k.factory("a");
    let mut first = true;
    let a: WorkerRef = sup
        .child(move || {
            let mut state = fresh();
            state.panic_on_start = std::mem::take(&mut first);
            state
        })
        .unwrap();
    assert_eq!(a.get().await, Ok(0));
    let seen = until(&mut events, |e| {
        matches!(e, SupervisorEvent::ChildRestarted { .. })
    })
    .await;
    assert!(
        matches!(&seen[0], SupervisorEvent::ChildFailed { message, .. } if message == "a failed to start"),
        "{seen:?}"
    );
    assert_eq!(w.starts("a"), 2);
}

// ---------------------------------------------------------------- limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_restart_limit_the_supervisor_stops_its_children_and_itself() {
    let node = node().await;
    let (k, w) = kit();
    let limit = Restart {
        max: 1,
        within: Duration::from_secs(60),
    };
    let sup = supervisor(&node, Strategy::OneForOne, limit);
    let mut events = sup.events();
    let a: WorkerRef = sup.child(k.factory("a")).unwrap();
    let b: WorkerRef = sup.child(k.factory("b")).unwrap();
    let a_id = a.id().await.unwrap();

    assert!(a.boom("first".into()).await.is_err());
    assert_eq!(a.get().await, Ok(0), "the first failure is restarted");
    assert!(a.boom("second".into()).await.is_err());

    let reason = sup_stopped(&sup).await;
    assert_eq!(
        reason,
        StopReason::RestartLimit {
            max: 1,
            within: Duration::from_secs(60),
            last: format!("{a_id}: second"),
        }
    );
    assert!(
        reason.to_string().contains("restart limit reached"),
        "{reason}"
    );
    assert!(!reason.is_normal());
    assert_eq!(stopped(&node, &b).await, reason, "the sibling: the limit");
    assert_eq!(
        stopped(&node, &a).await,
        panicked("second"),
        "the child that crossed it: its panic"
    );
    // Last started, first stopped.
    assert_eq!(
        w.stops(),
        vec![
            Ev::Stop("b", reason.clone()),
            Ev::Stop("a", panicked("second"))
        ]
    );
    assert_eq!(a.get().await, Err(CallError::ActorStopped));
    assert_eq!(b.get().await, Err(CallError::ActorStopped));
    assert!(until(&mut events, |e| matches!(
        e,
        SupervisorEvent::LimitReached { .. }
    ))
    .await
    .contains(&SupervisorEvent::LimitReached {
        last: format!("{a_id}: second")
    }));
    assert_eq!(
        sup.child::<WorkerRef, _>(k.factory("late")).err(),
        Some(SupervisorError::Stopped)
    );
    assert_eq!(node.stats().actors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_factory_that_panics_counts_against_the_limit() {
    let node = node().await;
    let (k, _w) = kit();
    let limit = Restart {
        max: 2,
        within: Duration::from_secs(60),
    };
    let sup = supervisor(&node, Strategy::OneForOne, limit);
    let mut fresh = k.factory("a");
    let mut calls = 0;
    let a: WorkerRef = sup
        .child(move || {
            calls += 1;
            assert!(calls == 1, "no more state");
            fresh()
        })
        .unwrap();
    assert!(a.boom("first".into()).await.is_err());
    assert!(matches!(
        sup_stopped(&sup).await,
        StopReason::RestartLimit { max: 2, .. }
    ));
    assert_eq!(
        stopped(&node, &a).await,
        panicked("restart factory panicked: no more state")
    );
}

// ---------------------------------------------------------------- nesting

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_supervisor_escalates_and_its_parent_restarts_it_with_fresh_children() {
    let node = node().await;
    let (k, w) = kit();
    let root = supervisor(&node, Strategy::OneForOne, ROOMY);
    let mut root_events = root.events();
    let no_restarts = Restart {
        max: 0,
        within: Duration::from_secs(60),
    };
    let sub = root
        .child_supervisor(Supervisor::builder().limit(no_restarts))
        .unwrap();
    let sub_id = sub.id().unwrap();
    let mut sub_events = sub.events();
    let c1: WorkerRef = sub.child(k.factory("c1")).unwrap();
    let c2: WorkerRef = sub.child(k.factory("c2")).unwrap();
    let ids = [c1.id().await.unwrap(), c2.id().await.unwrap()];
    c1.set(11).await.unwrap();
    c2.set(12).await.unwrap();

    assert!(c1.boom("deep".into()).await.is_err());
    let seen = until(&mut root_events, |e| {
        matches!(e, SupervisorEvent::ChildRestarted { .. })
    })
    .await;
    match &seen[..] {
        [SupervisorEvent::ChildFailed { child, message }, SupervisorEvent::ChildRestarted { child: restarted }] =>
        {
            assert_eq!((*child, *restarted), (sub_id, sub_id));
            assert!(message.contains("restart limit reached"), "{message}");
            assert!(message.contains(&format!("{}: deep", ids[0])), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The parent's restart of the child supervisor restarted both of its children.
    assert_eq!(c1.get().await, Ok(0));
    assert_eq!(c2.get().await, Ok(0));
    assert!(sub_events
        .next()
        .await
        .is_some_and(|e| matches!(e, SupervisorEvent::ChildFailed { .. })));
    assert!(sub_events
        .next()
        .await
        .is_some_and(|e| matches!(e, SupervisorEvent::LimitReached { .. })));
    assert_eq!(restarts(&mut sub_events, &ids).await, ids.to_vec());
    assert_eq!((w.starts("c1"), w.starts("c2")), (2, 2));
    assert_eq!(w.stops(), vec![]);
    assert!(!sub.is_stopped() && !root.is_stopped());

    // Restarted with a clean record: it escalates again, and is restarted again.
    assert!(c2.boom("again".into()).await.is_err());
    until(&mut root_events, |e| {
        *e == SupervisorEvent::ChildRestarted { child: sub_id }
    })
    .await;
    assert_eq!(c1.get().await, Ok(0));
    assert_eq!((w.starts("c1"), w.starts("c2")), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_root_gives_up_too_the_whole_tree_stops() {
    let node = node().await;
    let (k, _w) = kit();
    let none = Restart {
        max: 0,
        within: Duration::from_secs(60),
    };
    let root = supervisor(&node, Strategy::OneForOne, none);
    let sub = root
        .child_supervisor(Supervisor::builder().limit(none))
        .unwrap();
    let c1: WorkerRef = sub.child(k.factory("c1")).unwrap();
    let c2: WorkerRef = sub.child(k.factory("c2")).unwrap();
    let c1_id = c1.id().await.unwrap();

    assert!(c1.boom("deep".into()).await.is_err());
    let reason = sup_stopped(&root).await;
    let StopReason::RestartLimit { max: 0, last, .. } = &reason else {
        panic!("{reason}");
    };
    assert!(
        last.starts_with(&format!("{}: ", sub.id().unwrap())),
        "{last}"
    );
    assert!(last.contains(&format!("{c1_id}: deep")), "{last}");
    assert_eq!(sup_stopped(&sub).await, reason);
    assert_eq!(stopped(&node, &c2).await, reason);
    assert_eq!(stopped(&node, &c1).await, panicked("deep"));
    assert_eq!(node.stats().actors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_pauses_and_restarts_a_sibling_supervisor_and_its_children() {
    let node = node().await;
    let (k, w) = kit();
    let root = supervisor(&node, Strategy::OneForAll, ROOMY);
    let mut root_events = root.events();
    let a: WorkerRef = root.child(k.factory("a")).unwrap();
    let sub = root
        .child_supervisor(Supervisor::builder().strategy(Strategy::OneForOne))
        .unwrap();
    let c: WorkerRef = sub.child(k.factory("c")).unwrap();
    c.set(4).await.unwrap();
    let ids = [a.id().await.unwrap(), sub.id().unwrap()];

    assert!(a.boom("a broke".into()).await.is_err());
    assert_eq!(restarts(&mut root_events, &ids).await, ids.to_vec());
    assert_eq!(
        c.get().await,
        Ok(0),
        "the child supervisor's child was restarted"
    );
    assert_eq!(w.starts("c"), 2);
}

// ---------------------------------------------------------------- stops

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_stop_of_a_child_is_not_restarted() {
    let node = node().await;
    let (k, w) = kit();
    let sup = supervisor(&node, Strategy::OneForAll, ROOMY);
    let mut events = sup.events();
    let a: WorkerRef = sup.child(k.factory("a")).unwrap();
    let b: WorkerRef = sup.child(k.factory("b")).unwrap();
    let c: WorkerRef = sup.child(k.factory("c")).unwrap();
    let (a_id, b_id) = (a.id().await.unwrap(), b.id().await.unwrap());
    c.set(8).await.unwrap();

    node.stop(&a);
    assert_eq!(stopped(&node, &a).await, StopReason::Normal);
    b.quit().await.unwrap();
    assert_eq!(stopped(&node, &b).await, StopReason::Normal);
    // Each child's end reaches the supervisor through its own monitor: any order.
    let mut seen = until(&mut events, |_| true).await;
    seen.extend(until(&mut events, |_| true).await);
    seen.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        seen,
        vec![
            SupervisorEvent::ChildStopped {
                child: a_id,
                reason: StopReason::Normal
            },
            SupervisorEvent::ChildStopped {
                child: b_id,
                reason: StopReason::Normal
            },
        ]
    );
    assert_eq!(a.get().await, Err(CallError::ActorStopped));
    assert_eq!(
        c.get().await,
        Ok(8),
        "one for all: a normal stop restarts nobody"
    );
    assert_eq!((w.starts("a"), w.starts("b"), w.starts("c")), (1, 1, 1));
    assert!(!sup.is_stopped());
    let d: WorkerRef = sup.child(k.factory("d")).unwrap();
    assert_eq!(d.get().await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_supervisor_stops_its_children_last_started_first() {
    let node = node().await;
    let (k, w) = kit();
    let sup = supervisor(&node, Strategy::OneForOne, ROOMY);
    let children: Vec<WorkerRef> = ["a", "b", "c"]
        .into_iter()
        .map(|name| sup.child(k.factory(name)).unwrap())
        .collect();
    sup.stop();
    assert_eq!(sup_stopped(&sup).await, StopReason::Normal);
    assert_eq!(
        w.stops(),
        vec![
            Ev::Stop("c", StopReason::Normal),
            Ev::Stop("b", StopReason::Normal),
            Ev::Stop("a", StopReason::Normal),
        ]
    );
    for child in &children {
        assert_eq!(child.get().await, Err(CallError::ActorStopped));
    }
    let mut events = sup.events();
    assert_eq!(timeout(SAFETY, events.next()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_shutdown_stops_the_supervisor_and_its_children() {
    let node = node().await;
    let (k, _w) = kit();
    let sup = supervisor(&node, Strategy::OneForOne, ROOMY);
    let a: WorkerRef = sup.child(k.factory("a")).unwrap();
    timeout(SAFETY, node.shutdown()).await.unwrap();
    assert_eq!(sup_stopped(&sup).await, StopReason::Shutdown);
    assert_eq!(stopped(&node, &a).await, StopReason::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_runs_while_its_children_do_and_stops_after_the_last() {
    let node = node().await;
    let (k, _w) = kit();
    let sup = supervisor(&node, Strategy::OneForOne, ROOMY);
    let sup_end = sup.monitor();
    let a: WorkerRef = sup.child(k.factory("a")).unwrap();
    drop(sup);

    a.set(2).await.unwrap();
    assert!(a.boom("still supervised".into()).await.is_err());
    assert_eq!(
        a.get().await,
        Ok(0),
        "restarted by a supervisor nobody holds"
    );

    drop(a);
    assert_eq!(
        timeout(SAFETY, sup_end).await.unwrap(),
        StopReason::Normal,
        "its last child gone, the supervisor stops"
    );
    assert_eq!(node.stats().actors, 0);
}
