//! The task that runs one actor: takes messages one at a time, contains panics,
//! restarts under policy, and answers everyone when it ends.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures_util::FutureExt;

use crate::actor::{Actor, Context, Factory, Restart, StopReason};
use crate::cell::ActorCell;
use crate::interface::Dispatch;
use crate::mailbox::MailboxRx;
use crate::reply::panic_message;

pub(crate) struct Runner<A, M: 'static> {
    pub(crate) actor: A,
    pub(crate) rx: MailboxRx<M>,
    pub(crate) ctx: Context,
    pub(crate) restart: Option<(Restart, Factory<A>)>,
    pub(crate) restarts: VecDeque<Instant>,
}

enum Next<M> {
    Msg(M),
    Stop(StopReason),
}

impl<A: Actor, M: Dispatch<A>> Runner<A, M> {
    /// Runs the actor to its end and reports the reason to monitors.
    pub(crate) async fn run(mut self) {
        let cell = self.ctx.cell.clone();
        let reason = self.serve(&cell).await;
        // Answer queued callers first: they are waiting, on_stop may take a while.
        drop(self.rx.close_and_drain());
        if let Err(message) = guarded(self.actor.on_stop(&reason)).await {
            tracing::warn!(actor = %cell.id, name = ?cell.name, %message, "on_stop panicked");
        }
        tracing::debug!(actor = %cell.id, name = ?cell.name, %reason, "actor stopped");
        self.ctx.node.forget(&cell);
        cell.finish(reason);
    }

    async fn serve(&mut self, cell: &Arc<ActorCell>) -> StopReason {
        let mut starting = true;
        loop {
            if starting {
                starting = false;
                if let Err(message) = guarded(self.actor.on_start(&self.ctx)).await {
                    match self.restart_after(cell, message) {
                        Ok(()) => starting = true,
                        Err(reason) => return reason,
                    }
                    continue;
                }
            }
            let msg = match poll_fn(|cx| {
                if let Some(reason) = cell.stop_requested() {
                    return Poll::Ready(Next::Stop(reason));
                }
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(msg)) => Poll::Ready(Next::Msg(msg)),
                    // Every reference is gone: nobody can ever call this actor again.
                    Poll::Ready(None) => Poll::Ready(Next::Stop(StopReason::Normal)),
                    Poll::Pending => {
                        cell.register(cx.waker());
                        match cell.stop_requested() {
                            Some(reason) => Poll::Ready(Next::Stop(reason)),
                            None => Poll::Pending,
                        }
                    }
                }
            })
            .await
            {
                Next::Msg(msg) => msg,
                Next::Stop(reason) => return reason,
            };
            if let Err(message) = guarded(msg.dispatch(&mut self.actor)).await {
                match self.restart_after(cell, message) {
                    Ok(()) => starting = true,
                    Err(reason) => return reason,
                }
            }
        }
    }

    /// After a panic: swaps in fresh state if the policy allows, else says why to stop.
    fn restart_after(&mut self, cell: &ActorCell, message: String) -> Result<(), StopReason> {
        tracing::error!(actor = %cell.id, name = ?cell.name, %message, "actor panicked");
        let Some((policy, factory)) = &mut self.restart else {
            return Err(StopReason::Panicked { message });
        };
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.within)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= policy.max as usize {
            tracing::error!(actor = %cell.id, name = ?cell.name, max = policy.max, within = ?policy.within, "restart limit reached; stopping");
            return Err(StopReason::Panicked { message });
        }
        match std::panic::catch_unwind(AssertUnwindSafe(&mut *factory)) {
            Ok(fresh) => {
                self.restarts.push_back(now);
                // The panicked state is dropped without on_stop: it may be inconsistent.
                self.actor = fresh;
                tracing::info!(actor = %cell.id, name = ?cell.name, "actor restarted");
                Ok(())
            }
            Err(payload) => Err(StopReason::Panicked {
                message: format!("restart factory panicked: {}", panic_message(&*payload)),
            }),
        }
    }
}

/// Runs `fut`, turning a panic into `Err(message)`. (The caller of a panicking
/// handler has already been answered by `ReplyTo::answer_with`.)
pub(crate) async fn guarded<F: Future>(fut: F) -> Result<F::Output, String> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|payload| panic_message(&*payload))
}
