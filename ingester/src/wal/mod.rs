//! The write-ahead log: durable, group-committed, segment files.
//!
//! The WAL stores opaque operations ([`WalOp`]: a sequence number and a
//! payload) and knows nothing of what they mean; replay hands them back to
//! whoever encoded them.
//!
//! # Guarantees
//!
//! - [`Wal::append`] resolves `Ok` only after the op's entry is written and
//!   `fdatasync`ed; the returned [`SegmentId`] is the segment holding it.
//!   An `Err` means the op was NOT acknowledged. (It may still be found on
//!   replay if the process dies in the middle of undoing the failed write; an
//!   unacknowledged write is allowed to survive, an acknowledged one is never
//!   allowed to vanish.)
//! - Dropping an `append` future after it was polled once does not retract the
//!   op: it is already queued and will be written.
//! - Segment ids only grow, also across restarts (max existing + 1).
//! - At [`Wal::open`], a torn final write in the newest segment is truncated
//!   with a warning; any other damage is [`WalError::Corrupt`], naming the file
//!   and byte offset. See `recovery.rs` for why that distinction is sound.
//!
//! # Concurrency
//!
//! ```text
//!  append() ×N (caller tasks)            writer thread (std::thread, owns the file)
//!  ─ build op record here ──────┐        ┌──────────────────────────────────────────┐
//!  ─ send record + oneshot ─────┼──────▶ │ block for 1st request, drain the queue    │
//!  rotate() / shutdown() ───────┘  mpsc  │ one writev + one fdatasync per group      │
//!                                        │ reply to every waiter; rotate by size/age │
//!  ◀── oneshot: Ok(segment id) ───────── └──────────────────────────────────────────┘
//! ```
//!
//! Exception: a small op appended while the WAL is idle (nothing queued,
//! nobody committing) is committed by the appending task itself, on its own
//! thread, under the same lock the writer thread commits under (see
//! `writer.rs`, and `WalConfig::inline_max_bytes`).
//!
//! The op record (header + payload copy) is built in the appending task, in
//! parallel across writers; the single writer thread only checksums and
//! writes. Payloads are stored uncompressed (see `segment.rs` for why).
//! Requests that arrive while an fdatasync runs form the next group (see
//! `writer.rs`).
//! Rotation is a message on the same queue, so it is ordered with appends.
//!
//! Closed segments are announced to every [`Wal::subscribe_rotations`]
//! receiver, whatever caused the rotation, so the persist system learns of each
//! one; [`Wal::delete_segment`] removes one once its data is persisted.
//!
//! # Bounds
//!
//! One group holds at most `max_group_bytes` of records (or a single larger
//! op); one op at most [`MAX_OP_BYTES`]. The queue itself is unbounded, but
//! every queued op has a caller awaiting it, so the write path's own
//! concurrency limit bounds it. A directory lock file (`LOCK`) stops two
//! writers from sharing a directory.

mod error;
mod metrics;
mod reader;
mod reclaim;
mod recovery;
mod reference_tracker;
mod segment;
mod usage;
mod wal_sink;
mod writer;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc as std_mpsc,
    },
    time::Duration,
};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

pub use error::WalError;
pub use reader::SegmentReader;
pub(crate) use reference_tracker::ReferenceTracker;
pub use segment::MAX_OP_BYTES;
pub(crate) use usage::spawn_usage_guard;
pub use usage::{UsageLimit, WalLimitOptions};
pub(crate) use wal_sink::WalSink;

use metrics::Metrics;
use reclaim::Reclaimer;
use recovery::Recovered;
use writer::{Core, CoreCell, Faults, PendingAppend, Request, Writer, create_segment};

