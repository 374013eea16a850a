//! The WAL volume's usage limit: a byte cap on the WAL's own files and a
//! ceiling on the filesystem's used fraction (from `statvfs`), so a filling
//! volume refuses writes cleanly long before `ENOSPC` does it mid-group.
//!
//! A task samples usage every [`CHECK_INTERVAL`]; the WAL's size comes from
//! its in-memory accounting and `statvfs` is one syscall, so sampling is
//! cheap. Past either limit it:
//!
//! 1. calls `set_full(true)` (the ingest state's `DiskFull` bit: writes get
//!    `RESOURCE_EXHAUSTED` / HTTP 429 naming the limit), and logs the numbers;
//! 2. rotates the WAL, which makes the rotation subscriber persist the buffer;
//!    once persisted, the reference tracker deletes the closed segments, and
//!    rotation is retried every [`RETRIGGER`] while still over the limit;
//! 3. calls `set_full(false)` once usage is back under the resume mark
//!    ([`RESUME_BYTES`] of the byte cap, or [`RESUME_FRACTION_MARGIN`] below
//!    the fraction), so writes do not flap at the edge.
//!
//! The cap is checked between samples, so writes accepted within one interval
//! can overshoot it by what they write in that time; keep the cap well below
//! the volume size. An `ENOSPC` that still happens is handled by the writer
//! (the group is refused and cut off; see `writer.rs`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Wal;

/// How often usage is sampled.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// While over the limit, rotate again this often (persist may need several).
pub(crate) const RETRIGGER: Duration = Duration::from_secs(5);
/// Writes resume once WAL bytes are below this share of the byte cap.
pub(crate) const RESUME_BYTES: f64 = 0.9;
/// Writes resume once the filesystem is this far below the fraction limit.
pub(crate) const RESUME_FRACTION_MARGIN: f64 = 0.02;

/// The `serve` flags for the WAL volume's usage limit (both off by default).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WalLimitOptions {
    /// Refuse writes (RESOURCE_EXHAUSTED, HTTP 429) while the WAL's segment
    /// files use this many bytes or more; the WAL is rotated and the buffer
    /// persisted to free space, and writes resume below 90% of it.
    #[arg(long, env = "SLUICE_WAL_MAX_BYTES")]
    pub wal_max_bytes: Option<u64>,

    /// Refuse writes while the WAL's filesystem is this full or more (0..1,
    /// e.g. 0.9, measured with statvfs as `df` does); writes resume 2 points
    /// below it.
    #[arg(long, env = "SLUICE_WAL_MAX_FRACTION", value_parser = parse_fraction)]
    pub wal_max_fraction: Option<f64>,
}

impl WalLimitOptions {
    pub fn limit(&self) -> UsageLimit {
        UsageLimit {
            max_bytes: self.wal_max_bytes,
            max_fraction: self.wal_max_fraction,
        }
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("`{s}` is not a fraction in (0, 1], e.g. 0.9")),
    }
}

/// The configured limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UsageLimit {
    /// Bytes of WAL segment files.
    pub max_bytes: Option<u64>,
    /// Used fraction of the WAL's filesystem (0..1).
    pub max_fraction: Option<f64>,
}

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    pub(crate) wal_bytes: u64,
    /// `None` if `statvfs` failed (the byte cap still applies).
    pub(crate) fs_used_fraction: Option<f64>,
}

impl UsageLimit {
    pub fn is_set(&self) -> bool {
        self.max_bytes.is_some() || self.max_fraction.is_some()
    }

    /// Why `u` is over a limit, in words, or `None`.
    pub(crate) fn over(&self, u: &Usage) -> Option<String> {
        if let Some(cap) = self.max_bytes
            && u.wal_bytes >= cap
        {
            return Some(format!(
                "WAL files use {} bytes, at or over --wal-max-bytes {cap}",
                u.wal_bytes
            ));
        }
        if let (Some(max), Some(used)) = (self.max_fraction, u.fs_used_fraction)
            && used >= max
        {
            return Some(format!(
                "the WAL volume is {:.1}% full, at or over --wal-max-fraction {:.1}%",
                used * 100.0,
                max * 100.0
            ));
        }
        None
    }

    /// Whether usage is low enough to accept writes again.
    pub(crate) fn may_resume(&self, u: &Usage) -> bool {
        let bytes_ok = self
            .max_bytes
            .is_none_or(|cap| (u.wal_bytes as f64) < cap as f64 * RESUME_BYTES);
        let fraction_ok = match (self.max_fraction, u.fs_used_fraction) {
            (Some(max), Some(used)) => used < (max - RESUME_FRACTION_MARGIN).max(0.0),
            _ => true,
        };
        bytes_ok && fraction_ok
    }
}

