//! `PersistHandle`: the cheap-clone front of the persist workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::compact::Executor;
use super::worker::{Job, run_worker};
use crate::buffer_tree::{BufferTree, PartitionData};
use crate::catalog::Catalog;
use crate::ingest_state::{IngestState, IngestStateError};

/// Told when a job has completed (file recorded, batch dropped).
pub(crate) trait PersistObserver: std::fmt::Debug + Send + Sync {
    fn persisted(&self, sequence_numbers: Arc<[u64]>);
}

#[derive(Debug, Clone)]
pub(crate) struct PersistConfig {
    pub(crate) workers: usize,
    pub(crate) queue_depth: usize,
    pub(crate) ingester_id: Arc<str>,
    /// Where jobs journal their uploads and what they persisted (`None` in
    /// unit tests without a WAL).
    pub(crate) journal: Option<Arc<super::journal::Journal>>,
    /// A lower-priority pool for jobs that can wait (`None`: every job runs
    /// on the executor given to [`PersistHandle::new`]).
    pub(crate) background: Option<Background>,
}

/// Where persist jobs run while persistence is keeping up.
#[derive(Debug, Clone)]
pub(crate) struct Background {
    /// A pool below the write path's priority ([`Executor::lowered`]).
    pub(crate) executor: Arc<Executor>,
    /// A job starts here only while fewer bytes than this are buffered and
    /// no other job is waiting for a worker; otherwise at full priority.
    pub(crate) below_bytes: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) queue_depth: IntGauge,
    pub(crate) active: IntGauge,
    pub(crate) queue_time: Histogram,
    pub(crate) active_time: Histogram,
    pub(crate) total_time: Histogram,
    pub(crate) rows: IntCounter,
    pub(crate) bytes: IntCounter,
    pub(crate) files: IntCounter,
    pub(crate) errors: IntCounter,
    pub(crate) saturated: IntCounter,
    pub(crate) lowered: IntCounter,
}

impl Metrics {
    fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        let h = |name: &str, help: &str| {
            Histogram::with_opts(
                HistogramOpts::new(name, help)
                    .buckets(prometheus::exponential_buckets(0.001, 2.0, 18)?),
            )
        };
        let m = Self {
            queue_depth: IntGauge::new(
                "sluice_persist_queue_depth",
                "Persist jobs waiting for a worker",
            )?,
            active: IntGauge::new("sluice_persist_active_jobs", "Persist jobs running")?,
            queue_time: h(
                "sluice_persist_queue_duration_seconds",
                "Time a persist job waited in the queue",
            )?,
            active_time: h(
                "sluice_persist_active_duration_seconds",
                "Time a persist job ran (retries included)",
            )?,
            total_time: h(
                "sluice_persist_total_duration_seconds",
                "Time from enqueue to completion",
            )?,
            rows: IntCounter::new(
                "sluice_persist_rows_total",
                "Rows written to Parquet (after dedup)",
            )?,
            bytes: IntCounter::new("sluice_persist_bytes_total", "Parquet bytes written")?,
            files: IntCounter::new("sluice_persist_files_total", "Parquet files written")?,
            errors: IntCounter::new(
                "sluice_persist_errors_total",
                "Persist attempts that failed and were retried",
            )?,
            saturated: IntCounter::new(
                "sluice_persist_saturated_total",
                "Times the persist queue was full (writes refused until it drained)",
            )?,
            lowered: IntCounter::new(
                "sluice_persist_lowered_jobs_total",
                "Persist attempts started on the lower-priority pool (the buffer had room)",
            )?,
        };
        r.register(Box::new(m.queue_depth.clone()))?;
        r.register(Box::new(m.active.clone()))?;
        r.register(Box::new(m.queue_time.clone()))?;
        r.register(Box::new(m.active_time.clone()))?;
        r.register(Box::new(m.total_time.clone()))?;
        r.register(Box::new(m.rows.clone()))?;
        r.register(Box::new(m.bytes.clone()))?;
        r.register(Box::new(m.files.clone()))?;
        r.register(Box::new(m.errors.clone()))?;
        r.register(Box::new(m.saturated.clone()))?;
        r.register(Box::new(m.lowered.clone()))?;
        Ok(m)
    }
}

#[derive(Debug)]
struct Inner {
    workers: Vec<mpsc::UnboundedSender<Job>>,
    permits: Arc<Semaphore>,
    queue_depth: usize,
    /// Orders "take the buffer" with "hand to the worker" (never held
    /// across an await).
    order: Mutex<()>,
    waiting: AtomicUsize,
    queued: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    state: Arc<IngestState>,
    metrics: Metrics,
}

