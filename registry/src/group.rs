//! A group proxy: one of a group's live members per call.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use remora::rt::Unmarshal;
use remora::ObjectId;
use remora::{CallError, Interface};

use crate::client::Registry;
use crate::entry::group_prefix;
use crate::error::RegistryError;
use crate::store::{Change, Record};

/// How a [`Group`] picks the member that gets a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pick {
    /// Each live member in turn.
    #[default]
    RoundRobin,
    /// A live member at random.
    Random,
}

/// A proxy for a registry group: each call goes to one live member, picked
/// round-robin or at random ([`Registry::group`]).
///
/// Membership follows the registry (a watch keeps it current). A member whose call
/// fails because it is gone (its node is down, unreachable or restarted, or the
/// actor stopped) is skipped from the next call on. A member whose call timed out
/// (slow, or its node silent and not yet known down) is skipped for a while
/// ([`DEMOTED_FOR`], doubling for each timeout in a row up to [`MAX_DEMOTION`]), then
/// tried again: callers stop queueing behind a member that does not answer. The
/// failed call itself is not retried: it may have run, and retrying is the
/// caller's decision.
pub struct Group<R> {
    shared: Arc<Shared<R>>,
}

impl<R> Clone for Group<R> {
    fn clone(&self) -> Self {
        Group {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<R> {
    name: String,
    pick: Pick,
    registry: Registry,
    members: Mutex<Vec<Member<R>>>,
    turn: AtomicUsize,
}

struct Member<R> {
    record: Record,
    proxy: Option<R>,
    failed: bool,
    /// Skipped until then: its last call timed out.
    demoted_until: Option<std::time::Instant>,
    /// Timeouts in a row (the next demotion doubles).
    timeouts: u32,
}

/// How long a member whose call timed out is skipped, the first time.
pub const DEMOTED_FOR: Duration = Duration::from_secs(1);
/// The longest a member is skipped for timing out again and again.
pub const MAX_DEMOTION: Duration = Duration::from_secs(30);

impl Registry {
    /// A proxy for `group` that picks a live member per call, round-robin.
    pub async fn group<R: Interface>(&self, group: &str) -> Result<Group<R>, RegistryError>
    where
        R::Msg: Unmarshal,
    {
        self.group_with(group, Pick::RoundRobin).await
    }

    /// A proxy for `group` that picks a live member per call as `pick` says.
    pub async fn group_with<R: Interface>(
        &self,
        group: &str,
        pick: Pick,
    ) -> Result<Group<R>, RegistryError>
    where
        R::Msg: Unmarshal,
    {
        Group::start(self.clone(), group, pick).await
    }
}

impl<R: Interface> Group<R>
where
    R::Msg: Unmarshal,
{
    pub(crate) async fn start(
        registry: Registry,
        name: &str,
        pick: Pick,
    ) -> Result<Group<R>, RegistryError> {
        let prefix = group_prefix(name)?;
        // Watch first, then list: a change in between shows in both, never in neither.
        let mut changes = registry.store().watch(&prefix).await?;
        let listed = registry.store().list(&prefix).await?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            pick,
            registry,
            members: Mutex::new(Vec::new()),
            turn: AtomicUsize::new(0),
        });
        for record in listed {
            shared.apply(Change::Put(record));
        }
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            while let Some(change) = changes.next().await {
                let Some(shared) = weak.upgrade() else { return };
                match change {
                    Ok(change) => shared.apply(change),
                    Err(err) => {
                        tracing::warn!(group = %shared.name, %err, "group watch lost; following it again");
                        drop(shared);
                        match follow_again(&weak, &prefix).await {
                            Some(fresh) => changes = fresh,
                            None => return,
                        }
                    }
                }
            }
        });
        Ok(Group { shared })
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How many members are known and not failed.
    pub fn live(&self) -> usize {
        self.shared
            .members
            .lock()
            .iter()
            .filter(|m| !m.failed)
            .count()
    }

    /// The member the next call would go to (and moves the turn on).
    /// [`RegistryError::NoMembers`] if none is live.
    pub fn pick(&self) -> Result<R, RegistryError> {
        self.pick_member().map(|(_, proxy)| proxy)
    }

