//! The catalog: namespaces, tables and their column types, partitions with their sort
//! keys, and the Parquet files persisted for them.
//!
//! # Backends
//!
//! [`connect`] picks one from the URL:
//! - `sqlite://path?mode=rwc` or `sqlite:path` — the single-node default, a file under
//!   the data directory (created with its parent directories if missing), WAL journal
//!   mode, `synchronous=FULL` (a recorded file must survive power loss: the WAL segment
//!   that held its rows is deleted once it is recorded);
//! - `postgres://…` / `postgresql://…` — shared by every ingester pod of a cluster. A
//!   schema other than `public` is chosen with `?options[search_path]=NAME`;
//! - `memory://` — in-process, for unit tests.
//!
//! Schema migrations run inside [`connect`]. On PostgreSQL they run under sqlx's
//! migration advisory lock (`pg_advisory_lock`, one key per database) on a dedicated
//! connection, so many pods may start at once: one applies, the others wait and then
//! find nothing to do; if a pod dies mid-migration its session ends and the lock goes
//! with it. On SQLite they run inside one `BEGIN IMMEDIATE` transaction, which
//! serialises processes opening the same file. The SQL is embedded with `include_str!`
//! from `ingester/migrations/{sqlite,postgres}/` (so cargo rebuilds when it changes and
//! no `sqlx::migrate!` macro, i.e. no `macros` feature, is needed).
//!
//! # Guarantees
//!
//! - **A column has one type, forever.** [`Catalog::add_columns`] is all-or-nothing: if
//!   any requested column exists with another type it fails with
//!   [`CatalogError::ColumnTypeConflict`] and records nothing. Concurrent calls — from
//!   tasks, pods or processes — cannot both record different types for a column: the
//!   database's `UNIQUE (table_id, name)` makes the second insert a no-op and the
//!   re-read that follows sees the winner's type. The SQL backends also serialise
//!   schema changes per table (PostgreSQL: a row lock on the table; SQLite: the write
//!   lock), so conflicts are found before anything is written.
//! - **Sort keys change only by compare-and-swap** ([`Catalog::cas_sort_key`]); the
//!   persist worker retries with the returned current key.
//! - **Object paths are unique** across all recorded files.
//! - **`get_or_create_*` are idempotent under races**: concurrent callers get one id.
//!
//! # Failures and bounds
//!
//! Every database operation is bounded by [`ConnectOptions::operation_timeout`]
//! (including waiting for a pooled connection). An unreachable, busy or slow database
//! yields an error for which [`CatalogError::is_retryable`] is true; everything else is
//! a client error. Connection pools are small ([`ConnectOptions::max_connections`]):
//! the catalog is touched on schema changes and once per persisted file, not per row.
//!
//! Name validation is not done here: callers pass names already checked.

mod cache;
mod error;
mod mem;
mod migrate;
mod postgres;
mod sql;
mod sqlite;
mod types;

#[cfg(test)]
mod test_suite;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub(crate) use cache::{CachedNamespace, SchemaCache};
pub use error::CatalogError;
pub use mem::MemCatalog;
pub use types::{
    ColumnId, ColumnSchema, ColumnType, IngesterPartition, NamespaceId, ParquetFile, ParquetFileId,
    ParquetFileParams, Partition, PartitionId, TableId, TableSchema, UnknownColumnType,
};

