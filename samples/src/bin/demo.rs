//! Remora's demo: a registry and three nodes as separate OS processes on loopback,
//! actors spread over them, found by name, passing references, and a node killed.
//!
//! ```text
//! cargo run --release -p remora-samples --bin demo
//! ```
//!
//! It needs no configuration and no external service (the cluster's credentials
//! are made in a temporary directory) and takes a few seconds. In order:
//!
//! 1. starts a registry process and three node processes (`north`, `south`,
//!    `east`), each offering to host `account` actors;
//! 2. spawns three accounts, one per node (round-robin placement), and binds them
//!    in the registry as `alice`, `bob` and `carol`;
//! 3. looks them up by name (typed references) and calls them: values are copied;
//! 4. passes a reference: `alice.pay(bob, 30)` makes alice's node call bob's node
//!    directly, with the reference it was given;
//! 5. kills the node hosting carol (SIGKILL): a call to carol fails with a clear
//!    error, its monitor says why, and carol's name leaves the registry;
//! 6. shuts every process down (SIGTERM: actors stop, connections close).
//!
//! `cargo run --release -p remora-samples --bin tour` is a tour of one node: calls,
//! tells, deadlines, backpressure, panics, restarts.

use std::time::{Duration, Instant};

use remora::{Actor, Node, StopReason};
use remora_registry::{MemoryStore, Placement, Registry, RegistryError, RegistryServer};
use remora_samples::args::{exit_code, required};
use remora_testing::{announce, node_builder, serve_until_signal, LocalCluster};

/// A bank account, on whichever node it was placed.
#[remora::remote]
pub trait Account {
    /// Adds `amount`; returns the new balance.
    async fn deposit(&mut self, amount: u64) -> u64;
    /// The balance.
    async fn balance(&mut self) -> u64;
    /// Moves `amount` to `to` (a reference to an account, possibly on another node).
    async fn pay(&mut self, to: AccountRef, amount: u64) -> Result<u64, String>;
    /// The node the account lives on.
    async fn branch(&mut self) -> String;
}

struct Ledger {
    owner: String,
    branch: String,
    balance: u64,
}

impl Actor for Ledger {}

impl Account for Ledger {
    async fn deposit(&mut self, amount: u64) -> u64 {
        self.balance += amount;
        self.balance
    }

    async fn balance(&mut self) -> u64 {
        self.balance
    }

    async fn pay(&mut self, to: AccountRef, amount: u64) -> Result<u64, String> {
        if amount > self.balance {
            return Err(format!("{} has only {}", self.owner, self.balance));
        }
        // A call from this node to the node `to` lives on.
        to.deposit(amount)
            .await
            .map_err(|e| format!("the transfer did not reach its target: {e}"))?;
        self.balance -= amount;
        Ok(self.balance)
    }

    async fn branch(&mut self) -> String {
        self.branch.clone()
    }
}

type Failure = Box<dyn std::error::Error>;

/// Short, so that a killed node is noticed within the demo's few seconds.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

async fn registry_process() -> Result<(), Failure> {
    let node = node_builder()
        .name("registry")
        .listen("127.0.0.1:0")
        .peer_timeout(PEER_TIMEOUT)
        .build()
        .await?;
    RegistryServer::new(MemoryStore::new())
        .max_lease(Duration::from_secs(3))
        .start(&node)?;
    announce(&node);
    serve_until_signal(&node).await;
    Ok(())
}

async fn node_process(name: &str, registry_addr: &str) -> Result<(), Failure> {
    let node = node_builder()
        .name(name)
        .listen("127.0.0.1:0")
        .peer_timeout(PEER_TIMEOUT)
        .build()
        .await?;
    let branch = name.to_owned();
    node.register_factory_fn("account", move |node: &Node, owner: String| {
        Ok::<AccountRef, String>(node.spawn(Ledger {
            owner,
            branch: branch.clone(),
            balance: 0,
        }))
    })?;
    let registry = Registry::builder()
        .lease_ttl(Duration::from_secs(3))
        .connect(&node, registry_addr)
        .await?;
    registry.offer_spawning("branches").await?;
    announce(&node);
    serve_until_signal(&node).await;
    Ok(())
}

fn step(text: &str) {
    println!("\n== {text}");
}

