//! The lazy result of a compaction.
//!
//! Holds the not-yet-started pipeline (sort + dedup) and a handle to the
//! executor. Two ways to consume it, both keeping the CPU work on the
//! executor:
//!
//! - poll it as a [`Stream`]: the first poll spawns a pump task on the
//!   executor that feeds a 2-batch channel (back-pressure: the pipeline
//!   runs only as fast as the consumer reads);
//! - hand it to [`write_parquet`](super::write_parquet), which runs the
//!   pipeline and the encoder together in one executor task, without the
//!   channel hop.
//!
//! Dropping it, at any point, cancels the pipeline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{CompactError, ExecutorError};

/// Batches in flight between the pump task and a stream consumer.
const CHANNEL_DEPTH: usize = 2;

/// Sorted, deduplicated batches (a [`Stream`]), with what is known before
/// they are produced.
pub(crate) struct CompactOutput {
    schema: SchemaRef,
    sort_columns: Vec<String>,
    input_rows: u64,
    time_range: Option<(i64, i64)>,
    /// The executor's runtime.
    handle: Handle,
    state: State,
}

/// What [`write_parquet`](super::write_parquet) runs on the executor.
pub(super) struct Job {
    pub(super) schema: SchemaRef,
    pub(super) sort_columns: Vec<String>,
    pub(super) batches: BoxStream<'static, Result<RecordBatch, CompactError>>,
}

enum State {
    /// Not started.
    Idle(BoxStream<'static, Result<RecordBatch, CompactError>>),
    /// Pumped by a task on the executor.
    Running {
        rx: mpsc::Receiver<Result<RecordBatch, CompactError>>,
        task: AbortOnDrop,
    },
    Done,
}

impl CompactOutput {
    pub(super) fn new(
        schema: SchemaRef,
        sort_columns: Vec<String>,
        input_rows: u64,
        time_range: Option<(i64, i64)>,
        pipeline: BoxStream<'static, Result<RecordBatch, CompactError>>,
        handle: Handle,
    ) -> Self {
        Self {
            schema,
            sort_columns,
            input_rows,
            time_range,
            handle,
            state: State::Idle(pipeline),
        }
    }

    /// The schema of every output batch.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The output's sort order (column names), as far as its columns go.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn sort_columns(&self) -> &[String] {
        &self.sort_columns
    }

    /// Rows before deduplication ([`compact`](super::compact) only; 0 for
    /// [`compact_sources`](super::compact_sources), which reads lazily).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn input_rows(&self) -> u64 {
        self.input_rows
    }

    /// Smallest and largest `time` of the output (deduplication keeps every
    /// distinct time, so it is known up front); `None` when there are no
    /// rows or, for [`compact_sources`](super::compact_sources), not known.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn time_range(&self) -> Option<(i64, i64)> {
        self.time_range
    }

    /// Runs the pipeline to completion and keeps every batch in memory
    /// (tests; real outputs are streamed).
    #[cfg(test)]
    pub(crate) async fn collect(self) -> Result<Vec<RecordBatch>, CompactError> {
        futures::TryStreamExt::try_collect(self).await
    }

    /// The executor handle and what to run there. The unstarted pipeline
    /// runs in the caller's task; once polled, the rest of the stream is.
    pub(super) fn into_job(mut self) -> (Handle, Job) {
        let handle = self.handle.clone();
        let schema = std::mem::replace(&mut self.schema, Arc::new(Schema::empty()));
        let sort_columns = std::mem::take(&mut self.sort_columns);
        let batches = match std::mem::replace(&mut self.state, State::Done) {
            State::Idle(pipeline) => pipeline,
            running @ State::Running { .. } => {
                self.state = running;
                self.boxed()
            }
            State::Done => futures::stream::empty().boxed(),
        };
        (
            handle,
            Job {
                schema,
                sort_columns,
                batches,
            },
        )
    }
}

impl std::fmt::Debug for CompactOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactOutput")
            .field("schema", &self.schema)
            .field("input_rows", &self.input_rows)
            .field("time_range", &self.time_range)
            .finish_non_exhaustive()
    }
}

impl Stream for CompactOutput {
    type Item = Result<RecordBatch, CompactError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match &mut self.state {
                State::Idle(_) => {
                    let State::Idle(mut pipeline) = std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!("matched Idle above")
                    };
                    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
                    let task = self.handle.spawn(async move {
                        while let Some(item) = pipeline.next().await {
                            let failed = item.is_err();
                            if tx.send(item).await.is_err() || failed {
                                return; // consumer gone, or the pipeline ended
                            }
                        }
                    });
                    self.state = State::Running {
                        rx,
                        task: AbortOnDrop(task),
                    };
                }
                State::Running { rx, task } => {
                    if let Some(item) = ready!(rx.poll_recv(cx)) {
                        return Poll::Ready(Some(item));
                    }
                    // The pump ended: normally, or by panic / shutdown,
                    // which must not look like a complete output.
                    let joined = ready!(Pin::new(&mut task.0).poll(cx));
                    self.state = State::Done;
                    return Poll::Ready(
                        joined
                            .err()
                            .map(|e| Err(CompactError::Executor(ExecutorError::from_join(e)))),
                    );
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Aborts the pump task when the output is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
