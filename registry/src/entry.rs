//! What users see of the registry's contents: entries and the events a watch reports,
//! and how names and groups map onto store keys.

use remora::NodeId;
use remora::ObjectId;
use remora::WireRef;
use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::store::{Change, Record};

/// Names live under this key prefix in a store.
pub(crate) const NAMES: &str = "names/";
/// Group memberships live under `groups/{group}/{node}/{object}` (object ids alone
/// are not unique across nodes: well-known objects share theirs).
pub(crate) const GROUPS: &str = "groups/";

/// A bound name, as [`Registry::list`](crate::Registry::list) and watches report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The name (or, for a group member, the group).
    pub name: String,
    /// The interface of the bound object.
    pub interface: String,
    /// Where the object is: its node, incarnation, object id and address.
    pub target: WireRef,
    /// The node that bound it (whose lease keeps it).
    pub owner: NodeId,
}

impl Entry {
    /// The node the object lives on.
    pub fn node(&self) -> NodeId {
        self.target.node
    }

    /// The object's id on its node.
    pub fn object(&self) -> ObjectId {
        self.target.object
    }

    pub(crate) fn from_record(record: Record) -> Entry {
        let name = if let Some(name) = record.key.strip_prefix(NAMES) {
            name.to_owned()
        } else if let Some(member) = record.key.strip_prefix(GROUPS) {
            member.split('/').next().unwrap_or_default().to_owned()
        } else {
            record.key.clone()
        };
        Entry {
            name,
            interface: record.interface,
            target: record.target,
            owner: record.owner,
        }
    }
}

/// A change to the names under a watched prefix, in the order the registry made them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A name was bound (or rebound to another object).
    Bound(Entry),
    /// A name was unbound: by `unbind`, because its object stopped, or because the
    /// node that bound it went away (its lease expired).
    Unbound(Entry),
}

impl Event {
    pub(crate) fn from_change(change: Change) -> Event {
        match change {
            Change::Put(record) => Event::Bound(Entry::from_record(record)),
            Change::Deleted(record) => Event::Unbound(Entry::from_record(record)),
        }
    }

    /// The entry the event is about.
    pub fn entry(&self) -> &Entry {
        match self {
            Event::Bound(e) | Event::Unbound(e) => e,
        }
    }
}

/// The store key of a name.
pub(crate) fn name_key(name: &str) -> Result<String, RegistryError> {
    check(name, "name")?;
    Ok(format!("{NAMES}{name}"))
}

/// The key prefix of a group's members.
pub(crate) fn group_prefix(group: &str) -> Result<String, RegistryError> {
    check(group, "group")?;
    if group.contains('/') {
        return Err(invalid(group, "a group name may not contain '/'"));
    }
    Ok(format!("{GROUPS}{group}/"))
}

/// The store key of one member of a group.
pub(crate) fn member_key(group: &str, member: &WireRef) -> Result<String, RegistryError> {
    Ok(format!(
        "{}{}/{}",
        group_prefix(group)?,
        member.node,
        member.object
    ))
}

fn check(name: &str, what: &str) -> Result<(), RegistryError> {
    if name.is_empty() {
        return Err(invalid(name, &format!("a {what} may not be empty")));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            name,
            &format!("a {what} may not contain control characters"),
        ));
    }
    Ok(())
}

fn invalid(name: &str, reason: &str) -> RegistryError {
    RegistryError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Store errors name keys; users named names.
pub(crate) fn in_names(err: RegistryError) -> RegistryError {
    match err {
        RegistryError::AlreadyBound { name } => RegistryError::AlreadyBound {
            name: name.strip_prefix(NAMES).unwrap_or(&name).to_owned(),
        },
        other => other,
    }
}
