//! The registry as a remote object: any node can serve a [`Store`] to the cluster.
//!
//! The service is a system actor that its node keeps running. A panic restarts it
//! in place (the calls waiting in its mailbox reach the fresh state); if it stops
//! for good all the same (stopped on its node, or panicking past its restart
//! limit), the node spawns a fresh one and exports it under [`REGISTRY_OBJECT`]
//! again, unless the node is shutting down. Nothing is lost: the store holds the
//! entries, the leases and their owners, and outlives the actor. Peers' references
//! name the well-known object id, which the node looks up on every call, so they
//! reach the fresh service without looking anything up again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use remora::{Actor, Context, Node, NodeId, ObjectId, Restart, SpawnOptions, StopReason};

use crate::client::Registry;
use crate::error::RegistryError;
use crate::protocol::{RegistryService, RegistryServiceRef, WatchSinkRef, REGISTRY_OBJECT};
use crate::store::{LeaseId, Record, Store};

/// The longest lease a registry grants unless configured otherwise: a dead node's
/// entries are gone at most this long after its last renewal.
pub const DEFAULT_MAX_LEASE: Duration = Duration::from_secs(15);

/// How often the service restarts in place after a panic before it is replaced by
/// a fresh actor instead.
const RESTARTS: Restart = Restart {
    max: 5,
    within: Duration::from_secs(60),
};

/// How long the node waits before replacing a service that stopped soon after it
/// started, so that something that keeps stopping it does not make a busy loop.
const RESPAWN_PAUSE: Duration = Duration::from_millis(200);

/// Serves a [`Store`] to the cluster from a node: RMI's `rmiregistry`, as an
/// ordinary actor. Peers reach it with [`Registry::connect`] and the node's address.
///
/// Leases answer to their owners: a node can renew, end and bind under the leases
/// it was granted and no others ([`RegistryError::Unauthorized`], logged on this
/// node). The owner is the node the call came from ([`remora::Caller::node`]), or
/// this node for calls made on it; the store keeps it with the lease (see
/// [`Store`] for why there), so registry nodes sharing an etcd, and this service
/// after a restart, agree on it.
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
#[derive(Clone)]
pub struct RegistryServer {
    store: Arc<dyn Store>,
    writers: Option<Arc<HashSet<String>>>,
    max_lease: Duration,
    /// The serving node, who calls made on it come from (set by `on_start`).
    home: NodeId,
}

impl RegistryServer {
    /// A registry over `store`, open to every node of the cluster (mutual TLS
    /// already keeps other clusters out).
    pub fn new(store: impl Store) -> RegistryServer {
        RegistryServer {
            store: Arc::new(store),
            writers: None,
            max_lease: DEFAULT_MAX_LEASE,
            home: NodeId::from_u128(0),
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
        self.writers = Some(Arc::new(identities.into_iter().map(Into::into).collect()));
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
    ///
    /// From then on the node keeps the service running until it shuts down: a
    /// service that stops is replaced by a fresh one over the same store, under
    /// the same object id, so peers' references reach it without looking
    /// anything up again. Call it from within a tokio runtime.
    pub fn start(self, node: &Node) -> Result<Registry, RegistryError> {
        let store = self.store.clone();
        let max_lease = self.max_lease;
        let service = self.spawn_on(node);
        if let Err(err) = node.export_as(&service, REGISTRY_OBJECT) {
            node.stop(&service);
            return Err(err.into());
        }
        tokio::spawn(keep_serving(node.clone(), self, service));
        Ok(Registry::builder()
            .lease_ttl(max_lease.min(crate::client::DEFAULT_LEASE))
            .with_shared_store(node, store))
    }

    /// A fresh service on `node`, restarted in place after a panic.
    fn spawn_on(&self, node: &Node) -> RegistryServiceRef {
        let template = self.clone();
        let options = SpawnOptions::new()
            .name("registry")
            .restart(RESTARTS, move || template.clone());
        node.spawn_with(self.clone(), options)
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
            operation: format!(
                "{operation} on this registry: it is read-only for nodes not on its allow list"
            ),
        })
    }

