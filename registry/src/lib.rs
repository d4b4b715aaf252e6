//! Remora's naming service, RMI's registry done right: names resolve to typed
//! remote references from any node of the cluster.
//!
//! - [`Registry`]: a node's handle: `bind`, `rebind`, `unbind`, typed `lookup`,
//!   `list`, `watch`, and groups (`join`, `leave`, `members`, a [`Group`] proxy).
//! - [`RegistryServer`]: serves a [`Store`] from a node, as an ordinary remote
//!   object; [`Registry::connect`] reaches it by the node's address.
//! - Stores: [`MemoryStore`] (embedded, the default), `EtcdStore` (feature `etcd`:
//!   entries in an etcd cluster, which several registry nodes, or nodes directly,
//!   can share).
//! - [`Placer`]: spawns actors on the nodes that offer spawning in a group
//!   ([`Registry::offer_spawning`]), by [`Placement`]: local, a given node,
//!   round-robin, random, or least loaded.
//!
//! Entries belong to the node that made them and live on its lease: when the node
//! dies, its names vanish within the lease's time to live; when an actor stops,
//! its names go at once.

mod client;
mod entry;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod group;
mod memory;
mod named;
mod placement;
mod protocol;
mod remote;
mod server;
mod store;

pub use client::{Registry, RegistryBuilder, Watch, DEFAULT_LEASE};
pub use entry::{Entry, Event};
pub use error::RegistryError;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdOptions, EtcdStore};
pub use group::{Group, Pick, DEMOTED_FOR, MAX_DEMOTION};
pub use memory::MemoryStore;
pub use named::Named;
pub use placement::{Placement, PlacementError, Placer};
pub use protocol::{RegistryService, RegistryServiceRef, WatchSink, WatchSinkRef, REGISTRY_OBJECT};
pub use remote::RemoteStore;
pub use server::{RegistryServer, DEFAULT_MAX_LEASE};
pub use store::{BoxFuture, Change, Changes, LeaseId, Record, Store, WATCH_BUFFER};
