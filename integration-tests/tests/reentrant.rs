//! `#[reentrant]`: a call that comes back to an actor awaiting it, in the same call
//! chain, runs at once beside the awaiting handler instead of failing with
//! `CallError::Cycle` (Orleans' call-chain reentrancy). Calls of other chains still
//! wait their turn. On one node, and across three nodes over both transports.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remora::{Actor, CallError};
use remora_integration_tests::{both_transports, node, reach, three_nodes, Transport};
use std::sync::Mutex as StdMutex;
use tokio::sync::Notify;
use tokio::time::timeout;

/// Every method may re-enter: handlers of a call chain interleave.
#[remora::remote(reentrant)]
pub trait Relay {
    /// Calls the next hop of `path` and returns how many hops answered; the last
    /// hop naps `nap_ms` first.
    async fn relay(&self, path: Vec<RelayRef>, nap_ms: u64) -> Result<u32, CallError>;
    /// How many `relay` calls this actor has started.
    async fn visits(&self) -> u32;
    /// Panics.
    async fn boom(&self) -> u32;
}

struct Relayer {
    name: &'static str,
    visits: AtomicU32,
    log: Arc<StdMutex<Vec<String>>>,
    napping: Arc<Notify>,
}

impl Relayer {
    fn new(name: &'static str, log: &Arc<StdMutex<Vec<String>>>) -> Relayer {
        Relayer {
            name,
            visits: AtomicU32::new(0),
            log: log.clone(),
            napping: Arc::new(Notify::new()),
        }
    }
}

impl Actor for Relayer {}

impl Relay for Relayer {
    async fn relay(&self, path: Vec<RelayRef>, nap_ms: u64) -> Result<u32, CallError> {
        self.visits.fetch_add(1, Ordering::SeqCst);
        let hops = match path.split_first() {
            None => {
                self.napping.notify_one();
                tokio::time::sleep(Duration::from_millis(nap_ms)).await;
                0
            }
            Some((next, rest)) => next.relay(rest.to_vec(), nap_ms).await?? + 1,
        };
        self.log
            .lock()
            .unwrap()
            .push(format!("{} relayed", self.name));
        Ok(hops)
    }

    async fn visits(&self) -> u32 {
        self.log
            .lock()
            .unwrap()
            .push(format!("{} counted", self.name));
        self.visits.load(Ordering::SeqCst)
    }

    async fn boom(&self) -> u32 {
        panic!("boom in {}", self.name)
    }
}

/// Calls `boom` on `target` from inside a handler of the caller's chain.
#[remora::remote]
pub trait Bomber {
    async fn bomb(&mut self, target: RelayRef) -> Result<u32, CallError>;
}

struct Thrower;
impl Actor for Thrower {}
impl Bomber for Thrower {
    async fn bomb(&mut self, target: RelayRef) -> Result<u32, CallError> {
        target.boom().await
    }
}

/// Only `balance` may re-enter, and only a handler holding `&self` lets it in.
#[remora::remote]
pub trait Ledger {
    /// Has `auditor` call back `method` on `me`, holding this actor shared.
    async fn audit(
        &self,
        auditor: AuditorRef,
        me: LedgerRef,
        method: String,
    ) -> Result<u64, CallError>;
    /// The same, holding this actor exclusively.
    async fn audit_mut(
        &mut self,
        auditor: AuditorRef,
        me: LedgerRef,
        method: String,
    ) -> Result<u64, CallError>;
    #[reentrant]
    async fn balance(&self) -> u64;
    /// Not reentrant.
    async fn note(&self) -> u64;
}

struct Book {
    balance: u64,
}

impl Actor for Book {}

impl Ledger for Book {
    async fn audit(
        &self,
        auditor: AuditorRef,
        me: LedgerRef,
        method: String,
    ) -> Result<u64, CallError> {
        auditor.check(me, method).await?
    }

    async fn audit_mut(
        &mut self,
        auditor: AuditorRef,
        me: LedgerRef,
        method: String,
    ) -> Result<u64, CallError> {
        auditor.check(me, method).await?
    }

    async fn balance(&self) -> u64 {
        self.balance
    }

    async fn note(&self) -> u64 {
        7
    }
}

