//! A dedicated thread pool for DataFusion work.
//!
//! Sorting and encoding a partition is CPU-bound for seconds at a time. On
//! the runtime that serves RPCs it would starve write acknowledgements and
//! queries of worker threads, so it runs on a separate multi-thread tokio
//! runtime with its own OS threads ([`DedicatedRuntime`]; IOx's
//! `DedicatedExecutor`). The OS scheduler shares the cores between the two
//! runtimes instead.
//!
//! Dropping the [`Executor`] never blocks: running tasks are cancelled at
//! their next await point, and futures returned by [`Executor::spawn`]
//! resolve to [`ExecutorError::ShutDown`].
//!
//! The executor also owns the DataFusion [`RuntimeEnv`]: one memory pool
//! shared by every job (a [`FairSpillPool`]: concurrent sorts each get a fair
//! share, and spill when over it) and a disk manager writing spill files
//! under the configured directory, on the data volume rather than a small
//! `/tmp`.
//!
//! [`Executor::lowered`] adds a second pool at a lower CPU priority sharing
//! that environment: persist jobs run there while the buffer has room, so
//! they give way to write acknowledgements, and on the full-priority pool
//! once persistence must catch up (see `persist::worker`).

use std::future::Future;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::config::SessionConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::object_store::DefaultObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::dedicated::DedicatedRuntime;

/// Rows per batch produced by the sort (DataFusion's default).
const BATCH_SIZE: usize = 8192;

/// Target size of the sorted runs the sort merges (see below).
const SORT_RUN_BYTES: usize = 8 << 20;

/// How long the control thread lets cancelled tasks wind down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Failures of the executor itself (not of the work it runs).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecutorError {
    #[error("the compaction executor has shut down")]
    ShutDown,

    #[error("a compaction task panicked: {0}")]
    Panicked(String),

    #[error("starting the compaction executor: {0}")]
    Start(#[source] std::io::Error),

    #[error("compaction spill directory {path}: {source}")]
    SpillDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("configuring DataFusion: {0}")]
    DataFusion(#[source] DataFusionError),
}

impl ExecutorError {
    pub(super) fn from_join(e: tokio::task::JoinError) -> Self {
        if e.is_panic() {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_string());
            Self::Panicked(msg)
        } else {
            Self::ShutDown
        }
    }
}

/// The compaction thread pool and DataFusion environment. Cheap to share
/// behind an `Arc`; shuts down when dropped.
#[derive(Debug)]
pub(crate) struct Executor {
    /// Shuts down (cancelling running jobs) when the executor is dropped.
    runtime: DedicatedRuntime,
    runtime_env: Arc<RuntimeEnv>,
    session_config: SessionConfig,
}

impl Executor {
    /// Starts `threads` worker threads (at least one) at the caller's
    /// priority, and a DataFusion environment with a `memory_limit`-byte
    /// pool spilling under `spill_dir` (created if missing).
    pub(crate) fn new(
        threads: usize,
        memory_limit: usize,
        spill_dir: PathBuf,
    ) -> Result<Self, ExecutorError> {
        Self::build(threads, memory_limit, spill_dir, BATCH_SIZE)
    }

    /// A second pool of as many threads, `nice` steps below the caller's
    /// priority (see `--persist-thread-nice`), sharing this one's memory
    /// pool and spill directory: jobs on either count against one limit.
    pub(crate) fn lowered(&self, nice: i32) -> Result<Self, ExecutorError> {
        let threads = self.handle().metrics().num_workers();
        let runtime = DedicatedRuntime::start("sluice-compact-low", threads, nice, SHUTDOWN_GRACE)
            .map_err(ExecutorError::Start)?;
        Ok(Self {
            runtime,
            runtime_env: Arc::clone(&self.runtime_env),
            session_config: self.session_config.clone(),
        })
    }

    /// As [`Self::new`], with `batch_size` rows per sorted batch (tests use
    /// tiny batches to put key groups across batch boundaries).
    #[cfg(test)]
    pub(super) fn with_batch_size(
        threads: usize,
        memory_limit: usize,
        spill_dir: PathBuf,
        batch_size: usize,
    ) -> Result<Self, ExecutorError> {
        Self::build(threads, memory_limit, spill_dir, batch_size)
    }

