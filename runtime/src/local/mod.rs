//! One node's actors, knowing nothing of other nodes: actors and their lifecycle,
//! mailboxes, the baton that runs them ([`baton`], [`slot`], [`runner`]), reply slots, the
//! caller's context, and the route a reference takes to an actor of this node.
//! Hooks that layers above implement (supervision, control) are defined here and
//! called from here, so this layer never imports upwards: only [`actor::Context`]
//! names the `Node` it runs on.

pub(crate) mod actor;
pub(crate) mod baton;
pub(crate) mod call;
pub(crate) mod caller;
pub(crate) mod cancel;
pub(crate) mod cell;
pub(crate) mod dispatch;
pub(crate) mod mailbox;
pub(crate) mod reply;
pub(crate) mod route;
pub(crate) mod runner;
pub(crate) mod slot;
pub(crate) mod stats;
pub(crate) mod stop;
pub(crate) mod supervision;
