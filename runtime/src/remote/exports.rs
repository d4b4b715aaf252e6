//! An exported object as a connection sees it: [`Exported`], any local actor
//! whatever its interface, which takes an incoming call's arguments (encoded or
//! moved) and hands the call to the actor. The table of exports is the
//! [`Host`](super::Host)'s.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::CallError;
use crate::local::cell::Withdraw;
use crate::local::mailbox::{Envelope, TrySendError};
use crate::local::route::LocalRoute;
use crate::local::stop::StopReason;
use crate::remote::marshal::{Args, Replier, Unmarshal};
use crate::wire::codec::Limits;

/// A delivery that has to wait for room in the actor's mailbox.
pub(crate) type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An exported object, as a connection sees it: any actor, whatever its interface.
pub(crate) trait Exported: Send + Sync {
    fn interface_id(&self) -> u64;
    fn interface_name(&self) -> &'static str;
    /// Takes a call's arguments (encoded or moved) and hands the call to the actor:
    /// run at once if the actor is idle, queued otherwise. A full mailbox gives back
    /// a future that waits for room (the connection holds the call, and those
    /// behind it, meanwhile); so does an unbounded mailbox at its cap for a tell
    /// (`one_way`), which cannot be refused to its sender: its sender's credit
    /// runs out instead. An ask is refused at the cap (`Overloaded`).
    fn deliver(
        self: Arc<Self>,
        method: u64,
        args: Args<'_>,
        limits: &Limits,
        replier: Replier,
        one_way: bool,
    ) -> Result<Option<Delivery>, CallError>;
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Resolves with the actor's stop reason (holding its cell, not the actor).
    fn stopped(&self) -> Pin<Box<dyn Future<Output = StopReason> + Send>>;
    /// Asks the actor to stop for `reason`.
    fn stop(&self, reason: StopReason);
    /// Whether the actor has stopped.
    fn is_finished(&self) -> bool;
    /// Nothing refers to the actor any more: has it run `on_unreferenced`, which
    /// calls `withdraw` if it chooses to stop.
    fn unreferenced(&self, withdraw: Withdraw);
    /// Whether a call of `method` in `chain` comes back to a handler waiting for it
    /// and cannot run beside it: a cycle.
    fn refuses_cycle(&self, chain: u64, method: u64) -> bool;
    /// The actor behind it, if it is one (for inspection).
    fn actor(&self) -> Option<crate::id::ActorId> {
        None
    }
}

impl<M: Unmarshal> Exported for LocalRoute<M> {
    fn interface_id(&self) -> u64 {
        M::INTERFACE_ID
    }

    fn interface_name(&self) -> &'static str {
        M::INTERFACE
    }

    fn deliver(
        self: Arc<Self>,
        method: u64,
        args: Args<'_>,
        limits: &Limits,
        replier: Replier,
        one_way: bool,
    ) -> Result<Option<Delivery>, CallError> {
        // What the message costs the mailbox's byte bound: its encoded arguments.
        let size = match &args {
            Args::Encoded(bytes) => bytes.len(),
            Args::Moved(_) => 0,
        };
        let msg = match M::unmarshal(method, args, limits, replier) {
            Ok(msg) => msg,
            Err(err) => {
                if let CallError::UnknownMethod { .. } = err {
                    let unknown = &self.slot.stats().unknown;
                    unknown
                        .calls
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    unknown.error(&err);
                }
                return Err(err);
            }
        };
        self.take(msg, one_way, size)
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn stopped(&self) -> Pin<Box<dyn Future<Output = StopReason> + Send>> {
        Box::pin(self.cell.monitor())
    }

    fn stop(&self, reason: StopReason) {
        self.cell.request_stop(reason);
        self.slot.schedule();
    }

    fn is_finished(&self) -> bool {
        self.cell.is_finished()
    }

    fn unreferenced(&self, withdraw: Withdraw) {
        self.cell.request_unreferenced(withdraw);
        self.slot.schedule();
    }

    fn refuses_cycle(&self, chain: u64, method: u64) -> bool {
        LocalRoute::refuses_cycle(self, chain, M::reentrant(method))
    }

    fn actor(&self) -> Option<crate::id::ActorId> {
        Some(self.cell.id)
    }
}

impl<M: Unmarshal> LocalRoute<M> {
    /// Hands an incoming message to the actor: run at once if it is idle, queued
    /// otherwise; a full mailbox gives back a future that waits for room (see
    /// [`Exported::deliver`]).
    fn take(
        self: Arc<Self>,
        msg: M,
        one_way: bool,
        size: usize,
    ) -> Result<Option<Delivery>, CallError> {
        let charge = match size {
            0 => None,
            size => match self.tx.charge(size) {
                Some(charge) => Some(charge),
                // Past the mailbox's byte bound: wait for room, then for a place.
                None => {
                    return Ok(Some(Box::pin(async move {
                        // None: the actor stopped; dropping the message answers so.
                        let Some(charge) = self.tx.charge_when_room(size).await else {
                            return;
                        };
                        let env = Envelope {
                            msg,
                            taken: None,
                            charge: Some(charge),
                        };
                        let _ = match one_way {
                            true => self.push_when_room(env).await,
                            false => self.push_waiting(env).await,
                        };
                    })));
                }
            },
        };
        match self.offer_charged(msg, charge) {
            Ok(()) => Ok(None),
            // A tell over the mailbox's cap waits below it.
            Err(TrySendError::Refused(_, Some(env))) if one_way => Ok(Some(Box::pin(async move {
                let _ = self.push_when_room(env).await;
            }))),
            // An ask over the cap: its caller is told so.
            Err(TrySendError::Refused(err, Some(env))) => {
                tracing::debug!(actor = %self.cell.id, %err, "incoming call refused");
                self.count_refused(&env.msg, &err);
                env.msg.refuse(err);
                Ok(None)
            }
            // Stopped: dropping the message answers its caller through the replier.
            Err(TrySendError::Refused(err, None)) => Err(err),
            Err(TrySendError::Full(env)) => Ok(Some(Box::pin(async move {
                let _ = self.push_waiting(env).await;
            }))),
        }
    }
}
