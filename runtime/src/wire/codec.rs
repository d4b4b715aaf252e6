//! Framing: a 4-byte big-endian length, then the frame's MessagePack body.
//!
//! Decoding is bounded: a length past [`Limits::max_frame`] is refused before any
//! of the body is buffered, nesting past [`Limits::max_depth`] fails the frame, and
//! collections cannot outgrow the frame that carries them (every element costs at
//! least one byte). A malformed body costs only that frame: the reader skips it and
//! goes on with the next one.

use serde::Serialize;

use super::call_frames;
use super::frame::Frame;

/// Bounds on what a peer can make this node decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted, in bytes (default 16 MiB).
    pub max_frame: usize,
    /// Deepest nesting of arrays and maps accepted in a value (default 64); frames
    /// themselves may always nest 8 deep.
    pub max_depth: usize,
    /// How many calls to one object a peer may have outstanding on its
    /// connection (default 256): asks until answered, tells until they are in
    /// the object's mailbox. A sender out of room waits for it (`tell`, `ask`) or
    /// is refused (`try_tell`); the node holds at most this many calls per object
    /// per peer waiting for room in a full mailbox.
    pub window: u32,
}

impl Limits {
    /// The default maximum frame size: 16 MiB.
    pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
    /// The smallest `max_frame` a node may have: a handshake, and a lease frame
    /// listing one object, always fit.
    pub const MIN_MAX_FRAME: usize = 1024;
    /// The default maximum nesting depth.
    pub const DEFAULT_MAX_DEPTH: usize = 64;
    /// The default [`window`](Limits::window): calls outstanding per object and peer.
    pub const DEFAULT_WINDOW: u32 = 256;
    /// The largest window a node takes from a peer's `Hello`, whatever it says:
    /// what a sender may queue for one object stays bounded.
    pub const MAX_WINDOW: u32 = 1 << 16;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: Limits::DEFAULT_MAX_FRAME,
            max_depth: Limits::DEFAULT_MAX_DEPTH,
            window: Limits::DEFAULT_WINDOW,
        }
    }
}

/// Why bytes from a peer were not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces more than the limit. The stream cannot be
    /// resynchronised without reading the body: reset it.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversize {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid frame (it was skipped; the stream goes on).
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the limit the peer enforces.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversize {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// Appends `frame`, length-prefixed, to `out` (a buffer reused across frames, so
/// several frames go out in one write). On error `out` is left as it was.
pub fn encode(frame: &Frame<'_>, out: &mut Vec<u8>, limits: &Limits) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let checked = call_frames::write(frame, out).and_then(|()| {
        let len = out.len() - start - 4;
        match len > limits.max_frame || len > u32::MAX as usize {
            true => Err(EncodeError::Oversize {
                len,
                max: limits.max_frame,
            }),
            false => Ok(len),
        }
    });
    match checked {
        Ok(len) => {
            // Fits: max_frame is far below u32::MAX.
            out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
            Ok(())
        }
        Err(err) => {
            out.truncate(start);
            Err(err)
        }
    }
}

/// Appends a length-prefixed [`Frame::PipeItem`] for `stream` whose item
/// `write` encodes straight into `out`: the item's encoding is not made apart
/// and copied in, as [`encode`] of a frame holding it would need. The bytes
/// decode as that frame's do (the item's length is written in four bytes,
/// whatever it is). Returns the item's encoded length. On an error nothing is
/// appended; a frame past `limits.max_frame` is [`EncodeError::Oversize`].
///
/// ```
/// use remora::wire::codec::{decode_frame, encode_pipe_item, encode_value, Limits};
/// use remora::wire::Frame;
/// let mut out = Vec::new();
/// let len = encode_pipe_item(6, &mut out, &Limits::default(), |out| encode_value(&42u64, out))
///     .unwrap();
/// assert_eq!(len, 1);
/// let frame = decode_frame(&out[4..], &Limits::default()).unwrap();
/// assert_eq!(frame, Frame::PipeItem { stream: 6, item: &[42] });
/// ```
pub fn encode_pipe_item(
    stream: u64,
    out: &mut Vec<u8>,
    limits: &Limits,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    /// The header of a `bin 32`: its marker, then the length (big-endian).
    const BIN32: u8 = 0xc6;
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    call_frames::write_pipe_item_head(stream, out);
    out.push(BIN32);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(err) = write(out) {
        out.truncate(start);
        return Err(err);
    }
    let item = out.len() - at - 4;
    let len = out.len() - start - 4;
    if len > limits.max_frame || len > u32::MAX as usize {
        out.truncate(start);
        return Err(EncodeError::Oversize {
            len,
            max: limits.max_frame,
        });
    }
    // Both fit: max_frame is far below u32::MAX.
    out[at..at + 4].copy_from_slice(&(item as u32).to_be_bytes());
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(item)
}

