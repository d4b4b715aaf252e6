//! Pipes: typed channels whose halves travel in calls, for streaming results,
//! uploads and subscriptions.
//!
//! [`channel`] makes a [`Sender`] and a [`Receiver`] with room for `capacity`
//! items. Either half is an ordinary value: put it in an argument or a return
//! value (nested too) and it arrives on the other node as a working half, the
//! way references do. A method that returns a `Receiver<T>` streams its result;
//! one that takes a `Receiver<T>` takes an upload; one that takes a `Sender<T>`
//! takes a subscriber. No macro syntax is involved.
//!
//! - **Backpressure end to end.** The receiving side grants credit for
//!   `capacity` items and gives it back as it consumes them; [`Sender::send`]
//!   waits while there is none, and [`Sender::try_send`] never waits. A slow
//!   consumer bounds what the producer's node holds, whatever the producer does.
//! - **Honest ends.** The stream ends (`None`) once every sender is gone. A
//!   failure is an item `Err(CallError)`, never a silent end: the producer's node
//!   died (`NodeDown`) or restarted, or an item did not decode. Dropping the
//!   receiver makes `send` fail with [`SendError::Closed`], the item given back.
//!   Items arrive in order, at most once.
//! - **Transport.** Over QUIC each pipe stream has a QUIC stream of its own, so
//!   a stalled pipe holds up no call and no other pipe.
//! - **Bounds.** A peer may have at most [`MAX_STREAMS`] pipe streams open to
//!   a node on one connection; the receiving half of one past that gets
//!   `Err(CallError::Overloaded)`, and the others go on.
//! - **Lifetime.** A half on another node holds its pipe's end on the node it
//!   came from the way a proxy holds an actor (a lease): dropped, or its node
//!   dead, the end goes.
//!
//! ```
//! use futures_util::StreamExt;
//! use remora::{pipe, Actor, Node};
//!
//! #[remora::remote]
//! pub trait Counter {
//!     /// The numbers from 1 to `n`, as a stream.
//!     async fn count(&mut self, n: u64) -> pipe::Receiver<u64>;
//! }
//! struct C;
//! impl Actor for C {}
//! impl Counter for C {
//!     async fn count(&mut self, n: u64) -> pipe::Receiver<u64> {
//!         let (tx, rx) = pipe::channel(16);
//!         tokio::spawn(async move {
//!             for i in 1..=n {
//!                 if tx.send(i).await.is_err() {
//!                     break; // the receiver is gone
//!                 }
//!             }
//!         });
//!         rx
//!     }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Node::builder().build().await?;
//! let client = Node::builder().build().await?;
//! remora::remote::inproc::connect_serializing(&client, &server).await?;
//! let counter: CounterRef = server.spawn(C);
//! let remote: CounterRef = client.reference(server.id(), server.export(&counter)?)?;
//!
//! let mut numbers = remote.count(100).await?;
//! let mut sum = 0;
//! while let Some(n) = numbers.next().await {
//!     sum += n?;
//! }
//! assert_eq!(sum, 5050);
//! # Ok(()) }
//! ```

mod end;
mod remote;

/// The most pipe streams a peer may have open to a node on one connection
/// (and QUIC streams for their items): each half that receives or sends
/// across the connection opens one.
pub const MAX_STREAMS: usize = crate::remote::pipes::MAX_PIPE_STREAMS;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::CallError;
use crate::remote::{MarshalCx, WireRef};
use remote::{RemoteReceiver, RemoteSender};

pub(crate) use end::PipeEnd;

/// What a pipe carries: any value that can be sent between nodes.
pub trait Item: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Item for T {}

/// The interface id a receiving half's end is exported with.
pub(crate) const RECEIVER_INTERFACE: u64 = crate::stable_id("remora.pipe.Receiver");
/// The interface id a sending half's end is exported with.
pub(crate) const SENDER_INTERFACE: u64 = crate::stable_id("remora.pipe.Sender");

/// How long a half sent on from a node that had it from elsewhere keeps its
/// lease there: long enough for its new holder to open its stream (or take its
/// own lease) before the end could be found unreferenced.
const HANDOFF: Duration = Duration::from_secs(5);

/// The local channel under a pipe: items, and the errors of its remote senders.
type Local<T> = mpsc::Sender<Result<T, CallError>>;

/// A pipe with room for `capacity` items (at least 1): its sending half and its
/// receiving half. See the [module](self) documentation.
///
/// ```
/// # #[tokio::main] async fn main() {
/// let (tx, mut rx) = remora::pipe::channel::<String>(2);
/// tx.send("a".to_owned()).await.unwrap();
/// drop(tx);
/// assert_eq!(rx.recv().await, Some(Ok("a".to_owned())));
/// assert_eq!(rx.recv().await, None); // every sender is gone: a clean end
/// # }
/// ```
pub fn channel<T: Send + 'static>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let capacity = capacity.clamp(1, u32::MAX as usize);
    let (tx, rx) = mpsc::channel(capacity);
    let capacity = capacity as u32;
    (
        Sender {
            inner: SenderInner::Local(tx),
            capacity,
        },
        Receiver {
            inner: std::sync::Mutex::new(ReceiverInner::Local(rx)),
            capacity,
        },
    )
}

