//! Remora: a distributed actor runtime with Java RMI's semantics.
//!
//! Nodes host actors behind mailboxes; `#[remora::remote]` turns a trait of
//! `async fn`s into a typed reference (`XRef`) whose method calls travel to the
//! actor, one message at a time on `&mut self`.
//!
//! The types that matter:
//! - [`Node`]: hosts actors; [`Node::spawn`] returns a typed reference.
//! - [`Actor`]: lifecycle hooks for the object behind a reference.
//! - [`Mailbox`]: how an actor buffers messages (rendezvous, bounded, capped unbounded).
//! - [`CallError`]: why a call did not return, and whether it may have run.
//! - [`remote`](macro@remote): the attribute macro that generates proxies and dispatchers.
//!
//! Cargo features:
//! - `metrics` (on by default): `NodeBuilder::metrics` serves the node's
//!   counters to Prometheus over HTTP (prometheus-client, hyper). Without it no
//!   HTTP code is built in; [`inspect`] still reads the same counters.
//! - `otel`: calls carry the W3C trace context of the caller's span, and each
//!   handler runs in a span whose parent is the caller's.
//!
//! ```
//! use remora::{Actor, CallError, Node};
//!
//! #[remora::remote]
//! pub trait Counter {
//!     async fn add(&mut self, n: u64) -> u64;
//!     #[oneway]
//!     async fn reset(&mut self);
//! }
//!
//! #[derive(Default)]
//! struct Tally { total: u64 }
//! impl Actor for Tally {}
//! impl Counter for Tally {
//!     async fn add(&mut self, n: u64) -> u64 { self.total += n; self.total }
//!     async fn reset(&mut self) { self.total = 0; }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder().build().await?;
//! let counter: CounterRef = node.spawn(Tally::default());
//! assert_eq!(counter.add(2).await?, 2);
//! counter.reset().await?;                     // a tell: returns once queued
//! assert_eq!(counter.add(5).await?, 5);      // same sender, so in order
//! node.stop(&counter);
//! node.monitor(&counter).await;
//! assert_eq!(counter.add(1).await, Err(CallError::ActorStopped));
//! # Ok(()) }
//! ```

// The `unsafe` (the actor's baton and the lends it makes, in `local/`) argues its
// case at each use: a SAFETY comment on every block says who else may hold a
// reference (aliasing) and what orders it after the previous user (ordering).
// tokio's lint wall: every public item documented and debuggable, nothing marked
// `pub` that no user can reach.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

// Generated code names `::remora`, which must also resolve inside this crate.
extern crate self as remora;

mod deadline;
mod error;
mod hash;
mod id;
pub mod inspect;
mod interface;
mod link;
mod local;
mod method;
#[cfg(feature = "metrics")]
mod metrics;
mod node;
pub mod pipe;
mod reference;
pub mod remote;
mod spawn;
mod supervisor;
mod trace;
pub mod wire;

pub use error::{CallError, NodeLabel};
pub use id::{stable_id, ActorId, NodeId, ObjectId};
pub use interface::Interface;
pub use local::actor::{Actor, Context, Restart, SpawnOptions, Unreferenced};
pub use local::caller::{caller, Caller};
pub use local::cancel::{cancelled, deadline, is_cancelled};
pub use local::mailbox::Mailbox;
pub use local::stop::StopReason;
pub use node::{Node, NodeBuilder, NodeError, NodeStats};
pub use reference::{Tell, DEFAULT_TIMEOUT};
pub use remote::tls::{Credentials, CredentialsError};
pub use remote::WireRef;
pub use spawn::{Factory, FactoryInfo, SpawnError, Spawner, SpawnerRef, SPAWNER_OBJECT};
pub use supervisor::{
    Strategy, Supervisor, SupervisorBuilder, SupervisorError, SupervisorEvent, SupervisorEvents,
};

