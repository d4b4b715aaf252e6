//! Handlers run on the caller's task when the actor is idle: what that must not
//! change (replies, order, waiting handlers) and what it must not break (deep call
//! chains, other tasks' turns).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remora::{Actor, Node};
use tokio::sync::Semaphore;
use tokio::time::timeout;

const SAFETY: Duration = Duration::from_secs(10);

#[remora::remote]
pub trait Link {
    /// Forwards `hops` more times down the chain, then answers the depth reached.
    async fn forward(&mut self, hops: u32) -> u32;
}

struct Hop {
    next: Option<LinkRef>,
}
impl Actor for Hop {}
impl Link for Hop {
    async fn forward(&mut self, hops: u32) -> u32 {
        match (&self.next, hops) {
            (Some(next), h) if h > 0 => next.forward(h - 1).await.expect("next hop answers") + 1,
            _ => 0,
        }
    }
}

/// 3000 actors calling each other down a chain: nested inline runs are bounded (by
/// MAX_INLINE_DEPTH, and by the cooperative budget), so this completes instead of
/// nesting 3000 polls on one stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_chain_does_not_nest_unboundedly_on_one_stack() {
    let node = Node::builder().build().await.unwrap();
    let mut next: Option<LinkRef> = None;
    for _ in 0..3000 {
        next = Some(node.spawn(Hop { next: next.take() }));
    }
    let head = next.unwrap();
    assert_eq!(timeout(SAFETY, head.forward(2999)).await.unwrap(), Ok(2999));
    node.shutdown().await;
}

#[remora::remote]
pub trait Gate {
    /// Waits for the gate to open, then answers `v`.
    async fn pass(&mut self, v: u32) -> u32;
    async fn passed(&mut self) -> Vec<u32>;
}

struct Turnstile {
    open: Arc<Semaphore>,
    seen: Vec<u32>,
}
impl Actor for Turnstile {}
impl Gate for Turnstile {
    async fn pass(&mut self, v: u32) -> u32 {
        self.open.acquire().await.expect("never closed").forget();
        self.seen.push(v);
        v
    }
    async fn passed(&mut self) -> Vec<u32> {
        self.seen.clone()
    }
}

/// A handler started inline that has to wait is finished by the actor's task, and
/// calls made meanwhile queue behind it in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_waits_is_finished_by_the_actor_and_later_calls_queue_behind_it() {
    let node = Node::builder().build().await.unwrap();
    let open = Arc::new(Semaphore::new(0));
    let gate: GateRef = node.spawn(Turnstile {
        open: open.clone(),
        seen: Vec::new(),
    });
    let first = tokio::spawn({
        let gate = gate.clone();
        async move { gate.pass(1).await }
    });
    let second = tokio::spawn({
        let gate = gate.clone();
        async move {
            tokio::task::yield_now().await;
            gate.pass(2).await
        }
    });
    // Each pass waits for its own permit.
    for _ in 0..2 {
        tokio::task::yield_now().await;
        open.add_permits(1);
    }
    let answers = (
        timeout(SAFETY, first).await.unwrap().unwrap(),
        timeout(SAFETY, second).await.unwrap().unwrap(),
    );
    assert_eq!(answers, (Ok(1), Ok(2)));
    let mut seen = gate.passed().await.unwrap();
    seen.sort();
    assert_eq!(seen, vec![1, 2], "each call ran exactly once");
    node.shutdown().await;
}

#[remora::remote]
pub trait Sink {
    #[oneway]
    async fn put(&mut self, v: u64);
    async fn sum(&mut self) -> u64;
}

struct Adder(u64);
impl Actor for Adder {}
impl Sink for Adder {
    async fn put(&mut self, v: u64) {
        self.0 += v;
    }
    async fn sum(&mut self) -> u64 {
        self.0
    }
}

/// Tells that all complete inline never wait, yet the sender still yields to other
/// tasks (its cooperative budget runs out), as it would on a channel.
#[tokio::test(flavor = "current_thread")]
async fn a_loop_of_inline_tells_still_lets_other_tasks_run() {
    let node = Node::builder().build().await.unwrap();
    let sink: SinkRef = node.spawn(Adder(0));
    let ran = Arc::new(AtomicBool::new(false));
    let other = tokio::spawn({
        let ran = ran.clone();
        async move { ran.store(true, Ordering::SeqCst) }
    });
    let mut other_ran_during_the_loop = false;
    for i in 0..10_000u64 {
        sink.put(i).await.unwrap();
        other_ran_during_the_loop |= ran.load(Ordering::SeqCst);
    }
    assert!(
        other_ran_during_the_loop,
        "another task on this single thread ran while the loop sent"
    );
    assert_eq!(sink.sum().await, Ok((0..10_000).sum()));
    other.await.unwrap();
    node.shutdown().await;
}

tokio::task_local! {
    static CALLER: &'static str;
}

#[remora::remote]
pub trait Where {
    /// Which caller's task the handler runs on, if any.
    async fn on_task_of(&mut self) -> Option<String>;
}

struct Probe;
impl Actor for Probe {}
impl Where for Probe {
    async fn on_task_of(&mut self) -> Option<String> {
        CALLER.try_with(|c| c.to_string()).ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_actor_runs_the_handler_on_the_callers_task_unless_inline_is_off() {
    let node = Node::builder().build().await.unwrap();
    let inline: WhereRef = node.spawn(Probe);
    let dedicated: WhereRef = node.spawn_with(Probe, remora::SpawnOptions::new().inline(false));
    let (on_inline, on_dedicated) = CALLER
        .scope("test", async {
            (
                inline.on_task_of().await.unwrap(),
                dedicated.on_task_of().await.unwrap(),
            )
        })
        .await;
    assert_eq!(
        on_inline.as_deref(),
        Some("test"),
        "ran on the caller's task"
    );
    assert_eq!(on_dedicated, None, "ran on the actor's own task");
    node.shutdown().await;
}
