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
use crate::local::route::ActorSlot;
use crate::local::stats::{ActorCounters, ActorFigures, InterfaceStats};
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
/// slot can name the handler future's type and keep it in place. It takes the
/// message from where its sender holds it and writes the handler into the room
/// it is given (which must hold none): made there, not made elsewhere and
/// copied in, and the message moved once on its way.
pub(crate) type Start<A, M, F> = fn(&mut Option<M>, Lent<'static, A>, &mut Option<F>);

/// A lifecycle hook running between messages (which one: `Slot::hook_is`). The
/// future is boxed as it is made: a hook that does nothing (the default
/// `on_start`, a future of no size) costs no allocation.
type HookRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Which lifecycle hook ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    /// `on_start`: the actor is (re)started.
    Started,
    /// `on_unreferenced`, and what it decided has been done.
    Unreferenced,
}

/// What a new actor starts with besides its state: its mailbox receiver, its
/// restart policy, and where its calls are counted.
pub(crate) struct Held<A, M: 'static> {
    pub(crate) rx: MailboxRx<M>,
    /// The node's counters of its interface.
    pub(crate) stats: Arc<InterfaceStats>,
    pub(crate) state_dropped: bool,
    pub(crate) restart: Option<(RestartBy, Factory<A>)>,
}

/// The restart bookkeeping, which only the baton's holder touches ([`Turn::life`]).
pub(crate) struct Life<A> {
    /// Whether the actor's state has been dropped (after `on_stop`).
    state_dropped: bool,
    /// How it restarts after a panic, if it does: boxed, since most actors do
    /// not and pay one pointer for it.
    pub(crate) restart: Option<Box<Restarting<A>>>,
}

/// Who restarts an actor after a panic, with what, and when it did so far.
pub(crate) struct Restarting<A> {
    pub(crate) by: RestartBy,
    /// Makes its fresh state.
    pub(crate) factory: Factory<A>,
    /// When it restarted by its own policy, within the policy's window.
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
    running: UnsafeCell<Vec<Pin<Box<Option<F>>>>>,
}

/// The call whose handler runs now (the one in `Slot::running`): where its
/// panic and its latency are counted.
#[derive(Clone, Copy, Default)]
struct Current {
    /// Its method's position in the interface's counters.
    method: usize,
    /// When it arrived from another node (None: sent on this node, not timed).
    arrived: Option<tokio::time::Instant>,
}

/// Room for the handler running on an actor: allocated with its first message
/// and reused for every later one (a handler is written into it and dropped in
/// place). An actor never called costs one pointer here instead of the size of
/// its interface's largest handler future (hundreds of bytes per idle actor),
/// and a call still allocates nothing.
struct Room<F>(Option<Box<Option<F>>>);

impl<F> Room<F> {
    const EMPTY: Room<F> = Room(None);

    /// The room (which must be empty) for a handler to be written into, made
    /// first if there is none yet.
    fn empty(&mut self) -> &mut Option<F> {
        self.0.get_or_insert_with(|| Box::new(None))
    }

    /// The handler in the room, if any. It never moves while there: the room is
    /// a box of its own that lives as long as the slot.
    fn get(&mut self) -> Option<&mut F> {
        self.0.as_deref_mut().and_then(Option::as_mut)
    }

    fn is_some(&self) -> bool {
        self.0.as_deref().is_some_and(Option::is_some)
    }

    /// Drops the handler in place; the room stays for the next one.
    fn clear(&mut self) {
        if let Some(room) = &mut self.0 {
            **room = None;
        }
    }
}

