//! A [`Store`] on another node: the client side of a registry node.

use std::sync::Arc;
use std::time::Duration;

use remora::{Actor, CallError, Context, Node};
use remora::{NodeId, ObjectId};
use tokio::sync::mpsc;

use crate::error::RegistryError;
use crate::protocol::{RegistryServiceRef, WatchSink, WatchSinkRef, REGISTRY_OBJECT};
use crate::store::{BoxFuture, Change, Changes, LeaseId, Record, Store};

/// The store of a registry served by another node ([`RegistryServer`](crate::RegistryServer)),
/// reached over the node's connection to it. [`Registry::connect`](crate::Registry::connect)
/// makes one; use it directly only to build a [`Registry`](crate::Registry) with options.
///
/// It knows its registry by address, not by node: when the registry node is
/// gone (down, restarted, or its service stopped), the next call that finds out
/// dials again: the same address (a restarted registry), or the next one given
/// (another registry process sharing the store), in turn. The call that found
/// out fails; the handle's users (lease renewal, watches, groups) try again and
/// reach the registry that answers.
///
/// It speaks for its own node only: the registry node takes a lease's owner from
/// the connection the call came over, so a lease `owner` other than this node is
/// refused here ([`RegistryError::Unauthorized`]) rather than granted to the wrong
/// node.
#[derive(Clone)]
pub struct RemoteStore {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    /// The registry processes' addresses, in the order to try them.
    addrs: Vec<String>,
    /// The registry in use: which address, how many times it changed, its object.
    current: parking_lot::Mutex<Current>,
    /// One reconnection at a time.
    reconnecting: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Current {
    at: usize,
    epoch: u64,
    service: RegistryServiceRef,
}

impl RemoteStore {
    /// Connects `node` to the registry served by the node listening at `addrs`:
    /// one address, or several separated by commas (registry processes sharing
    /// one store, e.g. one etcd), tried in turn.
    ///
    /// Fails with [`RegistryError::Call`] if no such node can be reached (or is not
    /// of this cluster), or none serves a registry.
    pub async fn connect(node: &Node, addrs: &str) -> Result<RemoteStore, RegistryError> {
        let addrs: Vec<String> = addrs
            .split(',')
            .map(str::trim)
            .filter(|addr| !addr.is_empty())
            .map(str::to_owned)
            .collect();
        let mut last = RegistryError::Call(CallError::ConnectFailed {
            node: None,
            label: remora::NodeLabel::default(),
            reason: "no registry address given".into(),
        });
        for (at, addr) in addrs.iter().enumerate() {
            match reach(node, addr).await {
                Ok(service) => {
                    return Ok(RemoteStore {
                        inner: Arc::new(Inner {
                            node: node.clone(),
                            current: parking_lot::Mutex::new(Current {
                                at,
                                epoch: 0,
                                service,
                            }),
                            addrs,
                            reconnecting: tokio::sync::Mutex::new(()),
                        }),
                    })
                }
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// The registry node's object in use now, for calls the store does not cover.
    pub fn service(&self) -> RegistryServiceRef {
        self.inner.current.lock().service.clone()
    }

    /// The address of the registry in use now.
    pub fn addr(&self) -> String {
        let at = self.inner.current.lock().at;
        self.inner.addrs[at].clone()
    }

    /// Runs `op` on the registry in use; if it finds the registry gone, the next
    /// call goes to the registry that answers at one of the addresses.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, RegistryError>
    where
        F: FnOnce(RegistryServiceRef) -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, RegistryError>, CallError>>,
    {
        let current = self.inner.current.lock().clone();
        let outcome = op(current.service).await;
        if let Err(err) = &outcome {
            if registry_gone(err) {
                tracing::info!(addr = %self.inner.addrs[current.at], %err, "registry unreachable; dialing again");
                self.reconnect(current.epoch).await;
            }
        }
        outcome?
    }

    /// [`RemoteStore::call`] for an operation that may safely run twice (a read, a
    /// renewal): when the registry was gone and another answers now, it runs
    /// once more there.
    async fn call_again<T, F, Fut>(&self, op: F) -> Result<T, RegistryError>
    where
        F: Fn(RegistryServiceRef) -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, RegistryError>, CallError>>,
    {
        let epoch = self.inner.current.lock().epoch;
        match self.call(&op).await {
            Err(RegistryError::Call(err))
                if registry_gone(&err) && self.inner.current.lock().epoch != epoch =>
            {
                self.call(&op).await
            }
            outcome => outcome,
        }
    }

    /// Dials the registry again, from the address after the one that failed (the
    /// same one first if it is the only one), unless another call already has
    /// since `epoch`. Each address is dialed once; if none answers, the handle
    /// keeps the old registry and the next call that fails tries again.
    async fn reconnect(&self, epoch: u64) {
        let _one = self.inner.reconnecting.lock().await;
        let at = {
            let current = self.inner.current.lock();
            if current.epoch != epoch {
                return;
            }
            current.at
        };
        let n = self.inner.addrs.len();
        // Another process first: the failed one may still be restarting.
        for step in 1..=n {
            let next = (at + step) % n;
            let addr = &self.inner.addrs[next];
            match reach(&self.inner.node, addr).await {
                Ok(service) => {
                    tracing::info!(%addr, "registry handle reconnected");
                    *self.inner.current.lock() = Current {
                        at: next,
                        epoch: epoch + 1,
                        service,
                    };
                    return;
                }
                Err(err) => tracing::debug!(%addr, %err, "no registry answers"),
            }
        }
    }

    /// Refuses to act for another node than this one (see [`RemoteStore`]).
    fn for_this_node(&self, owner: NodeId, operation: &str) -> Result<(), RegistryError> {
        if owner == self.inner.node.id() {
            return Ok(());
        }
        Err(RegistryError::Unauthorized {
            caller: owner.to_string(),
            operation: format!(
                "{operation} a lease through node {}'s registry connection",
                self.inner.node.id()
            ),
        })
    }
}

/// The registry object of the node at `addr`, after one round trip (so a node
/// that serves no registry is an error here rather than at the first bind).
async fn reach(node: &Node, addr: &str) -> Result<RegistryServiceRef, RegistryError> {
    let peer = node.connect(addr).await?;
    let service: RegistryServiceRef = node.reference(peer, REGISTRY_OBJECT)?;
    service.get(String::new()).await??;
    Ok(service)
}

/// Whether a call failed because the registry node (or its service) is gone or
/// not answering, rather than for the registry's own reasons.
fn registry_gone(err: &CallError) -> bool {
    matches!(
        err,
        CallError::NodeDown { .. }
            | CallError::NodeRestarted { .. }
            | CallError::ConnectFailed { .. }
            | CallError::ActorStopped
            | CallError::NoSuchObject
            | CallError::Timeout { .. }
    )
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
            self.call(|s| async move { s.grant(ttl_ms).await }).await
        })
    }

