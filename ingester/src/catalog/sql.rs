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
