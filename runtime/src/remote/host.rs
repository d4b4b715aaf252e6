//! The remote half of a node: everything that exists because other nodes do.
//!
//! A [`Host`] holds what this node exports (objects peers may call), the leases it
//! holds on other nodes' objects and grants on its own, its connections (one per
//! peer), its QUIC endpoint and credentials, and the replies of `#[exactly_once]`
//! calls it ran. Connections, routes, the lease task and both transports hold a
//! `Host` (weakly where they must not keep it alive), never the `Node`: the node
//! wires this half to the local one (`local/`), which knows nothing of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::authority::{ControlPolicy, Refusals, Target};
use super::connection::Connection;
use super::exports::Exported;
use super::leases::{GrantedLeases, HeldLeases};
use super::marshal::Unmarshal;
use super::once::OnceTable;
use super::quic::{self, QuicConfig};
use super::route::RemoteRoute;
use super::tls::Credentials;
use super::wire_ref::WireRef;
use crate::error::{CallError, NodeLabel};
use crate::hash::DashMap;
use crate::id::NodeId;
use crate::local::route::LocalRoute;
use crate::wire::codec::Limits;
use crate::wire::{Hello, ObjectId};

/// What a node is to other nodes: its exports, leases, peers and endpoint.
pub(crate) struct Host {
    id: NodeId,
    incarnation: u64,
    name: Option<String>,
    limits: Limits,
    exports: DashMap<ObjectId, Export>,
    /// Leases this node holds on other nodes' objects (one per proxied object).
    held: Arc<HeldLeases>,
    /// Leases other nodes hold on this node's exports.
    granted: GrantedLeases,
    /// How long a lease lasts without renewal (cluster-wide: use one value).
    lease: Duration,
    peers: DashMap<NodeId, Arc<Connection>>,
    /// The deadline of calls made through references this node creates.
    default_timeout: Duration,
    /// Whether the node was built to listen (a dialing-only node binds an endpoint
    /// too, but has no address to give out).
    listens: bool,
    /// The address given out instead of the listening one (`NodeBuilder::advertise`).
    advertise: Option<String>,
    credentials: Credentials,
    quic_config: QuicConfig,
    endpoint: tokio::sync::OnceCell<quic::Endpoint>,
    /// Replies of `#[exactly_once]` calls this node ran, for retries.
    once: OnceTable,
    /// Who may stop this node's actors from outside.
    control: ControlPolicy,
    /// What peers asked and were refused.
    refusals: Refusals,
    /// Asks from peers dropped unrun because their connection was lost.
    asks_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Calls dropped unrun because their caller gave them up, or their
    /// deadline passed while they waited.
    given_up: GivenUp,
    /// Whether calls carry their deadline to the nodes they go to.
    propagate: bool,
    runtime: tokio::runtime::Handle,
    /// Set once the node shuts down: the lease task ends, nothing is dialed.
    closed: AtomicBool,
    /// Starts a built-in service on its first call (see `Host::exported`).
    builtin: std::sync::OnceLock<Builtin>,
    me: Weak<Host>,
}

/// Starts the built-in service exported under an object id, if there is one:
/// `Some(())` once it is exported.
pub(crate) type Builtin = Box<dyn Fn(&ObjectId) -> Option<()> + Send + Sync>;

/// How a [`Host`] is configured: the parts of `NodeBuilder` that concern peers.
pub(crate) struct HostConfig {
    pub(crate) id: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) name: Option<String>,
    pub(crate) limits: Limits,
    pub(crate) lease: Duration,
    pub(crate) default_timeout: Duration,
    pub(crate) listens: bool,
    pub(crate) advertise: Option<String>,
    pub(crate) credentials: Credentials,
    pub(crate) quic_config: QuicConfig,
    pub(crate) once_retention: Duration,
    /// Certificate names allowed to stop any actor but a service.
    pub(crate) allow_control: std::collections::HashSet<String>,
    /// Whether calls carry their deadline (`NodeBuilder::propagate_deadlines`).
    pub(crate) propagate: bool,
    pub(crate) runtime: tokio::runtime::Handle,
}

