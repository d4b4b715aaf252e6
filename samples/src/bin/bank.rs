//! `bank`: accounts spread over three branch processes by placement, transfers
//! between accounts on different branches, and a branch killed (SIGKILL) and
//! restarted halfway through a transfer, with the bank's total balance conserved.
//!
//! One command runs the whole story, a registry and three branches as processes of
//! one local cluster, narrated by a teller in this process:
//!
//! ```text
//! cargo run --release -p remora-samples --bin bank
//! ```
//!
//! Or by hand, sharing a cluster root (`remora cert init DIR`):
//!
//! ```text
//! REMORA_CREDENTIALS=DIR bank registry                     # prints READY <addr>
//! REMORA_CREDENTIALS=DIR bank branch --registry <addr> --name branch-1 --data /tmp/branch-1
//! ```
//!
//! # Design
//!
//! - **Placement.** A branch registers the factory `bank.account` and offers
//!   spawning in the registry group `bank.branches`. The teller opens accounts with
//!   a round-robin [`Placer`] over that group, so six accounts land two on each
//!   branch. The branch binds each new account under its name (`alice`, `bob`,
//!   ...). Not the teller: the registry drops a node's binding of another node's
//!   object as soon as the binder loses its connection to that node, which a
//!   busy machine can cause without anything having died; a branch's binding of
//!   its own account lasts as long as the account (or the branch's lease).
//! - **Transfers.** A transfer has an id chosen by the teller. It is two calls:
//!   `withdraw(id, amount)` on the source, then `deposit(id, amount)` on the
//!   destination, each retried by the teller until it is acknowledged. Money is
//!   never in two places; between the two calls it is "in flight", owed by the
//!   teller, which will not give up on the deposit (within a bound, here 20 s).
//! - **Two layers of idempotence.** Both methods are `#[exactly_once]`: through a
//!   lost connection the runtime resends the same logical call and the callee's node
//!   answers the retry from its memory of the reply, so a call that ran is not run
//!   again. That memory lives in the callee's process; it is gone when the process
//!   is killed. So each account also remembers, durably, the transfer ids it has
//!   applied: a withdraw or deposit whose id it has seen is acknowledged again
//!   without moving money. This covers the case the runtime cannot: a branch that
//!   applied a deposit, and died before the acknowledgement left.
//! - **Durability.** Each account keeps its balance and applied transfer ids in
//!   one file, `<data>/<name>.account`, written (to a temporary file, then renamed
//!   over the old one) before it replies. A reply therefore means "on disk". A
//!   killed process loses nothing that was written; a machine crash could, as
//!   there is no fsync: this is a sample, not a bank.
//! - **Recovery.** A branch started with a `--data` directory that holds account
//!   files re-creates those accounts before announcing itself, and rebinds their
//!   names to the new actors. The teller looks an account's name up again before
//!   each attempt, so it finds the new actor once the branch is back.
//!
//! Left out, deliberately: the applied-id sets grow forever (a real ledger would
//! trim ids older than any transfer still in flight), and the teller is not itself
//! durable (a teller that dies between withdraw and deposit leaves money in flight;
//! a real one would log its transfers before starting them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use remora::{Actor, Node, NodeBuilder};
use remora_registry::{MemoryStore, Placement, Placer, Registry, RegistryServer};
use remora_samples::args::{exit_code, required};
use remora_testing::{announce, node_builder, serve_until_signal, LocalCluster};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The registry group branches offer spawning in.
const BRANCHES: &str = "bank.branches";

/// The factory name accounts are opened with.
const ACCOUNT_FACTORY: &str = "bank.account";

/// How long a silent peer may stay silent before its connection counts as lost.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one attempt at a withdraw or deposit may take (an `#[exactly_once]`
/// call resends through lost connections until then).
const ATTEMPT_WITHIN: Duration = Duration::from_secs(1);

/// How long the teller keeps retrying one withdraw or deposit before it gives up.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

