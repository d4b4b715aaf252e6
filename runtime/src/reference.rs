//! What a generated `XRef` proxy holds, and how a call leaves it.
//!
//! A proxy never talks to a mailbox itself: it hands the call to its [`RefCore`],
//! whose route says how the call travels. Today the only route is a local
//! mailbox; remote routes join it without any change to generated code.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

use crate::actor::StopReason;
use crate::cell::ActorCell;
use crate::error::CallError;
use crate::interface::{Method, Request};
use crate::mailbox::{Envelope, MailboxTx, TrySendError};
use crate::reply::ReplyTo;
use crate::slot::Host;

/// The deadline a call gets unless `with_timeout` sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The untyped inside of every generated proxy: a route to the actor and the
/// options its calls carry. Generated code calls it; users call the proxy.
pub struct RefCore<M> {
    route: Route<M>,
    timeout: Duration,
}

enum Route<M> {
    Local(Arc<LocalRoute<M>>),
}

pub(crate) struct LocalRoute<M> {
    pub(crate) tx: MailboxTx<M>,
    pub(crate) cell: Arc<ActorCell>,
    /// Runs a message on the caller's task when the actor is idle, and schedules
    /// the actor when a message is queued.
    pub(crate) host: Arc<dyn Host<M>>,
}

impl<M> Drop for LocalRoute<M> {
    /// The last reference is gone: nobody can call this actor again, so it stops.
    fn drop(&mut self) {
        self.cell.request_stop(StopReason::Normal);
        self.host.schedule();
    }
}

impl<M> LocalRoute<M> {
    /// Runs `msg` now on this task if the actor is idle with nothing queued before
    /// it (the message is then taken, and handled unless the handler had to wait);
    /// otherwise gives it back.
    fn try_inline(&self, msg: M, cx: &mut Context<'_>) -> Result<(), M> {
        self.host.try_run(msg, &self.tx, cx)
    }

    /// Queues without waiting, and makes sure the actor will take it.
    fn push(&self, env: Envelope<M>) -> Result<(), TrySendError<M>> {
        self.tx.try_send(env)?;
        self.host.schedule();
        Ok(())
    }

    /// Queues, waiting for room (or for the hand-over), and makes sure the actor
    /// will take it.
    async fn push_waiting(&self, env: Envelope<M>) -> Result<(), CallError> {
        self.tx.send(env, || self.host.schedule()).await?;
        self.host.schedule();
        Ok(())
    }

    /// [`LocalRoute::try_inline`] from async code, within the task's cooperative
    /// budget: a loop of calls that all complete inline still yields to the
    /// scheduler now and then, as it would on a channel.
    async fn inline_now(&self, msg: M) -> Result<(), M> {
        let mut msg = Some(msg);
        poll_fn(|cx| {
            let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
            let msg = msg.take().expect("ready only once");
            let outcome = self.try_inline(msg, cx);
            coop.made_progress();
            Poll::Ready(outcome)
        })
        .await
    }
}

impl<M> Clone for RefCore<M> {
    fn clone(&self) -> Self {
        RefCore {
            route: match &self.route {
                Route::Local(local) => Route::Local(local.clone()),
            },
            timeout: self.timeout,
        }
    }
}

impl<M> fmt::Debug for RefCore<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Route::Local(local) => f
                .debug_struct("Ref")
                .field("actor", &local.cell.id)
                .field("name", &local.cell.name)
                .field("timeout", &self.timeout)
                .finish(),
        }
    }
}

/// A reference travels as a reference: its node exports it and the receiving node
/// imports it as a proxy. That needs a node on each side; serializing one by hand
/// (outside a call to another node) is refused with this explanation.
const NO_MARSHALLING_NODE: &str =
    "a remote reference can only be marshalled by a node sending it in a call to another node";

impl<M> serde::Serialize for RefCore<M> {
    fn serialize<S: serde::Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(NO_MARSHALLING_NODE))
    }
}

impl<'de, M> serde::Deserialize<'de> for RefCore<M> {
    fn deserialize<D: serde::Deserializer<'de>>(_deserializer: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(NO_MARSHALLING_NODE))
    }
}

impl<M> PartialEq for RefCore<M> {
    /// Two references are equal when they reach the same actor (options aside).
    fn eq(&self, other: &Self) -> bool {
        match (&self.route, &other.route) {
            (Route::Local(a), Route::Local(b)) => Arc::ptr_eq(&a.cell, &b.cell),
        }
    }
}

