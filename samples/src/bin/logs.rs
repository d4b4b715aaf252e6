//! `logs`: a log service built on pipes. A server process holds an append-only
//! log of numbered lines; clients in other processes append to it, follow it
//! (`tail -f`, a streaming result), and upload files to it (a `Receiver<Bytes>`
//! argument), each with backpressure end to end.
//!
//! One command runs the story: the server, a follower and a client as processes
//! of one local cluster, narrated from this process, which then follows the log
//! slowly itself to show its producer held back:
//!
//! ```text
//! cargo run --release -p remora-samples --bin logs
//! ```
//!
//! Or by hand, in three terminals sharing a cluster root (`remora cert init DIR`):
//!
//! ```text
//! REMORA_CREDENTIALS=DIR logs server                          # prints READY <addr>
//! REMORA_CREDENTIALS=DIR logs follow --registry <addr>        # prints every line, then new ones
//! REMORA_CREDENTIALS=DIR logs client --registry <addr> --line "hello" --upload-mib 4
//! ```
//!
//! `server` and `follow` run until Ctrl-C or SIGTERM.
//!
//! # Design
//!
//! - **The log** is a `watch` channel holding the lines: `append` (the actor's
//!   handler) pushes a line and wakes whoever waits for one.
//! - **A tail** is a pipe and a task of its own on the server (its producer): it
//!   sends the lines from `from` on, then waits for new ones. It reads each line
//!   from the log only when the pipe has room for it, so a slow follower holds its
//!   producer back and costs the server a pipe's worth of lines, never a copy of
//!   the log. The producer ends when its follower is gone (`send` fails with
//!   `SendError::Closed`, or `is_closed` says so while it waits) or the log is.
//! - **An upload** is a pipe the other way: the client makes it, keeps the sending
//!   half and passes the receiving half in the call; the server reads the chunks
//!   as they come and counts their size and checksum (FNV-1a, 64 bits). The call
//!   returns when the server has read the whole file, so its deadline covers the
//!   whole upload. The server keeps only the file's size and checksum, and logs
//!   them as a line; a real one would write the file.
//! - While an upload runs, the log's other callers wait: an actor handles one
//!   message at a time. Tails do not: their producers are tasks of their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use remora::pipe::{self, SendError};
use remora::{Actor, Node, NodeBuilder};
use remora_registry::{MemoryStore, Registry, RegistryServer};
use remora_samples::args::{exit_code, required, values};
use remora_testing::{announce, node_builder, serve_until_signal, ClusterNode, LocalCluster};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

/// The room in a tail's pipe, in lines.
const TAIL_CAPACITY: usize = 16;
/// The room in an upload's pipe, in chunks.
const UPLOAD_CAPACITY: usize = 8;
/// The size of an upload's chunks.
const CHUNK: usize = 64 * 1024;
/// The largest upload the server takes.
const MAX_UPLOAD: u64 = 64 << 20;
/// How often a producer waiting for new lines checks that its follower is still there.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// How long anything this sample waits for (a line, a process, a follower to go):
/// far longer than it takes, short of hanging.
const WITHIN: Duration = Duration::from_secs(20);

/// A line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Its sequence number: the first line is 0, the next 1, ...
    pub seq: u64,
    /// What it says.
    pub text: String,
}

/// What the server counted of an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSummary {
    /// The file's name.
    pub name: String,
    /// Its size, chunks and checksum as the server received them.
    pub tally: Tally,
    /// The sequence number of the line that logged it.
    pub seq: u64,
}

/// A live tail as its producer on the server sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Follower {
    /// Where it started.
    pub from: u64,
    /// How many lines its producer has sent into its pipe.
    pub sent: u64,
}

/// The log service.
#[remora::remote(name = "logs.Log")]
pub trait Log {
    /// Appends `line`; returns its sequence number.
    async fn append(&mut self, line: String) -> u64;
    /// Every line from `from` on, then each new line as it is appended, until the
    /// receiver is dropped (or the server stops).
    async fn tail(&mut self, from: u64) -> pipe::Receiver<Line>;
    /// Reads the file `name` from `data` to its end; its size and checksum as
    /// received, or why it was refused or cut short.
    async fn upload(
        &mut self,
        name: String,
        data: pipe::Receiver<Bytes>,
    ) -> Result<UploadSummary, String>;
    /// The sequence number the next line will get (the number of lines so far).
    async fn next_seq(&self) -> u64;
    /// The live tails.
    async fn followers(&mut self) -> Vec<Follower>;
}

