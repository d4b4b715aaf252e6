//! The reply slot a call carries to its actor.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::error::CallError;
use crate::local::call::CallDeadline;
use crate::local::caller::{Caller, Handling};
use crate::local::cancel::{CancelSignal, Unwanted};

/// Where the result of one call goes. The generated dispatcher fills it; a user
/// sees it only in generated code.
///
/// A `ReplyTo` that is dropped unanswered still answers, with
/// [`CallError::ActorStopped`] (the actor stopped with the message queued), and
/// [`ReplyTo::answer_with`] answers [`CallError::Panicked`] when the handler panics.
/// So a caller never waits for a reply that cannot come.
pub struct ReplyTo<T> {
    slot: Slot<T>,
    /// Who sent the call, when it came from another node (see [`crate::caller()`]).
    caller: Option<Arc<Caller>>,
    /// The call chain the call belongs to (0: none, as for tells): calls its
    /// handler makes carry it on, and an actor busy with a call of a chain refuses
    /// another of the same chain (a cycle) instead of deadlocking.
    chain: u64,
    /// Its handler has started: dropped now, the call may have had effects.
    running: bool,
    /// A caller on another node waits for the answer (an ask, not a tell).
    awaited_remotely: bool,
    /// When the caller stops waiting ([`crate::deadline`]).
    deadline: CallDeadline,
    /// When the call arrived from another node (None: sent on this node).
    arrived: Option<Instant>,
    /// Set when a caller on another node gives the call up (a `Cancel` frame).
    cancel: Option<Arc<CancelSignal>>,
    /// Whether a running handler is told that its call was given up; false for
    /// `#[exactly_once]` calls, which are only dropped while queued.
    cancel_running: bool,
    /// The span the handler runs in, with its outcome recorded (the `otel`
    /// feature: a call from another node, see `crate::trace`).
    #[cfg(feature = "otel")]
    span: Option<tracing::Span>,
}

type Sink<T> = Box<dyn FnOnce(Result<T, CallError>) + Send>;

enum Slot<T> {
    /// A tell: nobody waits.
    Nobody,
    /// A caller in this process.
    Local(oneshot::Sender<Result<T, CallError>>),
    /// A caller in this process running the handler inline, whose answer waits
    /// on its own stack ([`InlineAnswer`]) while that run lasts.
    Inline(Token),
    /// Anything else (a transport's encoder, a test probe).
    Sink(Sink<T>),
}

impl<T> ReplyTo<T> {
    /// A fresh reply slot: a call from this node, outside any chain, no
    /// deadline, not cancellable from afar.
    fn with_slot(slot: Slot<T>) -> Self {
        ReplyTo {
            slot,
            caller: None,
            chain: 0,
            running: false,
            awaited_remotely: false,
            deadline: CallDeadline::Never,
            arrived: None,
            cancel: None,
            cancel_running: true,
            #[cfg(feature = "otel")]
            span: None,
        }
    }

    /// A reply nobody waits for (tells).
    pub fn nobody() -> Self {
        ReplyTo::with_slot(Slot::Nobody)
    }

    pub(crate) fn local(tx: oneshot::Sender<Result<T, CallError>>) -> Self {
        ReplyTo::with_slot(Slot::Local(tx))
    }

    /// A reply delivered to `sink`, exactly once: by [`ReplyTo::send`], or with the
    /// error described on [`ReplyTo`] if it is dropped unanswered.
    pub fn sink(sink: impl FnOnce(Result<T, CallError>) + Send + 'static) -> Self {
        ReplyTo::with_slot(Slot::Sink(Box::new(sink)))
    }

    /// The same reply slot, for an ask whose caller on another node waits for it.
    pub(crate) fn awaited_remotely(mut self) -> Self {
        self.awaited_remotely = true;
        self
    }

    /// Whether nobody can take the answer any more: the ask came from another
    /// node whose connection is lost. Its handler need not run.
    fn abandoned(&self) -> bool {
        self.awaited_remotely && !self.running && self.caller.as_ref().is_some_and(|c| c.is_gone())
    }

