//! Tag column chunks encoded straight from their dictionary keys.
//!
//! A persist's tag columns are `Dictionary(Int32, Utf8)` arrays whose values
//! are one sorted, distinct array shared by every output batch
//! ([`super::ranks`]: a row's key is its value's rank), and the output is
//! sorted by the tags, so keys come in long runs. Parquet's Arrow writer
//! knows none of this: it hashes and compares every row's string again to
//! build its own page dictionary, and compares strings per row for the
//! min/max statistics. That re-interning was ~12% of the server's CPU at
//! full ingest (a quarter of a persist job; issue 7). Here a chunk is built
//! from the keys alone, one comparison per row:
//!
//! - while batches arrive, each row extends the current run of equal keys
//!   (or of nulls) or starts a new one ([`TagChunk::push`]);
//! - the dictionary page holds the shared values the row group references,
//!   in order. A key becomes its position among them; ranks are sorted, so
//!   the mapping keeps the order, and [`super::chunk_writer`] writes the
//!   pages, statistics and page index from the keys (string bounds
//!   truncated like the Arrow writer's).
//!
//! Anything else keeps to `ArrowColumnWriter`: [`supported`] rejects the
//! settings this does not implement (other codecs, bloom filters, data
//! page v2, content-defined chunking, no dictionary), [`TagChunk::push`]
//! refuses batches that do not share one sorted distinct values array, and
//! [`TagChunk::finish`] declines a dictionary over the writer's dictionary
//! page limit (where the Arrow writer falls back to PLAIN). The caller then
//! feeds what was taken to the Arrow writer ([`TagChunk::replay`]).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, DictionaryArray, Int32Array, StringArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, FieldRef, Int32Type};
use parquet::arrow::arrow_writer::{ArrowColumnWriter, compute_leaves};
use parquet::basic::Type as PhysicalType;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::ColumnDescPtr;

use super::chunk_writer::{
    ChunkBuilder, ChunkWriter, DictValues, EncodedChunk, NULL, Run, key_width, nulls_for,
    settings_supported,
};

/// Rows per array when replaying runs into the Arrow writer.
const REPLAY_ROWS: usize = 8192;

/// Whether a column of `data_type` written with `props` can take this path.
pub(super) fn supported(
    data_type: &DataType,
    descr: &ColumnDescPtr,
    props: &WriterProperties,
) -> bool {
    matches!(data_type, DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8)
        && descr.physical_type() == PhysicalType::BYTE_ARRAY
        && settings_supported(descr, props)
}

/// One tag column of one row group, as runs of keys.
pub(super) struct TagChunk {
    descr: ColumnDescPtr,
    props: Arc<WriterProperties>,
    /// The shared values: sorted, distinct, no nulls. `None` until the
    /// first batch.
    values: Option<ArrayRef>,
    /// Per value: whether a row of this row group refers to it.
    referenced: Vec<bool>,
    /// Completed runs; `current` is the one being extended.
    runs: Vec<Run>,
    current: Run,
    rows: usize,
}

impl TagChunk {
    /// An empty chunk for the column `descr` (see [`supported`]).
    pub(super) fn new(descr: ColumnDescPtr, props: Arc<WriterProperties>) -> Self {
        Self {
            descr,
            props,
            values: None,
            referenced: Vec::new(),
            runs: Vec::new(),
            current: Run { key: NULL, len: 0 },
            rows: 0,
        }
    }

    /// Whether `values` are the chunk's values (the first batch's, which
    /// must be sorted, distinct and without nulls).
    fn share(&mut self, values: &ArrayRef) -> bool {
        if let Some(v) = &self.values {
            return Arc::ptr_eq(v, values) || v.as_ref() == values.as_ref();
        }
        let Some(strings) = values.as_string_opt::<i32>() else {
            return false;
        };
        let sorted = strings.null_count() == 0
            && (1..strings.len()).all(|i| strings.value(i - 1) < strings.value(i));
        if sorted {
            self.values = Some(Arc::clone(values));
            self.referenced = vec![false; strings.len()];
        }
        sorted
    }