/// The sending half of a pipe. Clone it for more producers; send it to another
/// node in a call and it sends from there.
pub struct Sender<T> {
    inner: SenderInner<T>,
    capacity: u32,
}

enum SenderInner<T> {
    Local(Local<T>),
    Remote(Arc<RemoteSender<T>>),
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            inner: match &self.inner {
                SenderInner::Local(tx) => SenderInner::Local(tx.clone()),
                SenderInner::Remote(remote) => SenderInner::Remote(remote.clone()),
            },
            capacity: self.capacity,
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            SenderInner::Local(_) => "local",
            SenderInner::Remote(_) => "remote",
        };
        f.debug_struct("Sender")
            .field("kind", &kind)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Why [`Sender::send`] did not send an item; the item comes back.
#[derive(thiserror::Error)]
pub enum SendError<T> {
    /// The receiving half was dropped.
    #[error("the pipe's receiver is gone")]
    Closed(T),
    /// The pipe failed: its other end's node is down or restarted, or the item
    /// could not be encoded.
    #[error("the pipe failed: {error}")]
    Failed {
        /// The item.
        item: T,
        /// Why.
        error: CallError,
    },
}

impl<T> SendError<T> {
    /// The item that was not sent.
    pub fn into_item(self) -> T {
        match self {
            SendError::Closed(item) | SendError::Failed { item, .. } => item,
        }
    }
}

impl<T> std::fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::Failed { error, .. } => write!(f, "Failed {{ error: {error:?}, .. }}"),
        }
    }
}

/// Why [`Sender::try_send`] did not send an item; the item comes back.
#[derive(thiserror::Error)]
pub enum TrySendError<T> {
    /// No credit now: the receiver has not made room yet (or, for a sending half
    /// on another node than its pipe's receiver, the stream is still opening).
    #[error("the pipe is full")]
    Full(T),
    /// The receiving half was dropped.
    #[error("the pipe's receiver is gone")]
    Closed(T),
    /// The pipe failed (see [`SendError::Failed`]).
    #[error("the pipe failed: {error}")]
    Failed {
        /// The item.
        item: T,
        /// Why.
        error: CallError,
    },
}

impl<T> std::fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
            TrySendError::Failed { error, .. } => write!(f, "Failed {{ error: {error:?}, .. }}"),
        }
    }
}

impl<T: Item> Sender<T> {
    /// Sends `item`, waiting while the receiving side has no room for it.
    ///
    /// Fails with the item given back if the receiver is gone
    /// ([`SendError::Closed`]) or the pipe failed ([`SendError::Failed`]).
    pub async fn send(&self, item: T) -> Result<(), SendError<T>> {
        match &self.inner {
            SenderInner::Local(tx) => tx.send(Ok(item)).await.map_err(|e| match e.0 {
                Ok(item) => SendError::Closed(item),
                Err(_) => unreachable!("a sender sends items"),
            }),
            SenderInner::Remote(remote) => remote.send(item).await,
        }
    }

    /// Sends `item` if there is room for it now; never waits.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        match &self.inner {
            SenderInner::Local(tx) => tx.try_send(Ok(item)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(Ok(item)) => TrySendError::Full(item),
                mpsc::error::TrySendError::Closed(Ok(item)) => TrySendError::Closed(item),
                _ => unreachable!("a sender sends items"),
            }),
            SenderInner::Remote(remote) => remote.try_send(item),
        }
    }
}

impl<T: Item> Sender<T> {
    /// Resolves once the receiving half is gone or the pipe failed (a later
    /// `send` fails): for a producer that waits on something else between
    /// items, to stop promptly.
    pub async fn closed(&self) {
        match &self.inner {
            SenderInner::Local(tx) => tx.closed().await,
            SenderInner::Remote(remote) => remote.closed().await,
        }
    }
}

impl<T> Sender<T> {
    /// Whether the receiving half is known to be gone (a later `send` fails).
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            SenderInner::Local(tx) => tx.is_closed(),
            SenderInner::Remote(remote) => remote.is_closed(),
        }
    }

    /// The pipe's capacity, in items.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

/// The receiving half of a pipe: a [`Stream`] of `Result<T, CallError>` that
/// ends (`None`) once every sender is gone. Send it to another node in a call
/// and it receives there, the items flowing straight from where they are made.
pub struct Receiver<T> {
    /// Behind a lock only so that sending it in a call (serde's `&self`) can
    /// take it; receiving (`&mut self`) never locks.
    inner: std::sync::Mutex<ReceiverInner<T>>,
    capacity: u32,
}

