//! A malicious member of a cluster, as a process of its own: it holds a valid
//! certificate (issued by the cluster root in `--ca DIR`, under `--name`), dials
//! the node at `--addr` over QUIC, and sends it crafted frames. It prints what the
//! node answered, one line per finding, and exits; every wait is bounded.
//!
//! ```text
//! remora-hostile --ca DIR --addr ADDR [--name NAME] ATTACK
//!   impersonate NODE INCARNATION   Hello as another node: REFUSED <reason> | ACCEPTED
//!   stop OBJECT                    an Exit: REFUSED <error> | SILENT
//!   link OBJECT                    an Exit as a failed link sends it: likewise
//!   monitor OBJECT N               N monitors under one reused watch id, then
//!                                  N under fresh ids: REFUSED <count> DOWN <count>
//!   registry-renew LEASE SECS      as a node, keeps another node's registry lease (hex)
//!                                  alive (every 100 ms for SECS):
//!                                  REFUSED <n> EXPIRED <n> ACCEPTED <n> OTHER <n>
//!   renew N                        Renew frames naming N made-up objects (20 000
//!                                  a frame): SENT <n> READ REFUSED <frames refused>
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use remora::wire::codec::encode;
use remora::wire::{Frame, FrameReader, Limits, ObjectId};
use remora::{CallError, NodeId, StopReason};
use remora_integration_tests::raw::RawPeer;
use remora_registry::{LeaseId, RegistryError, RegistryServiceRef, REGISTRY_OBJECT};

/// How long the node has to answer (a loaded machine, a debug build).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut ca, mut addr, mut name) = (None, None, "mallory".to_owned());
    let mut attack = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ca" => ca = args.next().map(PathBuf::from),
            "--addr" => addr = args.next(),
            "--name" => name = args.next().expect("--name NAME"),
            _ => attack.push(arg),
        }
    }
    let ca = ca.expect("--ca DIR");
    let addr: SocketAddr = addr.expect("--addr ADDR").parse().expect("an address");
    let peer = RawPeer::connect(&ca, &name, addr).await;
    let arg = |i: usize| attack.get(i).expect("the attack's arguments").as_str();
    match arg(0) {
        "impersonate" => {
            let node: NodeId = arg(1).parse().expect("a node id");
            let incarnation: u64 = arg(2).parse().expect("an incarnation");
            impersonate(&peer, node, incarnation).await;
        }
        "stop" => stop(&peer, arg(1).parse().expect("an object id"), false).await,
        "link" => stop(&peer, arg(1).parse().expect("an object id"), true).await,
        "monitor" => {
            let object = arg(1).parse().expect("an object id");
            monitor(&peer, object, arg(2).parse().expect("a count")).await;
        }
        "renew" => renew(&peer, arg(1).parse().expect("a count")).await,
        "registry-renew" => {
            let lease = u128::from_str_radix(arg(1), 16).expect("a lease id, in hex");
            let lease = LeaseId::from_u128(lease);
            let secs: u64 = arg(2).parse().expect("seconds");
            registry_renew(&ca, &name, addr, lease, Duration::from_secs(secs)).await;
        }
        other => panic!("unknown attack {other}"),
    }
}

/// Says Hello as `node`: a node that checks ids against certificates closes the
/// connection.
async fn impersonate(peer: &RawPeer, node: NodeId, incarnation: u64) {
    let (_send, mut recv) = peer.hello_as(node, incarnation).await;
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(ANSWER_WITHIN, async {
        // The node's own Hello may come first; then the close.
        loop {
            if let Err(err) = recv.read(&mut buf).await {
                return err;
            }
        }
    })
    .await;
    match closed {
        Ok(err) => {
            let reason = match peer.conn.close_reason() {
                Some(quinn::ConnectionError::ApplicationClosed(close)) => {
                    String::from_utf8_lossy(&close.reason).into_owned()
                }
                other => format!("{other:?} ({err})"),
            };
            println!("REFUSED {reason}");
        }
        Err(_) => {
            // Still open: check it is usable, as a node would see it.
            println!("ACCEPTED");
        }
    }
}

/// Asks the node to stop `object` (as `Node::stop` does, or as a link whose other
/// end failed), and prints the node's answer.
async fn stop(peer: &RawPeer, object: ObjectId, linked: bool) {
    let (mut send, mut recv) = peer.hello().await;
    let reason = match linked {
        false => StopReason::Normal,
        true => StopReason::Linked {
            peer: "mallory's actor".into(),
            reason: Box::new(StopReason::Panicked {
                message: "on purpose".into(),
            }),
        },
    };
    write(&mut send, &Frame::Exit { object, reason }).await;
    // A refusal comes before the Pong: frames are answered in order.
    write(&mut send, &Frame::Ping(7)).await;
    let mut refused = None;
    read_frames(&mut recv, ANSWER_WITHIN, |frame| {
        if let Frame::Refused { error, .. } = frame {
            refused = Some(error.clone());
        }
        matches!(frame, Frame::Pong(7))
    })
    .await;
    match refused {
        Some(error) => println!("REFUSED {error}"),
        None => println!("SILENT"),
    }
}

