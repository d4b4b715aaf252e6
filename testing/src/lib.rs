//! A cluster of Remora node *processes* on this machine, for tests and demos
//! (what Orleans' `TestCluster` is to grains).
//!
//! Several nodes in one process are easier: give each the same
//! [`Credentials`](remora::Credentials) and they form a cluster. Use this crate when
//! a test or a demo needs what only separate processes show: a node killed with
//! SIGKILL, a process that restarts, a node's shutdown on SIGTERM, real sockets
//! between real processes.
//!
//! - [`LocalCluster`]: writes a fresh cluster root to a temporary directory, starts
//!   node processes that trust it (and nothing else), waits for each to say where it
//!   listens, and stops them all when dropped.
//! - [`ClusterNode`]: one of those processes: its address, what else it announced,
//!   its output, and [`kill`](ClusterNode::kill) (SIGKILL, for crash tests) and
//!   [`terminate`](ClusterNode::terminate) (SIGTERM, a grace period, then SIGKILL).
//! - [`announce`], [`serve_until_signal`], [`node_builder`]: what the node binary
//!   calls, so that a `LocalCluster` can start it.
//!
//! # The node binary
//!
//! A `LocalCluster` starts any binary that behaves as follows:
//!
//! 1. It builds its node with the cluster's credentials: the directory named by the
//!    environment variable [`CREDENTIALS_ENV`] (`REMORA_CREDENTIALS`). [`node_builder`]
//!    does this, and falls back to ephemeral credentials when the variable is not
//!    set, so the same binary also runs alone.
//! 2. It listens on loopback, then prints `READY <addr>` as the **first line** of
//!    its standard output, optionally followed by more words that the test needs
//!    (an object id, say): [`announce`] or [`announce_with`]. Anything it prints
//!    later is the test's to read ([`ClusterNode::output`]).
//! 3. It shuts down cleanly on SIGTERM: [`serve_until_signal`] waits for SIGTERM or
//!    Ctrl-C, then shuts the node down. Dropping the cluster sends SIGTERM and allows
//!    [`TERMINATE_GRACE`] before a SIGKILL.
//!
//! ```no_run
//! // examples/greeter/main.rs, in short: a node that serves a greeter.
//! use remora::Actor;
//!
//! #[remora::remote]
//! pub trait Greeter {
//!     async fn greet(&mut self, name: String) -> String;
//! }
//!
//! struct Host;
//! impl Actor for Host {}
//! impl Greeter for Host {
//!     async fn greet(&mut self, name: String) -> String {
//!         format!("hello {name}")
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let node = remora_testing::node_builder()
//!         .listen("127.0.0.1:0")
//!         .build()
//!         .await?;
//!     let greeter: GreeterRef = node.spawn(Host);
//!     // READY <addr> <object id>: the test makes its reference from these.
//!     remora_testing::announce_with(&node, [node.export(&greeter)?]);
//!     remora_testing::serve_until_signal(&node).await;
//!     Ok(())
//! }
//! ```
//!
//! # The test
//!
//! The test starts node processes, and builds a node of its own in the same
//! cluster ([`LocalCluster::builder`]) to call them:
//!
//! ```no_run
//! # #[remora::remote]
//! # pub trait Greeter {
//! #     async fn greet(&mut self, name: String) -> String;
//! # }
//! use remora_testing::LocalCluster;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In a test of the package that has the binary:
//! // env!("CARGO_BIN_EXE_greeter").
//! let greeter_binary = "target/debug/greeter";
//! let mut cluster = LocalCluster::new()?;
//! let node = cluster.start(greeter_binary, ["north"])?;
//! let (addr, object) = (node.addr.clone(), node.ready[0].parse()?);
//!
//! let me = cluster.builder().build().await?;
//! let north = me.connect(&addr).await?;
//! let greeter: GreeterRef = me.reference(north, object)?;
//! assert_eq!(greeter.greet("test".into()).await?, "hello test");
//!
//! drop(cluster); // SIGTERM to every node process; SIGKILL after the grace period
//! # Ok(()) }
//! ```
//!
//! This crate's own test (`tests/local_cluster.rs`, with `examples/greeter/`) does
//! this with two node processes that call each other.
//!
//! # Platforms
//!
//! Unix. Elsewhere it builds, but without SIGTERM: [`ClusterNode::terminate`] and
//! dropping a cluster kill at once, and a node process stops on Ctrl-C only.

// tokio's lint wall, as in the `remora` crate: every public item documented and
// debuggable, nothing marked `pub` that no user can reach.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod cluster;
mod node;
mod serve;

pub use cluster::{ClusterError, LocalCluster};
pub use node::{ClusterNode, TERMINATE_GRACE};
pub use serve::{announce, announce_with, node_builder, serve_until_signal, CREDENTIALS_ENV};