enum ReceiverInner<T> {
    Local(mpsc::Receiver<Result<T, CallError>>),
    Remote(RemoteReceiver<T>),
    /// Sent to another node.
    Gone,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<T: Item> Receiver<T> {
    /// The next item: `Some(Ok(item))`, `Some(Err(..))` for a failure (the
    /// producer's node died, an item did not decode), or `None` once every
    /// sender is gone.
    pub async fn recv(&mut self) -> Option<Result<T, CallError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<T> Receiver<T> {
    /// The pipe's capacity, in items.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

impl<T: Item> Stream for Receiver<T> {
    type Item = Result<T, CallError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.inner.get_mut().unwrap_or_else(|e| e.into_inner()) {
            ReceiverInner::Local(rx) => rx.poll_recv(cx),
            ReceiverInner::Remote(remote) => remote.poll_next(cx),
            ReceiverInner::Gone => Poll::Ready(None),
        }
    }
}

/// A pipe half on the wire: its end (exported on the node the items are at, or
/// go to) and the pipe's capacity.
#[derive(Serialize, Deserialize)]
struct WirePipe {
    end: WireRef,
    capacity: u32,
}

const NO_NODE: &str = "a pipe half can only be sent in a call between nodes";

/// Where a pipe half read from the wire belongs.
enum Arrival {
    /// Back on the node its end is on: the end gives its half back.
    Home(WireRef),
    /// On another node than its end: it reaches the end over this route.
    Away(Arc<crate::remote::RemoteRoute>),
}

impl WirePipe {
    /// Reads a half of the kind whose ends are exported as `interface` (`what`,
    /// for the error): the node it arrives on, where it belongs, its capacity.
    fn arrive<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
        interface: u64,
        what: &str,
    ) -> Result<(MarshalCx, Arrival, u32), D::Error> {
        use serde::de::Error;
        let cx = MarshalCx::current().ok_or_else(|| D::Error::custom(NO_NODE))?;
        let wire = WirePipe::deserialize(deserializer)?;
        if wire.end.interface != interface {
            return Err(D::Error::custom(format!(
                "not {what} (the value's type differs between the two nodes)"
            )));
        }
        let capacity = wire.capacity.max(1);
        let arrival = if wire.end.node == cx.host.id() {
            Arrival::Home(wire.end)
        } else {
            let route = cx
                .host
                .import_remote_raw(&wire.end, cx.conn.as_ref())
                .map_err(D::Error::custom)?;
            Arrival::Away(route)
        };
        Ok((cx, arrival, capacity))
    }
}

impl<T: Item> Serialize for Receiver<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if crate::remote::marshal::probing() {
            return Err(S::Error::custom("holds a pipe"));
        }
        let cx = MarshalCx::current().ok_or_else(|| S::Error::custom(NO_NODE))?;
        let taken = std::mem::replace(
            &mut *self.inner.lock().unwrap_or_else(|e| e.into_inner()),
            ReceiverInner::Gone,
        );
        let end = match taken {
            // Never opened: its new holder pulls from the end directly.
            ReceiverInner::Remote(remote) if remote.is_idle() => {
                let wire = remote.wire();
                remote.hand_off();
                wire
            }
            ReceiverInner::Gone => {
                return Err(S::Error::custom("this pipe receiver was sent already"))
            }
            // Local, or a remote half already receiving: this node serves it.
            source => {
                let source = Receiver {
                    inner: std::sync::Mutex::new(source),
                    capacity: self.capacity,
                };
                end::export_outlet(&cx, source)
            }
        };
        WirePipe {
            end,
            capacity: self.capacity,
        }
        .serialize(serializer)
    }
}

impl<'de, T: Item> Deserialize<'de> for Receiver<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let (cx, arrival, capacity) =
            WirePipe::arrive(deserializer, RECEIVER_INTERFACE, "a pipe receiver")?;
        let inner = match arrival {
            Arrival::Home(end) => {
                return end::take_back_receiver(&cx, &end).map_err(D::Error::custom)
            }
            Arrival::Away(route) => ReceiverInner::Remote(RemoteReceiver::new(route, capacity)),
        };
        Ok(Receiver {
            inner: std::sync::Mutex::new(inner),
            capacity,
        })
    }
}

impl<T: Item> Serialize for Sender<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if crate::remote::marshal::probing() {
            return Err(S::Error::custom("holds a pipe"));
        }
        let cx = MarshalCx::current().ok_or_else(|| S::Error::custom(NO_NODE))?;
        let end = match &self.inner {
            SenderInner::Local(tx) => end::export_inlet(&cx, tx.clone(), self.capacity),
            // Its new holder sends to the end directly.
            SenderInner::Remote(remote) => {
                remote.hand_off();
                remote.wire()
            }
        };
        WirePipe {
            end,
            capacity: self.capacity,
        }
        .serialize(serializer)
    }
}

impl<'de, T: Item> Deserialize<'de> for Sender<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let (cx, arrival, capacity) =
            WirePipe::arrive(deserializer, SENDER_INTERFACE, "a pipe sender")?;
        let inner = match arrival {
            Arrival::Home(end) => {
                SenderInner::Local(end::take_back_sender::<T>(&cx, &end).map_err(D::Error::custom)?)
            }
            Arrival::Away(route) => SenderInner::Remote(Arc::new(RemoteSender::new(route))),
        };
        Ok(Sender { inner, capacity })
    }
}
