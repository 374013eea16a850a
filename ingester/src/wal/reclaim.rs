//! Freeing the space of deleted segments without stalling the open one.
//!
//! # Why not just `unlink`
//!
//! Unlinking a persisted segment of a few hundred MiB frees all its blocks in
//! one filesystem transaction; on ext4 mounted with `discard` that is also
//! one large TRIM. The open segment's next `fdatasync` has to wait for that
//! transaction to commit: measured at 55–100 ms, against ≤ 12 ms otherwise
//! (`docs/benchmarks.md`, target 2c). So a deleted segment's blocks are
//! given back a step at a time ([`STEP`] bytes, then a pause of [`PAUSE`]),
//! and each WAL commit in between waits behind at most one step.
//!
//! # Crash safety
//!
//! A segment shrunk in place would be a segment with a torn tail, and
//! recovery repairs only the newest segment: an older torn one is corruption
//! and refuses start-up. So deletion is two steps:
//!
//! 1. [`discard`]: rename `<id>.wal` to `<id>.reclaim` and fsync the
//!    directory. From here the segment is deleted: segment listing only
//!    matches `*.wal` names, so replay never sees it again.
//! 2. The reclaimer thread shrinks the renamed file and unlinks it. A crash
//!    anywhere in this step leaves only a `*.reclaim` file, which
//!    [`remove_leftovers`] unlinks when the WAL is next opened (before
//!    serving, where a stall costs nobody a write).
//!
//! # Concurrency
//!
//! One thread (handle + thread, fed by a channel) shrinks one file at a time,
//! so several segments deleted at once by a persist job do not add their
//! steps together. It stops once every handle is dropped, after the files
//! already queued.

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::Duration,
};

use prometheus::IntGauge;

use super::{SegmentId, WalError, segment};

/// Bytes freed per step.
pub(crate) const STEP: u64 = 16 << 20;
/// Pause after each step. Each 16 MiB `ftruncate` itself took 12–13 ms on
/// the benchmark VM, so a 256 MiB segment is freed in ~0.3 s, faster than
/// the WAL fills one at any rate measured (≤ 110 MB/s).
pub(crate) const PAUSE: Duration = Duration::from_millis(5);
/// Extension of a deleted segment waiting to be reclaimed.
const EXTENSION: &str = "reclaim";

/// The name a deleted segment `id` has until its space is freed.
pub(crate) fn reclaim_path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{:020}.{EXTENSION}", id.get()))
}

/// Step 1 of a deletion: take segment `id` out of the segment names, durably.
///
/// Returns `Ok(Some(path))` of the renamed file to reclaim, `Ok(None)` if the
/// segment was already gone. On `Err(e)` the bool says whether the segment is
/// still there under its own name (the rename failed) or not (the rename
/// succeeded but the directory sync did not; it must not be put back).
pub(crate) fn discard(dir: &Path, id: SegmentId) -> Result<Option<PathBuf>, (bool, WalError)> {
    let from = segment::segment_path(dir, id);
    let to = reclaim_path(dir, id);
    match std::fs::rename(&from, &to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err((true, WalError::io("rename deleted segment", &from, e))),
    }
    segment::sync_dir(dir).map_err(|e| (false, e))?;
    Ok(Some(to))
}

/// Unlinks the `*.reclaim` files a crash left in `dir`; returns how many.
/// Call it with the directory lock held, before serving.
pub(crate) fn remove_leftovers(dir: &Path) -> Result<usize, WalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| WalError::io("list WAL directory", dir, e))?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("list WAL directory", dir, e))?;
        let path = entry.path();
        if path.extension().is_none_or(|x| x != EXTENSION) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WalError::io("remove deleted segment", &path, e)),
        }
    }
    Ok(removed)
}

/// Handle to the reclaimer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Reclaimer {
    tx: mpsc::Sender<(PathBuf, u64)>,
    /// Bytes queued or being freed (`sluice_wal_reclaim_pending_bytes`).
    pending: IntGauge,
}

