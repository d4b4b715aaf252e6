//! A registry store for tests that need to see inside one.

use std::sync::Arc;
use std::time::Duration;

use remora::{NodeId, ObjectId};
use remora_registry::{BoxFuture, Changes, LeaseId, MemoryStore, Record, RegistryError, Store};

/// A [`MemoryStore`] that remembers the leases it grants, and panics (in the
/// registry service that calls it) when asked for the key `boom`.
#[derive(Clone, Default)]
pub struct Spy {
    store: MemoryStore,
    granted: Arc<std::sync::Mutex<Vec<LeaseId>>>,
}

impl Spy {
    /// The leases granted so far, oldest first.
    pub fn granted(&self) -> Vec<LeaseId> {
        self.granted.lock().unwrap().clone()
    }
}

impl Store for Spy {
    fn grant(&self, ttl: Duration, owner: NodeId) -> BoxFuture<'_, Result<LeaseId, RegistryError>> {
        Box::pin(async move {
            let lease = self.store.grant(ttl, owner).await?;
            self.granted.lock().unwrap().push(lease);
            Ok(lease)
        })
    }
    fn keep_alive(
        &self,
        lease: LeaseId,
        owner: NodeId,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.store.keep_alive(lease, owner)
    }
    fn revoke(&self, lease: LeaseId, owner: NodeId) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.store.revoke(lease, owner)
    }
    fn create(&self, record: Record, lease: LeaseId) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.store.create(record, lease)
    }
    fn put(
        &self,
        record: Record,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Option<Record>, RegistryError>> {
        self.store.put(record, lease)
    }
    fn delete<'a>(
        &'a self,
        key: &'a str,
        only: Option<ObjectId>,
    ) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        self.store.delete(key, only)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        assert_ne!(key, "boom", "the store blew up, as asked");
        self.store.get(key)
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Record>, RegistryError>> {
        self.store.list(prefix)
    }
    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Changes, RegistryError>> {
        self.store.watch(prefix)
    }
}