/// Encodings up to this size are made in the thread's scratch buffer and copied
/// out at their exact size; a larger one takes the scratch buffer with it.
const SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    /// Where encodings are made before they are copied out ([`encode_to_vec`]).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An encoded value (a call's arguments, a reply) kept inline up to 48 bytes,
/// as most are: no allocation for them at all.
pub type Encoded = smallvec::SmallVec<[u8; 48]>;

/// What `write` appends to an empty buffer, handed to `finish`: written into the
/// thread's scratch buffer, so a small encoding is copied out once at its exact
/// size (a fresh `Vec` reallocates four or five times on the way to a call's 50
/// bytes, and a buffer whose capacity is not its length costs another
/// allocation when it becomes `Bytes` to be sent). `hint` is the size expected,
/// reserved before writing. `finish` may take the buffer if it is large.
fn with_scratch<R>(
    hint: usize,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    finish: impl FnOnce(&mut Vec<u8>) -> R,
) -> Result<R, EncodeError> {
    SCRATCH.with(|scratch| {
        // Taken already (an encoding made while making another): a buffer of its own.
        let Ok(mut buf) = scratch.try_borrow_mut() else {
            let mut out = Vec::with_capacity(hint);
            return write(&mut out).map(|()| finish(&mut out));
        };
        buf.clear();
        buf.reserve(hint);
        let out = write(&mut buf).map(|()| finish(&mut buf));
        if buf.capacity() > 2 * SCRATCH_KEEP {
            *buf = Vec::new();
        }
        out
    })
}

/// The encoding in `buf` as a buffer of its own: copied at its exact size, or,
/// large, the buffer itself (no copy; the next encoding starts a new one).
fn take_exact(buf: &mut Vec<u8>) -> Vec<u8> {
    match buf.len() <= SCRATCH_KEEP {
        true => buf.as_slice().to_vec(),
        false => std::mem::take(buf),
    }
}

/// `frame`, length-prefixed, in a buffer of its own ([`encode`] into a new
/// buffer, with one allocation for a small frame).
pub fn encode_to_vec(frame: &Frame<'_>, limits: &Limits) -> Result<Vec<u8>, EncodeError> {
    // The frame's own fields are a few dozen bytes beside its payload.
    let hint = frame.payload_len() + 64;
    with_scratch(hint, |buf| encode(frame, buf, limits), take_exact)
}

/// `frame`, length-prefixed ([`encode`]), lent to `take` from this thread's
/// scratch buffer: no allocation of its own, for a transport that copies the
/// bytes anyway (into a batch of frames).
pub fn encode_lent<R>(
    frame: &Frame<'_>,
    limits: &Limits,
    take: impl FnOnce(&[u8]) -> R,
) -> Result<R, EncodeError> {
    let hint = frame.payload_len() + 64;
    with_scratch(hint, |buf| encode(frame, buf, limits), |buf| take(buf))
}

/// The MessagePack encoding of `value` ([`encode_value`]), inline when it is
/// small and otherwise with one allocation; `hint` is the size expected, if
/// known (0 if not).
pub fn encode_value_to_vec<T: Serialize + ?Sized>(
    value: &T,
    hint: usize,
) -> Result<Encoded, EncodeError> {
    encode_written(hint, |buf| encode_value(value, buf))
}

/// What `write` appends to an empty buffer, as [`encode_value_to_vec`] keeps
/// an encoding: inline when it is small, otherwise with one allocation.
pub fn encode_written(
    hint: usize,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<Encoded, EncodeError> {
    with_scratch(hint, write, |buf| match buf.len() <= 48 {
        true => Encoded::from_slice(buf),
        false => Encoded::from_vec(take_exact(buf)),
    })
}

/// Appends the MessagePack encoding of `value` (compact: structs as arrays).
pub fn encode_value<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    value
        .serialize(&mut rmp_serde::Serializer::new(out))
        .map_err(|e| EncodeError::Encode(e.to_string()))
}

/// Decodes one MessagePack value of type `T` from the start of `bytes` (borrowing
/// byte strings from it), nested at most `limits.max_depth` deep. Bytes after the
/// value are ignored: the frame's length already delimits it.
pub fn decode_value<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<T, String> {
    decode_within(bytes, limits.max_depth)
}

