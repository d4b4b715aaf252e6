//! The control block every actor shares with its node and its references:
//! stop requests, the wake-up for them, and the monitors waiting on the end.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::id::ActorId;
use crate::local::stop::StopReason;

/// Withdraws an unreferenced actor's export, if it is still unreferenced; gives
/// back what has to be dropped after the actor is asked to stop (its last route,
/// whose drop would otherwise stop it first, for a plain `Normal`).
pub(crate) type Withdraw = Box<dyn FnOnce() -> Option<Box<dyn Send>> + Send>;

const RUNNING: u8 = 0;
const STOP_REQUESTED: u8 = 1;

pub(crate) struct ActorCell {
    pub(crate) id: ActorId,
    pub(crate) name: Option<Arc<str>>,
    /// `STOP_REQUESTED` once a stop was asked for (read on every message).
    stop: AtomicU8,
    /// The call chain of the handler running now (0: none, or a tell's): a call of
    /// the same chain arriving meanwhile is a cycle.
    busy_chain: AtomicU64,
    /// Whether the handler(s) running now hold the actor shared (`&self` methods
    /// of a reentrant interface): a `#[reentrant]` call of their chain may join them.
    busy_shared: AtomicBool,
    /// Set when nothing refers to it any more: its `on_unreferenced` is due. The
    /// node's way to withdraw its export, should it choose to stop, is in `rare`.
    unreferenced: AtomicBool,
    /// Exported, it stays exported without leases (`SpawnOptions::pinned`).
    pinned: AtomicBool,
    /// What most actors never need until they stop: made on first use, so an
    /// idle actor pays one pointer for it (a million idle actors are a million
    /// of these cells).
    rare: Mutex<Option<Box<Rare>>>,
}

/// The parts of an [`ActorCell`] used only around a stop, an `on_unreferenced`
/// or a monitor.
#[derive(Default)]
struct Rare {
    /// Why it stops, set once, before `ActorCell::stop` flips.
    stop_reason: Option<StopReason>,
    /// How to withdraw its export, set with `ActorCell::unreferenced`.
    withdraw: Option<Withdraw>,
    end: End,
}

#[derive(Default)]
struct End {
    reason: Option<StopReason>,
    monitors: Vec<oneshot::Sender<StopReason>>,
}

impl ActorCell {
    pub(crate) fn new(id: ActorId, name: Option<Arc<str>>) -> Self {
        ActorCell {
            id,
            name,
            stop: AtomicU8::new(RUNNING),
            busy_chain: AtomicU64::new(0),
            busy_shared: AtomicBool::new(false),
            unreferenced: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            rare: Mutex::new(None),
        }
    }

    /// Runs `f` on the rare parts, made first if need be, under their lock.
    /// Nothing that may call back into this cell is dropped inside `f`.
    fn rare<R>(&self, f: impl FnOnce(&mut Rare) -> R) -> R {
        f(self.rare.lock().get_or_insert_with(Box::default))
    }

    /// Records a request to stop after the current message; the first request wins.
    /// Whoever holds the actor's baton acts on it (`Control::stop` also makes sure
    /// someone holds it).
    pub(crate) fn request_stop(&self, reason: StopReason) {
        self.rare(|rare| {
            if rare.stop_reason.is_none() {
                rare.stop_reason = Some(reason);
                self.stop.store(STOP_REQUESTED, Ordering::SeqCst);
            }
        });
    }

    /// The pending stop request, if any.
    pub(crate) fn stop_requested(&self) -> Option<StopReason> {
        match self.stop.load(Ordering::SeqCst) {
            RUNNING => None,
            _ => Some(
                self.rare(|rare| rare.stop_reason.clone())
                    .unwrap_or(StopReason::Normal),
            ),
        }
    }

    /// Nothing refers to the actor any more: its holder runs `on_unreferenced`
    /// next, and calls `withdraw` if it chooses to stop.
    pub(crate) fn request_unreferenced(&self, withdraw: Withdraw) {
        // One that was never taken goes after the lock: dropping it may drop a
        // route, whose drop asks this cell to stop.
        let replaced = self.rare(|rare| rare.withdraw.replace(withdraw));
        self.unreferenced.store(true, Ordering::SeqCst);
        drop(replaced);
    }

    /// Whether `on_unreferenced` is due.
    pub(crate) fn unreferenced_requested(&self) -> bool {
        self.unreferenced.load(Ordering::SeqCst)
    }

