//! The in-process transport: nodes of one process connected by channels, running
//! the protocol the network transport runs. A value that holds no references moves
//! to the other node as it is (no encoding, no copy); anything holding a reference
//! is encoded and decoded exactly as across processes, so that references are
//! exported and imported as they would be. [`connect_serializing`] encodes every
//! call, to exercise the full path in tests.
//!
//! ```
//! use remora::{Actor, Node};
//!
//! #[remora::remote]
//! pub trait Echo {
//!     async fn echo(&mut self, v: u64) -> u64;
//! }
//! struct E;
//! impl Actor for E {}
//! impl Echo for E {
//!     async fn echo(&mut self, v: u64) -> u64 { v }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Node::builder().build().await?;
//! let client = Node::builder().build().await?;
//! let _wire = remora::remote::inproc::connect(&client, &server).await?;
//!
//! let echo: EchoRef = server.spawn(E);
//! let object = server.export(&echo)?;
//! let remote: EchoRef = client.reference(server.id(), object)?;
//! assert_eq!(remote.echo(7).await?, 7);
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::connection::{Connection, Drained, Lane, Step, Transport, ValueFrame};
use crate::error::{CallError, NodeLabel};
use crate::id::NodeId;
use std::sync::Weak;

use super::host::Host;
use crate::node::Node;
use crate::remote::tls::NODE_NAME;
use crate::wire::codec::{encode, FrameReader, Limits};
use crate::wire::{Incoming as SessionIncoming, Session, SessionError};

/// What the channel between two nodes carries: encoded frames, and (for values
/// without references) calls and replies moved as they are. One channel keeps them
/// in order.
/// Encoded frames are stamped when they were sent: in one process that is when
/// they arrived. A value frame is not: only a call needs its arrival (for its
/// deadline and its latency), and the reader reads the clock when it takes one.
enum Packet {
    Bytes(Vec<u8>, Instant),
    Value(ValueFrame),
}

struct ChannelTransport {
    tx: mpsc::UnboundedSender<Packet>,
    /// Whether plain values move unencoded (off in the serializing mode).
    values: bool,
}

/// One channel carries every lane: in one process a frame is handed over whole, so
/// lanes cannot hold each other up behind a partial write.
impl Transport for ChannelTransport {
    fn send(&self, _lane: Lane, frame: Vec<u8>) -> bool {
        self.tx.send(Packet::Bytes(frame, Instant::now())).is_ok()
    }

    fn carries_values(&self) -> bool {
        self.values
    }

    fn send_value(&self, _lane: Lane, frame: ValueFrame) -> bool {
        self.values && self.tx.send(Packet::Value(frame)).is_ok()
    }
}

/// The channels between two nodes; [`Wire::cut`] severs them as a network failure
/// would (both sides see their calls in flight fail with `NodeDown`).
pub struct Wire {
    cut: Arc<Cut>,
    /// Raw senders toward each side, for tests that feed a node bad bytes.
    to: [(NodeId, mpsc::UnboundedSender<Packet>); 2],
}

#[derive(Default)]
struct Cut {
    done: AtomicBool,
    notify: Notify,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("cut", &self.cut.done.load(Ordering::SeqCst))
            .finish()
    }
}

impl Wire {
    /// Sends raw bytes to `node` as if its peer had written them (for tests of
    /// malformed input). False if `node` is not on this wire or the wire is cut.
    #[doc(hidden)]
    pub fn inject(&self, node: &Node, bytes: Vec<u8>) -> bool {
        self.to
            .iter()
            .find(|(id, _)| *id == node.id())
            .is_some_and(|(_, tx)| tx.send(Packet::Bytes(bytes, Instant::now())).is_ok())
    }

    /// Severs the connection, as if the network between the two nodes failed.
    pub fn cut(&self) {
        self.cut.done.store(true, Ordering::SeqCst);
        self.cut.notify.notify_waiters();
    }
}

/// Connects two nodes of this process; returns once both sides are ready. Values
/// without references move between them unencoded.
pub async fn connect(a: &Node, b: &Node) -> Result<Wire, CallError> {
    connect_with(a, b, true).await
}

/// [`connect`], but every call and reply is encoded, framed and decoded, exactly as
/// between processes (frame limits included): for tests of the full path.
pub async fn connect_serializing(a: &Node, b: &Node) -> Result<Wire, CallError> {
    connect_with(a, b, false).await
}

async fn connect_with(a: &Node, b: &Node, values: bool) -> Result<Wire, CallError> {
    let (to_b, from_a) = mpsc::unbounded_channel();
    let (to_a, from_b) = mpsc::unbounded_channel();
    let cut = Arc::new(Cut::default());
    let (ready_a, a_ready) = oneshot::channel();
    let (ready_b, b_ready) = oneshot::channel();
    let to = [(a.id(), to_a.clone()), (b.id(), to_b.clone())];
    tokio::spawn(run(
        Arc::downgrade(a.host()),
        a.id(),
        a.incarnation(),
        *a.limits(),
        identity(b),
        from_b,
        ChannelTransport { tx: to_b, values },
        cut.clone(),
        ready_a,
    ));
    tokio::spawn(run(
        Arc::downgrade(b.host()),
        b.id(),
        b.incarnation(),
        *b.limits(),
        identity(a),
        from_a,
        ChannelTransport { tx: to_a, values },
        cut.clone(),
        ready_b,
    ));
    let refused = |_| CallError::ConnectFailed {
        node: None,
        label: NodeLabel::new(None, Some("in-process")),
        reason: "the connection closed during the handshake".into(),
    };
    a_ready.await.map_err(refused)??;
    b_ready.await.map_err(refused)??;
    Ok(Wire { cut, to })
}

