//! Monitors across a connection: ours on the peer's objects (a `Monitor` frame out,
//! its `Down` back with the stop reason), and the peer's on ours (a task per
//! monitor waiting for the actor to stop). A lost connection ends them all: ours
//! resolve from the loss, theirs are dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::connection::{Connection, Lane};
use crate::error::CallError;
use crate::local::stop::StopReason;
use crate::wire::{Frame, ObjectId};

#[derive(Default)]
pub(crate) struct Monitors {
    next: AtomicU64,
    /// Our monitors of the peer's objects: where each one's reason goes.
    mine: Mutex<HashMap<u64, oneshot::Sender<StopReason>>>,
    /// The peer's monitors of our objects: the task waiting for each stop.
    theirs: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
}

impl Monitors {
    /// The connection is lost: our monitors learn it (their senders drop), the
    /// peer's are cancelled.
    pub(crate) fn close(&self) {
        self.mine.lock().clear();
        for (_, task) in self.theirs.lock().drain() {
            task.abort();
        }
    }
}

/// Our monitor of one object of the peer: resolves with its stop reason, or with
/// `Err` when the connection is lost first. Dropping it cancels the monitor.
pub(crate) struct Watch {
    conn: Arc<Connection>,
    id: u64,
    rx: Option<oneshot::Receiver<StopReason>>,
}

impl Watch {
    /// The object's stop reason; `None` if the connection was lost first.
    pub(crate) async fn stopped(mut self) -> Option<StopReason> {
        let rx = self.rx.take()?;
        rx.await.ok()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Still waiting: the peer can stop watching for us.
        if self.rx.is_some() && self.conn.monitors.mine.lock().remove(&self.id).is_some() {
            let _ = self
                .conn
                .send(Lane::Control, &Frame::Demonitor { watch: self.id });
        }
    }
}

impl Connection {
    /// Asks the peer to tell us when `object` stops.
    pub(crate) fn monitor(self: &Arc<Self>, object: ObjectId) -> Result<Watch, CallError> {
        let id = self.monitors.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.monitors.mine.lock().insert(id, tx);
        let watch = Watch {
            conn: self.clone(),
            id,
            rx: Some(rx),
        };
        self.send(Lane::Control, &Frame::Monitor { watch: id, object })?;
        // Lost before the insert was seen by `close`: resolve from the loss.
        if self.is_closed() {
            self.monitors.mine.lock().remove(&id);
        }
        Ok(watch)
    }

    /// Asks the peer to stop `object` (a link's failure, or a remote `Node::stop`).
    pub(crate) fn exit(&self, object: ObjectId, reason: StopReason) -> Result<(), CallError> {
        self.send(Lane::Control, &Frame::Exit { object, reason })
    }

    /// The peer watches one of our objects: tell it when the object stops.
    pub(crate) fn on_monitor(self: &Arc<Self>, watch: u64, object: ObjectId) {
        let exported = self.node.upgrade().and_then(|node| node.exported(&object));
        let Some(exported) = exported else {
            let reason = StopReason::NoSuchObject;
            let _ = self.send(Lane::Control, &Frame::Down { watch, reason });
            return;
        };
        let stopped = exported.stopped();
        drop(exported);
        let conn: Weak<Connection> = Arc::downgrade(self);
        let mut theirs = self.monitors.theirs.lock();
        let task = tokio::spawn(async move {
            let reason = stopped.await;
            if let Some(conn) = conn.upgrade() {
                conn.monitors.theirs.lock().remove(&watch);
                let _ = conn.send(Lane::Control, &Frame::Down { watch, reason });
            }
        });
        theirs.insert(watch, task.abort_handle());
    }

    pub(crate) fn on_demonitor(&self, watch: u64) {
        if let Some(task) = self.monitors.theirs.lock().remove(&watch) {
            task.abort();
        }
    }

    pub(crate) fn on_down(&self, watch: u64, reason: StopReason) {
        if let Some(tx) = self.monitors.mine.lock().remove(&watch) {
            let _ = tx.send(reason);
        }
    }

    /// The peer asks us to stop one of our objects.
    pub(crate) fn on_exit(&self, object: ObjectId, reason: StopReason) {
        match self.node.upgrade().and_then(|node| node.exported(&object)) {
            Some(exported) => exported.stop(reason),
            None => tracing::debug!(%object, "exit for an object this node does not export"),
        }
    }
}
