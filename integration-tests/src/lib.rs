//! Shared pieces of the multi-node tests: the interfaces and actors they call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use remora::pipe::{self, SendError};

use remora::{Actor, Node};

pub mod chain;
pub mod chaos;
pub mod etcd;
pub mod figures;
pub mod flood;
pub mod limits;
pub mod raw;
pub mod spy;

/// Safety net for awaits that must complete; never a performance bound.
pub const SAFETY: Duration = Duration::from_secs(10);

#[remora::remote]
pub trait Counter {
    async fn add(&mut self, n: u64) -> u64;
    #[oneway]
    async fn bump(&mut self, n: u64);
    async fn total(&mut self) -> u64;
    /// Records every value it is given, to check order.
    async fn seen(&mut self) -> Vec<u64>;
    async fn crash(&mut self, why: String) -> u64;
    async fn nap(&mut self, ms: u64) -> u64;
    /// `nap`, as an `#[exactly_once]` method.
    #[exactly_once]
    async fn nap_once(&mut self, ms: u64) -> u64;
    async fn echo_bytes(&mut self, bytes: Vec<u8>) -> Vec<u8>;
}

#[derive(Default)]
pub struct Tally {
    pub total: u64,
    pub seen: Vec<u64>,
}

impl Actor for Tally {}

impl Counter for Tally {
    async fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.seen.push(n);
        self.total
    }
    async fn bump(&mut self, n: u64) {
        self.total += n;
        self.seen.push(n);
    }
    async fn total(&mut self) -> u64 {
        self.total
    }
    async fn seen(&mut self) -> Vec<u64> {
        self.seen.clone()
    }
    async fn crash(&mut self, why: String) -> u64 {
        panic!("{why}")
    }
    async fn nap(&mut self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn nap_once(&mut self, ms: u64) -> u64 {
        self.nap(ms).await
    }
    async fn echo_bytes(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }
}

/// Holds references to other actors and calls them: reference passing.
#[remora::remote]
pub trait Broker {
    /// Keeps `counter` (a reference, passed as one).
    async fn hold(&mut self, counter: CounterRef) -> bool;
    /// Calls the counter it holds, from its own node.
    async fn add_through(&mut self, n: u64) -> u64;
    /// Hands the held reference back (a reference in a reply).
    async fn give(&mut self) -> Option<CounterRef>;
    /// Several references nested in a value.
    async fn hold_many(&mut self, counters: Vec<Option<CounterRef>>) -> usize;
}

#[derive(Default)]
pub struct Keeper {
    pub held: Option<CounterRef>,
}

impl Actor for Keeper {}

impl Broker for Keeper {
    async fn hold(&mut self, counter: CounterRef) -> bool {
        self.held = Some(counter);
        true
    }
    async fn add_through(&mut self, n: u64) -> u64 {
        match &self.held {
            Some(counter) => counter.add(n).await.unwrap_or(u64::MAX),
            None => 0,
        }
    }
    async fn give(&mut self) -> Option<CounterRef> {
        self.held.clone()
    }
    async fn hold_many(&mut self, counters: Vec<Option<CounterRef>>) -> usize {
        let held: Vec<CounterRef> = counters.into_iter().flatten().collect();
        let n = held.len();
        self.held = held.into_iter().next();
        n
    }
}

/// A node on the current runtime.
pub async fn node() -> Node {
    Node::builder().build().await.expect("node builds")
}

/// Starts `binary` (a node executable of this crate) with the cluster in
/// `credentials` and `args`, and reads its first line, which must begin with
/// `READY`: the child, and that line's words.
pub fn start_ready(
    binary: &str,
    credentials: &std::path::Path,
    args: &[&str],
) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(binary)
        .arg("--credentials")
        .arg(credentials)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{binary} starts: {err}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|err| panic!("{binary} prints READY: {err}"));
    let parts: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    assert_eq!(
        parts.first().map(String::as_str),
        Some("READY"),
        "unexpected first line: {line:?}"
    );
    (child, parts)
}

/// A node running in a child process (`remora-test-node`), killed when dropped.
pub struct ChildNode {
    pub child: std::process::Child,
    pub id: remora::NodeId,
    pub addr: String,
    pub counter: remora::wire::ObjectId,
    pub broker: remora::wire::ObjectId,
    /// A [`Tap`] (pipes).
    pub streamer: remora::wire::ObjectId,
    /// A link of a chain of calls ([`chain::Link`]).
    pub link: remora::wire::ObjectId,
    /// The probe that reads that link's counts ([`chain::Probe`]).
    pub probe: remora::wire::ObjectId,
}

impl ChildNode {
    /// Starts `binary` (the test-node executable) with the cluster in `credentials`
    /// and waits for its READY line.
    pub fn spawn(binary: &str, credentials: &std::path::Path) -> ChildNode {
        ChildNode::spawn_at(binary, credentials, "127.0.0.1:0")
    }

