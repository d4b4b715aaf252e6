//! A tour of one node: a small bank of `Account` actors.
//!
//! ```text
//! cargo run --release -p remora-samples --bin tour
//! ```
//!
//! It needs no configuration and finishes in about two seconds, printing what it
//! does as it goes. In order, it shows:
//!
//! 1. a `#[remora::remote]` trait (`Account`) with asks (`deposit`, `balance`, ...)
//!    and a `#[oneway]` tell (`audit`), and an actor (`Ledger`) that implements it;
//! 2. spawning actors and calling them through their typed references (`AccountRef`),
//!    with application errors (`BankError`) kept apart from call errors (`CallError`);
//! 3. a tell, and a tell with `.receipt().await`;
//! 4. a per-call deadline (`with_timeout`) ending in `CallError::Timeout`;
//! 5. backpressure: a `Mailbox::bounded(2)` actor, `try_tell()` failing with
//!    `MailboxFull`, and an awaited tell that waits for room instead;
//! 6. a panicking handler: the caller gets `CallError::Panicked`, the node and the
//!    other actors keep serving, and `node.monitor(&r)` reports why the actor stopped;
//! 7. a restart policy that gives a panicked actor fresh state, up to a limit;
//! 8. `node.shutdown().await`.
//!
//! Everything here runs on one node, in one process; `demo` shows the same kind of
//! accounts spread over several node processes.

use std::time::{Duration, Instant};

use remora::{Actor, Mailbox, Node, Restart, SpawnOptions};
use serde::{Deserialize, Serialize};

/// A bank account, as a remote interface. The macro generates `AccountRef`, a typed
/// proxy whose methods return `Result<T, CallError>`.
#[remora::remote(name = "bank.Account")]
pub trait Account {
    /// Adds `amount`; returns the new balance.
    async fn deposit(&mut self, amount: u64) -> u64;
    /// Takes `amount` out, or says why not: an application error, inside the `Ok`.
    async fn withdraw(&mut self, amount: u64) -> Result<u64, BankError>;
    /// The current balance.
    async fn balance(&self) -> u64;
    /// The audit notes so far, fetched from a slow archive.
    async fn statement(&self) -> Vec<String>;
    /// The balance split into `parts` equal shares. It has a bug: `parts == 0` panics.
    async fn share(&self, parts: u64) -> u64;
    /// Appends a note to the audit trail (a one-way message: no reply).
    #[oneway]
    async fn audit(&mut self, note: String);
}

/// What can go wrong with a withdrawal; travels inside the reply like any value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankError {
    InsufficientFunds { balance: u64, wanted: u64 },
}

/// Writing one audit note takes this long (a slow audit log).
const AUDIT_WRITE: Duration = Duration::from_millis(150);
/// Fetching a statement takes this long (a slow archive).
const ARCHIVE_FETCH: Duration = Duration::from_millis(300);

/// The actor behind an `AccountRef`: plain state, handled one message at a time.
struct Ledger {
    balance: u64,
    trail: Vec<String>,
}

impl Ledger {
    fn new() -> Self {
        Ledger {
            balance: 0,
            trail: Vec::new(),
        }
    }
}

impl Actor for Ledger {}

impl Account for Ledger {
    async fn deposit(&mut self, amount: u64) -> u64 {
        self.balance += amount;
        self.balance
    }

    async fn withdraw(&mut self, amount: u64) -> Result<u64, BankError> {
        if amount > self.balance {
            return Err(BankError::InsufficientFunds {
                balance: self.balance,
                wanted: amount,
            });
        }
        self.balance -= amount;
        Ok(self.balance)
    }

    async fn balance(&self) -> u64 {
        self.balance
    }

    async fn statement(&self) -> Vec<String> {
        tokio::time::sleep(ARCHIVE_FETCH).await;
        self.trail.clone()
    }

    async fn share(&self, parts: u64) -> u64 {
        self.balance / parts // parts == 0: "attempt to divide by zero"
    }

    async fn audit(&mut self, note: String) {
        tokio::time::sleep(AUDIT_WRITE).await;
        self.trail.push(note);
    }
}

fn section(title: &str) {
    println!("\n== {title}");
}