    /// The node a call comes from: the one its connection authenticated, or this
    /// node for a call made on it. Leases are granted to it and checked against it,
    /// so ownership is as strong as the binding of a peer's node id to its
    /// certificate, which the transport is responsible for.
    fn caller_node(&self) -> NodeId {
        remora::caller().map_or(self.home, |caller| caller.node())
    }

    /// Refuses `operation` to the calling node, and says so in this node's log.
    fn refuse(&self, operation: String) -> RegistryError {
        let (caller, node) = match remora::caller() {
            Some(caller) => (caller.identity().to_owned(), caller.node()),
            None => ("this node".to_owned(), self.home),
        };
        tracing::warn!(%caller, %node, %operation, "registry refused a lease operation");
        RegistryError::Unauthorized { caller, operation }
    }

    /// The store's answer, with a refusal (a lease of another node's) logged and
    /// naming the caller as its certificate does.
    fn checked<T>(&self, answer: Result<T, RegistryError>) -> Result<T, RegistryError> {
        match answer {
            Err(RegistryError::Unauthorized { operation, .. }) => Err(self.refuse(operation)),
            other => other,
        }
    }

    /// Refuses a record put in another node's name: a record's owner is the node
    /// whose lease keeps it, and only that node may put it.
    fn check_owner(&self, record: &Record) -> Result<(), RegistryError> {
        if record.owner == self.caller_node() {
            return Ok(());
        }
        Err(self.refuse(format!(
            "bind {:?} in the name of node {}",
            record.key, record.owner
        )))
    }
}

/// Keeps a registry service exported under [`REGISTRY_OBJECT`] on `node`: when
/// the one running stops, other than by the node's shutdown, a fresh one from
/// `template` takes its place.
async fn keep_serving(node: Node, template: RegistryServer, first: RegistryServiceRef) {
    // Watch the actor, not hold it: the export keeps it, and it must be free to go.
    let mut stopped = Box::pin(node.monitor(&first));
    drop(first);
    loop {
        let started = tokio::time::Instant::now();
        let reason = stopped.await;
        if node.is_shut_down() || reason == StopReason::Shutdown {
            return;
        }
        tracing::warn!(%reason, "the registry service stopped; serving a fresh one");
        if started.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(RESPAWN_PAUSE).await;
            if node.is_shut_down() {
                return;
            }
        }
        let service = template.spawn_on(&node);
        if let Err(err) = node.export_as(&service, REGISTRY_OBJECT) {
            tracing::error!(%err, "could not export the fresh registry service; this node serves no registry any more");
            node.stop(&service);
            return;
        }
        stopped = Box::pin(node.monitor(&service));
    }
}

impl Actor for RegistryServer {
    async fn on_start(&mut self, ctx: &Context) {
        self.home = ctx.node().id();
    }
}

impl RegistryService for RegistryServer {
    async fn grant(&mut self, ttl_ms: u64) -> Result<LeaseId, RegistryError> {
        self.authorize("bind or join (take a lease)")?;
        let ttl = Duration::from_millis(ttl_ms).min(self.max_lease);
        self.store.grant(ttl, self.caller_node()).await
    }

    async fn keep_alive(&mut self, lease: LeaseId) -> Result<(), RegistryError> {
        let answer = self.store.keep_alive(lease, self.caller_node()).await;
        self.checked(answer)
    }

    async fn revoke(&mut self, lease: LeaseId) -> Result<(), RegistryError> {
        self.authorize("end a lease")?;
        let answer = self.store.revoke(lease, self.caller_node()).await;
        self.checked(answer)
    }

    async fn create(&mut self, record: Record, lease: LeaseId) -> Result<(), RegistryError> {
        self.authorize("bind")?;
        self.check_owner(&record)?;
        let answer = self.store.create(record, lease).await;
        self.checked(answer)
    }

    async fn put(
        &mut self,
        record: Record,
        lease: LeaseId,
    ) -> Result<Option<Record>, RegistryError> {
        self.authorize("rebind")?;
        self.check_owner(&record)?;
        let answer = self.store.put(record, lease).await;
        self.checked(answer)
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