impl Reclaimer {
    /// Starts the thread; it frees `step` bytes per `pause`, and counts
    /// what is left to free in `pending`.
    pub(crate) fn start(step: u64, pause: Duration, pending: IntGauge) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<(PathBuf, u64)>();
        let gauge = pending.clone();
        std::thread::Builder::new()
            .name("sluice-wal-reclaim".into())
            .spawn(move || {
                while let Ok((path, bytes)) = rx.recv() {
                    shrink_and_remove(&path, step.max(1), pause);
                    gauge.sub(i64::try_from(bytes).unwrap_or(i64::MAX));
                }
            })?;
        Ok(Self { tx, pending })
    }

    /// Queues a file from [`discard`], of `bytes`, to be freed. If the
    /// thread is gone (it only stops when every handle is dropped, so never
    /// while this one exists) the file is left for [`remove_leftovers`].
    pub(crate) fn reclaim(&self, path: PathBuf, bytes: u64) {
        let bytes_i64 = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.pending.add(bytes_i64);
        if self.tx.send((path, bytes)).is_err() {
            self.pending.sub(bytes_i64);
        }
    }
}

/// Truncates `path` towards zero by `step` bytes at a time, pausing `pause`
/// after each step, then unlinks it. Errors are logged, not returned: the
/// segment is already deleted, and a file left behind is removed at the next
/// open.
fn shrink_and_remove(path: &Path, step: u64, pause: Duration) {
    let shrink = || -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut len = file.metadata()?.len();
        while len > step {
            len -= step;
            file.set_len(len)?;
            std::thread::sleep(pause);
        }
        Ok(())
    };
    if let Err(e) = shrink() {
        tracing::warn!(file = %path.display(), error = %e, "could not shrink deleted WAL segment; unlinking it whole");
    }
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %e, "could not remove deleted WAL segment; it is removed at the next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_gone(path: &Path) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} still there",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_zero(gauge: &IntGauge) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gauge.get() != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} bytes still pending",
                gauge.get()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn discard_renames_out_of_the_segment_names_and_the_thread_frees_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = SegmentId::new(7);
        let seg = segment::segment_path(dir.path(), id);
        std::fs::write(&seg, vec![1u8; 10_000]).expect("write");
        let other = segment::segment_path(dir.path(), SegmentId::new(8));
        std::fs::write(&other, b"x").expect("write");

        let renamed = discard(dir.path(), id)
            .expect("discard")
            .expect("was there");
        assert_eq!(renamed, reclaim_path(dir.path(), id));
        assert!(!seg.exists());
        let listed: Vec<_> = segment::list_segments(dir.path())
            .expect("list")
            .into_iter()
            .map(|(id, _)| id.get())
            .collect();
        assert_eq!(listed, vec![8], "the renamed file is no segment");
        assert_eq!(std::fs::metadata(&renamed).expect("stat").len(), 10_000);

        // Already gone: nothing to do.
        assert_eq!(discard(dir.path(), id).expect("discard again"), None);

        // A step of 1 KiB and no pause: shrinks in 9 steps, then unlinks.
        let pending = IntGauge::new("p", "p").expect("gauge");
        let reclaimer = Reclaimer::start(1024, Duration::ZERO, pending.clone()).expect("start");
        reclaimer.reclaim(renamed.clone(), 10_000);
        wait_gone(&renamed);
        wait_zero(&pending);
        assert!(other.exists(), "only the queued file is removed");
    }

    #[test]
    fn shrinking_goes_down_in_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.reclaim");
        std::fs::write(&path, vec![0u8; 5000]).expect("write");
        let pending = IntGauge::new("p", "p").expect("gauge");
        let reclaimer =
            Reclaimer::start(1000, Duration::from_millis(100), pending.clone()).expect("start");
        reclaimer.reclaim(path.clone(), 5000);
        // Counted until freed: four steps of 100 ms are still to come.
        assert_eq!(pending.get(), 5000);
        // After the first step, and before the second, the file is 4000 long.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        while path.exists() && std::time::Instant::now() < deadline {
            if let Ok(m) = std::fs::metadata(&path)
                && seen.last() != Some(&m.len())
            {
                seen.push(m.len());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        wait_gone(&path);
        wait_zero(&pending);
        // Every length observed is a multiple of the step below the start.
        assert!(seen.iter().all(|l| l % 1000 == 0 && *l <= 5000), "{seen:?}");
        assert!(seen.contains(&2000), "shrunk step by step: {seen:?}");
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_and_segments_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = segment::segment_path(dir.path(), SegmentId::new(3));
        std::fs::write(&seg, b"segment").expect("write");
        for id in [1, 2] {
            std::fs::write(reclaim_path(dir.path(), SegmentId::new(id)), b"half").expect("write");
        }
        std::fs::write(dir.path().join("LOCK"), b"").expect("write");
        assert_eq!(remove_leftovers(dir.path()).expect("remove"), 2);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["00000000000000000003.wal".to_string(), "LOCK".into()]
        );
    }
}
