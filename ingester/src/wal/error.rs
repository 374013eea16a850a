//! The WAL's one error type.
//!
//! Every variant names the segment file (and, for corruption, the byte
//! offset) involved, so an operator reading a start-up failure knows which file
//! to inspect without attaching a debugger.

use std::{io, path::PathBuf, sync::Arc};

use super::SegmentId;

/// Errors returned by the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file-system operation outside the write path failed (listing,
    /// creating, reading or deleting a segment, syncing the directory).
    #[error("WAL I/O error: cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being attempted, e.g. "create segment".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Writing or syncing a group of operations failed. None of the
    /// operations of the group were acknowledged, and the segment was
    /// truncated back to its last durable entry.
    #[error("WAL write to segment {segment} ({}) failed, operation not durable: {source}", path.display())]
    Write {
        /// The open segment the group was written to.
        segment: SegmentId,
        /// Its path.
        path: PathBuf,
        /// The write or fdatasync error, shared by every operation of the group.
        #[source]
        source: Arc<io::Error>,
    },

    /// An earlier write failure could not be undone (the segment could not be
    /// truncated back to its last good entry), so the WAL refuses all further
    /// appends rather than write after garbage. Restarting replays the WAL and
    /// drops the torn tail.
    #[error("WAL is failed and refuses writes until restarted: {reason}")]
    Failed {
        /// What happened first.
        reason: Arc<str>,
    },

    /// A segment holds bytes that are not a torn final write: a bad checksum,
    /// length, header or compressed body. Start-up must stop.
    #[error("WAL segment {} is corrupt at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset in the file of the bad header or entry.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// An operation's payload is larger than one WAL entry can hold.
    #[error("WAL operation {sequence_number} has {bytes} bytes, more than the maximum of {max}")]
    OpTooLarge {
        /// The operation's sequence number.
        sequence_number: u64,
        /// Its payload size.
        bytes: usize,
        /// The limit, [`super::MAX_OP_BYTES`].
        max: usize,
    },

    /// `delete_segment` was asked to delete the segment being written.
    #[error("WAL segment {0} is open for writing and cannot be deleted")]
    SegmentOpen(SegmentId),

    /// `delete_segment` was asked to delete a segment the WAL does not know of
    /// (never existed, or already deleted).
    #[error("WAL segment {0} is not a closed segment of this WAL")]
    UnknownSegment(SegmentId),

    /// Another process (or another `Wal` in this one) holds the directory.
    #[error("WAL directory {} is in use by another writer (lock file held)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// The WAL was shut down (or its writer thread stopped); nothing more is
    /// written.
    #[error("WAL is shut down")]
    ShutDown,

    /// Registering the WAL's metrics failed (e.g. registered twice in one
    /// registry).
    #[error("cannot register WAL metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl WalError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: usize,
        reason: impl Into<String>,
    ) -> Self {
        Self::Corrupt {
            path: path.into(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }
}
