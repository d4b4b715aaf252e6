//! The embedded store: records, leases and watches in one process's memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use remora::{NodeId, ObjectId};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::error::RegistryError;
use crate::store::{not_owner, BoxFuture, Change, Changes, LeaseId, Record, Store};

/// The registry's default backend: everything in this process's memory.
///
/// A node that serves the registry ([`RegistryServer::serve`](crate::RegistryServer::serve))
/// usually owns it; entries live as long as their owner's lease and vanish with
/// the process. Cheap to clone: clones share the same entries.
///
/// ```
/// use remora::NodeId;
/// use remora_registry::{MemoryStore, RegistryError, Store};
/// # #[tokio::main] async fn main() -> Result<(), RegistryError> {
/// let store = MemoryStore::new();
/// let (me, someone_else) = (NodeId::random(), NodeId::random());
/// let lease = store.grant(std::time::Duration::from_secs(10), me).await?;
/// assert!(store.list("").await?.is_empty());
/// // A lease answers to its owner only.
/// assert!(matches!(
///     store.revoke(lease, someone_else).await,
///     Err(RegistryError::Unauthorized { .. })
/// ));
/// store.revoke(lease, me).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the reaper when a lease's deadline moves earlier.
    reaper: Arc<Notify>,
    reaper_started: std::sync::OnceLock<()>,
}

#[derive(Default)]
struct State {
    records: BTreeMap<String, (Record, LeaseId)>,
    leases: HashMap<LeaseId, Lease>,
    watchers: Vec<Watcher>,
}

struct Lease {
    /// The node it was granted to: the only one that may use it.
    owner: NodeId,
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Result<Change, RegistryError>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Expires leases past their deadline, from a task that sleeps until the next one.
    fn start_reaper(&self) {
        self.shared.reaper_started.get_or_init(|| {
            let weak = Arc::downgrade(&self.shared);
            tokio::spawn(reap(weak));
        });
    }
}

async fn reap(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let next = shared.state.lock().expire(Instant::now());
        // Hold only the notification while asleep, so dropping the store ends the task.
        // `notify_one` keeps a permit, so a wake-up between here and the wait is not lost.
        let notify = shared.reaper.clone();
        drop(shared);
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = notify.notified() => {}
                }
            }
            // No leases: wait for one, but look again now and then in case the
            // store was dropped meanwhile.
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(5), notify.notified()).await;
            }
        }
    }
}