/// A file's size, chunk count and FNV-1a (64-bit) checksum, counted as it goes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Bytes.
    pub bytes: u64,
    /// Chunks (pipe items).
    pub chunks: u64,
    /// FNV-1a over every byte, in order.
    pub fnv1a: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            bytes: 0,
            chunks: 0,
            fnv1a: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl Tally {
    fn add(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        self.chunks += 1;
        self.fnv1a = chunk.iter().fold(self.fnv1a, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes in {} chunks, fnv1a64 {:016x}",
            self.bytes, self.chunks, self.fnv1a
        )
    }
}

/// The server's actor.
struct LogBook {
    /// The lines; a tail's producer waits on it for new ones.
    lines: watch::Sender<Vec<String>>,
    /// Each tail's progress, held by its producer: gone when the producer is.
    followers: Vec<Weak<Progress>>,
}

/// How far a tail's producer has got.
struct Progress {
    from: u64,
    sent: AtomicU64,
}

impl LogBook {
    fn push(&mut self, line: String) -> u64 {
        let mut seq = 0;
        self.lines.send_modify(|lines| {
            seq = lines.len() as u64;
            lines.push(line);
        });
        seq
    }
}

impl Actor for LogBook {}

impl Log for LogBook {
    async fn append(&mut self, line: String) -> u64 {
        self.push(line)
    }

    async fn tail(&mut self, from: u64) -> pipe::Receiver<Line> {
        let (tx, rx) = pipe::channel(TAIL_CAPACITY);
        let progress = Arc::new(Progress {
            from,
            sent: AtomicU64::new(0),
        });
        self.followers.retain(|f| f.strong_count() > 0);
        self.followers.push(Arc::downgrade(&progress));
        tokio::spawn(produce(self.lines.subscribe(), tx, progress));
        rx
    }

    async fn upload(
        &mut self,
        name: String,
        mut data: pipe::Receiver<Bytes>,
    ) -> Result<UploadSummary, String> {
        let mut tally = Tally::default();
        while let Some(chunk) = data.next().await {
            // An error is the upload cut short (the client's node died, say),
            // never mistaken for the end of the file.
            let chunk = chunk.map_err(|e| format!("{name}: cut short after {tally}: {e}"))?;
            if tally.bytes + chunk.len() as u64 > MAX_UPLOAD {
                // Returning drops `data`: the client's next send fails `Closed`.
                return Err(format!("{name}: over {} MiB, refused", MAX_UPLOAD >> 20));
            }
            tally.add(&chunk);
        }
        let seq = self.push(format!("uploaded {name}: {tally}"));
        Ok(UploadSummary { name, tally, seq })
    }

    async fn next_seq(&self) -> u64 {
        self.lines.borrow().len() as u64
    }