#[remora::remote]
pub trait Auditor {
    /// Calls `method` ("balance" or "note") on `ledger`.
    async fn check(&mut self, ledger: LedgerRef, method: String) -> Result<u64, CallError>;
}

struct Clerk;
impl Actor for Clerk {}
impl Auditor for Clerk {
    async fn check(&mut self, ledger: LedgerRef, method: String) -> Result<u64, CallError> {
        match method.as_str() {
            "balance" => ledger.balance().await,
            _ => ledger.note().await,
        }
    }
}

/// Far shorter than the 30 s default deadline: nothing here may wait for it.
const FAST: Duration = Duration::from_secs(5);

fn cycle(method: &str) -> CallError {
    CallError::Cycle {
        method: method.into(),
    }
}

fn log() -> Arc<StdMutex<Vec<String>>> {
    Arc::new(StdMutex::new(Vec::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reentrant_cycles_interleave_on_one_node() {
    let node = node().await;
    let log = log();
    let [a, b, c]: [RelayRef; 3] = ["a", "b", "c"].map(|n| node.spawn(Relayer::new(n, &log)));
    // Two actors: A → B → A; the second visit to A runs while A awaits B.
    let two = timeout(FAST, a.relay(vec![b.clone(), a.clone()], 0)).await;
    assert_eq!(two, Ok(Ok(Ok(2))));
    // Three: A → B → C → A.
    let three = timeout(FAST, a.relay(vec![b.clone(), c.clone(), a.clone()], 0)).await;
    assert_eq!(three, Ok(Ok(Ok(3))));
    // Itself, and back and forth: A → A, A → B → A → B → A.
    assert_eq!(
        timeout(FAST, a.relay(vec![a.clone()], 0)).await,
        Ok(Ok(Ok(1)))
    );
    let zigzag = vec![b.clone(), a.clone(), b.clone(), a.clone()];
    assert_eq!(timeout(FAST, a.relay(zigzag, 0)).await, Ok(Ok(Ok(4))));
    // A: 2 + 2 + 2 + 3 visits; B: 1 + 1 + 2; C: 1.
    assert_eq!(a.visits().await, Ok(9));
    assert_eq!(b.visits().await, Ok(4));
    assert_eq!(c.visits().await, Ok(1));
}

/// A re-entered handler that panics takes the actor down like any handler: the
/// handler it interleaved with is dropped, every caller gets an answer at once
/// (none waits for its deadline), and the actor stops with `Panicked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_reentrant_call_fails_every_caller_at_once() {
    let node = node().await;
    let log = log();
    let a: RelayRef = node.spawn(Relayer::new("a", &log));
    let stopped = node.monitor(&a);
    let bomber: BomberRef = node.spawn(Thrower);
    // A → B (bomber) → A.boom, re-entering A while A awaits B.
    let outer = timeout(FAST, async {
        let b: RelayRef = node.spawn(Forward {
            bomber,
            target: a.clone(),
        });
        a.relay(vec![b], 0).await
    })
    .await
    .expect("no caller waits for its deadline");
    // The handler it interleaved with was interrupted midway: it may have run.
    match outer {
        Err(err @ CallError::Panicked { .. }) => assert!(err.may_have_executed(), "{err}"),
        other => panic!("the interrupted handler's caller got {other:?}"),
    }
    let reason = timeout(FAST, stopped).await.expect("a stops");
    assert!(
        matches!(reason, remora::StopReason::Panicked { ref message } if message.contains("boom in a")),
        "{reason:?}"
    );
}

/// A relay hop that, instead of relaying, has `bomber` call `target.boom()`.
struct Forward {
    bomber: BomberRef,
    target: RelayRef,
}
impl Actor for Forward {}
impl Relay for Forward {
    async fn relay(&self, _path: Vec<RelayRef>, _nap_ms: u64) -> Result<u32, CallError> {
        self.bomber.bomb(self.target.clone()).await?
    }
    async fn visits(&self) -> u32 {
        0
    }
    async fn boom(&self) -> u32 {
        0
    }
}

async fn reentrant_cycles_interleave_across_nodes(transport: Transport) {
    let (nodes, _wires) = three_nodes(transport).await;
    let log = log();
    let relays: Vec<RelayRef> = ["a", "b", "c"]
        .iter()
        .zip(&nodes)
        .map(|(name, node)| node.spawn(Relayer::new(name, &log)))
        .collect();
    // Node 0 holds proxies to the others' actors; they travel inside the path.
    let a = relays[0].clone();
    let b = reach(&nodes[0], &nodes[1], &relays[1]);
    let c = reach(&nodes[0], &nodes[2], &relays[2]);
    assert_eq!(
        timeout(FAST, a.relay(vec![b.clone(), a.clone()], 0)).await,
        Ok(Ok(Ok(2)))
    );
    assert_eq!(
        timeout(FAST, a.relay(vec![b.clone(), c.clone(), a.clone()], 0)).await,
        Ok(Ok(Ok(3)))
    );
    // B → C → B: the cycle closes on another node than the caller's.
    assert_eq!(
        timeout(FAST, b.relay(vec![c.clone(), b.clone()], 0)).await,
        Ok(Ok(Ok(2)))
    );
    let zigzag = vec![b.clone(), a.clone(), b.clone(), a.clone()];
    assert_eq!(timeout(FAST, a.relay(zigzag, 0)).await, Ok(Ok(Ok(4))));
    assert_eq!(a.visits().await, Ok(2 + 2 + 3));
    assert_eq!(b.visits().await, Ok(1 + 1 + 2 + 2));
    assert_eq!(c.visits().await, Ok(1 + 1));
}

/// Reentrancy follows the call chain: while A awaits B, a call of another chain
/// (here, from outside any handler) waits for A's handler to finish.
async fn other_chains_wait_their_turn(transport: Transport) {
    let (nodes, _wires) = three_nodes(transport).await;
    let log = log();
    let a: RelayRef = nodes[0].spawn(Relayer::new("a", &log));
    let far = Relayer::new("b", &log);
    let napping = far.napping.clone();
    let b_local: RelayRef = nodes[1].spawn(far);
    let b = reach(&nodes[0], &nodes[1], &b_local);
    let relaying = tokio::spawn({
        let a = a.clone();
        async move { a.relay(vec![b], 300).await }
    });
    // B has started its nap, so A is busy awaiting B.
    timeout(FAST, napping.notified()).await.expect("b naps");
    assert_eq!(timeout(FAST, a.visits()).await, Ok(Ok(1)));
    assert_eq!(relaying.await.unwrap(), Ok(Ok(1)));
    assert_eq!(
        *log.lock().unwrap(),
        ["b relayed", "a relayed", "a counted"],
        "the other chain's call ran only after A's handler finished"
    );
}

/// A method-level `#[reentrant]`: it re-enters a handler holding `&self`; a call
/// back to a handler holding `&mut self`, or of a method not marked, is a cycle.
async fn only_reentrant_methods_reenter_shared_handlers(transport: Transport) {
    let (nodes, _wires) = three_nodes(transport).await;
    let ledger: LedgerRef = nodes[0].spawn(Book { balance: 100 });
    let clerk: AuditorRef = nodes[1].spawn(Clerk);
    let clerk = reach(&nodes[0], &nodes[1], &clerk);
    let audit = |method: &str, exclusive: bool| {
        let (ledger, clerk, method) = (ledger.clone(), clerk.clone(), method.to_owned());
        async move {
            let call = async {
                match exclusive {
                    false => ledger.audit(clerk, ledger.clone(), method).await,
                    true => ledger.audit_mut(clerk, ledger.clone(), method).await,
                }
            };
            timeout(FAST, call)
                .await
                .expect("no call waits for its deadline")
        }
    };
    assert_eq!(audit("balance", false).await, Ok(Ok(100)));
    assert_eq!(
        audit("note", false).await,
        Ok(Err(cycle("Ledger.note"))),
        "a method without #[reentrant] is a cycle"
    );
    assert_eq!(
        audit("balance", true).await,
        Ok(Err(cycle("Ledger.balance"))),
        "a handler holding &mut self lets nothing in"
    );
    // And the ledger still serves.
    assert_eq!(ledger.balance().await, Ok(100));
}

both_transports!(
    reentrant_cycles_interleave_across_nodes,
    other_chains_wait_their_turn,
    only_reentrant_methods_reenter_shared_handlers,
);