impl<M: Send + 'static> RefCore<M> {
    pub(crate) fn local(route: LocalRoute<M>) -> Self {
        RefCore {
            route: Route::Local(Arc::new(route)),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Asks the actor to stop after its current message, and makes sure it does.
    pub(crate) fn stop(&self, reason: StopReason) {
        match &self.route {
            Route::Local(local) => {
                local.cell.request_stop(reason);
                local.host.schedule();
            }
        }
    }

    pub(crate) fn cell(&self) -> &Arc<ActorCell> {
        match &self.route {
            Route::Local(local) => &local.cell,
        }
    }

    /// The same reference with another per-call deadline.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        RefCore {
            route: match &self.route {
                Route::Local(local) => Route::Local(local.clone()),
            },
            timeout,
        }
    }

    /// The deadline this reference's calls get.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Messages waiting in the actor's mailbox (for statistics and tests).
    pub fn mailbox_depth(&self) -> usize {
        match &self.route {
            Route::Local(local) => local.tx.depth(),
        }
    }

    /// Sends `args` and awaits the method's result (an ask).
    pub async fn ask<T: Method>(&self, args: T) -> Result<T::Output, CallError>
    where
        M: From<Request<T>>,
    {
        match &self.route {
            Route::Local(local) => {
                let (tx, mut rx) = oneshot::channel();
                let msg = M::from(Request {
                    args,
                    reply: ReplyTo::local(tx),
                });
                let mut deadline = None;
                if let Err(msg) = local.inline_now(msg).await {
                    let at = Instant::now() + self.timeout;
                    deadline = Some(at);
                    match local.push(Envelope { msg, taken: None }) {
                        Ok(()) => {}
                        Err(TrySendError::Refused(err)) => return Err(err),
                        Err(TrySendError::Full(env)) => {
                            deliver(local, env.msg, at, self.timeout, false).await?
                        }
                    }
                } else if let Ok(result) = rx.try_recv() {
                    // Handled inline: no queue, no wake-up, no timer.
                    return result;
                }
                let deadline = deadline.unwrap_or_else(|| Instant::now() + self.timeout);
                match timeout_at(deadline, rx).await {
                    Ok(Ok(result)) => result,
                    // Unreachable in practice: a dropped ReplyTo answers before it goes.
                    Ok(Err(_)) => Err(CallError::ActorStopped),
                    Err(_) => Err(CallError::Timeout {
                        after: self.timeout,
                        may_have_executed: true,
                    }),
                }
            }
        }
    }

    /// Prepares a one-way message (a tell); see [`Tell`] for the ways to send it.
    pub fn tell<T: Method<Output = ()>>(&self, args: T) -> Tell<'_, M>
    where
        M: From<Request<T>>,
    {
        Tell {
            core: self,
            state: TellState::Ready(M::from(Request {
                args,
                reply: ReplyTo::nobody(),
            })),
        }
    }
}

/// Puts `msg` into the mailbox before `deadline` (for a rendezvous mailbox: hands it
/// to the actor); with `receipt`, also waits until the actor has taken it.
async fn deliver<M>(
    local: &LocalRoute<M>,
    msg: M,
    deadline: Instant,
    timeout: Duration,
    receipt: bool,
) -> Result<(), CallError> {
    // An idle actor takes the message at once, on this task.
    let Err(msg) = local.inline_now(msg).await else {
        return Ok(());
    };
    let (taken_tx, taken_rx) = if receipt {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let env = Envelope {
        msg,
        taken: taken_tx,
    };
    match local.push(env) {
        Ok(()) => {}
        Err(TrySendError::Refused(err)) => return Err(err),
        Err(TrySendError::Full(env)) => match timeout_at(deadline, local.push_waiting(env)).await {
            Ok(sent) => sent?,
            Err(_) => {
                return Err(CallError::Timeout {
                    after: timeout,
                    may_have_executed: false,
                })
            }
        },
    }
    if let Some(taken) = taken_rx {
        match timeout_at(deadline, taken).await {
            Ok(Ok(())) => {}
            // Dropped unopened: the actor stopped with the message queued.
            Ok(Err(_)) => return Err(CallError::ActorStopped),
            // Still queued: it may yet run.
            Err(_) => {
                return Err(CallError::Timeout {
                    after: timeout,
                    may_have_executed: true,
                })
            }
        }
    }
    Ok(())
}

/// A one-way message on its way; what a `#[oneway]` proxy method returns.
///
/// - `.await`: returns once the message is queued for the actor (waiting for room
///   in a bounded mailbox, up to the deadline; for a rendezvous mailbox, until the
///   actor takes it).
/// - [`.receipt().await`](Tell::receipt): returns once the actor has taken the message.
/// - [`.try_tell()`](Tell::try_tell): never waits; a full mailbox is `MailboxFull`.
///
/// Like every future, a `Tell` does nothing until it is awaited or one of its
/// methods is called.
#[must_use = "a Tell does nothing until it is awaited, or sent with try_tell()"]
pub struct Tell<'a, M> {
    core: &'a RefCore<M>,
    state: TellState<'a, M>,
}

