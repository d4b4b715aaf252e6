//! [`ClusterNode`]: one node process of a [`LocalCluster`](crate::LocalCluster), and
//! how it is stopped.
//!
//! A signal is sent only while the process is unreaped (`try_wait` found it
//! running): until this process reaps it, its pid cannot be reused, so the signal
//! cannot reach another process.

use std::io::{self, BufReader};
use std::process::{Child, ChildStdout, ExitStatus};
use std::time::Duration;

/// How long [`ClusterNode::terminate`] (and so dropping a cluster or a node) waits
/// for a process to exit after SIGTERM before it sends SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(3);

/// How often a terminated process is checked for having exited.
const POLL: Duration = Duration::from_millis(10);

/// One node process of a [`LocalCluster`](crate::LocalCluster).
///
/// Dropping it [terminates](ClusterNode::terminate) the process if it still runs.
#[derive(Debug)]
pub struct ClusterNode {
    /// Where the node listens: the first word after `READY`.
    pub addr: String,
    /// Whatever else the node announced after its address on the `READY` line
    /// ([`announce_with`](crate::announce_with)).
    pub ready: Vec<String>,
    /// The process. Its pid is `child.id()`; wait on it or signal it as you like.
    pub child: Child,
    /// The rest of its standard output, after the `READY` line. Take it to follow
    /// what the node prints. Nothing reads it otherwise: a node that prints more
    /// than the pipe holds (64 KiB on Linux) blocks in its next write.
    pub output: Option<BufReader<ChildStdout>>,
}

impl ClusterNode {
    /// Kills the process at once (SIGKILL), as a crash would, and reaps it: no
    /// goodbye reaches its peers. Returns how it ended (if it had exited already,
    /// how it did).
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill()?;
        self.child.wait()
    }

    /// Asks the process to shut down (SIGTERM), waits up to [`TERMINATE_GRACE`]
    /// for it to exit, then kills it (SIGKILL); returns how it ended. A node that
    /// serves with [`serve_until_signal`](crate::serve_until_signal) exits with
    /// success, so `status.success()` tells a clean shutdown from a kill. Blocks
    /// the calling thread meanwhile.
    ///
    /// Without Unix signals this kills at once.
    pub fn terminate(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        if send_sigterm(&self.child).is_ok() {
            for _ in 0..TERMINATE_GRACE.as_millis() / POLL.as_millis() {
                if let Some(status) = self.child.try_wait()? {
                    return Ok(status);
                }
                std::thread::sleep(POLL);
            }
        }
        self.kill()
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

#[cfg(unix)]
fn send_sigterm(child: &Child) -> io::Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    kill_process(Pid::from_child(child), Signal::TERM)?;
    Ok(())
}

/// No SIGTERM here: the caller kills instead.
#[cfg(not(unix))]
fn send_sigterm(_child: &Child) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}