/// The story, told from a client node in this process.
async fn demo() -> Result<(), Failure> {
    let started = Instant::now();
    let me = std::env::current_exe()?;
    let mut cluster = LocalCluster::new()?;

    step("1. a registry and three nodes, each an OS process");
    let registry_addr = cluster.start(&me, ["registry"])?.addr.clone();
    println!("registry  listening on {registry_addr}");
    let mut pids = Vec::new();
    for name in ["north", "south", "east"] {
        let node = cluster.start(&me, ["node", name, "--registry", &registry_addr])?;
        println!("{name:<9} listening on {}", node.addr);
        pids.push((name, node.child.id()));
    }

    let client = cluster
        .builder()
        .name("client")
        .peer_timeout(PEER_TIMEOUT)
        .build()
        .await?;
    let registry = Registry::connect(&client, &registry_addr).await?;

    step("2. three accounts, placed round-robin over the nodes, bound by name");
    let placer = registry.placer("branches", Placement::RoundRobin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while placer.nodes().await?.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for owner in ["alice", "bob", "carol"] {
        let account: AccountRef = placer.spawn("account", owner.to_owned()).await?;
        registry.bind(owner, &account).await?;
        println!("{owner:<5} -> spawned on `{}`", account.branch().await?);
    }
    for entry in registry.list("").await? {
        println!(
            "registry: {:<5} {} on node {}",
            entry.name,
            entry.interface,
            &entry.node().to_string()[..8]
        );
    }

    step("3. look them up by name and call them (values are copied)");
    let alice: AccountRef = registry.lookup("alice").await?;
    let bob: AccountRef = registry.lookup("bob").await?;
    let carol: AccountRef = registry.lookup("carol").await?;
    println!("alice.deposit(100) -> {}", alice.deposit(100).await?);
    println!("carol.deposit(50)  -> {}", carol.deposit(50).await?);
    match registry.lookup::<AccountRef>("dave").await {
        Err(err) => println!("lookup(\"dave\")     -> {err}"),
        Ok(_) => println!("lookup(\"dave\")     -> found?!"),
    }

    step("4. pass a reference: alice pays bob (alice's node calls bob's node)");
    println!(
        "alice.pay(bob, 30) -> {:?}",
        alice.pay(bob.clone(), 30).await?
    );
    println!("alice.balance()    -> {}", alice.balance().await?);
    println!("bob.balance()      -> {}", bob.balance().await?);
    println!(
        "alice.pay(bob, 500) -> {:?}",
        alice.pay(bob.clone(), 500).await?
    );

    step("5. kill the node that hosts carol");
    let carol_branch = carol.branch().await?;
    let (_, pid) = pids
        .iter()
        .find(|(name, _)| *name == carol_branch)
        .copied()
        .ok_or("carol's node is not one of ours")?;
    let watching = client.monitor(&carol);
    let killed = Instant::now();
    if let Some(node) = cluster.nodes().iter_mut().find(|n| n.child.id() == pid) {
        node.kill()?;
    }
    println!("killed `{carol_branch}` (SIGKILL, process {pid})");
    match carol.balance().await {
        Ok(balance) => println!("carol.balance() -> {balance} (not noticed yet)"),
        Err(err) => println!("carol.balance() -> Err({err})"),
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), watching).await;
    match reason {
        Ok(reason @ StopReason::NodeDown { .. }) => println!(
            "monitor(carol) -> {reason} (after {:.1} s)",
            killed.elapsed().as_secs_f64()
        ),
        Ok(other) => println!("monitor(carol) -> {other}"),
        Err(_) => println!("monitor(carol) -> still waiting after 10 s"),
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match registry.lookup::<AccountRef>("carol").await {
            Err(RegistryError::NotBound { .. }) => {
                println!(
                    "registry: `carol` is gone ({:.1} s after the kill)",
                    killed.elapsed().as_secs_f64()
                );
                break;
            }
            _ if Instant::now() > deadline => {
                println!("registry: `carol` is still bound after 15 s");
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    println!(
        "alice.balance()    -> {} (the other nodes keep serving)",
        alice.balance().await?
    );
    println!(
        "alice.pay(carol, 10) -> {:?}",
        alice.pay(carol.clone(), 10).await?
    );

    step("6. shut down");
    client.shutdown().await;
    let mut stopped = 0;
    for node in cluster.nodes().iter_mut().rev() {
        if node.child.try_wait().ok().flatten().is_some() {
            continue;
        }
        if node.terminate().is_ok_and(|s| s.success()) {
            stopped += 1;
        }
    }
    println!("{stopped} processes stopped cleanly (SIGTERM)");
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => demo().await,
        Some("registry") => registry_process().await,
        Some("node") => match (args.get(1), required(&args, "--registry", "ADDR")) {
            (Some(name), Ok(addr)) => node_process(name, &addr).await,
            _ => Err("usage: demo node NAME --registry ADDR".into()),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}: run `demo` without arguments (the roles `registry` and `node` are its child processes)"
        )
        .into()),
    };
    exit_code("demo", result)
}
