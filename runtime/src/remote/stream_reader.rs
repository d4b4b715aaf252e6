//! A QUIC stream's receive half and the frames read from it: read by its
//! reader task, or, on one of our call lanes, by a caller awaiting its answer.
//!
//! A reply read by the reader task reaches its caller through one more task
//! wake-up than a raw stream's: quinn's connection task wakes the reader, the
//! reader wakes the caller. tokio runs a task woken by the running one next,
//! on the same thread (its LIFO slot), but only three in a row: with the hop,
//! the caller's next call, which wakes quinn's connection task to send it, is
//! the fourth, goes to the run queue and wakes the other worker thread (a
//! futex call, and quinn's lock then contended between two threads), on every
//! call of a caller that waits for each answer. So a caller awaiting its answer
//! reads its lane itself when nobody else does ([`LaneReader::lead`]): quinn
//! wakes it directly, as it wakes a raw stream's reader. What it cannot do
//! there (wait for room for a large frame, for the peer's held calls, for the
//! stream's end) it leaves to the reader task; once it stops waiting
//! (answered, timed out, dropped) it hands the stream back
//! ([`LaneReader::hand_back`]), registering the reader task's waker with
//! quinn, so that nothing arriving later waits for a caller that is gone.
//! Only asks alone in flight read: among others, the reader task reads each
//! chunk of replies for all of them at once.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::connection::{Burst, Connection, Drained, Lane, LaneReader, SMALL_FRAME};
use super::exports::Delivery;
use crate::wire::codec::FrameReader;

/// Why a peer's stream is stopped: it sent a frame past the size limit.
const STOP_OVERSIZE: u32 = 3;

/// How much one read takes from quinn at most.
const READ_CHUNK: usize = 256 * 1024;

/// One stream's receive half, shared by its reader task and the callers that
/// read it (see the module documentation).
pub(crate) struct StreamReader {
    /// The connection, for the callers that read (its reader task holds it).
    conn: Weak<Connection>,
    /// Where replies to what arrives here go.
    replies: Lane,
    state: Mutex<ReadState>,
}

struct ReadState {
    recv: quinn::RecvStream,
    frames: FrameReader,
    /// The room a large frame being read holds, and where that frame starts.
    room: Option<(u64, OwnedSemaphorePermit)>,
    /// When the bytes read last arrived.
    arrived: Instant,
    /// Whether `frames` may hold frames not handled yet.
    unhandled: bool,
    /// The reader task's waker, once it has run.
    task: Option<Waker>,
    /// What the reader task must do before reading on, found by a caller.
    action: Option<Action>,
    /// Whether the reader task is doing what a read left it to do (or has
    /// ended, or not run yet): callers do not read meanwhile.
    task_busy: bool,
}

/// What only the reader task can do.
enum Action {
    /// Wait for room for the calls held for the peer.
    Wait(Delivery),
    /// Wait for the replies backlog to shrink.
    Backlog,
    /// Wait for room for a frame of this size, being read.
    Room(usize),
    /// An oversize frame: stop the stream.
    Reset,
    /// The connection must close.
    Close,
    /// The peer finished or reset the stream.
    End,
}

/// How far [`StreamReader::read`] got.
enum Read {
    /// Everything that had arrived is handled; quinn wakes the reader's waker
    /// when more does.
    Pending,
    /// The reader task must do this first.
    Task(Action),
}

impl StreamReader {
    /// Starts the reader task of `recv`, whose frames' replies go to
    /// `replies`; `frames` holds what was read from it already, if anything.
    pub(crate) fn spawn(
        conn: Arc<Connection>,
        recv: quinn::RecvStream,
        replies: Lane,
        frames: Option<FrameReader>,
    ) -> Arc<StreamReader> {
        let reader = Arc::new(StreamReader {
            conn: Arc::downgrade(&conn),
            replies,
            state: Mutex::new(ReadState {
                recv,
                frames: frames.unwrap_or_else(|| FrameReader::new(conn.limits)),
                room: None,
                arrived: Instant::now(),
                unhandled: true,
                task: None,
                action: None,
                task_busy: true,
            }),
        });
        tokio::spawn(reader.clone().run(conn));
        reader
    }

