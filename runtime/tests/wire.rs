//! The wire codec against its contract: framing, bounds, recovery, and round trips
//! under every chunking a transport can produce. Sans-IO, so no sockets: bytes in,
//! frames out.

use std::time::Duration;

use proptest::prelude::*;
use remora::wire::codec::{decode_frame, decode_value, encode, encode_pipe_item, encode_value};
use remora::wire::{
    Call, CallContext, DecodeError, EncodeError, Frame, FrameReader, Hello, Limits, TraceContext,
    MAGIC, PROTOCOL_VERSION,
};
use remora::{CallError, NodeLabel, StopReason};
use remora::{NodeId, ObjectId};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// An owned mirror of `Frame`, so frames can outlive the reader's buffer.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
struct OwnedCall {
    id: u64,
    target: ObjectId,
    interface: u64,
    method: u64,
    args: Vec<u8>,
    chain: u64,
    once: u64,
    budget: Option<u64>,
    trace: Option<TraceContext>,
}

impl OwnedCall {
    fn borrow(&self) -> Call<'_> {
        Call {
            id: self.id,
            target: self.target,
            interface: self.interface,
            method: self.method,
            args: &self.args,
            chain: self.chain,
            once: self.once,
            context: CallContext {
                budget: self.budget,
                trace: self.trace,
            },
        }
    }

    fn own(call: &Call<'_>) -> Self {
        OwnedCall {
            id: call.id,
            target: call.target,
            interface: call.interface,
            method: call.method,
            args: call.args.to_vec(),
            chain: call.chain,
            once: call.once,
            budget: call.context.budget,
            trace: call.context.trace,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    Hello(Hello),
    Call(OwnedCall),
    Tell(OwnedCall),
    Reply {
        call: u64,
        value: Vec<u8>,
    },
    Error {
        call: u64,
        error: CallError,
    },
    Release(Vec<ObjectId>),
    Renew(Vec<ObjectId>),
    Ping(u64),
    Pong(u64),
    Monitor {
        watch: u64,
        object: ObjectId,
    },
    Demonitor(u64),
    Down {
        watch: u64,
        reason: StopReason,
    },
    Exit {
        object: ObjectId,
        reason: StopReason,
    },
    Credit(Vec<(ObjectId, u32)>),
    Refused {
        object: ObjectId,
        error: CallError,
    },
    PipeOpen {
        stream: u64,
        pipe: ObjectId,
        credit: u32,
        bytes: u64,
    },
    PipeItem {
        stream: u64,
        item: Vec<u8>,
    },
    PipeCredit {
        stream: u64,
        items: u32,
        bytes: u64,
    },
    PipeEnd {
        stream: u64,
        error: Option<CallError>,
    },
    PipeClose {
        stream: u64,
        error: Option<CallError>,
    },
    Cancel(u64),
}

impl Owned {
    fn frame(&self) -> Frame<'_> {
        match self {
            Owned::Hello(hello) => Frame::Hello(hello.clone()),
            Owned::Call(call) => Frame::Call(call.borrow()),
            Owned::Tell(call) => Frame::Tell(call.borrow()),
            Owned::Reply { call, value } => Frame::Reply { call: *call, value },
            Owned::Error { call, error } => Frame::Error {
                call: *call,
                error: error.clone(),
            },
            Owned::Release(objects) => Frame::Release {
                objects: objects.clone(),
            },
            Owned::Renew(objects) => Frame::Renew {
                objects: objects.clone(),
            },
            Owned::Ping(nonce) => Frame::Ping(*nonce),
            Owned::Pong(nonce) => Frame::Pong(*nonce),
            Owned::Monitor { watch, object } => Frame::Monitor {
                watch: *watch,
                object: *object,
            },
            Owned::Demonitor(watch) => Frame::Demonitor { watch: *watch },
            Owned::Down { watch, reason } => Frame::Down {
                watch: *watch,
                reason: reason.clone(),
            },
            Owned::Exit { object, reason } => Frame::Exit {
                object: *object,
                reason: reason.clone(),
            },
            Owned::Credit(grants) => Frame::Credit {
                grants: grants.clone(),
            },
            Owned::Refused { object, error } => Frame::Refused {
                object: *object,
                error: error.clone(),
            },
            Owned::PipeOpen {
                stream,
                pipe,
                credit,
                bytes,
            } => Frame::PipeOpen {
                stream: *stream,
                pipe: *pipe,
                credit: *credit,
                bytes: *bytes,
            },
            Owned::PipeItem { stream, item } => Frame::PipeItem {
                stream: *stream,
                item,
            },
            Owned::PipeCredit {
                stream,
                items,
                bytes,
            } => Frame::PipeCredit {
                stream: *stream,
                items: *items,
                bytes: *bytes,
            },
            Owned::PipeEnd { stream, error } => Frame::PipeEnd {
                stream: *stream,
                error: error.clone(),
            },
            Owned::PipeClose { stream, error } => Frame::PipeClose {
                stream: *stream,
                error: error.clone(),
            },
            Owned::Cancel(call) => Frame::Cancel { call: *call },
        }
    }

    fn own(frame: &Frame<'_>) -> Self {
        match frame {
            Frame::Hello(hello) => Owned::Hello(hello.clone()),
            Frame::Call(call) => Owned::Call(OwnedCall::own(call)),
            Frame::Tell(call) => Owned::Tell(OwnedCall::own(call)),
            Frame::Reply { call, value } => Owned::Reply {
                call: *call,
                value: value.to_vec(),
            },
            Frame::Error { call, error } => Owned::Error {
                call: *call,
                error: error.clone(),
            },
            Frame::Release { objects } => Owned::Release(objects.clone()),
            Frame::Renew { objects } => Owned::Renew(objects.clone()),
            Frame::Ping(nonce) => Owned::Ping(*nonce),
            Frame::Pong(nonce) => Owned::Pong(*nonce),
            Frame::Monitor { watch, object } => Owned::Monitor {
                watch: *watch,
                object: *object,
            },
            Frame::Demonitor { watch } => Owned::Demonitor(*watch),
            Frame::Down { watch, reason } => Owned::Down {
                watch: *watch,
                reason: reason.clone(),
            },
            Frame::Exit { object, reason } => Owned::Exit {
                object: *object,
                reason: reason.clone(),
            },
            Frame::Credit { grants } => Owned::Credit(grants.clone()),
            Frame::Refused { object, error } => Owned::Refused {
                object: *object,
                error: error.clone(),
            },
            Frame::PipeOpen {
                stream,
                pipe,
                credit,
                bytes,
            } => Owned::PipeOpen {
                stream: *stream,
                pipe: *pipe,
                credit: *credit,
                bytes: *bytes,
            },
            Frame::PipeItem { stream, item } => Owned::PipeItem {
                stream: *stream,
                item: item.to_vec(),
            },
            Frame::PipeCredit {
                stream,
                items,
                bytes,
            } => Owned::PipeCredit {
                stream: *stream,
                items: *items,
                bytes: *bytes,
            },
            Frame::PipeEnd { stream, error } => Owned::PipeEnd {
                stream: *stream,
                error: error.clone(),
            },
            Frame::PipeClose { stream, error } => Owned::PipeClose {
                stream: *stream,
                error: error.clone(),
            },
            Frame::Cancel { call } => Owned::Cancel(*call),
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One of each variant, with values that exercise the encodings' edges.
fn every_variant() -> Vec<Owned> {
    let call = OwnedCall {
        id: u64::MAX,
        target: ObjectId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        interface: 0xdead_beef,
        method: 7,
        args: vec![0x91, 0xc1, 0x00, 0xff], // bytes that look like msgpack must stay opaque
        chain: u64::MAX,
        once: 1,
        budget: Some(30_000_000),
        trace: None,
    };
    vec![
        Owned::Hello(Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            node: NodeId::from_u128(u128::MAX),
            incarnation: 42,
            listen: Some("127.0.0.1:4433".into()),
            name: Some("bank-1".into()),
            max_frame: 16 << 20,
            window: u32::MAX,
        }),
        Owned::Call(call.clone()),
        Owned::Call(OwnedCall {
            args: Vec::new(),
            ..call.clone()
        }),
        Owned::Call(OwnedCall {
            budget: Some(u64::MAX),
            ..call.clone()
        }),
        Owned::Call(OwnedCall {
            trace: Some(TraceContext {
                trace_id: u128::MAX,
                span_id: 0x0102_0304_0506_0708,
                flags: 1,
            }),
            ..call.clone()
        }),
        Owned::Tell(OwnedCall {
            id: 0,
            budget: None,
            ..call
        }),
        Owned::Cancel(0),
        Owned::Cancel(u64::MAX),
        Owned::Reply {
            call: 3,
            value: (0..=255).collect(),
        },
        Owned::Reply {
            call: 4,
            value: vec![0xab; 70_000], // past bin16
        },
        Owned::Error {
            call: 5,
            error: CallError::ActorStopped,
        },
        Owned::Error {
            call: 6,
            error: CallError::Panicked {
                message: "boom — ünïcødé".into(),
            },
        },
        Owned::Error {
            call: 7,
            error: CallError::Timeout {
                after: Duration::from_millis(30_000),
                may_have_executed: true,
            },
        },
        Owned::Error {
            call: 8,
            error: CallError::VersionMismatch { ours: 1, theirs: 2 },
        },
        Owned::Release(vec![ObjectId::from_u128(1), ObjectId::from_u128(2)]),
        Owned::Release(Vec::new()),
        Owned::Renew((0..100).map(ObjectId::from_u128).collect()),
        Owned::Ping(0),
        Owned::Pong(u64::MAX),
        Owned::Monitor {
            watch: 9,
            object: ObjectId::from_u128(3),
        },
        Owned::Demonitor(9),
        Owned::Down {
            watch: 9,
            reason: StopReason::Linked {
                peer: "n/1".into(),
                reason: Box::new(StopReason::Panicked {
                    message: "deep".into(),
                }),
            },
        },
        Owned::Credit(vec![
            (ObjectId::from_u128(5), 1),
            (ObjectId::from_u128(u128::MAX), u32::MAX),
        ]),
        Owned::Credit(Vec::new()),
        Owned::Refused {
            object: ObjectId::from_u128(6),
            error: CallError::Unauthorized {
                reason: "not yours".into(),
            },
        },
        Owned::Exit {
            object: ObjectId::from_u128(4),
            reason: StopReason::Normal,
        },
    ]
}

fn encode_all(frames: &[Owned], limits: &Limits) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        encode(&frame.frame(), &mut out, limits).expect("encodes");
    }
    out
}

