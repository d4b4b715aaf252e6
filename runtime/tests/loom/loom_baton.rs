//! A loom model of the actor's baton, the way tokio checks its scheduler.
//!
//! It drives the runtime's own `Baton` (`src/local/baton.rs`, compiled here against
//! loom's atomics) the way `Slot` and its task (`slot.rs`, `runner.rs`) drive it:
//! an inline call, a queued message and its `schedule`, the task's loop and its
//! `release`, a stop request, a re-entering call. What the baton protects is a
//! loom `UnsafeCell`, so loom fails the model if two holders ever touch it at once,
//! or if a holder might not see what the previous one wrote. After every
//! interleaving the model checks that nothing was stranded: every message was
//! handled (each sender's in order) or refused by a stopped actor, a stop request
//! was acted on, and an actor that did not stop is idle with its baton free.
//!
//! A task the model starts runs on the thread that started it, right away: loom
//! allows 5 threads, and a task's concurrency with its starter's next steps is the
//! same race as with any other thread's, which the models explore.
//!
//! `LOOM_MAX_PREEMPTIONS` overrides the preemption bound (3 by default here).
//!
//!   RUSTFLAGS="--cfg loom" cargo test --release --manifest-path runtime/tests/loom/Cargo.toml
#![cfg(loom)]

#[path = "../../src/local/baton.rs"]
mod baton;

use std::collections::VecDeque;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use baton::Baton;

/// The actor's state, which only the baton's holder touches.
#[derive(Clone, Debug, Default)]
struct State {
    /// The messages handled, in order.
    handled: Vec<u32>,
    /// A handler begun inline and handed over to the task.
    in_flight: Option<u32>,
    /// `on_stop` ran: nothing may be handled after it.
    stopped: bool,
}

impl State {
    fn handle(&mut self, msg: u32) {
        assert!(
            !self.stopped,
            "message {msg} handled after the actor stopped"
        );
        self.handled.push(msg);
    }
}

/// The mailbox: lock-based, as the runtime's flume channel is. Beside it,
/// `Actor::queued` counts what entered and has not left, as `mailbox.rs`'s
/// `Closed::queued` does, so that finding it empty takes no lock.
#[derive(Default)]
struct Mailbox {
    queue: VecDeque<u32>,
    closed: bool,
    /// Messages answered `ActorStopped`: sent after the close, or drained by it.
    refused: Vec<u32>,
}

/// A `Slot` reduced to what the baton's protocol touches.
struct Actor {
    baton: Baton,
    state: UnsafeCell<State>,
    mailbox: Mutex<Mailbox>,
    /// `Closed::queued`: counted before a message enters, uncounted after one
    /// leaves (or is refused).
    queued: AtomicUsize,
    reentry: Mutex<VecDeque<u32>>,
    /// `ActorCell::request_stop`'s flag, with its orderings.
    stop: AtomicBool,
}

impl Actor {
    /// An actor whose `on_start` ran inline and which was then released, as
    /// `Slot::spawn` leaves it.
    fn idle() -> Arc<Actor> {
        let actor = Actor::starting();
        assert!(actor.baton.release(), "nobody else can have notified it");
        actor
    }

    /// An actor whose baton is still held by its spawner, for a task.
    fn starting() -> Arc<Actor> {
        Arc::new(Actor {
            baton: Baton::held_by_task(),
            state: UnsafeCell::new(State::default()),
            mailbox: Mutex::new(Mailbox::default()),
            queued: AtomicUsize::new(0),
            reentry: Mutex::new(VecDeque::new()),
            stop: AtomicBool::new(false),
        })
    }

