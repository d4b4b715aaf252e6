//! The task an actor gets while it has work: starts it, handles queued messages one
//! at a time, finishes handlers handed over by inline callers, contains panics,
//! restarts under policy, and stops it. It ends as soon as the actor is idle.

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;

use crate::local::actor::{Actor, RestartBy};
use crate::local::dispatch::Dispatch;
use crate::local::reply::panic_message;
use crate::local::slot::{Hook, Slot};
use crate::local::stop::StopReason;
use crate::local::supervision::Directive;

impl<A, M, F> Slot<A, M, F>
where
    A: Actor,
    M: Dispatch<A> + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// The task's body. It holds the baton (`TASK`) throughout; all the `unsafe`
    /// accesses below rely on that.
    pub(crate) async fn run(self: Arc<Self>) {
        let this = &*self;
        loop {
            if unsafe { (*this.hook.get()).is_some() } {
                match guarded(poll_fn(|cx| unsafe { this.poll_hook(cx) })).await {
                    Ok(Hook::Started) => {
                        if let Some(supervisor) = &this.supervisor {
                            supervisor.started();
                        }
                    }
                    Ok(Hook::Unreferenced) => {}
                    Err(message) => {
                        unsafe { *this.hook.get() = None };
                        *this.panic.lock() = Some(message);
                    }
                }
                continue;
            }
            let panicked = this.panic.lock().take();
            if let Some(message) = panicked {
                match this.restart_after(message).await {
                    Ok(()) => unsafe { this.begin_start() },
                    Err(reason) => return this.finish(reason).await,
                }
                continue;
            }
            if unsafe { this.in_flight() } {
                if let Err(message) = guarded(poll_fn(|cx| unsafe { this.poll_running(cx) })).await
                {
                    unsafe { this.end_running() };
                    *this.panic.lock() = Some(message);
                }
                continue;
            }
            if let Some(reason) = this.ctx.cell.stop_requested() {
                return this.finish(reason).await;
            }
            if this.pause_requested() {
                match this.halt(None).await {
                    Ok(()) => unsafe { this.begin_start() },
                    Err(reason) => return this.finish(reason).await,
                }
                continue;
            }
            if let Some(withdraw) = this.ctx.cell.take_unreferenced() {
                unsafe { this.begin_unreferenced(withdraw) };
                continue;
            }
            // Calls that re-entered while the actor was busy go before the mailbox.
            if let Some(msg) = this.next_reentry() {
                unsafe { this.begin(msg) };
                continue;
            }
            // A long queue must not keep this worker from other tasks.
            tokio::task::coop::consume_budget().await;
            match this.rx.try_recv() {
                Some(msg) => unsafe { this.begin(msg) },
                None => {
                    // Idle: give the baton up and end, unless work was announced
                    // since this task last looked: then look again.
                    if this.baton.release() {
                        return;
                    }
                }
            }
        }
    }

    /// Stops the actor for good: the baton stays with this task forever, so no
    /// caller runs inline and every later send is refused.
    async fn finish(&self, reason: StopReason) {
        debug_assert!(self.baton.held_by_a_task());
        let cell = &self.ctx.cell;
        // Answer queued callers first: they are waiting, on_stop may take a while.
        drop(self.rx.close_and_drain());
        self.drop_reentries();
        if let Err(message) = guarded(unsafe { self.actor() }.on_stop(&reason)).await {
            tracing::warn!(actor = %cell.id, name = ?cell.name, %message, "on_stop panicked");
        }
        // The state's resources go now, not when the last reference does.
        unsafe { self.drop_state() };
        tracing::debug!(actor = %cell.id, name = ?cell.name, %reason, "actor stopped");
        self.ctx.node.forget(cell);
        cell.finish(reason);
    }

    /// After a panic: swaps in fresh state if the policy (or the supervisor) allows,
    /// else says why to stop.
    async fn restart_after(&self, message: String) -> Result<(), StopReason> {
        let cell = &self.ctx.cell;
        tracing::error!(actor = %cell.id, name = ?cell.name, %message, "actor panicked");
        let life = unsafe { &mut *self.life.get() };
        let (policy, factory) = match &mut life.restart {
            None => return Err(StopReason::Panicked { message }),
            Some((RestartBy::Supervisor(_), _)) => return self.halt(Some(message)).await,
            Some((RestartBy::Policy(policy), factory)) => (policy, factory),
        };
        let now = Instant::now();
        while life
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > policy.within)
        {
            life.restarts.pop_front();
        }
        if life.restarts.len() >= policy.max as usize {
            tracing::error!(actor = %cell.id, name = ?cell.name, max = policy.max, within = ?policy.within, "restart limit reached; stopping");
            return Err(StopReason::Panicked { message });
        }
        match std::panic::catch_unwind(AssertUnwindSafe(&mut *factory)) {
            Ok(fresh) => {
                life.restarts.push_back(now);
                // The panicked state is dropped without on_stop: it may be inconsistent.
                unsafe { **self.actor.get() = fresh };
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
    async fn halt(&self, mut failure: Option<String>) -> Result<(), StopReason> {
        let Some(supervisor) = self.supervisor.clone() else {
            let stopped = |message| StopReason::Panicked { message };
            return Err(failure.map_or(StopReason::Normal, stopped));
        };
        loop {
            match supervisor.halted(failure.take()).await {
                Directive::Stop(reason) => return Err(reason),
                Directive::Restart => {
                    let life = unsafe { &mut *self.life.get() };
                    let Some((_, factory)) = &mut life.restart else {
                        return Err(StopReason::Normal);
                    };
                    match std::panic::catch_unwind(AssertUnwindSafe(&mut *factory)) {
                        Ok(fresh) => {
                            // The old state is dropped without on_stop: after a panic it
                            // may be inconsistent, and a restart is not a stop.
                            unsafe { **self.actor.get() = fresh };
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
