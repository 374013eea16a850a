use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;

use crate::catalog::{CatalogError, PartitionId};

/// What to read.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryPlan {
    pub(crate) namespace: String,
    pub(crate) table: String,
    /// Empty: every column.
    pub(crate) columns: Vec<String>,
    /// Nanoseconds, start inclusive, end exclusive.
    pub(crate) range: Option<(i64, i64)>,
    pub(crate) include_persisted: bool,
}

/// One partition's data, streamed lazily.
pub(crate) struct PartitionResponse {
    pub(crate) id: PartitionId,
    pub(crate) key: Arc<str>,
    pub(crate) persisted_batches: u64,
    /// Rows in the snapshot before the time filter.
    pub(crate) rows: usize,
    pub(crate) persisted: bool,
    pub(crate) batches: BoxStream<'static, Result<RecordBatch, ArrowError>>,
}

impl Debug for PartitionResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionResponse")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("persisted_batches", &self.persisted_batches)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// The answer: one schema, partitions in key order.
#[derive(Debug)]
pub(crate) struct QueryResponse {
    pub(crate) schema: SchemaRef,
    pub(crate) partitions: Vec<PartitionResponse>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    #[error("namespace `{0}` not found")]
    NamespaceNotFound(String),
    #[error("table `{table}` not found in namespace `{namespace}`")]
    TableNotFound { namespace: String, table: String },
    #[error("table `{table}` has no column `{column}`")]
    ColumnNotFound { table: String, column: String },
    #[error("invalid time range: start {start} is after end {end}")]
    InvalidRange { start: i64, end: i64 },
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Internal(String),
}

/// Answers queries. Implemented over the buffer; wrapped by decorators.
pub(crate) trait QueryExec: Debug + Send + Sync {
    fn query(
        &self,
        plan: QueryPlan,
    ) -> impl Future<Output = Result<QueryResponse, QueryError>> + Send;
}

impl<T: QueryExec> QueryExec for Arc<T> {
    fn query(
        &self,
        plan: QueryPlan,
    ) -> impl Future<Output = Result<QueryResponse, QueryError>> + Send {
        (**self).query(plan)
    }
}
