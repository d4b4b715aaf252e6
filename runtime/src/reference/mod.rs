//! What a generated `XRef` proxy holds, and how a call leaves it.
//!
//! A proxy never talks to a mailbox or a socket itself: it hands the call to its
//! [`RefCore`], whose route says how the call travels — to an actor on this node
//! ([`local`]), or over a connection to another node.

mod tell;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::{timeout_at, Instant};

use crate::error::CallError;
use crate::local::call::CallDeadline;
use crate::local::caller::{chain_for_call, fresh_chain};
use crate::local::cancel::{
    deadline_for_call, deadline_for_call_at, local_deadline_for_call, watch_call,
};
use crate::local::mailbox::{Envelope, TrySendError};
use crate::local::reply::{Answered, InlineAnswer};
use crate::local::route::{deliver, LocalRoute};
use crate::local::stop::StopReason;
use crate::method::{Method, Request};
use crate::remote::connection::{CallTags, Connection, Due};
use crate::remote::marshal::{answer_into, Args, Unmarshal};
use crate::remote::protocol::{Next, Retry};
use crate::remote::route::Payload;
use crate::remote::{Host, MarshalCx, RemoteRoute, WireRef};

pub use tell::Tell;

/// The error of a call of `T` that came back to an actor waiting for it.
fn cycle<T: Method>() -> CallError {
    CallError::Cycle {
        method: T::NAME.to_owned(),
    }
}

/// What a call's error becomes: a cycle names the method `T`; a `Timeout` at
/// the deadline the call inherited from its handler (`inherited`) is that
/// handler's call being given up, so the call was `Cancelled`.
fn given_up<T: Method>(err: CallError, inherited: bool) -> CallError {
    match err {
        CallError::Cycle { .. } => cycle::<T>(),
        CallError::Timeout { .. } if inherited => CallError::Cancelled,
        other => other,
    }
}

/// The deadline a call gets unless `with_timeout` sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The untyped inside of every generated proxy: a route to the actor and the
/// options its calls carry. Generated code calls it; users call the proxy.
pub struct RefCore<M> {
    route: Route<M>,
    timeout: Duration,
}

pub(crate) enum Route<M> {
    Local(Arc<LocalRoute<M>>),
    Remote(Arc<RemoteRoute>),
}

impl<M: Unmarshal> Route<M> {
    /// Turns a reference off the wire into a route: local if the object lives on
    /// `host`'s node, remote otherwise (over `via` if it lives on that peer).
    pub(crate) fn import(
        host: &Host,
        wire: &WireRef,
        via: Option<&Arc<Connection>>,
    ) -> Result<Self, CallError> {
        if wire.node == host.id() {
            host.import_local(wire).map(Route::Local)
        } else {
            host.import_remote::<M>(wire, via).map(Route::Remote)
        }
    }
}

impl<M> Clone for Route<M> {
    fn clone(&self) -> Self {
        match self {
            Route::Local(local) => Route::Local(local.clone()),
            Route::Remote(remote) => Route::Remote(remote.clone()),
        }
    }
}

impl<M> Clone for RefCore<M> {
    fn clone(&self) -> Self {
        RefCore {
            route: self.route.clone(),
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
            Route::Remote(remote) => f
                .debug_struct("RemoteRef")
                .field("node", &remote.peer)
                .field("object", &remote.target)
                .field("timeout", &self.timeout)
                .finish(),
        }
    }
}

impl<M> PartialEq for RefCore<M> {
    /// Two references are equal when they reach the same actor (options aside).
    fn eq(&self, other: &Self) -> bool {
        match (&self.route, &other.route) {
            (Route::Local(a), Route::Local(b)) => Arc::ptr_eq(&a.cell, &b.cell),
            (Route::Remote(a), Route::Remote(b)) => a.peer == b.peer && a.target == b.target,
            _ => false,
        }
    }
}

/// A reference travels as a reference: its node exports it and the receiving node
/// imports it as a proxy. That needs a node on each side; serializing one by hand
/// (outside a call to another node) is refused with this explanation.
const NO_MARSHALLING_NODE: &str =
    "a remote reference can only be marshalled by a node sending it in a call to another node";

