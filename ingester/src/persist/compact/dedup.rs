//! Streaming deduplication of sorted batches.
//!
//! Input: batches sorted by the dedup key (tags, `time`), so the rows of
//! one key are adjacent; within a key, oldest first, or (narrow packed
//! key) in any order with an arrival column beside them. Each group
//! collapses to one row: key columns from any row (they are equal), each
//! field from the latest-arriving row in which it is non-null.
//!
//! A group may continue into the next batch, so the last group of every
//! batch is held back (as a zero-copy slice) until a row with another key
//! arrives or the input ends. Without duplicates, fields pass through with
//! no copy; otherwise one `take` per column builds the output.
//!
//! Finding duplicates: with a packed key, adjacent keys are compared as
//! byte slices (arrival number excluded). With separate columns, `time` of
//! adjacent rows is compared first (a tight loop over `i64`s) and tags only
//! where times are equal, which is rare except for true duplicates.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DynComparator, UInt32Array, make_comparator};
use arrow::compute::{SortOptions, concat_batches, take};
use arrow::datatypes::{TimestampNanosecondType, UInt64Type};
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::layout::{Layout, Mode, Out};

/// Dedup state across the batches of one sorted stream.
pub(super) struct Dedup {
    layout: Arc<Layout>,
    /// The last key group seen, not yet emitted (sort schema).
    tail: Option<RecordBatch>,
    /// Scratch: rows equal in key to their predecessor.
    dups: Vec<u32>,
}

impl Dedup {
    pub(super) fn new(layout: Arc<Layout>) -> Self {
        Self {
            layout,
            tail: None,
            dups: Vec::new(),
        }
    }

    /// Consumes the next sorted batch; pushes finished output to `out`.
    pub(super) fn push(
        &mut self,
        batch: RecordBatch,
        out: &mut VecDeque<RecordBatch>,
    ) -> Result<(), ArrowError> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        if u32::try_from(n).is_err() {
            return Err(ArrowError::ComputeError(format!(
                "sorted batch of {n} rows"
            )));
        }
        let mut dups = std::mem::take(&mut self.dups);
        self.find_dups(&batch, &mut dups)?;

        let (rest, first_dup) = match self.tail.take() {
            Some(tail) if self.same_key(&tail, tail.num_rows() - 1, &batch, 0)? => {
                // Length of the batch's first group: row 0 plus the
                // consecutive duplicates 1, 2, ….
                let mut k = 1usize;
                let mut j = 0usize;
                while j < dups.len() && dups[j] as usize == k {
                    k += 1;
                    j += 1;
                }
                if k == n {
                    self.tail = Some(concat_batches(&self.layout.sort_schema, [&tail, &batch])?);
                    self.dups = dups;
                    return Ok(());
                }
                let group = concat_batches(&self.layout.sort_schema, [&tail, &batch.slice(0, k)])?;
                out.push_back(self.collapse_group(&group)?);
                for d in &mut dups[j..] {
                    *d -= k as u32;
                }
                (batch.slice(k, n - k), j)
            }
            Some(tail) => {
                out.push_back(self.collapse_group(&tail)?);
                (batch, 0)
            }
            None => (batch, 0),
        };
        let dups_rest = &dups[first_dup..];

