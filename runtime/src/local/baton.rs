//! The baton: who may touch an actor's state right now.
//!
//! An actor has no task of its own while it is idle. Its state, its handlers and
//! its lifecycle are touched by one holder of the baton at a time:
//!
//! - `FREE`: idle, nobody runs it, nothing is known to wait for it.
//! - `INLINE`: a caller found it idle with an empty mailbox and runs one handler
//!   right there, on the caller's own task. Never held across an `.await`: a
//!   handler that has to wait is handed over to a task.
//! - `TASK`: a task spawned for this actor holds it: starting, handling queued
//!   messages, finishing a handed-over handler, restarting, stopping. The task ends
//!   as soon as the actor is idle again (or never, once the actor has stopped).
//!
//! Whoever gives the actor work (queues a message, asks for a stop, a pause, an
//! `on_unreferenced`, re-enters it) publishes the work first and then calls
//! [`Baton::schedule`]: if the baton is free, the caller takes it for a new task;
//! if not, it sets `NOTIFIED` beside the holder's bit. The holder gives the baton up
//! with [`Baton::release`], which fails while `NOTIFIED` is set: it clears the bit
//! and the holder looks for work again. So a notification is never lost between a
//! holder's last look and its release: both are read-modify-writes of this one
//! atomic, and the modification order decides which came first (tokio's task state
//! does the same with its `NOTIFIED` bit). No fence pairs two different atomics.
//!
//! Ordering: every change of holder is a release by the previous holder (or the
//! spawn of the task it handed over to) that the next holder acquires, so the next
//! holder sees everything the previous one wrote in the actor's cells. Every
//! `schedule` is a release that the holder's failed `release` acquires, so the
//! holder's next look sees the work it was told about.
//!
//! The loom model in `runtime/tests/loom` checks this protocol on this very file.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU8, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU8, Ordering};

/// Idle: whoever takes it holds it.
const FREE: u8 = 0;
/// Held by a caller running a handler inline.
const INLINE: u8 = 1;
/// Held by the actor's task.
const TASK: u8 = 2;
/// Work was announced while the baton was held: the holder must look again before
/// it gives the baton up. Only ever set beside `INLINE` or `TASK`.
const NOTIFIED: u8 = 4;

/// An actor's baton: one atomic byte.
pub(crate) struct Baton {
    state: AtomicU8,
}

impl Baton {
    /// A baton held for a task from the start: the spawner runs `on_start` with it.
    pub(crate) fn held_by_task() -> Baton {
        Baton {
            state: AtomicU8::new(TASK),
        }
    }

    /// Takes the baton to run a handler inline, if it is free.
    ///
    /// Acquire: on success the caller sees everything the previous holder wrote
    /// before its [`release`](Baton::release).
    pub(crate) fn try_inline(&self) -> bool {
        self.state
            .compare_exchange(FREE, INLINE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// After publishing work for the actor: takes the baton for a new task if it
    /// is free (then the caller must start that task: `true`), else tells the
    /// holder to look again before it lets go.
    ///
    /// Always a read-modify-write, even when `NOTIFIED` is already set: its Release
    /// half is what carries the caller's work to the holder whose failed `release`
    /// acquires it. Its Acquire half gives a caller that takes the baton the
    /// previous holder's writes.
    #[must_use = "if it returns true, the caller holds the baton and must start a task"]
    pub(crate) fn schedule(&self) -> bool {
        let previous = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |state| {
                Some(if state == FREE {
                    TASK
                } else {
                    state | NOTIFIED
                })
            })
            .unwrap_or_else(|state| state);
        previous == FREE
    }

    /// An inline holder hands the baton to the task it is about to spawn. The
    /// task looks for work first thing, so a pending `NOTIFIED` is folded in.
    ///
    /// AcqRel: the task (which the spawn orders after this) sees the work of every
    /// `schedule` so far, and the holder's own writes.
    pub(crate) fn hand_over(&self) {
        let previous = self.state.swap(TASK, Ordering::AcqRel);
        debug_assert_ne!(
            previous & (INLINE | TASK),
            FREE,
            "hand_over without the baton"
        );
    }

    /// Gives the baton up, unless work was announced since the holder last looked:
    /// then it keeps it, now as `TASK` (an inline holder must start a task), and
    /// returns `false`; the holder must look for work again before it retries.
    ///
    /// Release on success: the next holder sees this one's writes. Acquire when it
    /// finds `NOTIFIED`: the holder's next look sees the announced work.
    #[must_use = "if it returns false, the caller still holds the baton"]
    pub(crate) fn release(&self) -> bool {
        // Only `NOTIFIED` may change under the holder, so this CAS fails only for it.
        let mut held = self.state.load(Ordering::Relaxed);
        loop {
            debug_assert_ne!(held & (INLINE | TASK), FREE, "release without the baton");
            if held & NOTIFIED != 0 {
                self.state.swap(TASK, Ordering::AcqRel);
                return false;
            }
            match self
                .state
                .compare_exchange(held, FREE, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    /// Whether nobody holds it: the actor is idle (for inspection; stale as
    /// soon as read).
    pub(crate) fn is_free(&self) -> bool {
        self.state.load(Ordering::Relaxed) == FREE
    }

    /// Whether a task holds it (for assertions: the holder asks).
    pub(crate) fn held_by_a_task(&self) -> bool {
        self.state.load(Ordering::Relaxed) & TASK != 0
    }
}