/// A length-prefixed frame with an arbitrary body.
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

type Outcome = Result<Owned, DecodeError>;

/// Takes every complete frame out of `reader`. Stops after `Oversize`, which
/// leaves the stream unusable.
fn drain(reader: &mut FrameReader, into: &mut Vec<Outcome>) -> bool {
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => into.push(Ok(Owned::own(&frame))),
            Ok(None) => return true,
            Err(err @ DecodeError::Malformed(_)) => into.push(Err(err)),
            Err(err @ DecodeError::Oversize { .. }) => {
                into.push(Err(err));
                return false;
            }
            Err(other) => panic!("a decode error this test does not know: {other}"),
        }
    }
}

/// Feeds `bytes` to a fresh reader in chunks of the given sizes (cycled), draining
/// after every chunk as a transport would.
fn read_chunked(bytes: &[u8], sizes: &[usize], limits: Limits) -> (Vec<Outcome>, FrameReader) {
    let mut reader = FrameReader::new(limits);
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(err) = reader.extend(chunk) {
            out.push(Err(err));
            return (out, reader);
        }
        if !drain(&mut reader, &mut out) {
            return (out, reader);
        }
    }
    (out, reader)
}

/// Deterministic split sizes (xorshift), so failures reproduce.
fn pseudo_random_sizes(seed: u64, count: usize, max: usize) -> Vec<usize> {
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x as usize) % max
        })
        .collect()
}

