//! The route of a reference to an actor on this node: run the call here if the
//! actor is idle, else queue it.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Context as TaskContext, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

use crate::error::CallError;
use crate::local::cell::ActorCell;
use crate::local::mailbox::{Charge, Envelope, MailboxTx, TrySendError};
use crate::local::stats::InterfaceStats;
use crate::local::stop::StopReason;
use crate::wire::ObjectId;

pub(crate) struct LocalRoute<M> {
    pub(crate) tx: MailboxTx<M>,
    /// The id this actor is exported under, once a reference to it has been sent.
    pub(crate) exported: OnceLock<ObjectId>,
    pub(crate) cell: Arc<ActorCell>,
    /// Runs a message on the caller's task when the actor is idle, and schedules
    /// the actor when a message is queued.
    pub(crate) slot: Arc<dyn ActorSlot<M>>,
    /// Whether the interface has `#[reentrant]` methods (calls may re-enter the
    /// actor while it is busy).
    pub(crate) reentrant: bool,
    /// Whether its node propagates deadlines (a handler's calls inherit its own).
    pub(crate) propagate: bool,
}

impl<M> Drop for LocalRoute<M> {
    /// The last reference is gone: nobody can call this actor again, so it stops.
    fn drop(&mut self) {
        self.cell.request_stop(StopReason::Normal);
        self.slot.schedule();
    }
}

impl<M> LocalRoute<M> {
    /// Runs `msg` now on this task if the actor is idle with nothing queued before
    /// it (the message is then taken, and handled unless the handler had to wait);
    /// otherwise leaves it where it is. True: taken. The message stays in its
    /// sender's place until taken, so that it moves once on its way in.
    pub(crate) fn try_inline(&self, msg: &mut Option<M>, cx: &mut Context<'_>) -> bool {
        (self.reentrant && self.slot.reenter(msg)) || self.slot.try_run(msg, &self.tx, cx)
    }

    /// Counts `msg` refused at the mailbox with `err` (it did not run).
    pub(crate) fn count_refused(&self, msg: &M, err: &CallError) {
        self.slot.count_unanswered(msg, err);
    }

    /// Counts a send refused for good (`TrySendError::Refused`), if the message
    /// came back to say which method it was, and gives the error.
    pub(crate) fn refused(&self, err: CallError, env: Option<&Envelope<M>>) -> CallError {
        if let Some(env) = env {
            self.count_refused(&env.msg, &err);
        }
        err
    }

    /// Whether a call of `method` in `chain` must fail as a cycle: it comes back to
    /// a handler of its chain that awaits it, and cannot run beside that handler
    /// (the method is not `#[reentrant]`, or the handler holds `&mut self`).
    pub(crate) fn refuses_cycle(&self, chain: u64, reentrant: bool) -> bool {
        self.cell.in_cycle(chain) && !(reentrant && self.cell.may_reenter(chain))
    }

    /// Runs `msg` now if the actor is idle, else queues it; never waits (for callers
    /// without a task context: `try_tell`, a connection delivering a call). A handler
    /// that has to wait is handed to the actor's task, which polls it again with its
    /// own waker, so a no-op waker is enough here.
    pub(crate) fn offer_now(&self, msg: M) -> Result<(), TrySendError<M>> {
        self.offer_charged(msg, None)
    }