    fn add_keys(&mut self, keys: &[i32]) -> Result<(), ParquetError> {
        let Some((&first, rest)) = keys.split_first() else {
            return Ok(());
        };
        // After this, `current` is a run of a valid key: a key equal to it
        // is valid too.
        if first as u32 == self.current.key && self.current.key != NULL {
            self.current.len += 1;
        } else {
            self.start_run(first as u32)?;
        }
        let mut current = self.current;
        for &k in rest {
            let k = k as u32;
            if k == current.key {
                current.len += 1;
            } else {
                self.current = current;
                self.start_run(k)?;
                current = self.current;
            }
        }
        self.current = current;
        Ok(())
    }

    /// Ends the current run and starts one of `key` (checked).
    fn start_run(&mut self, key: u32) -> Result<(), ParquetError> {
        let Some(r) = self.referenced.get_mut(key as usize) else {
            return Err(ParquetError::General(format!(
                "column {}: dictionary key {} out of range ({} values)",
                self.descr.path(),
                key as i32,
                self.referenced.len()
            )));
        };
        *r = true;
        if self.current.len > 0 {
            self.runs.push(self.current);
        }
        self.current = Run { key, len: 1 };
        Ok(())
    }

    fn add_nulls(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        // `rows` stays within u32 (checked in `push`).
        let n = n as u32;
        if self.current.key == NULL {
            self.current.len += n;
        } else {
            if self.current.len > 0 {
                self.runs.push(self.current);
            }
            self.current = Run { key: NULL, len: n };
        }
    }

    /// All runs so far.
    fn all_runs(&self) -> impl Iterator<Item = Run> + '_ {
        let current = (self.current.len > 0).then_some(self.current);
        self.runs.iter().copied().chain(current)
    }
}

impl ChunkBuilder for TagChunk {
    /// Appends `array`'s rows. `Ok(false)` (nothing taken) if it cannot
    /// take this path: not a `Dictionary(Int32, Utf8)`, or its values are
    /// not the shared sorted distinct array of the earlier batches.
    fn push(&mut self, array: &dyn Array) -> Result<bool, ParquetError> {
        let Some(dict) = array.as_dictionary_opt::<Int32Type>() else {
            return Ok(false);
        };
        // Pages count values in u32.
        if !self.share(dict.values()) || self.rows + dict.len() > u32::MAX as usize {
            return Ok(false);
        }
        let keys = dict.keys();
        match nulls_for(&self.descr, keys.nulls())? {
            None => self.add_keys(keys.values())?,
            Some(nulls) => {
                let mut at = 0;
                for (start, end) in nulls.valid_slices() {
                    self.add_nulls(start - at);
                    self.add_keys(&keys.values()[start..end])?;
                    at = end;
                }
                self.add_nulls(keys.len() - at);
            }
        }
        self.rows += dict.len();
        Ok(true)
    }

    /// Feeds the rows taken so far to `writer` (the fallback path).
    fn replay(&self, field: &FieldRef, writer: &mut ArrowColumnWriter) -> Result<(), ParquetError> {
        let Some(values) = &self.values else {
            return Ok(());
        };
        let mut keys: Vec<i32> = Vec::with_capacity(REPLAY_ROWS.min(self.rows));
        let mut valid = BooleanBufferBuilder::new(keys.capacity());
        let mut flush = |keys: &mut Vec<i32>, valid: &mut BooleanBufferBuilder| {
            let nulls = NullBuffer::new(valid.finish());
            let keys = Int32Array::new(std::mem::take(keys).into(), Some(nulls));
            let array: ArrayRef = Arc::new(DictionaryArray::try_new(keys, Arc::clone(values))?);
            for leaf in compute_leaves(field, &array)? {
                writer.write(&leaf)?;
            }
            Ok::<_, ParquetError>(())
        };
        for run in self.all_runs() {
            let mut left = run.len as usize;
            while left > 0 {
                let n = left.min(REPLAY_ROWS - keys.len());
                let (key, is_valid) = match run.key {
                    NULL => (0, false),
                    k => (k as i32, true),
                };
                keys.extend(std::iter::repeat_n(key, n));
                valid.append_n(n, is_valid);
                left -= n;
                if keys.len() == REPLAY_ROWS {
                    flush(&mut keys, &mut valid)?;
                }
            }
        }
        if !keys.is_empty() {
            flush(&mut keys, &mut valid)?;
        }
        Ok(())
    }

