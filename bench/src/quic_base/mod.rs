//! `base.quic.*`: raw quinn between two OS processes on 127.0.0.1, TLS 1.3 through
//! rustls (ring) as in production, one bidirectional stream per call. This is
//! BENCH.md's "raw quinn, one bidi stream per call (TLS)" row, the floor the
//! remote workloads are held against. `base.quic.uni.*` is the floor for pipes
//! (`p1`, `p2`): length-prefixed frames on one unidirectional stream.
//! `base.quic.framed.rate` is the floor for `w2`: `u64` echoes as length-prefixed
//! frames on one bidirectional stream, 64 outstanding (BENCH.md's "raw quinn,
//! frames on one stream, in-order" row: a floor, not an RPC).
//!
//! This module is the bench's side, the client; the server is a child process
//! (`server`), one connection to it for each of its two protocols.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, TransportConfig, VarInt};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;

use crate::drive::{median_of, median_run, outstanding, repeat, Latencies, LatencyRun};
use crate::frames::{self, Frames};
use crate::{figure, rate, Scale};

mod server;
pub use server::{serve, SERVER_COMMAND};

/// The echo connection's protocol: a bidi stream per call, uni streams of frames.
const ALPN: &[u8] = b"remora-bench-echo";
/// The framed connection's protocol: echo frames on a bidi stream.
const FRAMED_ALPN: &[u8] = b"remora-bench-framed";
/// The server certificate's name, which the client checks.
const SERVER_NAME: &str = "localhost";
/// Largest message either side reads (the payload workload sends 64 KiB).
const MAX_MESSAGE: usize = 1 << 20;
/// Calls outstanding in `base.quic.rate`, echoes in `base.quic.framed.rate` (as
/// in w2).
const WIDTH: u64 = 64;
/// How many bytes a framed stream's side reads at most at once: all that has
/// arrived, as a buffered reader would.
const FRAMED_READ: usize = 64 * 1024;
/// `base.quic.payload.mbps` (as in w3): payload size and calls outstanding.
const PAYLOAD: usize = 64 * 1024;
const PAYLOAD_WIDTH: u64 = 8;
/// A `base.quic.uni` request: how many frames, of how many bytes (8: the frame's
/// number, as p1's items; otherwise a blob, as p2's), and how many bytes of small
/// frames to gather per write (0: one write per frame).
const UNI_REQUEST: usize = 24;
/// `base.quic.uni.batched.rate`: small frames gathered into writes of this many
/// bytes, as a `BufWriter` would: what the stream itself can carry.
/// (`base.quic.uni.rate` writes each frame on its own: quinn's cost per write,
/// its connection lock and a wake-up of its driver, dominates then.)
const UNI_BATCH: u64 = 8 * 1024;

type BoxError = Box<dyn Error + Send + Sync>;

/// The crypto provider quinn's default `rustls-ring` feature uses, chosen
/// explicitly: no process-wide default is needed or installed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Both sides: room for the 64 concurrent streams of `base.quic.rate` and more,
/// and for the unidirectional streams of `base.quic.uni` (one each way at a time).
/// Keep-alives, as Remora's own connections have: a full run leaves the framed
/// connection idle while the Remora workloads run, longer than quinn's 30 s idle
/// timeout on a slow day.
fn transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(2)));
    transport.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    transport.max_concurrent_uni_streams(VarInt::from_u32(16));
    Arc::new(transport)
}

/// The server child; killed (and reaped) when dropped, however the bench ends.
struct EchoServer {
    child: Child,
    addr: SocketAddr,
    cert: CertificateDer<'static>,
}

impl EchoServer {
    async fn spawn() -> Result<EchoServer, BoxError> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(SERVER_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // Guard it before anything can fail.
        let mut server = EchoServer {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            cert: CertificateDer::from(Vec::new()),
        };
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await??;
        let (port, cert) = line
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("the echo server said {line:?}, not `PORT CERT`"))?;
        server.addr.set_port(port.parse()?);
        server.cert = CertificateDer::from(unhex(cert).ok_or("the certificate is not hex")?);
        Ok(server)
    }

    /// A connection from `endpoint` speaking `alpn`, trusting exactly the
    /// server's certificate.
    async fn connect(&self, endpoint: &Endpoint, alpn: &[u8]) -> Result<Connection, BoxError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone())?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![alpn.to_vec()];
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        config.transport_config(transport());
        Ok(endpoint
            .connect_with(config, self.addr, SERVER_NAME)?
            .await?)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call: a fresh bidi stream carrying `payload` there and back.
