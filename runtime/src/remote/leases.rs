//! Reference leases (Java RMI's distributed GC, with Cap'n Proto's prompt release).
//!
//! - A node holding proxies for an actor on another node holds a lease on it:
//!   [`HeldLeases`] counts the proxies per (node, object), renews every held object with
//!   one `Renew` frame per peer at half the owner's lease time, and, when the last
//!   proxy of an object goes, releases it with a `Release` frame (batched for a few
//!   milliseconds).
//! - The owner records who holds leases on its exports ([`GrantedLeases`]); a lease not
//!   renewed within the lease time (a holder that died, or a lost connection)
//!   lapses. An export nobody holds a lease on and nothing on its node refers to
//!   (no local reference, no registry binding: bound references are held) has
//!   its actor told: `Actor::on_unreferenced` (RMI's `unreferenced`) runs, and by
//!   default the export is withdrawn and the actor stops with
//!   `StopReason::Unreferenced`; an actor may choose to stay exported instead.
//!   Explicit exports ([`Node::export`](crate::Node::export)) and pinned actors
//!   never are.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::CallError;
use crate::id::NodeId;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::connection::{Connection, Lane};
use super::host::Host;
use crate::wire::{Frame, ObjectId};

/// How long a lease lasts unless renewed, unless the node is configured otherwise.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(600);

/// How long releases wait to be sent together.
const RELEASE_BATCH: Duration = Duration::from_millis(20);

/// The leases this node holds on other nodes' objects.
#[derive(Default)]
pub(crate) struct HeldLeases {
    peers: Mutex<HashMap<NodeId, PeerLeases>>,
    /// Wakes the lease task: a release to send.
    wake: Notify,
}

#[derive(Default)]
struct PeerLeases {
    addr: Option<String>,
    objects: HashMap<ObjectId, usize>,
    released: Vec<ObjectId>,
    renewed: Option<Instant>,
}

impl HeldLeases {
    /// A proxy for `object` on `peer` was made.
    pub(crate) fn acquire(&self, peer: NodeId, addr: Option<&str>, object: ObjectId) {
        let mut peers = self.peers.lock();
        let held = peers.entry(peer).or_default();
        if held.addr.is_none() {
            held.addr = addr.map(str::to_owned);
        }
        *held.objects.entry(object).or_default() += 1;
    }

    /// A proxy for `object` on `peer` was dropped.
    pub(crate) fn release(&self, peer: NodeId, object: ObjectId) {
        let mut peers = self.peers.lock();
        let Some(held) = peers.get_mut(&peer) else {
            return;
        };
        if let Some(count) = held.objects.get_mut(&object) {
            *count -= 1;
            if *count == 0 {
                held.objects.remove(&object);
                held.released.push(object);
                drop(peers);
                self.wake.notify_one();
            }
        }
    }

    /// How many objects this node holds leases on.
    pub(crate) fn count(&self) -> usize {
        self.peers.lock().values().map(|p| p.objects.len()).sum()
    }

    /// Each (peer, object) held, with its count of proxies (for inspection).
    pub(crate) fn list(&self) -> Vec<(NodeId, ObjectId, usize)> {
        let peers = self.peers.lock();
        peers
            .iter()
            .flat_map(|(peer, held)| held.objects.iter().map(|(o, n)| (*peer, *o, *n)))
            .collect()
    }
}

/// The leases other nodes hold on this node's exports: holder → expiry, per object.
#[derive(Default)]
pub(crate) struct GrantedLeases {
    objects: Mutex<HashMap<ObjectId, HashMap<NodeId, Instant>>>,
}

impl GrantedLeases {
    /// `holder` holds (or renews) a lease on each of `objects` until `now + lease`.
    pub(crate) fn renew(&self, holder: NodeId, objects: &[ObjectId], lease: Duration) {
        let until = crate::deadline::after(Instant::now(), lease);
        let mut granted = self.objects.lock();
        for object in objects {
            granted.entry(*object).or_default().insert(holder, until);
        }
    }

    /// `holder` no longer holds leases on `objects`; returns how many it held.
    pub(crate) fn release(&self, holder: NodeId, objects: &[ObjectId]) -> usize {
        let mut granted = self.objects.lock();
        let mut released = 0;
        for object in objects {
            if let Some(holders) = granted.get_mut(object) {
                released += usize::from(holders.remove(&holder).is_some());
                if holders.is_empty() {
                    granted.remove(object);
                }
            }
        }
        released
    }

    /// Drops lapsed leases; returns whether `object` still has a lease.
    pub(crate) fn is_leased(&self, object: &ObjectId, now: Instant) -> bool {
        let mut granted = self.objects.lock();
        let Some(holders) = granted.get_mut(object) else {
            return false;
        };
        holders.retain(|_, until| *until > now);
        if holders.is_empty() {
            granted.remove(object);
            return false;
        }
        true
    }

    /// Drops every lapsed lease, on any export. [`GrantedLeases::is_leased`]
    /// is asked only about exports nothing else holds: without this, a pinned or
    /// locally held export would keep (and count) the leases of holders that
    /// died, one more with every holder lost.
    pub(crate) fn lapse(&self, now: Instant) {
        self.objects.lock().retain(|_, holders| {
            holders.retain(|_, until| *until > now);
            !holders.is_empty()
        });
    }

    /// How many leases are held on this node's exports.
    pub(crate) fn count(&self) -> usize {
        self.objects.lock().values().map(HashMap::len).sum()
    }