/// The catalog interface shared by all backends. Object-safe: use `Arc<dyn Catalog>`.
#[async_trait]
pub trait Catalog: std::fmt::Debug + Send + Sync + 'static {
    /// The id of namespace `name`, creating it if needed.
    async fn get_or_create_namespace(&self, name: &str) -> Result<NamespaceId, CatalogError>;

    /// The id of namespace `name`, if it exists.
    async fn get_namespace(&self, name: &str) -> Result<Option<NamespaceId>, CatalogError>;

    /// All namespaces, in id (creation) order.
    async fn list_namespaces(&self) -> Result<Vec<(NamespaceId, String)>, CatalogError>;

    /// Table `name` of `namespace_id` with its columns, creating it (with no columns)
    /// if needed. Fails with [`CatalogError::NamespaceNotFound`] for an unknown id.
    async fn get_or_create_table(
        &self,
        namespace_id: NamespaceId,
        name: &str,
    ) -> Result<TableSchema, CatalogError>;

    /// Table `name` of `namespace_id` with its columns, if it exists.
    async fn get_table(
        &self,
        namespace_id: NamespaceId,
        name: &str,
    ) -> Result<Option<TableSchema>, CatalogError>;

    /// All tables of a namespace with their columns, in id (creation) order.
    async fn list_tables(
        &self,
        namespace_id: NamespaceId,
    ) -> Result<Vec<TableSchema>, CatalogError>;

    /// Records the missing `columns` of a table, all or nothing, and returns the full
    /// current schema. Columns already present with the same type are fine; one present
    /// with another type (or named twice with different types in `columns`) fails the
    /// whole call with [`CatalogError::ColumnTypeConflict`].
    async fn add_columns(
        &self,
        table_id: TableId,
        columns: &[(String, ColumnType)],
    ) -> Result<TableSchema, CatalogError>;

    /// Partition `key` of a table, creating it (with an empty sort key) if needed.
    async fn get_or_create_partition(
        &self,
        table_id: TableId,
        key: &str,
    ) -> Result<Partition, CatalogError>;

    /// All partitions of a table, in id (creation) order.
    async fn list_partitions(&self, table_id: TableId) -> Result<Vec<Partition>, CatalogError>;

    /// Sets a partition's sort key to `new` if it is still `old`. `Ok(Ok(partition))`
    /// on success; `Ok(Err(current))` if another writer changed it first (retry from
    /// `current`).
    async fn cas_sort_key(
        &self,
        partition_id: PartitionId,
        old: &[String],
        new: &[String],
    ) -> Result<Result<Partition, Vec<String>>, CatalogError>;

    /// Records a persisted Parquet file. Fails with [`CatalogError::ParquetFileExists`]
    /// if its object path is already recorded.
    async fn add_parquet_file(
        &self,
        params: ParquetFileParams,
    ) -> Result<ParquetFile, CatalogError>;

    /// All recorded files of a table, in id (record) order.
    async fn list_parquet_files(&self, table_id: TableId)
    -> Result<Vec<ParquetFile>, CatalogError>;

    /// All recorded files of a partition, in id (record) order.
    async fn list_parquet_files_by_partition(
        &self,
        partition_id: PartitionId,
    ) -> Result<Vec<ParquetFile>, CatalogError>;

    /// Per partition, the highest batch number and sequence number among the
    /// files `ingester_id` recorded, in partition id order. An ingester reads
    /// this at start-up so its batch numbers and sequence numbers continue
    /// where they stopped instead of restarting at 1.
    async fn ingester_partitions(
        &self,
        ingester_id: &str,
    ) -> Result<Vec<IngesterPartition>, CatalogError>;

    /// A cheap round trip proving the catalog answers (for `/ready` and health checks).
    async fn health(&self) -> Result<(), CatalogError>;
}

/// Tuning for [`connect_with`]. The defaults suit both single nodes and clusters.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Pool size; `None` picks the backend's default (SQLite 4: one writer at a time
    /// anyway; PostgreSQL 8: a cluster of N pods opens up to 8·N connections, so keep
    /// it well under the server's `max_connections` divided by the pod count).
    pub max_connections: Option<u32>,
    /// Upper bound on each catalog operation, including waiting for a connection.
    pub operation_timeout: Duration,
    /// Upper bound on running migrations at start-up, including waiting for other pods
    /// to finish theirs.
    pub migration_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            operation_timeout: Duration::from_secs(10),
            migration_timeout: Duration::from_secs(120),
        }
    }
}

/// Opens the catalog named by `url` with default options and runs its migrations.
/// See the module docs for the accepted URLs.
pub async fn connect(url: &str) -> Result<Arc<dyn Catalog>, CatalogError> {
    connect_with(url, &ConnectOptions::default()).await
}

/// Opens the catalog named by `url` and runs its migrations.
pub async fn connect_with(
    url: &str,
    options: &ConnectOptions,
) -> Result<Arc<dyn Catalog>, CatalogError> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "memory" => Ok(Arc::new(MemCatalog::new())),
        "sqlite" => Ok(Arc::new(
            sqlite::SqliteCatalog::connect(url, options).await?,
        )),
        "postgres" | "postgresql" => Ok(Arc::new(
            postgres::PostgresCatalog::connect(url, options).await?,
        )),
        _ => Err(CatalogError::InvalidUrl {
            reason: format!(
                "unsupported scheme {scheme:?} (expected sqlite:, postgres:, postgresql: or memory:)"
            ),
        }),
    }
}

/// Runs `fut`, turning an overrun of `timeout` into [`CatalogError::Timeout`].
async fn with_timeout<T>(
    operation: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, CatalogError>>,
) -> Result<T, CatalogError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(CatalogError::Timeout { operation, timeout }))
}

/// Checks `requested` against `schema` (the table's current columns) and returns the
/// columns that must be inserted: deduplicated and sorted by name (a fixed insert order
/// also keeps concurrent inserters from deadlocking on PostgreSQL).
fn plan_new_columns<'a>(
    schema: &TableSchema,
    requested: &'a [(String, ColumnType)],
) -> Result<Vec<(&'a str, ColumnType)>, CatalogError> {
    let mut wanted: Vec<(&str, ColumnType)> =
        requested.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    // Stable: among duplicates, the first one asked for stays first.
    wanted.sort_by(|a, b| a.0.cmp(b.0));
    let conflict = |column: &str, existing, requested| CatalogError::ColumnTypeConflict {
        table: schema.name.clone(),
        column: column.to_owned(),
        existing,
        requested,
    };
    let mut missing: Vec<(&str, ColumnType)> = Vec::with_capacity(wanted.len());
    for (name, ty) in wanted {
        if let Some(existing) = schema.column_type(name) {
            if existing != ty {
                return Err(conflict(name, existing, ty));
            }
            continue;
        }
        match missing.last() {
            Some(&(prev, prev_ty)) if prev == name => {
                if prev_ty != ty {
                    return Err(conflict(name, prev_ty, ty));
                }
            }
            _ => missing.push((name, ty)),
        }
    }
    Ok(missing)
}