    /// Why the call should be dropped unrun rather than handled, if it should:
    /// its caller's node is gone, its caller gave it up, or (a call from another
    /// node) its deadline passed while it waited.
    #[doc(hidden)]
    pub fn unwanted(&self) -> Option<Unwanted> {
        if self.running {
            return None;
        }
        match &self.slot {
            Slot::Nobody => return None,
            // The caller dropped its receiver: it gave up (or timed out).
            Slot::Local(tx) if tx.is_closed() => return Some(Unwanted::Cancelled),
            // The caller runs it now: it has not given up.
            Slot::Local(_) | Slot::Inline(_) => return None,
            Slot::Sink(_) => {}
        }
        if Caller::any_gone() && self.abandoned() {
            return Some(Unwanted::CallerGone);
        }
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Some(Unwanted::Cancelled);
        }
        if self.deadline.at().is_some_and(|d| Instant::now() >= d) {
            return Some(Unwanted::Expired);
        }
        None
    }

    /// The same reply slot, its handler run in `span`.
    #[cfg(feature = "otel")]
    pub(crate) fn in_span(mut self, span: Option<tracing::Span>) -> Self {
        self.span = span;
        self
    }

    /// The same reply slot, for a call that arrived from another node at `at`.
    pub(crate) fn arrived_at(mut self, at: Instant) -> Self {
        self.arrived = Some(at);
        self
    }

    /// When the call arrived from another node; None for a call sent on this node.
    #[doc(hidden)]
    pub fn arrived(&self) -> Option<Instant> {
        self.arrived
    }

    /// The same reply slot, for a call whose caller stops waiting at `deadline`.
    pub(crate) fn until(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = CallDeadline::from_instant(deadline);
        self
    }

    /// The same reply slot, for a local call whose caller stops waiting at
    /// `deadline`, which may be lazy ([`CallDeadline::Within`]).
    pub(crate) fn until_lazy(mut self, deadline: CallDeadline) -> Self {
        self.deadline = deadline;
        self
    }

    /// A lazy deadline becomes `at`: the call leaves its caller unpolled
    /// (queued), and `at` is when the caller stops waiting. An answer that was
    /// to wait on the caller's stack will wait in a channel instead.
    #[doc(hidden)]
    pub fn settle_deadline(&mut self, at: Instant) {
        self.deadline.settle(at);
        self.leave_inline();
    }

    /// The call outlives its caller's inline run (its handler waits, or it is
    /// queued): an answer that was to wait on the caller's stack goes through
    /// a channel, whose receiver the caller finds there ([`Answered::Later`]).
    fn leave_inline(&mut self) {
        let Slot::Inline(token) = self.slot else {
            return;
        };
        self.slot = match InlineAnswer::<T>::reach(token) {
            Some(answer) => {
                let (tx, rx) = oneshot::channel();
                answer.state = Answered::Later(rx);
                Slot::Local(tx)
            }
            // Out of its caller's reach (a dispatcher that kept the message
            // past the run): nobody can be answered; the caller was told.
            None => Slot::Nobody,
        };
    }

    /// The same reply slot, for a call its remote caller may give up through
    /// `signal`; `running`: a running handler is told too (false: only a queued
    /// call is dropped, for `#[exactly_once]` calls).
    pub(crate) fn cancelled_by(mut self, signal: Arc<CancelSignal>, running: bool) -> Self {
        self.cancel = Some(signal);
        self.cancel_running = running;
        self
    }

    /// Counts this ask as dropped unrun (see [`ReplyTo::abandoned`]).
    pub(crate) fn count_dropped(&self) {
        if let Some(caller) = &self.caller {
            caller.count_dropped();
        }
    }

    /// The same reply slot, for a call that `caller` sent (from another node).
    pub(crate) fn sent_by(mut self, caller: Option<Arc<Caller>>) -> Self {
        self.caller = caller;
        self
    }

    /// The same reply slot, for a call of call chain `chain`.
    pub(crate) fn in_chain(mut self, chain: u64) -> Self {
        self.chain = chain;
        self
    }

    /// The call chain of the call (0: none).
    #[doc(hidden)]
    pub fn chain(&self) -> u64 {
        self.chain
    }

    /// Who sent the call: `None` when it was sent on this node.
    #[doc(hidden)]
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_deref()
    }

    /// Answers the call with the method's value.
    pub fn send(mut self, value: T) {
        self.answer(Ok(value));
    }

    /// Answers that the call was refused and did not run (a full mailbox, say):
    /// the caller gets `err` rather than the `ActorStopped` of a dropped reply.
    pub fn refuse(mut self, err: CallError) {
        self.answer(Err(err));
    }

    /// Runs a handler and answers with its value. If the handler panics, the
    /// caller gets [`CallError::Panicked`] and the panic continues, so the actor's
    /// restart policy still sees it. While the handler runs, [`crate::caller()`]
    /// returns who sent the call, [`crate::deadline()`] its deadline and
    /// [`crate::cancelled()`] resolves once its caller gives it up.
    ///
    /// (A reply slot held by the handler's future cannot do this in `Drop`: the
    /// future's locals are dropped while the panic unwinds, before anyone knows why.)
    pub fn answer_with<F: Future<Output = T>>(self, handler: F) -> Answering<T, F> {
        Answering::new(self, handler, false)
    }

    /// [`ReplyTo::answer_with`] for an `#[abortable]` method: once the call is
    /// given up (its caller dropped it, or its deadline passed) the handler is
    /// dropped at its next await, and the caller, if it still listens, gets
    /// [`CallError::Cancelled`].
    pub fn answer_abortable<F: Future<Output = T>>(self, handler: F) -> Answering<T, F> {
        Answering::new(self, handler, true)
    }

    fn answer(&mut self, result: Result<T, CallError>) {
        match std::mem::replace(&mut self.slot, Slot::Nobody) {
            Slot::Nobody => {}
            Slot::Local(tx) => {
                // The caller may have given up (deadline); that is not our error.
                let _ = tx.send(result);
            }
            Slot::Inline(token) => {
                if let Some(answer) = InlineAnswer::reach(token) {
                    answer.state = Answered::Now(result);
                }
            }
            Slot::Sink(sink) => sink(result),
        }
    }
}