impl State {
    /// Drops expired leases and their records; returns the next deadline.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.end_lease(id);
        }
        self.leases.values().map(|l| l.deadline).min()
    }

    fn end_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        let mut keys: Vec<String> = lease.keys.into_iter().collect();
        keys.sort();
        for key in keys {
            if let Some((record, _)) = self.records.remove(&key) {
                self.notify(Change::Deleted(record));
            }
        }
        true
    }

    /// Lease `id` for `owner` to use in `operation`: expired (reaped or not) for
    /// anyone if it is past its deadline or unknown, refused if it is another
    /// node's. An expired lease found here is ended at once.
    fn owned_lease(
        &mut self,
        id: LeaseId,
        owner: NodeId,
        operation: &str,
        now: Instant,
    ) -> Result<&mut Lease, RegistryError> {
        let expired = match self.leases.get(&id) {
            None => return Err(RegistryError::LeaseExpired),
            Some(lease) => lease.deadline <= now,
        };
        if expired {
            self.end_lease(id);
            return Err(RegistryError::LeaseExpired);
        }
        match self.leases.get_mut(&id) {
            Some(lease) if lease.owner == owner => Ok(lease),
            Some(_) => Err(not_owner(owner, operation)),
            None => Err(RegistryError::LeaseExpired),
        }
    }

    fn insert(&mut self, record: Record, lease: LeaseId) -> Result<Option<Record>, RegistryError> {
        self.owned_lease(lease, record.owner, "bind under", Instant::now())?
            .keys
            .insert(record.key.clone());
        let key = record.key.clone();
        let previous = self.records.insert(key.clone(), (record.clone(), lease));
        let previous = previous.map(|(old, old_lease)| {
            if old_lease != lease {
                if let Some(l) = self.leases.get_mut(&old_lease) {
                    l.keys.remove(&key);
                }
            }
            old
        });
        self.notify(Change::Put(record));
        Ok(previous)
    }

    fn remove(&mut self, key: &str) -> Option<Record> {
        let (record, lease) = self.records.remove(key)?;
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.remove(key);
        }
        self.notify(Change::Deleted(record.clone()));
        Some(record)
    }

    /// Tells every watcher of the key's prefix; a watcher too far behind loses its
    /// watch (told why, if there is room for that).
    fn notify(&mut self, change: Change) {
        let key = &change.record().key;
        self.watchers.retain(|w| {
            if !key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            // The last slot is kept for telling the watcher why its watch ends.
            if w.tx.capacity() <= 1 {
                tracing::warn!(prefix = %w.prefix, "a registry watcher fell behind; its watch ends");
                let _ = w.tx.try_send(Err(RegistryError::WatchLost {
                    reason: format!(
                        "the watcher fell {} changes behind",
                        crate::store::WATCH_BUFFER
                    ),
                }));
                return false;
            }
            w.tx.try_send(Ok(change.clone())).is_ok()
        });
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Store for MemoryStore {
    fn grant(&self, ttl: Duration, owner: NodeId) -> BoxFuture<'_, Result<LeaseId, RegistryError>> {
        self.start_reaper();
        let mut state = self.shared.state.lock();
        let id = LeaseId::random();
        state.leases.insert(
            id,
            Lease {
                owner,
                ttl,
                deadline: expiry(Instant::now(), ttl),
                keys: HashSet::new(),
            },
        );
        drop(state);
        self.shared.reaper.notify_one();
        ready(Ok(id))
    }

    fn keep_alive(
        &self,
        lease: LeaseId,
        owner: NodeId,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let mut state = self.shared.state.lock();
        let now = Instant::now();
        let result = state
            .owned_lease(lease, owner, "renew", now)
            .map(|l| l.deadline = expiry(now, l.ttl));
        ready(result)
    }

    fn revoke(&self, lease: LeaseId, owner: NodeId) -> BoxFuture<'_, Result<(), RegistryError>> {
        let mut state = self.shared.state.lock();
        let result = match state.owned_lease(lease, owner, "end", Instant::now()) {
            Ok(_) => {
                state.end_lease(lease);
                Ok(())
            }
            Err(RegistryError::LeaseExpired) => Ok(()),
            Err(refused) => Err(refused),
        };
        ready(result)
    }

    fn create(&self, record: Record, lease: LeaseId) -> BoxFuture<'_, Result<(), RegistryError>> {
        let mut state = self.shared.state.lock();
        let result = if state.records.contains_key(&record.key) {
            Err(RegistryError::AlreadyBound { name: record.key })
        } else {
            state.insert(record, lease).map(|_| ())
        };
        ready(result)
    }

    fn put(
        &self,
        record: Record,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Option<Record>, RegistryError>> {
        ready(self.shared.state.lock().insert(record, lease))
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        only: Option<ObjectId>,
    ) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        let mut state = self.shared.state.lock();
        let matches = match (state.records.get(key), only) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some((record, _)), Some(object)) => record.object() == object,
        };
        ready(Ok(if matches { state.remove(key) } else { None }))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        let state = self.shared.state.lock();
        ready(Ok(state.records.get(key).map(|(r, _)| r.clone())))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Record>, RegistryError>> {
        let state = self.shared.state.lock();
        let records = state
            .records
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, (record, _))| record.clone())
            .collect();
        ready(Ok(records))
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Changes, RegistryError>> {
        let (tx, changes) = Changes::channel();
        self.shared.state.lock().watchers.push(Watcher {
            prefix: prefix.to_owned(),
            tx,
        });
        ready(Ok(changes))
    }
}

