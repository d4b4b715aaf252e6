//! Supervision trees: a supervisor restarts the children on its node that fail,
//! one at a time or all together, up to a restart limit, past which it gives up and
//! escalates to its own supervisor (or, at the root, stops).
//!
//! A child is restarted in place, as the runtime's own restart policy does: same
//! actor, same mailbox, same references, fresh state from its factory. While a
//! child waits for its supervisor (after a panic, or paused because a sibling
//! failed under one-for-all) its task keeps the actor's baton, so calls to it wait
//! in its mailbox and reach the fresh state.
//!
//! The supervisor is itself an actor on the node (so node shutdown stops it, and
//! `Node::stats` counts it). Its children talk to it through messages:
//!
//! - a child that panics, or pauses on request, reports `Halted` and waits for a
//!   [`Directive`] (through [`Supervision`], the runtime's hook in `runner.rs`);
//! - a restarted child reports `Started` once its `on_start` has run;
//! - a child's end reaches its supervisor through a monitor (`Exited`).
//!
//! A child supervisor speaks the same protocol to its parent, from its own handlers.
//!
//! Here: the public API and the hook; `tree.rs`: the supervisor actor and its plan;
//! `member.rs`: the two kinds of children (actors, child supervisors) and the links.

mod member;
mod tree;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use self::member::{ChildSide, SupervisorMember};
use self::tree::{watch_exit, Child, Roster, SupRef, SupRoute, Tree};
use crate::id::ActorId;
use crate::interface::Interface;
use crate::local::actor::{Actor, Restart, RestartBy, SpawnOptions};
use crate::local::dispatch::Dispatch;
use crate::local::mailbox::Mailbox;
use crate::local::stop::StopReason;
use crate::node::Node;

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BACKLOG: usize = 256;

/// Which children a supervisor restarts when one of them fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Restart only the child that failed (Erlang's `one_for_one`).
    #[default]
    OneForOne,
    /// Restart every child: all are paused (each after its current message), then
    /// restarted one at a time in start order, each `on_start` finishing before the
    /// next child is restarted (Erlang's `one_for_all`). For children that depend
    /// on each other.
    OneForAll,
}

/// Why a supervisor could not take a child.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The supervisor has stopped (it was stopped, gave up, or its node shut down).
    #[error("the supervisor has stopped; start a new one to supervise more children")]
    Stopped,
}

/// What a supervisor did, as [`Supervisor::events`] reports it. Children are named
/// by their [`ActorId`] (what [`Context::id`](crate::Context::id) returns to the child itself).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// A child panicked (a child supervisor: gave up); the supervisor now applies
    /// its strategy.
    ChildFailed {
        /// The child.
        child: ActorId,
        /// The panic's message (a child supervisor's: why it gave up).
        message: String,
    },
    /// A child runs again on fresh state from its factory, and its `on_start` has
    /// finished. Calls made from now on reach the fresh state.
    ChildRestarted {
        /// The child.
        child: ActorId,
    },
    /// A child stopped for good (stopped, unreferenced, or stopped by its supervisor).
    ChildStopped {
        /// The child.
        child: ActorId,
        /// Why.
        reason: StopReason,
    },
    /// Restarts went past the limit: the supervisor escalates to its own
    /// supervisor, or, without one, stops with [`StopReason::RestartLimit`].
    LimitReached {
        /// The failure that crossed the limit.
        last: String,
    },
    /// This subscriber fell behind and missed `missed` events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// Configures a [`Supervisor`]; from [`Supervisor::builder`].
#[derive(Clone, Debug)]
pub struct SupervisorBuilder {
    strategy: Strategy,
    limit: Restart,
    name: Option<String>,
}

impl SupervisorBuilder {
    /// Which children to restart when one fails (default [`Strategy::OneForOne`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// At most `limit.max` restarts within `limit.within`, counted over all
    /// children (a one-for-all restart counts once); one more failure inside the
    /// window and the supervisor gives up (default: 3 within 5 s).
    pub fn limit(mut self, limit: Restart) -> Self {
        self.limit = limit;
        self
    }

