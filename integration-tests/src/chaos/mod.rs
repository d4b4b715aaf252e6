//! The chaos suite's shared pieces: the `Journal` interface every chaos node
//! serves, the actor behind it (which appends one line per call it runs to an
//! `O_APPEND` file before it answers, so the journal outlives a `kill -9`), the
//! node counters it reports, and the fault-injecting UDP proxy
//! ([`proxy::FaultProxy`]). `remora-chaos` (src/bin/chaos.rs) drives it all;
//! `remora-chaos-node` (src/bin/chaos_node.rs) is a worker or registry process.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use remora::{Actor, CallError, Node, NodeStats};
use serde::{Deserialize, Serialize};

pub mod check;
pub mod drive;
pub mod process;
pub mod proxy;
pub mod rng;

/// Journal method names, as the callee writes them: `<incarnation> <method> <id>`.
pub mod method {
    /// `record`: a plain ask.
    pub const ASK: &str = "ask";
    /// `note`: a tell.
    pub const TELL: &str = "tell";
    /// `record_once`: an `#[exactly_once]` ask.
    pub const ONCE: &str = "once";
    /// `relay`: an ask carrying a reference, which the callee calls.
    pub const RELAY: &str = "relay";
    /// `relayed`: the call `relay` makes on the reference it was given.
    pub const RELAYED: &str = "relayed";
}

/// What every chaos node serves. Each call carries an id unique in the run; the
/// callee journals it before answering.
#[remora::remote]
pub trait Journal {
    /// Journals `ask <id>`; returns `id`.
    async fn record(&mut self, id: u64) -> u64;
    /// Journals `tell <id>`.
    #[oneway]
    async fn note(&mut self, id: u64);
    /// Journals `once <id>`; returns `id`. Retried through lost connections.
    #[exactly_once]
    async fn record_once(&mut self, id: u64) -> u64;
    /// Journals `relay <id>`, then calls `via.relayed(id)` (so `via`'s node
    /// journals `relayed <id>`) and hands `via` back: a reference in an argument
    /// and in the reply. The inner call's error, if any, is the reply.
    async fn relay(&mut self, id: u64, via: JournalRef) -> Result<JournalRef, CallError>;
    /// Journals `relayed <id>`; returns `id`.
    async fn relayed(&mut self, id: u64) -> u64;
    /// The node's counters now.
    async fn stats(&mut self) -> Counters;
    /// Connects the node to each of `addrs` (already connected: nothing); returns
    /// how many connects failed.
    async fn mesh(&mut self, addrs: Vec<String>) -> usize;
}

/// The [`NodeStats`] fields the suite watches return to their baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub actors: usize,
    pub leases_granted: usize,
    pub leases_held: usize,
    pub monitors: usize,
    pub monitored: usize,
    pub connections: usize,
    pub call_lanes: usize,
    pub queued_bytes: usize,
    pub calls_held: usize,
}

impl From<NodeStats> for Counters {
    fn from(s: NodeStats) -> Counters {
        Counters {
            actors: s.actors,
            leases_granted: s.leases_granted,
            leases_held: s.leases_held,
            monitors: s.monitors,
            monitored: s.monitored,
            connections: s.connections,
            call_lanes: s.call_lanes,
            queued_bytes: s.queued_bytes,
            calls_held: s.calls_held,
        }
    }
}

impl Counters {
    /// Whether `self` is back at `baseline`: the counters that describe held
    /// state equal it, nothing is queued or held, and call lanes are at most
    /// `lanes_at_most` (lanes open with a connection and are never closed
    /// while it lives, so they can only be compared to a bound).
    pub fn at_baseline(&self, baseline: &Counters, lanes_at_most: usize) -> bool {
        self.differences(baseline, lanes_at_most, 0).is_empty()
    }

