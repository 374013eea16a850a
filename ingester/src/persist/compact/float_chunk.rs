//! Float field column chunks with a dictionary of Sluice's own.
//!
//! A gauge whose values repeat (per series, or across series) keeps
//! Parquet's dictionary encoding: the file is several times smaller than
//! with byte stream split. But the Arrow writer pays for it per value: it
//! hashes each float into its interner, computes min and max twice (page
//! and chunk, with NaN checks) and bit-packs keys one by one. At full
//! ingest those float dictionaries were ~6% of the server's CPU (issue 7).
//!
//! Here a value costs one probe of an open-addressing table keyed by its
//! bit pattern (a multiply and a shift; the table of a row group's
//! distinct values stays in cache) and a `u32` key per row. At the end of
//! the row group the distinct values are sorted, every key is replaced by
//! its value's rank, and [`super::chunk_writer`] writes the pages: min and
//! max come from the smallest and largest rank, with Parquet's rules for
//! zeros (a minimum of ±0 is written as −0, a maximum as +0).
//!
//! The cost in memory: a row group's keys are held until it ends (the
//! pages' bit width depends on how many distinct values it has), 4 bytes
//! per row per float column — 40 MiB for the default 1 Mi-row group of ten
//! fields — where the Arrow writer holds its encoded pages.
//!
//! Declined, with what was taken replayed into the Arrow writer
//! ([`FloatChunk::replay`], bit for bit): a NaN (Parquet leaves NaN out of
//! the statistics; not worth a path of its own), and more distinct values
//! than the writer's dictionary page limit holds (where the Arrow writer
//! falls back to the column's fallback encoding).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, FieldRef, Float64Type};
use parquet::arrow::arrow_writer::{ArrowColumnWriter, compute_leaves};
use parquet::basic::Type as PhysicalType;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::ColumnDescPtr;

use super::chunk_writer::{
    ChunkBuilder, ChunkWriter, DictValues, EncodedChunk, NULL, key_width, nulls_for, runs_of,
    settings_supported,
};

/// Rows per array when replaying into the Arrow writer.
const REPLAY_ROWS: usize = 8192;

/// Slots of a new table (a power of two).
const FIRST_SLOTS: usize = 1024;

/// Entries of the cache of recent values (a power of two).
const RECENT: usize = 256;

/// An empty entry of the recent values' cache.
const NO_RECENT: (u64, u32) = (0, NULL);

/// Whether a column of `data_type` written with `props` can take this path.
pub(super) fn supported(
    data_type: &DataType,
    descr: &ColumnDescPtr,
    props: &WriterProperties,
) -> bool {
    *data_type == DataType::Float64
        && descr.physical_type() == PhysicalType::DOUBLE
        && settings_supported(descr, props)
}

/// One float column of one row group, as keys into its distinct values.
pub(super) struct FloatChunk {
    descr: ColumnDescPtr,
    props: Arc<WriterProperties>,
    /// Distinct values in first-seen order; a value's key is its position.
    values: Vec<f64>,
    /// Open addressing, linear probing: `key + 1` per slot, 0 when empty.
    /// At most half full.
    slots: Vec<u32>,
    /// `64 - log2(slots.len())`: a hash's top bits pick the slot.
    shift: u32,
    /// Direct-mapped (bits, key) of values seen lately. Rows arrive sorted
    /// by series, and a gauge repeats within its series: most values are
    /// found here, in a few KiB that stay in L1, before the table.
    recent: Box<[(u64, u32); RECENT]>,
    /// Per row: its value's key, or [`NULL`].
    keys: Vec<u32>,
    /// Distinct values the dictionary page may hold.
    max_values: usize,
}

impl FloatChunk {
    /// An empty chunk for the column `descr` (see [`supported`]).
    pub(super) fn new(descr: ColumnDescPtr, props: Arc<WriterProperties>) -> Self {
        // A PLAIN double takes 8 bytes; the Arrow writer gives up its
        // dictionary once it reaches the limit.
        let limit = props.column_dictionary_page_size_limit(descr.path());
        Self {
            descr,
            props,
            values: Vec::new(),
            slots: vec![0; FIRST_SLOTS],
            shift: 64 - FIRST_SLOTS.trailing_zeros(),
            recent: Box::new([NO_RECENT; RECENT]),
            keys: Vec::new(),
            max_values: limit.saturating_sub(1) / 8,
        }
    }