fn small(max_frame: usize) -> Limits {
    Limits {
        max_frame,
        ..Limits::default()
    }
}

/// `n` fixarray-of-one markers around a nil: `n` levels of array nesting.
fn nested_arrays(n: usize) -> Vec<u8> {
    let mut body = vec![0x91; n];
    body.push(0xc0);
    body
}

/// `{"Hello": {"pad": <n nested arrays>}}`: a Hello whose unknown field serde must
/// skip, which walks the whole nesting (the path a depth bound has to stop).
fn hello_with_nested_padding(n: usize) -> Vec<u8> {
    let mut body = vec![0x81, 0xa5];
    body.extend_from_slice(b"Hello");
    body.extend_from_slice(&[0x81, 0xa3]);
    body.extend_from_slice(b"pad");
    body.extend(nested_arrays(n));
    body
}

fn expect_depth_error(result: Result<impl std::fmt::Debug, DecodeError>, what: &str) {
    match result {
        Err(DecodeError::Malformed(msg)) => assert!(
            msg.contains("depth"),
            "{what}: rejected, but not by the depth bound: {msg}"
        ),
        other => panic!("{what}: expected Malformed(depth), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

/// A pipe item whose frame would pass the limit, or whose item does not encode,
/// appends nothing: the frames before it in the buffer are left whole.
#[test]
fn a_pipe_item_that_fails_leaves_the_buffer_as_it_was() {
    let limits = small(64);
    let mut out = vec![1, 2, 3];
    let err = encode_pipe_item(9, &mut out, &limits, |out| {
        out.extend_from_slice(&[0; 100]);
        Ok(())
    })
    .unwrap_err();
    assert!(
        matches!(err, EncodeError::Oversize { max: 64, .. }),
        "{err:?}"
    );
    assert_eq!(out, [1, 2, 3]);
    let err = encode_pipe_item(9, &mut out, &limits, |out| {
        out.push(7);
        Err(EncodeError::Encode("no".into()))
    })
    .unwrap_err();
    assert!(matches!(err, EncodeError::Encode(_)), "{err:?}");
    assert_eq!(out, [1, 2, 3]);
    // Within the limit, it is written after them.
    encode_pipe_item(9, &mut out, &limits, |out| encode_value(&5u8, out)).unwrap();
    assert_eq!(
        decode_frame(&out[7..], &limits).unwrap(),
        Frame::PipeItem {
            stream: 9,
            item: &[5]
        }
    );
}

#[test]
fn every_variant_round_trips_alone() {
    let limits = Limits::default();
    for owned in every_variant() {
        let mut bytes = Vec::new();
        encode(&owned.frame(), &mut bytes, &limits).unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4, "length prefix of {owned:?}");

        assert_eq!(decode_frame(&bytes[4..], &limits).unwrap(), owned.frame());

        let mut reader = FrameReader::new(limits);
        reader.extend(&bytes).unwrap();
        assert_eq!(reader.next_frame().unwrap(), Some(owned.frame()));
        assert_eq!(reader.next_frame().unwrap(), None);
        assert_eq!(reader.buffered(), 0);
    }
}

#[test]
fn back_to_back_frames_one_byte_at_a_time() {
    let frames = every_variant();
    let bytes = encode_all(&frames, &Limits::default());
    let (got, reader) = read_chunked(&bytes, &[1], Limits::default());
    let got: Vec<Owned> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, frames);
    assert_eq!(reader.buffered(), 0);
}

#[test]
fn back_to_back_frames_in_random_splits() {
    let frames = every_variant();
    let bytes = encode_all(&frames, &Limits::default());
    for seed in 1..=50u64 {
        for max in [3, 17, 300, 5000, 100_000] {
            let sizes = pseudo_random_sizes(seed, 64, max);
            let (got, reader) = read_chunked(&bytes, &sizes, Limits::default());
            let got: Vec<Owned> = got.into_iter().map(Result::unwrap).collect();
            assert_eq!(got, frames, "seed {seed}, chunks up to {max}");
            assert_eq!(reader.buffered(), 0, "seed {seed}, chunks up to {max}");
        }
    }
    // And all at once.
    let (got, reader) = read_chunked(&bytes, &[bytes.len()], Limits::default());
    assert_eq!(
        got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        frames
    );
    assert_eq!(reader.buffered(), 0);
}

#[test]
fn truncated_frame_waits_for_the_rest() {
    let owned = Owned::Reply {
        call: 9,
        value: vec![7; 100],
    };
    let bytes = encode_all(std::slice::from_ref(&owned), &Limits::default());
    let mut reader = FrameReader::new(Limits::default());

    // Part of the header, then the header, then all but the last byte.
    let mut fed = 0;
    for end in [2, 4, bytes.len() - 1] {
        reader.extend(&bytes[fed..end]).unwrap();
        fed = end;
        assert_eq!(reader.next_frame().unwrap(), None, "after {end} bytes");
        assert_eq!(reader.buffered(), end);
    }
    reader.extend(&bytes[bytes.len() - 1..]).unwrap();
    assert_eq!(reader.next_frame().unwrap(), Some(owned.frame()));
    assert_eq!(reader.next_frame().unwrap(), None);
    assert_eq!(reader.buffered(), 0);
}

#[test]
fn decode_value_round_trips_arguments() {
    let limits = Limits::default();
    let args: (u64, String, Vec<u8>) = (u64::MAX, "hello, wörld".into(), vec![0, 1, 0xc1, 0xff]);
    let mut bytes = Vec::new();
    encode_value(&args, &mut bytes).unwrap();
    let back: (u64, String, Vec<u8>) = decode_value(&bytes, &limits).unwrap();
    assert_eq!(back, args);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Transfer {
        to: Uuid,
        amount: u64,
        memo: Option<String>,
        tags: Vec<(String, i32)>,
    }
    let transfer = Transfer {
        to: Uuid::from_u128(77),
        amount: 10,
        memo: None,
        tags: vec![("a".into(), -1), ("b".into(), i32::MIN)],
    };
    bytes.clear();
    encode_value(&transfer, &mut bytes).unwrap();
    assert_eq!(decode_value::<Transfer>(&bytes, &limits).unwrap(), transfer);

    // Typed: the same bytes do not decode as another argument list.
    assert!(decode_value::<(u64, u64)>(&bytes, &limits).is_err());
}

// ---------------------------------------------------------------------------
// Oversize
// ---------------------------------------------------------------------------

#[test]
fn oversize_header_is_refused_on_the_announced_length() {
    let max = 100;
    let header = 101u32.to_be_bytes();
    let mut reader = FrameReader::new(small(max));
    assert_eq!(
        reader.extend(&header),
        Err(DecodeError::Oversize { len: 101, max })
    );
    assert_eq!(reader.buffered(), 4, "only the header may be held");
    // The stream is unusable from here on: the reader keeps saying so.
    assert_eq!(
        reader.next_frame().map(|f| f.map(|f| Owned::own(&f))),
        Err(DecodeError::Oversize { len: 101, max })
    );

    // A header split across reads is judged once complete.
    let mut reader = FrameReader::new(small(max));
    assert_eq!(reader.extend(&header[..3]), Ok(()));
    assert_eq!(reader.next_frame().unwrap(), None);
    assert_eq!(
        reader.extend(&header[3..]),
        Err(DecodeError::Oversize { len: 101, max })
    );
    assert_eq!(reader.buffered(), 4);

    // Default limits, largest announceable length.
    let mut reader = FrameReader::new(Limits::default());
    assert_eq!(
        reader.extend(&u32::MAX.to_be_bytes()),
        Err(DecodeError::Oversize {
            len: u32::MAX as usize,
            max: Limits::DEFAULT_MAX_FRAME
        })
    );
    assert_eq!(reader.buffered(), 4);

    // Exactly max_frame is fine.
    let body = {
        let mut b = Vec::new();
        encode_value(&Frame::Ping(1), &mut b).unwrap();
        b
    };
    let mut reader = FrameReader::new(small(body.len()));
    reader.extend(&raw_frame(&body)).unwrap();
    assert_eq!(reader.next_frame().unwrap(), Some(Frame::Ping(1)));
}

/// `extend` documents that it refuses "(before buffering them) bytes that would
/// complete an oversize frame": the body of a refused frame must not accumulate.
#[test]
fn oversize_body_bytes_are_not_buffered() {
    let max = 100;
    let mut reader = FrameReader::new(small(max));
    let mut stream = 1_000_000u32.to_be_bytes().to_vec();
    stream.extend_from_slice(&[0u8; 4096]);
    assert_eq!(
        reader.extend(&stream),
        Err(DecodeError::Oversize {
            len: 1_000_000,
            max
        })
    );
    assert!(
        reader.buffered() <= 4,
        "refused body bytes were buffered: buffered() = {}",
        reader.buffered()
    );
    // A transport that keeps reading must not make the reader grow either.
    for _ in 0..10 {
        assert!(reader.extend(&[0u8; 4096]).is_err());
    }
    assert!(
        reader.buffered() <= 4,
        "refused body bytes were buffered: buffered() = {}",
        reader.buffered()
    );
}

#[test]
fn oversize_frame_after_a_good_one_in_the_same_read() {
    let max = 100;
    let mut stream = encode_all(&[Owned::Ping(1)], &small(max));
    stream.extend_from_slice(&5000u32.to_be_bytes());
    let mut reader = FrameReader::new(small(max));
    // Whether `extend` reports it now or `next_frame` later, the good frame comes
    // first and the oversize one is then reported, every time it is asked for.
    let _ = reader.extend(&stream);
    assert_eq!(reader.next_frame().unwrap(), Some(Frame::Ping(1)));
    for _ in 0..2 {
        assert_eq!(
            reader.next_frame().map(|f| f.map(|f| Owned::own(&f))),
            Err(DecodeError::Oversize { len: 5000, max })
        );
    }
}

#[test]
fn encode_oversize_leaves_the_buffer_as_it_was() {
    let big = Owned::Reply {
        call: 1,
        value: vec![0x5a; 200],
    };
    let body_len = encode_all(std::slice::from_ref(&big), &Limits::default()).len() - 4;

    let mut out = Vec::new();
    encode(&Frame::Ping(7), &mut out, &small(100)).unwrap();
    let before = out.clone();
    assert_eq!(
        encode(&big.frame(), &mut out, &small(100)),
        Err(EncodeError::Oversize {
            len: body_len,
            max: 100
        })
    );
    assert_eq!(
        out, before,
        "the earlier frame must be intact and nothing appended"
    );

    // One byte short of fitting, then exactly fitting.
    assert!(matches!(
        encode(&big.frame(), &mut out, &small(body_len - 1)),
        Err(EncodeError::Oversize { len, max }) if len == body_len && max == body_len - 1
    ));
    assert_eq!(out, before);
    encode(&big.frame(), &mut out, &small(body_len)).unwrap();
    assert_eq!(out.len(), before.len() + 4 + body_len);

    let (got, reader) = read_chunked(&out, &[out.len()], small(body_len));
    assert_eq!(
        got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![Owned::Ping(7), big]
    );
    assert_eq!(reader.buffered(), 0);
}

// ---------------------------------------------------------------------------
// Malformed bodies
// ---------------------------------------------------------------------------

fn garbage_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty body", vec![]),
        ("reserved marker 0xc1", vec![0xc1]),
        ("random bytes", vec![0x13, 0x37, 0xde, 0xad, 0xbe, 0xef]),
        ("a string, not a frame", vec![0xa3, b'a', b'b', b'c']),
        (
            "unknown variant",
            [&[0x81, 0xa4][..], b"Nope", &[0x01]].concat(),
        ),
        (
            "Ping without its nonce",
            [&[0x81, 0xa4][..], b"Ping"].concat(),
        ),
        (
            "u64 cut short",
            [&[0x81, 0xa4][..], b"Ping", &[0xcf, 0, 0]].concat(),
        ),
        // Announces 4 billion uuids in a frame of a few bytes: must fail, not allocate.
        (
            "huge array length",
            [
                &[0x81, 0xa7][..],
                b"Release",
                &[0x91, 0xdd, 0xff, 0xff, 0xff, 0xff],
            ]
            .concat(),
        ),
        (
            "huge bin length",
            [
                &[0x81, 0xa5][..],
                b"Reply",
                &[0x92, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff],
            ]
            .concat(),
        ),
        ("Hello with a short uuid", {
            let mut b = vec![0x81, 0xa5];
            b.extend_from_slice(b"Hello");
            b.extend_from_slice(&[
                0x94, 0xce, 0x52, 0x45, 0x4d, 0x4f, 0x01, 0xc4, 0x03, 1, 2, 3, 0x00,
            ]);
            b
        }),
    ]
}

