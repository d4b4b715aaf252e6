//! The halves of a pipe whose end is on another node: a receiving half pulls
//! the end's items over a stream of its own, a sending half pushes to it within
//! the credit the end grants (see `remote::pipes`).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio::sync::SetError;

use super::{Item, SendError, TrySendError, HANDOFF};
use crate::error::CallError;
use crate::remote::connection::Connection;
use crate::remote::marshal::{is_plain, Moved};
use crate::remote::pipes::{cost, Credit, Fill, ITEM_COST, PIPE_BYTES};
use crate::remote::{MarshalCx, RemoteRoute, WireRef};
use crate::wire::codec::encode_pipe_item;

/// Writes `item`'s frame for `stream` at the end of `out`, the item encoded
/// straight into it (a `Vec<u8>` as binary), its references exported for
/// `conn`'s peer through `cx`: the item's encoded length.
fn write_item<T: Item>(
    cx: &MarshalCx,
    conn: &Connection,
    stream: u64,
    item: &T,
    out: &mut Vec<u8>,
) -> Result<usize, CallError> {
    cx.enter(|| {
        encode_pipe_item(stream, out, conn.send_limits(), |out| {
            crate::remote::marshal::write_reply(item, out)
        })
    })
    .map_err(|err| CallError::Marshalling {
        what: "a pipe item".into(),
        type_name: std::any::type_name::<T>().into(),
        reason: err.to_string(),
    })
}

/// The marshalling context of items sent to `conn`'s peer.
fn marshal_cx(conn: &Arc<Connection>) -> Result<MarshalCx, CallError> {
    let host = conn.node.upgrade().ok_or(CallError::ActorStopped)?;
    Ok(MarshalCx {
        host,
        conn: Some(conn.clone()),
    })
}

/// Decodes one item from the wire, its references imported from `conn`'s peer.
pub(super) fn decode_item<T: Item>(conn: &Arc<Connection>, bytes: &[u8]) -> Result<T, CallError> {
    let host = conn.node.upgrade().ok_or(CallError::ActorStopped)?;
    let cx = MarshalCx {
        host,
        conn: Some(conn.clone()),
    };
    cx.enter(|| crate::remote::marshal::decode_reply::<T>(bytes, &conn.limits))
        .map_err(item_error)
}

/// An item moved from another node of this process: as it is, or (a type of
/// another build) through its encoding.
pub(super) fn take_item<T: Item>(conn: &Arc<Connection>, item: Moved) -> Result<T, CallError> {
    match item.take::<T>() {
        Ok(item) => Ok(item),
        Err(bytes) => decode_item(conn, &bytes?),
    }
}

/// Sends one item on `stream`: moved as it is between nodes of one process when
/// it holds no references, encoded otherwise. Returns what it cost the
/// stream's byte budget.
pub(super) fn send_item<T: Item>(
    conn: &Arc<Connection>,
    stream: u64,
    item: T,
) -> Result<u64, (Option<T>, CallError)> {
    if conn.carries_values() && !conn.is_closed() && is_plain(&item) {
        return conn
            .pipe_value(stream, Moved::new(item))
            .map(|()| ITEM_COST)
            .map_err(|error| (None, error));
    }
    let mut frame = Vec::with_capacity(64);
    let written = marshal_cx(conn).and_then(|cx| write_item(&cx, conn, stream, &item, &mut frame));
    match written {
        Ok(len) => conn
            .pipe_frames(stream, frame)
            .map(|()| cost(len))
            .map_err(|error| (Some(item), error)),
        Err(error) => Err((Some(item), error)),
    }
}

/// A pump's batch of items for one write: their frames written as they come
/// (each item encoded straight into its frame) and sent together by
/// [`Batch::flush`], or, between nodes of one process, each item sent at once
/// as [`send_item`] does. An error loses the item (a pump's are).
pub(super) struct Batch<'c> {
    conn: &'c Arc<Connection>,
    stream: u64,
    cx: Option<MarshalCx>,
    frames: Vec<u8>,
    len: usize,
    /// The largest item frame written.
    largest: usize,
}

