//! SQL text and row decoding shared by the SQLite and PostgreSQL backends.
//!
//! Both schemas use the same table and column names, and sqlx's SQLite driver accepts
//! PostgreSQL-style `$N` placeholders, so one query text serves both wherever the
//! column types agree. Only the sort key differs (`TEXT[]` on PostgreSQL, JSON text on
//! SQLite), hence the generic `S` below.

use sqlx::error::ErrorKind;

use super::{
    CatalogError, ColumnId, ColumnSchema, NamespaceId, ParquetFile, ParquetFileId, PartitionId,
    TableId, TableSchema, column_type_from_db, u64_from_db,
};

/// Tables joined with their columns; append a `WHERE` and, for several tables,
/// `ORDER BY t.id` (which [`tables_from_rows`] relies on).
pub(super) const SELECT_TABLES: &str = "SELECT t.id, t.namespace_id, t.name, c.id, c.name, c.column_type \
     FROM tables t LEFT JOIN columns c ON c.table_id = t.id";

/// A row of [`SELECT_TABLES`]: table id, namespace id, table name, then the column
/// (all `NULL` for a table without columns).
pub(super) type TableRow = (i64, i64, String, Option<i64>, Option<String>, Option<i16>);

/// Groups rows of [`SELECT_TABLES`] (ordered by table id) into schemas.
pub(super) fn tables_from_rows(rows: Vec<TableRow>) -> Result<Vec<TableSchema>, CatalogError> {
    let mut tables: Vec<TableSchema> = Vec::new();
    let mut current: Option<(i64, i64, String, Vec<ColumnSchema>)> = None;
    for (table_id, namespace_id, table_name, col_id, col_name, col_type) in rows {
        if current.as_ref().is_none_or(|c| c.0 != table_id) {
            if let Some((id, ns, name, cols)) = current.take() {
                tables.push(TableSchema::new(TableId(id), NamespaceId(ns), name, cols));
            }
            current = Some((table_id, namespace_id, table_name, Vec::new()));
        }
        if let (Some(id), Some(name), Some(code)) = (col_id, col_name, col_type) {
            let column_type = column_type_from_db(code, table_id, &name)?;
            let cols = &mut current.as_mut().expect("set just above").3;
            cols.push(ColumnSchema {
                id: ColumnId(id),
                name,
                column_type,
            });
        }
    }
    if let Some((id, ns, name, cols)) = current {
        tables.push(TableSchema::new(TableId(id), NamespaceId(ns), name, cols));
    }
    Ok(tables)
}

/// Expands to the `parquet_files` column list, in [`FileRow`] order.
macro_rules! file_columns {
    () => {
        "id, namespace_id, table_id, partition_id, object_path, file_size_bytes, row_count, \
         min_time, max_time, min_sequence_number, max_sequence_number, sort_key, ingester_id, \
         batch_number, created_at"
    };
}

pub(super) const SELECT_FILES_BY_TABLE: &str = concat!(
    "SELECT ",
    file_columns!(),
    " FROM parquet_files WHERE table_id = $1 ORDER BY id"
);

pub(super) const SELECT_FILES_BY_PARTITION: &str = concat!(
    "SELECT ",
    file_columns!(),
    " FROM parquet_files WHERE partition_id = $1 ORDER BY id"
);

/// Per partition, the highest batch and sequence numbers of one ingester's files.
pub(super) const SELECT_INGESTER_PARTITIONS: &str = "SELECT partition_id, MAX(batch_number), \
     MAX(max_sequence_number) FROM parquet_files WHERE ingester_id = $1 \
     GROUP BY partition_id ORDER BY partition_id";

/// Binds, in order: namespace_id, table_id, partition_id, object_path, file_size_bytes,
/// row_count, min_time, max_time, min_sequence_number, max_sequence_number, sort_key,
/// ingester_id, batch_number, created_at.
pub(super) const INSERT_FILE: &str = "INSERT INTO parquet_files \
     (namespace_id, table_id, partition_id, object_path, file_size_bytes, row_count, \
      min_time, max_time, min_sequence_number, max_sequence_number, sort_key, ingester_id, \
      batch_number, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id";

