//! Links of a chain of calls across nodes, for the deadline and cancellation
//! tests: each link counts what its handlers did, in [`ChainStats`] that the
//! test reads directly (one process) or through a [`ChainProbe`] (another
//! process), since a link busy with a handler takes no other call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use remora::{Actor, CallError};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// One link of a chain of calls.
#[remora::remote]
pub trait Chain {
    /// Calls `next.forward(None)` and records how that call ended; without a
    /// `next`, waits for something that never comes until the call is given
    /// up ([`remora::cancelled`]). Returns what it saw.
    async fn forward(&mut self, next: Option<ChainRef>) -> String;
    /// Records this call's deadline, then (with a `next`) that of the call it
    /// makes to `next` (`next.deadline_seen(None)`).
    async fn deadline_seen(&mut self, next: Option<ChainRef>) -> bool;
    /// Waits for something that never comes; `#[abortable]`, so it is dropped
    /// at its await once given up.
    #[abortable]
    async fn wait_abortable(&mut self) -> u64;
    /// The same, but plain: it runs on, and returns once it sees `cancelled()`.
    async fn wait_plain(&mut self) -> u64;
    /// Waits until the test lets it go (a permit), keeping the link busy.
    async fn hold(&mut self) -> u64;
    /// Counts one run of its handler and returns the count.
    async fn tick(&mut self) -> u64;
    /// Sums an upload (counted as entered, like the waiting handlers).
    async fn drain(&mut self, items: remora::pipe::Receiver<u64>) -> u64;
}

/// What the handlers of one link did.
#[derive(Debug)]
pub struct ChainStats {
    /// Handlers started.
    pub entered: AtomicU64,
    /// Handlers running now (a guard counts them out, also when dropped midway).
    pub running: AtomicU64,
    /// Handlers that saw their call given up (`cancelled()` resolved).
    pub saw_cancelled: AtomicU64,
    /// Handlers dropped before their end (`#[abortable]` ones given up).
    pub dropped_midway: AtomicU64,
    /// Runs of `tick`.
    pub ticks: AtomicU64,
    /// How the calls `forward` made ended, in order.
    pub outcomes: Mutex<Vec<String>>,
    /// The deadlines `deadline_seen` read, in order.
    pub deadlines: Mutex<Vec<Option<Instant>>>,
    /// Permits for `hold`.
    pub permits: Semaphore,
}

impl Default for ChainStats {
    fn default() -> Self {
        ChainStats {
            entered: AtomicU64::new(0),
            running: AtomicU64::new(0),
            saw_cancelled: AtomicU64::new(0),
            dropped_midway: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            outcomes: Mutex::default(),
            deadlines: Mutex::default(),
            permits: Semaphore::new(0),
        }
    }
}

impl ChainStats {
    /// The counts, as a probe reports them.
    pub fn counts(&self) -> ChainCounts {
        ChainCounts {
            entered: self.entered.load(Ordering::SeqCst),
            running: self.running.load(Ordering::SeqCst),
            saw_cancelled: self.saw_cancelled.load(Ordering::SeqCst),
            dropped_midway: self.dropped_midway.load(Ordering::SeqCst),
            ticks: self.ticks.load(Ordering::SeqCst),
            outcomes: self.outcomes.lock().clone(),
            queued: 0,
        }
    }
}

/// [`ChainStats`] as numbers, for another process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCounts {
    pub entered: u64,
    pub running: u64,
    pub saw_cancelled: u64,
    pub dropped_midway: u64,
    pub ticks: u64,
    pub outcomes: Vec<String>,
    /// Calls waiting in the link's mailbox (0 without a probe's reference).
    pub queued: usize,
}

/// A link: its stats are shared with the test (or a probe).
pub struct Link {
    pub stats: Arc<ChainStats>,
}

impl Link {
    /// A link and its stats.
    pub fn new() -> (Link, Arc<ChainStats>) {
        let stats = Arc::new(ChainStats::default());
        (
            Link {
                stats: stats.clone(),
            },
            stats,
        )
    }
}

impl Actor for Link {}

/// Counts a handler in while alive; dropped before [`Running::finish`], it
/// counts the handler as dropped midway.
struct Running {
    stats: Arc<ChainStats>,
    finished: bool,
}

impl Running {
    fn start(stats: &Arc<ChainStats>) -> Running {
        stats.entered.fetch_add(1, Ordering::SeqCst);
        stats.running.fetch_add(1, Ordering::SeqCst);
        Running {
            stats: stats.clone(),
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.dropped_midway.fetch_add(1, Ordering::SeqCst);
        }
        self.stats.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits for something that never comes until the call is given up.
async fn until_cancelled(stats: &ChainStats) {
    tokio::select! {
        () = std::future::pending::<()>() => unreachable!(),
        () = remora::cancelled() => {
            stats.saw_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// How a call ended, as `forward` records it.
fn outcome(result: &Result<String, CallError>) -> String {
    match result {
        Ok(_) => "Ok".into(),
        Err(CallError::Cancelled) => "Cancelled".into(),
        Err(CallError::Timeout { .. }) => "Timeout".into(),
        Err(other) => format!("{other:?}"),
    }
}

impl Chain for Link {
    async fn forward(&mut self, next: Option<ChainRef>) -> String {
        let running = Running::start(&self.stats);
        let seen = match next {
            Some(next) => {
                let result = next.forward(None).await;
                let seen = outcome(&result);
                self.stats.outcomes.lock().push(seen.clone());
                seen
            }
            None => {
                until_cancelled(&self.stats).await;
                "cancelled".into()
            }
        };
        running.finish();
        seen
    }

    async fn deadline_seen(&mut self, next: Option<ChainRef>) -> bool {
        self.stats.deadlines.lock().push(remora::deadline());
        match next {
            Some(next) => next.deadline_seen(None).await.unwrap_or(false),
            None => true,
        }
    }

    async fn wait_abortable(&mut self) -> u64 {
        let running = Running::start(&self.stats);
        std::future::pending::<()>().await;
        running.finish();
        0
    }

    async fn wait_plain(&mut self) -> u64 {
        let running = Running::start(&self.stats);
        until_cancelled(&self.stats).await;
        running.finish();
        1
    }

    async fn hold(&mut self) -> u64 {
        let running = Running::start(&self.stats);
        self.stats.permits.acquire().await.expect("open").forget();
        running.finish();
        2
    }

    async fn tick(&mut self) -> u64 {
        self.stats.ticks.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn drain(&mut self, mut items: remora::pipe::Receiver<u64>) -> u64 {
        let running = Running::start(&self.stats);
        let mut sum = 0;
        while let Some(Ok(item)) = items.recv().await {
            sum += item;
        }
        running.finish();
        sum
    }
}

/// Reads a link's stats from another node (the link itself may be busy).
#[remora::remote]
pub trait ChainProbe {
    async fn counts(&mut self) -> ChainCounts;
    /// Lets a `hold` of the link go on.
    async fn release(&mut self);
}

/// The probe of one link.
pub struct Probe {
    pub stats: Arc<ChainStats>,
    /// The link, on this node: its mailbox depth is reported.
    pub link: ChainRef,
}

impl Actor for Probe {}

impl ChainProbe for Probe {
    async fn counts(&mut self) -> ChainCounts {
        ChainCounts {
            queued: remora::Interface::core(&self.link).mailbox_depth(),
            ..self.stats.counts()
        }
    }

    async fn release(&mut self) {
        self.stats.permits.add_permits(1);
    }
}