/// Decodes a stored column type code.
fn column_type_from_db(code: i16, table_id: i64, column: &str) -> Result<ColumnType, CatalogError> {
    ColumnType::from_i16(code).ok_or_else(|| CatalogError::Corrupt {
        detail: format!("column {column:?} of table id {table_id} has unknown type code {code}"),
    })
}

/// Converts an unsigned field for storage in a signed BIGINT.
fn u64_to_db(field: &'static str, value: u64) -> Result<i64, CatalogError> {
    i64::try_from(value).map_err(|_| CatalogError::ValueOutOfRange { field, value })
}

/// Reads back an unsigned field stored in a signed BIGINT.
fn u64_from_db(field: &'static str, value: i64) -> Result<u64, CatalogError> {
    u64::try_from(value).map_err(|_| CatalogError::Corrupt {
        detail: format!("{field} is negative ({value})"),
    })
}

/// Rejects params the SQL backends could not store, so all backends agree.
fn check_file_params(params: &ParquetFileParams) -> Result<(), CatalogError> {
    u64_to_db("file_size_bytes", params.file_size_bytes)?;
    u64_to_db("row_count", params.row_count)?;
    u64_to_db("min_sequence_number", params.min_sequence_number)?;
    u64_to_db("max_sequence_number", params.max_sequence_number)?;
    u64_to_db("batch_number", params.batch_number)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_with(cols: &[(&str, ColumnType)]) -> TableSchema {
        let columns = cols
            .iter()
            .enumerate()
            .map(|(i, (n, t))| ColumnSchema {
                id: ColumnId(i as i64 + 1),
                name: (*n).to_owned(),
                column_type: *t,
            })
            .collect();
        TableSchema::new(TableId(1), NamespaceId(1), "cpu".into(), columns)
    }

    fn req(cols: &[(&str, ColumnType)]) -> Vec<(String, ColumnType)> {
        cols.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect()
    }

    #[test]
    fn plan_returns_missing_sorted_and_deduplicated() {
        let schema = schema_with(&[("time", ColumnType::Time)]);
        let request = req(&[
            ("z", ColumnType::F64),
            ("time", ColumnType::Time),
            ("a", ColumnType::Tag),
            ("z", ColumnType::F64),
        ]);
        let plan = plan_new_columns(&schema, &request).expect("no conflict");
        assert_eq!(plan, [("a", ColumnType::Tag), ("z", ColumnType::F64)]);
    }

    #[test]
    fn plan_rejects_conflicts_with_schema_and_within_request() {
        let schema = schema_with(&[("usage", ColumnType::F64)]);
        let request = req(&[("a", ColumnType::Tag), ("usage", ColumnType::I64)]);
        match plan_new_columns(&schema, &request) {
            Err(CatalogError::ColumnTypeConflict {
                table,
                column,
                existing,
                requested,
            }) => {
                assert_eq!((table.as_str(), column.as_str()), ("cpu", "usage"));
                assert_eq!((existing, requested), (ColumnType::F64, ColumnType::I64));
            }
            other => panic!("expected conflict, got {other:?}"),
        }
        let request = req(&[("b", ColumnType::Bool), ("b", ColumnType::String)]);
        match plan_new_columns(&schema, &request) {
            Err(CatalogError::ColumnTypeConflict {
                existing,
                requested,
                ..
            }) => assert_eq!(
                (existing, requested),
                (ColumnType::Bool, ColumnType::String)
            ),
            other => panic!("expected conflict, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn connect_rejects_unknown_scheme_without_echoing_secrets() {
        let err = connect("mysql://user:hunter2@db/x")
            .await
            .expect_err("mysql is not supported");
        let msg = err.to_string();
        assert!(matches!(err, CatalogError::InvalidUrl { .. }), "{err:?}");
        assert!(msg.contains("mysql") && !msg.contains("hunter2"), "{msg}");
        assert!(connect("").await.is_err());
    }

    #[test]
    fn connect_future_is_send() {
        // Callers spawn it; sqlx's `Migrator::run` would break this (see migrate calls).
        fn assert_send<T: Send>(_: &T) {}
        let fut = connect("memory://");
        assert_send(&fut);
    }

    #[tokio::test]
    async fn connect_memory() {
        let catalog = connect("memory://").await.expect("memory catalog");
        catalog.health().await.expect("healthy");
    }

    #[test]
    fn out_of_range_unsigned_values_are_rejected() {
        assert_eq!(u64_to_db("x", i64::MAX as u64).ok(), Some(i64::MAX));
        assert!(matches!(
            u64_to_db("batch_number", u64::MAX),
            Err(CatalogError::ValueOutOfRange {
                field: "batch_number",
                ..
            })
        ));
        assert!(u64_from_db("row_count", -1).is_err());
    }
}
