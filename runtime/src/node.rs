//! The node: hosts actors, spawns them, watches them, shuts them down.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use crate::id::NodeId;
use tokio::sync::Notify;

use crate::error::CallError;
use crate::hash::DashMap;
use crate::id::ActorId;
use crate::interface::Interface;
use crate::local::actor::{Actor, SpawnOptions};
use crate::local::cell::ActorCell;
use crate::local::dispatch::Dispatch;
use crate::local::mailbox::Mailbox;
use crate::local::route::LocalRoute;
use crate::local::slot::{Held, Slot, Start};
use crate::local::stats::InterfaceStats;
use crate::local::stop::StopReason;
use crate::local::supervision::Control;
use crate::reference::{RefCore, Route, DEFAULT_TIMEOUT};
use crate::remote::authority::Refusals;
use crate::remote::host::{local_wire, HostConfig};
use crate::remote::marshal::Unmarshal;
use crate::remote::quic::{QuicConfig, DEFAULT_IDLE_TIMEOUT};
use crate::remote::tls::{Credentials, CredentialsError};
use crate::remote::HandshakeLimits;
use crate::remote::{Host, RemoteRoute, WireRef};
use crate::wire::codec::Limits;
use crate::wire::ObjectId;

/// A process-level host for actors. Cheap to clone: clones share one node.
///
/// ```
/// use remora::{Actor, Node};
///
/// #[remora::remote]
/// pub trait Greeter {
///     async fn greet(&mut self, name: String) -> String;
/// }
///
/// struct English;
/// impl Actor for English {}
/// impl Greeter for English {
///     async fn greet(&mut self, name: String) -> String {
///         format!("hello, {name}")
///     }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().build().await?;
/// let greeter: GreeterRef = node.spawn(English);
/// assert_eq!(greeter.greet("world".into()).await?, "hello, world");
/// node.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

/// The two halves of a node: its actors (the local half: `local/` knows nothing
/// of other nodes) and its remote half ([`Host`]: exports, leases, peers).
pub(crate) struct NodeInner {
    host: Arc<Host>,
    runtime: tokio::runtime::Handle,
    default_mailbox: Mailbox,
    default_timeout: Duration,
    actors: DashMap<ActorId, Arc<dyn Control>>,
    next_actor: AtomicU64,
    live: AtomicUsize,
    all_stopped: Notify,
    shutting_down: AtomicBool,
    factories: crate::spawn::Factories,
    /// Per interface hosted here, its methods' counters (see `local::stats`).
    interfaces: DashMap<u64, Arc<InterfaceStats>>,
    /// When the node started, for its uptime.
    started: std::time::Instant,
    /// Who may inspect this node (see `NodeBuilder::allow_inspection_from`).
    inspection: crate::inspect::InspectPolicy,
    /// The Prometheus endpoint, if the builder asked for one (dropped, so
    /// closed, at shutdown).
    #[cfg(feature = "metrics")]
    metrics: parking_lot::Mutex<Option<crate::metrics::Endpoint>>,
}

/// Why a node could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// `build()` ran outside a tokio runtime.
    #[error("Node::builder().build() must run inside a tokio runtime (use #[tokio::main] or Runtime::block_on)")]
    NoRuntime,
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The credentials could not be loaded.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

#[derive(Debug, Clone)]
enum CredentialSource {
    Dir(std::path::PathBuf),
    Given(Credentials),
}

/// A handle that does not keep its node alive (connections hold one).
#[derive(Clone)]
pub(crate) struct WeakNode {
    inner: Weak<NodeInner>,
}

impl WeakNode {
    pub(crate) fn upgrade(&self) -> Option<Node> {
        self.inner.upgrade().map(|inner| Node { inner })
    }

    /// A handle to no node (tests of what holds one).
    #[cfg(all(test, feature = "metrics"))]
    pub(crate) fn dangling() -> WeakNode {
        WeakNode { inner: Weak::new() }
    }
}

/// Configures a [`Node`]; from [`Node::builder`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    listen: Option<String>,
    credentials: Option<CredentialSource>,
    peer_timeout: Duration,
    handshakes: HandshakeLimits,
    connect_timeout: Option<Duration>,
    limits: Limits,
    name: Option<String>,
    default_mailbox: Mailbox,
    default_timeout: Duration,
    once_retention: Duration,
    lease: Duration,
    allow_control: std::collections::HashSet<String>,
    allow_inspection: std::collections::HashSet<String>,
    advertise: Option<String>,
    propagate_deadlines: bool,
    #[cfg(feature = "metrics")]
    metrics: Option<String>,
}

