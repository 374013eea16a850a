//! The sort's input: a stream that checks every input batch, drops rows
//! outside the time range, and aligns it to the sort schema, numbering its
//! rows in arrival order.
//!
//! Alignment is lazy (one batch at a time, on the executor) and shares the
//! input's field arrays; only missing columns (all null) and the key or
//! arrival column are allocated.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::TryStreamExt;
use futures::stream::BoxStream;

use super::layout::Layout;
use super::{CompactError, TIME_COLUMN};

/// Rows of `batch` with `start <= time < end`; `None` if there are none.
/// Batches without a `time` column have no rows (checked by the caller).
fn filter_time(
    batch: &RecordBatch,
    (start, end): (i64, i64),
) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
    let Some(time) = batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
    else {
        return Ok(None);
    };
    let values = time.values();
    let keep = values.iter().filter(|&&t| start <= t && t < end).count();
    if keep == values.len() {
        return Ok(Some(batch.clone()));
    }
    if keep == 0 {
        return Ok(None);
    }
    let mask: BooleanArray = values
        .iter()
        .map(|&t| Some(start <= t && t < end))
        .collect();
    filter_record_batch(batch, &mask).map(Some)
}

/// `batch` checked, filtered to `range` and aligned; `None` if no rows
/// remain.
fn prepare(
    layout: &Layout,
    input: usize,
    batch: &RecordBatch,
    range: Option<(i64, i64)>,
    next: &mut u64,
) -> Result<Option<RecordBatch>, CompactError> {
    layout.check(input, batch)?;
    let filtered = match range {
        Some(r) => filter_time(batch, r).map_err(|source| CompactError::Align { input, source })?,
        None => Some(batch.clone()),
    };
    match filtered {
        Some(b) if b.num_rows() > 0 => layout.align(input, &b, next).map(Some),
        _ => Ok(None),
    }
}

/// One input to the sort: a batch (raw, from a caller or a Parquet scan)
/// tagged with the index of the input it came from.
pub(super) type Tagged = Result<(usize, RecordBatch), CompactError>;

/// Builds the stream of raw inputs once the task context is known.
pub(super) type OpenInputs = Box<dyn FnOnce(Arc<TaskContext>) -> BoxStream<'static, Tagged> + Send>;

/// The sort's single input partition: raw inputs, aligned and numbered in
/// the order the stream yields them.
pub(super) struct InputPartition {
    layout: Arc<Layout>,
    range: Option<(i64, i64)>,
    open: Mutex<Option<OpenInputs>>,
}

impl InputPartition {
    pub(super) fn new(layout: Arc<Layout>, range: Option<(i64, i64)>, open: OpenInputs) -> Self {
        Self {
            layout,
            range,
            open: Mutex::new(Some(open)),
        }
    }
}

impl fmt::Debug for InputPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputPartition")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for InputPartition {
    fn schema(&self) -> &SchemaRef {
        &self.layout.sort_schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = Arc::clone(&self.layout.sort_schema);
        let open = self.open.lock().map(|mut o| o.take()).ok().flatten();
        let Some(open) = open else {
            let err = DataFusionError::Internal("compaction input executed twice".into());
            return Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::once(async move { Err(err) }),
            ));
        };
        let layout = Arc::clone(&self.layout);
        let range = self.range;
        let mut next = 0u64;
        let stream = open(ctx)
            .try_filter_map(move |(input, batch)| {
                let aligned = prepare(&layout, input, &batch, range, &mut next);
                std::future::ready(aligned)
            })
            .map_err(|e| DataFusionError::External(Box::new(e)));
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;
    use arrow::datatypes::{DataType, UInt64Type};

    use super::*;
    use crate::persist::compact::test_util::{Col, batch, table_schema};

    #[test]
    fn prepare_fills_nulls_numbers_rows_and_filters_time() {
        let table = table_schema(&["a"], &[("f", DataType::Float64)]);
        let cols: Vec<String> = ["a", "f", "time"].iter().map(|s| s.to_string()).collect();
        let l = Layout::new(table, &cols, &[], None).expect("layout");
        let b = batch(&[
            ("time", Col::Time(vec![5, 10, 15])),
            ("f", Col::F64(vec![Some(1.0), None, Some(3.0)])),
        ]);
        let mut next = 7;
        let out = prepare(&l, 0, &b, Some((10, 20)), &mut next)
            .expect("prepare")
            .expect("rows");
        assert_eq!(out.num_rows(), 2);
        assert_eq!(out.column(0).null_count(), 2, "missing tag is null");
        let arrival = out.column(3).as_primitive::<UInt64Type>();
        assert_eq!(arrival.values().as_ref(), [7, 8]);
        assert_eq!(next, 9);
        assert!(
            prepare(&l, 0, &b, Some((100, 200)), &mut next)
                .expect("prepare")
                .is_none()
        );
    }
}