/// Turns a trait of `async fn` methods into a remote interface.
///
/// For `trait Counter` it generates `CounterRef`, a typed proxy (`Clone + Send +
/// Sync`) whose methods return `Result<T, CallError>`, plus the message types and
/// the dispatcher that runs them on any `Actor` implementing `Counter`.
///
/// - `#[oneway]` on a method makes it a tell: the proxy returns a [`Tell`].
/// - `#[exactly_once]` on a method makes the caller re-send it through lost
///   connections; the callee runs it once per logical call.
/// - `#[abortable]` on a method lets the runtime drop its handler at its next
///   await once the call is given up (its caller dropped it, or its deadline
///   passed), for handlers that are safe to abandon midway (reads, say). Other
///   handlers run on and may watch [`cancelled`]. Not on `#[oneway]` methods
///   (nobody waits for a tell) nor `#[exactly_once]` ones (they run to the end
///   once started, so that their reply can be remembered).
/// - `#[reentrant]` on a method, or `#[remora::remote(reentrant)]` on the whole
///   interface, lets a call of the call chain the actor is busy with (A calls B,
///   B calls back A) run at once beside the handler awaiting it, instead of failing
///   with [`CallError::Cycle`]. Only handlers taking `&self` interleave: a
///   reentrant method must take `&self` (its state lives in a `Mutex` or atomics,
///   and the actor must be `Sync`), and it re-enters only a handler that also
///   holds `&self`. Calls of other chains still wait their turn.
/// - `#[remora::remote(name = "bank.Account")]` sets the wire name (default: the
///   trait's name). Interface id = `stable_id(name)`, method id =
///   `stable_id("{name}.{method}")`.
/// - Arguments are passed by value (no `&`), and methods take `&mut self` or `&self`.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use remora::{Actor, CallError, Node};
///
/// #[remora::remote(reentrant)]
/// pub trait Peer {
///     /// Asks `other` to call `me` back, and returns what the call back got.
///     async fn ping(&self, other: PeerRef, me: PeerRef) -> Result<u64, CallError>;
///     /// Calls `caller` back, while `caller` awaits this call.
///     async fn bounce(&self, caller: PeerRef) -> Result<u64, CallError>;
///     async fn pong(&self) -> u64;
/// }
///
/// #[derive(Default)]
/// struct Player { pongs: AtomicU64 }
/// impl Actor for Player {}
/// impl Peer for Player {
///     async fn ping(&self, other: PeerRef, me: PeerRef) -> Result<u64, CallError> {
///         other.bounce(me).await?
///     }
///     async fn bounce(&self, caller: PeerRef) -> Result<u64, CallError> {
///         // A cycle (alice → bob → alice), which `reentrant` lets through.
///         caller.pong().await
///     }
///     async fn pong(&self) -> u64 {
///         self.pongs.fetch_add(1, Ordering::SeqCst) + 1
///     }
/// }
///
/// # #[tokio::main] async fn main() {
/// let node = Node::builder().build().await.unwrap();
/// let alice: PeerRef = node.spawn(Player::default());
/// let bob: PeerRef = node.spawn(Player::default());
/// assert_eq!(alice.ping(bob, alice.clone()).await, Ok(Ok(1)));
/// # }
/// ```
pub use remora_codegen::remote;

/// The glue `#[remora::remote]` generates code against. Users write the trait,
/// the impl and calls; they meet these types only in generic code over any
/// interface (`R: Interface` with `R::Msg: Unmarshal`, as the registry's `bind`
/// has) and in tests that drive a dispatcher by hand.
///
/// - The proxy side: [`RefCore`](rt::RefCore), the untyped inside of every
///   `XRef`; [`Method`](rt::Method) and [`Request`](rt::Request), a method's
///   arguments and the message that carries them with its [`ReplyTo`](rt::ReplyTo).
/// - The actor side: [`Dispatch`](rt::Dispatch) runs a message on an actor
///   [`Lent`](rt::Lent) to it.
/// - Marshalling: [`Unmarshal`](rt::Unmarshal) turns a call off the wire into a
///   message, with its arguments as [`Args`](rt::Args) (encoded, or
///   [`Moved`](rt::Moved) between nodes of one process) and its reply going to a
///   [`Replier`](rt::Replier); an answer comes back as an [`Answer`](rt::Answer).
pub mod rt {
    pub use crate::local::cancel::Unwanted;
    pub use crate::local::dispatch::{Dispatch, Lent};
    pub use crate::local::reply::{Answering, ReplyTo};
    pub use crate::method::{ArgTable, Method, Request};
    pub use crate::reference::RefCore;
    pub use crate::remote::marshal::{Answer, Args, Encoded, Moved, Replier, Unmarshal};

    /// Helpers the generated code calls; not for hand-written code.
    #[doc(hidden)]
    pub mod __private {
        pub use crate::remote::marshal::{
            decode_args, decode_reply, encode_args, encode_reply, take_args,
        };
        pub use serde;
        pub use serde_bytes;
        pub use tokio::time::Instant;
    }
}
