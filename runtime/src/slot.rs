//! Where an actor's state lives, and who may run it: the baton.
//!
//! An actor's state is touched by one holder at a time. Usually the holder is the
//! actor's own task, which takes messages from the mailbox. But when a caller finds
//! the actor idle with an empty mailbox, the caller takes the baton and runs the
//! handler right there, on its own task: no queueing, no wake-up, no thread switch
//! (on a 2-core machine a cross-thread wake-up costs far more than a handler).
//!
//! The baton has three states:
//! - `FREE`: the actor is idle; a caller or the task may take it.
//! - `INLINE`: a caller is running one handler (never across an `.await`: if the
//!   handler has to wait, the caller hands the in-flight future to the task).
//! - `TASK`: the actor's task holds it (starting, handling, restarting, stopping).
//!
//! Order per sender holds because a caller runs inline only when the mailbox is
//! empty *while it holds the baton*, and the task dequeues only while holding it:
//! whatever a sender queued earlier has been handled before its next call can
//! run inline.

use std::cell::UnsafeCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;

use crate::cell::ActorCell;
use crate::mailbox::MailboxTx;
use crate::reply::panic_message;

/// How deep inline runs may nest on one thread (A's handler calls B inline, which
/// calls C inline, ...). Past it calls go through the mailbox, so a long chain of
/// actors cannot overflow the caller's stack.
const MAX_INLINE_DEPTH: u32 = 8;

