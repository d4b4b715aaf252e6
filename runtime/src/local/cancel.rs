//! Deadlines and cancellation as a handler sees them: the deadline of the call it
//! is handling ([`deadline`]), whether that call was given up ([`cancelled`]),
//! and what that means for the calls the handler makes itself.
//!
//! A call is given up when its caller drops it (a local caller drops its
//! receiver; a remote one sends a `Cancel` frame, which sets a [`CancelSignal`])
//! or when its deadline passes. Nothing is torn down midway by default: the
//! handler's wrapper ([`Handling`](super::caller::Handling)) watches those
//! sources only once the handler asked (it awaits [`cancelled`], or has a call in
//! flight), and then
//! - [`cancelled`] resolves, so the handler can stop early, its actor's state whole;
//! - each call the handler has in flight fails at once with
//!   [`CallError::Cancelled`] ([`watch_call`]), which drops it and so cancels it
//!   in turn on the node it went to: the cancellation cascades;
//! - an `#[abortable]` handler is dropped at its next await.
//!
//! The state lives in a [`HandlerCall`] owned by the wrapper, which points the
//! thread's current handler at it while it polls (as it does for the caller and
//! the call chain, see `caller.rs`): a handler that never asks pays nothing but
//! a flag read per poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use crate::error::CallError;
use crate::local::call::{CallDeadline, HandlerCall};
use crate::local::caller::with_current_call;

/// Set by a `Cancel` frame from the caller of a remote call: the callee's side of
/// cancellation. The connection keeps one per call it serves.
#[derive(Debug, Default)]
pub(crate) struct CancelSignal {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl CancelSignal {
    /// The caller gave up: wakes the handler's task if it watches.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Whether the caller gave up; if not, `cx` is woken when it does.
    pub(crate) fn poll(&self, cx: &mut TaskContext<'_>) -> bool {
        if self.is_cancelled() {
            return true;
        }
        self.waker.register(cx.waker());
        self.is_cancelled()
    }
}

/// Why a queued call is dropped unrun instead of handled.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unwanted {
    /// It came from a node whose connection is lost: nobody can take its answer.
    CallerGone,
    /// Its caller gave it up (dropped it, or timed out and said so).
    Cancelled,
    /// Its deadline passed while it waited: its caller has had its `Timeout`.
    Expired,
}

impl Unwanted {
    /// What its caller got (or would have) instead of an answer, as counted
    /// per method: its connection lost (`NodeDown`), `Cancelled`, `Timeout`.
    pub(crate) fn error(self) -> CallError {
        match self {
            Unwanted::CallerGone => CallError::NodeDown {
                node: crate::id::NodeId::from_u128(0),
                label: Default::default(),
                may_have_executed: false,
            },
            Unwanted::Cancelled => CallError::Cancelled,
            Unwanted::Expired => CallError::Timeout {
                after: std::time::Duration::ZERO,
                may_have_executed: false,
            },
        }
    }
}

/// The deadline of the call being handled, inside an actor's handler: when its
/// caller stops waiting for the answer. `None` outside handlers, for tells, and
/// for a call without one (`with_timeout(Duration::MAX)`).
///
/// Every call a handler makes gets the earlier of its own timeout and this
/// deadline, so a chain of calls never outlives its first caller's patience.
/// The deadline travels between nodes as a remaining budget (clocks differ
/// between hosts), less the connection's round trip: it is never later than the
/// caller's own.
///
/// ```
/// use std::time::Duration;
/// use remora::{Actor, Node};
///
/// #[remora::remote]
/// pub trait Clock {
///     async fn left(&mut self) -> Option<Duration>;
/// }
/// struct C;
/// impl Actor for C {}
/// impl Clock for C {
///     async fn left(&mut self) -> Option<Duration> {
///         remora::deadline().map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
///     }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().build().await?;
/// let clock: ClockRef = node.spawn(C);
/// let left = clock.with_timeout(Duration::from_millis(500)).left().await?;
/// assert!(left.is_some_and(|left| left <= Duration::from_millis(500)));
/// assert_eq!(remora::deadline(), None); // not in a handler
/// # Ok(()) }
/// ```
pub fn deadline() -> Option<Instant> {
    with_current_call(HandlerCall::deadline).flatten()
}