    /// Takes the due `on_unreferenced`, with the node's way to withdraw the export.
    pub(crate) fn take_unreferenced(&self) -> Option<Withdraw> {
        // A plain load first: this runs between every two queued messages.
        if !self.unreferenced.load(Ordering::Acquire)
            || !self.unreferenced.swap(false, Ordering::SeqCst)
        {
            return None;
        }
        self.rare(|rare| rare.withdraw.take())
    }

    pub(crate) fn pin(&self) {
        self.pinned.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// The handler now running belongs to call chain `chain` (0 when it finished),
    /// and holds the actor `shared` or not.
    pub(crate) fn set_busy(&self, chain: u64, shared: bool) {
        // Only actors with reentrant methods ever lend shared: skip the store for
        // the others (this runs for every message).
        if shared || self.busy_shared.load(Ordering::Relaxed) {
            self.busy_shared.store(shared, Ordering::Release);
        }
        self.busy_chain.store(chain, Ordering::Release);
    }

    /// Whether a `#[reentrant]` call of `chain` may run beside the handler(s) now
    /// running: they belong to that chain and hold the actor shared. (Only a hint
    /// for callers: the actor's holder decides.)
    pub(crate) fn may_reenter(&self, chain: u64) -> bool {
        self.in_cycle(chain) && self.busy_shared.load(Ordering::Acquire)
    }

    /// Whether a call of `chain` would come back to a handler that waits for it.
    pub(crate) fn in_cycle(&self, chain: u64) -> bool {
        chain != 0 && self.busy_chain.load(Ordering::Acquire) == chain
    }

    /// Records the final reason and tells every monitor.
    pub(crate) fn finish(&self, reason: StopReason) {
        let monitors = self.rare(|rare| {
            rare.end.reason = Some(reason.clone());
            std::mem::take(&mut rare.end.monitors)
        });
        for monitor in monitors {
            let _ = monitor.send(reason.clone());
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.rare
            .lock()
            .as_ref()
            .is_some_and(|rare| rare.end.reason.is_some())
    }

    /// Resolves with the stop reason; at once if the actor has already stopped.
    pub(crate) fn monitor(&self) -> impl Future<Output = StopReason> + Send + 'static {
        let waiting = self.rare(|rare| {
            let end = &mut rare.end;
            match &end.reason {
                Some(reason) => Err(reason.clone()),
                None => {
                    let (tx, rx) = oneshot::channel();
                    // Monitors given up (their receivers dropped) go before the
                    // list would grow: it stays within twice the live ones.
                    if end.monitors.len() == end.monitors.capacity() {
                        end.monitors.retain(|monitor| !monitor.is_closed());
                    }
                    end.monitors.push(tx);
                    Ok(rx)
                }
            }
        });
        async move {
            match waiting {
                Err(reason) => reason,
                // `finish` always answers before the cell can go away; a dropped
                // sender means the actor task itself was torn down with its runtime.
                Ok(rx) => rx.await.unwrap_or(StopReason::Shutdown),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_actors_cell_makes_its_stop_state_only_when_asked_to_stop() {
        // A million idle actors are a million cells: what only a stop, an
        // `on_unreferenced` or a monitor needs is not carried before then.
        assert!(
            std::mem::size_of::<ActorCell>() <= 64,
            "an actor cell is {} bytes",
            std::mem::size_of::<ActorCell>()
        );
        let cell = ActorCell::new(ActorId(1), None);
        assert!(cell.stop_requested().is_none());
        assert!(!cell.is_finished());
        assert!(cell.rare.lock().is_none(), "looking made the stop state");
        cell.request_stop(StopReason::Shutdown);
        cell.request_stop(StopReason::Normal);
        assert_eq!(cell.stop_requested(), Some(StopReason::Shutdown));
        cell.finish(StopReason::Shutdown);
        assert!(cell.is_finished());
    }

    #[test]
    fn monitors_given_up_do_not_pile_up() {
        let cell = ActorCell::new(ActorId(1), None);
        for _ in 0..10_000 {
            drop(cell.monitor());
        }
        let kept = cell.monitor();
        let live = cell.rare(|rare| rare.end.monitors.len());
        assert!(live <= 2, "{live} monitors kept for 1 live");
        cell.finish(StopReason::Normal);
        let reason = futures_util::FutureExt::now_or_never(kept);
        assert_eq!(reason, Some(StopReason::Normal));
    }
}