enum TellState<'a, M> {
    Ready(M),
    Waiting(Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>>),
    Done,
}

impl<'a, M: Send + 'static> Tell<'a, M> {
    /// Sends without waiting: `Err(MailboxFull)` (or `Overloaded`) if there is no room now.
    /// On a rendezvous mailbox this succeeds only if the actor is waiting for a
    /// message at this moment (it then has the message).
    pub fn try_tell(mut self) -> Result<(), CallError> {
        let TellState::Ready(msg) = std::mem::replace(&mut self.state, TellState::Done) else {
            unreachable!("a Tell is sent once: try_tell consumes it before any poll");
        };
        match &self.core.route {
            Route::Local(local) => {
                // A handler that has to wait is handed to the actor's task, which
                // polls it again with its own waker: a no-op waker is enough here.
                let mut cx = Context::from_waker(Waker::noop());
                let Err(msg) = local.try_inline(msg, &mut cx) else {
                    return Ok(());
                };
                match local.push(Envelope { msg, taken: None }) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Refused(err)) => Err(err),
                    Err(TrySendError::Full(_)) => Err(local.tx.full_error()),
                }
            }
        }
    }

    /// Sends and waits until the actor has taken the message out of its mailbox
    /// (not until it has handled it), or the deadline passes.
    pub async fn receipt(mut self) -> Result<(), CallError> {
        let TellState::Ready(msg) = std::mem::replace(&mut self.state, TellState::Done) else {
            unreachable!("a Tell is sent once: receipt consumes it before any poll");
        };
        let timeout = self.core.timeout;
        match &self.core.route {
            Route::Local(local) => {
                deliver(local, msg, Instant::now() + timeout, timeout, true).await
            }
        }
    }
}

impl<M> Unpin for Tell<'_, M> {}

impl<'a, M: Send + 'static> Future for Tell<'a, M> {
    type Output = Result<(), CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, TellState::Done) {
                TellState::Ready(msg) => {
                    let core = this.core;
                    let Route::Local(local) = &core.route;
                    // Fastest: the actor is idle and runs the message here (within
                    // the task's cooperative budget, like a channel send).
                    let coop = match tokio::task::coop::poll_proceed(cx) {
                        Poll::Ready(coop) => coop,
                        Poll::Pending => {
                            this.state = TellState::Ready(msg);
                            return Poll::Pending;
                        }
                    };
                    let msg = match local.try_inline(msg, cx) {
                        Ok(()) => {
                            coop.made_progress();
                            return Poll::Ready(Ok(()));
                        }
                        Err(msg) => msg,
                    };
                    // Fast: room now (or, rendezvous, the actor is waiting), no allocation.
                    let msg = match local.push(Envelope { msg, taken: None }) {
                        Ok(()) => return Poll::Ready(Ok(())),
                        Err(TrySendError::Refused(err)) => return Poll::Ready(Err(err)),
                        Err(TrySendError::Full(env)) => env.msg,
                    };
                    let timeout = core.timeout;
                    this.state = TellState::Waiting(Box::pin(deliver(
                        local,
                        msg,
                        Instant::now() + timeout,
                        timeout,
                        false,
                    )));
                }
                TellState::Waiting(mut fut) => {
                    return match fut.as_mut().poll(cx) {
                        Poll::Ready(out) => Poll::Ready(out),
                        Poll::Pending => {
                            this.state = TellState::Waiting(fut);
                            Poll::Pending
                        }
                    };
                }
                TellState::Done => panic!("Tell polled after completion"),
            }
        }
    }
}
