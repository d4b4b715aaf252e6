//! Bytes from a peer, straight into the frame decoders: whatever they are, the
//! decoders return frames or errors and never panic, overflow the stack or hang.
//! Every frame decoded is then handed to a session past its handshake (as a
//! connection would), and encodes back to a frame that decodes equal: a
//! `Cancel` naming any call, or a `Call` with any context, is read as it was sent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use remora::wire::codec::{decode_frame, encode};
use remora::wire::{DecodeError, Frame, FrameReader, Incoming, Limits, Session};
use remora::NodeId;

fuzz_target!(|data: &[u8]| {
    // The input as one frame body.
    if let Ok(frame) = decode_frame(data, &Limits::default()) {
        round_trip(&frame);
        receive(frame);
    }

    // The input as a stream, in two reads split where its first byte says, with
    // the default limits and with tight ones (so Oversize and depth are reached).
    let split = data.first().map_or(0, |&b| usize::from(b).min(data.len()));
    let tight = Limits {
        max_frame: 1024,
        max_depth: 8,
        ..Limits::default()
    };
    for limits in [Limits::default(), tight] {
        let mut reader = FrameReader::new(limits);
        for chunk in [&data[..split], &data[split..]] {
            if reader.extend(chunk).is_err() || !drain(&mut reader) {
                break;
            }
        }
    }
});

/// Encoding a decoded frame and decoding it again gives the same frame.
fn round_trip(frame: &Frame<'_>) {
    let mut bytes = Vec::new();
    if encode(frame, &mut bytes, &Limits::default()).is_ok() {
        let again = decode_frame(&bytes[4..], &Limits::default()).expect("re-decodes");
        assert_eq!(&again, frame);
    }
}

/// A session past its handshake takes the frame as a connection would: an
/// error at worst (a second `Hello`), never a panic; a `Cancel` is given back
/// naming the call it named.
fn receive(frame: Frame<'_>) {
    let limits = Limits::default();
    let mut session = Session::new(NodeId::from_u128(2), 1, None, &limits);
    let peer = Session::new(NodeId::from_u128(1), 1, None, &limits);
    session.receive(peer.hello()).expect("a peer's Hello");
    let cancelled = match &frame {
        Frame::Cancel { call } => Some(*call),
        _ => None,
    };
    let incoming = session.receive(frame);
    if let Some(call) = cancelled {
        assert_eq!(incoming, Ok(Incoming::Cancel { call }));
    }
}

/// Takes every complete frame out of `reader`; false once the stream is unusable.
fn drain(reader: &mut FrameReader) -> bool {
    loop {
        match reader.next_frame() {
            Ok(Some(_)) | Err(DecodeError::Malformed(_)) => {}
            Ok(None) => return true,
            Err(DecodeError::Oversize { .. }) => return false,
            // A kind of error added later: the stream is not to be read on.
            Err(_) => return false,
        }
    }
}
