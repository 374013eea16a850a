//! The compaction pipeline: inputs ─▶ SortExec ─▶ dedup.
//!
//! The plan is built by hand (no SQL, no optimizer): a one-partition
//! streaming source feeding DataFusion's `SortExec`, whose output the dedup
//! consumes batch by batch. One partition keeps the arrival numbering
//! sequential and avoids a merge of per-partition sorts; the sort itself
//! uses the executor's memory pool and spills when over its share.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{DataType, SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::streaming::StreamingTableExec;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use super::dedup::Dedup;
use super::input::{InputPartition, OpenInputs, Tagged};
use super::layout::Layout;
use super::memsort;
use super::{CompactError, CompactOutput, Executor, TIME_COLUMN};

/// One input of [`compact_sources`]. Sources are given in arrival order:
/// on duplicate keys, rows of later sources win.
#[derive(Debug)]
pub(crate) enum Source {
    /// A Parquet file (written by [`write_parquet`](super::write_parquet)).
    Parquet {
        store: Arc<dyn ObjectStore>,
        path: object_store::path::Path,
    },
    /// Buffered batches, in arrival order.
    Batches(Vec<RecordBatch>),
}

/// Sorts `batches` (a partition's buffered data, in arrival order) by
/// `sort_key` and deduplicates them; see the [module docs](super) for the
/// exact semantics.
///
/// Validation (column names and types against `schema`, non-null `time`)
/// runs on the executor before this returns; the sort runs when the output
/// is consumed.
pub(crate) async fn compact(
    exec: &Executor,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    sort_key: &[String],
) -> Result<CompactOutput, CompactError> {
    compact_with(exec, schema, batches, sort_key, true).await
}

/// [`compact`], with the in-memory sort ([`memsort`](super::memsort))
/// allowed or not (tests compare the two paths).
pub(super) async fn compact_with(
    exec: &Executor,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    sort_key: &[String],
    in_memory: bool,
) -> Result<CompactOutput, CompactError> {
    let sort_key = sort_key.to_vec();
    let ctx = exec.task_context();
    let handle = exec.handle().clone();
    exec.spawn(async move {
        // Keep the schema's columns that appear in some batch.
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| {
                batches
                    .iter()
                    .any(|b| b.schema_ref().column_with_name(f.name()).is_some())
            })
            .map(|f| f.name().clone())
            .collect();
        let layout = Arc::new(Layout::new(schema, &columns, &sort_key, Some(&batches))?);

        let mut rows = 0u64;
        let mut range: Option<(i64, i64)> = None;
        for (i, b) in batches.iter().enumerate() {
            let Some(time) = layout.check(i, b)? else {
                continue;
            };
            rows += b.num_rows() as u64;
            let time = time.as_primitive::<TimestampNanosecondType>();
            if let (Some(lo), Some(hi)) = (arrow::compute::min(time), arrow::compute::max(time)) {
                range = Some(match range {
                    Some((a, b)) => (a.min(lo), b.max(hi)),
                    None => (lo, hi),
                });
            }
        }

        let batch_size = ctx.session_config().batch_size();
        let pipeline = match in_memory
            .then(|| memsort::try_sort(&layout, &batches, ctx.memory_pool(), batch_size))
            .flatten()
        {
            Some(sorted) => sorted,
            None => {
                let open: OpenInputs = Box::new(move |_ctx| {
                    futures::stream::iter(batches.into_iter().enumerate().map(Ok)).boxed()
                });
                sort_dedup(Arc::clone(&layout), ctx, open, None)
            }
        };
        Ok(CompactOutput::new(
            Arc::clone(&layout.output_schema),
            layout.output_sort_columns(),
            rows,
            range,
            pipeline,
            handle,
        ))
    })
    .await?
}

/// Sorts and deduplicates persisted files together with buffered data, for
/// queries. `projection` selects output columns (in that order; all of
/// `schema` when `None`); the key columns are read regardless, for the
/// dedup. `time_range` (`start` inclusive, `end` exclusive) is pushed into
/// the Parquet scan (row groups and pages pruned by statistics, rows
/// filtered while decoding) and applied to buffered batches.
pub(crate) async fn compact_sources(
    exec: &Executor,
    schema: SchemaRef,
    sources: Vec<Source>,
    sort_key: &[String],
    projection: Option<Vec<String>>,
    time_range: Option<(i64, i64)>,
) -> Result<CompactOutput, CompactError> {
    let columns =
        projection.unwrap_or_else(|| schema.fields().iter().map(|f| f.name().clone()).collect());
    let layout = Arc::new(Layout::new(schema, &columns, sort_key, None)?);
    let ctx = exec
        .task_context_with_stores()
        .map_err(CompactError::Sort)?;

    let scan_layout = Arc::clone(&layout);
    let open: OpenInputs = Box::new(move |ctx: Arc<TaskContext>| {
        futures::stream::iter(sources.into_iter().enumerate())
            .flat_map(move |(i, source)| -> BoxStream<'static, Tagged> {
                match source {
                    Source::Batches(batches) => {
                        futures::stream::iter(batches.into_iter().map(move |b| Ok((i, b)))).boxed()
                    }
                    Source::Parquet { store, path } => {
                        let layout = Arc::clone(&scan_layout);
                        let ctx = Arc::clone(&ctx);
                        futures::stream::once(scan_parquet(i, store, path, layout, time_range, ctx))
                            .try_flatten()
                            .boxed()
                    }
                }
            })
            .boxed()
    });
    let pipeline = sort_dedup(Arc::clone(&layout), ctx, open, time_range);
    Ok(CompactOutput::new(
        Arc::clone(&layout.output_schema),
        layout.output_sort_columns(),
        0,
        None,
        pipeline,
        exec.handle().clone(),
    ))
}

