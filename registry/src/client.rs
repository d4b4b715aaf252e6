//! [`Registry`]: names to typed references, for one node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use remora::rt::Unmarshal;
use remora::{Interface, Node};

use crate::entry::{group_prefix, in_names, member_key, name_key, Entry, Event, GROUPS, NAMES};
use crate::error::RegistryError;
use crate::remote::RemoteStore;
use crate::store::{Change, Changes, LeaseId, Record, Store};

/// How long a node's entries outlive its last lease renewal, unless configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// A node's handle on the cluster's registry: bind names to references, look
/// them up as typed proxies, watch names, and form groups.
///
/// Entries belong to the node that made them. It keeps them alive with a lease,
/// renewed in the background: when the node dies or loses the registry for longer
/// than the lease (default [`DEFAULT_LEASE`], at most what the registry grants),
/// its entries vanish. The lease is the node's alone: no other node can renew it,
/// end it, or bind under it. An entry whose actor stops is removed at once. Clones share
/// one lease.
///
/// ```
/// use remora::{Actor, Node};
/// use remora_registry::{MemoryStore, Registry, RegistryError, RegistryServer};
///
/// #[remora::remote]
/// pub trait Greeter {
///     async fn greet(&mut self, who: String) -> String;
/// }
/// struct Hello;
/// impl Actor for Hello {}
/// impl Greeter for Hello {
///     async fn greet(&mut self, who: String) -> String { format!("hello, {who}") }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // One node serves the registry...
/// let home = Node::builder().listen("127.0.0.1:0").build().await?;
/// RegistryServer::serve(&home, MemoryStore::new())?;
/// let addr = home.listen_addr().unwrap().to_string();
///
/// // ...another binds a name in it...
/// let server = Node::builder().listen("127.0.0.1:0").build().await?;
/// let registry = Registry::connect(&server, &addr).await?;
/// let greeter: GreeterRef = server.spawn(Hello);
/// registry.bind("greeter", &greeter).await?;
///
/// // ...and a third looks it up, typed.
/// let client = Node::builder().build().await?;
/// let registry = Registry::connect(&client, &addr).await?;
/// let greeter: GreeterRef = registry.lookup("greeter").await?;
/// assert_eq!(greeter.greet("you".into()).await?, "hello, you");
/// assert!(matches!(
///     registry.lookup::<GreeterRef>("nobody").await,
///     Err(RegistryError::NotBound { .. })
/// ));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    node: Node,
    store: Arc<dyn Store>,
    lease_ttl: Duration,
    /// This node's lease, granted on its first entry.
    lease: tokio::sync::Mutex<Option<LeaseId>>,
    /// This node's entries, to put back if the lease is lost (registry restarted,
    /// or unreachable for longer than the lease).
    owned: parking_lot::Mutex<HashMap<String, Owned>>,
}

#[derive(Clone)]
struct Owned {
    record: Record,
    /// A `bind`: put back only if nobody took the name meanwhile.
    exclusive: bool,
    /// The bound reference itself: an object stays referenced (pinned) while this
    /// node keeps it bound, as RMI's registry pins what it holds.
    _pin: Arc<dyn std::any::Any + Send + Sync>,
}

/// Options for a [`Registry`] handle.
#[derive(Clone, Debug)]
pub struct RegistryBuilder {
    lease_ttl: Duration,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        RegistryBuilder {
            lease_ttl: DEFAULT_LEASE,
        }
    }
}

