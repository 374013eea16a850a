//! Rows → partitions: one partition per table per UTC day of `time`.

use std::cell::RefCell;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, TimestampNanosecondArray};
use arrow::compute::filter_record_batch;

use super::WriteError;
use crate::schema::TIME_COLUMN;

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// The partition key (`YYYY-MM-DD`, UTC) of a timestamp in nanoseconds.
#[cfg(test)]
pub(crate) fn partition_key(time_ns: i64) -> String {
    format_day(time_ns.div_euclid(NANOS_PER_DAY))
}

thread_local! {
    /// The last day this thread named, and its key.
    static LAST_DAY: RefCell<Option<(i64, Arc<str>)>> = const { RefCell::new(None) };
}

/// The partition key of `day` (days since the epoch). Writes mostly fall
/// on the day of the write before, so each thread keeps the last key:
/// formatting a date was ~1 µs and two allocations per one-line write.
fn key_of_day(day: i64) -> Arc<str> {
    LAST_DAY.with_borrow_mut(|last| match last {
        Some((d, key)) if *d == day => Arc::clone(key),
        _ => {
            let key: Arc<str> = format_day(day).into();
            *last = Some((day, Arc::clone(&key)));
            key
        }
    })
}

fn format_day(day: i64) -> String {
    match chrono::DateTime::from_timestamp(day * 86_400, 0) {
        Some(d) => d.format("%Y-%m-%d").to_string(),
        // Unreachable for i64 nanoseconds (years 1677–2262), but never panic.
        None => format!("day{day}"),
    }
}

/// Splits `batch` by UTC day. Most writes cover one day and are returned
/// whole, without copying.
pub(crate) fn split_by_day(batch: RecordBatch) -> Result<Vec<(Arc<str>, RecordBatch)>, WriteError> {
    let times = batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| WriteError::Internal("batch without a nanosecond `time` column".into()))?;
    let values = times.values();
    let Some(&first) = values.first() else {
        return Ok(Vec::new());
    };
    let first_day = first.div_euclid(NANOS_PER_DAY);
    if values
        .iter()
        .all(|t| t.div_euclid(NANOS_PER_DAY) == first_day)
    {
        return Ok(vec![(key_of_day(first_day), batch)]);
    }
    let mut days: Vec<i64> = values.iter().map(|t| t.div_euclid(NANOS_PER_DAY)).collect();
    days.sort_unstable();
    days.dedup();
    let mut out = Vec::with_capacity(days.len());
    for day in days {
        let mask: BooleanArray = values
            .iter()
            .map(|t| Some(t.div_euclid(NANOS_PER_DAY) == day))
            .collect();
        let part = filter_record_batch(&batch, &mask)
            .map_err(|e| WriteError::Internal(format!("splitting by day: {e}")))?;
        out.push((key_of_day(day), part));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    #[test]
    fn the_remembered_key_is_the_days_own() {
        // Alternating days must not hand one day's key to the other.
        for (day, want) in [
            (0, "1970-01-01"),
            (1, "1970-01-02"),
            (1, "1970-01-02"),
            (0, "1970-01-01"),
            (-1, "1969-12-31"),
        ] {
            assert_eq!(key_of_day(day).as_ref(), want);
        }
    }
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn keys() {
        assert_eq!(partition_key(0), "1970-01-01");
        assert_eq!(partition_key(-1), "1969-12-31");
        assert_eq!(partition_key(NANOS_PER_DAY), "1970-01-02");
        assert_eq!(partition_key(i64::MAX), "2262-04-11");
        assert_eq!(partition_key(i64::MIN), "1677-09-21");
    }

    #[test]
    fn splits_rows_by_day_keeping_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("time", crate::schema::time_data_type(), false),
        ]));
        let t =
            TimestampNanosecondArray::from(vec![0, NANOS_PER_DAY + 5, 7, -3]).with_timezone("UTC");
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![1, 2, 3, 4])), Arc::new(t)],
        )
        .unwrap();
        let parts = split_by_day(batch).unwrap();
        let keys: Vec<_> = parts.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["1969-12-31", "1970-01-01", "1970-01-02"]);
        let v = |i: usize| {
            parts[i]
                .1
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        assert_eq!(v(0), [4]);
        assert_eq!(v(1), [1, 3]);
        assert_eq!(v(2), [2]);
    }
}
