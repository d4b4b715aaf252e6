//! The task an actor gets while it has work: starts it, handles queued messages one
//! at a time, finishes handlers handed over by inline callers, contains panics,
//! restarts under policy, and stops it. It ends as soon as the actor is idle.
//!
//! It holds the baton throughout, as a [`Turn`]: everything it does to the actor's
//! cells goes through the turn's methods, so this module has no `unsafe`.

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt;

use crate::local::actor::{Actor, RestartBy};
use crate::local::dispatch::Dispatch;
use crate::local::reply::panic_message;
use crate::local::slot::{Hook, Restarting, Turn};
use crate::local::stats::ActorCounters;
use crate::local::stop::StopReason;
use crate::local::supervision::Directive;

impl<A, M, F> Turn<'_, A, M, F>
where
    A: Actor,
    M: Dispatch<A> + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// The task's body: this turn is the task's, from `Turn::start_task`.
    pub(crate) async fn run(mut self) {
        loop {
            if self.hook_in_flight() {
                match guarded(poll_fn(|cx| self.poll_hook(cx))).await {
                    Ok(Hook::Started) => {
                        if let Some(supervisor) = &self.supervisor {
                            supervisor.started();
                        }
                    }
                    Ok(Hook::Unreferenced) => {}
                    Err(message) => {
                        self.drop_hook();
                        ActorCounters::count(&self.counters.panics);
                        *self.panic.lock() = Some(message);
                    }
                }
                continue;
            }
            let panicked = self.panic.lock().take();
            if let Some(message) = panicked {
                match self.restart_after(message).await {
                    Ok(()) => {
                        ActorCounters::count(&self.counters.restarts);
                        self.begin_start()
                    }
                    Err(reason) => return self.finish(reason).await,
                }
                continue;
            }
            if self.in_flight() {
                if let Err(message) = guarded(poll_fn(|cx| self.poll_running(cx))).await {
                    self.count_panic();
                    self.end_running();
                    *self.panic.lock() = Some(message);
                }
                continue;
            }
            if let Some(reason) = self.ctx.cell.stop_requested() {
                return self.finish(reason).await;
            }
            if self.pause_requested() {
                match self.halt(None).await {
                    Ok(()) => {
                        ActorCounters::count(&self.counters.restarts);
                        self.begin_start()
                    }
                    Err(reason) => return self.finish(reason).await,
                }
                continue;
            }
            if let Some(withdraw) = self.ctx.cell.take_unreferenced() {
                self.begin_unreferenced(withdraw);
                continue;
            }
            // Calls that re-entered while the actor was busy go before the mailbox.
            if let Some(msg) = self.next_reentry() {
                self.begin(&mut Some(msg));
                continue;
            }
            // A long queue must not keep this worker from other tasks.
            tokio::task::coop::consume_budget().await;
            match self.next_message() {
                Some(msg) => self.begin(&mut Some(msg)),
                None => match self.release() {
                    // Idle: the baton is given up and the task ends.
                    None => return,
                    // Work was announced since this task last looked: look again.
                    Some(turn) => self = turn,
                },
            }
        }
    }

    /// Stops the actor for good: the turn is dropped, not released, so the baton
    /// stays taken forever: no caller runs inline and every later send is refused.
    async fn finish(mut self, reason: StopReason) {
        debug_assert!(self.is_task());
        let cell = self.ctx.cell.clone();
        // Answer queued callers first: they are waiting, on_stop may take a while.
        drop(self.close_mailbox());
        self.drop_reentries();
        if let Err(message) = guarded(self.actor().on_stop(&reason)).await {
            tracing::warn!(actor = %cell.id, name = ?cell.name, %message, "on_stop panicked");
        }
        // The state's resources go now, not when the last reference does.
        self.drop_state();
        tracing::debug!(actor = %cell.id, name = ?cell.name, %reason, "actor stopped");
        self.ctx.node.forget(&cell);
        cell.finish(reason);
    }

    /// After a panic: swaps in fresh state if the policy (or the supervisor) allows,
    /// else says why to stop.
    async fn restart_after(&mut self, message: String) -> Result<(), StopReason> {
        let cell = self.ctx.cell.clone();
        tracing::error!(actor = %cell.id, name = ?cell.name, %message, "actor panicked");
        let life = self.life();
        let (policy, factory, restarts) = match life.restart.as_deref_mut() {
            None => return Err(StopReason::Panicked { message }),
            Some(Restarting {
                by: RestartBy::Supervisor(_),
                ..
            }) => return self.halt(Some(message)).await,
            Some(Restarting {
                by: RestartBy::Policy(policy),
                factory,
                restarts,
            }) => (policy, factory, restarts),
        };
        let now = Instant::now();
        while restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.within)
        {
            restarts.pop_front();
        }
        if restarts.len() >= policy.max as usize {
            tracing::error!(actor = %cell.id, name = ?cell.name, max = policy.max, within = ?policy.within, "restart limit reached; stopping");
            return Err(StopReason::Panicked { message });
        }
        match std::panic::catch_unwind(AssertUnwindSafe(&mut *factory)) {
            Ok(fresh) => {
                restarts.push_back(now);
                // The panicked state is dropped without on_stop: it may be inconsistent.
                self.replace_state(fresh);
                tracing::info!(actor = %cell.id, name = ?cell.name, "actor restarted");
                Ok(())
            }
            Err(payload) => Err(StopReason::Panicked {
                message: format!("restart factory panicked: {}", panic_message(&*payload)),
            }),
        }
    }

    /// A supervised actor stops handling messages — it panicked (`failure`), or its
    /// supervisor asked it to pause — tells its supervisor, and does as told: `Ok`
    /// once fresh state is in place (`on_start` still to run), or the reason to
    /// stop. It keeps the baton meanwhile, so messages wait in the mailbox.
    async fn halt(&mut self, mut failure: Option<String>) -> Result<(), StopReason> {
        let Some(supervisor) = self.supervisor.clone() else {
            let stopped = |message| StopReason::Panicked { message };
            return Err(failure.map_or(StopReason::Normal, stopped));
        };
        loop {
            match supervisor.halted(failure.take()).await {
                Directive::Stop(reason) => return Err(reason),
                Directive::Restart => {
                    let Some(Restarting { factory, .. }) = self.life().restart.as_deref_mut()
                    else {
                        return Err(StopReason::Normal);
                    };
                    match std::panic::catch_unwind(AssertUnwindSafe(&mut *factory)) {
                        Ok(fresh) => {
                            // The old state is dropped without on_stop: after a panic it
                            // may be inconsistent, and a restart is not a stop.
                            self.replace_state(fresh);
                            let cell = &self.ctx.cell;
                            tracing::info!(actor = %cell.id, name = ?cell.name, "actor restarted by its supervisor");
                            return Ok(());
                        }
                        // A failure like any other: the supervisor counts it and decides.
                        Err(payload) => {
                            failure = Some(format!(
                                "restart factory panicked: {}",
                                panic_message(&*payload)
                            ))
                        }
                    }
                }
            }
        }
    }
}

/// Runs `fut`, turning a panic into `Err(message)`. (The caller of a panicking
/// handler has already been answered by `ReplyTo::answer_with`.)
pub(crate) async fn guarded<Fut: Future>(fut: Fut) -> Result<Fut::Output, String> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|payload| panic_message(&*payload))
}