    fn build(
        threads: usize,
        memory_limit: usize,
        spill_dir: PathBuf,
        batch_size: usize,
    ) -> Result<Self, ExecutorError> {
        std::fs::create_dir_all(&spill_dir).map_err(|source| ExecutorError::SpillDir {
            path: spill_dir.clone(),
            source,
        })?;
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(memory_limit),
            NonZeroUsize::new(5).expect("5 is non-zero"),
        );
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![spill_dir])),
            )
            .build_arc()
            .map_err(ExecutorError::DataFusion)?;

        let mut session_config = SessionConfig::new()
            .with_batch_size(batch_size.max(1))
            .with_target_partitions(1);
        let exec = &mut session_config.options_mut().execution;
        // The sort sets this much aside before it may spill, to merge the
        // spilled runs; a small pool must still leave room to buffer input.
        exec.sort_spill_reservation_bytes = exec.sort_spill_reservation_bytes.min(memory_limit / 8);
        // Below this, buffered batches are concatenated into runs (one
        // sort instead of a merge of many tiny runs): measured best around
        // 8 MiB for persist-sized inputs (DataFusion's default is 1 MiB).
        exec.sort_in_place_threshold_bytes = SORT_RUN_BYTES.min(memory_limit / 8);

        let runtime = DedicatedRuntime::start("sluice-compact", threads, 0, SHUTDOWN_GRACE)
            .map_err(ExecutorError::Start)?;

        Ok(Self {
            runtime,
            runtime_env,
            session_config,
        })
    }

    /// Runs `fut` on the executor. The returned future resolves to its
    /// output; dropping it cancels the task.
    pub(crate) fn spawn<T, F>(
        &self,
        fut: F,
    ) -> impl Future<Output = Result<T, ExecutorError>> + use<T, F>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        Job(self.runtime.handle().spawn(fut))
    }

    /// The runtime handle, for work that outlives one call (lazy outputs).
    pub(super) fn handle(&self) -> &Handle {
        self.runtime.handle()
    }

    /// A fresh DataFusion task context sharing the pool and disk manager.
    pub(super) fn task_context(&self) -> Arc<TaskContext> {
        self.task_context_with(Arc::clone(&self.runtime_env))
    }

    /// As [`Self::task_context`], with its own object store registry (Parquet
    /// sources register their stores there, so nothing accumulates).
    pub(super) fn task_context_with_stores(&self) -> Result<Arc<TaskContext>, DataFusionError> {
        let env = RuntimeEnvBuilder::from_runtime_env(&self.runtime_env)
            .with_object_store_registry(Arc::new(DefaultObjectStoreRegistry::new()))
            .build_arc()?;
        Ok(self.task_context_with(env))
    }

    fn task_context_with(&self, env: Arc<RuntimeEnv>) -> Arc<TaskContext> {
        Arc::new(TaskContext::new(
            None,
            "sluice-compact".to_string(),
            self.session_config.clone(),
            Default::default(),
            Default::default(),
            Default::default(),
            Default::default(),
            env,
        ))
    }

    /// Bytes currently in spill files.
    #[cfg(test)]
    pub(super) fn spilled_bytes_now(&self) -> u64 {
        self.runtime_env.disk_manager.used_disk_space()
    }
}

/// A task on the executor; aborts it when dropped before completion.
struct Job<T>(JoinHandle<T>);

impl<T> Future for Job<T> {
    type Output = Result<T, ExecutorError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(ExecutorError::from_join))
    }
}

impl<T> Drop for Job<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> (Executor, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Executor::new(2, 64 << 20, dir.path().join("spill")).expect("executor");
        (e, dir)
    }

    #[tokio::test]
    async fn runs_on_its_own_threads() {
        let (e, _dir) = exec();
        let name = e
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("sluice-compact"));
    }

    /// `lowered` runs a second pool that many steps below the caller
    /// (Linux keeps a nice value per thread), sharing the memory pool.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn lowered_runs_below_the_caller_on_the_same_memory_pool() {
        use crate::dedicated::own_nice;
        let caller = own_nice();
        let (e, _dir) = exec();
        let low = e.lowered(5).expect("lowered");
        let theirs = low
            .spawn(async {
                (
                    own_nice(),
                    std::thread::current().name().map(str::to_string),
                )
            })
            .await
            .expect("task");
        assert_eq!(
            theirs,
            ((caller + 5).min(19), Some("sluice-compact-low".into()))
        );
        assert_eq!(e.spawn(async { own_nice() }).await.expect("task"), caller);
        assert!(Arc::ptr_eq(&e.runtime_env, &low.runtime_env));
        // Dropping the first pool leaves the second running.
        drop(e);
        assert_eq!(low.spawn(async { 7 }).await.expect("task"), 7);
    }

    #[tokio::test]
    async fn panics_are_reported() {
        let (e, _dir) = exec();
        let err = e
            .spawn(async { panic!("boom") })
            .await
            .expect_err("must fail");
        assert!(
            matches!(&err, ExecutorError::Panicked(m) if m == "boom"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn drop_cancels_tasks_without_blocking() {
        let (e, _dir) = exec();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let pending = e.spawn(async move {
            let _tx = tx; // dropped when the task is cancelled
            std::future::pending::<()>().await
        });
        drop(e);
        let r = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("resolves after shutdown");
        assert!(matches!(r, Err(ExecutorError::ShutDown)), "{r:?}");
        assert!(rx.await.is_err(), "task was dropped");
    }

    #[tokio::test]
    async fn dropping_the_future_cancels_the_task() {
        let (e, _dir) = exec();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let fut = e.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await
        });
        drop(fut);
        let r = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert!(matches!(r, Ok(Err(_))), "task was aborted");
    }

    #[test]
    fn spill_dir_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = Executor::new(1, 1 << 20, file.join("spill")).expect_err("not a dir");
        assert!(err.to_string().contains("spill"), "{err}");
    }
}