impl<'c> Batch<'c> {
    /// A batch whose frames are expected to take about `room` bytes (reserved
    /// at once, so that large items are not copied again as the buffer grows).
    pub(super) fn new(conn: &'c Arc<Connection>, stream: u64, room: usize) -> Batch<'c> {
        let room = if conn.carries_values() { 0 } else { room };
        Batch {
            conn,
            stream,
            cx: None,
            frames: Vec::with_capacity(room),
            len: 0,
            largest: 0,
        }
    }

    /// Adds `item`; returns what it costs the stream's byte budget.
    pub(super) fn add<T: Item>(&mut self, item: T) -> Result<u64, CallError> {
        self.len += 1;
        if self.conn.carries_values() {
            return send_item(self.conn, self.stream, item).map_err(|(_, error)| error);
        }
        if self.cx.is_none() {
            self.cx = Some(marshal_cx(self.conn)?);
        }
        let cx = self.cx.as_ref().expect("set above");
        let before = self.frames.len();
        let len = write_item(cx, self.conn, self.stream, &item, &mut self.frames)?;
        self.largest = self.largest.max(self.frames.len() - before);
        Ok(cost(len))
    }

    /// Items added so far.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The largest item frame written so far, in bytes.
    pub(super) fn largest(&self) -> usize {
        self.largest
    }

    /// Writes the items' frames, in one write.
    pub(super) fn flush(mut self) -> Result<(), CallError> {
        if self.frames.is_empty() {
            return Ok(());
        }
        // Room reserved for items that were not ready is not kept while the
        // frames wait to be sent and acknowledged.
        if self.frames.capacity() > 2 * self.frames.len() {
            self.frames.shrink_to_fit();
        }
        self.conn.pipe_frames(self.stream, self.frames)
    }
}

/// An item that did not encode or decode, as its receiver or sender hears it.
fn item_error(err: CallError) -> CallError {
    match err {
        CallError::ReplyFailed { type_name, reason } => CallError::Marshalling {
            what: "a pipe item".into(),
            type_name,
            reason,
        },
        other => other,
    }
}

/// Keeps `what` (a half sent on) alive for [`HANDOFF`], holding its lease
/// while its new holder takes over.
fn hold_for_handoff<H: Send + 'static>(what: H) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            tokio::time::sleep(HANDOFF).await;
            drop(what);
        });
    }
}

/// What reaches a receiving half from its stream: an item decoded on arrival,
/// with what it cost the byte budget, or the stream's end (clean, or why not).
enum Arrived<T> {
    Item(T, u64),
    End(Option<CallError>),
}

/// Where a pulled stream's items go: the receiving half's queue, bounded by the
/// credit it grants (the connection drops nothing it was granted).
struct PullTo<T>(mpsc::UnboundedSender<Arrived<T>>);

impl<T: Item> Fill for PullTo<T> {
    fn item(&mut self, conn: &Arc<Connection>, bytes: &[u8]) -> Result<(), CallError> {
        let item = decode_item::<T>(conn, bytes)?;
        let _ = self.0.send(Arrived::Item(item, cost(bytes.len())));
        Ok(())
    }

    fn value(&mut self, conn: &Arc<Connection>, item: Moved) -> Result<(), CallError> {
        let item = take_item::<T>(conn, item)?;
        let _ = self.0.send(Arrived::Item(item, ITEM_COST));
        Ok(())
    }

    fn end(self: Box<Self>, error: Option<CallError>) {
        let _ = self.0.send(Arrived::End(error));
    }
}

type Opening<T> = Pin<
    Box<
        dyn Future<
                Output = Result<
                    (Arc<Connection>, u64, mpsc::UnboundedReceiver<Arrived<T>>),
                    CallError,
                >,
            > + Send,
    >,
>;

