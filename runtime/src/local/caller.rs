//! Who sent the message an actor is handling: the node a call or tell came from,
//! as the transport authenticated it, so a handler can decide what that node may do.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::id::NodeId;
use crate::local::call::{CallDeadline, HandlerCall};

/// The node a message came from, as its connection authenticated it.
///
/// Built once per connection, after the handshake:
/// - over QUIC, [`Caller::identity`] is the Common Name of the peer's TLS client
///   certificate, which the handshake verified against the cluster root (mutual TLS):
///   a node of the cluster cannot claim another's name without its certificate.
///   A certificate without a Common Name gives `"remora-node"`.
/// - between nodes of one process ([`remote::inproc`](crate::remote::inproc)), it is
///   the peer node's name (`Node::builder().name(..)`), or `"remora-node"` unnamed.
#[derive(Clone, Debug)]
pub struct Caller {
    node: NodeId,
    identity: String,
    /// Set once the connection the calls came over is lost.
    gone: Arc<AtomicBool>,
    /// Counts the asks from it dropped unrun because it was gone (the node's).
    dropped: Option<Arc<AtomicU64>>,
}

impl PartialEq for Caller {
    fn eq(&self, other: &Caller) -> bool {
        self.node == other.node && self.identity == other.identity
    }
}

impl Eq for Caller {}

impl Caller {
    pub(crate) fn new(node: NodeId, identity: String) -> Caller {
        Caller {
            node,
            identity,
            gone: Arc::default(),
            dropped: None,
        }
    }

    /// Asks from this caller dropped unrun are counted in `dropped`.
    pub(crate) fn counting(mut self, dropped: Arc<AtomicU64>) -> Caller {
        self.dropped = Some(dropped);
        self
    }

    /// The connection the calls came over is lost: nobody can take their answers.
    pub(crate) fn leave(&self) {
        self.gone.store(true, Ordering::Release);
        ANY_GONE.store(true, Ordering::Release);
    }

    /// Whether any caller of this process has ever been lost: until one is,
    /// no queued message can be abandoned, and actors skip the check.
    pub(crate) fn any_gone() -> bool {
        ANY_GONE.load(Ordering::Relaxed)
    }

