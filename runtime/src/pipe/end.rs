//! Pipe ends: what a node exports when a half of one of its pipes leaves it.
//!
//! - A receiving half that leaves becomes an **outlet**: the items stay here
//!   (where their producers feel the backpressure) and one remote receiving half
//!   pulls them, a pump task sending each within the credit it grants.
//! - A sending half that leaves becomes an **inlet**: remote sending halves push
//!   items to it, each granted credit only for room reserved in the local
//!   channel, so every item that arrives has its place.
//!
//! An end is exported like an actor ([`Exported`]), so the reference-lease
//! machinery keeps it while a remote half holds it, and withdraws it when none
//! does (an inlet then drops its hold on the pipe: once every sender is gone,
//! the receiver sees the end).

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use super::remote::{decode_item, take_item, Batch};
use super::{Item, Local, Receiver, RECEIVER_INTERFACE, SENDER_INTERFACE};
use crate::error::CallError;
use crate::local::cell::Withdraw;
use crate::local::stop::StopReason;
use crate::remote::connection::Connection;
use crate::remote::exports::Delivery;
use crate::remote::marshal::{Args, Moved, Replier};
use crate::remote::pipes::{Credit, Fill, Opened};
use crate::remote::{Exported, Host, MarshalCx, WireRef};
use crate::wire::codec::Limits;
use crate::wire::ObjectId;

/// A pipe end as the export table holds it (any item type).
pub(crate) struct PipeEnd {
    kind: Arc<dyn Opened>,
    capacity: u32,
    interface: u64,
    life: Arc<Life>,
}

/// When an end is done, for whoever waits on it.
#[derive(Default)]
struct Life {
    done: AtomicBool,
    notify: Notify,
}

impl Life {
    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

impl PipeEnd {
    /// The pipe's capacity: the most items a stream may have in flight.
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// What the end does when a stream is opened to it.
    pub(crate) fn opened(&self) -> Arc<dyn Opened> {
        self.kind.clone()
    }

    /// Whether this end belongs to a receiving half.
    pub(crate) fn is_outlet(&self) -> bool {
        self.interface == RECEIVER_INTERFACE
    }
}

impl Exported for PipeEnd {
    fn interface_id(&self) -> u64 {
        self.interface
    }

    fn interface_name(&self) -> &'static str {
        if self.is_outlet() {
            "remora.pipe.Receiver"
        } else {
            "remora.pipe.Sender"
        }
    }

