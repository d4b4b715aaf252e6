//! The pipe streams of one connection: the wire side of [`crate::pipe`].
//!
//! A pipe half that leaves its node is exported there as a *pipe end* (see
//! `crate::pipe::end`); the half that arrives on the other node opens a
//! *stream* to that end over the connection:
//!
//! - a receiving half **pulls**: `PipeOpen { credit, bytes }` grants the end's
//!   node `credit` items and [`PIPE_BYTES`] bytes of them; the end's pump sends
//!   `PipeItem`s while it has both and waits for the `PipeCredit` the receiving
//!   half sends as it consumes them. The byte budget bounds what a receiving
//!   half holds whatever capacity (chosen by the pipe's maker, maybe the peer)
//!   and item sizes the producer picks;
//! - a sending half **pushes**: `PipeOpen { credit: 0 }`; the end grants credit
//!   as room is reserved in its local channel, and every item that arrives has
//!   its place waiting.
//!
//! Items (and the `PipeEnd` after the last one) go on the stream's own lane
//! ([`Lane::Pipe`]): a QUIC stream of their own, so a stalled pipe holds up
//! nothing else. Credit and `PipeClose` (the receiving side is gone, or refuses
//! the stream) go on the
//! control lane. Stream ids are the opener's: even from the node with the
//! smaller id, odd from the other, so both sides number streams without meeting.
//!
//! What a peer can make this table hold is bounded: at most [`MAX_PIPE_STREAMS`]
//! streams it opened, and items only within the credit granted (an item past it
//! fails that stream, and only that stream).

use crate::hash::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::connection::{Connection, Lane, ValueFrame};
use super::marshal::Moved;
use crate::error::CallError;
use crate::wire::{Frame, ObjectId};

/// The most pipe streams a peer may have open to this node on one connection
/// (and QUIC streams for their items).
pub(crate) const MAX_PIPE_STREAMS: usize = 4096;

/// The bytes of items a receiving half lets wait for it (granted, arrived and
/// not yet taken), whatever capacity the pipe's maker chose: at most this plus
/// one item (an item may go while any byte of credit is left).
pub(crate) const PIPE_BYTES: u64 = 4 << 20;

/// What one item costs the byte budget beyond its encoding: what holding it
/// costs the receiver (so that a budget bounds the count of tiny items too).
pub(crate) const ITEM_COST: u64 = 64;

/// What an item of `len` encoded bytes costs the byte budget.
pub(crate) fn cost(len: usize) -> u64 {
    len as u64 + ITEM_COST
}

/// The items (and bytes) one side may still send on a stream, and whether the
/// other side is gone: a sending half and a pipe end's pump wait here.
#[derive(Default)]
pub(crate) struct Credit {
    state: Mutex<CreditState>,
    changed: Notify,
}

#[derive(Default)]
struct CreditState {
    items: u64,
    /// Bytes granted and not yet spent (saturating: `u64::MAX` is no budget).
    bytes: u64,
    /// Set once the receiving side is gone (`None`: it dropped its half) or the
    /// stream failed (`Some`).
    closed: Option<Option<CallError>>,
}

impl Credit {
    /// The receiving side has room for `items` more, and `bytes` more.
    pub(crate) fn grant(&self, items: u32, bytes: u64) {
        let mut state = self.state.lock();
        state.items += u64::from(items);
        state.bytes = state.bytes.saturating_add(bytes);
        drop(state);
        self.changed.notify_waiters();
    }

    /// An item taken went out: its `cost` in bytes is spent.
    pub(crate) fn spend(&self, cost: u64) {
        let mut state = self.state.lock();
        state.bytes = state.bytes.saturating_sub(cost);
    }

    /// The receiving side is gone (`None`) or the stream failed.
    pub(crate) fn close(&self, why: Option<CallError>) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.closed = Some(why);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Gives back one item's credit taken and not used (no one is woken: the
    /// one who took it is the one who waits for it).
    pub(crate) fn untake(&self) {
        self.state.lock().items += 1;
    }

    /// Takes one item's credit if there is any (and a byte of credit is
    /// left); `Err` once closed.
    pub(crate) fn try_take(&self) -> Result<bool, Option<CallError>> {
        let mut state = self.state.lock();
        if let Some(why) = &state.closed {
            return Err(why.clone());
        }
        if state.items == 0 || state.bytes == 0 {
            return Ok(false);
        }
        state.items -= 1;
        Ok(true)
    }