/// When a lease of `ttl` granted or renewed at `now` lapses: a ttl too large for
/// the clock (`Duration::MAX`) never does, rather than panicking the store.
fn expiry(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora::WireRef;
    use remora::{NodeId, ObjectId};

    fn record(key: &str) -> Record {
        Record {
            key: key.into(),
            target: WireRef {
                node: NodeId::random(),
                incarnation: 1,
                object: ObjectId::random(),
                interface: 7,
                addr: None,
            },
            interface: "Test".into(),
            owner: OWNER,
        }
    }

    /// The node the tests' leases are granted to, and their records' owner.
    const OWNER: NodeId = NodeId::from_u128(0x0e);

    #[tokio::test(start_paused = true)]
    async fn a_ttl_too_large_for_the_clock_never_expires() {
        let store = MemoryStore::new();
        let lease = store.grant(Duration::MAX, OWNER).await.unwrap();
        store.create(record("n/a"), lease).await.unwrap();
        store.keep_alive(lease, OWNER).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3600 * 24 * 365)).await;
        assert!(store.get("n/a").await.unwrap().is_some(), "a year later");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_not_renewed_expires_with_its_records() {
        let store = MemoryStore::new();
        let lease = store.grant(Duration::from_secs(3), OWNER).await.unwrap();
        let mut changes = store.watch("n/").await.unwrap();
        store.create(record("n/a"), lease).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        store.keep_alive(lease, OWNER).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(store.get("n/a").await.unwrap().is_some(), "renewed at 2 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(store.get("n/a").await.unwrap(), None, "expired at 5 s");
        assert!(matches!(changes.next().await, Some(Ok(Change::Put(_)))));
        let deleted = changes.next().await.unwrap().unwrap();
        assert_eq!(deleted, Change::Deleted(record_with_key(&deleted, "n/a")));
        assert_eq!(
            store.keep_alive(lease, OWNER).await,
            Err(RegistryError::LeaseExpired)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_nodes_renewals_do_not_keep_a_lease() {
        let store = MemoryStore::new();
        let lease = store.grant(Duration::from_secs(3), OWNER).await.unwrap();
        store.create(record("n/a"), lease).await.unwrap();
        let intruder = NodeId::random();
        // Renewals at 0, 1 and 2 s, all refused: the lease ends at 3 s regardless.
        for _ in 0..3 {
            assert!(matches!(
                store.keep_alive(lease, intruder).await,
                Err(RegistryError::Unauthorized { .. })
            ));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(store.get("n/a").await.unwrap(), None, "expired at 3 s");
        assert_eq!(
            store.keep_alive(lease, intruder).await,
            Err(RegistryError::LeaseExpired),
            "an expired lease is expired whoever asks"
        );
    }

    #[tokio::test]
    async fn a_refused_revoke_or_put_changes_nothing() {
        let store = MemoryStore::new();
        let lease = store.grant(Duration::from_secs(30), OWNER).await.unwrap();
        let kept = record("n/kept");
        store.create(kept.clone(), lease).await.unwrap();
        let intruder = NodeId::random();
        let refused = store.revoke(lease, intruder).await;
        let Err(RegistryError::Unauthorized { caller, operation }) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(caller, intruder.to_string());
        assert_eq!(operation, "end a lease granted to another node");
        let theirs = Record {
            owner: intruder,
            ..record("n/kept")
        };
        assert!(matches!(
            store.put(theirs.clone(), lease).await,
            Err(RegistryError::Unauthorized { .. })
        ));
        assert!(matches!(
            store
                .create(
                    Record {
                        key: "n/new".into(),
                        ..theirs
                    },
                    lease
                )
                .await,
            Err(RegistryError::Unauthorized { .. })
        ));
        assert_eq!(store.list("").await.unwrap(), vec![kept]);
        store.keep_alive(lease, OWNER).await.unwrap();
    }

    fn record_with_key(change: &Change, key: &str) -> Record {
        assert_eq!(change.record().key, key);
        change.record().clone()
    }

    #[tokio::test]
    async fn rebinding_under_another_lease_moves_the_key() {
        let store = MemoryStore::new();
        let first = store.grant(Duration::from_secs(30), OWNER).await.unwrap();
        let second = store.grant(Duration::from_secs(30), OWNER).await.unwrap();
        store.put(record("k"), first).await.unwrap();
        let replacement = record("k");
        store.put(replacement.clone(), second).await.unwrap();
        store.revoke(first, OWNER).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(replacement));
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_loses_its_watch_not_the_store() {
        let store = MemoryStore::new();
        let lease = store.grant(Duration::from_secs(30), OWNER).await.unwrap();
        let mut slow = store.watch("").await.unwrap();
        for i in 0..crate::store::WATCH_BUFFER + 10 {
            store.put(record(&format!("k{i}")), lease).await.unwrap();
        }
        let mut seen = 0;
        let mut ended = None;
        while let Some(change) = slow.next().await {
            match change {
                Ok(_) => seen += 1,
                Err(e) => ended = Some(e),
            }
        }
        assert_eq!(seen, crate::store::WATCH_BUFFER - 1);
        assert!(
            matches!(ended, Some(RegistryError::WatchLost { .. })),
            "{ended:?}"
        );
        assert_eq!(
            store.list("").await.unwrap().len(),
            crate::store::WATCH_BUFFER + 10
        );
    }
}
