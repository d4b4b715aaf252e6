//! The node binary's side: its credentials, its `READY` line, and its shutdown on
//! SIGTERM.
//!
//! The signal handlers are installed before `READY` is printed ([`announce`]): a
//! cluster may send SIGTERM as soon as it has read the line, and a signal that
//! found no handler would end the process without its shutdown.

use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use remora::{Node, NodeBuilder};
use tokio::sync::watch;

/// The environment variable in which a [`LocalCluster`](crate::LocalCluster) gives
/// its node processes the cluster's directory: `REMORA_CREDENTIALS`.
pub const CREDENTIALS_ENV: &str = "REMORA_CREDENTIALS";

/// A node builder for a process started by a [`LocalCluster`](crate::LocalCluster)
/// (or by hand with `REMORA_CREDENTIALS=DIR`): with the cluster's credentials when
/// [`CREDENTIALS_ENV`] is set, else with ephemeral ones (a cluster of one process).
pub fn node_builder() -> NodeBuilder {
    match std::env::var_os(CREDENTIALS_ENV) {
        Some(dir) => Node::builder().credentials(PathBuf::from(dir)),
        None => Node::builder(),
    }
}

/// Tells the [`LocalCluster`](crate::LocalCluster) that started this process where
/// `node` listens: prints `READY <addr>` (`READY -` for a node that does not
/// listen) as the first line on standard output. Call it once the node is ready
/// to be called, from within a Tokio runtime.
///
/// It installs the SIGTERM and SIGINT handlers of [`serve_until_signal`] first:
/// from the moment the line is out, a SIGTERM shuts the node down cleanly (once
/// `serve_until_signal` runs) rather than ending the process.
pub fn announce(node: &Node) {
    announce_with(node, [""; 0]);
}

/// [`announce`], with more words after the address: `READY <addr> <extra>...`. The
/// cluster hands them to the test as [`ClusterNode::ready`](crate::ClusterNode::ready);
/// an object id to build a reference from, say. A word must not contain
/// whitespace.
pub fn announce_with(node: &Node, extra: impl IntoIterator<Item = impl Display>) {
    stop_requested();
    let mut line = match node.listen_addr() {
        Some(addr) => format!("READY {addr}"),
        None => "READY -".to_owned(),
    };
    for word in extra {
        line.push_str(&format!(" {word}"));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits for SIGTERM or Ctrl-C (SIGINT), then shuts `node` down: its actors stop
/// (registry entries of theirs are removed), its connections close. Returns once
/// the node has shut down; the process should then exit with success.
///
/// Without Unix signals it waits for Ctrl-C only.
pub async fn serve_until_signal(node: &Node) {
    let mut stop = stop_requested();
    let _ = stop.wait_for(|stop| *stop).await;
    node.shutdown().await;
}

/// Becomes true on the first SIGINT or SIGTERM. The handlers are installed on the
/// first call; before it, a signal's default action ends the process.
fn stop_requested() -> watch::Receiver<bool> {
    static STOP: OnceLock<watch::Receiver<bool>> = OnceLock::new();
    STOP.get_or_init(|| {
        let (tx, rx) = watch::channel(false);
        let signalled = signalled();
        tokio::spawn(async move {
            signalled.await;
            let _ = tx.send(true);
        });
        rx
    })
    .clone()
}

/// Resolves on the first SIGTERM or SIGINT after this call (the handlers are in
/// place when it returns).
#[cfg(unix)]
fn signalled() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            // No handlers (the process is out of file descriptors, say): Ctrl-C
            // still stops it cleanly, SIGTERM keeps its default action.
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn signalled() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
