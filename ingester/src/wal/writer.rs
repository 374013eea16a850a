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
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

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
    /// End of the last durable entry: the file length whenever no write is in
    /// flight.
    pub(crate) len: u64,
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
        seqs: Vec::new(),
        first_entry_at: None,
    })
}

pub(crate) struct Writer {
    pub(crate) rx: mpsc::Receiver<Request>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) dir: PathBuf,
    pub(crate) max_segment_bytes: u64,
    pub(crate) max_segment_age: Option<Duration>,
    pub(crate) max_group_bytes: usize,
    pub(crate) seg: OpenSegment,
    pub(crate) next_id: u64,
    pub(crate) faults: Faults,
    /// Advisory lock on the directory, held as long as this thread runs.
    pub(crate) _lock: File,
    pub(crate) failed: Option<Arc<str>>,
    pub(crate) rotate_retry_at: Option<Instant>,
    /// The group being assembled; its allocation is reused.
    pub(crate) group: Vec<PendingAppend>,
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
            match req {
                Request::Append(first) => {
                    let mut bytes = first.record.len();
                    self.group.push(first);
                    while bytes < cap {
                        match self.rx.try_recv() {
                            Ok(Request::Append(a)) if bytes + a.record.len() <= cap => {
                                bytes += a.record.len();
                                self.group.push(a);
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit();
                    self.maybe_rotate();
                }
                Request::Rotate(reply) => {
                    let _ = reply.send(self.rotate(RotationReason::Requested));
                }
                Request::Shutdown(reply) => {
                    let res = self.close();
                    // Release the file and the directory lock before answering,
                    // so the caller may reopen the WAL right away.
                    drop(self);
                    let _ = reply.send(res);
                    return;
                }
            }
        }
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "WAL: closing the open segment failed");
        }
    }

    /// Block for the next request, rotating by age when the open segment's
    /// first entry gets too old while idle. `None` once all handles are gone.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            let Some(deadline) = self.age_deadline() else {
                return self.rx.recv().ok();
            };
            let now = Instant::now();
            if now >= deadline {
                self.rotate_and_report(RotationReason::Age);
                continue;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(r) => return Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
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

    /// Write and sync `self.group` as one entry and answer its waiters.
    fn commit(&mut self) {
        let mut group = std::mem::take(&mut self.group);
        if let Some(reason) = &self.failed {
            for a in group.drain(..) {
                let _ = a.reply.send(Err(WalError::Failed {
                    reason: reason.clone(),
                }));
            }
            self.group = group;
            return;
        }
        let prefix = entry_prefix(group.iter().map(|a| a.record.as_slice()));
        let entry_len = (prefix.len() + group.iter().map(|a| a.record.len()).sum::<usize>()) as u64;

        let res = self.write_entry(&prefix, &group).and_then(|()| {
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
                self.seg
                    .seqs
                    .extend(group.iter().map(|a| a.sequence_number));
                self.seg.first_entry_at.get_or_insert_with(Instant::now);
                let m = &self.shared.metrics;
                m.syncs.inc();
                m.ops_per_sync.observe(group.len() as f64);
                m.bytes_written.inc_by(entry_len);
                self.shared.set_open_bytes(self.seg.len);
                let id = self.seg.id;
                for a in group.drain(..) {
                    let _ = a.reply.send(Ok(id));
                }
            }
            Err(e) => {
                self.shared.metrics.write_errors.inc();
                tracing::error!(
                    segment = %self.seg.id,
                    file = %self.seg.path.display(),
                    offset = self.seg.len,
                    ops = group.len(),
                    error = %e,
                    "WAL write failed; refusing the group's operations"
                );
                let source = Arc::new(e);
                self.undo_failed_entry(&source);
                for a in group.drain(..) {
                    let _ = a.reply.send(Err(WalError::Write {
                        segment: self.seg.id,
                        path: self.seg.path.clone(),
                        source: Arc::clone(&source),
                    }));
                }
            }
        }
        self.group = group;
    }

    fn write_entry(&mut self, prefix: &[u8], group: &[PendingAppend]) -> io::Result<()> {
        let mut slices = Vec::with_capacity(group.len() + 1);
        slices.push(IoSlice::new(prefix));
        slices.extend(group.iter().map(|a| IoSlice::new(&a.record)));
        self.faults.write(&mut self.seg.file, &slices)?;
        write_all_vectored(&mut self.seg.file, &mut slices)
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
        self.seg
            .file
            .sync_all()
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
        self.seg
            .file
            .sync_all()
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
