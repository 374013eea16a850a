//! In-memory catalog for unit tests.
//!
//! One mutex guards all state and is never held across an `.await` (every method is a
//! synchronous critical section), so each call is atomic exactly as the SQL backends'
//! transactions are and the shared test suite holds for it too. Ids start at 1 and
//! follow creation order, as in the databases. Nothing is persisted.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::types::now_unix_nanos;
use super::{
    Catalog, CatalogError, ColumnId, ColumnSchema, ColumnType, NamespaceId, ParquetFile,
    ParquetFileId, ParquetFileParams, Partition, PartitionId, TableId, TableSchema,
    check_file_params, plan_new_columns,
};

/// An in-process [`Catalog`]. Cheap to create; share it with `Arc`.
#[derive(Debug, Default)]
pub struct MemCatalog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Index `i` holds id `i + 1`.
    namespaces: Vec<String>,
    namespace_ids: HashMap<String, NamespaceId>,
    /// Index `i` holds id `i + 1`.
    tables: Vec<TableSchema>,
    table_ids: HashMap<(NamespaceId, String), TableId>,
    next_column_id: i64,
    /// Index `i` holds id `i + 1`.
    partitions: Vec<Partition>,
    partition_ids: HashMap<(TableId, String), PartitionId>,
    /// Index `i` holds id `i + 1`.
    files: Vec<ParquetFile>,
    object_paths: HashSet<String>,
}

/// Id `i + 1` for the element about to be pushed at index `i`.
fn next_id(len: usize) -> i64 {
    i64::try_from(len).map_or(i64::MAX, |n| n + 1)
}

/// Index of id `id` in a 1-based dense vector.
fn index(id: i64, len: usize) -> Option<usize> {
    usize::try_from(id.checked_sub(1)?)
        .ok()
        .filter(|&i| i < len)
}

impl MemCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }
}

impl State {
    fn table(&self, id: TableId) -> Option<&TableSchema> {
        index(id.0, self.tables.len()).map(|i| &self.tables[i])
    }
}

#[async_trait]
impl Catalog for MemCatalog {
    async fn get_or_create_namespace(&self, name: &str) -> Result<NamespaceId, CatalogError> {
        let mut s = self.state.lock();
        if let Some(&id) = s.namespace_ids.get(name) {
            return Ok(id);
        }
        let id = NamespaceId(next_id(s.namespaces.len()));
        s.namespaces.push(name.to_owned());
        s.namespace_ids.insert(name.to_owned(), id);
        Ok(id)
    }

    async fn get_namespace(&self, name: &str) -> Result<Option<NamespaceId>, CatalogError> {
        Ok(self.state.lock().namespace_ids.get(name).copied())
    }

    async fn list_namespaces(&self) -> Result<Vec<(NamespaceId, String)>, CatalogError> {
        let s = self.state.lock();
        Ok(s.namespaces
            .iter()
            .enumerate()
            .map(|(i, n)| (NamespaceId(next_id(i)), n.clone()))
            .collect())
    }

    async fn get_or_create_table(
        &self,
        namespace_id: NamespaceId,
        name: &str,
    ) -> Result<TableSchema, CatalogError> {
        let mut s = self.state.lock();
        if index(namespace_id.0, s.namespaces.len()).is_none() {
            return Err(CatalogError::NamespaceNotFound { namespace_id });
        }
        let key = (namespace_id, name.to_owned());
        if let Some(&id) = s.table_ids.get(&key) {
            return Ok(s.table(id).expect("table id map points at a table").clone());
        }
        let id = TableId(next_id(s.tables.len()));
        let schema = TableSchema::new(id, namespace_id, name.to_owned(), Vec::new());
        s.tables.push(schema.clone());
        s.table_ids.insert(key, id);
        Ok(schema)
    }

    async fn get_table(
        &self,
        namespace_id: NamespaceId,
        name: &str,
    ) -> Result<Option<TableSchema>, CatalogError> {
        let s = self.state.lock();
        Ok(s.table_ids
            .get(&(namespace_id, name.to_owned()))
            .and_then(|&id| s.table(id))
            .cloned())
    }

    async fn list_tables(
        &self,
        namespace_id: NamespaceId,
    ) -> Result<Vec<TableSchema>, CatalogError> {
        let s = self.state.lock();
        Ok(s.tables
            .iter()
            .filter(|t| t.namespace_id == namespace_id)
            .cloned()
            .collect())
    }