    /// A name for logs and statistics (the supervisor is an actor).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Starts the supervisor on `node`, with no children yet.
    pub fn start(self, node: &Node) -> Supervisor {
        self.spawn(node, None)
    }

    fn spawn(self, node: &Node, parent: Option<Weak<SupRoute>>) -> Supervisor {
        let (events, watching) = broadcast::channel(EVENT_BACKLOG);
        let roster = Arc::new(Roster::default());
        let tree = Tree::new(self.strategy, self.limit, roster.clone(), parent, events);
        let mut options = SpawnOptions::new()
            .mailbox(Mailbox::unbounded())
            .inline(false);
        if let Some(name) = self.name {
            options = options.name(name);
        }
        let sup: SupRef = node.spawn_with(tree, options);
        Supervisor {
            node: node.clone(),
            sup,
            roster,
            watching: Arc::new(watching),
        }
    }
}

/// A supervisor: an actor that restarts the children it started, on its node,
/// when they panic.
///
/// - Children are ordinary actors built by a factory (`FnMut() -> A`), called once
///   for the first state and again for every restart. A child is restarted in
///   place: its references keep working, calls queued meanwhile reach the fresh
///   state, and `on_start` runs again. The old state is dropped without `on_stop`
///   (as with [`SpawnOptions::restart`]).
/// - A child that stops normally ([`Node::stop`], [`Context::stop`](crate::Context::stop), its last
///   reference dropped) is not restarted: every child is what OTP calls
///   *transient*. (A stopped actor's references stay stopped, so a *permanent*
///   child would have no one to serve.)
/// - Past its restart limit a supervisor gives up. A root supervisor then stops
///   its children in reverse start order and itself, with
///   [`StopReason::RestartLimit`]; a child supervisor ([`Supervisor::child_supervisor`])
///   pauses its children and reports the failure to its parent, which applies its
///   own strategy and limit: restarting it restarts all of its children (fresh
///   state, same references).
/// - A supervisor runs while a handle to it or any of its children does, until
///   [`Supervisor::stop`], node shutdown, or giving up; when it stops, it stops its
///   children first (reverse start order, each after its current message).
///
/// A child being paused or restarted finishes its current message first; a handler
/// that never returns holds up its supervisor's restarts.
///
/// ```
/// use std::time::Duration;
/// use remora::{Actor, Node, Restart, Strategy, Supervisor, SupervisorEvent};
///
/// #[remora::remote]
/// pub trait Counter {
///     async fn add(&mut self, n: u64) -> u64;
///     async fn fail(&mut self);
/// }
///
/// #[derive(Default)]
/// struct Tally { total: u64 }
/// impl Actor for Tally {}
/// impl Counter for Tally {
///     async fn add(&mut self, n: u64) -> u64 { self.total += n; self.total }
///     async fn fail(&mut self) { panic!("corrupted") }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().build().await?;
/// let sup = Supervisor::builder()
///     .strategy(Strategy::OneForAll)
///     .limit(Restart { max: 3, within: Duration::from_secs(10) })
///     .start(&node);
/// let mut events = sup.events();
/// let a: CounterRef = sup.child(Tally::default)?;
/// let b: CounterRef = sup.child(Tally::default)?;
/// a.add(5).await?;
/// b.add(7).await?;
///
/// assert!(a.fail().await.is_err());       // the caller sees the panic
/// assert_eq!(a.add(1).await?, 1);         // same reference, fresh state
///
/// // One for all: b is restarted too, after a; the events say when.
/// let mut restarted = 0;
/// while restarted < 2 {
///     if let Some(SupervisorEvent::ChildRestarted { .. }) = events.next().await {
///         restarted += 1;
///     }
/// }
/// assert_eq!(b.add(1).await?, 1);
///
/// sup.stop();
/// sup.monitor().await;
/// assert!(node.is_stopped(&a) && node.is_stopped(&b));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Supervisor {
    node: Node,
    sup: SupRef,
    roster: Arc<Roster>,
    /// Never read: kept to hand out fresh subscriptions that end when the
    /// supervisor (the only sender) is gone.
    watching: Arc<broadcast::Receiver<SupervisorEvent>>,
}

