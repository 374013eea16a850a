//! The packed sort key: tags and `time` in one sortable value.
//!
//! When every tag's distinct values are known before the sort (all of
//! [`compact`](super::compact)'s input is), a row's tags become small
//! integer codes: code = rank + 1 of its value among the sorted distinct
//! values ([`TagRanks`]), 0 for null, so codes order like the strings,
//! null first. Codes take only the bits their cardinality needs and are
//! packed, in sort-key order, into 64-bit words. Two encodings:
//!
//! ```text
//!  narrow (one word, then time; the usual case):  Decimal128 = (word ^ sign) << 64 | (time ^ sign)
//!  wide (anything else): FixedSizeBinary, big-endian, compared as bytes:
//!     [ tag word(s) ][ time ^ sign ][ tag words after time ][ arrival number ]
//! ```
//!
//! Either way the sort compares one column instead of a dozen dictionary
//! columns by string value: a narrow key is a primitive `i128` (DataFusion's
//! fastest single-column sort and merge); a wide key is `memcmp`-ordered.
//! The dedup compares keys as integers or byte slices. Tags and `time` are
//! not carried through the sort at all: the output decodes them from the
//! key. A wide key ends with the arrival number, so duplicates come out in
//! arrival order; a narrow key has no room for it, so the arrival number
//! travels beside it and the dedup orders duplicates by it.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, DictionaryArray, FixedSizeBinaryArray, Int32Array,
    TimestampNanosecondArray,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{DataType, Decimal128Type, Int32Type, TimestampNanosecondType};
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
    /// One word (or none) then `time`: encoded as `Decimal128`.
    narrow: bool,
}