    /// Encodes the chunk; `None` if it should go through the Arrow writer
    /// instead (no rows, or a dictionary over the dictionary page limit).
    fn finish(&self) -> Result<Option<EncodedChunk>, ParquetError> {
        let Some(values) = self.values.as_ref().and_then(|v| v.as_string_opt::<i32>()) else {
            return Ok(None);
        };
        if self.rows == 0 {
            return Ok(None);
        }
        let path = self.descr.path();
        // The referenced values, in order, as the dictionary page.
        let mut remap = vec![0u32; self.referenced.len()];
        let mut dictionary = Vec::new();
        let mut distinct = 0u32;
        for (k, _) in self.referenced.iter().enumerate().filter(|(_, r)| **r) {
            remap[k] = distinct;
            distinct += 1;
            let v = values.value(k).as_bytes();
            dictionary.extend_from_slice(&(v.len() as u32).to_le_bytes());
            dictionary.extend_from_slice(v);
        }
        if dictionary.len() >= self.props.column_dictionary_page_size_limit(path) {
            return Ok(None);
        }
        let bit_width = key_width(distinct);

        let values = StrValues(values);
        let mut out = ChunkWriter::new(&self.descr, &self.props, &values, &remap, bit_width)?;
        out.dictionary_page(dictionary, distinct, true)?;
        out.data_pages(self.all_runs(), self.rows)?;
        out.finish(self.rows).map(Some)
    }
}

/// A tag dictionary's values (keys index the shared values array).
struct StrValues<'a>(&'a StringArray);

impl DictValues for StrValues<'_> {
    const PHYSICAL: PhysicalType = PhysicalType::BYTE_ARRAY;

    fn value_len(&self, key: u32) -> Option<i64> {
        Some(self.0.value_length(key as usize) as i64)
    }

    fn lower(&self, key: u32, truncate: Option<usize>) -> (Vec<u8>, bool) {
        lower_bound(self.0.value(key as usize), truncate)
    }

    fn upper(&self, key: u32, truncate: Option<usize>) -> (Vec<u8>, bool) {
        upper_bound(self.0.value(key as usize), truncate)
    }

    fn statistics(
        &self,
        min_max: Option<(u32, u32)>,
        nulls: u64,
        truncate: Option<usize>,
        signed: bool,
    ) -> Statistics {
        let bounds = min_max.map(|(lo, hi)| (self.lower(lo, truncate), self.upper(hi, truncate)));
        let exact = bounds.as_ref().map(|((_, a), (_, b))| (*a, *b));
        let (min, max) = match bounds {
            Some(((min, _), (max, _))) => (Some(ByteArray::from(min)), Some(ByteArray::from(max))),
            None => (None, None),
        };
        let mut s = ValueStatistics::new(min, max, None, Some(nulls), false)
            .with_backwards_compatible_min_max(signed);
        if let Some((min_exact, max_exact)) = exact {
            s = s.with_min_is_exact(min_exact).with_max_is_exact(max_exact);
        }
        Statistics::ByteArray(s)
    }

    /// Keys are ranks: they compare like the strings.
    fn greater(&self, a: u32, b: u32) -> bool {
        a > b
    }
}

