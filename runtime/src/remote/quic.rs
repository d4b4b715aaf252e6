//! The QUIC transport: one connection per node pair, mutual TLS under the cluster
//! root, and streams laid out so that order holds per (sender, target) while
//! targets rarely wait for each other.
//!
//! - A control stream (opened by the dialer) carries the `Hello`s, pings, leases,
//!   monitors and credit.
//! - Calls go out on at most [`MAX_LANES`] bidirectional streams per side, one per
//!   call lane (see [`protocol`](super::protocol): a target stays on its lane while
//!   it has calls outstanding); replies come back on the receive half. A 64 MiB
//!   argument to one actor holds up only the lane it is on.
//! - Stream limits start at the control stream alone: a peer that has not said
//!   `Hello` can open nothing else. After the handshake they are raised to the
//!   lanes the peer may open.
//! - Every stream has a writer task that batches whatever frames are queued into
//!   one write, and a reader task with its own frame buffer: an oversize frame
//!   resets that stream alone.
//! - Keep-alives and an idle timeout notice a dead peer (default: within 6 s).
//! - Incoming handshakes are admitted within a budget (`handshakes.rs`): past a
//!   threshold a client proves its address with a QUIC Retry first, past a maximum
//!   it is refused, and each handshake has the peer timeout for TLS and again for
//!   its `Hello`.

use crate::hash::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use rustls_pki_types::CertificateDer;

use super::backlog::Backlog;
use super::connection::{Connection, Lane, LaneReader, Transport};
use super::handshakes::{Admission, HandshakeLimits, Handshakes};
use super::host::Host;
use super::outbox::Outbox;
use super::pipes::MAX_PIPE_STREAMS;
use super::protocol::MAX_LANES;
use super::stream_reader::StreamReader;
use crate::error::{CallError, NodeLabel};
use crate::remote::tls::{common_name, Credentials, NODE_NAME};
use crate::wire::codec::{encode, FrameReader, Limits};
use crate::wire::{Incoming, Session, SessionError};

const ALPN: &[u8] = b"remora/1";
/// QUIC application error codes.
const CLOSE_PROTOCOL: u32 = 2;
/// The peer's `Hello` claimed a node id its certificate does not prove.
const CLOSE_IMPOSTOR: u32 = 4;

/// How a node's QUIC endpoint behaves.
#[derive(Clone, Debug)]
pub(crate) struct QuicConfig {
    pub(crate) idle_timeout: Duration,
    /// How long a dial waits for the peer's TLS handshake.
    pub(crate) connect_timeout: Duration,
    pub(crate) handshakes: HandshakeLimits,
}

/// Bytes quinn buffers for an incoming connection the acceptor has not decided on
/// yet, beyond its first datagram (more of its Initial; Remora uses no 0-RTT).
const INCOMING_BUFFER: u64 = 64 << 10;
/// The same, for all such connections together.
const INCOMING_BUFFER_TOTAL: u64 = 4 << 20;
/// How long a Retry token proves its client's address: long enough for any round
/// trip, short enough that a token seen once is soon useless.
const RETRY_TOKEN_LIFETIME: Duration = Duration::from_secs(5);

/// A node's QUIC endpoint: accepts peers (when listening) and dials them.
pub(crate) struct Endpoint {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    /// How long an incoming peer has for TLS, and then again for its `Hello` (the
    /// peer timeout).
    hello_within: Duration,
    /// How long a dial waits for the peer's TLS handshake.
    connect_within: Duration,
    /// Incoming handshakes in flight, and those turned away.
    handshakes: Arc<Handshakes>,
}

fn transport(config: &QuicConfig) -> Result<quinn::TransportConfig, String> {
    let mut transport = quinn::TransportConfig::default();
    // QUIC restarts its idle timer when it sends its first ack-eliciting packet
    // (here, a keep-alive) after the peer's last one: a silent peer is given up
    // after the idle timeout plus up to a keep-alive interval. Three quarters and
    // a quarter of the peer timeout make that the peer timeout, as documented,
    // with three keep-alives in each idle period, as before.
    let peer_timeout = config.idle_timeout;
    let idle = quinn::IdleTimeout::try_from(peer_timeout * 3 / 4).map_err(|e| e.to_string())?;
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(peer_timeout / 4))
        // The control stream until the peer has said Hello (see `establish`).
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        // Room for large arguments in flight on a few lanes at once.
        .stream_receive_window((8u32 << 20).into())
        .receive_window((32u32 << 20).into())
        .send_window(32 << 20);
    Ok(transport)
}

