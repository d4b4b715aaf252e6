//! Where a registry keeps its entries: the contract every backend meets.
//!
//! A [`Store`] is a small key-value store with etcd's shape: records under string
//! keys, each attached to a lease that its owner keeps alive; a lease that is not
//! renewed within its time to live expires and takes its records with it; watches
//! report every change under a prefix, in order. [`MemoryStore`](crate::MemoryStore)
//! keeps it in one process, `EtcdStore` (feature `etcd`) in an etcd cluster, and
//! [`RemoteStore`](crate::RemoteStore) forwards to a registry node.
//!
//! The [`Registry`](crate::Registry) maps names and groups onto keys; stores never
//! interpret keys beyond prefixes.
//!
//! A lease belongs to the node it was granted to: only that node may renew it,
//! end it, or put records under it ([`RegistryError::Unauthorized`] otherwise),
//! and its id is random, so nobody finds a lease by counting. The store keeps the
//! owner beside the lease rather than the registry node in front of it: the owner
//! then lives exactly as long as the lease, survives a restart of the registry
//! service (the store outlives it), and registry nodes that share one etcd agree
//! on it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use remora::NodeId;
use remora::ObjectId;
use remora::WireRef;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::RegistryError;

/// A boxed future, as [`Store`] methods return (the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lease: records put under it live as long as its owner renews it.
///
/// A random 128-bit value (uuid v4: 122 bits from a cryptographically secure
/// generator, as object ids): there is no next or previous lease to guess, and a
/// lease learnt some other way is still of no use to anyone but its owner.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(Uuid);

impl LeaseId {
    /// A fresh, unguessable lease id: what a [`Store`] returns from [`Store::grant`].
    pub fn random() -> LeaseId {
        LeaseId(Uuid::new_v4())
    }

    /// The lease id with this value (for tests: a store answers a lease it never
    /// granted with [`RegistryError::LeaseExpired`]).
    pub const fn from_u128(value: u128) -> LeaseId {
        LeaseId(Uuid::from_u128(value))
    }

    /// The id as a number.
    pub const fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0.simple())
    }
}

/// The refusal a store gives `node` for `operation` on a lease granted to another
/// node.
pub(crate) fn not_owner(node: NodeId, operation: &str) -> RegistryError {
    RegistryError::Unauthorized {
        caller: node.to_string(),
        operation: format!("{operation} a lease granted to another node"),
    }
}

/// One entry of a store: a reference under a key, and who put it there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key, without any backend prefix.
    pub key: String,
    /// Where the reference points.
    pub target: WireRef,
    /// The name of the target's interface (its id is in `target`).
    pub interface: String,
    /// The node that put the record: the owner of the lease that keeps it alive
    /// (a store refuses a record under a lease of another node's).
    pub owner: NodeId,
}

impl Record {
    /// The object the record points at.
    pub fn object(&self) -> ObjectId {
        self.target.object
    }
}

/// A change under a watched prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A record was put (a new key, or a new value under a key).
    Put(Record),
    /// A record was deleted, or its lease expired. Holds the record as it was.
    Deleted(Record),
}

impl Change {
    /// The record the change is about.
    pub fn record(&self) -> &Record {
        match self {
            Change::Put(r) | Change::Deleted(r) => r,
        }
    }
}

/// A stream of changes under a prefix, in the order the store made them.
///
/// It ends with [`RegistryError::WatchLost`] if the store could not keep the watch
/// (the backend failed, or, for [`MemoryStore`](crate::MemoryStore), the watcher
/// fell [`WATCH_BUFFER`] changes behind; etcd instead holds back a slow watcher),
/// and ends quietly when the store is dropped. Dropping a `Changes` cancels the
/// watch.
pub struct Changes {
    rx: mpsc::Receiver<Result<Change, RegistryError>>,
}

/// How many changes a watch buffers before the store gives up on a slow watcher.
pub const WATCH_BUFFER: usize = 4096;

impl Changes {
    /// A watch and the sender a store feeds it through.
    pub fn channel() -> (mpsc::Sender<Result<Change, RegistryError>>, Changes) {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        (tx, Changes { rx })
    }

    /// The next change; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<Change, RegistryError>> {
        self.rx.recv().await
    }
}