/// The pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How long a killed branch stays down before it is restarted.
const OUTAGE: Duration = Duration::from_secs(1);

/// An account, at one branch.
#[remora::remote(name = "bank.Account")]
pub trait Account {
    /// Takes `amount` out for transfer `transfer`, and returns the new balance. A
    /// transfer id seen before is acknowledged again (with the current balance)
    /// without taking anything.
    #[exactly_once]
    async fn withdraw(&mut self, transfer: u64, amount: u64) -> Result<u64, BankError>;
    /// Puts `amount` in for transfer `transfer`, and returns the new balance. A
    /// transfer id seen before is acknowledged again without adding anything.
    #[exactly_once]
    async fn deposit(&mut self, transfer: u64, amount: u64) -> Result<u64, BankError>;
    /// The balance now.
    async fn balance(&self) -> u64;
    /// The branch this account is kept at.
    async fn branch(&self) -> String;
}

/// Why an account refused a withdraw or deposit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BankError {
    /// The balance does not cover the withdrawal; nothing was taken.
    #[error("insufficient funds: the balance is {balance}, {wanted} was asked for")]
    Insufficient { balance: u64, wanted: u64 },
    /// The account could not write its file; nothing changed.
    #[error("could not write the account's file: {0}")]
    Storage(String),
}

/// An account's state, as kept in memory and in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ledger {
    balance: u64,
    withdrawn: BTreeSet<u64>,
    deposited: BTreeSet<u64>,
}

impl Ledger {
    fn opening(balance: u64) -> Ledger {
        Ledger {
            balance,
            withdrawn: BTreeSet::new(),
            deposited: BTreeSet::new(),
        }
    }

    /// The file's text: `balance N`, `withdrawn ID ...`, `deposited ID ...`.
    fn to_text(&self) -> String {
        let ids =
            |set: &BTreeSet<u64>| set.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        format!(
            "balance {}\nwithdrawn {}\ndeposited {}\n",
            self.balance,
            ids(&self.withdrawn),
            ids(&self.deposited)
        )
    }

    fn from_text(text: &str) -> Result<Ledger, String> {
        let mut lines = text.lines();
        let mut field = |key: &str| -> Result<Vec<u64>, String> {
            let line = lines.next().unwrap_or_default();
            let rest = line
                .strip_prefix(key)
                .ok_or_else(|| format!("expected a line `{key} ...`, found {line:?}"))?;
            rest.split_whitespace()
                .map(|n| n.parse().map_err(|e| format!("{key}: {n:?}: {e}")))
                .collect()
        };
        let balance = match field("balance")?[..] {
            [balance] => balance,
            _ => return Err("`balance` takes one number".into()),
        };
        Ok(Ledger {
            balance,
            withdrawn: field("withdrawn")?.into_iter().collect(),
            deposited: field("deposited")?.into_iter().collect(),
        })
    }
}

/// An account actor: its ledger, and the file that holds it.
struct Kept {
    branch: String,
    file: PathBuf,
    ledger: Ledger,
}

impl Kept {
    /// Opens a new account `name` in `dir` (refused if it exists there already).
    fn open(branch: &str, dir: &Path, name: &str, balance: u64) -> Result<Kept, String> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "account names are letters, digits, `-` and `_`, not {name:?}"
            ));
        }
        let file = dir.join(format!("{name}.account"));
        if file.exists() {
            return Err(format!("account {name:?} is already open at {branch}"));
        }
        let kept = Kept {
            branch: branch.to_owned(),
            file,
            ledger: Ledger::opening(balance),
        };
        write(&kept.file, &kept.ledger).map_err(|e| e.to_string())?;
        Ok(kept)
    }

    /// Re-creates an account from its file.
    fn reopen(branch: &str, file: PathBuf) -> Result<Kept, String> {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{file:?}: {e}"))?;
        let ledger = Ledger::from_text(&text).map_err(|e| format!("{file:?}: {e}"))?;
        Ok(Kept {
            branch: branch.to_owned(),
            file,
            ledger,
        })
    }

    /// Makes `next` the account's state: on disk first, then in memory.
    fn commit(&mut self, next: Ledger) -> Result<u64, BankError> {
        write(&self.file, &next).map_err(|e| BankError::Storage(e.to_string()))?;
        self.ledger = next;
        Ok(self.ledger.balance)
    }
}