    /// Calls one live member: `call` gets its proxy and makes the call. A member
    /// whose call fails because it is gone is skipped from then on.
    ///
    /// ```
    /// use remora::{Actor, Node};
    /// use remora_registry::{MemoryStore, Registry};
    ///
    /// #[remora::remote]
    /// pub trait Worker {
    ///     async fn work(&mut self, job: u64) -> u64;
    /// }
    /// struct Doubler;
    /// impl Actor for Doubler {}
    /// impl Worker for Doubler {
    ///     async fn work(&mut self, job: u64) -> u64 { job * 2 }
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let node = Node::builder().build().await?;
    /// let registry = Registry::with_store(&node, MemoryStore::new());
    /// for _ in 0..3 {
    ///     let worker: WorkerRef = node.spawn(Doubler);
    ///     registry.join("workers", &worker).await?;
    /// }
    /// let workers = registry.group::<WorkerRef>("workers").await?;
    /// assert_eq!(workers.live(), 3);
    /// assert_eq!(workers.call(|w| async move { w.work(21).await }).await?, 42);
    /// # Ok(()) }
    /// ```
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, RegistryError>
    where
        F: FnOnce(R) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let (object, proxy) = self.pick_member()?;
        let result = call(proxy).await;
        match &result {
            Err(err) if is_gone(err) => self.shared.fail(object),
            Err(CallError::Timeout { .. }) => self.shared.demote(object),
            Ok(_) => self.shared.answered(object),
            Err(_) => {}
        }
        Ok(result?)
    }

    fn pick_member(&self) -> Result<(ObjectId, R), RegistryError> {
        let shared = &self.shared;
        let mut members = shared.members.lock();
        loop {
            let now = std::time::Instant::now();
            let usable = |m: &Member<R>| !m.failed && m.demoted_until.is_none_or(|t| t <= now);
            let mut live: Vec<usize> = (0..members.len())
                .filter(|&i| usable(&members[i]))
                .collect();
            if live.is_empty() {
                // Every member is demoted: the one back soonest gets the call.
                let soonest = (0..members.len())
                    .filter(|&i| !members[i].failed)
                    .min_by_key(|&i| members[i].demoted_until);
                live.extend(soonest);
            }
            if live.is_empty() {
                return Err(RegistryError::NoMembers {
                    group: shared.name.clone(),
                });
            }
            let turn = match shared.pick {
                Pick::RoundRobin => shared.turn.fetch_add(1, Ordering::Relaxed),
                Pick::Random => fastrand::usize(..live.len()),
            };
            let member = &mut members[live[turn % live.len()]];
            if member.proxy.is_none() {
                match shared.registry.resolve::<R>(&shared.name, &member.record) {
                    Ok(proxy) => member.proxy = Some(proxy),
                    Err(err) => {
                        tracing::debug!(group = %shared.name, %err, "group member unusable; skipped");
                        member.failed = true;
                        continue;
                    }
                }
            }
            if let Some(proxy) = &member.proxy {
                return Ok((member.record.object(), proxy.clone()));
            }
        }
    }
}

/// Watches and lists the group again after its watch was lost; gives up when the
/// group is dropped. Tries every second.
async fn follow_again<R: Interface>(
    weak: &Weak<Shared<R>>,
    prefix: &str,
) -> Option<crate::store::Changes>
where
    R::Msg: Unmarshal,
{
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let shared = weak.upgrade()?;
        let store = shared.registry.store().clone();
        let Ok(changes) = store.watch(prefix).await else {
            continue;
        };
        let Ok(listed) = store.list(prefix).await else {
            continue;
        };
        let mut members = shared.members.lock();
        members.retain(|m| listed.iter().any(|r| r == &m.record));
        drop(members);
        for record in listed {
            shared.apply(Change::Put(record));
        }
        return Some(changes);
    }
}

impl<R> Shared<R> {
    fn apply(&self, change: Change) {
        let mut members = self.members.lock();
        match change {
            Change::Put(record) => {
                match members.iter_mut().find(|m| m.record.key == record.key) {
                    // Unchanged: a repeat (watch and list overlap) keeps its state.
                    Some(m) if m.record == record => {}
                    Some(m) => *m = Member::new(record),
                    None => members.push(Member::new(record)),
                }
                members.sort_by(|a, b| a.record.key.cmp(&b.record.key));
            }
            Change::Deleted(record) => members.retain(|m| m.record.key != record.key),
        }
    }

    /// A member's call timed out: skip it for a while, longer each time in a row.
    fn demote(&self, object: ObjectId) {
        let mut members = self.members.lock();
        for member in members.iter_mut().filter(|m| m.record.object() == object) {
            let skip = DEMOTED_FOR
                .saturating_mul(1 << member.timeouts.min(16))
                .min(MAX_DEMOTION);
            member.timeouts += 1;
            member.demoted_until = Some(std::time::Instant::now() + skip);
            tracing::debug!(group = %self.name, %object, ?skip, "group member timed out; skipped for a while");
        }
    }

    /// A member answered: it is no longer suspected of being slow.
    fn answered(&self, object: ObjectId) {
        let mut members = self.members.lock();
        for member in members.iter_mut().filter(|m| m.record.object() == object) {
            member.timeouts = 0;
            member.demoted_until = None;
        }
    }

    fn fail(&self, object: ObjectId) {
        let mut members = self.members.lock();
        for member in members.iter_mut().filter(|m| m.record.object() == object) {
            tracing::debug!(group = %self.name, %object, "group member failed; skipped from now on");
            member.failed = true;
        }
    }
}

impl<R> Member<R> {
    fn new(record: Record) -> Self {
        Member {
            record,
            proxy: None,
            failed: false,
            demoted_until: None,
            timeouts: 0,
        }
    }
}

/// Whether a call's error means the member itself is gone (not merely slow or busy).
fn is_gone(err: &CallError) -> bool {
    matches!(
        err,
        CallError::NodeDown { .. }
            | CallError::ConnectFailed { .. }
            | CallError::NodeRestarted { .. }
            | CallError::ActorStopped
            | CallError::NoSuchObject
    )
}