/// The lazy sort + dedup stream. Nothing runs (not even planning) until it
/// is first polled, so it runs wherever it is polled: on the executor.
fn sort_dedup(
    layout: Arc<Layout>,
    ctx: Arc<TaskContext>,
    open: OpenInputs,
    range: Option<(i64, i64)>,
) -> BoxStream<'static, Result<RecordBatch, CompactError>> {
    let sorted = futures::stream::once(async move {
        let plan = sort_plan(&layout, open, range).map_err(CompactError::Sort)?;
        let stream = plan
            .execute(0, ctx)
            .map_err(CompactError::from_datafusion)?;
        Ok::<_, CompactError>((layout, stream))
    });
    sorted
        .map_ok(|(layout, stream)| dedup_stream(layout, stream))
        .try_flatten()
        .boxed()
}

fn sort_plan(
    layout: &Arc<Layout>,
    open: OpenInputs,
    range: Option<(i64, i64)>,
) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    let partition = Arc::new(InputPartition::new(Arc::clone(layout), range, open));
    let source = StreamingTableExec::try_new(
        Arc::clone(&layout.sort_schema),
        vec![partition],
        None,
        Vec::<LexOrdering>::new(),
        false,
        None,
    )?;
    let ordering = LexOrdering::new(layout.sort_exprs()).expect("the sort has a key column");
    Ok(Arc::new(SortExec::new(ordering, Arc::new(source))))
}

fn dedup_stream(
    layout: Arc<Layout>,
    input: datafusion::execution::SendableRecordBatchStream,
) -> BoxStream<'static, Result<RecordBatch, CompactError>> {
    struct St {
        input: datafusion::execution::SendableRecordBatchStream,
        dedup: Dedup,
        ready: VecDeque<RecordBatch>,
        done: bool,
    }
    let st = St {
        input,
        dedup: Dedup::new(layout),
        ready: VecDeque::new(),
        done: false,
    };
    futures::stream::try_unfold(st, |mut st| async move {
        loop {
            if let Some(b) = st.ready.pop_front() {
                return Ok(Some((b, st)));
            }
            if st.done {
                return Ok(None);
            }
            match st.input.next().await {
                Some(Ok(batch)) => st
                    .dedup
                    .push(batch, &mut st.ready)
                    .map_err(CompactError::Dedup)?,
                Some(Err(e)) => return Err(CompactError::from_datafusion(e)),
                None => {
                    st.done = true;
                    st.ready
                        .extend(st.dedup.finish().map_err(CompactError::Dedup)?);
                }
            }
        }
    })
    .boxed()
}

/// Opens one Parquet source through DataFusion: projection of the sort
/// schema's columns, `time` predicate for pruning and row filtering.
async fn scan_parquet(
    input: usize,
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    layout: Arc<Layout>,
    range: Option<(i64, i64)>,
    ctx: Arc<TaskContext>,
) -> Result<BoxStream<'static, Tagged>, CompactError> {
    let err = |source: DataFusionError| CompactError::ReadParquet {
        input,
        path: path.to_string(),
        source,
    };
    let url = ObjectStoreUrl::parse(format!("sluice-source://source-{input}")).map_err(err)?;
    ctx.runtime_env()
        .register_object_store(url.as_ref(), Arc::clone(&store));
    let mut meta = store
        .head(&path)
        .await
        .map_err(|e| err(DataFusionError::ObjectStore(Box::new(e))))?;
    // The scan reads `meta.location` through the same store: keep the path
    // we asked for. (A `PrefixStore` reports locations with its prefix,
    // which reading through it would then apply a second time.)
    meta.location = path.clone();

    let table = &layout.table;
    let projection: Vec<usize> = layout
        .input_columns()
        .iter()
        .map(|c| table.index_of(c))
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.into()))?;
    let mut source = ParquetSource::new(Arc::clone(table)).with_pushdown_filters(true);
    if let Some(r) = range {
        source = source.with_predicate(time_predicate(table, r).map_err(err)?);
    }
    let config = FileScanConfigBuilder::new(url, Arc::new(source))
        .with_file(PartitionedFile::new_from_meta(meta))
        .with_projection_indices(Some(projection))
        .map_err(err)?
        .build();
    let stream = DataSourceExec::from_data_source(config)
        .execute(0, ctx)
        .map_err(err)?;
    let path = path.to_string();
    Ok(stream
        .map(move |r| {
            r.map(|b| (input, b))
                .map_err(|source| CompactError::ReadParquet {
                    input,
                    path: path.clone(),
                    source,
                })
        })
        .boxed())
}

/// `start <= time AND time < end`, typed like the table's `time`.
fn time_predicate(
    table: &SchemaRef,
    (start, end): (i64, i64),
) -> Result<Arc<dyn PhysicalExpr>, DataFusionError> {
    let field = table.field_with_name(TIME_COLUMN)?;
    let tz = match field.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let time: Arc<dyn PhysicalExpr> = Arc::new(Column::new_with_schema(TIME_COLUMN, table)?);
    let bound = |v: i64| -> Arc<dyn PhysicalExpr> {
        Arc::new(Literal::new(ScalarValue::TimestampNanosecond(
            Some(v),
            tz.clone(),
        )))
    };
    let ge = Arc::new(BinaryExpr::new(
        Arc::clone(&time),
        Operator::GtEq,
        bound(start),
    ));
    let lt = Arc::new(BinaryExpr::new(time, Operator::Lt, bound(end)));
    Ok(Arc::new(BinaryExpr::new(ge, Operator::And, lt)))
}
