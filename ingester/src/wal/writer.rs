//! The group-commit writer thread.
//!
//! One dedicated OS thread owns the open segment file; nothing else writes to
//! it. Appenders send already-compressed op records over a channel and await a
//! oneshot reply. The thread loops:
//!
//! 1. block for the first request (with a timeout when a segment age limit is
//!    running),
//! 2. drain every request already queued, up to `max_group_bytes` (no fixed
//!    tick: a lone writer waits for its own fdatasync only),
//! 3. write the group as ONE entry (one vectored `write_all`) and issue ONE
//!    `fdatasync`,
//! 4. answer every waiter, then check the size and age limits.
//!
//! Requests arriving while step 3 runs queue up and form the next group, so the
//! group size adapts to load: under contention each fdatasync covers many ops.
//! Rotation and shutdown travel on the same channel, so they are ordered with
//! appends: an append sent before `rotate()` is in the closed segment.
//!
//! Lone small appends skip the thread: when nothing is queued and nobody is
//! committing, an appender whose record is at most `inline_max_bytes` takes
//! the [`Core`] (the file and its state) itself and writes, syncs and
//! answers on its own thread. That removes two thread hand-offs (appender →
//! writer thread → appender) from the latency of every such write: each is
//! a wake-up of a parked thread, and on a virtual machine under load those
//! wake-ups, not the disk, made the tail of one-line writes (see
//! docs/benchmarks.md, target 2b). Everything else — groups, rotation,
//! shutdown, age rotation — runs on the thread as before, and both paths
//! commit through the same [`Core::commit`] under the same lock, so an entry
//! is an entry whichever thread wrote it. `queued` counts requests sent to
//! the thread and not yet fully handled; an inline commit requires it to be
//! zero while holding the lock, so a request sent earlier (a rotation, say)
//! is never overtaken.
//!
//! Pre-written space: an fdatasync that makes the file longer must also put
//! the new size (and any newly allocated block) on disk — a journal commit,
//! or an inode write on a filesystem without one — before its flush; one
//! that only overwrites bytes already on disk writes the data and flushes,
//! nothing else. So when a small entry would end past what the file holds,
//! the same `writev` that writes it also writes `prewrite_bytes` of zeros
//! after it, and the next few hundred small entries overwrite those zeros in
//! place (on the benchmark VM's ext4, the server's fdatasync p50 20-40 µs
//! and p90 30-90 µs lower; see docs/benchmarks.md, session 12). The zeros
//! are never an entry: a segment is cut back to its last entry when it is
//! closed, and after a crash recovery cuts them as the torn tail they look
//! like (`recovery.rs`). Large entries are not padded: their own data
//! dominates their sync, and padding them would double the WAL's bandwidth.
//!
//! Failure: if the write or fdatasync fails, every op of the group gets an
//! error (none is acknowledged) and the file is truncated back to the end of
//! the last durable entry and synced, so the segment stays replayable and the
//! next group may succeed (e.g. once space is freed). If even that fails, the
//! writer is marked failed and refuses every later append rather than write
//! after bytes it could not remove.
//!
//! Memory is bounded by the callers: each append holds its record until it is
//! answered, and the upper layers bound concurrent writes; a group holds at
//! most `max_group_bytes` (or one larger op).

