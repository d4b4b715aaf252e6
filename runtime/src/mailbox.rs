//! Mailboxes: the queue in front of every actor, and how full it may get.
//!
//! Built on tokio's mpsc channels. What this module adds is the policy a user picks
//! per actor ([`Mailbox`]) and one sender/receiver type over the three kinds, so the
//! rest of the runtime never matches on the kind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};

use crate::error::CallError;

/// How an actor's mailbox buffers messages; chosen per actor with
/// [`SpawnOptions::mailbox`](crate::SpawnOptions::mailbox).
///
/// | kind | `tell` when the actor is busy | `try_tell` | memory |
/// | --- | --- | --- | --- |
/// | [`rendezvous`](Mailbox::rendezvous) | waits until the actor takes the message | `MailboxFull` unless the one hand-over slot is free | one message |
/// | [`bounded(n)`](Mailbox::bounded) (default, n = 1024) | waits for room | `MailboxFull` at once | n messages |
/// | [`unbounded`](Mailbox::unbounded) | never waits | same as `tell` | up to the hard cap; `Overloaded` past it |
///
/// ```
/// use remora::Mailbox;
/// assert_eq!(Mailbox::default(), Mailbox::bounded(Mailbox::DEFAULT_CAPACITY));
/// assert_eq!(Mailbox::unbounded().cap(), Some(Mailbox::DEFAULT_UNBOUNDED_CAP));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mailbox {
    kind: Kind,
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

    /// Zero capacity: a sender waits until the actor has taken its message.
    pub fn rendezvous() -> Mailbox {
        Mailbox {
            kind: Kind::Rendezvous,
        }
    }

    /// Room for `capacity` messages: a sender awaits room, `try_tell` fails at once.
    ///
    /// # Panics
    /// If `capacity` is 0 (use [`Mailbox::rendezvous`]) or larger than tokio's
    /// channel limit (`usize::MAX >> 3`).
    pub fn bounded(capacity: usize) -> Mailbox {
        assert!(
            capacity > 0,
            "Mailbox::bounded(0): a mailbox with no room is Mailbox::rendezvous()"
        );
        assert!(
            capacity <= usize::MAX >> 3,
            "Mailbox::bounded: capacity too large"
        );
        Mailbox {
            kind: Kind::Bounded(capacity),
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
        }
    }

    /// The bounded capacity (`Some(0)` for rendezvous), or `None` for unbounded.
    pub fn capacity(&self) -> Option<usize> {
        match self.kind {
            Kind::Rendezvous => Some(0),
            Kind::Bounded(n) => Some(n),
            Kind::Unbounded(_) => None,
        }
    }

    /// The hard cap of an unbounded mailbox, `None` for the others.
    pub fn cap(&self) -> Option<usize> {
        match self.kind {
            Kind::Unbounded(cap) => Some(cap),
            _ => None,
        }
    }

    pub(crate) fn channel<M>(self) -> (MailboxTx<M>, MailboxRx<M>) {
        match self.kind {
            // A one-slot channel plus a hand-over receipt on every message is a
            // rendezvous: the sender is released only when the actor dequeues.
            Kind::Rendezvous => {
                let (tx, rx) = mpsc::channel(1);
                (
                    MailboxTx::Bounded {
                        tx,
                        capacity: 0,
                        rendezvous: true,
                    },
                    MailboxRx::Bounded(rx),
                )
            }
            Kind::Bounded(capacity) => {
                let (tx, rx) = mpsc::channel(capacity);
                (
                    MailboxTx::Bounded {
                        tx,
                        capacity,
                        rendezvous: false,
                    },
                    MailboxRx::Bounded(rx),
                )
            }
            Kind::Unbounded(cap) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let len = Arc::new(AtomicUsize::new(0));
                (
                    MailboxTx::Unbounded {
                        tx,
                        len: len.clone(),
                        cap,
                    },
                    MailboxRx::Unbounded { rx, len },
                )
            }
        }
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox::bounded(Mailbox::DEFAULT_CAPACITY)
    }
}

/// A message in a mailbox, with the optional receipt its sender waits on.
pub(crate) struct Envelope<M> {
    pub(crate) msg: M,
    pub(crate) taken: Option<oneshot::Sender<()>>,
}

/// Why a message could not be queued; the envelope comes back so the caller can wait.
pub(crate) enum TrySendError<M> {
    Full(Envelope<M>),
    Refused(CallError),
}