/// A receiving half whose items wait on another node.
pub(crate) struct RemoteReceiver<T> {
    route: Option<Arc<RemoteRoute>>,
    capacity: u32,
    state: RxState<T>,
}

enum RxState<T> {
    /// Not polled yet: no stream.
    Idle,
    Opening(Opening<T>),
    Open {
        conn: Arc<Connection>,
        stream: u64,
        rx: mpsc::UnboundedReceiver<Arrived<T>>,
        /// Items taken since credit was last given back, and their cost in
        /// bytes.
        consumed: u32,
        spent: u64,
    },
    Done,
}

impl<T: Item> RemoteReceiver<T> {
    pub(crate) fn new(route: Arc<RemoteRoute>, capacity: u32) -> Self {
        RemoteReceiver {
            route: Some(route),
            capacity,
            state: RxState::Idle,
        }
    }

    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, CallError>>> {
        loop {
            match &mut self.state {
                RxState::Idle => {
                    let Some(route) = self.route.clone() else {
                        self.state = RxState::Done;
                        continue;
                    };
                    let credit = self.capacity;
                    self.state = RxState::Opening(Box::pin(async move {
                        let conn = route.conn().await?;
                        let (to, rx) = mpsc::unbounded_channel();
                        let stream =
                            conn.pipe_pull(route.target, credit, Box::new(PullTo::<T>(to)))?;
                        Ok((conn, stream, rx))
                    }));
                }
                RxState::Opening(opening) => match opening.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok((conn, stream, rx))) => {
                        self.state = RxState::Open {
                            conn,
                            stream,
                            rx,
                            consumed: 0,
                            spent: 0,
                        }
                    }
                    Poll::Ready(Err(err)) => {
                        self.state = RxState::Done;
                        return Poll::Ready(Some(Err(err)));
                    }
                },
                RxState::Open {
                    conn,
                    stream,
                    rx,
                    consumed,
                    spent,
                } => {
                    let (item, spent_now) = match rx.poll_recv(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Arrived::Item(item, cost))) => (item, cost),
                        Poll::Ready(Some(Arrived::End(end))) => {
                            self.state = RxState::Done;
                            return Poll::Ready(end.map(Err));
                        }
                        // The connection dropped the stream without a word: it closed.
                        Poll::Ready(None) => {
                            let err = CallError::NodeDown {
                                node: conn.peer.node,
                                label: conn.peer.label(),
                                may_have_executed: true,
                            };
                            self.state = RxState::Done;
                            return Poll::Ready(Some(Err(err)));
                        }
                    };
                    *consumed += 1;
                    *spent += spent_now;
                    // Credit goes back in batches of half the capacity, or of
                    // half the byte budget.
                    if *consumed >= self.capacity.div_ceil(2) || *spent >= PIPE_BYTES / 2 {
                        conn.pipe_grant(*stream, *consumed, *spent);
                        *consumed = 0;
                        *spent = 0;
                    }
                    return Poll::Ready(Some(Ok(item)));
                }
                RxState::Done => return Poll::Ready(None),
            }
        }
    }

    /// Whether it never started receiving (it can be sent on as it is).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, RxState::Idle)
    }

    pub(crate) fn wire(&self) -> WireRef {
        self.route.as_ref().expect("a route until dropped").wire()
    }

    /// Sent on unopened: its lease is held a while for the new holder.
    pub(crate) fn hand_off(mut self) {
        if let Some(route) = self.route.take() {
            hold_for_handoff(route);
        }
    }
}

impl<T> Drop for RemoteReceiver<T> {
    fn drop(&mut self) {
        if let RxState::Open { conn, stream, .. } = &self.state {
            conn.pipe_close(*stream, None);
        }
    }
}

/// A sending half whose pipe's receiver is on another node.
pub(crate) struct RemoteSender<T> {
    route: Arc<RemoteRoute>,
    open: tokio::sync::OnceCell<Result<Open, CallError>>,
    _items: PhantomData<fn(T)>,
}

struct Open {
    conn: Arc<Connection>,
    stream: u64,
    credit: Arc<Credit>,
}

