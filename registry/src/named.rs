//! A name that follows restarts: a proxy for whatever is bound under a name now
//! (Akka's actor selection, Orleans' grain references).

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use remora::rt::Unmarshal;
use remora::{CallError, Interface};

use crate::client::Registry;
use crate::error::RegistryError;

/// A proxy for the object bound under a name ([`Registry::named`]). It looks the
/// name up on first use and keeps the reference; when a call finds that object
/// gone (its node down or restarted, the object unknown there or stopped), it
/// forgets it, and the next call looks the name up again: a client survives a
/// server restart, once the restarted server has bound the name again, without a
/// "look up and retry" loop of its own.
///
/// [`Named::call`] never runs a call again behind its caller's back: the call that
/// found the object gone fails with its honest error (see
/// `CallError::may_have_executed`), and the next call goes to the new binding.
/// For methods that are safe to run twice, [`Named::call_retrying`] opts in to
/// running them again on the new binding.
///
/// ```
/// use remora::{Actor, Node};
/// use remora_registry::{MemoryStore, Registry};
///
/// #[remora::remote]
/// pub trait Greeter {
///     async fn greet(&mut self, name: String) -> String;
/// }
/// struct Polite;
/// impl Actor for Polite {}
/// impl Greeter for Polite {
///     async fn greet(&mut self, name: String) -> String { format!("hello, {name}") }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let node = Node::builder().build().await?;
/// let registry = Registry::with_store(&node, MemoryStore::new());
/// let greeter = registry.named::<GreeterRef>("greeter");
/// let first: GreeterRef = node.spawn(Polite);
/// registry.bind("greeter", &first).await?;
/// assert_eq!(greeter.call(|g| async move { g.greet("ann".into()).await }).await?, "hello, ann");
/// // The greeter is replaced: the call that finds the old one stopped fails...
/// node.stop(&first);
/// let second: GreeterRef = node.spawn(Polite);
/// registry.rebind("greeter", &second).await?;
/// # node.monitor(&first).await;
/// assert!(greeter.call(|g| async move { g.greet("bob".into()).await }).await.is_err());
/// // ...and the next one reaches the new binding.
/// assert_eq!(greeter.call(|g| async move { g.greet("cy".into()).await }).await?, "hello, cy");
/// # Ok(()) }
/// ```
pub struct Named<R> {
    registry: Registry,
    name: String,
    bound: Mutex<Option<R>>,
}

impl Registry {
    /// A proxy for whatever is bound under `name`, looked up on first use and
    /// again after the object it found is gone ([`Named`]).
    pub fn named<R: Interface>(&self, name: &str) -> Named<R> {
        Named {
            registry: self.clone(),
            name: name.to_owned(),
            bound: Mutex::new(None),
        }
    }
}

/// How long [`Named::call_retrying`] waits before looking the name up again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

impl<R: Interface> Named<R>
where
    R::Msg: Unmarshal,
{
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object bound under the name now: the one found before, unless a call
    /// found it gone since; looked up otherwise.
    pub async fn get(&self) -> Result<R, RegistryError> {
        if let Some(bound) = self.bound.lock().clone() {
            return Ok(bound);
        }
        let found: R = self.registry.lookup(&self.name).await?;
        *self.bound.lock() = Some(found.clone());
        Ok(found)
    }

    /// Calls the object bound under the name: `call` gets its proxy and makes the
    /// call. If the call finds the object gone, the name is looked up again on
    /// the next call; this one fails with its error, and is not run again.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, RegistryError>
    where
        F: FnOnce(R) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let bound = self.get().await?;
        let outcome = call(bound).await;
        if let Err(err) = &outcome {
            self.forget_if_gone(err);
        }
        Ok(outcome?)
    }

    /// [`Named::call`] for a method that is safe to run twice: when the call finds
    /// the object gone (or the name unbound, while its server restarts), it is
    /// made again on whatever the name is bound to then, up to `attempts` times in
    /// all, a tenth of a second apart. The last error is returned.
    pub async fn call_retrying<T, F, Fut>(&self, attempts: u32, call: F) -> Result<T, RegistryError>
    where
        F: Fn(R) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut left = attempts.max(1);
        loop {
            left -= 1;
            let outcome = self.call(&call).await;
            let again = match &outcome {
                Err(RegistryError::Call(err)) => is_gone(err),
                Err(RegistryError::NotBound { .. }) => true,
                _ => false,
            };
            if !again || left == 0 {
                return outcome;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    fn forget_if_gone(&self, err: &CallError) {
        if is_gone(err) {
            tracing::debug!(name = %self.name, %err, "the named object is gone; looking the name up again next time");
            *self.bound.lock() = None;
        }
    }
}

/// Whether a call's error means the object it reached is gone for good: its
/// node down or restarted (a new incarnation has new objects), the object
/// unknown there, or stopped.
fn is_gone(err: &CallError) -> bool {
    matches!(
        err,
        CallError::NodeDown { .. }
            | CallError::NodeRestarted { .. }
            | CallError::ConnectFailed { .. }
            | CallError::NoSuchObject
            | CallError::ActorStopped
    )
}