#[test]
fn malformed_body_costs_one_frame_and_the_stream_recovers() {
    let limits = Limits::default();
    for (what, garbage) in garbage_bodies() {
        assert!(
            matches!(
                decode_frame(&garbage, &limits),
                Err(DecodeError::Malformed(_))
            ),
            "{what}: decode_frame"
        );

        let mut stream = encode_all(&[Owned::Ping(1)], &limits);
        stream.extend(raw_frame(&garbage));
        stream.extend(encode_all(&[Owned::Pong(2)], &limits));

        for sizes in [vec![stream.len()], vec![1], vec![3, 1, 7]] {
            let (got, reader) = read_chunked(&stream, &sizes, limits);
            assert_eq!(got.len(), 3, "{what}: {got:?}");
            assert_eq!(got[0], Ok(Owned::Ping(1)), "{what}");
            assert!(
                matches!(got[1], Err(DecodeError::Malformed(_))),
                "{what}: {:?}",
                got[1]
            );
            assert_eq!(
                got[2],
                Ok(Owned::Pong(2)),
                "{what}: the next frame must decode"
            );
            assert_eq!(reader.buffered(), 0, "{what}");
        }
    }
}

// ---------------------------------------------------------------------------
// Nesting
// ---------------------------------------------------------------------------

#[test]
fn deep_nesting_is_malformed_not_a_stack_overflow() {
    for limits in [
        Limits::default(),
        Limits {
            max_depth: 4,
            ..Limits::default()
        },
    ] {
        // A body that is only nesting.
        let body = nested_arrays(10_000);
        assert!(matches!(
            decode_frame(&body, &limits),
            Err(DecodeError::Malformed(_))
        ));

        // Nesting that serde has to walk (an unknown field being skipped).
        expect_depth_error(
            decode_frame(&hello_with_nested_padding(10_000), &limits),
            "Hello padded with 10 000 nested arrays",
        );
        expect_depth_error(
            decode_value::<IgnoredAny>(&body, &limits).map_err(DecodeError::Malformed),
            "10 000 nested arrays",
        );
        // Maps too: {0: {0: ... nil}}.
        let mut maps = [0x81, 0x00].repeat(10_000);
        maps.push(0xc0);
        expect_depth_error(
            decode_value::<IgnoredAny>(&maps, &limits).map_err(DecodeError::Malformed),
            "10 000 nested maps",
        );

        // Through the reader, and the stream goes on afterwards.
        let mut stream = raw_frame(&hello_with_nested_padding(10_000));
        stream.extend(encode_all(&[Owned::Ping(3)], &limits));
        let (got, reader) = read_chunked(&stream, &[1000], limits);
        assert_eq!(got.len(), 2, "{got:?}");
        expect_depth_error(got[0].clone(), "nested Hello through the reader");
        assert_eq!(got[1], Ok(Owned::Ping(3)));
        assert_eq!(reader.buffered(), 0);
    }

    // A small bound stops shallow nesting that the default lets through. (The
    // padded Hello lacks its real fields, so with the default bound it fails too,
    // but on the missing field, not on the depth.)
    let shallow = hello_with_nested_padding(10);
    match decode_frame(&shallow, &Limits::default()) {
        Err(DecodeError::Malformed(msg)) => assert!(!msg.contains("depth"), "{msg}"),
        other => panic!("{other:?}"),
    }
    expect_depth_error(
        decode_frame(
            &shallow,
            &Limits {
                max_depth: 4,
                ..Limits::default()
            },
        ),
        "Hello padded with 10 nested arrays, max_depth 4",
    );
}

