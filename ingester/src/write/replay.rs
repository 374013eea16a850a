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
//! Request-format (version 1) records, written by older releases, are
//! re-validated through the normal write path.

use std::sync::Arc;

use bytes::Bytes;

use super::request::WriteRequest;
use super::wal_record::{self, COLUMNAR_VERSION, DecodeError, WalRecord};
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
}

impl<S: DmlSink> WriteHandler<S> {
    /// Replays one WAL payload with its original sequence number; returns
    /// the rows applied.
    pub(crate) async fn replay(
        &self,
        sequence_number: u64,
        payload: Bytes,
    ) -> Result<usize, ReplayError> {
        match payload.first() {
            Some(&COLUMNAR_VERSION) => {
                let record = wal_record::decode(&payload)?;
                drop(payload);
                self.replay_record(sequence_number, record).await
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
        sequence_number: u64,
        record: WalRecord,
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
            let columns = t.partitions.iter().flat_map(|p| p.columns.iter());
            if check_columns(&schema, columns.clone()).is_err() {
                // Columns another pod added may be missing from the cache.
                schema = self
                    .cache
                    .refresh_table(&ns, &t.name)
                    .await?
                    .ok_or_else(unknown_table)?;
                check_columns(&schema, columns)?;
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
        };
        self.sink.apply(op).await?;
        Ok(rows)
    }
}

/// Every column but `time` must be in `schema` with the record's type.
fn check_columns<'a>(
    schema: &TableSchema,
    columns: impl Iterator<Item = &'a (String, ColumnType)>,
) -> Result<(), ReplayError> {
    for (name, t) in columns {
        if *t == ColumnType::Time {
            continue;
        }
        match schema.column_type(name) {
            Some(c) if c == *t => {}
            Some(c) => {
                return Err(ReplayError::ColumnTypeConflict {
                    table: schema.name.clone(),
                    column: name.clone(),
                    record: *t,
                    catalog: c,
                });
            }
            None => {
                return Err(ReplayError::UnknownColumn {
                    table: schema.name.clone(),
                    column: name.clone(),
                });
            }
        }
    }
    Ok(())
}
