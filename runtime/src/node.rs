//! The node: hosts actors, spawns them, watches them, shuts them down.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::actor::{Actor, SpawnOptions, StopReason};
use crate::cell::ActorCell;
use crate::id::ActorId;
use crate::interface::{Dispatch, Interface};
use crate::mailbox::Mailbox;
use crate::reference::{LocalRoute, RefCore, DEFAULT_TIMEOUT};
use crate::slot::{Control, Held, Slot, Start};

/// A process-level host for actors. Cheap to clone: clones share one node.
///
/// ```
/// use remora::{Actor, Node};
///
/// #[remora::remote]
/// pub trait Greeter {
///     async fn greet(&mut self, name: String) -> String;
/// }
///
/// struct English;
/// impl Actor for English {}
/// impl Greeter for English {
///     async fn greet(&mut self, name: String) -> String {
///         format!("hello, {name}")
///     }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().build().await?;
/// let greeter: GreeterRef = node.spawn(English);
/// assert_eq!(greeter.greet("world".into()).await?, "hello, world");
/// node.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    name: Option<String>,
    runtime: tokio::runtime::Handle,
    default_mailbox: Mailbox,
    default_timeout: Duration,
    actors: DashMap<ActorId, Arc<dyn Control>>,
    next_actor: AtomicU64,
    live: AtomicUsize,
    all_stopped: Notify,
    shutting_down: AtomicBool,
}

/// Why a node could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// `build()` ran outside a tokio runtime.
    #[error("Node::builder().build() must run inside a tokio runtime (use #[tokio::main] or Runtime::block_on)")]
    NoRuntime,
}

/// Configures a [`Node`]; from [`Node::builder`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: Option<String>,
    default_mailbox: Mailbox,
    default_timeout: Duration,
}

impl NodeBuilder {
    /// A name for logs and statistics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The mailbox actors get when [`SpawnOptions::mailbox`] does not choose one
    /// (default: [`Mailbox::default`], bounded at 1024).
    pub fn default_mailbox(mut self, mailbox: Mailbox) -> Self {
        self.default_mailbox = mailbox;
        self
    }

    /// The deadline of calls made through references this node creates
    /// (default 30 s); `r.with_timeout(d)` overrides it per reference.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Starts the node on the current tokio runtime.
    pub async fn build(self) -> Result<Node, NodeError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NodeError::NoRuntime)?;
        Ok(Node {
            inner: Arc::new(NodeInner {
                name: self.name,
                runtime,
                default_mailbox: self.default_mailbox,
                default_timeout: self.default_timeout,
                actors: DashMap::new(),
                next_actor: AtomicU64::new(1),
                live: AtomicUsize::new(0),
                all_stopped: Notify::new(),
                shutting_down: AtomicBool::new(false),
            }),
        })
    }
}

/// A snapshot of a node's counters, from [`Node::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Actors running (started and not yet finished).
    pub actors: usize,
}

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            name: None,
            default_mailbox: Mailbox::default(),
            default_timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The node's name, if the builder gave one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// Spawns `actor` with the node's defaults and returns a typed reference to it.
    ///
    /// The reference type names the interface: `let r: CounterRef = node.spawn(c)`,
    /// or `node.spawn::<CounterRef, _>(c)`. The actor runs until it is stopped, its
    /// node shuts down, or every reference to it is dropped.
    pub fn spawn<R, A>(&self, actor: A) -> R
    where
        R: Interface,
        A: Actor,
        R::Msg: Dispatch<A>,
    {
        self.spawn_with(actor, SpawnOptions::new())
    }

    /// Spawns `actor` with a chosen mailbox, restart policy and name.
    pub fn spawn_with<R, A>(&self, actor: A, options: SpawnOptions<A>) -> R
    where
        R: Interface,
        A: Actor,
        R::Msg: Dispatch<A>,
    {
        let inner = &self.inner;
        let id = ActorId(inner.next_actor.fetch_add(1, Ordering::Relaxed));
        let cell = Arc::new(ActorCell::new(id, options.name));
        let (tx, rx) = options.mailbox.unwrap_or(inner.default_mailbox).channel();
        let held = Held {
            rx,
            state_dropped: false,
            restart: options.restart,
            restarts: VecDeque::new(),
        };
        inner.live.fetch_add(1, Ordering::AcqRel);
        let start: Start<A, R::Msg, _> = <R::Msg as Dispatch<A>>::dispatch;
        let slot = Slot::spawn(
            actor,
            start,
            self.clone(),
            cell.clone(),
            held,
            options.inline,
        );
        inner.actors.insert(id, slot.clone());
        // A spawn racing shutdown must not outlive it.
        if inner.shutting_down.load(Ordering::SeqCst) {
            Control::stop(&*slot, StopReason::Shutdown);
        }
        let mut core = RefCore::local(LocalRoute {
            tx,
            cell,
            host: slot,
        });
        if inner.default_timeout != DEFAULT_TIMEOUT {
            core = core.with_timeout(inner.default_timeout);
        }
        R::from_core(core)
    }

    /// Resolves with the reason once the actor behind `r` has stopped (at once if it
    /// already has). Restarts under a restart policy do not count as stops.
    pub fn monitor<R: Interface>(
        &self,
        r: &R,
    ) -> impl Future<Output = StopReason> + Send + 'static {
        r.core().cell().monitor()
    }

    /// Asks the actor behind `r` to stop ([`StopReason::Normal`]) after its current
    /// message; messages still queued are answered with `ActorStopped`.
    pub fn stop<R: Interface>(&self, r: &R) {
        r.core().stop(StopReason::Normal);
    }

    /// Whether the actor behind `r` has finished.
    pub fn is_stopped<R: Interface>(&self, r: &R) -> bool {
        r.core().cell().is_finished()
    }

    /// The node's counters now.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            actors: self.inner.live.load(Ordering::Acquire),
        }
    }

    /// Stops every actor (each finishes its current message, queued callers get
    /// `ActorStopped`, `on_stop` runs with [`StopReason::Shutdown`]) and returns when
    /// all have finished. Actors spawned afterwards stop at once.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::SeqCst);
        // Collected first: stopping an idle actor may finish it at once, and its
        // removal from the table must not run under our iteration's shard lock.
        let actors: Vec<Arc<dyn Control>> = inner
            .actors
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        for actor in actors {
            actor.stop(StopReason::Shutdown);
        }
        loop {
            let notified = inner.all_stopped.notified();
            if inner.live.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
        tracing::debug!(node = ?inner.name, "node shut down");
    }

    /// Runs an actor's task on the node's runtime.
    pub(crate) fn spawn_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner.runtime.spawn(task);
    }

    /// Called by an actor's task as it ends.
    pub(crate) fn forget(&self, cell: &ActorCell) {
        self.inner.actors.remove(&cell.id);
        if self.inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.all_stopped.notify_waiters();
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.inner.name)
            .field("actors", &self.inner.live.load(Ordering::Relaxed))
            .finish()
    }
}