/// Default size at which a segment is rotated.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 128 << 20;
/// Default age (of its first entry) at which a segment is rotated.
pub const DEFAULT_MAX_SEGMENT_AGE: Duration = Duration::from_secs(15 * 60);
/// Default cap on the records of one group commit.
pub const DEFAULT_MAX_GROUP_BYTES: usize = 8 << 20;
/// Default size limit of a record committed on the appending thread: a
/// write of a few hundred lines; fdatasync of that much takes about as long
/// as of one line.
pub const DEFAULT_INLINE_MAX_BYTES: usize = 64 << 10;
/// Default zeros written ahead of small entries (see `writer.rs`): one
/// extension per few hundred one-line writes.
pub const DEFAULT_PREWRITE_BYTES: usize = 256 << 10;

/// Name of the lock file in the WAL directory.
const LOCK_FILE: &str = "LOCK";

/// WAL settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Directory holding the segment files (created if missing).
    pub dir: PathBuf,
    /// Rotate once the open segment reaches this many bytes (checked after
    /// each entry, so a segment exceeds it by at most one entry).
    pub max_segment_bytes: u64,
    /// Rotate once the open segment's FIRST entry is this old. Measured from
    /// the first entry, not creation, so an idle WAL does not produce a stream
    /// of empty segments. `None`: no age limit.
    pub max_segment_age: Option<Duration>,
    /// Cap on the bytes of op records in one group commit: bounds the latency
    /// of the ops in it and the writer's memory.
    pub max_group_bytes: usize,
    /// An op record up to this size, appended while the WAL is idle, is
    /// written and synced on the appending thread instead of the writer
    /// thread (see `writer.rs`): two thread wake-ups less per write. Larger
    /// ones always go to the writer thread, so a long fdatasync never holds
    /// up an async worker. 0 turns it off.
    pub inline_max_bytes: usize,
    /// When a small entry would end past the segment file's end, this many
    /// bytes of zeros are written after it, so the entries that follow
    /// overwrite them and their fdatasync has no new size to write (see
    /// `writer.rs`). 0 turns it off.
    pub prewrite_bytes: usize,
}

impl WalConfig {
    /// Defaults for everything but the directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            max_segment_age: Some(DEFAULT_MAX_SEGMENT_AGE),
            max_group_bytes: DEFAULT_MAX_GROUP_BYTES,
            inline_max_bytes: DEFAULT_INLINE_MAX_BYTES,
            prewrite_bytes: DEFAULT_PREWRITE_BYTES,
        }
    }
}

/// An operation as the WAL sees it: opaque bytes with a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOp {
    /// Identifies the write (for reference counting); need not be ordered.
    pub sequence_number: u64,
    /// The encoded operation.
    pub payload: Bytes,
}

/// Identifies a segment file; ids only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(u64);

impl SegmentId {
    /// Wrap a raw id.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a segment was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RotationReason {
    /// It reached `max_segment_bytes`.
    Size,
    /// Its first entry reached `max_segment_age`.
    Age,
    /// [`Wal::rotate`] was called.
    Requested,
}

impl RotationReason {
    /// Label value used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Age => "age",
            Self::Requested => "requested",
        }
    }
}

/// A segment that was closed by rotation: fsynced, never written again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedSegment {
    /// Its id.
    pub id: SegmentId,
    /// Its file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The sequence numbers of the ops it holds, ascending, without
    /// duplicates. Shared (`Arc`) because every subscriber gets a copy.
    /// Empty when the segment holds no op; such a segment can be deleted at once.
    pub sequence_numbers: Arc<[u64]>,
    /// Smallest sequence number held, if any.
    pub min_sequence_number: Option<u64>,
    /// Largest sequence number held, if any.
    pub max_sequence_number: Option<u64>,
    /// What caused the rotation.
    pub reason: RotationReason,
}

/// An existing segment found by [`Wal::open`], to be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its id.
    pub id: SegmentId,
    /// Its file.
    pub path: PathBuf,
    /// Its size in bytes (after any torn-tail truncation).
    pub bytes: u64,
}

impl SegmentFile {
    /// Open a reader over this segment's ops.
    pub fn reader(&self) -> Result<SegmentReader, WalError> {
        SegmentReader::open(&self.path)
    }
}