/// A batch's key column, for comparisons and decoding.
pub(super) enum Keys<'a> {
    Narrow(&'a [i128]),
    Wide(&'a FixedSizeBinaryArray),
    /// Column-wise key words, as from [`PackedKey::key_words`] (the
    /// in-memory sort's output).
    Words(&'a [Vec<u64>]),
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
                    let p = ranks.iter().position(|(n, _)| n == name).ok_or_else(|| {
                        ArrowError::SchemaError(format!("no ranks for tag {name:?}"))
                    })?;
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
        let time = time.ok_or_else(|| {
            ArrowError::SchemaError(format!("sort order without {TIME_COLUMN:?}"))
        })?;
        let narrow = offset == time + WORD && time <= WORD;
        Ok(Self {
            tags,
            words,
            time,
            key_len: offset,
            width: offset + WORD,
            timezone,
            narrow,
        })
    }

    /// The key column's type.
    pub(super) fn data_type(&self) -> DataType {
        match self.narrow {
            true => DataType::Decimal128(38, 0),
            false => DataType::FixedSizeBinary(self.width as i32),
        }
    }

    /// Whether duplicates must be ordered by a separate arrival column
    /// (the key itself does not end with the arrival number).
    pub(super) fn needs_arrival(&self) -> bool {
        self.narrow
    }

    /// A key column as produced by [`Self::encode`].
    pub(super) fn keys<'a>(&self, column: &'a dyn Array) -> Result<Keys<'a>, ArrowError> {
        let wrong = || {
            ArrowError::SchemaError(format!(
                "sort key is {}, expected {}",
                column.data_type(),
                self.data_type()
            ))
        };
        match self.narrow {
            true => column
                .as_primitive_opt::<Decimal128Type>()
                .map(|a| Keys::Narrow(a.values().as_ref()))
                .ok_or_else(wrong),
            false => column
                .as_fixed_size_binary_opt()
                .map(Keys::Wide)
                .ok_or_else(wrong),
        }
    }

    /// Whether row `i` of `a` and row `j` of `b` have the same tags and time.
    pub(super) fn same(&self, a: &Keys<'_>, i: usize, b: &Keys<'_>, j: usize) -> bool {
        match (a, b) {
            (Keys::Narrow(a), Keys::Narrow(b)) => a[i] == b[j],
            (Keys::Wide(a), Keys::Wide(b)) => {
                a.value(i)[..self.key_len] == b.value(j)[..self.key_len]
            }
            _ => false,
        }
    }

    /// Index of tag `name` (for [`Self::decode_tag`]).
    pub(super) fn tag_index(&self, name: &str) -> Option<usize> {
        self.tags.iter().position(|t| t.name == name)
    }

    /// Number of 64-bit words in a row's dedup key (tags and `time`,
    /// without the arrival number).
    pub(super) fn num_words(&self) -> usize {
        self.key_len / WORD
    }

    /// The dedup key of `batch`'s rows as `num_words` words, column-wise:
    /// `words[w][row]` is the key's `w`-th big-endian word (for a narrow key:
    /// the tag word, if any, then `time ^ sign`). Comparing rows' words in
    /// order, as unsigned integers, is comparing their keys. `words` is
    /// resized to fit; its vectors are reused.
    pub(super) fn key_words(
        &self,
        batch: &RecordBatch,
        words: &mut Vec<Vec<u64>>,
    ) -> Result<(), ArrowError> {
        let n = batch.num_rows();
        let time = time_column(batch)?;
        words.resize_with(self.num_words(), Vec::new);
        for (w, out) in words.iter_mut().enumerate() {
            out.clear();
            let offset = w * WORD;
            if offset == self.time {
                out.extend(time.values().iter().map(|&t| (t as u64) ^ SIGN));
                continue;
            }
            out.resize(n, 0);
            if let Some((_, tags)) = self.words.iter().find(|(o, _)| *o == offset) {
                for &t in tags {
                    let tag = &self.tags[t];
                    if let Some(col) = batch.column_by_name(&tag.name) {
                        tag.ranks.add_codes(col.as_ref(), tag.shift, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The keys of `batch`'s rows (a tag missing from it is null); a wide
    /// key ends with the arrival numbers `first_arrival..`. `time` must be
    /// present.
    pub(super) fn encode(
        &self,
        batch: &RecordBatch,
        first_arrival: u64,
    ) -> Result<ArrayRef, ArrowError> {
        let n = batch.num_rows();
        let time = time_column(batch)?;
        let mut word = vec![0u64; n];
        let fill = |tags: &[usize], word: &mut [u64]| -> Result<(), ArrowError> {
            word.iter_mut().for_each(|w| *w = 0);
            for &t in tags {
                let tag = &self.tags[t];
                if let Some(col) = batch.column_by_name(&tag.name) {
                    tag.ranks.add_codes(col.as_ref(), tag.shift, word)?;
                }
            }
            Ok(())
        };
        if self.narrow {
            if let Some((_, tags)) = self.words.first() {
                fill(tags, &mut word)?;
            }
            let keys: Vec<i128> = word
                .iter()
                .zip(time.values())
                .map(|(&w, &t)| {
                    (i128::from((w ^ SIGN) as i64) << 64) | i128::from((t as u64) ^ SIGN)
                })
                .collect();
            return Ok(Arc::new(
                Decimal128Array::new(keys.into(), None).with_precision_and_scale(38, 0)?,
            ));
        }
        let mut buf = vec![0u8; n * self.width];
        for (offset, tags) in &self.words {
            fill(tags, &mut word)?;
            for (row, w) in buf.chunks_exact_mut(self.width).zip(&word) {
                row[*offset..*offset + WORD].copy_from_slice(&w.to_be_bytes());
            }
        }
        let arrival = self.width - WORD;
        for ((row, &t), a) in buf
            .chunks_exact_mut(self.width)
            .zip(time.values())
            .zip(first_arrival..)
        {
            row[self.time..self.time + WORD].copy_from_slice(&((t as u64) ^ SIGN).to_be_bytes());
            row[arrival..].copy_from_slice(&a.to_be_bytes());
        }
        Ok(Arc::new(FixedSizeBinaryArray::try_new(
            self.width as i32,
            buf.into(),
            None,
        )?))
    }

    /// Tag `t` of the rows `rows` (all rows when `None`) as a dictionary
    /// over the tag's sorted values.
    pub(super) fn decode_tag(
        &self,
        t: usize,
        keys: &Keys<'_>,
        rows: Option<&[u32]>,
    ) -> Result<ArrayRef, ArrowError> {
        let tag = &self.tags[t];
        let n = rows.map_or(keys.len(), <[u32]>::len);
        if tag.bits == 0 {
            let nulls = Int32Array::new_null(n);
            return Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
                nulls,
                tag.ranks.values(),
            )?));
        }
        let mask = u64::MAX >> (u64::BITS - tag.bits);
        // Code c > 0 is rank c - 1; 0 (null) becomes rank -1 until the
        // null buffer is known, then 0 (any valid key under a null slot).
        let rank = |word: u64| (((word >> tag.shift) & mask) as i32).wrapping_sub(1);
        let mut ranks: Vec<i32> = match (rows, keys) {
            (None, Keys::Words(w)) => w[tag.word / WORD].iter().map(|&w| rank(w)).collect(),
            (Some(rows), _) => rows
                .iter()
                .map(|&i| rank(self.read(keys, i as usize, tag.word)))
                .collect(),
            (None, _) => (0..keys.len())
                .map(|i| rank(self.read(keys, i, tag.word)))
                .collect(),
        };
        let nulls = ranks.contains(&-1).then(|| {
            let valid =
                NullBuffer::new(BooleanBuffer::collect_bool(ranks.len(), |i| ranks[i] >= 0));
            ranks.iter_mut().for_each(|r| *r = (*r).max(0));
            valid
        });
        let dict = DictionaryArray::<Int32Type>::try_new(
            Int32Array::new(ranks.into(), nulls),
            tag.ranks.values(),
        )?;
        Ok(Arc::new(dict))
    }

    /// `time` of the rows `rows` (all rows when `None`).
    pub(super) fn decode_time(&self, keys: &Keys<'_>, rows: Option<&[u32]>) -> ArrayRef {
        let time = |i: usize| (self.read(keys, i, self.time) ^ SIGN) as i64;
        let values: Vec<i64> = match (rows, keys) {
            (None, Keys::Words(w)) => w[self.time / WORD]
                .iter()
                .map(|&t| (t ^ SIGN) as i64)
                .collect(),
            (Some(rows), _) => rows.iter().map(|&i| time(i as usize)).collect(),
            (None, _) => (0..keys.len()).map(time).collect(),
        };
        Arc::new(
            TimestampNanosecondArray::new(values.into(), None)
                .with_timezone_opt(self.timezone.clone()),
        )
    }

    /// The 64-bit word at byte `offset` of a row's key.
    fn read(&self, keys: &Keys<'_>, row: usize, offset: usize) -> u64 {
        match keys {
            // Narrow: the word (if any) at 0, then time.
            Keys::Narrow(k) => match offset == self.time {
                true => k[row] as u64,
                false => ((k[row] >> 64) as u64) ^ SIGN,
            },
            Keys::Wide(k) => {
                let mut b = [0u8; WORD];
                b.copy_from_slice(&k.value(row)[offset..offset + WORD]);
                u64::from_be_bytes(b)
            }
            Keys::Words(w) => w[offset / WORD][row],
        }
    }
}

impl Keys<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Keys::Narrow(k) => k.len(),
            Keys::Wide(k) => k.len(),
            Keys::Words(w) => w.first().map_or(0, Vec::len),
        }
    }
}