impl NodeBuilder {
    /// A name for logs and statistics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The mailbox actors get when [`SpawnOptions::mailbox`] does not choose one
    /// (default: [`Mailbox::default`], bounded at 1024).
    pub fn default_mailbox(mut self, mailbox: Mailbox) -> Self {
        self.default_mailbox = mailbox;
        self
    }

    /// The deadline of calls made through references this node creates
    /// (default 30 s; `Duration::MAX`: none); `r.with_timeout(d)` overrides it
    /// per reference.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Accepts connections from other nodes on `addr` over QUIC (port 0: any free
    /// port; see [`Node::listen_addr`]).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// The address to give out instead of the one the node listens on, for a
    /// node behind NAT or in a container: `.listen("0.0.0.0:7000")
    /// .advertise("web-1.internal:7000")`. It goes in the node's handshake and in
    /// every reference to its objects, which is where peers dial it; a host name
    /// is resolved when dialled.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), remora::NodeError> {
    /// let node = remora::Node::builder()
    ///     .listen("127.0.0.1:0")
    ///     .advertise("localhost:7000")
    ///     .build()
    ///     .await?;
    /// assert_eq!(node.public_addr().as_deref(), Some("localhost:7000"));
    /// # Ok(()) }
    /// ```
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// Loads this node's cluster credentials from `dir` (see [`Credentials::from_dir`]).
    /// Without this, nodes use [`Credentials::ephemeral`]: they trust the nodes of
    /// their own process only.
    pub fn credentials(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.credentials = Some(CredentialSource::Dir(dir.into()));
        self
    }