/// A snapshot of the WAL's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalStats {
    /// Segment files on disk, the open one included.
    pub segments: usize,
    /// Their total size.
    pub bytes: u64,
    /// The segment being written.
    pub open_segment: SegmentId,
    /// Its size.
    pub open_segment_bytes: u64,
    /// Closed segments not yet deleted, oldest first.
    pub closed_segments: Vec<SegmentId>,
}

/// State shared by the handles and the writer thread. Locks are held only to
/// read or update these fields, never across I/O.
pub(crate) struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<ClosedSegment>>>,
    metrics: Metrics,
}

struct State {
    open: SegmentId,
    open_bytes: u64,
    closed: BTreeMap<SegmentId, u64>,
    closed_bytes: u64,
}

impl Shared {
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self.state.lock();
        let r = f(&mut s);
        self.metrics.segments.set(s.closed.len() as i64 + 1);
        self.metrics
            .bytes
            .set((s.closed_bytes + s.open_bytes) as i64);
        r
    }

    fn set_open_bytes(&self, bytes: u64) {
        self.with_state(|s| s.open_bytes = bytes);
    }

    fn rotated(&self, closed: &ClosedSegment, open: SegmentId, open_bytes: u64) {
        self.with_state(|s| {
            s.closed.insert(closed.id, closed.bytes);
            s.closed_bytes += closed.bytes;
            s.open = open;
            s.open_bytes = open_bytes;
        });
    }

    /// Remove `id` from the closed set (to delete it); its size is returned
    /// so a failed deletion can put it back.
    fn take_closed(&self, id: SegmentId) -> Result<u64, WalError> {
        self.with_state(|s| {
            if id == s.open {
                return Err(WalError::SegmentOpen(id));
            }
            let bytes = s.closed.remove(&id).ok_or(WalError::UnknownSegment(id))?;
            s.closed_bytes -= bytes;
            Ok(bytes)
        })
    }

    fn restore_closed(&self, id: SegmentId, bytes: u64) {
        self.with_state(|s| {
            s.closed.insert(id, bytes);
            s.closed_bytes += bytes;
        });
    }

    fn publish(&self, closed: &ClosedSegment) {
        self.subscribers
            .lock()
            .retain(|tx| tx.send(closed.clone()).is_ok());
    }
}

