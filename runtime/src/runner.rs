//! The task that runs one actor: takes messages one at a time (sharing the actor
//! with inline callers through the slot's baton), contains panics, restarts under
//! policy, and answers everyone when it ends.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;

use crate::actor::{Actor, Context, Factory, Restart, StopReason};
use crate::cell::ActorCell;
use crate::mailbox::MailboxRx;
use crate::reply::panic_message;
use crate::slot::{Slot, Work};

pub(crate) struct Runner<A: 'static, M: 'static, F> {
    pub(crate) slot: Arc<Slot<A, M, F>>,
    pub(crate) rx: MailboxRx<M>,
    pub(crate) ctx: Context,
    pub(crate) restart: Option<(Restart, Factory<A>)>,
    pub(crate) restarts: VecDeque<Instant>,
}

impl<A, M, F> Runner<A, M, F>
where
    A: Actor,
    M: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// Runs the actor to its end and reports the reason to monitors. The task holds
    /// the baton from here to the end, except while idle in `poll_work`.
    pub(crate) async fn run(mut self) {
        let cell = self.ctx.cell.clone();
        let reason = self.serve(&cell).await;
        // Still holding the baton, for good: no caller runs inline any more.
        // Answer queued callers first: they are waiting, on_stop may take a while.
        drop(self.rx.close_and_drain());
        // SAFETY: the task holds the baton.
        let actor = unsafe { self.slot.actor() };
        if let Err(message) = guarded(actor.on_stop(&reason)).await {
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
                // SAFETY: the task holds the baton (it starts with it, and holds it
                // whenever it is not idle in `poll_work`).
                let actor = unsafe { self.slot.actor() };
                if let Err(message) = guarded(actor.on_start(&self.ctx)).await {
                    match self.restart_after(cell, message) {
                        Ok(()) => starting = true,
                        Err(reason) => return reason,
                    }
                    continue;
                }
            }
            let slot = &self.slot;
            let rx = &mut self.rx;
            let work = poll_fn(|cx| slot.poll_work(cx, |cx| rx.poll_recv(cx))).await;
            match work {
                Work::Stop(reason) => return reason,
                Work::Panicked(message) => {
                    match self.restart_after(cell, message) {
                        Ok(()) => starting = true,
                        Err(reason) => return reason,
                    }
                    continue;
                }
                Work::Msg(msg) => self.slot.begin_task(msg),
                Work::Drive => {}
            }
            let slot = &self.slot;
            if let Err(message) = guarded(poll_fn(|cx| slot.poll_task(cx))).await {
                self.slot.abandon_task();
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
                // SAFETY: the task holds the baton.
                unsafe { *self.slot.actor() = fresh };
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