/// A TLS handshake refused for a certificate of another cluster root (we
/// refused theirs, or they ours), with what to do about it.
fn explain_handshake(reason: String) -> String {
    const FOREIGN: [&str; 5] = [
        "invalid peer certificate",
        "UnknownCA",
        "UnknownIssuer",
        "BadCertificate",
        "DecryptError",
    ];
    if !FOREIGN.iter().any(|sign| reason.contains(sign)) {
        return reason;
    }
    format!(
        "{reason}: the two nodes' certificates are not signed by this node's cluster root \
         (each trusts only its own); both nodes must load the same cluster directory: \
         `remora cert init DIR` (or Credentials::create_cluster) once, then \
         `.credentials(DIR)` on each node"
    )
}

fn tls_error(e: impl std::fmt::Display) -> String {
    format!("TLS configuration: {e}")
}

impl Endpoint {
    /// Binds `addr` (port 0: any free port) with the node's credentials.
    pub(crate) fn bind(
        addr: SocketAddr,
        credentials: &Credentials,
        config: &QuicConfig,
    ) -> Result<Endpoint, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(credentials.root.clone()).map_err(tls_error)?;
        let roots = Arc::new(roots);
        let key = (*credentials.key).clone_key();

        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(tls_error)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(credentials.chain.clone(), key.clone_key())
            .map_err(tls_error)?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let server =
            quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(tls_error)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(Arc::new(transport(config)?));
        // What quinn holds for connection attempts the acceptor has yet to decide on
        // (it refuses more at once): bounded like the handshakes themselves.
        server
            .max_incoming(config.handshakes.incoming_queue())
            .incoming_buffer_size(INCOMING_BUFFER)
            .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL)
            .retry_token_lifetime(RETRY_TOKEN_LIFETIME);

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(credentials.chain.clone(), key)
            .map_err(tls_error)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        let client =
            quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(tls_error)?;
        let mut client = quinn::ClientConfig::new(Arc::new(client));
        client.transport_config(Arc::new(transport(config)?));

        let cannot_bind = |e: std::io::Error| format!("cannot bind {addr}: {e}");
        let socket = std::net::UdpSocket::bind(addr).map_err(cannot_bind)?;
        let runtime = quinn::default_runtime().ok_or("no async runtime to bind on")?;
        let (reset_key, cid_key) = credentials.restart_keys();
        let mut resets = quinn::EndpointConfig::new(Arc::new(reset_key));
        resets.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let endpoint =
            quinn::Endpoint::new(resets, Some(server), socket, runtime).map_err(cannot_bind)?;
        Ok(Endpoint {
            endpoint,
            client,
            hello_within: config.idle_timeout,
            connect_within: config.connect_timeout,
            handshakes: Handshakes::new(config.handshakes),
        })
    }

    /// Incoming handshakes in flight, and those turned away.
    pub(crate) fn handshakes(&self) -> &Handshakes {
        &self.handshakes
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Accepts peers until the endpoint closes, within the handshake budget: each
    /// connection attempt is accepted, asked to prove its address (Retry) or
    /// refused, before the node keeps any state for it.
    pub(crate) fn spawn_acceptor(&self, node: Weak<Host>, limits: Limits) {
        let endpoint = self.endpoint.clone();
        let handshakes = self.handshakes.clone();
        let hello_within = self.hello_within;
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let remote = incoming.remote_address();
                let proved = incoming.remote_address_validated();
                let handshake = match handshakes.admit(remote.ip(), proved) {
                    Admission::Accept(handshake) => handshake,
                    Admission::Retry => {
                        // quinn lets any unproved address be retried; were it not
                        // to, the attempt is refused, never accepted past the budget.
                        if let Err(err) = incoming.retry() {
                            err.into_incoming().refuse();
                            handshakes.count_refused();
                        }
                        continue;
                    }
                    Admission::Refuse => {
                        incoming.refuse();
                        continue;
                    }
                };
                let node = node.clone();
                tokio::spawn(async move {
                    if let Err(err) = accept(node, incoming, limits, hello_within).await {
                        tracing::warn!(%remote, %err, "incoming handshake failed");
                    }
                    // The handshake is over: done, failed or out of time.
                    drop(handshake);
                });
            }
        });
    }

    /// Dials `addr` and completes the Remora handshake.
    pub(crate) async fn dial(
        &self,
        node: Weak<Host>,
        addr: SocketAddr,
        limits: Limits,
    ) -> Result<Arc<Connection>, CallError> {
        let failed = |reason: String| CallError::ConnectFailed {
            node: None,
            label: NodeLabel::new(None, Some(&addr.to_string())),
            reason,
        };
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, NODE_NAME)
            .map_err(|e| failed(e.to_string()))?;
        // An address where nothing answers fails at the connect timeout, not at
        // QUIC's idle timeout.
        let quic = match tokio::time::timeout(self.connect_within, connecting).await {
            Ok(connected) => connected.map_err(|e| failed(explain_handshake(e.to_string())))?,
            Err(_) => {
                return Err(failed(format!(
                    "no answer within {:?} (the connect timeout)",
                    self.connect_within
                )))
            }
        };
        establish(node, quic, true, limits, self.hello_within)
            .await
            .map_err(|e| match e {
                CallError::ConnectFailed { reason, .. } => failed(reason),
                other => other,
            })
    }

    pub(crate) fn close(&self) {
        self.endpoint.close(0u32.into(), b"node shut down");
    }

    /// Waits (at most `within`) until every connection's close has been sent
    /// and acknowledged or timed out: a process that exits right after
    /// shutting its node down still tells its peers, which otherwise would
    /// notice only at their peer timeout.
    pub(crate) async fn closed(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.endpoint.wait_idle()).await;
    }
}