/// A `parquet_files` row; `S` is the stored sort key.
pub(super) type FileRow<S> = (
    i64,
    i64,
    i64,
    i64,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    S,
    String,
    i64,
    i64,
);

/// Decodes a [`FileRow`].
pub(super) fn file_from_row<S>(
    row: FileRow<S>,
    decode_sort_key: impl Fn(S) -> Result<Vec<String>, CatalogError>,
) -> Result<ParquetFile, CatalogError> {
    let (
        id,
        namespace_id,
        table_id,
        partition_id,
        object_path,
        file_size_bytes,
        row_count,
        min_time,
        max_time,
        min_sequence_number,
        max_sequence_number,
        sort_key,
        ingester_id,
        batch_number,
        created_at,
    ) = row;
    Ok(ParquetFile {
        id: ParquetFileId(id),
        namespace_id: NamespaceId(namespace_id),
        table_id: TableId(table_id),
        partition_id: PartitionId(partition_id),
        object_path,
        file_size_bytes: u64_from_db("file_size_bytes", file_size_bytes)?,
        row_count: u64_from_db("row_count", row_count)?,
        min_time,
        max_time,
        min_sequence_number: u64_from_db("min_sequence_number", min_sequence_number)?,
        max_sequence_number: u64_from_db("max_sequence_number", max_sequence_number)?,
        sort_key: decode_sort_key(sort_key)?,
        ingester_id,
        batch_number: u64_from_db("batch_number", batch_number)?,
        created_at,
    })
}

/// Which constraint a failed insert violated, if any.
pub(super) fn violation(e: &sqlx::Error) -> Option<ErrorKind> {
    match e {
        sqlx::Error::Database(db) => match db.kind() {
            k @ (ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation) => Some(k),
            _ => None,
        },
        _ => None,
    }
}

/// Maps a failed `parquet_files` insert to the client error it stands for.
pub(super) fn file_insert_error(object_path: String, e: sqlx::Error) -> CatalogError {
    match violation(&e) {
        Some(ErrorKind::UniqueViolation) => CatalogError::ParquetFileExists { object_path },
        Some(ErrorKind::ForeignKeyViolation) => CatalogError::ParquetFileDangling { object_path },
        _ => CatalogError::from_sqlx("add_parquet_file", e),
    }
}

/// `map_err` adapter classifying driver errors raised during `operation`.
pub(super) fn db(operation: &'static str) -> impl Fn(sqlx::Error) -> CatalogError + Copy {
    move |e| CatalogError::from_sqlx(operation, e)
}

