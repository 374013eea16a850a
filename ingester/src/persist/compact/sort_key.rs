//! Deriving a partition's sort key.
//!
//! The key is stored in the catalog and every file of the partition is
//! sorted by it, so it may only grow: existing columns keep their places
//! (files already written stay sorted by a prefix-compatible key), and new
//! tags go right before `time`. That is sound because a tag new to the key
//! is all null in every older file, which sorts the same under any position.
//! New tags are ordered by ascending cardinality: low-cardinality columns
//! first make long runs, which compress best and prune best.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{Array, AsArray, DictionaryArray, StringArray};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;

use super::{TIME_COLUMN, is_tag};

/// The sort key for `batches`: `existing` unchanged, then the batches' tag
/// columns missing from it by ascending number of distinct values (ties by
/// name), inserted before `time`; `time` is appended if missing.
///
/// Counting is proportional to the rows plus the dictionary sizes, with no
/// per-row allocation or hashing: used dictionary keys are marked in a
/// bitmap, and only the used values are hashed.
pub(crate) fn sort_key(batches: &[RecordBatch], existing: &[String]) -> Vec<String> {
    // Tag name -> distinct values seen so far.
    let mut new_tags: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    let mut used: Vec<bool> = Vec::new();
    for batch in batches {
        let schema = batch.schema_ref();
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let name = field.name().as_str();
            if name == TIME_COLUMN
                || !is_tag(field.data_type())
                || existing.iter().any(|c| c == name)
            {
                continue;
            }
            let distinct = new_tags.entry(name).or_default();
            if let Some(dict) = column.as_dictionary_opt::<Int32Type>()
                && let Some(values) = dict.values().as_string_opt::<i32>()
            {
                count_used(dict, values, &mut used, distinct);
                continue;
            }
            // Another dictionary encoding: not produced by Sluice; order it
            // as if it had one value rather than fail the persist.
            distinct.insert("");
        }
    }

    let mut added: Vec<(&str, usize)> = new_tags.iter().map(|(n, d)| (*n, d.len())).collect();
    // Stable sort: equal cardinalities stay in name order (BTreeMap order).
    added.sort_by_key(|(_, cardinality)| *cardinality);

    let mut key: Vec<String> = Vec::with_capacity(existing.len() + added.len() + 1);
    let time_at = existing.iter().position(|c| c == TIME_COLUMN);
    let insert_at = time_at.unwrap_or(existing.len());
    key.extend(existing[..insert_at].iter().cloned());
    key.extend(added.iter().map(|(n, _)| (*n).to_string()));
    key.extend(existing[insert_at..].iter().cloned());
    if time_at.is_none() {
        key.push(TIME_COLUMN.to_string());
    }
    key
}

/// Adds the values of `dict` that some row refers to.
fn count_used<'a>(
    dict: &DictionaryArray<Int32Type>,
    values: &'a StringArray,
    used: &mut Vec<bool>,
    distinct: &mut HashSet<&'a str>,
) {
    used.clear();
    used.resize(values.len(), false);
    let keys = dict.keys();
    match keys.nulls() {
        None => {
            for &k in keys.values() {
                if let Some(u) = usize::try_from(k).ok().and_then(|k| used.get_mut(k)) {
                    *u = true;
                }
            }
        }
        Some(nulls) => {
            for (i, &k) in keys.values().iter().enumerate() {
                if nulls.is_valid(i)
                    && let Some(u) = usize::try_from(k).ok().and_then(|k| used.get_mut(k))
                {
                    *u = true;
                }
            }
        }
    }
    for (i, &u) in used.iter().enumerate() {
        if u && values.is_valid(i) {
            distinct.insert(values.value(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::persist::compact::test_util::tag_type;

    fn tag(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(
            values
                .iter()
                .copied()
                .collect::<DictionaryArray<Int32Type>>(),
        )
    }

    fn batch(tags: &[(&str, &[Option<&str>])]) -> RecordBatch {
        let n = tags.first().map(|(_, v)| v.len()).unwrap_or(1);
        let mut fields = vec![
            Field::new("f", DataType::Float64, true),
            Field::new(
                TIME_COLUMN,
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
        ];
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![1.0; n])),
            Arc::new(TimestampNanosecondArray::from(vec![0; n]).with_timezone("UTC")),
        ];
        for (name, values) in tags {
            fields.push(Field::new(*name, tag_type(), true));
            cols.push(tag(values));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("batch")
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn orders_new_tags_by_cardinality_then_time() {
        let b = batch(&[
            ("host", &[Some("a"), Some("b"), Some("c"), Some("a")]),
            ("region", &[Some("x"), Some("x"), Some("y"), Some("x")]),
            ("dc", &[Some("1"), Some("1"), Some("1"), None]),
        ]);
        assert_eq!(sort_key(&[b], &[]), strs(&["dc", "region", "host", "time"]));
    }

    #[test]
    fn counts_distinct_values_across_batches_not_dictionary_entries() {
        // "b" has two distinct values over both batches; "a" has three.
        // Unused dictionary entries must not count.
        let b1 = batch(&[
            ("a", &[Some("1"), Some("2")]),
            ("b", &[Some("x"), Some("x")]),
        ]);
        let unused = DictionaryArray::<Int32Type>::try_new(
            vec![0, 0].into(),
            Arc::new(StringArray::from(vec!["y", "p", "q", "r"])),
        )
        .expect("dict");
        let b2 = batch(&[
            ("a", &[Some("3"), Some("1")]),
            ("b", &[Some("y"), Some("y")]),
        ]);
        let b2 = RecordBatch::try_new(
            b2.schema(),
            vec![
                Arc::clone(b2.column(0)),
                Arc::clone(b2.column(1)),
                Arc::clone(b2.column(2)),
                Arc::new(unused),
            ],
        )
        .expect("batch");
        assert_eq!(sort_key(&[b1, b2], &[]), strs(&["b", "a", "time"]));
    }

    #[test]
    fn ties_break_by_name() {
        let b = batch(&[("z", &[Some("1")]), ("m", &[Some("1")])]);
        assert_eq!(sort_key(&[b], &[]), strs(&["m", "z", "time"]));
    }

    #[test]
    fn keeps_existing_key_and_inserts_new_tags_before_time() {
        let b = batch(&[
            ("host", &[Some("a"), Some("b")]),
            ("region", &[Some("x"), Some("x")]),
        ]);
        // "old" is not in the batches: never dropped.
        let existing = strs(&["host", "old", "time"]);
        assert_eq!(
            sort_key(std::slice::from_ref(&b), &existing),
            strs(&["host", "old", "region", "time"])
        );
        // Unchanged when nothing is new.
        let full = strs(&["region", "host", "time"]);
        assert_eq!(sort_key(std::slice::from_ref(&b), &full), full);
        // An existing key without time gets it appended.
        assert_eq!(
            sort_key(std::slice::from_ref(&b), &strs(&["host"])),
            strs(&["host", "region", "time"])
        );
    }

    #[test]
    fn fields_and_empty_inputs() {
        assert_eq!(sort_key(&[], &[]), strs(&["time"]));
        let b = batch(&[]);
        assert_eq!(sort_key(&[b], &[]), strs(&["time"]));
    }

    #[test]
    fn all_null_tag_is_included_first() {
        let b = batch(&[("host", &[Some("a"), Some("b")]), ("empty", &[None, None])]);
        assert_eq!(sort_key(&[b], &[]), strs(&["empty", "host", "time"]));
    }
}