/// A lower bound of `v` of at most `limit` bytes (a non-empty prefix on a
/// character boundary) and whether it is `v` itself.
fn lower_bound(v: &str, limit: Option<usize>) -> (Vec<u8>, bool) {
    if let Some(l) = limit.filter(|&l| v.len() > l)
        && let Some(cut) = (1..=l).rev().find(|&i| v.is_char_boundary(i))
    {
        return (v.as_bytes()[..cut].to_vec(), false);
    }
    (v.as_bytes().to_vec(), true)
}

/// An upper bound of `v` of at most `limit` bytes (a prefix whose last
/// character that can be incremented without changing its UTF-8 length
/// is, and what followed it dropped) and whether it is `v` itself.
fn upper_bound(v: &str, limit: Option<usize>) -> (Vec<u8>, bool) {
    if let Some(l) = limit.filter(|&l| v.len() > l)
        && let Some(cut) = (1..=l).rev().find(|&i| v.is_char_boundary(i))
    {
        let prefix = &v[..cut];
        for (i, c) in prefix.char_indices().rev() {
            if let Some(next) =
                char::from_u32(c as u32 + 1).filter(|n| n.len_utf8() == c.len_utf8())
            {
                let mut out = prefix.as_bytes()[..i].to_vec();
                out.extend_from_slice(next.encode_utf8(&mut [0; 4]).as_bytes());
                return (out, false);
            }
        }
    }
    (v.as_bytes().to_vec(), true)
}

#[cfg(test)]
pub(super) mod tests {
    //! Round trips through the tag chunk path, and comparisons with the
    //! Arrow writer's output for the same input.

    use arrow::array::{RecordBatch, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Schema};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::{Compression, PageType, ZstdLevel};
    use parquet::column::page::Page;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;
    use parquet::file::page_index::offset_index::OffsetIndexMetaData;
    use parquet::file::properties::EnabledStatistics;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;
    use crate::persist::compact::encoder::ParallelEncoder;
    use crate::persist::compact::test_util::{rows, tag_type, time_type};

    /// Batches of `batch_rows` rows: tag column `t{i}` has keys `keys[i]`
    /// into the shared values `values[i]` (sorted, distinct), then `time`
    /// (the row number).
    pub(in crate::persist::compact) fn tag_batches(
        values: &[Vec<String>],
        keys: &[Vec<Option<u32>>],
        batch_rows: usize,
    ) -> Vec<RecordBatch> {
        let n = keys.first().map_or(0, Vec::len);
        let mut fields: Vec<Field> = (0..keys.len())
            .map(|i| Field::new(format!("t{i}"), tag_type(), true))
            .collect();
        fields.push(Field::new("time", time_type(), false));
        let schema = Arc::new(Schema::new(fields));
        let shared: Vec<ArrayRef> = values
            .iter()
            .map(|v| Arc::new(StringArray::from_iter_values(v)) as ArrayRef)
            .collect();
        let mut tags: Vec<ArrayRef> = keys
            .iter()
            .zip(&shared)
            .map(|(k, v)| {
                let keys: Int32Array = k.iter().map(|k| k.map(|k| k as i32)).collect();
                Arc::new(DictionaryArray::try_new(keys, Arc::clone(v)).expect("keys in range"))
                    as ArrayRef
            })
            .collect();
        tags.push(Arc::new(
            TimestampNanosecondArray::from_iter_values(0..n as i64).with_timezone("UTC"),
        ));
        let whole = RecordBatch::try_new(schema, tags).expect("batch");
        (0..n)
            .step_by(batch_rows.max(1))
            .map(|at| whole.slice(at, batch_rows.min(n - at)))
            .collect()
    }

