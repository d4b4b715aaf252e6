//! The route of a proxy to an object on another node: who the node is, where to
//! dial it, the connection once there is one, and the lease the proxy holds.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::id::NodeId;

use serde::Serialize;

use super::connection::{CallTags, Connection, Due};
use super::host::Host;
use super::marshal::{encode_args, is_plain, Answer, Args, Encoded, MarshalCx, Moved};
use super::protocol::OutCall;
use super::wire_ref::WireRef;
use crate::error::{CallError, NodeLabel};
use crate::local::stop::StopReason;
use crate::method::Method;
use crate::wire::ObjectId;

/// A proxy's way to an object on another node: who the node is, where to dial it,
/// and the connection to it once there is one.
pub(crate) struct RemoteRoute {
    node: Weak<Host>,
    pub(crate) peer: NodeId,
    incarnation: u64,
    addr: Option<String>,
    conn: parking_lot::Mutex<Option<Arc<Connection>>>,
    pub(crate) target: ObjectId,
    pub(crate) interface: u64,
    /// Whether calls carry their deadline (the node's setting).
    pub(crate) propagate: bool,
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
    pub(crate) fn new(node: Weak<Host>, wire: &WireRef, conn: Option<Arc<Connection>>) -> Self {
        // A proxy holds a lease on its object (see `leases`).
        let host = node.upgrade();
        if let Some(node) = &host {
            node.held_leases()
                .acquire(wire.node, wire.addr.as_deref(), wire.object);
        }
        let propagate = host.is_none_or(|host| host.propagates_deadlines());
        RemoteRoute {
            node,
            peer: wire.node,
            incarnation: wire.incarnation,
            addr: wire.addr.clone(),
            conn: parking_lot::Mutex::new(conn),
            target: wire.object,
            interface: wire.interface,
            propagate,
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
        match self.conn_now() {
            Some(conn) => Ok(conn),
            // Boxed: a dial is rare, and every call's future would otherwise
            // carry its (large) state.
            None => Box::pin(self.dial()).await,
        }
    }

    /// [`RemoteRoute::conn`] without a live connection: dials the object's node.
    async fn dial(&self) -> Result<Arc<Connection>, CallError> {
        let down = |may_have_executed| CallError::NodeDown {
            node: self.peer,
            label: self.label(),
            may_have_executed,
        };
        // Dialed before and lost: the node is down, not merely unknown.
        // Bound first: the lock must not be held into `down` (which reads the
        // label through the same lock).
        let lost = self.conn.lock().clone();
        if let Some(lost) = lost {
            if lost.is_closed() && self.addr.is_none() {
                return Err(down(false));
            }
        }
        let (Some(addr), Some(node)) = (&self.addr, self.node.upgrade()) else {
            return Err(CallError::ConnectFailed {
                node: Some(self.peer),
                label: self.label(),
                reason: "no connection to that node, and no address to dial it at".into(),
            });
        };
        let restarted = || CallError::NodeRestarted {
            node: self.peer,
            label: self.label(),
            may_have_executed: false,
        };
        let reached = node.connect(addr).await.map_err(|err| match err {
            CallError::ConnectFailed { label, reason, .. } => CallError::ConnectFailed {
                node: Some(self.peer),
                label: label.or(&self.label()),
                reason,
            },
            other => other,
        })?;
        if reached != self.peer {
            return Err(restarted());
        }
        self.conn_now().ok_or_else(restarted)
    }

    /// The object's node as errors name it: its name from the connection this
    /// route last had (or the node's current one), and its address.
    pub(crate) fn label(&self) -> NodeLabel {
        let known = self.conn.lock().as_ref().map(|conn| conn.peer.label());
        let known = known.or_else(|| {
            let host = self.node.upgrade()?;
            host.peer(self.peer).ok().map(|conn| conn.peer.label())
        });
        let addr = NodeLabel::new(None, self.addr.as_deref());
        match known {
            Some(known) => known.or(&addr),
            None => addr,
        }
    }

    /// The node this route belongs to, while it runs (and holds its lease).
    pub(crate) fn host(&self) -> Option<Arc<Host>> {
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
        let lost = self.conn.lock().as_ref().is_some_and(|c| c.is_closed());
        lost && self.conn_now().is_none()
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

    /// Makes `args` ready to go over the connection of `cx` (None: not connected
    /// yet): between nodes of one process a value without references moves as it
    /// is; anything else is encoded, its references exported or imported for the
    /// peer.
    pub(crate) fn prepare<T: Method + Serialize>(
        cx: &MarshalCx,
        args: T,
    ) -> Result<Payload, CallError> {
        if cx.conn.as_ref().is_some_and(|c| c.carries_values()) && is_plain(&args) {
            return Ok(Payload::Value(Moved::new(args)));
        }
        cx.enter(|| encode_args(&args)).map(Payload::Bytes)
    }

    /// Sends a call of `method` to this route's object over `conn` and awaits
    /// its answer until `due.deadline` (None: none; `due.timeout` is what a
    /// `Timeout` reports): the path of asks, receipts and exactly-once attempts. The call
    /// carries its remaining budget if the node propagates deadlines.
    /// Not an `async fn`: the connection's future is the call's, held once.
    pub(crate) fn ask<'a>(
        &self,
        conn: &'a Connection,
        method: u64,
        args: Args<'a>,
        tags: CallTags,
        due: Due,
    ) -> impl std::future::Future<Output = Result<Answer, CallError>> + Send + 'a {
        let mut call = self.out_call(method, args, tags);
        call.budget_until = due.deadline.filter(|_| self.propagate);
        conn.ask(call, due)
    }