        // Hold back the last group: it may continue in the next batch.
        let m = rest.num_rows();
        let mut last_start = m - 1;
        let mut body_dups = dups_rest.len();
        while body_dups > 0 && dups_rest[body_dups - 1] as usize == last_start {
            body_dups -= 1;
            last_start -= 1;
        }
        self.tail = Some(rest.slice(last_start, m - last_start));
        if last_start > 0 {
            out.push_back(self.collapse(&rest.slice(0, last_start), &dups_rest[..body_dups])?);
        }
        self.dups = dups;
        Ok(())
    }

    /// Emits the held-back group at the end of the input.
    pub(super) fn finish(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        match self.tail.take() {
            Some(tail) => self.collapse_group(&tail).map(Some),
            None => Ok(None),
        }
    }

    /// Fills `dups` with the rows `i >= 1` whose key equals row `i - 1`'s.
    fn find_dups(&self, batch: &RecordBatch, dups: &mut Vec<u32>) -> Result<(), ArrowError> {
        dups.clear();
        match &self.layout.mode {
            Mode::Packed { key, packed, .. } => {
                let keys = packed.keys(batch.column(*key).as_ref())?;
                for i in 1..keys.len() {
                    if packed.same(&keys, i - 1, &keys, i) {
                        dups.push(i as u32);
                    }
                }
            }
            Mode::Columns { time, tags, .. } => {
                let times = time_values(batch, *time)?;
                let mut cmps: Option<Vec<DynComparator>> = None;
                for i in 1..times.len() {
                    if times[i] != times[i - 1] {
                        continue;
                    }
                    let cmps = match &cmps {
                        Some(c) => c,
                        None => cmps.insert(tag_comparators(tags, batch, batch)?),
                    };
                    if cmps.iter().all(|c| c(i - 1, i) == Ordering::Equal) {
                        dups.push(i as u32);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether row `i` of `a` and row `j` of `b` have the same key.
    fn same_key(
        &self,
        a: &RecordBatch,
        i: usize,
        b: &RecordBatch,
        j: usize,
    ) -> Result<bool, ArrowError> {
        match &self.layout.mode {
            Mode::Packed { key, packed, .. } => {
                let ka = packed.keys(a.column(*key).as_ref())?;
                let kb = packed.keys(b.column(*key).as_ref())?;
                Ok(packed.same(&ka, i, &kb, j))
            }
            Mode::Columns { time, tags, .. } => {
                if time_values(a, *time)?[i] != time_values(b, *time)?[j] {
                    return Ok(false);
                }
                let cmps = tag_comparators(tags, a, b)?;
                Ok(cmps.iter().all(|c| c(i, j) == Ordering::Equal))
            }
        }
    }

    /// Collapses a batch whose rows all share one key.
    fn collapse_group(&self, group: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let dups: Vec<u32> = (1..group.num_rows() as u32).collect();
        self.collapse(group, &dups)
    }

    /// Collapses each run of equal keys in `batch` (`dups` as from
    /// [`Self::find_dups`]) and builds the output columns.
    fn collapse(&self, batch: &RecordBatch, dups: &[u32]) -> Result<RecordBatch, ArrowError> {
        let n = batch.num_rows();
        let (packed, arrival) = match &self.layout.mode {
            Mode::Packed {
                key,
                arrival,
                packed,
            } => (
                Some((packed.keys(batch.column(*key).as_ref())?, packed)),
                match arrival {
                    Some(a) => Some(
                        batch
                            .column(*a)
                            .as_primitive_opt::<UInt64Type>()
                            .map(|a| a.values().as_ref())
                            .ok_or_else(|| {
                                ArrowError::SchemaError("arrival is not UInt64".into())
                            })?,
                    ),
                    None => None,
                },
            ),
            Mode::Columns { .. } => (None, None),
        };
        // With duplicates: the latest row of every group, and the
        // multi-row groups as (output position, first row, last row).
        let mut keep: Vec<u32> = Vec::new();
        let mut groups: Vec<(usize, u32, u32)> = Vec::new();
        if !dups.is_empty() {
            keep.reserve(n - dups.len());
            let mut d = 0usize;
            let mut start = 0u32;
            for i in 0..n as u32 {
                if d < dups.len() && dups[d] == i + 1 {
                    d += 1;
                    continue;
                }
                if i > start {
                    groups.push((keep.len(), start, i));
                }
                keep.push(latest(arrival, start, i, |_| true));
                start = i + 1;
            }
        }
        let rows = (!dups.is_empty()).then_some(keep.as_slice());
        let keep_idx = rows.map(|k| UInt32Array::from(k.to_vec()));

        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.layout.outputs.len());
        for out in &self.layout.outputs {
            let col = match (*out, &packed, &keep_idx) {
                (Out::Tag(t), Some((keys, packed)), _) => packed.decode_tag(t, keys, rows)?,
                (Out::Time, Some((keys, packed)), _) => packed.decode_time(keys, rows),
                (Out::Tag(_) | Out::Time, None, _) => {
                    return Err(ArrowError::SchemaError(
                        "packed output without a packed key".into(),
                    ));
                }
                (Out::Column { pos, .. }, _, None) => Arc::clone(batch.column(pos)),
                (Out::Column { pos, merge }, _, Some(keep_idx)) => {
                    let col = batch.column(pos);
                    if merge && col.null_count() > 0 {
                        merge_field(col.as_ref(), keep_idx, &groups, arrival)?
                    } else {
                        take(col.as_ref(), keep_idx, None)?
                    }
                }
            };
            columns.push(col);
        }
        RecordBatch::try_new_with_options(
            Arc::clone(&self.layout.output_schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows.map_or(n, <[u32]>::len))),
        )
    }
}

/// The latest-arriving row of `first..=last` for which `ok` holds (the
/// last one when rows are in arrival order, i.e. `arrival` is `None`);
/// `last` if none does.
fn latest(arrival: Option<&[u64]>, first: u32, last: u32, ok: impl Fn(usize) -> bool) -> u32 {
    match arrival {
        None => (first..=last)
            .rev()
            .find(|&j| ok(j as usize))
            .unwrap_or(last),
        Some(a) => (first..=last)
            .filter(|&j| ok(j as usize))
            .max_by_key(|&j| a[j as usize])
            .unwrap_or(last),
    }
}

/// A field with nulls: where a group's latest row is null, the group takes
/// its latest non-null value instead.
fn merge_field(
    col: &dyn Array,
    keep: &UInt32Array,
    groups: &[(usize, u32, u32)],
    arrival: Option<&[u64]>,
) -> Result<ArrayRef, ArrowError> {
    let mut fixed: Option<Vec<u32>> = None;
    for &(pos, first, last) in groups {
        if col.is_valid(keep.value(pos) as usize) {
            continue;
        }
        let j = latest(arrival, first, last, |j| col.is_valid(j));
        if col.is_valid(j as usize) {
            fixed.get_or_insert_with(|| keep.values().to_vec())[pos] = j;
        }
    }
    match fixed {
        Some(idx) => take(col, &UInt32Array::from(idx), None),
        None => take(col, keep, None),
    }
}

fn tag_comparators(
    tags: &[usize],
    left: &RecordBatch,
    right: &RecordBatch,
) -> Result<Vec<DynComparator>, ArrowError> {
    // Only equality matters; with nulls first, null == null.
    let opts = SortOptions {
        descending: false,
        nulls_first: true,
    };
    tags.iter()
        .map(|&t| make_comparator(left.column(t).as_ref(), right.column(t).as_ref(), opts))
        .collect()
}

fn time_values(batch: &RecordBatch, time: usize) -> Result<&[i64], ArrowError> {
    batch
        .column(time)
        .as_primitive_opt::<TimestampNanosecondType>()
        .map(|a| a.values().as_ref())
        .ok_or_else(|| ArrowError::SchemaError("time is not a nanosecond timestamp".into()))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::DataType;

    use super::*;
    use crate::persist::compact::test_util::{Col, batch, rows, table_schema};

    /// Columns mode (tags as dictionaries): the packed mode is covered by
    /// the pipeline tests.
    fn layout() -> Arc<Layout> {
        let table = table_schema(&["t"], &[("f", DataType::Float64), ("g", DataType::Int64)]);
        let cols: Vec<String> = ["f", "g", "t", "time"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Arc::new(Layout::new(table, &cols, &[], None).expect("layout"))
    }

    /// A sorted batch in the sort schema: (tag, time, f, g), arrival = row.
    /// (tag, time, f, g)
    type Row<'a> = (Option<&'a str>, i64, Option<f64>, Option<i64>);

    fn sorted(rows_: &[Row<'_>], first_arrival: u64) -> RecordBatch {
        let l = layout();
        let b = batch(&[
            ("f", Col::F64(rows_.iter().map(|r| r.2).collect())),
            ("g", Col::I64(rows_.iter().map(|r| r.3).collect())),
            ("t", Col::Tag(rows_.iter().map(|r| r.0).collect())),
            ("time", Col::Time(rows_.iter().map(|r| r.1).collect())),
            (
                "__sluice_arrival",
                Col::U64(
                    (0..rows_.len() as u64)
                        .map(|i| Some(first_arrival + i))
                        .collect(),
                ),
            ),
        ]);
        RecordBatch::try_new(Arc::clone(&l.sort_schema), b.columns().to_vec()).expect("sort schema")
    }

    fn run(batches: Vec<RecordBatch>) -> Vec<String> {
        let mut d = Dedup::new(layout());
        let mut out = VecDeque::new();
        for b in batches {
            d.push(b, &mut out).expect("push");
        }
        out.extend(d.finish().expect("finish"));
        out.iter().flat_map(rows).collect()
    }

    #[test]
    fn no_duplicates_pass_through() {
        let b = sorted(
            &[
                (Some("a"), 1, Some(1.0), None),
                (Some("a"), 2, None, Some(2)),
            ],
            0,
        );
        assert_eq!(run(vec![b]), ["f=1 g=∅ t=a time=1", "f=∅ g=2 t=a time=2"]);
    }

    #[test]
    fn field_by_field_last_non_null_wins() {
        let b = sorted(
            &[
                (None, 1, Some(1.0), Some(1)),
                (None, 1, None, Some(2)),
                (None, 1, Some(3.0), None),
                (Some("a"), 1, Some(9.0), None),
            ],
            0,
        );
        assert_eq!(run(vec![b]), ["f=3 g=2 t=∅ time=1", "f=9 g=∅ t=a time=1"]);
    }

    #[test]
    fn groups_span_batches() {
        let b1 = sorted(
            &[
                (Some("a"), 1, Some(1.0), None),
                (Some("a"), 2, Some(2.0), Some(1)),
            ],
            0,
        );
        let b2 = sorted(&[(Some("a"), 2, None, Some(5))], 2);
        let b3 = sorted(
            &[
                (Some("a"), 2, Some(7.0), None),
                (Some("a"), 2, None, None),
                (Some("b"), 2, None, None),
            ],
            3,
        );
        assert_eq!(
            run(vec![b1, b2, b3]),
            [
                "f=1 g=∅ t=a time=1",
                "f=7 g=5 t=a time=2",
                "f=∅ g=∅ t=b time=2"
            ]
        );
    }

    #[test]
    fn tail_not_continued_is_emitted_alone() {
        let b1 = sorted(
            &[
                (Some("a"), 1, Some(1.0), None),
                (Some("a"), 1, Some(2.0), None),
            ],
            0,
        );
        let b2 = sorted(&[(Some("b"), 1, Some(3.0), None)], 2);
        assert_eq!(
            run(vec![b1, b2]),
            ["f=2 g=∅ t=a time=1", "f=3 g=∅ t=b time=1"]
        );
    }
}
