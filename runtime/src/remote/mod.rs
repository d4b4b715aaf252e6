//! Calls that leave the node: connections to peers, the objects this node exports,
//! references on the wire, and the transports that carry frames.

pub(crate) mod answers;
pub(crate) mod authority;
pub(crate) mod backlog;
pub(crate) mod connection;
pub(crate) mod exports;
pub(crate) mod handshakes;
pub(crate) mod host;
pub mod inproc;
pub(crate) mod leases;
pub(crate) mod marshal;
pub(crate) mod monitors;
pub(crate) mod once;
pub(crate) mod outbox;
pub(crate) mod pipes;
pub(crate) mod protocol;
pub(crate) mod quic;
pub(crate) mod route;
pub(crate) mod stream_reader;
pub(crate) mod tls;
pub(crate) mod wire_ref;

pub(crate) use exports::Exported;
pub use handshakes::HandshakeLimits;
pub(crate) use host::Host;
pub(crate) use marshal::MarshalCx;
pub(crate) use route::RemoteRoute;
pub use wire_ref::WireRef;
