//! From a write request to a validated, sequenced [`DmlOperation`].
//!
//! ```text
//!  WriteRequest ─▶ check state & size ─▶ parse + validate (lp.rs / arrow_batch.rs)
//!      ─▶ resolve ids & new columns in the catalog (cache.rs) ─▶ split by day
//!      ─▶ WAL record of the columns (wal_record.rs) ─▶ sequence number
//!      ─▶ sink chain (WalSink ▶ BufferTree)
//! ```
//!
//! Everything that can refuse a request runs before the sequence number is
//! taken and before the WAL sees it, so a refused request changes nothing
//! (a new column accepted by the catalog for a request refused later stays
//! in the schema, as in InfluxDB: schema is not data).
//!
//! Replay (`replay.rs`) feeds the WAL's records back into the same sink
//! chain minus the WAL: the columns as validated, with their ids resolved
//! again from the catalog by name.

mod arrow_batch;
mod builder;
mod handler;
mod lp;
mod names;
mod partition;
mod replay;
mod request;
mod split;
mod tag_dictionary;
mod wal_record;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;

pub(crate) use handler::{SplitValidation, WriteHandler};
pub(crate) use replay::ReplayState;
pub use request::{Payload, Precision, WriteRequest};
pub(crate) use tag_dictionary::TagDictionary;

use crate::catalog::{CatalogError, ColumnType, NamespaceId, PartitionId, TableSchema};
use crate::dml_sink::DmlError;
use crate::ingest_state::IngestStateError;
use crate::line_protocol::ParseError;

/// A validated write with its sequence number, ready for the sink chain.
#[derive(Debug, Clone)]
pub(crate) struct DmlOperation {
    pub(crate) sequence_number: u64,
    pub(crate) namespace_id: NamespaceId,
    pub(crate) namespace: Arc<str>,
    pub(crate) tables: Vec<TableWrite>,
    /// The WAL record of `tables` (`wal_record.rs`); empty on replay.
    pub(crate) wal_payload: Bytes,
    pub(crate) rows: usize,
    /// Replay only, for a run of small WAL records of one partition
    /// decoded as one batch (`replay.rs`): each record's sequence number
    /// and rows, in row order; `sequence_number` is the last of them.
    /// Empty otherwise: every row has `sequence_number`.
    pub(crate) replayed_runs: Vec<(u64, u32)>,
}

/// The rows of one table, by partition.
#[derive(Debug, Clone)]
pub(crate) struct TableWrite {
    pub(crate) table: Arc<TableSchema>,
    pub(crate) partitions: Vec<PartitionWrite>,
}

#[derive(Debug, Clone)]
pub(crate) struct PartitionWrite {
    pub(crate) id: PartitionId,
    pub(crate) key: Arc<str>,
    pub(crate) batch: RecordBatch,
}

fn at_line(line: &Option<usize>) -> String {
    match line {
        Some(n) => format!("line {n}: "),
        None => String::new(),
    }
}

/// Why a write was refused. Each variant maps to one gRPC / HTTP status in
/// `server/`; every message names what was wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("empty write: no lines or rows")]
    Empty,
    #[error("request of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid namespace `{name}`: {reason}")]
    InvalidNamespace { name: String, reason: &'static str },
    #[error("{0}")]
    Parse(ParseError),
    #[error("{}table `{table}`: invalid name `{name}`: {reason}", at_line(line))]
    InvalidName {
        line: Option<usize>,
        table: String,
        name: String,
        reason: &'static str,
    },
    #[error(
        "{}table `{table}`, column `{column}`: type {requested} conflicts with the column's type {existing}",
        at_line(line)
    )]
    ColumnTypeConflict {
        line: Option<usize>,
        table: String,
        column: String,
        existing: ColumnType,
        requested: ColumnType,
    },
    #[error("line {line}: table `{table}`, column `{column}` appears twice in the line")]
    DuplicateColumn {
        line: usize,
        table: String,
        column: String,
    },
    #[error(
        "line {line}: table `{table}`: timestamp {value} ({precision:?}) is outside the representable range (years 1677–2262)"
    )]
    TimestampOutOfRange {
        line: usize,
        table: String,
        value: i64,
        precision: Precision,
    },
    #[error("table `{table}`: invalid Arrow batch: {reason}")]
    InvalidArrow { table: String, reason: String },
    #[error("buffer memory is full ({used} of {limit} bytes); retry once data is persisted")]
    BufferFull { used: u64, limit: u64 },
    #[error("{}", state_message(*.0))]
    State(IngestStateError),
    #[error("catalog: {0}")]
    Catalog(CatalogError),
    #[error(transparent)]
    Dml(#[from] DmlError),
    #[error("internal error: {0}")]
    Internal(String),
}

fn state_message(e: IngestStateError) -> &'static str {
    match e {
        IngestStateError::Starting => "the ingester is starting (replaying its WAL); retry shortly",
        IngestStateError::Draining => {
            "the ingester is draining (PrepareShutdown); send writes to another pod"
        }
        IngestStateError::ShuttingDown => "the ingester is shutting down",
        IngestStateError::PersistSaturated => "the persist queue is full; retry once it drains",
        IngestStateError::DiskFull => {
            "the WAL volume is over its usage limit; retry once data is persisted"
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "benches")]
pub(crate) use wal_record::{decode as decode_wal_record, encode as encode_wal_record};

/// Parse + validate only, for the benches.
#[cfg(feature = "benches")]
pub(crate) fn bench_build_tables(body: &[u8]) -> usize {
    lp::build_tables(body, Precision::Nanoseconds, 0, &|_| None)
        .map(|t| t.iter().map(|b| b.batch.num_rows()).sum())
        .unwrap_or(0)
}

/// Parse + validate in `pieces` (one on this thread, the others on
/// `runtime`'s blocking threads), then the merge: what a write split by
/// `--write-split-bytes` costs, by the server's code (0 if not split).
#[cfg(feature = "benches")]
pub(crate) fn bench_build_tables_split(
    runtime: &tokio::runtime::Runtime,
    body: &Bytes,
    pieces: usize,
) -> usize {
    let cuts = split::cut_points(body, pieces);
    runtime
        .block_on(split::build_in_pieces(
            body,
            &cuts,
            Precision::Nanoseconds,
            0,
            |_: &str| None,
        ))
        .map(|t| t.iter().map(|b| b.batch.num_rows()).sum())
        .unwrap_or(0)
}
