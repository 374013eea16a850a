//! Tag columns of one request: a dictionary builder, and a cache of whole
//! tag sets.
//!
//! A tag is stored as `Dictionary(Int32, Utf8)`: one key per row, each
//! distinct value once. Arrow's `StringDictionaryBuilder` hashes every
//! value it is given; a TSBS `cpu` line has ten tags, so that was ten
//! hashes, probes and compares per row (~13% of the write path's CPU). Two
//! things cut it:
//!
//! - [`SeriesCache`]: the lines of one series repeat the same tag section
//!   byte for byte (`cpu,hostname=host_7,region=…`), so the section's raw
//!   bytes map to the dictionary keys it produced: one hash per line
//!   instead of one per tag. A hit appends the keys directly, which is why
//!   this module has its own dictionary ([`TagDictionary::append_key`]).
//!   The parser asks the cache before it parses a line's tags
//!   (`Parser::next_line_with`), so a hit skips their parsing too.
//! - [`TagDictionary`]: keys in a `Vec<i32>`, values back to back, a hash
//!   table of keys; the validity bitmap exists only once a null appears.
//!
//! Both are bounded by the request: at most one cache entry and one
//! dictionary value per line.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBufferBuilder, DictionaryArray, Int32Array, StringArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::Int32Type;
use hashbrown::{DefaultHashBuilder, HashTable};

/// The dictionary-encoded values of one tag column.
#[derive(Debug)]
pub(crate) struct TagDictionary {
    keys: Vec<i32>,
    /// `None` while every row has a value.
    nulls: Option<BooleanBufferBuilder>,
    /// `offsets[k]..offsets[k + 1]` is value `k` in `data`.
    offsets: Vec<i32>,
    data: Vec<u8>,
    /// Keys, found by the hash of their value; empty (never allocated)
    /// while the column has at most one distinct value, which is then
    /// compared directly. A one-line write's ten tag columns each hold one
    /// value: no table to allocate, nothing to hash.
    index: HashTable<i32>,
    hasher: DefaultHashBuilder,
}

impl TagDictionary {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        // Distinct values are few; the dictionary grows if not.
        let distinct = rows.min(64);
        let mut offsets = Vec::with_capacity(distinct + 1);
        offsets.push(0);
        Self {
            keys: Vec::with_capacity(rows),
            nulls: None,
            offsets,
            data: Vec::with_capacity(distinct * 16),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn value(&self, key: i32) -> &[u8] {
        let k = key as usize;
        &self.data[self.offsets[k] as usize..self.offsets[k + 1] as usize]
    }

    /// Appends `v`; returns its key, or `None` when the column would
    /// outgrow 32-bit offsets (a request several GiB large).
    pub(crate) fn append_value(&mut self, v: &str) -> Option<i32> {
        let v = v.as_bytes();
        match self.offsets.len() {
            // No value yet: it becomes key 0.
            1 => return self.push_value(v, None),
            // One value: the same, or the second one, which needs the index.
            2 if super::builder::same_bytes(self.value(0), v) => {
                self.append_key(0);
                return Some(0);
            }
            // A second value: index the first, then add this one, which
            // is new (it differs from the only value).
            2 => {
                let first = self.hasher.hash_one(self.value(0));
                self.index
                    .reserve(self.keys.capacity().clamp(2, 64), |_| first);
                self.index.insert_unique(first, 0, |_| first);
                let hash = self.hasher.hash_one(v);
                return self.push_value(v, Some(hash));
            }
            _ => {}
        }
        let hash = self.hasher.hash_one(v);
        let found = self
            .index
            .find(hash, |&k| super::builder::same_bytes(self.value(k), v));
        match found {
            Some(&k) => {
                self.append_key(k);
                Some(k)
            }
            None => self.push_value(v, Some(hash)),
        }
    }

    /// Adds `v` as a new value (indexed by `hash` when the index is in
    /// use) and appends its key.
    fn push_value(&mut self, v: &[u8], hash: Option<u64>) -> Option<i32> {
        let key = i32::try_from(self.offsets.len() - 1).ok()?;
        let end = i32::try_from(self.data.len() + v.len()).ok()?;
        self.data.extend_from_slice(v);
        self.offsets.push(end);
        if let Some(hash) = hash {
            let (data, offsets, hasher) = (&self.data, &self.offsets, &self.hasher);
            self.index.insert_unique(hash, key, |&k| {
                let k = k as usize;
                hasher.hash_one(&data[offsets[k] as usize..offsets[k + 1] as usize])
            });
        }
        self.append_key(key);
        Some(key)
    }

    /// Appends a key [`append_value`](Self::append_value) returned.
    #[inline]
    pub(crate) fn append_key(&mut self, key: i32) {
        debug_assert!((key as usize) < self.offsets.len() - 1);
        self.keys.push(key);
        if let Some(n) = &mut self.nulls {
            n.append(true);
        }
    }

    pub(crate) fn append_nulls(&mut self, n: usize) {
        let nulls = self.nulls.get_or_insert_with(|| {
            let mut b = BooleanBufferBuilder::new(self.keys.capacity().max(n));
            b.append_n(self.keys.len(), true);
            b
        });
        nulls.append_n(n, false);
        self.keys.resize(self.keys.len() + n, 0);
    }

    /// The finished column; its buffers become the array's, uncopied.
    pub(crate) fn finish(self) -> Result<ArrayRef, String> {
        let nulls = self.nulls.map(|mut b| NullBuffer::new(b.finish()));
        let keys = Int32Array::new(ScalarBuffer::from(self.keys), nulls);
        // Offsets start at 0 and only grow (appended lengths), as
        // `OffsetBuffer::new` requires.
        let values = StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Buffer::from_vec(self.data),
            None,
        )
        .map_err(|e| e.to_string())?;
        let dict = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(dict))
    }

    /// Used by the tests: a value's text.
    #[cfg(test)]
    fn text(&self, key: i32) -> &str {
        std::str::from_utf8(self.value(key)).unwrap()
    }
}