    /// The key of `v` (not NaN), added if new; `None` when the dictionary
    /// would outgrow its page.
    #[inline(always)]
    fn intern(&mut self, v: f64) -> Option<u32> {
        let bits = v.to_bits();
        let h = hash(bits);
        let recent = (h >> (64 - RECENT.trailing_zeros())) as usize;
        let (seen, key) = self.recent[recent];
        if seen == bits && key != NULL {
            return Some(key);
        }
        let mask = self.slots.len() - 1;
        let mut at = (h >> self.shift) as usize;
        loop {
            match self.slots[at] {
                0 => break,
                k if self.values[k as usize - 1].to_bits() == bits => {
                    self.recent[recent] = (bits, k - 1);
                    return Some(k - 1);
                }
                _ => at = (at + 1) & mask,
            }
        }
        if self.values.len() >= self.max_values {
            return None;
        }
        // Keys stay below `max_values`, far below 2^32 - 1.
        let key = self.values.len() as u32;
        self.values.push(v);
        self.slots[at] = key + 1;
        self.recent[recent] = (bits, key);
        if self.values.len() * 2 > self.slots.len() {
            self.grow();
        }
        Some(key)
    }

    fn grow(&mut self) {
        let len = self.slots.len() * 2;
        self.slots = vec![0; len];
        self.shift = 64 - len.trailing_zeros();
        let mask = len - 1;
        for (k, v) in self.values.iter().enumerate() {
            let mut at = (hash(v.to_bits()) >> self.shift) as usize;
            while self.slots[at] != 0 {
                at = (at + 1) & mask;
            }
            self.slots[at] = k as u32 + 1;
        }
    }

    /// Appends the keys of `values`; false at a NaN or a dictionary over
    /// its limit.
    fn add_values(&mut self, values: &[f64]) -> bool {
        self.keys.reserve(values.len());
        for &v in values {
            if v.is_nan() {
                return false;
            }
            let Some(key) = self.intern(v) else {
                return false;
            };
            self.keys.push(key);
        }
        true
    }

    /// [`add_values`](Self::add_values) for the valid slots of `values`,
    /// [`NULL`] for the others.
    fn add_nullable(&mut self, values: &[f64], nulls: &NullBuffer) -> bool {
        let mut at = 0;
        for (start, end) in nulls.valid_slices() {
            self.keys.extend(std::iter::repeat_n(NULL, start - at));
            if !self.add_values(&values[start..end]) {
                return false;
            }
            at = end;
        }
        self.keys
            .extend(std::iter::repeat_n(NULL, values.len() - at));
        true
    }

    /// The rows taken so far as arrays of at most [`REPLAY_ROWS`] rows.
    fn taken(&self) -> impl Iterator<Item = ArrayRef> + '_ {
        self.keys.chunks(REPLAY_ROWS).map(|keys| {
            let values: ScalarBuffer<f64> = keys
                .iter()
                .map(|&k| self.values.get(k as usize).copied().unwrap_or_default())
                .collect();
            let nulls = NullBuffer::from_iter(keys.iter().map(|&k| k != NULL));
            let nulls = (nulls.null_count() > 0).then_some(nulls);
            Arc::new(Float64Array::new(values, nulls)) as ArrayRef
        })
    }
}

