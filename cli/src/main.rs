//! `remora`: run a standalone registry (RMI's `rmiregistry`), list a registry's
//! names, inspect a node, show the cluster in a web page, and issue the certificates a cluster's nodes
//! authenticate with.
//!
//! ```text
//! remora cert init DIR                         # a cluster root: DIR/ca.pem, DIR/ca.key
//! remora cert node DIR --name web-1 [--out D]  # a node certificate signed by it
//! remora registry --listen 127.0.0.1:7000 --credentials DIR [--etcd URL]
//! remora ls 127.0.0.1:7000 [PREFIX] --credentials DIR
//! remora inspect 127.0.0.1:7001 [all|node|actors|conns|leases|methods] [--json] [--registry 127.0.0.1:7000] --credentials DIR
//! remora top 127.0.0.1:7001 [--sort mailbox|rate] [--interval-ms N] [--iterations N] [--registry 127.0.0.1:7000] --credentials DIR
//! remora dashboard --registry 127.0.0.1:7000 [--listen 127.0.0.1:8080] --credentials DIR
//! ```

mod bindings;
mod cert;
mod dashboard;
mod inspect;
mod ls;
mod registry;
mod table;
mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "remora",
    version,
    about = "Remora's command line: registry, names, inspection, certificates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a standalone registry node until interrupted (Ctrl-C).
    Registry(registry::Args),
    /// List the names bound in the registry served at ADDR.
    Ls(ls::Args),
    /// Show what the node at ADDR hosts and how it is doing (tables, or --json).
    Inspect(inspect::Args),
    /// Show the actors of the node at ADDR, refreshed, busiest first (Ctrl-C quits).
    Top(top::Args),
    /// Serve a web page that shows the cluster a registry knows, live.
    Dashboard(dashboard::Args),
    /// Create a cluster trust root, or node certificates signed by it.
    #[command(subcommand)]
    Cert(cert::Command),
}

/// Where the cluster's credentials are: `--credentials DIR` or `REMORA_CREDENTIALS`.
#[derive(clap::Args, Clone, Debug)]
pub struct Credentials {
    /// Directory with the cluster root (`ca.pem`) and this node's `node.pem`/`node.key`
    /// (or the root's `ca.key` to issue one), as `remora cert` writes them.
    #[arg(long, env = "REMORA_CREDENTIALS", value_name = "DIR")]
    credentials: Option<PathBuf>,
}

impl Credentials {
    /// A node builder with these credentials.
    fn builder(&self) -> remora::NodeBuilder {
        let builder = remora::Node::builder();
        match &self.credentials {
            Some(dir) => builder.credentials(dir),
            None => builder,
        }
    }

    /// What to tell a user whose connection failed, perhaps for want of credentials.
    fn hint(&self) -> &'static str {
        if self.credentials.is_none() {
            "; nodes of other processes only accept peers of their cluster: pass \
             --credentials DIR (see `remora cert init`)"
        } else {
            ""
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Cert(command) => cert::run(command),
        Command::Registry(args) => runtime().and_then(|rt| rt.block_on(registry::run(args))),
        Command::Ls(args) => runtime().and_then(|rt| rt.block_on(ls::run(args))),
        Command::Inspect(args) => runtime().and_then(|rt| rt.block_on(inspect::run(args))),
        Command::Top(args) => runtime().and_then(|rt| rt.block_on(top::run(args))),
        Command::Dashboard(args) => runtime().and_then(|rt| rt.block_on(dashboard::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("remora: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}