/// Which inline answer a reply slot goes to: the caller's thread (numbered
/// once, from 1) and the call (numbered on that thread). Never the same for two
/// calls, so a slot can only ever reach the answer of its own call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Token {
    thread: u64,
    call: u64,
}

thread_local! {
    /// This thread's number and the last call numbered on it (0: none yet).
    static NUMBERS: Cell<Token> = const { Cell::new(Token { thread: 0, call: 0 }) };
    /// The answer a reply slot may reach now ([`InlineAnswer::reachable`]):
    /// its token, and where it is.
    static REACHABLE: Cell<(Token, *mut ())> =
        const { Cell::new((Token { thread: 0, call: 0 }, std::ptr::null_mut())) };
}

/// Numbers the threads that make inline answers.
static THREADS: AtomicU64 = AtomicU64::new(1);

impl Token {
    fn next() -> Token {
        NUMBERS.with(|numbers| {
            let mut token = numbers.get();
            if token.thread == 0 {
                token.thread = THREADS.fetch_add(1, Ordering::Relaxed);
            }
            token.call += 1;
            numbers.set(token);
            token
        })
    }
}

/// Where an ask's answer waits for a caller that runs the handler inline (on
/// its own task): on the caller's stack, with no channel and no allocation,
/// when the handler answers within that run, as most do. The reply slot finds
/// it through the thread's [`REACHABLE`] answer, and only while the caller
/// runs the call ([`InlineAnswer::reachable`]); a call that outlives the run
/// (its handler waits, or it is queued) is given a channel then, whose
/// receiver waits here instead ([`ReplyTo::leave_inline`]).
pub(crate) struct InlineAnswer<T> {
    token: Token,
    state: Answered<T>,
}

/// What an [`InlineAnswer`] holds.
pub(crate) enum Answered<T> {
    /// Nothing: the call's reply slot was kept out of the caller's reach (a
    /// dispatcher that holds a message past its first poll), or is still to answer.
    Not,
    /// The answer.
    Now(Result<T, CallError>),
    /// The call outlived the inline run: its answer comes here.
    Later(oneshot::Receiver<Result<T, CallError>>),
}

impl<T> InlineAnswer<T> {
    /// An empty answer and the reply slot that answers it.
    pub(crate) fn new() -> (InlineAnswer<T>, ReplyTo<T>) {
        let token = Token::next();
        let answer = InlineAnswer {
            token,
            state: Answered::Not,
        };
        (answer, ReplyTo::with_slot(Slot::Inline(token)))
    }