/// Who `node` is to its peers in this process: the name its builder gave it. Both
/// ends live in this process, so the name needs no certificate to vouch for it.
fn identity(node: &Node) -> String {
    node.name().unwrap_or(NODE_NAME).to_owned()
}

/// One side of an in-process connection: handshake, then read frames until the
/// transport or the wire is cut. `peer_identity` is the other node's name.
#[allow(clippy::too_many_arguments)]
async fn run(
    node: Weak<Host>,
    id: NodeId,
    incarnation: u64,
    limits: Limits,
    peer_identity: String,
    rx: mpsc::UnboundedReceiver<Packet>,
    transport: ChannelTransport,
    cut: Arc<Cut>,
    ready: oneshot::Sender<Result<(), CallError>>,
) {
    let name = node
        .upgrade()
        .and_then(|host| host.name().map(str::to_owned));
    let mut session = Session::new(id, incarnation, None, &limits).named(name.as_deref());
    let mut hello = Vec::new();
    if encode(&session.hello(), &mut hello, &limits).is_err()
        || !transport.send(Lane::Control, hello)
    {
        return;
    }
    let mut reader = FrameReader::new(limits);
    let mut rx = Inbound::new(rx, cut);
    // The handshake: read up to the peer's Hello.
    let peer = loop {
        match reader.next_frame() {
            Ok(Some(frame)) => match session.receive(frame) {
                Ok(SessionIncoming::Ready(peer)) => break peer,
                Err(SessionError::Refused(err)) => {
                    let _ = ready.send(Err(err));
                    return;
                }
                _ => return finish(None, Some(ready)),
            },
            Ok(None) => match rx.next().await {
                Some(Packet::Bytes(bytes, _)) if reader.extend(&bytes).is_ok() => {}
                _ => return finish(None, Some(ready)),
            },
            Err(_) => return finish(None, Some(ready)),
        }
    };
    let Some(node) = node.upgrade() else { return };
    let dialer = peer.node;
    let conn = Connection::start(
        Arc::downgrade(&node),
        session,
        peer_identity,
        Box::new(transport),
        limits,
        dialer,
    );
    let conn = node.add_peer(conn);
    drop(node);
    let _ = ready.send(Ok(()));
    // One channel carries every lane, so an oversize frame drops the whole transport.
    let mut arrived = Instant::now();
    loop {
        match conn.drain(&mut reader, Lane::Reply(0), arrived).await {
            Drained::More => {}
            Drained::Reset | Drained::Close => return finish(Some(conn), None),
        }
        // Frames before this packet are drained: order holds across both kinds.
        match rx.next().await {
            Some(Packet::Bytes(bytes, sent)) if reader.extend(&bytes).is_ok() => {
                arrived = sent;
                conn.count_received(bytes.len());
            }
            Some(Packet::Value(frame)) => match conn.on_value(frame, Lane::Reply(0)) {
                Step::Continue => {}
                Step::Wait(waiting) => waiting.await,
                Step::Close => return finish(Some(conn), None),
            },
            _ => return finish(Some(conn), None),
        }
    }
}

/// The bytes from the peer, until the channel closes or the wire is cut.
struct Inbound {
    rx: mpsc::UnboundedReceiver<Packet>,
    cut: Arc<Cut>,
}

impl Inbound {
    fn new(rx: mpsc::UnboundedReceiver<Packet>, cut: Arc<Cut>) -> Self {
        Inbound { rx, cut }
    }

    async fn next(&mut self) -> Option<Packet> {
        // A packet waiting already: taken without registering for the cut (a
        // lock of the `Notify`'s list each way), as long as the wire is whole;
        // within the task's budget, as `recv` would be.
        tokio::task::consume_budget().await;
        if let Ok(packet) = self.rx.try_recv() {
            return (!self.cut.done.load(Ordering::SeqCst)).then_some(packet);
        }
        // Registered before the flag is checked, so a cut in between still wakes us.
        let mut cut_now = std::pin::pin!(self.cut.notify.notified());
        cut_now.as_mut().enable();
        if self.cut.done.load(Ordering::SeqCst) {
            return None;
        }
        tokio::select! {
            bytes = self.rx.recv() => bytes,
            () = cut_now => None,
        }
    }
}

fn finish(conn: Option<Arc<Connection>>, ready: Option<oneshot::Sender<Result<(), CallError>>>) {
    if let Some(conn) = conn {
        conn.close();
    }
    if let Some(ready) = ready {
        let _ = ready.send(Err(CallError::ConnectFailed {
            node: None,
            label: NodeLabel::new(None, Some("in-process")),
            reason: "the connection closed during the handshake".into(),
        }));
    }
}
