//! The reply slot a call carries to its actor.

use std::cell::RefCell;
use std::fmt;

use tokio::sync::oneshot;

use crate::error::CallError;

/// Where the result of one call goes. The generated dispatcher fills it; a user
/// sees it only in generated code.
///
/// A `ReplyTo` that is dropped unanswered still answers: with
/// [`CallError::ActorStopped`] when the message was dropped unhandled (the actor
/// stopped with it queued), or [`CallError::Panicked`] when its handler panicked.
/// So a caller never waits for a reply that cannot come.
pub struct ReplyTo<T> {
    slot: Slot<T>,
}

type Sink<T> = Box<dyn FnOnce(Result<T, CallError>) + Send>;

enum Slot<T> {
    /// A tell: nobody waits.
    Nobody,
    /// A caller in this process.
    Local(oneshot::Sender<Result<T, CallError>>),
    /// Anything else (a transport's encoder, a test probe).
    Sink(Sink<T>),
}

impl<T> ReplyTo<T> {
    /// A reply nobody waits for (tells).
    pub fn nobody() -> Self {
        ReplyTo { slot: Slot::Nobody }
    }

    pub(crate) fn local(tx: oneshot::Sender<Result<T, CallError>>) -> Self {
        ReplyTo {
            slot: Slot::Local(tx),
        }
    }

    /// A reply delivered to `sink`, exactly once: by [`ReplyTo::send`], or with the
    /// error described on [`ReplyTo`] if it is dropped unanswered.
    pub fn sink(sink: impl FnOnce(Result<T, CallError>) + Send + 'static) -> Self {
        ReplyTo {
            slot: Slot::Sink(Box::new(sink)),
        }
    }

    /// Answers the call with the method's value.
    pub fn send(mut self, value: T) {
        self.answer(Ok(value));
    }

    fn answer(&mut self, result: Result<T, CallError>) {
        match std::mem::replace(&mut self.slot, Slot::Nobody) {
            Slot::Nobody => {}
            Slot::Local(tx) => {
                // The caller may have given up (deadline); that is not our error.
                let _ = tx.send(result);
            }
            Slot::Sink(sink) => sink(result),
        }
    }
}

impl<T> Drop for ReplyTo<T> {
    fn drop(&mut self) {
        if !matches!(self.slot, Slot::Nobody) {
            let err = UNANSWERED.with(|why| why.borrow().clone());
            self.answer(Err(err));
        }
    }
}

impl<T> fmt::Debug for ReplyTo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.slot {
            Slot::Nobody => "nobody",
            Slot::Local(_) => "local",
            Slot::Sink(_) => "sink",
        };
        f.debug_tuple("ReplyTo").field(&kind).finish()
    }
}

thread_local! {
    /// What an unanswered `ReplyTo` says when dropped on this thread right now.
    static UNANSWERED: RefCell<CallError> = const { RefCell::new(CallError::ActorStopped) };
}

/// Runs `f` (which drops things) so that every reply slot dropped unanswered inside
/// it answers `err`: the actor loop uses it to answer a panicked handler's caller
/// with `Panicked` instead of `ActorStopped`.
pub(crate) fn unanswered_as<R>(err: CallError, f: impl FnOnce() -> R) -> R {
    let previous = UNANSWERED.with(|why| std::mem::replace(&mut *why.borrow_mut(), err));
    let out = f();
    UNANSWERED.with(|why| *why.borrow_mut() = previous);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_reply_answers_actor_stopped() {
        let (tx, mut rx) = oneshot::channel::<Result<u32, CallError>>();
        drop(ReplyTo::local(tx));
        assert_eq!(rx.try_recv().unwrap(), Err(CallError::ActorStopped));
    }

    #[test]
    fn unanswered_as_sets_the_error_then_restores_it() {
        let (tx, mut rx) = oneshot::channel::<Result<u32, CallError>>();
        let panicked = CallError::Panicked {
            message: "boom".into(),
        };
        let reply = ReplyTo::local(tx);
        unanswered_as(panicked.clone(), || drop(reply));
        assert_eq!(rx.try_recv().unwrap(), Err(panicked));
        let (tx, mut rx) = oneshot::channel::<Result<u32, CallError>>();
        drop(ReplyTo::local(tx));
        assert_eq!(rx.try_recv().unwrap(), Err(CallError::ActorStopped));
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
