//! [`LocalCluster`]: node processes on this machine, for samples, demos and tests
//! (Java's `ProcessBuilder`, for clusters).
//!
//! It writes a fresh cluster root to a temporary directory, starts each node as
//! a child process of a given binary with `REMORA_CREDENTIALS` pointing there (so
//! they trust each other and nothing else), and waits for each to announce itself
//! with a `READY <addr> [more...]` line on its standard output ([`announce`]). Dropping the
//! cluster kills and reaps the processes and removes the directory.
//!
//! ```no_run
//! use remora_samples::cluster::LocalCluster;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cluster = LocalCluster::new()?;
//! let registry = cluster.start("target/release/hello", &["registry"])?;
//! let addr = registry.addr.clone();
//! cluster.start("target/release/hello", &["server", "--registry", &addr])?;
//! # Ok(()) }
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use remora::{Credentials, Node, NodeBuilder};

/// The environment variable node processes find the cluster's credentials in.
pub const CREDENTIALS_ENV: &str = "REMORA_CREDENTIALS";

/// How long a node process gets to announce itself.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The credentials could not be made.
    #[error(transparent)]
    Credentials(#[from] remora::CredentialsError),
    /// A node process did not announce itself with `READY <addr>`.
    #[error(
        "{binary} did not announce itself (expected a first line `READY <addr>`, got {got:?})"
    )]
    NotReady {
        /// The binary started.
        binary: String,
        /// What it printed instead (empty if it exited or said nothing in time).
        got: String,
    },
}

/// Node processes sharing a cluster root, killed when dropped.
pub struct LocalCluster {
    dir: tempfile::TempDir,
    nodes: Vec<ClusterNode>,
}

/// One node process of a [`LocalCluster`].
pub struct ClusterNode {
    /// Where the node listens.
    pub addr: String,
    /// Whatever else the node announced after its address on the `READY` line.
    pub ready: Vec<String>,
    /// The process.
    pub child: Child,
    /// The rest of its standard output, after the `READY` line.
    pub output: Option<BufReader<ChildStdout>>,
}

impl ClusterNode {
    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalCluster {
    /// A cluster root in a new temporary directory, and no nodes yet.
    pub fn new() -> Result<LocalCluster, ClusterError> {
        let dir = tempfile::Builder::new()
            .prefix("remora-cluster-")
            .tempdir()
            .map_err(|source| ClusterError::Io {
                what: "creating the cluster's directory".into(),
                source,
            })?;
        Credentials::create_cluster(dir.path())?;
        Ok(LocalCluster {
            dir,
            nodes: Vec::new(),
        })
    }

    /// The directory with the cluster's root (what `credentials(dir)` loads).
    pub fn credentials(&self) -> &Path {
        self.dir.path()
    }

    /// A node builder for a node of this process in the cluster.
    pub fn builder(&self) -> NodeBuilder {
        Node::builder().credentials(self.dir.path())
    }

    /// Starts `binary` with `args` as a node of the cluster and waits for its
    /// `READY <addr>` line.
    pub fn start(&mut self, binary: &str, args: &[&str]) -> Result<&mut ClusterNode, ClusterError> {
        let mut child = Command::new(binary)
            .args(args)
            .env(CREDENTIALS_ENV, self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| ClusterError::Io {
                what: format!("starting {binary}"),
                source,
            })?;
        let mut output = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (tx, rx) = std::sync::mpsc::channel();
        // Read the first line on a thread, so a silent process cannot hang us.
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            let _ = output.read_line(&mut line);
            let _ = tx.send(line);
            output
        });
        let line = rx.recv_timeout(READY_WITHIN).unwrap_or_default();
        let mut words = line
            .strip_prefix("READY ")
            .unwrap_or_default()
            .split_whitespace();
        let addr = words.next().map(str::to_owned);
        let ready = words.map(str::to_owned).collect();
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ClusterError::NotReady {
                binary: binary.to_owned(),
                got: line,
            });
        };
        let output = reader.join().ok();
        self.nodes.push(ClusterNode {
            addr,
            ready,
            child,
            output,
        });
        Ok(self.nodes.last_mut().expect("just pushed"))
    }

    /// The node processes, in start order.
    pub fn nodes(&mut self) -> &mut [ClusterNode] {
        &mut self.nodes
    }

    /// Kills every node process now.
    pub fn stop(&mut self) {
        for node in self.nodes.iter_mut().rev() {
            node.kill();
        }
    }
}

impl Drop for LocalCluster {
    /// The processes go first; the directory goes with `dir`.
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node builder for a process started by a [`LocalCluster`] (or by hand with
/// `REMORA_CREDENTIALS=DIR`): the cluster's credentials, when the variable is set.
pub fn node_builder() -> NodeBuilder {
    match std::env::var_os(CREDENTIALS_ENV) {
        Some(dir) => Node::builder().credentials(PathBuf::from(dir)),
        None => Node::builder(),
    }
}

/// Tells the [`LocalCluster`] that started this process where it listens: the
/// first line on standard output, `READY <addr>`. Signal handling starts first, so
/// a SIGTERM sent as soon as `READY` is read already finds it (see
/// [`serve_until_signal`]).
pub fn announce(node: &Node) {
    use std::io::Write;
    stop_requested();
    let addr = node
        .listen_addr()
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY {addr}");
    let _ = out.flush();
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM, then shuts `node` down: its actors stop
/// (registry entries of theirs are removed), its connections close.
pub async fn serve_until_signal(node: &Node) {
    let mut stop = stop_requested();
    let _ = stop.wait_for(|stop| *stop).await;
    node.shutdown().await;
}

/// Becomes true on the first SIGINT or SIGTERM. The handlers are installed on the
/// first call (a signal's default action, ending the process, stops then).
fn stop_requested() -> tokio::sync::watch::Receiver<bool> {
    static STOP: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> =
        std::sync::OnceLock::new();
    STOP.get_or_init(|| {
        let (tx, rx) = tokio::sync::watch::channel(false);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let term = signal(SignalKind::terminate());
            let int = signal(SignalKind::interrupt());
            tokio::spawn(async move {
                match (term, int) {
                    (Ok(mut term), Ok(mut int)) => {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = int.recv() => {}
                        }
                    }
                    _ => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
                let _ = tx.send(true);
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = tx.send(true);
        });
        rx
    })
    .clone()
}
