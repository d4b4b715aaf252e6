//! The hooks the local core calls and the layers above implement: [`Control`]
//! (what the node and supervisors keep of an actor to stop or wake it) and
//! [`Supervision`] (a supervised actor's side of its supervisor, implemented by
//! `supervisor/`). The core defines them so that it never names its callers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use crate::local::cell::ActorCell;
use crate::local::stop::StopReason;

/// What the node keeps of every actor: enough to stop it.
pub(crate) trait Control: Send + Sync {
    /// Asks the actor to stop after its current message, and makes sure it does.
    fn stop(&self, reason: StopReason);

    /// Makes sure someone looks at the actor (its supervisor asked it to pause).
    fn wake(&self);

    /// What inspection shows of the actor now (its type, mailbox, counters).
    fn figures(&self) -> crate::local::stats::ActorFigures;
}

/// What a supervised actor is told to do once it has halted.
pub(crate) enum Directive {
    /// Take fresh state from the factory and run `on_start` again.
    Restart,
    /// Stop for good, with this reason.
    Stop(StopReason),
}

/// A supervised actor's side of its supervisor, called by the actor's slot and task.
pub(crate) trait Supervision: Send + Sync {
    /// The actor exists (called once, before its `on_start`).
    fn attach(&self, cell: &Arc<ActorCell>, control: Weak<dyn Control>);
    /// Whether the supervisor asked it to pause after its current message.
    fn pause_requested(&self) -> bool;
    /// It has stopped handling messages — it panicked (`failure`) or paused on
    /// request — and waits for what to do.
    fn halted(&self, failure: Option<String>) -> Pin<Box<dyn Future<Output = Directive> + Send>>;
    /// Its `on_start` finished (after a restart, or a first start that had to wait).
    fn started(&self);
    /// The supervisor's actor, while it runs (for inspection).
    fn supervisor(&self) -> Option<crate::id::ActorId>;
}
