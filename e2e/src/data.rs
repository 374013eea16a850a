//! Deterministic test data: line protocol whose every value can be
//! recomputed from (writer, row), so tests check each value read back.

use std::fmt::Write;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;

/// Base timestamp of generated rows (2026-01-01T00:00:00Z).
pub const BASE_TIME: i64 = 1_767_225_600_000_000_000;

/// The expected values of one generated row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub host: String,
    pub region: String,
    pub time: i64,
    pub usage: f64,
    pub count: i64,
    pub ok: bool,
}

/// Row `i` of writer `w` (unique `time` per (w, i)).
pub fn row(w: u32, i: u64) -> Row {
    Row {
        host: format!("host-{}", (i % 97) + 100 * u64::from(w)),
        region: ["us-east", "eu-west", "ap south"][(i % 3) as usize].to_string(),
        time: BASE_TIME + (i as i64) * 1_000 + i64::from(w),
        usage: (i as f64) * 0.5 + f64::from(w),
        count: (i as i64) * 3 - 7,
        ok: i.is_multiple_of(2),
    }
}

/// Line protocol for rows `range` of writer `w` in table `table`.
pub fn lines(table: &str, w: u32, range: std::ops::Range<u64>) -> String {
    let mut s = String::with_capacity((range.end - range.start) as usize * 96);
    for i in range {
        let r = row(w, i);
        let _ = writeln!(
            s,
            "{table},host={},region={} usage={:?},count={}i,ok={} {}",
            r.host,
            r.region.replace(' ', "\\ "),
            r.usage,
            r.count,
            r.ok,
            r.time
        );
    }
    s
}

/// The `(writer, row)` a generated row's `time` encodes (see [`row`]; valid
/// for writers below 1000).
pub fn key_of_time(time: i64) -> (u32, u64) {
    let d = time - BASE_TIME;
    ((d % 1_000) as u32, (d / 1_000) as u64)
}

/// A column of `batch` by name, or a panic naming it.
pub fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column `{name}` in {:?}", batch.schema()))
}

/// A tag (or any string-like) column as owned strings.
pub fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = column(batch, name);
    let utf8 = cast(col, &DataType::Utf8)
        .unwrap_or_else(|e| panic!("column `{name}` ({}) as Utf8: {e}", col.data_type()));
    let a = utf8.as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect()
}

/// The `time` column's nanoseconds, checking its type is
/// `Timestamp(Nanosecond, "UTC")`.
pub fn times(batch: &RecordBatch) -> &[i64] {
    let col = column(batch, "time");
    assert_eq!(
        col.data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        "type of `time`"
    );
    col.as_primitive::<TimestampNanosecondType>().values()
}

/// Decodes batches of the generator's table into rows, checking every
/// column's Arrow type on the way. Columns missing from a projection are
/// left at their defaults.
pub fn decode_rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for b in batches {
        let schema = b.schema();
        for f in schema.fields() {
            let expect = match f.name().as_str() {
                "host" | "region" => {
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
                }
                "time" => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                "usage" => DataType::Float64,
                "count" => DataType::Int64,
                "ok" => DataType::Boolean,
                other => panic!("unexpected column `{other}`"),
            };
            assert_eq!(f.data_type(), &expect, "type of column `{}`", f.name());
        }
        let n = b.num_rows();
        let host = b.column_by_name("host").map(|_| strings(b, "host"));
        let region = b.column_by_name("region").map(|_| strings(b, "region"));
        let time = times(b);
        let usage = b
            .column_by_name("usage")
            .map(|c| c.as_primitive::<Float64Type>().clone());
        let count = b
            .column_by_name("count")
            .map(|c| c.as_primitive::<Int64Type>().clone());
        let ok = b.column_by_name("ok").map(|c| c.as_boolean().clone());
        for i in 0..n {
            out.push(Row {
                host: host
                    .as_ref()
                    .map(|h| h[i].clone().expect("host is never null"))
                    .unwrap_or_default(),
                region: region
                    .as_ref()
                    .map(|h| h[i].clone().expect("region is never null"))
                    .unwrap_or_default(),
                time: time[i],
                usage: usage.as_ref().map(|a| a.value(i)).unwrap_or_default(),
                count: count.as_ref().map(|a| a.value(i)).unwrap_or_default(),
                ok: ok.as_ref().map(|a| a.value(i)).unwrap_or_default(),
            });
            if let Some(a) = &usage {
                assert!(a.is_valid(i), "usage is never null");
            }
            if let Some(a) = &count {
                assert!(a.is_valid(i), "count is never null");
            }
            if let Some(a) = &ok {
                assert!(a.is_valid(i), "ok is never null");
            }
        }
    }
    out
}