    fn keep_alive(
        &self,
        lease: LeaseId,
        owner: NodeId,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            self.for_this_node(owner, "renew")?;
            self.call_again(|s| async move { s.keep_alive(lease).await })
                .await
        })
    }

    fn revoke(&self, lease: LeaseId, owner: NodeId) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            self.for_this_node(owner, "end")?;
            self.call(|s| async move { s.revoke(lease).await }).await
        })
    }

    fn create(&self, record: Record, lease: LeaseId) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            self.call(|s| async move { s.create(record, lease).await })
                .await
        })
    }

    fn put(
        &self,
        record: Record,
        lease: LeaseId,
    ) -> BoxFuture<'_, Result<Option<Record>, RegistryError>> {
        Box::pin(async move {
            self.call(|s| async move { s.put(record, lease).await })
                .await
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        only: Option<ObjectId>,
    ) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        let key = key.to_owned();
        Box::pin(async move {
            self.call(|s| async move { s.delete(key, only).await })
                .await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Record>, RegistryError>> {
        let key = key.to_owned();
        Box::pin(async move {
            self.call_again(|s| {
                let key = key.clone();
                async move { s.get(key).await }
            })
            .await
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Record>, RegistryError>> {
        let prefix = prefix.to_owned();
        Box::pin(async move {
            self.call_again(|s| {
                let prefix = prefix.clone();
                async move { s.list(prefix).await }
            })
            .await
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Changes, RegistryError>> {
        Box::pin(async move {
            let (tx, changes) = Changes::channel();
            let node = &self.inner.node;
            let sink: WatchSinkRef = node.spawn(Forward {
                tx: tx.clone(),
                ctx: None,
            });
            let (prefix, watching) = (prefix.to_owned(), sink.clone());
            let service = self.service();
            if let Err(err) = self
                .call(|s| async move { s.watch(prefix, watching).await })
                .await
            {
                node.stop(&sink);
                return Err(err);
            }
            // Ends the sink when the watch is dropped, and the watch when the
            // registry node is lost.
            let (node, registry_down) = (node.clone(), node.monitor(&service));
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

    fn unresponsive(&self) {
        let (store, epoch) = (self.clone(), self.inner.current.lock().epoch);
        tracing::info!(addr = %self.addr(), "registry not answering; dialing again");
        tokio::spawn(async move { store.reconnect(epoch).await });
    }
}
