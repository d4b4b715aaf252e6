//! The hasher of the tables every call touches: pending and served calls, flows,
//! exports, peers, actors.
//!
//! std's SipHash-1-3 costs more than the rest of a table lookup on the 8- and
//! 16-byte keys these tables use, and a call touches several of them. foldhash
//! (hashbrown's default) is several times cheaper and is still seeded per table
//! from a per-process random seed, so a peer that chooses keys (its call ids, the
//! object ids it names) cannot aim them at one bucket. The bounds on each table's
//! size (see `SECURITY.md`) stay what limits a peer, not the hasher.

/// The build hasher of the runtime's tables.
pub(crate) type Seeded = foldhash::fast::RandomState;

/// A [`std::collections::HashMap`] with the [`Seeded`] hasher; build it with
/// `HashMap::default()`.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, Seeded>;

/// A [`dashmap::DashMap`] with the [`Seeded`] hasher; build it with
/// `DashMap::default()`.
pub(crate) type DashMap<K, V> = dashmap::DashMap<K, V, Seeded>;
