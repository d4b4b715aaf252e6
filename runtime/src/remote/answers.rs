//! Where the answers to a connection's asks wait for their callers: one slot per
//! ask in flight, in a table the connection keeps and reuses, instead of a
//! oneshot channel (an allocation, and its own atomics) per call.
//!
//! A caller [`open`](Answers::open)s a slot before its call is registered with
//! the core, which keeps the slot's [`AnswerKey`] as the call's waiter. Whoever
//! settles the call (the reader of its reply, the core's timer, the loss of the
//! connection) [`answer`](Answers::answer)s the key and wakes the caller, who
//! [`poll`](Answers::poll)s the answer out, which frees the slot. A caller that
//! gives up [`close`](Answers::close)s its slot itself.
//!
//! A key names one use of a slot: slots are reused, so a key also carries a
//! generation, and an answer that comes for a slot closed meanwhile (its caller
//! gave up as the reply arrived) is dropped instead of reaching the slot's next
//! caller.

use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use slab::Slab;

use super::marshal::Answer;
use crate::error::CallError;

/// An ask's slot in [`Answers`]: where its answer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AnswerKey {
    index: usize,
    generation: u64,
}

/// The answers of one connection's asks in flight.
#[derive(Default)]
pub(crate) struct Answers {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    slots: Slab<Slot>,
    /// The generation of the next slot opened.
    next: u64,
}

struct Slot {
    generation: u64,
    state: State,
}

enum State {
    /// No answer yet; the caller's waker once it polled.
    Waiting(Option<Waker>),
    Answered(Result<Answer, CallError>),
}

/// A table this large is given back once it empties: a burst of asks does not
/// keep its memory.
const KEEP_SLOTS: usize = 1024;

impl Answers {
    /// A slot for an ask about to be sent.
    pub(crate) fn open(&self) -> AnswerKey {
        let mut table = self.table.lock();
        let generation = table.next;
        table.next = generation.wrapping_add(1);
        let index = table.slots.insert(Slot {
            generation,
            state: State::Waiting(None),
        });
        AnswerKey { index, generation }
    }

