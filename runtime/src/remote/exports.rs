//! What this node exports (objects peers may call), and references on the wire.
//!
//! A reference travels as a [`WireRef`]: (node, incarnation, object, interface).
//! Sending a reference to a local actor exports it under a random 128-bit id, the
//! capability to call it; the receiving node turns a `WireRef` back into a proxy:
//! local if the object is its own, over the same connection if it lives on the
//! sender, over another connection if it lives on a third node.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::connection::Connection;
use crate::error::CallError;
use crate::local::cell::Withdraw;
use crate::local::mailbox::TrySendError;
use crate::local::route::LocalRoute;
use crate::local::stop::StopReason;
use crate::node::{Node, WeakNode};
use crate::remote::marshal::{Args, Replier, Unmarshal};
use crate::wire::codec::Limits;
use crate::wire::ObjectId;

/// A reference as plain data: what travels inside a call, and what a naming
/// service stores. [`Node::wire_ref`] makes one (exporting a local actor),
/// [`Node::resolve`] turns one back into a typed proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireRef {
    /// The node the object lives on.
    pub node: Uuid,
    /// That node's run: a restarted node refuses references to its previous run.
    pub incarnation: u64,
    /// The object's id on its node (the capability to call it).
    pub object: ObjectId,
    /// The object's interface id (`stable_id` of the interface name).
    pub interface: u64,
    /// Where the object's node accepts connections, if it listens.
    pub addr: Option<String>,
}

/// A delivery that has to wait for room in the actor's mailbox.
pub(crate) type Waiting = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An exported object, as a connection sees it: any actor, whatever its interface.
pub(crate) trait Exported: Send + Sync {
    fn interface_id(&self) -> u64;
    fn interface_name(&self) -> &'static str;
    /// Takes a call's arguments (encoded or moved) and hands the call to the actor:
    /// run at once if the actor is idle, queued otherwise. A full mailbox gives back
    /// a future that waits for room (the connection awaits it: a slow actor slows
    /// its callers).
    fn deliver(
        self: Arc<Self>,
        method: u64,
        args: Args<'_>,
        limits: &Limits,
        replier: Replier,
    ) -> Result<Option<Waiting>, CallError>;
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Resolves with the actor's stop reason (holding its cell, not the actor).
    fn stopped(&self) -> Pin<Box<dyn Future<Output = StopReason> + Send>>;
    /// Asks the actor to stop for `reason`.
    fn stop(&self, reason: StopReason);
    /// Whether the actor has stopped.
    fn is_finished(&self) -> bool;
    /// Nothing refers to the actor any more: has it run `on_unreferenced`, which
    /// calls `withdraw` if it chooses to stop.
    fn unreferenced(&self, withdraw: Withdraw);
    /// Whether a call of `method` in `chain` comes back to a handler waiting for it
    /// and cannot run beside it: a cycle.
    fn refuses_cycle(&self, chain: u64, method: u64) -> bool;
}

impl<M: Unmarshal> Exported for LocalRoute<M> {
    fn interface_id(&self) -> u64 {
        M::INTERFACE_ID
    }

    fn interface_name(&self) -> &'static str {
        M::INTERFACE
    }

    fn deliver(
        self: Arc<Self>,
        method: u64,
        args: Args<'_>,
        limits: &Limits,
        replier: Replier,
    ) -> Result<Option<Waiting>, CallError> {
        let msg = M::unmarshal(method, args, limits, replier)?;
        self.take(msg)
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn stopped(&self) -> Pin<Box<dyn Future<Output = StopReason> + Send>> {
        Box::pin(self.cell.monitor())
    }

    fn stop(&self, reason: StopReason) {
        self.cell.request_stop(reason);
        self.host.schedule();
    }

    fn is_finished(&self) -> bool {
        self.cell.is_finished()
    }

    fn unreferenced(&self, withdraw: Withdraw) {
        self.cell.request_unreferenced(withdraw);
        self.host.schedule();
    }

    fn refuses_cycle(&self, chain: u64, method: u64) -> bool {
        LocalRoute::refuses_cycle(self, chain, M::reentrant(method))
    }
}

impl<M: Unmarshal> LocalRoute<M> {
    /// Hands an incoming message to the actor: run at once if it is idle, queued
    /// otherwise; a full mailbox gives back a future that waits for room.
    fn take(self: Arc<Self>, msg: M) -> Result<Option<Waiting>, CallError> {
        match self.offer_now(msg) {
            Ok(()) => Ok(None),
            // Dropping the message answers its caller through the replier.
            Err(TrySendError::Refused(err)) => Err(err),
            Err(TrySendError::Full(env)) => Ok(Some(Box::pin(async move {
                let _ = self.push_waiting(env).await;
            }))),
        }
    }
}

/// A proxy's way to an object on another node: who the node is, where to dial it,
/// and the connection to it once there is one.
pub(crate) struct RemoteRoute {
    node: WeakNode,
    pub(crate) peer: Uuid,
    incarnation: u64,
    addr: Option<String>,
    conn: parking_lot::Mutex<Option<Arc<Connection>>>,
    pub(crate) target: ObjectId,
    pub(crate) interface: u64,
}