/// Frames nest a few levels of their own (`Frame::Error` around a `CallError`);
/// decoding one never needs less than this, whatever `max_depth` says.
const FRAME_DEPTH: usize = 8;

fn decode_within<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    max_depth: usize,
) -> Result<T, String> {
    // rmp-serde does not count enums against its own limit: check first. Every
    // level costs at least a byte, so a value no longer than `max_depth` bytes
    // (a number, a short string: most arguments and replies) cannot nest too
    // deep, and whatever else is wrong with it rmp-serde says.
    if bytes.len() > max_depth {
        super::depth::check(bytes, max_depth)?;
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    // A backstop only; +1 keeps it off zero (rmp-serde underflows there).
    de.set_max_depth(max_depth + 1);
    T::deserialize(&mut de).map_err(|e| e.to_string())
}

/// Turns a byte stream into frames, incrementally.
#[derive(Debug)]
pub struct FrameReader {
    /// Set once an oversize frame was announced.
    refused: Option<DecodeError>,
    buf: Vec<u8>,
    /// Start of the bytes not yet consumed.
    pos: usize,
    /// Bytes consumed (returned as frames) since the stream began.
    consumed: u64,
    limits: Limits,
}

impl FrameReader {
    /// A reader enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameReader {
            refused: None,
            buf: Vec::new(),
            pos: 0,
            consumed: 0,
            limits,
        }
    }

    /// Adds bytes received from the peer. Once a frame announces more than the
    /// limit, the bytes after its header are refused (not buffered), now and on
    /// every later call: the stream cannot be resynchronised, so reset it.
    pub fn extend(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if let Some(err) = &self.refused {
            return Err(err.clone());
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        // Walk the frames now buffered: keep complete ones, stop at the first
        // incomplete one, and cut an oversize one off right after its header.
        let mut at = self.pos;
        while let Some(head) = self.buf.get(at..at + 4) {
            let len = u32::from_be_bytes(head.try_into().expect("4 bytes")) as usize;
            if len > self.limits.max_frame {
                self.buf.truncate(at + 4);
                let err = DecodeError::Oversize {
                    len,
                    max: self.limits.max_frame,
                };
                self.refused = Some(err.clone());
                return Err(err);
            }
            match at.checked_add(4 + len) {
                Some(end) if end <= self.buf.len() => at = end,
                _ => break,
            }
        }
        Ok(())
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Where the next frame starts in the stream: the bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.consumed
    }

    /// The whole size (header included) of the frame at the head of the buffer,
    /// once its header is here and while its body is not complete: what reading
    /// it to the end will buffer.
    pub fn partial(&self) -> Option<usize> {
        let len = self.announced()?;
        let whole = len.checked_add(4)?;
        (self.buffered() < whole).then_some(whole)
    }

    fn announced(&self) -> Option<usize> {
        let head = self.buf.get(self.pos..self.pos + 4)?;
        Some(u32::from_be_bytes(head.try_into().expect("4 bytes")) as usize)
    }

    /// The next complete frame, if one is buffered. A malformed frame is consumed
    /// and reported, so the caller can answer it and keep reading.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, DecodeError> {
        let Some(len) = self.announced() else {
            return Ok(None);
        };
        if len > self.limits.max_frame {
            return Err(DecodeError::Oversize {
                len,
                max: self.limits.max_frame,
            });
        }
        let start = self.pos + 4;
        let Some(body) = self.buf.get(start..start + len) else {
            return Ok(None);
        };
        self.pos = start + len;
        self.consumed += 4 + len as u64;
        decode_body(body, &self.limits).map(Some)
    }
}

/// Decodes exactly one frame body (no length prefix): the fuzzing entry point.
pub fn decode_frame<'a>(body: &'a [u8], limits: &Limits) -> Result<Frame<'a>, DecodeError> {
    decode_body(body, limits)
}

/// One frame body: a call's frame in the form this node writes is read by hand
/// ([`call_frames::read`]); anything else (or anything that form does not fit)
/// by rmp-serde, after the depth check.
fn decode_body<'a>(body: &'a [u8], limits: &Limits) -> Result<Frame<'a>, DecodeError> {
    if let Some(frame) = call_frames::read(body) {
        return Ok(frame);
    }
    decode_within(body, limits.max_depth.max(FRAME_DEPTH)).map_err(DecodeError::Malformed)
}