/// Resolves once the call being handled has been given up: its caller dropped
/// it, or its deadline passed. For a handler that can stop early: the caller
/// will not take the answer, so it may return any value (the actor's state must
/// be whole: nothing is torn down midway). Never resolves outside handlers, or
/// for a tell.
///
/// Meanwhile every call the handler has in flight fails at once with
/// [`CallError::Cancelled`], and is cancelled on the node it went to, so the
/// cancellation reaches the end of a chain of calls. A method marked
/// `#[abortable]` does not need this: its handler is dropped at its next await.
/// An `#[exactly_once]` call is only ever cancelled while it is still queued:
/// once running it completes, so that its reply can be remembered.
///
/// ```
/// use std::time::Duration;
/// use remora::{Actor, CallError, Node};
///
/// #[remora::remote]
/// pub trait Worker {
///     async fn work(&mut self) -> String;
/// }
/// struct W;
/// impl Actor for W {}
/// impl Worker for W {
///     async fn work(&mut self) -> String {
///         tokio::select! {
///             () = std::future::pending::<()>() => "done".into(),
///             // Nobody will read this: the caller has gone. Stop early.
///             () = remora::cancelled() => "given up".into(),
///         }
///     }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().build().await?;
/// let worker: WorkerRef = node.spawn(W);
/// let short = worker.with_timeout(Duration::from_millis(50));
/// assert!(matches!(short.work().await, Err(CallError::Timeout { .. })));
/// # Ok(()) }
/// ```
pub fn cancelled() -> impl Future<Output = ()> + Send {
    std::future::poll_fn(|_| {
        let given_up = with_current_call(|call| {
            call.watch();
            call.is_cancelled()
        });
        match given_up {
            Some(true) => Poll::Ready(()),
            // The wrapper registers the task's waker after this poll.
            _ => Poll::Pending,
        }
    })
}

/// Whether the call being handled has been given up, as of the handler's last
/// await (see [`cancelled`]); false outside handlers. For a handler doing long
/// work between awaits that checks now and then.
pub fn is_cancelled() -> bool {
    with_current_call(|call| {
        call.watch();
        call.is_cancelled()
    })
    .unwrap_or(false)
}

/// The deadline a call made now gets: its own (`now + timeout`, none for
/// `Duration::MAX`), or the handler's deadline if that comes first (`inherited`
/// then says so). `propagate`: the node propagates deadlines.
pub(crate) fn deadline_for_call(
    timeout: std::time::Duration,
    propagate: bool,
) -> (Option<Instant>, bool) {
    deadline_for_call_at(Instant::now(), timeout, propagate)
}

/// [`deadline_for_call`] for a call that read the clock already: `now`.
pub(crate) fn deadline_for_call_at(
    now: Instant,
    timeout: std::time::Duration,
    propagate: bool,
) -> (Option<Instant>, bool) {
    let own = match timeout {
        std::time::Duration::MAX => None,
        timeout => now.checked_add(timeout),
    };
    if !propagate {
        return (own, false);
    }
    match (own, deadline()) {
        (Some(own), Some(inherited)) if inherited < own => (Some(inherited), true),
        (None, Some(inherited)) => (Some(inherited), true),
        (own, _) => (own, false),
    }
}

/// [`deadline_for_call`] for a call to an actor on this node, on a node that
/// propagates deadlines: outside a deadline (outside handlers, or in one without
/// a deadline) it is lazy, [`CallDeadline::Within`] the call's timeout, and the
/// clock is read only if its handler asks or has to wait.
pub(crate) fn local_deadline_for_call(timeout: std::time::Duration) -> (CallDeadline, bool) {
    if deadline().is_none() {
        return match timeout {
            std::time::Duration::MAX => (CallDeadline::Never, false),
            timeout => (CallDeadline::Within(timeout), false),
        };
    }
    let (deadline, inherited) = deadline_for_call(timeout, true);
    (CallDeadline::from_instant(deadline), inherited)
}

/// Runs `call`, a call the current handler makes, so that it fails at once with
/// `Cancelled` (and is dropped, which cancels it where it went) once the
/// handler's own call is given up. Outside handlers it is `call`.
pub(crate) fn watch_call<F>(call: F) -> WatchCall<F> {
    WatchCall { call }
}

pin_project_lite::pin_project! {
    /// The future of [`watch_call`]: the call's own future, stored in place (an
    /// `async fn` would hold it twice, and copy it on its first poll).
    pub(crate) struct WatchCall<F> {
        #[pin]
        call: F,
    }
}

impl<T, F: Future<Output = Result<T, CallError>>> Future for WatchCall<F> {
    type Output = Result<T, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let given_up = with_current_call(|handler| {
            handler.watch();
            handler.is_cancelled()
        });
        if given_up == Some(true) {
            return Poll::Ready(Err(CallError::Cancelled));
        }
        self.project().call.poll(cx)
    }
}
