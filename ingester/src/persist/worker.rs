//! One persist worker and its job.
//!
//! ```text
//!   queued ─▶ active ─┬─▶ sort key CAS ─▶ compact ─▶ write Parquet ─▶ record file ─┬─▶ done
//!                     └──────────────── failure: backoff, retry ◀──────────────────┘
//! ```
//! On success the partition drops the batch (queries stop reading it from
//! memory exactly when the catalog lists its file), buffer memory is
//! released, and observers (the WAL reference tracker) are told which
//! writes are now durable in Parquet.
//!
//! Each attempt picks its pool. While persistence keeps up (the buffer well
//! under its limit, no job waiting) it runs on the background pool, below
//! the write path's priority: a job then takes a core only when writes
//! leave it free, instead of sharing it equally with the request being
//! validated. Once the buffer fills or jobs queue, attempts run at full
//! priority, so a saturating ingest cannot starve persistence into
//! refusing writes (measured in docs/benchmarks.md, session 13).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::compact::{self, Executor};
use super::handle::{Background, Metrics, PersistObserver, ReleaseHook, backoff};
use super::journal::{Intent, Journal, JournalError};
use crate::buffer_tree::{BufferTree, PartitionData, PersistingBatch};
use crate::catalog::{Catalog, ParquetFileParams};
use crate::ingest_state::IngestState;
use crate::schema::union_schema;

pub(super) struct Job {
    pub(super) partition: Arc<PartitionData>,
    pub(super) batch: PersistingBatch,
    pub(super) enqueued_at: Instant,
    pub(super) done: oneshot::Sender<()>,
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) release: Arc<dyn ReleaseHook>,
}

