//! Identities: of interfaces and methods (stable hashes of names), of nodes and
//! exported objects (random 128-bit values, as distinct types so that swapped
//! arguments do not compile), and of actors within a node.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stable 64-bit id of a name: FNV-1a over the name's UTF-8 bytes.
///
/// `#[remora::remote]` gives an interface the id `stable_id("Trait")` (or the
/// `name = "..."` given to the macro) and each method the id
/// `stable_id("Trait.method")`. The ids go on the wire, so renaming a trait or a
/// method changes its identity while reordering or adding methods does not.
///
/// ```
/// // Fixed forever: FNV-1a 64 of "Counter".
/// assert_eq!(remora::stable_id("Counter"), 0x9d1c_372f_e940_04c3);
/// ```
pub const fn stable_id(name: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = name.as_bytes();
    let mut hash = OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(PRIME);
        i += 1;
    }
    hash
}

/// The id of an actor within its node: unique for the node's lifetime, never reused.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ActorId(pub(crate) u64);

impl ActorId {
    /// The id as a number (for logs and statistics).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "actor#{}", self.0)
    }
}

/// Identifies a node: announced in its handshake and carried by every reference to
/// its objects. It is bound to the node's certificate: the first 128 bits of
/// SHA-256 over the certificate and the node's incarnation (a random number drawn
/// when the node starts), so a peer proves its id by completing TLS with that
/// certificate, and a member cannot claim another's id
/// ([`Credentials::node_id`](crate::Credentials::node_id)). A restarted node is a
/// new node with a new id and incarnation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Uuid);

/// Identifies an object a node exports: a random 128-bit value, so holding it is
/// the capability to call the object (a node refuses ids it never exported), or a
/// well-known constant for a service every node may offer (the registry, the
/// spawner).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(Uuid);

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        impl $name {
            /// A fresh random id (uuid v4).
            pub fn random() -> Self {
                $name(Uuid::new_v4())
            }

            #[doc = concat!("The ", $what, " id with this value (for well-known ids and tests).")]
            pub const fn from_u128(value: u128) -> Self {
                $name(Uuid::from_u128(value))
            }

            /// The id as a uuid.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                $name(uuid)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

uuid_id!(NodeId, "node");

impl NodeId {
    /// The id of a node whose (leaf) certificate is `certificate` (DER), in
    /// `incarnation`: what its peers check its `Hello` against.
    pub(crate) fn bound_to(certificate: &[u8], incarnation: u64) -> NodeId {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        hash.update(b"remora node id\0");
        hash.update(&incarnation.to_le_bytes());
        hash.update(certificate);
        let digest = hash.finish();
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&digest.as_ref()[..16]);
        NodeId(Uuid::from_bytes(bytes))
    }
}
uuid_id!(ObjectId, "object");

#[cfg(test)]
mod tests {
    use super::stable_id;

    #[test]
    fn fnv1a_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(stable_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_id("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn method_ids_differ_by_trait() {
        assert_ne!(stable_id("A.get"), stable_id("B.get"));
    }
}
