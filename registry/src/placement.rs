//! Placement: choosing the node a new actor is spawned on, among the nodes that
//! offer spawning in a registry group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use remora::rt::Unmarshal;
use remora::NodeId;
use remora::{Interface, SpawnError, SpawnerRef};
use serde::Serialize;

use crate::client::Registry;
use crate::entry::group_prefix;
use crate::error::RegistryError;

/// Where a [`Placer`] spawns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On this node (it need not be in the group).
    Local,
    /// On this node id: found in the group (and dialed at its address if need be),
    /// or else reached over an existing connection.
    Node(NodeId),
    /// On each node of the group in turn.
    RoundRobin,
    /// On a node of the group at random.
    Random,
    /// On the node of the group running the fewest actors (each is asked; ties go
    /// to the first in the group's order, which is stable).
    LeastLoaded,
}

/// Why a [`Placer`] did not spawn.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// No node offers spawning in the group (or none that answered, for
    /// [`Placement::LeastLoaded`]). Nodes offer with [`Registry::offer_spawning`].
    #[error("no node offers spawning in the group {group:?}; nodes offer with registry.offer_spawning({group:?})")]
    NoNodes {
        /// The group.
        group: String,
    },
    /// The group's members could not be listed.
    #[error("could not list the placement group: {0}")]
    Registry(#[from] RegistryError),
    /// The chosen node did not spawn the actor.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Spawns actors on the nodes a registry group lists, picking one per spawn as its
/// [`Placement`] says ([`Registry::placer`]). Cheap to clone; clones share the
/// round-robin turn.
///
/// Nodes join the group with [`Registry::offer_spawning`]; a node leaves it when it
/// goes away (its registry lease lapses) or stops the spawner it offered. The group
/// is listed afresh on every spawn. A spawn on a node that fails is not retried
/// elsewhere: it may have made an actor.
///
/// ```
/// use remora::{Actor, Factory, Node};
/// use remora_registry::{MemoryStore, Placement, Registry};
///
/// #[remora::remote]
/// pub trait Counter {
///     async fn add(&mut self, n: u64) -> u64;
/// }
/// struct Tally { total: u64 }
/// impl Actor for Tally {}
/// impl Counter for Tally {
///     async fn add(&mut self, n: u64) -> u64 { self.total += n; self.total }
/// }
/// impl Factory for Tally {
///     type Args = u64;
///     type Ref = CounterRef;
///     fn create(start: u64) -> Result<Tally, String> { Ok(Tally { total: start }) }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Two workers offer spawning in the group "workers" of a shared registry.
/// let store = MemoryStore::new();
/// let client = Node::builder().build().await?;
/// let mut workers = Vec::new();
/// for _ in 0..2 {
///     let worker = Node::builder().build().await?;
///     worker.register_factory::<Tally>("counter")?;
///     Registry::with_store(&worker, store.clone()).offer_spawning("workers").await?;
///     workers.push(remora::remote::inproc::connect(&client, &worker).await?);
/// }
///
/// // The client spawns on them in turn.
/// let registry = Registry::with_store(&client, store);
/// let placer = registry.placer("workers", Placement::RoundRobin);
/// assert_eq!(placer.nodes().await?.len(), 2);
/// let a: CounterRef = placer.spawn("counter", 1u64).await?;
/// let b: CounterRef = placer.spawn("counter", 2u64).await?;
/// assert_ne!(client.wire_ref(&a).node, client.wire_ref(&b).node);
/// assert_eq!(a.add(10).await? + b.add(10).await?, 23);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Placer {
    registry: Registry,
    group: String,
    placement: Placement,
    turn: Arc<AtomicUsize>,
}

/// A node of the group and the spawner it offered.
struct Candidate {
    node: NodeId,
    spawner: SpawnerRef,
}

impl Registry {
    /// Offers this node for spawning in `group`: joins it with a new spawner of
    /// this node's (see [`remora::Node::serve_factories`]) and returns that spawner.
    /// Stop it ([`remora::Node::stop`]) or [`Registry::leave`] with it to withdraw.
    /// Register factories on the node (`node.register_factory`) to make it useful.
    pub async fn offer_spawning(&self, group: &str) -> Result<SpawnerRef, RegistryError> {
        let spawner = self.node().serve_factories();
        if let Err(err) = self.join(group, &spawner).await {
            self.node().stop(&spawner);
            return Err(err);
        }
        Ok(spawner)
    }