/// A multiplicative hash of a value's bit pattern, whose top bits pick
/// slots. The fold first lets the low mantissa bits reach them too.
#[inline(always)]
fn hash(bits: u64) -> u64 {
    (bits ^ (bits >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl ChunkBuilder for FloatChunk {
    fn push(&mut self, array: &dyn Array) -> Result<bool, ParquetError> {
        let Some(floats) = array.as_primitive_opt::<Float64Type>() else {
            return Ok(false);
        };
        // Pages count values in u32.
        if self.keys.len() + floats.len() > u32::MAX as usize {
            return Ok(false);
        }
        let before = self.keys.len();
        let values = floats.values();
        let taken = match nulls_for(&self.descr, floats.nulls())? {
            None => self.add_values(values),
            Some(nulls) => self.add_nullable(values, nulls),
        };
        if !taken {
            // Replay feeds what was taken before this array; the caller
            // writes the array itself.
            self.keys.truncate(before);
        }
        Ok(taken)
    }

    fn replay(&self, field: &FieldRef, writer: &mut ArrowColumnWriter) -> Result<(), ParquetError> {
        for array in self.taken() {
            for leaf in compute_leaves(field, &array)? {
                writer.write(&leaf)?;
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<Option<EncodedChunk>, ParquetError> {
        let rows = self.keys.len();
        // `intern` kept the dictionary within its page limit.
        if rows == 0 {
            return Ok(None);
        }
        // The dictionary page keeps the values in first-seen order: a
        // series' few values then have nearby keys, which zstd compresses
        // better (sorted, the file grew by a sixth on TSBS-like gauges).
        // The chunk writer is given ranks (keys in the order of their
        // values; no NaN here, so `total_cmp` is the numeric order, −0
        // before +0) for the statistics, and `order` maps a rank back to
        // the key written.
        let mut order: Vec<u32> = (0..self.values.len() as u32).collect();
        order
            .sort_unstable_by(|&a, &b| self.values[a as usize].total_cmp(&self.values[b as usize]));
        let mut rank = vec![0u32; order.len()];
        let mut sorted = Vec::with_capacity(order.len());
        for (r, &k) in order.iter().enumerate() {
            rank[k as usize] = r as u32;
            sorted.push(self.values[k as usize]);
        }
        let mut dictionary = Vec::with_capacity(self.values.len() * 8);
        for v in &self.values {
            dictionary.extend_from_slice(&v.to_le_bytes());
        }
        let distinct = sorted.len() as u32;
        let bit_width = key_width(distinct);

        let values = F64Values(&sorted);
        let mut out = ChunkWriter::new(&self.descr, &self.props, &values, &order, bit_width)?;
        out.dictionary_page(dictionary, distinct, false)?;
        let ranks = self
            .keys
            .iter()
            .map(|&k| if k == NULL { NULL } else { rank[k as usize] });
        out.data_pages(runs_of(ranks), rows)?;
        out.finish(rows).map(Some)
    }
}

/// A float dictionary's values, ascending (keys are ranks).
struct F64Values<'a>(&'a [f64]);

impl F64Values<'_> {
    fn value(&self, key: u32) -> f64 {
        self.0.get(key as usize).copied().unwrap_or_default()
    }

    /// Parquet's statistics bounds: a minimum of ±0 is −0, a maximum +0.
    fn min(&self, key: u32) -> f64 {
        let v = self.value(key);
        if v == 0.0 { -0.0 } else { v }
    }

    fn max(&self, key: u32) -> f64 {
        let v = self.value(key);
        if v == 0.0 { 0.0 } else { v }
    }
}

impl DictValues for F64Values<'_> {
    const PHYSICAL: PhysicalType = PhysicalType::DOUBLE;

    fn value_len(&self, _: u32) -> Option<i64> {
        None
    }

    fn lower(&self, key: u32, _: Option<usize>) -> (Vec<u8>, bool) {
        (self.min(key).to_le_bytes().to_vec(), true)
    }

    fn upper(&self, key: u32, _: Option<usize>) -> (Vec<u8>, bool) {
        (self.max(key).to_le_bytes().to_vec(), true)
    }

    fn statistics(
        &self,
        min_max: Option<(u32, u32)>,
        nulls: u64,
        _: Option<usize>,
        signed: bool,
    ) -> Statistics {
        let (min, max) = match min_max {
            Some((lo, hi)) => (Some(self.min(lo)), Some(self.max(hi))),
            None => (None, None),
        };
        Statistics::Double(
            ValueStatistics::new(min, max, None, Some(nulls), false)
                .with_backwards_compatible_min_max(signed),
        )
    }

    /// As the Arrow writer compares page bounds: numerically, so −0 and
    /// +0 are equal.
    fn greater(&self, a: u32, b: u32) -> bool {
        self.value(a) > self.value(b)
    }
}

#[cfg(test)]
mod tests {
    //! The float chunk path against the Arrow writer: same values (bit for
    //! bit), statistics, level histograms and page index.

    use arrow::array::RecordBatch;
    use arrow::datatypes::{Field, Schema};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;
    use parquet::file::properties::EnabledStatistics;
    use proptest::prelude::*;

    use super::*;
    use crate::persist::compact::tag_chunk::tests::{
        assert_same_metadata, encode, props, read, xorshift,
    };

    /// Batches of `batch_rows` rows with one float column per entry of
    /// `columns` (`f0`, `f1`, …; nullable unless `required`).
    fn float_batches(
        columns: &[Vec<Option<f64>>],
        required: bool,
        batch_rows: usize,
    ) -> Vec<RecordBatch> {
        let n = columns.first().map_or(0, Vec::len);
        let fields: Vec<Field> = (0..columns.len())
            .map(|i| Field::new(format!("f{i}"), DataType::Float64, !required))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let arrays: Vec<ArrayRef> = columns
            .iter()
            .map(|c| Arc::new(Float64Array::from(c.clone())) as ArrayRef)
            .collect();
        let whole = RecordBatch::try_new(schema, arrays).expect("batch");
        (0..n)
            .step_by(batch_rows.max(1))
            .map(|at| whole.slice(at, batch_rows.min(n - at)))
            .collect()
    }

    /// Column `c` of `batches` as bit patterns (`None` for null).
    fn bits(batches: &[RecordBatch], c: usize) -> Vec<Option<u64>> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column(c).as_primitive::<Float64Type>();
                (0..a.len())
                    .map(|i| a.is_valid(i).then(|| a.value(i).to_bits()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Encodes `batches` both ways; checks values, metadata and page
    /// index; returns our file and whether each column took the float
    /// path (a sorted dictionary page in every row group).
    async fn check_against_arrow(
        batches: &[RecordBatch],
        page_rows: usize,
        row_group_rows: usize,
    ) -> Vec<bool> {
        let ours = encode(batches, props(page_rows), row_group_rows, true).await;
        let arrow = encode(batches, props(page_rows), row_group_rows, false).await;
        let columns = batches[0].num_columns();
        let (got, theirs) = (read(&ours), read(&arrow));
        for c in 0..columns {
            assert_eq!(bits(&got, c), bits(batches, c), "column {c}: ours");
            assert_eq!(bits(&theirs, c), bits(batches, c), "column {c}: Arrow's");
        }
        let m1 = assert_same_metadata(&ours, &arrow, 0..columns);
        check_page_index(&m1, batches, page_rows, row_group_rows);
        (0..columns)
            .map(|c| takes_float_path(batches, c, row_group_rows))
            .collect()
    }

    /// Whether every row group of column `c` takes the float path: a
    /// [`FloatChunk`] accepts all its rows and encodes them.
    fn takes_float_path(batches: &[RecordBatch], c: usize, row_group_rows: usize) -> bool {
        let field = batches[0].schema().field(c).clone();
        let descr = parquet::arrow::ArrowSchemaConverter::new()
            .convert(&Schema::new(vec![field]))
            .expect("schema")
            .column(0);
        let whole = arrow::compute::concat(
            &batches
                .iter()
                .map(|b| b.column(c).as_ref())
                .collect::<Vec<_>>(),
        )
        .expect("concat");
        (0..whole.len()).step_by(row_group_rows).all(|at| {
            let group = whole.slice(at, row_group_rows.min(whole.len() - at));
            let mut chunk = FloatChunk::new(Arc::clone(&descr), Arc::new(props(1000)));
            chunk.push(group.as_ref()).expect("push") && chunk.finish().expect("finish").is_some()
        })
    }

    /// Our page index against the data: per page its null count and
    /// min/max (zeros as Parquet writes them), for a file whose columns
    /// all took the float path or not.
    fn check_page_index(
        md: &parquet::file::metadata::ParquetMetaData,
        batches: &[RecordBatch],
        page_rows: usize,
        row_group_rows: usize,
    ) {
        let (ci, oi) = (
            md.column_index().expect("ci"),
            md.offset_index().expect("oi"),
        );
        for c in 0..batches[0].num_columns() {
            let values: Vec<Option<f64>> = bits(batches, c)
                .into_iter()
                .map(|b| b.map(f64::from_bits))
                .collect();
            for (g, group) in values.chunks(row_group_rows).enumerate() {
                let pages = oi[g][c].page_locations();
                if pages.len() != group.len().div_ceil(page_rows) {
                    // The Arrow writer's own page split (a fallback).
                    continue;
                }
                let ColumnIndexMetaData::DOUBLE(index) = &ci[g][c] else {
                    panic!("row group {g} column {c}: no double column index");
                };
                for (p, page) in group.chunks(page_rows).enumerate() {
                    let at = format!("row group {g} column {c} page {p}");
                    let present: Vec<f64> = page.iter().flatten().copied().collect();
                    let nulls = page.len() - present.len();
                    assert_eq!(index.null_count(p), Some(nulls as i64), "{at}");
                    if present.is_empty() {
                        assert!(index.is_null_page(p), "{at}");
                        continue;
                    }
                    let min = present.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let min = if min == 0.0 { -0.0 } else { min };
                    let max = if max == 0.0 { 0.0 } else { max };
                    let got = (index.min_value(p).copied(), index.max_value(p).copied());
                    assert_eq!(got.0.map(f64::to_bits), Some(min.to_bits()), "{at}: min");
                    assert_eq!(got.1.map(f64::to_bits), Some(max.to_bits()), "{at}: max");
                }
            }
        }
    }

    /// `n` values drawn from `pool`, every `null_every`-th null (0: none).
    fn draw(n: usize, pool: &[f64], null_every: usize, seed: u64) -> Vec<Option<f64>> {
        let mut rand = xorshift(seed);
        (0..n)
            .map(|i| {
                let v = pool[(rand() >> 11) as usize % pool.len()];
                (null_every == 0 || i % null_every != 0).then_some(v)
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_values_nulls_and_zeros_match_the_arrow_writer() {
        let n = 30_000;
        let gauges: Vec<f64> = (0..200).map(|i| f64::from(i) * 0.25 - 10.0).collect();
        let zeros = [0.0, -0.0, 1.5];
        let columns = vec![
            // Many pages, nulls scattered.
            draw(n, &gauges, 7, 1),
            // ±0 around small values: min −0, max +0 rules.
            draw(n, &zeros, 0, 2),
            draw(n, &[-0.0, -1.0], 5, 3),
            draw(n, &[0.0], 3, 4),
            // Infinities and the extremes of f64.
            draw(
                n,
                &[
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    f64::MAX,
                    f64::MIN_POSITIVE,
                    5e-324,
                ],
                0,
                5,
            ),
            // All null, and one value.
            vec![None; n],
            vec![Some(42.0); n],
        ];
        let batches = float_batches(&columns, false, 4096);
        let taken = check_against_arrow(&batches, 1000, 12_000).await;
        assert_eq!(taken, vec![true; columns.len()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn required_columns_and_wide_keys() {
        // 5,000 distinct values: 13-bit keys, mostly bit-packed.
        let pool: Vec<f64> = (0..5000).map(|i| f64::from(i).sqrt()).collect();
        let columns = vec![draw(20_000, &pool, 0, 9), draw(20_000, &pool[..3], 0, 10)];
        let batches = float_batches(&columns, true, 3000);
        let taken = check_against_arrow(&batches, 4096, 8192).await;
        assert_eq!(taken, vec![true, true]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nan_or_too_many_values_falls_back_bit_for_bit() {
        let n = 6000;
        let pool = [1.0, 2.0, -0.0];
        // A NaN in the second batch: refused mid row group, after a batch
        // was taken.
        let mut with_nan = draw(n, &pool, 9, 11);
        with_nan[2500] = Some(f64::NAN);
        // A negative NaN with a payload in the first batch.
        let mut nan_first = draw(n, &pool, 0, 12);
        nan_first[3] = Some(f64::from_bits(0xFFF8_0000_0000_0001));
        // 1,000 distinct values over a 4 KiB dictionary page limit (512
        // doubles): refused when the 512th arrives.
        let many: Vec<Option<f64>> = (0..n).map(|i| Some((i % 1000) as f64 / 7.0)).collect();
        let columns = vec![with_nan, nan_first, many, draw(n, &pool, 4, 13)];
        let batches = float_batches(&columns, false, 2000);
        let limited = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(
                parquet::basic::ZstdLevel::try_new(1).expect("level"),
            ))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_dictionary_page_size_limit(4096)
            .build();
        let file = encode(&batches, limited, 6000, true).await;
        let got = read(&file);
        for c in 0..columns.len() {
            assert_eq!(bits(&got, c), bits(&batches, c), "column {c}");
        }
        let taken: Vec<bool> = (0..columns.len())
            .map(|c| takes_float_path(&batches, c, 6000))
            .collect();
        assert_eq!(
            taken,
            vec![false, false, true, true],
            "a NaN declines; 1,000 values fit the default page limit"
        );
        // Under the 4 KiB limit the third column declines too: the
        // encoder's chunk (one row group) replays into the Arrow writer.
        let descr = parquet::arrow::ArrowSchemaConverter::new()
            .convert(&batches[0].schema())
            .expect("schema")
            .column(2);
        let limited = WriterProperties::builder()
            .set_dictionary_page_size_limit(4096)
            .build();
        let mut chunk = FloatChunk::new(descr, Arc::new(limited));
        let column = batches[0].column(2);
        assert!(chunk.push(column.slice(0, 300).as_ref()).expect("push"));
        assert!(!chunk.push(column.slice(300, 300).as_ref()).expect("push"));
        // What was taken before the refusal replays as it was.
        assert_eq!(chunk.keys.len(), 300);
        let replayed = arrow::compute::concat(
            &chunk
                .taken()
                .collect::<Vec<_>>()
                .iter()
                .map(|a| a.as_ref())
                .collect::<Vec<_>>(),
        )
        .expect("concat");
        assert_eq!(replayed.as_ref(), column.slice(0, 300).as_ref());
    }

    #[test]
    fn the_table_finds_every_value_again_as_it_grows() {
        let descr = parquet::arrow::ArrowSchemaConverter::new()
            .convert(&Schema::new(vec![Field::new("f", DataType::Float64, true)]))
            .expect("schema")
            .column(0);
        let mut chunk = FloatChunk::new(descr, Arc::new(WriterProperties::default()));
        let values: Vec<f64> = (0..50_000).map(|i| f64::from(i) * 1e-3 - 7.0).collect();
        let keys: Vec<u32> = values
            .iter()
            .map(|&v| chunk.intern(v).expect("room"))
            .collect();
        assert_eq!(keys, (0..50_000).collect::<Vec<u32>>());
        assert!(chunk.slots.len() >= 2 * values.len());
        for (k, &v) in values.iter().enumerate().rev() {
            assert_eq!(chunk.intern(v), Some(k as u32));
        }
        // −0 and +0 are different values (their bits differ).
        let zero = chunk.intern(0.0).expect("room");
        assert_ne!(chunk.intern(-0.0).expect("room"), zero);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Any mix of values (from a pool with zeros, infinities and
        /// subnormals), nulls, batch, page and row group sizes encodes like
        /// the Arrow writer does.
        #[test]
        fn float_chunks_match_the_arrow_writer(
            pool in prop::collection::vec(
                prop_oneof![
                    Just(0.0), Just(-0.0), Just(f64::INFINITY), Just(f64::NEG_INFINITY),
                    Just(5e-324), -1e6..1e6f64,
                ],
                1..40,
            ),
            n in 1usize..3000,
            null_every in 0usize..5,
            batch_rows in 1usize..700,
            page_rows in 1usize..900,
            row_group_rows in 1usize..2000,
            seed in any::<u64>(),
        ) {
            let columns = vec![draw(n, &pool, null_every, seed | 1)];
            let batches = float_batches(&columns, false, batch_rows);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("runtime");
            let taken = rt.block_on(check_against_arrow(&batches, page_rows, row_group_rows));
            prop_assert_eq!(taken, vec![true]);
        }
    }
}
