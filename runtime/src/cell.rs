//! The control block every actor shares with its node and its references:
//! stop requests, the wake-up for them, and the monitors waiting on the end.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::actor::StopReason;
use crate::id::ActorId;

const RUNNING: u8 = 0;
const STOP_NORMAL: u8 = 1;
const STOP_SHUTDOWN: u8 = 2;

pub(crate) struct ActorCell {
    pub(crate) id: ActorId,
    pub(crate) name: Option<Arc<str>>,
    stop: AtomicU8,
    waker: AtomicWaker,
    end: Mutex<End>,
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
            waker: AtomicWaker::new(),
            end: Mutex::new(End::default()),
        }
    }

    /// Asks the actor to stop after its current message. The first request wins.
    pub(crate) fn request_stop(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Shutdown => STOP_SHUTDOWN,
            _ => STOP_NORMAL,
        };
        if self
            .stop
            .compare_exchange(RUNNING, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    /// The pending stop request, if any.
    pub(crate) fn stop_requested(&self) -> Option<StopReason> {
        match self.stop.load(Ordering::Acquire) {
            RUNNING => None,
            STOP_SHUTDOWN => Some(StopReason::Shutdown),
            _ => Some(StopReason::Normal),
        }
    }

    /// Registers the actor task to be woken by a stop request or a baton hand-over.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Wakes the actor task.
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    /// Records the final reason and tells every monitor.
    pub(crate) fn finish(&self, reason: StopReason) {
        let monitors = {
            let mut end = self.end.lock();
            end.reason = Some(reason.clone());
            std::mem::take(&mut end.monitors)
        };
        for monitor in monitors {
            let _ = monitor.send(reason.clone());
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.end.lock().reason.is_some()
    }

    /// Resolves with the stop reason; at once if the actor has already stopped.
    pub(crate) fn monitor(&self) -> impl Future<Output = StopReason> + Send + 'static {
        let waiting = {
            let mut end = self.end.lock();
            match &end.reason {
                Some(reason) => Err(reason.clone()),
                None => {
                    let (tx, rx) = oneshot::channel();
                    end.monitors.push(tx);
                    Ok(rx)
                }
            }
        };
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