async fn call(conn: &Connection, payload: &[u8]) -> Result<Vec<u8>, BoxError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(payload).await?;
    send.finish()?;
    Ok(recv.read_to_end(MAX_MESSAGE).await?)
}

async fn echo(conn: &Connection, v: u64) {
    let reply = call(conn, &v.to_le_bytes()).await.expect("echo call");
    assert_eq!(reply, v.to_le_bytes(), "the echo server answered wrongly");
}

/// Reads length-prefixed frames (as `server::send_frames` writes them) from `recv` to its end,
/// handing each to `frame`, whole; how many there were.
async fn read_frames(
    recv: &mut quinn::RecvStream,
    mut frame: impl FnMut(&[u8]),
) -> Result<u64, BoxError> {
    let mut frames = Frames::default();
    let mut count = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        count += frames.push(&chunk.bytes, &mut frame);
    }
    if frames.is_partial() {
        return Err("the frames stream ended inside a frame".into());
    }
    Ok(count)
}

/// Progress: datagrams and frames per call each way since `before`. More than one
/// stream frame received per call means the server's driver sent the reply's data
/// before its FIN was queued, one packet each (it runs on another worker thread):
/// that costs a packet and a wake-up each way, and shows in the latency.
fn datagrams(phase: &str, conn: &Connection, before: &quinn::ConnectionStats, calls: u64) {
    let now = conn.stats();
    let per = |a: u64, b: u64| (a - b) as f64 / calls as f64;
    eprintln!(
        "base.quic: {phase}: per call {:.2} datagrams sent ({:.0} bytes, {:.2} stream frames, \
         {:.2} acks), {:.2} received ({:.0} bytes, {:.2} stream frames, {:.2} acks)",
        per(now.udp_tx.datagrams, before.udp_tx.datagrams),
        per(now.udp_tx.bytes, before.udp_tx.bytes),
        per(now.frame_tx.stream, before.frame_tx.stream),
        per(now.frame_tx.acks, before.frame_tx.acks),
        per(now.udp_rx.datagrams, before.udp_rx.datagrams),
        per(now.udp_rx.bytes, before.udp_rx.bytes),
        per(now.frame_rx.stream, before.frame_rx.stream),
        per(now.frame_rx.acks, before.frame_rx.acks),
    );
}

/// The raw-quinn echo server and a connection to it: the baseline each remote
/// workload is held against, one repetition at a time.
pub struct Baseline {
    server: EchoServer,
    endpoint: Endpoint,
    /// The echo connection ([`ALPN`]).
    conn: Connection,
    /// The framed connection ([`FRAMED_ALPN`]).
    framed: Connection,
    payload: Arc<Vec<u8>>,
}

impl Baseline {
    /// Starts the echo server child and connects to it, once for each protocol.
    pub async fn start() -> Baseline {
        let server = EchoServer::spawn()
            .await
            .expect("the QUIC echo server starts");
        let endpoint = Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("a QUIC client endpoint");
        let conn = server
            .connect(&endpoint, ALPN)
            .await
            .expect("QUIC connection");
        let framed = server
            .connect(&endpoint, FRAMED_ALPN)
            .await
            .expect("framed QUIC connection");
        eprintln!("base.quic: connected to the echo server at {}", server.addr);
        let payload = Arc::new((0..PAYLOAD).map(|i| (i * 7 + 3) as u8).collect());
        Baseline {
            server,
            endpoint,
            conn,
            framed,
            payload,
        }
    }

    /// As w1's warm-up, then a little of each shape.
    pub async fn warm_up(&self, scale: Scale) {
        for i in 0..scale.count(2_000, 1_000) {
            echo(&self.conn, i).await;
        }
        self.pipelined(WIDTH * 100).await;
        self.framed(WIDTH * 1_000).await;
        self.bulk(PAYLOAD_WIDTH * 10).await;
        self.uni_rate(1_000).await;
        self.uni_batched_rate(10_000).await;
        self.uni_mbps(100).await;
    }

    /// As w1: `n` calls, one outstanding.
    pub async fn ping(&self, n: u64) -> LatencyRun {
        let mut lat = Latencies::new(n);
        for i in 0..n {
            let started = Instant::now();
            echo(&self.conn, i).await;
            lat.push(started);
        }
        lat.finish()
    }