pub(crate) enum MailboxTx<M> {
    Bounded {
        tx: mpsc::Sender<Envelope<M>>,
        capacity: usize,
        rendezvous: bool,
    },
    Unbounded {
        tx: mpsc::UnboundedSender<Envelope<M>>,
        len: Arc<AtomicUsize>,
        cap: usize,
    },
}

impl<M> MailboxTx<M> {
    /// Whether every message must carry a hand-over receipt that the sender awaits.
    pub(crate) fn is_rendezvous(&self) -> bool {
        matches!(
            self,
            MailboxTx::Bounded {
                rendezvous: true,
                ..
            }
        )
    }

    /// Messages queued and not yet taken by the actor.
    pub(crate) fn depth(&self) -> usize {
        match self {
            MailboxTx::Bounded { tx, .. } => tx.max_capacity() - tx.capacity(),
            MailboxTx::Unbounded { len, .. } => len.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn try_send(&self, env: Envelope<M>) -> Result<(), TrySendError<M>> {
        match self {
            MailboxTx::Bounded { tx, .. } => tx.try_send(env).map_err(|e| match e {
                mpsc::error::TrySendError::Full(env) => TrySendError::Full(env),
                mpsc::error::TrySendError::Closed(_) => {
                    TrySendError::Refused(CallError::ActorStopped)
                }
            }),
            MailboxTx::Unbounded { tx, len, cap } => {
                if len.fetch_add(1, Ordering::Relaxed) >= *cap {
                    len.fetch_sub(1, Ordering::Relaxed);
                    return Err(TrySendError::Refused(CallError::Overloaded { cap: *cap }));
                }
                tx.send(env).map_err(|_| {
                    len.fetch_sub(1, Ordering::Relaxed);
                    TrySendError::Refused(CallError::ActorStopped)
                })
            }
        }
    }

    /// The error `try_tell` reports for a full mailbox.
    pub(crate) fn full_error(&self) -> CallError {
        match self {
            MailboxTx::Bounded { capacity, .. } => CallError::MailboxFull {
                capacity: *capacity,
            },
            MailboxTx::Unbounded { cap, .. } => CallError::Overloaded { cap: *cap },
        }
    }

    /// Waits for room (bounded kinds only; unbounded never reports `Full`).
    pub(crate) async fn send(&self, env: Envelope<M>) -> Result<(), CallError> {
        match self {
            MailboxTx::Bounded { tx, .. } => {
                tx.send(env).await.map_err(|_| CallError::ActorStopped)
            }
            MailboxTx::Unbounded { .. } => match self.try_send(env) {
                Ok(()) => Ok(()),
                Err(TrySendError::Refused(e)) => Err(e),
                Err(TrySendError::Full(_)) => Err(self.full_error()),
            },
        }
    }
}

pub(crate) enum MailboxRx<M> {
    Bounded(mpsc::Receiver<Envelope<M>>),
    Unbounded {
        rx: mpsc::UnboundedReceiver<Envelope<M>>,
        len: Arc<AtomicUsize>,
    },
}

impl<M> MailboxRx<M> {
    /// The next message; `Ready(None)` once every sender is gone and the queue is empty.
    /// Taking a message releases its sender's receipt.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<M>> {
        let env = match self {
            MailboxRx::Bounded(rx) => rx.poll_recv(cx),
            MailboxRx::Unbounded { rx, len } => {
                let polled = rx.poll_recv(cx);
                if let Poll::Ready(Some(_)) = polled {
                    len.fetch_sub(1, Ordering::Relaxed);
                }
                polled
            }
        };
        env.map(|env| env.map(Envelope::open))
    }

    /// Refuses new messages and hands back the ones still queued, unopened: dropping
    /// them answers their callers with `ActorStopped`.
    pub(crate) fn close_and_drain(&mut self) -> Vec<M> {
        let mut left = Vec::new();
        match self {
            MailboxRx::Bounded(rx) => {
                rx.close();
                while let Ok(env) = rx.try_recv() {
                    left.push(env.msg);
                }
            }
            MailboxRx::Unbounded { rx, len } => {
                rx.close();
                while let Ok(env) = rx.try_recv() {
                    len.fetch_sub(1, Ordering::Relaxed);
                    left.push(env.msg);
                }
            }
        }
        left
    }
}

impl<M> Envelope<M> {
    fn open(self) -> M {
        if let Some(taken) = self.taken {
            let _ = taken.send(());
        }
        self.msg
    }
}