/// `batch`'s nanosecond `time` column.
fn time_column(batch: &RecordBatch) -> Result<&TimestampNanosecondArray, ArrowError> {
    batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| ArrowError::SchemaError(format!("no nanosecond {TIME_COLUMN:?} column")))
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
            (
                "a",
                Col::Tag(vec![Some("y"), Some("x"), None, Some("x"), Some("x")]),
            ),
            (
                "b",
                Col::Tag(vec![Some("1"), Some("2"), Some("1"), Some("2"), Some("1")]),
            ),
            ("time", Col::Time(vec![5, -3, 9, -3, i64::MAX])),
        ]);
        // Narrow: both tags share one word, then time.
        let k = key(&[tag("a"), tag("b"), Item::Time], std::slice::from_ref(&b));
        assert_eq!(k.data_type(), DataType::Decimal128(38, 0));
        let encoded = k.encode(&b, 100).expect("encode");
        let keys = k.keys(encoded.as_ref()).expect("keys");
        let Keys::Narrow(values) = keys else {
            panic!("narrow")
        };
        let mut order: Vec<usize> = (0..5).collect();
        order.sort_by_key(|&i| values[i]);
        // (null,1,9) (x,1,MAX) (x,2,-3) (x,2,-3) (y,1,5)
        assert_eq!(order, [2, 4, 1, 3, 0]);
        assert!(k.same(&keys, 1, &keys, 3) && !k.same(&keys, 1, &keys, 4));
        check_decode(&k, &keys);

        // Wide (a tag after time): bytes, ending with the arrival number.
        let k = key(&[tag("a"), Item::Time, tag("b")], std::slice::from_ref(&b));
        assert_eq!(k.data_type(), DataType::FixedSizeBinary(32));
        let encoded = k.encode(&b, 100).expect("encode");
        let keys = k.keys(encoded.as_ref()).expect("keys");
        let Keys::Wide(bytes) = keys else {
            panic!("wide")
        };
        let mut order: Vec<usize> = (0..5).collect();
        order.sort_by(|&i, &j| bytes.value(i).cmp(bytes.value(j)));
        // (null,9,1) (x,-3,2)@101 (x,-3,2)@103 (x,MAX,1) (y,5,1)
        assert_eq!(order, [2, 1, 3, 4, 0]);
        assert!(k.same(&keys, 1, &keys, 3) && bytes.value(1) < bytes.value(3));
        check_decode(&k, &keys);
    }

    fn check_decode(k: &PackedKey, keys: &Keys<'_>) {
        let a = k.decode_tag(0, keys, Some(&[2, 1, 0])).expect("decode");
        let got: Vec<String> = (0..3).map(|i| value(a.as_ref(), i)).collect();
        assert_eq!(got, ["∅", "x", "y"]);
        let b = k.decode_tag(1, keys, None).expect("decode");
        let got: Vec<String> = (0..5).map(|i| value(b.as_ref(), i)).collect();
        assert_eq!(got, ["1", "2", "1", "2", "1"]);
        let t = k.decode_time(keys, None);
        let got: Vec<String> = (0..5).map(|i| value(t.as_ref(), i)).collect();
        assert_eq!(got, ["5", "-3", "9", "-3", i64::MAX.to_string().as_str()]);
    }

    #[test]
    fn wide_keys_take_more_words_and_tags_after_time() {
        // 40 distinct values need 6 bits; 11 such tags need 66 bits.
        let names: Vec<String> = (0..11).map(|i| format!("t{i:02}")).collect();
        let values: Vec<String> = (0..40).map(|v| format!("v{v:02}")).collect();
        let cols: Vec<(&str, Col<'_>)> = names
            .iter()
            .map(|n| {
                (
                    n.as_str(),
                    Col::Tag(values.iter().map(|v| Some(v.as_str())).collect()),
                )
            })
            .chain(std::iter::once(("time", Col::Time(vec![0; 40]))))
            .collect();
        let b = batch(&cols);
        let mut order: Vec<Item> = names.iter().map(|n| tag(n)).collect();
        order.push(Item::Time);
        let k = key(&order, std::slice::from_ref(&b));
        assert_eq!(
            k.data_type(),
            DataType::FixedSizeBinary(8 * 4),
            "two words, time, arrival"
        );
        let encoded = k.encode(&b, 0).expect("encode");
        let keys = k.keys(encoded.as_ref()).expect("keys");
        for t in 0..11 {
            let d = k.decode_tag(t, &keys, None).expect("decode");
            assert_eq!(value(d.as_ref(), 39), "v39");
        }
        // A tag after time goes in a word after it.
        let k = key(
            &[tag("t00"), Item::Time, tag("t01")],
            std::slice::from_ref(&b),
        );
        assert_eq!((k.time, k.tags[1].word, k.width), (8, 16, 32));
    }

    #[test]
    fn all_null_tag_takes_no_bits() {
        let b = batch(&[
            ("a", Col::Tag(vec![None, None])),
            ("time", Col::Time(vec![1, 2])),
        ]);
        let k = key(&[tag("a"), Item::Time], std::slice::from_ref(&b));
        let encoded = k.encode(&b, 0).expect("encode");
        let keys = k.keys(encoded.as_ref()).expect("keys");
        let d = k.decode_tag(0, &keys, None).expect("decode");
        assert_eq!(d.null_count(), 2);
    }
}
