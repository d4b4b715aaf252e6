//! `remora-chaos`: a registry and four worker processes on loopback, driven by
//! tasks of this process with asks, tells, exactly-once calls, reference
//! passing and registry lookups, while a chaos loop `kill -9`s workers and
//! restarts them at their address (keeping their key or not), cuts an
//! in-process wire, and mistreats two QUIC links through UDP fault proxies
//! (loss, delay, reordering, duplication, partitions). Afterwards the callers'
//! records and the callees' journals are checked against Remora's promises:
//!
//! 1. no call outlives its deadline plus the detection bound (the peer timeout);
//! 2. no at-most-once call runs twice (and one that said Ok ran);
//! 3. no exactly-once call runs twice (and one that said Ok ran);
//! 4. a call reported with `may_have_executed() == false` did not run;
//! 5. a killed node's registry names are gone within its lease;
//! 6. the nodes' counters return to their baseline after each kill.
//!
//! It prints a summary and exits 1 if any invariant was violated (2 if the run
//! could not be set up). The journals are kept (their directory printed) when
//! something failed, or with `--keep`.
//!
//! ```text
//! remora-chaos [--secs N | --minutes N] [--seed S] [--keep]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remora::remote::inproc::{self, Wire};
use remora::{Credentials, Node};
use remora_integration_tests::chaos::check::{
    self, CallRecord, Kind, Life, Observation, Outcome, Tally,
};
use remora_integration_tests::chaos::drive::{self, Shared, Target};
use remora_integration_tests::chaos::process::NodeProcess;
use remora_integration_tests::chaos::proxy::{FaultProxy, Faults};
use remora_integration_tests::chaos::rng::Rng;
use remora_integration_tests::chaos::{
    connection_slack, read_journal, Counters, JournalActor, JournalRef,
};
use remora_registry::Registry;

const WORKERS: usize = 4;
/// Workers whose link from the proxied driver goes through a fault proxy.
const PROXIED: usize = 2;
const DIRECT_DRIVERS: usize = 3;
/// On every node: how long a silent peer may stay silent.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);
/// The workers' registry lease (and the registry's maximum).
const REGISTRY_LEASE: Duration = Duration::from_secs(2);
/// Reference leases, on every node.
const REF_LEASE: Duration = Duration::from_secs(2);
/// Every driver call's deadline.
const DEADLINE: Duration = Duration::from_millis(1500);
/// The workers' default deadline: a relay's inner call.
const INNER: Duration = Duration::from_millis(1000);
/// Scheduling slack: six processes share two cores.
const SLACK: Duration = Duration::from_millis(1000);
/// How long counters get to return to their baseline.
const SETTLE_WITHIN: Duration = Duration::from_secs(15);
/// Lanes a connection opens at most.
const MAX_LANES: usize = 16;

struct Config {
    run: Duration,
    seed: u64,
    keep: bool,
}

