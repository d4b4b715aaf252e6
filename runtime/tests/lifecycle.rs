//! An actor's life: `on_start`/`on_stop`, stopping (by the node, by itself, by losing
//! every reference), panics and restarts, monitors, node shutdown and node defaults.
//!
//! Each actor writes what happens to it into a shared log the test reads after the
//! fact; monitors say when an actor is done, so no test sleeps to "let things settle".

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use remora::{
    Actor, ActorId, CallError, Context, Interface, Mailbox, Node, Restart, SpawnOptions,
    StopReason, DEFAULT_TIMEOUT,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout;

const SAFETY: Duration = Duration::from_secs(5);

#[remora::remote]
pub trait Probe {
    async fn get(&mut self) -> u64;
    async fn set(&mut self, value: u64);
    #[oneway]
    async fn note(&mut self);
    /// Panics at once with `message`.
    async fn boom(&mut self, message: String) -> u64;
    /// Reports "boom_later" as entered, waits for a release, then panics with `message`.
    async fn boom_later(&mut self, message: String) -> u64;
    /// Reports "hold" as entered, waits for a release, then returns `n`.
    async fn hold(&mut self, n: u64) -> u64;
    /// Stops itself through its `Context` and returns its value.
    async fn quit(&mut self) -> u64;
    async fn whoami(&self) -> (ActorId, Option<String>);
    async fn spawn_child(&mut self, value: u64) -> ProbeRef;
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Start(ActorId),
    Handled(&'static str),
    Stopped(StopReason),
}

/// What an actor needs to report to the test; cloned into restart factories.
#[derive(Clone)]
struct Kit {
    log: Arc<Mutex<Vec<Ev>>>,
    entered: mpsc::UnboundedSender<&'static str>,
    release: Arc<Semaphore>,
}

/// The test's side of a [`Kit`].
struct Watch {
    log: Arc<Mutex<Vec<Ev>>>,
    entered: mpsc::UnboundedReceiver<&'static str>,
    release: Arc<Semaphore>,
}

fn kit() -> (Kit, Watch) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    (
        Kit {
            log: log.clone(),
            entered: tx,
            release: release.clone(),
        },
        Watch {
            log,
            entered: rx,
            release,
        },
    )
}

impl Kit {
    fn actor(&self, value: u64) -> P {
        P {
            value,
            kit: self.clone(),
            ctx: None,
            panic_on_start: false,
        }
    }

    fn failing_start(&self, value: u64) -> P {
        P {
            panic_on_start: true,
            ..self.actor(value)
        }
    }

    fn log(&self, ev: Ev) {
        self.log.lock().unwrap().push(ev);
    }

    async fn wait(&self, what: &'static str) {
        let _ = self.entered.send(what);
        self.release.acquire().await.unwrap().forget();
    }
}

impl Watch {
    fn events(&self) -> Vec<Ev> {
        self.log.lock().unwrap().clone()
    }

    fn starts(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Ev::Start(_)))
            .count()
    }

    fn stops(&self) -> Vec<StopReason> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Stopped(reason) => Some(reason),
                _ => None,
            })
            .collect()
    }

    async fn entered(&mut self) -> &'static str {
        timeout(SAFETY, self.entered.recv())
            .await
            .expect("the actor never entered the handler")
            .expect("the actor is gone")
    }

    fn release(&self) {
        self.release.add_permits(1);
    }
}

struct P {
    value: u64,
    kit: Kit,
    ctx: Option<Context>,
    panic_on_start: bool,
}

impl Actor for P {
    async fn on_start(&mut self, ctx: &Context) {
        self.kit.log(Ev::Start(ctx.id()));
        self.ctx = Some(ctx.clone());
        if self.panic_on_start {
            panic!("on_start failed for {}", self.value);
        }
    }

    async fn on_stop(&mut self, reason: &StopReason) {
        self.kit.log(Ev::Stopped(reason.clone()));
    }
}

