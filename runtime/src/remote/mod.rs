//! Calls that leave the node: connections to peers, the objects this node exports,
//! references on the wire, and the transports that carry frames.

pub(crate) mod connection;
pub(crate) mod exports;
pub mod inproc;
pub(crate) mod leases;
pub(crate) mod marshal;
pub(crate) mod monitors;
pub(crate) mod once;
pub(crate) mod quic;
pub(crate) mod tls;

pub(crate) use connection::Connection;
pub use exports::WireRef;
pub(crate) use exports::{Exported, MarshalCx, RemoteRoute};