    /// Waits for one item's credit and takes it; `Err` once closed.
    pub(crate) async fn take(&self) -> Result<(), Option<CallError>> {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.try_take()? {
                return Ok(());
            }
            changed.await;
        }
    }

    /// Resolves once closed, with why.
    pub(crate) async fn closed(&self) -> Option<CallError> {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if let Some(why) = &self.state.lock().closed {
                return why.clone();
            }
            changed.await;
        }
    }

    /// Whether the receiving side is gone or the stream failed.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed.is_some()
    }

    /// Items of credit not yet used.
    pub(crate) fn available(&self) -> u64 {
        self.state.lock().items
    }
}

/// Where the items of a stream arrive: the receiving half's queue (a stream we
/// pull), or the room reserved in one of our pipes (a stream the peer fills).
/// Items are decoded as they arrive, by the task that read them (the bytes are
/// still in its cache, and they are not copied out first).
pub(crate) trait Fill: Send {
    /// One item arrived (within the credit granted): decode it and put it in its
    /// place. An error (it does not decode) fails the stream.
    fn item(&mut self, conn: &Arc<Connection>, bytes: &[u8]) -> Result<(), CallError>;
    /// [`Fill::item`] for an item moved as it is (nodes of one process).
    fn value(&mut self, conn: &Arc<Connection>, item: Moved) -> Result<(), CallError>;
    /// The stream ended: cleanly (`None`), or the sender failed or its
    /// connection was lost, which the pipe's receiver is told.
    fn end(self: Box<Self>, error: Option<CallError>);
}

/// What a pipe end exported by this node does when the peer opens a stream to it.
pub(crate) trait Opened: Send + Sync {
    /// The peer pulls this end's items with `credit` granted.
    fn pull(
        &self,
        conn: &Arc<Connection>,
        stream: u64,
        credit: Arc<Credit>,
    ) -> Result<(), Option<CallError>>;
    /// The peer pushes items to this end: where they go. The end grants credit
    /// through `conn` as room comes. `Err(None)`: the pipe's receiver is gone.
    fn push(&self, conn: &Arc<Connection>, stream: u64)
        -> Result<Box<dyn Fill>, Option<CallError>>;
    /// A stream to this end ended (the end may be done).
    fn stream_ended(&self);
    /// The end goes (unreferenced, or stopped): what it holds of the pipe is
    /// dropped.
    fn close(&self);
    /// Whether the end is done (served its stream, or its pipe is gone).
    fn finished(&self) -> bool;
    /// For taking a half back when it returns to this node.
    fn as_any(&self) -> &dyn std::any::Any;
}

enum Stream {
    /// We opened it to take items: they go to the receiving half. `granted`:
    /// items the peer may still send, and `bytes` (see [`PIPE_BYTES`]).
    Pulling {
        to: Box<dyn Fill>,
        granted: u64,
        bytes: u64,
    },
    /// We opened it to give items: the peer's credit.
    Pushing(Arc<Credit>),
    /// The peer opened it to take our pipe end's items: the pump's credit,
    /// at most `cap` outstanding.
    Serving { credit: Arc<Credit>, cap: u64 },
    /// The peer opened it to give our pipe end items. `granted`: items it may
    /// still send.
    Filling {
        fill: Box<dyn Fill>,
        granted: u64,
        end: Arc<dyn Opened>,
    },
}

/// The pipe streams of one connection (see the module doc).
pub(crate) struct Streams {
    table: Mutex<Table>,
}

struct Table {
    next: u64,
    open: HashMap<u64, Stream>,
    /// Streams the peer opened, still open.
    theirs: usize,
    /// Why every stream failed, once the connection is gone.
    lost: Option<CallError>,
}

impl Streams {
    /// The streams of a connection; `even`: this node numbers its streams
    /// with even ids (the peer with odd ones).
    pub(crate) fn new(even: bool) -> Streams {
        Streams {
            table: Mutex::new(Table {
                next: u64::from(!even),
                open: HashMap::default(),
                theirs: 0,
                lost: None,
            }),
        }
    }

    /// Streams open on this connection, both ways.
    pub(crate) fn count(&self) -> usize {
        self.table.lock().open.len()
    }

    fn ours(&self, stream: u64) -> bool {
        // Our ids have the parity of the first one we gave out.
        let table = self.table.lock();
        stream % 2 == table.next % 2
    }

    /// Registers a new stream of ours: its id, or the connection's loss.
    fn open(&self, stream: Stream) -> Result<u64, CallError> {
        let mut table = self.table.lock();
        if let Some(lost) = &table.lost {
            return Err(lost.clone());
        }
        let id = table.next;
        table.next += 2;
        table.open.insert(id, stream);
        Ok(id)
    }