/// An actor: its state, the handler running on it, and the baton.
///
/// The `UnsafeCell`s are private to this module and touched only through a
/// [`Turn`], which exists only while its owner holds the baton.
pub(crate) struct Slot<A: 'static, M: 'static, F> {
    // Field order matters: `running`, `reentry` and `hook` borrow `actor` (and `hook`
    // `ctx`), so they are declared (and dropped) first.
    running: UnsafeCell<Room<F>>,
    /// The call `running` handles. Holder only.
    current: UnsafeCell<Current>,
    /// Re-entering calls and the handlers they run (only for interfaces with
    /// `#[reentrant]` methods: the others pay one pointer).
    reentry: Option<Box<Reentry<M, F>>>,
    /// `on_start` or `on_unreferenced`, while it runs.
    hook: UnsafeCell<Option<HookRun>>,
    /// Which hook `hook` is (apart from it: a byte where the slot has room).
    hook_is: UnsafeCell<Hook>,
    /// Dropped (once) right after `on_stop`, so a stopped actor's resources go at
    /// once even while references to it remain; `Life::state_dropped` records that.
    actor: UnsafeCell<ManuallyDrop<A>>,
    life: UnsafeCell<Life<A>>,
    /// The mailbox's receiving side. Internally synchronised, so it lives outside
    /// the cells and anyone may ask whether it has work; only the holder takes
    /// from it (that keeps each sender's order).
    rx: MailboxRx<M>,
    /// Whether callers may run handlers on their own tasks (`SpawnOptions::inline`).
    inline: bool,
    baton: Baton,
    /// A panic of an inline run or an inline start, for the task to handle.
    pub(crate) panic: Mutex<Option<String>>,
    start: Start<A, M, F>,
    pub(crate) ctx: Context,
    /// Its supervisor, if it has one (also in `life.restart`; here it can be read
    /// without the baton, for pause requests).
    pub(crate) supervisor: Option<Arc<dyn Supervision>>,
    /// The node's counters of the actor's interface, per method.
    stats: Arc<InterfaceStats>,
    /// The actor's own counters.
    pub(crate) counters: ActorCounters,
    me: Weak<Self>,
}

// SAFETY: sharing a `Slot` between threads shares its `UnsafeCell`s, which only a
// `Turn` touches. Aliasing: a `Turn` exists only while its owner holds the baton,
// and the baton has one holder at a time, so no two threads touch the cells at
// once. Ordering: each new holder acquires the baton from the previous holder's
// release (or is a task spawned by it), so it sees the previous holder's writes.
// What crosses threads that way is `A`, `M` and `F` by value (and `&mut A` lent
// to handlers), hence the `Send` bounds; nothing is ever used from two threads at
// once, so `Sync` is not needed of them.
unsafe impl<A: Send + 'static, M: Send, F: Send> Sync for Slot<A, M, F> {}
// SAFETY: as for `Sync`: moving the slot moves `A`, `M` and `F`, all `Send`.
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
            running: UnsafeCell::new(Room::EMPTY),
            current: UnsafeCell::new(Current::default()),
            reentry: M::REENTRANT.then(|| {
                Box::new(Reentry {
                    queue: Mutex::new(VecDeque::new()),
                    waker: AtomicWaker::new(),
                    running: UnsafeCell::new(Vec::new()),
                })
            }),
            hook: UnsafeCell::new(None),
            hook_is: UnsafeCell::new(Hook::Started),
            actor: UnsafeCell::new(ManuallyDrop::new(actor)),
            life: UnsafeCell::new(Life {
                state_dropped: held.state_dropped,
                restart: held.restart.map(|(by, factory)| {
                    Box::new(Restarting {
                        by,
                        factory,
                        restarts: VecDeque::new(),
                    })
                }),
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
            stats: held.stats,
            counters: ActorCounters::default(),
            me: me.clone(),
        });
        // Before on_start: the supervisor learns of the child before any report from it.
        if let Some(supervisor) = &slot.supervisor {
            let control = Arc::downgrade(&slot) as Weak<dyn Control>;
            supervisor.attach(&slot.ctx.cell, control);
        }
        // SAFETY: aliasing: the baton was created held (`held_by_task`) and
        // `attach` can only ask for a stop or a pause (`schedule`, which finds it
        // held), so this is its only holder until this turn ends below. Ordering:
        // this thread created the cells.
        let mut turn = unsafe { Turn::new(&slot) };
        turn.begin_start();
        let mut cx = TaskContext::from_waker(Waker::noop());
        match std::panic::catch_unwind(AssertUnwindSafe(|| turn.poll_hook(&mut cx))) {
            // Work may have come in without a notification while it started (a stop
            // asked by `attach`): look before letting go.
            Ok(Poll::Ready(_)) if slot.has_work() => turn.start_task(),
            Ok(Poll::Ready(_)) => turn.release_or_start_task(),
            // Still starting: the task polls it again, with a waker that works.
            Ok(Poll::Pending) => turn.start_task(),
            Err(payload) => {
                turn.drop_hook();
                ActorCounters::count(&slot.counters.panics);
                *slot.panic.lock() = Some(panic_message(&*payload));
                turn.start_task();
            }
        }
        slot
    }

    /// Makes sure someone will look at this actor: spawns a task if it is idle.
    /// Call after publishing work for it (queueing a message, asking for a stop).
    pub(crate) fn schedule(&self) {
        if self.baton.schedule() {
            // SAFETY: aliasing: `schedule` just took the free baton for a task, so
            // nobody else holds it. Ordering: its Acquire read the previous
            // holder's Release.
            unsafe { Turn::new(self) }.start_task();
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
}

/// The baton's holder at work on a [`Slot`]: the only way to its `UnsafeCell`s.
///
/// A turn exists only while its owner holds the slot's baton: [`Turn::new`] says
/// so, and a turn ends by giving the baton up ([`Turn::release`]) or passing it
/// to a task it starts ([`Turn::start_task`]); dropping one keeps the baton taken
/// for good (a stopped actor's task does that). Since the baton has one holder
/// at a time, every method below may touch the cells without anyone else doing so
/// concurrently (aliasing across threads), and since each holder acquires the
/// baton from the previous one's release, it sees that holder's writes (ordering).
///
/// Within a turn, references into the cells never outlive a method call, with
/// one exception, the actor: it is lent to a hook or to handlers (which live in the
/// cells) or to the caller of [`Turn::actor`] (for the `&mut self` borrow). Every
/// method that lends, replaces or drops it first checks that no such loan is
/// outstanding ([`Turn::assert_unlent`]), and `&mut self` keeps the borrow checker
/// on the last kind.
pub(crate) struct Turn<'a, A: 'static, M: 'static, F> {
    slot: &'a Slot<A, M, F>,
}