    /// An answer that comes through a channel from the start (for a call that
    /// may be queued unrun without being settled first), and its reply slot.
    pub(crate) fn through_channel() -> (InlineAnswer<T>, ReplyTo<T>) {
        let (tx, rx) = oneshot::channel();
        let answer = InlineAnswer {
            token: Token::next(),
            state: Answered::Later(rx),
        };
        (answer, ReplyTo::local(tx))
    }

    /// Runs `run` (the inline run of the call, or its settling before it is
    /// queued) with this answer in reach of the call's reply slot, on this
    /// thread; the answer reachable before is again after (an inline run
    /// inside `run` has its own).
    pub(crate) fn reachable<R>(&mut self, run: impl FnOnce() -> R) -> R {
        struct Restore((Token, *mut ()));
        impl Drop for Restore {
            fn drop(&mut self) {
                REACHABLE.set(self.0);
            }
        }
        let here = (self.token, std::ptr::from_mut(self).cast::<()>());
        let _restore = Restore(REACHABLE.replace(here));
        run()
    }

    /// The answer, if the reply slot left one here (and not a channel).
    pub(crate) fn answered(&mut self) -> Option<Result<T, CallError>> {
        match self.take() {
            Answered::Now(result) => Some(result),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// What the reply slot left here, taken.
    pub(crate) fn take(&mut self) -> Answered<T> {
        std::mem::replace(&mut self.state, Answered::Not)
    }

    /// The answer of call `token`, if it is in reach now.
    fn reach<'a>(token: Token) -> Option<&'a mut InlineAnswer<T>> {
        let (reachable, at) = REACHABLE.get();
        if reachable != token || at.is_null() {
            return None;
        }
        // SAFETY: `at` is the answer of call `token` (no two calls share a
        // token), made by `InlineAnswer::<T>::new` with this reply slot's `T`.
        // It is live and not otherwise used: `reachable` set it for the length
        // of a call on this thread's stack, during which its owner lends it
        // mutably and does not touch it, and restores the previous one after
        // (unwinding too). The borrow ends before that call returns: the slot
        // writes through it and lets go.
        Some(unsafe { &mut *at.cast::<InlineAnswer<T>>() })
    }
}

/// Whether the call whose reply goes to `slot` was given up; if not, `cx` is
/// woken when it is: its local caller dropped its receiver, its remote caller
/// sent a `Cancel` (`cancel`, unless `cancel_running` is false: `#[exactly_once]`),
/// or (a remote call's) its `deadline` passed. A local caller's own deadline
/// drops its receiver, so only a remote call needs a timer (`sleep`, made on the
/// first look). The reply's fields one by one: who sent the call stays lent to
/// the handler meanwhile.
fn given_up<T>(
    slot: &mut Slot<T>,
    cancel: &Option<Arc<CancelSignal>>,
    cancel_running: bool,
    deadline: Option<Instant>,
    sleep: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> bool {
    match slot {
        Slot::Local(tx) => return tx.poll_closed(cx).is_ready(),
        // Its caller runs it now.
        Slot::Nobody | Slot::Inline(_) => return false,
        Slot::Sink(_) => {}
    }
    let signal = cancel.as_ref().filter(|_| cancel_running);
    if signal.is_some_and(|signal| signal.poll(cx)) {
        return true;
    }
    let Some(deadline) = deadline else {
        return false;
    };
    sleep
        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)))
        .as_mut()
        .poll(cx)
        .is_ready()
}

pin_project_lite::pin_project! {
    /// The future of [`ReplyTo::answer_with`]: runs the handler, then answers
    /// with its value (or `Panicked`, or `Cancelled` for an abortable handler
    /// given up). One future, the handler stored once inside it: it is moved
    /// whole on its way to the actor, so every layer it does not have is a copy
    /// it does not make.
    #[must_use = "a handler does nothing until it is awaited"]
    pub struct Answering<T, F> {
        reply: ReplyTo<T>,
        // The deadline timer of a remote call, made when first needed.
        sleep: Option<Pin<Box<Sleep>>>,
        // None once the handler finished, was given up or panicked: it is
        // dropped before the answer goes.
        #[pin]
        handling: Option<Handling<F>>,
    }
}

