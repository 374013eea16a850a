//! PostgreSQL catalog: shared by every ingester pod of a cluster.
//!
//! Concurrency comes from other *processes*, so every guarantee rests on the database:
//! - `get_or_create_*`: read, else `INSERT … ON CONFLICT DO NOTHING`, else read again.
//!   Under READ COMMITTED the insert waits for a concurrent inserter of the same key
//!   and, if it committed, does nothing; the next statement's snapshot then sees it.
//! - `add_columns`: one READ COMMITTED transaction (set explicitly: a server default
//!   of REPEATABLE READ would hide the winner from the re-read) that first locks the
//!   table's row `FOR NO KEY UPDATE` — serialising schema changes of one table across
//!   pods without blocking inserts that reference the table — then reads the columns,
//!   checks the request, and inserts the missing ones in name order. Inserts still use
//!   `ON CONFLICT (table_id, name) DO NOTHING` plus a re-read, so even a writer that
//!   skipped the lock could not get a second type recorded.
//! - `cas_sort_key`: a single `UPDATE … WHERE sort_key = $old` (arrays compare exactly).
//!
//! Migrations run on a dedicated connection (not the pool) under sqlx's
//! `pg_advisory_lock`, keyed by the database name: if migration fails, closing that
//! connection releases the lock, so other pods are never left waiting on a pooled
//! session that still holds it.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgExecutor, query, query_as, query_scalar};

use super::sql::{self, FileRow, TableRow, db, sql_catalog_impl};
use super::types::now_unix_nanos;
use super::{
    Catalog, CatalogError, ColumnType, ConnectOptions, NamespaceId, ParquetFile, ParquetFileId,
    ParquetFileParams, Partition, PartitionId, TableId, TableSchema, check_file_params,
    column_type_from_db, migrate, plan_new_columns, u64_to_db, with_timeout,
};

/// Default pool size per pod. N pods open up to N times this many connections.
const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// A [`Catalog`] in a PostgreSQL database (schema chosen by the URL's `search_path`).
#[derive(Debug)]
pub(super) struct PostgresCatalog {
    pool: PgPool,
    timeout: Duration,
}

impl PostgresCatalog {
    /// Connects to `url` and migrates the schema (safe with many pods at once).
    pub(super) async fn connect(url: &str, options: &ConnectOptions) -> Result<Self, CatalogError> {
        let mut connect_options =
            PgConnectOptions::from_str(url).map_err(|e| CatalogError::InvalidUrl {
                reason: format!("bad postgres URL: {e}"),
            })?;
        if connect_options.get_application_name().is_none() {
            connect_options = connect_options.application_name("sluice-ingester");
        }
        with_timeout("migrate", options.migration_timeout, async {
            let mut conn = PgConnection::connect_with(&connect_options)
                .await
                .map_err(db("connect"))?;
            let migrator = migrate::migrator(migrate::POSTGRES).await?;
            // `run_direct` rather than `run`: `run`'s `Acquire` bound makes the future
            // non-`Send` (sqlx's own workaround; see `Migrator::run_direct`).
            migrator
                .run_direct(&mut conn)
                .await
                .map_err(|source| CatalogError::Migration { source })?;
            conn.close().await.map_err(db("migrate"))
        })
        .await?;
        let pool = PgPoolOptions::new()
            .max_connections(
                options
                    .max_connections
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                    .max(1),
            )
            .min_connections(1)
            .acquire_timeout(options.operation_timeout)
            .connect_with(connect_options)
            .await
            .map_err(db("connect"))?;
        tracing::info!("postgres catalog ready");
        Ok(Self {
            pool,
            timeout: options.operation_timeout,
        })
    }
}

/// A sort key is a `TEXT[]` column.
type SortKeyDb = Vec<String>;

fn encode_sort_key(key: &[String]) -> Result<SortKeyDb, CatalogError> {
    Ok(key.to_vec())
}

fn decode_sort_key(key: SortKeyDb) -> Result<Vec<String>, CatalogError> {
    Ok(key)
}

sql_catalog_impl! {
    catalog: PostgresCatalog,
    executor: PgExecutor,
    connection: PgConnection,

    async fn add_columns(
        &self,
        table_id: TableId,
        columns: &[(String, ColumnType)],
    ) -> Result<TableSchema, CatalogError> {
        const OP: &str = "add_columns";
        with_timeout(OP, self.timeout, async {
            // Fast path without locks: columns never change type or go away, so "all
            // present" and "conflict" are final answers.
            let schema = load_table(&self.pool, OP, table_id).await?;
            if plan_new_columns(&schema, columns)?.is_empty() {
                return Ok(schema);
            }
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                .await
                .map_err(db(OP))?;
            let locked: Option<i64> =
                query_scalar("SELECT id FROM tables WHERE id = $1 FOR NO KEY UPDATE")
                    .bind(table_id.0)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db(OP))?;
            if locked.is_none() {
                return Err(CatalogError::TableNotFound { table_id });
            }
            // After the lock: this statement's snapshot includes every column
            // committed by earlier holders.
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
        with_timeout(OP, self.timeout, async {
            let updated: Option<(i64, String)> = query_as(
                "UPDATE partitions SET sort_key = $3 WHERE id = $1 AND sort_key = $2 \
                 RETURNING table_id, partition_key",
            )
            .bind(partition_id.0)
            .bind(old)
            .bind(new)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(OP))?;
            if let Some((table_id, key)) = updated {
                return Ok(Ok(Partition {
                    id: partition_id,
                    table_id: TableId(table_id),
                    key,
                    sort_key: new.to_vec(),
                }));
            }
            let current: Option<Vec<String>> =
                query_scalar("SELECT sort_key FROM partitions WHERE id = $1")
                    .bind(partition_id.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db(OP))?;
            match current {
                Some(current) => Ok(Err(current)),
                None => Err(CatalogError::PartitionNotFound { partition_id }),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_suite::PgScratch;

    #[tokio::test]
    async fn unreachable_server_is_retryable_and_bounded() {
        let options = ConnectOptions {
            migration_timeout: Duration::from_secs(5),
            ..ConnectOptions::default()
        };
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let started = std::time::Instant::now();
        let err = PostgresCatalog::connect("postgres://sluice:secret@127.0.0.1:1/sluice", &options)
            .await
            .expect_err("nothing listens on port 1");
        assert!(err.is_retryable(), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn bad_url_is_invalid_not_retryable() {
        let err =
            PostgresCatalog::connect("postgres://host:notaport/db", &ConnectOptions::default())
                .await
                .expect_err("bad port");
        assert!(matches!(err, CatalogError::InvalidUrl { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }

    /// Many pods starting at once against a fresh schema: one migrates, the others
    /// wait on the advisory lock and find the work done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_starts_migrate_once() {
        let Some(pg) = PgScratch::new().await else {
            return;
        };
        let starts: Vec<_> = (0..8)
            .map(|_| {
                let url = pg.url.clone();
                tokio::spawn(async move { crate::catalog::connect(&url).await })
            })
            .collect();
        for start in starts {
            let catalog = start
                .await
                .expect("no panic")
                .expect("every start succeeds");
            catalog.health().await.expect("healthy");
        }
        assert_eq!(
            pg.count("_sqlx_migrations").await,
            migrate::POSTGRES.len() as i64
        );
        assert_eq!(pg.count("namespaces").await, 0);
        pg.drop_schema().await;
    }
}
