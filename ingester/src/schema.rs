//! The Arrow shape of Sluice data, shared by the write path, the buffer,
//! queries and persistence.
//!
//! InfluxDB conventions: the timestamp column is `time`
//! (`Timestamp(Nanosecond, "UTC")`), tags are `Dictionary(Int32, Utf8)`,
//! fields keep their line protocol types. Query results list columns sorted
//! by name so every partition and every batch of a table has one shape.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::catalog::{ColumnType, TableSchema};

/// The name of the timestamp column.
pub(crate) const TIME_COLUMN: &str = "time";

/// `Timestamp(Nanosecond, "UTC")`.
pub(crate) fn time_data_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Dictionary(Int32, Utf8)`.
pub(crate) fn tag_data_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The Arrow type of a catalog column type.
pub(crate) fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Tag => tag_data_type(),
        ColumnType::Time => time_data_type(),
        ColumnType::I64 => DataType::Int64,
        ColumnType::U64 => DataType::UInt64,
        ColumnType::F64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::String => DataType::Utf8,
    }
}

/// The Arrow field of a column. `time` is never null; everything else may be.
pub(crate) fn arrow_field(name: &str, t: ColumnType) -> Field {
    Field::new(name, arrow_type(t), t != ColumnType::Time)
}

/// The table's full Arrow schema, columns sorted by name.
pub(crate) fn table_arrow_schema(table: &TableSchema) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .columns()
        .iter()
        .map(|c| arrow_field(&c.name, c.column_type))
        .collect();
    if !fields.iter().any(|f| f.name() == TIME_COLUMN) {
        fields.push(arrow_field(TIME_COLUMN, ColumnType::Time));
    }
    fields.sort_by(|a, b| a.name().cmp(b.name()));
    Arc::new(Schema::new(fields))
}

/// `batch` reshaped to `schema`: columns taken by name, missing ones all
/// null. Fails only if a column has another type than the schema says,
/// which the catalog makes impossible.
pub(crate) fn align_batch(
    batch: &arrow::record_batch::RecordBatch,
    schema: &SchemaRef,
) -> Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => Ok(Arc::clone(c)),
            None => Ok(arrow::array::new_null_array(
                f.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    arrow::record_batch::RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// The union of the batches' columns, sorted by name.
pub(crate) fn union_schema<'a>(schemas: impl IntoIterator<Item = &'a SchemaRef>) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = Vec::new();
    for s in schemas {
        for f in s.fields() {
            if !fields.iter().any(|e| e.name() == f.name()) {
                fields.push(Arc::clone(f));
            }
        }
    }
    fields.sort_by(|a, b| a.name().cmp(b.name()));
    Arc::new(Schema::new(fields))
}