#[cfg(test)]
impl Endpoint {
    /// A QUIC connection to `addr` (TLS, no Remora handshake), for tests of
    /// what runs on its streams.
    pub(crate) async fn dial_raw(
        &self,
        addr: SocketAddr,
        name: &str,
    ) -> Result<quinn::Connection, String> {
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, name)
            .map_err(|e| e.to_string())?;
        connecting.await.map_err(|e| e.to_string())
    }

    /// The next incoming QUIC connection (TLS, no Remora handshake).
    pub(crate) async fn accept_raw(&self) -> Result<quinn::Connection, String> {
        let incoming = self.endpoint.accept().await.ok_or("the endpoint closed")?;
        incoming.await.map_err(|e| e.to_string())
    }
}

/// TLS, then the Remora handshake, of an incoming connection, each within
/// `hello_within`. quinn sets no deadline on a handshake, and its idle timeout
/// restarts with every packet: a client that kept sending PINGs would hold the
/// handshake open for as long as it liked.
async fn accept(
    node: Weak<Host>,
    incoming: quinn::Incoming,
    limits: Limits,
    hello_within: Duration,
) -> Result<Arc<Connection>, String> {
    // Dropping the unfinished handshake (on time-out) closes it.
    let quic = match tokio::time::timeout(hello_within, incoming).await {
        Ok(Ok(quic)) => quic,
        Ok(Err(err)) => return Err(format!("TLS handshake failed: {err}")),
        Err(_) => return Err(format!("no TLS handshake within {hello_within:?}")),
    };
    establish(node, quic, false, limits, hello_within)
        .await
        .map_err(|err| err.to_string())
}

