//! Mailboxes: the queue in front of every actor, and how full it may get.
//!
//! Built on flume channels (they allocate queue space on demand, so an idle actor
//! costs ~200 bytes of mailbox, against ~1.6 KiB for a tokio mpsc channel). What this module adds is the policy a user picks
//! per actor ([`Mailbox`]) and one sender/receiver type over the three kinds, so the
//! rest of the runtime never matches on the kind.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::{oneshot, Notify};

use crate::error::CallError;

/// How an actor's mailbox buffers messages; chosen per actor with
/// [`SpawnOptions::mailbox`](crate::SpawnOptions::mailbox).
///
/// | kind | `tell` when the actor is busy | `try_tell` | memory |
/// | --- | --- | --- | --- |
/// | [`rendezvous`](Mailbox::rendezvous) | waits until the actor takes the message | `MailboxFull` unless the actor is waiting for a message right now | none |
/// | [`bounded(n)`](Mailbox::bounded) (default, n = 1024) | waits for room | `MailboxFull` at once | n messages |
/// | [`unbounded`](Mailbox::unbounded) | never waits | same as `tell` | up to the hard cap; `Overloaded` past it |
///
/// Every kind is also bounded in bytes for messages from other nodes
/// ([`Mailbox::max_bytes`], default [`Mailbox::DEFAULT_MAX_BYTES`]): past it, such
/// a message waits for room as at a full bounded mailbox.
///
/// ```
/// use remora::Mailbox;
/// assert_eq!(Mailbox::default(), Mailbox::bounded(Mailbox::DEFAULT_CAPACITY));
/// assert_eq!(Mailbox::unbounded().cap(), Some(Mailbox::DEFAULT_UNBOUNDED_CAP));
/// let big = Mailbox::bounded(64).max_bytes(256 << 20);
/// assert_eq!(big.byte_limit(), 256 << 20);
/// assert_eq!(Mailbox::default().byte_limit(), Mailbox::DEFAULT_MAX_BYTES);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mailbox {
    kind: Kind,
    max_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rendezvous,
    Bounded(usize),
    Unbounded(usize),
}

impl Mailbox {
    /// Capacity of the default bounded mailbox.
    pub const DEFAULT_CAPACITY: usize = 1024;
    /// Hard cap of [`Mailbox::unbounded`]: past this many queued messages a send fails
    /// with [`CallError::Overloaded`] instead of growing memory.
    pub const DEFAULT_UNBOUNDED_CAP: usize = 1 << 20;
    /// Default [`Mailbox::max_bytes`]: 64 MiB of messages from other nodes.
    pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

    /// Zero capacity: a sender waits until the actor has taken its message.
    pub fn rendezvous() -> Mailbox {
        Mailbox {
            kind: Kind::Rendezvous,
            max_bytes: Mailbox::DEFAULT_MAX_BYTES,
        }
    }

    /// Room for `capacity` messages: a sender awaits room, `try_tell` fails at once.
    ///
    /// # Panics
    /// If `capacity` is 0 (use [`Mailbox::rendezvous`]).
    pub fn bounded(capacity: usize) -> Mailbox {
        assert!(
            capacity > 0,
            "Mailbox::bounded(0): a mailbox with no room is Mailbox::rendezvous()"
        );
        Mailbox {
            kind: Kind::Bounded(capacity),
            max_bytes: Mailbox::DEFAULT_MAX_BYTES,
        }
    }

    /// Never blocks a sender, up to a hard cap of [`Mailbox::DEFAULT_UNBOUNDED_CAP`]
    /// queued messages; past it sends fail with [`CallError::Overloaded`].
    pub fn unbounded() -> Mailbox {
        Mailbox::unbounded_with_cap(Mailbox::DEFAULT_UNBOUNDED_CAP)
    }

    /// [`Mailbox::unbounded`] with another hard cap.
    ///
    /// # Panics
    /// If `cap` is 0.
    pub fn unbounded_with_cap(cap: usize) -> Mailbox {
        assert!(
            cap > 0,
            "Mailbox::unbounded_with_cap(0) could never accept a message"
        );
        Mailbox {
            kind: Kind::Unbounded(cap),
            max_bytes: Mailbox::DEFAULT_MAX_BYTES,
        }
    }