/// `Limits::max_depth` is documented as the "deepest nesting of arrays and maps
/// accepted": a value nested exactly `max_depth` deep must decode, one level more
/// must not.
#[test]
fn max_depth_is_the_deepest_nesting_accepted() {
    for max_depth in [1, 2, 8, Limits::DEFAULT_MAX_DEPTH] {
        let limits = Limits {
            max_depth,
            ..Limits::default()
        };
        assert!(
            decode_value::<IgnoredAny>(&nested_arrays(max_depth + 1), &limits).is_err(),
            "max_depth {max_depth}: {} levels accepted",
            max_depth + 1
        );
        assert!(
            decode_value::<IgnoredAny>(&nested_arrays(max_depth), &limits).is_ok(),
            "max_depth {max_depth}: a value nested exactly {max_depth} deep was refused: {:?}",
            decode_value::<IgnoredAny>(&nested_arrays(max_depth), &limits)
        );
    }
}

/// A value no longer than `max_depth` bytes cannot nest deeper than that, and
/// is decoded without the nesting walk; what else is wrong with it is refused
/// all the same, and what is right decodes the same.
#[test]
fn a_short_value_is_refused_for_what_is_wrong_with_it() {
    let limits = Limits {
        max_depth: 8,
        ..Limits::default()
    };
    // An array of three with one element, a map of two with one key, a
    // string longer than its bytes: all shorter than the bound.
    for short in [&[0x93, 0x01][..], &[0x82, 0x01], &[0xa5, b'a', b'b']] {
        assert!(
            decode_value::<IgnoredAny>(short, &limits).is_err(),
            "{short:02x?} decoded"
        );
    }
    assert_eq!(
        decode_value::<Vec<Option<u8>>>(&[0x93, 0x01, 0xc0, 0x02], &limits),
        Ok(vec![Some(1), None, Some(2)])
    );
    // Exactly as deep as it is long, with and without the walk.
    for max_depth in [3, 4] {
        let limits = Limits {
            max_depth,
            ..Limits::default()
        };
        assert!(decode_value::<IgnoredAny>(&nested_arrays(3), &limits).is_ok());
        assert!(decode_value::<IgnoredAny>(&nested_arrays(max_depth + 1), &limits).is_err());
    }
}