    fn remove(&self, stream: u64) -> Option<Stream> {
        let mut table = self.table.lock();
        let removed = table.open.remove(&stream);
        if removed.is_some() && stream % 2 != table.next % 2 {
            table.theirs -= 1;
        }
        removed
    }

    /// The connection is gone: every stream fails with `error`.
    pub(crate) fn fail_all(&self, error: CallError) {
        let streams: Vec<Stream> = {
            let mut table = self.table.lock();
            table.lost.get_or_insert(error.clone());
            table.theirs = 0;
            table.open.drain().map(|(_, s)| s).collect()
        };
        for stream in streams {
            match stream {
                Stream::Pulling { to, .. } => to.end(Some(error.clone())),
                Stream::Pushing(credit) | Stream::Serving { credit, .. } => {
                    credit.close(Some(error.clone()))
                }
                Stream::Filling { fill, end, .. } => {
                    fill.end(Some(error.clone()));
                    end.stream_ended();
                }
            }
        }
    }
}

impl Connection {
    /// Opens a stream that takes the items of the peer's pipe end `pipe`, with
    /// `credit` granted, its items going `to` the receiving half: its id.
    pub(crate) fn pipe_pull(
        &self,
        pipe: ObjectId,
        credit: u32,
        to: Box<dyn Fill>,
    ) -> Result<u64, CallError> {
        let stream = self.pipes.open(Stream::Pulling {
            to,
            granted: u64::from(credit),
            bytes: PIPE_BYTES,
        })?;
        self.send(
            Lane::Control,
            &Frame::PipeOpen {
                stream,
                pipe,
                credit,
                bytes: PIPE_BYTES,
            },
        )?;
        Ok(stream)
    }

    /// Grants the peer `items` and `bytes` more on a stream we pull (what the
    /// receiving half took since it last did).
    pub(crate) fn pipe_grant(&self, stream: u64, items: u32, bytes: u64) {
        if let Some(Stream::Pulling {
            granted,
            bytes: budget,
            ..
        }) = self.pipes.table.lock().open.get_mut(&stream)
        {
            *granted += u64::from(items);
            *budget = budget.saturating_add(bytes);
        } else {
            return;
        }
        let _ = self.send(
            Lane::Control,
            &Frame::PipeCredit {
                stream,
                items,
                bytes,
            },
        );
    }

    /// We no longer take a stream's items (the receiving half was dropped, or
    /// an item did not decode: `error`).
    pub(crate) fn pipe_close(&self, stream: u64, error: Option<CallError>) {
        if self.pipes.remove(stream).is_some() {
            let _ = self.send(Lane::Control, &Frame::PipeClose { stream, error });
        }
    }

    /// Opens a stream that gives items to the peer's pipe end `pipe`: its id,
    /// and the credit the peer grants.
    pub(crate) fn pipe_push(&self, pipe: ObjectId) -> Result<(u64, Arc<Credit>), CallError> {
        let credit = Arc::new(Credit::default());
        let stream = self.pipes.open(Stream::Pushing(credit.clone()))?;
        self.send(
            Lane::Control,
            &Frame::PipeOpen {
                stream,
                pipe,
                credit: 0,
                bytes: 0,
            },
        )?;
        Ok((stream, credit))
    }

    /// Sends items on a stream we give items on (their credit taken): their
    /// frames, written by `Batch` (see `wire::codec::encode_pipe_item`), in one
    /// write.
    pub(crate) fn pipe_frames(&self, stream: u64, frames: Vec<u8>) -> Result<(), CallError> {
        self.send_encoded(Lane::Pipe(stream), frames)
    }

    /// [`Connection::pipe_frames`] for an item moved as it is, on a link that
    /// carries values (the same channel as the stream's frames: order holds).
    pub(crate) fn pipe_value(&self, stream: u64, item: Moved) -> Result<(), CallError> {
        let frame = ValueFrame::PipeItem { stream, item };
        if self.is_closed() || !self.transport().send_value(Lane::Pipe(stream), frame) {
            return Err(CallError::NodeDown {
                node: self.peer.node,
                label: self.peer.label(),
                may_have_executed: false,
            });
        }
        Ok(())
    }