impl<M: Unmarshal> Serialize for RefCore<M> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if crate::remote::marshal::probing() {
            return Err(serde::ser::Error::custom("holds a reference"));
        }
        let cx =
            MarshalCx::current().ok_or_else(|| serde::ser::Error::custom(NO_MARSHALLING_NODE))?;
        let wire = match &self.route {
            Route::Local(local) => {
                crate::remote::host::local_wire(local, cx.conn.as_ref().map(|c| c.peer.node))
            }
            Route::Remote(remote) => remote.wire(),
        };
        wire.serialize(serializer)
    }
}

impl<'de, M: Unmarshal> serde::Deserialize<'de> for RefCore<M> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let cx =
            MarshalCx::current().ok_or_else(|| serde::de::Error::custom(NO_MARSHALLING_NODE))?;
        let wire = WireRef::deserialize(deserializer)?;
        let route =
            Route::import(&cx.host, &wire, cx.conn.as_ref()).map_err(serde::de::Error::custom)?;
        Ok(RefCore::new(route, cx.host.default_timeout()))
    }
}

impl<M: Send + 'static> RefCore<M> {
    pub(crate) fn new(route: Route<M>, timeout: Duration) -> Self {
        RefCore { route, timeout }
    }

    pub(crate) fn local(route: LocalRoute<M>) -> Self {
        RefCore::new(Route::Local(Arc::new(route)), DEFAULT_TIMEOUT)
    }

    pub(crate) fn route(&self) -> &Route<M> {
        &self.route
    }

    /// Asks the actor to stop after its current message, and makes sure it does; an
    /// actor on another node is stopped by its node (an `Exit` frame).
    pub(crate) fn stop(&self, reason: StopReason) {
        match &self.route {
            Route::Local(local) => {
                local.cell.request_stop(reason);
                local.slot.schedule();
            }
            Route::Remote(remote) => {
                let remote = remote.clone();
                tokio::spawn(async move { remote.exit(reason).await });
            }
        }
    }

    /// The same reference with another per-call deadline (`Duration::MAX`: none).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        RefCore {
            route: self.route.clone(),
            timeout,
        }
    }

    /// The deadline this reference's calls get.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the actor lives on this node.
    pub fn is_local(&self) -> bool {
        matches!(self.route, Route::Local(_))
    }

    /// Messages waiting in the actor's mailbox (0 for an actor on another node).
    pub fn mailbox_depth(&self) -> usize {
        match &self.route {
            Route::Local(local) => local.tx.depth(),
            Route::Remote(_) => 0,
        }
    }

    /// Bytes of the messages from other nodes waiting in the actor's mailbox,
    /// counted against its [`Mailbox::max_bytes`](crate::Mailbox::max_bytes) (0
    /// for an actor on another node).
    pub fn mailbox_bytes(&self) -> usize {
        match &self.route {
            Route::Local(local) => local.tx.bytes(),
            Route::Remote(_) => 0,
        }
    }

    /// Sends `args` and awaits the method's result (an ask). Inside a handler
    /// the call gets the earlier of this reference's timeout and the handler's
    /// own deadline, and fails at once with `Cancelled` once the handler's call
    /// is given up (see [`crate::cancelled`]).
    pub async fn ask<T>(&self, args: T) -> Result<T::Output, CallError>
    where
        T: Method + Serialize,
        T::Output: DeserializeOwned + 'static,
        M: From<Request<T>>,
    {
        match &self.route {
            Route::Local(local) => watch_call(self.ask_local(local, args)).await,
            Route::Remote(remote) => watch_call(self.ask_remote(remote, args)).await,
        }
    }

    async fn ask_remote<T>(&self, remote: &RemoteRoute, args: T) -> Result<T::Output, CallError>
    where
        T: Method + Serialize,
        T::Output: DeserializeOwned + 'static,
    {
        let now = Instant::now();
        let (deadline, inherited) = deadline_for_call_at(now, self.timeout, remote.propagate);
        // With a connection up, nothing waits before the call is sent: its
        // frame's budget is measured from this same reading of the clock.
        let (conn, read_at) = match remote.conn_now() {
            Some(conn) => (conn, Some(now)),
            None => (remote.conn().await?, None),
        };
        let due = Due {
            deadline,
            timeout: self.timeout,
            read_at,
        };
        let tags = CallTags {
            chain: chain_for_call(),
            once: 0,
            context: crate::trace::outgoing(),
        };
        // One context for the arguments and the answer.
        let cx = remote.cx(Some(conn.clone()))?;
        let answer = match RemoteRoute::prepare(&cx, args)? {
            Payload::Bytes(bytes) => {
                let args = Args::Encoded(&bytes);
                remote.ask(&conn, T::ID, args, tags, due).await
            }
            Payload::Value(value) => {
                let args = Args::Moved(value);
                remote.ask(&conn, T::ID, args, tags, due).await
            }
        }
        .map_err(|err| given_up::<T>(err, inherited))?;
        cx.enter(|| answer_into(answer, &conn.limits))
    }

    /// Sends `args` to an `#[exactly_once]` method and awaits its result: through a
    /// lost connection the call is sent again (same logical id, over the node's
    /// next connection to the actor's node) until a reply arrives or the deadline
    /// passes; the actor's node runs it once and answers retries from its memory
    /// of the reply (see [`NodeBuilder::exactly_once_retention`](crate::NodeBuilder::exactly_once_retention)).
    /// A call to an actor on this node cannot be lost and is a plain ask.
    pub async fn ask_exactly_once<T>(&self, args: T) -> Result<T::Output, CallError>
    where
        T: Method + Serialize,
        T::Output: DeserializeOwned + 'static,
        M: From<Request<T>>,
    {
        let remote = match &self.route {
            Route::Local(local) => return watch_call(self.ask_local(local, args)).await,
            Route::Remote(remote) => remote.clone(),
        };
        watch_call(self.ask_remote_once(remote, args)).await
    }

    async fn ask_remote_once<T>(
        &self,
        remote: Arc<RemoteRoute>,
        args: T,
    ) -> Result<T::Output, CallError>
    where
        T: Method + Serialize,
        T::Output: DeserializeOwned + 'static,
    {
        let now = Instant::now();
        let (deadline, inherited) = deadline_for_call(self.timeout, remote.propagate);
        let timeout = deadline.map_or(self.timeout, |d| d.saturating_duration_since(now));
        let mut retry = Retry::new(
            remote.peer,
            now,
            timeout,
            // Unreachable for a peer timeout (every dial failing): gone.
            remote
                .host()
                .map_or(crate::remote::quic::DEFAULT_IDLE_TIMEOUT, |host| {
                    host.peer_timeout()
                }),
        );
        let tags = CallTags {
            chain: chain_for_call(),
            once: fresh_chain(),
            context: crate::trace::outgoing(),
        };
        // Encoded once: the same bytes go with every attempt.
        let Payload::Bytes(bytes) = RemoteRoute::prepare(&remote.cx(None)?, args)? else {
            unreachable!("arguments prepared without a connection are encoded");
        };
        loop {
            let now = Instant::now();
            let left = retry
                .attempt(now)
                .map_err(|err| given_up::<T>(err, inherited))?;
            let until = deadline.map(|_| now + left);
            let attempt = async {
                let conn = remote.conn().await?;
                retry.sent();
                let args = Args::Encoded(&bytes);
                let answer = remote
                    .ask(&conn, T::ID, args, tags, Due::unread(until, left))
                    .await?;
                remote
                    .cx(Some(conn.clone()))?
                    .enter(|| answer_into(answer, &conn.limits))
            };
            let outcome = attempt.await;
            match retry.next(Instant::now(), outcome) {
                // Lost on the way (or no connection yet): again, with the same id.
                Next::RetryAt(at) => tokio::time::sleep_until(at).await,
                Next::Done(outcome) => return outcome.map_err(|err| given_up::<T>(err, inherited)),
            }
        }
    }

    async fn ask_local<T: Method>(
        &self,
        local: &LocalRoute<M>,
        args: T,
    ) -> Result<T::Output, CallError>
    where
        M: From<Request<T>>,
    {
        let chain = chain_for_call();
        if local.refuses_cycle(chain, T::REENTRANT) {
            return Err(cycle::<T>());
        }
        // The handler's deadline. Without propagation, or outside a deadline,
        // the clock is read only if the call has to wait (or its handler asks):
        // a lazy deadline is settled before the call leaves unpolled. A
        // `#[reentrant]` call may join a busy actor unpolled, so it reads it now.
        let (deadline, inherited) = match local.propagate {
            true if !local.reentrant => local_deadline_for_call(self.timeout),
            true => {
                let (deadline, inherited) = deadline_for_call(self.timeout, true);
                (CallDeadline::from_instant(deadline), inherited)
            }
            false => (CallDeadline::Never, false),
        };
        // A reentrant interface's call may join its busy actor unrun (queued
        // beside its handler): its answer comes through a channel from the start.
        let (mut answer, reply) = match local.reentrant {
            false => InlineAnswer::new(),
            true => InlineAnswer::through_channel(),
        };
        let msg = M::from(Request {
            args,
            reply: reply.in_chain(chain).until_lazy(deadline),
        });
        let expired = || match inherited {
            true => CallError::Cancelled,
            false => CallError::Timeout {
                after: self.timeout,
                may_have_executed: true,
            },
        };
        let mut inline = local.inline_now(msg);
        let ran =
            std::future::poll_fn(|cx| answer.reachable(|| Pin::new(&mut inline).poll(cx))).await;
        let at = match ran {
            // Handled inline: no queue, no wake-up, no timer; and answered
            // there, unless the handler had to wait.
            Ok(()) => {
                if let Some(result) = answer.answered() {
                    return result;
                }
                // The handler had to wait, and fixed a lazy deadline then; the
                // clock is read after, so its deadline is never later than this.
                deadline
                    .at()
                    .unwrap_or_else(|| crate::deadline::after(Instant::now(), self.timeout))
            }
            Err(mut msg) => {
                let until = deadline
                    .at()
                    .unwrap_or_else(|| crate::deadline::after(Instant::now(), self.timeout));
                // Settled in reach of the answer: the reply slot trades it for
                // a channel, as the call leaves this task.
                answer.reachable(|| local.slot.settle_deadline(&mut msg, until));
                match local.push(Envelope::new(msg)) {
                    Ok(()) => {}
                    Err(TrySendError::Refused(err, env)) => {
                        return Err(local.refused(err, env.as_ref()))
                    }
                    // A full mailbox: wait for room. Boxed, so that every call's
                    // future does not carry the (large) waiting state.
                    Err(TrySendError::Full(env)) => {
                        Box::pin(deliver(local, env.msg, until, self.timeout, false))
                            .await
                            .map_err(|err| match err {
                                CallError::Timeout { .. } if inherited => CallError::Cancelled,
                                other => other,
                            })?
                    }
                }
                until
            }
        };
        let rx = match answer.take() {
            Answered::Later(rx) => rx,
            Answered::Now(result) => return result,
            // Unreachable with generated dispatchers, which answer or leave
            // the inline run before it ends.
            Answered::Not => {
                return Err(CallError::Panicked {
                    message:
                        "the actor's dispatcher kept the call's reply slot past its inline run"
                            .to_owned(),
                })
            }
        };
        match timeout_at(at, rx).await {
            Ok(Ok(result)) => result,
            // Unreachable in practice: a dropped ReplyTo answers before it goes.
            Ok(Err(_)) => Err(CallError::ActorStopped),
            Err(_) => Err(expired()),
        }
    }

    /// Prepares a one-way message (a tell); see [`Tell`] for the ways to send it.
    pub fn tell<T>(&self, args: T) -> Tell<'_, M>
    where
        T: Method<Output = ()> + Serialize,
        M: From<Request<T>>,
    {
        Tell::new(self, args)
    }
}