    /// Whether the connection the calls came over is lost.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// An ask from this caller was dropped unrun.
    pub(crate) fn count_dropped(&self) {
        if let Some(dropped) = &self.dropped {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The calling node's id. Over QUIC it is authenticated: a node id is bound to
    /// the node's certificate and incarnation, and a peer claiming another is
    /// refused at the handshake (see [`NodeId`]). It names one run of one node;
    /// [`Caller::identity`] names the certificate, which every run of the node
    /// (and every node sharing that certificate) presents.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The calling node's authenticated name (see [`Caller`] for where it comes from).
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// Set once any caller of this process is gone ([`Caller::any_gone`]).
static ANY_GONE: AtomicBool = AtomicBool::new(false);

/// What the handler being polled on this thread is handling: who sent it (if it
/// came from another node) and the call chain it belongs to (0: none).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Current {
    /// A plain pointer (no drop glue, so no lazy destructor registration on
    /// access): it points at the caller a [`Handling`]'s owner lends it, and is
    /// set only while that future is being polled.
    caller: *const Caller,
    chain: u64,
    /// The handler's call (deadline, cancellation), owned by a [`Handling`]
    /// future and set only while it is being polled; null outside handlers.
    call: *const HandlerCall,
}

thread_local! {
    static CURRENT: Cell<Current> = const {
        Cell::new(Current { caller: std::ptr::null(), chain: 0, call: std::ptr::null() })
    };
    /// A per-thread generator of call-chain ids (xorshift, seeded at random).
    static CHAINS: Cell<u64> = const { Cell::new(0) };
}

/// The call chain of the handler being polled on this thread (0 outside handlers,
/// and in handlers of tells).
pub(crate) fn current_chain() -> u64 {
    CURRENT.with(|c| c.get().chain)
}

/// A new call-chain id: random, so ids of different nodes do not collide; never 0.
pub(crate) fn fresh_chain() -> u64 {
    CHAINS.with(|state| {
        let mut x = state.get();
        if x == 0 {
            x = uuid::Uuid::new_v4().as_u64_pair().0 | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// The chain a call made here belongs to: the current handler's, or a new one.
pub(crate) fn chain_for_call() -> u64 {
    match current_chain() {
        0 => fresh_chain(),
        chain => chain,
    }
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
    let current = CURRENT.with(Cell::get).caller;
    // SAFETY: non-null only while `Handling::poll_as` polls its handler on this
    // thread, and it borrows the `Caller` the pointer points at for that whole
    // poll, so the `Caller` is alive. Aliasing: a shared reference to a value that
    // is only ever shared while lent (poll_as holds a `&Caller`).
    // Ordering: the pointer was set on this thread (a thread-local).
    unsafe { current.as_ref() }.cloned()
}

/// The handler's call being polled on this thread, if any: `f` sees it only for
/// the duration of the call (it lives in the handler's wrapper).
pub(crate) fn with_current_call<R>(f: impl FnOnce(&HandlerCall) -> R) -> Option<R> {
    let call = CURRENT.with(Cell::get).call;
    // SAFETY: non-null only while `Handling::poll_as` polls its handler on this
    // thread, and that future owns the `HandlerCall` (pinned) for as long as the
    // pointer is set, so it is alive. Aliasing: a shared reference that ends with
    // `f`; the wrapper touches the `HandlerCall` only through shared references
    // too (its fields are `Cell`s, used on this thread alone). Ordering: set on
    // this thread.
    unsafe { call.as_ref() }.map(f)
}

/// Runs `handler` as the handler of a message from `caller` (`None`: sent on this
/// node) in call chain `chain`: [`caller`] and [`current_chain`] return them during
/// every poll of `handler`, and the previous values are back after each poll, also
/// when `handler` panics. Costs one thread-local read a poll when nothing changes.
#[cfg(test)]
pub(crate) async fn as_handler<F: Future>(
    caller: Option<Arc<Caller>>,
    chain: u64,
    handler: F,
) -> F::Output {
    let mut handling = std::pin::pin!(Handling::new(handler, CallDeadline::Never, false));
    std::future::poll_fn(|cx| {
        handling
            .as_mut()
            .poll_as(cx, caller.as_deref(), chain, |_| false)
    })
    .await
    .expect("a handler that is not abortable runs to its end")
}

pin_project_lite::pin_project! {
    /// A handler being run for its call: the state [`crate::deadline`] and
    /// [`crate::cancelled`] read while it is polled ([`HandlerCall`]), beside the
    /// handler's future itself, stored once. Who sent the call, its chain and how
    /// to learn that it was given up are lent at each poll ([`Handling::poll_as`]),
    /// so that their owner (the call's reply slot) keeps them.
    pub(crate) struct Handling<F> {
        call: HandlerCall,
        // The handler is dropped once its call is given up (`#[abortable]`).
        abortable: bool,
        #[pin]
        handler: F,
    }
}

impl<F: Future> Handling<F> {
    /// `handler`, for a call whose caller stops waiting at `deadline`.
    pub(crate) fn new(handler: F, deadline: CallDeadline, abortable: bool) -> Self {
        Handling {
            call: HandlerCall::new(deadline, abortable),
            abortable,
            handler,
        }
    }

    /// Polls the handler as the handler of a call from `caller` in `chain`.
    /// `given_up` says whether the call was given up (and registers `cx` to learn
    /// when it is); it is asked only once the handler asked (it awaits
    /// [`crate::cancelled`], or has a call in flight), or it is abortable.
    /// `None`: the handler was abortable and its call was given up (its owner
    /// drops it, unfinished).
    pub(crate) fn poll_as(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        caller: Option<&Caller>,
        chain: u64,
        mut given_up: impl FnMut(&mut Context<'_>) -> bool,
    ) -> Poll<Option<F::Output>> {
        let this = self.project();
        let call: &HandlerCall = this.call;
        if call.is_watching() && !call.is_cancelled() && given_up(cx) {
            call.set_cancelled();
        }
        if *this.abortable && call.is_cancelled() {
            return Poll::Ready(None);
        }
        let was_watching = call.is_watching();
        // Point at the caller and the HandlerCall this future's owner holds
        // pinned: valid while set.
        let mine = Current {
            caller: caller.map_or(std::ptr::null(), |c| c),
            chain,
            call,
        };
        let previous = CURRENT.with(Cell::get);
        let polled = {
            let _scope = Scope::enter(mine, previous);
            this.handler.poll(cx)
        };
        match polled {
            Poll::Ready(value) => Poll::Ready(Some(value)),
            Poll::Pending => {
                // It waits: a lazy deadline is fixed before its caller, which
                // may be this poll's, times its own wait.
                call.fix();
                // Asked during this poll: watch from now on, and look once now.
                if !was_watching && call.is_watching() && !call.is_cancelled() && given_up(cx) {
                    call.set_cancelled();
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

/// While alive, `current` is the thread's; dropping it (after the poll, or while a
/// panic unwinds) restores the previous one.
struct Scope {
    previous: Current,
}

impl Scope {
    // Inlined: the fields go to the thread-local one by one (a copy of the
    // whole `Current` just built would stall on its way through the stack).
    #[inline(always)]
    fn enter(current: Current, previous: Current) -> Scope {
        CURRENT.with(|c| c.set(current));
        Scope { previous }
    }
}

impl Drop for Scope {
    #[inline(always)]
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::AssertUnwindSafe;

    use futures_util::FutureExt;

    fn named(identity: &str) -> Option<Arc<Caller>> {
        Some(Arc::new(Caller::new(
            NodeId::from_u128(0),
            identity.to_owned(),
        )))
    }

    fn current_identity() -> Option<String> {
        caller().map(|c| c.identity().to_owned())
    }

    #[tokio::test]
    async fn a_handler_sees_its_caller_across_awaits_and_nobody_else_does() {
        let seen = as_handler(named("alpha"), 0, async {
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
        let seen = as_handler(named("alpha"), 0, async {
            let inner = as_handler(None, 0, async {
                tokio::task::yield_now().await;
                current_identity()
            })
            .await;
            let beta = as_handler(named("beta"), 0, async { current_identity() }).await;
            (inner, beta, current_identity())
        })
        .await;
        assert_eq!(seen, (None, Some("beta".into()), Some("alpha".into())));
    }

    #[tokio::test]
    async fn a_panicking_handler_restores_the_previous_caller() {
        let outer = as_handler(named("alpha"), 0, async {
            let outcome = AssertUnwindSafe(as_handler(named("beta"), 0, async {
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
