//! Sort, deduplicate and encode a partition's buffered data as Parquet.
//!
//! ```text
//!  batches (arrival order) ─▶ align to the table schema, tag each row with its arrival
//!       number ─▶ DataFusion SortExec (sort key, then arrival; memory pool, spills to disk)
//!       ─▶ streaming dedup (field-by-field, last arrival wins) ─▶ CompactOutput (stream)
//!       ─▶ write_parquet (zstd, statistics, multipart upload to the object store)
//! ```
//!
//! [`compact`] (a persist: all input in memory, tags ranked into a packed
//! key) takes a shortcut when the sort index fits in its share of the
//! memory pool: a radix sort of (key, source row) pairs, dedup on the
//! sorted index and one gather per field ([`memsort`]), with exactly the
//! same output. Otherwise, and for [`compact_sources`], the path above.
//!
//! ## Guarantees
//!
//! - **Order.** Output rows are sorted by the partition's sort key: the tag
//!   columns in sort-key order (ascending, nulls first), then `time`. Tags of
//!   the schema missing from the given key are appended after it (so
//!   duplicates are always adjacent); key columns absent from the data are
//!   skipped (they would be all null).
//! - **Deduplication.** Rows with equal tags (null equals null) and equal
//!   `time` collapse into one row. Each field takes its value from the *latest
//!   arriving* row in which it is non-null (InfluxDB's field-by-field merge):
//!   arrival order is batch index, then row index, across all inputs (for
//!   [`compact_sources`]: source index, then position in the source). Groups
//!   spanning batch boundaries of the sorted stream are handled.
//! - **Columns.** A tag is a dictionary-typed column, `time` is the timestamp,
//!   every other column is a field. [`compact`] keeps the columns of the table
//!   schema that appear in at least one input batch, in schema order;
//!   [`compact_sources`] keeps the projected columns.
//!
//! ## Concurrency and bounds
//!
//! All CPU work (alignment, sort, dedup, Parquet encoding) runs on the
//! [`Executor`]: a tokio runtime on its own OS threads, so persisting a
//! large partition never stalls the runtime that serves writes and queries.
//! [`CompactOutput`] is lazy: nothing runs until it is polled (then a pump
//! task on the executor feeds a 2-slot channel) or handed to
//! [`write_parquet`] (which encodes on the executor). Dropping it cancels the
//! work.
//!
//! The sort (either path) reserves its memory from the executor's DataFusion pool
//! (`memory_limit` bytes, shared fairly by concurrent jobs) and spills
//! sorted runs to the spill directory when its share is exhausted, so a
//! partition several times larger than the pool still compacts. The input
//! batches themselves are not counted: they are already held by the buffer.
//! Dedup and Parquet encoding stream batch by batch; the Parquet writer
//! holds at most one encoded row group, and the upload is multipart.

mod chunk_writer;
mod dedup;
mod encoder;
mod executor;
mod float_chunk;
mod input;
mod key;
mod layout;
mod memsort;
mod output;
mod pipeline;
mod ranks;
mod sort_key;
mod tag_chunk;
mod writer;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use datafusion::error::DataFusionError;

pub(crate) use executor::{Executor, ExecutorError};
pub(crate) use output::CompactOutput;
pub(crate) use pipeline::{Source, compact, compact_sources};
pub(crate) use sort_key::sort_key;
pub(crate) use writer::write_parquet;

/// The timestamp column.
const TIME_COLUMN: &str = "time";

/// Internal column names start with this; table columns may not.
const RESERVED_PREFIX: &str = "__sluice_";

/// The arrival-order column of the unpacked sort (see [`layout`]).
const ARRIVAL_COLUMN: &str = "__sluice_arrival";

/// The packed sort-key column (see [`key`]).
const KEY_COLUMN: &str = "__sluice_key";

/// Tags are the dictionary-encoded columns (`Dictionary(Int32, Utf8)`).
fn is_tag(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Dictionary(_, _))
}

/// What went wrong while compacting or writing a partition.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompactError {
    #[error(transparent)]
    Executor(#[from] ExecutorError),

    #[error("table schema: {0}")]
    Schema(String),

    #[error("input {input}: column {column:?} is not in the table schema")]
    UnknownColumn { input: usize, column: String },

    #[error("input {input}: column {column:?} is {actual}, the table schema says {expected}")]
    ColumnType {
        input: usize,
        column: String,
        expected: DataType,
        actual: DataType,
    },

    #[error("input {input}: no {TIME_COLUMN:?} column")]
    MissingTime { input: usize },

    #[error("input {input}: {nulls} null {TIME_COLUMN:?} values")]
    NullTime { input: usize, nulls: usize },

    #[error("projection: column {0:?} is not in the table schema")]
    UnknownProjection(String),

    #[error("input {input}: {source}")]
    Align {
        input: usize,
        #[source]
        source: ArrowError,
    },

    #[error("reading Parquet source {input} ({path}): {source}")]
    ReadParquet {
        input: usize,
        path: String,
        #[source]
        source: DataFusionError,
    },

    #[error("sorting: {0}")]
    Sort(#[source] DataFusionError),

    #[error("deduplicating: {0}")]
    Dedup(#[source] ArrowError),

    #[error("encoding Parquet {path}: {source}")]
    Encode {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
}

impl CompactError {
    /// Errors raised inside the sort's input stream travel through
    /// DataFusion as `External`; unwrap them so callers see what failed.
    fn from_datafusion(e: DataFusionError) -> Self {
        match e {
            DataFusionError::External(inner) => match inner.downcast::<CompactError>() {
                Ok(ours) => *ours,
                Err(other) => Self::Sort(DataFusionError::External(other)),
            },
            DataFusionError::Context(ctx, inner) => match Self::from_datafusion(*inner) {
                Self::Sort(e) => Self::Sort(DataFusionError::Context(ctx, Box::new(e))),
                ours => ours,
            },
            DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
                Ok(e) => Self::from_datafusion(e),
                Err(shared) => Self::Sort(DataFusionError::Shared(shared)),
            },
            other => Self::Sort(other),
        }
    }
}