    /// Uses these credentials.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(CredentialSource::Given(credentials));
        self
    }

    /// Lets the nodes whose certificates carry these names (their Common Name,
    /// [`Caller::identity`](crate::Caller::identity)) stop this node's actors
    /// ([`Node::stop`] of a remote reference) and link to them ([`Node::link`]).
    /// Without a name here, a peer may stop only the actors it spawned on this
    /// node ([`Node::spawn_on`]); none may stop a service of the node (exported
    /// under a chosen id, [`Node::export_as`]). Other peers' attempts are refused
    /// with [`CallError::Unauthorized`], logged, and counted in
    /// [`NodeStats::exits_refused`].
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), remora::NodeError> {
    /// let node = remora::Node::builder()
    ///     .allow_control_from(["operator", "supervisor-node"])
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn allow_control_from<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow_control.extend(names.into_iter().map(Into::into));
        self
    }

    /// Lets only the nodes whose certificates carry these names (their Common
    /// Name, [`Caller::identity`](crate::Caller::identity)) inspect this node
    /// through its [`Inspector`](crate::inspect::Inspector) (what `remora
    /// inspect` and `remora top` read). Without a name here, any member of the
    /// cluster may (its certificate chains to the cluster's root, which mutual
    /// TLS already checks); with names, other peers are refused with
    /// [`InspectError::NotAllowed`](crate::inspect::InspectError::NotAllowed).
    /// Calls from this node itself are always allowed.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), remora::NodeError> {
    /// let node = remora::Node::builder()
    ///     .allow_inspection_from(["operator"])
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn allow_inspection_from<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow_inspection
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// How long a silent peer may stay silent before its calls fail with `NodeDown`
    /// (default 6 s; keep-alives go out every third of it).
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// How many incoming QUIC handshakes this node works on at once, and past how
    /// many a client must prove its address with a QUIC Retry first (default:
    /// [`HandshakeLimits::default`]: Retry past 64, at most 1 024, 32 per address).
    /// A handshake lasts at most the peer timeout for TLS and again for the peer's
    /// `Hello`; [`NodeStats::handshakes`] counts those in flight.
    pub fn handshake_limits(mut self, limits: HandshakeLimits) -> Self {
        self.handshakes = limits;
        self
    }

    /// How long dialing another node waits for it to answer (default: half the
    /// peer timeout, 3 s): an address where nothing answers fails with
    /// `ConnectFailed` then, rather than at QUIC's idle timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The largest frame this node accepts from a peer, in bytes (default 16 MiB,
    /// at least 1 KiB). Nodes announce it when they connect: a larger call is
    /// refused with [`CallError::TooLarge`] before it is sent.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.limits.max_frame = bytes.max(Limits::MIN_MAX_FRAME);
        self
    }

    /// How many calls another node may have outstanding to one actor of this node
    /// (default 256, at least 1): tells not yet in the actor's mailbox, asks not
    /// yet answered. A remote sender past it waits for room (`tell`, `ask`) or is
    /// refused with `MailboxFull` (`try_tell`), as a local sender is at a full
    /// mailbox; and this node holds at most this many calls per peer and actor
    /// while the actor's mailbox is full.
    ///
    /// ```
    /// # #[tokio::main] async fn main() {
    /// let node = remora::Node::builder().call_window(64).build().await.unwrap();
    /// # node.shutdown().await; }
    /// ```
    pub fn call_window(mut self, calls: u32) -> Self {
        self.limits.window = calls.max(1);
        self
    }

    /// How long a reference lease lasts without renewal (default 10 minutes; use
    /// one value across a cluster): a node holding proxies renews its leases at
    /// half of it, and an actor of this node that only other nodes referred to is
    /// withdrawn (and stops) within 1.25 leases after the last of them stopped
    /// renewing (it died, or lost its connection). Dropping the last proxy releases
    /// at once.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// How long this node remembers the reply of an `#[exactly_once]` call it ran
    /// (default 5 minutes), to answer a retry from memory. A retry arriving later
    /// runs the method again: keep callers' deadlines below it. At most 2^20
    /// replies are remembered; past that the oldest are forgotten first.
    pub fn exactly_once_retention(mut self, retention: Duration) -> Self {
        self.once_retention = retention;
        self
    }

    /// Whether calls from this node carry their deadline (default: yes). A call
    /// then tells the node it goes to how much of its time is left (a budget,
    /// not a clock reading), so that a handler's [`deadline`](crate::deadline) is
    /// its caller's, a call it makes gets the earlier of its own timeout and that
    /// deadline, and a call whose deadline passes while it waits in a mailbox is
    /// dropped unrun. Off, calls carry no budget and handlers' calls get their
    /// own timeouts only (cancellation still works): for measuring what
    /// propagation costs.
    pub fn propagate_deadlines(mut self, on: bool) -> Self {
        self.propagate_deadlines = on;
        self
    }

    /// Serves the node's counters to Prometheus at `http://{addr}/metrics`, in
    /// the text exposition format (port 0: any free port; see
    /// [`Node::metrics_addr`]). What it exposes: calls by outcome and their
    /// latency per interface and method (`remora_calls_total`,
    /// `remora_call_duration_seconds`), actors and their queued messages by
    /// interface and type, connections, bytes, round trips and pending calls
    /// per peer, leases, handshakes, and `remora_node_info` (the README's
    /// "Inspecting a cluster" lists them all).
    ///
    /// The figures are read when scraped, from the counters the
    /// [`Inspector`](crate::inspect::Inspector) reads: a call does no work for
    /// the endpoint. It answers `GET /metrics` only, to at most 8 connections
    /// at once, and no credentials guard it: bind it to loopback or a private
    /// network (SECURITY.md). Requires the `metrics` feature (on by default).
    /// `build()` fails with [`NodeError::Bind`] if `addr` cannot be bound.
    ///
    /// ```
    /// use std::io::{Read, Write};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let node = remora::Node::builder()
    ///     .name("web-1")
    ///     .metrics("127.0.0.1:0")
    ///     .build()
    ///     .await?;
    /// let addr = node.metrics_addr().expect("serving");
    ///
    /// // What Prometheus would read (here with a bare HTTP/1.1 request).
    /// let body = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
    ///     let mut http = std::net::TcpStream::connect(addr)?;
    ///     http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    ///     let mut answer = String::new();
    ///     http.read_to_string(&mut answer)?;
    ///     Ok(answer)
    /// })
    /// .await??;
    /// assert!(body.starts_with("HTTP/1.1 200 OK"));
    /// assert!(body.contains(r#"remora_node_info{id=""#));
    /// assert!(body.contains(r#"name="web-1""#));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, addr: impl Into<String>) -> Self {
        self.metrics = Some(addr.into());
        self
    }

    /// Starts the node on the current tokio runtime.
    pub async fn build(self) -> Result<Node, NodeError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NodeError::NoRuntime)?;
        let credentials = match &self.credentials {
            Some(CredentialSource::Dir(dir)) => match &self.name {
                Some(name) => Credentials::from_dir_named(dir, name)?,
                None => Credentials::from_dir(dir)?,
            },
            Some(CredentialSource::Given(c)) => c.clone(),
            // Made now even for a node that never dials: its id is bound to them.
            None => match &self.name {
                Some(name) => Credentials::ephemeral_named(name)?,
                None => Credentials::ephemeral()?,
            },
        };
        // A new value every time a node starts: references to an earlier
        // incarnation of this node fail instead of reaching new actors.
        let incarnation = rand_incarnation();
        let listen = match &self.listen {
            Some(addr) => Some(resolve(addr).await.ok_or_else(|| NodeError::Bind {
                addr: addr.clone(),
                reason: "not an address this host can bind".into(),
            })?),
            None => None,
        };
        let quic_config = QuicConfig {
            idle_timeout: self.peer_timeout,
            handshakes: self.handshakes,
            // Half the peer timeout unless set: a dead address fails well before
            // a lost peer would be noticed.
            connect_timeout: self
                .connect_timeout
                .unwrap_or(self.peer_timeout / 2)
                .max(Duration::from_millis(1)),
        };
        let host = Host::start(HostConfig {
            id: credentials.node_id(incarnation),
            incarnation,
            name: self.name,
            limits: self.limits,
            lease: self.lease,
            default_timeout: self.default_timeout,
            listens: listen.is_some(),
            advertise: self.advertise,
            credentials,
            quic_config,
            once_retention: self.once_retention,
            allow_control: self.allow_control,
            propagate: self.propagate_deadlines,
            runtime: runtime.clone(),
        });
        let node = Node {
            inner: Arc::new(NodeInner {
                host,
                runtime,
                default_mailbox: self.default_mailbox,
                default_timeout: self.default_timeout,
                actors: DashMap::default(),
                next_actor: AtomicU64::new(1),
                live: AtomicUsize::new(0),
                all_stopped: Notify::new(),
                shutting_down: AtomicBool::new(false),
                factories: Default::default(),
                interfaces: DashMap::default(),
                started: std::time::Instant::now(),
                inspection: crate::inspect::InspectPolicy::new(self.allow_inspection),
                #[cfg(feature = "metrics")]
                metrics: parking_lot::Mutex::new(None),
            }),
        };
        crate::inspect::start_service(&node);
        #[cfg(feature = "metrics")]
        if let Some(addr) = &self.metrics {
            let bound = match resolve(addr).await {
                Some(at) => crate::metrics::serve(&node, at)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("not an address this host can bind".into()),
            };
            let endpoint = bound.map_err(|reason| NodeError::Bind {
                addr: addr.clone(),
                reason,
            })?;
            *node.inner.metrics.lock() = Some(endpoint);
        }
        if let Some(addr) = listen {
            node.inner
                .host
                .endpoint_at(addr)
                .await
                .map_err(|reason| NodeError::Bind {
                    addr: addr.to_string(),
                    reason,
                })?;
        }
        Ok(node)
    }
}