/// Used fraction of the filesystem holding `path` (blocks not available to
/// unprivileged users count as used, as `df` does).
pub(crate) fn fs_used_fraction(path: &Path) -> std::io::Result<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized,
    // zeroed out-parameter that statvfs fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let total = st.f_blocks as f64;
    if total <= 0.0 {
        return Ok(0.0);
    }
    Ok(1.0 - (st.f_bavail as f64 / total))
}

fn sample(wal: &Wal, dir: &Path) -> Usage {
    Usage {
        wal_bytes: wal.segments().bytes,
        fs_used_fraction: fs_used_fraction(dir).ok(),
    }
}

/// Watches usage until the returned task is aborted or the WAL shuts down;
/// `set_full` flips the write refusal.
pub(crate) fn spawn_usage_guard(
    wal: Wal,
    limit: UsageLimit,
    set_full: impl Fn(bool) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let dir: PathBuf = wal.dir().to_path_buf();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut full_since: Option<Instant> = None;
        let mut last_rotation = Instant::now();
        loop {
            tick.tick().await;
            let u = sample(&wal, &dir);
            match full_since {
                None => {
                    if let Some(reason) = limit.over(&u) {
                        tracing::warn!(%reason, "WAL volume over its limit: refusing writes, rotating and persisting to free space");
                        set_full(true);
                        full_since = Some(Instant::now());
                        last_rotation = Instant::now();
                        rotate(&wal).await;
                    }
                }
                Some(since) => {
                    if limit.may_resume(&u) {
                        tracing::info!(
                            wal_bytes = u.wal_bytes,
                            refused_for = ?since.elapsed(),
                            "WAL volume back under its limit: accepting writes"
                        );
                        set_full(false);
                        full_since = None;
                    } else if last_rotation.elapsed() >= RETRIGGER {
                        last_rotation = Instant::now();
                        rotate(&wal).await;
                    }
                }
            }
        }
    })
}

async fn rotate(wal: &Wal) {
    match wal.rotate().await {
        Ok(closed) => tracing::info!(
            segment = closed.id.get(),
            bytes = closed.bytes,
            "WAL rotated to free space"
        ),
        Err(e) => tracing::warn!(error = %e, "WAL rotation to free space failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(wal_bytes: u64, frac: Option<f64>) -> Usage {
        Usage {
            wal_bytes,
            fs_used_fraction: frac,
        }
    }

    #[test]
    fn byte_cap_with_hysteresis() {
        let l = UsageLimit {
            max_bytes: Some(1000),
            max_fraction: None,
        };
        assert!(l.over(&u(999, Some(0.99))).is_none());
        let why = l.over(&u(1000, None)).expect("at the cap");
        assert!(why.contains("--wal-max-bytes 1000"), "{why}");
        assert!(!l.may_resume(&u(950, None)));
        assert!(l.may_resume(&u(899, None)));
    }

    #[test]
    fn fraction_with_hysteresis() {
        let l = UsageLimit {
            max_bytes: None,
            max_fraction: Some(0.9),
        };
        assert!(l.over(&u(u64::MAX, Some(0.89))).is_none());
        let why = l.over(&u(0, Some(0.95))).expect("over");
        assert!(why.contains("95.0% full"), "{why}");
        assert!(!l.may_resume(&u(0, Some(0.89))));
        assert!(l.may_resume(&u(0, Some(0.87))));
        // Unknown filesystem usage does not block writes.
        assert!(l.over(&u(0, None)).is_none());
    }

    #[test]
    fn statvfs_reads_a_real_filesystem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = fs_used_fraction(dir.path()).expect("statvfs");
        assert!((0.0..=1.0).contains(&f), "{f}");
        assert!(fs_used_fraction(Path::new("/no/such/dir")).is_err());
    }

    #[tokio::test]
    async fn guard_refuses_rotates_and_resumes() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = prometheus::Registry::new();
        let (wal, _) =
            Wal::open(super::super::WalConfig::new(dir.path()), &registry).expect("open");
        let mut rotations = wal.subscribe_rotations();
        let full = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&full);
        let limit = UsageLimit {
            max_bytes: Some(4096),
            max_fraction: None,
        };
        let task = spawn_usage_guard(wal.clone(), limit, move |v| f.store(v, Ordering::SeqCst));
        let mut seq = 0;
        while wal.segments().bytes < 4096 {
            seq += 1;
            wal.append(&super::super::WalOp {
                sequence_number: seq,
                payload: bytes::Bytes::from(vec![seq as u8; 1024]),
            })
            .await
            .expect("append");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !full.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "never refused");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // It rotated to free space; deleting the closed segment (what the
        // reference tracker does after persisting) lets writes resume.
        let closed = tokio::time::timeout(Duration::from_secs(10), rotations.recv())
            .await
            .expect("rotation in time")
            .expect("rotation");
        assert_eq!(closed.sequence_numbers.len(), seq as usize);
        wal.delete_segment(closed.id).await.expect("delete");
        while full.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "never resumed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        wal.shutdown().await.expect("shutdown");
    }
}
