//! [`LocalCluster`]: a cluster root in a temporary directory, and the node processes
//! started under it.
//!
//! A node process is a child of this one, with `REMORA_CREDENTIALS` naming the
//! directory, standard input closed and standard output piped. Its first line must
//! be `READY <addr> [more...]`; a thread reads it, so that a process that says
//! nothing cannot hang the caller past [`READY_WITHIN`].

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use remora::{Credentials, Node, NodeBuilder};

use crate::node::ClusterNode;
use crate::serve::CREDENTIALS_ENV;

/// How long a node process gets to announce itself.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// Why a cluster or one of its nodes could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The cluster root could not be written.
    #[error(transparent)]
    Credentials(#[from] remora::CredentialsError),
    /// A node process did not announce itself with `READY <addr>` within 20 s (it
    /// has been killed). Its standard error, which the cluster leaves to this
    /// process's, usually says why.
    #[error(
        "{binary} did not announce itself (expected a first line `READY <addr>`, got {got:?}): \
         see its standard error, and have it call remora_testing::announce once it listens"
    )]
    NotReady {
        /// The binary started.
        binary: String,
        /// What it printed instead (empty if it exited or said nothing in time).
        got: String,
    },
}

/// Node processes sharing a cluster root in a temporary directory.
///
/// Dropping it terminates the processes (latest first, as
/// [`terminate`](LocalCluster::terminate) does), then removes the directory.
/// Dropping blocks the calling thread while the processes shut down.
#[derive(Debug)]
pub struct LocalCluster {
    // Before `dir`: were `Drop` ever to go, the processes would still stop before
    // their credentials are deleted.
    nodes: Vec<ClusterNode>,
    dir: tempfile::TempDir,
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
            nodes: Vec::new(),
            dir,
        })
    }

    /// The directory holding the cluster root: what
    /// [`NodeBuilder::credentials`] loads, and what node processes find in
    /// [`CREDENTIALS_ENV`].
    pub fn credentials(&self) -> &Path {
        self.dir.path()
    }

    /// A builder for a node of this process in the cluster: the test's own node,
    /// which can connect to the node processes and call them.
    pub fn builder(&self) -> NodeBuilder {
        Node::builder().credentials(self.dir.path())
    }

    /// Starts `binary` with `args` as a node of the cluster and waits up to 20 s
    /// for its `READY <addr>` line.
    ///
    /// The process gets the cluster's directory in [`CREDENTIALS_ENV`], no standard
    /// input, this process's standard error, and a pipe for its standard output
    /// ([`ClusterNode::output`]).
    pub fn start<I, S>(
        &mut self,
        binary: impl AsRef<Path>,
        args: I,
    ) -> Result<&mut ClusterNode, ClusterError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let binary = binary.as_ref();
        let mut child = Command::new(binary)
            .args(args)
            .env(CREDENTIALS_ENV, self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| ClusterError::Io {
                what: format!("starting {}", binary.display()),
                source,
            })?;
        let mut output = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (tx, rx) = mpsc::channel();
        // The first line is read on a thread, so a silent process cannot hang us.
        // Killing the process ends the read.
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
                binary: binary.display().to_string(),
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

    /// The node processes, in start order (stopped ones included).
    pub fn nodes(&mut self) -> &mut [ClusterNode] {
        &mut self.nodes
    }

    /// Terminates every node process still running, latest first: each gets
    /// SIGTERM and up to [`TERMINATE_GRACE`](crate::TERMINATE_GRACE) to exit
    /// before SIGKILL ([`ClusterNode::terminate`]). Latest first, because later
    /// nodes tend to depend on earlier ones (a registry is started first), and a
    /// node shutting down may still call them (to unbind its names, say).
    pub fn terminate(&mut self) {
        for node in self.nodes.iter_mut().rev() {
            let _ = node.terminate();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.terminate();
    }
}