/// Replaces `file` with `ledger`'s text: a killed process leaves the old file or
/// the new one, never half of one.
fn write(file: &Path, ledger: &Ledger) -> std::io::Result<()> {
    let temporary = file.with_extension("account.new");
    std::fs::write(&temporary, ledger.to_text())?;
    std::fs::rename(&temporary, file)
}

impl Actor for Kept {}

impl Account for Kept {
    async fn withdraw(&mut self, transfer: u64, amount: u64) -> Result<u64, BankError> {
        if self.ledger.withdrawn.contains(&transfer) {
            return Ok(self.ledger.balance);
        }
        let balance = self.ledger.balance;
        if amount > balance {
            return Err(BankError::Insufficient {
                balance,
                wanted: amount,
            });
        }
        let mut next = self.ledger.clone();
        next.balance -= amount;
        next.withdrawn.insert(transfer);
        self.commit(next)
    }

    async fn deposit(&mut self, transfer: u64, amount: u64) -> Result<u64, BankError> {
        if self.ledger.deposited.contains(&transfer) {
            return Ok(self.ledger.balance);
        }
        let mut next = self.ledger.clone();
        next.balance = next
            .balance
            .checked_add(amount)
            .ok_or_else(|| BankError::Storage("the balance would overflow".into()))?;
        next.deposited.insert(transfer);
        self.commit(next)
    }

    async fn balance(&self) -> u64 {
        self.ledger.balance
    }

