//! Call cycles fail fast: A calls B, B calls back A while A awaits B. Without
//! detection that call waits in A's mailbox until its deadline (A is busy waiting
//! for B); with it, the call that closes the cycle fails at once with
//! `CallError::Cycle`. On one node, and across nodes over both transports.

use std::time::Duration;

use remora::{Actor, CallError};
use remora_integration_tests::{both_transports, node, reach, three_nodes, Transport};
use tokio::time::timeout;

/// Calls the next hop of `path` and returns how many hops answered.
#[remora::remote]
pub trait Hop {
    async fn hop(&mut self, path: Vec<HopRef>) -> Result<u32, CallError>;
    async fn nap(&mut self, ms: u64) -> u32;
}

struct Hopper;
impl Actor for Hopper {}
impl Hop for Hopper {
    async fn hop(&mut self, path: Vec<HopRef>) -> Result<u32, CallError> {
        match path.split_first() {
            None => Ok(0),
            Some((next, rest)) => Ok(next.hop(rest.to_vec()).await?? + 1),
        }
    }

    async fn nap(&mut self, ms: u64) -> u32 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
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
    let (a, b, c): (HopRef, HopRef, HopRef) =
        (node.spawn(Hopper), node.spawn(Hopper), node.spawn(Hopper));
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
    let (a, b): (HopRef, HopRef) = (node.spawn(Hopper), node.spawn(Hopper));
    // A is busy napping (one chain) while B's call (another chain) arrives: it waits
    // its turn, it is not a cycle.
    let napping = tokio::spawn({
        let a = a.clone();
        async move { a.nap(200).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.hop(vec![a.clone()]).await, Ok(Ok(1)));
    assert_eq!(napping.await.unwrap(), Ok(1));
}

async fn a_cycle_across_nodes_fails_fast(transport: Transport) {
    let (nodes, _wires) = three_nodes(transport).await;
    let hoppers: Vec<HopRef> = nodes.iter().map(|n| n.spawn(Hopper)).collect();
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
