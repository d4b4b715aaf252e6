//! The one-way call (tell): a future with a fast path that never allocates.

use crate::remote::connection::{CallTags, Due};
use crate::remote::RemoteRoute;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::time::Instant;

use super::{RefCore, Route};
use crate::error::CallError;
use crate::local::mailbox::{Envelope, TrySendError};
use crate::local::reply::ReplyTo;
use crate::local::route::deliver;
use crate::method::{Method, Request};
use crate::remote::marshal::Args;
use crate::remote::route::Payload;

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
    /// For an actor on this node: the message, left in place until the actor
    /// takes it (`None` once taken), so that it moves once on its way in.
    Ready(Option<M>),
    /// For an actor on another node: the method and its arguments, prepared.
    Remote(u64, Result<Payload, CallError>),
    Waiting(Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>>),
    Done,
}

impl<M> std::fmt::Debug for Tell<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tell").field("to", self.core).finish()
    }
}

impl<'a, M: Send + 'static> Tell<'a, M> {
    pub(super) fn new<T>(core: &'a RefCore<M>, args: T) -> Self
    where
        T: Method<Output = ()> + Serialize,
        M: From<Request<T>>,
    {
        let state = match &core.route {
            Route::Local(_) => TellState::Ready(Some(M::from(Request {
                args,
                reply: ReplyTo::nobody(),
            }))),
            Route::Remote(remote) => {
                let prepared = remote
                    .cx(remote.conn_now())
                    .and_then(|cx| RemoteRoute::prepare(&cx, args));
                TellState::Remote(T::ID, prepared)
            }
        };
        Tell { core, state }
    }

    /// Sends a remote tell now, over the connection there is (none yet: `ConnectFailed`;
    /// an awaited tell dials first).
    fn send_remote(&self, method: u64, args: Result<Payload, CallError>) -> Result<(), CallError> {
        let Route::Remote(remote) = &self.core.route else {
            unreachable!("remote state on a local route");
        };
        let conn = remote.conn_now().ok_or_else(|| CallError::ConnectFailed {
            node: Some(remote.peer),
            label: remote.label(),
            reason: "not connected yet: await the tell (it dials) instead of try_tell".into(),
        })?;
        let args = args?;
        let lane = conn.try_reserve(remote.target)?;
        remote.tell(&conn, lane, method, args)
    }

    /// Sends without waiting: `Err(MailboxFull)` (or `Overloaded`) if there is no room now.
    /// For an actor on another node, "no room" means that this node has as many
    /// calls to it outstanding as its node lets one peer have
    /// ([`Limits::window`](crate::wire::Limits::window)): messages not yet in its
    /// mailbox, asks not yet answered. The error's `capacity` is that window.
    /// On a rendezvous mailbox this succeeds only if the actor is waiting for a
    /// message at this moment (it then has the message).
    pub fn try_tell(mut self) -> Result<(), CallError> {
        let msg = match std::mem::replace(&mut self.state, TellState::Done) {
            TellState::Ready(Some(msg)) => msg,
            TellState::Remote(method, args) => return self.send_remote(method, args),
            _ => unreachable!("a Tell is sent once: try_tell consumes it before any poll"),
        };
        match &self.core.route {
            Route::Local(local) => match local.offer_now(msg) {
                Ok(()) => Ok(()),
                Err(TrySendError::Refused(err, env)) => Err(local.refused(err, env.as_ref())),
                Err(TrySendError::Full(env)) => {
                    Err(local.refused(local.tx.full_error(), Some(&env)))
                }
            },
            Route::Remote(_) => unreachable!("a local message on a remote route"),
        }
    }

    /// Sends and waits until the actor has taken the message out of its mailbox
    /// (not until it has handled it), or the deadline passes. For an actor on
    /// another node the receipt comes once the message has been handled.
    pub async fn receipt(mut self) -> Result<(), CallError> {
        let timeout = self.core.timeout;
        match std::mem::replace(&mut self.state, TellState::Done) {
            TellState::Ready(Some(msg)) => {
                let Route::Local(local) = &self.core.route else {
                    unreachable!("a local message on a remote route");
                };
                deliver(
                    local,
                    msg,
                    crate::deadline::after(Instant::now(), timeout),
                    timeout,
                    true,
                )
                .await
            }
            TellState::Remote(method, args) => {
                let Route::Remote(remote) = &self.core.route else {
                    unreachable!("remote state on a local route");
                };
                let deadline = crate::local::cancel::deadline_for_call(timeout, false).0;
                let conn = remote.conn().await?;
                let tags = CallTags {
                    context: crate::trace::outgoing(),
                    ..CallTags::default()
                };
                match args? {
                    Payload::Bytes(bytes) => {
                        let args = Args::Encoded(&bytes);
                        remote
                            .ask(&conn, method, args, tags, Due::unread(deadline, timeout))
                            .await
                    }
                    Payload::Value(value) => {
                        let args = Args::Moved(value);
                        remote
                            .ask(&conn, method, args, tags, Due::unread(deadline, timeout))
                            .await
                    }
                }
                .map(drop)
            }
            _ => unreachable!("a Tell is sent once: receipt consumes it before any poll"),
        }
    }
}