    async fn add_columns(
        &self,
        table_id: TableId,
        columns: &[(String, ColumnType)],
    ) -> Result<TableSchema, CatalogError> {
        let mut s = self.state.lock();
        let i =
            index(table_id.0, s.tables.len()).ok_or(CatalogError::TableNotFound { table_id })?;
        let missing = plan_new_columns(&s.tables[i], columns)?;
        if missing.is_empty() {
            return Ok(s.tables[i].clone());
        }
        let mut all = s.tables[i].columns().to_vec();
        for (name, column_type) in missing {
            s.next_column_id += 1;
            all.push(ColumnSchema {
                id: ColumnId(s.next_column_id),
                name: name.to_owned(),
                column_type,
            });
        }
        let old = &s.tables[i];
        let schema = TableSchema::new(old.id, old.namespace_id, old.name.clone(), all);
        s.tables[i] = schema.clone();
        Ok(schema)
    }

    async fn get_or_create_partition(
        &self,
        table_id: TableId,
        key: &str,
    ) -> Result<Partition, CatalogError> {
        let mut s = self.state.lock();
        if s.table(table_id).is_none() {
            return Err(CatalogError::TableNotFound { table_id });
        }
        let map_key = (table_id, key.to_owned());
        if let Some(&id) = s.partition_ids.get(&map_key) {
            let i =
                index(id.0, s.partitions.len()).expect("partition id map points at a partition");
            return Ok(s.partitions[i].clone());
        }
        let partition = Partition {
            id: PartitionId(next_id(s.partitions.len())),
            table_id,
            key: key.to_owned(),
            sort_key: Vec::new(),
        };
        s.partitions.push(partition.clone());
        s.partition_ids.insert(map_key, partition.id);
        Ok(partition)
    }

    async fn list_partitions(&self, table_id: TableId) -> Result<Vec<Partition>, CatalogError> {
        let s = self.state.lock();
        Ok(s.partitions
            .iter()
            .filter(|p| p.table_id == table_id)
            .cloned()
            .collect())
    }

    async fn cas_sort_key(
        &self,
        partition_id: PartitionId,
        old: &[String],
        new: &[String],
    ) -> Result<Result<Partition, Vec<String>>, CatalogError> {
        let mut s = self.state.lock();
        let i = index(partition_id.0, s.partitions.len())
            .ok_or(CatalogError::PartitionNotFound { partition_id })?;
        let partition = &mut s.partitions[i];
        if partition.sort_key != old {
            return Ok(Err(partition.sort_key.clone()));
        }
        partition.sort_key = new.to_vec();
        Ok(Ok(partition.clone()))
    }

    async fn add_parquet_file(
        &self,
        params: ParquetFileParams,
    ) -> Result<ParquetFile, CatalogError> {
        check_file_params(&params)?;
        let mut s = self.state.lock();
        if s.object_paths.contains(&params.object_path) {
            return Err(CatalogError::ParquetFileExists {
                object_path: params.object_path,
            });
        }
        let known = index(params.namespace_id.0, s.namespaces.len()).is_some()
            && s.table(params.table_id).is_some()
            && index(params.partition_id.0, s.partitions.len()).is_some();
        if !known {
            return Err(CatalogError::ParquetFileDangling {
                object_path: params.object_path,
            });
        }
        let id = ParquetFileId(next_id(s.files.len()));
        let file = ParquetFile::from_params(id, params, now_unix_nanos());
        s.object_paths.insert(file.object_path.clone());
        s.files.push(file.clone());
        Ok(file)
    }

    async fn list_parquet_files(
        &self,
        table_id: TableId,
    ) -> Result<Vec<ParquetFile>, CatalogError> {
        let s = self.state.lock();
        Ok(s.files
            .iter()
            .filter(|f| f.table_id == table_id)
            .cloned()
            .collect())
    }

    async fn list_parquet_files_by_partition(
        &self,
        partition_id: PartitionId,
    ) -> Result<Vec<ParquetFile>, CatalogError> {
        let s = self.state.lock();
        Ok(s.files
            .iter()
            .filter(|f| f.partition_id == partition_id)
            .cloned()
            .collect())
    }

    async fn ingester_partitions(
        &self,
        ingester_id: &str,
    ) -> Result<Vec<super::IngesterPartition>, CatalogError> {
        let s = self.state.lock();
        let mut by: std::collections::BTreeMap<PartitionId, (u64, u64)> = Default::default();
        for f in s.files.iter().filter(|f| f.ingester_id == ingester_id) {
            let e = by.entry(f.partition_id).or_default();
            e.0 = e.0.max(f.batch_number);
            e.1 = e.1.max(f.max_sequence_number);
        }
        Ok(by
            .into_iter()
            .map(|(partition_id, (b, s))| super::IngesterPartition {
                partition_id,
                max_batch_number: b,
                max_sequence_number: s,
            })
            .collect())
    }

    async fn health(&self) -> Result<(), CatalogError> {
        Ok(())
    }
}