/// `n` monitors under one watch id (each replaces the last), then `n` under
/// fresh ids; counts the refusals and `Down`s the node sends back.
async fn monitor(peer: &RawPeer, object: ObjectId, n: u64) {
    let (mut send, mut recv) = peer.hello().await;
    let mut frames = Vec::new();
    let limits = Limits::default();
    for watch in std::iter::repeat_n(1, n as usize).chain(2..2 + n) {
        encode(&Frame::Monitor { watch, object }, &mut frames, &limits).expect("encodes");
        if frames.len() > 1 << 20 {
            send.write_all(&frames).await.expect("written");
            frames.clear();
        }
    }
    send.write_all(&frames).await.expect("written");
    // A Ping after them: the node answers frames in order, so its Pong comes
    // after every refusal.
    write(&mut send, &Frame::Ping(7)).await;
    let (mut refused, mut down) = (0u64, 0u64);
    read_frames(&mut recv, ANSWER_WITHIN, |frame| {
        match frame {
            Frame::Refused {
                error: CallError::Unauthorized { .. },
                ..
            } => refused += 1,
            Frame::Down { .. } => down += 1,
            Frame::Pong(7) => return true,
            _ => {}
        }
        false
    })
    .await;
    println!("REFUSED {refused} DOWN {down}");
}

/// As a node of the cluster (a real one, named `name`), tries to keep `lease`,
/// another node's registry lease, alive for `secs`.
async fn registry_renew(
    ca: &std::path::Path,
    name: &str,
    addr: SocketAddr,
    lease: LeaseId,
    secs: Duration,
) {
    let node = remora::Node::builder()
        .name(name)
        .credentials(ca)
        .build()
        .await
        .expect("a node");
    let registry = node.connect(addr.to_string()).await.expect("connected");
    let service: RegistryServiceRef = node.reference(registry, REGISTRY_OBJECT).expect("a ref");
    let (mut refused, mut expired, mut accepted, mut other) = (0, 0, 0, 0);
    let until = tokio::time::Instant::now() + secs;
    while tokio::time::Instant::now() < until {
        match service.keep_alive(lease).await {
            Ok(Err(RegistryError::Unauthorized { .. })) => refused += 1,
            Ok(Err(RegistryError::LeaseExpired)) => expired += 1,
            Ok(Ok(())) => accepted += 1,
            _ => other += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("REFUSED {refused} EXPIRED {expired} ACCEPTED {accepted} OTHER {other}");
}

/// Renew frames naming `n` made-up objects, as a holder of leases would.
async fn renew(peer: &RawPeer, n: usize) {
    let (mut send, mut recv) = peer.hello().await;
    let limits = Limits::default();
    let per_frame = 20_000;
    let mut sent = 0;
    while sent < n {
        let objects: Vec<ObjectId> = (0..per_frame.min(n - sent))
            .map(|_| ObjectId::random())
            .collect();
        sent += objects.len();
        let mut out = Vec::new();
        encode(&Frame::Renew { objects }, &mut out, &limits).expect("encodes");
        send.write_all(&out).await.expect("written");
    }
    // A Ping after them: its Pong says the node has read every Renew.
    write(&mut send, &Frame::Ping(7)).await;
    let (mut answered, mut refused) = (false, 0);
    read_frames(&mut recv, ANSWER_WITHIN, |frame| {
        refused += u64::from(matches!(frame, Frame::Refused { .. }));
        answered = matches!(frame, Frame::Pong(7));
        answered
    })
    .await;
    let read = if answered { "READ" } else { "UNREAD" };
    println!("SENT {sent} {read} REFUSED {refused}");
}

async fn write(send: &mut quinn::SendStream, frame: &Frame<'_>) {
    let mut out = Vec::new();
    encode(frame, &mut out, &Limits::default()).expect("encodes");
    send.write_all(&out).await.expect("written");
}

/// Reads frames from the control stream for at most `within`, or until `done`
/// says so.
async fn read_frames(
    recv: &mut quinn::RecvStream,
    within: Duration,
    mut done: impl FnMut(&Frame<'_>) -> bool,
) {
    let mut reader = FrameReader::new(Limits::default());
    let deadline = tokio::time::Instant::now() + within;
    loop {
        while let Some(frame) = reader.next_frame().expect("the node's frames decode") {
            if done(&frame) {
                return;
            }
        }
        match tokio::time::timeout_at(deadline, recv.read_chunk(64 * 1024, true)).await {
            Ok(Ok(Some(chunk))) => reader.extend(&chunk.bytes).expect("frames"),
            _ => return,
        }
    }
}
