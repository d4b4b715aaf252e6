//! What a running handler knows of the call it handles: its deadline (perhaps
//! lazy, see [`CallDeadline::Within`]) and whether the call was given up. The
//! handler's wrapper owns it ([`Handling`](super::caller::Handling)); the thread's
//! current handler points at it while the wrapper polls, for
//! [`crate::deadline`], [`crate::cancelled`] and the calls the handler makes
//! ([`cancel`](super::cancel)).

use std::cell::Cell;

use tokio::time::Instant;

/// When the caller of a call stops waiting, as its reply slot carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallDeadline {
    /// Never (`with_timeout(Duration::MAX)`, or a node that does not propagate
    /// deadlines).
    Never,
    /// At this instant.
    At(Instant),
    /// This long after the handler first asks (see [`local_deadline_for_call`](super::cancel::local_deadline_for_call)):
    /// a local call made outside any deadline, whose caller reads the clock
    /// only once the handler has had its first poll, so that the clock is not
    /// read for calls whose handler never asks. Before the call leaves its
    /// caller unpolled (queued), the caller settles it to its own deadline
    /// ([`CallDeadline::settle`]); a handler that waits fixes it before its
    /// first poll ends ([`HandlerCall::fix`]). Either way it is never later
    /// than the caller's.
    Within(std::time::Duration),
}

impl CallDeadline {
    /// `Some(instant)`: [`CallDeadline::At`]; `None`: [`CallDeadline::Never`].
    pub(crate) fn from_instant(deadline: Option<Instant>) -> CallDeadline {
        deadline.map_or(CallDeadline::Never, CallDeadline::At)
    }

    /// The instant, if it is fixed.
    pub(crate) fn at(self) -> Option<Instant> {
        match self {
            CallDeadline::At(at) => Some(at),
            _ => None,
        }
    }

    /// A lazy deadline becomes `at`, the deadline its caller waits until.
    pub(crate) fn settle(&mut self, at: Instant) {
        if let CallDeadline::Within(_) = self {
            *self = CallDeadline::At(at);
        }
    }
}

/// What a running handler knows of its call, for [`crate::deadline`], [`crate::cancelled`]
/// and the calls it makes. Owned by the handler's wrapper; read through the
/// thread's current handler while the wrapper polls.
#[derive(Debug)]
pub(crate) struct HandlerCall {
    /// Fixed (read from the clock) when first asked, if it is lazy.
    deadline: Cell<CallDeadline>,
    /// Its call was given up (as of the wrapper's last look).
    cancelled: Cell<bool>,
    /// Someone inside the handler wants to know when it is: the wrapper watches.
    watching: Cell<bool>,
}

impl HandlerCall {
    pub(crate) fn new(deadline: CallDeadline, watching: bool) -> HandlerCall {
        HandlerCall {
            deadline: Cell::new(deadline),
            cancelled: Cell::new(false),
            watching: Cell::new(watching),
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.fix();
        self.deadline.get().at()
    }

    /// Fixes a lazy deadline now, `timeout` from now: the handler asked, or it
    /// waits and its caller is about to read the clock for its own (see
    /// [`CallDeadline::Within`]).
    pub(crate) fn fix(&self) {
        if let CallDeadline::Within(timeout) = self.deadline.get() {
            let at = crate::deadline::after(Instant::now(), timeout);
            self.deadline.set(CallDeadline::At(at));
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }

    /// Asks the wrapper to watch for cancellation from now on.
    pub(crate) fn watch(&self) {
        self.watching.set(true);
    }

    pub(crate) fn is_watching(&self) -> bool {
        self.watching.get()
    }

    pub(crate) fn set_cancelled(&self) {
        self.cancelled.set(true);
    }
}
