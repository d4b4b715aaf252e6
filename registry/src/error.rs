//! Why a registry operation failed.

use remora::CallError;
use serde::{Deserialize, Serialize};

/// Why a registry operation failed. It crosses the wire between a registry node and
/// its clients, so it is plain data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RegistryError {
    /// `bind` found the name taken; `rebind` replaces, `unbind` frees it.
    #[error("the name {name:?} is already bound; use rebind to replace it, or unbind it first")]
    AlreadyBound {
        /// The name.
        name: String,
    },
    /// Nothing is bound under the name.
    #[error("nothing is bound under {name:?}")]
    NotBound {
        /// The name.
        name: String,
    },
    /// The name is bound to an object of another interface than the one asked for.
    #[error("{name:?} is bound to a {found}, not a {expected}")]
    WrongInterface {
        /// The name.
        name: String,
        /// The interface the lookup asked for.
        expected: String,
        /// The interface of the bound object.
        found: String,
    },
    /// The group has no live member to call.
    #[error("the group {group:?} has no live member")]
    NoMembers {
        /// The group.
        group: String,
    },
    /// The name is not usable as a registry name.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller may not do this: the registry only lets the nodes on its allow
    /// list change entries, or the lease it named belongs to another node (only the
    /// node a lease was granted to may renew it, end it, or bind under it).
    #[error("{caller} may not {operation}")]
    Unauthorized {
        /// Who asked (the certificate name of the calling node, or its id).
        caller: String,
        /// What it asked for, and why that is refused.
        operation: String,
    },
    /// The lease expired before it was renewed: its entries are gone. The
    /// [`Registry`](crate::Registry) re-binds its own entries under a new lease.
    #[error("the lease expired; its entries were removed")]
    LeaseExpired,
    /// A watch ended before it was dropped (the watcher fell behind, or the store or
    /// the registry node went away); watch again to resume.
    #[error("the watch was lost: {reason}")]
    WatchLost {
        /// Why.
        reason: String,
    },
    /// The store's backend failed (for etcd: unreachable, or refused the request).
    #[error("the registry's store failed: {reason}")]
    Backend {
        /// What the backend said.
        reason: String,
    },
    /// The call to the registry node failed (it is down, unreachable, or timed out).
    #[error("the registry could not be reached: {0}")]
    Call(#[from] CallError),
}
