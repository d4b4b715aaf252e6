//! `remora top`: a node's actors, refreshed in the terminal, busiest first.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use remora::inspect::{ActorInfo, InspectorRef};
use remora::{ActorId, Node};
use remora_registry::Registry;

use crate::inspect::{
    actor_rows, actors_table, ask, connect, connect_registry, explain, read_bindings, ActorRow,
};

/// How `remora top` orders the actors.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Longest mailbox first.
    Mailbox,
    /// Most messages handled per second since the last refresh first.
    Rate,
}

#[derive(clap::Args)]
pub struct Args {
    /// The node's address, such as 127.0.0.1:7000.
    addr: String,
    /// The order of the actors.
    #[arg(long, value_enum, default_value = "mailbox")]
    sort: Sort,
    /// Milliseconds between refreshes (100 to 60000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    interval_ms: u64,
    /// Stop after this many refreshes (default: until Ctrl-C).
    #[arg(long)]
    iterations: Option<u64>,
    /// At most this many actors a refresh.
    #[arg(long, default_value_t = 40)]
    rows: usize,
    /// Show each actor's registry names and groups, as the registry at this
    /// address (or several, comma-separated) binds them, read every refresh. A
    /// node does not know its names: without this, they are not shown.
    #[arg(long, value_name = "REG_ADDR")]
    registry: Option<String>,
    #[command(flatten)]
    credentials: crate::Credentials,
}

pub async fn run(args: Args) -> Result<(), String> {
    let (node, inspector) = connect(&args.addr, &args.credentials, "remora-top").await?;
    let outcome = tokio::select! {
        outcome = refresh_loop(&node, &inspector, &args) => outcome,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    node.shutdown().await;
    outcome
}

async fn refresh_loop(me: &Node, inspector: &InspectorRef, args: &Args) -> Result<(), String> {
    let registry: Option<(Registry, &str)> = match &args.registry {
        Some(addr) => Some((connect_registry(me, addr, &args.credentials).await?, addr)),
        None => None,
    };
    let inspected = me.wire_ref(inspector).node;
    let interval = Duration::from_millis(args.interval_ms);
    // Only a terminal is cleared between refreshes; a pipe gets them in a row.
    let clear = std::io::stdout().is_terminal();
    let mut last: Option<(Instant, HashMap<ActorId, u64>)> = None;
    let mut done = 0;
    loop {
        let failed = |err| explain(&args.addr, &err, &args.credentials);
        let actors = ask(inspector.actors().await).map_err(failed)?;
        let now = Instant::now();
        let rates: Vec<Option<f64>> = actors.iter().map(|a| rate(a, now, last.as_ref())).collect();
        let bindings = match &registry {
            Some((registry, addr)) => Some(read_bindings(registry, addr).await?),
            None => None,
        };
        let rows = actor_rows(actors.clone(), inspected, bindings.as_ref());
        let screen = render(&args.addr, rows, rates, args.sort, args.rows);
        if clear {
            print!("\x1b[2J\x1b[H");
        }
        println!("{screen}");
        last = Some((now, actors.iter().map(|a| (a.id, a.handled)).collect()));
        done += 1;
        if args.iterations.is_some_and(|n| done >= n) {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

/// Messages per second `actor` handled since the last refresh (none on the
/// first, or for an actor new since).
fn rate(
    actor: &ActorInfo,
    now: Instant,
    last: Option<&(Instant, HashMap<ActorId, u64>)>,
) -> Option<f64> {
    let (then, handled) = last?;
    let before = handled.get(&actor.id)?;
    let secs = now.duration_since(*then).as_secs_f64();
    (secs > 0.0).then(|| actor.handled.saturating_sub(*before) as f64 / secs)
}

/// One refresh: a header line, then the actors in `sort` order.
fn render(
    addr: &str,
    actors: Vec<ActorRow>,
    rates: Vec<Option<f64>>,
    sort: Sort,
    rows: usize,
) -> String {
    let total = actors.len();
    let mut paired: Vec<(ActorRow, Option<f64>)> = actors.into_iter().zip(rates).collect();
    match sort {
        Sort::Mailbox => paired.sort_by_key(|(a, _)| std::cmp::Reverse(a.actor.mailbox.length)),
        Sort::Rate => paired.sort_by(|a, b| b.1.unwrap_or(0.0).total_cmp(&a.1.unwrap_or(0.0))),
    }
    paired.truncate(rows);
    let queued: usize = paired.iter().map(|(a, _)| a.actor.mailbox.length).sum();
    let (actors, rates): (Vec<ActorRow>, Vec<Option<f64>>) = paired.into_iter().unzip();
    format!(
        "remora top {addr}: {total} actors, {queued} messages queued in the {} shown (sorted by {})\n{}",
        actors.len(),
        match sort {
            Sort::Mailbox => "mailbox length",
            Sort::Rate => "rate",
        },
        actors_table(&actors, &rates)
    )
}