    fn deliver(
        self: Arc<Self>,
        method: u64,
        _args: Args<'_>,
        _limits: &Limits,
        _replier: Replier,
        _one_way: bool,
    ) -> Result<Option<Delivery>, CallError> {
        Err(CallError::UnknownMethod {
            interface: self.interface_name().into(),
            method,
        })
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn stopped(&self) -> Pin<Box<dyn Future<Output = StopReason> + Send>> {
        let life = self.life.clone();
        Box::pin(async move {
            loop {
                let notified = life.notify.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if life.is_done() {
                    return StopReason::Normal;
                }
                notified.await;
            }
        })
    }

    fn stop(&self, _reason: StopReason) {
        self.kind.close();
    }

    fn is_finished(&self) -> bool {
        self.kind.finished()
    }

    fn unreferenced(&self, withdraw: Withdraw) {
        // Withdrawn once whoever told us lets go of the end (the export table's
        // must be its only hold then), as an actor's own task would.
        let kind = self.kind.clone();
        let withdrawn = async move {
            if let Some(end) = withdraw() {
                kind.close();
                drop(end);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(withdrawn)),
            Err(_) => self.kind.close(),
        }
    }

    fn refuses_cycle(&self, _chain: u64, _method: u64) -> bool {
        false
    }
}

/// The wire form of a new end exported by `cx`'s node for a half sent to
/// `cx`'s peer (which gets a lease on it at once).
fn export(
    cx: &MarshalCx,
    kind: Arc<dyn Opened>,
    life: Arc<Life>,
    capacity: u32,
    interface: u64,
) -> (ObjectId, WireRef) {
    let end = Arc::new(PipeEnd {
        kind,
        capacity,
        interface,
        life,
    });
    let holder = cx.conn.as_ref().map(|c| c.peer.node);
    let object = cx.host.export_pipe_end(end, holder);
    let wire = WireRef {
        node: cx.host.id(),
        incarnation: cx.host.incarnation(),
        object,
        interface,
        addr: cx.host.public_addr(),
    };
    (object, wire)
}

/// Exports a receiving half leaving this node as an outlet.
pub(super) fn export_outlet<T: Item>(cx: &MarshalCx, source: Receiver<T>) -> WireRef {
    let life = Arc::new(Life::default());
    let capacity = source.capacity;
    let outlet = Arc::new(Outlet {
        source: Mutex::new(Some(source)),
        life: life.clone(),
    });
    export(cx, outlet, life, capacity, RECEIVER_INTERFACE).1
}

/// Exports a sending half leaving this node as an inlet.
pub(super) fn export_inlet<T: Item>(cx: &MarshalCx, tx: Local<T>, capacity: u32) -> WireRef {
    let life = Arc::new(Life::default());
    let inlet = Arc::new(Inlet {
        sender: Mutex::new(Some(tx)),
        streams: AtomicUsize::new(0),
        life: life.clone(),
        host: Arc::downgrade(&cx.host),
        id: std::sync::OnceLock::new(),
        capacity,
    });
    let (object, wire) = export(cx, inlet.clone(), life, capacity, SENDER_INTERFACE);
    let _ = inlet.id.set(object);
    wire
}

/// The end `wire` names on this node, as its typed kind `K`, handed to `take`.
fn with_end<K: Any, R>(
    cx: &MarshalCx,
    wire: &WireRef,
    take: impl FnOnce(&K) -> Result<R, CallError>,
) -> Result<R, CallError> {
    let end = cx
        .host
        .pipe_end(&wire.object)
        .ok_or(CallError::NoSuchObject)?;
    let kind = end.opened();
    let typed = kind
        .as_any()
        .downcast_ref::<K>()
        .ok_or_else(|| CallError::InterfaceMismatch {
            expected: wire.interface,
            found: "a pipe of another item type".into(),
        })?;
    take(typed)
}

/// A receiving half that came back to the node its items are at.
pub(super) fn take_back_receiver<T: Item>(
    cx: &MarshalCx,
    wire: &WireRef,
) -> Result<Receiver<T>, CallError> {
    with_end(cx, wire, |outlet: &Outlet<T>| {
        let source = outlet.source.lock().take().ok_or(CallError::Unauthorized {
            reason: "this pipe's items are being received elsewhere already".into(),
        })?;
        outlet.life.finish();
        Ok(source)
    })
}

/// A sending half that came back to the node its pipe's receiver is on.
pub(super) fn take_back_sender<T: Item>(
    cx: &MarshalCx,
    wire: &WireRef,
) -> Result<Local<T>, CallError> {
    with_end(cx, wire, |inlet: &Inlet<T>| {
        let tx = inlet.sender.lock().clone();
        // None: the pipe's receiver is gone; a sender whose sends say so.
        Ok(tx.unwrap_or_else(|| mpsc::channel(1).0))
    })
}

/// The end of a receiving half that left: its items, for one remote half to pull.
struct Outlet<T> {
    source: Mutex<Option<Receiver<T>>>,
    life: Arc<Life>,
}

impl<T: Item> Opened for Outlet<T> {
    fn pull(
        &self,
        conn: &Arc<Connection>,
        stream: u64,
        credit: Arc<Credit>,
    ) -> Result<(), Option<CallError>> {
        let source = self.source.lock().take().ok_or_else(|| {
            Some(CallError::Unauthorized {
                reason: "this pipe's items are being received elsewhere already".into(),
            })
        })?;
        tokio::spawn(pump(
            source,
            conn.clone(),
            stream,
            credit,
            self.life.clone(),
        ));
        Ok(())
    }

