//! Applying a WAL record at start-up.
//!
//! A columnar record (`wal_record.rs`) holds what a live write validated;
//! replay resolves its names to ids in the catalog exactly as the write path
//! does (namespace, table, partition, each cached) and applies the batches
//! to the sink with the record's original sequence number. Nothing is
//! re-validated row by row, but everything the buffer relies on is checked:
//! the namespace and table must exist and every column must be in the
//! catalog with the record's type. The live write added them to the catalog
//! before it reached the WAL, so a miss means the catalog and the WAL do
//! not belong together (or the record is damaged): replay stops with an
//! error rather than guess or drop the data.
//!
//! Consecutive small records of one partition (one-line writes, mostly)
//! are collected into a run and decoded as one batch
//! (`wal_record/run.rs`), which carries each record's sequence number
//! (`DmlOperation::replayed_runs`): a WAL of one-line writes is a record
//! per row, and a batch per record made its replay allocate and free ~140
//! times per row. A run ends at a record that does not join it (another
//! partition, a large one) and at the end of each segment.
//!
//! Request-format (version 1) records, written by older releases, are
//! re-validated through the normal write path.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;

use super::request::WriteRequest;
use super::wal_record::{
    self, COLUMNAR_VERSION, DecodeError, RecordPartition, RecordTable, SmallBody, WalRecord,
};
use super::{DmlOperation, PartitionWrite, TableWrite, WriteError, WriteHandler};
use crate::catalog::{CatalogError, ColumnType, TableSchema};
use crate::dml_sink::{DmlError, DmlSink};

/// Why a WAL record could not be replayed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("undecodable WAL record (request format): {0}")]
    DecodeRequest(super::request::DecodeError),
    #[error("namespace `{0}` is not in the catalog")]
    UnknownNamespace(String),
    #[error("table `{table}` of namespace `{namespace}` is not in the catalog")]
    UnknownTable { namespace: String, table: String },
    #[error("table `{table}`: column `{column}` is not in the catalog")]
    UnknownColumn { table: String, column: String },
    #[error(
        "table `{table}`: column `{column}` has type {record} in the WAL but {catalog} in the catalog"
    )]
    ColumnTypeConflict {
        table: String,
        column: String,
        record: ColumnType,
        catalog: ColumnType,
    },
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Sink(#[from] DmlError),
    #[error("{0}")]
    Request(WriteError),
    #[error("WAL records {first} to {last} (replayed as a run of {records}): {source}")]
    Run {
        first: u64,
        last: u64,
        records: usize,
        source: Box<ReplayError>,
    },
}

/// What a replay keeps from one record to the next: the decoder's shared
/// schemas, and which of them were last checked against which table.
///
/// A WAL of one-line writes holds a record per row, mostly of the same
/// columns: decoding them into one shared Arrow schema (see
/// [`wal_record::Decoder`]) lets the check against the catalog run once per
/// schema and table version instead of a name lookup per column and row.
#[derive(Debug, Default)]
pub(crate) struct ReplayState {
    decoder: wal_record::Decoder,
    /// Pairs found to fit, newest last. Both are held, so neither pointer
    /// can be reused by another schema meanwhile.
    checked: Vec<(SchemaRef, Arc<TableSchema>)>,
    /// Small records of one partition not yet applied, in order.
    run: Vec<(u64, Bytes, SmallBody)>,
    run_rows: usize,
}

/// A run is applied once it holds this many rows (at most).
const RUN_ROWS: usize = 1024;

/// How many (schema, table) pairs a [`ReplayState`] remembers as checked.
const CHECKED_PAIRS: usize = 8;

impl ReplayState {
    fn was_checked(&self, schema: &SchemaRef, table: &Arc<TableSchema>) -> bool {
        self.checked
            .iter()
            .any(|(s, t)| Arc::ptr_eq(s, schema) && Arc::ptr_eq(t, table))
    }

    fn remember_checked(&mut self, schema: &SchemaRef, table: &Arc<TableSchema>) {
        if self.checked.len() == CHECKED_PAIRS {
            self.checked.remove(0);
        }
        self.checked.push((Arc::clone(schema), Arc::clone(table)));
    }
}

impl<S: DmlSink> WriteHandler<S> {
    /// Replays one WAL payload with its original sequence number; returns
    /// the rows applied.
    #[cfg(test)]
    pub(crate) async fn replay(
        &self,
        sequence_number: u64,
        payload: Bytes,
    ) -> Result<usize, ReplayError> {
        let mut state = ReplayState::default();
        let rows = self
            .replay_with(&mut state, sequence_number, payload)
            .await?;
        Ok(rows + self.finish_run(&mut state).await?)
    }

    /// Replays one record of a sequence, with the state the records before
    /// it left; returns the rows applied by this call. A small record may
    /// wait in the state's run: [`Self::finish_run`] applies what is left.
    pub(crate) async fn replay_with(
        &self,
        state: &mut ReplayState,
        sequence_number: u64,
        payload: Bytes,
    ) -> Result<usize, ReplayError> {
        if let Some(body) = wal_record::peek_small(&payload).map(|s| s.body) {
            self.oracle.observe(sequence_number);
            let joins = match state.run.first() {
                None => true,
                Some((_, first, first_body)) => {
                    first_body.header(first) == body.header(&payload)
                        && state.run_rows + body.rows <= RUN_ROWS
                }
            };
            let rows = if joins {
                0
            } else {
                self.finish_run(state).await?
            };
            state.run_rows += body.rows;
            state.run.push((sequence_number, payload, body));
            return Ok(rows);
        }
        let rows = self.finish_run(state).await?;
        Ok(rows + self.replay_one(state, sequence_number, payload).await?)
    }

