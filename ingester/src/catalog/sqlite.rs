//! SQLite catalog: the single-node default.
//!
//! One file (created with its directory if missing) in WAL journal mode, so readers
//! never block the writer; `synchronous=FULL` because a recorded Parquet file lets the
//! WAL segment holding its rows be deleted, so the record must survive power loss.
//!
//! SQLite has one writer at a time. Every read-modify-write (`add_columns`,
//! `cas_sort_key`, migrations) runs in a `BEGIN IMMEDIATE` transaction, which takes
//! the write lock up front: a deferred transaction that reads and then writes can fail
//! with `SQLITE_BUSY` without waiting when another connection wrote in between, while
//! an immediate one simply waits (up to the busy timeout). That makes these operations
//! safe across connections *and* processes sharing the file. Single-statement writes
//! (`INSERT … ON CONFLICT DO NOTHING`) are atomic on their own.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{SqliteExecutor, query, query_as, query_scalar};

use super::sql::{self, FileRow, TableRow, db};
use super::types::now_unix_nanos;
use super::{
    Catalog, CatalogError, ColumnType, ConnectOptions, NamespaceId, ParquetFile, ParquetFileId,
    ParquetFileParams, Partition, PartitionId, TableId, TableSchema, check_file_params,
    column_type_from_db, migrate, plan_new_columns, u64_to_db, with_timeout,
};

/// Default pool size: one writer at a time anyway; a few readers run alongside.
const DEFAULT_MAX_CONNECTIONS: u32 = 4;

/// A [`Catalog`] in a SQLite file.
#[derive(Debug)]
pub(super) struct SqliteCatalog {
    pool: SqlitePool,
    timeout: Duration,
}

