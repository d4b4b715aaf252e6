//! Call cycles fail fast: A calls B, B calls back A while A awaits B. Without
//! detection that call waits in A's mailbox until its deadline (A is busy waiting
//! for B); with it, the call that closes the cycle fails at once with
//! `CallError::Cycle`. On one node, and across nodes over both transports.

use std::sync::Arc;
use std::time::Duration;

use remora::{Actor, CallError, Interface};
use remora_integration_tests::{
    both_transports, node, poll_once, reach, three_nodes, until, Transport,
};
use tokio::sync::{Notify, Semaphore};
use tokio::time::timeout;

/// Calls the next hop of `path` and returns how many hops answered.
#[remora::remote]
pub trait Hop {
    async fn hop(&mut self, path: Vec<HopRef>) -> Result<u32, CallError>;
    /// Signals `busy`, then keeps the actor busy until `release` has a permit.
    async fn hold(&mut self) -> u32;
}

#[derive(Clone)]
struct Hopper {
    busy: Arc<Notify>,
    release: Arc<Semaphore>,
}

impl Hopper {
    fn new() -> Hopper {
        Hopper {
            busy: Arc::new(Notify::new()),
            release: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Actor for Hopper {}
impl Hop for Hopper {
    async fn hop(&mut self, path: Vec<HopRef>) -> Result<u32, CallError> {
        match path.split_first() {
            None => Ok(0),
            Some((next, rest)) => Ok(next.hop(rest.to_vec()).await?? + 1),
        }
    }

    async fn hold(&mut self) -> u32 {
        self.busy.notify_one();
        self.release.acquire().await.expect("never closed").forget();
        1
    }
}

/// Far shorter than the 30 s default deadline: a cycle must not wait for it.
const FAST: Duration = Duration::from_secs(5);

fn cycle() -> CallError {
    CallError::Cycle {
        method: "Hop.hop".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_on_one_node_fails_fast() {
    let node = node().await;
    let (a, b, c): (HopRef, HopRef, HopRef) = (
        node.spawn(Hopper::new()),
        node.spawn(Hopper::new()),
        node.spawn(Hopper::new()),
    );
    // No cycle: A → B → C.
    assert_eq!(a.hop(vec![b.clone(), c.clone()]).await, Ok(Ok(2)));
    // Two actors: A → B → A.
    let two = timeout(FAST, a.hop(vec![b.clone(), a.clone()])).await;
    assert_eq!(two, Ok(Ok(Err(cycle()))));
    // Three: A → B → C → A.
    let three = timeout(FAST, a.hop(vec![b.clone(), c.clone(), a.clone()])).await;
    assert_eq!(three, Ok(Ok(Err(cycle()))));
    // An actor calling itself.
    assert_eq!(
        timeout(FAST, a.hop(vec![a.clone()])).await,
        Ok(Ok(Err(cycle())))
    );
    // Everyone still serves.
    assert_eq!(c.hop(vec![a.clone(), b.clone()]).await, Ok(Ok(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_actor_queues_calls_of_other_chains() {
    let node = node().await;
    let held = Hopper::new();
    let (a, b): (HopRef, HopRef) = (node.spawn(held.clone()), node.spawn(Hopper::new()));
    // A is busy (one chain, on another task) when B's call (another chain) reaches
    // it: the call waits its turn in A's mailbox, it is not a cycle.
    let holding = tokio::spawn({
        let a = a.clone();
        async move { a.hold().await }
    });
    timeout(FAST, held.busy.notified()).await.unwrap();
    let mut through_b = Box::pin(b.hop(vec![a.clone()]));
    assert!(
        poll_once(&mut through_b).await.is_pending(),
        "B's call to the busy A waits; refused as a cycle, it would be answered at once"
    );
    until("B's call waits in A's mailbox", || {
        Interface::core(&a).mailbox_depth() == 1
    })
    .await;
    held.release.add_permits(1);
    assert_eq!(timeout(FAST, holding).await.unwrap().unwrap(), Ok(1));
    assert_eq!(timeout(FAST, through_b).await, Ok(Ok(Ok(1))));
}

async fn a_cycle_across_nodes_fails_fast(transport: Transport) {
    let (nodes, _wires) = three_nodes(transport).await;
    let hoppers: Vec<HopRef> = nodes.iter().map(|n| n.spawn(Hopper::new())).collect();
    // Node 0 holds proxies to the others' hoppers.
    let (b, c) = (
        reach(&nodes[0], &nodes[1], &hoppers[1]),
        reach(&nodes[0], &nodes[2], &hoppers[2]),
    );
    let a = &hoppers[0];
    assert_eq!(a.hop(vec![b.clone(), c.clone()]).await, Ok(Ok(2)));
    assert_eq!(
        timeout(FAST, a.hop(vec![b.clone(), a.clone()])).await,
        Ok(Ok(Err(cycle())))
    );
    assert_eq!(
        timeout(FAST, a.hop(vec![b.clone(), c.clone(), a.clone()])).await,
        Ok(Ok(Err(cycle())))
    );
    // B → C → B, both remote to the caller.
    assert_eq!(
        timeout(FAST, b.hop(vec![c.clone(), b.clone()])).await,
        Ok(Ok(Err(cycle())))
    );
}

both_transports!(a_cycle_across_nodes_fails_fast);
