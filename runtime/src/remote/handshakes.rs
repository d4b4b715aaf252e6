//! The handshake budget: how many incoming connections a node works on before they
//! have said who they are, and what it answers past that.
//!
//! A QUIC Initial costs its sender one datagram, and costs the node a connection's
//! state (TLS, streams, timers) for as long as the handshake may last. So the node
//! counts the handshakes in flight, from the first datagram until the peer's
//! `Hello` has arrived (or the handshake failed, or ran out of time), and decides
//! each new one by that count:
//!
//! - below [`HandshakeLimits::retry_above`], it is accepted;
//! - past it, a client that has not proved it can receive at its address is sent a
//!   QUIC Retry, which costs the node no state: a real client answers it with the
//!   token it got (one round trip more), a flood of forged or fire-and-forget
//!   Initials does not;
//! - a client that has proved its address is accepted while fewer than
//!   [`HandshakeLimits::max_in_flight`] handshakes are in flight and fewer than
//!   [`HandshakeLimits::max_per_address`] come from its address, and refused
//!   otherwise.
//!
//! Only proved addresses count against the per-address limit: an address that is
//! not proved may be forged, and a forger must not be able to use up someone
//! else's share. (An IPv6 address counts as its /64, which one host usually holds
//! whole.) The decisions are made here, without sockets; `quic.rs` carries them out
//! on quinn's `Incoming`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// How many incoming QUIC handshakes a node works on at once (see
/// [`NodeBuilder::handshake_limits`](crate::NodeBuilder::handshake_limits)).
///
/// A handshake is in flight from a client's first datagram until its `Hello` has
/// arrived, it failed, or the peer timeout passed. Past `retry_above` handshakes
/// in flight, a client must first prove its address with a QUIC Retry (one round
/// trip more, no state kept for it meanwhile); past `max_in_flight`, or past
/// `max_per_address` from one address (an IPv6 address counts as its /64), a
/// client that did prove its address is refused and may dial again later.
/// Connections already established are never affected.
///
/// ```
/// use remora::{remote::HandshakeLimits, Node};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limits = HandshakeLimits::default().retry_above(16).max_in_flight(256);
/// let node = Node::builder()
///     .listen("127.0.0.1:0")
///     .handshake_limits(limits)
///     .build()
///     .await?;
/// assert_eq!(node.stats().handshakes, 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    retry_above: usize,
    max_in_flight: usize,
    max_per_address: usize,
}

impl Default for HandshakeLimits {
    /// 64 in flight before Retry, at most 1 024 in flight, 32 per address.
    fn default() -> Self {
        HandshakeLimits {
            retry_above: 64,
            max_in_flight: 1024,
            max_per_address: 32,
        }
    }
}

impl HandshakeLimits {
    /// How many handshakes may be in flight before a client must prove its address
    /// first (default 64; 0: always).
    pub fn retry_above(mut self, handshakes: usize) -> Self {
        self.retry_above = handshakes;
        self
    }

    /// How many handshakes may be in flight at most (default 1 024, at least 1).
    pub fn max_in_flight(mut self, handshakes: usize) -> Self {
        self.max_in_flight = handshakes.max(1);
        self
    }

    /// How many handshakes from one proved address may be in flight at most
    /// (default 32, at least 1).
    pub fn max_per_address(mut self, handshakes: usize) -> Self {
        self.max_per_address = handshakes.max(1);
        self
    }

    /// How many connection attempts quinn may hold for the acceptor to decide on.
    pub(crate) fn incoming_queue(&self) -> usize {
        self.max_in_flight
    }
}

/// What to do with a new incoming handshake.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Go on with it; the handshake is counted until the [`Handshake`] is dropped.
    Accept(Handshake),
    /// Ask the client to prove its address (QUIC Retry).
    Retry,
    /// Refuse it.
    Refuse,
}

/// The handshakes in flight on one endpoint, and what was turned away.
#[derive(Debug)]
pub(crate) struct Handshakes {
    limits: HandshakeLimits,
    in_flight: Mutex<InFlight>,
    retried: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    /// Handshakes in flight from proved addresses, by source (no entry: none).
    proved: HashMap<IpAddr, usize>,
}

impl Handshakes {
    pub(crate) fn new(limits: HandshakeLimits) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            limits,
            in_flight: Mutex::new(InFlight::default()),
            retried: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Decides a new handshake from `remote`, whose address is `proved` or not.
    pub(crate) fn admit(self: &Arc<Self>, remote: IpAddr, proved: bool) -> Admission {
        let limits = &self.limits;
        let mut in_flight = self.in_flight.lock();
        if !proved {
            if in_flight.total >= limits.retry_above.min(limits.max_in_flight) {
                drop(in_flight);
                self.retried.fetch_add(1, Ordering::Relaxed);
                return Admission::Retry;
            }
            in_flight.total += 1;
            return Admission::Accept(Handshake {
                table: self.clone(),
                source: None,
            });
        }
        let source = source(remote);
        let from_source = in_flight.proved.get(&source).copied().unwrap_or(0);
        if in_flight.total >= limits.max_in_flight || from_source >= limits.max_per_address {
            drop(in_flight);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Admission::Refuse;
        }
        in_flight.total += 1;
        *in_flight.proved.entry(source).or_insert(0) += 1;
        Admission::Accept(Handshake {
            table: self.clone(),
            source: Some(source),
        })
    }

