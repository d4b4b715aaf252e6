//! A QUIC stream's send half, and the bursts that gather what is sent into one
//! write.
//!
//! A frame is written right away, from the sender's task, when nothing is queued
//! before it and the stream has room: no task hop on the hot path. Otherwise it
//! queues for a writer task that writes everything queued in one go.
//!
//! Inside a [`burst`] (a reader handling every frame that arrived in one read),
//! frames are held instead and written together when the burst ends: the
//! replies to sixty-four calls that came in one packet leave in one write, and
//! quinn's connection task is woken once. A call sent while others are in
//! flight is *corked* ([`Outbox::send_corked`]): it waits for a writer task
//! that first goes to the back of the run queue, so the calls of the callers one
//! packet of replies woke leave together too. Frames lent to a burst
//! ([`Outbox::send_lent`]) are copied into one shared buffer, so that a reply
//! costs no allocation of its own.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::runtime::Handle;

use super::backlog::Backlog;

thread_local! {
    /// Whether this thread is in a burst.
    static IN_BURST: Cell<bool> = const { Cell::new(false) };
    /// The outboxes holding frames until this thread's burst ends.
    static HOLDING: RefCell<Vec<Arc<Outbox>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `handle` as a burst: what it sends on any outbox is held and written
/// when it returns (or unwinds), one write per outbox. A burst inside a burst
/// is part of the outer one. `handle` must not wait (it is synchronous): the
/// frames it holds are written only at its end.
pub(crate) fn burst(handle: &mut dyn FnMut()) {
    if IN_BURST.replace(true) {
        return handle();
    }
    /// Ends the burst, whether `handle` returned or panicked.
    struct End;
    impl Drop for End {
        fn drop(&mut self) {
            IN_BURST.set(false);
            let mut holding = HOLDING.take();
            for outbox in holding.drain(..) {
                outbox.flush();
            }
            // Keep the allocation for the next burst.
            HOLDING.with_borrow_mut(|empty| {
                if empty.capacity() == 0 {
                    *empty = holding;
                }
            });
        }
    }
    let _end = End;
    handle();
}

/// A stream's send half (see the module's documentation). Order holds: a frame
/// is written directly only with an empty queue and no writer task holding the
/// stream, and a held frame queues behind what is queued.
pub(crate) struct Outbox {
    state: parking_lot::Mutex<OutboxState>,
    /// Where the bytes it queues are counted, for an outbox of replies.
    backlog: Option<Arc<Backlog>>,
}

struct OutboxState {
    /// `None` while the writer task holds it (or while the stream is being opened).
    stream: Option<quinn::SendStream>,
    queue: Vec<Bytes>,
    /// Frames lent during a burst, after those in `queue`: one buffer, moved
    /// to the queue as one chunk before the queue is written.
    tail: BytesMut,
    /// Bytes in `queue` and `tail`, and in the batch the writer task is writing.
    queued: usize,
    writing: bool,
    failed: bool,
    /// Listed with a burst, which writes the queue at its end.
    held: bool,
    /// Finish the stream once what is queued is written (a pipe stream's end).
    finish: bool,
}

/// What the tail buffer grows by at least: many small frames per allocation.
const TAIL_CHUNK: usize = 4096;

impl OutboxState {
    /// Moves the frames lent to the tail to the end of the queue.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let lent = self.tail.split().freeze();
            self.queue.push(lent);
        }
    }

    fn new(stream: Option<quinn::SendStream>) -> OutboxState {
        OutboxState {
            writing: stream.is_none(),
            stream,
            queue: Vec::new(),
            tail: BytesMut::new(),
            queued: 0,
            failed: false,
            held: false,
            finish: false,
        }
    }
}

impl Outbox {
    /// An outbox for an open stream; what it queues is counted in `backlog`.
    pub(crate) fn open(stream: quinn::SendStream, backlog: Option<Arc<Backlog>>) -> Arc<Outbox> {
        Arc::new(Outbox {
            backlog,
            state: parking_lot::Mutex::new(OutboxState::new(Some(stream))),
        })
    }