/// A snapshot of a node's counters, from [`Node::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Actors running (started and not yet finished).
    pub actors: usize,
    /// Replies of `#[exactly_once]` calls remembered for retries.
    pub exactly_once_replies: usize,
    /// Actors other nodes may call (exported).
    pub exports: usize,
    /// Leases other nodes hold on this node's exports.
    pub leases_granted: usize,
    /// Objects of other nodes this node holds leases on (has proxies for).
    pub leases_held: usize,
    /// Connections to other nodes open now (one per peer node).
    pub connections: usize,
    /// Bytes read from other nodes over the connections open now.
    pub bytes_received: u64,
    /// Monitors this node has on actors of other nodes ([`Node::monitor`] of a
    /// remote reference, and what is built on it: links, the registry's watch
    /// over a bound reference), each waiting on a live connection for its actor
    /// to stop. A lost connection ends its monitors, so this also says when a
    /// monitor has been set up again after a reconnect.
    pub monitors: usize,
    /// Bytes this node has written to other nodes that the network has not taken
    /// yet. Bounded by what peers let it send: at most their `window` of calls per
    /// object ([`Limits::window`]), plus replies and control frames.
    pub queued_bytes: usize,
    /// Calls from other nodes held because their actor's mailbox is full, to be
    /// handed over as room comes: at most [`Limits::window`] per peer and actor,
    /// and a peer's reads stop while more than two of its largest frames are held.
    pub calls_held: usize,
    /// Call lanes open toward other nodes (one QUIC stream each): at most 16
    /// per connection, however many objects it calls.
    pub call_lanes: usize,
    /// Bytes of large frames being received from other nodes: at most two of the
    /// largest frames ([`NodeBuilder::max_frame_size`]) per connection; a stream
    /// whose frame finds no room waits, unread, until there is.
    pub receiving_bytes: usize,
    /// Incoming QUIC handshakes in flight now: from a client's first datagram
    /// until its `Hello` has arrived, it failed, or it ran out of time. Never more
    /// than [`HandshakeLimits`]' `max_in_flight`, and while it is past
    /// `retry_above`, clients are asked to prove their address first.
    pub handshakes: usize,
    /// Incoming handshakes answered with a QUIC Retry since the node started (the
    /// client had to prove its address: a real one comes back, a flood does not).
    pub handshakes_retried: u64,
    /// Incoming handshakes refused since the node started: too many in flight, or
    /// too many from the client's address.
    pub handshakes_refused: u64,
    /// Asks from other nodes dropped unrun since the node started: their
    /// connection was lost while they waited in a mailbox, so nobody could take
    /// their answers. (Tells from such a node still run: they were accepted.)
    pub asks_dropped: u64,
    /// Peers refused since the node started because their `Hello` claimed a node
    /// id their certificate does not prove (an impostor; see [`NodeId`]).
    pub impostors_refused: u64,
    /// Requests from peers to stop (or, through a link, to fail) one of this
    /// node's actors, refused since the node started: the peer had no authority
    /// over it ([`NodeBuilder::allow_control_from`]).
    pub exits_refused: u64,
    /// Monitors of this node's actors refused since the node started: the peer
    /// already had the most a peer may have.
    pub monitors_refused: u64,
    /// Monitors other nodes have on this node's actors now (at most 65 536 per
    /// peer; a lost connection ends its peer's).
    pub monitored: usize,
    /// Object ids in lease renewals and releases from peers ignored since the
    /// node started: they named nothing this node exports (or that peer holds no
    /// lease on), so a peer's leases never outnumber the node's exports.
    pub lease_ids_ignored: u64,
    /// Pipe ends this node exports: halves of its pipes held on other nodes
    /// (see [`pipe`](crate::pipe)); counted in `exports` too.
    pub pipe_ends: usize,
    /// Pipe streams open on this node's connections, both ways (at most 4 096
    /// opened by each peer).
    pub pipe_streams: usize,
    /// Calls dropped unrun since the node started because their caller gave
    /// them up while they were queued (it dropped the call, or a `Cancel` came
    /// from its node).
    pub calls_cancelled: u64,
    /// Calls from other nodes dropped unrun since the node started because
    /// their deadline passed before they could start: their callers had had
    /// their `Timeout` already.
    pub calls_expired: u64,
    /// `Cancel` frames from peers ignored since the node started: they named no
    /// call their connection was serving (unknown, answered already, or another
    /// connection's), so they cancelled nothing.
    pub cancels_ignored: u64,
}

