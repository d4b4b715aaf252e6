//! A nesting check over raw MessagePack bytes, before any deserializer sees them.
//!
//! rmp-serde counts arrays and maps against its depth limit but not enum variants,
//! so a recursive enum in an argument type could recurse as deep as a frame allows
//! and overflow the stack. In rmp-serde's encoding every level of any Rust value,
//! enums included, is a MessagePack array or map; bounding those bounds the
//! deserializer's recursion, whatever the target type. The walk is iterative.

use rmp::Marker;

/// Checks that `bytes` starts with one MessagePack value nested at most `max_depth`
/// arrays/maps deep (a scalar is depth 0, `[1]` is depth 1).
pub(crate) fn check(bytes: &[u8], max_depth: usize) -> Result<(), String> {
    let mut at = Cursor { bytes, pos: 0 };
    // Elements still to read at each open level.
    let mut open = Levels::default();
    let mut top_done = false;
    loop {
        // Close the levels whose elements have all been read.
        while open.last() == Some(0) {
            open.pop();
        }
        match open.last() {
            Some(_) => open.take_one(),
            None if top_done => return Ok(()),
            None => top_done = true,
        }
        let byte = at.byte()?;
        // The one-byte forms first (most of a frame), without decoding a marker.
        let children = match byte {
            // positive and negative fixint, nil, false, true
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => continue,
            0xa0..=0xbf => {
                at.skip(u64::from(byte & 0x1f))?;
                continue;
            }
            0x90..=0x9f => u64::from(byte & 0x0f),
            0x80..=0x8f => 2 * u64::from(byte & 0x0f),
            _ => match longer_form(byte, &mut at)? {
                Some(children) => children,
                None => continue,
            },
        };
        // A collection.
        if open.len() >= max_depth {
            return Err(format!("nesting depth exceeds the limit of {max_depth}"));
        }
        // Every element costs at least a byte: a count past the bytes left is a lie.
        if children > at.left() {
            return Err("collection longer than the bytes that carry it".into());
        }
        open.push(children);
    }
}

/// A value whose header is longer than one byte (or any value: `check` reads the
/// one-byte forms before it gets here), starting with `byte`: read past its
/// header, and past its bytes if it is a scalar. `Some(elements)` for an array
/// or a map, `None` for anything else.
fn longer_form(byte: u8, at: &mut Cursor<'_>) -> Result<Option<u64>, String> {
    let skip = match Marker::from_u8(byte) {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => 0,
        Marker::U8 | Marker::I8 => 1,
        Marker::U16 | Marker::I16 => 2,
        Marker::U32 | Marker::I32 | Marker::F32 => 4,
        Marker::U64 | Marker::I64 | Marker::F64 => 8,
        Marker::FixStr(n) => u64::from(n),
        Marker::Str8 | Marker::Bin8 => at.number(1)?,
        Marker::Str16 | Marker::Bin16 => at.number(2)?,
        Marker::Str32 | Marker::Bin32 => at.number(4)?,
        // An extension's bytes follow its type byte.
        Marker::FixExt1 => 2,
        Marker::FixExt2 => 3,
        Marker::FixExt4 => 5,
        Marker::FixExt8 => 9,
        Marker::FixExt16 => 17,
        Marker::Ext8 => at.number(1)? + 1,
        Marker::Ext16 => at.number(2)? + 1,
        Marker::Ext32 => at.number(4)? + 1,
        Marker::FixArray(n) => return Ok(Some(u64::from(n))),
        Marker::Array16 => return Ok(Some(at.number(2)?)),
        Marker::Array32 => return Ok(Some(at.number(4)?)),
        Marker::FixMap(n) => return Ok(Some(2 * u64::from(n))),
        Marker::Map16 => return Ok(Some(2 * at.number(2)?)),
        Marker::Map32 => return Ok(Some(2 * at.number(4)?)),
        Marker::Reserved => return Err("reserved MessagePack marker 0xc1".into()),
    };
    at.skip(skip)?;
    Ok(None)
}

/// The open levels of [`check`]: how many elements each has still to read. The
/// first [`Levels::INLINE`] live on the stack (frames nest a few levels deep), so
/// a frame's check allocates nothing unless a value nests deeper.
#[derive(Default)]
struct Levels {
    inline: [u64; Levels::INLINE],
    len: usize,
    deeper: Vec<u64>,
}

impl Levels {
    const INLINE: usize = 16;

    fn len(&self) -> usize {
        self.len
    }

    fn last(&self) -> Option<u64> {
        match self.len {
            0 => None,
            n if n <= Self::INLINE => Some(self.inline[n - 1]),
            _ => self.deeper.last().copied(),
        }
    }

    /// One element of the innermost level is being read.
    fn take_one(&mut self) {
        match self.len {
            0 => {}
            n if n <= Self::INLINE => self.inline[n - 1] -= 1,
            _ => {
                if let Some(left) = self.deeper.last_mut() {
                    *left -= 1;
                }
            }
        }
    }

    fn push(&mut self, children: u64) {
        if self.len < Self::INLINE {
            self.inline[self.len] = children;
        } else {
            self.deeper.push(children);
        }
        self.len += 1;
    }

    fn pop(&mut self) {
        if self.len > Self::INLINE {
            self.deeper.pop();
        }
        self.len -= 1;
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn left(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.pos).ok_or("truncated value")?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.left() {
            return Err("truncated value".into());
        }
        self.pos += n as usize;
        Ok(())
    }

