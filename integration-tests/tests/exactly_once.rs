//! `#[exactly_once]` under a faulty transport: the in-process connection between a
//! client and a server node is cut every few milliseconds (frames in flight both
//! ways are lost) and reconnected. Each logical exactly-once call runs exactly
//! once; a plain (at-most-once) method under the same faults never runs twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use remora::remote::inproc;
use remora::{Actor, CallError, Node};
use remora_integration_tests::{node, reach};
use tokio::task::JoinSet;

#[remora::remote]
pub trait Ledger {
    /// Records `id`; retried through connection loss, run once.
    #[exactly_once]
    async fn credit(&mut self, id: u64) -> u64;
    /// Records `id`; at most once.
    async fn credit_plain(&mut self, id: u64) -> u64;
    /// How many times each id ran: (exactly-once, plain).
    async fn runs(&mut self) -> (BTreeMap<u64, u32>, BTreeMap<u64, u32>);
}

#[derive(Default)]
struct Book {
    once: BTreeMap<u64, u32>,
    plain: BTreeMap<u64, u32>,
}

impl Actor for Book {}
impl Ledger for Book {
    async fn credit(&mut self, id: u64) -> u64 {
        *self.once.entry(id).or_default() += 1;
        id
    }

    async fn credit_plain(&mut self, id: u64) -> u64 {
        *self.plain.entry(id).or_default() += 1;
        id
    }

    async fn runs(&mut self) -> (BTreeMap<u64, u32>, BTreeMap<u64, u32>) {
        (self.once.clone(), self.plain.clone())
    }
}

const CALLS: u64 = 10_000;
const WIDTH: u64 = 32;
/// How often the connection is cut.
const CUT_EVERY: Duration = Duration::from_millis(5);
/// Bound on the cutting: the test's calls take a few seconds.
const MAX_CUTS: usize = 20_000;

/// Cuts the client–server connection every few milliseconds and reconnects it,
/// until `stop`; returns how many cuts it made.
fn cut_repeatedly(
    client: Node,
    server: Node,
    wire: inproc::Wire,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, inproc::Wire)> {
    tokio::spawn(async move {
        let mut wire = wire;
        let mut cuts = 0;
        while !stop.load(Ordering::Relaxed) && cuts < MAX_CUTS {
            tokio::time::sleep(CUT_EVERY).await;
            wire.cut();
            cuts += 1;
            wire = inproc::connect_serializing(&client, &server)
                .await
                .expect("reconnects");
        }
        (cuts, wire)
    })
}

/// `CALLS` calls of `call`, `WIDTH` at a time; their outcomes by id.
async fn run_calls<F, Fut>(call: F) -> BTreeMap<u64, Result<u64, CallError>>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<u64, CallError>> + Send,
{
    let mut workers = JoinSet::new();
    for w in 0..WIDTH {
        let call = call.clone();
        workers.spawn(async move {
            let mut outcomes = Vec::new();
            let mut id = w;
            while id < CALLS {
                outcomes.push((id, call(id).await));
                id += WIDTH;
            }
            outcomes
        });
    }
    let mut all = BTreeMap::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done.unwrap());
    }
    all
}

/// What `CALLS` calls made while the connection was being cut left behind.
struct Faulted {
    server: Node,
    /// The server's ledger (a local reference).
    book: LedgerRef,
    outcomes: BTreeMap<u64, Result<u64, CallError>>,
    cuts: usize,
}

/// Makes `CALLS` calls of `credit` (`exactly_once`) or `credit_plain` from a client
/// node to a server's ledger while the connection between them is cut every few
/// milliseconds.
async fn under_cuts(exactly_once: bool) -> Faulted {
    let (server, client) = (node().await, node().await);
    let wire = inproc::connect_serializing(&client, &server).await.unwrap();
    let book: LedgerRef = server.spawn(Book::default());
    let ledger = reach(&client, &server, &book);

    let stop = Arc::new(AtomicBool::new(false));
    let cutter = cut_repeatedly(client.clone(), server.clone(), wire, stop.clone());
    let outcomes = run_calls(move |id| {
        let ledger = ledger.clone();
        async move {
            match exactly_once {
                true => ledger.credit(id).await,
                false => ledger.credit_plain(id).await,
            }
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (cuts, _wire) = cutter.await.unwrap();
    Faulted {
        server,
        book,
        outcomes,
        cuts,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_calls_run_once_through_cut_connections() {
    let Faulted {
        server,
        book,
        outcomes,
        cuts,
    } = under_cuts(true).await;
    assert!(
        cuts > 10,
        "the faults must happen while the calls run ({cuts} cuts)"
    );

    // Every call answered, with its own value.
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(id, outcome)| outcome.as_ref() != Ok(id))
        .take(5)
        .collect();
    assert!(failed.is_empty(), "calls failed: {failed:?}");
    // And ran exactly once.
    let (once, _) = book.runs().await.unwrap();
    assert_eq!(once.len() as u64, CALLS, "every call ran");
    let twice: Vec<_> = once.iter().filter(|(_, n)| **n != 1).take(5).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    assert!(server.stats().exactly_once_replies > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_calls_never_run_twice_through_cut_connections() {
    let Faulted {
        book,
        outcomes,
        cuts,
        ..
    } = under_cuts(false).await;
    // Calls fail fast while cut, so this run is short; it must still see faults.
    assert!(cuts >= 1, "the faults must happen while the calls run");

    let (_, plain) = book.runs().await.unwrap();
    let twice: Vec<_> = plain.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    let mut lost = 0;
    for (id, outcome) in &outcomes {
        match outcome {
            // Answered: it ran, once.
            Ok(v) => {
                assert_eq!(v, id);
                assert_eq!(plain.get(id), Some(&1), "call {id} answered but not run");
            }
            // Not retried behind the caller's back; the error says whether it may have run.
            Err(err) => {
                lost += 1;
                if !err.may_have_executed() {
                    assert_eq!(plain.get(id), None, "call {id}: {err:?} yet it ran");
                }
            }
        }
    }
    assert!(lost > 0, "the faults must cost some at-most-once calls");
}
