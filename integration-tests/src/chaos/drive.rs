//! The drivers: tasks of the chaos process that call the workers (and the
//! in-process journal) in a mix of asks, tells, exactly-once calls, reference
//! passing and registry lookups, each call with an id unique in the run and a
//! deadline, recording how each ended.
//!
//! A driver makes every call under a read permit of [`Shared::gate`]; the chaos
//! loop takes the write side to quiesce the cluster (every call in flight has
//! ended, none starts) while it measures counters. Drivers hold no reference
//! between calls, so a quiet cluster holds none of theirs.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use remora::{CallError, Interface, Node, NodeId, ObjectId, WireRef};
use remora_registry::Registry;

use super::check::{CallRecord, Kind, Observation, Outcome, Path};
use super::rng::Rng;
use super::JournalRef;

/// A worker's journal as the drivers reach it now (its slot's current process,
/// or the one just killed, until its restart replaces it).
#[derive(Clone, Debug)]
pub struct Target {
    pub node: NodeId,
    pub incarnation: u64,
    pub object: ObjectId,
    /// Where the worker listens.
    pub addr: String,
    /// The fault proxy in front of it, for the proxied driver.
    pub proxy: Option<String>,
}

impl Target {
    /// The journal as data; dialed at `addr` when its node is not connected.
    pub fn wire(&self, addr: &str) -> WireRef {
        WireRef {
            node: self.node,
            incarnation: self.incarnation,
            object: self.object,
            interface: <JournalRef as Interface>::ID,
            addr: Some(addr.to_owned()),
        }
    }
}

/// What the drivers and the chaos loop share.
pub struct Shared {
    pub start: Instant,
    /// Read: a call under way. Write: the cluster is quiet.
    pub gate: std::sync::Arc<tokio::sync::RwLock<()>>,
    pub stop: AtomicBool,
    /// By slot.
    pub targets: RwLock<Vec<Target>>,
    pub records: Mutex<Vec<CallRecord>>,
    /// What driver lookups resolved to.
    pub lookups: Mutex<Vec<Observation>>,
    next_id: AtomicU64,
    /// Every call's deadline (a relay's inner call gets `inner` more).
    pub deadline: Duration,
    pub inner: Duration,
}

impl Shared {
    pub fn new(targets: Vec<Target>, deadline: Duration, inner: Duration) -> Shared {
        Shared {
            start: Instant::now(),
            gate: std::sync::Arc::new(tokio::sync::RwLock::new(())),
            stop: AtomicBool::new(false),
            targets: RwLock::new(targets),
            records: Mutex::new(Vec::new()),
            lookups: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            deadline,
            inner,
        }
    }

    /// Since the run started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn record(&self, record: CallRecord) {
        self.records.lock().push(record);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

fn outcome<T>(result: &Result<T, CallError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Err {
            error: format!("{e:?}"),
            may_have_executed: e.may_have_executed(),
        },
    }
}

/// One call of `kind` with id `id` to `target`, timed and recorded.
struct Call<'a> {
    shared: &'a Shared,
    id: u64,
    kind: Kind,
    path: Path,
    target: u64,
    deadline: Duration,
}

impl Call<'_> {
    async fn run<T>(
        self,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        let start = self.shared.now();
        let result = call.await;
        self.shared.record(CallRecord {
            id: self.id,
            kind: self.kind,
            path: self.path,
            target: self.target,
            start,
            end: self.shared.now(),
            deadline: Some(self.deadline),
            outcome: outcome(&result),
        });
        result
    }
}

/// Calls `journal` as `kind` (ask, tell or exactly-once) with a fresh id.
async fn simple(shared: &Shared, kind: Kind, path: Path, target: u64, journal: JournalRef) {
    let id = shared.id();
    let call = Call {
        shared,
        id,
        kind,
        path,
        target,
        deadline: shared.deadline,
    };
    let journal = journal.with_timeout(shared.deadline);
    let _ = match kind {
        Kind::Tell => call.run(async { journal.note(id).await }).await,
        Kind::Once => call.run(journal.record_once(id)).await.map(drop),
        _ => call.run(journal.record(id)).await.map(drop),
    };
}

/// A resolve that failed is a call that failed before it left (recorded so).
fn unresolved(shared: &Shared, kind: Kind, path: Path, target: u64, error: CallError) {
    let now = shared.now();
    shared.record(CallRecord {
        id: shared.id(),
        kind,
        path,
        target,
        start: now,
        end: now,
        deadline: Some(shared.deadline),
        outcome: outcome::<()>(&Err(error)),
    });
}

fn pick(rng: &mut Rng, weights: &[(Kind, u64)]) -> Kind {
    let total: u64 = weights.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(total);
    for &(kind, weight) in weights {
        if roll < weight {
            return kind;
        }
        roll -= weight;
    }
    weights[0].0
}

/// Waits a little between calls, so that five processes and the chaos
/// process share two cores.
async fn pause(rng: &mut Rng) {
    tokio::time::sleep(rng.millis(2, 12)).await;
}