    /// The fields that are not back at `baseline`, as `name now/baseline`;
    /// connections may be `connections_slack` off either way (see
    /// [`connection_slack`]).
    pub fn differences(
        &self,
        baseline: &Counters,
        lanes_at_most: usize,
        connections_slack: usize,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut same = |name: &str, now: usize, then: usize| {
            if now != then {
                out.push(format!("{name} {now}/{then}"));
            }
        };
        same("actors", self.actors, baseline.actors);
        same(
            "leases_granted",
            self.leases_granted,
            baseline.leases_granted,
        );
        same("leases_held", self.leases_held, baseline.leases_held);
        same("monitors", self.monitors, baseline.monitors);
        same("monitored", self.monitored, baseline.monitored);
        same("queued_bytes", self.queued_bytes, 0);
        same("calls_held", self.calls_held, 0);
        if self.connections.abs_diff(baseline.connections) > connections_slack {
            out.push(format!(
                "connections {}/{}",
                self.connections, baseline.connections
            ));
        }
        if self.call_lanes > lanes_at_most {
            out.push(format!("call_lanes {}>{lanes_at_most}", self.call_lanes));
        }
        out
    }
}

/// How far a node's count of connections may be from its baseline: 0, but 1 for
/// the proxied node and the workers. The proxied node reaches two workers
/// through fault proxies, but the runtime may also dial their real addresses,
/// which their references and `Hello`s carry (a lease renewal dials a holder's
/// peer; a stateless reset after a same-key restart dials the peer's address),
/// so whether it holds a direct connection to a worker, or none for a while
/// after a partition, varies. Every other counter must be back exactly.
pub fn connection_slack(node: &str) -> usize {
    usize::from(node == "proxied" || node.starts_with('w'))
}

/// The `Journal` actor: appends to its node's journal file, one `write` a line.
pub struct JournalActor {
    node: Node,
    file: std::fs::File,
    /// How long `relay`'s inner call may take.
    relay_timeout: Duration,
}

impl JournalActor {
    /// An actor of `node` journaling to `path` (created, appended to).
    pub fn open(node: Node, path: &Path, relay_timeout: Duration) -> std::io::Result<JournalActor> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JournalActor {
            node,
            file,
            relay_timeout,
        })
    }

    /// One line, written before the call answers: a `kill -9` after the write
    /// keeps it (the kernel has it), one before means the call did not run.
    fn journal(&mut self, method: &str, id: u64) {
        let line = format!("{} {method} {id}\n", self.node.incarnation());
        if let Err(err) = self.file.write_all(line.as_bytes()) {
            // A journal that cannot be written makes every check meaningless.
            eprintln!("journal write failed: {err}");
            std::process::abort();
        }
    }
}

impl Actor for JournalActor {}

impl Journal for JournalActor {
    async fn record(&mut self, id: u64) -> u64 {
        self.journal(method::ASK, id);
        id
    }
    async fn note(&mut self, id: u64) {
        self.journal(method::TELL, id);
    }
    async fn record_once(&mut self, id: u64) -> u64 {
        self.journal(method::ONCE, id);
        id
    }
    async fn relay(&mut self, id: u64, via: JournalRef) -> Result<JournalRef, CallError> {
        self.journal(method::RELAY, id);
        via.with_timeout(self.relay_timeout).relayed(id).await?;
        Ok(via)
    }
    async fn relayed(&mut self, id: u64) -> u64 {
        self.journal(method::RELAYED, id);
        id
    }
    async fn stats(&mut self) -> Counters {
        self.node.stats().into()
    }
    async fn mesh(&mut self, addrs: Vec<String>) -> usize {
        let mut failed = 0;
        for addr in addrs {
            if self.node.connect(&addr).await.is_err() {
                failed += 1;
            }
        }
        failed
    }
}

/// One line of a callee journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub incarnation: u64,
    pub method: String,
    pub id: u64,
}

/// Reads a journal file; a torn last line (none is expected: one `write` a
/// line) is skipped and counted.
pub fn read_journal(path: &Path) -> std::io::Result<(Vec<Entry>, usize)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err),
    };
    let mut entries = Vec::new();
    let mut torn = 0;
    for line in text.lines() {
        let mut words = line.split(' ');
        let parsed = (|| {
            let incarnation = words.next()?.parse().ok()?;
            let method = words.next()?.to_owned();
            let id = words.next()?.parse().ok()?;
            Some(Entry {
                incarnation,
                method,
                id,
            })
        })();
        match parsed {
            Some(entry) => entries.push(entry),
            None => torn += 1,
        }
    }
    Ok((entries, torn))
}