/// How long [`Node::shutdown`] waits for its peers to hear that its connections
/// closed.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            listen: None,
            credentials: None,
            peer_timeout: DEFAULT_IDLE_TIMEOUT,
            handshakes: HandshakeLimits::default(),
            connect_timeout: None,
            limits: Limits::default(),
            name: None,
            default_mailbox: Mailbox::default(),
            default_timeout: DEFAULT_TIMEOUT,
            once_retention: crate::remote::once::DEFAULT_RETENTION,
            lease: crate::remote::leases::DEFAULT_LEASE,
            allow_control: Default::default(),
            allow_inspection: Default::default(),
            advertise: None,
            propagate_deadlines: true,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// The node's name, if the builder gave one.
    pub fn name(&self) -> Option<&str> {
        self.inner.host.name()
    }

    /// Spawns `actor` with the node's defaults and returns a typed reference to it.
    ///
    /// The reference type names the interface: `let r: CounterRef = node.spawn(c)`,
    /// or `node.spawn::<CounterRef, _>(c)`. The actor runs until it is stopped, its
    /// node shuts down, or every reference to it is dropped.
    pub fn spawn<R, A>(&self, actor: A) -> R
    where
        R: Interface,
        A: Actor,
        R::Msg: Dispatch<A>,
    {
        self.spawn_with(actor, SpawnOptions::new())
    }

    /// Spawns `actor` with a chosen mailbox, restart policy and name.
    pub fn spawn_with<R, A>(&self, actor: A, options: SpawnOptions<A>) -> R
    where
        R: Interface,
        A: Actor,
        R::Msg: Dispatch<A>,
    {
        let inner = &self.inner;
        let id = ActorId(inner.next_actor.fetch_add(1, Ordering::Relaxed));
        let cell = Arc::new(ActorCell::new(id, options.name));
        if options.pinned {
            cell.pin();
        }
        let mailbox = options.mailbox.unwrap_or(inner.default_mailbox);
        let (tx, rx) = mailbox.channel();
        let stats = self.interface_stats(R::ID, R::NAME, <R::Msg as Dispatch<A>>::METHODS);
        let held = Held {
            rx,
            stats: stats.clone(),
            state_dropped: false,
            restart: options.restart,
        };
        inner.live.fetch_add(1, Ordering::AcqRel);
        let start: Start<A, R::Msg, _> = |msg, lent, room| {
            let msg = msg.take().expect("a message to start");
            *room = Some(<R::Msg as Dispatch<A>>::dispatch(msg, lent));
        };
        let slot = Slot::spawn(
            actor,
            start,
            self.clone(),
            cell.clone(),
            held,
            options.inline,
        );
        inner.actors.insert(id, slot.clone());
        // A spawn racing shutdown must not outlive it.
        if inner.shutting_down.load(Ordering::SeqCst) {
            Control::stop(&*slot, StopReason::Shutdown);
        }
        let mut core = RefCore::local(LocalRoute {
            tx,
            exported: OnceLock::new(),
            cell,
            slot,
            reentrant: <R::Msg as Dispatch<A>>::REENTRANT,
            propagate: inner.host.propagates_deadlines(),
        });
        if inner.default_timeout != DEFAULT_TIMEOUT {
            core = core.with_timeout(inner.default_timeout);
        }
        R::from_core(core)
    }

    /// The counters of interface `id`'s methods on this node, made with the
    /// first actor of the interface.
    fn interface_stats(
        &self,
        id: u64,
        name: &'static str,
        methods: &'static [&'static str],
    ) -> Arc<InterfaceStats> {
        if let Some(stats) = self.inner.interfaces.get(&id) {
            return stats.clone();
        }
        let stats = self.inner.interfaces.entry(id);
        stats
            .or_insert_with(|| Arc::new(InterfaceStats::new(name, methods)))
            .clone()
    }

    /// Every interface's counters on this node.
    pub(crate) fn interfaces(&self) -> Vec<Arc<InterfaceStats>> {
        self.inner
            .interfaces
            .iter()
            .map(|e| e.value().clone())
            .collect()
    }

    /// What the node keeps of each live actor.
    pub(crate) fn actor_controls(&self) -> Vec<(ActorId, Arc<dyn Control>)> {
        self.inner
            .actors
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect()
    }

    /// How long ago the node started.
    pub(crate) fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Who may inspect this node.
    pub(crate) fn inspection(&self) -> &crate::inspect::InspectPolicy {
        &self.inner.inspection
    }

    /// Resolves with the reason once the actor behind `r` has stopped (at once if it
    /// already has). Restarts under a restart policy do not count as stops. For an
    /// actor on another node, its node reports the reason; if the connection to
    /// that node is lost first, it resolves with [`StopReason::NodeDown`] (or
    /// [`StopReason::NodeRestarted`] when another node answers at its address).
    pub fn monitor<R: Interface>(
        &self,
        r: &R,
    ) -> impl Future<Output = StopReason> + Send + 'static {
        // Capture the cell or the connection, never the route: a route keeps its
        // actor alive, and a monitor must not.
        enum Monitored {
            Local(std::pin::Pin<Box<dyn Future<Output = StopReason> + Send>>),
            Remote(Arc<RemoteRoute>),
        }
        let watch = match r.core().route() {
            Route::Local(local) => Monitored::Local(Box::pin(local.cell.monitor())),
            Route::Remote(remote) => Monitored::Remote(remote.clone()),
        };
        async move {
            match watch {
                Monitored::Local(stopped) => stopped.await,
                Monitored::Remote(remote) => crate::remote::route::stopped(remote).await,
            }
        }
    }

    /// Asks the actor behind `r` to stop ([`StopReason::Normal`]) after its current
    /// message; messages still queued are answered with `ActorStopped`. An actor on
    /// another node is stopped by its node.
    pub fn stop<R: Interface>(&self, r: &R) {
        r.core().stop(StopReason::Normal);
    }

    /// Whether the actor behind `r` has finished (for an actor on another node:
    /// whether the connection to its node is lost).
    pub fn is_stopped<R: Interface>(&self, r: &R) -> bool {
        match r.core().route() {
            Route::Local(local) => local.cell.is_finished(),
            Route::Remote(remote) => remote.is_down(),
        }
    }

    /// Where this node accepts connections, if it listens ([`NodeBuilder::listen`]).
    /// A node that only dials has none: references to its actors travel without an
    /// address, and reach it over the connection it opened.
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.host.listen_addr()
    }

    /// Where peers dial this node: the address it advertises
    /// ([`NodeBuilder::advertise`]), else the one it listens on; `None` if it does
    /// not listen.
    pub fn public_addr(&self) -> Option<String> {
        self.inner.host.public_addr()
    }

    /// Connects to the node listening at `addr` (QUIC, mutual TLS) and returns its
    /// id; calls to its objects then travel over this connection. Connecting to a
    /// node already connected returns at once.
    pub async fn connect(&self, addr: impl AsRef<str>) -> Result<NodeId, CallError> {
        self.inner.host.connect(addr.as_ref()).await
    }

    /// Drops the connection to `peer` as if it had been lost, now (for tests that
    /// must decide when a loss is noticed, which a silent peer otherwise leaves to
    /// the keep-alive): calls in flight fail with `NodeDown`, monitors resolve as
    /// for any loss, later calls dial again. False without a connection.
    #[doc(hidden)]
    pub fn disconnect(&self, peer: NodeId) -> bool {
        self.inner.host.peer(peer).map(|conn| conn.close()).is_ok()
    }

    /// Writes raw bytes to `peer` on the connection's control lane, as a faulty
    /// sender would (for tests of malformed input). False without a connection.
    #[doc(hidden)]
    pub fn inject_raw(&self, peer: NodeId, bytes: Vec<u8>) -> bool {
        self.inner
            .host
            .peer(peer)
            .is_ok_and(|conn| conn.send_raw(crate::remote::connection::Lane::Control, bytes))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.host.id()
    }

    /// This run of the node: a new value every time it starts.
    pub fn incarnation(&self) -> u64 {
        self.inner.host.incarnation()
    }

    /// The remote half of this node.
    pub(crate) fn host(&self) -> &Arc<Host> {
        &self.inner.host
    }

    pub(crate) fn limits(&self) -> &Limits {
        self.inner.host.limits()
    }

    pub(crate) fn factory_table(&self) -> &crate::spawn::Factories {
        &self.inner.factories
    }

    pub(crate) fn downgrade(&self) -> WeakNode {
        WeakNode {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Exports the actor behind `r` (a local actor) so that peers can call it, and
    /// returns its object id. References sent in calls are exported automatically;
    /// this is for bootstrapping (a well-known object such as a registry).
    pub fn export<R: Interface>(&self, r: &R) -> Result<ObjectId, CallError>
    where
        R::Msg: Unmarshal,
    {
        match r.core().route() {
            Route::Local(local) => {
                let id = self.inner.host.export_route(local);
                self.inner.host.pin(id);
                Ok(id)
            }
            Route::Remote(_) => Err(CallError::NoSuchObject),
        }
    }

    /// A reference to object `object` exported by node `node` (this node, or a peer
    /// this node is connected to).
    pub fn reference<R: Interface>(&self, node: NodeId, object: ObjectId) -> Result<R, CallError>
    where
        R::Msg: Unmarshal,
    {
        let incarnation = if node == self.id() {
            self.incarnation()
        } else {
            self.inner.host.peer(node)?.peer.incarnation
        };
        let wire = WireRef {
            node,
            incarnation,
            object,
            interface: <R::Msg as Unmarshal>::INTERFACE_ID,
            addr: None,
        };
        self.resolve(&wire)
    }

    /// Exports the actor behind `r` under a chosen, well-known id (as RMI's registry
    /// lives under a fixed object id), so peers can reach it knowing only this
    /// node's address. It is a service of the node: no other node may stop it,
    /// whatever [`NodeBuilder::allow_control_from`] says. Fails with [`CallError::InterfaceMismatch`] if the id is taken
    /// or the actor is already exported under another id, and with
    /// [`CallError::NoSuchObject`] for an actor on another node.
    ///
    /// An id whose actor has stopped is free again: exporting a fresh actor under
    /// it replaces the stopped one, which is how a well-known service comes back
    /// after it stopped. Peers' references to the id reach the fresh actor from
    /// their next call on (calls from other nodes are routed by object id); a
    /// reference this node took earlier with [`Node::reference`] still names the
    /// stopped actor, so take a new one.
    pub fn export_as<R: Interface>(&self, r: &R, id: ObjectId) -> Result<(), CallError>
    where
        R::Msg: Unmarshal,
    {
        let Route::Local(local) = r.core().route() else {
            return Err(CallError::NoSuchObject);
        };
        self.inner.host.export_as(local, id)
    }

    /// `r` as plain data ([`WireRef`]): what a naming service stores, and
    /// [`Node::resolve`] turns back into a proxy on any node of the cluster. A local
    /// actor is exported on first use.
    pub fn wire_ref<R: Interface>(&self, r: &R) -> WireRef
    where
        R::Msg: Unmarshal,
    {
        match r.core().route() {
            Route::Local(local) => local_wire(local, None),
            Route::Remote(remote) => remote.wire(),
        }
    }

    /// A typed proxy for `wire`: local if the object lives here, otherwise over the
    /// connection to its node (dialed at `wire.addr` on the first call if there is
    /// none). Fails with [`CallError::InterfaceMismatch`] if the object has another
    /// interface, and [`CallError::NodeRestarted`] if its node has restarted since.
    pub fn resolve<R: Interface>(&self, wire: &WireRef) -> Result<R, CallError>
    where
        R::Msg: Unmarshal,
    {
        let route = Route::import(&self.inner.host, wire, None)?;
        Ok(R::from_core(RefCore::new(
            route,
            self.inner.default_timeout,
        )))
    }

    /// Whether [`Node::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Where the node serves its Prometheus metrics
    /// ([`NodeBuilder::metrics`]); none if it does not, or once it has shut
    /// down.
    #[cfg(feature = "metrics")]
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.metrics.lock().as_ref().map(|e| e.addr())
    }

    /// The node's counters now.
    pub fn stats(&self) -> NodeStats {
        let (handshakes, handshakes_retried, handshakes_refused) =
            self.inner.host.handshake_counts();
        let refusals = self.inner.host.refusals();
        NodeStats {
            actors: self.inner.live.load(Ordering::Acquire),
            exactly_once_replies: self.inner.host.once_table().remembered(),
            exports: self.inner.host.export_count(),
            leases_granted: self.inner.host.granted_leases().count(),
            leases_held: self.inner.host.held_leases().count(),
            connections: self.inner.host.connection_count(),
            bytes_received: self.inner.host.bytes_received(),
            monitors: self.inner.host.monitor_count(),
            queued_bytes: self.inner.host.queued_bytes(),
            calls_held: self.inner.host.calls_held(),
            call_lanes: self.inner.host.call_lanes(),
            receiving_bytes: self.inner.host.receiving_bytes(),
            handshakes,
            handshakes_retried,
            handshakes_refused,
            asks_dropped: self
                .inner
                .host
                .asks_dropped()
                .load(std::sync::atomic::Ordering::Relaxed),
            impostors_refused: Refusals::read(&refusals.impostors),
            exits_refused: Refusals::read(&refusals.exits),
            monitors_refused: Refusals::read(&refusals.monitors),
            monitored: self.inner.host.monitored_count(),
            lease_ids_ignored: Refusals::read(&refusals.lease_ids),
            pipe_ends: self.inner.host.pipe_end_count(),
            pipe_streams: self.inner.host.pipe_stream_count(),
            calls_cancelled: Refusals::read(&self.inner.host.given_up().cancelled),
            calls_expired: Refusals::read(&self.inner.host.given_up().expired),
            cancels_ignored: Refusals::read(&refusals.cancels),
        }
    }

    /// Stops every actor (each finishes its current message, queued callers get
    /// `ActorStopped`, `on_stop` runs with [`StopReason::Shutdown`]) and returns when
    /// all have finished. Actors spawned afterwards stop at once.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::SeqCst);
        #[cfg(feature = "metrics")]
        drop(inner.metrics.lock().take());
        inner.host.close();
        // Collected first: stopping an idle actor may finish it at once, and its
        // removal from the table must not run under our iteration's shard lock.
        let actors: Vec<Arc<dyn Control>> = inner
            .actors
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        for actor in actors {
            actor.stop(StopReason::Shutdown);
        }
        loop {
            let notified = inner.all_stopped.notified();
            if inner.live.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        // Then the connections: peers see NodeDown for anything still in flight,
        // as soon as the close reaches them (waited for, so that a process that
        // exits next still says goodbye).
        inner.host.close_connections();
        inner.host.connections_closed(CLOSE_WITHIN).await;
        tracing::debug!(node = ?inner.host.name(), "node shut down");
    }

    /// Runs an actor's task on the node's runtime.
    pub(crate) fn spawn_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner.runtime.spawn(task);
    }

    /// Counts a message dropped unrun because nobody waited for it.
    pub(crate) fn count_unwanted(&self, why: crate::local::cancel::Unwanted) {
        use crate::local::cancel::Unwanted;
        let given_up = self.inner.host.given_up();
        match why {
            // Counted by its reply slot, with the asks of a lost connection.
            Unwanted::CallerGone => {}
            Unwanted::Cancelled => Refusals::count(&given_up.cancelled, 1),
            Unwanted::Expired => Refusals::count(&given_up.expired, 1),
        }
    }

    /// Called by an actor's task as it ends.
    pub(crate) fn forget(&self, cell: &ActorCell) {
        self.inner.actors.remove(&cell.id);
        if self.inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.all_stopped.notify_waiters();
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.host.name())
            .field("actors", &self.inner.live.load(Ordering::Relaxed))
            .finish()
    }
}

/// The first address `addr` names (a host name is looked up).
async fn resolve(addr: &str) -> Option<std::net::SocketAddr> {
    tokio::net::lookup_host(addr).await.ok()?.next()
}

/// A random incarnation number (uuid v4's randomness, without another dependency).
fn rand_incarnation() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}
