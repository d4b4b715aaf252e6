//! Remote spawn: factories a node registers by name, the spawner object that
//! serves them to peers, and [`Node::spawn_on`].
//!
//! A factory turns an argument value into a running actor and its reference. The
//! node keeps a table of them; its spawner (an ordinary actor, exported under the
//! well-known id [`SPAWNER_OBJECT`] as the registry is under its own) runs them
//! for peers. A spawn from this node to itself skips the spawner and moves the
//! arguments in, unencoded.

use std::any::{type_name, Any};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use crate::id::NodeId;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::CallError;
use crate::interface::Interface;
use crate::local::actor::Actor;
use crate::local::dispatch::Dispatch;
use crate::node::{Node, WeakNode};
use crate::remote::marshal::{is_plain, Unmarshal};
use crate::remote::WireRef;
use crate::wire::codec::{decode_value, encode_value};
use crate::wire::ObjectId;

/// The object id every node's spawner is exported under: knowing a node is enough
/// to spawn on it ([`Node::spawn_on`]).
pub const SPAWNER_OBJECT: ObjectId = ObjectId::from_u128(0x7265_6d6f_7261_2d73_7061_776e_6572_0000);

/// An actor that other nodes can create by name: [`Node::register_factory`] makes
/// it available, [`Node::spawn_on`] creates one.
///
/// ```
/// use remora::{Actor, Factory};
///
/// #[remora::remote]
/// pub trait Counter {
///     async fn add(&mut self, n: u64) -> u64;
/// }
///
/// struct Tally { total: u64 }
/// impl Actor for Tally {}
/// impl Counter for Tally {
///     async fn add(&mut self, n: u64) -> u64 { self.total += n; self.total }
/// }
///
/// impl Factory for Tally {
///     type Args = u64; // the starting total
///     type Ref = CounterRef;
///     fn create(start: u64) -> Result<Tally, String> {
///         Ok(Tally { total: start })
///     }
/// }
/// ```
pub trait Factory: Actor {
    /// What a spawner passes: any value (no references), decoded from the caller's
    /// encoding of its own argument type, so the two need only agree on the wire.
    type Args: DeserializeOwned + Send + 'static;
    /// The interface the new actor is reached through.
    type Ref: Interface<Msg: Dispatch<Self> + Unmarshal>;

    /// Builds the actor from its arguments. An `Err` refuses the spawn: the caller
    /// gets [`SpawnError::BadArguments`] with the message.
    fn create(args: Self::Args) -> Result<Self, String>;
}

/// A factory as [`Node::factories`] and the spawner's `factories` method list it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FactoryInfo {
    /// The name it is registered under.
    pub name: String,
    /// The interface of the actors it makes.
    pub interface: String,
    /// The Rust type of its arguments.
    pub args: String,
}