impl Drop for RemoteRoute {
    /// The last proxy for the object (on this route) is gone: release its lease.
    fn drop(&mut self) {
        if let Some(node) = self.node.upgrade() {
            node.held_leases().release(self.peer, self.target);
        }
    }
}

impl RemoteRoute {
    pub(crate) fn new(node: WeakNode, wire: &WireRef, conn: Option<Arc<Connection>>) -> Self {
        // A proxy holds a lease on its object (see `leases`).
        if let Some(node) = node.upgrade() {
            node.held_leases()
                .acquire(wire.node, wire.addr.as_deref(), wire.object);
        }
        RemoteRoute {
            node,
            peer: wire.node,
            incarnation: wire.incarnation,
            addr: wire.addr.clone(),
            conn: parking_lot::Mutex::new(conn),
            target: wire.object,
            interface: wire.interface,
        }
    }

    /// The open connection to the object's node, if there is one now: the one this
    /// route last used, or the node's current connection to that same incarnation
    /// (after a duplicate was retired, or another part of the node dialed it).
    pub(crate) fn conn_now(&self) -> Option<Arc<Connection>> {
        let mut conn = self.conn.lock();
        if conn.as_ref().is_some_and(|c| !c.is_closed()) {
            return conn.clone();
        }
        let fresh = self
            .node
            .upgrade()
            .and_then(|node| node.peer(self.peer).ok())
            .filter(|fresh| fresh.peer.incarnation == self.incarnation)?;
        *conn = Some(fresh.clone());
        Some(fresh)
    }

    /// The connection to the object's node, dialing its address if there is none.
    pub(crate) async fn conn(&self) -> Result<Arc<Connection>, CallError> {
        if let Some(conn) = self.conn_now() {
            return Ok(conn);
        }
        let down = |may_have_executed| CallError::NodeDown {
            node: self.peer.to_string(),
            may_have_executed,
        };
        // Dialed before and lost: the node is down, not merely unknown.
        if let Some(lost) = self.conn.lock().clone() {
            if lost.is_closed() && self.addr.is_none() {
                return Err(down(false));
            }
        }
        let (Some(addr), Some(node)) = (&self.addr, self.node.upgrade()) else {
            return Err(CallError::ConnectFailed {
                addr: self.peer.to_string(),
                reason: "no connection to that node, and no address to dial it at".into(),
            });
        };
        let reached = node.connect(addr).await?;
        if reached != self.peer {
            return Err(CallError::NodeRestarted {
                node: self.peer.to_string(),
            });
        }
        self.conn_now().ok_or(CallError::NodeRestarted {
            node: self.peer.to_string(),
        })
    }

    /// The node this route belongs to, while it runs (and holds its lease).
    pub(crate) fn node(&self) -> Option<Node> {
        self.node.upgrade()
    }

    /// Where the object's node accepts connections, if known.
    pub(crate) fn addr(&self) -> Option<&str> {
        self.addr.as_deref()
    }

    /// Asks the object's node to stop it (dialing the node if need be); logged if
    /// that node cannot be reached (it is down: so is the actor, as far as anyone
    /// here can tell).
    pub(crate) async fn exit(&self, reason: StopReason) {
        let sent = match self.conn().await {
            Ok(conn) => conn.exit(self.target, reason),
            Err(err) => Err(err),
        };
        if let Err(err) = sent {
            tracing::debug!(node = %self.peer, object = %self.target, %err, "could not ask a node to stop its actor");
        }
    }

    /// Whether the connection this route used is lost (with no replacement).
    pub(crate) fn is_down(&self) -> bool {
        self.conn.lock().as_ref().is_some_and(|c| c.is_closed()) && self.conn_now().is_none()
    }

    pub(crate) fn wire(&self) -> WireRef {
        WireRef {
            node: self.peer,
            incarnation: self.incarnation,
            object: self.target,
            interface: self.interface,
            addr: self.addr.clone(),
        }
    }

    /// The context references inside this call's arguments and reply marshal in.
    pub(crate) fn cx(&self, conn: Option<Arc<Connection>>) -> Result<MarshalCx, CallError> {
        let node = self.node.upgrade().ok_or_else(|| CallError::NodeDown {
            node: self.peer.to_string(),
            may_have_executed: false,
        })?;
        Ok(MarshalCx { node, conn })
    }
}

/// The node and connection a value is being marshalled for: references inside it
/// are exported by, or imported into, this node.
#[derive(Clone)]
pub(crate) struct MarshalCx {
    pub(crate) node: Node,
    /// The connection the value travels on (unknown while arguments are encoded
    /// before a connection is chosen).
    pub(crate) conn: Option<Arc<Connection>>,
}

thread_local! {
    static CURRENT: RefCell<Option<MarshalCx>> = const { RefCell::new(None) };
}

impl MarshalCx {
    /// Runs `f` with this context current (for the serde impls of references).
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.replace(Some(self.clone())));
        struct Restore(Option<MarshalCx>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| *c.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(previous);
        f()
    }

    pub(crate) fn current() -> Option<MarshalCx> {
        CURRENT.with(|c| c.borrow().clone())
    }
}
