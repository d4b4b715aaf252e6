//! `remora-chaos-node` processes: started with their arguments, announced by
//! their `READY` line, killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use remora::{NodeId, ObjectId};

/// How long a node process gets to print `READY`.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A node process, killed when dropped. Its standard input stays open: when
/// this process dies, the node sees it close and shuts down.
pub struct NodeProcess {
    child: Child,
    pub addr: String,
    pub node: NodeId,
    pub incarnation: u64,
    pub journal: ObjectId,
}

impl NodeProcess {
    /// Starts `binary` with `args` and waits for
    /// `READY <addr> <node> <incarnation> <journal object>`.
    pub fn start(binary: &Path, args: &[String]) -> Result<NodeProcess, String> {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Read on a thread, so a silent process cannot hang us.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep the pipe open (and drained) for the life of the process.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx.recv_timeout(READY_WITHIN).unwrap_or_default();
        let parsed = (|| {
            let mut words = line.strip_prefix("READY ")?.split_whitespace();
            let addr = words.next()?.to_owned();
            let node = words.next()?.parse().ok()?;
            let incarnation = words.next()?.parse().ok()?;
            let journal = words.next()?.parse().ok()?;
            Some((addr, node, incarnation, journal))
        })();
        match parsed {
            Some((addr, node, incarnation, journal)) => Ok(NodeProcess {
                child,
                addr,
                node,
                incarnation,
                journal,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("no READY line from {args:?}: got {line:?}"))
            }
        }
    }

    /// SIGKILL, and reaped: no goodbye reaches its peers.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
