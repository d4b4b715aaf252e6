//! The invariants, checked after a run from what the callers recorded and what
//! the callees journaled. Each check counts the calls (or observations) it
//! examined and those that violated it, keeping the first few violations as
//! text for the report.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::{method, Entry};

/// How a call was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A plain ask (`record`).
    Ask,
    /// A tell (`note`).
    Tell,
    /// An `#[exactly_once]` ask (`record_once`).
    Once,
    /// An ask passing a reference (`relay`), which the callee calls.
    Relay,
    /// The call a `relay` made on the reference it was given (recorded from
    /// the reply that reported it; untimed).
    Relayed,
    /// A registry lookup of a worker's name, then an ask on what it resolved to.
    Lookup,
}

impl Kind {
    /// The journal method a call of this kind leaves in its callee's journal.
    pub fn method(self) -> &'static str {
        match self {
            Kind::Ask | Kind::Lookup => method::ASK,
            Kind::Tell => method::TELL,
            Kind::Once => method::ONCE,
            Kind::Relay => method::RELAY,
            Kind::Relayed => method::RELAYED,
        }
    }

    /// Whether an `Ok` means the callee ran it (an ask's reply comes after).
    fn ok_means_ran(self) -> bool {
        !matches!(self, Kind::Tell)
    }
}

/// Which way a call went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    /// QUIC, straight to the worker.
    Direct,
    /// QUIC through a fault proxy.
    Proxied,
    /// The in-process transport, whose wire is cut now and then.
    InProcess,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Err {
        /// The error, as displayed (or a lookup's failure).
        error: String,
        /// `CallError::may_have_executed()` (false for a failed lookup: no
        /// call was made).
        may_have_executed: bool,
    },
}

/// One call, as its caller saw it.
#[derive(Clone, Debug)]
pub struct CallRecord {
    pub id: u64,
    pub kind: Kind,
    pub path: Path,
    /// The incarnation of the node the call went to (0: unknown, none was
    /// called).
    pub target: u64,
    /// From the start of the run.
    pub start: Duration,
    pub end: Duration,
    /// The bound on the call's duration from its deadlines; None: untimed.
    pub deadline: Option<Duration>,
    pub outcome: Outcome,
}

/// One run of a node process (or an in-process node, never killed).
#[derive(Clone, Debug)]
pub struct Life {
    pub name: String,
    pub node: String,
    pub incarnation: u64,
    pub started: Duration,
    pub killed: Option<Duration>,
}

/// What the registry said at some moment: `(name, target node, owner node)`.
#[derive(Clone, Debug)]
pub struct Observation {
    pub at: Duration,
    pub what: &'static str,
    pub entries: Vec<(String, String, String)>,
}

/// One invariant's tally.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub name: &'static str,
    pub checked: u64,
    pub violated: u64,
    pub examples: Vec<String>,
}

const EXAMPLES: usize = 8;

impl Tally {
    pub fn new(name: &'static str) -> Tally {
        Tally {
            name,
            ..Tally::default()
        }
    }

    /// Counts one check; a violation when `why` is Some.
    pub fn check(&mut self, why: Option<String>) {
        self.checked += 1;
        if let Some(why) = why {
            self.violated += 1;
            if self.examples.len() < EXAMPLES {
                self.examples.push(why);
            }
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  {:<44} checked {:>7}  violated {:>4}",
            self.name, self.checked, self.violated
        )?;
        for example in &self.examples {
            write!(f, "\n      ! {example}")?;
        }
        Ok(())
    }
}

/// The callee journals by id: `(method, incarnation)` for every line.
pub struct Journals {
    by_id: HashMap<u64, Vec<(String, u64)>>,
}

impl Journals {
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> Journals {
        let mut by_id: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
        for e in entries {
            by_id
                .entry(e.id)
                .or_default()
                .push((e.method, e.incarnation));
        }
        Journals { by_id }
    }