/// Exchanges `Hello`s on the control stream and sets the connection up.
async fn establish(
    node: Weak<Host>,
    quic: quinn::Connection,
    dialer: bool,
    limits: Limits,
    hello_within: Duration,
) -> Result<Arc<Connection>, CallError> {
    let failed = |reason: String| CallError::ConnectFailed {
        node: None,
        label: NodeLabel::new(None, Some(&quic.remote_address().to_string())),
        reason,
    };
    let me = node
        .upgrade()
        .ok_or_else(|| failed("node shut down".into()))?;
    // A peer that completed TLS but never says Hello is not kept (the keep-alive
    // alone would keep it forever): it gets the peer timeout to do so.
    let greeted = tokio::time::timeout(hello_within, greet(&quic, &me, dialer, limits)).await;
    let (send, recv, session, reader, peer) = match greeted {
        Ok(greeted) => greeted.map_err(|e| match e {
            CallError::ConnectFailed { reason, .. } => failed(reason),
            other => other,
        })?,
        Err(_) => {
            quic.close(CLOSE_PROTOCOL.into(), b"no Hello in time");
            return Err(failed(format!("no Hello within {hello_within:?}")));
        }
    };
    let identity = match authenticate(&quic, &peer) {
        Ok(name) => name,
        Err(reason) => {
            me.impostor_refused();
            tracing::warn!(
                remote = %quic.remote_address(),
                claimed = %peer.node,
                %reason,
                "refused a peer claiming a node id its certificate does not prove"
            );
            quic.close(CLOSE_IMPOSTOR.into(), reason.as_bytes());
            return Err(failed(reason));
        }
    };
    // The peer said Hello: it may open its call lanes now (and the control stream).
    quic.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(MAX_LANES as u32 + 1));
    // And a stream per pipe stream it sends items on.
    quic.set_max_concurrent_uni_streams(quinn::VarInt::from_u32(MAX_PIPE_STREAMS as u32));
    let transport = Arc::new(QuicTransport {
        quic: quic.clone(),
        control: Outbox::open(send, None),
        backlog: Arc::default(),
        calls: Mutex::new(Vec::new()),
        replies: Mutex::new(HashMap::default()),
        pipes: Mutex::new(HashMap::default()),
        conn: OnceLock::new(),
    });
    let dialed_by = if dialer { me.id() } else { peer.node };
    let conn = Connection::start(
        Arc::downgrade(&me),
        session,
        identity,
        Box::new(QuicHandle(transport.clone())),
        limits,
        dialed_by,
    );
    let _ = transport.conn.set(Arc::downgrade(&conn));
    // Both nodes may have dialed at once: the connection dialed by the smaller node
    // id stays (both sides decide alike); the other is retired after a grace period,
    // but serves its streams until then.
    let kept = me.add_peer(conn.clone());
    // The control stream: pings (and whatever followed the Hello).
    StreamReader::spawn(conn.clone(), recv, Lane::Control, Some(reader));
    // Streams the peer opens to send a pipe stream's items (each ends with its
    // `PipeEnd`, then the peer finishes it).
    tokio::spawn({
        let conn = conn.clone();
        let quic = quic.clone();
        async move {
            while let Ok(recv) = quic.accept_uni().await {
                StreamReader::spawn(conn.clone(), recv, Lane::Control, None);
            }
        }
    });
    // Streams the peer opens to call our objects.
    tokio::spawn({
        let conn = conn.clone();
        let transport = transport.clone();
        let node = node.clone();
        async move {
            let lanes = AtomicU64::new(1);
            let lost = loop {
                match quic.accept_bi().await {
                    Ok((send, recv)) => {
                        let lane = lanes.fetch_add(1, Ordering::Relaxed);
                        let outbox = Outbox::open(send, Some(transport.backlog.clone()));
                        transport.replies.lock().insert(lane, outbox);
                        StreamReader::spawn(conn.clone(), recv, Lane::Reply(lane), None);
                    }
                    Err(lost) => break lost,
                }
            };
            if matches!(lost, quinn::ConnectionError::Reset) {
                // The peer's address answered with a stateless reset: the
                // process we spoke to lost its state, and a new one holding its
                // key listens there (see `Credentials::reset_key`).
                let dialed = match (node.upgrade(), &conn.peer.listen) {
                    (Some(host), Some(addr)) => Some(host.look_for_restart(conn.peer.node, addr)),
                    _ => None,
                };
                if let Some(dialed) = dialed {
                    // The dial is bounded by the connect timeout.
                    let _ = dialed.await;
                }
            }
            // The connection is gone (closed, timed out, reset): fail what is in flight.
            conn.close();
        }
    });
    Ok(kept)
}