/// Largest number of distinct tag sets remembered per table and request;
/// lines beyond it are simply not cached (bounds memory for a request of
/// all-distinct series).
const MAX_SERIES: usize = 1 << 16;

/// Raw tag sections → the `(column, key)` pairs they produced.
#[derive(Debug, Default)]
pub(crate) struct SeriesCache {
    /// `(hash, start, len, id)`: the section is `bytes[start..start + len]`,
    /// its pairs `spans[id]`.
    table: HashTable<(u64, u32, u32, u32)>,
    bytes: Vec<u8>,
    /// `(first, n)`: an entry's pairs are `pairs[first..first + n]`.
    spans: Vec<(u32, u32)>,
    pairs: Vec<(u32, i32)>,
    hasher: DefaultHashBuilder,
}

impl SeriesCache {
    /// The hash of tag section `raw`, for [`get`](Self::get) and
    /// [`insert`](Self::insert) (one hash for both on a miss).
    #[inline]
    pub(crate) fn hash(&self, raw: &[u8]) -> u64 {
        self.hasher.hash_one(raw)
    }

    /// The id of tag section `raw` (whose [`hash`](Self::hash) is `hash`),
    /// if recorded: its pairs are [`pairs`](Self::pairs)`(id)`.
    #[inline]
    pub(crate) fn find(&self, hash: u64, raw: &[u8]) -> Option<u32> {
        let &(.., id) = self.table.find(hash, |&(h, start, len, _)| {
            h == hash && &self.bytes[start as usize..(start + len) as usize] == raw
        })?;
        Some(id)
    }

    /// The pairs of the section [`find`](Self::find) returned `id` for
    /// (none for an id it did not return).
    #[inline]
    pub(crate) fn pairs(&self, id: u32) -> &[(u32, i32)] {
        match self.spans.get(id as usize) {
            Some(&(first, n)) => &self.pairs[first as usize..(first + n) as usize],
            None => &[],
        }
    }

