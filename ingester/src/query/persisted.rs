//! `include_persisted`: buffered data plus the table's Parquet files,
//! deduplicated as persistence does, so every row is seen once whether or
//! not it has been persisted.
//!
//! Consistency: the buffer is snapshotted *before* the catalog is read. A
//! batch leaves the buffer only after its file is recorded, so a batch
//! persisted in between is seen twice (once from memory, once from its
//! file) and merged by deduplication — never missed.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;

use super::{PartitionResponse, QueryError};
use crate::buffer_tree::PartitionSnapshot;
use crate::catalog::{Catalog, PartitionId, TableSchema};
use crate::persist::compact::{self, Executor, Source};
use crate::schema::{TIME_COLUMN, align_batch};

/// What reading Parquet files needs.
#[derive(Debug, Clone)]
pub(crate) struct PersistedReader {
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) executor: Arc<Executor>,
}

impl PersistedReader {
    /// One deduplicated stream per partition (buffer ∪ files).
    pub(crate) async fn partitions(
        &self,
        table: &TableSchema,
        full: &SchemaRef,
        projected: &SchemaRef,
        range: Option<(i64, i64)>,
        snapshots: Vec<PartitionSnapshot>,
    ) -> Result<Vec<PartitionResponse>, QueryError> {
        let files = self.catalog.list_parquet_files(table.id).await?;
        let keys: BTreeMap<PartitionId, String> = self
            .catalog
            .list_partitions(table.id)
            .await?
            .into_iter()
            .map(|p| (p.id, p.key))
            .collect();
        // Dedup groups by every tag and time; tags sorted by name, then time.
        let mut sort_key: Vec<String> = full
            .fields()
            .iter()
            .filter(|f| matches!(f.data_type(), DataType::Dictionary(_, _)))
            .map(|f| f.name().clone())
            .collect();
        sort_key.push(TIME_COLUMN.to_string());
        let projection: Option<Vec<String>> = if Arc::ptr_eq(full, projected) {
            None
        } else {
            Some(
                projected
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
            )
        };

        struct Part {
            key: String,
            files: Vec<Source>,
            snapshot: Option<PartitionSnapshot>,
        }
        let mut parts: BTreeMap<PartitionId, Part> = BTreeMap::new();
        for f in files {
            if let Some((start, end)) = range
                && (f.max_time < start || f.min_time >= end)
            {
                continue;
            }
            let key = keys.get(&f.partition_id).cloned().unwrap_or_default();
            parts
                .entry(f.partition_id)
                .or_insert_with(|| Part {
                    key,
                    files: Vec::new(),
                    snapshot: None,
                })
                .files
                .push(Source::Parquet {
                    store: Arc::clone(&self.store),
                    path: Path::from(f.object_path.as_str()),
                });
        }
        for s in snapshots {
            let key = s.key.to_string();
            let id = s.id;
            parts
                .entry(id)
                .or_insert_with(|| Part {
                    key,
                    files: Vec::new(),
                    snapshot: None,
                })
                .snapshot = Some(s);
        }
        let mut out = Vec::with_capacity(parts.len());
        for (id, part) in parts {
            let mut sources = part.files;
            let persisted_batches = part
                .snapshot
                .as_ref()
                .map(|s| s.persisted_batches)
                .unwrap_or(0);
            if let Some(s) = part.snapshot {
                let aligned = s
                    .batches
                    .iter()
                    .map(|b| align_batch(b, full))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| QueryError::Internal(e.to_string()))?;
                sources.push(Source::Batches(aligned));
            }
            let exec = Arc::clone(&self.executor);
            let full = Arc::clone(full);
            let projected = Arc::clone(projected);
            let sort_key = sort_key.clone();
            let projection = projection.clone();
            // Started when the client reads this partition.
            let batches = futures::stream::once(async move {
                compact::compact_sources(&exec, full, sources, &sort_key, projection, range).await
            })
            .map_ok(|out| out.map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e))))
            .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e)))
            .try_flatten()
            .map(move |b| {
                b.and_then(|b| {
                    arrow::record_batch::RecordBatch::try_new(
                        Arc::clone(&projected),
                        b.columns().to_vec(),
                    )
                })
            })
            .boxed();
            out.push(PartitionResponse {
                id,
                key: part.key.into(),
                persisted_batches,
                rows: 0,
                persisted: true,
                batches,
            });
        }
        Ok(out)
    }
}
