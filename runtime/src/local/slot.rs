//! Where an actor lives, and who may run it.
//!
//! A [`Slot`] holds an actor's state, the handler(s) running on it, its lifecycle
//! and its [`Baton`] (see `baton.rs` for the protocol): a caller that finds the
//! actor idle with an empty mailbox runs the handler right there, on its own task
//! (no queueing, no wake-up, no thread switch: on a 2-core machine a cross-thread
//! wake-up costs far more than a handler); otherwise the message is queued and a
//! task is spawned for the actor if it has none. This is Akka's dispatcher model
//! (a mailbox is scheduled when it has work) with an inline fast path in front.
//!
//! Order per sender holds because a caller runs inline only when the mailbox is
//! empty *while it holds the baton*, and a task dequeues only while holding it:
//! whatever a sender queued earlier has been handled before its next call can run.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use crate::local::actor::{Actor, Context, Factory, RestartBy, Unreferenced};
use crate::local::baton::Baton;
use crate::local::cell::{ActorCell, Withdraw};
use crate::local::dispatch::{Dispatch, Lent};
use crate::local::mailbox::{MailboxRx, MailboxTx};
use crate::local::reply::panic_message;
use crate::local::route::Host;
use crate::local::stop::StopReason;
use crate::local::supervision::{Control, Supervision};
use crate::node::Node;

/// How deep inline runs may nest on one thread (A's handler calls B inline, which
/// calls C inline, ...). Past it calls go through the mailbox, so a long chain of
/// actors cannot overflow the caller's stack.
const MAX_INLINE_DEPTH: u32 = 8;

thread_local! {
    static INLINE_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Starts handling one message: `Dispatch::dispatch` as a function pointer, so the
/// slot can name the handler future's type and keep it in place.
pub(crate) type Start<A, M, F> = fn(M, Lent<'static, A>) -> F;

/// A lifecycle hook running between messages; it says which it was.
type HookRun = Pin<Box<dyn Future<Output = Hook> + Send>>;

/// Which lifecycle hook ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    /// `on_start`: the actor is (re)started.
    Started,
    /// `on_unreferenced`, and what it decided has been done.
    Unreferenced,
}

/// What a new actor starts with besides its state: its mailbox receiver and its
/// restart policy.
pub(crate) struct Held<A, M: 'static> {
    pub(crate) rx: MailboxRx<M>,
    pub(crate) state_dropped: bool,
    pub(crate) restart: Option<(RestartBy, Factory<A>)>,
    pub(crate) restarts: VecDeque<Instant>,
}

/// What only the baton's holder touches besides the actor and its handler.
pub(crate) struct Life<A> {
    pub(crate) state_dropped: bool,
    pub(crate) restart: Option<(RestartBy, Factory<A>)>,
    pub(crate) restarts: VecDeque<Instant>,
}

/// Calls that re-enter a busy actor: `#[reentrant]` calls of the chain its shared
/// handler(s) belong to. They bypass the mailbox (it waits for the actor to be
/// idle, and the actor waits for them); the holder starts them beside the running
/// handler, or first thing once idle.
struct Reentry<M, F> {
    queue: Mutex<VecDeque<M>>,
    /// The holder's waker while it polls handlers.
    waker: AtomicWaker,
    /// Re-entered handlers running beside `Slot::running` (all holding the actor
    /// shared). Holder only.
    running: UnsafeCell<Vec<Pin<Box<F>>>>,
}

/// An actor: its state, the handler running on it, and the baton.
pub(crate) struct Slot<A: 'static, M: 'static, F> {
    // Field order matters: `running`, `reentry` and `hook` borrow `actor`, so they are
    // declared (and dropped) first.
    pub(crate) running: UnsafeCell<Option<F>>,
    /// Re-entering calls and the handlers they run (only for interfaces with
    /// `#[reentrant]` methods: the others pay one pointer).
    reentry: Option<Box<Reentry<M, F>>>,
    /// `on_start` or `on_unreferenced`, while it runs.
    pub(crate) hook: UnsafeCell<Option<HookRun>>,
    /// Dropped (once) right after `on_stop`, so a stopped actor's resources go at
    /// once even while references to it remain; `state_dropped` records that.
    pub(crate) actor: UnsafeCell<ManuallyDrop<A>>,
    pub(crate) life: UnsafeCell<Life<A>>,
    /// The mailbox's receiving side. Internally synchronised, so outside the cells:
    /// `release` reads it after giving the baton away. Only the holder takes from it.
    pub(crate) rx: MailboxRx<M>,
    /// Whether callers may run handlers on their own tasks (`SpawnOptions::inline`).
    inline: bool,
    pub(crate) baton: Baton,
    /// A panic of an inline run or an inline start, for the task to handle.
    pub(crate) panic: Mutex<Option<String>>,
    start: Start<A, M, F>,
    pub(crate) ctx: Context,
    /// Its supervisor, if it has one (also in `life.restart`; here it can be read
    /// without the baton, for pause requests).
    pub(crate) supervisor: Option<Arc<dyn Supervision>>,
    me: Weak<Self>,
}