    /// As w2: `n` calls, 64 outstanding; calls/s.
    pub async fn pipelined(&self, n: u64) -> f64 {
        let took = outstanding(n, WIDTH, |calls| {
            let conn = self.conn.clone();
            async move {
                while let Some(i) = calls.next() {
                    echo(&conn, i).await;
                }
            }
        })
        .await;
        rate(n, took)
    }

    /// The floor for w2: `n` `u64` echoes as frames on one bidi stream of the
    /// framed connection, 64 outstanding; echoes/s, from opening the stream to the
    /// last echo. The frames that the echoes read at once make room for go out in
    /// one write, as a framed protocol's client batches its requests.
    pub async fn framed(&self, n: u64) -> f64 {
        let before = self.framed.stats();
        let start = Instant::now();
        let (mut send, mut recv) = self.framed.open_bi().await.expect("a framed stream");
        let (mut sent, mut echoed) = (0u64, 0u64);
        let mut requests = Vec::new();
        let mut frames = Frames::default();
        let mut buf = vec![0u8; FRAMED_READ];
        while echoed < n {
            while sent < n.min(echoed + WIDTH) {
                frames::put(&mut requests, &sent.to_le_bytes());
                sent += 1;
            }
            send.write_all(&requests).await.expect("framed requests");
            requests.clear();
            let read = recv
                .read(&mut buf)
                .await
                .expect("framed echoes")
                .expect("the framed stream ended early");
            frames.push(&buf[..read], |echo| {
                assert_eq!(echo, echoed.to_le_bytes(), "the framed echo is wrong");
                echoed += 1;
            });
        }
        let took = start.elapsed();
        send.finish().expect("the framed stream's end");
        let end = recv.read(&mut buf).await.expect("the framed stream's end");
        assert!(end.is_none(), "the framed server echoed more than was sent");
        datagrams("framed", &self.framed, &before, n);
        rate(n, took)
    }

    /// As w3: `n` calls of 64 KiB, 8 outstanding; MB/s sent plus received.
    pub async fn bulk(&self, n: u64) -> f64 {
        let took = outstanding(n, PAYLOAD_WIDTH, |calls| {
            let conn = self.conn.clone();
            let payload = self.payload.clone();
            async move {
                while calls.next().is_some() {
                    let reply = call(&conn, &payload).await.expect("payload call");
                    assert!(reply == *payload, "the echo server answered wrongly");
                }
            }
        })
        .await;
        (2 * n * PAYLOAD as u64) as f64 / took.as_secs_f64() / 1e6
    }

    /// `n` frames of `size` bytes from the server on one unidirectional stream
    /// (small ones gathered into writes of `batch` bytes), read and counted here:
    /// the time from the request to the stream's end.
    async fn uni(&self, n: u64, size: usize, batch: u64) -> Duration {
        let start = Instant::now();
        let mut request = self.conn.open_uni().await.expect("a request stream");
        let mut ask = [0u8; UNI_REQUEST];
        ask[..8].copy_from_slice(&n.to_le_bytes());
        ask[8..16].copy_from_slice(&(size as u64).to_le_bytes());
        ask[16..].copy_from_slice(&batch.to_le_bytes());
        request.write_all(&ask).await.expect("the request");
        request.finish().expect("the request's end");
        let mut frames = self.conn.accept_uni().await.expect("the frames stream");
        let mut next = 0u64;
        let count = read_frames(&mut frames, |frame| {
            if size == 8 {
                let number = u64::from_le_bytes(frame.try_into().expect("an 8-byte frame"));
                assert_eq!(number, next, "base.quic.uni frames out of order");
            } else {
                assert_eq!(frame.len(), size, "a base.quic.uni frame of the wrong size");
            }
            next += 1;
        })
        .await
        .expect("the frames");
        assert_eq!(count, n, "the frames stream ended early");
        start.elapsed()
    }

    /// As p1: `n` 8-byte frames on one unidirectional stream, each written as
    /// it is made (one write per frame, as a pipe's producer hands over each
    /// item); frames (items)/s. `base.quic.uni.rate`, p1's floor.
    pub async fn uni_rate(&self, n: u64) -> f64 {
        rate(n, self.uni(n, 8, 0).await)
    }

    /// As [`Baseline::uni_rate`], the frames gathered into 8 KiB writes, as a
    /// `BufWriter` over a stream whose every frame is known in advance would:
    /// what the stream itself can carry (`base.quic.uni.batched.rate`).
    pub async fn uni_batched_rate(&self, n: u64) -> f64 {
        rate(n, self.uni(n, 8, UNI_BATCH).await)
    }