impl RegistryBuilder {
    /// How long this node's entries outlive its last renewal (renewed every third
    /// of it). A registry node caps it at its own maximum.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(100));
        self
    }

    /// A handle on the registry served by the node at `addr`: one address, or
    /// several separated by commas (registry processes sharing one store), tried
    /// in turn; see [`RemoteStore`] for how the handle follows a registry that
    /// restarts or dies.
    pub async fn connect(self, node: &Node, addr: &str) -> Result<Registry, RegistryError> {
        let store = RemoteStore::connect(node, addr).await?;
        Ok(self.with_store(node, store))
    }

    /// A handle on a store this node uses directly: a shared `EtcdStore`, or a
    /// [`MemoryStore`](crate::MemoryStore) for nodes of one process.
    pub fn with_store(self, node: &Node, store: impl Store) -> Registry {
        self.with_shared_store(node, Arc::new(store))
    }

    pub(crate) fn with_shared_store(self, node: &Node, store: Arc<dyn Store>) -> Registry {
        Registry {
            shared: Arc::new(Shared {
                node: node.clone(),
                store,
                lease_ttl: self.lease_ttl,
                lease: tokio::sync::Mutex::new(None),
                owned: parking_lot::Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Registry {
    /// Options: lease time to live.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// A handle on the registry served by the node listening at `addr` (see
    /// [`RegistryServer`](crate::RegistryServer)): one address, or several
    /// separated by commas, registry processes sharing one store (etcd). The
    /// handle follows its registry by address: after the registry node restarts
    /// or dies, the next call that finds out dials again (the next address, in
    /// turn), this node's lease renewal takes a new lease if the old one is gone
    /// and binds this node's names again, and groups watch again.
    pub async fn connect(node: &Node, addr: &str) -> Result<Registry, RegistryError> {
        Registry::builder().connect(node, addr).await
    }

    /// A handle on a store `node` uses directly (no registry node in between).
    pub fn with_store(node: &Node, store: impl Store) -> Registry {
        Registry::builder().with_store(node, store)
    }

    /// The node this handle binds for.
    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    /// Binds `name` to `r`. Fails with [`RegistryError::AlreadyBound`] if the name
    /// is taken. The name is unbound when `r`'s actor stops, or when this node
    /// goes away.
    pub async fn bind<R: Interface>(&self, name: &str, r: &R) -> Result<(), RegistryError>
    where
        R::Msg: Unmarshal,
    {
        let record = self.record(name_key(name)?, r);
        let lease = self.lease().await?;
        self.shared
            .store
            .create(record.clone(), lease)
            .await
            .map_err(in_names)?;
        self.own(record, true, r);
        Ok(())
    }

    /// Binds `name` to `r`, replacing whatever it was bound to.
    pub async fn rebind<R: Interface>(&self, name: &str, r: &R) -> Result<(), RegistryError>
    where
        R::Msg: Unmarshal,
    {
        let record = self.record(name_key(name)?, r);
        let lease = self.lease().await?;
        self.shared.store.put(record.clone(), lease).await?;
        self.own(record, false, r);
        Ok(())
    }

    /// Unbinds `name`, whoever bound it. Fails with [`RegistryError::NotBound`] if
    /// nothing was bound under it.
    pub async fn unbind(&self, name: &str) -> Result<(), RegistryError> {
        let key = name_key(name)?;
        self.shared.owned.lock().remove(&key);
        match self.shared.store.delete(&key, None).await? {
            Some(_) => Ok(()),
            None => Err(RegistryError::NotBound {
                name: name.to_owned(),
            }),
        }
    }

    /// The object bound under `name`, as a typed proxy. Fails with
    /// [`RegistryError::NotBound`] if nothing is, and [`RegistryError::WrongInterface`]
    /// if it is an object of another interface than `R`.
    pub async fn lookup<R: Interface>(&self, name: &str) -> Result<R, RegistryError>
    where
        R::Msg: Unmarshal,
    {
        let key = name_key(name)?;
        let record = self
            .shared
            .store
            .get(&key)
            .await?
            .ok_or_else(|| RegistryError::NotBound {
                name: name.to_owned(),
            })?;
        self.resolve(name, &record)
    }

    /// Every bound name that starts with `prefix` (`""` for all), in name order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, RegistryError> {
        let records = self.shared.store.list(&format!("{NAMES}{prefix}")).await?;
        Ok(records.into_iter().map(Entry::from_record).collect())
    }

    /// Every member of every group whose name starts with `prefix` (`""` for
    /// all), in group order: an [`Entry`] per member, named by its group. For
    /// tools that show the whole registry (`remora dashboard`); a program that
    /// uses a group asks for its [`members`](Registry::members), typed.
    ///
    /// ```
    /// use remora::{Actor, Node};
    /// use remora_registry::{MemoryStore, Registry};
    ///
    /// #[remora::remote]
    /// pub trait Worker {
    ///     async fn work(&mut self) -> u32;
    /// }
    /// struct Busy;
    /// impl Actor for Busy {}
    /// impl Worker for Busy {
    ///     async fn work(&mut self) -> u32 { 1 }
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let node = Node::builder().build().await?;
    /// let registry = Registry::with_store(&node, MemoryStore::new());
    /// let (a, b): (WorkerRef, WorkerRef) = (node.spawn(Busy), node.spawn(Busy));
    /// registry.join("workers", &a).await?;
    /// registry.join("workers", &b).await?;
    /// registry.bind("boss", &a).await?;
    ///
    /// let members = registry.list_groups("").await?;
    /// assert_eq!(members.len(), 2, "names are not group members");
    /// assert!(members.iter().all(|m| m.name == "workers" && m.node() == node.id()));
    /// # Ok(()) }
    /// ```
    pub async fn list_groups(&self, prefix: &str) -> Result<Vec<Entry>, RegistryError> {
        let records = self.shared.store.list(&format!("{GROUPS}{prefix}")).await?;
        Ok(records.into_iter().map(Entry::from_record).collect())
    }

    /// Names bound and unbound under `prefix` from now on, in order. If the
    /// watch is lost (its registry unreachable or restarted), [`Watch::next`] says
    /// so once, then resumes it: see [`Watch`].
    pub async fn watch(&self, prefix: &str) -> Result<Watch, RegistryError> {
        let prefix = format!("{NAMES}{prefix}");
        // Watch first, then list: a change between the two is in both, and the
        // view absorbs the repeat.
        let changes = self.shared.store.watch(&prefix).await?;
        let view = self.shared.store.list(&prefix).await?;
        Ok(Watch {
            store: self.shared.store.clone(),
            prefix,
            changes: Some(changes),
            view: view.into_iter().map(|r| (r.key.clone(), r)).collect(),
            pending: Default::default(),
        })
    }

    /// Adds `r` to `group` (a group holds any number of objects of one interface).
    /// Leaves it when `r`'s actor stops or this node goes away.
    pub async fn join<R: Interface>(&self, group: &str, r: &R) -> Result<(), RegistryError>
    where
        R::Msg: Unmarshal,
    {
        let wire = self.shared.node.wire_ref(r);
        let record = self.record(member_key(group, &wire)?, r);
        let lease = self.lease().await?;
        self.shared.store.put(record.clone(), lease).await?;
        self.own(record, false, r);
        Ok(())
    }

    /// Takes `r` out of `group` (nothing happens if it was not in it).
    pub async fn leave<R: Interface>(&self, group: &str, r: &R) -> Result<(), RegistryError>
    where
        R::Msg: Unmarshal,
    {
        let wire = self.shared.node.wire_ref(r);
        let (key, object) = (member_key(group, &wire)?, wire.object);
        self.shared.owned.lock().remove(&key);
        self.shared.store.delete(&key, Some(object)).await?;
        Ok(())
    }

    /// The members of `group` now, as typed proxies.
    pub async fn members<R: Interface>(&self, group: &str) -> Result<Vec<R>, RegistryError>
    where
        R::Msg: Unmarshal,
    {
        let records = self.shared.store.list(&group_prefix(group)?).await?;
        records
            .iter()
            .map(|record| self.resolve(group, record))
            .collect()
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// `record` as a proxy of interface `R`, or why not.
    pub(crate) fn resolve<R: Interface>(
        &self,
        name: &str,
        record: &Record,
    ) -> Result<R, RegistryError>
    where
        R::Msg: Unmarshal,
    {
        if record.target.interface != <R::Msg as Unmarshal>::INTERFACE_ID {
            return Err(RegistryError::WrongInterface {
                name: name.to_owned(),
                expected: <R::Msg as Unmarshal>::INTERFACE.to_owned(),
                found: record.interface.clone(),
            });
        }
        Ok(self.shared.node.resolve(&record.target)?)
    }

    fn record<R: Interface>(&self, key: String, r: &R) -> Record
    where
        R::Msg: Unmarshal,
    {
        Record {
            key,
            target: self.shared.node.wire_ref(r),
            interface: <R::Msg as Unmarshal>::INTERFACE.to_owned(),
            owner: self.shared.node.id(),
        }
    }

    /// Remembers an entry of this node's, and removes it when its actor stops.
    fn own<R: Interface>(&self, record: Record, exclusive: bool, r: &R) {
        let (key, object) = (record.key.clone(), record.object());
        self.shared.owned.lock().insert(
            key.clone(),
            Owned {
                record,
                exclusive,
                _pin: Arc::new(r.clone()),
            },
        );
        let (node, watched, ttl) = (self.shared.node.clone(), r.clone(), self.shared.lease_ttl);
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let reason = gone(&node, &watched, ttl).await;
            drop(watched);
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mine = {
                let mut owned = shared.owned.lock();
                let mine = owned.get(&key).is_some_and(|o| o.record.object() == object);
                if mine {
                    owned.remove(&key);
                }
                mine
            };
            if mine {
                tracing::debug!(%key, %reason, "object stopped; removing its registry entry");
                if let Err(err) = shared.store.delete(&key, Some(object)).await {
                    tracing::warn!(%key, %err, "could not remove the entry of a stopped object; its lease will");
                }
            }
        });
    }

    /// This node's lease, granted (and its renewal started) on first use.
    async fn lease(&self) -> Result<LeaseId, RegistryError> {
        let mut lease = self.shared.lease.lock().await;
        if let Some(id) = *lease {
            return Ok(id);
        }
        let shared = &self.shared;
        let id = shared
            .store
            .grant(shared.lease_ttl, shared.node.id())
            .await?;
        *lease = Some(id);
        tokio::spawn(renew(self.shared.clone()));
        Ok(id)
    }
}

/// Resolves when the object behind `r` is gone for good. A stop, or a restart of
/// its node, is final at once. Losing the connection to its node is final only
/// if it lasts a lease time: a connection that comes back (a timeout under load,
/// a network blip) must not cost a live object its name.
async fn gone<R: Interface>(node: &Node, r: &R, ttl: Duration) -> remora::StopReason {
    let pause = (ttl / 10).max(Duration::from_millis(100));
    let mut down_since: Option<tokio::time::Instant> = None;
    loop {
        let watching_since = tokio::time::Instant::now();
        // Each monitor re-dials the node if the connection is gone.
        let reason = node.monitor(r).await;
        if !matches!(reason, remora::StopReason::NodeDown { .. }) {
            return reason;
        }
        // A monitor that held for a lease time had a good connection: a new outage.
        if watching_since.elapsed() >= ttl {
            down_since = None;
        }
        let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= ttl || node.is_shut_down() {
            return reason;
        }
        tokio::time::sleep(pause).await;
    }
}

/// Renews the node's lease every third of its time to live until the node shuts
/// down; a lost lease is replaced and the node's entries put back.
async fn renew(shared: Arc<Shared>) {
    let period = shared.lease_ttl / 3;
    loop {
        tokio::time::sleep(period).await;
        let Some(lease) = *shared.lease.lock().await else {
            return;
        };
        if shared.node.is_shut_down() {
            let revoke = shared.store.revoke(lease, shared.node.id());
            let _ = tokio::time::timeout(period, revoke).await;
            return;
        }
        let renewal = shared.store.keep_alive(lease, shared.node.id());
        match tokio::time::timeout(period, renewal).await {
            Ok(Ok(())) => {}
            Ok(Err(RegistryError::LeaseExpired)) => {
                tracing::warn!("registry lease expired; binding this node's entries again");
                restore(&shared).await;
            }
            Ok(Err(err)) => tracing::warn!(%err, "could not renew the registry lease; retrying"),
            Err(_) => {
                tracing::warn!("renewing the registry lease timed out; retrying");
                shared.store.unresponsive();
            }
        }
    }
}

/// Takes a new lease and puts this node's entries back under it.
async fn restore(shared: &Shared) {
    let mut lease = shared.lease.lock().await;
    let id = match shared.store.grant(shared.lease_ttl, shared.node.id()).await {
        Ok(id) => id,
        Err(err) => {
            tracing::warn!(%err, "could not take a new registry lease; retrying");
            return;
        }
    };
    *lease = Some(id);
    let owned: Vec<Owned> = shared.owned.lock().values().cloned().collect();
    for entry in owned {
        let key = entry.record.key.clone();
        let result = if entry.exclusive {
            shared.store.create(entry.record, id).await
        } else {
            shared.store.put(entry.record, id).await.map(|_| ())
        };
        if let Err(err) = result {
            tracing::warn!(%key, %err, "could not bind again after losing the lease");
            shared.owned.lock().remove(&key);
        }
    }
}

/// Names bound and unbound under a prefix, in order ([`Registry::watch`]).
///
/// A watch is never a frozen view: when it is lost (its registry unreachable,
/// restarted, or failed over), [`Watch::next`] returns the error once
/// ([`RegistryError::WatchLost`]), and the calls after it resume the watch on
/// whichever registry answers (trying once a second): they first return the net
/// changes while it was lost, as `Bound` and `Unbound` events against the names
/// it had reported (a name bound and unbound meanwhile is not seen), then
/// changes as they come.
pub struct Watch {
    store: Arc<dyn Store>,
    prefix: String,
    /// None while lost.
    changes: Option<Changes>,
    /// The names under the prefix as the events so far have it.
    view: std::collections::BTreeMap<String, Record>,
    /// Events of a resumption still to hand out.
    pending: std::collections::VecDeque<Change>,
}

/// How often a lost watch tries to resume.
const RESUME_EVERY: Duration = Duration::from_secs(1);

impl Watch {
    /// The next event; an error once when the watch is lost (the call after it
    /// resumes it). Waits while the registry is unreachable.
    pub async fn next(&mut self) -> Option<Result<Event, RegistryError>> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Some(Ok(self.seen(change)));
            }
            let Some(changes) = &mut self.changes else {
                self.resume().await;
                continue;
            };
            match changes.next().await {
                Some(Ok(change)) => return Some(Ok(self.seen(change))),
                Some(Err(err)) => {
                    self.changes = None;
                    return Some(Err(err));
                }
                None => {
                    self.changes = None;
                    return Some(Err(RegistryError::WatchLost {
                        reason: "the registry ended the watch".into(),
                    }));
                }
            }
        }
    }

    /// Records `change` in the view and makes it an event.
    fn seen(&mut self, change: Change) -> Event {
        match &change {
            Change::Put(record) => {
                self.view.insert(record.key.clone(), record.clone());
            }
            Change::Deleted(record) => {
                self.view.remove(&record.key);
            }
        }
        Event::from_change(change)
    }

    /// Watches again until a registry answers, and queues the net changes
    /// against the view.
    async fn resume(&mut self) {
        loop {
            let resumed = async {
                let changes = self.store.watch(&self.prefix).await?;
                let listed = self.store.list(&self.prefix).await?;
                Ok::<_, RegistryError>((changes, listed))
            };
            match resumed.await {
                Ok((changes, listed)) => {
                    let now: std::collections::BTreeMap<String, Record> =
                        listed.into_iter().map(|r| (r.key.clone(), r)).collect();
                    for (key, record) in &self.view {
                        if !now.contains_key(key) {
                            self.pending.push_back(Change::Deleted(record.clone()));
                        }
                    }
                    for (key, record) in now {
                        if self.view.get(&key) != Some(&record) {
                            self.pending.push_back(Change::Put(record));
                        }
                    }
                    self.changes = Some(changes);
                    return;
                }
                Err(err) => {
                    tracing::debug!(prefix = %self.prefix, %err, "watch not resumed yet");
                    tokio::time::sleep(RESUME_EVERY).await;
                }
            }
        }
    }
}