// SAFETY: the `UnsafeCell`s are only touched by the baton's holder, and the baton
// is handed over with Acquire/Release ordering, so at most one thread uses them at
// a time and each sees the previous holder's writes. Moving the state between
// threads needs `A`, `M` and `F` to be `Send`.
unsafe impl<A: Send + 'static, M: Send, F: Send> Sync for Slot<A, M, F> {}
unsafe impl<A: Send + 'static, M: Send, F: Send> Send for Slot<A, M, F> {}

impl<A, M, F> Slot<A, M, F>
where
    A: Actor,
    M: Dispatch<A> + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// Creates the actor and runs its `on_start` here if it finishes at once;
    /// otherwise (or if it panics) a task takes over.
    pub(crate) fn spawn(
        actor: A,
        start: Start<A, M, F>,
        node: Node,
        cell: Arc<ActorCell>,
        held: Held<A, M>,
        inline: bool,
    ) -> Arc<Self> {
        let supervisor = match &held.restart {
            Some((RestartBy::Supervisor(supervisor), _)) => Some(supervisor.clone()),
            _ => None,
        };
        let slot = Arc::new_cyclic(|me: &Weak<Self>| Slot {
            running: UnsafeCell::new(None),
            reentry: M::REENTRANT.then(|| {
                Box::new(Reentry {
                    queue: Mutex::new(VecDeque::new()),
                    waker: AtomicWaker::new(),
                    running: UnsafeCell::new(Vec::new()),
                })
            }),
            hook: UnsafeCell::new(None),
            actor: UnsafeCell::new(ManuallyDrop::new(actor)),
            life: UnsafeCell::new(Life {
                state_dropped: held.state_dropped,
                restart: held.restart,
                restarts: held.restarts,
            }),
            rx: held.rx,
            inline,
            baton: Baton::held_by_task(),
            panic: Mutex::new(None),
            start,
            ctx: Context {
                node,
                cell,
                control: me.clone() as Weak<dyn Control>,
            },
            supervisor,
            me: me.clone(),
        });
        // Before on_start: the supervisor learns of the child before any report from it.
        if let Some(supervisor) = &slot.supervisor {
            let control = Arc::downgrade(&slot) as Weak<dyn Control>;
            supervisor.attach(&slot.ctx.cell, control);
        }
        // SAFETY: the baton starts as TASK and is ours until released below.
        unsafe { slot.begin_start() };
        let mut cx = TaskContext::from_waker(Waker::noop());
        match std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { slot.poll_hook(&mut cx) })) {
            // Work may have come in without a notification while it started (a stop
            // asked by `attach`): look before letting go.
            Ok(Poll::Ready(_)) if slot.has_work() => slot.spawn_task(),
            Ok(Poll::Ready(_)) => slot.release(),
            // Still starting: the task polls it again, with a waker that works.
            Ok(Poll::Pending) => slot.spawn_task(),
            Err(payload) => {
                unsafe { *slot.hook.get() = None };
                *slot.panic.lock() = Some(panic_message(&*payload));
                slot.spawn_task();
            }
        }
        slot
    }

    /// Makes sure someone will look at this actor: spawns a task if it is idle.
    /// Call after queueing a message or asking for a stop.
    pub(crate) fn schedule(&self) {
        if self.baton.schedule() {
            self.spawn_task();
        }
    }

    /// Spawns the task that holds the baton from now on. The caller holds `TASK`.
    fn spawn_task(&self) {
        let Some(me) = self.me.upgrade() else {
            return; // being dropped: nobody can reach it any more
        };
        self.ctx.node.spawn_task(me.run());
    }

    /// Gives the baton up; if work was announced meanwhile, keeps it for a task.
    /// The caller holds the baton, has looked for work since it took it (or since
    /// its last failed release), and leaves no handler in flight.
    pub(crate) fn release(&self) {
        if !self.baton.release() {
            self.spawn_task();
        }
    }

    /// Whether anything waits for the holder: a queued message or one waiting for
    /// room, or [`Slot::other_work`].
    fn has_work(&self) -> bool {
        self.rx.has_pending() || self.other_work()
    }

    /// Whether anything besides the mailbox waits for the holder: a re-entering
    /// call, a stop, an `on_unreferenced`, a pause.
    fn other_work(&self) -> bool {
        let cell = &self.ctx.cell;
        self.reentry_pending()
            || cell.stop_requested().is_some()
            || cell.unreferenced_requested()
            || self.pause_requested()
    }

    /// Whether re-entering calls wait for the holder.
    pub(crate) fn reentry_pending(&self) -> bool {
        self.reentry
            .as_ref()
            .is_some_and(|reentry| !reentry.queue.lock().is_empty())
    }

    /// The next re-entering call left for the holder, once the actor is idle.
    pub(crate) fn next_reentry(&self) -> Option<M> {
        self.reentry.as_ref()?.queue.lock().pop_front()
    }

    /// Answers the re-entering calls still waiting (`ActorStopped`): the actor stops.
    pub(crate) fn drop_reentries(&self) {
        if let Some(reentry) = &self.reentry {
            drop(std::mem::take(&mut *reentry.queue.lock()));
        }
    }

    /// Whether its supervisor asked it to pause after the current message.
    pub(crate) fn pause_requested(&self) -> bool {
        self.supervisor
            .as_ref()
            .is_some_and(|supervisor| supervisor.pause_requested())
    }

    /// The actor's state. Holder only.
    ///
    /// # Safety
    /// The caller holds the baton for as long as it uses the reference.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn actor(&self) -> &'static mut A {
        debug_assert!(!(*self.life.get()).state_dropped);
        &mut *self.actor.get()
    }

    /// Drops the actor's state for good. Holder only, after the last use of it.
    pub(crate) unsafe fn drop_state(&self) {
        let life = &mut *self.life.get();
        if !life.state_dropped {
            life.state_dropped = true;
            ManuallyDrop::drop(&mut *self.actor.get());
        }
    }

    /// Starts `on_start` in place. Holder only.
    pub(crate) unsafe fn begin_start(&self) {
        let actor = self.actor();
        let ctx = self.ctx.clone();
        *self.hook.get() = Some(Box::pin(async move {
            actor.on_start(&ctx).await;
            Hook::Started
        }));
    }

    /// Starts `on_unreferenced` in place; `withdraw` withdraws the export if the
    /// actor chooses to stop (and nothing has referred to it again meanwhile).
    /// Holder only, between messages.
    pub(crate) unsafe fn begin_unreferenced(&self, withdraw: Withdraw) {
        let actor = self.actor();
        let ctx = self.ctx.clone();
        *self.hook.get() = Some(Box::pin(async move {
            if actor.on_unreferenced(&ctx).await != Unreferenced::Stop {
                return Hook::Unreferenced;
            }
            if let Some(last_route) = withdraw() {
                ctx.cell.request_stop(StopReason::Unreferenced);
                drop(last_route);
            }
            Hook::Unreferenced
        }));
    }

    /// Polls the lifecycle hook in flight; clears it once done. Holder only.
    pub(crate) unsafe fn poll_hook(&self, cx: &mut TaskContext<'_>) -> Poll<Hook> {
        let hook = &mut *self.hook.get();
        let poll = hook
            .as_mut()
            .expect("poll_hook without a hook in flight")
            .as_mut()
            .poll(cx);
        if poll.is_ready() {
            *hook = None;
        }
        poll
    }

    /// Lends the actor to a handler. Holder only; `shared` lends only beside other
    /// shared ones.
    unsafe fn lend(&self, shared: bool) -> Lent<'static, A> {
        debug_assert!(!(*self.life.get()).state_dropped);
        // `ManuallyDrop<A>` has `A`'s layout. A raw pointer: no `&mut` is made here.
        Lent::new(self.actor.get().cast::<A>(), shared)
    }

    /// Starts handling `msg` in place. Holder only, with no handler in flight.
    pub(crate) unsafe fn begin(&self, msg: M) {
        // Lent shared only when a re-entering call may join it.
        let shared = M::REENTRANT && msg.shared();
        self.ctx.cell.set_busy(msg.chain(), shared);
        *self.running.get() = Some((self.start)(msg, self.lend(shared)));
    }

    /// Whether a handler is in flight. Holder only.
    pub(crate) unsafe fn in_flight(&self) -> bool {
        (*self.running.get()).is_some()
            || (self.reentry.as_ref()).is_some_and(|reentry| !(*reentry.running.get()).is_empty())
    }

    /// The handlers are gone (finished, or dropped after a panic). Holder only.
    pub(crate) unsafe fn end_running(&self) {
        *self.running.get() = None;
        if let Some(reentry) = &self.reentry {
            (*reentry.running.get()).clear();
        }
        self.ctx.cell.set_busy(0, false);
    }

    /// Starts the re-entering calls that may join the handlers in flight: shared
    /// ones, of the chain those belong to, beside handlers that hold the actor shared.
    /// Holder only, with a handler in flight.
    unsafe fn join_reentries(&self, reentry: &Reentry<M, F>) {
        let cell = &self.ctx.cell;
        let mut queue = reentry.queue.lock();
        if queue.is_empty() {
            return;
        }
        let reentered = &mut *reentry.running.get();
        let mut left = VecDeque::new();
        while let Some(msg) = queue.pop_front() {
            if msg.shared() && cell.may_reenter(msg.chain()) {
                reentered.push(Box::pin((self.start)(msg, self.lend(true))));
            } else {
                // It came in as the chain ended: it runs once the actor is idle.
                left.push_back(msg);
            }
        }
        *queue = left;
    }

    /// Polls the handlers in place; drops each once done. Ready when none is left.
    /// Holder only, with a handler in flight.
    pub(crate) unsafe fn poll_running(&self, cx: &mut TaskContext<'_>) -> Poll<()> {
        if let Some(reentry) = &self.reentry {
            reentry.waker.register(cx.waker());
            self.join_reentries(reentry);
        }
        let running = &mut *self.running.get();
        if let Some(handler) = running.as_mut() {
            // SAFETY: the future lives inside the Arc'd slot, which never moves, and
            // it is dropped in place before its memory is reused.
            if Pin::new_unchecked(handler).poll(cx).is_ready() {
                *running = None;
            }
        }
        if let Some(reentry) = &self.reentry {
            let reentered = &mut *reentry.running.get();
            reentered.retain_mut(|handler| handler.as_mut().poll(cx).is_pending());
            if !reentered.is_empty() {
                return Poll::Pending;
            }
        }
        if running.is_some() {
            return Poll::Pending;
        }
        self.end_running();
        Poll::Ready(())
    }
}