    /// Persist's settings (zstd, page statistics) with small pages.
    pub(in crate::persist::compact) fn props(page_rows: usize) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level")))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_data_page_row_count_limit(page_rows)
            .build()
    }

    /// The Parquet file of `batches`, through the tag chunk path or not.
    pub(in crate::persist::compact) async fn encode(
        batches: &[RecordBatch],
        props: WriterProperties,
        row_group_rows: usize,
        own_chunks: bool,
    ) -> Bytes {
        let schema = batches.first().expect("a batch").schema();
        let mut enc = ParallelEncoder::with_own_chunks(schema, props, row_group_rows, own_chunks)
            .expect("encoder");
        let mut file = Vec::new();
        for b in batches {
            if let Some(bytes) = enc.write(b).await.expect("write") {
                file.extend_from_slice(&bytes);
            }
        }
        let (last, size) = enc.finish().await.expect("finish");
        file.extend_from_slice(&last);
        assert_eq!(size, file.len() as u64);
        Bytes::from(file)
    }

    pub(in crate::persist::compact) fn read(file: &Bytes) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(file.clone())
            .expect("reader")
            .build()
            .expect("build")
            .collect::<Result<_, _>>()
            .expect("read")
    }

    pub(in crate::persist::compact) fn metadata(file: &Bytes) -> ParquetMetaData {
        ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(file)
            .expect("metadata with page index")
    }

    /// Per row group and column: whether the chunk starts with a dictionary
    /// page flagged sorted (only the tag chunk path writes those).
    pub(in crate::persist::compact) fn sorted_dictionaries(file: &Bytes) -> Vec<Vec<bool>> {
        let reader = SerializedFileReader::new(file.clone()).expect("reader");
        (0..reader.num_row_groups())
            .map(|g| {
                let group = reader.get_row_group(g).expect("row group");
                (0..group.num_columns())
                    .map(|c| {
                        let mut pages = group.get_column_page_reader(c).expect("pages");
                        matches!(
                            pages.get_next_page().expect("page"),
                            Some(Page::DictionaryPage {
                                is_sorted: true,
                                ..
                            })
                        )
                    })
                    .collect()
            })
            .collect()
    }

    /// The two paths write the same values, statistics, level histograms
    /// and page index; the tag chunk path was taken for every tag chunk.
    pub(in crate::persist::compact) async fn check_against_arrow(
        batches: &[RecordBatch],
        page_rows: usize,
        row_group_rows: usize,
    ) -> Bytes {
        let ours = encode(batches, props(page_rows), row_group_rows, true).await;
        let arrow = encode(batches, props(page_rows), row_group_rows, false).await;
        let want: Vec<String> = batches.iter().flat_map(rows).collect();
        assert_eq!(read(&ours).iter().flat_map(rows).collect::<Vec<_>>(), want);
        assert_eq!(read(&arrow).iter().flat_map(rows).collect::<Vec<_>>(), want);

        let tags = batches[0].num_columns() - 1;
        for groups in sorted_dictionaries(&ours) {
            assert_eq!(groups[..tags], vec![true; tags], "tag chunk path taken");
        }
        let m1 = assert_same_metadata(&ours, &arrow, 0..tags);
        check_page_index(&m1, batches, page_rows, row_group_rows);
        ours
    }

    /// Column chunks `columns` of the two files agree: statistics, value
    /// counts, level histograms, value bytes, and the page index where the
    /// pages split alike. Returns the first file's metadata.
    pub(in crate::persist::compact) fn assert_same_metadata(
        ours: &Bytes,
        arrow: &Bytes,
        columns: std::ops::Range<usize>,
    ) -> ParquetMetaData {
        let (m1, m2) = (metadata(ours), metadata(arrow));
        assert_eq!(m1.num_row_groups(), m2.num_row_groups());
        let (ia, ib) = (
            m1.column_index().expect("ci"),
            m2.column_index().expect("ci"),
        );
        let (oa, ob) = (
            m1.offset_index().expect("oi"),
            m2.offset_index().expect("oi"),
        );
        for g in 0..m1.num_row_groups() {
            for c in columns.clone() {
                let (a, b) = (m1.row_group(g).column(c), m2.row_group(g).column(c));
                let at = format!("row group {g} column {c}");
                assert_eq!(a.statistics(), b.statistics(), "{at}");
                assert_eq!(a.num_values(), b.num_values(), "{at}");
                assert_eq!(
                    a.definition_level_histogram(),
                    b.definition_level_histogram(),
                    "{at}"
                );
                assert_eq!(
                    a.unencoded_byte_array_data_bytes(),
                    b.unencoded_byte_array_data_bytes(),
                    "{at}"
                );
                // The Arrow writer checks its page limits per written
                // array, so its pages only sometimes split where ours do.
                if first_rows(&oa[g][c]) == first_rows(&ob[g][c]) {
                    assert_eq!(ia[g][c], ib[g][c], "{at}: column index");
                    assert_eq!(
                        oa[g][c].unencoded_byte_array_data_bytes(),
                        ob[g][c].unencoded_byte_array_data_bytes(),
                        "{at}: page value bytes"
                    );
                }
            }
        }
        m1
    }

    fn first_rows(o: &OffsetIndexMetaData) -> Vec<i64> {
        o.page_locations()
            .iter()
            .map(|p| p.first_row_index)
            .collect()
    }

    /// The tag columns of `batches`, row by row.
    fn tag_strings(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
        let tags = batches[0].num_columns() - 1;
        (0..tags)
            .map(|c| {
                batches
                    .iter()
                    .flat_map(|b| {
                        let d = b.column(c).as_dictionary::<Int32Type>();
                        let v = d.values().as_string::<i32>();
                        d.keys()
                            .iter()
                            .map(|k| k.map(|k| v.value(k as usize).to_string()))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .collect()
    }

    /// Our page index against the data: pages of `page_rows` rows (the
    /// last of a row group fewer), each with its null count, value bytes
    /// and min/max bounds (truncated to 64 bytes like the Arrow writer's).
    fn check_page_index(
        md: &ParquetMetaData,
        batches: &[RecordBatch],
        page_rows: usize,
        row_group_rows: usize,
    ) {
        let strings = tag_strings(batches);
        let (ci, oi) = (
            md.column_index().expect("column index"),
            md.offset_index().expect("offset index"),
        );
        for (c, column) in strings.iter().enumerate() {
            for (g, group) in column.chunks(row_group_rows).enumerate() {
                let pages: Vec<&[Option<String>]> = group.chunks(page_rows).collect();
                let at = format!("row group {g} column {c}");
                let want_first: Vec<i64> =
                    (0..pages.len()).map(|p| (p * page_rows) as i64).collect();
                assert_eq!(first_rows(&oi[g][c]), want_first, "{at}");
                let ColumnIndexMetaData::BYTE_ARRAY(index) = &ci[g][c] else {
                    panic!("{at}: no byte array column index");
                };
                for (p, page) in pages.iter().enumerate() {
                    let present = page.iter().flatten();
                    let nulls = page.iter().filter(|v| v.is_none()).count();
                    assert_eq!(index.null_count(p), Some(nulls as i64), "{at} page {p}");
                    let bytes: usize = present.clone().map(String::len).sum();
                    let page_bytes = oi[g][c].unencoded_byte_array_data_bytes().map(|b| b[p]);
                    assert_eq!(page_bytes, Some(bytes as i64), "{at} page {p}");
                    match (present.clone().min(), present.max()) {
                        (Some(lo), Some(hi)) => {
                            assert!(!index.is_null_page(p));
                            let min = lower_bound(lo, Some(64)).0;
                            let max = upper_bound(hi, Some(64)).0;
                            assert_eq!(index.min_value(p), Some(&min[..]), "{at} page {p}");
                            assert_eq!(index.max_value(p), Some(&max[..]), "{at} page {p}");
                        }
                        _ => assert!(index.is_null_page(p), "{at} page {p}"),
                    }
                }
            }
        }
    }

    /// `n` distinct tag values, in sorted order.
    pub(in crate::persist::compact) fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("v{i:07}")).collect()
    }

    /// A seeded xorshift generator: reproducible keys without a dependency.
    pub(in crate::persist::compact) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// `n` keys sorted, in runs of `run`, with a null run first.
    fn sorted_keys(n: usize, distinct: u32, run: usize, nulls: usize) -> Vec<Option<u32>> {
        (0..n)
            .map(|i| (i >= nulls).then(|| ((i - nulls) / run.max(1)) as u32 % distinct.max(1)))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nulls_single_values_and_all_null_columns() {
        let n = 5000;
        // t0: sorted with a leading null run; t1: one value, with nulls
        // scattered; t2: all null over an empty dictionary; t3: all null
        // over a non-empty one; t4: one value, no nulls.
        let values = vec![names(40), names(1), Vec::new(), names(3), names(1)];
        let keys = vec![
            sorted_keys(n, 40, 97, 300),
            (0..n).map(|i| (i % 7 != 3).then_some(0)).collect(),
            vec![None; n],
            vec![None; n],
            vec![Some(0); n],
        ];
        let batches = tag_batches(&values, &keys, 777);
        let file = check_against_arrow(&batches, 1000, 3000).await;
        let md = metadata(&file);
        let chunk = md.row_group(0).column(2);
        assert_eq!(
            chunk.statistics().and_then(|s| s.null_count_opt()),
            Some(3000)
        );
        assert!(
            chunk
                .statistics()
                .is_some_and(|s| s.min_bytes_opt().is_none())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_distinct_values_bit_widths_pages_and_row_groups() {
        // 70,000 distinct values (17-bit keys), runs of 1..3 and random
        // keys (bit-packed), several pages and row groups.
        let n = 150_000;
        let distinct = 70_000;
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15);
        let values = vec![names(distinct), names(distinct), names(300)];
        let keys = vec![
            sorted_keys(n, distinct as u32, 2, 0),
            (0..n)
                .map(|_| {
                    let r = rand();
                    (!r.is_multiple_of(50)).then_some((r >> 8) as u32 % distinct as u32)
                })
                .collect(),
            (0..n).map(|i| Some((i / 3 % 300) as u32)).collect(),
        ];
        let batches = tag_batches(&values, &keys, 8192);
        let file = check_against_arrow(&batches, 4096, 60_000).await;
        let md = metadata(&file);
        assert_eq!(md.num_row_groups(), 3);
        let pages = &md.offset_index().expect("offset index")[0][0];
        assert_eq!(pages.page_locations().len(), 60_000usize.div_ceil(4096));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_referenced_values_in_each_dictionary() {
        // Row group 0 uses values 0..10, row group 1 values 90..100.
        let keys: Vec<Option<u32>> = (0..200)
            .map(|i| Some(if i < 100 { i / 10 } else { 90 + (i - 100) / 10 }))
            .collect();
        let batches = tag_batches(&[names(100)], &[keys], 64);
        let file = check_against_arrow(&batches, 1000, 100).await;
        let reader = SerializedFileReader::new(file).expect("reader");
        for g in 0..2 {
            let mut pages = reader
                .get_row_group(g)
                .expect("group")
                .get_column_page_reader(0)
                .expect("pages");
            let page = pages.get_next_page().expect("page").expect("dictionary");
            assert_eq!(page.page_type(), PageType::DICTIONARY_PAGE);
            assert_eq!(page.num_values(), 10, "row group {g}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_values_are_truncated_in_statistics_like_the_arrow_writer() {
        let long = |c: char, n: usize| std::iter::repeat_n(c, n).collect::<String>();
        // Multi-byte characters around the 64-byte cut, and a maximum
        // that cannot be incremented in place ('\u{10FFFF}' at the end).
        let mut values = vec![
            format!("a{}", long('é', 40)),
            format!("b{}", long('z', 100)),
            format!("c{}x", long('\u{10FFFF}', 16)),
            format!("{}\u{10FFFF}", long('d', 63)),
        ];
        values.sort();
        let keys: Vec<Option<u32>> = (0..400).map(|i| Some(i / 100)).collect();
        let batches = tag_batches(&[values], &[keys], 50);
        check_against_arrow(&batches, 100, 1000).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_without_one_sorted_values_array_fall_back() {
        // Unsorted values: refused at the first batch.
        let unsorted = tag_batches(
            &[vec!["b".into(), "a".into()]],
            &[vec![Some(0), Some(1)]],
            1,
        );
        // Sorted, but the second batch has its own values (equal content
        // is still shared): refused mid row group, after a batch was taken.
        let a = tag_batches(&[names(3)], &[vec![Some(0), Some(1), None]], 3);
        let b = tag_batches(&[names(3)], &[vec![Some(2), Some(2)]], 2);
        let c = tag_batches(&[names(4)], &[vec![Some(3), None]], 2);
        for (batches, tag_path) in [
            (unsorted, false),
            ([a.clone(), b.clone()].concat(), true),
            ([a, b, c].concat(), false),
        ] {
            let file = encode(&batches, props(1000), 1000, true).await;
            let want: Vec<String> = batches.iter().flat_map(rows).collect();
            assert_eq!(read(&file).iter().flat_map(rows).collect::<Vec<_>>(), want);
            assert_eq!(sorted_dictionaries(&file)[0][0], tag_path, "{want:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dictionary_over_the_page_limit_falls_back() {
        let batches = tag_batches(&[names(1000)], &[(0..1000).map(Some).collect()], 100);
        let props = WriterProperties::builder()
            .set_dictionary_page_size_limit(1000)
            .build();
        let file = encode(&batches, props, 1000, true).await;
        assert!(!sorted_dictionaries(&file)[0][0]);
        let want: Vec<String> = batches.iter().flat_map(rows).collect();
        assert_eq!(read(&file).iter().flat_map(rows).collect::<Vec<_>>(), want);
    }

    #[test]
    fn keys_out_of_range_are_an_error() {
        let values: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        let descr = parquet::arrow::ArrowSchemaConverter::new()
            .convert(&Schema::new(vec![Field::new("t", tag_type(), true)]))
            .expect("schema")
            .column(0);
        for bad in [2, -1] {
            // -1 is the null run's key internally: still out of range.
            let keys = Int32Array::from(vec![Some(0), None, Some(bad)]);
            // Built unchecked, like a corrupt input would be.
            let dict = unsafe { DictionaryArray::new_unchecked(keys, Arc::clone(&values)) };
            let mut chunk = TagChunk::new(Arc::clone(&descr), Arc::new(props(10)));
            assert!(chunk.push(&dict).is_err(), "key {bad}");
        }
    }

    #[test]
    fn statistics_bounds() {
        assert_eq!(lower_bound("abcdef", Some(3)), (b"abc".to_vec(), false));
        assert_eq!(upper_bound("abcdef", Some(3)), (b"abd".to_vec(), false));
        assert_eq!(upper_bound("abc", Some(3)), (b"abc".to_vec(), true));
        // 'é' is 2 bytes: the cut moves back to a character boundary.
        assert_eq!(
            lower_bound("aéé", Some(4)),
            ("aé".as_bytes().to_vec(), false)
        );
        assert_eq!(
            upper_bound("aéé", Some(4)),
            ("aê".as_bytes().to_vec(), false)
        );
        // The last character cannot grow: the one before it is incremented.
        assert_eq!(
            upper_bound("a\u{10FFFF}bc", Some(5)),
            (b"b".to_vec(), false)
        );
        assert_eq!(
            upper_bound("\u{10FFFF}\u{10FFFF}", Some(4)),
            ("\u{10FFFF}\u{10FFFF}".as_bytes().to_vec(), true)
        );
        assert_eq!(lower_bound("abc", None), (b"abc".to_vec(), true));
    }
}
