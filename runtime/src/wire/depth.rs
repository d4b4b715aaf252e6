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
    // Elements still to read at each open level (frames nest a few levels deep:
    // no allocation unless a value nests past 16).
    let mut open: smallvec::SmallVec<[u64; 16]> = smallvec::SmallVec::new();
    let mut top_done = false;
    loop {
        // Close the levels whose elements have all been read.
        while let Some(0) = open.last() {
            open.pop();
        }
        match open.last_mut() {
            Some(left) => *left -= 1,
            None if top_done => return Ok(()),
            None => top_done = true,
        }
        let marker = Marker::from_u8(at.byte()?);
        let children = match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                0
            }
            Marker::U8 | Marker::I8 => at.skip(1).map(|()| 0)?,
            Marker::U16 | Marker::I16 => at.skip(2).map(|()| 0)?,
            Marker::U32 | Marker::I32 | Marker::F32 => at.skip(4).map(|()| 0)?,
            Marker::U64 | Marker::I64 | Marker::F64 => at.skip(8).map(|()| 0)?,
            Marker::FixStr(n) => at.skip(u64::from(n)).map(|()| 0)?,
            Marker::Str8 | Marker::Bin8 => at.sized(1, 0)?,
            Marker::Str16 | Marker::Bin16 => at.sized(2, 0)?,
            Marker::Str32 | Marker::Bin32 => at.sized(4, 0)?,
            Marker::FixExt1 => at.skip(2).map(|()| 0)?,
            Marker::FixExt2 => at.skip(3).map(|()| 0)?,
            Marker::FixExt4 => at.skip(5).map(|()| 0)?,
            Marker::FixExt8 => at.skip(9).map(|()| 0)?,
            Marker::FixExt16 => at.skip(17).map(|()| 0)?,
            Marker::Ext8 => at.sized(1, 1)?,
            Marker::Ext16 => at.sized(2, 1)?,
            Marker::Ext32 => at.sized(4, 1)?,
            Marker::FixArray(n) => u64::from(n),
            Marker::Array16 => at.number(2)?,
            Marker::Array32 => at.number(4)?,
            Marker::FixMap(n) => 2 * u64::from(n),
            Marker::Map16 => 2 * at.number(2)?,
            Marker::Map32 => 2 * at.number(4)?,
            Marker::Reserved => return Err("reserved MessagePack marker 0xc1".into()),
        };
        let is_collection = matches!(
            marker,
            Marker::FixArray(_)
                | Marker::Array16
                | Marker::Array32
                | Marker::FixMap(_)
                | Marker::Map16
                | Marker::Map32
        );
        if is_collection {
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

    /// A length-prefixed string, binary or extension: skips it (plus `extra`
    /// bytes: an extension's type byte). Has no children.
    fn sized(&mut self, width: usize, extra: u64) -> Result<u64, String> {
        let n = self.number(width)?;
        self.skip(n + extra)?;
        Ok(0)
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
}