fn parse() -> Result<Config, String> {
    let mut config = Config {
        run: Duration::from_secs(60),
        seed: Rng::clock_seed(),
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut number = || -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{flag} takes a number"))
        };
        match flag.as_str() {
            "--secs" => config.run = Duration::from_secs(number()?),
            "--minutes" => config.run = Duration::from_secs(60 * number()?),
            "--seed" => config.seed = number()?,
            "--keep" => config.keep = true,
            other => return Err(format!("unknown argument {other}; usage: remora-chaos [--secs N | --minutes N] [--seed S] [--keep]")),
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    let config = match parse() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(config)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("remora-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

/// What the chaos did, counted as it happens.
#[derive(Default)]
struct Counts {
    kills: AtomicU64,
    same_key: AtomicU64,
    quiet_kills: AtomicU64,
    restarts: AtomicU64,
    partitions: AtomicU64,
    cuts: AtomicU64,
    fault_changes: AtomicU64,
    heals: AtomicU64,
    checkpoints: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The network faults the chaos loop controls: the fault proxies and the
/// in-process wire. Every fault is made and undone under `lock`, so whoever
/// holds it sees a healed network.
struct Network {
    lock: Arc<tokio::sync::Mutex<()>>,
    proxies: Vec<FaultProxy>,
    wire: parking_lot::Mutex<Option<Wire>>,
    /// The in-process pair: the caller, and the node with the journal.
    inproc: (Node, Node),
}

impl Network {
    fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }

    async fn reconnect(&self) -> Result<(), String> {
        let wire = inproc::connect(&self.inproc.0, &self.inproc.1)
            .await
            .map_err(|e| format!("in-process reconnect: {e}"))?;
        *self.wire.lock() = Some(wire);
        Ok(())
    }
}

/// One worker slot: its address (kept across restarts), its key directory,
/// and its current process.
struct Slot {
    addr: String,
    keys: PathBuf,
    process: Option<NodeProcess>,
    /// The driver node's reference to its journal, for counters and meshing.
    control: Option<JournalRef>,
}

struct Chaos {
    binary: PathBuf,
    root: PathBuf,
    journals: PathBuf,
    registry: NodeProcess,
    registry_control: JournalRef,
    slots: Vec<Slot>,
    lives: Vec<Life>,
    driver: Node,
    proxied: Node,
    registry_handle: Registry,
    net: Arc<Network>,
    shared: Arc<Shared>,
    /// The in-process journal, as data (exported once, at set-up).
    inproc_journal: remora::WireRef,
    counts: Arc<Counts>,
    baseline: HashMap<String, Counters>,
    observations: Vec<Observation>,
    counters_tally: Tally,
    names_tally: Tally,
}

fn node_args(mode: &str, credentials: &FsPath, journal: &FsPath, listen: &str) -> Vec<String> {
    let ms = |d: Duration| d.as_millis().to_string();
    [
        mode,
        "--credentials",
        &credentials.display().to_string(),
        "--journal",
        &journal.display().to_string(),
        "--listen",
        listen,
        "--peer-timeout-ms",
        &ms(PEER_TIMEOUT),
        "--ref-lease-ms",
        &ms(REF_LEASE),
        "--call-timeout-ms",
        &ms(INNER),
        "--lease-ms",
        &ms(REGISTRY_LEASE),
        "--max-lease-ms",
        &ms(REGISTRY_LEASE),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts a node process (blocking until READY) off the runtime's threads.
async fn start(binary: &FsPath, args: Vec<String>) -> Result<NodeProcess, String> {
    let binary = binary.to_owned();
    tokio::task::spawn_blocking(move || NodeProcess::start(&binary, &args))
        .await
        .map_err(|e| e.to_string())?
}

async fn chaos_node(name: &str, root: &FsPath) -> Result<Node, String> {
    Node::builder()
        .name(name)
        .credentials(root)
        .peer_timeout(PEER_TIMEOUT)
        .lease(REF_LEASE)
        .default_timeout(DEADLINE)
        .build()
        .await
        .map_err(|e| format!("{name}: {e}"))
}

fn life(name: String, process: &NodeProcess, at: Duration) -> Life {
    Life {
        name,
        node: process.node.to_string(),
        incarnation: process.incarnation,
        started: at,
        killed: None,
    }
}

impl Chaos {
    async fn set_up(root: PathBuf, journals: PathBuf, seed: u64) -> Result<Chaos, String> {
        let binary = std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("remora-chaos-node");
        Credentials::create_cluster(&root).map_err(|e| e.to_string())?;
        let mut args = node_args("registry", &root, &journals.join("registry"), "127.0.0.1:0");
        let registry = start(&binary, args.clone()).await?;
        let mut slots = Vec::new();
        for k in 0..WORKERS {
            let keys = root.join(format!("w{k}"));
            Credentials::issue_named_node(&root, &keys, &format!("w{k}"))
                .map_err(|e| e.to_string())?;
            args = worker_args(&keys, &journals, k, "127.0.0.1:0", &registry.addr);
            let process = start(&binary, args).await?;
            slots.push(Slot {
                addr: process.addr.clone(),
                keys,
                process: Some(process),
                control: None,
            });
        }
        let driver = chaos_node("driver", &root).await?;
        let proxied = chaos_node("proxied", &root).await?;
        let caller = chaos_node("inproc-caller", &root).await?;
        let callee = chaos_node("inproc-callee", &root).await?;
        let registry_handle = Registry::connect(&driver, &registry.addr)
            .await
            .map_err(|e| format!("registry: {e}"))?;
        let mut proxies = Vec::new();
        let mut targets = Vec::new();
        for (k, slot) in slots.iter().enumerate() {
            let process = slot.process.as_ref().expect("just started");
            let proxy = match k < PROXIED {
                true => {
                    let upstream = slot.addr.parse().map_err(|e| format!("{e}"))?;
                    let proxy = FaultProxy::start(upstream, seed ^ k as u64)
                        .await
                        .map_err(|e| e.to_string())?;
                    let addr = proxy.addr().to_string();
                    proxies.push(proxy);
                    Some(addr)
                }
                false => None,
            };
            targets.push(Target {
                node: process.node,
                incarnation: process.incarnation,
                object: process.journal,
                addr: slot.addr.clone(),
                proxy,
            });
        }
        let wire = inproc::connect(&caller, &callee)
            .await
            .map_err(|e| e.to_string())?;
        let journal: JournalRef = callee.spawn(
            JournalActor::open(callee.clone(), &journals.join("inproc"), INNER)
                .map_err(|e| e.to_string())?,
        );
        // Pinned, as the workers' journals are: an export nothing holds between
        // calls would otherwise stop once its last lease was released.
        callee.export(&journal).map_err(|e| e.to_string())?;
        let inproc_journal = callee.wire_ref(&journal);
        let registry_control = driver
            .resolve(&registry_target(&registry).wire(&registry.addr))
            .map_err(|e| e.to_string())?;
        let lives = std::iter::once(life("registry".into(), &registry, Duration::ZERO))
            .chain(slots.iter().enumerate().map(|(k, s)| {
                life(
                    format!("w{k}"),
                    s.process.as_ref().expect("started"),
                    Duration::ZERO,
                )
            }))
            .chain(std::iter::once(Life {
                name: "inproc".into(),
                node: callee.id().to_string(),
                incarnation: callee.incarnation(),
                started: Duration::ZERO,
                killed: None,
            }))
            .collect();
        let shared = Arc::new(Shared::new(targets, DEADLINE, INNER));
        let net = Arc::new(Network {
            lock: Arc::new(tokio::sync::Mutex::new(())),
            proxies,
            wire: parking_lot::Mutex::new(Some(wire)),
            inproc: (caller, callee),
        });
        let mut chaos = Chaos {
            binary,
            root,
            journals,
            registry,
            registry_control,
            slots,
            lives,
            driver,
            proxied,
            registry_handle,
            net,
            shared,
            inproc_journal,
            counts: Arc::default(),
            baseline: HashMap::new(),
            observations: Vec::new(),
            counters_tally: Tally::new("6 counters back to baseline after a kill"),
            names_tally: Tally::new("5b live workers' names bound"),
        };
        for k in 0..WORKERS {
            chaos.slots[k].control = Some(chaos.control_of(k)?);
        }
        for k in 0..WORKERS {
            chaos.mesh(k).await;
        }
        chaos.baseline = chaos.stable_counters().await?;
        Ok(chaos)
    }

    /// The driver node's reference to slot `k`'s journal.
    fn control_of(&self, k: usize) -> Result<JournalRef, String> {
        let target = self.shared.targets.read()[k].clone();
        let journal: JournalRef = self
            .driver
            .resolve(&target.wire(&target.addr))
            .map_err(|e| e.to_string())?;
        Ok(journal.with_timeout(PEER_TIMEOUT))
    }

    /// Connects slot `k`'s process with every other worker, the driver node
    /// with it, and the proxied node with its proxy: the connections every
    /// baseline has.
    async fn mesh(&self, k: usize) {
        let addr = self.slots[k].addr.clone();
        for (j, slot) in self.slots.iter().enumerate() {
            if let (true, Some(control)) = (j != k, &slot.control) {
                let _ = control.mesh(vec![addr.clone()]).await;
            }
        }
        let _ = self.driver.connect(&addr).await;
        let _ = self.driver.connect(&self.registry.addr).await;
        let proxy = self.shared.targets.read()[k].proxy.clone();
        if let Some(proxy) = proxy {
            let _ = self.proxied.connect(&proxy).await;
        }
    }

    /// Every node's counters now, by name (an error for one that did not answer).
    async fn counters(&self) -> BTreeMap<String, Result<Counters, String>> {
        let mut all = BTreeMap::new();
        let remote = |r: Result<Counters, remora::CallError>| r.map_err(|e| e.to_string());
        all.insert(
            "registry".into(),
            remote(self.registry_control.stats().await),
        );
        for (k, slot) in self.slots.iter().enumerate() {
            if let Some(control) = &slot.control {
                all.insert(format!("w{k}"), remote(control.stats().await));
            }
        }
        all.insert("driver".into(), Ok(self.driver.stats().into()));
        all.insert("proxied".into(), Ok(self.proxied.stats().into()));
        all.insert("inproc-caller".into(), Ok(self.net.inproc.0.stats().into()));
        all.insert("inproc-callee".into(), Ok(self.net.inproc.1.stats().into()));
        all
    }

    /// Counters once two reads 500 ms apart agree (the quiet cluster's
    /// baseline), after every lease granted while starting has had time to
    /// lapse (a registry is sent a reference it stores as data, and never renews).
    async fn stable_counters(&self) -> Result<HashMap<String, Counters>, String> {
        tokio::time::sleep(REF_LEASE * 2).await;
        let deadline = Instant::now() + SETTLE_WITHIN;
        let mut last = self.counters().await;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.counters().await;
            if now == last && now.values().all(Result::is_ok) {
                return Ok(now
                    .into_iter()
                    .map(|(k, v)| (k, v.expect("checked")))
                    .collect());
            }
            if Instant::now() > deadline {
                return Err(format!("the cluster's counters never settled: {now:?}"));
            }
            last = now;
        }
    }

    /// Polls until every node is back at `expected` (lanes at most 16 a
    /// connection), for at most `within`; returns what was not.
    async fn settle(
        &self,
        expected: &HashMap<String, Counters>,
        within: Duration,
    ) -> BTreeMap<String, Vec<String>> {
        let deadline = Instant::now() + within;
        loop {
            let mut off = BTreeMap::new();
            for (name, now) in self.counters().await {
                let Some(expected) = expected.get(&name) else {
                    continue;
                };
                let diffs = match now {
                    Ok(now) => now.differences(
                        expected,
                        MAX_LANES * now.connections,
                        connection_slack(&name),
                    ),
                    Err(e) => vec![format!("stats failed: {e}")],
                };
                off.insert(name, diffs);
            }
            let settled = off.values().all(Vec::is_empty);
            if settled || Instant::now() > deadline {
                off.retain(|_, diffs| !diffs.is_empty());
                return off;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Quiets the cluster: the network healed and frozen, no driver call in
    /// flight. Dropping the guards lets everything go again.
    async fn quiesce(&self) -> Quiet {
        let net = self.net.lock.clone().lock_owned().await;
        self.net.heal();
        let gate = self.shared.gate.clone().write_owned().await;
        Quiet {
            _net: net,
            _gate: gate,
        }
    }

    /// Kills a random worker, restarts it, checks the registry forgot the dead
    /// process, and checks the counters came back.
    async fn kill_cycle(&mut self, rng: &mut Rng) -> Result<(), String> {
        let k = rng.below(WORKERS as u64) as usize;
        let quiet = rng.chance(0.5);
        let mut lanes = HashMap::new();
        if quiet {
            bump(&self.counts.quiet_kills);
            let guard = self.quiesce().await;
            let before = self.counters().await;
            self.kill(k);
            let expected: HashMap<String, Counters> = before
                .iter()
                .filter_map(|(name, c)| Some((name.clone(), *c.as_ref().ok()?)))
                .filter(|(name, _)| *name != format!("w{k}"))
                .map(|(name, mut c)| {
                    lanes.insert(name.clone(), c.call_lanes);
                    // The registry, the driver and every worker were connected
                    // to the victim; the proxied node only if it is proxied.
                    let connected = name == "registry" || name == "driver" || name.starts_with('w');
                    if connected || (name == "proxied" && k < PROXIED) {
                        c.connections -= 1;
                    }
                    (name, c)
                })
                .collect();
            // Only the connection goes: leases and monitors on the victim's
            // objects wait for the checkpoint (they lapse within a lease).
            let only_connections: HashMap<String, Counters> = expected
                .iter()
                .map(|(name, c)| {
                    let now = before[name].as_ref().expect("filtered");
                    let c = Counters {
                        connections: c.connections,
                        ..*now
                    };
                    (name.clone(), c)
                })
                .collect();
            let off = self
                .settle_connections(&only_connections, &lanes, PEER_TIMEOUT + SLACK * 3)
                .await;
            self.tally_counters("after a quiet kill", off);
            drop(guard);
        } else {
            self.kill(k);
        }
        let killed_at = self.lives_of(k).killed.expect("just killed");
        tokio::time::sleep(rng.millis(100, 2500)).await;
        let same_key = rng.chance(0.5);
        self.restart(k, same_key).await?;
        let observe_at = self.shared.start + killed_at + REGISTRY_LEASE + SLACK + SLACK / 2;
        tokio::time::sleep_until(observe_at.into()).await;
        self.observe_registry().await;
        // Lanes only against their bound now: traffic since the kill may have
        // opened new connections, with lanes of their own.
        self.checkpoint().await;
        Ok(())
    }

    /// [`Chaos::settle`] on connections, lanes and what is queued only: the
    /// other counters (leases, monitors) are compared at the checkpoint.
    async fn settle_connections(
        &self,
        expected: &HashMap<String, Counters>,
        lanes: &HashMap<String, usize>,
        within: Duration,
    ) -> BTreeMap<String, Vec<String>> {
        let deadline = Instant::now() + within;
        loop {
            let mut off = BTreeMap::new();
            for (name, now) in self.counters().await {
                let Some(expected) = expected.get(&name) else {
                    continue;
                };
                let diffs = match now {
                    Ok(now) => {
                        let mut diffs = Vec::new();
                        if now.connections.abs_diff(expected.connections) > connection_slack(&name)
                        {
                            diffs.push(format!(
                                "connections {}/{}",
                                now.connections, expected.connections
                            ));
                        }
                        let bound = lanes.get(&name).copied().unwrap_or(usize::MAX);
                        if now.call_lanes > bound {
                            diffs.push(format!("call_lanes {}>{bound}", now.call_lanes));
                        }
                        if now.queued_bytes != 0 || now.calls_held != 0 {
                            diffs.push(format!(
                                "queued_bytes {} calls_held {}",
                                now.queued_bytes, now.calls_held
                            ));
                        }
                        diffs
                    }
                    Err(e) => vec![format!("stats failed: {e}")],
                };
                off.insert(name, diffs);
            }
            if off.values().all(Vec::is_empty) || Instant::now() > deadline {
                off.retain(|_, diffs| !diffs.is_empty());
                return off;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn tally_counters(&mut self, when: &str, off: BTreeMap<String, Vec<String>>) {
        let nodes = 2 + WORKERS + 4 - 1;
        for _ in 0..nodes.saturating_sub(off.len()) {
            self.counters_tally.check(None);
        }
        let at = self.shared.now().as_secs_f64();
        for (name, diffs) in off {
            self.counters_tally.check(Some(format!(
                "{when} at {at:.3}s: {name}: {}",
                diffs.join(", ")
            )));
        }
    }

    fn lives_of(&self, k: usize) -> &Life {
        let name = format!("w{k}");
        self.lives
            .iter()
            .rev()
            .find(|l| l.name == name)
            .expect("every slot has lived")
    }

    fn kill(&mut self, k: usize) {
        if let Some(mut process) = self.slots[k].process.take() {
            process.kill();
        }
        self.slots[k].control = None;
        let now = self.shared.now();
        let name = format!("w{k}");
        if let Some(life) = self.lives.iter_mut().rev().find(|l| l.name == name) {
            life.killed = Some(now);
        }
        bump(&self.counts.kills);
    }

    async fn restart(&mut self, k: usize, same_key: bool) -> Result<(), String> {
        let credentials = match same_key {
            true => self.slots[k].keys.clone(),
            false => self.root.clone(),
        };
        let args = worker_args(
            &credentials,
            &self.journals,
            k,
            &self.slots[k].addr,
            &self.registry.addr,
        );
        let mut tries = 0;
        let process = loop {
            match start(&self.binary, args.clone()).await {
                Ok(process) => break process,
                Err(e) if tries >= 5 => return Err(format!("restarting w{k}: {e}")),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        if same_key {
            bump(&self.counts.same_key);
        }
        bump(&self.counts.restarts);
        self.lives
            .push(life(format!("w{k}"), &process, self.shared.now()));
        {
            let mut targets = self.shared.targets.write();
            let proxy = targets[k].proxy.clone();
            targets[k] = Target {
                node: process.node,
                incarnation: process.incarnation,
                object: process.journal,
                addr: process.addr.clone(),
                proxy,
            };
        }
        self.slots[k].process = Some(process);
        self.slots[k].control = Some(self.control_of(k)?);
        Ok(())
    }

    /// Lists the registry: no entry of a dead process (checked later, with
    /// the kill times), and every live worker's two names bound.
    async fn observe_registry(&mut self) {
        let at = self.shared.now();
        let listed = tokio::time::timeout(PEER_TIMEOUT, self.registry_handle.list("")).await;
        let entries = match listed {
            Ok(Ok(entries)) => entries,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".into(),
                    Ok(Ok(_)) => unreachable!(),
                };
                self.names_tally.check(Some(format!(
                    "list at {:.3}s failed: {why}",
                    at.as_secs_f64()
                )));
                return;
            }
        };
        let entries: Vec<(String, String, String)> = entries
            .into_iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.target.node.to_string(),
                    e.owner.to_string(),
                )
            })
            .collect();
        for (k, slot) in self.slots.iter().enumerate() {
            let Some(process) = &slot.process else {
                continue;
            };
            let node = process.node.to_string();
            for name in [
                format!("slot/{k}"),
                format!("inc/{k}/{}", process.incarnation),
            ] {
                let bound = entries.iter().any(|(n, t, _)| *n == name && *t == node);
                self.names_tally.check(
                    (!bound)
                        .then(|| format!("{name} not bound to w{k} at {:.3}s", at.as_secs_f64())),
                );
            }
        }
        self.observations.push(Observation {
            at,
            what: "list",
            entries,
        });
    }

    /// Quiets the cluster, connects the restarted worker as at the start, and
    /// waits for every node's counters to be back at their baseline.
    async fn checkpoint(&mut self) {
        bump(&self.counts.checkpoints);
        let guard = self.quiesce().await;
        for k in 0..WORKERS {
            self.mesh(k).await;
        }
        let baseline = self.baseline.clone();
        let off = self.settle(&baseline, SETTLE_WITHIN).await;
        drop(guard);
        self.tally_counters("checkpoint", off);
    }
}

struct Quiet {
    _net: tokio::sync::OwnedMutexGuard<()>,
    _gate: tokio::sync::OwnedRwLockWriteGuard<()>,
}

fn worker_args(
    credentials: &FsPath,
    journals: &FsPath,
    k: usize,
    listen: &str,
    registry: &str,
) -> Vec<String> {
    let mut args = node_args(
        "worker",
        credentials,
        &journals.join(format!("w{k}")),
        listen,
    );
    args.extend([
        "--registry".into(),
        registry.into(),
        "--slot".into(),
        k.to_string(),
    ]);
    args
}

fn registry_target(registry: &NodeProcess) -> Target {
    Target {
        node: registry.node,
        incarnation: registry.incarnation,
        object: registry.journal,
        addr: registry.addr.clone(),
        proxy: None,
    }
}

/// Partitions, datagram faults and wire cuts at random, until `shared.stop`.
async fn network_chaos(net: Arc<Network>, shared: Arc<Shared>, counts: Arc<Counts>, mut rng: Rng) {
    use std::sync::atomic::Ordering::Acquire;
    while !shared.stop.load(Acquire) {
        tokio::time::sleep(rng.millis(200, 1200)).await;
        let _held = net.lock.lock().await;
        let proxy = &net.proxies[rng.below(net.proxies.len() as u64) as usize];
        match rng.below(100) {
            0..40 => {
                proxy.set(Faults {
                    drop: rng.below(15) as f64 / 100.0,
                    duplicate: rng.below(10) as f64 / 100.0,
                    reorder: rng.below(20) as f64 / 100.0,
                    delay_ms: (0, rng.below(30)),
                    partitioned: false,
                });
                bump(&counts.fault_changes);
            }
            40..65 => {
                let before = proxy.faults();
                proxy.set(Faults {
                    partitioned: true,
                    ..before
                });
                bump(&counts.partitions);
                tokio::time::sleep(rng.millis(300, 3500)).await;
                proxy.set(before);
            }
            65..90 => {
                if let Some(wire) = net.wire.lock().take() {
                    wire.cut();
                }
                bump(&counts.cuts);
                tokio::time::sleep(rng.millis(50, 1500)).await;
                if let Err(e) = net.reconnect().await {
                    eprintln!("{e}");
                }
            }
            _ => {
                net.heal();
                bump(&counts.heals);
            }
        }
    }
}

async fn run(config: Config) -> Result<bool, String> {
    let root = tempfile::Builder::new()
        .prefix("remora-chaos-cluster-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let journals = tempfile::Builder::new()
        .prefix("remora-chaos-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut rng = Rng::new(config.seed);
    let mut chaos = Chaos::set_up(
        root.path().to_owned(),
        journals.path().to_owned(),
        config.seed,
    )
    .await?;
    let set_up = chaos.shared.now();

    // The drivers and the network's chaos.
    let shared = chaos.shared.clone();
    let mut tasks = Vec::new();
    for _ in 0..DIRECT_DRIVERS {
        let (shared, node) = (shared.clone(), chaos.driver.clone());
        let (registry, rng) = (chaos.registry_handle.clone(), rng.fork());
        tasks.push(tokio::spawn(async move {
            drive::direct(&shared, node, registry, rng).await
        }));
    }
    let (node, rng2) = (chaos.proxied.clone(), rng.fork());
    let s = shared.clone();
    tasks.push(tokio::spawn(
        async move { drive::proxied(&s, node, rng2).await },
    ));
    let (node, rng2) = (chaos.net.inproc.0.clone(), rng.fork());
    let wire = chaos.inproc_journal.clone();
    let s = shared.clone();
    tasks.push(tokio::spawn(async move {
        drive::in_process(&s, node, wire, rng2).await
    }));
    let net_task = tokio::spawn(network_chaos(
        chaos.net.clone(),
        shared.clone(),
        chaos.counts.clone(),
        rng.fork(),
    ));

    // Kill cycles while there is time for one more (about 8 s each).
    let end = Instant::now() + config.run;
    let cycle = REGISTRY_LEASE + PEER_TIMEOUT + SLACK * 6;
    let mut failure = None;
    while Instant::now() + cycle < end {
        tokio::time::sleep(rng.millis(1000, 3000)).await;
        if let Err(e) = chaos.kill_cycle(&mut rng).await {
            failure = Some(e);
            break;
        }
    }
    tokio::time::sleep_until(end.into()).await;
    shared.stop.store(true, Ordering::Release);
    for task in tasks {
        let _ = task.await;
    }
    let _ = net_task.await;
    chaos.checkpoint().await;
    let ran = chaos.shared.now() - set_up;

    // Every process goes before the journals are read.
    for slot in &mut chaos.slots {
        if let Some(mut p) = slot.process.take() {
            p.kill();
        }
    }
    chaos.registry.kill();
    let report = report(&chaos, ran, config.seed)?;
    println!("{}", report.text);
    if let Some(e) = &failure {
        println!("RUN FAILED: {e}");
    }
    let passed = report.violations == 0 && failure.is_none();
    if !passed || config.keep {
        write_records(&chaos.journals, &chaos.shared.records.lock());
        let kept = journals.keep();
        println!("journals kept in {}", kept.display());
    }
    println!("RESULT: {}", if passed { "PASS" } else { "FAIL" });
    Ok(passed)
}

struct Report {
    text: String,
    violations: u64,
}

/// Reads the journals, runs the checks, and writes the summary.
fn report(chaos: &Chaos, ran: Duration, seed: u64) -> Result<Report, String> {
    let mut entries = Vec::new();
    let mut torn = 0;
    let files = std::iter::once("registry".to_owned())
        .chain((0..WORKERS).map(|k| format!("w{k}")))
        .chain(std::iter::once("inproc".to_owned()));
    for file in files {
        let (mut e, t) =
            read_journal(&chaos.journals.join(&file)).map_err(|e| format!("{file}: {e}"))?;
        entries.append(&mut e);
        torn += t;
    }
    let lines = entries.len();
    let journals = check::Journals::new(entries);
    let records = chaos.shared.records.lock().clone();
    let mut observations = chaos.observations.clone();
    observations.extend(chaos.shared.lookups.lock().iter().cloned());
    let tallies = [
        check::deadlines(&records, PEER_TIMEOUT + SLACK, &journals),
        check::at_most_once(&records, &journals),
        check::exactly_once(&records, &journals, &chaos.lives),
        check::honesty(&records, &journals),
        check::registry(&observations, &chaos.lives, REGISTRY_LEASE + SLACK),
        chaos.names_tally.clone(),
        chaos.counters_tally.clone(),
    ];
    let violations = tallies.iter().map(|t| t.violated).sum::<u64>() + torn as u64;

    let mut by_kind: BTreeMap<Kind, (u64, u64)> = BTreeMap::new();
    let mut by_path: BTreeMap<check::Path, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in &records {
        let kind = by_kind.entry(r.kind).or_default();
        kind.0 += 1;
        *by_path.entry(r.path).or_default() += 1;
        if let Outcome::Err {
            error,
            may_have_executed,
        } = &r.outcome
        {
            kind.1 += 1;
            let variant: String = error.chars().take_while(|c| c.is_alphanumeric()).collect();
            let e = errors.entry(variant).or_default();
            match may_have_executed {
                true => e.0 += 1,
                false => e.1 += 1,
            }
        }
    }
    let c = &chaos.counts;
    let proxies = chaos
        .net
        .proxies
        .iter()
        .map(|p| p.counts())
        .fold([0u64; 4], |mut sum, p| {
            sum[0] += read(&p.relayed);
            sum[1] += read(&p.dropped);
            sum[2] += read(&p.duplicated);
            sum[3] += read(&p.reordered);
            sum
        });
    let calls = records.len();
    let failed: u64 = by_kind.values().map(|(_, e)| e).sum();
    let mut t = String::new();
    use std::fmt::Write;
    let _ = writeln!(t, "remora-chaos summary (seed {seed}, {:.1} s of chaos, {WORKERS} workers, peer timeout {PEER_TIMEOUT:?}, registry lease {REGISTRY_LEASE:?}, deadline {DEADLINE:?})", ran.as_secs_f64());
    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(k, (n, e))| format!("{k:?} {n} ({e} failed)"))
        .collect();
    let _ = writeln!(t, "calls: {calls} ({failed} failed): {}", kinds.join(", "));
    let paths: Vec<String> = by_path.iter().map(|(p, n)| format!("{p:?} {n}")).collect();
    let _ = writeln!(t, "  by path: {}", paths.join(", "));
    let errs: Vec<String> = errors
        .iter()
        .map(|(v, (may, not))| {
            format!(
                "{v} {} (may_have_executed: {may} true, {not} false)",
                may + not
            )
        })
        .collect();
    let _ = writeln!(t, "  errors: {}", errs.join("; "));
    let _ = writeln!(
        t,
        "kills: {} ({} quiet, {} restarted with the same key), restarts: {}, checkpoints: {}",
        read(&c.kills),
        read(&c.quiet_kills),
        read(&c.same_key),
        read(&c.restarts),
        read(&c.checkpoints)
    );
    let _ = writeln!(t, "partitions: {}, wire cuts: {}, fault changes: {}, heals: {}; proxied datagrams: {} relayed, {} dropped, {} duplicated, {} reordered",
        read(&c.partitions), read(&c.cuts), read(&c.fault_changes), read(&c.heals),
        proxies[0], proxies[1], proxies[2], proxies[3]);
    let _ = writeln!(t, "journals: {lines} lines ({torn} torn), {} ids journaled that no caller recorded, registry observations: {}",
        journals.unexplained(&records), observations.len());
    let worst = records
        .iter()
        .filter_map(|r| {
            Some(r.end.saturating_sub(r.start).as_secs_f64() - r.deadline?.as_secs_f64())
        })
        .fold(f64::MIN, f64::max);
    let _ = writeln!(
        t,
        "slowest call against its deadline: {worst:+.3} s (bound: +{:.3} s)",
        (PEER_TIMEOUT + SLACK).as_secs_f64()
    );
    let mut once: BTreeMap<String, u64> = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind == Kind::Once) {
        let survived = chaos
            .lives
            .iter()
            .find(|l| l.incarnation == r.target)
            .is_some_and(|l| l.killed.is_none_or(|k| k > r.end));
        let how = match &r.outcome {
            Outcome::Ok => "Ok".to_owned(),
            Outcome::Err { error, .. } => {
                error.chars().take_while(|c| c.is_alphanumeric()).collect()
            }
        };
        let whose = if survived {
            "callee survived"
        } else {
            "callee killed"
        };
        *once.entry(format!("{whose}: {how}")).or_default() += 1;
    }
    let once: Vec<String> = once.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(t, "exactly-once outcomes: {}", once.join(", "));
    let _ = writeln!(t, "invariants:");
    for tally in &tallies {
        let _ = writeln!(t, "{tally}");
    }
    let _ = write!(t, "violations: {violations}");
    Ok(Report {
        text: t,
        violations,
    })
}

/// The callers' records, one a line, beside the journals.
fn write_records(dir: &FsPath, records: &[CallRecord]) {
    let mut out = String::new();
    for r in records {
        let outcome = match &r.outcome {
            Outcome::Ok => "Ok".to_owned(),
            Outcome::Err {
                error,
                may_have_executed,
            } => format!("Err may={may_have_executed} {error}"),
        };
        out.push_str(&format!(
            "{}\t{:?}\t{:?}\t{:x}\t{:.3}\t{:.3}\t{}\n",
            r.id,
            r.kind,
            r.path,
            r.target,
            r.start.as_secs_f64(),
            r.end.as_secs_f64(),
            outcome
        ));
    }
    let _ = std::fs::write(dir.join("calls.tsv"), out);
}