    /// A big-endian length of `width` bytes.
    fn number(&mut self, width: usize) -> Result<u64, String> {
        let raw = self
            .bytes
            .get(self.pos..self.pos + width)
            .ok_or("truncated value")?;
        self.pos += width;
        Ok(raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn depth_counts_arrays_and_maps() {
        assert_eq!(check(&[0x01], 0), Ok(()));
        assert_eq!(check(&[0x91, 0x01], 1), Ok(()));
        assert!(check(&[0x91, 0x01], 0).is_err());
        assert_eq!(check(&[0x91, 0x91, 0x01], 2), Ok(()));
        assert!(check(&[0x91, 0x91, 0x01], 1).is_err());
        assert_eq!(check(&[0x81, 0x01, 0x91, 0x02], 2), Ok(()), "{{1: [2]}}");
    }

    #[test]
    fn deep_input_is_refused_without_recursion() {
        let deep = vec![0x91; 1_000_000];
        assert!(check(&deep, 64).unwrap_err().contains("depth"));
    }

    #[test]
    fn lengths_are_checked_against_the_bytes() {
        assert!(check(&[0xdd, 0xff, 0xff, 0xff, 0xff], 64).is_err());
        assert!(check(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00], 64).is_err());
        assert!(check(&[0xc1], 64).is_err());
        assert!(check(&[], 64).is_err());
    }

    /// A MessagePack value to encode, in every header form a length can take.
    #[derive(Clone, Debug)]
    enum Value {
        Int(i64),
        Bool(bool),
        Nil,
        Float(f64),
        Str(String),
        Bin(Vec<u8>),
        Ext(i8, Vec<u8>),
        Array(Vec<Value>),
        Map(Vec<(Value, Value)>),
    }

    impl Value {
        fn depth(&self) -> usize {
            match self {
                Value::Array(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
                Value::Map(entries) => {
                    let deepest = entries.iter().map(|(k, v)| k.depth().max(v.depth()));
                    1 + deepest.max().unwrap_or(0)
                }
                _ => 0,
            }
        }

        fn encode(&self, out: &mut Vec<u8>) {
            use rmp::encode as e;
            match self {
                Value::Int(n) => drop(e::write_sint(out, *n)),
                Value::Bool(b) => e::write_bool(out, *b).expect("to a Vec"),
                Value::Nil => e::write_nil(out).expect("to a Vec"),
                Value::Float(f) => e::write_f64(out, *f).expect("to a Vec"),
                Value::Str(s) => e::write_str(out, s).expect("to a Vec"),
                Value::Bin(b) => e::write_bin(out, b).expect("to a Vec"),
                Value::Ext(ty, data) => {
                    e::write_ext_meta(out, data.len() as u32, *ty).expect("to a Vec");
                    out.extend_from_slice(data);
                }
                Value::Array(items) => {
                    e::write_array_len(out, items.len() as u32).expect("to a Vec");
                    items.iter().for_each(|item| item.encode(out));
                }
                Value::Map(entries) => {
                    e::write_map_len(out, entries.len() as u32).expect("to a Vec");
                    for (k, v) in entries {
                        k.encode(out);
                        v.encode(out);
                    }
                }
            }
        }
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            // Every integer form: fixint, int 8 to 64 (uniform i64s are
            // almost all int 64).
            prop_oneof![-40i64..130, -200i64..300, -70_000i64..70_000, any::<i64>()]
                .prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Nil),
            any::<f64>().prop_map(Value::Float),
            // Past 31 and 255 bytes: fixstr, str 8 and str 16 headers.
            proptest::collection::vec(any::<char>(), 0..300)
                .prop_map(|chars| Value::Str(chars.into_iter().collect())),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bin),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(ty, data)| Value::Ext(ty, data)),
        ];
        // Wide enough for array 16 and map 16 headers, deep enough to spill
        // past the levels kept on the stack.
        leaf.prop_recursive(24, 400, 20, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..8).prop_map(Value::Map),
            ]
        })
    }

    proptest::proptest! {
        /// Any value passes at its own depth and fails one level short of it;
        /// what follows it does not matter; any strict prefix of it fails.
        #[test]
        fn a_value_passes_exactly_at_its_depth(
            value in value(),
            // Wrapped in up to 40 arrays: past the levels kept on the stack.
            wrap in 0usize..40,
            tail in proptest::collection::vec(0u8..=255, 0..4),
        ) {
            let value = (0..wrap).fold(value, |inner, _| Value::Array(vec![Value::Nil, inner]));
            let mut bytes = Vec::new();
            value.encode(&mut bytes);
            let depth = value.depth();
            proptest::prop_assert_eq!(check(&bytes, depth), Ok(()));
            if depth > 0 {
                let refused = check(&bytes, depth - 1).unwrap_err();
                proptest::prop_assert!(refused.contains("depth"), "{}", refused);
            }
            let mut followed = bytes.clone();
            followed.extend_from_slice(&tail);
            proptest::prop_assert_eq!(check(&followed, depth), Ok(()));
            for cut in 0..bytes.len() {
                proptest::prop_assert!(check(&bytes[..cut], depth).is_err(), "prefix of {} bytes", cut);
            }
        }
    }
}
