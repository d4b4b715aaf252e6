//! The registry as a remote object: any node can serve a [`Store`] to the cluster.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use remora::ObjectId;
use remora::{Actor, Node};

use crate::client::Registry;
use crate::error::RegistryError;
use crate::protocol::{RegistryService, RegistryServiceRef, WatchSinkRef, REGISTRY_OBJECT};
use crate::store::{LeaseId, Record, Store};

/// The longest lease a registry grants unless configured otherwise: a dead node's
/// entries are gone at most this long after its last renewal.
pub const DEFAULT_MAX_LEASE: Duration = Duration::from_secs(15);

/// Serves a [`Store`] to the cluster from a node: RMI's `rmiregistry`, as an
/// ordinary actor. Peers reach it with [`Registry::connect`] and the node's address.
///
/// ```
/// use remora::Node;
/// use remora_registry::{MemoryStore, RegistryServer};
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().listen("127.0.0.1:0").build().await?;
/// let registry = RegistryServer::serve(&node, MemoryStore::new())?;
/// assert!(registry.list("").await?.is_empty());
/// // Other nodes: Registry::connect(&their_node, node.listen_addr()...).
/// # Ok(()) }
/// ```
pub struct RegistryServer {
    store: Arc<dyn Store>,
    writers: Option<HashSet<String>>,
    max_lease: Duration,
}

impl RegistryServer {
    /// A registry over `store`, open to every node of the cluster (mutual TLS
    /// already keeps other clusters out).
    pub fn new(store: impl Store) -> RegistryServer {
        RegistryServer {
            store: Arc::new(store),
            writers: None,
            max_lease: DEFAULT_MAX_LEASE,
        }
    }

    /// Makes the registry read-only for every other node than these: only nodes
    /// whose authenticated identity ([`remora::Caller::identity`], the name in their
    /// certificate) is listed may bind, rebind, unbind, join or leave. The serving
    /// node itself may always write.
    pub fn allow_writes_from<I, S>(mut self, identities: I) -> RegistryServer
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.writers = Some(identities.into_iter().map(Into::into).collect());
        self
    }

    /// The longest lease the registry grants (default [`DEFAULT_MAX_LEASE`]): how
    /// long a dead node's names can outlive it.
    pub fn max_lease(mut self, ttl: Duration) -> RegistryServer {
        self.max_lease = ttl;
        self
    }

    /// Serves `store` from `node` with the default settings; see [`RegistryServer::start`].
    pub fn serve(node: &Node, store: impl Store) -> Result<Registry, RegistryError> {
        RegistryServer::new(store).start(node)
    }

    /// Spawns the registry on `node`, exports it under [`REGISTRY_OBJECT`], and
    /// returns a [`Registry`] for `node` itself (it uses the store directly).
    /// Fails if the node already serves a registry.
    pub fn start(self, node: &Node) -> Result<Registry, RegistryError> {
        let store = self.store.clone();
        let max_lease = self.max_lease;
        let service: RegistryServiceRef = node.spawn(self);
        node.export_as(&service, REGISTRY_OBJECT)?;
        Ok(Registry::builder()
            .lease_ttl(max_lease.min(crate::client::DEFAULT_LEASE))
            .with_shared_store(node, store))
    }

    /// Refuses a change from a node not on the allow list.
    fn authorize(&self, operation: &str) -> Result<(), RegistryError> {
        let (Some(writers), Some(caller)) = (&self.writers, remora::caller()) else {
            return Ok(());
        };
        if writers.contains(caller.identity()) {
            return Ok(());
        }
        tracing::info!(caller = caller.identity(), node = %caller.node(), operation, "registry write refused");
        Err(RegistryError::Unauthorized {
            caller: caller.identity().to_owned(),
            operation: operation.to_owned(),
        })
    }
}

impl Actor for RegistryServer {}

impl RegistryService for RegistryServer {
    async fn grant(&mut self, ttl_ms: u64) -> Result<LeaseId, RegistryError> {
        self.authorize("bind or join (take a lease)")?;
        let ttl = Duration::from_millis(ttl_ms).min(self.max_lease);
        self.store.grant(ttl).await
    }

    async fn keep_alive(&mut self, lease: LeaseId) -> Result<(), RegistryError> {
        self.store.keep_alive(lease).await
    }

    async fn revoke(&mut self, lease: LeaseId) -> Result<(), RegistryError> {
        self.authorize("end a lease")?;
        self.store.revoke(lease).await
    }

    async fn create(&mut self, record: Record, lease: LeaseId) -> Result<(), RegistryError> {
        self.authorize("bind")?;
        self.store.create(record, lease).await
    }

    async fn put(
        &mut self,
        record: Record,
        lease: LeaseId,
    ) -> Result<Option<Record>, RegistryError> {
        self.authorize("rebind")?;
        self.store.put(record, lease).await
    }

    async fn delete(
        &mut self,
        key: String,
        only: Option<ObjectId>,
    ) -> Result<Option<Record>, RegistryError> {
        self.authorize("unbind")?;
        self.store.delete(&key, only).await
    }

    async fn get(&mut self, key: String) -> Result<Option<Record>, RegistryError> {
        self.store.get(&key).await
    }

    async fn list(&mut self, prefix: String) -> Result<Vec<Record>, RegistryError> {
        self.store.list(&prefix).await
    }

    async fn watch(&mut self, prefix: String, sink: WatchSinkRef) -> Result<(), RegistryError> {
        let mut changes = self.store.watch(&prefix).await?;
        // One task a watcher, so a slow watcher slows only itself.
        tokio::spawn(async move {
            while let Some(change) = changes.next().await {
                let last = change.is_err();
                if sink.change(change).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(())
    }
}
