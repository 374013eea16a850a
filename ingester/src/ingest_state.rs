//! Whether the ingester accepts writes right now, and why not.
//!
//! Checked on every write before any work is done, so a refused write costs
//! one atomic load. Set by the parts that know: start-up (replaying), the
//! control RPC (draining), shutdown, the persist queue (saturated). Buffer
//! memory is accounted here too: the buffer adds and releases bytes, writes
//! are refused while the total is over the limit.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// A reason writes are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum IngestStateError {
    /// Start-up: the WAL is being replayed.
    Starting = 1 << 0,
    /// `PrepareShutdown` was called.
    Draining = 1 << 1,
    /// The process is stopping.
    ShuttingDown = 1 << 2,
    /// The persist queue is full.
    PersistSaturated = 1 << 3,
    /// The WAL volume is over its usage limit.
    DiskFull = 1 << 4,
}

impl IngestStateError {
    const ALL: [Self; 5] = [
        Self::Starting,
        Self::Draining,
        Self::ShuttingDown,
        Self::PersistSaturated,
        Self::DiskFull,
    ];
}

/// Shared flags plus buffer memory accounting.
#[derive(Debug)]
pub(crate) struct IngestState {
    flags: AtomicU8,
    buffer_bytes: AtomicU64,
    buffer_limit: u64,
}

impl IngestState {
    pub(crate) fn new(buffer_limit: u64) -> Self {
        Self {
            flags: AtomicU8::new(IngestStateError::Starting as u8),
            buffer_bytes: AtomicU64::new(0),
            buffer_limit,
        }
    }

    pub(crate) fn set(&self, e: IngestStateError) {
        self.flags.fetch_or(e as u8, Ordering::AcqRel);
    }

    pub(crate) fn unset(&self, e: IngestStateError) {
        self.flags.fetch_and(!(e as u8), Ordering::AcqRel);
    }

    pub(crate) fn is_set(&self, e: IngestStateError) -> bool {
        self.flags.load(Ordering::Acquire) & e as u8 != 0
    }

    /// The first reason writes are refused, if any.
    pub(crate) fn check(&self) -> Result<(), IngestStateError> {
        let f = self.flags.load(Ordering::Acquire);
        if f == 0 {
            return Ok(());
        }
        Err(*IngestStateError::ALL
            .iter()
            .find(|e| f & **e as u8 != 0)
            .expect("a set bit is one of ALL"))
    }

    pub(crate) fn add_buffer_bytes(&self, n: u64) {
        self.buffer_bytes.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn release_buffer_bytes(&self, n: u64) {
        self.buffer_bytes.fetch_sub(n, Ordering::AcqRel);
    }

    pub(crate) fn buffer_bytes(&self) -> u64 {
        self.buffer_bytes.load(Ordering::Acquire)
    }

    /// `Err((used, limit))` when buffer memory is over its limit.
    pub(crate) fn check_buffer(&self) -> Result<(), (u64, u64)> {
        let used = self.buffer_bytes();
        if used >= self.buffer_limit {
            Err((used, self.buffer_limit))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_report_first_reason_and_clear() {
        let s = IngestState::new(100);
        assert_eq!(s.check(), Err(IngestStateError::Starting));
        s.unset(IngestStateError::Starting);
        assert_eq!(s.check(), Ok(()));
        s.set(IngestStateError::PersistSaturated);
        s.set(IngestStateError::Draining);
        assert_eq!(s.check(), Err(IngestStateError::Draining));
        s.unset(IngestStateError::Draining);
        assert_eq!(s.check(), Err(IngestStateError::PersistSaturated));
        s.unset(IngestStateError::PersistSaturated);
        assert!(s.check().is_ok());
    }

    #[test]
    fn buffer_limit() {
        let s = IngestState::new(100);
        s.add_buffer_bytes(99);
        assert!(s.check_buffer().is_ok());
        s.add_buffer_bytes(1);
        assert_eq!(s.check_buffer(), Err((100, 100)));
        s.release_buffer_bytes(50);
        assert!(s.check_buffer().is_ok());
    }
}

/// The ingester's lifecycle, as `Status` and `/ready` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    Starting = 1,
    Replaying = 2,
    Ready = 3,
    Draining = 4,
    Drained = 5,
}

/// An atomic [`Phase`].
#[derive(Debug)]
pub(crate) struct PhaseCell(AtomicU8);

impl PhaseCell {
    pub(crate) fn new() -> Self {
        Self(AtomicU8::new(Phase::Starting as u8))
    }

    pub(crate) fn set(&self, p: Phase) {
        self.0.store(p as u8, Ordering::Release);
    }

    pub(crate) fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            1 => Phase::Starting,
            2 => Phase::Replaying,
            3 => Phase::Ready,
            4 => Phase::Draining,
            _ => Phase::Drained,
        }
    }
}

impl Default for PhaseCell {
    fn default() -> Self {
        Self::new()
    }
}