    /// [`ChildNode::spawn`] listening on `listen`.
    pub fn spawn_at(binary: &str, credentials: &std::path::Path, listen: &str) -> ChildNode {
        ChildNode::spawn_with(binary, credentials, &["--listen", listen])
    }

    /// [`ChildNode::spawn`] with more arguments (`--listen ADDR`, `--registry ADDR`,
    /// `--etcd URL --etcd-prefix P`, `--bind NAME`, `--lease-ms N`, `--ref-lease-ms N`,
    /// `--peer-timeout-ms N`).
    pub fn spawn_with(binary: &str, credentials: &std::path::Path, args: &[&str]) -> ChildNode {
        let (child, parts) = start_ready(binary, credentials, args);
        ChildNode {
            addr: parts[1].clone(),
            id: parts[2].parse().expect("node id"),
            counter: parts[3].parse().expect("object id"),
            broker: parts[4].parse().expect("object id"),
            streamer: parts[5].parse().expect("object id"),
            link: parts[6].parse().expect("object id"),
            probe: parts[7].parse().expect("object id"),
            child,
        }
    }

    /// Kills the process at once (SIGKILL): no goodbye reaches its peers.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `Counter` as a newer build sees it: the same interface (same wire name) with a
/// method the older server does not have.
#[remora::remote(name = "Counter")]
pub trait CounterV2 {
    async fn add(&mut self, n: u64) -> u64;
    async fn reset_all(&mut self) -> u64;
}

/// Waits until `condition` holds, checking it every few milliseconds for at most
/// [`SAFETY`]; panics naming `what` if it never does. For a state other tasks
/// reach (a call queued, a monitor in place), not for time to pass.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SAFETY;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {SAFETY:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `fut` exactly once (a remote call sends its frame on its first poll).
pub async fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

/// A reference, held by `client`, to `actor` on `server` (exported for the purpose).
pub fn reach<R>(client: &Node, server: &Node, actor: &R) -> R
where
    R: remora::Interface,
    R::Msg: remora::rt::Unmarshal,
{
    let object = server.export(actor).expect("a local actor exports");
    client
        .reference(server.id(), object)
        .expect("the nodes are connected")
}

/// How the two nodes of a [`Pair`] are connected: every multi-node scenario runs
/// over both (see [`both_transports!`]).
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    /// In-process channels (`remora::remote::inproc`).
    InProcess,
    /// QUIC on loopback, both nodes listening.
    Quic,
}

/// A server and a client node, connected.
pub struct Pair {
    pub server: Node,
    pub client: Node,
    /// The in-process wire, to cut (None over QUIC).
    pub wire: Option<remora::remote::inproc::Wire>,
}

impl Pair {
    /// Two default nodes connected over `transport`.
    pub async fn new(transport: Transport) -> Pair {
        Pair::with(transport, Node::builder).await
    }

    /// Two nodes made by `builder` (given a listen address over QUIC), connected.
    pub async fn with(transport: Transport, builder: impl Fn() -> remora::NodeBuilder) -> Pair {
        Pair::with_each(transport, builder(), builder()).await
    }

    /// A server made by `server` and a client made by `client` (each given a
    /// listen address over QUIC), connected: for nodes configured differently.
    pub async fn with_each(
        transport: Transport,
        server: remora::NodeBuilder,
        client: remora::NodeBuilder,
    ) -> Pair {
        let build = |b: remora::NodeBuilder, quic: bool| {
            let b = match quic {
                true => b.listen("127.0.0.1:0"),
                false => b,
            };
            async move { b.build().await.expect("node builds") }
        };
        match transport {
            Transport::InProcess => {
                let (server, client) = (build(server, false).await, build(client, false).await);
                let wire = remora::remote::inproc::connect(&client, &server)
                    .await
                    .expect("in-process connection");
                Pair {
                    server,
                    client,
                    wire: Some(wire),
                }
            }
            Transport::Quic => {
                let (server, client) = (build(server, true).await, build(client, true).await);
                client
                    .connect(server.listen_addr().expect("listening").to_string())
                    .await
                    .expect("QUIC connection");
                // The server records the connection when its side of the
                // handshake ends, which may be just after the client's.
                until("the server has the connection", || {
                    server.stats().connections == 1
                })
                .await;
                Pair {
                    server,
                    client,
                    wire: None,
                }
            }
        }
    }
}

/// Three nodes, each connected to the others over `transport`; the in-process
/// wires (kept alive) alongside.
pub async fn three_nodes(transport: Transport) -> ([Node; 3], Vec<remora::remote::inproc::Wire>) {
    let mut wires = Vec::new();
    let nodes = match transport {
        Transport::InProcess => {
            let nodes = [node().await, node().await, node().await];
            for i in 0..3 {
                for j in (i + 1)..3 {
                    wires.push(
                        remora::remote::inproc::connect(&nodes[i], &nodes[j])
                            .await
                            .unwrap(),
                    );
                }
            }
            nodes
        }
        Transport::Quic => {
            let mut nodes = Vec::new();
            for _ in 0..3 {
                let built = Node::builder().listen("127.0.0.1:0").build().await;
                nodes.push(built.unwrap());
            }
            for i in 0..3 {
                for j in (i + 1)..3 {
                    let addr = nodes[j].listen_addr().unwrap().to_string();
                    nodes[i].connect(addr).await.unwrap();
                }
            }
            nodes.try_into().unwrap()
        }
    };
    (nodes, wires)
}

