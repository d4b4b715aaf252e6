//! The frames of every call, `Call`, `Tell` and `Reply`, written and read by
//! hand.
//!
//! rmp-serde's generic path cost about 900 instructions to encode a reply holding
//! one number and about 470 to decode a frame, for frames a few dozen bytes
//! long that every call sends twice. These are written here field by field,
//! byte for byte as rmp-serde writes them ([`write`]), and read back in exactly
//! that form ([`read`]). Anything else, including a call frame in another form
//! rmp-serde would also accept (a field as a signed integer, a struct as a map),
//! goes to rmp-serde, which reads it or says what is wrong with it. The tests
//! hold both halves to rmp-serde: the same bytes written, the same frame read,
//! and on any input [`read`] accepts, the same frame rmp-serde reads.
//!
//! A pipe item's frame head is written here too ([`write_pipe_item_head`]), for
//! `codec::encode_pipe_item`, which writes the item straight after it.
//!
//! A frame read here skips the depth check: its nesting is fixed (a map, its
//! array, the context's array), below the depth every frame is allowed; the
//! arguments and the reply inside it are byte strings, checked when they are
//! decoded.

use super::codec::{encode_value, EncodeError};
use super::frame::{Call, CallContext, Frame, ObjectId};

/// Appends `frame`'s MessagePack encoding: a call's frame by hand, any other
/// frame (and a call carrying a trace context) through rmp-serde.
pub(super) fn write(frame: &Frame<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match frame {
        Frame::Call(call) => write_call(b"Call", call, out),
        Frame::Tell(call) => write_call(b"Tell", call, out),
        Frame::Reply { call, value } => {
            write_variant(b"Reply", 2, out);
            write_uint(*call, out);
            write_bin(value, out)
        }
        other => encode_value(other, out),
    }
}

/// A [`Frame::PipeItem`] of `stream` up to its item: the item follows as a byte
/// string, whose header the caller writes (`codec::encode_pipe_item` writes
/// the item straight after it).
pub(super) fn write_pipe_item_head(stream: u64, out: &mut Vec<u8>) {
    write_variant(b"PipeItem", 2, out);
    write_uint(stream, out);
}

/// A struct variant's head as rmp-serde writes it: a map of one entry, the
/// variant's name, then its `fields` as an array.
fn write_variant(name: &[u8], fields: u8, out: &mut Vec<u8>) {
    debug_assert!(name.len() < 32 && fields < 16, "fixstr and fixarray only");
    out.push(0x81); // fixmap of 1
    out.push(0xa0 | name.len() as u8); // fixstr
    out.extend_from_slice(name);
    out.push(0x90 | fields); // fixarray
}

/// A newtype variant holding a [`Call`]: written as a struct variant of its
/// 8 fields would be, which is how rmp-serde writes it.
fn write_call(name: &[u8], call: &Call<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    write_variant(name, 8, out);
    write_uint(call.id, out);
    write_bin(call.target.as_uuid().as_bytes(), out)?;
    write_uint(call.interface, out);
    write_uint(call.method, out);
    write_bin(call.args, out)?;
    write_uint(call.chain, out);
    write_uint(call.once, out);
    match call.context {
        CallContext {
            budget,
            trace: None,
        } => {
            out.push(0x91); // fixarray of 1: the trace is left out
            match budget {
                Some(budget) => write_uint(budget, out),
                None => out.push(0xc0), // nil
            }
            Ok(())
        }
        context => encode_value(&context, out),
    }
}