    /// Records the pairs of tag section `raw` (whose [`hash`](Self::hash)
    /// is `hash`; ignored once full).
    pub(crate) fn insert(&mut self, hash: u64, raw: &[u8], pairs: &[(u32, i32)]) {
        if self.table.len() >= MAX_SERIES
            || self.bytes.len() + raw.len() > u32::MAX as usize
            || self.pairs.len() + pairs.len() > u32::MAX as usize
        {
            return;
        }
        let entry = (
            hash,
            self.bytes.len() as u32,
            raw.len() as u32,
            self.spans.len() as u32,
        );
        self.spans
            .push((self.pairs.len() as u32, pairs.len() as u32));
        self.bytes.extend_from_slice(raw);
        self.pairs.extend_from_slice(pairs);
        self.table.insert_unique(hash, entry, |e| e.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn keys_values_and_nulls() {
        let mut d = TagDictionary::with_capacity(2);
        d.append_nulls(1);
        assert_eq!(d.append_value("a"), Some(0));
        assert_eq!(d.append_value("b"), Some(1));
        assert_eq!(d.append_value("a"), Some(0));
        d.append_key(1);
        d.append_nulls(2);
        for i in 0..200 {
            d.append_value(&format!("v{i}"));
        }
        assert_eq!(d.text(1), "b");
        assert_eq!(d.text(2), "v0");
        let a = d.finish().unwrap();
        let dict = a.as_dictionary::<Int32Type>();
        let values = dict.downcast_dict::<StringArray>().unwrap();
        let got: Vec<Option<&str>> = values.into_iter().take(7).collect();
        assert_eq!(
            got,
            [None, Some("a"), Some("b"), Some("a"), Some("b"), None, None]
        );
        assert_eq!(values.into_iter().nth(206), Some(Some("v199")));
        assert_eq!(dict.values().len(), 202, "each value once");
        assert_eq!(a.null_count(), 3);
    }

    #[test]
    fn a_column_of_one_value_then_more_keeps_every_key() {
        // One distinct value is kept without the index; the second value
        // builds it from the first. Every row must still find its own key.
        let mut d = TagDictionary::with_capacity(4);
        let rows = ["x", "x", "x", "y", "x", "z", "y", "x"];
        let keys: Vec<_> = rows.iter().map(|v| d.append_value(v)).collect();
        assert_eq!(
            keys,
            [0, 0, 0, 1, 0, 2, 1, 0].map(Some),
            "each value its first key"
        );
        assert_eq!(d.index.len(), 3, "the index holds every value once");
        let a = d.finish().unwrap();
        let dict = a.as_dictionary::<Int32Type>();
        let got: Vec<Option<&str>> = dict
            .downcast_dict::<StringArray>()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(got, rows.map(Some));
        assert_eq!(dict.values().len(), 3);
    }

    #[test]
    fn one_value_needs_no_index() {
        let mut d = TagDictionary::with_capacity(8);
        for _ in 0..5 {
            assert_eq!(d.append_value("only"), Some(0));
        }
        assert_eq!(d.index.capacity(), 0, "nothing allocated for one value");
    }

    #[test]
    fn without_nulls_there_is_no_bitmap() {
        let mut d = TagDictionary::with_capacity(1);
        d.append_value("x");
        let a = d.finish().unwrap();
        assert!(a.nulls().is_none());
    }

    #[test]
    fn series_cache_finds_exact_sections() {
        let mut c = SeriesCache::default();
        let get =
            |c: &SeriesCache, raw: &[u8]| c.find(c.hash(raw), raw).map(|id| c.pairs(id).to_vec());
        c.insert(c.hash(b"cpu,host=a"), b"cpu,host=a", &[(0, 0)]);
        c.insert(c.hash(b"cpu,host=b"), b"cpu,host=b", &[(0, 1), (2, 5)]);
        assert_eq!(get(&c, b"cpu,host=a"), Some(vec![(0, 0)]));
        assert_eq!(get(&c, b"cpu,host=b"), Some(vec![(0, 1), (2, 5)]));
        assert_eq!(get(&c, b"cpu,host=c"), None);
        assert_eq!(get(&c, b"cpu,host="), None);
    }
}