/// Why a factory could not be registered, or a spawn did not produce an actor.
///
/// It crosses the wire from the spawning node to the caller, so it is plain data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SpawnError {
    /// The node has no factory of that name. Register it there
    /// (`node.register_factory`), or spawn one of those it has.
    #[error("node {node} has no factory named {name:?} (it has: {}); register it there with node.register_factory", list(known))]
    UnknownFactory {
        /// The node asked.
        node: NodeId,
        /// The factory asked for.
        name: String,
        /// The factories the node has.
        known: Vec<String>,
    },
    /// The factory makes actors of another interface than the reference type the
    /// caller asked for. Spawn it with the reference type of `found`.
    #[error("factory {factory:?} makes `{found}` actors, not `{expected}`; ask for the reference type of `{found}`")]
    WrongInterface {
        /// The factory.
        factory: String,
        /// The interface the caller asked for.
        expected: String,
        /// The interface the factory makes.
        found: String,
    },
    /// The arguments did not decode into the factory's argument type, held a
    /// reference (spawn arguments are values; hand the new actor references in a
    /// call), or the factory refused them.
    #[error("factory {factory:?} refused its arguments: {reason}")]
    BadArguments {
        /// The factory.
        factory: String,
        /// What was wrong.
        reason: String,
    },
    /// The factory panicked. No actor was made; the node serves on.
    #[error("factory {factory:?} panicked: {message}")]
    Panicked {
        /// The factory.
        factory: String,
        /// The panic's message, when it was a string.
        message: String,
    },
    /// [`Node::register_factory`] found the name taken on this node.
    #[error("a factory named {name:?} is already registered on this node; pick another name")]
    AlreadyRegistered {
        /// The name.
        name: String,
    },
    /// The spawn request did not complete (the node is unreachable, or the call
    /// timed out); [`CallError::may_have_executed`] tells whether an actor may
    /// have been made.
    #[error("the spawn request failed: {0}")]
    Call(#[from] CallError),
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// A node's spawner: runs the node's factories for whoever holds its reference.
/// Every node that registered a factory serves one under [`SPAWNER_OBJECT`];
/// [`Node::serve_factories`] starts more (to offer in a registry group).
/// Users call [`Node::spawn_on`] and [`Node::spawn_via`] rather than this.
#[remora::remote(name = "remora.Spawner")]
pub trait Spawner {
    /// Runs factory `factory` on `args` (the MessagePack encoding of its argument
    /// value), provided it makes actors of interface `interface`, and returns a
    /// reference to the new actor.
    async fn spawn(
        &mut self,
        factory: String,
        interface: String,
        args: Vec<u8>,
    ) -> Result<WireRef, SpawnError>;
    /// How busy the node is: the actors running on it.
    async fn load(&mut self) -> u64;
    /// The factories the node has, by name.
    async fn factories(&mut self) -> Vec<FactoryInfo>;
}

/// A node's factory table (a field of the node).
#[derive(Default)]
pub(crate) struct Factories {
    table: RwLock<BTreeMap<String, Arc<dyn Erased>>>,
    /// Set once the spawner under [`SPAWNER_OBJECT`] runs.
    served: OnceLock<()>,
}

impl Factories {
    fn get(&self, node: &Node, name: &str) -> Result<Arc<dyn Erased>, SpawnError> {
        let table = self.table.read();
        match table.get(name) {
            Some(entry) => Ok(entry.clone()),
            None => Err(SpawnError::UnknownFactory {
                node: node.id(),
                name: name.to_owned(),
                known: table.keys().cloned().collect(),
            }),
        }
    }

    /// Runs factory `name`, if it makes actors of `interface`. The table is not
    /// locked meanwhile: a factory may register others.
    fn spawn(
        &self,
        node: &Node,
        name: &str,
        interface: &str,
        input: Input<'_>,
    ) -> Result<Box<dyn Spawned>, SpawnError> {
        let entry = self.get(node, name)?;
        if entry.interface() != interface {
            return Err(SpawnError::WrongInterface {
                factory: name.to_owned(),
                expected: interface.to_owned(),
                found: entry.interface().to_owned(),
            });
        }
        entry.spawn(node, name, input)
    }

    fn list(&self) -> Vec<FactoryInfo> {
        self.table
            .read()
            .iter()
            .map(|(name, entry)| FactoryInfo {
                name: name.clone(),
                interface: entry.interface().to_owned(),
                args: entry.args().to_owned(),
            })
            .collect()
    }
}

/// A factory's arguments on their way in: encoded by a peer, or moved from this
/// node with the means to encode them (should the factory's type differ).
enum Input<'a> {
    Encoded(&'a [u8]),
    Moved(
        Box<dyn Any + Send>,
        fn(&(dyn Any + Send)) -> Result<Vec<u8>, String>,
    ),
}

/// A factory with its types erased, as the table holds it.
trait Erased: Send + Sync {
    fn interface(&self) -> &'static str;
    fn args(&self) -> &'static str;
    fn spawn(
        &self,
        node: &Node,
        name: &str,
        input: Input<'_>,
    ) -> Result<Box<dyn Spawned>, SpawnError>;
}

struct Typed<R, Args, F> {
    make: F,
    _types: std::marker::PhantomData<fn(Args) -> R>,
}

impl<R, Args, F> Erased for Typed<R, Args, F>
where
    R: Interface,
    R::Msg: Unmarshal,
    Args: DeserializeOwned + Send + 'static,
    F: Fn(&Node, Args) -> Result<R, String> + Send + Sync + 'static,
{
    fn interface(&self) -> &'static str {
        <R::Msg as Unmarshal>::INTERFACE
    }

    fn args(&self) -> &'static str {
        type_name::<Args>()
    }

    fn spawn(
        &self,
        node: &Node,
        name: &str,
        input: Input<'_>,
    ) -> Result<Box<dyn Spawned>, SpawnError> {
        let bad = |reason: String| SpawnError::BadArguments {
            factory: name.to_owned(),
            reason,
        };
        let decode = |bytes: &[u8]| {
            decode_value::<Args>(bytes, node.limits())
                .map_err(|e| bad(format!("expected a `{}`: {e}", type_name::<Args>())))
        };
        let args = match input {
            Input::Encoded(bytes) => decode(bytes)?,
            Input::Moved(value, encode) => match value.downcast::<Args>() {
                Ok(args) => *args,
                Err(other) => decode(&encode(&*other).map_err(bad)?)?,
            },
        };
        // A panicking factory must not take the spawner (an actor) down with it.
        match catch_unwind(AssertUnwindSafe(|| (self.make)(node, args))) {
            Ok(Ok(r)) => Ok(Box::new(r)),
            Ok(Err(reason)) => Err(bad(reason)),
            Err(panic) => Err(SpawnError::Panicked {
                factory: name.to_owned(),
                message: panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default(),
            }),
        }
    }
}

