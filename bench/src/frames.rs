//! Length-prefixed frames, as the raw-QUIC baselines carry them on one stream
//! (`base.quic.uni.*`, `base.quic.framed.rate`): a little-endian `u32` length,
//! then that many bytes of body.

/// Appends a frame carrying `body` to `out`.
pub fn put(out: &mut Vec<u8>, body: &[u8]) {
    let len = u32::try_from(body.len()).expect("a frame body under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
}

/// Frames gathered from a stream's reads, however the reads cut them.
#[derive(Debug, Default)]
pub struct Frames {
    /// Bytes read and not yet handed out: the start of the next frame.
    pending: Vec<u8>,
}

impl Frames {
    /// Appends `read`, then hands the body of each frame now complete to `frame`,
    /// in order; how many there were.
    pub fn push(&mut self, read: &[u8], mut frame: impl FnMut(&[u8])) -> u64 {
        self.pending.extend_from_slice(read);
        let (mut at, mut count) = (0, 0);
        while let Some(&[a, b, c, d]) = self.pending.get(at..at + 4) {
            let len = u32::from_le_bytes([a, b, c, d]) as usize;
            let Some(body) = self.pending.get(at + 4..at + 4 + len) else {
                break;
            };
            frame(body);
            count += 1;
            at += 4 + len;
        }
        self.pending.drain(..at);
        count
    }

    /// Whether a frame has begun and not ended: a stream must not end here.
    pub fn is_partial(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cut_anywhere_come_out_whole_and_in_order() {
        let mut wire = Vec::new();
        for body in [&b"one"[..], b"", b"three"] {
            put(&mut wire, body);
        }
        for cut in 0..=wire.len() {
            let mut frames = Frames::default();
            let mut bodies = Vec::new();
            let (head, tail) = wire.split_at(cut);
            let count = frames.push(head, |body| bodies.push(body.to_vec()))
                + frames.push(tail, |body| bodies.push(body.to_vec()));
            assert_eq!(count, 3);
            assert_eq!(bodies, [&b"one"[..], b"", b"three"]);
            assert!(!frames.is_partial());
        }
        let mut frames = Frames::default();
        assert_eq!(frames.push(&wire[..5], |_| {}), 0);
        assert!(frames.is_partial());
    }
}
