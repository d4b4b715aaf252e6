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
use std::task::{Context, Waker};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::connection::Connection;
use crate::error::CallError;
use crate::mailbox::{Envelope, TrySendError};
use crate::marshal::{Replier, Unmarshal};
use crate::node::Node;
use crate::reference::LocalRoute;
use crate::wire::codec::Limits;
use crate::wire::ObjectId;

/// A reference as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireRef {
    pub(crate) node: Uuid,
    pub(crate) incarnation: u64,
    pub(crate) object: ObjectId,
    pub(crate) interface: u64,
}

/// A delivery that has to wait for room in the actor's mailbox.
pub(crate) type Waiting = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An exported object, as a connection sees it: any actor, whatever its interface.
pub(crate) trait Exported: Send + Sync {
    fn interface_id(&self) -> u64;
    fn interface_name(&self) -> &'static str;
    /// Decodes a call and hands it to the actor: run at once if the actor is idle,
    /// queued otherwise. A full mailbox gives back a future that waits for room
    /// (the connection awaits it: a slow actor slows its callers).
    fn deliver(
        self: Arc<Self>,
        method: u64,
        args: &[u8],
        limits: &Limits,
        replier: Replier,
    ) -> Result<Option<Waiting>, CallError>;
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
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
        args: &[u8],
        limits: &Limits,
        replier: Replier,
    ) -> Result<Option<Waiting>, CallError> {
        let msg = M::unmarshal(method, args, limits, replier)?;
        // A handler that has to wait is handed to the actor's task, which polls it
        // again with its own waker: a no-op waker is enough here.
        let mut cx = Context::from_waker(Waker::noop());
        let Err(msg) = self.try_inline(msg, &mut cx) else {
            return Ok(None);
        };
        match self.push(Envelope { msg, taken: None }) {
            Ok(()) => Ok(None),
            // Dropping the message answers its caller through the replier.
            Err(TrySendError::Refused(err)) => Err(err),
            Err(TrySendError::Full(env)) => Ok(Some(Box::pin(async move {
                let _ = self.push_waiting(env).await;
            }))),
        }
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// A proxy's way to an object on another node.
pub(crate) struct RemoteRoute {
    conn: parking_lot::Mutex<Arc<Connection>>,
    pub(crate) target: ObjectId,
    pub(crate) interface: u64,
}

impl RemoteRoute {
    pub(crate) fn new(conn: Arc<Connection>, target: ObjectId, interface: u64) -> Self {
        RemoteRoute {
            conn: parking_lot::Mutex::new(conn),
            target,
            interface,
        }
    }

    /// The connection to the object's node: the one this route was made on, or, once
    /// that closed, the node's current connection to the same incarnation of that
    /// peer (a duplicate retired, a reconnect).
    pub(crate) fn conn(&self) -> Arc<Connection> {
        let mut conn = self.conn.lock();
        if conn.is_closed() {
            if let Some(fresh) = conn
                .node
                .upgrade()
                .and_then(|node| node.peer(conn.peer.node).ok())
                .filter(|fresh| fresh.peer.incarnation == conn.peer.incarnation)
            {
                *conn = fresh;
            }
        }
        conn.clone()
    }

    pub(crate) fn wire(&self) -> WireRef {
        let conn = self.conn();
        WireRef {
            node: conn.peer.node,
            incarnation: conn.peer.incarnation,
            object: self.target,
            interface: self.interface,
        }
    }

    /// The context references inside this call's arguments and reply marshal in.
    pub(crate) fn cx(&self) -> Result<MarshalCx, CallError> {
        let conn = self.conn();
        let node = conn.node.upgrade().ok_or_else(|| CallError::NodeDown {
            node: conn.peer.node.to_string(),
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
    pub(crate) conn: Arc<Connection>,
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
