//! Prometheus metrics of the WAL.
//!
//! Counters and histograms are updated by whoever commits (the writer thread,
//! or an appender committing inline) under the writer's lock; the gauges
//! also by `delete_segment`. All are registered on the registry given to
//! `Wal::open` (so opening two WALs on one registry fails with
//! [`WalError::Metrics`](super::WalError::Metrics)).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) syncs: IntCounter,
    pub(crate) inline_commits: IntCounter,
    pub(crate) sync_duration: Histogram,
    pub(crate) ops_per_sync: Histogram,
    pub(crate) bytes_written: IntCounter,
    pub(crate) write_errors: IntCounter,
    pub(crate) segments: IntGauge,
    pub(crate) bytes: IntGauge,
    pub(crate) rotations: IntCounterVec,
    pub(crate) reclaim_pending_bytes: IntGauge,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            syncs: IntCounter::new(
                "sluice_wal_syncs_total",
                "WAL entries written and fdatasynced (one per group commit)",
            )?,
            inline_commits: IntCounter::new(
                "sluice_wal_inline_commits_total",
                "WAL commits of one small op done on the appending thread (the WAL was idle)",
            )?,
            sync_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_wal_sync_duration_seconds",
                    "Duration of the fdatasync of one WAL group commit",
                )
                // fdatasync ranges from tens of microseconds (NVMe with
                // power-loss protection) to tens of milliseconds (network disks).
                .buckets(vec![
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 1.0,
                ]),
            )?,
            ops_per_sync: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_wal_ops_per_sync",
                    "Operations made durable by one WAL group commit",
                )
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 14)?),
            )?,
            bytes_written: IntCounter::new(
                "sluice_wal_bytes_written_total",
                "Bytes written to WAL segments (entries and headers)",
            )?,
            write_errors: IntCounter::new(
                "sluice_wal_write_errors_total",
                "WAL group commits whose write or fdatasync failed (their operations were refused)",
            )?,
            segments: IntGauge::new(
                "sluice_wal_segments",
                "WAL segment files on disk, open one included",
            )?,
            bytes: IntGauge::new(
                "sluice_wal_bytes",
                "Total size of the WAL segment files on disk",
            )?,
            rotations: IntCounterVec::new(
                Opts::new(
                    "sluice_wal_rotations_total",
                    "WAL segment rotations, by reason",
                ),
                &["reason"],
            )?,
            reclaim_pending_bytes: IntGauge::new(
                "sluice_wal_reclaim_pending_bytes",
                "Bytes of deleted WAL segments still on disk: renamed out of the WAL, their space given back in steps",
            )?,
        };
        registry.register(Box::new(m.syncs.clone()))?;
        registry.register(Box::new(m.inline_commits.clone()))?;
        registry.register(Box::new(m.sync_duration.clone()))?;
        registry.register(Box::new(m.ops_per_sync.clone()))?;
        registry.register(Box::new(m.bytes_written.clone()))?;
        registry.register(Box::new(m.write_errors.clone()))?;
        registry.register(Box::new(m.segments.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.rotations.clone()))?;
        registry.register(Box::new(m.reclaim_pending_bytes.clone()))?;
        Ok(m)
    }
}