/// Calls this node dropped unrun since it started, because nobody waited for
/// them any more (see `NodeStats::calls_cancelled`, `calls_expired`).
#[derive(Debug, Default)]
pub(crate) struct GivenUp {
    pub(crate) cancelled: std::sync::atomic::AtomicU64,
    pub(crate) expired: std::sync::atomic::AtomicU64,
}

/// An export: an actor other nodes may call, and whether it is kept regardless of
/// leases.
struct Export {
    route: Arc<dyn Exported>,
    pinned: bool,
    /// Exported under a chosen id: a service of the node, which no peer may stop.
    service: bool,
    /// The peer that spawned the actor here, which may stop it.
    spawned_by: Option<NodeId>,
    /// Its actor has been told it is unreferenced (and chose to stay, or has yet
    /// to answer); cleared when a reference to it is sent again.
    /// Atomic, so that sending a reference (which clears it) takes only a read lock.
    told: AtomicBool,
}

impl Host {
    /// A host with no exports, leases or peers yet; its lease task starts at once.
    pub(crate) fn start(config: HostConfig) -> Arc<Host> {
        let host = Arc::new_cyclic(|me| Host {
            id: config.id,
            incarnation: config.incarnation,
            name: config.name,
            limits: config.limits,
            exports: DashMap::default(),
            held: Default::default(),
            granted: Default::default(),
            lease: config.lease,
            peers: DashMap::default(),
            default_timeout: config.default_timeout,
            listens: config.listens,
            advertise: config.advertise,
            credentials: config.credentials,
            quic_config: config.quic_config,
            endpoint: tokio::sync::OnceCell::new(),
            once: OnceTable::new(config.once_retention),
            control: ControlPolicy::new(config.allow_control),
            refusals: Refusals::default(),
            asks_dropped: Arc::default(),
            given_up: GivenUp::default(),
            propagate: config.propagate,
            runtime: config.runtime,
            closed: AtomicBool::new(false),
            builtin: std::sync::OnceLock::new(),
            me: me.clone(),
        });
        super::leases::start(&host, &host.held, host.lease);
        host
    }

    /// This node's id.
    pub(crate) fn id(&self) -> NodeId {
        self.id
    }

    /// This run of the node.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The node's name, if it has one.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How long a peer may be silent before it is called down.
    pub(crate) fn peer_timeout(&self) -> Duration {
        self.quic_config.idle_timeout
    }

    pub(crate) fn default_timeout(&self) -> Duration {
        self.default_timeout
    }

    pub(crate) fn once_table(&self) -> &OnceTable {
        &self.once
    }

    /// Runs a task of the remote half (a reader, the lease task) on the node's runtime.
    pub(crate) fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// Whether the node has shut down.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Exports `local` under the chosen id `id`, pinned (see `Node::export_as`). An
    /// id whose actor has finished is free again: a pinned export outlives its
    /// actor, and a well-known service that restarts as a new actor takes it over.
    pub(crate) fn export_as<M: Unmarshal>(
        &self,
        local: &Arc<LocalRoute<M>>,
        id: ObjectId,
    ) -> Result<(), CallError> {
        let taken = || CallError::InterfaceMismatch {
            expected: M::INTERFACE_ID,
            found: format!("object id {id} is already exported"),
        };
        let slot = match self.exports.entry(id) {
            dashmap::mapref::entry::Entry::Occupied(held) if !held.get().route.is_finished() => {
                return Err(taken());
            }
            slot => slot,
        };
        if local.exported.set(id).is_err() {
            return Err(taken());
        }
        slot.insert(Export {
            route: local.clone() as Arc<dyn Exported>,
            pinned: true,
            service: true,
            spawned_by: None,
            told: AtomicBool::new(false),
        });
        Ok(())
    }