impl<T, F: Future<Output = T>> Answering<T, F> {
    fn new(reply: ReplyTo<T>, handler: F, abortable: bool) -> Self {
        let deadline = reply.deadline;
        Answering {
            reply,
            sleep: None,
            handling: Some(Handling::new(handler, deadline, abortable)),
        }
    }
}

impl<T, F: Future<Output = T>> Future for Answering<T, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(handling) = this.handling.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let reply: &mut ReplyTo<T> = this.reply;
        reply.running = true;
        let sleep = this.sleep;
        let polled = {
            #[cfg(feature = "otel")]
            let _span = reply.span.as_ref().map(tracing::Span::enter);
            let (caller, chain) = (reply.caller.as_deref(), reply.chain);
            // Only the caller is borrowed from the reply while the handler runs;
            // the look at whether it was given up borrows the rest.
            let slot = &mut reply.slot;
            let (cancel, cancel_running, deadline) =
                (&reply.cancel, reply.cancel_running, reply.deadline.at());
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                handling.poll_as(cx, caller, chain, |cx| {
                    given_up(slot, cancel, cancel_running, deadline, sleep, cx)
                })
            }))
        };
        let outcome = match polled {
            Ok(Poll::Pending) => {
                // The answer will come after its caller's inline run, if it ran inline.
                reply.leave_inline();
                return Poll::Pending;
            }
            Ok(Poll::Ready(outcome)) => Ok(outcome),
            Err(payload) => Err(payload),
        };
        // The handler goes before the answer (an abortable one given up, too).
        this.handling.set(None);
        #[cfg(feature = "otel")]
        if let Some(span) = &reply.span {
            let outcome = match &outcome {
                Ok(Some(_)) => "ok",
                Ok(None) => "cancelled",
                Err(_) => "panicked",
            };
            span.record("outcome", outcome);
        }
        match outcome {
            Ok(Some(value)) => reply.answer(Ok(value)),
            Ok(None) => reply.answer(Err(CallError::Cancelled)),
            Err(payload) => {
                reply.answer(Err(CallError::Panicked {
                    message: panic_message(&*payload),
                }));
                std::panic::resume_unwind(payload)
            }
        }
        Poll::Ready(())
    }
}