    /// Applies the records waiting in `state`'s run; returns their rows.
    pub(crate) async fn finish_run(&self, state: &mut ReplayState) -> Result<usize, ReplayError> {
        let run = std::mem::take(&mut state.run);
        state.run_rows = 0;
        let (Some((first, ..)), Some((last, ..))) = (run.first(), run.last()) else {
            return Ok(0);
        };
        let (first, last, records) = (*first, *last, run.len());
        self.apply_run(state, run)
            .await
            .map_err(|e| ReplayError::Run {
                first,
                last,
                records,
                source: Box::new(e),
            })
    }

    /// A run's records as one batch, or one by one if their columns differ.
    async fn apply_run(
        &self,
        state: &mut ReplayState,
        run: Vec<(u64, Bytes, SmallBody)>,
    ) -> Result<usize, ReplayError> {
        if let [(_, first, _), .., (last, _, _)] = run.as_slice() {
            let parts: Vec<_> = run.iter().map(|(_, p, body)| (&p[..], *body)).collect();
            // The run's namespace, table and key: its first record's.
            let names = wal_record::peek_small(first);
            if let (Some(names), Some(batch)) = (names, state.decoder.decode_run(&parts)?) {
                let record = WalRecord {
                    namespace: names.namespace.to_string(),
                    tables: vec![RecordTable {
                        name: names.table.to_string(),
                        partitions: vec![RecordPartition {
                            key: names.key.to_string(),
                            batch,
                        }],
                    }],
                };
                let runs = run
                    .iter()
                    .map(|(seq, _, body)| (*seq, body.rows as u32))
                    .collect();
                return self.replay_record(state, *last, record, runs).await;
            }
        }
        let mut rows = 0;
        for (seq, payload, _) in run {
            rows += self.replay_one(state, seq, payload).await?;
        }
        Ok(rows)
    }

    /// One record, decoded and applied alone.
    async fn replay_one(
        &self,
        state: &mut ReplayState,
        sequence_number: u64,
        payload: Bytes,
    ) -> Result<usize, ReplayError> {
        match payload.first() {
            Some(&COLUMNAR_VERSION) => {
                let record = state.decoder.decode(&payload)?;
                drop(payload);
                self.replay_record(state, sequence_number, record, Vec::new())
                    .await
            }
            _ => {
                // Version 1 (or unknown: the request decoder names it).
                let req = WriteRequest::decode(payload).map_err(ReplayError::DecodeRequest)?;
                self.replay_request(sequence_number, req)
                    .await
                    .map_err(ReplayError::Request)
            }
        }
    }

    async fn replay_record(
        &self,
        state: &mut ReplayState,
        sequence_number: u64,
        record: WalRecord,
        replayed_runs: Vec<(u64, u32)>,
    ) -> Result<usize, ReplayError> {
        self.oracle.observe(sequence_number);
        let ns = self
            .cache
            .existing_namespace(&record.namespace)
            .await?
            .ok_or_else(|| ReplayError::UnknownNamespace(record.namespace.clone()))?;
        let mut tables = Vec::with_capacity(record.tables.len());
        let mut rows = 0;
        for t in record.tables {
            let unknown_table = || ReplayError::UnknownTable {
                namespace: record.namespace.clone(),
                table: t.name.clone(),
            };
            let mut schema = self
                .cache
                .existing_table(&ns, &t.name)
                .await?
                .ok_or_else(unknown_table)?;
            for p in &t.partitions {
                let batch_schema = p.batch.schema_ref();
                if state.was_checked(batch_schema, &schema) {
                    continue;
                }
                if check_columns(&schema, p.columns()).is_err() {
                    // Columns another pod added may be missing from the cache.
                    schema = self
                        .cache
                        .refresh_table(&ns, &t.name)
                        .await?
                        .ok_or_else(unknown_table)?;
                    check_columns(&schema, p.columns())?;
                }
                state.remember_checked(batch_schema, &schema);
            }
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for p in t.partitions {
                let id = self.cache.partition(&ns, schema.id, &p.key).await?;
                rows += p.batch.num_rows();
                partitions.push(PartitionWrite {
                    id,
                    key: p.key.into(),
                    batch: p.batch,
                });
            }
            tables.push(TableWrite {
                table: schema,
                partitions,
            });
        }
        let op = DmlOperation {
            sequence_number,
            namespace_id: ns.id,
            namespace: Arc::clone(&ns.name),
            tables,
            wal_payload: Bytes::new(),
            rows,
            replayed_runs,
        };
        self.sink.apply(op).await?;
        Ok(rows)
    }
}

/// Every column but `time` must be in `schema` with the record's type.
fn check_columns<'a>(
    schema: &TableSchema,
    columns: impl Iterator<Item = (&'a str, ColumnType)>,
) -> Result<(), ReplayError> {
    for (name, t) in columns {
        if t == ColumnType::Time {
            continue;
        }
        match schema.column_type(name) {
            Some(c) if c == t => {}
            Some(c) => {
                return Err(ReplayError::ColumnTypeConflict {
                    table: schema.name.clone(),
                    column: name.to_string(),
                    record: t,
                    catalog: c,
                });
            }
            None => {
                return Err(ReplayError::UnknownColumn {
                    table: schema.name.clone(),
                    column: name.to_string(),
                });
            }
        }
    }
    Ok(())
}