    async fn followers(&mut self) -> Vec<Follower> {
        self.followers.retain(|f| f.strong_count() > 0);
        self.followers
            .iter()
            .filter_map(Weak::upgrade)
            .map(|p| Follower {
                from: p.from,
                sent: p.sent.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// A tail's producer: sends the lines from `progress.from` on into `tx`, each
/// when the pipe has room for it, until the follower or the log is gone.
async fn produce(
    mut log: watch::Receiver<Vec<String>>,
    tx: pipe::Sender<Line>,
    progress: Arc<Progress>,
) {
    let mut seq = progress.from;
    loop {
        // (The log's lock is held only within this statement, never across a send.)
        let text = match timeout(IDLE_CHECK, log.wait_for(|lines| lines.len() as u64 > seq)).await {
            Ok(Ok(lines)) => lines[seq as usize].clone(),
            // The log is gone (the server stops): dropping `tx` ends the tail.
            Ok(Err(_)) => return,
            // Nothing new. A pipe sender has no future that resolves when its
            // receiver goes, so a producer with nothing to send looks now and then.
            Err(_) if tx.is_closed() => return,
            Err(_) => continue,
        };
        // Waits for room: this is where a slow follower holds its producer back.
        match tx.send(Line { seq, text }).await {
            Ok(()) => {}
            Err(SendError::Closed(_)) => return,
            Err(err) => {
                eprintln!("logs: a tail from #{} failed: {err}", progress.from);
                return;
            }
        }
        progress.sent.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
}

type Failure = Box<dyn std::error::Error>;

/// A node built by `builder`, and the log found through the registry at `registry_addr`.
async fn connect(builder: NodeBuilder, registry_addr: &str) -> Result<(Node, LogRef), Failure> {
    let node = builder.build().await?;
    let registry = Registry::connect(&node, registry_addr).await?;
    let log: LogRef = registry.lookup("logs").await?;
    Ok((node, log))
}

/// The server: a registry with the log bound as `logs`.
async fn server() -> Result<(), Failure> {
    let node = node_builder()
        .name("logs-server")
        .listen("127.0.0.1:0")
        .build()
        .await?;
    let registry = RegistryServer::serve(&node, MemoryStore::new())?;
    let log: LogRef = node.spawn(LogBook {
        lines: watch::Sender::new(Vec::new()),
        followers: Vec::new(),
    });
    registry.rebind("logs", &log).await?;
    announce(&node);
    serve_until_signal(&node).await;
    Ok(())
}

/// A follower: prints every line from `from` on, then each new one, until Ctrl-C
/// or SIGTERM, or until it loses the log.
async fn follow(registry_addr: &str, from: u64) -> Result<(), Failure> {
    let (node, log) = connect(node_builder().name("logs-follower"), registry_addr).await?;
    let mut lines = log.tail(from).await?;
    let stop = stop_signal()?;
    announce(&node);
    println!("following the log from #{from}");
    let printing = async {
        while let Some(line) = lines.next().await {
            let Line { seq, text } = line?;
            println!("#{seq} {text}");
        }
        println!("the log ended");
        Ok::<_, remora::CallError>(())
    };
    // Stopped, the follower stops reading before its node shuts down: the tail
    // would report this node's own shutdown as the server's node being down.
    let lost = tokio::select! {
        () = stop => None,
        ended = printing => ended.err(),
    };
    node.shutdown().await;
    match lost {
        None => Ok(()),
        Some(err) => Err(format!("lost the log: {err}").into()),
    }
}

/// Resolves on Ctrl-C or SIGTERM received from the moment it is called (on Unix).
/// Call it before `announce`: a cluster may send SIGTERM as soon as it reads `READY`.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// A client: follows the log from its end, appends `lines`, uploads `upload_mib`
/// MiB, then checks that its tail saw exactly what it added, in order.
async fn client(registry_addr: &str, lines: &[String], upload_mib: u64) -> Result<(), Failure> {
    let (node, log) = connect(node_builder().name("logs-client"), registry_addr).await?;
    announce(&node);
    let from = log.next_seq().await?;
    let mut tail = log.tail(from).await?;
    println!("following the log from #{from}");

    let mut added = Vec::new();
    for text in lines {
        let seq = log.append(text.clone()).await?;
        println!("appended #{seq} {text}");
        added.push(Line {
            seq,
            text: text.clone(),
        });
    }
    if upload_mib > 0 {
        let name = format!("blob-{upload_mib}MiB.bin");
        let summary = upload(&log, &name, upload_mib).await?;
        added.push(Line {
            seq: summary.seq,
            text: format!("uploaded {name}: {}", summary.tally),
        });
    }

    // The tail kept what came meanwhile, up to its pipe's room; its producer
    // waits (reading nothing more from the log) until this reads on.
    let Some(last) = added.last().map(|line| line.seq) else {
        node.shutdown().await;
        return Ok(());
    };
    let mut followed = Vec::new();
    for _ in from..=last {
        let line = match timeout(WITHIN, tail.next()).await {
            Ok(Some(line)) => line?,
            Ok(None) => return Err("the tail ended early".into()),
            Err(_) => return Err(format!("no line from the tail within {WITHIN:?}").into()),
        };
        println!("followed #{} {}", line.seq, line.text);
        followed.push(line);
    }
    // Lines of others may come between; this client's own are where it put them.
    for line in &added {
        let at = (line.seq - from) as usize;
        if followed.get(at) != Some(line) {
            return Err(format!(
                "the tail has {:?} where #{} was added",
                followed.get(at),
                line.seq
            )
            .into());
        }
    }
    println!("the tail followed every line added, in order");
    node.shutdown().await;
    Ok(())
}

/// Uploads `mib` MiB of made-up data as `name` through a pipe whose receiving half
/// goes to the server in the call, and checks the server's count against its own.
async fn upload(log: &LogRef, name: &str, mib: u64) -> Result<UploadSummary, Failure> {
    let (tx, rx) = pipe::channel::<Bytes>(UPLOAD_CAPACITY);
    let chunks = (mib << 20).div_ceil(CHUNK as u64);
    let producer = tokio::spawn(async move {
        let mut data = Noise(0x9e37_79b9_7f4a_7c15);
        let mut tally = Tally::default();
        for _ in 0..chunks {
            let chunk = data.chunk(CHUNK);
            tally.add(&chunk);
            // Waits while the server's side of the pipe is full.
            if let Err(err) = tx.send(chunk).await {
                return Err(match err {
                    SendError::Closed(_) => "the server stopped reading".to_owned(),
                    other => other.to_string(),
                });
            }
        }
        Ok(tally) // `tx` dropped: the end of the file
    });
    // The whole upload happens within this call: give it a deadline to match.
    let answer = log.with_timeout(WITHIN).upload(name.to_owned(), rx).await?;
    let sent = producer.await?;
    // A refusal first: it is why the producer's sends failed.
    let summary = answer.map_err(|refused| format!("the server refused the upload: {refused}"))?;
    let sent = sent?;
    println!("sent {name}: {sent}");
    println!(
        "the server counted {name}: {}, logged as #{}",
        summary.tally, summary.seq
    );
    if summary.tally != sent {
        return Err(format!("sent {sent}, but the server counted {}", summary.tally).into());
    }
    Ok(summary)
}

/// Made-up file contents: xorshift64, 8 bytes a step.
struct Noise(u64);

impl Noise {
    fn chunk(&mut self, len: usize) -> Bytes {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(len);
        Bytes::from(out)
    }
}

/// What the node processes print, line by line (`None` at the end of one's output).
type Screen = mpsc::UnboundedSender<(&'static str, Option<String>)>;

/// Shows `node`'s output, as `who`, on `screen`.
fn watch_output(node: &mut ClusterNode, who: &'static str, screen: &Screen) -> Result<(), Failure> {
    use std::io::BufRead;
    let output = node
        .output
        .take()
        .ok_or("a process's output went missing")?;
    let screen = screen.clone();
    std::thread::spawn(move || {
        for line in output.lines() {
            let Ok(line) = line else { break };
            if screen.send((who, Some(line))).is_err() {
                return;
            }
        }
        let _ = screen.send((who, None));
    });
    Ok(())
}

/// The lines the demo's client appends.
const DEMO_LINES: [&str; 3] = [
    "boot: 3 workers up",
    "worker-2: job 17 done in 41 ms",
    "worker-1: job 18 failed: disk full",
];
/// The size of the demo's upload.
const DEMO_UPLOAD_MIB: u64 = 4;
/// How many lines the demo appends for its slow follower.
const SLOW_LINES: u64 = 300;

/// The server, a follower and a client as processes of a local cluster; then a
/// slow follower here.
async fn everything() -> Result<(), Failure> {
    let me = std::env::current_exe()?;
    let mut cluster = LocalCluster::new()?;
    let addr = cluster.start(&me, ["server"])?.addr.clone();
    println!("log server process listening on {addr}, the log bound as `logs`");

    let (screen, mut shown) = mpsc::unbounded_channel();
    let follower = cluster.start(&me, ["follow", "--registry", &addr])?;
    watch_output(follower, "follower", &screen)?;
    println!("follower process {} started", follower.child.id());

    let mib = DEMO_UPLOAD_MIB.to_string();
    let mut args = vec!["client", "--registry", &addr, "--upload-mib", &mib];
    for line in DEMO_LINES {
        args.extend(["--line", line]);
    }
    let client = cluster.start(&me, args)?;
    watch_output(client, "client", &screen)?;
    println!("client process {} started", client.child.id());

    // Both processes' output, until the client is done and the follower has
    // shown its lines and the upload's.
    let expected = DEMO_LINES.len() + 1;
    let (mut followed, mut client_done) = (0, false);
    let deadline = Instant::now() + WITHIN;
    while followed < expected || !client_done {
        match tokio::time::timeout_at(deadline, shown.recv()).await {
            Ok(Some((who, Some(line)))) => {
                followed += usize::from(who == "follower" && line.starts_with('#'));
                println!("  {who:<8} | {line}");
            }
            Ok(Some(("client", None))) => {
                let status = cluster.nodes()[2].child.wait()?;
                if !status.success() {
                    return Err(format!("the client process failed: {status}").into());
                }
                client_done = true;
            }
            Ok(_) => return Err("the follower process ended early".into()),
            Err(_) => return Err("the follower and client did not finish in time".into()),
        }
    }
    println!("the client process exited");

    let (node, log) = connect(cluster.builder().name("logs-narrator"), &addr).await?;
    let status = cluster.nodes()[1].terminate()?;
    if !status.success() {
        return Err(format!("the follower process did not stop cleanly: {status}").into());
    }
    println!("stopped the follower process (SIGTERM)");
    let deadline = Instant::now() + WITHIN;
    while !log.followers().await?.is_empty() {
        if Instant::now() > deadline {
            return Err("the server still feeds a tail nobody reads".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("the server's producers noticed their followers gone and ended: 0 tails");

    slow_follower(&log).await?;

    node.shutdown().await;
    let status = cluster.nodes()[0].terminate()?;
    if !status.success() {
        return Err(format!("the server process did not stop cleanly: {status}").into());
    }
    println!("stopped the server process (SIGTERM)");
    Ok(())
}

/// A follower that reads one line, then stops reading while many are appended:
/// its producer on the server goes no further than its pipe's room.
async fn slow_follower(log: &LogRef) -> Result<(), Failure> {
    let from = log.next_seq().await?;
    let mut tail = log.tail(from).await?;
    for i in 0..SLOW_LINES {
        log.append(format!("tick {i}")).await?;
    }
    let first = timeout(WITHIN, tail.next())
        .await?
        .ok_or("the slow tail ended")??;
    // Until the producer stops getting further (it waits for room).
    let mut sent = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let followers = log.followers().await?;
        let now = followers
            .iter()
            .find(|f| f.from == from)
            .map_or(0, |f| f.sent);
        if now == sent {
            break;
        }
        sent = now;
    }
    println!(
        "a slow follower read #{} and stopped; {SLOW_LINES} lines appended; \
         the server's producer for it has sent {sent} (pipe capacity {TAIL_CAPACITY}) and waits for room",
        first.seq
    );
    let mut seq = first.seq;
    for _ in 1..SLOW_LINES {
        let line = timeout(WITHIN, tail.next())
            .await?
            .ok_or("the slow tail ended")??;
        if line.seq != seq + 1 {
            return Err(format!("#{} came after #{seq}", line.seq).into());
        }
        seq = line.seq;
    }
    println!(
        "the slow follower read on: {SLOW_LINES} lines, #{} to #{seq}, in order",
        first.seq
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |flag: &str| -> Result<u64, Failure> {
        match values(&args, flag).pop() {
            None => Ok(0),
            Some(n) => n.parse().map_err(|e| format!("{flag} {n:?}: {e}").into()),
        }
    };
    let result = match args.first().map(String::as_str) {
        None => everything().await,
        Some("server") => server().await,
        Some("follow") => match (required(&args, "--registry", "ADDR"), number("--from")) {
            (Ok(addr), Ok(from)) => follow(&addr, from).await,
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(e),
        },
        Some("client") => match (
            required(&args, "--registry", "ADDR"),
            number("--upload-mib"),
        ) {
            (Ok(addr), Ok(mib)) => client(&addr, &values(&args, "--line"), mib).await,
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(e),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}: use `server`, `follow --registry ADDR [--from N]`, \
             `client --registry ADDR [--line TEXT ...] [--upload-mib N]`, or nothing"
        )
        .into()),
    };
    exit_code("logs", result)
}