    /// The reader task: reads and handles frames, and does what a read leaves
    /// to it, until the stream ends.
    async fn run(self: Arc<Self>, conn: Arc<Connection>) {
        loop {
            let action = poll_fn(|cx| {
                let mut state = self.state.lock();
                if !state.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                    state.task = Some(cx.waker().clone());
                }
                if let Some(action) = state.action.take() {
                    return Poll::Ready(action);
                }
                state.task_busy = false;
                match self.read(&mut state, &conn, cx) {
                    Read::Pending => Poll::Pending,
                    Read::Task(action) => {
                        state.task_busy = true;
                        Poll::Ready(action)
                    }
                }
            })
            .await;
            match action {
                Action::Wait(waiting) => waiting.await,
                Action::Backlog => conn.backlog_shrinks(self.replies).await,
                Action::Room(size) => match conn.room_for_frame(size).await {
                    Some(permit) => {
                        let mut state = self.state.lock();
                        state.room = Some((state.frames.position(), permit));
                    }
                    None => break,
                },
                Action::Reset => {
                    let _ = self.state.lock().recv.stop(STOP_OVERSIZE.into());
                    break;
                }
                Action::Close => {
                    conn.close();
                    break;
                }
                Action::End => break,
            }
        }
        conn.lane_closed(self.replies);
    }

    /// Leaves `action` to the reader task, which nobody else reads past.
    fn leave_to_task(state: &mut ReadState, action: Action) {
        state.action = Some(action);
        state.task_busy = true;
        if let Some(task) = &state.task {
            task.wake_by_ref();
        }
    }

    /// Handles the frames read, and reads and handles more, until nothing more
    /// has arrived (quinn wakes `cx` when something does) or only the reader
    /// task can go on.
    fn read(&self, state: &mut ReadState, conn: &Arc<Connection>, cx: &mut Context<'_>) -> Read {
        loop {
            if state.unhandled {
                match conn.drain_now(&mut state.frames, self.replies, state.arrived) {
                    Burst::Drained(Drained::More) => state.unhandled = false,
                    Burst::Drained(Drained::Reset) => return Read::Task(Action::Reset),
                    Burst::Drained(Drained::Close) => return Read::Task(Action::Close),
                    Burst::Wait(waiting) => return Read::Task(Action::Wait(waiting)),
                    Burst::Backlog => return Read::Task(Action::Backlog),
                }
                // Every complete frame is handled: a frame whose room is held
                // has been read.
                let frames = &state.frames;
                if state
                    .room
                    .as_ref()
                    .is_some_and(|(at, _)| *at != frames.position() || frames.partial().is_none())
                {
                    state.room = None;
                }
            }
            if state.room.is_none() {
                if let Some(size) = state.frames.partial().filter(|&size| size > SMALL_FRAME) {
                    return Read::Task(Action::Room(size));
                }
            }
            match Self::read_chunk(state, conn, cx) {
                Poll::Pending => return Read::Pending,
                Poll::Ready(None) => {}
                Poll::Ready(Some(action)) => return Read::Task(action),
            }
        }
    }

    /// Reads what has arrived into `frames` (`Ready(None)`: frames to
    /// handle), or registers `cx` with quinn (`Pending`); `Ready(Some)`: only
    /// the reader task can go on.
    fn read_chunk(
        state: &mut ReadState,
        conn: &Connection,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Action>> {
        let chunk = std::task::ready!(pin!(state.recv.read_chunk(READ_CHUNK, true)).poll(cx));
        Poll::Ready(match chunk {
            Ok(Some(chunk)) => {
                state.arrived = Instant::now();
                state.unhandled = true;
                conn.count_received(chunk.bytes.len());
                state.frames.extend(&chunk.bytes).err().map(|err| {
                    tracing::warn!(peer = %conn.peer.node, %err, "resetting the stream");
                    Action::Reset
                })
            }
            // The peer finished or reset this stream; the connection goes on.
            Ok(None) | Err(_) => Some(Action::End),
        })
    }
}

impl LaneReader for StreamReader {
    /// Reads the stream as a caller awaiting its answer, if nobody else does
    /// (see the module documentation).
    fn lead(&self, cx: &mut Context<'_>) -> bool {
        let Some(mut state) = self.state.try_lock() else {
            return false;
        };
        if state.task_busy {
            return false;
        }
        let Some(conn) = self.conn.upgrade() else {
            return false;
        };
        if let Read::Task(action) = self.read(&mut state, &conn, cx) {
            Self::leave_to_task(&mut state, action);
        }
        true
    }

    /// Gives the stream back to the reader task after [`LaneReader::lead`]:
    /// registers the task's waker with quinn, so that quinn wakes the task
    /// when more arrives. Handles nothing itself (it may run as a future is
    /// dropped, anywhere): a chunk already there is taken for the task, and the
    /// task woken to handle it. If someone else holds the stream right now,
    /// its holder registers its own waker, and hands it back in turn if it is
    /// a caller.
    fn hand_back(&self) {
        let Some(mut state) = self.state.try_lock() else {
            return;
        };
        if state.task_busy {
            // The task reads again when it is done, with its own waker.
            return;
        }
        let (Some(task), Some(conn)) = (state.task.clone(), self.conn.upgrade()) else {
            return;
        };
        match Self::read_chunk(&mut state, &conn, &mut Context::from_waker(&task)) {
            Poll::Pending => {}
            Poll::Ready(None) => task.wake_by_ref(),
            Poll::Ready(Some(action)) => Self::leave_to_task(&mut state, action),
        }
    }
}
