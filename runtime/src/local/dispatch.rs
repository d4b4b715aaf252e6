//! The contract between the local core and the generated dispatcher (the
//! skeleton): [`Dispatch`] runs one message on an actor, which the core lends it
//! as a [`Lent`] for as long as the handler runs.

use std::future::Future;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The actor a handler runs on, lent by the runtime for as long as the handler runs.
///
/// The dispatcher borrows the actor through it the way the method's receiver
/// does: [`Lent::exclusive`] for `&mut self`, [`Lent::shared`] for `&self`. The
/// runtime lends an actor to several handlers at once only when all of them hold
/// it shared (a `#[reentrant]` call interleaving with the `&self` handler it
/// re-entered); such a lend refuses `exclusive`.
pub struct Lent<'a, A> {
    ptr: NonNull<A>,
    shared: bool,
    _borrow: PhantomData<&'a mut A>,
}

// SAFETY: an exclusive lend is a `&mut A` (Send when `A: Send`); a shared one only
// yields `&A` through `shared`, which requires `A: Sync`. Sending a lend moves the
// borrow; the runtime hands a lent actor between threads only with the baton,
// whose Release/Acquire orders the uses.
unsafe impl<A: Send> Send for Lent<'_, A> {}

impl<A> std::fmt::Debug for Lent<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent")
            .field("actor", &std::any::type_name::<A>())
            .field("shared", &self.shared)
            .finish()
    }
}

impl<'a, A> Lent<'a, A> {
    /// Lends `actor`; `shared` when other shared lends of it may be live meanwhile.
    ///
    /// # Safety
    /// While the lend (or a borrow taken from it) lives, `actor` is used through
    /// nothing but lends made by this function, and if `shared` is false, through
    /// nothing but this one.
    pub(crate) unsafe fn new(actor: *mut A, shared: bool) -> Self {
        Lent {
            ptr: NonNull::new(actor).expect("an actor's address is never null"),
            shared,
            _borrow: PhantomData,
        }
    }

    /// The actor, exclusively: for a `&mut self` method.
    ///
    /// # Panics
    /// If the message said it takes the actor shared ([`Dispatch::shared`]).
    pub fn exclusive(self) -> &'a mut A {
        assert!(
            !self.shared,
            "a message that takes its actor shared (`Dispatch::shared`) asked for it exclusively"
        );
        // SAFETY: aliasing: an exclusive lend is the only access to the actor while
        // it lives (`Lent::new`'s contract), and it is consumed here, so this is the
        // only reference for `'a`. Ordering: whoever made the lend held the actor
        // (the baton) and this runs on its thread or on a task it handed over to.
        unsafe { &mut *self.ptr.as_ptr() }
    }

    /// The actor, shared: for a `&self` method.
    pub fn shared(self) -> &'a A
    where
        A: Sync,
    {
        // SAFETY: aliasing: every live lend of the actor is shared, or this is the
        // only one (`Lent::new`'s contract), so only shared references exist for
        // `'a`; `A: Sync` lets them be used from several handlers. Ordering: as for
        // `exclusive`.
        unsafe { &*self.ptr.as_ptr() }
    }
}

/// An exclusive borrow lends the actor exclusively: to run a message on an actor
/// you hold, as in a test of the dispatcher (`msg.dispatch((&mut actor).into())`).
impl<'a, A> From<&'a mut A> for Lent<'a, A> {
    fn from(actor: &'a mut A) -> Self {
        // SAFETY: aliasing: the borrow is exclusive for `'a`, so this lend is the only
        // access to the actor meanwhile. Ordering: the borrow checker's, one thread.
        unsafe { Lent::new(actor, false) }
    }
}

/// Runs a message on an actor: the generated dispatcher (the skeleton).
pub trait Dispatch<A>: Send + 'static {
    /// Whether any method of the interface may re-enter an actor (`#[reentrant]`).
    /// When none can, the runtime skips the bookkeeping re-entry needs.
    const REENTRANT: bool = false;

    /// The names of the interface's methods, in declaration order: what the
    /// node's per-method counters are kept under (none: the calls are counted
    /// per actor only).
    const METHODS: &'static [&'static str] = &[];

    /// Calls the method the message names on `actor` and answers its reply slot.
    fn dispatch(self, actor: Lent<'_, A>) -> impl Future<Output = ()> + Send;

    /// The position in [`Dispatch::METHODS`] of the method the message calls:
    /// how its counters are found without a lookup.
    fn method_index(&self) -> usize {
        0
    }

    /// When the call arrived from another node (its reply slot's); None for a
    /// call from this node. Such calls are timed until their handler ends.
    fn arrived(&self) -> Option<tokio::time::Instant> {
        None
    }

    /// The call chain the message belongs to (its reply slot's; 0 for none).
    fn chain(&self) -> u64 {
        0
    }

    /// Why the message should be dropped unrun, if it should: nobody can take
    /// its answer any more (an ask from a node whose connection is lost), its
    /// caller gave it up, or its deadline passed while it waited.
    fn unwanted(&self) -> Option<crate::local::cancel::Unwanted> {
        None
    }

    /// The message leaves its caller unpolled (it is queued): a lazy deadline in
    /// its reply slot becomes `at`, when its caller stops waiting. Every message
    /// that carries a reply slot must pass this on to it
    /// ([`ReplyTo::settle_deadline`](crate::rt::ReplyTo::settle_deadline)).
    fn settle_deadline(&mut self, at: tokio::time::Instant);

    /// Whether the method takes `&self`: the runtime then lends the actor shared,
    /// and may run it beside other shared handlers.
    fn shared(&self) -> bool {
        false
    }

    /// Whether the method is `#[reentrant]`: a call of the chain the actor is busy
    /// with runs at once, interleaved with the `&self` handler(s) awaiting it,
    /// instead of failing with `CallError::Cycle`.
    fn reentrant(&self) -> bool {
        false
    }
}