/// The Remora handshake on an authenticated QUIC connection: the control stream
/// (opened by the dialer), our `Hello` out, the peer's in. Whatever followed the
/// peer's `Hello` stays in the returned reader.
async fn greet(
    quic: &quinn::Connection,
    me: &Host,
    dialer: bool,
    limits: Limits,
) -> Result<
    (
        quinn::SendStream,
        quinn::RecvStream,
        Session,
        FrameReader,
        crate::wire::Hello,
    ),
    CallError,
> {
    let failed = |reason: String| CallError::ConnectFailed {
        node: None,
        label: NodeLabel::new(None, Some(&quic.remote_address().to_string())),
        reason,
    };
    let (mut send, mut recv) = if dialer {
        quic.open_bi().await
    } else {
        quic.accept_bi().await
    }
    .map_err(|e| failed(e.to_string()))?;
    let listen = me.public_addr();
    let mut session = Session::new(me.id(), me.incarnation(), listen, &limits).named(me.name());
    let mut hello = Vec::new();
    encode(&session.hello(), &mut hello, &limits).map_err(|e| failed(e.to_string()))?;
    send.write_all(&hello)
        .await
        .map_err(|e| failed(e.to_string()))?;

    // Read up to the peer's Hello; whatever follows it stays in `reader`.
    let mut reader = FrameReader::new(limits);
    let peer = loop {
        if let Some(frame) = reader.next_frame().map_err(|e| failed(e.to_string()))? {
            match session.receive(frame) {
                Ok(Incoming::Ready(peer)) => break peer,
                Err(SessionError::Refused(err)) => {
                    quic.close(CLOSE_PROTOCOL.into(), err.to_string().as_bytes());
                    return Err(err);
                }
                _ => return Err(failed("protocol violation in the handshake".into())),
            }
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => reader
                .extend(&chunk.bytes)
                .map_err(|e| failed(e.to_string()))?,
            Ok(None) => return Err(failed("the peer closed the handshake".into())),
            Err(e) => return Err(failed(e.to_string())),
        }
    };
    Ok((send, recv, session, reader, peer))
}

/// Checks that the node id the peer announced in `hello` is the one its
/// certificate proves (see [`NodeId`](crate::NodeId): the id is bound to the
/// certificate and the incarnation), and returns the peer's name: the Common Name
/// of that certificate, which the TLS handshake verified against the cluster root
/// (both ways: client certificates are required). A certificate without one names
/// an anonymous member, `remora-node`.
fn authenticate(quic: &quinn::Connection, hello: &crate::wire::Hello) -> Result<String, String> {
    let chain = quic
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok());
    let Some(leaf) = chain.as_ref().and_then(|chain| chain.first()) else {
        return Err("the peer presented no certificate".into());
    };
    if crate::NodeId::bound_to(leaf, hello.incarnation) != hello.node {
        return Err(format!(
            "node id {} is not the one this certificate proves for incarnation {}",
            hello.node, hello.incarnation
        ));
    }
    Ok(common_name(leaf).unwrap_or_else(|| {
        tracing::debug!(remote = %quic.remote_address(), "peer certificate without a common name");
        NODE_NAME.to_owned()
    }))
}

struct QuicTransport {
    quic: quinn::Connection,
    control: Arc<Outbox>,
    /// Our call lanes to the peer, by number, opened on first use.
    calls: Mutex<Vec<CallLane>>,
    /// Send halves of the streams the peer opened to call us.
    replies: Mutex<HashMap<u64, Arc<Outbox>>>,
    /// Our pipe streams' items, a QUIC stream each, opened on first use.
    pipes: Mutex<HashMap<u64, Arc<Outbox>>>,
    /// Bytes queued in `replies`.
    backlog: Arc<Backlog>,
    conn: OnceLock<Weak<Connection>>,
}

/// One of our call lanes: a stream we opened, calls out, replies back.
struct CallLane {
    outbox: Arc<Outbox>,
    /// Its receive half's reader, once the stream is open.
    reader: Arc<OnceLock<Arc<StreamReader>>>,
}

/// The transport as the connection holds it.
struct QuicHandle(Arc<QuicTransport>);