    /// Bounds the bytes of the messages from other nodes queued at once (their
    /// encoded arguments; at least 1): one that would pass it waits for room,
    /// as at a full bounded mailbox, unless the mailbox is empty (a message
    /// larger than the bound still gets in alone). Messages from this node are
    /// not counted: they are moved, not copied, and were already in memory.
    pub fn max_bytes(mut self, bytes: usize) -> Mailbox {
        self.max_bytes = bytes.max(1);
        self
    }

    /// The bound on bytes of messages from other nodes ([`Mailbox::max_bytes`]).
    pub fn byte_limit(&self) -> usize {
        self.max_bytes
    }

    /// The bounded capacity (`Some(0)` for rendezvous), or `None` for unbounded.
    pub fn capacity(&self) -> Option<usize> {
        match self.kind {
            Kind::Rendezvous => Some(0),
            Kind::Bounded(n) => Some(n),
            Kind::Unbounded(_) => None,
        }
    }

    /// Its kind, as inspection names it: `rendezvous`, `bounded` or `unbounded`.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Rendezvous => "rendezvous",
            Kind::Bounded(_) => "bounded",
            Kind::Unbounded(_) => "unbounded",
        }
    }

    /// The hard cap of an unbounded mailbox, `None` for the others.
    pub fn cap(&self) -> Option<usize> {
        match self.kind {
            Kind::Unbounded(cap) => Some(cap),
            _ => None,
        }
    }

    pub(crate) fn channel<M: 'static>(self) -> (MailboxTx<M>, MailboxRx<M>) {
        let (tx, rx) = match self.kind {
            // flume's zero-capacity channel is a true rendezvous: a send completes
            // when the receiver takes the message.
            Kind::Rendezvous => flume::bounded(0),
            Kind::Bounded(capacity) => flume::bounded(capacity),
            // An unbounded mailbox is a bounded queue that never makes a sender wait:
            // at the cap a send fails with `Overloaded` instead. flume grows its queue
            // on demand, so the cap costs no memory until it is used.
            Kind::Unbounded(cap) => flume::bounded(cap),
        };
        let closed = Arc::new(Closed {
            flag: AtomicBool::new(false),
            notify: Notify::new(),
            waiting: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            byte_room: Notify::new(),
            mailbox: self,
        });
        (
            MailboxTx {
                tx,
                rx: rx.clone(),
                closed: closed.clone(),
            },
            MailboxRx { rx, closed },
        )
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox::bounded(Mailbox::DEFAULT_CAPACITY)
    }
}

/// A message in a mailbox, with the optional receipt its sender waits on and,
/// for a message from another node, its bytes counted against the mailbox's
/// [`Mailbox::max_bytes`].
pub(crate) struct Envelope<M> {
    pub(crate) msg: M,
    pub(crate) taken: Option<oneshot::Sender<()>>,
    pub(crate) charge: Option<Charge>,
}

impl<M> Envelope<M> {
    /// A message without receipt or charge.
    pub(crate) fn new(msg: M) -> Self {
        Envelope {
            msg,
            taken: None,
            charge: None,
        }
    }

    fn open(self) -> M {
        if let Some(taken) = self.taken {
            let _ = taken.send(());
        }
        // Taken out of the mailbox: its bytes no longer count.
        drop(self.charge);
        self.msg
    }
}

/// Bytes of a message from another node, counted in its mailbox until the
/// actor takes the message (or it is dropped).
pub(crate) struct Charge {
    closed: Arc<Closed>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.closed.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.closed.byte_room.notify_waiters();
    }
}

/// Why a message could not be queued; the envelope comes back so the caller can wait.
pub(crate) enum TrySendError<M> {
    Full(Envelope<M>),
    /// Not queued, and never will be: the actor stopped (the message was dropped,
    /// which answers its caller `ActorStopped`), or its mailbox is over its cap
    /// (the message comes back, for its caller to be told why).
    Refused(CallError, Option<Envelope<M>>),
}

/// The sending side, held (once) by every reference to a local actor.
pub(crate) struct MailboxTx<M> {
    tx: flume::Sender<Envelope<M>>,
    /// For draining only: a message that lands after the actor's final drain is
    /// dropped by its own sender (see [`MailboxTx::pushed`]).
    rx: flume::Receiver<Envelope<M>>,
    closed: Arc<Closed>,
}