/// Calls the workers straight over QUIC from `node`: every kind.
pub async fn direct(shared: &Shared, node: Node, registry: Registry, mut rng: Rng) {
    const MIX: [(Kind, u64); 5] = [
        (Kind::Ask, 25),
        (Kind::Tell, 20),
        (Kind::Once, 20),
        (Kind::Relay, 15),
        (Kind::Lookup, 20),
    ];
    while !shared.stopped() {
        let permit = shared.gate.read().await;
        let targets = shared.targets.read().clone();
        let slot = rng.below(targets.len() as u64) as usize;
        let target = &targets[slot];
        let kind = pick(&mut rng, &MIX);
        let resolved = node.resolve::<JournalRef>(&target.wire(&target.addr));
        match (kind, resolved) {
            (_, Err(e)) => unresolved(shared, kind, Path::Direct, target.incarnation, e),
            (Kind::Relay, Ok(journal)) => {
                let other =
                    (slot + 1 + rng.below(targets.len() as u64 - 1) as usize) % targets.len();
                let via = &targets[other];
                match node.resolve::<JournalRef>(&via.wire(&via.addr)) {
                    Ok(via_ref) => relay(shared, journal, target, via_ref, via).await,
                    Err(e) => unresolved(shared, kind, Path::Direct, target.incarnation, e),
                }
            }
            (Kind::Lookup, _) => lookup(shared, &node, &registry, slot).await,
            (kind, Ok(journal)) => {
                simple(shared, kind, Path::Direct, target.incarnation, journal).await
            }
        }
        drop(permit);
        pause(&mut rng).await;
    }
}

/// `journal.relay(id, via)`: a reference out and back, and a call from the
/// worker to another worker; both recorded.
async fn relay(
    shared: &Shared,
    journal: JournalRef,
    to: &Target,
    via: JournalRef,
    via_target: &Target,
) {
    let id = shared.id();
    let deadline = shared.deadline + shared.inner;
    let call = Call {
        shared,
        id,
        kind: Kind::Relay,
        path: Path::Direct,
        target: to.incarnation,
        deadline,
    };
    let result = call
        .run(journal.with_timeout(deadline).relay(id, via))
        .await;
    if let Ok(inner) = result {
        let now = shared.now();
        shared.record(CallRecord {
            id,
            kind: Kind::Relayed,
            path: Path::Direct,
            target: via_target.incarnation,
            start: now,
            end: now,
            deadline: None,
            outcome: outcome(&inner),
        });
    }
}

/// Looks slot `slot`'s name up, then asks what it resolved to.
async fn lookup(shared: &Shared, node: &Node, registry: &Registry, slot: usize) {
    let id = shared.id();
    let start = shared.now();
    let name = format!("slot/{slot}");
    let found = tokio::time::timeout(shared.deadline, registry.lookup::<JournalRef>(&name)).await;
    let journal = match found {
        Ok(Ok(journal)) => journal,
        failed => {
            let error = match failed {
                Ok(Err(e)) => format!("Lookup({e})"),
                _ => "Lookup(timed out)".to_owned(),
            };
            shared.record(CallRecord {
                id,
                kind: Kind::Lookup,
                path: Path::Direct,
                target: 0,
                start,
                end: shared.now(),
                deadline: Some(shared.deadline * 2),
                outcome: Outcome::Err {
                    error,
                    may_have_executed: false,
                },
            });
            return;
        }
    };
    let wire = node.wire_ref(&journal);
    let node_id = wire.node.to_string();
    shared.lookups.lock().push(Observation {
        at: start,
        what: "lookup",
        entries: vec![(name, node_id.clone(), node_id)],
    });
    let result = journal.with_timeout(shared.deadline).record(id).await;
    shared.record(CallRecord {
        id,
        kind: Kind::Lookup,
        path: Path::Direct,
        target: wire.incarnation,
        start,
        end: shared.now(),
        deadline: Some(shared.deadline * 2),
        outcome: outcome(&result),
    });
}

/// Calls the proxied workers from `node` (which reaches them only through
/// their fault proxies): asks, tells, exactly-once calls.
pub async fn proxied(shared: &Shared, node: Node, mut rng: Rng) {
    const MIX: [(Kind, u64); 3] = [(Kind::Ask, 35), (Kind::Tell, 30), (Kind::Once, 35)];
    while !shared.stopped() {
        let permit = shared.gate.read().await;
        let targets: Vec<Target> = shared
            .targets
            .read()
            .iter()
            .filter(|t| t.proxy.is_some())
            .cloned()
            .collect();
        let target = &targets[rng.below(targets.len() as u64) as usize];
        let kind = pick(&mut rng, &MIX);
        let proxy = target.proxy.as_deref().unwrap_or(&target.addr);
        match node.resolve::<JournalRef>(&target.wire(proxy)) {
            Ok(journal) => simple(shared, kind, Path::Proxied, target.incarnation, journal).await,
            Err(e) => unresolved(shared, kind, Path::Proxied, target.incarnation, e),
        }
        drop(permit);
        pause(&mut rng).await;
    }
}

/// Calls the in-process journal (`wire`, on another node of this process)
/// from `node`, over a wire the chaos loop cuts and reconnects.
pub async fn in_process(shared: &Shared, node: Node, wire: WireRef, mut rng: Rng) {
    const MIX: [(Kind, u64); 3] = [(Kind::Ask, 35), (Kind::Tell, 30), (Kind::Once, 35)];
    while !shared.stopped() {
        let permit = shared.gate.read().await;
        let kind = pick(&mut rng, &MIX);
        match node.resolve::<JournalRef>(&wire) {
            Ok(journal) => simple(shared, kind, Path::InProcess, wire.incarnation, journal).await,
            Err(e) => unresolved(shared, kind, Path::InProcess, wire.incarnation, e),
        }
        drop(permit);
        pause(&mut rng).await;
    }
}
