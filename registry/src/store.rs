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

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use remora::NodeId;
use remora::ObjectId;
use remora::WireRef;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::RegistryError;

/// A boxed future, as [`Store`] methods return (the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lease: records put under it live as long as it is renewed.
pub type LeaseId = i64;

/// One entry of a store: a reference under a key, and who put it there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key, without any backend prefix.
    pub key: String,
    /// Where the reference points.
    pub target: WireRef,
    /// The name of the target's interface (its id is in `target`).
    pub interface: String,
    /// The node that put the record (its lease keeps the record alive).
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
pub trait Store: Send + Sync + 'static {
    /// Grants a lease that lives `ttl` unless renewed.
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, RegistryError>>;

    /// Renews `lease` for another time to live. [`RegistryError::LeaseExpired`] if it
    /// has already expired (its records are gone).
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Ends `lease` now, deleting its records.
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Puts `record` under its key unless the key exists, in which case it returns
    /// [`RegistryError::AlreadyBound`] with the existing record's key.
    fn create(&self, record: Record, lease: LeaseId) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Puts `record` under its key, replacing what was there; returns the replaced record.
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
}
