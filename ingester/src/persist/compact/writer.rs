//! Encoding a compaction's output as one Parquet file in the object store.
//!
//! Encoding runs on the executor: the sort and dedup in the writer's task
//! (no channel hop), each column's encoder in a task of its own
//! ([`super::encoder`]). Memory is bounded by one row group of encoded
//! pages plus the upload buffer: the object
//! store writer switches to a multipart upload past [`UPLOAD_PART_BYTES`]
//! and keeps at most [`UPLOAD_CONCURRENCY`] parts in flight. On failure the
//! multipart upload is aborted; no object appears under `path` unless the
//! whole file was written (uploads complete atomically).
//!
//! The file is self-describing for any Parquet reader: the Arrow schema is
//! embedded (tags read back as dictionaries, `time` as
//! `timestamp[ns, tz=UTC]`), row groups record the sort order
//! (`sorting_columns`), and page statistics allow pruning by `time`.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::DataType;
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::encoder::ParallelEncoder;
use super::{CompactError, CompactOutput, ExecutorError, TIME_COLUMN};

/// zstd level 1: most of the ratio of higher levels on sorted,
/// dictionary-encoded data, at a fraction of the CPU.
const ZSTD_LEVEL: i32 = 1;

/// Rows per row group (the Parquet crate's default). Larger groups
/// compress better; the writer holds one encoded group in memory.
const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Size of a multipart upload part; smaller files take one `put`.
const UPLOAD_PART_BYTES: usize = 10 * 1024 * 1024;

/// Parts uploaded concurrently (bounds upload memory).
const UPLOAD_CONCURRENCY: usize = 2;

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParquetFileMeta {
    pub(crate) file_size_bytes: u64,
    pub(crate) row_count: u64,
    /// Smallest `time`; 0 when the file has no rows.
    pub(crate) min_time: i64,
    /// Largest `time`; 0 when the file has no rows.
    pub(crate) max_time: i64,
}

/// Writes `output` to `path` in `store` as one zstd-compressed Parquet file
/// with statistics and `kv_metadata` in its footer.
///
/// Runs on the output's executor; dropping the returned future cancels the
/// write (and aborts the upload at the executor's next await point).
pub(crate) async fn write_parquet(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    output: CompactOutput,
    kv_metadata: Vec<(String, String)>,
) -> Result<ParquetFileMeta, CompactError> {
    let path = path.clone();
    let (handle, job) = output.into_job();
    let task = handle.spawn(async move {
        let sort_columns = job.sort_columns;
        let props = move |schema: &arrow::datatypes::SchemaRef, first: Option<&RecordBatch>| {
            writer_properties(schema, &sort_columns, kv_metadata, first)
        };
        encode(store, &path, job.schema, job.batches, props).await
    });
    AbortOnDrop(Some(task)).join().await
}

/// The writer settings for `schema`; `first`, the first batch to be
/// written (if any), decides whether numeric fields try a dictionary.
fn writer_properties(
    schema: &arrow::datatypes::SchemaRef,
    sort_columns: &[String],
    kv: Vec<(String, String)>,
    first: Option<&RecordBatch>,
) -> Result<WriterProperties, ParquetError> {
    // Top-level columns map 1:1 to Parquet leaves: no nested types here.
    let sorting: Vec<SortingColumn> = sort_columns
        .iter()
        .map_while(|c| schema.index_of(c).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns((!sorting.is_empty()).then_some(sorting))
        .set_key_value_metadata(Some(
            kv.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
        ));
    for (i, f) in schema.fields().iter().enumerate() {
        let path = ColumnPath::from(f.name().as_str());
        // A numeric field whose first values are nearly all distinct
        // (random-looking gauges, counters) would fill the dictionary with
        // hashed values until it gives up at the page size limit (128 Ki
        // 8-byte values) only to fall back: skip it from the start.
        if matches!(
            f.data_type(),
            DataType::Float64 | DataType::Int64 | DataType::UInt64
        ) && first.is_some_and(|b| mostly_distinct(b.column(i).as_ref()))
        {
            builder = builder.set_column_dictionary_enabled(path.clone(), false);
        }
        builder = match f.data_type() {
            // High cardinality, and sorted by series then time: small,
            // regular deltas. Dictionary encoding would only cost hashing.
            DataType::Timestamp(_, _) => builder
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED),
            // Dictionary while it pays (status codes), then deltas
            // (counters) rather than plain.
            DataType::Int64 | DataType::UInt64 => {
                builder.set_column_encoding(path, Encoding::DELTA_BINARY_PACKED)
            }
            // Dictionary while it pays (gauges with few values), then byte
            // stream split: zstd compresses it better, and much faster,
            // than plain floats.
            DataType::Float64 => builder.set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT),
            // Tags, strings, booleans: the defaults (dictionary,
            // falling back to plain when it grows too large; RLE).
            _ => builder,
        };
    }
    Ok(builder.build())
}

/// Values sampled by [`mostly_distinct`].
const DISTINCT_SAMPLE: usize = 1024;

