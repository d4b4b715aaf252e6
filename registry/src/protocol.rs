//! The registry's wire protocol: the interfaces a registry node serves and its
//! clients call, and the well-known object id it lives under. Client
//! ([`RemoteStore`](crate::RemoteStore)) and server ([`RegistryServer`](crate::RegistryServer))
//! both build on this file; neither imports the other.

use remora::ObjectId;

use crate::error::RegistryError;
use crate::store::{Change, LeaseId, Record};

/// The object id a registry is exported under on its node, as RMI's registry has a
/// fixed `ObjID`: knowing a node's address is enough to reach its registry.
pub const REGISTRY_OBJECT: ObjectId =
    ObjectId::from_u128(0x7265_6d6f_7261_2d72_6567_6973_7472_7900);

/// The registry's wire interface: a [`Store`](crate::Store) as a remote object. Users call
/// [`Registry`](crate::Registry), which speaks it through a [`RemoteStore`](crate::RemoteStore).
#[remora::remote(name = "remora.Registry")]
pub trait RegistryService {
    /// Grants a lease of `ttl_ms` (capped by the registry's maximum).
    async fn grant(&mut self, ttl_ms: u64) -> Result<LeaseId, RegistryError>;
    /// Renews a lease.
    async fn keep_alive(&mut self, lease: LeaseId) -> Result<(), RegistryError>;
    /// Ends a lease and deletes its records.
    async fn revoke(&mut self, lease: LeaseId) -> Result<(), RegistryError>;
    /// Puts a record unless its key exists.
    async fn create(&mut self, record: Record, lease: LeaseId) -> Result<(), RegistryError>;
    /// Puts a record, replacing what was under its key.
    async fn put(
        &mut self,
        record: Record,
        lease: LeaseId,
    ) -> Result<Option<Record>, RegistryError>;
    /// Deletes the record under a key (only if it points at `only`, when given).
    async fn delete(
        &mut self,
        key: String,
        only: Option<ObjectId>,
    ) -> Result<Option<Record>, RegistryError>;
    /// The record under a key.
    async fn get(&mut self, key: String) -> Result<Option<Record>, RegistryError>;
    /// The records under a prefix, in key order.
    async fn list(&mut self, prefix: String) -> Result<Vec<Record>, RegistryError>;
    /// Sends every change under `prefix` to `sink`, in order, until it stops.
    async fn watch(&mut self, prefix: String, sink: WatchSinkRef) -> Result<(), RegistryError>;
}

/// Where a registry node sends a watcher's changes (an actor on the watcher's node).
#[remora::remote(name = "remora.RegistryWatch")]
pub trait WatchSink {
    /// One change, or why the watch ended.
    async fn change(&mut self, change: Result<Change, RegistryError>);
}