    /// An item moved from the peer (one process): as [`Connection::on_pipe`]
    /// does with an encoded one.
    pub(crate) fn on_pipe_value(self: &Arc<Self>, stream: u64, item: Moved) {
        let mut table = self.pipes.table.lock();
        match table.open.get_mut(&stream) {
            Some(Stream::Pulling { to, granted, bytes }) if *granted > 0 && *bytes > 0 => {
                *granted -= 1;
                *bytes = bytes.saturating_sub(ITEM_COST);
                let failed = to.value(self, item).err();
                drop(table);
                if let Some(error) = failed {
                    self.fail_incoming(stream, error);
                }
            }
            Some(Stream::Filling { fill, granted, .. }) if *granted > 0 => {
                *granted -= 1;
                let failed = fill.value(self, item).err();
                drop(table);
                if let Some(error) = failed {
                    self.fail_incoming(stream, error);
                }
            }
            _ => {
                drop(table);
                // Items moved within one process come from this runtime's own
                // pumps, which keep to their credit: encoded ones get checked.
                tracing::debug!(peer = %self.peer.node, stream, "a moved item for no open pipe stream (or past its credit) dropped");
            }
        }
    }

    /// Ends a stream we give items on, after its last item: cleanly, or with
    /// the error its source failed with.
    pub(crate) fn pipe_end(&self, stream: u64, error: Option<CallError>) {
        if self.pipes.remove(stream).is_some() {
            let _ = self.send(Lane::Pipe(stream), &Frame::PipeEnd { stream, error });
            self.transport().lane_done(Lane::Pipe(stream));
        }
    }

    /// Handles one pipe frame from the peer.
    pub(crate) fn on_pipe(self: &Arc<Self>, frame: Frame<'_>) {
        match frame {
            Frame::PipeOpen {
                stream,
                pipe,
                credit,
                bytes,
            } => self.on_pipe_open(stream, pipe, credit, bytes),
            Frame::PipeItem { stream, item } => self.on_pipe_item(stream, item),
            Frame::PipeCredit {
                stream,
                items,
                bytes,
            } => {
                let table = self.pipes.table.lock();
                match table.open.get(&stream) {
                    Some(Stream::Pushing(credit)) => credit.grant(items, bytes),
                    Some(Stream::Serving { credit, cap }) => {
                        // A peer cannot make our pump run further ahead of it
                        // than the pipe's capacity.
                        let room = cap.saturating_sub(credit.available());
                        let items = items.min(u32::try_from(room).unwrap_or(u32::MAX));
                        credit.grant(items, bytes);
                    }
                    _ => {
                        tracing::debug!(peer = %self.peer.node, stream, "credit for no stream of ours")
                    }
                }
            }
            Frame::PipeEnd { stream, error } => match self.pipes.remove(stream) {
                Some(Stream::Pulling { to, .. }) => to.end(error),
                Some(Stream::Filling { fill, end, .. }) => {
                    fill.end(error);
                    end.stream_ended();
                }
                Some(other) => {
                    // Not a stream the peer sends items on: put it back, ignore.
                    self.pipes.table.lock().open.insert(stream, other);
                }
                None => {}
            },
            Frame::PipeClose { stream, error } => match self.pipes.remove(stream) {
                Some(Stream::Pushing(credit) | Stream::Serving { credit, .. }) => {
                    credit.close(error)
                }
                Some(Stream::Pulling { to, .. }) => {
                    // The peer refused the stream we opened to pull (too many
                    // open, no such end): the receiving half hears why.
                    let error = error.unwrap_or_else(|| CallError::Unauthorized {
                        reason: format!("the peer closed pipe stream {stream} without ending it"),
                    });
                    to.end(Some(error));
                }
                Some(other) => {
                    self.pipes.table.lock().open.insert(stream, other);
                }
                None => {}
            },
            _ => {}
        }
    }

    fn on_pipe_open(self: &Arc<Self>, stream: u64, pipe: ObjectId, credit: u32, bytes: u64) {
        let refuse = |error: Option<CallError>| {
            tracing::debug!(peer = %self.peer.node, stream, %pipe, ?error, "pipe stream refused");
            let _ = self.send(Lane::Control, &Frame::PipeClose { stream, error });
        };
        if self.pipes.ours(stream) {
            return refuse(Some(CallError::Unauthorized {
                reason: format!("pipe stream {stream} has this node's parity, not the opener's"),
            }));
        }
        {
            let table = self.pipes.table.lock();
            if table.open.contains_key(&stream) {
                drop(table);
                return refuse(Some(CallError::Unauthorized {
                    reason: format!("pipe stream {stream} is open already"),
                }));
            }
            if table.theirs >= MAX_PIPE_STREAMS {
                drop(table);
                return refuse(Some(CallError::Overloaded {
                    cap: MAX_PIPE_STREAMS,
                }));
            }
        }
        let end = self
            .node
            .upgrade()
            .and_then(|host| host.pipe_end(&pipe))
            .ok_or(CallError::NoSuchObject);
        let end = match end {
            Ok(end) => end,
            Err(error) => return refuse(Some(error)),
        };
        if credit > 0 {
            let credit_state = Arc::new(Credit::default());
            credit_state.grant(credit.min(end.capacity()), bytes);
            let cap = u64::from(end.capacity());
            self.pipes.insert_theirs(
                stream,
                Stream::Serving {
                    credit: credit_state.clone(),
                    cap,
                },
            );
            if let Err(error) = end.opened().pull(self, stream, credit_state) {
                self.pipes.remove(stream);
                refuse(error);
            }
        } else {
            let opened = end.opened();
            match opened.push(self, stream) {
                Ok(fill) => self.pipes.insert_theirs(
                    stream,
                    Stream::Filling {
                        fill,
                        granted: 0,
                        end: opened,
                    },
                ),
                Err(error) => refuse(error),
            }
        }
    }

