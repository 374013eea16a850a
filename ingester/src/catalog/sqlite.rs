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
use sqlx::{SqliteConnection, SqliteExecutor, query, query_as, query_scalar};

use super::sql::{self, FileRow, TableRow, db, sql_catalog_impl};
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

/// A sort key is JSON text (SQLite has no arrays).
type SortKeyDb = String;

fn encode_sort_key(key: &[String]) -> Result<SortKeyDb, CatalogError> {
    serde_json::to_string(key).map_err(|e| CatalogError::Corrupt {
        detail: format!("cannot encode sort key: {e}"),
    })
}

fn decode_sort_key(text: String) -> Result<Vec<String>, CatalogError> {
    serde_json::from_str(&text).map_err(|e| CatalogError::Corrupt {
        detail: format!("sort key {text:?} is not a JSON string array: {e}"),
    })
}

sql_catalog_impl! {
    catalog: SqliteCatalog,
    executor: SqliteExecutor,
    connection: SqliteConnection,

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
            let schema = insert_new_columns(&mut tx, OP, table_id, columns).await?;
            tx.commit().await.map_err(db(OP))?;
            Ok(schema)
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