impl Probe for P {
    async fn get(&mut self) -> u64 {
        self.kit.log(Ev::Handled("get"));
        self.value
    }
    async fn set(&mut self, value: u64) {
        self.kit.log(Ev::Handled("set"));
        self.value = value;
    }
    async fn note(&mut self) {
        self.kit.log(Ev::Handled("note"));
    }
    async fn boom(&mut self, message: String) -> u64 {
        self.kit.log(Ev::Handled("boom"));
        panic!("{message}")
    }
    async fn boom_later(&mut self, message: String) -> u64 {
        self.kit.log(Ev::Handled("boom_later"));
        self.kit.wait("boom_later").await;
        panic!("{message}")
    }
    async fn hold(&mut self, n: u64) -> u64 {
        self.kit.log(Ev::Handled("hold"));
        self.kit.wait("hold").await;
        n
    }
    async fn quit(&mut self) -> u64 {
        self.kit.log(Ev::Handled("quit"));
        self.ctx.as_ref().expect("on_start ran").stop();
        self.value
    }
    async fn whoami(&self) -> (ActorId, Option<String>) {
        let ctx = self.ctx.as_ref().expect("on_start ran");
        (ctx.id(), ctx.name().map(str::to_owned))
    }
    async fn spawn_child(&mut self, value: u64) -> ProbeRef {
        let ctx = self.ctx.as_ref().expect("on_start ran");
        ctx.node().spawn(self.kit.actor(value))
    }
}

async fn node() -> Node {
    Node::builder().build().await.expect("node")
}

async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

async fn stopped<R: Interface>(node: &Node, r: &R) -> StopReason {
    timeout(SAFETY, node.monitor(r))
        .await
        .expect("the actor did not stop")
}

const POLICY: Restart = Restart {
    max: 2,
    within: Duration::from_secs(60),
};

// ---------------------------------------------------------------- start and stop

#[tokio::test]
async fn on_start_runs_before_the_first_message_and_sees_id_and_name() {
    let node = node().await;
    let (k, w) = kit();
    let p: ProbeRef = node.spawn_with(k.actor(3), SpawnOptions::new().name("probe-1"));
    // Sent right away: on_start still comes first.
    assert_eq!(p.get().await, Ok(3));
    let (id, name) = p.whoami().await.unwrap();
    assert_eq!(name.as_deref(), Some("probe-1"));
    assert_eq!(w.events(), vec![Ev::Start(id), Ev::Handled("get")]);
    assert_eq!(id.to_string(), format!("actor#{}", id.as_u64()));

    let q: ProbeRef = node.spawn(k.actor(4));
    let (other, unnamed) = q.whoami().await.unwrap();
    assert_ne!(other, id, "actor ids are unique on a node");
    assert_eq!(unnamed, None);
}

