//! A [`Store`] on another node: the client side of a registry node.

use std::time::Duration;

use remora::{Actor, Context, Node};
use remora::{NodeId, ObjectId};
use tokio::sync::mpsc;

use crate::error::RegistryError;
use crate::protocol::{RegistryServiceRef, WatchSink, WatchSinkRef, REGISTRY_OBJECT};
use crate::store::{BoxFuture, Change, Changes, LeaseId, Record, Store};

/// The store of a registry served by another node ([`RegistryServer`](crate::RegistryServer)),
/// reached over the node's connection to it. [`Registry::connect`](crate::Registry::connect)
/// makes one; use it directly only to build a [`Registry`](crate::Registry) with options.
///
/// It speaks for its own node only: the registry node takes a lease's owner from
/// the connection the call came over, so a lease `owner` other than this node is
/// refused here ([`RegistryError::Unauthorized`]) rather than granted to the wrong
/// node.
#[derive(Clone)]
pub struct RemoteStore {
    node: Node,
    service: RegistryServiceRef,
}

impl RemoteStore {
    /// Connects `node` to the registry served by the node listening at `addr`.
    ///
    /// Fails with [`RegistryError::Call`] if that node cannot be reached (or is not
    /// of this cluster), or serves no registry.
    pub async fn connect(node: &Node, addr: &str) -> Result<RemoteStore, RegistryError> {
        let peer = node.connect(addr).await?;
        let service: RegistryServiceRef = node.reference(peer, REGISTRY_OBJECT)?;
        // One round trip now, so a node that serves no registry is an error here
        // rather than at the first bind.
        service.get(String::new()).await??;
        Ok(RemoteStore {
            node: node.clone(),
            service,
        })
    }

    /// The registry node's object, for calls the store does not cover.
    pub fn service(&self) -> &RegistryServiceRef {
        &self.service
    }

    /// Refuses to act for another node than this one (see [`RemoteStore`]).
    fn for_this_node(&self, owner: NodeId, operation: &str) -> Result<(), RegistryError> {
        if owner == self.node.id() {
            return Ok(());
        }
        Err(RegistryError::Unauthorized {
            caller: owner.to_string(),
            operation: format!(
                "{operation} a lease through node {}'s registry connection",
                self.node.id()
            ),
        })
    }
}

/// Forwards a registry node's changes into a local [`Changes`] stream.
struct Forward {
    tx: mpsc::Sender<Result<Change, RegistryError>>,
    ctx: Option<Context>,
}

impl Actor for Forward {
    async fn on_start(&mut self, ctx: &Context) {
        self.ctx = Some(ctx.clone());
    }
}

impl WatchSink for Forward {
    async fn change(&mut self, change: Result<Change, RegistryError>) {
        if self.tx.send(change).await.is_err() {
            // The watch was dropped: stop, and the registry's next change to us fails.
            if let Some(ctx) = &self.ctx {
                ctx.stop();
            }
        }
    }
}

impl Store for RemoteStore {
    fn grant(&self, ttl: Duration, owner: NodeId) -> BoxFuture<'_, Result<LeaseId, RegistryError>> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Box::pin(async move {
            self.for_this_node(owner, "take")?;
            self.service.grant(ttl_ms).await?
        })
    }

    fn keep_alive(
        &self,
        lease: LeaseId,
        owner: NodeId,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            self.for_this_node(owner, "renew")?;
            self.service.keep_alive(lease).await?
        })
    }

    fn revoke(&self, lease: LeaseId, owner: NodeId) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            self.for_this_node(owner, "end")?;
            self.service.revoke(lease).await?
        })
    }

    fn create(&self, record: Record, lease: LeaseId) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move { self.service.create(record, lease).await? })
    }

    fn put(
        &self,
        record: Record,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Option<Record>, RegistryError>> {
        Box::pin(async move { self.service.put(record, lease).await? })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        only: Option<ObjectId>,
    ) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        Box::pin(async move { self.service.delete(key.to_owned(), only).await? })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        Box::pin(async move { self.service.get(key.to_owned()).await? })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Record>, RegistryError>> {
        Box::pin(async move { self.service.list(prefix.to_owned()).await? })
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Changes, RegistryError>> {
        Box::pin(async move {
            let (tx, changes) = Changes::channel();
            let sink: WatchSinkRef = self.node.spawn(Forward {
                tx: tx.clone(),
                ctx: None,
            });
            self.service
                .watch(prefix.to_owned(), sink.clone())
                .await??;
            // Ends the sink when the watch is dropped, and the watch when the
            // registry node is lost.
            let (node, registry_down) = (self.node.clone(), self.node.monitor(&self.service));
            tokio::spawn(async move {
                tokio::select! {
                    _ = tx.closed() => {}
                    reason = registry_down => {
                        let _ = tx.send(Err(RegistryError::WatchLost {
                            reason: format!("the registry node is unreachable ({reason})"),
                        })).await;
                    }
                }
                node.stop(&sink);
            });
            Ok(changes)
        })
    }
}