impl<M> Unpin for Tell<'_, M> {}

impl<'a, M: Send + 'static> Future for Tell<'a, M> {
    type Output = Result<(), CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            if let TellState::Ready(msg) = &mut this.state {
                let core = this.core;
                let Route::Local(local) = &core.route else {
                    unreachable!("a local message on a remote route");
                };
                // Fastest: the actor is idle and runs the message here (within
                // the task's cooperative budget, like a channel send).
                let Poll::Ready(coop) = tokio::task::coop::poll_proceed(cx) else {
                    return Poll::Pending;
                };
                if local.try_inline(msg, cx) {
                    coop.made_progress();
                    this.state = TellState::Done;
                    return Poll::Ready(Ok(()));
                }
                let msg = msg.take().expect("a message not taken is still there");
                this.state = TellState::Done;
                // Fast: room now (or, rendezvous, the actor is waiting), no allocation.
                let msg = match local.push(Envelope::new(msg)) {
                    Ok(()) => return Poll::Ready(Ok(())),
                    Err(TrySendError::Refused(err, env)) => {
                        return Poll::Ready(Err(local.refused(err, env.as_ref())))
                    }
                    Err(TrySendError::Full(env)) => env.msg,
                };
                let timeout = core.timeout;
                this.state = TellState::Waiting(Box::pin(deliver(
                    local,
                    msg,
                    crate::deadline::after(Instant::now(), timeout),
                    timeout,
                    false,
                )));
            }
            match std::mem::replace(&mut this.state, TellState::Done) {
                TellState::Remote(method, args) => {
                    let core = this.core;
                    let Route::Remote(remote) = &core.route else {
                        unreachable!("remote state on a local route");
                    };
                    let args = match args {
                        Ok(args) => args,
                        Err(err) => return Poll::Ready(Err(err)),
                    };
                    // Fast: connected, with credit for the target.
                    let conn = remote.conn_now();
                    if let Some(conn) = &conn {
                        match conn.try_reserve(remote.target) {
                            Ok(lane) => return Poll::Ready(remote.tell(conn, lane, method, args)),
                            Err(CallError::MailboxFull { .. }) => {}
                            Err(err) => return Poll::Ready(Err(err)),
                        }
                    }
                    // Not connected yet (dial), or out of credit (wait for it, up
                    // to the deadline): then send.
                    let timeout = core.timeout;
                    let deadline = crate::deadline::after(Instant::now(), timeout);
                    this.state = TellState::Waiting(Box::pin(async move {
                        let conn = match conn {
                            Some(conn) => conn,
                            None => remote.conn().await?,
                        };
                        let lane = conn.reserve(remote.target, deadline, timeout).await?;
                        remote.tell(&conn, lane, method, args)
                    }));
                }
                TellState::Ready(_) => unreachable!("a ready tell is sent above"),
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
