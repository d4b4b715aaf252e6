//! Failure seen across nodes: monitors of actors on other nodes (with the reason
//! their node reports), monitors of nodes, and Erlang's links.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::id::NodeId;

use crate::interface::Interface;
use crate::local::stop::StopReason;
use crate::node::Node;
use crate::reference::Route;
use crate::remote::route::{self, RemoteRoute};

type Stopped = Pin<Box<dyn Future<Output = StopReason> + Send>>;

/// Stops the actor behind a reference without keeping it alive.
enum Stopper {
    Local(Box<dyn FnOnce(StopReason) + Send>),
    Remote(Arc<RemoteRoute>),
}

impl Stopper {
    fn of<R: Interface>(r: &R) -> Stopper {
        match r.core().route() {
            Route::Local(local) => {
                let cell = local.cell.clone();
                let host = Arc::downgrade(&local.slot);
                Stopper::Local(Box::new(move |reason| {
                    cell.request_stop(reason);
                    if let Some(host) = host.upgrade() {
                        host.schedule();
                    }
                }))
            }
            Route::Remote(remote) => Stopper::Remote(remote.clone()),
        }
    }

    async fn stop(self, reason: StopReason) {
        match self {
            Stopper::Local(stop) => stop(reason),
            Stopper::Remote(remote) => remote.exit(reason).await,
        }
    }
}

/// A name for the actor behind `r` in a [`StopReason::Linked`].
fn describe<R: Interface>(node: &Node, r: &R) -> String {
    match r.core().route() {
        Route::Local(local) => format!("{}/{}", node.id(), local.cell.id),
        Route::Remote(remote) => format!("{}/{}", remote.peer, remote.target),
    }
}

impl Node {
    /// Resolves when the connection to node `peer` is lost: with
    /// [`StopReason::NodeDown`], or [`StopReason::NodeRestarted`] if another node
    /// answers at its address by then. At once (`NodeDown`) if this node has no
    /// connection to it.
    pub fn monitor_node(&self, peer: NodeId) -> impl Future<Output = StopReason> + Send + 'static {
        let conn = self.host().peer(peer).ok();
        let host = Arc::downgrade(self.host());
        async move {
            let Some(conn) = conn else {
                return StopReason::NodeDown { node: peer };
            };
            conn.closed().await;
            let addr = conn.peer.listen.clone();
            drop(conn);
            match host.upgrade() {
                Some(host) => route::lost(&host, peer, addr.as_deref()).await,
                None => StopReason::NodeDown { node: peer },
            }
        }
    }

    /// Links the actors behind `a` and `b` (Erlang's `link`): when either stops
    /// abnormally (a panic, its node down or restarted, a link of its own), the
    /// other is stopped with [`StopReason::Linked`] naming it and its reason. An
    /// orderly stop (`Normal`, `Shutdown`) does not propagate.
    ///
    /// Either may live on another node; a link to an actor on another node is kept
    /// by this node (it monitors one and stops the other), so it lasts while this
    /// node runs. To be told instead of stopped, [`monitor`](Node::monitor) the other.
    ///
    /// ```
    /// use remora::{Actor, Node, StopReason};
    ///
    /// #[remora::remote]
    /// pub trait Worker {
    ///     async fn work(&mut self, fail: bool) -> u64;
    /// }
    /// struct W;
    /// impl Actor for W {}
    /// impl Worker for W {
    ///     async fn work(&mut self, fail: bool) -> u64 {
    ///         if fail { panic!("bad input") }
    ///         1
    ///     }
    /// }
    ///
    /// # #[tokio::main] async fn main() {
    /// let node = Node::builder().build().await.unwrap();
    /// let (a, b): (WorkerRef, WorkerRef) = (node.spawn(W), node.spawn(W));
    /// node.link(&a, &b);
    /// assert!(a.work(true).await.is_err());
    /// match node.monitor(&b).await {
    ///     StopReason::Linked { reason, .. } => {
    ///         assert!(matches!(*reason, StopReason::Panicked { .. }))
    ///     }
    ///     other => panic!("{other}"),
    /// }
    /// # }
    /// ```
    pub fn link<A: Interface, B: Interface>(&self, a: &A, b: &B) {
        self.stop_when_failed(a, b);
        self.stop_when_failed(b, a);
    }

    /// When `watched` stops abnormally, stops `target` with `Linked`.
    fn stop_when_failed<A: Interface, B: Interface>(&self, watched: &A, target: &B) {
        let stopped: Stopped = Box::pin(self.monitor(watched));
        let peer = describe(self, watched);
        let target = Stopper::of(target);
        self.spawn_task(async move {
            let reason = stopped.await;
            if !reason.is_normal() {
                let reason = Box::new(reason);
                target.stop(StopReason::Linked { peer, reason }).await;
            }
        });
    }
}