    /// Handshakes in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.lock().total
    }

    /// Handshakes answered with a Retry so far.
    pub(crate) fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Handshakes refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts a handshake refused on the way (a Retry quinn would not send).
    pub(crate) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn release(&self, source: Option<IpAddr>) {
        let mut in_flight = self.in_flight.lock();
        in_flight.total -= 1;
        if let Some(source) = source {
            if let Some(n) = in_flight.proved.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
                    in_flight.proved.remove(&source);
                }
            }
        }
    }
}

/// One handshake in flight: counted until dropped.
#[derive(Debug)]
pub(crate) struct Handshake {
    table: Arc<Handshakes>,
    source: Option<IpAddr>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.table.release(self.source);
    }
}

/// The source a per-address limit counts: the IPv4 address (also when it comes
/// mapped into IPv6), or the /64 of an IPv6 address.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn accepted(admission: Admission) -> Handshake {
        match admission {
            Admission::Accept(handshake) => handshake,
            other => panic!("expected Accept, got {other:?}"),
        }
    }

    fn limits(retry_above: usize, max: usize, per_address: usize) -> Arc<Handshakes> {
        Handshakes::new(
            HandshakeLimits::default()
                .retry_above(retry_above)
                .max_in_flight(max)
                .max_per_address(per_address),
        )
    }

    #[test]
    fn unproved_clients_are_accepted_up_to_the_threshold_then_retried() {
        let table = limits(2, 10, 5);
        let a = accepted(table.admit(ip("10.0.0.1"), false));
        let _b = accepted(table.admit(ip("10.0.0.2"), false));
        assert!(matches!(
            table.admit(ip("10.0.0.3"), false),
            Admission::Retry
        ));
        assert_eq!((table.in_flight(), table.retried()), (2, 1));
        drop(a);
        assert_eq!(table.in_flight(), 1);
        let _c = accepted(table.admit(ip("10.0.0.3"), false));
    }

    #[test]
    fn proved_clients_pass_the_threshold_up_to_the_maximum() {
        let table = limits(1, 3, 5);
        let held: Vec<Handshake> = (1..=3)
            .map(|n| accepted(table.admit(ip(&format!("10.0.0.{n}")), true)))
            .collect();
        assert!(matches!(
            table.admit(ip("10.0.0.9"), true),
            Admission::Refuse
        ));
        assert!(matches!(
            table.admit(ip("10.0.0.9"), false),
            Admission::Retry
        ));
        assert_eq!((table.in_flight(), table.refused()), (3, 1));
        drop(held);
        assert_eq!(table.in_flight(), 0);
    }

    #[test]
    fn one_proved_address_gets_its_share_only() {
        let table = limits(0, 10, 2);
        let first = accepted(table.admit(ip("10.0.0.1"), true));
        let _second = accepted(table.admit(ip("10.0.0.1"), true));
        assert!(matches!(
            table.admit(ip("10.0.0.1"), true),
            Admission::Refuse
        ));
        let _other = accepted(table.admit(ip("10.0.0.2"), true));
        drop(first);
        let _again = accepted(table.admit(ip("10.0.0.1"), true));
    }

    #[test]
    fn unproved_handshakes_do_not_use_up_an_address_share() {
        // A forger sending Initials as 10.0.0.1 does not lock 10.0.0.1 out.
        let table = limits(4, 10, 1);
        let _forged: Vec<Handshake> = (0..4)
            .map(|_| accepted(table.admit(ip("10.0.0.1"), false)))
            .collect();
        let _real = accepted(table.admit(ip("10.0.0.1"), true));
    }

    #[test]
    fn an_ipv6_address_counts_as_its_slash_64() {
        let table = limits(0, 10, 1);
        let _a = accepted(table.admit(ip("2001:db8::1"), true));
        assert!(matches!(
            table.admit(ip("2001:db8::ffff:2"), true),
            Admission::Refuse
        ));
        let _b = accepted(table.admit(ip("2001:db8:0:1::1"), true));
        let _c = accepted(table.admit(ip("::ffff:10.0.0.1"), true));
        assert!(matches!(
            table.admit(ip("10.0.0.1"), true),
            Admission::Refuse
        ));
    }
}