    /// How many objects are exported.
    pub(crate) fn export_count(&self) -> usize {
        self.exports.len()
    }

    /// The node is shutting down: the lease task ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Closes every connection (peers see `NodeDown` for what is still in flight)
    /// and the endpoint.
    pub(crate) fn close_connections(&self) {
        let peers: Vec<Arc<Connection>> = self.peers.iter().map(|p| p.value().clone()).collect();
        for peer in peers {
            peer.close();
        }
        if let Some(endpoint) = self.endpoint.get() {
            endpoint.close();
        }
    }

    /// Waits (at most `within`) until the closes of
    /// [`Host::close_connections`] have reached the peers.
    pub(crate) async fn connections_closed(&self, within: std::time::Duration) {
        if let Some(endpoint) = self.endpoint.get() {
            endpoint.closed(within).await;
        }
    }

    /// Where this node accepts connections, if it listens ([`NodeBuilder::listen`]).
    /// A node that only dials has none: references to its actors travel without an
    /// address, and reach it over the connection it opened.
    pub(crate) fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        if !self.listens {
            return None;
        }
        self.endpoint.get().and_then(|e| e.local_addr())
    }

    /// The address this node gives out, in its handshake and in references to
    /// its objects: where peers dial it. The advertised one if set (behind NAT,
    /// in a container), else the one it listens on; none if it does not listen.
    pub(crate) fn public_addr(&self) -> Option<String> {
        let listening = self.listen_addr()?;
        Some(
            self.advertise
                .clone()
                .unwrap_or_else(|| listening.to_string()),
        )
    }

    /// Connects to the node listening at `addr` (QUIC, mutual TLS) and returns its
    /// id; calls to its objects then travel over this connection. Connecting to a
    /// node already connected returns at once.
    pub(crate) async fn connect(&self, addr_text: &str) -> Result<NodeId, CallError> {
        let failed = |reason: String| CallError::ConnectFailed {
            node: None,
            label: NodeLabel::new(None, Some(addr_text)),
            reason,
        };
        let addr = tokio::net::lookup_host(addr_text)
            .await
            .map_err(|e| failed(e.to_string()))?
            .next()
            .ok_or_else(|| failed("no address".into()))?;
        let bind: std::net::SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .expect("a valid address");
        let endpoint = self.endpoint_at(bind).await.map_err(failed)?;
        let conn = endpoint.dial(self.me.clone(), addr, self.limits).await?;
        Ok(conn.peer.node)
    }

    /// The node's QUIC endpoint, bound at `addr` on first use.
    pub(crate) async fn endpoint_at(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<&quic::Endpoint, String> {
        self.endpoint
            .get_or_try_init(|| async {
                let endpoint = quic::Endpoint::bind(addr, &self.credentials, &self.quic_config)?;
                endpoint.spawn_acceptor(self.me.clone(), self.limits);
                Ok(endpoint)
            })
            .await
    }

    /// The id `route`'s actor is exported under; exports it on first use. The
    /// export lives while someone holds a lease on it or a reference to it here.
    pub(crate) fn export_route<M: Unmarshal>(&self, route: &Arc<LocalRoute<M>>) -> ObjectId {
        *route.exported.get_or_init(|| {
            let id = ObjectId::random();
            self.exports.insert(
                id,
                Export {
                    route: route.clone() as Arc<dyn Exported>,
                    pinned: route.cell.is_pinned(),
                    service: false,
                    spawned_by: None,
                    told: AtomicBool::new(false),
                },
            );
            id
        })
    }

    /// [`Host::export_route`] for a reference about to be sent to `holder` (None:
    /// not known yet): it gets a lease at once, which the receiving node's proxy
    /// renews, so the actor outlives the trip even if every local reference goes.
    pub(crate) fn export_for<M: Unmarshal>(
        &self,
        route: &Arc<LocalRoute<M>>,
        holder: Option<NodeId>,
    ) -> ObjectId {
        let id = self.export_route(route);
        let holder = holder.unwrap_or(NodeId::from_u128(0));
        self.granted.renew(holder, &[id], self.lease);
        // Referred to again: the next time nothing refers to it, it is told again.
        if let Some(export) = self.exports.get(&id) {
            export.told.store(false, Ordering::Relaxed);
        }
        id
    }

    /// Pins an export: it is never withdrawn (explicit exports, pinned actors).
    pub(crate) fn pin(&self, id: ObjectId) {
        if let Some(mut export) = self.exports.get_mut(&id) {
            export.pinned = true;
        }
    }

    /// Exports a pipe end (see `pipe::end`) for a half about to be sent to
    /// `holder`, which gets a lease on it at once as with a reference.
    pub(crate) fn export_pipe_end(
        &self,
        end: Arc<crate::pipe::PipeEnd>,
        holder: Option<NodeId>,
    ) -> ObjectId {
        let id = ObjectId::random();
        self.exports.insert(
            id,
            Export {
                route: end as Arc<dyn Exported>,
                pinned: false,
                service: false,
                spawned_by: None,
                told: AtomicBool::new(false),
            },
        );
        let holder = holder.unwrap_or(NodeId::from_u128(0));
        self.granted.renew(holder, &[id], self.lease);
        id
    }

    /// The pipe end exported as `object`, if it is one.
    pub(crate) fn pipe_end(&self, object: &ObjectId) -> Option<Arc<crate::pipe::PipeEnd>> {
        self.exported(object)?
            .as_any()
            .downcast::<crate::pipe::PipeEnd>()
            .ok()
    }

    /// How many pipe ends this node exports.
    pub(crate) fn pipe_end_count(&self) -> usize {
        self.exports
            .iter()
            .filter(|e| {
                e.route
                    .clone()
                    .as_any()
                    .downcast::<crate::pipe::PipeEnd>()
                    .is_ok()
            })
            .count()
    }

    /// Pipe streams open on this node's connections.
    pub(crate) fn pipe_stream_count(&self) -> usize {
        self.peers.iter().map(|c| c.value().pipes.count()).sum()
    }

    /// A pipe end that may have lost its last holder: withdrawn at once if
    /// nothing holds it (no lease, no stream), rather than at the next sweep, so
    /// that a pipe's receiver sees its end promptly.
    pub(crate) fn check_pipe_end(&self, id: ObjectId) {
        let now = tokio::time::Instant::now();
        if self.granted.is_leased(&id, now) {
            return;
        }
        let Some(export) = self.exports.get(&id) else {
            return;
        };
        if export.pinned || Arc::strong_count(&export.route) != 1 {
            return;
        }
        let Ok(end) = export
            .route
            .clone()
            .as_any()
            .downcast::<crate::pipe::PipeEnd>()
        else {
            return;
        };
        export.told.store(true, Ordering::Relaxed);
        drop(export);
        end.unreferenced(self.withdrawal(id));
    }

    pub(crate) fn exported(&self, object: &ObjectId) -> Option<Arc<dyn Exported>> {
        match self.exports.get(object) {
            Some(export) => Some(export.route.clone()),
            // A built-in service not started yet (the inspector): started on
            // its first call, so that a node nobody inspects runs no actor for it.
            None => self.builtin.get()?(object)
                .and_then(|()| self.exports.get(object).map(|e| e.route.clone())),
        }
    }

    /// Sets the hook that starts the node's built-in services on their first
    /// call (`exported` calls it with the object id it did not find).
    pub(crate) fn set_builtin(&self, start: Builtin) {
        let _ = self.builtin.set(start);
    }

    /// The node's exports, for inspection: (object, what it is, pinned, service).
    pub(crate) fn export_list(&self) -> Vec<(ObjectId, Arc<dyn Exported>, bool, bool)> {
        self.exports
            .iter()
            .map(|e| (*e.key(), e.route.clone(), e.pinned, e.service))
            .collect()
    }

    /// The open connections, for inspection.
    pub(crate) fn connections(&self) -> Vec<Arc<Connection>> {
        self.peers
            .iter()
            .map(|c| c.value().clone())
            .filter(|c| !c.is_closed())
            .collect()
    }

    /// Records that `node` spawned the actor exported as `object` (it may stop it).
    pub(crate) fn spawned_for(&self, object: ObjectId, node: NodeId) {
        if let Some(mut export) = self.exports.get_mut(&object) {
            export.spawned_by = Some(node);
        }
    }

    /// The export `object`, if the peer `node` named `identity` may stop it:
    /// `Ok(None)` if there is no such export, `Unauthorized` if it may not (see
    /// [`authority`](super::authority)); refusals are counted.
    pub(crate) fn stoppable(
        &self,
        object: &ObjectId,
        node: NodeId,
        identity: &str,
    ) -> Result<Option<Arc<dyn Exported>>, CallError> {
        let Some(export) = self.exports.get(object) else {
            return Ok(None);
        };
        let target = Target {
            service: export.service,
            spawned_by: export.spawned_by,
        };
        match self.control.may_stop(&target, node, identity) {
            Ok(()) => Ok(Some(export.route.clone())),
            Err(err) => {
                Refusals::count(&self.refusals.exits, 1);
                Err(err)
            }
        }
    }

    /// The peer `holder` holds proxies for `objects`: renews its leases on those
    /// this node exports. Other ids (made up, or withdrawn) are ignored and
    /// counted, so a peer's leases never outnumber the node's exports; returns
    /// the first of them and how many there were.
    pub(crate) fn renew_for(
        &self,
        holder: NodeId,
        objects: &[ObjectId],
    ) -> Option<(ObjectId, usize)> {
        let exported: Vec<ObjectId> = objects
            .iter()
            .filter(|id| self.exports.contains_key(id))
            .copied()
            .collect();
        self.granted.renew(holder, &exported, self.lease);
        let ignored = objects.len() - exported.len();
        self.ignore_lease_ids(holder, ignored);
        let first = objects.iter().find(|id| !self.exports.contains_key(id))?;
        Some((*first, ignored))
    }

    /// The peer `holder` released its leases on `objects`; ids it held no lease
    /// on are counted.
    pub(crate) fn release_for(&self, holder: NodeId, objects: &[ObjectId]) {
        let released = self.granted.release(holder, objects);
        self.ignore_lease_ids(holder, objects.len() - released);
        for object in objects {
            self.check_pipe_end(*object);
        }
    }

    fn ignore_lease_ids(&self, holder: NodeId, ignored: usize) {
        if ignored > 0 {
            Refusals::count(&self.refusals.lease_ids, ignored as u64);
            tracing::info!(peer = %holder, ignored, "ignored lease ids: they name nothing this node exports to the peer");
        }
    }

    /// A peer claimed a node id its certificate does not prove.
    pub(crate) fn impostor_refused(&self) {
        Refusals::count(&self.refusals.impostors, 1);
    }

    /// A monitor over the bound per connection was refused.
    pub(crate) fn monitor_refused(&self) {
        Refusals::count(&self.refusals.monitors, 1);
    }

    pub(crate) fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Finds the exports that nobody holds a lease on, that nothing on this node
    /// refers to, and that are not pinned, and tells each actor so: it runs
    /// [`Actor::on_unreferenced`](crate::Actor::on_unreferenced), which withdraws
    /// the export and stops it with [`StopReason::Unreferenced`] unless it chooses
    /// to stay. A stopped actor's export goes quietly.
    pub(crate) fn sweep_exports(&self, now: tokio::time::Instant) {
        self.granted.lapse(now);
        let unheld = |e: &Export| !e.pinned && Arc::strong_count(&e.route) == 1;
        let candidates: Vec<ObjectId> = self
            .exports
            .iter()
            .filter(|e| unheld(e))
            .map(|e| *e.key())
            .collect();
        for id in candidates {
            if self.granted.is_leased(&id, now) {
                // Referred to again (a node resolved a stored `WireRef`, say): the
                // next time nothing refers to it, it is told again.
                if let Some(export) = self.exports.get(&id) {
                    export.told.store(false, Ordering::Relaxed);
                }
                continue;
            }
            // Checked again under the entry's lock: an import may have just taken it.
            let finished = self
                .exports
                .remove_if(&id, |_, e| unheld(e) && e.route.is_finished());
            if finished.is_some() {
                continue;
            }
            let Some(export) = self.exports.get(&id) else {
                continue;
            };
            if !unheld(&export) || export.told.swap(true, Ordering::Relaxed) {
                continue;
            }
            let route = export.route.clone();
            drop(export);
            tracing::debug!(object = %id, "unreferenced: telling the actor");
            route.unreferenced(self.withdrawal(id));
        }
    }

    /// How an unreferenced actor that chose to stop withdraws its export `id`: only
    /// if it is still unreferenced (a reference sent meanwhile keeps it).
    fn withdrawal(&self, id: ObjectId) -> crate::local::cell::Withdraw {
        let host = self.me.clone();
        Box::new(move || {
            let inner = host.upgrade()?;
            let now = tokio::time::Instant::now();
            let (_, export) = inner.exports.remove_if(&id, |_, e| {
                e.told.load(Ordering::Relaxed)
                    && !e.pinned
                    && Arc::strong_count(&e.route) == 1
                    && !inner.granted.is_leased(&id, now)
            })?;
            tracing::debug!(object = %id, "unreferenced: export withdrawn");
            Some(Box::new(export.route) as Box<dyn Send>)
        })
    }

    /// Monitors of other nodes' objects waiting on this node's connections.
    pub(crate) fn monitor_count(&self) -> usize {
        self.peers.iter().map(|peer| peer.value().monitors()).sum()
    }

    /// Peers' monitors of this node's objects.
    pub(crate) fn monitored_count(&self) -> usize {
        self.peers.iter().map(|peer| peer.value().monitored()).sum()
    }

    pub(crate) fn held_leases(&self) -> &crate::remote::leases::HeldLeases {
        &self.held
    }

    pub(crate) fn granted_leases(&self) -> &crate::remote::leases::GrantedLeases {
        &self.granted
    }

    /// The actor behind `wire`, which names an object of this node: fails with
    /// `NodeRestarted` for a reference to an earlier run of this node, and
    /// `NoSuchObject` for an object it does not export.
    pub(crate) fn import_local<M: Unmarshal>(
        &self,
        wire: &WireRef,
    ) -> Result<Arc<LocalRoute<M>>, CallError> {
        check_interface::<M>(wire)?;
        if wire.incarnation != self.incarnation() {
            return Err(CallError::NodeRestarted {
                node: wire.node,
                label: NodeLabel::new(self.name(), self.public_addr().as_deref()),
                may_have_executed: false,
            });
        }
        let exported = self.exported(&wire.object).ok_or(CallError::NoSuchObject)?;
        exported
            .as_any()
            .downcast::<LocalRoute<M>>()
            .map_err(|_| CallError::InterfaceMismatch {
                expected: M::INTERFACE_ID,
                found: "another interface".into(),
            })
    }

    /// A route to the object `wire` names on another node: over `via` if it lives
    /// on that peer, over another connection if on a third node, or dialed at its
    /// address on the first call.
    pub(crate) fn import_remote<M: Unmarshal>(
        &self,
        wire: &WireRef,
        via: Option<&Arc<Connection>>,
    ) -> Result<Arc<RemoteRoute>, CallError> {
        check_interface::<M>(wire)?;
        self.import_remote_raw(wire, via)
    }

    /// [`Host::import_remote`] with the interface checked by the caller (pipe ends).
    pub(crate) fn import_remote_raw(
        &self,
        wire: &WireRef,
        via: Option<&Arc<Connection>>,
    ) -> Result<Arc<RemoteRoute>, CallError> {
        let conn = match via {
            Some(conn) if conn.peer.node == wire.node => Some(conn.clone()),
            _ => self.peer(wire.node).ok(),
        };
        if let Some(conn) = &conn {
            if conn.peer.incarnation != wire.incarnation {
                return Err(CallError::NodeRestarted {
                    node: wire.node,
                    label: conn.peer.label(),
                    may_have_executed: false,
                });
            }
        } else if wire.addr.is_none() {
            return Err(CallError::ConnectFailed {
                node: Some(wire.node),
                label: NodeLabel::default(),
                reason: "this node has no connection to that node, and no address to dial it at"
                    .into(),
            });
        }
        // Known address, no connection yet (an object on a third node): the first
        // call dials it.
        let mut wire = wire.clone();
        if wire.addr.is_none() {
            wire.addr = conn.as_ref().and_then(|c| c.peer.listen.clone());
        }
        Ok(Arc::new(RemoteRoute::new(self.me.clone(), &wire, conn)))
    }

    pub(crate) fn peer(&self, node: NodeId) -> Result<Arc<Connection>, CallError> {
        self.peers
            .get(&node)
            .map(|c| c.value().clone())
            .filter(|c| !c.is_closed())
            .ok_or_else(|| CallError::ConnectFailed {
                node: Some(node),
                label: NodeLabel::default(),
                reason: "this node has no connection to that node".into(),
            })
    }

    /// Records a connection and returns the one to use: one per peer. When both
    /// nodes dialed at once, the connection dialed by the smaller node id wins on
    /// both sides; the other is closed by its caller. A connection to a new
    /// incarnation of a peer closes the old one's (see `replace_restarted`),
    /// once the new one is in place.
    pub(crate) fn add_peer(&self, conn: Arc<Connection>) -> Arc<Connection> {
        let kept = self.keep_one(conn.clone());
        if Arc::ptr_eq(&kept, &conn) {
            tracing::info!(peer = %conn.peer.node, node = %conn.peer.label(), "connected");
        }
        self.replace_restarted(&kept);
        kept
    }

    /// [`Host::add_peer`]'s tie-break between two connections to one peer.
    fn keep_one(&self, conn: Arc<Connection>) -> Arc<Connection> {
        let mut entry = self
            .peers
            .entry(conn.peer.node)
            .or_insert_with(|| conn.clone());
        if Arc::ptr_eq(&entry, &conn) {
            return conn;
        }
        if entry.is_closed() || conn.dialer < entry.dialer {
            let old = std::mem::replace(&mut *entry, conn.clone());
            drop(entry);
            old.retire();
            return conn;
        }
        let kept = entry.clone();
        drop(entry);
        conn.retire();
        kept
    }

    /// A new node answers at the address of a node this node is connected to:
    /// that node's process is gone (a node id names one run of a node, and only
    /// one process can listen at an address). Its connection closes at once
    /// rather than at the peer timeout: its calls fail with `NodeRestarted`, its
    /// monitors resolve with it.
    fn replace_restarted(&self, conn: &Connection) {
        let Some(addr) = &conn.peer.listen else {
            return;
        };
        let replaced: Vec<Arc<Connection>> = self
            .peers
            .iter()
            .filter(|old| old.peer.node != conn.peer.node && old.peer.listen.as_ref() == Some(addr))
            .map(|old| old.value().clone())
            .collect();
        for old in replaced {
            tracing::info!(old = %old.peer.node, new = %conn.peer.node, %addr, "a node restarted: a new incarnation answers at its address");
            old.close_restarted();
        }
    }

    /// The connection to `peer` was reset by its address, `addr`: its process
    /// lost its state. Dials the address: a new incarnation answering there
    /// closes the old connection as restarted ([`Host::add_peer`]), failing its
    /// calls with `NodeRestarted` rather than `NodeDown`. The receiver resolves
    /// once the dial is over (the caller then closes the old connection as down,
    /// if nothing closed it yet).
    pub(crate) fn look_for_restart(
        &self,
        peer: NodeId,
        addr: &str,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (done, dialed) = tokio::sync::oneshot::channel();
        let Some(host) = self.me.upgrade() else {
            return dialed;
        };
        let addr = addr.to_owned();
        tracing::debug!(%peer, %addr, "stateless reset: looking for a new incarnation");
        self.spawn_task(async move {
            if let Err(err) = host.connect(&addr).await {
                tracing::debug!(%addr, %err, "nothing answers after a stateless reset");
            }
            let _ = done.send(());
        });
        dialed
    }

    /// Open connections to other nodes.
    pub(crate) fn connection_count(&self) -> usize {
        self.peers.iter().filter(|c| !c.is_closed()).count()
    }

    /// Incoming handshakes in flight now, and those answered with a Retry and
    /// refused so far (zeros before the endpoint is bound).
    pub(crate) fn handshake_counts(&self) -> (usize, u64, u64) {
        self.endpoint.get().map_or((0, 0, 0), |endpoint| {
            let handshakes = endpoint.handshakes();
            (
                handshakes.in_flight(),
                handshakes.retried(),
                handshakes.refused(),
            )
        })
    }

    /// Bytes read from peers over the connections open now.
    pub(crate) fn bytes_received(&self) -> u64 {
        self.peers.iter().map(|c| c.received()).sum()
    }

    /// Bytes written to peers and not yet sent, over the connections open now.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.peers.iter().map(|c| c.queued()).sum()
    }

    /// Calls from peers held for full mailboxes now.
    pub(crate) fn calls_held(&self) -> usize {
        self.peers.iter().map(|c| c.held()).sum()
    }

    /// The count of asks from peers dropped unrun (their connection lost).
    pub(crate) fn asks_dropped(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.asks_dropped.clone()
    }

    /// Calls dropped unrun because nobody waited for them any more.
    pub(crate) fn given_up(&self) -> &GivenUp {
        &self.given_up
    }

    /// Whether calls carry their deadline to the nodes they go to.
    pub(crate) fn propagates_deadlines(&self) -> bool {
        self.propagate
    }

    /// Bytes of large frames being received from peers now.
    pub(crate) fn receiving_bytes(&self) -> usize {
        self.peers.iter().map(|c| c.receiving()).sum()
    }

    /// Call lanes (streams, over QUIC) open toward peers now.
    pub(crate) fn call_lanes(&self) -> usize {
        self.peers.iter().map(|c| c.lanes()).sum()
    }

    pub(crate) fn forget_peer(&self, peer: &Hello, conn: &Connection) {
        self.peers
            .remove_if(&peer.node, |_, c| std::ptr::eq(Arc::as_ptr(c), conn));
    }
}

/// The reference to a local actor as it travels: exported by the node the actor
/// lives on (with a lease for `holder`, the node it is sent to, if known). That is
/// usually the marshalling node; with several nodes in one process it may be
/// another.
pub(crate) fn local_wire<M: Unmarshal>(
    route: &Arc<LocalRoute<M>>,
    holder: Option<NodeId>,
) -> WireRef {
    // The owner, not the marshalling node: with several nodes in one process, a
    // proxy to another node's actor may be local here and sent on from here.
    let owner = route
        .slot
        .home()
        .downcast_ref::<Arc<Host>>()
        .expect("an actor's home is its node's Host");
    WireRef {
        node: owner.id(),
        incarnation: owner.incarnation(),
        object: owner.export_for(route, holder),
        interface: M::INTERFACE_ID,
        addr: owner.public_addr(),
    }
}

/// Refuses a reference whose interface is not the one expected.
fn check_interface<M: Unmarshal>(wire: &WireRef) -> Result<(), CallError> {
    if wire.interface == M::INTERFACE_ID {
        return Ok(());
    }
    Err(CallError::InterfaceMismatch {
        expected: M::INTERFACE_ID,
        found: format!("interface id {:#018x}", wire.interface),
    })
}