/// Shared by both sides: the closed flag (set once by the actor as it stops; senders
/// waiting for room are woken by it), the senders waiting to hand a message
/// over, which flume does not count in a zero-capacity channel's length, and the
/// mailbox as spawned (kind, capacity, byte bound), kept once for both sides.
struct Closed {
    flag: AtomicBool,
    notify: Notify,
    waiting: AtomicUsize,
    /// Messages that entered the channel and have not left it, counted so that
    /// [`Closed::has_pending`] need not take the channel's lock to find it empty
    /// (before every message run inline). A `try_send` counts its message before it enters (and
    /// uncounts it if refused); a waiting send counts it once it went in, while
    /// still counted in `waiting` (a receiver may have taken it meanwhile: the
    /// count may wrap below zero for that moment, which reads as "look"); whoever
    /// takes a message out uncounts it after. So while a message is in the
    /// channel, `waiting` or `queued` is not zero.
    queued: AtomicUsize,
    /// Bytes of messages from other nodes in the mailbox (their bound is
    /// `mailbox.max_bytes`).
    bytes: AtomicUsize,
    byte_room: Notify,
    mailbox: Mailbox,
}

impl Closed {
    /// Whether anything is queued, or waiting to be queued: zero in both counts
    /// means nothing (see `queued`); otherwise the channel is asked.
    fn has_pending<M>(&self, rx: &flume::Receiver<Envelope<M>>) -> bool {
        if self.waiting.load(Ordering::SeqCst) != 0 {
            return true;
        }
        self.queued.load(Ordering::SeqCst) != 0 && !rx.is_empty()
    }

    /// One message left the channel.
    fn took(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

impl<M> MailboxTx<M> {
    /// Counts `bytes` of a message from another node against the mailbox's
    /// [`Mailbox::max_bytes`]; `None` if they would pass it (an empty mailbox
    /// takes any one message).
    pub(crate) fn charge(&self, bytes: usize) -> Option<Charge> {
        let closed = &self.closed;
        let mut now = closed.bytes.load(Ordering::Acquire);
        loop {
            if now > 0 && now.saturating_add(bytes) > closed.mailbox.max_bytes {
                return None;
            }
            match closed.bytes.compare_exchange_weak(
                now,
                now + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Charge {
                        closed: closed.clone(),
                        bytes,
                    })
                }
                Err(seen) => now = seen,
            }
        }
    }

    /// [`MailboxTx::charge`], waiting for room; `None` if the actor stops meanwhile.
    pub(crate) async fn charge_when_room(&self, bytes: usize) -> Option<Charge> {
        loop {
            let room = self.closed.byte_room.notified();
            let closing = self.closed.notify.notified();
            let (mut room, mut closing) = (pin!(room), pin!(closing));
            room.as_mut().enable();
            closing.as_mut().enable();
            if self.closed.is_set() {
                return None;
            }
            if let Some(charge) = self.charge(bytes) {
                return Some(charge);
            }
            tokio::select! {
                () = room => {}
                () = closing => {}
            }
        }
    }

    /// Bytes of messages from other nodes queued now.
    pub(crate) fn bytes(&self) -> usize {
        self.closed.bytes.load(Ordering::Acquire)
    }

    /// Messages queued and not yet taken by the actor (senders still waiting for
    /// room are not in the mailbox yet).
    pub(crate) fn depth(&self) -> usize {
        self.tx.len()
    }

    /// Whether anything is queued or waiting to be queued: a call that arrives now
    /// must go behind it.
    pub(crate) fn has_pending(&self) -> bool {
        self.closed.has_pending(&self.rx)
    }

    fn refusal(&self) -> Option<CallError> {
        self.closed.is_set().then_some(CallError::ActorStopped)
    }

    /// Queues without waiting. A rendezvous mailbox takes the message only if the
    /// actor is waiting for one right now.
    pub(crate) fn try_send(&self, env: Envelope<M>) -> Result<(), TrySendError<M>> {
        if let Some(err) = self.refusal() {
            return Err(TrySendError::Refused(err, None));
        }
        // Counted before it enters (see `Closed::queued`).
        self.closed.queued.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.try_send(env);
        if sent.is_err() {
            self.closed.took();
        }
        match sent {
            Ok(()) => {
                self.pushed();
                Ok(())
            }
            Err(flume::TrySendError::Full(env)) => match self.closed.mailbox.kind {
                Kind::Unbounded(cap) => Err(TrySendError::Refused(
                    CallError::Overloaded { cap },
                    Some(env),
                )),
                Kind::Rendezvous | Kind::Bounded(_) => Err(TrySendError::Full(env)),
            },
            Err(flume::TrySendError::Disconnected(_)) => {
                Err(TrySendError::Refused(CallError::ActorStopped, None))
            }
        }
    }

