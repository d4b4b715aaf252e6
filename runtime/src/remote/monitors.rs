//! Monitors across a connection: ours on the peer's objects (a `Monitor` frame out,
//! its `Down` back with the stop reason), and the peer's on ours (a task per
//! monitor waiting for the actor to stop). The protocol core keeps both tables and
//! ends them all when the connection is lost: ours resolve from the loss, theirs
//! are cancelled; a watch id the peer reuses cancels the monitor it replaces.

use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::connection::{Connection, Lane};

/// The most monitors one peer may have on this node's objects at a time.
pub(crate) const MAX_WATCHED: usize = 65_536;
use crate::error::CallError;
use crate::local::stop::StopReason;
use crate::wire::{Frame, ObjectId};

/// Our monitor of one object of the peer: resolves with its stop reason, or with
/// `None` when the connection is lost first. Dropping it cancels the monitor.
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
        if self.rx.is_some() {
            let id = self.id;
            self.conn.drive(|core| core.demonitor(id));
        }
    }
}

impl Connection {
    /// Asks the peer to tell us when `object` stops.
    pub(crate) fn monitor(self: &Arc<Self>, object: ObjectId) -> Result<Watch, CallError> {
        let (tx, rx) = oneshot::channel();
        let id = self.drive(|core| core.monitor(object, tx))?;
        Ok(Watch {
            conn: self.clone(),
            id,
            rx: Some(rx),
        })
    }

    /// Asks the peer to stop `object` (a link's failure, or a remote `Node::stop`).
    pub(crate) fn exit(&self, object: ObjectId, reason: StopReason) -> Result<(), CallError> {
        self.send(Lane::Control, &Frame::Exit { object, reason })
    }

    /// The peer watches one of our objects: tell it when the object stops. Any
    /// peer holding the object's id may (a monitor only observes), up to
    /// [`MAX_WATCHED`] at a time; past that the monitor is refused.
    pub(crate) fn on_monitor(self: &Arc<Self>, watch: u64, object: ObjectId) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let Some(exported) = node.exported(&object) else {
            self.drive(|core| core.down(watch, StopReason::NoSuchObject));
            return;
        };
        // A reused watch id replaces its monitor rather than adding one.
        if self.drive(|core| core.watching_count(watch)) >= MAX_WATCHED {
            node.monitor_refused();
            tracing::warn!(peer = %self.peer.node, %object, "refused a monitor: the peer has {MAX_WATCHED} already");
            let error = CallError::Unauthorized {
                reason: format!("a peer may have at most {MAX_WATCHED} monitors on this node"),
            };
            let _ = self.send(Lane::Control, &Frame::Refused { object, error });
            return;
        }
        drop(node);
        let stopped = exported.stopped();
        drop(exported);
        let conn: Weak<Connection> = Arc::downgrade(self);
        // Spawned under the core's lock: the task reports only after it is recorded.
        self.drive(|core| {
            let task = tokio::spawn(async move {
                let reason = stopped.await;
                if let Some(conn) = conn.upgrade() {
                    conn.drive(|core| core.down(watch, reason));
                }
            });
            core.watched(watch, task.abort_handle());
        });
    }

    /// The peer asks us to stop one of our objects: done if it has the authority
    /// (see [`authority`](super::authority)), refused with `Unauthorized` otherwise.
    pub(crate) fn on_exit(&self, object: ObjectId, reason: StopReason) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        match node.stoppable(&object, self.peer.node, self.caller.identity()) {
            Ok(Some(exported)) => exported.stop(reason),
            Ok(None) => tracing::debug!(%object, "exit for an object this node does not export"),
            Err(error) => {
                tracing::warn!(
                    peer = %self.peer.node,
                    identity = self.caller.identity(),
                    %object,
                    %error,
                    "refused to stop an actor for a peer"
                );
                let _ = self.send(Lane::Control, &Frame::Refused { object, error });
            }
        }
    }
}