    /// The holder's access to the state (`Turn`'s methods).
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // SAFETY: only baton holders call this (the model's protocol), and loom's
        // cell checks that no two of them overlap and that each is ordered after
        // the previous one: that is what the model is for.
        self.state.with_mut(|state| f(unsafe { &mut *state }))
    }

    // --- Senders (`LocalRoute`, `Control`, `Host::reenter`) ---

    /// Queues a message, then makes sure someone will look (`LocalRoute::push`).
    fn tell(&self, msg: u32) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        {
            let mut mailbox = self.mailbox.lock().unwrap();
            if mailbox.closed {
                mailbox.refused.push(msg);
                drop(mailbox);
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            mailbox.queue.push_back(msg);
        }
        self.schedule();
    }

    /// Runs a message inline if the actor is idle with nothing waiting, else queues
    /// it (`Host::try_run`, then `LocalRoute::push`).
    fn call(&self, msg: u32) {
        if !self.try_run(msg, false) {
            self.tell(msg);
        }
    }

    /// As `call`, for a handler that has to wait: begun inline, it is handed over
    /// to a task that finishes it.
    fn call_waiting(&self, msg: u32) {
        if !self.try_run(msg, true) {
            self.tell(msg);
        }
    }

    /// `Control::stop`: the flag, then a notification.
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.schedule();
    }

    /// `Host::reenter`: a re-entering call, queued beside the mailbox.
    fn reenter(&self, msg: u32) {
        self.reentry.lock().unwrap().push_back(msg);
        self.schedule();
    }

    /// `Slot::schedule`.
    fn schedule(&self) {
        if self.baton.schedule() {
            self.start_task();
        }
    }

    // --- The baton's holders (`Host::try_run`, `Turn`, `runner.rs`) ---

    /// `Host::try_run`: whether the message was taken.
    fn try_run(&self, msg: u32, waits: bool) -> bool {
        if !self.baton.try_inline() {
            return false;
        }
        if self.has_pending() || self.other_work() {
            // Work is waiting ahead of this call: a task takes it, then this one.
            self.start_task();
            return false;
        }
        if waits {
            self.with_state(|state| state.in_flight = Some(msg));
            self.start_task();
        } else {
            self.with_state(|state| state.handle(msg));
            self.release_or_start_task();
        }
        true
    }

    /// `Closed::has_pending`: the count first, the channel only if it is not zero.
    fn has_pending(&self) -> bool {
        self.queued.load(Ordering::SeqCst) != 0 && !self.mailbox.lock().unwrap().queue.is_empty()
    }

    fn other_work(&self) -> bool {
        !self.reentry.lock().unwrap().is_empty() || self.stop.load(Ordering::SeqCst)
    }

    /// `Turn::release_or_start_task`.
    fn release_or_start_task(&self) {
        if !self.baton.release() {
            self.start_task();
        }
    }

    /// `Turn::start_task`: the task runs here and now (see the module's doc).
    fn start_task(&self) {
        self.baton.hand_over();
        self.run();
    }

    /// The task's loop (`Turn::run`).
    fn run(&self) {
        loop {
            if let Some(msg) = self.with_state(|state| state.in_flight.take()) {
                self.with_state(|state| state.handle(msg));
                continue;
            }
            if self.stop.load(Ordering::SeqCst) {
                return self.finish();
            }
            let reentered = self.reentry.lock().unwrap().pop_front();
            if let Some(msg) = reentered {
                self.with_state(|state| state.handle(msg));
                continue;
            }
            let queued = self.mailbox.lock().unwrap().queue.pop_front();
            if let Some(msg) = queued {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                self.with_state(|state| state.handle(msg));
                continue;
            }
            if self.baton.release() {
                return;
            }
        }
    }

    /// `Turn::finish`: the baton stays with the stopped actor's task for good.
    fn finish(&self) {
        assert!(self.baton.held_by_a_task());
        {
            let mut mailbox = self.mailbox.lock().unwrap();
            mailbox.closed = true;
            let queued: Vec<u32> = mailbox.queue.drain(..).collect();
            self.queued.fetch_sub(queued.len(), Ordering::SeqCst);
            mailbox.refused.extend(queued);
        }
        let reentered: Vec<u32> = self.reentry.lock().unwrap().drain(..).collect();
        self.mailbox.lock().unwrap().refused.extend(reentered);
        self.with_state(|state| state.stopped = true);
    }

    // --- After every interleaving ---

    /// Nothing is stranded: see the module's doc. `sent` lists each sender's
    /// messages in the order it sent them.
    fn check(&self, sent: &[&[u32]]) {
        let state = self.with_state(|state| state.clone());
        let mailbox = self.mailbox.lock().unwrap();
        assert!(
            mailbox.queue.is_empty(),
            "stranded in the mailbox: {:?} ({state:?})",
            mailbox.queue
        );
        assert!(
            state.in_flight.is_none(),
            "a handed-over handler was stranded: {state:?}"
        );
        if self.stop.load(Ordering::SeqCst) {
            assert!(state.stopped, "a stop request was stranded: {state:?}");
            assert!(
                self.baton.held_by_a_task(),
                "a stopped actor's baton was given up"
            );
        } else {
            assert!(!state.stopped);
            let reentry: Vec<u32> = self.reentry.lock().unwrap().iter().copied().collect();
            assert!(
                reentry.is_empty(),
                "a re-entering call was stranded: {reentry:?}"
            );
            assert!(mailbox.refused.is_empty());
            assert!(
                self.baton.try_inline(),
                "idle, but the baton is still taken"
            );
        }
        let mut accounted: Vec<u32> = state
            .handled
            .iter()
            .chain(&mailbox.refused)
            .copied()
            .collect();
        accounted.sort_unstable();
        let mut all: Vec<u32> = sent.iter().flat_map(|msgs| msgs.iter().copied()).collect();
        all.sort_unstable();
        assert_eq!(
            accounted, all,
            "each message is handled or refused exactly once ({state:?})"
        );
        for msgs in sent {
            let order: Vec<u32> = state
                .handled
                .iter()
                .copied()
                .filter(|msg| msgs.contains(msg))
                .collect();
            let expected: Vec<u32> = msgs
                .iter()
                .copied()
                .filter(|msg| order.contains(msg))
                .collect();
            assert_eq!(
                order, expected,
                "a sender's messages were handled out of order"
            );
        }
    }
}