impl<T: Item> RemoteSender<T> {
    pub(crate) fn new(route: Arc<RemoteRoute>) -> Self {
        RemoteSender {
            route,
            open: tokio::sync::OnceCell::new(),
            _items: PhantomData,
        }
    }

    async fn opened(&self) -> Result<&Open, CallError> {
        let open = self
            .open
            .get_or_init(|| async {
                let conn = self.route.conn().await?;
                let (stream, credit) = conn.pipe_push(self.route.target)?;
                Ok(Open {
                    conn,
                    stream,
                    credit,
                })
            })
            .await;
        open.as_ref().map_err(Clone::clone)
    }

    pub(crate) async fn send(&self, item: T) -> Result<(), SendError<T>> {
        let open = match self.opened().await {
            Ok(open) => open,
            Err(error) => return Err(SendError::Failed { item, error }),
        };
        match open.credit.take().await {
            Ok(()) => {}
            Err(None) => return Err(SendError::Closed(item)),
            Err(Some(error)) => return Err(SendError::Failed { item, error }),
        }
        Self::put(open, item).map_err(|(item, error)| SendError::Failed { item, error })
    }

    pub(crate) async fn closed(&self) {
        if let Ok(open) = self.opened().await {
            open.credit.closed().await;
        }
    }

    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let open = match self.open.get() {
            Some(Ok(open)) => open,
            Some(Err(error)) => {
                return Err(TrySendError::Failed {
                    item,
                    error: error.clone(),
                })
            }
            None => match self.route.conn_now() {
                // Connected: open the stream now (its credit comes later).
                Some(conn) => {
                    let opened = conn
                        .pipe_push(self.route.target)
                        .map(|(stream, credit)| Open {
                            conn,
                            stream,
                            credit,
                        });
                    if let Err(
                        SetError::AlreadyInitializedError(Ok(unused))
                        | SetError::InitializingError(Ok(unused)),
                    ) = self.open.set(opened)
                    {
                        // Opened meanwhile by a `send`: this stream goes unused.
                        unused.conn.pipe_end(unused.stream, None);
                    }
                    return Err(TrySendError::Full(item));
                }
                None => return Err(TrySendError::Full(item)),
            },
        };
        match open.credit.try_take() {
            Ok(true) => {}
            Ok(false) => return Err(TrySendError::Full(item)),
            Err(None) => return Err(TrySendError::Closed(item)),
            Err(Some(error)) => return Err(TrySendError::Failed { item, error }),
        }
        Self::put(open, item).map_err(|(item, error)| TrySendError::Failed { item, error })
    }

    /// Sends `item` (its credit taken). A moved item lost with its connection
    /// cannot be given back: that error is `Failed` with nothing to return, so
    /// moving is tried only where the item can be kept (see `send_item`).
    fn put(open: &Open, item: T) -> Result<(), (T, CallError)> {
        match send_item(&open.conn, open.stream, item) {
            Ok(spent) => {
                open.credit.spend(spent);
                Ok(())
            }
            Err((Some(item), error)) => Err((item, error)),
            Err((None, error)) => {
                tracing::debug!(%error, "a pipe item moved to a node gone meanwhile is lost");
                Ok(())
            }
        }
    }
}

impl<T> RemoteSender<T> {
    pub(crate) fn is_closed(&self) -> bool {
        match self.open.get() {
            Some(Ok(open)) => open.credit.is_closed(),
            Some(Err(_)) => true,
            None => self.route.is_down(),
        }
    }

    pub(crate) fn wire(&self) -> WireRef {
        self.route.wire()
    }

    /// Sent on: its lease is held a while for the new holder.
    pub(crate) fn hand_off(&self) {
        hold_for_handoff(self.route.clone());
    }
}

impl<T> Drop for RemoteSender<T> {
    fn drop(&mut self) {
        if let Some(Ok(open)) = self.open.get() {
            open.conn.pipe_end(open.stream, None);
        }
    }
}