    /// The holders of leases on `object` and when each lapses (for inspection).
    pub(crate) fn holders(&self, object: &ObjectId) -> Vec<(NodeId, Instant)> {
        let granted = self.objects.lock();
        granted
            .get(object)
            .map(|holders| holders.iter().map(|(n, until)| (*n, *until)).collect())
            .unwrap_or_default()
    }
}

/// The longest the lease task sleeps between looks.
const MAX_TICK: Duration = Duration::from_secs(60);

/// The node's lease task: renews held leases, sends releases, and withdraws
/// exports nobody refers to any more. Ends when the node is gone.
pub(crate) async fn run(node: Weak<Host>, held: Weak<HeldLeases>, lease: Duration) {
    // Renewals at half the lease, sweeps at a quarter: a lapsed export is
    // withdrawn within 1.25 leases of its last renewal. A very long lease still
    // gets its first renewal, and sweeps, within a minute.
    let tick = (lease / 4).clamp(Duration::from_millis(25), MAX_TICK);
    let mut next_tick = crate::deadline::after(Instant::now(), tick);
    loop {
        let Some(wake) = held.upgrade() else { return };
        tokio::select! {
            _ = tokio::time::sleep_until(next_tick) => {}
            _ = wake.wake.notified() => {
                // Let more releases join this one.
                tokio::time::sleep(RELEASE_BATCH).await;
            }
        }
        drop(wake);
        let (Some(node), Some(held)) = (node.upgrade(), held.upgrade()) else {
            return;
        };
        if node.is_closed() {
            return;
        }
        let now = Instant::now();
        send(&node, &held, now, lease);
        if now >= next_tick {
            node.sweep_exports(now);
            next_tick = crate::deadline::after(now, tick);
        }
    }
}

/// Sends pending releases, and renewals that are due (half the lease).
fn send(node: &Arc<Host>, held: &HeldLeases, now: Instant, lease: Duration) {
    let mut due = Vec::new();
    {
        let mut peers = held.peers.lock();
        peers.retain(|peer, h| {
            let released = std::mem::take(&mut h.released);
            let renew = h
                .renewed
                .is_none_or(|at| now.duration_since(at) >= lease / 2);
            let renewed = if renew && !h.objects.is_empty() {
                h.objects.keys().copied().collect()
            } else {
                Vec::new()
            };
            if !released.is_empty() || !renewed.is_empty() {
                due.push((*peer, released, renewed));
            }
            !h.objects.is_empty()
        });
    }
    for (peer, released, renewed) in due {
        let sent = match node.peer(peer) {
            Ok(conn) => {
                send_listed(&conn, &released, |objects| Frame::Release { objects })
                    && send_listed(&conn, &renewed, |objects| Frame::Renew { objects })
            }
            Err(_) => false,
        };
        let mut peers = held.peers.lock();
        let Some(h) = peers.get_mut(&peer) else {
            continue;
        };
        if sent && !renewed.is_empty() {
            h.renewed = Some(now);
        } else if !sent {
            // Not connected (an object on a third node not called yet): dial, so
            // that the next tick can renew.
            tracing::debug!(%peer, "no connection to renew or release leases on");
            if let Some(addr) = h.addr.clone() {
                let node = node.clone();
                node.clone().spawn_task(async move {
                    let _ = node.connect(&addr).await;
                });
            }
        }
    }
}

/// Sends `objects` in as many frames as the peer's frame limit needs (a node may
/// hold more proxies on one peer than one frame can list). False if the
/// connection is gone; a frame that cannot be built is logged, not taken for a
/// lost connection.
fn send_listed(
    conn: &Connection,
    objects: &[ObjectId],
    frame: impl Fn(Vec<ObjectId>) -> Frame<'static>,
) -> bool {
    for chunk in objects.chunks(objects_per_frame(conn.send_limits().max_frame)) {
        match conn.send(Lane::Control, &frame(chunk.to_vec())) {
            Ok(()) => {}
            Err(CallError::NodeDown { .. }) => return false,
            Err(err) => {
                tracing::error!(peer = %conn.peer.node, %err, "a lease frame could not be built");
            }
        }
    }
    true
}

/// How many object ids one frame of `max_frame` bytes can list: an id takes at
/// most 34 bytes encoded (16 bytes, each at most 2, and a header), and the
/// frame's own header well under 64.
pub(crate) fn objects_per_frame(max_frame: usize) -> usize {
    (max_frame.saturating_sub(64) / 34).max(1)
}

/// Starts the lease task of `node` (once).
pub(crate) fn start(node: &Arc<Host>, held: &Arc<HeldLeases>, lease: Duration) {
    node.spawn_task(run(Arc::downgrade(node), Arc::downgrade(held), lease));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::{encode, Limits};

    #[test]
    fn a_lease_frame_of_objects_per_frame_ids_fits_the_limit() {
        for max_frame in [1024, 4096, 64 << 10, 1 << 20] {
            let limits = Limits {
                max_frame,
                ..Limits::default()
            };
            let n = objects_per_frame(max_frame);
            let objects: Vec<ObjectId> = (0..n).map(|_| ObjectId::random()).collect();
            let mut out = Vec::new();
            let renew = Frame::Renew { objects };
            assert_eq!(encode(&renew, &mut out, &limits), Ok(()), "{max_frame}");
            // And the bound is not wasteful: over half the frame is used.
            assert!(out.len() * 2 > max_frame, "{} of {max_frame}", out.len());
        }
    }
}
