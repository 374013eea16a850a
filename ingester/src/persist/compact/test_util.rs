//! Builders and renderers shared by the compaction tests.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampNanosecondType, UInt64Type,
};

use super::{Executor, TIME_COLUMN};

pub(super) fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

pub(super) fn tag_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// A table schema (sorted by name, like Sluice's): tags, `time`, fields.
pub(super) fn table_schema(tags: &[&str], fields: &[(&str, DataType)]) -> SchemaRef {
    let mut all: Vec<Field> = tags
        .iter()
        .map(|t| Field::new(*t, tag_type(), true))
        .collect();
    all.extend(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)));
    all.push(Field::new(TIME_COLUMN, time_type(), false));
    all.sort_by(|a, b| a.name().cmp(b.name()));
    Arc::new(Schema::new(all))
}

/// A column of test data.
#[derive(Debug, Clone)]
pub(super) enum Col<'a> {
    Tag(Vec<Option<&'a str>>),
    Time(Vec<i64>),
    F64(Vec<Option<f64>>),
    I64(Vec<Option<i64>>),
    U64(Vec<Option<u64>>),
    Bool(Vec<Option<bool>>),
    Str(Vec<Option<&'a str>>),
}

impl Col<'_> {
    fn array(&self) -> (DataType, ArrayRef) {
        match self {
            Col::Tag(v) => (
                tag_type(),
                Arc::new(v.iter().copied().collect::<DictionaryArray<Int32Type>>()),
            ),
            Col::Time(v) => (
                time_type(),
                Arc::new(TimestampNanosecondArray::from(v.clone()).with_timezone("UTC")),
            ),
            Col::F64(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Col::I64(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
            Col::U64(v) => (DataType::UInt64, Arc::new(UInt64Array::from(v.clone()))),
            Col::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
            Col::Str(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
        }
    }
}

/// A batch with the given columns, in the given order.
pub(super) fn batch(cols: &[(&str, Col<'_>)]) -> RecordBatch {
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = cols
        .iter()
        .map(|(name, c)| {
            let (t, a) = c.array();
            (Field::new(*name, t, *name != TIME_COLUMN), a)
        })
        .unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("test batch")
}

/// One value rendered for comparisons: `∅` for null, floats without a
/// trailing `.0`, tags as their string, timestamps as nanoseconds.
pub(super) fn value(a: &dyn Array, i: usize) -> String {
    if a.is_null(i) {
        return "∅".into();
    }
    match a.data_type() {
        DataType::Dictionary(_, _) => {
            let d = a.as_dictionary::<Int32Type>();
            let k = d.keys().value(i) as usize;
            d.values().as_string::<i32>().value(k).to_string()
        }
        DataType::Timestamp(_, _) => a
            .as_primitive::<TimestampNanosecondType>()
            .value(i)
            .to_string(),
        DataType::Float64 => a.as_primitive::<Float64Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).to_string(),
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        other => format!("<{other}>"),
    }
}

/// Every row as `name=value name=value …` in column order.
pub(super) fn rows(b: &RecordBatch) -> Vec<String> {
    (0..b.num_rows())
        .map(|r| {
            b.schema_ref()
                .fields()
                .iter()
                .zip(b.columns())
                .map(|(f, c)| format!("{}={}", f.name(), value(c.as_ref(), r)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// An executor for tests, with its spill directory.
pub(super) fn executor(memory_limit: usize) -> (Executor, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = Executor::new(2, memory_limit, dir.path().join("spill")).expect("executor");
    (exec, dir)
}