use std::{
    fs::File,
    io::{self, IoSlice, Seek, SeekFrom, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{
    ClosedSegment, RotationReason, SegmentId, Shared, WalError,
    segment::{
        BODY_PREFIX_LEN, HEADER_LEN, MAX_BODY_LEN, MAX_OP_BYTES, OP_HEADER_LEN, encode_header,
        entry_prefix, segment_path, sync_dir,
    },
};

/// After a failed size/age rotation, wait this long before trying again.
const ROTATE_RETRY: Duration = Duration::from_secs(1);

/// A message to the writer thread.
pub(crate) enum Request {
    Append(PendingAppend),
    Rotate(oneshot::Sender<Result<ClosedSegment, WalError>>),
    Shutdown(oneshot::Sender<Result<(), WalError>>),
    /// An inline commit started a segment: recompute the age deadline.
    Wake,
}

/// One op waiting to be made durable.
pub(crate) struct PendingAppend {
    pub(crate) sequence_number: u64,
    /// Encoded op record (see `segment.rs`), compressed by the caller.
    pub(crate) record: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Result<SegmentId, WalError>>,
}

/// The segment being written.
pub(crate) struct OpenSegment {
    pub(crate) id: SegmentId,
    pub(crate) path: PathBuf,
    file: File,
    /// End of the last durable entry: where the next entry is written.
    pub(crate) len: u64,
    /// The file's length: `len` plus the zeros written ahead of it (see the
    /// module doc), which the file cursor skips back over.
    prewritten: u64,
    seqs: Vec<u64>,
    /// When the first entry was written; drives age rotation.
    first_entry_at: Option<Instant>,
}

impl OpenSegment {
    fn close(self, reason: RotationReason) -> ClosedSegment {
        let mut seqs = self.seqs;
        seqs.sort_unstable();
        seqs.dedup();
        ClosedSegment {
            id: self.id,
            path: self.path,
            bytes: self.len,
            min_sequence_number: seqs.first().copied(),
            max_sequence_number: seqs.last().copied(),
            sequence_numbers: seqs.into(),
            reason,
        }
    }
}

/// Create segment `id` in `dir`: header written and fdatasynced, then the
/// directory fsynced, so an entry acknowledged in it can be found after a
/// crash. On failure the partial file is removed (best effort).
pub(crate) fn create_segment(
    dir: &std::path::Path,
    id: SegmentId,
    faults: &Faults,
) -> Result<OpenSegment, WalError> {
    let path = segment_path(dir, id);
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| WalError::io("create segment", &path, e))?;
    let header = encode_header(id);
    let res = faults
        .create()
        .and_then(|()| file.write_all(&header))
        .and_then(|()| file.sync_data())
        .map_err(|e| WalError::io("write header of new segment", &path, e))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(OpenSegment {
        id,
        path,
        file,
        len: HEADER_LEN as u64,
        prewritten: HEADER_LEN as u64,
        seqs: Vec::new(),
        first_entry_at: None,
    })
}

/// The writer's state: the open segment and everything a commit or a
/// rotation changes. `None` once shut down (the file and the directory lock
/// are released then).
pub(crate) type CoreCell = Arc<Mutex<Option<Core>>>;

pub(crate) struct Core {
    pub(crate) shared: Arc<Shared>,
    pub(crate) dir: PathBuf,
    pub(crate) max_segment_bytes: u64,
    pub(crate) max_segment_age: Option<Duration>,
    pub(crate) seg: OpenSegment,
    pub(crate) next_id: u64,
    pub(crate) faults: Faults,
    /// Advisory lock on the directory, held as long as the WAL is open.
    pub(crate) _lock: File,
    pub(crate) failed: Option<Arc<str>>,
    pub(crate) rotate_retry_at: Option<Instant>,
    /// Zeros written after a small entry that would end past the file's end
    /// (see the module doc); empty: off.
    pub(crate) prewrite: Vec<u8>,
}

/// Entries up to this size are followed by pre-written zeros when they
/// would end past the file's end; larger ones are not (see the module doc).
const PREWRITE_MAX_ENTRY: u64 = 64 << 10;

/// The writer thread.
pub(crate) struct Writer {
    pub(crate) rx: mpsc::Receiver<Request>,
    pub(crate) core: CoreCell,
    /// Requests sent and not yet fully handled (see the module doc).
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) max_group_bytes: usize,
    /// The open segment's age deadline as of the last request handled, so
    /// waiting for the next one takes no lock (an inline commit would find
    /// the core busy). Stale at worst: checked again under the lock.
    pub(crate) deadline: Option<Instant>,
    /// The group being assembled; its allocation is reused.
    pub(crate) group: Vec<PendingAppend>,
}

/// An op as a commit sees it.
pub(crate) trait Op {
    fn sequence_number(&self) -> u64;
    fn record(&self) -> &[u8];
}

impl Op for PendingAppend {
    fn sequence_number(&self) -> u64 {
        self.sequence_number
    }
    fn record(&self) -> &[u8] {
        &self.record
    }
}

impl Op for (u64, &[u8]) {
    fn sequence_number(&self) -> u64 {
        self.0
    }
    fn record(&self) -> &[u8] {
        self.1
    }
}

/// Why a group was not made durable; every op of the group gets it.
#[derive(Clone)]
pub(crate) enum GroupError {
    Failed(Arc<str>),
    Write {
        segment: SegmentId,
        path: PathBuf,
        source: Arc<io::Error>,
    },
}

impl GroupError {
    fn to_error(&self) -> WalError {
        match self {
            Self::Failed(reason) => WalError::Failed {
                reason: reason.clone(),
            },
            Self::Write {
                segment,
                path,
                source,
            } => WalError::Write {
                segment: *segment,
                path: path.clone(),
                source: Arc::clone(source),
            },
        }
    }
}