/// Front of the persist workers. Dropping every handle stops the workers
/// once their queues are empty.
#[derive(Debug, Clone)]
pub(crate) struct PersistHandle {
    inner: Arc<Inner>,
}

/// Waits for one job.
pub(crate) type Completion = oneshot::Receiver<()>;

impl PersistHandle {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: PersistConfig,
        catalog: Arc<dyn Catalog>,
        store: Arc<dyn ObjectStore>,
        executor: Arc<Executor>,
        buffer: Arc<BufferTree>,
        state: Arc<IngestState>,
        observers: Vec<Arc<dyn PersistObserver>>,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Metrics::new(registry)?;
        let permits = Arc::new(Semaphore::new(config.queue_depth.max(1)));
        let queued = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let observers: Arc<[Arc<dyn PersistObserver>]> = observers.into();
        let mut workers = Vec::with_capacity(config.workers.max(1));
        for n in 0..config.workers.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            workers.push(tx);
            tokio::spawn(run_worker(
                n,
                rx,
                super::worker::WorkerContext {
                    catalog: Arc::clone(&catalog),
                    store: Arc::clone(&store),
                    executor: Arc::clone(&executor),
                    background: config.background.clone(),
                    state: Arc::clone(&state),
                    buffer: Arc::clone(&buffer),
                    observers: Arc::clone(&observers),
                    ingester_id: Arc::clone(&config.ingester_id),
                    journal: config.journal.clone(),
                    queued: Arc::clone(&queued),
                    active: Arc::clone(&active),
                    metrics: metrics.clone(),
                },
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                workers,
                permits,
                queue_depth: config.queue_depth.max(1),
                order: Mutex::new(()),
                waiting: AtomicUsize::new(0),
                queued,
                active,
                state,
                metrics,
            }),
        })
    }

    /// Jobs queued (not yet running).
    pub(crate) fn queue_depth(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// Jobs running.
    pub(crate) fn active_jobs(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Persists whatever `partition` has buffered now. `None` if it had
    /// nothing. Waits for room in the queue (setting the saturation bit
    /// meanwhile); never call it from a write request.
    pub(crate) async fn enqueue(&self, partition: Arc<PartitionData>) -> Option<Completion> {
        let inner = &self.inner;
        let enqueued_at = Instant::now();
        let permit = match Arc::clone(&inner.permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                inner.waiting.fetch_add(1, Ordering::AcqRel);
                if !inner.state.is_set(IngestStateError::PersistSaturated) {
                    inner.metrics.saturated.inc();
                    tracing::warn!(
                        queue_depth = inner.queue_depth,
                        "persist queue full: refusing writes until it drains"
                    );
                }
                inner.state.set(IngestStateError::PersistSaturated);
                let p = Arc::clone(&inner.permits)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                inner.waiting.fetch_sub(1, Ordering::AcqRel);
                p
            }
        };
        let (tx, rx) = oneshot::channel();
        {
            let _order = inner.order.lock();
            let batch = partition.mark_persisting()?;
            let worker = (partition.id.get().unsigned_abs() as usize) % inner.workers.len();
            inner.queued.fetch_add(1, Ordering::AcqRel);
            inner.metrics.queue_depth.inc();
            let job = Job {
                partition: Arc::clone(&partition),
                batch,
                enqueued_at,
                done: tx,
                permit,
                release: Arc::clone(&self.inner) as Arc<dyn ReleaseHook>,
            };
            if inner.workers[worker].send(job).is_err() {
                tracing::error!("persist worker {worker} is gone");
                return None;
            }
        }
        Some(rx)
    }

    /// Enqueues and waits for completion.
    #[cfg(test)]
    pub(crate) async fn persist_and_wait(&self, partition: Arc<PartitionData>) {
        if let Some(rx) = self.enqueue(partition).await {
            let _ = rx.await;
        }
    }
}

/// Called by a worker after each job, to lift saturation.
pub(crate) trait ReleaseHook: std::fmt::Debug + Send + Sync {
    fn job_released(&self);
}

impl ReleaseHook for Inner {
    fn job_released(&self) {
        if self.state.is_set(IngestStateError::PersistSaturated)
            && self.waiting.load(Ordering::Acquire) == 0
            && self.permits.available_permits() * 2 >= self.queue_depth
        {
            self.state.unset(IngestStateError::PersistSaturated);
            tracing::info!("persist queue drained: accepting writes again");
        }
    }
}

/// Capped exponential backoff for retries.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << attempt.min(8));
    Duration::from_millis(ms.min(10_000))
}
