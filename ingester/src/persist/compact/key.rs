//! The packed sort key: tags, `time` and arrival in one byte string.
//!
//! When every tag's distinct values are known before the sort (all of
//! [`compact`](super::compact)'s input is), each row's whole sort key fits
//! a short fixed-width byte string whose byte order (`memcmp`) is the
//! wanted row order:
//!
//! ```text
//!  [ tag word(s), big-endian ][ time ^ sign bit, BE ][ tag words after time ][ arrival, BE ]
//!     each word: codes of consecutive sort-key tags, code = rank + 1 (0 = null)
//! ```
//!
//! A tag's rank is its value's position among the sorted distinct values
//! ([`TagRanks`]), so codes order like the strings, null first. Codes take
//! only the bits their cardinality needs, so typical keys (dozens of tags
//! of modest cardinality) fit one 64-bit word: the sort then compares one
//! `FixedSizeBinary` column (DataFusion's fast single-column path, with
//! coalesced runs) instead of a dozen dictionary columns by string value,
//! and the dedup compares byte slices. Tags and `time` are not carried
//! through the sort at all: the output decodes them from the key.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, FixedSizeBinaryArray, Int32Array, TimestampNanosecondArray};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{Int32Type, TimestampNanosecondType};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::TIME_COLUMN;
use super::ranks::TagRanks;

/// The width of a word, of the time and of the arrival number.
const WORD: usize = 8;

/// Flipping the sign bit makes two's-complement order unsigned order.
const SIGN: u64 = 1 << 63;

/// A sort-key element, in sort order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    Tag(String),
    Time,
}

#[derive(Debug)]
struct PackedTag {
    name: String,
    ranks: TagRanks,
    /// Byte offset of the tag's word in the key.
    word: usize,
    shift: u32,
    bits: u32,
}

/// How sort keys are laid out for one compaction.
#[derive(Debug)]
pub(super) struct PackedKey {
    tags: Vec<PackedTag>,
    /// Byte offsets of the words, each with its tags (indices into `tags`).
    words: Vec<(usize, Vec<usize>)>,
    time: usize,
    /// Bytes that identify a row's series and time (the dedup key).
    key_len: usize,
    /// `key_len` plus the arrival number.
    width: usize,
    /// `time`'s timezone, for decoding.
    timezone: Option<Arc<str>>,
}

impl PackedKey {
    /// Lays out `order` (each tag once, `time` once) with the tags' ranks.
    pub(super) fn new(
        order: &[Item],
        mut ranks: Vec<(String, TagRanks)>,
        timezone: Option<Arc<str>>,
    ) -> Result<Self, ArrowError> {
        let mut tags = Vec::new();
        let mut words: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut offset = 0usize;
        let mut time = None;
        // Bits used in the open word, if any.
        let mut open: Option<u32> = None;
        for item in order {
            match item {
                Item::Time => {
                    if open.take().is_some() {
                        offset += WORD;
                    }
                    time = Some(offset);
                    offset += WORD;
                }
                Item::Tag(name) => {
                    let p = ranks
                        .iter()
                        .position(|(n, _)| n == name)
                        .ok_or_else(|| ArrowError::SchemaError(format!("no ranks for tag {name:?}")))?;
                    let (name, r) = ranks.swap_remove(p);
                    // Codes 0..=len: 0 is null.
                    let bits = u64::BITS - (r.len() as u64).leading_zeros();
                    if bits == 0 {
                        // No values: always null, nothing to store.
                        tags.push(PackedTag {
                            name,
                            ranks: r,
                            word: 0,
                            shift: 0,
                            bits: 0,
                        });
                        continue;
                    }
                    let used = match open {
                        Some(used) if used + bits <= u64::BITS => used,
                        Some(_) => {
                            offset += WORD;
                            0
                        }
                        None => 0,
                    };
                    if used == 0 {
                        words.push((offset, Vec::new()));
                    }
                    let last = words.last_mut().expect("pushed above");
                    last.1.push(tags.len());
                    // Earlier tags take the higher bits.
                    tags.push(PackedTag {
                        name,
                        ranks: r,
                        word: offset,
                        shift: u64::BITS - used - bits,
                        bits,
                    });
                    open = Some(used + bits);
                }
            }
        }
        if open.is_some() {
            offset += WORD;
        }
        let time = time.ok_or_else(|| ArrowError::SchemaError(format!("sort order without {TIME_COLUMN:?}")))?;
        Ok(Self {
            tags,
            words,
            time,
            key_len: offset,
            width: offset + WORD,
            timezone,
        })
    }