impl Writer {
    /// The thread's main loop. Returns when shut down or when every `Wal`
    /// handle is gone (after committing what was queued).
    pub(crate) fn run(mut self) {
        // Keep an entry within MAX_BODY_LEN even when one maximal op follows a
        // full group.
        let max_record = OP_HEADER_LEN + lz4_flex::block::get_maximum_output_size(MAX_OP_BYTES);
        let cap = self
            .max_group_bytes
            .min(MAX_BODY_LEN - BODY_PREFIX_LEN - max_record);
        let mut pending: Option<Request> = None;
        loop {
            let req = match pending.take() {
                Some(r) => r,
                None => match self.next_request() {
                    Some(r) => r,
                    None => break,
                },
            };
            let mut cell = self.core.lock();
            let Some(core) = cell.as_mut() else {
                // Shut down already (cannot happen: only this thread shuts
                // down, and it returns). Dropping `req` refuses it.
                return;
            };
            let mut handled = 1;
            let mut answer = None;
            match req {
                Request::Append(first) => {
                    let mut bytes = first.record.len();
                    self.group.push(first);
                    while bytes < cap {
                        match self.rx.try_recv() {
                            Ok(Request::Append(a)) if bytes + a.record.len() <= cap => {
                                bytes += a.record.len();
                                self.group.push(a);
                                handled += 1;
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    answer = Some(core.commit(&self.group));
                    core.maybe_rotate();
                }
                Request::Rotate(reply) => {
                    let _ = reply.send(core.rotate(RotationReason::Requested));
                }
                Request::Wake => {}
                Request::Shutdown(reply) => {
                    let res = core.close();
                    // Release the file and the directory lock before answering,
                    // so the caller may reopen the WAL right away.
                    *cell = None;
                    self.queued.fetch_sub(handled, Ordering::AcqRel);
                    drop(cell);
                    let _ = reply.send(res);
                    return;
                }
            }
            self.deadline = core.age_deadline();
            self.queued.fetch_sub(handled, Ordering::AcqRel);
            // Answer only now: a waiter woken while this thread still held the
            // lock (or had the group counted as queued) would find the WAL
            // busy and queue its next append instead of committing inline.
            drop(cell);
            if let Some(outcome) = answer {
                for a in self.group.drain(..) {
                    let _ = a.reply.send(outcome.clone().map_err(|e| e.to_error()));
                }
            }
        }
        if let Some(mut core) = self.core.lock().take()
            && let Err(e) = core.close()
        {
            tracing::error!(error = %e, "WAL: closing the open segment failed");
        }
    }

    /// Block for the next request, rotating by age when the open segment's
    /// first entry gets too old while idle. `None` once all handles are gone.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            let Some(deadline) = self.deadline else {
                return self.rx.recv().ok();
            };
            let now = Instant::now();
            if now >= deadline {
                let mut cell = self.core.lock();
                let core = cell.as_mut()?;
                // An inline commit may have rotated meanwhile.
                if core.age_deadline().is_some_and(|d| Instant::now() >= d) {
                    core.rotate_and_report(RotationReason::Age);
                }
                self.deadline = core.age_deadline();
                continue;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(r) => return Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

impl Core {
    /// Commits one op on the caller's thread (see the module doc): written,
    /// synced and, if the segment is full, rotated before it returns. The
    /// caller holds the lock and has seen no request queued. Also returns
    /// whether the writer thread must recompute its age deadline (this op
    /// started the segment's age).
    pub(crate) fn commit_inline(
        &mut self,
        sequence_number: u64,
        record: &[u8],
    ) -> (Result<SegmentId, WalError>, bool) {
        let started_age = self.seg.first_entry_at.is_none();
        let res = self.commit(&[(sequence_number, record)]);
        self.shared.metrics.inline_commits.inc();
        let wake =
            started_age && self.seg.first_entry_at.is_some() && self.max_segment_age.is_some();
        self.maybe_rotate();
        (res.map_err(|e| e.to_error()), wake)
    }

    /// When the open segment must be rotated by age; `None` without an age
    /// limit, while the segment is empty, or once the WAL is failed (a
    /// rotation could not succeed).
    fn age_deadline(&self) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        let due = self.seg.first_entry_at? + self.max_segment_age?;
        Some(self.rotate_retry_at.map_or(due, |r| r.max(due)))
    }

    /// Write and sync `ops` as one entry: the segment holding them, or why
    /// none of them was made durable. Answering is the caller's, after it
    /// lets go of the lock.
    fn commit<O: Op>(&mut self, ops: &[O]) -> Result<SegmentId, GroupError> {
        if let Some(reason) = &self.failed {
            return Err(GroupError::Failed(reason.clone()));
        }
        let prefix = entry_prefix(ops.iter().map(Op::record));
        let entry_len = (prefix.len() + ops.iter().map(|o| o.record().len()).sum::<usize>()) as u64;

        let res = self.write_entry(&prefix, ops, entry_len).and_then(|()| {
            let started = Instant::now();
            let r = self.faults.sync().and_then(|()| self.seg.file.sync_data());
            self.shared
                .metrics
                .sync_duration
                .observe(started.elapsed().as_secs_f64());
            r
        });

        match res {
            Ok(()) => {
                self.seg.len += entry_len;
                self.seg.seqs.extend(ops.iter().map(Op::sequence_number));
                self.seg.first_entry_at.get_or_insert_with(Instant::now);
                let m = &self.shared.metrics;
                m.syncs.inc();
                m.ops_per_sync.observe(ops.len() as f64);
                m.bytes_written.inc_by(entry_len);
                self.shared.set_open_bytes(self.seg.len);
                Ok(self.seg.id)
            }
            Err(e) => {
                self.shared.metrics.write_errors.inc();
                tracing::error!(
                    segment = %self.seg.id,
                    file = %self.seg.path.display(),
                    offset = self.seg.len,
                    ops = ops.len(),
                    error = %e,
                    "WAL write failed; refusing the group's operations"
                );
                let source = Arc::new(e);
                self.undo_failed_entry(&source);
                Err(GroupError::Write {
                    segment: self.seg.id,
                    path: self.seg.path.clone(),
                    source,
                })
            }
        }
    }

    fn write_entry<O: Op>(&mut self, prefix: &[u8], ops: &[O], entry_len: u64) -> io::Result<()> {
        let end = self.seg.len + entry_len;
        let pad = if end > self.seg.prewritten && entry_len <= PREWRITE_MAX_ENTRY {
            self.prewrite.as_slice()
        } else {
            &[]
        };
        let mut slices = Vec::with_capacity(ops.len() + 2);
        slices.push(IoSlice::new(prefix));
        slices.extend(ops.iter().map(|o| IoSlice::new(o.record())));
        if !pad.is_empty() {
            slices.push(IoSlice::new(pad));
        }
        self.faults.write(&mut self.seg.file, &slices)?;
        write_all_vectored(&mut self.seg.file, &mut slices)?;
        if !pad.is_empty() {
            // The next entry starts right after this one, over the zeros.
            self.seg.file.seek(SeekFrom::Start(end))?;
        }
        self.seg.prewritten = self.seg.prewritten.max(end + pad.len() as u64);
        Ok(())
    }

    /// Cut the zeros written ahead of the last entry (before the segment is
    /// closed, so a closed segment ends with its last entry).
    fn cut_prewritten(&mut self) -> io::Result<()> {
        if self.seg.prewritten > self.seg.len {
            self.seg.file.set_len(self.seg.len)?;
            self.seg.prewritten = self.seg.len;
        }
        Ok(())
    }

    /// Cut the file back to the last durable entry after a failed write/sync.
    fn undo_failed_entry(&mut self, cause: &io::Error) {
        let good = self.seg.len;
        let file = &mut self.seg.file;
        let res = self
            .faults
            .truncate()
            .and_then(|()| file.set_len(good))
            .and_then(|()| file.seek(SeekFrom::Start(good)).map(|_| ()))
            .and_then(|()| file.sync_data());
        if res.is_ok() {
            self.seg.prewritten = good;
        }
        if let Err(e) = res {
            let reason = format!(
                "write to segment {} ({}) failed ({cause}) and truncating it back to the last good entry end \
                 at offset {good} failed too ({e})",
                self.seg.id,
                self.seg.path.display()
            );
            tracing::error!(%reason, "WAL is failed; refusing all further writes");
            self.failed = Some(reason.into());
        }
    }

    /// Rotate when the open segment is over its size or age limit.
    fn maybe_rotate(&mut self) {
        if self.rotate_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if self.seg.len >= self.max_segment_bytes {
            self.rotate_and_report(RotationReason::Size);
        } else if self.age_deadline().is_some_and(|d| Instant::now() >= d) {
            self.rotate_and_report(RotationReason::Age);
        }
    }

    /// A rotation nobody waits for: errors are logged and retried later.
    fn rotate_and_report(&mut self, reason: RotationReason) {
        if let Err(e) = self.rotate(reason) {
            tracing::error!(?reason, error = %e, "WAL segment rotation failed; will retry");
            self.rotate_retry_at = Some(Instant::now() + ROTATE_RETRY);
        }
    }

    /// Close the open segment (fsync) and continue in a new one. On error the
    /// open segment stays open and nothing changes.
    fn rotate(&mut self, reason: RotationReason) -> Result<ClosedSegment, WalError> {
        if let Some(reason) = &self.failed {
            return Err(WalError::Failed {
                reason: reason.clone(),
            });
        }
        self.cut_prewritten()
            .and_then(|()| self.seg.file.sync_all())
            .map_err(|e| WalError::io("fsync segment being closed", &self.seg.path, e))?;
        let id = SegmentId::new(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        let new = create_segment(&self.dir, id, &self.faults)?;
        let closed = std::mem::replace(&mut self.seg, new).close(reason);
        self.rotate_retry_at = None;
        let m = &self.shared.metrics;
        m.rotations.with_label_values(&[reason.as_str()]).inc();
        m.bytes_written.inc_by(HEADER_LEN as u64);
        self.shared.rotated(&closed, self.seg.id, self.seg.len);
        tracing::info!(
            closed = %closed.id,
            bytes = closed.bytes,
            ops = closed.sequence_numbers.len(),
            open = %self.seg.id,
            ?reason,
            "WAL segment rotated"
        );
        self.shared.publish(&closed);
        Ok(closed)
    }

    fn close(&mut self) -> Result<(), WalError> {
        self.cut_prewritten()
            .and_then(|()| self.seg.file.sync_all())
            .map_err(|e| WalError::io("fsync segment at shutdown", &self.seg.path, e))
    }
}

/// `write_all` over several buffers with `writev`, so the group's records are
/// not copied into one buffer first. (std caps each call at IOV_MAX slices;
/// the loop continues with the rest.)
fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "segment accepted no bytes",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Failure injection for tests: a handful of counters the writer consults
/// before each I/O step. Compiled to nothing outside tests.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    #[cfg(test)]
    pub(crate) plan: Arc<FaultPlan>,
}

#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FaultPlan {
    /// Fail this many upcoming entry writes (after writing `partial_write` bytes).
    pub(crate) fail_writes: std::sync::atomic::AtomicU32,
    pub(crate) partial_write: std::sync::atomic::AtomicUsize,
    /// Let this many upcoming fdatasyncs of entries pass, then fail
    /// `fail_syncs` of them.
    pub(crate) skip_syncs: std::sync::atomic::AtomicU32,
    pub(crate) fail_syncs: std::sync::atomic::AtomicU32,
    /// Fail this many upcoming truncations after a failed entry.
    pub(crate) fail_truncates: std::sync::atomic::AtomicU32,
    /// Fail this many upcoming segment creations.
    pub(crate) fail_creates: std::sync::atomic::AtomicU32,
    /// Sleep this long in every fdatasync (makes grouping deterministic).
    pub(crate) sync_delay_ms: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl FaultPlan {
    fn take(counter: &std::sync::atomic::AtomicU32) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        counter
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[cfg(test)]
fn injected() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        "injected failure: no space left on device",
    )
}

impl Faults {
    #[cfg(test)]
    fn write(&self, file: &mut File, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        if !FaultPlan::take(&self.plan.fail_writes) {
            return Ok(());
        }
        // Write a prefix, as a real short write before ENOSPC would.
        let mut left = self
            .plan
            .partial_write
            .load(std::sync::atomic::Ordering::SeqCst);
        for b in bufs {
            let n = left.min(b.len());
            file.write_all(&b[..n])?;
            left -= n;
        }
        Err(injected())
    }

    #[cfg(test)]
    fn sync(&self) -> io::Result<()> {
        let delay = self
            .plan
            .sync_delay_ms
            .load(std::sync::atomic::Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if FaultPlan::take(&self.plan.skip_syncs) || !FaultPlan::take(&self.plan.fail_syncs) {
            Ok(())
        } else {
            Err(injected())
        }
    }

    #[cfg(test)]
    fn truncate(&self) -> io::Result<()> {
        if FaultPlan::take(&self.plan.fail_truncates) {
            Err(injected())
        } else {
            Ok(())
        }
    }

    #[cfg(test)]
    fn create(&self) -> io::Result<()> {
        if FaultPlan::take(&self.plan.fail_creates) {
            Err(injected())
        } else {
            Ok(())
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn write(&self, _file: &mut File, _bufs: &[IoSlice<'_>]) -> io::Result<()> {
        Ok(())
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn truncate(&self) -> io::Result<()> {
        Ok(())
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn create(&self) -> io::Result<()> {
        Ok(())
    }
}