/// `max_depth: 0` is a value a user can configure: it must refuse nested values,
/// not panic (it overflows a counter inside rmp-serde: a panic in debug builds,
/// and in release builds a wrap to 65 535 levels, i.e. no useful bound). Frames
/// have a fixed shape and always decode (`Limits::max_depth` bounds values).
#[test]
fn max_depth_zero_refuses_instead_of_panicking() {
    let limits = Limits {
        max_depth: 0,
        ..Limits::default()
    };
    let call = Owned::Call(OwnedCall {
        id: 1,
        target: ObjectId::from_u128(0),
        interface: 2,
        method: 3,
        args: vec![],
        chain: 0,
        once: 0,
        budget: None,
        trace: None,
    });
    let body = &encode_all(std::slice::from_ref(&call), &Limits::default())[4..];
    let frame = std::panic::catch_unwind(|| decode_frame(body, &limits).map(|f| Owned::own(&f)));
    assert!(
        matches!(&frame, Ok(Ok(decoded)) if *decoded == call),
        "decode_frame of a Call with max_depth 0 must still decode the frame, got {}",
        if frame.is_err() {
            "a panic".to_owned()
        } else {
            format!("{frame:?}")
        }
    );
    let value = std::panic::catch_unwind(|| {
        decode_value::<IgnoredAny>(&nested_arrays(3), &limits).map(|_| ())
    });
    assert!(
        matches!(value, Ok(Err(_))),
        "decode_value of nested arrays with max_depth 0 must be an error, got {}",
        if value.is_err() {
            "a panic".to_owned()
        } else {
            format!("{value:?}")
        }
    );
}

/// A recursive argument type, as a user may declare in a remote interface.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Expr {
    Lit(u8),
    Neg(Box<Expr>),
}

/// `{"Neg": {"Neg": ... {"Lit": 0}}}`, `levels` deep.
fn nested_expr(levels: usize) -> Vec<u8> {
    let mut bytes = [&[0x81, 0xa3][..], b"Neg"].concat().repeat(levels);
    bytes.extend_from_slice(&[0x81, 0xa3]);
    bytes.extend_from_slice(b"Lit");
    bytes.push(0x00);
    bytes
}

/// Enum levels count toward `max_depth` like arrays and maps do.
#[test]
fn enum_nesting_counts_toward_max_depth() {
    let limits = Limits::default();
    let levels = 10 * limits.max_depth;
    let result = decode_value::<Expr>(&nested_expr(levels), &limits);
    assert!(
        result.is_err(),
        "{levels} levels of nested enums were accepted with max_depth {}",
        limits.max_depth
    );
}

const STACK_CHILD: &str = "REMORA_WIRE_TEST_STACK_CHILD";

/// Runs in a child process of `recursive_enum_arguments_are_depth_bounded` (a stack
/// overflow aborts the whole process, so it cannot run in the suite's own).
#[test]
fn recursive_enum_child() {
    let Some(levels) = std::env::var(STACK_CHILD).ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    let bytes = nested_expr(levels);
    let result = decode_value::<Expr>(&bytes, &Limits::default());
    assert!(result.is_err(), "{levels} nested enum levels were accepted");
}