    /// Bytes per key.
    pub(super) fn width(&self) -> usize {
        self.width
    }

    /// Bytes compared to find duplicates (all but the arrival number).
    pub(super) fn key_len(&self) -> usize {
        self.key_len
    }

    /// Index of tag `name` (for [`Self::decode_tag`]).
    pub(super) fn tag_index(&self, name: &str) -> Option<usize> {
        self.tags.iter().position(|t| t.name == name)
    }

    /// The keys of `batch`'s rows (a tag missing from it is null), with
    /// arrival numbers `first_arrival..`. `time` must be present.
    pub(super) fn encode(&self, batch: &RecordBatch, first_arrival: u64) -> Result<FixedSizeBinaryArray, ArrowError> {
        let n = batch.num_rows();
        let mut buf = vec![0u8; n * self.width];
        let mut word = vec![0u64; n];
        for (offset, tags) in &self.words {
            word.iter_mut().for_each(|w| *w = 0);
            for &t in tags {
                let tag = &self.tags[t];
                if let Some(col) = batch.column_by_name(&tag.name) {
                    tag.ranks.add_codes(col.as_ref(), tag.shift, &mut word)?;
                }
            }
            for (row, w) in buf.chunks_exact_mut(self.width).zip(&word) {
                row[*offset..*offset + WORD].copy_from_slice(&w.to_be_bytes());
            }
        }
        let time = batch
            .column_by_name(TIME_COLUMN)
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
            .ok_or_else(|| ArrowError::SchemaError(format!("no nanosecond {TIME_COLUMN:?} column")))?;
        let arrival = self.width - WORD;
        for ((row, &t), a) in buf.chunks_exact_mut(self.width).zip(time.values()).zip(first_arrival..) {
            row[self.time..self.time + WORD].copy_from_slice(&((t as u64) ^ SIGN).to_be_bytes());
            row[arrival..].copy_from_slice(&a.to_be_bytes());
        }
        FixedSizeBinaryArray::try_new(self.width as i32, buf.into(), None)
    }