#[tokio::test]
async fn node_stop_runs_on_stop_with_normal_after_the_last_message() {
    let node = node().await;
    let (k, w) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    assert_eq!(p.get().await, Ok(1));
    assert!(!node.is_stopped(&p));
    node.stop(&p);
    assert_eq!(stopped(&node, &p).await, StopReason::Normal);
    assert!(node.is_stopped(&p));
    let events = w.events();
    assert_eq!(
        events[1..],
        [Ev::Handled("get"), Ev::Stopped(StopReason::Normal)]
    );
    assert_eq!(p.get().await, Err(CallError::ActorStopped));
    // Stopping again is harmless and changes nothing.
    node.stop(&p);
    assert_eq!(stopped(&node, &p).await, StopReason::Normal);
    assert_eq!(w.stops(), vec![StopReason::Normal], "on_stop runs once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stop_lets_the_current_message_finish_and_refuses_the_queued_ones() {
    let node = node().await;
    let (k, mut w) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    let mut current = Box::pin(p.hold(9));
    assert!(poll_once(&mut current).await.is_pending());
    assert_eq!(w.entered().await, "hold");
    let mut queued = Box::pin(p.get());
    assert!(poll_once(&mut queued).await.is_pending());
    p.note().try_tell().unwrap();

    node.stop(&p);
    w.release();
    assert_eq!(timeout(SAFETY, current).await.unwrap(), Ok(9));
    assert_eq!(
        timeout(SAFETY, queued).await.unwrap(),
        Err(CallError::ActorStopped)
    );
    assert_eq!(stopped(&node, &p).await, StopReason::Normal);
    assert_eq!(
        w.events()[1..],
        [Ev::Handled("hold"), Ev::Stopped(StopReason::Normal)],
        "queued messages never ran"
    );
}

#[tokio::test]
async fn context_stop_from_a_handler_answers_it_then_stops() {
    let node = node().await;
    let (k, w) = kit();
    let p: ProbeRef = node.spawn(k.actor(8));
    let monitor = node.monitor(&p);
    assert_eq!(
        p.quit().await,
        Ok(8),
        "the stopping call itself is answered"
    );
    assert_eq!(timeout(SAFETY, monitor).await.unwrap(), StopReason::Normal);
    assert_eq!(p.get().await, Err(CallError::ActorStopped));
    assert_eq!(
        w.events()[1..],
        [Ev::Handled("quit"), Ev::Stopped(StopReason::Normal)]
    );
}

#[tokio::test]
async fn dropping_every_reference_stops_the_actor_after_its_queued_messages() {
    let node = node().await;
    let (k, w) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    let p2 = p.clone();
    let monitor = node.monitor(&p);
    assert_eq!(p.get().await, Ok(1));
    p.note().try_tell().unwrap();
    drop(p);
    // A clone still reaches it.
    assert_eq!(p2.get().await, Ok(1));
    p2.note().try_tell().unwrap();
    drop(p2);
    assert_eq!(timeout(SAFETY, monitor).await.unwrap(), StopReason::Normal);
    assert_eq!(
        w.events()[1..],
        [
            Ev::Handled("get"),
            Ev::Handled("note"),
            Ev::Handled("get"),
            Ev::Handled("note"),
            Ev::Stopped(StopReason::Normal),
        ],
        "the actor keeps its own Context, which does not keep it alive"
    );
    assert_eq!(node.stats().actors, 0);
}

// ---------------------------------------------------------------- monitors

#[tokio::test]
async fn every_monitor_fires_and_a_late_monitor_resolves_at_once() {
    let node = node().await;
    let (k, _w) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    let monitors: Vec<_> = (0..3).map(|_| node.monitor(&p)).collect();
    let mut pending = Box::pin(node.monitor(&p));
    assert!(poll_once(&mut pending).await.is_pending());
    node.stop(&p);
    for m in monitors {
        assert_eq!(timeout(SAFETY, m).await.unwrap(), StopReason::Normal);
    }
    assert_eq!(timeout(SAFETY, pending).await.unwrap(), StopReason::Normal);

    let mut late = Box::pin(node.monitor(&p));
    assert_eq!(
        poll_once(&mut late).await,
        Poll::Ready(StopReason::Normal),
        "an actor that already stopped is reported on the first poll"
    );
}

#[tokio::test]
async fn monitors_do_not_keep_an_actor_alive_and_outlive_its_references() {
    let node = node().await;
    let (k, w) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    let monitor = node.monitor(&p);
    let task = tokio::spawn(monitor); // 'static: it can leave this scope
    drop(p);
    assert_eq!(
        timeout(SAFETY, task).await.unwrap().unwrap(),
        StopReason::Normal
    );
    assert_eq!(w.stops(), vec![StopReason::Normal]);
}

// ---------------------------------------------------------------- panics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_panicked_and_stops_its_actor() {
    let node = node().await;
    let (k, w) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    let err = p.boom("kaboom 1".into()).await.unwrap_err();
    assert_eq!(
        err,
        CallError::Panicked {
            message: "kaboom 1".into()
        }
    );
    assert!(err.may_have_executed());
    assert!(err.to_string().contains("kaboom 1"), "{err}");
    assert_eq!(
        stopped(&node, &p).await,
        StopReason::Panicked {
            message: "kaboom 1".into()
        }
    );
    assert_eq!(p.get().await, Err(CallError::ActorStopped));
    assert_eq!(
        w.stops(),
        vec![StopReason::Panicked {
            message: "kaboom 1".into()
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_behind_a_panic_get_actor_stopped_and_the_node_keeps_serving() {
    let node = node().await;
    let (k, mut w) = kit();
    let (k2, _w2) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    let bystander: ProbeRef = node.spawn(k2.actor(2));

    let mut doomed = Box::pin(p.boom_later("late panic".into()));
    assert!(poll_once(&mut doomed).await.is_pending());
    assert_eq!(w.entered().await, "boom_later");
    let mut queued = Box::pin(p.get());
    assert!(poll_once(&mut queued).await.is_pending());
    p.note().try_tell().unwrap();
    assert_eq!(Interface::core(&p).mailbox_depth(), 2);

    w.release();
    assert_eq!(
        timeout(SAFETY, doomed).await.unwrap(),
        Err(CallError::Panicked {
            message: "late panic".into()
        })
    );
    assert_eq!(
        timeout(SAFETY, queued).await.unwrap(),
        Err(CallError::ActorStopped)
    );
    assert_eq!(
        stopped(&node, &p).await,
        StopReason::Panicked {
            message: "late panic".into()
        }
    );
    assert!(
        !w.events().contains(&Ev::Handled("get")) && !w.events().contains(&Ev::Handled("note")),
        "{:?}",
        w.events()
    );

    assert_eq!(bystander.get().await, Ok(2));
    assert!(!node.is_stopped(&bystander));
    assert_eq!(node.stats().actors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_actor_gets_fresh_state_until_the_limit_is_reached() {
    let node = node().await;
    let (k, w) = kit();
    let factory_kit = k.clone();
    let p: ProbeRef = node.spawn_with(
        k.actor(100),
        SpawnOptions::new().restart(POLICY, move || factory_kit.actor(0)),
    );
    let (id, _) = p.whoami().await.unwrap();
    assert_eq!(p.get().await, Ok(100), "the state given to spawn");

    for (round, message) in ["first", "second"].into_iter().enumerate() {
        p.set(55).await.unwrap();
        assert_eq!(
            p.boom(message.into()).await,
            Err(CallError::Panicked {
                message: message.into()
            })
        );
        assert_eq!(p.get().await, Ok(0), "fresh state from the factory");
        assert_eq!(w.starts(), round + 2, "on_start ran again");
        assert!(!node.is_stopped(&p));
    }
    assert_eq!(p.whoami().await.unwrap().0, id, "same actor, same id");
    assert_eq!(w.stops(), vec![], "restarts are not stops");

    assert_eq!(
        p.boom("third".into()).await,
        Err(CallError::Panicked {
            message: "third".into()
        })
    );
    assert_eq!(
        stopped(&node, &p).await,
        StopReason::Panicked {
            message: "third".into()
        }
    );
    assert_eq!(p.get().await, Err(CallError::ActorStopped));
    assert_eq!(w.starts(), 3);
    assert_eq!(
        w.stops(),
        vec![StopReason::Panicked {
            message: "third".into()
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_older_than_the_window_are_forgotten() {
    let node = node().await;
    let (k, w) = kit();
    let factory_kit = k.clone();
    let policy = Restart {
        max: 1,
        within: Duration::from_millis(1),
    };
    let p: ProbeRef = node.spawn_with(
        k.actor(1),
        SpawnOptions::new().restart(policy, move || factory_kit.actor(0)),
    );
    for round in 0..3 {
        assert!(matches!(
            p.boom(format!("round {round}")).await,
            Err(CallError::Panicked { .. })
        ));
        // Answered after the restart was recorded: the window starts before this returns.
        assert_eq!(p.get().await, Ok(0));
        // No event marks "the window has passed"; sleeping 10x the window guarantees it.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!node.is_stopped(&p));
    assert_eq!(w.starts(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailbox_survives_a_restart_and_queued_messages_reach_the_fresh_state() {
    let node = node().await;
    let (k, mut w) = kit();
    let factory_kit = k.clone();
    let p: ProbeRef = node.spawn_with(
        k.actor(100),
        SpawnOptions::new().restart(POLICY, move || factory_kit.actor(7)),
    );
    let mut doomed = Box::pin(p.boom_later("mid-queue".into()));
    assert!(poll_once(&mut doomed).await.is_pending());
    assert_eq!(w.entered().await, "boom_later");
    let mut queued = Box::pin(p.get());
    assert!(poll_once(&mut queued).await.is_pending());
    p.note().try_tell().unwrap();

    w.release();
    assert_eq!(
        timeout(SAFETY, doomed).await.unwrap(),
        Err(CallError::Panicked {
            message: "mid-queue".into()
        })
    );
    assert_eq!(
        timeout(SAFETY, queued).await.unwrap(),
        Ok(7),
        "handled by the fresh state"
    );
    let (id, _) = p.whoami().await.unwrap();
    assert_eq!(
        w.events(),
        vec![
            Ev::Start(id),
            Ev::Handled("boom_later"),
            Ev::Start(id),
            Ev::Handled("get"),
            Ev::Handled("note"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_on_start_stops_the_actor() {
    let node = node().await;
    let (k, _w) = kit();
    let p: ProbeRef = node.spawn(k.failing_start(5));
    assert_eq!(
        stopped(&node, &p).await,
        StopReason::Panicked {
            message: "on_start failed for 5".into()
        }
    );
    assert_eq!(p.get().await, Err(CallError::ActorStopped));
    assert_eq!(node.stats().actors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_sent_before_on_start_panics_is_answered_actor_stopped() {
    let node = node().await;
    let (k, _w) = kit();
    let p: ProbeRef = node.spawn(k.failing_start(5));
    // Sent at once, likely queued before on_start runs; either way it never runs.
    assert_eq!(
        timeout(SAFETY, p.get()).await.unwrap(),
        Err(CallError::ActorStopped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_on_start_restarts_under_a_policy() {
    let node = node().await;
    let (k, w) = kit();
    let factory_kit = k.clone();
    let p: ProbeRef = node.spawn_with(
        k.failing_start(1),
        SpawnOptions::new().restart(POLICY, move || factory_kit.actor(2)),
    );
    assert_eq!(p.get().await, Ok(2));
    assert_eq!(w.starts(), 2);
    assert_eq!(w.stops(), vec![]);

    // A factory whose state always fails to start uses up the policy, then stops.
    let (k, w) = kit();
    let factory_kit = k.clone();
    let q: ProbeRef = node.spawn_with(
        k.failing_start(1),
        SpawnOptions::new().restart(POLICY, move || factory_kit.failing_start(3)),
    );
    assert_eq!(
        stopped(&node, &q).await,
        StopReason::Panicked {
            message: "on_start failed for 3".into()
        }
    );
    assert_eq!(w.starts(), 3, "the first start and two restarts");
    assert_eq!(q.get().await, Err(CallError::ActorStopped));
}

// ---------------------------------------------------------------- shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_current_messages_refuses_queued_ones_and_stops_everyone() {
    let node = node().await;
    let (ka, mut wa) = kit();
    let (kb, wb) = kit();
    let (kc, wc) = kit();
    let a: ProbeRef = node.spawn(ka.actor(1));
    let b: ProbeRef = node.spawn(kb.actor(2));
    let c: ProbeRef = node.spawn_with(
        kc.actor(3),
        SpawnOptions::new().mailbox(Mailbox::unbounded()),
    );
    assert_eq!(b.get().await, Ok(2));
    assert_eq!(node.stats().actors, 3);

    let mut in_flight = Box::pin(a.hold(7));
    assert!(poll_once(&mut in_flight).await.is_pending());
    assert_eq!(wa.entered().await, "hold");
    let mut queued = Box::pin(a.get());
    assert!(poll_once(&mut queued).await.is_pending());
    a.note().try_tell().unwrap();
    let monitors = [node.monitor(&a), node.monitor(&b), node.monitor(&c)];

    // The first poll asks every actor to stop; `a` is still busy, so shutdown waits.
    let mut shutdown = Box::pin(node.shutdown());
    assert!(poll_once(&mut shutdown).await.is_pending());
    wa.release();
    timeout(SAFETY, shutdown)
        .await
        .expect("shutdown did not finish");

    assert_eq!(node.stats().actors, 0);
    assert_eq!(timeout(SAFETY, in_flight).await.unwrap(), Ok(7));
    assert_eq!(
        timeout(SAFETY, queued).await.unwrap(),
        Err(CallError::ActorStopped)
    );
    for m in monitors {
        assert_eq!(
            m.await,
            StopReason::Shutdown,
            "resolved before shutdown returned"
        );
    }
    for (r, w) in [(&a, &wa), (&b, &wb), (&c, &wc)] {
        assert!(node.is_stopped(r));
        assert_eq!(w.stops(), vec![StopReason::Shutdown]);
        assert_eq!(r.get().await, Err(CallError::ActorStopped));
    }
    assert_eq!(
        wa.events()[1..],
        [Ev::Handled("hold"), Ev::Stopped(StopReason::Shutdown)]
    );
}

#[tokio::test]
async fn actors_spawned_after_shutdown_stop_at_once() {
    let node = node().await;
    node.shutdown().await;
    let (k, w) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    assert_eq!(stopped(&node, &p).await, StopReason::Shutdown);
    assert_eq!(p.get().await, Err(CallError::ActorStopped));
    assert_eq!(w.stops(), vec![StopReason::Shutdown]);
    assert_eq!(node.stats().actors, 0);
    // Shutting down again returns at once.
    timeout(SAFETY, node.shutdown()).await.unwrap();
}

#[tokio::test]
async fn an_actor_spawned_and_called_right_before_shutdown_answers_or_refuses() {
    let node = node().await;
    let (k, _w) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    let call = p.get();
    let (answer, ()) = tokio::join!(call, node.shutdown());
    // Whichever wins, the caller hears back, and never anything else.
    assert!(
        matches!(answer, Ok(1) | Err(CallError::ActorStopped)),
        "{answer:?}"
    );
    assert_eq!(node.stats().actors, 0);
}

// ---------------------------------------------------------------- node defaults, context

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builders_default_timeout_applies_to_spawned_references() {
    let d = Duration::from_millis(80);
    let node = Node::builder().default_timeout(d).build().await.unwrap();
    let (k, mut w) = kit();
    let p: ProbeRef = node.spawn(k.actor(1));
    assert_eq!(Interface::core(&p).timeout(), d);
    assert_eq!(Interface::core(&p.clone()).timeout(), d);
    assert_eq!(
        p.hold(1).await,
        Err(CallError::Timeout {
            after: d,
            may_have_executed: true
        })
    );
    assert_eq!(w.entered().await, "hold");
    w.release();
    let long = p.with_timeout(SAFETY);
    assert_eq!(Interface::core(&long).timeout(), SAFETY);
    assert_eq!(long.get().await, Ok(1));

    let plain = Node::builder().build().await.unwrap();
    let q: ProbeRef = plain.spawn(k.actor(2));
    assert_eq!(Interface::core(&q).timeout(), DEFAULT_TIMEOUT);
    assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builders_default_mailbox_applies_unless_spawn_options_choose_one() {
    let node = Node::builder()
        .default_mailbox(Mailbox::bounded(2))
        .build()
        .await
        .unwrap();
    for (options, capacity) in [
        (SpawnOptions::new(), 2),
        (SpawnOptions::new().mailbox(Mailbox::bounded(5)), 5),
    ] {
        let (k, mut w) = kit();
        let p: ProbeRef = node.spawn_with(k.actor(1), options);
        let mut busy = Box::pin(p.hold(0));
        assert!(poll_once(&mut busy).await.is_pending());
        assert_eq!(w.entered().await, "hold");
        for _ in 0..capacity {
            assert_eq!(p.note().try_tell(), Ok(()));
        }
        assert_eq!(
            p.note().try_tell(),
            Err(CallError::MailboxFull { capacity })
        );
        w.release();
        assert_eq!(timeout(SAFETY, busy).await.unwrap(), Ok(0));
    }
}

#[tokio::test]
async fn the_node_name_and_spawning_from_a_handler_through_the_context() {
    let node = Node::builder().name("n1").build().await.unwrap();
    assert_eq!(node.name(), Some("n1"));
    assert_eq!(Node::builder().build().await.unwrap().name(), None);
    let (k, _w) = kit();
    let parent: ProbeRef = node.spawn(k.actor(1));
    let child = parent.spawn_child(42).await.unwrap();
    assert_ne!(child, parent);
    assert_eq!(child.get().await, Ok(42));
    assert_eq!(node.stats().actors, 2, "the child runs on the same node");
    node.stop(&child);
    assert_eq!(stopped(&node, &child).await, StopReason::Normal);
    assert_eq!(
        parent.get().await,
        Ok(1),
        "a child's stop leaves its parent alone"
    );
}

#[test]
fn stop_reasons_display_their_cause() {
    assert_eq!(StopReason::Normal.to_string(), "normal");
    assert_eq!(StopReason::Shutdown.to_string(), "node shutdown");
    assert_eq!(
        StopReason::Panicked {
            message: "boom".into()
        }
        .to_string(),
        "panicked: boom"
    );
}

#[test]
fn building_a_node_outside_a_runtime_is_a_clear_error() {
    let err = poll_to_end(Node::builder().build()).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

/// Polls a future once on this thread, outside any tokio runtime (the build future
/// above finishes on its first poll).
fn poll_to_end<F: Future>(fut: F) -> F::Output {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = std::task::Waker::from(Arc::new(Noop));
    let mut cx = std::task::Context::from_waker(&waker);
    match std::pin::pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("expected the future to finish on its first poll"),
    }
}

#[remora::remote]
pub trait Holder {
    async fn ping(&mut self) -> u8;
}

/// Sets its flag when dropped: stands for a resource (a file, a connection).
struct Resource(Arc<std::sync::atomic::AtomicBool>);
impl Drop for Resource {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Owner {
    _resource: Resource,
}
impl Actor for Owner {}
impl Holder for Owner {
    async fn ping(&mut self) -> u8 {
        1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_actors_state_is_dropped_even_while_references_remain() {
    let node = Node::builder().build().await.unwrap();
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let owner: HolderRef = node.spawn(Owner {
        _resource: Resource(dropped.clone()),
    });
    assert_eq!(owner.ping().await, Ok(1));
    assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
    node.stop(&owner);
    timeout(SAFETY, node.monitor(&owner)).await.unwrap();
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the state went with the stop, not with the last reference"
    );
    assert_eq!(owner.ping().await, Err(CallError::ActorStopped));
    node.shutdown().await;
}