    /// An outbox whose stream `open` will provide: frames queue until it is there.
    pub(crate) fn opening(
        open: impl Future<Output = Option<quinn::SendStream>> + Send + 'static,
    ) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox {
            backlog: None,
            state: parking_lot::Mutex::new(OutboxState::new(None)),
        });
        let writer = outbox.clone();
        tokio::spawn(async move {
            match open.await {
                Some(stream) => writer.write_queued(stream).await,
                None => writer.fail(),
            }
        });
        outbox
    }

    /// Sends one frame: written now, held for the burst this thread is in, or
    /// queued for the writer task. False once the stream failed.
    pub(crate) fn send(self: &Arc<Self>, frame: Vec<u8>) -> bool {
        let mut state = self.state.lock();
        if state.failed {
            return false;
        }
        self.send_locked(&mut state, Bytes::from(frame))
    }

    /// [`Outbox::send`] for a frame that may wait for the end of the sending
    /// thread's tick (see `Transport::send_corked`): queued for a writer task
    /// that first goes behind the tasks queued to run, so that the frames queued meanwhile
    /// (other callers woken by the same packet of replies) leave in one write
    /// and quinn's connection task is woken once for them. A writer task at
    /// work takes it with the rest; in a burst it is held as any frame. The
    /// frame is lent: it is copied into the tail buffer, where the frames
    /// corked with it gather, so it needs no buffer of its own.
    pub(crate) fn send_corked(self: &Arc<Self>, frame: &[u8]) -> bool {
        if IN_BURST.get() {
            return self.send_lent(frame);
        }
        let mut state = self.state.lock();
        if state.failed {
            return false;
        }
        // Behind a writer task at work, which takes the tail with the rest.
        if state.writing {
            self.lend(&mut state, frame);
            return true;
        }
        // Sent from outside a runtime, there is no tick to wait for.
        let Ok(runtime) = Handle::try_current() else {
            return self.send_locked(&mut state, Bytes::copy_from_slice(frame));
        };
        self.lend(&mut state, frame);
        self.spawn_writer(&mut state, &runtime, true);
        true
    }

    /// [`Outbox::send`] under the lock, the stream not failed.
    fn send_locked(self: &Arc<Self>, state: &mut OutboxState, mut frame: Bytes) -> bool {
        let idle = !state.writing && state.stream.is_some();
        if idle && IN_BURST.get() {
            self.hold(state);
            state.seal();
            self.enqueue(state, frame);
            return true;
        }
        state.seal();
        if idle && state.queue.is_empty() {
            let mut bufs = [frame];
            match write_now(state, &mut bufs) {
                Err(()) => return false,
                Ok(_) => {
                    let [rest] = bufs;
                    if rest.is_empty() {
                        return true;
                    }
                    frame = rest;
                }
            }
        }
        self.enqueue(state, frame);
        self.start_writer(state);
        true
    }

    /// [`Outbox::send`] for a frame lent from an encoder's buffer: in a burst
    /// it is copied into the tail buffer (no allocation of its own), otherwise
    /// into a buffer of its own and sent.
    pub(crate) fn send_lent(self: &Arc<Self>, frame: &[u8]) -> bool {
        let mut state = self.state.lock();
        if state.failed {
            return false;
        }
        let idle = !state.writing && state.stream.is_some();
        if !(idle && IN_BURST.get()) {
            return self.send_locked(&mut state, Bytes::copy_from_slice(frame));
        }
        self.hold(&mut state);
        self.lend(&mut state, frame);
        true
    }

    /// Copies `frame` into the tail buffer, after everything queued.
    fn lend(&self, state: &mut OutboxState, frame: &[u8]) {
        if state.tail.capacity() - state.tail.len() < frame.len() {
            state.tail.reserve(frame.len().max(TAIL_CHUNK));
        }
        state.tail.extend_from_slice(frame);
        self.count_queued(state, frame.len());
    }

    /// Lists this outbox with the burst this thread is in, once.
    fn hold(self: &Arc<Self>, state: &mut OutboxState) {
        if !state.held {
            state.held = true;
            HOLDING.with_borrow_mut(|holding| holding.push(self.clone()));
        }
    }

    fn enqueue(&self, state: &mut OutboxState, frame: Bytes) {
        self.count_queued(state, frame.len());
        state.queue.push(frame);
    }

    fn count_queued(&self, state: &mut OutboxState, bytes: usize) {
        state.queued += bytes;
        if let Some(backlog) = &self.backlog {
            backlog.queued(bytes);
        }
    }

    /// `bytes` of what was queued were handed to QUIC (or dropped, failed).
    fn count_sent(&self, state: &mut OutboxState, bytes: usize) {
        state.queued -= bytes;
        if let Some(backlog) = &self.backlog {
            backlog.sent(bytes);
        }
    }

    /// Hands the stream to a writer task, unless one holds it already.
    fn start_writer(self: &Arc<Self>, state: &mut OutboxState) {
        self.spawn_writer(state, &Handle::current(), false);
    }

    /// Hands the stream to a writer task on `runtime`, unless one holds it
    /// already; a `corked` writer first goes behind the tasks queued on its
    /// worker ([`Outbox::send_corked`]).
    fn spawn_writer(self: &Arc<Self>, state: &mut OutboxState, runtime: &Handle, corked: bool) {
        if state.writing {
            return;
        }
        if let Some(stream) = state.stream.take() {
            state.writing = true;
            let writer = self.clone();
            runtime.spawn(async move {
                if corked {
                    behind_the_run_queue().await;
                }
                writer.write_queued(stream).await;
            });
        }
    }

    /// At a burst's end: writes what it held, now if the stream has room, the
    /// rest by the writer task.
    fn flush(self: &Arc<Self>) {
        let mut state = self.state.lock();
        state.held = false;
        state.seal();
        if state.failed || state.writing || state.queue.is_empty() {
            // A writer task took the stream meanwhile and writes the queue.
            return;
        }
        let mut queue = std::mem::take(&mut state.queue);
        match write_now(&mut state, &mut queue) {
            Err(()) => return self.fail_locked(&mut state),
            Ok(written) => self.count_sent(&mut state, written),
        }
        queue.retain(|chunk| !chunk.is_empty());
        // Kept with its allocation, empty or not.
        state.queue = queue;
        if !state.queue.is_empty() {
            self.start_writer(&mut state);
        } else if state.finish {
            if let Some(mut stream) = state.stream.take() {
                let _ = stream.finish();
            }
        }
    }

    /// The writer task: writes whatever is queued, batched, until the queue is empty.
    async fn write_queued(self: Arc<Self>, mut stream: quinn::SendStream) {
        let mut written = 0;
        loop {
            let mut batch = {
                let mut state = self.state.lock();
                self.count_sent(&mut state, written);
                state.seal();
                if state.queue.is_empty() {
                    state.writing = false;
                    if state.finish {
                        let _ = stream.finish();
                    } else {
                        state.stream = Some(stream);
                    }
                    return;
                }
                std::mem::take(&mut state.queue)
            };
            written = batch.iter().map(Bytes::len).sum();
            if stream.write_all_chunks(&mut batch).await.is_err() {
                return self.fail();
            }
        }
    }

    pub(crate) fn fail(&self) {
        self.fail_locked(&mut self.state.lock());
    }

    fn fail_locked(&self, state: &mut OutboxState) {
        state.failed = true;
        state.queue.clear();
        state.tail.clear();
        let queued = state.queued;
        self.count_sent(state, queued);
    }

    /// Bytes waiting to be handed to QUIC.
    pub(crate) fn queued(&self) -> usize {
        self.state.lock().queued
    }

    /// Finishes the stream once what is queued has been written.
    pub(crate) fn finish(&self) {
        let mut state = self.state.lock();
        state.finish = true;
        // With frames held for a burst, its end finishes the stream.
        if !state.writing && state.queue.is_empty() && state.tail.is_empty() {
            if let Some(mut stream) = state.stream.take() {
                let _ = stream.finish();
            }
        }
    }
}

