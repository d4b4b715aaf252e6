//! A half-open handshake flood: real QUIC Initials (a fresh ClientHello each, as a
//! node's dialer sends them), from a few UDP sockets, never completed.
//!
//! The Initials are made by `quinn_proto` client endpoints (`connect`, then
//! `poll_transmit`) and sent from plain sockets; nothing answers the node's reply.
//! A flood that `validates` does answer a QUIC Retry (with the token it carries, as
//! a real client would) and then goes silent again: it has proved its address, so
//! the node's per-address and total limits are what stop it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::{ClientConfig, Connection, ConnectionHandle, DatagramEvent, EndpointEvent};

/// The name every node's certificate is issued for (the TLS server name).
const SERVER_NAME: &str = "remora-node";
/// The ALPN protocol nodes speak: the Initials look like a node's.
const ALPN: &[u8] = b"remora/1";
/// Connections a validating flood keeps per socket while it waits for their Retry.
const WAITING: usize = 4096;

/// A connection a validating flood keeps until its Retry comes.
type Kept = (ConnectionHandle, Connection);

/// Sends Initials to one node; see the module documentation.
pub struct Flood {
    target: SocketAddr,
    validate: bool,
    config: ClientConfig,
    sources: Vec<Source>,
    next: usize,
    buf: Vec<u8>,
    /// Initials made in advance: the socket to send each from, and its bytes.
    prepared: VecDeque<(usize, Vec<u8>)>,
    /// Initials sent (fresh ones, not the answers to a Retry).
    pub sent: u64,
    /// Retry packets the node sent back.
    pub retries: u64,
    /// Initials re-sent with a Retry token (validating floods only).
    pub answered: u64,
}

struct Source {
    socket: UdpSocket,
    endpoint: quinn_proto::Endpoint,
    /// Connections waiting for their Retry, oldest first (validating floods only).
    waiting: HashMap<ConnectionHandle, Connection>,
    order: VecDeque<ConnectionHandle>,
}