    /// As p2: `n` 64 KiB frames on one unidirectional stream; MB/s of payload.
    pub async fn uni_mbps(&self, n: u64) -> f64 {
        let took = self.uni(n, PAYLOAD, 0).await;
        (n * PAYLOAD as u64) as f64 / took.as_secs_f64() / 1e6
    }

    /// Progress: datagrams and frames per call since `before` (see [`datagrams`]).
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
    }

    /// [`datagrams`] on this connection.
    pub fn datagrams(&self, phase: &str, before: &quinn::ConnectionStats, calls: u64) {
        datagrams(phase, &self.conn, before, calls);
    }

    /// Progress: datagrams received per frame since `before` (the frames came
    /// from the server, so what this side receives is what counts).
    pub fn received(&self, phase: &str, before: &quinn::ConnectionStats, frames: u64) {
        let now = self.conn.stats();
        eprintln!(
            "base.quic: {phase}: {:.3} datagrams received per frame",
            (now.udp_rx.datagrams - before.udp_rx.datagrams) as f64 / frames as f64
        );
    }

    /// Closes the connection and stops the server.
    pub async fn stop(self) {
        self.conn.close(VarInt::from_u32(0), b"done");
        self.framed.close(VarInt::from_u32(0), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        drop(self.server);
    }
}

/// `base.quic.framed.rate`: 1 000 000 echoes (BENCH.md names no count: at
/// several times w2's rate, about as long as w2's 200 000 calls take).
pub fn framed_echoes(scale: Scale) -> u64 {
    scale.count(1_000_000, 200_000)
}

/// `base.quic.p50`, `base.quic.p99` (µs), `base.quic.rate` (calls/s),
/// `base.quic.framed.rate` (echoes/s), `base.quic.payload.mbps` (MB/s, 10^6
/// bytes, sent + received), on their own, those `selected` names.
/// A full run alternates them with the remote workloads instead (`paired`).
pub async fn baselines(scale: Scale, selected: &(dyn Fn(&str) -> bool + Sync)) {
    let base = Baseline::start().await;
    base.warm_up(scale).await;
    if selected("base.quic.p50") || selected("base.quic.p99") {
        // As w1: one call outstanding, 20 000 calls.
        let n = scale.count(20_000, 10_000);
        let before = base.stats();
        let runs = repeat(scale.reps(), || base.ping(n)).await;
        base.datagrams("ping", &before, n * scale.reps() as u64);
        let run = median_run(&runs);
        figure("base.quic.p50", run.p50_us, "us");
        figure("base.quic.p99", run.p99_us, "us");
    }
    if selected("base.quic.rate") {
        // As w2: 64 outstanding, 200 000 calls.
        let n = scale.count(200_000, 50_000);
        let before = base.stats();
        let rates = repeat(scale.reps(), || base.pipelined(n)).await;
        base.datagrams("pipelined", &before, n * scale.reps() as u64);
        figure("base.quic.rate", median_of(rates), "calls/s");
    }
    if selected("base.quic.framed") {
        let rates = repeat(scale.reps(), || base.framed(framed_echoes(scale))).await;
        figure("base.quic.framed.rate", median_of(rates), "echoes/s");
    }
    if selected("base.quic.payload") {
        // As w3: 64 KiB payloads, 8 outstanding, 5 000 calls.
        let n = scale.count(5_000, 1_000);
        let mbps = repeat(scale.reps(), || base.bulk(n)).await;
        figure("base.quic.payload.mbps", median_of(mbps), "MB/s");
    }
    base.stop().await;
}

/// `base.quic.uni.rate` and `.uni.batched.rate` (frames/s), `base.quic.uni.mbps`
/// (MB/s of payload), on their own, with p1's and p2's counts. A full run
/// alternates them with p1 and p2 instead (`paired`).
pub async fn uni_baselines(scale: Scale) {
    let base = Baseline::start().await;
    base.warm_up(scale).await;
    let n = crate::remote::p1_items(scale);
    let before = base.stats();
    let rates = repeat(3, || base.uni_rate(n)).await;
    base.received("uni", &before, 3 * n);
    figure("base.quic.uni.rate", median_of(rates), "items/s");
    let before = base.stats();
    let rates = repeat(3, || base.uni_batched_rate(n)).await;
    base.received("uni batched", &before, 3 * n);
    figure("base.quic.uni.batched.rate", median_of(rates), "items/s");
    let mbps = repeat(3, || base.uni_mbps(crate::remote::p2_items(scale))).await;
    figure("base.quic.uni.mbps", median_of(mbps), "MB/s");
    base.stop().await;
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