/// Milliseconds since `start`, rounded to tens so the output reads steadily.
fn ms(start: Instant) -> u128 {
    (start.elapsed().as_millis() + 5) / 10 * 10
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Remora catches a panic in a handler and turns it into `CallError::Panicked`
    // for the caller, but Rust's default panic hook would still print a multi-line
    // report for the deliberate panics below. One line is enough here.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        println!("   (panic hook: a handler panicked{at}: {message})");
    }));

    let node = Node::builder().name("demo").build().await?;
    println!("Remora demo: local actors on node `demo`");

    section("1. spawn actors and call them");
    let alice: AccountRef = node.spawn(Ledger::new());
    let bob: AccountRef = node.spawn(Ledger::new());
    println!("alice.deposit(100)  -> {}", alice.deposit(100).await?);
    println!("alice.deposit(50)   -> {}", alice.deposit(50).await?);
    println!("bob.deposit(20)     -> {}", bob.deposit(20).await?);
    println!("alice.withdraw(30)  -> {:?}", alice.withdraw(30).await?);
    // The outer `?` handles CallError; the inner Result is the bank's own answer.
    println!("bob.withdraw(500)   -> {:?}", bob.withdraw(500).await?);
    println!("alice.balance()     -> {}", alice.balance().await?);
    println!("bob.balance()       -> {}", bob.balance().await?);

    section("2. one-way messages (tells)");
    let start = Instant::now();
    alice.audit("opened by the demo".into()).await?;
    println!(
        "alice.audit(..).await            -> queued after {} ms (the audit log is slow: {} ms per note)",
        ms(start),
        AUDIT_WRITE.as_millis()
    );
    alice.audit("checked by the demo".into()).receipt().await?;
    println!(
        "alice.audit(..).receipt().await  -> taken by alice after {} ms (she had to finish the first note)",
        ms(start)
    );
    // Messages from one sender arrive in the order sent, so both notes are in.
    println!(
        "alice.statement()                -> {:?} after {} ms",
        alice.statement().await?,
        ms(start)
    );

    section("3. a per-call deadline");
    let start = Instant::now();
    let hurried = alice.with_timeout(Duration::from_millis(100));
    let answer = hurried.statement().await;
    println!("alice.with_timeout(100 ms).statement() -> {answer:?}");
    if let Err(e) = answer {
        println!("   {e}; may_have_executed() = {}", e.may_have_executed());
    }
    // The default deadline (30 s) is plenty; alice first finishes the statement
    // whose caller gave up.
    let lines = alice.statement().await?.len();
    println!(
        "alice.statement() with the default 30 s deadline -> {lines} notes after {} ms",
        ms(start)
    );

    section("4. backpressure: a mailbox with room for 2 messages");
    let carol: AccountRef = node.spawn_with(
        Ledger::new(),
        SpawnOptions::new().mailbox(Mailbox::bounded(2)),
    );
    // Once carol has taken note 1 she is busy writing it, and her mailbox is empty.
    carol.audit("note 1".into()).receipt().await?;
    println!("carol took note 1 and is writing it");
    for n in 2..=4 {
        match carol.audit(format!("note {n}")).try_tell() {
            Ok(()) => println!("carol.audit(note {n}).try_tell() -> Ok (queued)"),
            Err(e) => {
                println!("carol.audit(note {n}).try_tell() -> Err({e:?})");
                println!("   {e}; may_have_executed() = {}", e.may_have_executed());
            }
        }
    }
    let start = Instant::now();
    carol.audit("note 4".into()).await?;
    println!(
        "carol.audit(note 4).await -> Ok after waiting {} ms for room",
        ms(start)
    );
    println!("carol.statement() -> {:?}", carol.statement().await?);

    section("5. a panic in a handler");
    let bob_stopped = node.monitor(&bob);
    println!("bob has no restart policy, and share(0) divides by zero:");
    println!("bob.share(0) -> {:?}", bob.share(0).await);
    println!("node.monitor(&bob) -> stopped: {}", bob_stopped.await);
    println!("bob.balance() -> {:?}", bob.balance().await);
    println!(
        "alice.balance() -> {} (the other actors keep serving)",
        alice.balance().await?
    );

    section("6. a restart policy: fresh state after a panic");
    let policy = Restart {
        max: 1,
        within: Duration::from_secs(60),
    };
    let dave: AccountRef = node.spawn_with(
        Ledger::new(),
        SpawnOptions::new().restart(policy, Ledger::new),
    );
    println!("dave is spawned with {policy:?} and a factory for fresh ledgers");
    println!("dave.deposit(70) -> {}", dave.deposit(70).await?);
    println!("dave.share(0) -> {:?}", dave.share(0).await);
    println!(
        "dave.balance() -> {} (restarted with fresh state; stopped: {})",
        dave.balance().await?,
        node.is_stopped(&dave)
    );
    println!("dave.share(0) -> {:?}", dave.share(0).await);
    println!(
        "node.monitor(&dave) -> stopped: {} (a second panic within 60 s is past the limit)",
        node.monitor(&dave).await
    );

    section("7. stop one actor, then shut the node down");
    node.stop(&carol);
    println!(
        "node.stop(&carol); node.monitor(&carol) -> stopped: {}",
        node.monitor(&carol).await
    );
    println!("carol.balance() -> {:?}", carol.balance().await);
    let alice_stopped = node.monitor(&alice);
    println!("actors running: {} (alice)", node.stats().actors);
    node.shutdown().await;
    println!(
        "node.shutdown().await -> done; actors running: {}",
        node.stats().actors
    );
    println!("node.monitor(&alice) -> stopped: {}", alice_stopped.await);
    println!("alice.balance() -> {:?}", alice.balance().await);

    println!("\nDone.");
    Ok(())
}
