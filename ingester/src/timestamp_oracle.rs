//! Sequence numbers for writes.
//!
//! A sequence number identifies a write (in the WAL, in a persisted file's
//! range, in the WAL reference counts); it does not order writes. Concurrent
//! writes may reach the WAL and the buffer in another order than their
//! numbers. Deduplication uses the numbers, so for the same series and
//! timestamp the later-*sequenced* write wins. Numbers never repeat, across
//! restarts too: the oracle starts above the highest number replayed.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub(crate) struct TimestampOracle(AtomicU64);

impl TimestampOracle {
    /// Starts at `last + 1`.
    pub(crate) fn new(last: u64) -> Self {
        Self(AtomicU64::new(last))
    }

    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ensures future numbers are above `seen`.
    pub(crate) fn observe(&self, seen: u64) {
        self.0.fetch_max(seen, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_repeats() {
        let o = TimestampOracle::new(0);
        assert_eq!(o.next(), 1);
        o.observe(10);
        assert_eq!(o.next(), 11);
        o.observe(3);
        assert_eq!(o.next(), 12);
    }
}
