//! Tag values as integer ranks, for the packed sort key ([`super::key`]).
//!
//! Sorting dictionary-encoded tags compares their strings, row against
//! row, for every tag column: most of the sort's time on wide series keys.
//! When all the input is known up front ([`compact`](super::compact)), each
//! tag's distinct values are collected once (per dictionary entry, not per
//! row) and sorted; a row's tag is then its value's rank, whose order is
//! the string order. The output maps ranks back to a dictionary whose
//! values are that one sorted array, shared by every output batch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
#[cfg(test)]
use arrow::array::{DictionaryArray, Int32Array};
use arrow::datatypes::{DataType, Int32Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// The sorted distinct values of one tag column.
#[derive(Debug)]
pub(super) struct TagRanks {
    /// Sorted, unique, non-null.
    values: ArrayRef,
    rank: HashMap<Box<str>, i32>,
}

/// Whether ranking applies to a tag column of this type.
pub(super) fn rankable(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8)
}

impl TagRanks {
    /// Collects the dictionary values of column `name` in `batches`
    /// (batches without it contribute nothing). `None` if there are more
    /// distinct values than `i32` can rank, or a column is not
    /// `Dictionary(Int32, Utf8)` (then the tags are sorted as they are).
    pub(super) fn collect(batches: &[RecordBatch], name: &str) -> Option<Self> {
        let mut distinct: HashSet<&str> = HashSet::new();
        for b in batches {
            let Some(col) = b.column_by_name(name) else {
                continue;
            };
            let values = col
                .as_dictionary_opt::<Int32Type>()?
                .values()
                .as_string_opt::<i32>()?;
            distinct.extend(values.iter().flatten());
        }
        let mut sorted: Vec<&str> = distinct.into_iter().collect();
        sorted.sort_unstable();
        let rank = sorted
            .iter()
            .enumerate()
            .map(|(i, v)| Some((Box::<str>::from(*v), i32::try_from(i).ok()?)))
            .collect::<Option<HashMap<_, _>>>()?;
        Some(Self {
            values: Arc::new(StringArray::from(sorted)),
            rank,
        })
    }

    /// Number of distinct values.
    pub(super) fn len(&self) -> usize {
        self.rank.len()
    }

    /// The sorted distinct values (dictionary values for the output).
    pub(super) fn values(&self) -> ArrayRef {
        Arc::clone(&self.values)
    }

    /// ORs each row's code (rank + 1, or 0 for null) of `column` (a
    /// `Dictionary(Int32, Utf8)` with values among those collected),
    /// shifted left by `shift`, into `words`.
    ///
    /// Hashes once per dictionary entry; per row it is one lookup in a
    /// small table.
    pub(super) fn add_codes(
        &self,
        column: &dyn Array,
        shift: u32,
        words: &mut [u64],
    ) -> Result<(), ArrowError> {
        let dict = column.as_dictionary_opt::<Int32Type>().ok_or_else(|| {
            ArrowError::SchemaError(format!(
                "tag is {}, not Dictionary(Int32, Utf8)",
                column.data_type()
            ))
        })?;
        let values = dict
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError("tag dictionary values are not Utf8".into()))?;
        // Per dictionary entry: its code, shifted.
        let remap: Vec<u64> = values
            .iter()
            .map(|v| match v {
                Some(v) => self
                    .rank
                    .get(v)
                    .map(|&r| (r as u64 + 1) << shift)
                    .ok_or_else(|| {
                        ArrowError::ComputeError(format!("tag value {v:?} was not collected"))
                    }),
                None => Ok(0),
            })
            .collect::<Result<_, _>>()?;
        let keys = dict.keys();
        // Keys under null slots may be anything: out of range counts as null.
        let code = |k: i32| {
            usize::try_from(k)
                .ok()
                .and_then(|k| remap.get(k))
                .copied()
                .unwrap_or(0)
        };
        match keys.nulls().filter(|n| n.null_count() > 0) {
            None => {
                for (w, &k) in words.iter_mut().zip(keys.values()) {
                    *w |= code(k);
                }
            }
            Some(nulls) => {
                for ((w, &k), valid) in words.iter_mut().zip(keys.values()).zip(nulls.iter()) {
                    if valid {
                        *w |= code(k);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::compact::test_util::{Col, batch};

    fn codes(r: &TagRanks, b: &RecordBatch) -> Vec<u64> {
        let mut w = vec![0u64; b.num_rows()];
        r.add_codes(b.column(0).as_ref(), 4, &mut w).expect("codes");
        w
    }

    #[test]
    fn codes_follow_string_order() {
        let b1 = batch(&[("t", Col::Tag(vec![Some("m"), None, Some("b"), Some("m")]))]);
        let b2 = batch(&[("t", Col::Tag(vec![Some("z"), Some("a")]))]);
        let none = batch(&[("x", Col::Tag(vec![Some("q")]))]);
        let batches = [b1.clone(), b2, none];
        let r = TagRanks::collect(&batches, "t").expect("rankable");
        assert_eq!(r.len(), 4);
        // a=1 b=2 m=3 z=4 (0 is null), shifted by 4.
        assert_eq!(codes(&r, &b1), [3 << 4, 0, 2 << 4, 3 << 4]);
    }

    #[test]
    fn null_dictionary_values_code_as_null() {
        let dict = DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(vec![0, 1, 1]),
            Arc::new(StringArray::from(vec![None, Some("a")])),
        )
        .expect("dict");
        let b = RecordBatch::try_from_iter([("t", Arc::new(dict) as ArrayRef)]).expect("batch");
        let r = TagRanks::collect(std::slice::from_ref(&b), "t").expect("rankable");
        assert_eq!(codes(&r, &b), [0, 1 << 4, 1 << 4]);
    }

    #[test]
    fn values_not_collected_are_an_error() {
        let b = batch(&[("t", Col::Tag(vec![Some("a")]))]);
        let r = TagRanks::collect(std::slice::from_ref(&b), "t").expect("rankable");
        let other = batch(&[("t", Col::Tag(vec![Some("new")]))]);
        let mut w = [0u64];
        assert!(r.add_codes(other.column(0).as_ref(), 0, &mut w).is_err());
    }
}
