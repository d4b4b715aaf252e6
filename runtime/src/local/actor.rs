//! The actor trait, its lifecycle hooks, and how an actor is spawned.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::id::ActorId;
use crate::local::cell::ActorCell;
use crate::local::mailbox::Mailbox;
use crate::local::stop::StopReason;
use crate::local::supervision::{Control, Supervision};
use crate::node::Node;

/// An object that lives behind a mailbox and handles one message at a time.
///
/// Implement it (often as an empty `impl Actor for X {}`) next to the
/// `#[remora::remote]` trait the actor serves. The hooks default to doing nothing.
///
/// ```
/// use remora::{Actor, Context, StopReason};
///
/// struct Logger { lines: Vec<String> }
///
/// impl Actor for Logger {
///     async fn on_start(&mut self, ctx: &Context) {
///         self.lines.push(format!("{} started", ctx.id()));
///     }
///     async fn on_stop(&mut self, reason: &StopReason) {
///         self.lines.push(format!("stopped: {reason}"));
///     }
/// }
/// ```
pub trait Actor: Send + Sized + 'static {
    /// Runs once before the first message (and again after each restart, on the fresh state).
    fn on_start(&mut self, ctx: &Context) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// Runs once after the last message, whatever the reason; queued callers have
    /// already been answered with `ActorStopped`.
    fn on_stop(&mut self, reason: &StopReason) -> impl Future<Output = ()> + Send {
        let _ = reason;
        async {}
    }

    /// Runs when nothing refers to the actor any more (RMI's `unreferenced`): it
    /// was exported to other nodes, every lease on it has been released or has
    /// lapsed, no reference to it remains on its node, and it is not pinned
    /// (registry bindings hold a reference). It runs between messages, like one.
    ///
    /// Return [`Unreferenced::Stop`] (the default) to stop with
    /// [`StopReason::Unreferenced`], or [`Unreferenced::Keep`] to stay exported:
    /// a [`WireRef`](crate::WireRef) to it kept outside Remora (a database, a file)
    /// still resolves, and the hook runs again the next time it is unreferenced
    /// after a new lease.
    ///
    /// ```
    /// use remora::{Actor, Context, Unreferenced};
    ///
    /// struct Session { open: bool }
    ///
    /// impl Actor for Session {
    ///     async fn on_unreferenced(&mut self, _ctx: &Context) -> Unreferenced {
    ///         // Every client dropped its proxy (or crashed and its lease lapsed).
    ///         self.open = false;
    ///         Unreferenced::Stop
    ///     }
    /// }
    /// ```
    fn on_unreferenced(&mut self, ctx: &Context) -> impl Future<Output = Unreferenced> + Send {
        let _ = ctx;
        async { Unreferenced::Stop }
    }
}

/// What an actor does once nothing refers to it any more: the answer of
/// [`Actor::on_unreferenced`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreferenced {
    /// Stop, with [`StopReason::Unreferenced`].
    Stop,
    /// Keep running and stay exported.
    Keep,
}

/// What an actor knows about itself while it runs; handed to [`Actor::on_start`].
/// Keep a clone to reach the node or stop yourself from a handler.
#[derive(Clone)]
pub struct Context {
    pub(crate) node: Node,
    pub(crate) cell: Arc<ActorCell>,
    pub(crate) control: Weak<dyn Control>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("node", &self.node)
            .field("actor", &self.cell.id)
            .finish()
    }
}

impl Context {
    /// The node this actor runs on (to spawn more actors, for instance).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// This actor's id on its node.
    pub fn id(&self) -> ActorId {
        self.cell.id
    }

    /// The name given in [`SpawnOptions::name`], if any.
    pub fn name(&self) -> Option<&str> {
        self.cell.name.as_deref()
    }

    /// Stops this actor with [`StopReason::Normal`] once the current message is handled.
    /// Messages still queued are answered with `ActorStopped`.
    pub fn stop(&self) {
        match self.control.upgrade() {
            Some(control) => control.stop(StopReason::Normal),
            None => self.cell.request_stop(StopReason::Normal),
        }
    }
}