    /// The error `try_tell` reports for a full mailbox.
    pub(crate) fn full_error(&self) -> CallError {
        match self.closed.mailbox.kind {
            Kind::Rendezvous => CallError::MailboxFull { capacity: 0 },
            Kind::Bounded(capacity) => CallError::MailboxFull { capacity },
            Kind::Unbounded(cap) => CallError::Overloaded { cap },
        }
    }

    /// Queues, waiting for room (bounded) or for the actor to take it (rendezvous);
    /// an unbounded mailbox never waits. `waiting` runs once the message is
    /// registered as waiting, to make sure the actor comes to take it.
    ///
    /// A send that had to wait and whose message was then dropped unhandled because
    /// the actor stopped meanwhile reports `ActorStopped`: it was never accepted.
    pub(crate) async fn send(
        &self,
        env: Envelope<M>,
        waiting: impl FnOnce(),
    ) -> Result<(), CallError> {
        if let Kind::Unbounded(_) = self.closed.mailbox.kind {
            return match self.try_send(env) {
                Ok(()) => Ok(()),
                Err(TrySendError::Refused(err, _)) => Err(err),
                Err(TrySendError::Full(_)) => Err(self.full_error()),
            };
        }
        self.send_when_room(env, waiting).await
    }

    /// [`MailboxTx::send`], waiting for room below the cap of an unbounded
    /// mailbox too: for a tell from another node, which has left its sender
    /// and cannot be refused to it (its sender's credit makes it wait instead).
    pub(crate) async fn send_when_room(
        &self,
        mut env: Envelope<M>,
        waiting: impl FnOnce(),
    ) -> Result<(), CallError> {
        // Learn the message's fate without a second allocation when the sender
        // already asked for a receipt; the caller keeps awaiting its own.
        let mut fate = None;
        if env.taken.is_none() {
            let (tx, rx) = oneshot::channel();
            env.taken = Some(tx);
            fate = Some(rx);
        }
        // Subscribe before checking the flag, so a stop between the two still wakes us:
        // an actor that stops while we wait will never take from its queue again.
        let closing = self.closed.notify.notified();
        let mut closing = pin!(closing);
        closing.as_mut().enable();
        if let Some(err) = self.refusal() {
            return Err(err);
        }
        // Counted before the message is registered, so that whoever releases the
        // actor's baton sees it (see `Slot::release`).
        let _counted = WaitingSender::count(&self.closed.waiting);
        let mut send = self.tx.send_async(env);
        let mut waiting = Some(waiting);
        let sent = poll_fn(|cx| {
            if let Poll::Ready(sent) = Pin::new(&mut send).poll(cx) {
                return Poll::Ready(Some(sent));
            }
            // Registered as waiting (or still full): make sure the actor runs.
            if let Some(waiting) = waiting.take() {
                waiting();
            }
            // Dropping the send withdraws a message still waiting for room.
            closing.as_mut().poll(cx).map(|()| None)
        })
        .await;
        drop(send);
        // In the channel (or taken from it already), and still counted in
        // `waiting` until `_counted` goes: counted in `queued` before that. If
        // the actor stopped while it waited (None), the message is in the
        // channel for `pushed` below to drop, or was withdrawn: then the count
        // stays one high, on a stopped actor, where it only means "ask the
        // channel".
        match sent {
            Some(Err(_)) => return Err(CallError::ActorStopped),
            Some(Ok(())) | None => {
                self.closed.queued.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.pushed();
        match fate {
            // The actor stopped: whoever took the message from the channel (its
            // final drain, or `pushed` above) has it in hand and opens or drops
            // it at once; its fate is waited for, not guessed from a look taken
            // while the drain still holds it.
            Some(fate) if self.closed.is_set() => fate.await.map_err(|_| CallError::ActorStopped),
            Some(mut fate) => match fate.try_recv() {
                Err(oneshot::error::TryRecvError::Closed) => Err(CallError::ActorStopped),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// After a successful push: if the actor has meanwhile stopped, its final drain
    /// may have missed this message, so drop what is queued here and now (each
    /// dropped call answers `ActorStopped`) rather than leave callers waiting.
    fn pushed(&self) {
        if self.closed.is_set() {
            while let Ok(env) = self.rx.try_recv() {
                self.closed.took();
                drop(env);
            }
        }
    }
}

/// The receiving side, used by whoever holds the actor's baton.
pub(crate) struct MailboxRx<M: 'static> {
    rx: flume::Receiver<Envelope<M>>,
    closed: Arc<Closed>,
}

impl<M: 'static> MailboxRx<M> {
    /// The next message, if one is queued (for a rendezvous mailbox: if a sender
    /// is waiting to hand one over). Taking a message releases its sender's receipt.
    pub(crate) fn try_recv(&self) -> Option<M> {
        let env = self.rx.try_recv().ok()?;
        self.closed.took();
        Some(env.open())
    }

    /// Whether anything is queued, or waiting to be queued (see `MailboxTx::has_pending`).
    pub(crate) fn has_pending(&self) -> bool {
        self.closed.has_pending(&self.rx)
    }

    /// Messages queued and not yet taken (see `MailboxTx::depth`).
    pub(crate) fn depth(&self) -> usize {
        self.rx.len()
    }

    /// The mailbox as spawned (kind, capacity, byte bound), for inspection.
    pub(crate) fn mailbox(&self) -> Mailbox {
        self.closed.mailbox
    }

    /// Refuses new messages and hands back the ones still queued, unopened: dropping
    /// them answers their callers with `ActorStopped`.
    pub(crate) fn close_and_drain(&self) -> Vec<M> {
        self.closed.set();
        let mut left = Vec::new();
        while let Ok(env) = self.rx.try_recv() {
            self.closed.took();
            left.push(env.msg);
        }
        left
    }
}

/// One sender waiting in `MailboxTx::send`, counted for as long as it waits.
struct WaitingSender<'a>(&'a AtomicUsize);

impl<'a> WaitingSender<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        WaitingSender(waiting)
    }
}