/// One `#[tokio::test]` per (case, transport): `both_transports!(case_a, case_b)`
/// makes modules `in_process` and `quic`, each calling `case(Transport::..)`.
#[macro_export]
macro_rules! both_transports {
    ($($case:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::Transport::InProcess).await
                }
            )*
        }
        mod quic {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::Transport::Quic).await
                }
            )*
        }
    };
}

/// Pipes to and from another node (see `tests/pipes.rs`).
#[remora::remote]
pub trait Streamer {
    /// 1..=n as a stream, from a producer task counting what it has sent.
    async fn count(&mut self, n: u64, capacity: u64) -> pipe::Receiver<u64>;
    /// How many items the latest `count` producer has sent so far, and whether
    /// its last send failed with the receiver gone (and got its item back).
    async fn produced(&mut self) -> (u64, Option<u64>);
    /// The sum of an upload.
    async fn sum(&mut self, items: pipe::Receiver<u64>) -> Result<u64, String>;
    /// Sends 1..=n to a subscriber, then drops it.
    async fn feed(&mut self, to: pipe::Sender<u64>, n: u64) -> u64;
    /// Passes `items` on to `to` (on a third node) and returns what it summed.
    async fn pass_on(&mut self, items: pipe::Receiver<u64>, to: StreamerRef)
        -> Result<u64, String>;
    /// Lines of text, for items that are not numbers.
    async fn words(&mut self) -> pipe::Receiver<String>;
    /// A pipe whose sender this actor keeps and never uses.
    async fn hold(&mut self, capacity: u64) -> pipe::Receiver<u64>;
    /// `n` blobs of `size` bytes, the i-th filled with the byte `i`.
    async fn blobs(&mut self, n: u64, size: u64, capacity: u64) -> pipe::Receiver<Vec<u8>>;
}

/// A [`Streamer`]: pipes made by producer tasks it counts.
#[derive(Default)]
pub struct Tap {
    sent: Arc<AtomicU64>,
    closed: Arc<parking_lot::Mutex<Option<u64>>>,
    held: Vec<pipe::Sender<u64>>,
}

impl Actor for Tap {}

impl Streamer for Tap {
    async fn count(&mut self, n: u64, capacity: u64) -> pipe::Receiver<u64> {
        let (tx, rx) = pipe::channel(capacity as usize);
        let sent = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(parking_lot::Mutex::new(None));
        self.sent = sent.clone();
        self.closed = closed.clone();
        tokio::spawn(async move {
            for i in 1..=n {
                match tx.send(i).await {
                    Ok(()) => {
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(SendError::Closed(item)) => {
                        *closed.lock() = Some(item);
                        return;
                    }
                    Err(other) => panic!("{other}"),
                }
            }
        });
        rx
    }

    async fn produced(&mut self) -> (u64, Option<u64>) {
        (self.sent.load(Ordering::SeqCst), *self.closed.lock())
    }

    async fn sum(&mut self, mut items: pipe::Receiver<u64>) -> Result<u64, String> {
        let mut sum = 0;
        while let Some(item) = items.next().await {
            sum += item.map_err(|e| e.to_string())?;
        }
        Ok(sum)
    }

    async fn feed(&mut self, to: pipe::Sender<u64>, n: u64) -> u64 {
        let mut sent = 0;
        for i in 1..=n {
            if to.send(i).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    }

    async fn pass_on(
        &mut self,
        items: pipe::Receiver<u64>,
        to: StreamerRef,
    ) -> Result<u64, String> {
        to.sum(items).await.map_err(|e| e.to_string())?
    }

    async fn hold(&mut self, capacity: u64) -> pipe::Receiver<u64> {
        let (tx, rx) = pipe::channel(capacity as usize);
        self.held.push(tx);
        rx
    }

    async fn blobs(&mut self, n: u64, size: u64, capacity: u64) -> pipe::Receiver<Vec<u8>> {
        let (tx, rx) = pipe::channel(capacity as usize);
        tokio::spawn(async move {
            for i in 0..n {
                if tx.send(vec![i as u8; size as usize]).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    async fn words(&mut self) -> pipe::Receiver<String> {
        let (tx, rx) = pipe::channel(4);
        tokio::spawn(async move {
            for word in ["pipes", "carry", "strings"] {
                let _ = tx.send(word.to_owned()).await;
            }
        });
        rx
    }
}