    /// How often `id` ran as `method`.
    pub fn runs(&self, id: u64, method: &str) -> usize {
        self.by_id
            .get(&id)
            .map_or(0, |runs| runs.iter().filter(|(m, _)| m == method).count())
    }

    /// Every line of `id`, as `method@incarnation`.
    fn describe(&self, id: u64) -> String {
        self.by_id.get(&id).map_or("none".into(), |runs| {
            let runs: Vec<String> = runs.iter().map(|(m, i)| format!("{m}@{i:x}")).collect();
            runs.join(",")
        })
    }

    /// Ids journaled that no caller recorded.
    pub fn unexplained(&self, records: &[CallRecord]) -> usize {
        let known: std::collections::HashSet<u64> = records.iter().map(|r| r.id).collect();
        self.by_id.keys().filter(|id| !known.contains(id)).count()
    }
}

fn describe(r: &CallRecord, journals: &Journals) -> String {
    let outcome = match &r.outcome {
        Outcome::Ok => "Ok".to_owned(),
        Outcome::Err {
            error,
            may_have_executed,
        } => format!("Err(may_have_executed={may_have_executed}: {error})"),
    };
    format!(
        "id {} {:?} {:?} to {:x} at {:.3}s..{:.3}s: {outcome}; journals: {}",
        r.id,
        r.kind,
        r.path,
        r.target,
        r.start.as_secs_f64(),
        r.end.as_secs_f64(),
        journals.describe(r.id)
    )
}

/// 1. No call outlived its deadline plus `grace` (the peer timeout, the
///    documented detection bound, and scheduling slack).
pub fn deadlines(records: &[CallRecord], grace: Duration, journals: &Journals) -> Tally {
    let mut tally = Tally::new("1 within deadline + detection bound");
    for r in records {
        let Some(deadline) = r.deadline else { continue };
        let took = r.end.saturating_sub(r.start);
        tally.check((took > deadline + grace).then(|| {
            format!(
                "took {took:?} > {deadline:?} + {grace:?}: {}",
                describe(r, journals)
            )
        }));
    }
    tally
}

/// 2. No at-most-once call (ask, tell, relay and its inner call, lookup's ask)
///    ran twice; one whose reply said Ok ran once.
pub fn at_most_once(records: &[CallRecord], journals: &Journals) -> Tally {
    let mut tally = Tally::new("2 at-most-once ran <= 1 (= 1 if Ok)");
    for r in records.iter().filter(|r| r.kind != Kind::Once) {
        let runs = journals.runs(r.id, r.kind.method());
        let ok_unrun = r.outcome == Outcome::Ok && r.kind.ok_means_ran() && runs != 1;
        tally.check((runs > 1 || ok_unrun).then(|| describe(r, journals)));
    }
    tally
}

/// 3. Every exactly-once call ran at most once, and once if it returned Ok;
///    `survived` counts those whose callee outlived the call.
pub fn exactly_once(records: &[CallRecord], journals: &Journals, lives: &[Life]) -> Tally {
    let mut tally = Tally::new("3 exactly-once ran <= 1 (= 1 if Ok)");
    for r in records.iter().filter(|r| r.kind == Kind::Once) {
        let runs = journals.runs(r.id, method::ONCE);
        let ok_unrun = r.outcome == Outcome::Ok && runs != 1;
        tally.check((runs > 1 || ok_unrun).then(|| {
            let survived = survived(lives, r.target, r.end);
            format!("callee survived: {survived}; {}", describe(r, journals))
        }));
    }
    tally
}

fn survived(lives: &[Life], incarnation: u64, until: Duration) -> bool {
    lives
        .iter()
        .find(|l| l.incarnation == incarnation)
        .is_some_and(|l| l.killed.is_none_or(|k| k > until))
}