/// Handle to the WAL. Cheap to clone; the writer thread stops once
/// [`Wal::shutdown`] is called or the last handle is dropped (after writing
/// and syncing what was queued).
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    tx: std_mpsc::Sender<Request>,
    /// Frees the space of deleted segments.
    reclaimer: Reclaimer,
    shared: Arc<Shared>,
    /// The file and its state, shared with the writer thread.
    core: CoreCell,
    /// Requests sent to the writer thread and not yet fully handled.
    queued: Arc<AtomicUsize>,
    inline_max_bytes: usize,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Open the WAL in `config.dir`: lock the directory, list the existing
    /// segments, repair a torn tail of the newest one, and start a NEW segment
    /// for writing. Returns the existing segments, oldest first, which the
    /// caller must replay (and later delete once persisted).
    ///
    /// Blocking: does file I/O; call it before serving, or in `spawn_blocking`.
    pub fn open(
        config: WalConfig,
        registry: &prometheus::Registry,
    ) -> Result<(Self, Vec<SegmentFile>), WalError> {
        Self::open_with(config, registry, Faults::default())
    }

    fn open_with(
        config: WalConfig,
        registry: &prometheus::Registry,
        faults: Faults,
    ) -> Result<(Self, Vec<SegmentFile>), WalError> {
        let dir = config.dir;
        std::fs::create_dir_all(&dir).map_err(|e| WalError::io("create WAL directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| WalError::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(WalError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(WalError::io("lock", &lock_path, e));
            }
        }
        let metrics = Metrics::register(registry)?;
        let leftovers = reclaim::remove_leftovers(&dir)?;
        if leftovers > 0 {
            tracing::info!(dir = %dir.display(), files = leftovers, "removed WAL segments left half-deleted by a crash");
        }

        let mut existing = segment::list_segments(&dir)?;
        let next_id = existing
            .last()
            .map_or(0, |(id, _)| id.get().saturating_add(1));
        let mut newest_len = None;
        if let Some((id, path)) = existing.last() {
            match recovery::recover_newest(path, *id)? {
                Recovered::Intact { len } | Recovered::Truncated { len } => newest_len = Some(len),
                Recovered::Removed => {
                    existing.pop();
                    segment::sync_dir(&dir)?;
                }
            }
        }
        let last = existing.len().saturating_sub(1);
        let mut files = Vec::with_capacity(existing.len());
        for (i, (id, path)) in existing.into_iter().enumerate() {
            let bytes = match newest_len {
                Some(len) if i == last => len,
                _ => std::fs::metadata(&path)
                    .map_err(|e| WalError::io("stat segment", &path, e))?
                    .len(),
            };
            files.push(SegmentFile { id, path, bytes });
        }

        let seg = create_segment(&dir, SegmentId::new(next_id), &faults)?;
        let closed: BTreeMap<_, _> = files.iter().map(|f| (f.id, f.bytes)).collect();
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            state: Mutex::new(State {
                open: seg.id,
                open_bytes: seg.len,
                closed_bytes: closed.values().sum(),
                closed,
            }),
            subscribers: Mutex::new(Vec::new()),
            metrics,
        });
        shared.set_open_bytes(seg.len);
        shared.metrics.bytes_written.inc_by(seg.len);
        tracing::info!(dir = %dir.display(), existing = files.len(), open = %seg.id, "WAL opened");

        let (tx, rx) = std_mpsc::channel();
        let core = Arc::new(parking_lot::Mutex::new(Some(Core {
            shared: Arc::clone(&shared),
            dir: dir.clone(),
            max_segment_bytes: config.max_segment_bytes,
            max_segment_age: config.max_segment_age,
            next_id: seg.id.get().saturating_add(1),
            seg,
            faults,
            _lock: lock,
            failed: None,
            rotate_retry_at: None,
            prewrite: vec![0; config.prewrite_bytes],
        })));
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            rx,
            core: Arc::clone(&core),
            queued: Arc::clone(&queued),
            max_group_bytes: config.max_group_bytes,
            deadline: None,
            group: Vec::new(),
        };
        std::thread::Builder::new()
            .name("sluice-wal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| WalError::io("start WAL writer thread for", &dir, e))?;
        let reclaimer = Reclaimer::start(
            reclaim::STEP,
            reclaim::PAUSE,
            shared.metrics.reclaim_pending_bytes.clone(),
        )
        .map_err(|e| WalError::io("start WAL reclaim thread for", &dir, e))?;
        let wal = Self {
            inner: Arc::new(Inner {
                tx,
                reclaimer,
                shared,
                core,
                queued,
                inline_max_bytes: config.inline_max_bytes,
            }),
        };
        Ok((wal, files))
    }

    /// Sends `req` to the writer thread, counted in `queued` until handled.
    fn send(&self, req: Request) -> Result<(), WalError> {
        self.inner.queued.fetch_add(1, Ordering::AcqRel);
        self.inner.tx.send(req).map_err(|_| {
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
            WalError::ShutDown
        })
    }

    /// The inline path of [`Self::append`]: `Some` if this thread committed
    /// `record` itself (nothing queued, nobody committing), else `None` with
    /// the record given back.
    fn try_append_inline(
        &self,
        sequence_number: u64,
        record: Vec<u8>,
    ) -> Result<Result<SegmentId, WalError>, Vec<u8>> {
        let inner = &*self.inner;
        if record.len() > inner.inline_max_bytes || inner.queued.load(Ordering::Acquire) != 0 {
            return Err(record);
        }
        let Some(mut cell) = inner.core.try_lock() else {
            return Err(record);
        };
        // Checked again under the lock: a request sent before this append
        // (a rotation, say) must not be overtaken.
        if inner.queued.load(Ordering::Acquire) != 0 {
            return Err(record);
        }
        let Some(core) = cell.as_mut() else {
            return Ok(Err(WalError::ShutDown));
        };
        let (result, wake) = core.commit_inline(sequence_number, &record);
        drop(cell);
        if wake {
            // Best effort: the thread is gone only after a shutdown.
            let _ = self.send(Request::Wake);
        }
        Ok(result)
    }

    /// Append `op`; resolves once it is durable, with the id of the segment
    /// holding it. Its record is built here, in the caller's task.
    pub async fn append(&self, op: &WalOp) -> Result<SegmentId, WalError> {
        let record = segment::encode_op(op.sequence_number, &op.payload)?;
        let record = match self.try_append_inline(op.sequence_number, record) {
            Ok(result) => return result,
            Err(record) => record,
        };
        let (reply, rx) = oneshot::channel();
        self.send(Request::Append(PendingAppend {
            sequence_number: op.sequence_number,
            record,
            reply,
        }))?;
        rx.await.unwrap_or(Err(WalError::ShutDown))
    }

    /// Close the open segment and start a new one, after every append queued
    /// before this call. The closed segment is also sent to the rotation
    /// subscribers. A segment with no ops is rotated too (and reported with
    /// empty `sequence_numbers`).
    pub async fn rotate(&self) -> Result<ClosedSegment, WalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Rotate(reply))?;
        rx.await.unwrap_or(Err(WalError::ShutDown))
    }

    /// Receive every segment closed from now on, by size, age or request.
    /// Unbounded and lossless; drop the receiver to unsubscribe.
    pub fn subscribe_rotations(&self) -> mpsc::UnboundedReceiver<ClosedSegment> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.shared.subscribers.lock().push(tx);
        rx
    }

    /// Delete a closed segment (e.g. once all its ops are persisted). The
    /// open segment is refused. Must be called inside a tokio runtime (the
    /// rename runs on the blocking pool).
    ///
    /// Resolves once the deletion is durable: the segment is renamed out of
    /// the segment names and the directory synced, so it is never replayed
    /// again. Its space is freed afterwards, in steps, by the reclaim thread
    /// (see `reclaim.rs` for why).
    pub async fn delete_segment(&self, id: SegmentId) -> Result<(), WalError> {
        let shared = &self.inner.shared;
        let bytes = shared.take_closed(id)?;
        let dir = shared.dir.clone();
        let res = tokio::task::spawn_blocking(move || reclaim::discard(&dir, id)).await;
        match res {
            Ok(Ok(renamed)) => {
                match renamed {
                    Some(path) => self.inner.reclaimer.reclaim(path, bytes),
                    None => tracing::warn!(segment = %id, "WAL segment to delete was already gone"),
                }
                tracing::info!(segment = %id, bytes, "WAL segment deleted");
                Ok(())
            }
            Ok(Err((still_there, e))) => {
                if still_there {
                    shared.restore_closed(id, bytes);
                }
                // Renamed but the directory sync failed: the rename may not
                // survive a crash, so the file must not be shrunk (a crash
                // could bring it back as a torn older segment). It stays
                // whole, and the next open removes it.
                Err(e)
            }
            Err(join) => {
                shared.restore_closed(id, bytes);
                Err(WalError::io(
                    "delete segment",
                    segment::segment_path(&shared.dir, id),
                    std::io::Error::other(join),
                ))
            }
        }
    }

    /// Segment counts and sizes.
    pub fn segments(&self) -> WalStats {
        let s = self.inner.shared.state.lock();
        WalStats {
            segments: s.closed.len() + 1,
            bytes: s.closed_bytes + s.open_bytes,
            open_segment: s.open,
            open_segment_bytes: s.open_bytes,
            closed_segments: s.closed.keys().copied().collect(),
        }
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Write and sync everything queued before this call, close the open
    /// segment and stop the writer thread. Later appends fail with
    /// [`WalError::ShutDown`]. The open segment stays on disk and is replayed
    /// at the next open. Calling it again is a no-op.
    pub async fn shutdown(&self) -> Result<(), WalError> {
        let (reply, rx) = oneshot::channel();
        if self.send(Request::Shutdown(reply)).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}