impl SqliteCatalog {
    /// Opens (creating if needed) the database at `url` and migrates it.
    pub(super) async fn connect(url: &str, options: &ConnectOptions) -> Result<Self, CatalogError> {
        let connect_options = SqliteConnectOptions::from_str(url)
            .map_err(|e| CatalogError::InvalidUrl {
                reason: format!("bad sqlite URL: {e}"),
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.operation_timeout);
        if let Some(dir) = connect_options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| CatalogError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        // Switching a brand-new file to WAL needs an exclusive lock, and SQLite answers
        // BUSY at once (no busy handler) when another process is opening the same new
        // file: retry such transient failures until the migration deadline.
        let pool_options = SqlitePoolOptions::new()
            .max_connections(
                options
                    .max_connections
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                    .max(1),
            )
            // Keeps a `sqlite::memory:` database alive; harmless for files.
            .min_connections(1)
            .acquire_timeout(options.operation_timeout);
        let pool = with_timeout("migrate", options.migration_timeout, async {
            let mut backoff = Duration::from_millis(10);
            loop {
                match open_and_migrate(pool_options.clone(), connect_options.clone()).await {
                    Err(e) if e.is_retryable() => {
                        tracing::debug!(error = %e, "sqlite catalog busy at open, retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    done => return done,
                }
            }
        })
        .await?;
        tracing::info!(
            filename = %pool.connect_options().get_filename().display(),
            "sqlite catalog ready"
        );
        Ok(Self {
            pool,
            timeout: options.operation_timeout,
        })
    }
}

/// Opens the pool and applies pending migrations in one `BEGIN IMMEDIATE` transaction.
async fn open_and_migrate(
    pool_options: SqlitePoolOptions,
    connect_options: SqliteConnectOptions,
) -> Result<SqlitePool, CatalogError> {
    let pool = pool_options
        .connect_with(connect_options)
        .await
        .map_err(db("connect"))?;
    let migrator = migrate::migrator(migrate::SQLITE).await?;
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db("migrate"))?;
    // `run_direct` rather than `run`: `run`'s `Acquire` bound makes the future
    // non-`Send` (sqlx's own workaround; see `Migrator::run_direct`).
    migrator
        .run_direct(&mut *tx)
        .await
        .map_err(|source| CatalogError::Migration { source })?;
    tx.commit().await.map_err(db("migrate"))?;
    Ok(pool)
}

fn encode_sort_key(key: &[String]) -> Result<String, CatalogError> {
    serde_json::to_string(key).map_err(|e| CatalogError::Corrupt {
        detail: format!("cannot encode sort key: {e}"),
    })
}

fn decode_sort_key(text: String) -> Result<Vec<String>, CatalogError> {
    serde_json::from_str(&text).map_err(|e| CatalogError::Corrupt {
        detail: format!("sort key {text:?} is not a JSON string array: {e}"),
    })
}

/// The table with id `table_id` and its columns.
async fn load_table<'e>(
    ex: impl SqliteExecutor<'e>,
    op: &'static str,
    table_id: TableId,
) -> Result<TableSchema, CatalogError> {
    let rows: Vec<TableRow> = query_as(&format!("{} WHERE t.id = $1", sql::SELECT_TABLES))
        .bind(table_id.0)
        .fetch_all(ex)
        .await
        .map_err(db(op))?;
    sql::tables_from_rows(rows)?
        .pop()
        .ok_or(CatalogError::TableNotFound { table_id })
}

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn get_or_create_namespace(&self, name: &str) -> Result<NamespaceId, CatalogError> {
        const OP: &str = "get_or_create_namespace";
        with_timeout(OP, self.timeout, async {
            if let Some(id) = self.get_namespace(name).await? {
                return Ok(id);
            }
            let inserted: Option<i64> = query_scalar(
                "INSERT INTO namespaces (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(OP))?;
            match inserted {
                Some(id) => Ok(NamespaceId(id)),
                None => query_scalar("SELECT id FROM namespaces WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await
                    .map(NamespaceId)
                    .map_err(db(OP)),
            }
        })
        .await
    }

    async fn get_namespace(&self, name: &str) -> Result<Option<NamespaceId>, CatalogError> {
        const OP: &str = "get_namespace";
        with_timeout(OP, self.timeout, async {
            let id: Option<i64> = query_scalar("SELECT id FROM namespaces WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db(OP))?;
            Ok(id.map(NamespaceId))
        })
        .await
    }

    async fn list_namespaces(&self) -> Result<Vec<(NamespaceId, String)>, CatalogError> {
        const OP: &str = "list_namespaces";
        with_timeout(OP, self.timeout, async {
            let rows: Vec<(i64, String)> = query_as("SELECT id, name FROM namespaces ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(db(OP))?;
            Ok(rows
                .into_iter()
                .map(|(id, name)| (NamespaceId(id), name))
                .collect())
        })
        .await
    }

    async fn get_or_create_table(
        &self,
        namespace_id: NamespaceId,
        name: &str,
    ) -> Result<TableSchema, CatalogError> {
        const OP: &str = "get_or_create_table";
        with_timeout(OP, self.timeout, async {
            if let Some(table) = self.get_table(namespace_id, name).await? {
                return Ok(table);
            }
            let inserted = query(
                "INSERT INTO tables (namespace_id, name) VALUES ($1, $2) \
                 ON CONFLICT (namespace_id, name) DO NOTHING",
            )
            .bind(namespace_id.0)
            .bind(name)
            .execute(&self.pool)
            .await;
            if let Err(e) = inserted {
                return Err(match sql::violation(&e) {
                    Some(ErrorKind::ForeignKeyViolation) => {
                        CatalogError::NamespaceNotFound { namespace_id }
                    }
                    _ => db(OP)(e),
                });
            }
            self.get_table(namespace_id, name)
                .await?
                .ok_or_else(|| CatalogError::Corrupt {
                    detail: format!("table {name:?} vanished right after being created"),
                })
        })
        .await
    }

    async fn get_table(
        &self,
        namespace_id: NamespaceId,
        name: &str,
    ) -> Result<Option<TableSchema>, CatalogError> {
        const OP: &str = "get_table";
        with_timeout(OP, self.timeout, async {
            let rows: Vec<TableRow> = query_as(&format!(
                "{} WHERE t.namespace_id = $1 AND t.name = $2",
                sql::SELECT_TABLES
            ))
            .bind(namespace_id.0)
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(db(OP))?;
            Ok(sql::tables_from_rows(rows)?.pop())
        })
        .await
    }

    async fn list_tables(
        &self,
        namespace_id: NamespaceId,
    ) -> Result<Vec<TableSchema>, CatalogError> {
        const OP: &str = "list_tables";
        with_timeout(OP, self.timeout, async {
            let rows: Vec<TableRow> = query_as(&format!(
                "{} WHERE t.namespace_id = $1 ORDER BY t.id",
                sql::SELECT_TABLES
            ))
            .bind(namespace_id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(db(OP))?;
            sql::tables_from_rows(rows)
        })
        .await
    }

    async fn add_columns(
        &self,
        table_id: TableId,
        columns: &[(String, ColumnType)],
    ) -> Result<TableSchema, CatalogError> {
        const OP: &str = "add_columns";
        with_timeout(OP, self.timeout, async {
            // Fast path without the write lock: columns never change type or go away,
            // so "all present" and "conflict" are final answers.
            let schema = load_table(&self.pool, OP, table_id).await?;
            if plan_new_columns(&schema, columns)?.is_empty() {
                return Ok(schema);
            }
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(db(OP))?;
            // Holding the write lock: this read is the latest state.
            let schema = load_table(&mut *tx, OP, table_id).await?;
            for (name, column_type) in plan_new_columns(&schema, columns)? {
                let inserted: Option<i64> = query_scalar(
                    "INSERT INTO columns (table_id, name, column_type) VALUES ($1, $2, $3) \
                     ON CONFLICT (table_id, name) DO NOTHING RETURNING id",
                )
                .bind(table_id.0)
                .bind(name)
                .bind(column_type.as_i16())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(OP))?;
                if inserted.is_some() {
                    continue;
                }
                // The UNIQUE constraint kept another writer's column: re-read its type.
                // Dropping `tx` on the error path rolls back what we inserted.
                let code: i16 = query_scalar(
                    "SELECT column_type FROM columns WHERE table_id = $1 AND name = $2",
                )
                .bind(table_id.0)
                .bind(name)
                .fetch_one(&mut *tx)
                .await
                .map_err(db(OP))?;
                let existing = column_type_from_db(code, table_id.0, name)?;
                if existing != column_type {
                    return Err(CatalogError::ColumnTypeConflict {
                        table: schema.name.clone(),
                        column: name.to_owned(),
                        existing,
                        requested: column_type,
                    });
                }
            }
            let schema = load_table(&mut *tx, OP, table_id).await?;
            tx.commit().await.map_err(db(OP))?;
            Ok(schema)
        })
        .await
    }

    async fn get_or_create_partition(
        &self,
        table_id: TableId,
        key: &str,
    ) -> Result<Partition, CatalogError> {
        const OP: &str = "get_or_create_partition";
        with_timeout(OP, self.timeout, async {
            let select = || {
                query_as::<_, (i64, String)>(
                    "SELECT id, sort_key FROM partitions WHERE table_id = $1 AND partition_key = $2",
                )
                .bind(table_id.0)
                .bind(key)
                .fetch_optional(&self.pool)
            };
            let mut row = select().await.map_err(db(OP))?;
            if row.is_none() {
                let inserted = query(
                    "INSERT INTO partitions (table_id, partition_key) VALUES ($1, $2) \
                     ON CONFLICT (table_id, partition_key) DO NOTHING",
                )
                .bind(table_id.0)
                .bind(key)
                .execute(&self.pool)
                .await;
                if let Err(e) = inserted {
                    return Err(match sql::violation(&e) {
                        Some(ErrorKind::ForeignKeyViolation) => {
                            CatalogError::TableNotFound { table_id }
                        }
                        _ => db(OP)(e),
                    });
                }
                row = select().await.map_err(db(OP))?;
            }
            let (id, sort_key) = row.ok_or_else(|| CatalogError::Corrupt {
                detail: format!("partition {key:?} vanished right after being created"),
            })?;
            Ok(Partition {
                id: PartitionId(id),
                table_id,
                key: key.to_owned(),
                sort_key: decode_sort_key(sort_key)?,
            })
        })
        .await
    }

    async fn list_partitions(&self, table_id: TableId) -> Result<Vec<Partition>, CatalogError> {
        const OP: &str = "list_partitions";
        with_timeout(OP, self.timeout, async {
            let rows: Vec<(i64, String, String)> = query_as(
                "SELECT id, partition_key, sort_key FROM partitions WHERE table_id = $1 ORDER BY id",
            )
            .bind(table_id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(db(OP))?;
            rows.into_iter()
                .map(|(id, key, sort_key)| {
                    Ok(Partition {
                        id: PartitionId(id),
                        table_id,
                        key,
                        sort_key: decode_sort_key(sort_key)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn cas_sort_key(
        &self,
        partition_id: PartitionId,
        old: &[String],
        new: &[String],
    ) -> Result<Result<Partition, Vec<String>>, CatalogError> {
        const OP: &str = "cas_sort_key";
        let new_text = encode_sort_key(new)?;
        with_timeout(OP, self.timeout, async {
            // Compare decoded keys (not text) under the write lock, so the outcome does
            // not depend on how the stored JSON happens to be spelled.
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(db(OP))?;
            let row: Option<(i64, String, String)> =
                query_as("SELECT table_id, partition_key, sort_key FROM partitions WHERE id = $1")
                    .bind(partition_id.0)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db(OP))?;
            let (table_id, key, current) =
                row.ok_or(CatalogError::PartitionNotFound { partition_id })?;
            let current = decode_sort_key(current)?;
            if current != old {
                return Ok(Err(current));
            }
            query("UPDATE partitions SET sort_key = $1 WHERE id = $2")
                .bind(&new_text)
                .bind(partition_id.0)
                .execute(&mut *tx)
                .await
                .map_err(db(OP))?;
            tx.commit().await.map_err(db(OP))?;
            Ok(Ok(Partition {
                id: partition_id,
                table_id: TableId(table_id),
                key,
                sort_key: new.to_vec(),
            }))
        })
        .await
    }

    async fn add_parquet_file(
        &self,
        params: ParquetFileParams,
    ) -> Result<ParquetFile, CatalogError> {
        const OP: &str = "add_parquet_file";
        check_file_params(&params)?;
        let sort_key = encode_sort_key(&params.sort_key)?;
        let created_at = now_unix_nanos();
        with_timeout(OP, self.timeout, async move {
            let inserted = query_scalar::<_, i64>(sql::INSERT_FILE)
                .bind(params.namespace_id.0)
                .bind(params.table_id.0)
                .bind(params.partition_id.0)
                .bind(&params.object_path)
                .bind(u64_to_db("file_size_bytes", params.file_size_bytes)?)
                .bind(u64_to_db("row_count", params.row_count)?)
                .bind(params.min_time)
                .bind(params.max_time)
                .bind(u64_to_db(
                    "min_sequence_number",
                    params.min_sequence_number,
                )?)
                .bind(u64_to_db(
                    "max_sequence_number",
                    params.max_sequence_number,
                )?)
                .bind(&sort_key)
                .bind(&params.ingester_id)
                .bind(u64_to_db("batch_number", params.batch_number)?)
                .bind(created_at)
                .fetch_one(&self.pool)
                .await;
            match inserted {
                Ok(id) => Ok(ParquetFile::from_params(
                    ParquetFileId(id),
                    params,
                    created_at,
                )),
                Err(e) => Err(sql::file_insert_error(params.object_path, e)),
            }
        })
        .await
    }

    async fn list_parquet_files(
        &self,
        table_id: TableId,
    ) -> Result<Vec<ParquetFile>, CatalogError> {
        const OP: &str = "list_parquet_files";
        with_timeout(OP, self.timeout, async {
            let rows: Vec<FileRow<String>> = query_as(sql::SELECT_FILES_BY_TABLE)
                .bind(table_id.0)
                .fetch_all(&self.pool)
                .await
                .map_err(db(OP))?;
            rows.into_iter()
                .map(|r| sql::file_from_row(r, decode_sort_key))
                .collect()
        })
        .await
    }

    async fn list_parquet_files_by_partition(
        &self,
        partition_id: PartitionId,
    ) -> Result<Vec<ParquetFile>, CatalogError> {
        const OP: &str = "list_parquet_files_by_partition";
        with_timeout(OP, self.timeout, async {
            let rows: Vec<FileRow<String>> = query_as(sql::SELECT_FILES_BY_PARTITION)
                .bind(partition_id.0)
                .fetch_all(&self.pool)
                .await
                .map_err(db(OP))?;
            rows.into_iter()
                .map(|r| sql::file_from_row(r, decode_sort_key))
                .collect()
        })
        .await
    }

    async fn health(&self) -> Result<(), CatalogError> {
        const OP: &str = "health";
        with_timeout(OP, self.timeout, async {
            query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(db(OP))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::connect;

    fn url(dir: &tempfile::TempDir) -> String {
        format!("sqlite:{}/nested/dir/catalog.sqlite", dir.path().display())
    }

    #[tokio::test]
    async fn creates_file_in_wal_mode_and_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = ConnectOptions::default();
        let first = SqliteCatalog::connect(&url(&dir), &options)
            .await
            .expect("open new file");
        assert!(dir.path().join("nested/dir/catalog.sqlite").is_file());
        let mode: String = query_scalar("PRAGMA journal_mode")
            .fetch_one(&first.pool)
            .await
            .expect("journal mode");
        assert_eq!(mode, "wal");
        let sync: i64 = query_scalar("PRAGMA synchronous")
            .fetch_one(&first.pool)
            .await
            .expect("synchronous");
        assert_eq!(sync, 2, "synchronous=FULL");
        let ns = first
            .get_or_create_namespace("db")
            .await
            .expect("namespace");
        first.pool.close().await;

        // Reopening re-runs the (already applied) migrations and finds the data.
        let second = SqliteCatalog::connect(&url(&dir), &options)
            .await
            .expect("reopen");
        assert_eq!(second.get_namespace("db").await.expect("read"), Some(ns));
        let applied: i64 = query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&second.pool)
            .await
            .expect("count migrations");
        assert_eq!(applied, migrate::SQLITE.len() as i64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_opens_of_a_new_file_all_migrate_safely() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = url(&dir);
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { connect(&url).await })
            })
            .collect();
        for open in opens {
            let catalog = open.await.expect("no panic").expect("every open succeeds");
            catalog.health().await.expect("healthy");
        }
    }

    #[tokio::test]
    async fn unreadable_stored_values_are_reported_not_panicked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog = SqliteCatalog::connect(&url(&dir), &ConnectOptions::default())
            .await
            .expect("open");
        let ns = catalog.get_or_create_namespace("ns").await.expect("ns");
        let t = catalog.get_or_create_table(ns, "t").await.expect("table");
        let p = catalog
            .get_or_create_partition(t.id, "k")
            .await
            .expect("partition");
        query("UPDATE partitions SET sort_key = 'not json' WHERE id = $1")
            .bind(p.id.0)
            .execute(&catalog.pool)
            .await
            .expect("corrupt it");
        for result in [
            catalog.get_or_create_partition(t.id, "k").await.map(drop),
            catalog.cas_sort_key(p.id, &[], &[]).await.map(drop),
        ] {
            assert!(
                matches!(result, Err(CatalogError::Corrupt { .. })),
                "{result:?}"
            );
        }
    }

    #[tokio::test]
    async fn unopenable_path_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").expect("write");
        // The "directory" that should hold the database is a regular file.
        let url = format!("sqlite:{}/catalog.sqlite", blocker.display());
        let err = connect(&url)
            .await
            .expect_err("cannot create a dir under a file");
        assert!(matches!(err, CatalogError::CreateDir { .. }), "{err:?}");
    }
}