    async fn branch(&self) -> String {
        self.branch.clone()
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Every node of this sample: quick to notice a dead peer.
fn tuned(builder: NodeBuilder, name: &str) -> NodeBuilder {
    builder.name(name).peer_timeout(PEER_TIMEOUT)
}

/// The registry process.
async fn registry() -> Result<(), Failure> {
    let node = tuned(node_builder(), "bank-registry")
        .listen("127.0.0.1:0")
        .build()
        .await?;
    let _server = RegistryServer::serve(&node, MemoryStore::new())?;
    announce(&node);
    serve_until_signal(&node).await;
    Ok(())
}

/// A branch process: reopens the accounts its data directory holds (rebinding
/// their names), opens new ones on request, and offers spawning in [`BRANCHES`].
async fn branch(registry_addr: &str, name: &str, data: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(data)?;
    let node = tuned(node_builder(), name)
        .listen("127.0.0.1:0")
        .build()
        .await?;
    let registry = Registry::connect(&node, registry_addr).await?;

    // A restarted branch: its accounts come back from their files, under their
    // names. (The registry pins what it binds, so they stay alive.)
    for entry in std::fs::read_dir(data)? {
        let file = entry?.path();
        if file.extension().and_then(|e| e.to_str()) != Some("account") {
            continue;
        }
        let Some(account) = file.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let kept = Kept::reopen(name, file)?;
        let reference: AccountRef = node.spawn(kept);
        registry.rebind(&account, &reference).await?;
    }

    let (branch, dir, names) = (name.to_owned(), data.to_owned(), registry.clone());
    node.register_factory_fn(
        ACCOUNT_FACTORY,
        move |node: &Node, (account, balance): (String, u64)| -> Result<AccountRef, String> {
            let kept = Kept::open(&branch, &dir, &account, balance)?;
            let reference: AccountRef = node.spawn(kept);
            // The branch binds the name, not whoever opened the account: see the
            // module doc. The opener waits for the name to appear.
            let (names, bound) = (names.clone(), reference.clone());
            tokio::spawn(async move {
                if let Err(err) = names.bind(&account, &bound).await {
                    eprintln!("bank: could not bind {account:?}: {err}");
                }
            });
            Ok(reference)
        },
    )?;
    registry.offer_spawning(BRANCHES).await?;
    announce(&node);
    serve_until_signal(&node).await;
    Ok(())
}

/// A withdraw or a deposit.
#[derive(Clone, Copy, Debug)]
enum Leg {
    Withdraw,
    Deposit,
}

/// Runs one leg of transfer `transfer` on the account `name`, until it is
/// acknowledged (or refused) or [`SETTLE_WITHIN`] passes. The name is looked up
/// afresh for every attempt: after a branch restarts, it names a new actor.
async fn settle(
    registry: &Registry,
    leg: Leg,
    name: &str,
    transfer: u64,
    amount: u64,
) -> Result<Result<u64, BankError>, Failure> {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let attempt = async {
            let account: AccountRef = registry.lookup(name).await?;
            let account = account.with_timeout(ATTEMPT_WITHIN);
            let reply = match leg {
                Leg::Withdraw => account.withdraw(transfer, amount).await?,
                Leg::Deposit => account.deposit(transfer, amount).await?,
            };
            Ok::<_, Failure>(reply)
        };
        match attempt.await {
            Ok(Err(BankError::Storage(err))) => {
                return Err(format!("{name} could not record transfer #{transfer}: {err}").into())
            }
            Ok(reply) => return Ok(reply),
            Err(err) if Instant::now() + RETRY_PAUSE < deadline => {
                println!("    {leg:?} of transfer #{transfer} at {name} not acknowledged ({err}); retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(err) => {
                return Err(format!(
                    "{leg:?} of transfer #{transfer} at {name} not acknowledged within {SETTLE_WITHIN:?}: {err}"
                )
                .into())
            }
        }
    }
}

/// The accounts the scripted run opens, with their opening balances.
const ACCOUNTS: [(&str, u64); 6] = [
    ("alice", 1000),
    ("bob", 750),
    ("carol", 1250),
    ("dave", 900),
    ("erin", 1100),
    ("frank", 1000),
];

/// How many transfers the scripted run makes, and after how many of them it
/// kills a branch (halfway through the next one).
const TRANSFERS: u64 = 24;
const KILL_AFTER: u64 = 8;

/// One planned transfer.
#[derive(Clone, Debug)]
struct Transfer {
    id: u64,
    from: usize,
    to: usize,
    amount: u64,
}

/// A fixed plan of transfers, each between accounts at different branches.
fn plan(branches: &[String]) -> Vec<Transfer> {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |below: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % below
    };
    let n = branches.len() as u64;
    let mut transfers = Vec::new();
    for id in 1..=TRANSFERS {
        let (from, to) = loop {
            let (from, to) = (next(n) as usize, next(n) as usize);
            if branches[from] != branches[to] {
                break (from, to);
            }
        };
        transfers.push(Transfer {
            id,
            from,
            to,
            amount: 10 + next(190),
        });
    }
    transfers
}

/// What the teller knows: where each account is, and what it should hold.
struct Teller {
    registry: Registry,
    names: Vec<String>,
    branches: Vec<String>,
    expected: Vec<u64>,
}

impl Teller {
    fn who(&self, i: usize) -> String {
        format!("{}@{}", self.names[i], self.branches[i])
    }

    /// Withdraws, then deposits (unless the withdrawal was refused).
    async fn transfer(&mut self, t: &Transfer) -> Result<bool, Failure> {
        let (from, to) = (self.names[t.from].clone(), self.names[t.to].clone());
        match settle(&self.registry, Leg::Withdraw, &from, t.id, t.amount).await? {
            Ok(_) => {}
            Err(refused) => {
                println!("transfer #{}: refused by {from}: {refused}", t.id);
                return Ok(false);
            }
        }
        settle(&self.registry, Leg::Deposit, &to, t.id, t.amount).await??;
        self.applied(t);
        Ok(true)
    }