/// 4. Every call reported with `may_have_executed() == false` did not run: its
///    id is in no journal (for a relay: neither `relay` nor `relayed`).
pub fn honesty(records: &[CallRecord], journals: &Journals) -> Tally {
    let mut tally = Tally::new("4 may_have_executed=false => did not run");
    for r in records {
        let Outcome::Err {
            may_have_executed: false,
            ..
        } = &r.outcome
        else {
            continue;
        };
        let ran = match r.kind {
            Kind::Relay => {
                journals.runs(r.id, method::RELAY) + journals.runs(r.id, method::RELAYED)
            }
            kind => journals.runs(r.id, kind.method()),
        };
        tally.check((ran > 0).then(|| describe(r, journals)));
    }
    tally
}

/// 5. No registry entry named (as target or owner) a node killed more than
///    `within` (its lease plus slack) before the observation.
pub fn registry(observations: &[Observation], lives: &[Life], within: Duration) -> Tally {
    let mut tally = Tally::new("5 no registry name of a dead node past lease");
    let by_node: HashMap<&str, &Life> = lives.iter().map(|l| (l.node.as_str(), l)).collect();
    for o in observations {
        for (name, target, owner) in &o.entries {
            let ghost = |node: &str| match by_node.get(node) {
                None => Some(format!("unknown node {node}")),
                Some(life) => life
                    .killed
                    .filter(|&k| o.at > k + within)
                    .map(|k| format!("{} killed at {:.3}s", life.name, k.as_secs_f64())),
            };
            let why = ghost(target).or_else(|| ghost(owner));
            tally.check(why.map(|why| {
                format!(
                    "{} at {:.3}s: {name} -> {target}: {why}",
                    o.what,
                    o.at.as_secs_f64()
                )
            }));
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, kind: Kind, outcome: Outcome) -> CallRecord {
        CallRecord {
            id,
            kind,
            path: Path::Direct,
            target: 1,
            start: Duration::ZERO,
            end: Duration::from_millis(10),
            deadline: Some(Duration::from_millis(100)),
            outcome,
        }
    }

    fn line(id: u64, method: &str) -> Entry {
        Entry {
            incarnation: 1,
            method: method.into(),
            id,
        }
    }

    fn not_run() -> Outcome {
        Outcome::Err {
            error: "x".into(),
            may_have_executed: false,
        }
    }

    #[test]
    fn each_check_catches_its_violation() {
        let records = [
            record(1, Kind::Ask, Outcome::Ok),
            record(2, Kind::Ask, Outcome::Ok),
            record(3, Kind::Tell, not_run()),
            record(4, Kind::Once, Outcome::Ok),
            record(5, Kind::Relay, not_run()),
            record(7, Kind::Ask, Outcome::Ok),
        ];
        let journals = Journals::new([
            line(1, method::ASK),
            line(2, method::ASK),
            line(2, method::ASK),
            line(3, method::TELL),
            line(5, method::RELAYED),
        ]);
        assert_eq!(
            at_most_once(&records, &journals).violated,
            2,
            "2 ran twice, 7 said Ok and never ran"
        );
        assert_eq!(
            exactly_once(&records, &journals, &[]).violated,
            1,
            "4 unrun"
        );
        assert_eq!(honesty(&records, &journals).violated, 2, "3 and 5 ran");
        let mut late = record(6, Kind::Ask, Outcome::Ok);
        late.end = Duration::from_secs(5);
        assert_eq!(
            deadlines(&[late], Duration::from_secs(1), &journals).violated,
            1
        );
    }

    #[test]
    fn a_dead_nodes_entry_is_a_ghost_only_past_its_lease() {
        let lives = [Life {
            name: "w0".into(),
            node: "n".into(),
            incarnation: 1,
            started: Duration::ZERO,
            killed: Some(Duration::from_secs(1)),
        }];
        let seen = |secs| Observation {
            at: Duration::from_secs(secs),
            what: "list",
            entries: vec![("slot/0".into(), "n".into(), "n".into())],
        };
        let within = Duration::from_secs(2);
        assert_eq!(registry(&[seen(2)], &lives, within).violated, 0);
        assert_eq!(registry(&[seen(4)], &lives, within).violated, 1);
    }
}
