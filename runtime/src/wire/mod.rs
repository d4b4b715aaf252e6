//! The wire protocol, free of any I/O: frames, their encoding, and the bookkeeping
//! of calls on a connection. Transports (in-process channels, QUIC) move the bytes;
//! every protocol decision is made here, where it is tested without sockets.

mod call_frames;
pub mod codec;
mod depth;
pub mod frame;
pub mod session;

pub use codec::{DecodeError, EncodeError, FrameReader, Limits};
pub use frame::{Call, CallContext, Frame, Hello, ObjectId, TraceContext, MAGIC, PROTOCOL_VERSION};
pub use session::{Incoming, Session, SessionError};