    fn applied(&mut self, t: &Transfer) {
        self.expected[t.from] -= t.amount;
        self.expected[t.to] += t.amount;
        println!(
            "transfer #{}: {} from {} to {}",
            t.id,
            t.amount,
            self.who(t.from),
            self.who(t.to)
        );
    }

    /// Every account's balance, asked of the account.
    async fn balances(&self) -> Result<Vec<u64>, Failure> {
        let mut balances = Vec::new();
        for name in &self.names {
            let account: AccountRef = self.registry.lookup(name).await?;
            balances.push(account.with_timeout(ATTEMPT_WITHIN).balance().await?);
        }
        Ok(balances)
    }
}

/// Removes the branches' data directories when the run ends, however it ends.
struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts branch `name` in `cluster`; its pid and address.
fn start_branch(
    cluster: &mut LocalCluster,
    registry: &str,
    name: &str,
    data: &Path,
) -> Result<(usize, u32, String), Failure> {
    let me = std::env::current_exe()?;
    let data = data.join(name);
    let args = [
        "branch",
        "--registry",
        registry,
        "--name",
        name,
        "--data",
        &data.to_string_lossy(),
    ];
    let node = cluster.start(&me, args)?;
    let (pid, addr) = (node.child.id(), node.addr.clone());
    Ok((cluster.nodes().len() - 1, pid, addr))
}

/// The registry and three branches as processes of a local cluster, and a teller
/// here that opens accounts, moves money, and kills and restarts a branch.
async fn everything() -> Result<(), Failure> {
    let me = std::env::current_exe()?;
    let data = DataDir(std::env::temp_dir().join(format!(
        "remora-bank-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )));
    let mut cluster = LocalCluster::new()?;
    let registry_addr = cluster.start(&me, ["registry"])?.addr.clone();
    println!("registry process listening on {registry_addr}");
    let mut processes = BTreeMap::new();
    for i in 1..=3 {
        let name = format!("branch-{i}");
        let (index, pid, addr) = start_branch(&mut cluster, &registry_addr, &name, &data.0)?;
        println!("{name} (process {pid}) listening on {addr}, offering to open accounts");
        processes.insert(name, index);
    }

    let node = tuned(cluster.builder(), "bank-teller").build().await?;
    let registry = Registry::connect(&node, &registry_addr).await?;
    let placer = registry.placer(BRANCHES, Placement::RoundRobin);
    wait_for_branches(&placer, 3).await?;

    // Open the accounts where the placer says, and bind their names.
    let mut teller = Teller {
        registry: registry.clone(),
        names: Vec::new(),
        branches: Vec::new(),
        expected: Vec::new(),
    };
    for (name, balance) in ACCOUNTS {
        let account: AccountRef = placer
            .spawn(ACCOUNT_FACTORY, (name.to_owned(), balance))
            .await?;
        wait_for_name(&registry, name).await?;
        let branch = account.branch().await?;
        println!("opened {name} with {balance} at {branch}");
        teller.names.push(name.to_owned());
        teller.branches.push(branch);
        teller.expected.push(balance);
    }
    let spread: BTreeSet<&String> = teller.branches.iter().collect();
    println!("accounts spread over {} branches", spread.len());
    if spread.len() != 3 {
        return Err("round-robin placement should use all three branches".into());
    }

    let before: u64 = teller.balances().await?.iter().sum();
    println!("total before: {before}");

    let transfers = plan(&teller.branches);
    for t in &transfers[..KILL_AFTER as usize] {
        teller.transfer(t).await?;
    }

    // Halfway through the next transfer: withdrawn, not yet deposited.
    let t = &transfers[KILL_AFTER as usize];
    let (from, to) = (teller.names[t.from].clone(), teller.names[t.to].clone());
    if let Err(refused) = settle(&registry, Leg::Withdraw, &from, t.id, t.amount).await? {
        return Err(format!("the planned transfer #{} was refused: {refused}", t.id).into());
    }
    let victim = teller.branches[t.to].clone();
    println!(
        "transfer #{}: withdrew {} from {}; before it reaches {to}, {victim} is killed",
        t.id,
        t.amount,
        teller.who(t.from)
    );
    let index = processes[&victim];
    cluster.nodes()[index].kill()?;
    println!("killed {victim} (SIGKILL); {} is in flight", t.amount);

    // The deposit is retried while the branch is down; it comes back meanwhile.
    let deposit = {
        let (registry, to, id, amount) = (registry.clone(), to.clone(), t.id, t.amount);
        tokio::spawn(async move { settle(&registry, Leg::Deposit, &to, id, amount).await })
    };
    tokio::time::sleep(OUTAGE).await;
    let (index, pid, addr) = tokio::task::block_in_place(|| {
        start_branch(&mut cluster, &registry_addr, &victim, &data.0)
    })?;
    processes.insert(victim.clone(), index);
    println!(
        "restarted {victim} (process {pid}, now on {addr}): it reopened its accounts from their files and rebound their names"
    );
    deposit
        .await?
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    teller.applied(t);

    // What the runtime's exactly-once memory could not cover: the restarted
    // branch's memory of replies is empty, so a resent deposit is a new call.
    // The account's own record of transfer ids keeps it from counting twice.
    let replayed = transfers[..KILL_AFTER as usize]
        .iter()
        .rev()
        .find(|r| teller.branches[r.to] == victim);
    if let Some(r) = replayed {
        let name = teller.names[r.to].clone();
        let account: AccountRef = registry.lookup(&name).await?;
        let held = account.balance().await?;
        let after = settle(&registry, Leg::Deposit, &name, r.id, r.amount)
            .await?
            .map_err(|e| e.to_string())?;
        println!(
            "resent the deposit of transfer #{} ({}) to {name}, as if its acknowledgement had been lost in the crash: balance {held} before, {after} after",
            r.id, r.amount
        );
        if held != after {
            return Err(format!("{name} counted transfer #{} twice", r.id).into());
        }
    }

    for t in &transfers[KILL_AFTER as usize + 1..] {
        teller.transfer(t).await?;
    }

    let balances = teller.balances().await?;
    for (i, balance) in balances.iter().enumerate() {
        println!("{}: {balance}", teller.who(i));
    }
    if balances != teller.expected {
        return Err(format!(
            "the balances {balances:?} do not match the acknowledged transfers {:?}",
            teller.expected
        )
        .into());
    }
    println!("every balance matches the transfers acknowledged");
    let after: u64 = balances.iter().sum();
    println!("total after: {after}");
    if before != after {
        return Err(format!("the total changed from {before} to {after}").into());
    }
    println!("total conserved through the loss of {victim}");

    node.shutdown().await;
    cluster.terminate();
    println!("stopped the registry and the branches");
    Ok(())
}

/// Waits (a bounded time) until `name` is bound.
async fn wait_for_name(registry: &Registry, name: &str) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match registry.lookup::<AccountRef>(name).await {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(format!("{name} was not bound in time: {err}").into())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits (a bounded time) until `count` branches offer spawning.
async fn wait_for_branches(placer: &Placer, count: usize) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = placer.nodes().await?.len();
        if found >= count {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("only {found} of {count} branches offer spawning").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value after `flag`.
async fn branch_from(args: &[String]) -> Result<(), Failure> {
    let registry = required(args, "--registry", "ADDR")?;
    let name = required(args, "--name", "NAME")?;
    let data = required(args, "--data", "DIR")?;
    branch(&registry, &name, Path::new(&data)).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => everything().await,
        Some("registry") => registry().await,
        Some("branch") => branch_from(&args).await,
        Some(other) => Err(format!(
            "unknown command {other:?}: use `registry`, `branch --registry ADDR --name NAME --data DIR`, or nothing"
        )
        .into()),
    };
    exit_code("bank", result)
}