/// An unsigned integer in its shortest form, as rmp-serde writes a `u64`
/// (MessagePack's positive fixint, `uint 8/16/32/64`). Written here rather
/// than through `rmp::encode::write_uint`, whose `io::Write` plumbing cost
/// more than the bytes.
fn write_uint(n: u64, out: &mut Vec<u8>) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// A byte string, as rmp-serde writes `serde_bytes`: `bin 8/16/32` by length.
fn write_bin(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = bytes.len();
    out.reserve(5 + len);
    match len {
        0..=0xff => out.extend_from_slice(&[0xc4, len as u8]),
        0x100..=0xffff => {
            out.push(0xc5);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            let len = u32::try_from(len)
                .map_err(|_| EncodeError::Encode("a byte string past 4 GiB".into()))?;
            out.push(0xc6);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
    Ok(())
}

/// Reads `body` as a call's frame in the form [`write`] writes it (with no trace
/// context); `None` if it is any other frame or departs from that form in any
/// way, for rmp-serde to read or refuse. Bytes after the frame are ignored, as
/// rmp-serde ignores them.
pub(super) fn read(body: &[u8]) -> Option<Frame<'_>> {
    let mut at = Reader { bytes: body };
    let name = at.variant()?;
    match name {
        b"Call" | b"Tell" => {
            at.expect(0x98)?;
            // Fields are read in the order they are written.
            let call = Call {
                id: at.uint()?,
                target: ObjectId::from(uuid::Uuid::from_bytes(at.bin()?.try_into().ok()?)),
                interface: at.uint()?,
                method: at.uint()?,
                args: at.bin()?,
                chain: at.uint()?,
                once: at.uint()?,
                context: {
                    at.expect(0x91)?;
                    CallContext {
                        budget: at.nil_or_uint()?,
                        trace: None,
                    }
                },
            };
            Some(match name {
                b"Call" => Frame::Call(call),
                _ => Frame::Tell(call),
            })
        }
        b"Reply" => {
            at.expect(0x92)?;
            let call = at.uint()?;
            let value = at.bin()?;
            Some(Frame::Reply { call, value })
        }
        _ => None,
    }
}

/// The bytes of a frame not read yet.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.byte()? == byte).then_some(())
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(taken)
    }

    /// A big-endian number of `N` (at most 8) bytes.
    fn be<const N: usize>(&mut self) -> Option<u64> {
        let raw = self.take(N)?;
        // One load and a byte swap, where a fold shifts byte by byte.
        let mut wide = [0u8; 8];
        wide[8 - N..].copy_from_slice(raw);
        Some(u64::from_be_bytes(wide))
    }

    /// A struct variant's head: a map of one entry keyed by the variant's name
    /// as a fixstr; the name.
    fn variant(&mut self) -> Option<&'a [u8]> {
        self.expect(0x81)?;
        match self.byte()? {
            head @ 0xa0..=0xbf => self.take(usize::from(head & 0x1f)),
            _ => None,
        }
    }

    /// An unsigned integer in any of MessagePack's unsigned forms.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            n @ 0..=0x7f => Some(u64::from(n)),
            0xcc => self.be::<1>(),
            0xcd => self.be::<2>(),
            0xce => self.be::<4>(),
            0xcf => self.be::<8>(),
            _ => None,
        }
    }

    fn nil_or_uint(&mut self) -> Option<Option<u64>> {
        if self.bytes.first() == Some(&0xc0) {
            self.bytes = &self.bytes[1..];
            return Some(None);
        }
        self.uint().map(Some)
    }

    /// A byte string (`bin 8/16/32`), borrowed.
    fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            0xc4 => self.be::<1>()?,
            0xc5 => self.be::<2>()?,
            0xc6 => self.be::<4>()?,
            _ => return None,
        };
        self.take(usize::try_from(len).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{read, write};
    use crate::wire::codec::{decode_value, encode_value, Limits};
    use crate::wire::{Call, CallContext, Frame, ObjectId, TraceContext};

    /// The fields of a call, a reply's value, and which frame to make of them.
    #[derive(Clone, Debug)]
    struct Fields {
        kind: u8,
        numbers: [u64; 5],
        target: u128,
        bytes: Vec<u8>,
        budget: Option<u64>,
        trace: Option<(u128, u64, u8)>,
    }

    impl Fields {
        fn frame(&self) -> Frame<'_> {
            let [id, interface, method, chain, once] = self.numbers;
            let call = Call {
                id,
                target: ObjectId::from_u128(self.target),
                interface,
                method,
                args: &self.bytes,
                chain,
                once,
                context: CallContext {
                    budget: self.budget,
                    trace: self.trace.map(|(trace_id, span_id, flags)| TraceContext {
                        trace_id,
                        span_id,
                        flags,
                    }),
                },
            };
            match self.kind % 3 {
                0 => Frame::Call(call),
                1 => Frame::Tell(call),
                _ => Frame::Reply {
                    call: id,
                    value: &self.bytes,
                },
            }
        }
    }

    /// Numbers of every uint length (uniform u64s are all uint 64).
    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..0x200,
            0u64..0x2_0000,
            0u64..0x2_0000_0000,
            any::<u64>()
        ]
    }

    fn fields() -> impl Strategy<Value = Fields> {
        (
            any::<u8>(),
            [number(), number(), number(), number(), number()],
            any::<u128>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(any::<u8>(), 250..262),
                prop::collection::vec(any::<u8>(), 65_530..65_542),
            ],
            prop::option::of(number()),
            prop::option::of((any::<u128>(), any::<u64>(), any::<u8>())),
        )
            .prop_map(|(kind, numbers, target, bytes, budget, trace)| Fields {
                kind,
                numbers,
                target,
                bytes,
                budget,
                trace,
            })
    }

    /// A byte to write over another: any, or a MessagePack marker (an int where
    /// a uint was, a map for an array, a str for a bin, ...).
    fn edit() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            prop::sample::select(vec![
                0x00, 0x7f, 0x80, 0x81, 0x90, 0x91, 0x92, 0x98, 0xa4, 0xa5, 0xc0, 0xc1, 0xc2, 0xc4,
                0xc5, 0xc6, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xd9, 0xda,
                0xdc, 0xde, 0xe0, 0xff,
            ]),
        ]
    }

    fn serde_reads(bytes: &[u8]) -> Result<Frame<'_>, String> {
        decode_value::<Frame<'_>>(bytes, &Limits::default())
    }

    /// Signed integers where a call id is due: rmp-serde takes a non-negative
    /// one as the number and refuses a negative one; `read` leaves both to it.
    #[test]
    fn a_signed_call_id_is_left_to_rmp_serde() {
        for (int, expected) in [
            (&[0xd0, 0x05][..], Some(5)),
            (&[0xd0, 0xfb][..], None),
            (&[0xd1, 0x00, 0x05][..], Some(5)),
            (&[0xd1, 0xff, 0xfb][..], None),
            (&[0xd2, 0, 0, 0, 0x05][..], Some(5)),
            (
                &[0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb][..],
                None,
            ),
            (&[0xfb][..], None),
        ] {
            let mut bytes = vec![0x81, 0xa5, b'R', b'e', b'p', b'l', b'y', 0x92];
            bytes.extend_from_slice(int);
            bytes.extend_from_slice(&[0xc4, 0x00]);
            assert_eq!(read(&bytes), None, "{int:02x?}");
            let read_by_serde = serde_reads(&bytes).ok().map(|frame| match frame {
                Frame::Reply { call, .. } => call,
                other => panic!("{other:?}"),
            });
            assert_eq!(read_by_serde, expected, "{int:02x?}");
        }
    }

    proptest! {
        /// What `write` writes is what rmp-serde writes, and `read` reads it
        /// back whole, except a call with a trace, which it leaves to rmp-serde.
        #[test]
        fn a_call_frame_is_written_as_rmp_serde_writes_it_and_read_back(fields in fields()) {
            let frame = fields.frame();
            let mut ours = Vec::new();
            write(&frame, &mut ours).unwrap();
            let mut theirs = Vec::new();
            encode_value(&frame, &mut theirs).unwrap();
            prop_assert_eq!(&ours, &theirs);
            let traced = fields.trace.is_some() && fields.kind % 3 != 2;
            prop_assert_eq!(read(&ours), (!traced).then(|| frame.clone()));
            prop_assert_eq!(serde_reads(&ours), Ok(frame));
        }

        /// On bytes `read` accepts, rmp-serde reads the same frame: whatever
        /// was overwritten, cut off or added to a call frame's bytes.
        #[test]
        fn what_read_accepts_rmp_serde_reads_the_same(
            fields in fields(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), edit()), 0..6),
            cut in any::<prop::sample::Index>(),
            tail in prop::collection::vec(any::<u8>(), 0..4),
        ) {
            let mut bytes = Vec::new();
            write(&fields.frame(), &mut bytes).unwrap();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            bytes.extend_from_slice(&tail);
            if let Some(frame) = read(&bytes) {
                prop_assert_eq!(serde_reads(&bytes), Ok(frame));
            }
        }
    }
}