    /// Sends a one-way call of `method` over `conn` on `lane`, whose credit the
    /// caller reserved ([`Connection::try_reserve`], [`Connection::reserve`]).
    pub(crate) fn tell(
        &self,
        conn: &Connection,
        lane: u16,
        method: u64,
        payload: Payload,
    ) -> Result<(), CallError> {
        payload.with(|args| conn.tell(lane, self.out_call(method, args, CallTags::default())))
    }

    fn out_call<'a>(&self, method: u64, args: Args<'a>, tags: CallTags) -> OutCall<'a> {
        OutCall {
            target: self.target,
            interface: self.interface,
            method,
            args,
            tags,
            budget_until: None,
        }
    }

    /// The context references inside this call's arguments and reply marshal in.
    pub(crate) fn cx(&self, conn: Option<Arc<Connection>>) -> Result<MarshalCx, CallError> {
        let node = self.node.upgrade().ok_or_else(|| CallError::NodeDown {
            node: self.peer,
            label: self.label(),
            may_have_executed: false,
        })?;
        Ok(MarshalCx { host: node, conn })
    }
}

/// A call's arguments made ready for a connection ([`RemoteRoute::prepare`]).
pub(crate) enum Payload {
    /// Encoded (the same bytes serve every attempt of an exactly-once call).
    Bytes(Encoded),
    /// Moved as it is (one process, no references inside).
    Value(Moved),
}

impl Payload {
    /// Runs `f` on the arguments (the bytes are borrowed only for the call).
    pub(crate) fn with<R>(self, f: impl FnOnce(Args<'_>) -> R) -> R {
        match self {
            Payload::Bytes(bytes) => f(Args::Encoded(&bytes)),
            Payload::Value(value) => f(Args::Moved(value)),
        }
    }
}

/// How long a monitor whose node's connection was lost waits for an answer at the
/// node's address, to tell a restarted node (another node answers there) from one
/// that is down.
const RESTART_PROBE: Duration = Duration::from_secs(1);

/// The stop reason of the actor behind `remote`, as its node reports it; or why
/// its node can no longer report (down, restarted).
pub(crate) async fn stopped(remote: Arc<RemoteRoute>) -> StopReason {
    let conn = match remote.conn().await {
        Ok(conn) => conn,
        Err(CallError::NodeRestarted { node, .. }) => return StopReason::NodeRestarted { node },
        Err(_) => return StopReason::NodeDown { node: remote.peer },
    };
    if let Ok(watch) = conn.monitor(remote.target) {
        if let Some(reason) = watch.stopped().await {
            return reason;
        }
    }
    match remote.host() {
        Some(host) => lost(&host, remote.peer, remote.addr()).await,
        None => StopReason::NodeDown { node: remote.peer },
    }
}

/// Why the connection to `peer` is gone: another node answering at its address
/// means it restarted; otherwise it is down.
pub(crate) async fn lost(host: &Host, peer: NodeId, addr: Option<&str>) -> StopReason {
    if let Some(addr) = addr {
        if let Ok(Ok(reached)) = tokio::time::timeout(RESTART_PROBE, host.connect(addr)).await {
            if reached != peer {
                return StopReason::NodeRestarted { node: peer };
            }
        }
    }
    StopReason::NodeDown { node: peer }
}