impl Supervisor {
    /// Starts configuring a supervisor.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder {
            strategy: Strategy::OneForOne,
            limit: Restart {
                max: 3,
                within: Duration::from_secs(5),
            },
            name: None,
        }
    }

    /// Spawns a child on the supervisor's node from `factory` (called now for the
    /// first state, and again for each restart) and returns a typed reference to it.
    pub fn child<R, A>(
        &self,
        factory: impl FnMut() -> A + Send + 'static,
    ) -> Result<R, SupervisorError>
    where
        R: Interface,
        A: Actor,
        R::Msg: Dispatch<A>,
    {
        self.child_with(factory, SpawnOptions::new())
    }

    /// [`Supervisor::child`] with a chosen mailbox, name or inline setting. A restart
    /// policy in `options` is replaced: the supervisor decides restarts.
    pub fn child_with<R, A>(
        &self,
        mut factory: impl FnMut() -> A + Send + 'static,
        mut options: SpawnOptions<A>,
    ) -> Result<R, SupervisorError>
    where
        R: Interface,
        A: Actor,
        R::Msg: Dispatch<A>,
    {
        let route = self.route().ok_or(SupervisorError::Stopped)?;
        if route.cell.stop_requested().is_some() || route.cell.is_finished() {
            return Err(SupervisorError::Stopped);
        }
        let link = Arc::new(ChildSide::new(route, &self.roster, &self.node));
        let first = factory();
        options.restart = Some((RestartBy::Supervisor(link.clone()), Box::new(factory)));
        let child: R = self.node.spawn_with(first, options);
        if !link.attached() {
            // The supervisor stopped meanwhile; `child` goes with its only reference.
            return Err(SupervisorError::Stopped);
        }
        Ok(child)
    }

    /// Starts a supervisor as a child of this one, on the same node. When it gives
    /// up, this supervisor counts that as a failure of one child and applies its
    /// strategy: restarting it restarts all of its children in place.
    pub fn child_supervisor(
        &self,
        builder: SupervisorBuilder,
    ) -> Result<Supervisor, SupervisorError> {
        let route = self.route().ok_or(SupervisorError::Stopped)?;
        let sub = builder.spawn(&self.node, Some(Arc::downgrade(route)));
        let Some(sub_route) = sub.route() else {
            return Err(SupervisorError::Stopped);
        };
        let member = SupervisorMember::new(sub_route);
        let id = sub_route.cell.id;
        if !self.roster.enlist(Child::new(id, Box::new(member))) {
            sub.stop();
            return Err(SupervisorError::Stopped);
        }
        watch_exit(&self.node, route.clone(), id, &sub_route.cell);
        Ok(sub)
    }

    /// Subscribes to what this supervisor does from now on (failures, restarts,
    /// stops). The stream ends once the supervisor has stopped.
    pub fn events(&self) -> SupervisorEvents {
        SupervisorEvents {
            rx: self.watching.resubscribe(),
        }
    }

    /// Stops the supervisor ([`StopReason::Normal`]): its children are stopped
    /// first, in reverse start order.
    pub fn stop(&self) {
        self.node.stop(&self.sup);
    }

    /// Resolves with the reason once the supervisor has stopped (after its children).
    pub fn monitor(&self) -> impl Future<Output = StopReason> + Send + 'static {
        self.node.monitor(&self.sup)
    }

    /// Whether the supervisor has stopped.
    pub fn is_stopped(&self) -> bool {
        self.node.is_stopped(&self.sup)
    }

    /// The supervisor's actor id (how its parent's events name it).
    pub fn id(&self) -> Option<ActorId> {
        self.route().map(|route| route.cell.id)
    }

    /// The node it runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    fn route(&self) -> Option<&Arc<SupRoute>> {
        self.sup.route()
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("id", &self.id())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

/// A subscription to a supervisor's [`SupervisorEvent`]s, from [`Supervisor::events`].
#[derive(Debug)]
pub struct SupervisorEvents {
    rx: broadcast::Receiver<SupervisorEvent>,
}

impl SupervisorEvents {
    /// The next event; `None` once the supervisor has stopped and every event was read.
    pub async fn next(&mut self) -> Option<SupervisorEvent> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(SupervisorEvent::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
