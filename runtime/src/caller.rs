//! Who sent the message an actor is handling: the node a call or tell came from,
//! as the transport authenticated it, so a handler can decide what that node may do.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use uuid::Uuid;

/// The node a message came from, as its connection authenticated it.
///
/// Built once per connection, after the handshake:
/// - over QUIC, [`Caller::identity`] is the Common Name of the peer's TLS client
///   certificate, which the handshake verified against the cluster root (mutual TLS):
///   a node of the cluster cannot claim another's name without its certificate.
///   A certificate without a Common Name gives `"remora-node"`.
/// - between nodes of one process ([`remote::inproc`](crate::remote::inproc)), it is
///   the peer node's name (`Node::builder().name(..)`), or `"remora-node"` unnamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    node: Uuid,
    identity: String,
}

impl Caller {
    pub(crate) fn new(node: Uuid, identity: String) -> Caller {
        Caller { node, identity }
    }

    /// The calling node's id, as it declared it in its handshake. Informative: it is
    /// not authenticated (use [`Caller::identity`] for access decisions).
    pub fn node(&self) -> Uuid {
        self.node
    }

    /// The calling node's authenticated name (see [`Caller`] for where it comes from).
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

thread_local! {
    /// The caller of the handler being polled on this thread, if it came from another
    /// node. A plain pointer (no drop glue, so no lazy destructor registration on
    /// access): it points into the `Arc` that [`as_caller`] owns, and is set only
    /// while that future is being polled.
    static CURRENT: Cell<*const Caller> = const { Cell::new(std::ptr::null()) };
}

/// Who sent the message being handled, when called inside an actor's handler:
/// `Some` for a call or tell that arrived from another node, `None` for a message
/// sent on this node (and outside handlers).
///
/// Each handler sees its own message's sender: a local actor called from within a
/// remote call's handler sees `None`, and the outer handler still sees its caller
/// afterwards. The caller is known while the handler's future is polled, not in
/// tasks it spawns: read it in the handler and pass it on. (A method implemented as
/// `fn m(..) -> impl Future` rather than `async fn` sees it inside the future it
/// returns, not in code that runs before returning it.)
///
/// ```
/// use remora::{Actor, Node};
///
/// #[remora::remote]
/// pub trait Whoami {
///     async fn who(&mut self) -> Option<String>;
/// }
/// struct W;
/// impl Actor for W {}
/// impl Whoami for W {
///     async fn who(&mut self) -> Option<String> {
///         remora::caller().map(|c| c.identity().to_owned())
///     }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Node::builder().build().await?;
/// let client = Node::builder().name("alpha").build().await?;
/// let _wire = remora::remote::inproc::connect(&client, &server).await?;
///
/// let local: WhoamiRef = server.spawn(W);
/// assert_eq!(local.who().await?, None); // sent on this node
/// let object = server.export(&local)?;
/// let remote: WhoamiRef = client.reference(server.id(), object)?;
/// assert_eq!(remote.who().await?.as_deref(), Some("alpha"));
/// # Ok(()) }
/// ```
pub fn caller() -> Option<Caller> {
    let current = CURRENT.with(Cell::get);
    // SAFETY: non-null only while `as_caller` polls its handler on this thread, and
    // that future owns the `Arc` the pointer points into for as long as it is set.
    unsafe { current.as_ref() }.cloned()
}

/// Runs `handler` as the handler of a message from `caller` (`None`: sent on this
/// node): [`caller`] returns it during every poll of `handler`, and the previous
/// value is back after each poll, also when `handler` panics. Costs one
/// thread-local read a poll for a local message outside any remote handler.
pub(crate) async fn as_caller<F: Future>(caller: Option<Arc<Caller>>, handler: F) -> F::Output {
    let mut handler = std::pin::pin!(handler);
    std::future::poll_fn(move |cx| {
        // Points into the Arc this future owns, so it stays valid while set.
        let mine: *const Caller = caller.as_deref().map_or(std::ptr::null(), |c| c);
        let previous = CURRENT.with(Cell::get);
        if previous == mine {
            return handler.as_mut().poll(cx);
        }
        let _scope = Scope::enter(mine, previous);
        handler.as_mut().poll(cx)
    })
    .await
}

/// While alive, `caller` is the thread's current one; dropping it (after the poll,
/// or while a panic unwinds) restores the previous one.
struct Scope {
    previous: *const Caller,
}

impl Scope {
    fn enter(caller: *const Caller, previous: *const Caller) -> Scope {
        CURRENT.with(|current| current.set(caller));
        Scope { previous }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::AssertUnwindSafe;

    use futures_util::FutureExt;

    fn named(identity: &str) -> Option<Arc<Caller>> {
        Some(Arc::new(Caller::new(Uuid::nil(), identity.to_owned())))
    }

    fn current_identity() -> Option<String> {
        caller().map(|c| c.identity().to_owned())
    }

    #[tokio::test]
    async fn a_handler_sees_its_caller_across_awaits_and_nobody_else_does() {
        let seen = as_caller(named("alpha"), async {
            let before = current_identity();
            tokio::task::yield_now().await;
            (before, current_identity())
        })
        .await;
        assert_eq!(seen, (Some("alpha".into()), Some("alpha".into())));
        assert_eq!(current_identity(), None);
    }

    #[tokio::test]
    async fn a_nested_handler_sees_its_own_caller_and_the_outer_one_is_restored() {
        let seen = as_caller(named("alpha"), async {
            let inner = as_caller(None, async {
                tokio::task::yield_now().await;
                current_identity()
            })
            .await;
            let beta = as_caller(named("beta"), async { current_identity() }).await;
            (inner, beta, current_identity())
        })
        .await;
        assert_eq!(seen, (None, Some("beta".into()), Some("alpha".into())));
    }

    #[tokio::test]
    async fn a_panicking_handler_restores_the_previous_caller() {
        let outer = as_caller(named("alpha"), async {
            let outcome = AssertUnwindSafe(as_caller(named("beta"), async {
                panic!("boom");
            }))
            .catch_unwind()
            .await;
            (outcome.is_err(), current_identity())
        })
        .await;
        assert_eq!(outer, (true, Some("alpha".into())));
        assert_eq!(current_identity(), None);
    }
}