impl<A: 'static, M: 'static, F> std::ops::Deref for Turn<'_, A, M, F> {
    type Target = Slot<A, M, F>;

    fn deref(&self) -> &Self::Target {
        self.slot
    }
}

impl<'a, A, M, F> Turn<'a, A, M, F>
where
    A: Actor,
    M: Dispatch<A> + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// The holder's access to `slot`.
    ///
    /// # Safety
    /// The caller holds `slot`'s baton, took it with an Acquire that read the
    /// previous holder's Release (or was spawned by the holder that took it), and
    /// keeps it until the turn ends; no other turn of this slot is live meanwhile.
    unsafe fn new(slot: &'a Slot<A, M, F>) -> Self {
        Turn { slot }
    }

    /// Gives the baton up, unless work was announced since the holder last looked:
    /// then the baton stays with this turn, now as a task's, and it must look
    /// again (`Some`). Call with no handler or hook in flight.
    #[must_use = "if it returns a turn, the caller still holds the baton"]
    pub(crate) fn release(self) -> Option<Self> {
        debug_assert!(!self.hook_in_flight() && !self.in_flight());
        // Nothing is read after a successful release: a new holder may already
        // be at work.
        if self.slot.baton.release() {
            None
        } else {
            Some(self)
        }
    }

    /// Gives the baton up, or starts a task if work was announced meanwhile.
    pub(crate) fn release_or_start_task(self) {
        if let Some(turn) = self.release() {
            turn.start_task();
        }
    }

    /// Ends this turn by starting the actor's task, which holds the baton from now
    /// on (as `TASK`: an inline holder is handed over first).
    pub(crate) fn start_task(self) {
        self.slot.baton.hand_over();
        let Some(me) = self.slot.me.upgrade() else {
            return; // being dropped: nobody can reach it any more
        };
        self.slot.ctx.node.spawn_task(async move {
            // SAFETY: aliasing: the baton is held as `TASK` for this task, and the
            // turn that started it ended right there. Ordering: the spawn orders
            // this task after the writes of that turn (and `hand_over` acquired
            // those of every `schedule` so far).
            let turn = unsafe { Turn::new(&me) };
            turn.run().await;
        });
    }

    /// Whether a task holds the baton (this turn's, for assertions).
    pub(crate) fn is_task(&self) -> bool {
        self.slot.baton.held_by_a_task()
    }

    /// Panics if the actor is lent to a hook or a handler. Every method that lends
    /// the actor, replaces it or drops it checks this first.
    fn assert_unlent(&self) {
        assert!(
            !self.hook_in_flight() && !self.in_flight(),
            "the actor is lent to a hook or a handler"
        );
        // SAFETY: aliasing: read through a shared reference that ends here; only
        // turn methods write `life`, and none of them is running now (`&self`
        // excludes `&mut self`, and this turn is the only one). Ordering: the turn's.
        let dropped = unsafe { (*self.slot.life.get()).state_dropped };
        assert!(!dropped, "the actor's state was dropped");
    }

    /// The actor's state, for the holder itself (`on_stop`).
    pub(crate) fn actor(&mut self) -> &mut A {
        self.assert_unlent();
        // SAFETY: aliasing: not lent (checked above), and the borrow of `self`
        // keeps this turn from lending it again while the reference lives; no
        // other turn exists. Ordering: the turn's.
        unsafe { &mut *self.slot.actor.get() }
    }

    /// The actor's state for a hook, which lives in `hook` (so `'static` here):
    /// it is dropped before the state is replaced or dropped (`assert_unlent`),
    /// and before the slot drops the state (`Slot::drop`).
    fn actor_for_hook(&mut self) -> &'static mut A {
        self.assert_unlent();
        // SAFETY: aliasing: not lent (checked above); the hook that takes it is
        // now the only user until it is dropped, which every other loan waits for
        // (`assert_unlent`). The `'static` is bounded by the slot's `Drop`, which
        // drops the hook before the state. Ordering: the turn's.
        unsafe { &mut *self.slot.actor.get().cast::<A>() }
    }

    /// The restart bookkeeping.
    pub(crate) fn life(&mut self) -> &mut Life<A> {
        // SAFETY: aliasing: `life` is never lent beyond a method call except here,
        // for the borrow of `self`, which keeps this turn from reading it again
        // meanwhile; no other turn exists. Ordering: the turn's.
        unsafe { &mut *self.slot.life.get() }
    }

    /// Swaps in fresh state; the old one is dropped without `on_stop` (after a
    /// panic it may be inconsistent, and a restart is not a stop).
    pub(crate) fn replace_state(&mut self, fresh: A) {
        self.assert_unlent();
        // SAFETY: aliasing: not lent (checked above), and `&mut self` excludes a
        // borrow from `actor`; no other turn exists. Ordering: the turn's.
        unsafe { **self.slot.actor.get() = fresh };
    }

    /// Drops the actor's state for good, after the last use of it.
    pub(crate) fn drop_state(&mut self) {
        if self.life().state_dropped {
            return;
        }
        self.assert_unlent();
        self.life().state_dropped = true;
        // SAFETY: aliasing: not lent (checked above), and `&mut self` excludes a
        // borrow from `actor`; `state_dropped` (now set) keeps every later loan
        // away, and `Slot::drop` from dropping it twice. Ordering: the turn's.
        unsafe { ManuallyDrop::drop(&mut *self.slot.actor.get()) };
    }

    /// Whether `on_start` or `on_unreferenced` is in flight.
    pub(crate) fn hook_in_flight(&self) -> bool {
        // SAFETY: aliasing: a shared read that ends here; `hook` is written only
        // by turn methods (`&mut self`, excluded by this `&self`) of the only turn.
        // Ordering: the turn's.
        unsafe { (*self.slot.hook.get()).is_some() }
    }

    /// Drops the hook in flight (it panicked).
    pub(crate) fn drop_hook(&mut self) {
        // SAFETY: aliasing: turn methods never keep a reference to `hook` past the
        // call, and this is the only turn. Ordering: the turn's.
        unsafe { *self.slot.hook.get() = None };
    }

    /// Starts `on_start` in place. The hook borrows the actor's context where
    /// the slot keeps it instead of a clone of it, so the future boxed is the
    /// actor's own (no allocation when it has no size, as the default's).
    pub(crate) fn begin_start(&mut self) {
        let actor = self.actor_for_hook();
        // SAFETY: the context lives in the slot, which never moves (it is in an
        // `Arc`) and drops the hook before the context (`Slot::drop`, and the
        // field order); the hook only reads it. The `'static` is bounded by that.
        let ctx: &'static Context = unsafe { &*std::ptr::from_ref(&self.slot.ctx) };
        let hook: HookRun = Box::pin(actor.on_start(ctx));
        // SAFETY: aliasing: turn methods never keep a reference to `hook` or
        // `hook_is` past the call, and this is the only turn. Ordering: the turn's.
        unsafe {
            *self.slot.hook.get() = Some(hook);
            *self.slot.hook_is.get() = Hook::Started;
        }
    }

    /// Starts `on_unreferenced` in place; `withdraw` withdraws the export if the
    /// actor chooses to stop (and nothing has referred to it again meanwhile).
    /// Between messages.
    pub(crate) fn begin_unreferenced(&mut self, withdraw: Withdraw) {
        let actor = self.actor_for_hook();
        let ctx = self.ctx.clone();
        let hook: HookRun = Box::pin(async move {
            if actor.on_unreferenced(&ctx).await != Unreferenced::Stop {
                return;
            }
            if let Some(last_route) = withdraw() {
                ctx.cell.request_stop(StopReason::Unreferenced);
                drop(last_route);
            }
        });
        // SAFETY: aliasing: turn methods never keep a reference to `hook` or
        // `hook_is` past the call, and this is the only turn. Ordering: the turn's.
        unsafe {
            *self.slot.hook.get() = Some(hook);
            *self.slot.hook_is.get() = Hook::Unreferenced;
        }
    }

    /// Polls the lifecycle hook in flight; clears it once done.
    pub(crate) fn poll_hook(&mut self, cx: &mut TaskContext<'_>) -> Poll<Hook> {
        // SAFETY: aliasing: turn methods never keep a reference to `hook` past the
        // call (the hook's own borrow of the actor is in the hook), and this is
        // the only turn. Ordering: the turn's.
        let hook = unsafe { &mut *self.slot.hook.get() };
        let run = hook.as_mut().expect("poll_hook without a hook in flight");
        if run.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        *hook = None;
        // SAFETY: as for `hook`.
        Poll::Ready(unsafe { *self.slot.hook_is.get() })
    }

    /// Lends the actor to a handler; `shared` lends only beside other shared ones.
    /// The caller checked that no conflicting loan is outstanding.
    fn lend(&self, shared: bool) -> Lent<'static, A> {
        // `ManuallyDrop<A>` has `A`'s layout. A raw pointer: no reference is made here.
        let actor = self.slot.actor.get().cast::<A>();
        // SAFETY: the handler that takes the lend lives in `running` or
        // `reentry.running` and is dropped before the actor is lent otherwise,
        // replaced or dropped (`assert_unlent`). Aliasing: an exclusive lend is made
        // only when nothing else is lent (`begin`); a shared one only beside shared
        // ones (`begin`, `join_reentries`). Ordering: the turn's.
        unsafe { Lent::new(actor, shared) }
    }

    /// Starts handling `msg` in place, with nothing else in flight.
    pub(crate) fn begin(&mut self, msg: &mut Option<M>) {
        self.assert_unlent();
        let Some(first) = msg.as_ref() else {
            unreachable!("begin without a message")
        };
        // Lent shared only when a re-entering call may join it.
        let shared = M::REENTRANT && first.shared();
        self.ctx.cell.set_busy(first.chain(), shared);
        let current = self.count_call(first);
        // SAFETY: aliasing: turn methods never keep a reference to `current` past
        // the call, and this is the only turn. Ordering: the turn's.
        unsafe { *self.slot.current.get() = current };
        let lent = self.lend(shared);
        // SAFETY: aliasing: turn methods never keep a reference to `running` past
        // the call, and this is the only turn. Ordering: the turn's. Pinning: the
        // room is empty (`assert_unlent`: no handler runs), so nothing pinned
        // is overwritten.
        let room = unsafe { (*self.slot.running.get()).empty() };
        (self.slot.start)(msg, lent, room);
    }

    /// Counts a call whose handler starts now: two relaxed adds, by position.
    #[inline]
    fn count_call(&self, msg: &M) -> Current {
        let method = msg.method_index();
        if let Some(counters) = self.slot.stats.method(method) {
            counters
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // Only the baton's holder counts its calls.
        ActorCounters::bump(&self.slot.counters.handled);
        Current {
            method,
            arrived: msg.arrived(),
        }
    }

    /// The handler in `running` finished: a call from another node is timed
    /// from its arrival (the one clock reading counting adds to a call).
    fn count_end(&self) {
        // SAFETY: aliasing: a shared read that ends here; `current` is written
        // only by `begin` (`&mut self`, excluded by this `&self`) of the only
        // turn. Ordering: the turn's.
        let current = unsafe { *self.slot.current.get() };
        if let (Some(arrived), Some(counters)) =
            (current.arrived, self.slot.stats.method(current.method))
        {
            counters.latency.record(arrived.elapsed());
        }
    }

    /// A handler panicked: counted for the actor, and as `Panicked` for the
    /// method of the call in `running` (a re-entered handler's panic is
    /// counted under the call it re-entered).
    pub(crate) fn count_panic(&self) {
        ActorCounters::count(&self.slot.counters.panics);
        // SAFETY: as in `count_end`.
        let current = unsafe { *self.slot.current.get() };
        if let Some(counters) = self.slot.stats.method(current.method) {
            counters.error(&crate::error::CallError::Panicked {
                message: String::new(),
            });
        }
    }

    /// Whether a handler is in flight.
    pub(crate) fn in_flight(&self) -> bool {
        // SAFETY: aliasing: shared reads that end here; `running` and
        // `reentry.running` are written only by turn methods (`&mut self`, excluded
        // by this `&self`) of the only turn. Ordering: the turn's.
        unsafe {
            (*self.slot.running.get()).is_some()
                || (self.slot.reentry.as_ref())
                    .is_some_and(|reentry| !(*reentry.running.get()).is_empty())
        }
    }

    /// The handlers are gone (finished, or dropped after a panic).
    pub(crate) fn end_running(&mut self) {
        // SAFETY: aliasing: turn methods never keep a reference to `running` or
        // `reentry.running` past the call, and this is the only turn. Ordering:
        // the turn's.
        unsafe {
            (*self.slot.running.get()).clear();
            if let Some(reentry) = &self.slot.reentry {
                (*reentry.running.get()).clear();
            }
        }
        self.ctx.cell.set_busy(0, false);
    }

    /// Starts the re-entering calls that may join the handlers in flight: shared
    /// ones, of the chain those belong to, beside handlers that hold the actor shared.
    fn join_reentries(&mut self, reentry: &Reentry<M, F>) {
        let cell = &self.ctx.cell;
        let mut queue = reentry.queue.lock();
        if queue.is_empty() {
            return;
        }
        let mut left = VecDeque::new();
        while let Some(msg) = queue.pop_front() {
            // `may_reenter`: every handler in flight holds the actor shared.
            if msg.shared() && cell.may_reenter(msg.chain()) {
                self.count_call(&msg);
                let mut handler = Box::new(None);
                (self.slot.start)(&mut Some(msg), self.lend(true), &mut handler);
                let handler = Box::into_pin(handler);
                // SAFETY: aliasing: turn methods never keep a reference to
                // `reentry.running` past the call, and this is the only turn.
                // Ordering: the turn's.
                unsafe { (*reentry.running.get()).push(handler) };
            } else {
                // It came in as the chain ended: it runs once the actor is idle.
                left.push_back(msg);
            }
        }
        *queue = left;
    }

    /// Polls the handlers in place; drops each once done. Ready when none is left.
    pub(crate) fn poll_running(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let slot = self.slot;
        if let Some(reentry) = &slot.reentry {
            reentry.waker.register(cx.waker());
            self.join_reentries(reentry);
        }
        // SAFETY: aliasing: turn methods never keep a reference to `running` past
        // the call, and this is the only turn; the handler borrows the actor, not
        // `running`. Ordering: the turn's.
        let running = unsafe { &mut *slot.running.get() };
        if let Some(handler) = running.get() {
            // SAFETY: pinning: the handler lives in the slot's room, a box that
            // never moves while the slot lives, and is only ever dropped in place
            // (`clear` here, in `end_running` and in `Slot::drop`), never moved out.
            if unsafe { Pin::new_unchecked(handler) }.poll(cx).is_ready() {
                running.clear();
                self.count_end();
            }
        }
        if let Some(reentry) = &slot.reentry {
            // SAFETY: aliasing: as for `running`; the re-entered handlers are boxed
            // and borrow the actor, not this vector. Ordering: the turn's.
            let reentered = unsafe { &mut *reentry.running.get() };
            reentered.retain_mut(|handler| {
                let handler = handler.as_mut().as_pin_mut();
                handler.is_some_and(|handler| handler.poll(cx).is_pending())
            });
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

    /// The next queued message. Only the holder takes from the mailbox. An ask
    /// nobody waits for any more is dropped unrun (and counted): its caller is
    /// gone (its node's connection lost), gave it up, or its deadline passed.
    pub(crate) fn next_message(&mut self) -> Option<M> {
        loop {
            let msg = self.slot.rx.try_recv()?;
            match msg.unwanted() {
                None => return Some(msg),
                Some(why) => {
                    self.count_unanswered(&msg, &why.error());
                    self.ctx.node.count_unwanted(why)
                }
            }
        }
    }

    /// Refuses new messages and hands back those still queued: the actor stops.
    pub(crate) fn close_mailbox(&mut self) -> Vec<M> {
        let left = self.slot.rx.close_and_drain();
        for msg in &left {
            self.count_unanswered(msg, &crate::error::CallError::ActorStopped);
        }
        left
    }
}

impl<A, M, F> ActorSlot<M> for Slot<A, M, F>
where
    A: Actor,
    M: Dispatch<A> + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    fn try_run(
        &self,
        msg: &mut Option<M>,
        mailbox: &MailboxTx<M>,
        cx: &mut TaskContext<'_>,
    ) -> bool {
        let depth = INLINE_DEPTH.with(|d| d.get());
        if !self.inline || depth >= MAX_INLINE_DEPTH {
            return false;
        }
        if !self.baton.try_inline() {
            return false;
        }
        // SAFETY: aliasing: `try_inline` took the free baton, so nobody else holds
        // it until this turn ends below. Ordering: its Acquire read the previous
        // holder's Release.
        let mut turn = unsafe { Turn::new(self) };
        if mailbox.has_pending() || self.other_work() {
            // Work is waiting ahead of this call: a task takes it, then this one.
            turn.start_task();
            return false;
        }
        turn.begin(msg);
        INLINE_DEPTH.with(|d| d.set(depth + 1));
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| turn.poll_running(cx)));
        INLINE_DEPTH.with(|d| d.set(depth));
        match polled {
            Ok(Poll::Ready(())) => turn.release_or_start_task(),
            // The handler waits on something: a task drives it from here on, with
            // its own waker (which replaces ours).
            Ok(Poll::Pending) => turn.start_task(),
            Err(payload) => {
                // The caller was answered `Panicked` by ReplyTo::answer_with; the
                // task applies the restart policy.
                turn.count_panic();
                turn.end_running();
                *self.panic.lock() = Some(panic_message(&*payload));
                turn.start_task();
            }
        }
        true
    }

    fn count_unanswered(&self, msg: &M, err: &crate::error::CallError) {
        if let Some(counters) = self.stats.method(msg.method_index()) {
            counters.error(err);
        }
    }

    fn settle_deadline(&self, msg: &mut M, at: tokio::time::Instant) {
        msg.settle_deadline(at);
    }

    fn stats(&self) -> &InterfaceStats {
        &self.stats
    }

    fn reenter(&self, msg: &mut Option<M>) -> bool {
        let Some(reentry) = &self.reentry else {
            return false;
        };
        let joins =
            |msg: &M| msg.reentrant() && msg.shared() && self.ctx.cell.may_reenter(msg.chain());
        let Some(msg) = msg.take_if(|msg| joins(msg)) else {
            return false;
        };
        reentry.queue.lock().push_back(msg);
        // The holder polling the handlers starts it; an idle actor takes it first.
        reentry.waker.wake();
        Slot::schedule(self);
        true
    }

    fn schedule(&self) {
        Slot::schedule(self);
    }

    fn home(&self) -> &(dyn std::any::Any + Send + Sync) {
        self.ctx.node.host()
    }
}

impl<A: 'static, M: 'static, F> Drop for Slot<A, M, F> {
    fn drop(&mut self) {
        // Handlers borrow the state: they go first.
        self.running.get_mut().clear();
        if let Some(reentry) = self.reentry.as_mut() {
            reentry.running.get_mut().clear();
        }
        *self.hook.get_mut() = None;
        if !self.life.get_mut().state_dropped {
            // SAFETY: aliasing: `&mut self`, and the hook and handlers that borrowed
            // the state were dropped just above; `state_dropped` says it is still
            // there. Ordering: dropping the last `Arc` acquired every other
            // owner's release of it, holders included.
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

    fn figures(&self) -> ActorFigures {
        let counters = &self.counters;
        ActorFigures {
            name: self.ctx.cell.name.clone(),
            actor_type: std::any::type_name::<A>(),
            interface: self.stats.name,
            mailbox: self.rx.mailbox(),
            queued: self.rx.depth(),
            busy: !self.baton.is_free(),
            handled: ActorCounters::read(&counters.handled),
            panics: ActorCounters::read(&counters.panics),
            restarts: ActorCounters::read(&counters.restarts),
            supervisor: self.supervisor.as_ref().and_then(|s| s.supervisor()),
        }
    }
}