impl QuicHandle {
    /// The outbox of `lane`, opening a call or pipe stream on first use; None
    /// for a reply lane whose stream the peer finished (what answered it is
    /// dropped).
    fn outbox(&self, lane: Lane) -> Option<Arc<Outbox>> {
        let transport = &self.0;
        match lane {
            Lane::Control => Some(transport.control.clone()),
            Lane::Reply(n) => transport.replies.lock().get(&n).cloned(),
            Lane::Call(lane) => {
                let mut calls = transport.calls.lock();
                // Lanes are numbered in the order the core opens them.
                while calls.len() <= usize::from(lane) {
                    let opened = transport.open_call_stream();
                    calls.push(opened);
                }
                Some(calls[usize::from(lane)].outbox.clone())
            }
            Lane::Pipe(stream) => Some(
                transport
                    .pipes
                    .lock()
                    .entry(stream)
                    .or_insert_with(|| transport.open_pipe_stream())
                    .clone(),
            ),
        }
    }
}

impl Transport for QuicHandle {
    fn send(&self, lane: Lane, frame: Vec<u8>) -> bool {
        self.outbox(lane).is_none_or(|outbox| outbox.send(frame))
    }

    fn send_corked(&self, lane: Lane, frame: &[u8]) -> bool {
        self.outbox(lane)
            .is_none_or(|outbox| outbox.send_corked(frame))
    }

    fn send_lent(&self, lane: Lane, frame: &[u8]) -> bool {
        self.outbox(lane)
            .is_none_or(|outbox| outbox.send_lent(frame))
    }

    fn burst(&self, handle: &mut dyn FnMut()) {
        super::outbox::burst(handle)
    }

    fn close(&self) {
        self.0.quic.close(CLOSE_PROTOCOL.into(), b"closed");
    }

    fn round_trip(&self) -> Duration {
        self.0.quic.rtt()
    }

    fn quic_stats(&self) -> Option<quinn::ConnectionStats> {
        Some(self.0.quic.stats())
    }

    fn lane_done(&self, lane: Lane) {
        if let Lane::Pipe(stream) = lane {
            if let Some(outbox) = self.0.pipes.lock().remove(&stream) {
                outbox.finish();
            }
        }
    }

    fn lane_closed(&self, lane: Lane) {
        if let Lane::Reply(n) = lane {
            // Our half goes too (finished), so that the stream no longer counts
            // against what the peer may open.
            self.0.replies.lock().remove(&n);
        }
    }

    fn replies_backlog(&self) -> Option<&Backlog> {
        Some(&self.0.backlog)
    }

    fn reader(&self, lane: u16) -> Option<Arc<dyn LaneReader>> {
        let calls = self.0.calls.lock();
        let reader = calls.get(usize::from(lane))?.reader.get()?;
        Some(reader.clone())
    }

    fn queued(&self) -> usize {
        let transport = &self.0;
        let calls: Vec<Arc<Outbox>> = (transport.calls.lock().iter())
            .map(|lane| lane.outbox.clone())
            .collect();
        let replies: Vec<Arc<Outbox>> = transport.replies.lock().values().cloned().collect();
        let pipes: Vec<Arc<Outbox>> = transport.pipes.lock().values().cloned().collect();
        let outboxes = calls
            .iter()
            .chain(&replies)
            .chain(&pipes)
            .chain([&transport.control]);
        outboxes.map(|outbox| outbox.queued()).sum()
    }
}

impl QuicTransport {
    /// A pipe stream's items: a unidirectional stream, opened by the writer task.
    fn open_pipe_stream(&self) -> Arc<Outbox> {
        let quic = self.quic.clone();
        Outbox::opening(async move { quic.open_uni().await.ok() })
    }

    /// A call lane to the peer: its stream is opened by the writer task, so frames
    /// queue (in order) until it is there.
    fn open_call_stream(&self) -> CallLane {
        let quic = self.quic.clone();
        let conn = self.conn.get().and_then(Weak::upgrade);
        let reader = Arc::new(OnceLock::new());
        let outbox = Outbox::opening({
            let reader = reader.clone();
            async move {
                let (send, recv) = quic.open_bi().await.ok()?;
                if let Some(conn) = conn {
                    // Replies to our calls come back on this stream's receive half.
                    let _ = reader.set(StreamReader::spawn(conn, recv, Lane::Control, None));
                }
                Some(send)
            }
        });
        CallLane { outbox, reader }
    }
}

/// How long a node waits without hearing from a peer before calling it down.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(6);