impl<A, M, F> Host<M> for Slot<A, M, F>
where
    A: Actor,
    M: Dispatch<A> + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    fn try_run(&self, msg: M, mailbox: &MailboxTx<M>, cx: &mut TaskContext<'_>) -> Result<(), M> {
        let depth = INLINE_DEPTH.with(|d| d.get());
        if !self.inline || depth >= MAX_INLINE_DEPTH {
            return Err(msg);
        }
        if !self.baton.try_inline() {
            return Err(msg);
        }
        if mailbox.has_pending() || self.other_work() {
            // Work is waiting ahead of this call: a task takes it, then this one.
            self.hand_over();
            return Err(msg);
        }
        // SAFETY: we hold the baton (INLINE) until we release or hand it over below.
        unsafe { self.begin(msg) };
        INLINE_DEPTH.with(|d| d.set(depth + 1));
        let polled =
            std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { self.poll_running(cx) }));
        INLINE_DEPTH.with(|d| d.set(depth));
        match polled {
            Ok(Poll::Ready(())) => self.release(),
            // The handler waits on something: a task drives it from here on, with
            // its own waker (which replaces ours).
            Ok(Poll::Pending) => self.hand_over(),
            Err(payload) => {
                // The caller was answered `Panicked` by ReplyTo::answer_with; the
                // task applies the restart policy.
                unsafe { self.end_running() };
                *self.panic.lock() = Some(panic_message(&*payload));
                self.hand_over();
            }
        }
        Ok(())
    }

    fn reenter(&self, msg: M) -> Result<(), M> {
        let Some(reentry) = &self.reentry else {
            return Err(msg);
        };
        if !(msg.reentrant() && msg.shared() && self.ctx.cell.may_reenter(msg.chain())) {
            return Err(msg);
        }
        reentry.queue.lock().push_back(msg);
        // The holder polling the handlers starts it; an idle actor takes it first.
        reentry.waker.wake();
        Slot::schedule(self);
        Ok(())
    }

    fn schedule(&self) {
        Slot::schedule(self);
    }

    fn node(&self) -> &Node {
        &self.ctx.node
    }
}

impl<A, M, F> Slot<A, M, F>
where
    A: Actor,
    M: Dispatch<A> + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// An inline holder hands the baton to a new task.
    fn hand_over(&self) {
        self.baton.hand_over();
        self.spawn_task();
    }
}

impl<A: 'static, M: 'static, F> Drop for Slot<A, M, F> {
    fn drop(&mut self) {
        // Handlers borrow the state: they go first.
        *self.running.get_mut() = None;
        if let Some(reentry) = self.reentry.as_mut() {
            reentry.running.get_mut().clear();
        }
        *self.hook.get_mut() = None;
        if !self.life.get_mut().state_dropped {
            // SAFETY: not dropped yet, and nothing else can reach it any more.
            unsafe { ManuallyDrop::drop(self.actor.get_mut()) };
        }
    }
}

impl<A, M, F> Control for Slot<A, M, F>
where
    A: Actor,
    M: Dispatch<A> + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    fn stop(&self, reason: StopReason) {
        self.ctx.cell.request_stop(reason);
        self.schedule();
    }

    fn wake(&self) {
        self.schedule();
    }
}