/// A backend for the registry: records under keys, leases, watches.
///
/// Every method is atomic. Implementations: [`MemoryStore`](crate::MemoryStore),
/// `EtcdStore` (feature `etcd`), [`RemoteStore`](crate::RemoteStore).
///
/// Leases have owners: `grant` records the node a lease is for, and `keep_alive`,
/// `revoke`, `create` and `put` act on a lease only for that node (for `create`
/// and `put`, the node is the record's [`owner`](Record::owner)); for any other
/// node they fail with [`RegistryError::Unauthorized`] and change nothing. A lease
/// the store does not know (expired, revoked, or never granted) is
/// [`RegistryError::LeaseExpired`] whoever asks. The store believes the node it is
/// given: a registry node passes the caller its transport authenticated.
pub trait Store: Send + Sync + 'static {
    /// Grants `owner` a lease that lives `ttl` unless renewed.
    fn grant(&self, ttl: Duration, owner: NodeId) -> BoxFuture<'_, Result<LeaseId, RegistryError>>;

    /// Renews `lease`, on behalf of `owner`, for another time to live.
    /// [`RegistryError::LeaseExpired`] if it has already expired (its records are
    /// gone); [`RegistryError::Unauthorized`] if it is not `owner`'s.
    fn keep_alive(&self, lease: LeaseId, owner: NodeId)
        -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Ends `lease` now, on behalf of `owner`, deleting its records. A lease that
    /// is already gone is no error; one that is not `owner`'s is
    /// [`RegistryError::Unauthorized`].
    fn revoke(&self, lease: LeaseId, owner: NodeId) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Puts `record` under its key unless the key exists, in which case it returns
    /// [`RegistryError::AlreadyBound`] with the existing record's key. `lease` must
    /// be the record owner's.
    fn create(&self, record: Record, lease: LeaseId) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Puts `record` under its key, replacing what was there; returns the replaced
    /// record. `lease` must be the record owner's.
    fn put(
        &self,
        record: Record,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Option<Record>, RegistryError>>;

    /// Deletes the record under `key`, if there is one and (with `only` set) it
    /// points at that object; returns the deleted record.
    fn delete<'a>(
        &'a self,
        key: &'a str,
        only: Option<ObjectId>,
    ) -> BoxFuture<'a, Result<Option<Record>, RegistryError>>;

    /// The record under `key`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>>;

    /// Every record whose key starts with `prefix`, in key order.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Record>, RegistryError>>;

    /// Changes under `prefix` from now on.
    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Changes, RegistryError>>;

    /// The caller stopped waiting for this store (a renewal took longer than it
    /// could wait): a store reached through another node may look for its
    /// registry again. Does nothing by default.
    fn unresponsive(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_random_not_counted() {
        let ids: Vec<LeaseId> = (0..1000).map(|_| LeaseId::random()).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // A counter would give neighbours; random ids are far apart (the chance
        // that two of a thousand differ by less than 2^64 is about 2^-48).
        let mut sorted: Vec<u128> = ids.iter().map(LeaseId::as_u128).collect();
        sorted.sort_unstable();
        let closest = sorted.windows(2).map(|w| w[1] - w[0]).min().unwrap();
        assert!(closest > 1 << 64, "two ids {closest} apart");
    }

    #[test]
    fn lease_ids_carry_122_random_bits() {
        // Every one of uuid v4's 122 random bits takes both values across a few
        // hundred ids; a bit stuck in one value would be a weaker id.
        let (mut ones, mut zeros) = (0u128, 0u128);
        for _ in 0..256 {
            let id = LeaseId::random().as_u128();
            ones |= id;
            zeros |= !id;
        }
        let varying = (ones & zeros).count_ones();
        assert_eq!(varying, 122, "bits that vary: {varying}");
    }

    #[test]
    fn lease_ids_survive_the_wire_and_print_as_hex() {
        let id = LeaseId::random();
        let bytes = rmp_serde::to_vec(&id).unwrap();
        assert_eq!(rmp_serde::from_slice::<LeaseId>(&bytes).unwrap(), id);
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(u128::from_str_radix(&text, 16).unwrap(), id.as_u128());
    }
}