    /// Settles the ask of `key` with `outcome` and wakes its caller; dropped if
    /// the caller closed its slot meanwhile.
    pub(crate) fn answer(&self, key: AnswerKey, outcome: Result<Answer, CallError>) {
        let waker = {
            let mut table = self.table.lock();
            let Some(slot) = table.slots.get_mut(key.index) else {
                return;
            };
            if slot.generation != key.generation {
                return;
            }
            match std::mem::replace(&mut slot.state, State::Answered(outcome)) {
                State::Waiting(waker) => waker,
                // Settled twice: the core settles a call once, so never; the
                // first answer stands, and the second is dropped below,
                // outside the lock.
                State::Answered(first) => {
                    let second = std::mem::replace(&mut slot.state, State::Answered(first));
                    drop(table);
                    drop(second);
                    return;
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The answer of `key`'s ask, which frees its slot; or Pending, after
    /// registering `cx`'s waker (if any: None only looks) to be woken by it.
    /// With a waker, the poll takes part in tokio's cooperative budget, as a
    /// channel's receive does.
    pub(crate) fn poll(
        &self,
        key: AnswerKey,
        mut cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Answer, CallError>> {
        let coop = match cx {
            Some(ref mut cx) => Some(std::task::ready!(tokio::task::coop::poll_proceed(cx))),
            None => None,
        };
        let mut table = self.table.lock();
        let slot = match table.slots.get_mut(key.index) {
            Some(slot) if slot.generation == key.generation => slot,
            // As a future polled after it completed.
            _ => panic!("an ask's answer polled after it was taken or given up"),
        };
        match &mut slot.state {
            State::Answered(_) => {
                let Slot { state, .. } = table.slots.remove(key.index);
                table.shrink_if_empty();
                if let Some(coop) = coop {
                    coop.made_progress();
                }
                match state {
                    State::Answered(outcome) => Poll::Ready(outcome),
                    State::Waiting(_) => unreachable!("matched as answered"),
                }
            }
            State::Waiting(registered) => {
                if let Some(cx) = cx {
                    match registered {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => *registered = Some(cx.waker().clone()),
                    }
                }
                Poll::Pending
            }
        }
    }

    /// The caller of `key`'s ask stopped waiting: its slot is freed, and an
    /// answer still to come is dropped.
    pub(crate) fn close(&self, key: AnswerKey) {
        let mut table = self.table.lock();
        if table
            .slots
            .get(key.index)
            .is_some_and(|slot| slot.generation == key.generation)
        {
            let closed = table.slots.remove(key.index);
            table.shrink_if_empty();
            // An answer that came meanwhile (a moved value of the caller's
            // type, with its own `Drop`) is dropped outside the lock.
            drop(table);
            drop(closed);
        }
    }

    /// Asks with a slot now (answered or not).
    #[cfg(test)]
    fn open_slots(&self) -> usize {
        self.table.lock().slots.len()
    }
}

impl Table {
    fn shrink_if_empty(&mut self) {
        if self.slots.is_empty() && self.slots.capacity() > KEEP_SLOTS {
            self.slots = Slab::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;
    use crate::wire::codec::Encoded;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn reply(byte: u8) -> Result<Answer, CallError> {
        Ok(Answer::Bytes(Encoded::from_slice(&[byte])))
    }

    fn bytes(answer: Poll<Result<Answer, CallError>>) -> Vec<u8> {
        match answer {
            Poll::Ready(Ok(Answer::Bytes(bytes))) => bytes.to_vec(),
            _ => panic!("not a reply of bytes"),
        }
    }

    #[test]
    fn an_answer_wakes_the_caller_that_polled_and_is_taken_once() {
        let answers = Answers::default();
        let key = answers.open();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(answers.poll(key, Some(&mut cx)).is_pending());
        assert!(
            answers.poll(key, None).is_pending(),
            "looking registers nothing"
        );
        answers.answer(key, reply(7));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(bytes(answers.poll(key, Some(&mut cx))), vec![7]);
        assert_eq!(answers.open_slots(), 0, "taking the answer frees the slot");
    }

    #[test]
    #[should_panic(expected = "polled after it was taken")]
    fn an_answer_taken_is_not_there_twice() {
        let answers = Answers::default();
        let key = answers.open();
        answers.answer(key, reply(7));
        let _ = answers.poll(key, None);
        let _ = answers.poll(key, None);
    }

    #[test]
    fn an_answer_before_the_first_poll_waits_in_its_slot() {
        let answers = Answers::default();
        let key = answers.open();
        answers.answer(key, Err(CallError::Cancelled));
        assert!(matches!(
            answers.poll(key, None),
            Poll::Ready(Err(CallError::Cancelled))
        ));
    }

    #[test]
    fn an_answer_for_a_closed_slot_never_reaches_the_slots_next_caller() {
        let answers = Answers::default();
        let given_up = answers.open();
        answers.close(given_up);
        let next = answers.open();
        assert_eq!(next.index, given_up.index, "the slot is reused");
        // The reply to the call given up arrives late.
        answers.answer(given_up, reply(1));
        assert!(answers.poll(next, None).is_pending());
        answers.answer(next, reply(2));
        assert_eq!(bytes(answers.poll(next, None)), vec![2]);
        answers.close(given_up);
        assert_eq!(answers.open_slots(), 0);
    }

    #[test]
    fn a_second_answer_leaves_the_first() {
        let answers = Answers::default();
        let key = answers.open();
        answers.answer(key, reply(1));
        answers.answer(key, reply(2));
        assert_eq!(bytes(answers.poll(key, None)), vec![1]);
    }

    #[test]
    fn a_table_grown_by_a_burst_is_given_back_once_empty() {
        let answers = Answers::default();
        let keys: Vec<AnswerKey> = (0..KEEP_SLOTS * 2).map(|_| answers.open()).collect();
        assert!(answers.table.lock().slots.capacity() >= KEEP_SLOTS * 2);
        for key in keys {
            answers.close(key);
        }
        assert_eq!(answers.table.lock().slots.capacity(), 0);
    }

    #[test]
    fn a_poll_with_a_new_waker_replaces_the_old() {
        let answers = Answers::default();
        let key = answers.open();
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (waker1, waker2) = (Waker::from(first.clone()), Waker::from(second.clone()));
        assert!(answers
            .poll(key, Some(&mut Context::from_waker(&waker1)))
            .is_pending());
        assert!(answers
            .poll(key, Some(&mut Context::from_waker(&waker2)))
            .is_pending());
        answers.answer(key, reply(3));
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