    /// [`LocalRoute::offer_now`] for a message from another node, whose bytes
    /// `charge` counts while it is queued.
    pub(crate) fn offer_charged(
        &self,
        msg: M,
        charge: Option<Charge>,
    ) -> Result<(), TrySendError<M>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut msg = Some(msg);
        if self.try_inline(&mut msg, &mut cx) {
            return Ok(());
        }
        self.push(Envelope {
            msg: msg.expect("not taken"),
            taken: None,
            charge,
        })
    }

    /// Queues without waiting, and makes sure the actor will take it.
    pub(crate) fn push(&self, env: Envelope<M>) -> Result<(), TrySendError<M>> {
        self.tx.try_send(env)?;
        self.slot.schedule();
        Ok(())
    }

    /// Queues, waiting for room (or for the hand-over), and makes sure the actor
    /// will take it.
    pub(crate) async fn push_waiting(&self, env: Envelope<M>) -> Result<(), CallError> {
        self.tx.send(env, || self.slot.schedule()).await?;
        self.slot.schedule();
        Ok(())
    }

    /// [`LocalRoute::push_waiting`], waiting below the cap of an unbounded
    /// mailbox too (see [`MailboxTx::send_when_room`]).
    pub(crate) async fn push_when_room(&self, env: Envelope<M>) -> Result<(), CallError> {
        self.tx.send_when_room(env, || self.slot.schedule()).await?;
        self.slot.schedule();
        Ok(())
    }

    /// [`LocalRoute::try_inline`] from async code, within the task's cooperative
    /// budget: a loop of calls that all complete inline still yields to the
    /// scheduler now and then, as it would on a channel. A named future rather
    /// than an `async fn`: it holds the message once, and a call's future that
    /// awaits it stays small (it is moved as a whole on the way to its task).
    pub(crate) fn inline_now(&self, msg: M) -> InlineNow<'_, M> {
        InlineNow {
            route: self,
            msg: Some(msg),
        }
    }
}

/// The future of [`LocalRoute::inline_now`].
pub(crate) struct InlineNow<'a, M> {
    route: &'a LocalRoute<M>,
    msg: Option<M>,
}

impl<M> Unpin for InlineNow<'_, M> {}

impl<M> std::future::Future for InlineNow<'_, M> {
    type Output = Result<(), M>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), M>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let this = &mut *self;
        assert!(this.msg.is_some(), "InlineNow polled after it was ready");
        let taken = this.route.try_inline(&mut this.msg, cx);
        coop.made_progress();
        Poll::Ready(match this.msg.take() {
            None if taken => Ok(()),
            Some(msg) if !taken => Err(msg),
            _ => unreachable!("a message is taken if and only if it is run"),
        })
    }
}

/// Puts `msg` into the mailbox before `deadline` (for a rendezvous mailbox: hands it
/// to the actor); with `receipt`, also waits until the actor has taken it.
pub(crate) async fn deliver<M>(
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
        charge: None,
    };
    match local.push(env) {
        Ok(()) => {}
        Err(TrySendError::Refused(err, _)) => return Err(err),
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

/// What a reference needs from its actor, without knowing the actor's type.
pub(crate) trait ActorSlot<M>: Send + Sync {
    /// Runs `msg` now, on this task, if the actor is idle and nothing is queued
    /// before it (true: taken from `msg`); otherwise leaves it there, to be queued.
    fn try_run(
        &self,
        msg: &mut Option<M>,
        mailbox: &MailboxTx<M>,
        cx: &mut TaskContext<'_>,
    ) -> bool;

    /// Hands `msg` to the busy actor to run beside its handler(s), if it is a
    /// `#[reentrant]` call of the chain they belong to and they hold the actor
    /// shared (true: taken from `msg`); otherwise leaves it there.
    fn reenter(&self, msg: &mut Option<M>) -> bool;

    /// Makes sure someone will take the messages just queued (or the stop just asked).
    fn schedule(&self);

    /// Counts `msg` as not handled, for `err` (refused at the mailbox, dropped
    /// unanswered), under its method.
    fn count_unanswered(&self, msg: &M, err: &CallError);

    /// Settles a queued message's lazy deadline (`Dispatch::settle_deadline`).
    fn settle_deadline(&self, msg: &mut M, at: Instant);

    /// The node's counters of the actor's interface.
    fn stats(&self) -> &InterfaceStats;

    /// The node the actor lives on, type-erased so that this layer names nothing
    /// above it: the remote layer downcasts it to the owner's `remote::Host` when a
    /// reference to the actor leaves the node.
    fn home(&self) -> &(dyn std::any::Any + Send + Sync);
}