/// A new actor's reference, of the factory's type.
trait Spawned: Send {
    fn wire(&self, node: &Node) -> WireRef;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<R: Interface> Spawned for R
where
    R::Msg: Unmarshal,
{
    fn wire(&self, node: &Node) -> WireRef {
        node.wire_ref(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

fn encode_any<A: Serialize + 'static>(value: &(dyn Any + Send)) -> Result<Vec<u8>, String> {
    let value = value
        .downcast_ref::<A>()
        .ok_or_else(|| format!("not a `{}`", type_name::<A>()))?;
    let mut out = Vec::new();
    encode_value(value, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Encodes spawn arguments. A reference in them is refused: encoded outside a
/// call, it could not be exported to the peer that receives it.
fn encode_args<A: Serialize>(factory: &str, args: &A) -> Result<Vec<u8>, SpawnError> {
    let mut out = Vec::new();
    encode_value(args, &mut out).map_err(|e| SpawnError::BadArguments {
        factory: factory.to_owned(),
        reason: format!(
            "cannot encode the `{}`: {e}; spawn arguments are values \
             (hand the new actor references in a call once it runs)",
            type_name::<A>()
        ),
    })?;
    Ok(out)
}

/// The actor behind a spawner reference.
struct SpawnService {
    node: WeakNode,
}

impl SpawnService {
    fn node(&self) -> Result<Node, SpawnError> {
        self.node
            .upgrade()
            .ok_or(SpawnError::Call(CallError::ActorStopped))
    }
}

impl Actor for SpawnService {}

impl Spawner for SpawnService {
    async fn spawn(
        &mut self,
        factory: String,
        interface: String,
        args: Vec<u8>,
    ) -> Result<WireRef, SpawnError> {
        let node = self.node()?;
        let spawned =
            node.factory_table()
                .spawn(&node, &factory, &interface, Input::Encoded(&args));
        match spawned {
            Ok(spawned) => {
                let wire = spawned.wire(&node);
                // The caller may stop what it spawned (see remote::authority).
                if let Some(caller) = crate::caller() {
                    node.host().spawned_for(wire.object, caller.node());
                }
                tracing::debug!(%factory, object = %wire.object, caller = ?crate::caller().map(|c| c.node()), "spawned for a peer");
                Ok(wire)
            }
            Err(err) => {
                tracing::debug!(%factory, %err, "spawn refused");
                Err(err)
            }
        }
    }

    async fn load(&mut self) -> u64 {
        self.node
            .upgrade()
            .map_or(0, |node| node.stats().actors as u64)
    }

    async fn factories(&mut self) -> Vec<FactoryInfo> {
        self.node
            .upgrade()
            .map(|node| node.factory_table().list())
            .unwrap_or_default()
    }
}

impl Node {
    /// Makes actors of type `F` available to other nodes as `name`: a peer's
    /// [`Node::spawn_on`] with this node and `name` runs [`Factory::create`] here
    /// and gets a reference to the new actor. Starts this node's spawner on first
    /// use. Fails with [`SpawnError::AlreadyRegistered`] if `name` is taken.
    ///
    /// See [`Node::spawn_on`] for an example.
    pub fn register_factory<F: Factory>(&self, name: &str) -> Result<(), SpawnError> {
        self.register_factory_fn(name, |node: &Node, args: F::Args| {
            F::create(args).map(|actor| node.spawn::<F::Ref, F>(actor))
        })
    }

    /// Makes `make` available to other nodes as factory `name`: it gets this node
    /// and the decoded arguments, and spawns the actor however it likes (with
    /// [`Node::spawn_with`] for a mailbox or restart policy, say). An `Err` refuses
    /// the spawn with [`SpawnError::BadArguments`]; a panic is caught and reported as
    /// [`SpawnError::Panicked`].
    ///
    /// ```
    /// use remora::{Actor, Mailbox, Node, SpawnOptions};
    ///
    /// #[remora::remote]
    /// pub trait Queue {
    ///     async fn push(&mut self, item: String) -> usize;
    /// }
    /// struct Fifo { items: Vec<String> }
    /// impl Actor for Fifo {}
    /// impl Queue for Fifo {
    ///     async fn push(&mut self, item: String) -> usize { self.items.push(item); self.items.len() }
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let node = Node::builder().build().await?;
    /// node.register_factory_fn("queue", |node: &Node, capacity: usize| -> Result<QueueRef, String> {
    ///     if capacity == 0 {
    ///         return Err("the capacity must be at least 1".into());
    ///     }
    ///     let options = SpawnOptions::new().mailbox(Mailbox::bounded(capacity));
    ///     Ok(node.spawn_with(Fifo { items: Vec::new() }, options))
    /// })?;
    /// let queue: QueueRef = node.spawn_on(node.id(), "queue", 16usize).await?;
    /// assert_eq!(queue.push("job".into()).await?, 1);
    /// # Ok(()) }
    /// ```
    pub fn register_factory_fn<R, Args, F>(&self, name: &str, make: F) -> Result<(), SpawnError>
    where
        R: Interface,
        R::Msg: Unmarshal,
        Args: DeserializeOwned + Send + 'static,
        F: Fn(&Node, Args) -> Result<R, String> + Send + Sync + 'static,
    {
        let factories = self.factory_table();
        {
            let mut table = factories.table.write();
            if table.contains_key(name) {
                return Err(SpawnError::AlreadyRegistered {
                    name: name.to_owned(),
                });
            }
            let entry = Typed {
                make,
                _types: std::marker::PhantomData,
            };
            table.insert(name.to_owned(), Arc::new(entry));
        }
        factories.served.get_or_init(|| {
            let spawner = self.serve_factories();
            if let Err(err) = self.export_as(&spawner, SPAWNER_OBJECT) {
                tracing::warn!(%err, "could not export the spawner; peers cannot spawn on this node");
            }
        });
        Ok(())
    }

    /// The factories registered on this node, by name.
    pub fn factories(&self) -> Vec<FactoryInfo> {
        self.factory_table().list()
    }

    /// Starts a new object serving this node's factories and returns its reference:
    /// what a node hands out so that others can spawn on it through that reference
    /// ([`Node::spawn_via`]), as a registry placement group does. Stop it
    /// ([`Node::stop`]) to withdraw it; the spawner under [`SPAWNER_OBJECT`] stays.
    pub fn serve_factories(&self) -> SpawnerRef {
        self.spawn(SpawnService {
            node: self.downgrade(),
        })
    }

    /// Creates an actor on node `node` (this node, or a peer it is connected to)
    /// from the factory that node registered as `factory`, and returns its
    /// reference. `args` is passed by value (encoded, unless `node` is this node);
    /// it may not hold references.
    ///
    /// Fails with [`SpawnError::UnknownFactory`] (listing the node's factories) if
    /// the node has no such factory, [`SpawnError::WrongInterface`] if it makes
    /// actors of another interface than `R`, [`SpawnError::BadArguments`] if `args`
    /// does not decode into the factory's argument type or the factory refuses it,
    /// and [`SpawnError::Call`] if the node cannot be reached. The new actor runs
    /// until it is stopped ([`Node::stop`] works from here) or its node shuts down.
    ///
    /// ```
    /// use remora::{Actor, Factory, Interface, Node, SpawnError};
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
    /// let worker = Node::builder().build().await?;
    /// worker.register_factory::<Tally>("counter")?;
    ///
    /// let client = Node::builder().build().await?;
    /// let _wire = remora::remote::inproc::connect(&client, &worker).await?;
    /// let counter: CounterRef = client.spawn_on(worker.id(), "counter", 40u64).await?;
    /// assert!(!counter.core().is_local());     // it runs on `worker`
    /// assert_eq!(counter.add(2).await?, 42);
    ///
    /// let err = client.spawn_on::<CounterRef, _>(worker.id(), "tally", 0u64).await;
    /// assert!(matches!(err, Err(SpawnError::UnknownFactory { known, .. }) if known == ["counter"]));
    /// # Ok(()) }
    /// ```
    pub async fn spawn_on<R, A>(
        &self,
        node: NodeId,
        factory: &str,
        args: A,
    ) -> Result<R, SpawnError>
    where
        R: Interface,
        R::Msg: Unmarshal,
        A: Serialize + Send + 'static,
    {
        if node == self.id() {
            return self.spawn_here(factory, args);
        }
        let spawner: SpawnerRef = self.reference(node, SPAWNER_OBJECT)?;
        match self.spawn_remote(&spawner, factory, args).await {
            // A node that never registered a factory serves no spawner.
            Err(SpawnError::Call(CallError::NoSuchObject)) => Err(SpawnError::UnknownFactory {
                node,
                name: factory.to_owned(),
                known: Vec::new(),
            }),
            other => other,
        }
    }

    /// [`Node::spawn_on`] through a spawner reference (one a node handed out with
    /// [`Node::serve_factories`], found in a registry group, say) rather than a
    /// node id: the spawner's node need not be connected yet if the reference
    /// carries its address.
    pub async fn spawn_via<R, A>(
        &self,
        spawner: &SpawnerRef,
        factory: &str,
        args: A,
    ) -> Result<R, SpawnError>
    where
        R: Interface,
        R::Msg: Unmarshal,
        A: Serialize + Send + 'static,
    {
        if spawner.core().is_local() {
            return self.spawn_here(factory, args);
        }
        self.spawn_remote(spawner, factory, args).await
    }

    /// Runs a factory of this node's directly, moving `args` in.
    fn spawn_here<R, A>(&self, factory: &str, args: A) -> Result<R, SpawnError>
    where
        R: Interface,
        R::Msg: Unmarshal,
        A: Serialize + Send + 'static,
    {
        // What could not go to another node does not go to this one either.
        if !is_plain(&args) {
            encode_args(factory, &args)?;
        }
        let input = Input::Moved(Box::new(args), encode_any::<A>);
        let spawned =
            self.factory_table()
                .spawn(self, factory, <R::Msg as Unmarshal>::INTERFACE, input)?;
        if !spawned.as_any().is::<R>() {
            // Another type of the same interface (two builds of it in one process):
            // go the way of the wire.
            return Ok(self.resolve(&spawned.wire(self))?);
        }
        Ok(*spawned
            .into_any()
            .downcast::<R>()
            .expect("the type was checked just above"))
    }

    async fn spawn_remote<R, A>(
        &self,
        spawner: &SpawnerRef,
        factory: &str,
        args: A,
    ) -> Result<R, SpawnError>
    where
        R: Interface,
        R::Msg: Unmarshal,
        A: Serialize + Send + 'static,
    {
        let bytes = encode_args(factory, &args)?;
        let interface = <R::Msg as Unmarshal>::INTERFACE;
        let wire = spawner
            .spawn(factory.to_owned(), interface.to_owned(), bytes)
            .await??;
        Ok(self.resolve(&wire)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[remora::remote]
    pub(super) trait Cell {
        async fn get(&mut self) -> u64;
    }

    struct Value(u64);
    impl Actor for Value {}
    impl Cell for Value {
        async fn get(&mut self) -> u64 {
            self.0
        }
    }
    impl Factory for Value {
        type Args = u64;
        type Ref = CellRef;
        fn create(value: u64) -> Result<Value, String> {
            Ok(Value(value))
        }
    }

    #[tokio::test]
    async fn a_local_spawn_moves_its_arguments_or_converts_them_as_the_wire_would() {
        let node = Node::builder().build().await.unwrap();
        node.register_factory::<Value>("value").unwrap();
        let moved: CellRef = node.spawn_on(node.id(), "value", 7u64).await.unwrap();
        assert_eq!(moved.get().await, Ok(7));
        // Another type that encodes compatibly goes through the encoding.
        let converted: CellRef = node.spawn_on(node.id(), "value", 8u8).await.unwrap();
        assert_eq!(converted.get().await, Ok(8));
        let err = node
            .spawn_on::<CellRef, _>(node.id(), "value", -1i64)
            .await
            .unwrap_err();
        assert!(matches!(err, SpawnError::BadArguments { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_name_is_registered_once_and_the_spawner_is_exported_with_the_first() {
        let node = Node::builder().build().await.unwrap();
        assert!(node
            .reference::<SpawnerRef>(node.id(), SPAWNER_OBJECT)
            .is_err());
        node.register_factory::<Value>("value").unwrap();
        assert_eq!(
            node.register_factory::<Value>("value"),
            Err(SpawnError::AlreadyRegistered {
                name: "value".into()
            })
        );
        let spawner: SpawnerRef = node.reference(node.id(), SPAWNER_OBJECT).unwrap();
        assert_eq!(
            spawner.factories().await.unwrap(),
            [FactoryInfo {
                name: "value".into(),
                interface: "Cell".into(),
                args: "u64".into(),
            }]
        );
        assert_eq!(spawner.load().await, Ok(node.stats().actors as u64));
    }
}