thread_local! {
    static INLINE_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

const FREE: u8 = 0;
const INLINE: u8 = 1;
const TASK: u8 = 2;

/// Starts handling one message: `Dispatch::dispatch` as a function pointer, so the
/// slot can name the handler future's type and keep it in place.
pub(crate) type Start<A, M, F> = fn(M, &'static mut A) -> F;

/// The actor's state and the handler future running on it.
pub(crate) struct Slot<A: 'static, M, F> {
    // Field order matters: `running` borrows `actor`, so it is declared (and dropped) first.
    running: UnsafeCell<Option<F>>,
    actor: UnsafeCell<A>,
    baton: AtomicU8,
    /// A panic of an inline run, for the task to handle (restart or stop).
    panic: Mutex<Option<String>>,
    start: Start<A, M, F>,
    pub(crate) cell: Arc<ActorCell>,
}

// SAFETY: `actor` and `running` are only touched by the baton's holder, and the
// baton is handed over with Acquire/Release ordering, so at most one thread uses
// them at a time and each sees the previous holder's writes. Moving the state
// between threads needs `A: Send` and `F: Send`.
unsafe impl<A: Send + 'static, M, F: Send> Sync for Slot<A, M, F> {}
unsafe impl<A: Send + 'static, M, F: Send> Send for Slot<A, M, F> {}

/// What the task finds when it takes the baton.
pub(crate) enum Work<M> {
    /// A message to start handling.
    Msg(M),
    /// An inline caller handed over a handler that is waiting on something.
    Drive,
    /// An inline handler panicked with this message.
    Panicked(String),
    /// Stop, for this reason.
    Stop(crate::StopReason),
}

impl<A, M, F> Slot<A, M, F>
where
    A: Send + 'static,
    M: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// A slot whose baton is held by the task (it runs `on_start` first).
    pub(crate) fn new(actor: A, start: Start<A, M, F>, cell: Arc<ActorCell>) -> Self {
        Slot {
            running: UnsafeCell::new(None),
            actor: UnsafeCell::new(actor),
            baton: AtomicU8::new(TASK),
            panic: Mutex::new(None),
            start,
            cell,
        }
    }

    /// The actor's state, for the baton's holder.
    ///
    /// # Safety
    /// The caller holds the baton (`TASK` or `INLINE`) for as long as it uses the reference.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn actor(&self) -> &mut A {
        &mut *self.actor.get()
    }

    /// Starts handling `msg` in place. Holder only.
    unsafe fn begin(&self, msg: M) {
        let actor: &'static mut A = &mut *self.actor.get();
        *self.running.get() = Some((self.start)(msg, actor));
    }

    /// Polls the handler in place. Holder only, with a handler running.
    unsafe fn poll_running(&self, cx: &mut Context<'_>) -> Poll<()> {
        let running = (*self.running.get())
            .as_mut()
            .expect("poll_running without a running handler");
        // SAFETY: the future lives inside the Arc'd slot, which never moves, and it
        // is dropped in place (`finish`) before its memory is reused.
        Pin::new_unchecked(running).poll(cx)
    }

    /// Drops the finished (or panicked) handler. Holder only.
    unsafe fn finish(&self) {
        *self.running.get() = None;
    }

    // ---- the task's side -------------------------------------------------------

    /// Waits until the task holds the baton and has work. Call from the actor task.
    pub(crate) fn poll_work(
        &self,
        cx: &mut Context<'_>,
        mut recv: impl FnMut(&mut Context<'_>) -> Poll<Option<M>>,
    ) -> Poll<Work<M>> {
        loop {
            match self.baton.load(Ordering::Acquire) {
                TASK => {
                    if let Some(message) = self.panic.lock().take() {
                        return Poll::Ready(Work::Panicked(message));
                    }
                    // SAFETY: we hold the baton.
                    if unsafe { (*self.running.get()).is_some() } {
                        return Poll::Ready(Work::Drive);
                    }
                    if let Some(reason) = self.cell.stop_requested() {
                        return Poll::Ready(Work::Stop(reason));
                    }
                    match recv(cx) {
                        Poll::Ready(Some(msg)) => return Poll::Ready(Work::Msg(msg)),
                        // Every reference is gone: nobody can call this actor again.
                        Poll::Ready(None) => {
                            return Poll::Ready(Work::Stop(crate::StopReason::Normal))
                        }
                        Poll::Pending => {
                            // Idle: callers may run handlers inline until something
                            // arrives. The mailbox wakes us for new messages (recv
                            // registered us), the cell for stops and hand-overs.
                            self.cell.register(cx.waker());
                            self.baton.store(FREE, Ordering::Release);
                            if self.cell.stop_requested().is_none() {
                                return Poll::Pending;
                            }
                            // A stop raced our registration: take the baton back.
                        }
                    }
                }
                FREE => {
                    let _ = self.baton.compare_exchange(
                        FREE,
                        TASK,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    );
                }
                _ => {
                    // A caller is running a handler inline; it wakes us when it is done
                    // if there is anything for us to do.
                    self.cell.register(cx.waker());
                    if self.baton.load(Ordering::Acquire) == INLINE {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    /// Starts `msg` (from `poll_work`) in place. Task only, holding the baton.
    pub(crate) fn begin_task(&self, msg: M) {
        // SAFETY: the task holds the baton.
        unsafe { self.begin(msg) }
    }

    /// Drives the running handler to completion. Task only, holding the baton.
    pub(crate) fn poll_task(&self, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: the task holds the baton and a handler is running.
        match unsafe { self.poll_running(cx) } {
            Poll::Ready(()) => {
                unsafe { self.finish() };
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Drops a handler that panicked under the task. Task only, holding the baton.
    pub(crate) fn abandon_task(&self) {
        // SAFETY: the task holds the baton.
        unsafe { self.finish() }
    }
}

/// Running a message on the caller's task, type-erased over the actor type.
pub(crate) trait Inline<M>: Send + Sync {
    /// Runs `msg` now if the actor is idle and nothing is queued before it;
    /// otherwise gives it back to be queued.
    fn try_run(&self, msg: M, mailbox: &MailboxTx<M>, cx: &mut Context<'_>) -> Result<(), M>;
}

impl<A, M, F> Inline<M> for Slot<A, M, F>
where
    A: Send + 'static,
    M: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    fn try_run(&self, msg: M, mailbox: &MailboxTx<M>, cx: &mut Context<'_>) -> Result<(), M> {
        let depth = INLINE_DEPTH.with(|d| d.get());
        if depth >= MAX_INLINE_DEPTH {
            return Err(msg);
        }
        if self
            .baton
            .compare_exchange(FREE, INLINE, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(msg);
        }
        if mailbox.depth() != 0 || self.cell.stop_requested().is_some() {
            self.release_inline(mailbox);
            return Err(msg);
        }
        // SAFETY: we hold the baton (INLINE) until we release or hand it over below.
        unsafe { self.begin(msg) };
        let polled =
            std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { self.poll_running(cx) }));
        match polled {
            Ok(Poll::Ready(())) => {
                unsafe { self.finish() };
                self.release_inline(mailbox);
            }
            // The handler waits on something: the task drives it from here on. It
            // re-polls with its own waker, which replaces ours.
            Ok(Poll::Pending) => self.hand_over(),
            Err(payload) => {
                // The caller was answered `Panicked` by ReplyTo::answer_with; the
                // task applies the restart policy.
                unsafe { self.finish() };
                *self.panic.lock() = Some(panic_message(&*payload));
                self.hand_over();
            }
        }
        Ok(())
    }
}

impl<A: 'static, M, F> Slot<A, M, F> {
    fn hand_over(&self) {
        self.baton.store(TASK, Ordering::Release);
        self.cell.wake();
    }

    fn release_inline(&self, mailbox: &MailboxTx<M>) {
        self.baton.store(FREE, Ordering::Release);
        // The task may have found the baton taken and gone to sleep: wake it if it
        // has anything to do now.
        if mailbox.depth() != 0 || self.cell.stop_requested().is_some() {
            self.cell.wake();
        }
    }
}