    fn push(
        &self,
        _conn: &Arc<Connection>,
        _stream: u64,
    ) -> Result<Box<dyn Fill>, Option<CallError>> {
        Err(Some(CallError::Unauthorized {
            reason: "the end of a pipe's receiving half gives items, it takes none".into(),
        }))
    }

    fn stream_ended(&self) {}

    fn close(&self) {
        // Dropping the items' receiver tells the producers.
        drop(self.source.lock().take());
        self.life.finish();
    }

    fn finished(&self) -> bool {
        self.life.is_done()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Sends an outlet's items on `stream`, each once the receiver has granted room
/// for it, until the pipe ends (every sender gone: a clean `PipeEnd`), fails
/// (`PipeEnd` with the error), or the receiver is gone.
async fn pump<T: Item>(
    mut source: Receiver<T>,
    conn: Arc<Connection>,
    stream: u64,
    credit: Arc<Credit>,
    life: Arc<Life>,
) {
    // The largest item frame so far: what a batch reserves room for, per item.
    let mut typical: usize = 0;
    let end = loop {
        // Credit first: an item stays in the pipe, where its producer waits,
        // until the receiver has room for it.
        if credit.take().await.is_err() {
            break None;
        }
        let next = tokio::select! {
            next = source.next() => next,
            _ = credit.closed() => break None,
        };
        let first = match next {
            Some(Ok(item)) => item,
            Some(Err(error)) => break Some(Some(error)),
            None => break Some(None),
        };
        // Whatever more is ready and has credit goes in the same write.
        let expected = usize::try_from(credit.available()).map_or(BATCH, |n| n.min(BATCH - 1) + 1);
        let room = typical.saturating_mul(expected).min(RESERVE);
        let mut batch = Batch::new(&conn, stream, room);
        let ended = gather(first, &mut batch, &mut source, &credit);
        typical = typical.max(batch.largest());
        if let Err(error) = batch.flush() {
            break Some(Some(error));
        }
        if let Some(end) = ended {
            break Some(end);
        }
    };
    match end {
        Some(error) => conn.pipe_served(stream, error),
        // The receiver is gone (or the connection): nothing more to say.
        None => conn.pipe_served(stream, None),
    }
    drop(source);
    life.finish();
}

/// The most items a pump writes at once. A batch holds items the pipe held
/// already (within the credit, so within its capacity): it bounds no memory of
/// its own, only how long one write takes.
const BATCH: usize = 128;

/// The most a batch reserves before it knows what it holds: a receiving half's
/// whole byte budget.
const RESERVE: usize = crate::remote::pipes::PIPE_BYTES as usize;

/// Adds `first` to `batch`, and after it the items that are ready now and have
/// credit (taken, their bytes spent), up to [`BATCH`]. Returns how the pipe
/// ended if it did meanwhile (`Some(None)`: cleanly; `Some(Some(error))`: it
/// failed, or an item did not encode).
fn gather<T: Item>(
    first: T,
    batch: &mut Batch<'_>,
    source: &mut Receiver<T>,
    credit: &Credit,
) -> Option<Option<CallError>> {
    let mut item = first;
    loop {
        match batch.add(item) {
            Ok(spent) => credit.spend(spent),
            Err(error) => return Some(Some(error)),
        }
        if batch.len() >= BATCH || !matches!(credit.try_take(), Ok(true)) {
            return None;
        }
        item = match source.next().now_or_never() {
            Some(Some(Ok(item))) => item,
            Some(Some(Err(error))) => return Some(Some(error)),
            Some(None) => return Some(None),
            None => {
                credit.untake();
                return None;
            }
        };
    }
}

/// The end of a sending half that left: remote halves push items into the pipe.
struct Inlet<T> {
    /// The pipe, held while remote halves may send (dropped when unreferenced).
    sender: Mutex<Option<Local<T>>>,
    /// Streams open to this end.
    streams: AtomicUsize,
    life: Arc<Life>,
    host: Weak<Host>,
    id: std::sync::OnceLock<ObjectId>,
    capacity: u32,
}

impl<T: Item> Opened for Inlet<T> {
    fn pull(
        &self,
        _conn: &Arc<Connection>,
        _stream: u64,
        _credit: Arc<Credit>,
    ) -> Result<(), Option<CallError>> {
        Err(Some(CallError::Unauthorized {
            reason: "the end of a pipe's sending half takes items, it gives none".into(),
        }))
    }

    fn push(
        &self,
        conn: &Arc<Connection>,
        stream: u64,
    ) -> Result<Box<dyn Fill>, Option<CallError>> {
        let tx = self.sender.lock().clone().ok_or(None)?;
        if tx.is_closed() {
            return Err(None);
        }
        self.streams.fetch_add(1, Ordering::AcqRel);
        let permits = Arc::new(Mutex::new(VecDeque::new()));
        let granting = tokio::spawn(grant(
            tx.clone(),
            permits.clone(),
            Arc::downgrade(conn),
            stream,
            self.capacity,
        ));
        Ok(Box::new(InletFill {
            tx,
            permits,
            granting,
        }))
    }

    fn stream_ended(&self) {
        if self.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let (Some(host), Some(id)) = (self.host.upgrade(), self.id.get()) {
                host.check_pipe_end(*id);
            }
        }
    }

    fn close(&self) {
        drop(self.sender.lock().take());
        self.life.finish();
    }

    fn finished(&self) -> bool {
        self.life.is_done() || self.sender.lock().as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

type Permits<T> = Arc<Mutex<VecDeque<mpsc::OwnedPermit<Result<T, CallError>>>>>;

/// Reserves room in the pipe and grants it to the stream's sender, a batch at
/// a time, until the stream or the pipe ends.
async fn grant<T: Item>(
    tx: Local<T>,
    permits: Permits<T>,
    conn: Weak<Connection>,
    stream: u64,
    cap: u32,
) {
    loop {
        let Ok(first) = tx.clone().reserve_owned().await else {
            // The pipe's receiver is gone: the sender is told.
            if let Some(conn) = conn.upgrade() {
                conn.pipe_close(stream, None);
            }
            return;
        };
        let mut batch = vec![first];
        while batch.len() < cap as usize {
            match tx.clone().try_reserve_owned() {
                Ok(permit) => batch.push(permit),
                Err(_) => break,
            }
        }
        let n = batch.len() as u32;
        permits.lock().extend(batch);
        let Some(conn) = conn.upgrade() else { return };
        if !conn.pipe_grant_fill(stream, n) {
            return;
        }
    }
}

/// A stream pushing into an inlet: items go into the room reserved for them.
struct InletFill<T> {
    tx: Local<T>,
    permits: Permits<T>,
    granting: tokio::task::JoinHandle<()>,
}

impl<T: Item> Fill for InletFill<T> {
    fn item(&mut self, conn: &Arc<Connection>, bytes: &[u8]) -> Result<(), CallError> {
        self.put(decode_item::<T>(conn, bytes)?)
    }

    fn value(&mut self, conn: &Arc<Connection>, item: Moved) -> Result<(), CallError> {
        self.put(take_item::<T>(conn, item)?)
    }

    fn end(self: Box<Self>, error: Option<CallError>) {
        self.granting.abort();
        let Some(error) = error else { return };
        // The pipe's receiver hears of the failure, after the items before it.
        let permit = self.permits.lock().pop_front();
        match permit {
            Some(permit) => {
                permit.send(Err(error));
            }
            None => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Err(error)).await;
                });
            }
        }
    }
}

impl<T> InletFill<T> {
    /// Puts an arrived item in the room reserved for it.
    fn put(&mut self, item: T) -> Result<(), CallError> {
        let permit = self
            .permits
            .lock()
            .pop_front()
            .ok_or_else(|| CallError::Unauthorized {
                reason: "a pipe item past the room granted".into(),
            })?;
        permit.send(Ok(item));
        Ok(())
    }
}

impl<T> Drop for InletFill<T> {
    fn drop(&mut self) {
        self.granting.abort();
    }
}