impl Drop for WaitingSender<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued<M>(tx: &MailboxTx<M>) -> usize {
        tx.closed.queued.load(Ordering::SeqCst)
    }

    #[test]
    fn the_count_of_queued_messages_follows_what_enters_and_leaves() {
        let (tx, rx) = Mailbox::bounded(2).channel::<u32>();
        assert!(!tx.has_pending() && !rx.has_pending());
        assert!(tx.try_send(Envelope::new(1)).is_ok());
        assert!(tx.try_send(Envelope::new(2)).is_ok());
        assert!(matches!(
            tx.try_send(Envelope::new(3)),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(queued(&tx), 2, "a refused message is not counted");
        assert!(tx.has_pending() && rx.has_pending());
        assert_eq!(rx.try_recv(), Some(1));
        assert!(rx.has_pending());
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        assert_eq!(queued(&tx), 0);
        assert!(!tx.has_pending() && !rx.has_pending());
    }

    #[tokio::test]
    async fn a_send_that_waited_for_room_is_counted_once_in() {
        let (tx, rx) = Mailbox::bounded(1).channel::<u32>();
        assert!(tx.try_send(Envelope::new(1)).is_ok());
        let (tx, rx) = (Arc::new(tx), Arc::new(rx));
        let sender = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(Envelope::new(2), || {}).await })
        };
        // Bounded in count and time: the sender registers as waiting.
        for _ in 0..1000 {
            if tx.closed.waiting.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(tx.closed.waiting.load(Ordering::SeqCst), 1);
        assert!(rx.has_pending());
        assert_eq!(rx.try_recv(), Some(1));
        assert!(
            rx.has_pending(),
            "the waiting sender is looked for until it is in"
        );
        sender.await.expect("sender ran").expect("sent");
        assert_eq!(queued(&tx), 1);
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(queued(&tx), 0);
        assert!(!rx.has_pending());
    }

    #[test]
    fn a_mailbox_drained_as_it_closes_counts_nothing_queued() {
        let (tx, rx) = Mailbox::unbounded().channel::<u32>();
        for n in 0..5 {
            assert!(tx.try_send(Envelope::new(n)).is_ok());
        }
        assert_eq!(rx.close_and_drain(), vec![0, 1, 2, 3, 4]);
        assert_eq!(queued(&tx), 0);
        assert!(matches!(
            tx.try_send(Envelope::new(5)),
            Err(TrySendError::Refused(CallError::ActorStopped, None))
        ));
        assert_eq!(
            queued(&tx),
            0,
            "a message refused by a stopped actor is not counted"
        );
        assert!(!rx.has_pending());
    }
}