impl<T> Drop for ReplyTo<T> {
    /// Unanswered: the call never ran (`ActorStopped`), or its handler was dropped
    /// midway — another handler it interleaved with (`#[reentrant]`) panicked, or
    /// the runtime went away — and it may have had effects.
    fn drop(&mut self) {
        if !matches!(self.slot, Slot::Nobody) {
            if self.abandoned() {
                tracing::debug!("an ask from a node that is gone dropped unrun");
                self.count_dropped();
            }
            let err = match self.running {
                // Dropped unrun because its caller gave it up: nobody listens.
                false
                    if matches!(
                        self.unwanted(),
                        Some(Unwanted::Cancelled | Unwanted::Expired)
                    ) =>
                {
                    CallError::Cancelled
                }
                false => CallError::ActorStopped,
                true => CallError::Panicked {
                    message: "interrupted: the actor failed while this call's handler was running"
                        .to_owned(),
                },
            };
            self.answer(Err(err));
        }
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

impl<T> fmt::Debug for ReplyTo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.slot {
            Slot::Nobody => "nobody",
            Slot::Local(_) => "local",
            Slot::Inline(_) => "inline",
            Slot::Sink(_) => "sink",
        };
        f.debug_tuple("ReplyTo").field(&kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn dropped_reply_answers_actor_stopped() {
        let (tx, mut rx) = oneshot::channel::<Result<u32, CallError>>();
        drop(ReplyTo::local(tx));
        assert_eq!(rx.try_recv().unwrap(), Err(CallError::ActorStopped));
    }

    #[tokio::test]
    async fn answer_with_answers_panicked_and_resumes_the_panic() {
        let (tx, mut rx) = oneshot::channel::<Result<u32, CallError>>();
        let reply = ReplyTo::local(tx);
        let outcome = AssertUnwindSafe(reply.answer_with(async { panic!("boom") }))
            .catch_unwind()
            .await;
        assert!(outcome.is_err(), "the panic goes on to the actor loop");
        assert_eq!(
            rx.try_recv().unwrap(),
            Err(CallError::Panicked {
                message: "boom".into()
            })
        );
    }

    #[tokio::test]
    async fn the_handler_runs_as_the_caller_of_its_call() {
        let alpha = Arc::new(Caller::new(crate::id::NodeId::from_u128(0), "alpha".into()));
        let (tx, rx) = std::sync::mpsc::channel();
        let reply = ReplyTo::sink(move |r| tx.send(r).unwrap()).sent_by(Some(alpha.clone()));
        assert_eq!(reply.caller(), Some(&*alpha));
        reply.answer_with(async { crate::caller() }).await;
        assert_eq!(rx.recv().unwrap(), Ok(Some((*alpha).clone())));
        assert_eq!(crate::caller(), None, "only while the handler runs");
    }

    #[test]
    fn an_inline_answer_in_reach_waits_on_the_callers_side() {
        let (mut answer, reply) = InlineAnswer::<u32>::new();
        answer.reachable(|| reply.send(7));
        assert_eq!(answer.answered(), Some(Ok(7)));
        assert!(matches!(answer.take(), Answered::Not), "taken once");
    }

    #[test]
    fn a_reply_slot_dropped_in_reach_answers_actor_stopped_there() {
        let (mut answer, reply) = InlineAnswer::<u32>::new();
        answer.reachable(|| drop(reply));
        assert_eq!(answer.answered(), Some(Err(CallError::ActorStopped)));
    }

    #[test]
    fn a_call_that_leaves_its_inline_run_is_answered_through_a_channel() {
        let (mut answer, mut reply) = InlineAnswer::<u32>::new();
        answer.reachable(|| reply.settle_deadline(Instant::now()));
        assert_eq!(answer.answered(), None, "nothing yet, and not lost");
        let Answered::Later(mut rx) = answer.take() else {
            panic!("a channel's receiver waits for the caller");
        };
        // Answered later, out of the caller's reach (the actor's task).
        reply.send(9);
        assert_eq!(rx.try_recv().unwrap(), Ok(9));
    }

    #[test]
    fn an_answer_through_a_channel_from_the_start_comes_through_it() {
        let (mut answer, reply) = InlineAnswer::<u32>::through_channel();
        answer.reachable(|| reply.send(4));
        assert_eq!(answer.answered(), None, "not in place");
        let Answered::Later(mut rx) = answer.take() else {
            panic!("the channel's receiver waits for the caller");
        };
        assert_eq!(rx.try_recv().unwrap(), Ok(4));
    }

    #[test]
    fn a_reply_slot_out_of_reach_answers_nobody() {
        let (mut answer, reply) = InlineAnswer::<u32>::new();
        reply.send(1);
        assert!(matches!(answer.take(), Answered::Not));
        // Nor does another call's answer, in reach now, get it.
        let (mut other, _other_reply) = InlineAnswer::<u32>::new();
        let (_, stray) = InlineAnswer::<u32>::new();
        other.reachable(|| stray.send(2));
        assert!(matches!(other.take(), Answered::Not));
    }

    #[test]
    fn an_inline_answer_inside_another_run_leaves_the_outer_one_in_reach() {
        let (mut outer, outer_reply) = InlineAnswer::<u32>::new();
        let (mut inner, inner_reply) = InlineAnswer::<&str>::new();
        outer.reachable(|| {
            inner.reachable(|| inner_reply.send("inner"));
            outer_reply.send(1);
        });
        assert_eq!(inner.answered(), Some(Ok("inner")));
        assert_eq!(outer.answered(), Some(Ok(1)));
    }

    #[test]
    fn a_run_that_unwinds_puts_the_previous_answer_back_in_reach() {
        let (mut outer, outer_reply) = InlineAnswer::<u32>::new();
        outer.reachable(|| {
            let (mut inner, _inner_reply) = InlineAnswer::<u32>::new();
            let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| {
                inner.reachable(|| panic!("boom"));
            }));
            assert!(unwound.is_err());
            outer_reply.send(3);
        });
        assert_eq!(outer.answered(), Some(Ok(3)));
    }

    #[test]
    fn sink_gets_exactly_one_answer() {
        let (tx, rx) = std::sync::mpsc::channel();
        ReplyTo::sink(move |r| tx.send(r).unwrap()).send(7u8);
        assert_eq!(rx.recv().unwrap(), Ok(7));
        assert!(
            rx.recv().is_err(),
            "the sink is consumed by the first answer"
        );
    }
}
