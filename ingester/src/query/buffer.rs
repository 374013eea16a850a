//! `QueryExec` over the buffer tree.

use std::sync::Arc;

use arrow::array::{BooleanArray, Scalar, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::boolean::and;
use arrow::compute::kernels::cmp::{gt_eq, lt};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;

use super::{PartitionResponse, PersistedReader, QueryError, QueryExec, QueryPlan, QueryResponse};
use crate::buffer_tree::BufferTree;
use crate::catalog::SchemaCache;
use crate::schema::{TIME_COLUMN, align_batch, table_arrow_schema};

#[derive(Debug)]
pub(crate) struct BufferQueryExec {
    buffer: Arc<BufferTree>,
    cache: Arc<SchemaCache>,
    persisted: Option<PersistedReader>,
}

impl BufferQueryExec {
    pub(crate) fn new(
        buffer: Arc<BufferTree>,
        cache: Arc<SchemaCache>,
        persisted: Option<PersistedReader>,
    ) -> Self {
        Self {
            buffer,
            cache,
            persisted,
        }
    }
}

/// The projected schema for `columns` (empty: all), in the table's order.
pub(crate) fn project_schema(
    full: &SchemaRef,
    table: &str,
    columns: &[String],
) -> Result<SchemaRef, QueryError> {
    if columns.is_empty() {
        return Ok(Arc::clone(full));
    }
    for c in columns {
        if full.field_with_name(c).is_err() {
            return Err(QueryError::ColumnNotFound {
                table: table.to_string(),
                column: c.clone(),
            });
        }
    }
    let fields: Vec<_> = full
        .fields()
        .iter()
        .filter(|f| columns.iter().any(|c| c == f.name()))
        .cloned()
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Reshapes a buffered batch to the table schema, applies the time range,
/// then projects. Runs lazily, per batch, as the client reads.
pub(crate) fn process_batch(
    batch: &RecordBatch,
    full: &SchemaRef,
    projected: &SchemaRef,
    range: Option<(i64, i64)>,
) -> Result<RecordBatch, ArrowError> {
    let aligned = align_batch(batch, full)?;
    let filtered = match range {
        None => aligned,
        Some((start, end)) => {
            let time = aligned
                .column_by_name(TIME_COLUMN)
                .ok_or_else(|| ArrowError::SchemaError("no time column".into()))?;
            let s = Scalar::new(TimestampNanosecondArray::from(vec![start]).with_timezone("UTC"));
            let e = Scalar::new(TimestampNanosecondArray::from(vec![end]).with_timezone("UTC"));
            let mask: BooleanArray = and(&gt_eq(time, &s)?, &lt(time, &e)?)?;
            if mask.true_count() == mask.len() {
                aligned
            } else {
                filter_record_batch(&aligned, &mask)?
            }
        }
    };
    if Arc::ptr_eq(projected, full) {
        return Ok(filtered);
    }
    let indices: Vec<usize> = projected
        .fields()
        .iter()
        .map(|f| full.index_of(f.name()))
        .collect::<Result<_, _>>()?;
    let p = filtered.project(&indices)?;
    RecordBatch::try_new_with_options(
        Arc::clone(projected),
        p.columns().to_vec(),
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(p.num_rows())),
    )
}

impl QueryExec for BufferQueryExec {
    async fn query(&self, plan: QueryPlan) -> Result<QueryResponse, QueryError> {
        if let Some((start, end)) = plan.range
            && start > end
        {
            return Err(QueryError::InvalidRange { start, end });
        }
        let ns = self
            .cache
            .existing_namespace(&plan.namespace)
            .await?
            .ok_or_else(|| QueryError::NamespaceNotFound(plan.namespace.clone()))?;
        // The catalog schema may know columns this pod's cache does not yet
        // (added by another pod): refresh when a requested one is missing.
        let mut schema = self
            .cache
            .existing_table(&ns, &plan.table)
            .await?
            .ok_or_else(|| QueryError::TableNotFound {
                namespace: plan.namespace.clone(),
                table: plan.table.clone(),
            })?;
        if plan
            .columns
            .iter()
            .any(|c| c != TIME_COLUMN && schema.column(c).is_none())
            && let Some(s) = self.cache.refresh_table(&ns, &plan.table).await?
        {
            schema = s;
        }
        let full = table_arrow_schema(&schema);
        let projected = project_schema(&full, &plan.table, &plan.columns)?;

        if plan.include_persisted
            && let Some(reader) = &self.persisted
        {
            let snapshots = self
                .buffer
                .table(ns.id, schema.id)
                .map(|t| t.partitions().iter().map(|p| p.snapshot()).collect())
                .unwrap_or_default();
            let partitions = reader
                .partitions(&schema, &full, &projected, plan.range, snapshots)
                .await?;
            return Ok(QueryResponse {
                schema: projected,
                partitions,
            });
        }
        let partitions = match self.buffer.table(ns.id, schema.id) {
            None => Vec::new(),
            Some(t) => t
                .partitions()
                .into_iter()
                .map(|p| {
                    let snap = p.snapshot();
                    let full = Arc::clone(&full);
                    let projected = Arc::clone(&projected);
                    let range = plan.range;
                    let batches = futures::stream::iter(snap.batches)
                        .map(move |b| process_batch(&b, &full, &projected, range))
                        .boxed();
                    PartitionResponse {
                        id: snap.id,
                        key: snap.key,
                        persisted_batches: snap.persisted_batches,
                        rows: snap.rows,
                        persisted: false,
                        batches,
                    }
                })
                .collect(),
        };
        Ok(QueryResponse {
            schema: projected,
            partitions,
        })
    }
}
