//! The limits tests' node under test in a process of its own
//! (`remora-limits-node`), the actors it serves, and the test's view of it:
//! its counters, read remotely through its inspector.

use std::sync::Arc;

use remora::inspect::{InspectorRef, LimitsInfo, INSPECTOR_OBJECT};
use remora::wire::ObjectId;
use remora::{Actor, Interface, Node, NodeId};
use tokio::sync::{mpsc, Semaphore};

use crate::{CounterRef, SAFETY};

#[remora::remote]
pub trait Hopper {
    /// Waits for a permit, then records the length of `bytes`.
    #[oneway]
    async fn load(&mut self, bytes: Vec<u8>);
}

/// A [`Hopper`] that lets a load finish only when given a permit.
pub struct Bin {
    pub got: mpsc::UnboundedSender<usize>,
    pub permits: Arc<Semaphore>,
}

impl Actor for Bin {}

impl Hopper for Bin {
    async fn load(&mut self, bytes: Vec<u8>) {
        self.permits.acquire().await.expect("open").forget();
        let _ = self.got.send(bytes.len());
    }
}

/// Works a [`Bin`] of the same process from another node: its permits, what
/// it finished, and its mailbox.
#[remora::remote]
pub trait Hatch {
    /// Lets `n` more loads finish.
    async fn open(&mut self, n: u64);
    /// The lengths of the loads finished since the last look.
    async fn finished(&mut self) -> Vec<u64>;
    /// The bin's mailbox: messages and bytes queued.
    async fn queued(&mut self) -> (u64, u64);
}

/// A [`Hatch`] on one [`Bin`].
pub struct Hatchway {
    pub bin: HopperRef,
    pub got: mpsc::UnboundedReceiver<usize>,
    pub permits: Arc<Semaphore>,
}

impl Actor for Hatchway {}

impl Hatch for Hatchway {
    async fn open(&mut self, n: u64) {
        self.permits.add_permits(n as usize);
    }

    async fn finished(&mut self) -> Vec<u64> {
        let mut lengths = Vec::new();
        while let Ok(length) = self.got.try_recv() {
            lengths.push(length as u64);
        }
        lengths
    }

    async fn queued(&mut self) -> (u64, u64) {
        let core = Interface::core(&self.bin);
        (core.mailbox_depth() as u64, core.mailbox_bytes() as u64)
    }
}

/// Calls objects of other nodes from the node it runs on.
#[remora::remote]
pub trait Dialer {
    /// Calls `add(1)` on every counter at once; how many answered 1.
    async fn add_one_each(&mut self, counters: Vec<CounterRef>) -> u64;
}

/// A [`Dialer`].
pub struct Switchboard;

impl Actor for Switchboard {}

impl Dialer for Switchboard {
    async fn add_one_each(&mut self, counters: Vec<CounterRef>) -> u64 {
        let mut calls = tokio::task::JoinSet::new();
        for counter in counters {
            calls.spawn(async move { counter.add(1).await });
        }
        let answers = calls.join_all().await;
        answers.into_iter().filter(|a| *a == Ok(1)).count() as u64
    }
}

/// `remora-limits-node` running in a child process, killed when dropped.
pub struct LimitsNode {
    pub child: std::process::Child,
    pub id: NodeId,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// A [`Tally`](crate::Tally).
    pub counter: ObjectId,
    /// A `Tally` that has seen 100 000 times `u64::MAX`: its `seen()` answers
    /// about 900 KB.
    pub big: ObjectId,
    /// A [`Bin`] with a mailbox of 1 024 places bounded to `--hopper-bytes`.
    pub hopper: ObjectId,
    /// The [`Hatch`] of that bin.
    pub hatch: ObjectId,
    /// A [`Dialer`].
    pub dialer: ObjectId,
}

impl LimitsNode {
    /// Starts `binary` (`remora-limits-node`) with the cluster in
    /// `credentials` and `args`, and waits for its READY line.
    pub fn spawn(binary: &str, credentials: &std::path::Path, args: &[&str]) -> LimitsNode {
        let (child, parts) = crate::start_ready(binary, credentials, args);
        assert_eq!(parts.len(), 8, "unexpected first line: {parts:?}");
        let object = |i: usize| parts[i].parse().expect("an object id");
        LimitsNode {
            addr: parts[1].parse().expect("an address"),
            id: parts[2].parse().expect("a node id"),
            counter: object(3),
            big: object(4),
            hopper: object(5),
            hatch: object(6),
            dialer: object(7),
            child,
        }
    }
}

impl Drop for LimitsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A [`LimitsNode`] in a fresh cluster, and a node of the test's process
/// connected to it, which reads its counters.
pub struct UnderTest {
    pub node: LimitsNode,
    /// The test's own node, connected to it.
    pub client: Node,
    /// The cluster's root (to issue a hostile member's certificate).
    pub dir: tempfile::TempDir,
    inspector: InspectorRef,
}

impl UnderTest {
    /// Starts `binary` with `args` (see `remora-limits-node`) and connects a
    /// node of this process to it.
    pub async fn start(binary: &str, args: &[&str]) -> UnderTest {
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        remora::Credentials::create_cluster(dir.path()).expect("a cluster");
        let node = LimitsNode::spawn(binary, dir.path(), args);
        let client = Node::builder()
            .credentials(dir.path())
            .build()
            .await
            .expect("the test's node");
        let peer = client
            .connect(node.addr.to_string())
            .await
            .expect("connected to the node under test");
        assert_eq!(peer, node.id);
        let inspector = client
            .reference(node.id, INSPECTOR_OBJECT)
            .expect("its inspector");
        UnderTest {
            node,
            client,
            dir,
            inspector,
        }
    }

    /// A reference, held by the test's node, to `object` of the node under test.
    pub fn reference<R>(&self, object: ObjectId) -> R
    where
        R: Interface,
        R::Msg: remora::rt::Unmarshal,
    {
        self.client
            .reference(self.node.id, object)
            .expect("connected")
    }

    /// Its counters now (the inspector's `limits`).
    pub async fn stats(&self) -> LimitsInfo {
        tokio::time::timeout(SAFETY, self.inspector.limits())
            .await
            .expect("the inspector answers in time")
            .expect("the inspector answers")
            .expect("inspection allowed")
    }

    /// Its connections now (the inspector's `conns`).
    pub async fn conns(&self) -> Vec<remora::inspect::ConnInfo> {
        tokio::time::timeout(SAFETY, self.inspector.conns())
            .await
            .expect("the inspector answers in time")
            .expect("the inspector answers")
            .expect("inspection allowed")
    }

    /// Waits until its counters satisfy `condition`, looking every few
    /// milliseconds for at most [`SAFETY`]; panics naming `what` if they
    /// never do. Returns the counters that did.
    pub async fn until(&self, what: &str, condition: impl Fn(&LimitsInfo) -> bool) -> LimitsInfo {
        let deadline = tokio::time::Instant::now() + SAFETY;
        loop {
            let stats = self.stats().await;
            if condition(&stats) {
                return stats;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {SAFETY:?}: {what} ({stats:?})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
