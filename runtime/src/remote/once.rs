//! The callee's memory of `#[exactly_once]` calls: (caller node, logical call id)
//! → the reply, so that a retry (after a lost connection, over a new one) is
//! answered from memory instead of running the method again.
//!
//! Bounds: a reply is remembered for [`DEFAULT_RETENTION`] (or the node's
//! setting) after the call completed, and at most [`MAX_REMEMBERED`] replies at
//! once (the oldest are forgotten first, with a warning). A retry that arrives
//! after its reply was forgotten runs the method again: keep callers' deadlines
//! below the retention.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::id::NodeId;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::error::CallError;
use crate::wire::codec::Encoded;

/// How long a reply is remembered after its call completed.
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(300);

/// How many replies a node remembers at most.
pub(crate) const MAX_REMEMBERED: usize = 1 << 20;

type Key = (NodeId, u64);
/// Where one delivery of the call wants its answer.
pub(crate) type Responder = Box<dyn FnOnce(Result<Encoded, CallError>) + Send>;

enum Entry {
    /// Running: retries that arrived meanwhile wait for its outcome.
    Running(Vec<Responder>),
    /// Done: the outcome, for retries.
    Done(Result<Encoded, CallError>),
}

pub(crate) struct OnceTable {
    retention: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Completed calls in completion order, for expiry.
    done: VecDeque<(Key, Instant)>,
}

/// What to do with a delivery of an exactly-once call.
pub(crate) enum Admit {
    /// The first delivery: run the method, and report with [`OnceTable::complete`].
    Run(Responder),
    /// Answered from memory, or queued behind the delivery that is running it.
    Handled,
}

impl OnceTable {
    pub(crate) fn new(retention: Duration) -> OnceTable {
        OnceTable {
            retention,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A delivery of call `key`, at `now`, whose answer goes to `answer`.
    pub(crate) fn admit(&self, now: Instant, key: Key, answer: Responder) -> Admit {
        let mut inner = self.inner.lock();
        inner.expire(now, self.retention);
        match inner.entries.get_mut(&key) {
            Some(Entry::Running(waiting)) => {
                waiting.push(answer);
                Admit::Handled
            }
            Some(Entry::Done(outcome)) => {
                let outcome = outcome.clone();
                drop(inner);
                answer(outcome);
                Admit::Handled
            }
            None => {
                inner.entries.insert(key, Entry::Running(Vec::new()));
                Admit::Run(answer)
            }
        }
    }

    /// Call `key` finished at `now` with `outcome`: answers the retries waiting for it and
    /// remembers it, unless the method certainly did not run (then a retry may run it).
    pub(crate) fn complete(&self, now: Instant, key: Key, outcome: &Result<Encoded, CallError>) {
        let mut inner = self.inner.lock();
        let ran = outcome
            .as_ref()
            .map_or_else(CallError::may_have_executed, |_| true);
        let waiting = if ran {
            inner.done.push_back((key, now));
            let evicted = inner.done.len().saturating_sub(MAX_REMEMBERED);
            for _ in 0..evicted {
                if let Some((old, _)) = inner.done.pop_front() {
                    inner.entries.remove(&old);
                }
            }
            if evicted > 0 {
                tracing::warn!(
                    evicted,
                    "exactly-once reply memory full: forgetting the oldest replies"
                );
            }
            inner.entries.insert(key, Entry::Done(outcome.clone()))
        } else {
            inner.entries.remove(&key)
        };
        drop(inner);
        if let Some(Entry::Running(waiting)) = waiting {
            for answer in waiting {
                answer(outcome.clone());
            }
        }
    }

    /// How many replies are remembered now (for statistics and tests).
    pub(crate) fn remembered(&self) -> usize {
        self.inner.lock().done.len()
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, retention: Duration) {
        while let Some((key, at)) = self.done.front() {
            if now.duration_since(*at) < retention {
                break;
            }
            let key = *key;
            self.done.pop_front();
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    type Seen = Arc<StdMutex<Vec<Result<Encoded, CallError>>>>;

    fn recorder() -> (Seen, impl Fn() -> Responder) {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let make = {
            let seen = seen.clone();
            move || -> Responder {
                let seen = seen.clone();
                Box::new(move |outcome| seen.lock().unwrap().push(outcome))
            }
        };
        (seen, make)
    }

    #[test]
    fn a_retry_is_answered_from_memory_and_one_in_flight_waits() {
        let table = OnceTable::new(DEFAULT_RETENTION);
        let (seen, answer) = recorder();
        let key = (NodeId::from_u128(0), 7);
        let Admit::Run(first) = table.admit(Instant::now(), key, answer()) else {
            panic!("the first delivery runs")
        };
        assert!(matches!(
            table.admit(Instant::now(), key, answer()),
            Admit::Handled
        ));
        table.complete(Instant::now(), key, &Ok(Encoded::from_slice(&[1])));
        first(Ok(Encoded::from_slice(&[1])));
        assert!(matches!(
            table.admit(Instant::now(), key, answer()),
            Admit::Handled
        ));
        assert_eq!(
            seen.lock().unwrap().len(),
            3,
            "waiting retry, original, late retry"
        );
        assert!(seen
            .lock()
            .unwrap()
            .iter()
            .all(|o| o == &Ok(Encoded::from_slice(&[1]))));
    }

    #[test]
    fn a_call_that_did_not_run_is_not_remembered() {
        let table = OnceTable::new(DEFAULT_RETENTION);
        let (_seen, answer) = recorder();
        let key = (NodeId::from_u128(0), 8);
        assert!(matches!(
            table.admit(Instant::now(), key, answer()),
            Admit::Run(_)
        ));
        table.complete(Instant::now(), key, &Err(CallError::ActorStopped));
        assert!(matches!(
            table.admit(Instant::now(), key, answer()),
            Admit::Run(_)
        ));
        assert_eq!(table.remembered(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn replies_are_forgotten_after_the_retention() {
        let table = OnceTable::new(Duration::from_secs(10));
        let (_seen, answer) = recorder();
        let key = (NodeId::from_u128(0), 9);
        assert!(matches!(
            table.admit(Instant::now(), key, answer()),
            Admit::Run(_)
        ));
        table.complete(Instant::now(), key, &Ok(Encoded::new()));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(
            table.admit(Instant::now(), key, answer()),
            Admit::Handled
        ));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(matches!(
            table.admit(Instant::now(), key, answer()),
            Admit::Run(_)
        ));
    }
}
