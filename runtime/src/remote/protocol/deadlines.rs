//! The deadlines of the calls waiting for their replies, earliest first.
//!
//! A call's deadline is almost always its caller's clock plus a timeout the
//! same as the last call's, so deadlines mostly come in the order they are
//! set, and the replies that clear them in that order too. Those queue in a
//! ring, where adding one and taking the earliest cost a few instructions;
//! a deadline earlier than the last one queued (a call with a shorter timeout,
//! or a budget from its own caller) goes to a heap beside it. The earliest of
//! the two fronts is the earliest of all. The order is that of
//! `(deadline, call id)`, ties broken by the id, as one heap would have it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use tokio::time::Instant;

/// `(deadline, call id)` entries, taken out earliest first.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    /// Entries added in order, each no earlier than the one before.
    in_order: VecDeque<(Instant, u64)>,
    /// Entries that came earlier than the last of `in_order`.
    out_of_order: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Deadlines {
    pub(crate) fn push(&mut self, deadline: Instant, call: u64) {
        let entry = (deadline, call);
        match self.in_order.back() {
            Some(last) if entry < *last => self.out_of_order.push(Reverse(entry)),
            _ => self.in_order.push_back(entry),
        }
    }

    /// The earliest entry.
    pub(crate) fn peek(&self) -> Option<(Instant, u64)> {
        let heap = self.out_of_order.peek().map(|&Reverse(entry)| entry);
        match (self.in_order.front().copied(), heap) {
            (Some(ring), Some(heap)) => Some(ring.min(heap)),
            (ring, heap) => ring.or(heap),
        }
    }

    /// Takes the earliest entry out.
    pub(crate) fn pop(&mut self) -> Option<(Instant, u64)> {
        let from_heap = match (self.in_order.front(), self.out_of_order.peek()) {
            (Some(ring), Some(Reverse(heap))) => heap < ring,
            (ring, _) => ring.is_none(),
        };
        match from_heap {
            true => self.out_of_order.pop().map(|Reverse(entry)| entry),
            false => self.in_order.pop_front(),
        }
    }

    /// Keeps only the entries of the calls `keep` says yes to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.in_order.retain(|&(_, call)| keep(call));
        self.out_of_order.retain(|&Reverse((_, call))| keep(call));
    }

    pub(crate) fn len(&self) -> usize {
        self.in_order.len() + self.out_of_order.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn clear(&mut self) {
        self.in_order.clear();
        self.out_of_order.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn entries_in_order_stay_out_of_the_heap_and_come_out_earliest_first() {
        let t0 = Instant::now();
        let mut deadlines = Deadlines::default();
        for call in 0..100 {
            deadlines.push(t0 + Duration::from_millis(call), call);
        }
        assert!(deadlines.out_of_order.is_empty());
        // A shorter timeout: earlier than the last queued, so into the heap.
        deadlines.push(t0 + Duration::from_micros(1500), 100);
        assert_eq!(deadlines.out_of_order.len(), 1);
        let taken: Vec<u64> = std::iter::from_fn(|| deadlines.pop().map(|(_, call)| call))
            .take(4)
            .collect();
        assert_eq!(taken, [0, 1, 100, 2]);
        assert_eq!(deadlines.len(), 97);
        deadlines.retain(|call| call % 2 == 0);
        assert_eq!(deadlines.peek(), Some((t0 + Duration::from_millis(4), 4)));
        deadlines.clear();
        assert!(deadlines.is_empty());
        assert_eq!(deadlines.pop(), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u16),
        Pop,
        Retain(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u16..64).prop_map(Op::Push),
            2 => Just(Op::Pop),
            1 => (2u8..5).prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// Whatever the order of the deadlines, the entries come out as one
        /// heap of `(deadline, call)` would give them.
        #[test]
        fn the_same_order_as_one_heap(ops in proptest::collection::vec(op(), 0..200)) {
            let t0 = Instant::now();
            let mut deadlines = Deadlines::default();
            let mut heap = BinaryHeap::new();
            for (call, op) in (0u64..).zip(ops) {
                match op {
                    Op::Push(ms) => {
                        let at = t0 + Duration::from_millis(u64::from(ms));
                        deadlines.push(at, call);
                        heap.push(Reverse((at, call)));
                    }
                    Op::Pop => {
                        prop_assert_eq!(deadlines.pop(), heap.pop().map(|Reverse(e)| e));
                    }
                    Op::Retain(m) => {
                        deadlines.retain(|c| c % u64::from(m) != 0);
                        heap.retain(|Reverse((_, c))| c % u64::from(m) != 0);
                    }
                }
                prop_assert_eq!(deadlines.len(), heap.len());
                prop_assert_eq!(deadlines.peek(), heap.peek().map(|&Reverse(e)| e));
            }
        }
    }
}
