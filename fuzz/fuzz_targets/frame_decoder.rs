//! Bytes from a peer, straight into the frame decoders: whatever they are, the
//! decoders return frames or errors and never panic, overflow the stack or hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use remora::wire::codec::decode_frame;
use remora::wire::{DecodeError, FrameReader, Limits};

fuzz_target!(|data: &[u8]| {
    // The input as one frame body.
    let _ = decode_frame(data, &Limits::default());

    // The input as a stream, in two reads split where its first byte says, with
    // the default limits and with tight ones (so Oversize and depth are reached).
    let split = data.first().map_or(0, |&b| usize::from(b).min(data.len()));
    let tight = Limits {
        max_frame: 1024,
        max_depth: 8,
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
