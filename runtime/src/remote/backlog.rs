//! The replies a transport has queued for a peer and not yet sent, counted, so
//! that a peer that does not read its replies stops having its calls read.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes of replies a transport has queued and not yet sent: a peer that does
/// not read its replies stops having its calls read past a budget
/// (`Connection::drain`).
#[derive(Default)]
pub(crate) struct Backlog {
    bytes: AtomicUsize,
    drained: Notify,
}

impl Backlog {
    pub(crate) fn queued(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Resolves once at most `budget` bytes are queued (or `gone` says to stop).
    pub(crate) async fn within(&self, budget: usize, gone: impl Fn() -> bool) {
        loop {
            let drained = self.drained.notified();
            let mut drained = std::pin::pin!(drained);
            drained.as_mut().enable();
            if self.bytes() <= budget || gone() {
                return;
            }
            drained.await;
        }
    }
}