impl Flood {
    /// A flood of `target` from `sockets` loopback sockets; a `validate`-ing one
    /// answers Retry packets.
    pub fn new(target: SocketAddr, sockets: usize, validate: bool) -> io::Result<Flood> {
        let sources = (0..sockets.max(1))
            .map(|_| {
                let socket = UdpSocket::bind("127.0.0.1:0")?;
                socket.set_nonblocking(true)?;
                let endpoint = quinn_proto::Endpoint::new(Default::default(), None, false, None);
                Ok(Source {
                    socket,
                    endpoint,
                    waiting: HashMap::new(),
                    order: VecDeque::new(),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Flood {
            target,
            validate,
            config: client_config(),
            sources,
            next: 0,
            buf: Vec::with_capacity(2048),
            prepared: VecDeque::new(),
            sent: 0,
            retries: 0,
            answered: 0,
        })
    }

    /// Sends `initials` fresh Initials, round-robin over the sockets, then reads
    /// what came back (see [`Flood::answer`]).
    pub fn send(&mut self, initials: usize) -> io::Result<()> {
        for _ in 0..initials {
            let (at, conn) = self.initial()?;
            let source = &mut self.sources[at];
            send_to(&source.socket, &self.buf, self.target)?;
            self.sent += 1;
            if let Some((handle, conn)) = conn {
                source.wait(handle, conn);
            }
        }
        self.answer()
    }

    /// Makes `initials` Initials now, for [`Flood::send_prepared`] to send later:
    /// a flood faster than Initials can be made. Only for a flood that does not
    /// validate (it keeps nothing to answer a Retry with).
    pub fn prepare(&mut self, initials: usize) -> io::Result<()> {
        assert!(
            !self.validate,
            "a validating flood makes its Initials as it goes"
        );
        for _ in 0..initials {
            let (at, _) = self.initial()?;
            self.prepared.push_back((at, self.buf.clone()));
        }
        Ok(())
    }

    /// Sends up to `initials` of the prepared Initials, then reads what came back;
    /// how many were sent (fewer once none is left).
    pub fn send_prepared(&mut self, initials: usize) -> io::Result<usize> {
        let mut sent = 0;
        while sent < initials {
            let Some((at, datagram)) = self.prepared.pop_front() else {
                break;
            };
            send_to(&self.sources[at].socket, &datagram, self.target)?;
            sent += 1;
        }
        self.sent += sent as u64;
        self.answer()?;
        Ok(sent)
    }

    /// A fresh Initial in `buf`: the socket it is for, and its connection if a
    /// validating flood must keep it to answer the Retry.
    fn initial(&mut self) -> io::Result<(usize, Option<Kept>)> {
        let now = Instant::now();
        let at = self.next;
        self.next = (at + 1) % self.sources.len();
        let source = &mut self.sources[at];
        let (handle, mut conn) = source
            .endpoint
            .connect(now, self.config.clone(), self.target, SERVER_NAME)
            .map_err(io::Error::other)?;
        self.buf.clear();
        let transmit = conn
            .poll_transmit(now, 1, &mut self.buf)
            .ok_or_else(|| io::Error::other("a new connection has its Initial to send"))?;
        self.buf.truncate(transmit.size);
        if self.validate {
            return Ok((at, Some((handle, conn))));
        }
        source.forget(handle);
        Ok((at, None))
    }

    /// Reads whatever the node sent back; a validating flood answers each Retry
    /// with a new Initial bearing its token, and nothing else.
    pub fn answer(&mut self) -> io::Result<()> {
        let mut datagram = [0u8; 2048];
        for source in &mut self.sources {
            loop {
                let (len, from) = match source.socket.recv_from(&mut datagram) {
                    Ok(received) => received,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // An ICMP error surfacing on the socket: nothing to read.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                    Err(e) => return Err(e),
                };
                // A long-header packet of type Retry (QUIC v1): 0b1111_xxxx.
                if len == 0 || datagram[0] & 0xf0 != 0xf0 {
                    continue;
                }
                self.retries += 1;
                if !self.validate {
                    continue;
                }
                let now = Instant::now();
                self.buf.clear();
                let data = bytes::BytesMut::from(&datagram[..len]);
                let Some(DatagramEvent::ConnectionEvent(handle, event)) =
                    source
                        .endpoint
                        .handle(now, from, None, None, data, &mut self.buf)
                else {
                    continue;
                };
                let Some(mut conn) = source.waiting.remove(&handle) else {
                    continue;
                };
                conn.handle_event(event);
                self.buf.clear();
                if let Some(transmit) = conn.poll_transmit(now, 1, &mut self.buf) {
                    send_to(&source.socket, &self.buf[..transmit.size], from)?;
                    self.answered += 1;
                }
                source.forget(handle);
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flood")
            .field("target", &self.target)
            .field("validate", &self.validate)
            .field("sockets", &self.sources.len())
            .field("sent", &self.sent)
            .field("retries", &self.retries)
            .field("answered", &self.answered)
            .finish()
    }
}

impl Source {
    fn wait(&mut self, handle: ConnectionHandle, conn: Connection) {
        self.waiting.insert(handle, conn);
        self.order.push_back(handle);
        while self.order.len() > WAITING {
            let oldest = self.order.pop_front().expect("not empty");
            if self.waiting.remove(&oldest).is_some() {
                self.forget(oldest);
            }
        }
    }

    /// The client endpoint forgets the connection: its Initial is all it was for.
    fn forget(&mut self, handle: ConnectionHandle) {
        let _ = self.endpoint.handle_event(handle, EndpointEvent::drained());
    }
}

fn send_to(socket: &UdpSocket, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
    match socket.send_to(datagram, to) {
        Ok(_) => Ok(()),
        // A full send buffer loses the datagram, as the network would.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(e),
    }
}

/// A client configuration that trusts nobody: the flood never reads the node's
/// certificate.
fn client_config() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    ClientConfig::new(Arc::new(crypto))
}

/// One handshake kept alive without ever finishing: an Initial, then a PING in the
/// Initial space at each [`Lingering::ping`] (every packet restarts the node's idle
/// timer), and nothing the node sends back is read.
pub struct Lingering {
    socket: UdpSocket,
    /// Kept with the connection: it holds the connection's ids.
    _endpoint: quinn_proto::Endpoint,
    conn: Connection,
    target: SocketAddr,
    buf: Vec<u8>,
}

impl Lingering {
    /// Starts a handshake with `target`: its first Initial goes out now.
    pub fn start(target: SocketAddr) -> io::Result<Lingering> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        let mut endpoint = quinn_proto::Endpoint::new(Default::default(), None, false, None);
        // Nothing is ever acknowledged: a congestion window as large as the pings
        // it takes, or they would stop after a dozen.
        let mut window = quinn_proto::congestion::NewRenoConfig::default();
        window.initial_window(64 << 20);
        let mut transport = quinn_proto::TransportConfig::default();
        transport.congestion_controller_factory(Arc::new(window));
        let mut config = client_config();
        config.transport_config(Arc::new(transport));
        let (_, conn) = endpoint
            .connect(Instant::now(), config, target, SERVER_NAME)
            .map_err(io::Error::other)?;
        let mut lingering = Lingering {
            socket,
            _endpoint: endpoint,
            conn,
            target,
            buf: Vec::with_capacity(2048),
        };
        lingering.transmit()?;
        Ok(lingering)
    }

    /// Sends a PING (and whatever else the connection has queued).
    pub fn ping(&mut self) -> io::Result<()> {
        self.conn.ping();
        self.transmit()
    }

    fn transmit(&mut self) -> io::Result<()> {
        // Bounded: a connection left alone has a few datagrams queued at most.
        for _ in 0..16 {
            self.buf.clear();
            let Some(transmit) = self.conn.poll_transmit(Instant::now(), 1, &mut self.buf) else {
                break;
            };
            send_to(&self.socket, &self.buf[..transmit.size], self.target)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Lingering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lingering")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// What one [`flood_while_calling`] did, and what the node showed while it ran.
#[derive(Debug)]
pub struct Flooded {
    /// The flood, with its counts.
    pub flood: Flood,
    /// The most handshakes the node had in flight at any look.
    pub peak: usize,
    /// Calls the connected client completed while the flood ran.
    pub calls: u64,
}

/// Floods the node at `target` from four sockets, in rounds of 100 Initials,
/// for at least `rounds` rounds and until a client has completed 20 calls
/// during it (`calls` counts them; at most 300 rounds), looking at the node's
/// handshakes in flight (`handshakes` reads them, from this process or another)
/// meanwhile: none may pass `bound`.
pub async fn flood_while_calling<F, Fut>(
    target: SocketAddr,
    validate: bool,
    rounds: usize,
    calls: &Arc<AtomicU64>,
    bound: usize,
    mut handshakes: F,
) -> Flooded
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let before = calls.load(Ordering::SeqCst);
    let flooding = tokio::task::spawn_blocking({
        let calls = calls.clone();
        move || {
            let mut flood = Flood::new(target, 4, validate).expect("flood sockets");
            for round in 0..300 {
                if round >= rounds && calls.load(Ordering::SeqCst) >= before + 20 {
                    break;
                }
                flood.send(100).expect("flood sends");
                std::thread::sleep(Duration::from_millis(2));
                flood.answer().expect("flood reads");
            }
            flood
        }
    });
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + crate::SAFETY * 6;
    while !flooding.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood did not end"
        );
        let handshakes = handshakes().await;
        assert!(handshakes <= bound, "{handshakes} handshakes in flight");
        peak = peak.max(handshakes);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let flood = flooding.await.expect("the flood's thread");
    Flooded {
        flood,
        peak,
        calls: calls.load(Ordering::SeqCst) - before,
    }
}