/// Runs `body` under every interleaving loom explores within the bound.
fn model(body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(body);
}

/// One thread for each of `parts`, each with its actor operations; then the checks.
fn race(actor: fn() -> Arc<Actor>, parts: &'static [fn(&Actor)], sent: &'static [&'static [u32]]) {
    model(move || {
        let actor = actor();
        let (first, others) = parts.split_first().expect("at least one part");
        let threads: Vec<_> = others
            .iter()
            .map(|part| {
                let actor = actor.clone();
                thread::spawn(move || part(&actor))
            })
            .collect();
        first(&actor);
        for thread in threads {
            thread.join().unwrap();
        }
        actor.check(sent);
    });
}

/// An idle actor: one caller runs inline (twice, its calls in order) while another
/// sender's message starts a task.
#[test]
fn an_inline_call_races_a_task() {
    race(
        Actor::idle,
        &[
            |actor| {
                actor.call(11);
                actor.call(12);
            },
            |actor| actor.tell(21),
        ],
        &[&[11, 12], &[21]],
    );
}

/// The actor's task finishes what was queued and releases the baton while a sender
/// queues a message and then calls: neither may be stranded.
#[test]
fn a_release_races_a_sender() {
    race(
        || {
            let actor = Actor::starting();
            actor.mailbox.lock().unwrap().queue.push_back(1);
            actor
        },
        &[
            // The task its spawner started for it.
            |actor| actor.start_task(),
            |actor| {
                actor.tell(21);
                actor.call(22);
            },
        ],
        &[&[1], &[21, 22]],
    );
}

/// A stop request arrives while a handler runs inline and is handed over to the
/// task, and its caller sends again: the stop is acted on, and every message is
/// handled before it or refused.
#[test]
fn a_stop_races_a_handler() {
    race(
        Actor::idle,
        &[
            |actor| {
                actor.call_waiting(11);
                actor.tell(12);
            },
            |actor| actor.stop(),
        ],
        &[&[11, 12]],
    );
}

/// A re-entering call is queued while an inline handler runs and releases.
#[test]
fn a_reentering_call_races_a_release() {
    race(
        Actor::idle,
        &[|actor| actor.call(11), |actor| actor.reenter(31)],
        &[&[11], &[31]],
    );
}

/// A handler handed over to the task races a sender's message and call.
#[test]
fn a_handed_over_handler_races_a_sender() {
    race(
        Actor::idle,
        &[
            |actor| actor.call_waiting(11),
            |actor| {
                actor.tell(21);
                actor.call(22);
            },
        ],
        &[&[11], &[21, 22]],
    );
}

/// Three threads: an inline caller, a sender and a stop request, all at once.
#[test]
fn a_stop_races_a_caller_and_a_sender() {
    race(
        Actor::idle,
        &[
            |actor| {
                actor.call(11);
                actor.tell(12);
            },
            |actor| actor.tell(21),
            |actor| actor.stop(),
        ],
        &[&[11, 12], &[21]],
    );
}
