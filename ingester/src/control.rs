//! What the control RPC does: rotate, persist, status, drain, resume.
//!
//! Draining (`PrepareShutdown`) is a loop, not a sequence, because writes
//! that passed their state check just before the drain began may still land:
//! refuse new writes → rotate the WAL → persist every partition and wait →
//! repeat until the buffer is empty and the WAL holds only an empty open
//! segment → `drained`. Every step is idempotent, so calling it twice, or
//! again after a restart mid-drain, ends the same way.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::buffer_tree::{BufferStats, BufferTree, PartitionData};
use crate::ingest_state::{IngestState, IngestStateError, Phase, PhaseCell};
use crate::persist::PersistHandle;
use crate::wal::{ClosedSegment, ReferenceTracker, Wal, WalError, WalStats};

/// Bytes of an open segment with no entry (its header).
const EMPTY_SEGMENT_BYTES: u64 = 16;

#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) ingester_id: Arc<str>,
    pub(crate) buffer: Arc<BufferTree>,
    pub(crate) wal: Wal,
    pub(crate) tracker: ReferenceTracker,
    pub(crate) persist: PersistHandle,
    pub(crate) state: Arc<IngestState>,
    pub(crate) phase: Arc<PhaseCell>,
    /// Running drain, if any: `true` once drained.
    drain: Mutex<Option<watch::Receiver<bool>>>,
}

/// A status snapshot.
#[derive(Debug, Clone)]
pub(crate) struct StatusReport {
    pub(crate) phase: Phase,
    pub(crate) buffer: BufferStats,
    pub(crate) wal: WalStats,
    pub(crate) persist_queue_depth: usize,
    pub(crate) persist_active_jobs: usize,
}

impl StatusReport {
    /// No write in the WAL: no closed segment, and an open segment without
    /// entries. The WAL half of "drained".
    pub(crate) fn wal_empty(&self) -> bool {
        self.wal.closed_segments.is_empty() && self.wal.open_segment_bytes <= EMPTY_SEGMENT_BYTES
    }
}

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ingester_id: Arc<str>,
        buffer: Arc<BufferTree>,
        wal: Wal,
        tracker: ReferenceTracker,
        persist: PersistHandle,
        state: Arc<IngestState>,
        phase: Arc<PhaseCell>,
    ) -> Self {
        Self {
            ingester_id,
            buffer,
            wal,
            tracker,
            persist,
            state,
            phase,
            drain: Mutex::new(None),
        }
    }

    pub(crate) fn status(&self) -> StatusReport {
        StatusReport {
            phase: self.phase.get(),
            buffer: self.buffer.stats(),
            wal: self.wal.segments(),
            persist_queue_depth: self.persist.queue_depth(),
            persist_active_jobs: self.persist.active_jobs(),
        }
    }

    /// Rotates the WAL; the rotation task (see `init`) hands the closed
    /// segment to the reference tracker and persists what it holds.
    pub(crate) async fn rotate(&self) -> Result<ClosedSegment, WalError> {
        self.wal.rotate().await
    }

    /// Partitions matching the filter (empty strings match everything).
    fn partitions(&self, namespace: &str, table: &str) -> Vec<Arc<PartitionData>> {
        self.buffer
            .partitions()
            .into_iter()
            .filter(|p| namespace.is_empty() || &*p.namespace == namespace)
            .filter(|p| table.is_empty() || &*p.table == table)
            .collect()
    }

    /// Persists the matching partitions; with `wait`, returns once done:
    /// once every batch taken from them so far has persisted, including
    /// batches a rotation or hot-partition job took just before (their
    /// buffer is then empty and this call enqueues nothing for them).
    /// Returns (partitions enqueued, rows enqueued).
    pub(crate) async fn persist(&self, namespace: &str, table: &str, wait: bool) -> (u64, u64) {
        let parts = self.partitions(namespace, table);
        let mut rows = 0u64;
        let mut n = 0u64;
        for p in &parts {
            rows += p.stats().buffered_rows as u64;
            if self.persist.enqueue(Arc::clone(p)).await.is_some() {
                n += 1;
            }
        }
        if wait {
            join_all(parts.iter().map(|p| p.wait_persisted(p.persists_started()))).await;
        }
        (n, rows)
    }

    /// `PrepareShutdown`: starts (or joins) the drain; with `wait`, returns
    /// once drained. Returns the phase.
    pub(crate) async fn prepare_shutdown(self: &Arc<Self>, wait: bool) -> Phase {
        self.state.set(IngestStateError::Draining);
        if self.phase.get() != Phase::Drained {
            self.phase.set(Phase::Draining);
        }
        let mut rx = {
            let mut g = self.drain.lock();
            match &*g {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(false);
                    *g = Some(rx.clone());
                    let this = Arc::clone(self);
                    tokio::spawn(async move { this.drain_loop(tx).await });
                    rx
                }
            }
        };
        if wait {
            let _ = rx.wait_for(|done| *done).await;
        }
        self.phase.get()
    }

    async fn drain_loop(self: Arc<Self>, tx: watch::Sender<bool>) {
        let started = std::time::Instant::now();
        tracing::info!("drain: writes refused; persisting everything");
        loop {
            if !self.state.is_set(IngestStateError::Draining) {
                tracing::info!("drain cancelled (ResumeIngest)");
                *self.drain.lock() = None;
                return;
            }
            let wal = self.wal.segments();
            let buf = self.buffer.stats();
            let tracked = self.tracker.stats().await;
            let drained = buf.buffered_rows == 0
                && buf.persisting_rows == 0
                && wal.closed_segments.is_empty()
                && wal.open_segment_bytes <= EMPTY_SEGMENT_BYTES
                && tracked.segments == 0;
            if drained {
                self.phase.set(Phase::Drained);
                tracing::info!(elapsed = ?started.elapsed(), "drained: buffer empty, WAL empty");
                let _ = tx.send(true);
                *self.drain.lock() = None;
                return;
            }
            if wal.open_segment_bytes > EMPTY_SEGMENT_BYTES
                && let Err(e) = self.wal.rotate().await
            {
                tracing::warn!(error = %e, "drain: WAL rotation failed; retrying");
            }
            self.persist("", "", true).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `ResumeIngest`: accept writes again (cancels an unfinished drain).
    pub(crate) fn resume(&self) -> Phase {
        self.state.unset(IngestStateError::Draining);
        self.phase.set(Phase::Ready);
        tracing::info!("ingest resumed");
        Phase::Ready
    }
}