/// `decode_value` decodes method arguments of user types (marshal::decode_args).
/// Nesting through enums must be bounded by `max_depth` like arrays are: a peer
/// must not be able to overflow the node's stack with a deeply nested argument.
#[test]
fn recursive_enum_arguments_are_depth_bounded() {
    // The crafted encoding is the real one.
    let mut shallow = Vec::new();
    encode_value(
        &Expr::Neg(Box::new(Expr::Neg(Box::new(Expr::Lit(0))))),
        &mut shallow,
    )
    .unwrap();
    assert_eq!(shallow, nested_expr(2));
    assert_eq!(
        decode_value::<Expr>(&nested_expr(2), &Limits::default()).unwrap(),
        Expr::Neg(Box::new(Expr::Neg(Box::new(Expr::Lit(0)))))
    );

    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "recursive_enum_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STACK_CHILD, "200000") // ~1 MB: far below the default max_frame
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join("\n");
    assert!(
        output.status.success(),
        "decoding 200 000 nested enum levels with default Limits crashed the process \
         ({}) instead of returning an error; stderr ends with:\n{tail}",
        output.status
    );
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

fn uuid() -> impl Strategy<Value = ObjectId> {
    any::<u128>().prop_map(ObjectId::from_u128)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn call() -> impl Strategy<Value = OwnedCall> {
    (
        any::<u64>(),
        uuid(),
        any::<u64>(),
        any::<u64>(),
        bytes(4096),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(any::<u64>()),
        prop::option::of((any::<u128>(), any::<u64>(), any::<u8>())),
    )
        .prop_map(
            |(id, target, interface, method, args, chain, once, budget, trace)| OwnedCall {
                id,
                target,
                interface,
                method,
                args,
                chain,
                once,
                budget,
                trace: trace.map(|(trace_id, span_id, flags)| TraceContext {
                    trace_id,
                    span_id,
                    flags,
                }),
            },
        )
}

/// A call's context without a trace (a node without the `otel` feature, or a
/// call outside any trace) writes nothing for it: the budget alone, as before
/// there was a trace to carry; with one, it round-trips, and a reader of the
/// shorter form sees no trace.
#[test]
fn a_call_context_without_a_trace_writes_nothing_for_it() {
    let plain = CallContext::with_budget(Some(Duration::from_micros(5)));
    let mut bytes = Vec::new();
    encode_value(&plain, &mut bytes).unwrap();
    assert_eq!(bytes, [0x91, 0x05], "a one-entry array: the budget");
    let mut none = Vec::new();
    encode_value(&CallContext::default(), &mut none).unwrap();
    assert_eq!(none, [0x91, 0xc0], "nil budget, nothing else");
    let traced = CallContext {
        budget: Some(5),
        trace: Some(TraceContext {
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            span_id: 0x00f0_67aa_0ba9_02b7,
            flags: 1,
        }),
    };
    let mut with = Vec::new();
    encode_value(&traced, &mut with).unwrap();
    let limits = Limits::default();
    assert_eq!(decode_value::<CallContext>(&with, &limits), Ok(traced));
    assert_eq!(decode_value::<CallContext>(&bytes, &limits), Ok(plain));
}

fn call_error() -> impl Strategy<Value = CallError> {
    prop_oneof![
        Just(CallError::ActorStopped),
        Just(CallError::NoSuchObject),
        Just(CallError::Cancelled),
        ".{0,64}".prop_map(|message| CallError::Panicked { message }),
        (any::<u64>(), any::<bool>()).prop_map(|(ms, may_have_executed)| CallError::Timeout {
            after: Duration::from_millis(ms),
            may_have_executed,
        }),
        any::<usize>().prop_map(|capacity| CallError::MailboxFull { capacity }),
        (
            any::<u128>(),
            prop::option::of(".{0,16}"),
            prop::option::of("[0-9.:]{0,21}"),
            any::<bool>()
        )
            .prop_map(|(node, name, addr, may_have_executed)| {
                CallError::NodeDown {
                    node: NodeId::from_u128(node),
                    label: NodeLabel::new(name.as_deref(), addr.as_deref()),
                    may_have_executed,
                }
            }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(ours, theirs)| CallError::VersionMismatch { ours, theirs }),
        (any::<usize>(), any::<usize>()).prop_map(|(len, max)| CallError::TooLarge { len, max }),
        ("[a-z:]{0,12}", "[a-z ]{0,24}")
            .prop_map(|(type_name, reason)| CallError::ReplyFailed { type_name, reason }),
    ]
}

fn frame() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u128>(),
            any::<u64>(),
            prop::option::of("[0-9.:]{0,21}"),
            prop::option::of(".{0,16}"),
            any::<u64>(),
            any::<u32>(),
        )
            .prop_map(
                |(magic, version, node, incarnation, listen, name, max_frame, window)| {
                    Owned::Hello(Hello {
                        magic,
                        version,
                        node: NodeId::from_u128(node),
                        incarnation,
                        listen,
                        name,
                        max_frame,
                        window,
                    })
                }
            ),
        call().prop_map(Owned::Call),
        call().prop_map(Owned::Tell),
        (any::<u64>(), bytes(4096)).prop_map(|(call, value)| Owned::Reply { call, value }),
        (any::<u64>(), call_error()).prop_map(|(call, error)| Owned::Error { call, error }),
        prop::collection::vec(uuid(), 0..64).prop_map(Owned::Release),
        prop::collection::vec(uuid(), 0..64).prop_map(Owned::Renew),
        any::<u64>().prop_map(Owned::Ping),
        any::<u64>().prop_map(Owned::Pong),
        prop::collection::vec(
            (any::<u128>().prop_map(ObjectId::from_u128), any::<u32>()),
            0..8
        )
        .prop_map(Owned::Credit),
        (any::<u128>().prop_map(ObjectId::from_u128), call_error())
            .prop_map(|(object, error)| Owned::Refused { object, error }),
        (
            any::<u64>(),
            any::<u128>().prop_map(ObjectId::from_u128),
            any::<u32>(),
            any::<u64>()
        )
            .prop_map(|(stream, pipe, credit, bytes)| Owned::PipeOpen {
                stream,
                pipe,
                credit,
                bytes
            }),
        (any::<u64>(), bytes(4096)).prop_map(|(stream, item)| Owned::PipeItem { stream, item }),
        (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(stream, items, bytes)| {
            Owned::PipeCredit {
                stream,
                items,
                bytes,
            }
        }),
        (any::<u64>(), prop::option::of(call_error()))
            .prop_map(|(stream, error)| Owned::PipeEnd { stream, error }),
        (any::<u64>(), prop::option::of(call_error()))
            .prop_map(|(stream, error)| Owned::PipeClose { stream, error }),
        any::<u64>().prop_map(Owned::Cancel),
    ]
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=700, 1..12)
}