/// Resolves on its second poll: the task wakes itself and goes to the back of
/// its worker's run queue, behind the tasks already there (the other callers
/// one packet of replies woke), where an idle worker may steal it. Not
/// `tokio::task::yield_now`, whose task waits until the worker parks or polls
/// its driver: behind long tasks, that may be 61 of them.
fn behind_the_run_queue() -> impl Future<Output = ()> {
    let mut queued = false;
    std::future::poll_fn(move |cx| {
        if std::mem::replace(&mut queued, true) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

/// Writes as much of `chunks` as the stream takes now, without waiting;
/// written chunks are left empty, a partly written one advanced. The bytes
/// written, or `Err` if the stream failed.
fn write_now(state: &mut OutboxState, chunks: &mut [Bytes]) -> Result<usize, ()> {
    let Some(stream) = state.stream.as_mut() else {
        return Ok(0);
    };
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // Cancel-safe: if this does not complete now, nothing was written.
    match std::pin::pin!(stream.write_chunks(chunks)).poll(&mut cx) {
        std::task::Poll::Ready(Ok(written)) => Ok(written.bytes),
        std::task::Poll::Ready(Err(_)) => {
            state.failed = true;
            Err(())
        }
        std::task::Poll::Pending => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::remote::quic::{Endpoint, QuicConfig};
    use crate::remote::tls::{Credentials, NODE_NAME};

    /// Bounds every wait of these tests.
    const SAFETY: Duration = Duration::from_secs(10);

    /// Two endpoints of one cluster on loopback, connected (QUIC and TLS only:
    /// no Remora handshake); a stream from the first to the second.
    async fn stream() -> (quinn::SendStream, quinn::RecvStream, [quinn::Connection; 2]) {
        let config = QuicConfig {
            idle_timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(3),
            handshakes: Default::default(),
        };
        let bind = || {
            let credentials = Credentials::ephemeral().expect("credentials");
            let loopback: SocketAddr = "127.0.0.1:0".parse().expect("an address");
            Endpoint::bind(loopback, &credentials, &config).expect("bind")
        };
        let (a, b) = (bind(), bind());
        let to = b.local_addr().expect("b's address");
        let connected = async {
            let (dialed, incoming) = tokio::join!(a.dial_raw(to, NODE_NAME), b.accept_raw());
            let (dialed, accepted) = (dialed.expect("dialed"), incoming.expect("accepted"));
            // The one stream a peer may open before its Hello: the control stream.
            let (mut send, _) = dialed.open_bi().await.expect("a stream");
            // A stream exists for the peer once something is written on it.
            send.write_all(b"<").await.expect("the first byte");
            let (_, recv) = accepted.accept_bi().await.expect("the stream");
            (send, recv, [dialed, accepted])
        };
        tokio::time::timeout(SAFETY, connected)
            .await
            .expect("connected in time")
    }

    async fn read_to_end(mut recv: quinn::RecvStream) -> Vec<u8> {
        tokio::time::timeout(SAFETY, recv.read_to_end(1 << 20))
            .await
            .expect("the stream ends in time")
            .expect("the stream reads")
    }

    #[tokio::test]
    async fn a_burst_holds_what_it_sends_and_writes_it_in_order_at_its_end() {
        let (send, recv, _conns) = stream().await;
        let backlog = Arc::new(Backlog::default());
        let outbox = Outbox::open(send, Some(backlog.clone()));
        burst(&mut || {
            assert!(outbox.send(b"one,".to_vec()));
            assert!(outbox.send_lent(b"two,"));
            assert!(outbox.send_lent(b"three,"));
            assert!(outbox.send(b"four,".to_vec()));
            assert!(outbox.send_lent(b"five"));
            // Held, and counted where the replies backlog is.
            assert_eq!(outbox.queued(), 23);
            assert_eq!(backlog.bytes(), 23);
        });
        // Written at the burst's end (the stream had room: no writer task).
        assert_eq!(outbox.queued(), 0);
        assert_eq!(backlog.bytes(), 0);
        // Outside a burst, a lent frame is written at once.
        assert!(outbox.send_lent(b"!"));
        assert_eq!(outbox.queued(), 0);
        outbox.finish();
        assert_eq!(read_to_end(recv).await, b"<one,two,three,four,five!");
    }

    #[tokio::test]
    async fn corked_frames_wait_for_the_sender_to_yield_and_leave_together_in_order() {
        let (send, recv, _conns) = stream().await;
        let outbox = Outbox::open(send, None);
        assert!(outbox.send_corked(b"one,"));
        assert!(outbox.send_corked(b"two,"));
        // Behind the corked frames, though it need not wait itself.
        assert!(outbox.send(b"three".to_vec()));
        // Nothing is written while the sending task runs on.
        assert_eq!(outbox.queued(), 13);
        // Once it lets the scheduler run, the writer writes all three.
        let mut yields = 0;
        while outbox.queued() > 0 {
            assert!(yields < 100, "the corked frames were never written");
            yields += 1;
            tokio::task::yield_now().await;
        }
        // Not corked, with nothing queued: written at once.
        assert!(outbox.send(b"!".to_vec()));
        assert_eq!(outbox.queued(), 0);
        outbox.finish();
        assert_eq!(read_to_end(recv).await, b"<one,two,three!");
    }

    #[tokio::test]
    async fn a_corked_frame_in_a_burst_is_held_in_order_with_the_rest() {
        let (send, recv, _conns) = stream().await;
        let outbox = Outbox::open(send, None);
        burst(&mut || {
            assert!(outbox.send(b"one,".to_vec()));
            assert!(outbox.send_corked(b"two,"));
            assert!(outbox.send_lent(b"three"));
            assert_eq!(outbox.queued(), 13);
        });
        // The burst's end writes them; no writer task waits for a tick.
        assert_eq!(outbox.queued(), 0);
        outbox.finish();
        assert_eq!(read_to_end(recv).await, b"<one,two,three");
    }

    #[test]
    fn a_corked_frame_sent_outside_a_runtime_is_written_at_once() {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let (send, recv, conns) = runtime.block_on(stream());
        let outbox = Outbox::open(send, None);
        // On a thread of no runtime there is no tick to wait for.
        let sent = std::thread::spawn({
            let outbox = outbox.clone();
            move || (outbox.send_corked(b"now"), outbox.queued())
        })
        .join()
        .expect("the sending thread");
        assert_eq!(sent, (true, 0));
        outbox.finish();
        assert_eq!(runtime.block_on(read_to_end(recv)), b"<now");
        drop(conns);
    }

    #[tokio::test]
    async fn a_stream_finished_in_a_burst_ends_after_the_frames_it_held() {
        let (send, recv, _conns) = stream().await;
        let outbox = Outbox::open(send, None);
        burst(&mut || {
            assert!(outbox.send_lent(b"last"));
            outbox.finish();
            // A burst inside the burst is part of it.
            burst(&mut || assert!(outbox.send_lent(b" words")));
            assert_eq!(outbox.queued(), 10);
        });
        assert_eq!(read_to_end(recv).await, b"<last words");
    }

    #[tokio::test]
    async fn a_burst_that_panics_still_writes_what_it_held() {
        let (send, recv, _conns) = stream().await;
        let outbox = Outbox::open(send, None);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            burst(&mut || {
                assert!(outbox.send_lent(b"before"));
                panic!("a handler panicked");
            })
        }));
        assert!(unwound.is_err());
        assert_eq!(outbox.queued(), 0);
        // The thread is out of the burst: this is written at once.
        assert!(outbox.send(b" after".to_vec()));
        assert_eq!(outbox.queued(), 0);
        outbox.finish();
        assert_eq!(read_to_end(recv).await, b"<before after");
    }

    #[tokio::test]
    async fn a_failed_stream_refuses_frames_and_counts_nothing_queued() {
        let (send, recv, conns) = stream().await;
        let backlog = Arc::new(Backlog::default());
        let outbox = Outbox::open(send, Some(backlog.clone()));
        drop(recv);
        conns[1].close(0u32.into(), b"gone");
        tokio::time::timeout(SAFETY, conns[0].closed())
            .await
            .expect("the close reaches the sender");
        assert!(
            !outbox.send_lent(b"anyone?"),
            "a stream of a closed connection took a frame"
        );
        assert!(!outbox.send(b"still?".to_vec()));
        burst(&mut || assert!(!outbox.send_lent(b"in a burst?")));
        assert_eq!(outbox.queued(), 0);
        assert_eq!(backlog.bytes(), 0);
    }
}