    /// Tag `t` of the rows `rows` (all rows when `None`) as a dictionary
    /// over the tag's sorted values.
    pub(super) fn decode_tag(
        &self,
        t: usize,
        keys: &FixedSizeBinaryArray,
        rows: Option<&[u32]>,
    ) -> Result<ArrayRef, ArrowError> {
        let tag = &self.tags[t];
        let n = rows.map_or(keys.len(), <[u32]>::len);
        if tag.bits == 0 {
            let nulls = Int32Array::new_null(n);
            return Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(nulls, tag.ranks.values())?));
        }
        let mask = u64::MAX >> (u64::BITS - tag.bits);
        let code = |i: usize| (self.read(keys, i, tag.word) >> tag.shift) & mask;
        let codes: Vec<u64> = match rows {
            Some(rows) => rows.iter().map(|&i| code(i as usize)).collect(),
            None => (0..keys.len()).map(code).collect(),
        };
        let nulls = codes
            .iter()
            .any(|&c| c == 0)
            .then(|| NullBuffer::new(BooleanBuffer::collect_bool(codes.len(), |i| codes[i] != 0)));
        let ranks: Vec<i32> = codes.iter().map(|&c| c.saturating_sub(1) as i32).collect();
        let dict = DictionaryArray::<Int32Type>::try_new(Int32Array::new(ranks.into(), nulls), tag.ranks.values())?;
        Ok(Arc::new(dict))
    }

    /// `time` of the rows `rows` (all rows when `None`).
    pub(super) fn decode_time(&self, keys: &FixedSizeBinaryArray, rows: Option<&[u32]>) -> ArrayRef {
        let time = |i: usize| (self.read(keys, i, self.time) ^ SIGN) as i64;
        let values: Vec<i64> = match rows {
            Some(rows) => rows.iter().map(|&i| time(i as usize)).collect(),
            None => (0..keys.len()).map(time).collect(),
        };
        Arc::new(TimestampNanosecondArray::new(values.into(), None).with_timezone_opt(self.timezone.clone()))
    }

    fn read(&self, keys: &FixedSizeBinaryArray, row: usize, offset: usize) -> u64 {
        let mut b = [0u8; WORD];
        b.copy_from_slice(&keys.value(row)[offset..offset + WORD]);
        u64::from_be_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::compact::test_util::{Col, batch, value};

    fn key(order: &[Item], batches: &[RecordBatch]) -> PackedKey {
        let ranks = order
            .iter()
            .filter_map(|i| match i {
                Item::Tag(n) => Some((n.clone(), TagRanks::collect(batches, n).expect("rankable"))),
                Item::Time => None,
            })
            .collect();
        PackedKey::new(order, ranks, Some("UTC".into())).expect("layout")
    }

    fn tag(n: &str) -> Item {
        Item::Tag(n.to_string())
    }

    #[test]
    fn byte_order_is_row_order_and_round_trips() {
        let b = batch(&[
            ("a", Col::Tag(vec![Some("y"), Some("x"), None, Some("x"), Some("x")])),
            ("b", Col::Tag(vec![Some("1"), Some("2"), Some("1"), Some("2"), Some("1")])),
            ("time", Col::Time(vec![5, -3, 9, -3, i64::MAX])),
        ]);
        let k = key(&[tag("a"), tag("b"), Item::Time], std::slice::from_ref(&b));
        assert_eq!(k.width(), 8 + 8 + 8, "both tags share one word");
        let keys = k.encode(&b, 100).expect("encode");
        let mut order: Vec<usize> = (0..5).collect();
        order.sort_by(|&i, &j| keys.value(i).cmp(keys.value(j)));
        // (null,1,9) (x,1,MAX) (x,2,-3)@101 (x,2,-3)@103 (y,1,5)
        assert_eq!(order, [2, 4, 1, 3, 0]);
        let a = k.decode_tag(0, &keys, Some(&[2, 1, 0])).expect("decode");
        let got: Vec<String> = (0..3).map(|i| value(a.as_ref(), i)).collect();
        assert_eq!(got, ["∅", "x", "y"]);
        let t = k.decode_time(&keys, None);
        let got: Vec<String> = (0..5).map(|i| value(t.as_ref(), i)).collect();
        assert_eq!(got, ["5", "-3", "9", "-3", i64::MAX.to_string().as_str()]);
        // Arrival numbers make every key distinct, in arrival order.
        assert!(keys.value(1) < keys.value(3));
        assert_eq!(keys.value(1)[..k.key_len()], keys.value(3)[..k.key_len()]);
    }

    #[test]
    fn wide_keys_take_more_words_and_tags_after_time() {
        // 40 distinct values need 6 bits; 11 such tags need 66 bits.
        let names: Vec<String> = (0..11).map(|i| format!("t{i:02}")).collect();
        let values: Vec<String> = (0..40).map(|v| format!("v{v:02}")).collect();
        let cols: Vec<(&str, Col<'_>)> = names
            .iter()
            .map(|n| (n.as_str(), Col::Tag(values.iter().map(|v| Some(v.as_str())).collect())))
            .chain(std::iter::once(("time", Col::Time(vec![0; 40]))))
            .collect();
        let b = batch(&cols);
        let mut order: Vec<Item> = names.iter().map(|n| tag(n)).collect();
        order.push(Item::Time);
        let k = key(&order, std::slice::from_ref(&b));
        assert_eq!(k.width(), 8 * 4, "two words, time, arrival");
        let keys = k.encode(&b, 0).expect("encode");
        for t in 0..11 {
            let d = k.decode_tag(t, &keys, None).expect("decode");
            assert_eq!(value(d.as_ref(), 39), "v39");
        }
        // A tag after time goes in a word after it.
        let k = key(&[tag("t00"), Item::Time, tag("t01")], std::slice::from_ref(&b));
        assert_eq!((k.time, k.tags[1].word, k.width()), (8, 16, 32));
    }

    #[test]
    fn all_null_tag_takes_no_bits() {
        let b = batch(&[("a", Col::Tag(vec![None, None])), ("time", Col::Time(vec![1, 2]))]);
        let k = key(&[tag("a"), Item::Time], std::slice::from_ref(&b));
        let keys = k.encode(&b, 0).expect("encode");
        let d = k.decode_tag(0, &keys, None).expect("decode");
        assert_eq!(d.null_count(), 2);
    }
}
