//! What a node counts of its actors' calls, cheaply enough to count every one.
//!
//! A node keeps one [`InterfaceStats`] per interface it hosts actors of, made
//! when the first such actor is spawned; every actor of the interface holds it
//! (an `Arc`, taken once at spawn). Its methods' counters ([`MethodCounters`])
//! sit in a slice in the order the trait declares them, and a message knows its
//! method's position (`Dispatch::method_index`), so counting a call is an index
//! and a relaxed atomic add: no lock, no map lookup, no allocation. Each actor
//! has its own [`ActorCounters`] (messages handled, panics, restarts) beside
//! its state.
//!
//! Latency is a histogram of fixed log2 buckets of microseconds ([`Histogram`]),
//! also relaxed atomics. Only calls from other nodes are timed, from the
//! arrival of their frame (a clock reading the connection takes anyway) to
//! their handler's end: one more clock reading per call. A call from this node
//! that runs inline on its caller's task costs a couple of hundred nanoseconds,
//! two clock readings would add a tenth to it, and its caller times it better.
//!
//! Readers (inspection) load the counters with relaxed loads: the figures of a
//! busy node are a moment's, not a consistent snapshot across counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::CallError;

/// The kinds of [`CallError`] a node counts per method: what its actors'
/// callers were answered (or would have been) instead of a value.
pub(crate) const ERROR_KINDS: [&str; 9] = [
    "Panicked",
    "UnknownMethod",
    "Cancelled",
    "Timeout",
    "ActorStopped",
    "MailboxFull",
    "Overloaded",
    "NodeDown",
    "Other",
];

/// The position of `err`'s kind in [`ERROR_KINDS`].
pub(crate) fn error_kind(err: &CallError) -> usize {
    match err {
        CallError::Panicked { .. } => 0,
        CallError::UnknownMethod { .. } => 1,
        CallError::Cancelled => 2,
        CallError::Timeout { .. } => 3,
        CallError::ActorStopped => 4,
        CallError::MailboxFull { .. } => 5,
        CallError::Overloaded { .. } => 6,
        CallError::NodeDown { .. } => 7,
        _ => 8,
    }
}

/// Buckets of a [`Histogram`]: bucket `i` counts durations below 2^i µs (the
/// first, below 1 µs; the last, everything from 2^30 µs, about 18 minutes).
pub(crate) const BUCKETS: usize = 32;

/// A latency histogram of fixed log2 buckets of microseconds, as atomics.
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Histogram {
    /// Counts one duration.
    pub(crate) fn record(&self, elapsed: Duration) {
        self.buckets[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts, bucket by bucket.
    pub(crate) fn read(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The bucket of `elapsed`: the number of bits of its whole microseconds.
pub(crate) fn bucket(elapsed: Duration) -> usize {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    ((u64::BITS - micros.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// One method's counters on one node.
#[derive(Default)]
pub(crate) struct MethodCounters {
    /// Calls whose handler started.
    pub(crate) calls: AtomicU64,
    /// Calls answered with an error, by kind (positions of [`ERROR_KINDS`]).
    pub(crate) errors: [AtomicU64; ERROR_KINDS.len()],
    /// Calls from other nodes, from their arrival to their handler's end.
    pub(crate) latency: Histogram,
}

impl MethodCounters {
    /// Counts a call answered with `err`.
    pub(crate) fn error(&self, err: &CallError) {
        self.errors[error_kind(err)].fetch_add(1, Ordering::Relaxed);
    }
}

/// The counters of every method of one interface on one node.
pub(crate) struct InterfaceStats {
    /// The interface's wire name.
    pub(crate) name: &'static str,
    /// Its methods' names, in the order of `methods`.
    pub(crate) method_names: &'static [&'static str],
    methods: Box<[MethodCounters]>,
    /// Calls from other nodes naming a method the interface does not have.
    pub(crate) unknown: MethodCounters,
}

impl InterfaceStats {
    /// Counters for `methods`, all zero.
    pub(crate) fn new(name: &'static str, methods: &'static [&'static str]) -> Self {
        InterfaceStats {
            name,
            method_names: methods,
            methods: methods.iter().map(|_| MethodCounters::default()).collect(),
            unknown: MethodCounters::default(),
        }
    }

    /// The counters of the method at `index` (a message's
    /// `Dispatch::method_index`); none for a dispatcher written by hand, which
    /// names no methods.
    #[inline]
    pub(crate) fn method(&self, index: usize) -> Option<&MethodCounters> {
        self.methods.get(index)
    }

    /// Each method's name and counters, in declaration order.
    pub(crate) fn methods(&self) -> impl Iterator<Item = (&'static str, &MethodCounters)> {
        self.method_names.iter().copied().zip(self.methods.iter())
    }
}

impl std::fmt::Debug for InterfaceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterfaceStats")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One actor's own counters.
#[derive(Default, Debug)]
pub(crate) struct ActorCounters {
    /// Messages whose handler started.
    pub(crate) handled: AtomicU64,
    /// Panics of its handlers and hooks.
    pub(crate) panics: AtomicU64,
    /// Times fresh state replaced it after a panic (or on its supervisor's word).
    pub(crate) restarts: AtomicU64,
}

impl ActorCounters {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// [`ActorCounters::count`] for a counter only the actor's baton holder
    /// writes (one writer at a time, handed on by the baton's own
    /// acquire/release): a plain load and store, no locked instruction.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub(crate) fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What an actor's slot reports of it, for inspection (`Control::figures`).
#[derive(Debug, Clone)]
pub(crate) struct ActorFigures {
    pub(crate) name: Option<std::sync::Arc<str>>,
    pub(crate) actor_type: &'static str,
    pub(crate) interface: &'static str,
    pub(crate) mailbox: crate::local::mailbox::Mailbox,
    pub(crate) queued: usize,
    pub(crate) busy: bool,
    pub(crate) handled: u64,
    pub(crate) panics: u64,
    pub(crate) restarts: u64,
    pub(crate) supervisor: Option<crate::id::ActorId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_log2_buckets_of_microseconds() {
        assert_eq!(bucket(Duration::from_nanos(999)), 0);
        assert_eq!(bucket(Duration::from_micros(1)), 1);
        assert_eq!(bucket(Duration::from_micros(3)), 2);
        assert_eq!(bucket(Duration::from_micros(4)), 3);
        assert_eq!(bucket(Duration::from_millis(1)), 10); // 1000 µs < 1024
        assert_eq!(bucket(Duration::from_secs(1 << 40)), BUCKETS - 1);
    }

    #[test]
    fn a_method_is_found_by_its_position_and_errors_by_their_kind() {
        let stats = InterfaceStats::new("Counter", &["add", "total"]);
        stats
            .method(1)
            .unwrap()
            .calls
            .fetch_add(1, Ordering::Relaxed);
        assert!(stats.method(2).is_none());
        stats.method(0).unwrap().error(&CallError::ActorStopped);
        let figures: Vec<(&str, u64, u64)> = stats
            .methods()
            .map(|(name, m)| {
                let stopped =
                    m.errors[error_kind(&CallError::ActorStopped)].load(Ordering::Relaxed);
                (name, m.calls.load(Ordering::Relaxed), stopped)
            })
            .collect();
        assert_eq!(figures, [("add", 0, 1), ("total", 1, 0)]);
        assert_eq!(
            ERROR_KINDS[error_kind(&CallError::ActorStopped)],
            "ActorStopped"
        );
    }
}