    fn on_pipe_item(self: &Arc<Self>, stream: u64, item: &[u8]) {
        let mut table = self.pipes.table.lock();
        match table.open.get_mut(&stream) {
            Some(Stream::Pulling { to, granted, bytes }) if *granted > 0 && *bytes > 0 => {
                *granted -= 1;
                *bytes = bytes.saturating_sub(cost(item.len()));
                let failed = to.item(self, item).err();
                drop(table);
                if let Some(error) = failed {
                    self.fail_incoming(stream, error);
                }
            }
            Some(Stream::Filling { fill, granted, .. }) if *granted > 0 => {
                *granted -= 1;
                let failed = fill.item(self, item).err();
                drop(table);
                if let Some(error) = failed {
                    self.fail_incoming(stream, error);
                }
            }
            Some(Stream::Pulling { .. }) => {
                drop(table);
                let error = self.past_credit(stream);
                self.fail_incoming(stream, error);
            }
            Some(Stream::Filling { .. }) => {
                drop(table);
                let error = self.past_credit(stream);
                self.fail_incoming(stream, error);
            }
            _ => {
                drop(table);
                // A stream we closed may still have items in flight; anything
                // else is the peer's mistake, and costs it nothing but this.
                tracing::debug!(peer = %self.peer.node, stream, "an item for no open pipe stream dropped");
            }
        }
    }

    fn past_credit(&self, stream: u64) -> CallError {
        tracing::warn!(peer = %self.peer.node, stream, "a pipe item past the credit granted: the stream fails");
        CallError::Unauthorized {
            reason: format!("pipe stream {stream}: an item past the credit granted"),
        }
    }

    /// A stream the peer gives us items on broke the rules (an item past the
    /// credit), or an item did not decode: whoever takes its items is told
    /// (our receiving half, or the pipe an inlet fills), and the peer's pump or
    /// sending half is closed.
    fn fail_incoming(&self, stream: u64, error: CallError) {
        match self.pipes.remove(stream) {
            Some(Stream::Pulling { to, .. }) => to.end(Some(error.clone())),
            Some(Stream::Filling { fill, end, .. }) => {
                fill.end(Some(error.clone()));
                end.stream_ended();
            }
            _ => {}
        }
        let _ = self.send(
            Lane::Control,
            &Frame::PipeClose {
                stream,
                error: Some(error),
            },
        );
    }

    /// Grants the peer `items` more on a stream it fills (room was reserved).
    /// No byte budget: the room is in a pipe this node made, its capacity this
    /// node's choice, each item bounded by the frame limit.
    pub(crate) fn pipe_grant_fill(&self, stream: u64, items: u32) -> bool {
        match self.pipes.table.lock().open.get_mut(&stream) {
            Some(Stream::Filling { granted, .. }) => *granted += u64::from(items),
            _ => return false,
        }
        let frame = Frame::PipeCredit {
            stream,
            items,
            bytes: u64::MAX,
        };
        self.send(Lane::Control, &frame).is_ok()
    }

    /// A stream the peer pulls from has ended (the pump is done): its lane goes.
    pub(crate) fn pipe_served(&self, stream: u64, error: Option<CallError>) {
        if self.pipes.remove(stream).is_some() {
            let _ = self.send(Lane::Pipe(stream), &Frame::PipeEnd { stream, error });
        }
        self.transport().lane_done(Lane::Pipe(stream));
    }
}

impl Streams {
    fn insert_theirs(&self, stream: u64, entry: Stream) {
        let mut table = self.table.lock();
        if table.lost.is_some() {
            return;
        }
        if table.open.insert(stream, entry).is_none() {
            table.theirs += 1;
        }
    }
}