/// The [`Catalog`](super::Catalog) impl of a SQL backend: the methods whose SQL and
/// decoding are the same on SQLite and PostgreSQL, plus the backend's own (`$own`:
/// the read-modify-write ones, whose locking differs). The invoking module provides
/// `SortKeyDb` (how a sort key is stored), `encode_sort_key`, `decode_sort_key`, and
/// the imports the bodies name. A macro rather than generics over `sqlx::Database`:
/// sqlx's executor bounds make generic code far harder to read than this.
macro_rules! sql_catalog_impl {
    (catalog: $catalog:ty, executor: $executor:ident, connection: $conn:ty, $($own:tt)*) => {
/// Inserts the columns of `columns` that table `table_id` lacks, inside the
/// caller's transaction, which must already hold the table's lock (so the first
/// read is the latest state), and returns the schema afterwards. A column another
/// writer added meanwhile is accepted if its type matches, else the conflict is
/// returned (and dropping the transaction rolls back what was inserted).
async fn insert_new_columns(
    conn: &mut $conn,
    op: &'static str,
    table_id: TableId,
    columns: &[(String, ColumnType)],
) -> Result<TableSchema, CatalogError> {
    let schema = load_table(&mut *conn, op, table_id).await?;
    for (name, column_type) in plan_new_columns(&schema, columns)? {
        let inserted: Option<i64> = query_scalar(
            "INSERT INTO columns (table_id, name, column_type) VALUES ($1, $2, $3) \
             ON CONFLICT (table_id, name) DO NOTHING RETURNING id",
        )
        .bind(table_id.0)
        .bind(name)
        .bind(column_type.as_i16())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db(op))?;
        if inserted.is_some() {
            continue;
        }
        // The UNIQUE constraint kept another writer's column: re-read its type.
        let code: i16 =
            query_scalar("SELECT column_type FROM columns WHERE table_id = $1 AND name = $2")
                .bind(table_id.0)
                .bind(name)
                .fetch_one(&mut *conn)
                .await
                .map_err(db(op))?;
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
    load_table(&mut *conn, op, table_id).await
}

/// The table with id `table_id` and its columns.
async fn load_table<'e>(
    ex: impl $executor<'e>,
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

impl $catalog {
    /// Parquet files selected by `sql` with its one id parameter.
    async fn select_files(
        &self,
        op: &'static str,
        sql: &'static str,
        id: i64,
    ) -> Result<Vec<ParquetFile>, CatalogError> {
        with_timeout(op, self.timeout, async {
            let rows: Vec<FileRow<SortKeyDb>> = query_as(sql)
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(db(op))?;
            rows.into_iter()
                .map(|r| sql::file_from_row(r, decode_sort_key))
                .collect()
        })
        .await
    }
}

#[async_trait]
impl Catalog for $catalog {
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

    async fn get_or_create_partition(
        &self,
        table_id: TableId,
        key: &str,
    ) -> Result<Partition, CatalogError> {
        const OP: &str = "get_or_create_partition";
        with_timeout(OP, self.timeout, async {
            let select = || {
                query_as::<_, (i64, SortKeyDb)>(
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
            let rows: Vec<(i64, String, SortKeyDb)> = query_as(
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
        self.select_files("list_parquet_files", sql::SELECT_FILES_BY_TABLE, table_id.0)
            .await
    }

    async fn list_parquet_files_by_partition(
        &self,
        partition_id: PartitionId,
    ) -> Result<Vec<ParquetFile>, CatalogError> {
        self.select_files(
            "list_parquet_files_by_partition",
            sql::SELECT_FILES_BY_PARTITION,
            partition_id.0,
        )
        .await
    }

    async fn ingester_partitions(
        &self,
        ingester_id: &str,
    ) -> Result<Vec<super::IngesterPartition>, CatalogError> {
        const OP: &str = "ingester_partitions";
        with_timeout(OP, self.timeout, async {
            let rows: Vec<(i64, i64, i64)> = query_as(sql::SELECT_INGESTER_PARTITIONS)
                .bind(ingester_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db(OP))?;
            rows.into_iter()
                .map(|(p, batch, seq)| {
                    Ok(super::IngesterPartition {
                        partition_id: PartitionId(p),
                        max_batch_number: super::u64_from_db("batch_number", batch)?,
                        max_sequence_number: super::u64_from_db("max_sequence_number", seq)?,
                    })
                })
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

    $($own)*
}
    };
}
pub(super) use sql_catalog_impl;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_group_into_tables_including_empty_ones() {
        let rows: Vec<TableRow> = vec![
            (1, 7, "cpu".into(), Some(10), Some("usage".into()), Some(5)),
            (1, 7, "cpu".into(), Some(11), Some("host".into()), Some(1)),
            (2, 7, "mem".into(), None, None, None),
            (3, 7, "disk".into(), Some(12), Some("time".into()), Some(2)),
        ];
        let tables = tables_from_rows(rows).expect("valid rows");
        let summary: Vec<_> = tables
            .iter()
            .map(|t| (t.id.0, t.name.as_str(), t.len()))
            .collect();
        assert_eq!(summary, [(1, "cpu", 2), (2, "mem", 0), (3, "disk", 1)]);
        assert_eq!(tables[0].columns()[0].name, "host", "sorted by name");
    }

    #[test]
    fn unknown_type_code_is_reported_as_corrupt() {
        let rows: Vec<TableRow> = vec![(1, 7, "cpu".into(), Some(10), Some("x".into()), Some(99))];
        let err = tables_from_rows(rows).expect_err("99 is not a type");
        assert!(matches!(err, CatalogError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("\"x\""));
    }
}
