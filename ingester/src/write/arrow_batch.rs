//! Arrow IPC writes → one normalised batch.
//!
//! A columnar write is checked column by column against the same rules as
//! line protocol: a `time` column (Timestamp of any unit, or Int64
//! nanoseconds) without nulls, tags as Utf8 or dictionaries of Utf8, fields
//! of the five line protocol types. Tags are named in the request or carry
//! the field metadata `sluice.column_type = tag`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::ipc::reader::StreamReader;

use super::WriteError;
use super::builder::{BuiltTable, NewColumn};
use super::names;
use crate::catalog::{ColumnType, TableSchema};
use crate::schema::{TIME_COLUMN, arrow_field, tag_data_type, time_data_type};

/// Decodes and validates one Arrow IPC stream for `table`.
pub(crate) fn build_table(
    table: &str,
    ipc: &[u8],
    tags: &[String],
    cached: Option<Arc<TableSchema>>,
) -> Result<BuiltTable, WriteError> {
    let invalid = |reason: String| WriteError::InvalidArrow {
        table: table.to_string(),
        reason,
    };
    names::check_table(table).map_err(|reason| WriteError::InvalidName {
        line: None,
        table: table.to_string(),
        name: table.to_string(),
        reason,
    })?;
    let reader = StreamReader::try_new(ipc, None)
        .map_err(|e| invalid(format!("not an Arrow IPC stream: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("reading Arrow IPC stream: {e}")))?;
    let input = concat_batches(&schema, &batches).map_err(|e| invalid(e.to_string()))?;
    if input.num_rows() == 0 {
        return Err(WriteError::Empty);
    }

    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let mut new_columns = Vec::new();
    let mut time: Option<ArrayRef> = None;
    for (field, array) in schema.fields().iter().zip(input.columns()) {
        let name = field.name().as_str();
        if name == TIME_COLUMN {
            time = Some(to_time(array).map_err(invalid)?);
            continue;
        }
        let is_tag = tags.iter().any(|t| t == name)
            || field
                .metadata()
                .get("sluice.column_type")
                .map(String::as_str)
                == Some("tag");
        names::check_column(name).map_err(|reason| WriteError::InvalidName {
            line: None,
            table: table.to_string(),
            name: name.to_string(),
            reason,
        })?;
        let t = if is_tag {
            ColumnType::Tag
        } else {
            match field.data_type() {
                DataType::Int64 => ColumnType::I64,
                DataType::UInt64 => ColumnType::U64,
                DataType::Float64 => ColumnType::F64,
                DataType::Boolean => ColumnType::Bool,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::String,
                other => {
                    return Err(invalid(format!(
                        "column `{name}` has type {other}; fields must be Int64, UInt64, Float64, Boolean or Utf8"
                    )));
                }
            }
        };
        if is_tag
            && !matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
            && !matches!(field.data_type(), DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8))
        {
            return Err(invalid(format!(
                "tag column `{name}` has type {}; tags must be Utf8 or Dictionary(_, Utf8)",
                field.data_type()
            )));
        }
        match cached.as_ref().and_then(|s| s.column(name)) {
            Some(existing) if existing.column_type != t => {
                return Err(WriteError::ColumnTypeConflict {
                    line: None,
                    table: table.to_string(),
                    column: name.to_string(),
                    existing: existing.column_type,
                    requested: t,
                });
            }
            Some(_) => {}
            None => new_columns.push(NewColumn {
                name: name.to_string(),
                column_type: t,
                first_line: 0,
            }),
        }
        let target = if is_tag {
            tag_data_type()
        } else {
            crate::schema::arrow_type(t)
        };
        let array = if array.data_type() == &target {
            Arc::clone(array)
        } else {
            cast(array, &target).map_err(|e| invalid(format!("column `{name}`: {e}")))?
        };
        fields.push(arrow_field(name, t));
        arrays.push(array);
    }
    let time = time.ok_or_else(|| invalid("no `time` column".to_string()))?;
    fields.push(arrow_field(TIME_COLUMN, ColumnType::Time));
    arrays.push(time);
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(fields.into_iter().collect::<Vec<Field>>())),
        arrays,
    )
    .map_err(|e| invalid(e.to_string()))?;
    Ok(BuiltTable {
        name: table.to_string(),
        batch,
        new_columns,
        cached,
    })
}

fn to_time(array: &ArrayRef) -> Result<ArrayRef, String> {
    if array.null_count() > 0 {
        return Err("`time` has nulls".to_string());
    }
    let mult: i64 = match array.data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, _) | DataType::Int64 => 1,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        other => {
            return Err(format!(
                "`time` has type {other}; expected a Timestamp or Int64 of nanoseconds"
            ));
        }
    };
    let as_i64 = cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
    let values = as_i64
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .ok_or("`time` cast")?;
    let mut out = Vec::with_capacity(values.len());
    for v in values.values() {
        out.push(
            v.checked_mul(mult)
                .ok_or_else(|| format!("timestamp {v} is outside the representable range"))?,
        );
    }
    let arr = arrow::array::TimestampNanosecondArray::from(out).with_timezone("UTC");
    debug_assert_eq!(arr.data_type(), &time_data_type());
    Ok(Arc::new(arr))
}