/// Restart a panicked actor with fresh state, at most `max` times within `within`;
/// one more panic inside that window stops it for good ([`StopReason::Panicked`]).
///
/// The mailbox survives a restart (as in Akka): queued messages go to the fresh state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// Restarts allowed inside the window.
    pub max: u32,
    /// The sliding window.
    pub within: Duration,
}

pub(crate) type Factory<A> = Box<dyn FnMut() -> A + Send>;

/// Who decides whether a panicked actor gets fresh state from its factory.
pub(crate) enum RestartBy {
    /// Its own [`Restart`] policy.
    Policy(Restart),
    /// Its supervisor, which may also ask it to pause and restart (`supervisor.rs`).
    Supervisor(Arc<dyn Supervision>),
}

/// How [`Node::spawn_with`] starts an actor: mailbox, restart policy, name for logs.
///
/// ```
/// use std::time::Duration;
/// use remora::{Mailbox, Restart, SpawnOptions};
///
/// #[derive(Default)]
/// struct Counter { n: u64 }
///
/// let options = SpawnOptions::new()
///     .mailbox(Mailbox::bounded(64))
///     .restart(Restart { max: 3, within: Duration::from_secs(10) }, Counter::default)
///     .name("counter");
/// # let _ = options;
/// ```
pub struct SpawnOptions<A> {
    pub(crate) inline: bool,
    pub(crate) pinned: bool,
    pub(crate) mailbox: Option<Mailbox>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) restart: Option<(RestartBy, Factory<A>)>,
}

impl<A> SpawnOptions<A> {
    /// The node's defaults: its default mailbox, no restart, no name.
    pub fn new() -> Self {
        SpawnOptions {
            inline: true,
            pinned: false,
            mailbox: None,
            name: None,
            restart: None,
        }
    }

    /// The mailbox kind (default: the node's, [`Mailbox::default`] unless the builder changed it).
    pub fn mailbox(mut self, mailbox: Mailbox) -> Self {
        self.mailbox = Some(mailbox);
        self
    }

    /// Whether a caller that finds the actor idle may run the handler on its own
    /// task (default `true`: no queueing, no thread switch).
    ///
    /// The handler's synchronous part then runs before the caller's `ask` or `tell`
    /// returns; a handler that awaits continues on the actor's own task. Turn it off
    /// for actors whose handlers do long synchronous work, so that a `tell` to them
    /// never holds up its sender; every message then goes through the mailbox.
    pub fn inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }

    /// Keeps the actor exported once other nodes have been given references to it,
    /// even after every lease on it lapsed and every local reference is gone
    /// (default `false`: such an actor is withdrawn and stops). A pinned actor
    /// lives until it is stopped.
    pub fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = pinned;
        self
    }

    /// A name that appears in logs and statistics (not a registry name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into().into());
        self
    }

    /// Restart on panic under `policy`, building the fresh state with `factory`.
    /// Without this, a panic stops the actor.
    pub fn restart(mut self, policy: Restart, factory: impl FnMut() -> A + Send + 'static) -> Self {
        self.restart = Some((RestartBy::Policy(policy), Box::new(factory)));
        self
    }
}

impl<A> Default for SpawnOptions<A> {
    fn default() -> Self {
        SpawnOptions::new()
    }
}

impl<A> fmt::Debug for SpawnOptions<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnOptions")
            .field("inline", &self.inline)
            .field("pinned", &self.pinned)
            .field("mailbox", &self.mailbox)
            .field("name", &self.name)
            .field(
                "restart",
                &self.restart.as_ref().map(|(by, _)| match by {
                    RestartBy::Policy(policy) => format!("{policy:?}"),
                    RestartBy::Supervisor(_) => "by its supervisor".to_owned(),
                }),
            )
            .finish()
    }
}