    /// A [`Placer`] that spawns on the nodes offering in `group`, as `placement` says.
    pub fn placer(&self, group: &str, placement: Placement) -> Placer {
        Placer {
            registry: self.clone(),
            group: group.to_owned(),
            placement,
            turn: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Placer {
    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// How it picks.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The nodes offering spawning in the group now, each once, in the group's order.
    pub async fn nodes(&self) -> Result<Vec<NodeId>, PlacementError> {
        Ok(self.candidates().await?.iter().map(|c| c.node).collect())
    }

    /// Spawns an actor from `factory` with `args` on the node the placement picks,
    /// and returns its reference (see [`remora::Node::spawn_on`]).
    pub async fn spawn<R, A>(&self, factory: &str, args: A) -> Result<R, PlacementError>
    where
        R: Interface,
        R::Msg: Unmarshal,
        A: Serialize + Send + 'static,
    {
        let node = self.registry.node();
        let candidates = match self.placement {
            Placement::Local => return Ok(node.spawn_on(node.id(), factory, args).await?),
            Placement::Node(id) if id == node.id() => {
                return Ok(node.spawn_on(id, factory, args).await?)
            }
            _ => self.candidates().await?,
        };
        let chosen = match self.placement {
            Placement::Local => unreachable!("handled above"),
            Placement::Node(id) => match candidates.into_iter().find(|c| c.node == id) {
                Some(c) => c,
                None => return Ok(node.spawn_on(id, factory, args).await?),
            },
            Placement::RoundRobin => {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                self.nth(candidates, |len| turn % len)?
            }
            Placement::Random => self.nth(candidates, |len| fastrand::usize(..len))?,
            Placement::LeastLoaded => self.least_loaded(candidates).await?,
        };
        tracing::debug!(group = %self.group, node = %chosen.node, factory, "placing a spawn");
        Ok(node.spawn_via(&chosen.spawner, factory, args).await?)
    }

    /// The group's spawners, one per node; members that cannot be reached from
    /// here (no connection, no address) are skipped.
    async fn candidates(&self) -> Result<Vec<Candidate>, PlacementError> {
        let records = self
            .registry
            .store()
            .list(&group_prefix(&self.group)?)
            .await?;
        let mut candidates: Vec<Candidate> = Vec::with_capacity(records.len());
        for record in records {
            let node = record.target.node;
            if candidates.iter().any(|c| c.node == node) {
                continue;
            }
            match self.registry.resolve::<SpawnerRef>(&self.group, &record) {
                Ok(spawner) => candidates.push(Candidate { node, spawner }),
                Err(err) => {
                    tracing::debug!(group = %self.group, %node, %err, "placement candidate unusable; skipped")
                }
            }
        }
        Ok(candidates)
    }

    fn nth(
        &self,
        mut candidates: Vec<Candidate>,
        index: impl FnOnce(usize) -> usize,
    ) -> Result<Candidate, PlacementError> {
        if candidates.is_empty() {
            return Err(self.no_nodes());
        }
        let i = index(candidates.len());
        Ok(candidates.swap_remove(i))
    }

    /// Asks every candidate its load at once; the least loaded that answers wins.
    async fn least_loaded(&self, candidates: Vec<Candidate>) -> Result<Candidate, PlacementError> {
        let loads =
            futures_util::future::join_all(candidates.iter().map(|c| c.spawner.load())).await;
        candidates
            .into_iter()
            .zip(loads)
            .filter_map(|(c, load)| match load {
                Ok(load) => Some((load, c)),
                Err(err) => {
                    tracing::debug!(group = %self.group, node = %c.node, %err, "no load from a candidate; skipped");
                    None
                }
            })
            .min_by_key(|(load, _)| *load)
            .map(|(_, c)| c)
            .ok_or_else(|| self.no_nodes())
    }

    fn no_nodes(&self) -> PlacementError {
        PlacementError::NoNodes {
            group: self.group.clone(),
        }
    }
}