proptest! {
    /// A pipe item written straight into its frame reads back as the frame that
    /// holds the same item, after what the buffer held already (left as it was).
    #[test]
    fn prop_pipe_items_written_into_their_frame_decode_as_the_frame(
        stream in any::<u64>(),
        item in prop::collection::vec(any::<u8>(), 0..70_000),
        before in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let limits = Limits::default();
        let mut out = before.clone();
        let len = encode_pipe_item(stream, &mut out, &limits, |out| {
            out.extend_from_slice(&item);
            Ok(())
        })
        .unwrap();
        prop_assert_eq!(len, item.len());
        prop_assert_eq!(&out[..before.len()], &before[..]);
        let framed = &out[before.len()..];
        let body = u32::from_be_bytes(framed[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(body, framed.len() - 4);
        prop_assert_eq!(
            decode_frame(&framed[4..], &limits).unwrap(),
            Frame::PipeItem { stream, item: &item }
        );
    }

    /// The frames of a call (written field by field for speed) come out byte
    /// for byte as rmp-serde writes them, as every other frame does: with and
    /// without a budget or a trace, with arguments and replies long enough for
    /// each length form of a byte string.
    #[test]
    fn prop_frames_encode_as_rmp_serde_writes_them(
        frame in frame(),
        call in call(),
        long in prop::collection::vec(any::<u8>(), 0..70_000),
        // Every length of MessagePack's uints (uniform u64s are all uint 64).
        reply_to in prop_oneof![0u64..0x200, 0u64..0x2_0000, 0u64..0x2_0000_0000, any::<u64>()],
        // Lengths at the edges of bin 8, bin 16 and bin 32.
        edge in prop_oneof![250usize..262, 65_530usize..65_542],
    ) {
        let edge = vec![7u8; edge];
        let limits = Limits::default();
        let long_call = OwnedCall {
            args: long.clone(),
            id: reply_to,
            chain: reply_to / 3,
            budget: Some(reply_to / 7),
            ..call.clone()
        };
        let frames = [
            frame.frame(),
            Frame::Call(call.borrow()),
            Frame::Tell(call.borrow()),
            Frame::Call(long_call.borrow()),
            Frame::Reply { call: reply_to, value: &long },
            Frame::Reply { call: reply_to, value: &long[..long.len().min(40)] },
            Frame::Reply { call: reply_to, value: &edge },
        ];
        for frame in &frames {
            let mut framed = Vec::new();
            encode(frame, &mut framed, &limits).unwrap();
            let mut serde = Vec::new();
            encode_value(frame, &mut serde).unwrap();
            prop_assert_eq!(&framed[4..], &serde[..], "{:?}", frame);
        }
    }

    #[test]
    fn prop_frames_round_trip_under_any_chunking(
        frames in prop::collection::vec(frame(), 0..12),
        sizes in chunk_sizes(),
    ) {
        let limits = Limits::default();
        let bytes = encode_all(&frames, &limits);
        for owned in &frames {
            let mut one = Vec::new();
            encode(&owned.frame(), &mut one, &limits).unwrap();
            prop_assert_eq!(decode_frame(&one[4..], &limits).unwrap(), owned.frame());
        }
        let (got, reader) = read_chunked(&bytes, &sizes, limits);
        let got: Vec<Owned> = got.into_iter().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got, frames);
        prop_assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn prop_random_bytes_never_panic_the_reader(
        stream in bytes(2048),
        sizes in chunk_sizes(),
        max_frame in 0usize..300,
        max_depth in 1usize..16,
    ) {
        let limits = Limits { max_frame, max_depth, ..Limits::default() };
        let _ = decode_frame(&stream, &limits);
        let (got, _) = read_chunked(&stream, &sizes, limits);
        // Only an Oversize ends the stream, and only as its last outcome.
        for outcome in got.iter().rev().skip(1) {
            prop_assert!(
                !matches!(outcome, Err(DecodeError::Oversize { .. })),
                "Oversize before the end: {:?}",
                got
            );
        }
    }

    /// Well-delimited garbage: every body yields exactly one outcome, and nothing
    /// is left behind (the reader never loses its framing).
    #[test]
    fn prop_garbage_bodies_cost_one_frame_each(
        bodies in prop::collection::vec(bytes(96), 0..16),
        sizes in chunk_sizes(),
        max_depth in 1usize..16,
    ) {
        let limits = Limits { max_frame: 96, max_depth, ..Limits::default() };
        let stream: Vec<u8> = bodies.iter().flat_map(|b| raw_frame(b)).collect();
        let (got, reader) = read_chunked(&stream, &sizes, limits);
        prop_assert_eq!(got.len(), bodies.len());
        for (outcome, body) in got.iter().zip(&bodies) {
            match outcome {
                Ok(frame) => prop_assert_eq!(&decode_frame(body, &limits).unwrap(), &frame.frame()),
                Err(DecodeError::Malformed(_)) => prop_assert!(decode_frame(body, &limits).is_err()),
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(reader.buffered(), 0);
    }

    /// Valid streams with a few bytes overwritten: whatever comes out, no panic.
    #[test]
    fn prop_corrupted_frames_never_panic(
        frames in prop::collection::vec(frame(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        sizes in chunk_sizes(),
    ) {
        let limits = Limits { max_frame: 1 << 16, max_depth: 8, ..Limits::default() };
        let mut stream = encode_all(&frames, &Limits::default());
        for (at, byte) in flips {
            let i = at.index(stream.len());
            stream[i] = byte;
        }
        let _ = read_chunked(&stream, &sizes, limits);
        let _ = decode_frame(&stream[4..], &limits);
    }
}