/// Whether the first [`DISTINCT_SAMPLE`] non-null values of a `Float64`,
/// `Int64` or `UInt64` column are over 3/4 distinct (by bit pattern).
/// Too few values to judge: `false` (the dictionary stays, as by default).
fn mostly_distinct(col: &dyn arrow::array::Array) -> bool {
    fn bits<T: arrow::datatypes::ArrowPrimitiveType>(
        col: &dyn arrow::array::Array,
        f: impl Fn(T::Native) -> u64,
    ) -> Vec<u64> {
        col.as_primitive_opt::<T>()
            .map(|a| a.iter().flatten().take(DISTINCT_SAMPLE).map(f).collect())
            .unwrap_or_default()
    }
    let mut v = match col.data_type() {
        DataType::Float64 => bits::<arrow::datatypes::Float64Type>(col, f64::to_bits),
        DataType::Int64 => bits::<arrow::datatypes::Int64Type>(col, |x| x as u64),
        DataType::UInt64 => bits::<arrow::datatypes::UInt64Type>(col, |x| x),
        _ => return false,
    };
    let n = v.len();
    if n < DISTINCT_SAMPLE / 4 {
        return false;
    }
    v.sort_unstable();
    v.dedup();
    v.len() * 4 > n * 3
}

async fn encode(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    schema: arrow::datatypes::SchemaRef,
    batches: futures::stream::BoxStream<'static, Result<RecordBatch, CompactError>>,
    props: impl FnOnce(
        &arrow::datatypes::SchemaRef,
        Option<&RecordBatch>,
    ) -> Result<WriterProperties, ParquetError>,
) -> Result<ParquetFileMeta, CompactError> {
    let err = |source| encode_error(path, source);
    let time = schema.index_of(TIME_COLUMN).ok();
    // The first batch tunes the writer (see `writer_properties`).
    let mut batches = batches.peekable();
    let first = std::pin::Pin::new(&mut batches).peek().await;
    let props = props(&schema, first.and_then(|b| b.as_ref().ok())).map_err(err)?;
    let mut encoder = ParallelEncoder::new(schema, props, ROW_GROUP_ROWS).map_err(err)?;
    let mut upload = Upload(
        BufWriter::with_capacity(store, path.clone(), UPLOAD_PART_BYTES)
            .with_max_concurrency(UPLOAD_CONCURRENCY),
    );
    let mut rows = 0u64;
    let mut range: Option<(i64, i64)> = None;
    while let Some(batch) = batches.next().await {
        let written = match batch {
            Ok(b) => {
                rows += b.num_rows() as u64;
                if let Some(t) =
                    time.and_then(|t| b.column(t).as_primitive_opt::<TimestampNanosecondType>())
                    && let (Some(lo), Some(hi)) = (arrow::compute::min(t), arrow::compute::max(t))
                {
                    range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
                }
                match encoder.write(&b).await.map_err(err) {
                    Ok(Some(bytes)) => upload.write(bytes).await.map_err(err),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // Nothing has been completed yet: abort any multipart upload.
            if let Err(abort) = upload.0.abort().await {
                tracing::warn!(%path, error = %abort, "aborting Parquet upload failed");
            }
            return Err(e);
        }
    }
    let (last, file_size_bytes) = encoder.finish().await.map_err(err)?;
    upload.write(last).await.map_err(err)?;
    upload.complete().await.map_err(err)?;
    let (min_time, max_time) = range.unwrap_or((0, 0));
    Ok(ParquetFileMeta {
        file_size_bytes,
        row_count: rows,
        min_time,
        max_time,
    })
}

fn encode_error(path: &Path, source: ParquetError) -> CompactError {
    CompactError::Encode {
        path: path.to_string(),
        source,
    }
}

/// The object store writer, taking the encoder's buffers without a copy.
struct Upload(BufWriter);

impl AsyncFileWriter for Upload {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            self.0
                .put(bs)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        Box::pin(async move {
            tokio::io::AsyncWriteExt::shutdown(&mut self.0)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }
}

/// Aborts the executor task if the caller stops waiting.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<Result<T, CompactError>> {
    async fn join(mut self) -> Result<T, CompactError> {
        let task = self.0.as_mut().expect("joined once");
        let r = task.await;
        self.0 = None;
        r.map_err(|e| CompactError::Executor(ExecutorError::from_join(e)))?
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, Int64Array, UInt64Array};

    use super::*;

    #[test]
    fn dictionary_is_skipped_only_for_mostly_distinct_numbers() {
        let random: Float64Array = (0..2000).map(|i| Some(f64::from(i) * 1.37)).collect();
        assert!(mostly_distinct(&random));
        // A gauge with a few hundred values in 1024: keeps the dictionary.
        let gauge: Float64Array = (0..2000).map(|i| Some(f64::from(i % 300))).collect();
        assert!(!mostly_distinct(&gauge));
        let status: Int64Array = (0..2000).map(|i| Some(i % 5)).collect();
        assert!(!mostly_distinct(&status));
        let counter: UInt64Array = (0..2000u64).map(Some).collect();
        assert!(mostly_distinct(&counter));
        // Too few values to judge; nulls are not values.
        let few: Float64Array = (0..100).map(|i| Some(f64::from(i))).collect();
        assert!(!mostly_distinct(&few));
        let sparse: Float64Array = (0..2000)
            .map(|i| (i % 10 == 0).then_some(f64::from(i)))
            .collect();
        assert!(!mostly_distinct(&sparse));
    }
}