pub(super) struct WorkerContext {
    pub(super) catalog: Arc<dyn Catalog>,
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) executor: Arc<Executor>,
    pub(super) background: Option<Background>,
    pub(super) state: Arc<IngestState>,
    pub(super) buffer: Arc<BufferTree>,
    pub(super) observers: Arc<[Arc<dyn PersistObserver>]>,
    pub(super) ingester_id: Arc<str>,
    pub(super) journal: Option<Arc<Journal>>,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) active: Arc<AtomicUsize>,
    pub(super) metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("catalog: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("compact: {0}")]
    Compact(#[from] compact::CompactError),
    #[error("{0}")]
    Journal(#[from] JournalError),
}

pub(super) async fn run_worker(n: usize, mut rx: mpsc::UnboundedReceiver<Job>, ctx: WorkerContext) {
    while let Some(job) = rx.recv().await {
        ctx.queued.fetch_sub(1, Ordering::AcqRel);
        ctx.metrics.queue_depth.dec();
        ctx.active.fetch_add(1, Ordering::AcqRel);
        ctx.metrics.active.inc();
        let queue_time = job.enqueued_at.elapsed();
        let started = Instant::now();
        let p = Arc::clone(&job.partition);
        let mut attempt = 0u32;
        // One path per job: a retry overwrites its own partial file, and a
        // retry after a lost catalog reply finds the file already recorded.
        let path = Path::from_iter([
            p.namespace.as_ref(),
            p.table.as_ref(),
            p.key.as_ref(),
            &format!("{}.parquet", uuid::Uuid::new_v4()),
        ]);
        let mut lowered;
        let outcome = loop {
            let exec;
            (exec, lowered) = ctx.pool();
            match persist_batch(&ctx, exec, &p, &job.batch, &path).await {
                Ok(o) => break o,
                Err(e) => {
                    ctx.metrics.errors.inc();
                    let wait = backoff(attempt);
                    tracing::warn!(
                        worker = n,
                        namespace = %p.namespace,
                        table = %p.table,
                        partition = %p.key,
                        attempt,
                        error = %e,
                        retry_in = ?wait,
                        "persist failed; retrying (data stays buffered)"
                    );
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let active_time = started.elapsed();
        // The file is recorded: drop the batch from memory, then release
        // its WAL references.
        match p.mark_persisted(job.batch.batch_number) {
            Some(bytes) => ctx.buffer.account(-(bytes as isize)),
            None => {
                tracing::error!(partition = %p.key, batch = job.batch.batch_number, "persisted batch was not at the front of its partition's queue")
            }
        }
        p.persist_pending.store(false, Ordering::Release);
        let seqs: Arc<[u64]> = {
            let mut v: Vec<u64> = job.batch.sequence_numbers().collect();
            v.sort_unstable();
            v.dedup();
            v.into()
        };
        for o in ctx.observers.iter() {
            o.persisted(Arc::clone(&seqs));
        }
        ctx.active.fetch_sub(1, Ordering::AcqRel);
        ctx.metrics.active.dec();
        ctx.metrics.queue_time.observe(queue_time.as_secs_f64());
        ctx.metrics.active_time.observe(active_time.as_secs_f64());
        ctx.metrics
            .total_time
            .observe(job.enqueued_at.elapsed().as_secs_f64());
        ctx.metrics.rows.inc_by(outcome.rows);
        ctx.metrics.bytes.inc_by(outcome.bytes);
        ctx.metrics.files.inc();
        tracing::info!(
            worker = n,
            namespace = %p.namespace,
            table = %p.table,
            partition = %p.key,
            batch = job.batch.batch_number,
            rows_in = job.batch.rows,
            rows_out = outcome.rows,
            bytes = outcome.bytes,
            path = %outcome.path,
            queue_ms = queue_time.as_millis() as u64,
            active_ms = active_time.as_millis() as u64,
            total_ms = job.enqueued_at.elapsed().as_millis() as u64,
            lowered,
            "persisted"
        );
        drop(job.permit);
        job.release.job_released();
        let _ = job.done.send(());
    }
}

impl WorkerContext {
    /// The pool for the next attempt (see the module docs), and whether it
    /// is the lowered one.
    fn pool(&self) -> (&Executor, bool) {
        match &self.background {
            Some(bg)
                if self.state.buffer_bytes() < bg.below_bytes
                    && self.queued.load(Ordering::Acquire) == 0 =>
            {
                self.metrics.lowered.inc();
                (&bg.executor, true)
            }
            _ => (&self.executor, false),
        }
    }
}

struct Outcome {
    rows: u64,
    bytes: u64,
    path: String,
}

async fn persist_batch(
    ctx: &WorkerContext,
    executor: &Executor,
    p: &PartitionData,
    batch: &PersistingBatch,
    path: &Path,
) -> Result<Outcome, JobError> {
    let batches: Vec<RecordBatch> = batch.batches.iter().map(|b| b.batch.clone()).collect();
    let schema = union_schema(batches.iter().map(|b| b.schema_ref()));

    // Sort key: the catalog's, extended with new tags; compare-and-swap so
    // concurrent persists of this partition on other pods never lose a
    // column.
    let mut current = ctx
        .catalog
        .get_or_create_partition(p.table_id, &p.key)
        .await?
        .sort_key;
    let sort_key = loop {
        let wanted = compact::sort_key(&batches, &current);
        if wanted == current {
            break wanted;
        }
        match ctx.catalog.cas_sort_key(p.id, &current, &wanted).await? {
            Ok(_) => break wanted,
            Err(now) => current = now,
        }
    };

    let out = compact::compact(executor, Arc::clone(&schema), batches, &sort_key).await?;
    let (min_seq, max_seq) = batch
        .sequence_numbers()
        .fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let meta = vec![
        ("sluice.sort_key".to_string(), sort_key.join(",")),
        (
            "sluice.min_sequence_number".to_string(),
            min_seq.to_string(),
        ),
        (
            "sluice.max_sequence_number".to_string(),
            max_seq.to_string(),
        ),
        (
            "sluice.ingester_id".to_string(),
            ctx.ingester_id.to_string(),
        ),
        ("sluice.partition_key".to_string(), p.key.to_string()),
        (
            "sluice.batch_number".to_string(),
            batch.batch_number.to_string(),
        ),
    ];
    let intent = Intent {
        partition_id: p.id,
        table_id: p.table_id,
        path: path.to_string(),
    };
    // Before the upload: a crash from here until the catalog records the
    // file leaves an object that start-up then finds and deletes.
    if let Some(j) = &ctx.journal {
        j.intent(intent.clone()).await?;
    }
    let file = compact::write_parquet(Arc::clone(&ctx.store), path, out, meta).await?;
    let params = ParquetFileParams {
        namespace_id: p.namespace_id,
        table_id: p.table_id,
        partition_id: p.id,
        object_path: path.to_string(),
        file_size_bytes: file.file_size_bytes,
        row_count: file.row_count,
        min_time: file.min_time,
        max_time: file.max_time,
        min_sequence_number: min_seq,
        max_sequence_number: max_seq,
        sort_key,
        ingester_id: ctx.ingester_id.to_string(),
        batch_number: batch.batch_number,
    };
    match ctx.catalog.add_parquet_file(params).await {
        Ok(_) => {}
        // A retry after a lost reply: the file is already recorded.
        Err(crate::catalog::CatalogError::ParquetFileExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // After the catalog: replay will skip these writes for this partition.
    if let Some(j) = &ctx.journal {
        let seqs: Vec<u64> = batch.sequence_numbers().collect();
        j.persisted(intent, &seqs).await?;
    }
    Ok(Outcome {
        rows: file.row_count,
        bytes: file.file_size_bytes,
        path: path.to_string(),
    })
}
