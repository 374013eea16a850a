//! Dictionary-encoded column chunks written page by page, without the
//! Arrow writer.
//!
//! Parquet's Arrow writer interns every value of a dictionary column into
//! its own hash table, computes min and max per value for the statistics,
//! and bit-packs keys one at a time. For the columns a persist writes most,
//! Sluice knows better: tag columns already arrive as sorted dictionary
//! keys ([`super::tag_chunk`]), and float fields are interned with one
//! multiply-and-shift probe per value ([`super::float_chunk`]). Both end
//! with the same thing, written here:
//!
//! - a dictionary page, PLAIN, its values in ascending order (flagged
//!   sorted), so that a key orders like its value and a page's min and max
//!   are the values of its smallest and largest key: no value comparison
//!   per row;
//! - data pages as v1 pages (what `ArrowWriter` writes with Sluice's
//!   settings): definition levels and keys, each in the RLE / bit-packed
//!   hybrid encoding, compressed, split by row count and page size;
//! - what `ArrowColumnWriter` would record with the same properties: chunk
//!   statistics, level histograms, encoding stats, column index and offset
//!   index. The chunk is spliced into its row group with
//!   `SerializedRowGroupWriter::append_column`.
//!
//! [`DictValues`] is the one thing that differs by type: a dictionary's
//! value bytes, statistics and order.

use std::sync::Arc;

use arrow::array::Array;
use arrow::buffer::NullBuffer;
use arrow::datatypes::FieldRef;
use bytes::Bytes;
use parquet::arrow::arrow_writer::ArrowColumnWriter;
use parquet::basic::{
    BoundaryOrder, Compression, Encoding, EncodingMask, PageType, Type as PhysicalType,
};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, LevelHistogram, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// A column chunk built by Sluice rather than the Arrow writer, batch by
/// batch; the encoder falls back to the Arrow writer whenever it declines.
pub(super) trait ChunkBuilder: Send + 'static {
    /// Takes `array`'s rows; `Ok(false)` (nothing taken) if this chunk
    /// cannot: the caller then replays and writes the rest with the Arrow
    /// writer.
    fn push(&mut self, array: &dyn Array) -> Result<bool, ParquetError>;

    /// Feeds the rows taken so far to `writer`, as they were.
    fn replay(&self, field: &FieldRef, writer: &mut ArrowColumnWriter) -> Result<(), ParquetError>;

    /// The encoded chunk, or `None` when the Arrow writer should write it
    /// (no rows, or the dictionary is over its page limit).
    fn finish(&self) -> Result<Option<EncodedChunk>, ParquetError>;
}

/// Whether `props` for the column `descr` are settings the chunk writer
/// implements: flat, v1 pages, dictionary on, zstd or no compression, no
/// bloom filter, no content-defined chunking.
pub(super) fn settings_supported(descr: &ColumnDescPtr, props: &WriterProperties) -> bool {
    let path = descr.path();
    descr.max_rep_level() == 0
        && descr.max_def_level() <= 1
        && props.writer_version() == WriterVersion::PARQUET_1_0
        && props.dictionary_enabled(path)
        && props.bloom_filter_properties(path).is_none()
        && props.content_defined_chunking().is_none()
        && matches!(
            props.compression(path),
            Compression::UNCOMPRESSED | Compression::ZSTD(_)
        )
}

/// The nulls of an array for the column `descr`: `None` when it has none,
/// an error when it has some and the column is required.
pub(super) fn nulls_for<'a>(
    descr: &ColumnDescPtr,
    nulls: Option<&'a NullBuffer>,
) -> Result<Option<&'a NullBuffer>, ParquetError> {
    match nulls.filter(|n| n.null_count() > 0) {
        Some(_) if descr.max_def_level() == 0 => Err(ParquetError::General(format!(
            "column {} is required but has nulls",
            descr.path()
        ))),
        nulls => Ok(nulls),
    }
}

/// A dictionary's values, as the chunk writer needs them. The keys of
/// the runs it is given order like their values; its `remap` turns a key
/// into the value's position in the dictionary page.
pub(super) trait DictValues {
    /// The values' Parquet physical type.
    const PHYSICAL: PhysicalType;

    /// The unencoded size of key `key`'s value, counted for byte arrays
    /// only (`None` for fixed-width types).
    fn value_len(&self, key: u32) -> Option<i64>;

    /// A lower bound of key `key`'s value as statistics bytes, at most
    /// `truncate` long where the type allows, and whether it is exact.
    fn lower(&self, key: u32, truncate: Option<usize>) -> (Vec<u8>, bool);

    /// An upper bound, like [`lower`](Self::lower).
    fn upper(&self, key: u32, truncate: Option<usize>) -> (Vec<u8>, bool);

    /// Statistics of the values of keys `min_max` (smallest, largest) and
    /// `nulls` nulls; `signed`: the column's sort order is signed (for the
    /// deprecated min/max fields).
    fn statistics(
        &self,
        min_max: Option<(u32, u32)>,
        nulls: u64,
        truncate: Option<usize>,
        signed: bool,
    ) -> Statistics;

    /// Whether key `a`'s value is greater than key `b`'s as Parquet
    /// compares statistics (the page index's boundary order).
    fn greater(&self, a: u32, b: u32) -> bool;
}

/// The key of a run of nulls (valid keys are below 2^31).
pub(super) const NULL: u32 = u32::MAX;

/// Runs this long or longer are RLE runs; shorter ones are bit-packed
/// (what parquet's own encoder does).
const MIN_RLE_RUN: u32 = 8;

/// `len` consecutive rows with dictionary key `key` (or null: [`NULL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) key: u32,
    pub(super) len: u32,
}

/// An encoded column chunk and its metadata (offsets relative to `data`).
pub(super) struct EncodedChunk {
    pub(super) data: Bytes,
    pub(super) close: ColumnCloseResult,
}

/// Bits per dictionary key for `distinct` values.
pub(super) fn key_width(distinct: u32) -> u8 {
    (u32::BITS - distinct.saturating_sub(1).leading_zeros()) as u8
}

/// `keys` as runs of equal keys.
pub(super) fn runs_of(keys: impl IntoIterator<Item = u32>) -> impl Iterator<Item = Run> {
    let mut keys = keys.into_iter().peekable();
    std::iter::from_fn(move || {
        let key = keys.next()?;
        let mut len = 1;
        while keys.next_if_eq(&key).is_some() {
            len += 1;
        }
        Some(Run { key, len })
    })
}

/// Rows per data page: the writer's row count limit, and no more than the
/// data page size limit holds at worst (every value bit-packed).
fn page_rows(props: &WriterProperties, descr: &ColumnDescPtr, bit_width: u8) -> usize {
    let bits = usize::from(bit_width) + descr.max_def_level() as usize;
    let by_size = match bits {
        0 => usize::MAX,
        b => (props
            .column_data_page_size_limit(descr.path())
            .saturating_mul(8)
            / b)
            .max(8),
    };
    props.data_page_row_count_limit().min(by_size).max(1)
}

/// zstd or nothing (see [`supported`]).
enum Codec {
    None,
    Zstd(zstd::bulk::Compressor<'static>),
}

impl Codec {
    fn new(compression: Compression) -> Result<Self, ParquetError> {
        match compression {
            Compression::UNCOMPRESSED => Ok(Self::None),
            Compression::ZSTD(level) => zstd::bulk::Compressor::new(level.compression_level())
                .map(Self::Zstd)
                .map_err(|e| ParquetError::External(Box::new(e))),
            other => Err(ParquetError::NYI(format!(
                "tag chunks compressed with {other}"
            ))),
        }
    }

    fn compress(&mut self, data: &[u8]) -> Result<Bytes, ParquetError> {
        match self {
            Self::None => Ok(Bytes::copy_from_slice(data)),
            Self::Zstd(c) => c
                .compress(data)
                .map(Bytes::from)
                .map_err(|e| ParquetError::External(Box::new(e))),
        }
    }
}

/// Writes one chunk's pages and gathers its metadata.
pub(super) struct ChunkWriter<'a, V> {
    descr: &'a ColumnDescPtr,
    props: &'a WriterProperties,
    values: &'a V,
    remap: &'a [u32],
    bit_width: u8,
    codec: Codec,
    compression: Compression,
    sink: TrackedWrite<Vec<u8>>,
    statistics: EnabledStatistics,
    /// Uncompressed page, and the bit-packed run being built.
    buf: Vec<u8>,
    packed: Vec<u8>,

    pages: i32,
    data_page_offset: Option<u64>,
    compressed: u64,
    uncompressed: u64,
    num_values: u64,
    nulls: u64,
    value_bytes: i64,
    /// Smallest and largest key (they order like their values).
    min_max: Option<(u32, u32)>,
    def_histogram: Option<LevelHistogram>,
    column_index: Option<ColumnIndexBuilder>,
    offset_index: Option<OffsetIndexBuilder>,
    /// Min and max key of the last page with values; page bounds so far
    /// ascending / descending.
    last_page: Option<(u32, u32)>,
    ascending: bool,
    descending: bool,
}

/// What one data page holds.
struct PageStats {
    nulls: u64,
    value_bytes: i64,
    min_max: Option<(u32, u32)>,
    def_histogram: Option<LevelHistogram>,
}

impl<'a, V: DictValues> ChunkWriter<'a, V> {
    pub(super) fn new(
        descr: &'a ColumnDescPtr,
        props: &'a WriterProperties,
        values: &'a V,
        remap: &'a [u32],
        bit_width: u8,
    ) -> Result<Self, ParquetError> {
        let compression = props.compression(descr.path());
        let statistics = props.statistics_enabled(descr.path());
        let def_histogram = (statistics != EnabledStatistics::None)
            .then(|| LevelHistogram::try_new(descr.max_def_level()))
            .flatten();
        Ok(Self {
            descr,
            props,
            values,
            remap,
            bit_width,
            codec: Codec::new(compression)?,
            compression,
            sink: TrackedWrite::new(Vec::new()),
            statistics,
            buf: Vec::new(),
            packed: Vec::new(),
            pages: 0,
            data_page_offset: None,
            compressed: 0,
            uncompressed: 0,
            num_values: 0,
            nulls: 0,
            value_bytes: 0,
            min_max: None,
            def_histogram,
            column_index: (statistics == EnabledStatistics::Page)
                .then(|| ColumnIndexBuilder::new(descr.physical_type())),
            offset_index: (!props.offset_index_disabled()).then(OffsetIndexBuilder::new),
            last_page: None,
            ascending: true,
            descending: true,
        })
    }

    fn write(&mut self, page: Page, uncompressed: usize) -> Result<u64, ParquetError> {
        let offset = self.sink.bytes_written() as u64;
        let spec = SerializedPageWriter::new(&mut self.sink)
            .write_page(CompressedPage::new(page, uncompressed))?;
        self.compressed += spec.compressed_size as u64;
        self.uncompressed += spec.uncompressed_size as u64;
        Ok(offset)
    }

    /// Writes the dictionary page: `distinct` PLAIN values, `sorted` if
    /// ascending.
    pub(super) fn dictionary_page(
        &mut self,
        plain: Vec<u8>,
        distinct: u32,
        sorted: bool,
    ) -> Result<(), ParquetError> {
        let buf = self.codec.compress(&plain)?;
        self.write(
            Page::DictionaryPage {
                buf,
                num_values: distinct,
                encoding: Encoding::PLAIN,
                is_sorted: sorted,
            },
            plain.len(),
        )?;
        Ok(())
    }

    /// Encodes the chunk's `rows` rows, given as `runs`, as data pages of
    /// [`page_rows`] rows (the last may be shorter); a run that crosses a
    /// page's end is split there.
    pub(super) fn data_pages(
        &mut self,
        runs: impl IntoIterator<Item = Run>,
        rows: usize,
    ) -> Result<(), ParquetError> {
        let page_rows = page_rows(self.props, self.descr, self.bit_width);
        let mut page = Vec::new();
        // Rows in `page`, and in the pages written before it.
        let (mut filled, mut written) = (0usize, 0usize);
        for mut run in runs {
            while run.len > 0 {
                let take = (run.len as usize).min(page_rows - filled);
                page.push(Run {
                    key: run.key,
                    len: take as u32,
                });
                run.len -= take as u32;
                filled += take;
                if filled == page_rows {
                    self.data_page(&page, filled)?;
                    page.clear();
                    written += filled;
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            self.data_page(&page, filled)?;
            written += filled;
        }
        if written != rows {
            return Err(ParquetError::General(format!(
                "a chunk of {rows} rows had runs of {written}"
            )));
        }
        Ok(())
    }

    /// Encodes `rows` rows (`runs`) as one data page.
    fn data_page(&mut self, runs: &[Run], rows: usize) -> Result<(), ParquetError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut stats = PageStats {
            nulls: 0,
            value_bytes: 0,
            min_max: None,
            def_histogram: self
                .def_histogram
                .is_some()
                .then(|| LevelHistogram::try_new(self.descr.max_def_level()))
                .flatten(),
        };
        if self.descr.max_def_level() > 0 {
            // v1 levels: their length, then the hybrid encoding.
            buf.extend_from_slice(&[0; 4]);
            let mut levels = Hybrid::new(1, &mut buf, &mut self.packed);
            for r in runs {
                levels.put(u32::from(r.key != NULL), r.len);
            }
            levels.finish();
            let len = (buf.len() - 4) as u32;
            buf[..4].copy_from_slice(&len.to_le_bytes());
        }
        buf.push(self.bit_width);
        let mut keys = Hybrid::new(self.bit_width, &mut buf, &mut self.packed);
        for r in runs {
            if r.key == NULL {
                stats.nulls += u64::from(r.len);
                continue;
            }
            keys.put(self.remap[r.key as usize], r.len);
            if let Some(len) = self.values.value_len(r.key) {
                stats.value_bytes += len * i64::from(r.len);
            }
            stats.min_max = Some(match stats.min_max {
                None => (r.key, r.key),
                Some((lo, hi)) => (lo.min(r.key), hi.max(r.key)),
            });
        }
        keys.finish();
        if let Some(h) = &mut stats.def_histogram {
            let valid = rows as u64 - stats.nulls;
            h.increment_by(0, stats.nulls as i64);
            h.increment_by(1, valid as i64);
        }

        let header_statistics = (self.statistics == EnabledStatistics::Page
            && self.props.write_page_header_statistics(self.descr.path()))
        .then(|| {
            stats.min_max.map(|(lo, hi)| {
                self.values.statistics(
                    Some((lo, hi)),
                    stats.nulls,
                    self.props.statistics_truncate_length(),
                    self.descr.sort_order().is_signed(),
                )
            })
        })
        .flatten();
        let uncompressed = buf.len();
        let data = self.codec.compress(&buf)?;
        self.buf = buf;
        let offset = self.write(
            Page::DataPage {
                buf: data,
                num_values: rows as u32,
                encoding: Encoding::RLE_DICTIONARY,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: header_statistics,
            },
            uncompressed,
        )?;
        let size = self.sink.bytes_written() as u64 - offset;
        self.data_page_offset.get_or_insert(offset);
        self.pages += 1;
        self.num_values += rows as u64;
        self.record_page(&stats, rows, offset, size);
        Ok(())
    }

    /// Adds a page to the chunk's totals and page index.
    fn record_page(&mut self, stats: &PageStats, rows: usize, offset: u64, size: u64) {
        self.nulls += stats.nulls;
        self.value_bytes += stats.value_bytes;
        if let Some((lo, hi)) = stats.min_max {
            self.min_max = Some(match self.min_max {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
        if let (Some(chunk), Some(page)) = (&mut self.def_histogram, &stats.def_histogram) {
            chunk.add(page);
        }
        if let Some(index) = &mut self.offset_index {
            index.append_offset_and_size(offset as i64, size as i32);
            index.append_row_count(rows as i64);
            index.append_unencoded_byte_array_data_bytes(
                (V::PHYSICAL == PhysicalType::BYTE_ARRAY).then_some(stats.value_bytes),
            );
        }
        let truncate = self.props.column_index_truncate_length();
        let Some(index) = &mut self.column_index else {
            return;
        };
        match stats.min_max {
            None => index.append(true, Vec::new(), Vec::new(), stats.nulls as i64),
            Some((lo, hi)) => {
                if let Some((last_lo, last_hi)) = self.last_page {
                    let v = self.values;
                    self.ascending &= !v.greater(last_lo, lo) && !v.greater(last_hi, hi);
                    self.descending &= !v.greater(lo, last_lo) && !v.greater(hi, last_hi);
                }
                self.last_page = Some((lo, hi));
                let (min, _) = self.values.lower(lo, truncate);
                let (max, _) = self.values.upper(hi, truncate);
                index.append(false, min, max, stats.nulls as i64);
            }
        }
        index.append_histograms(&None, &stats.def_histogram);
    }

    pub(super) fn finish(mut self, rows: usize) -> Result<EncodedChunk, ParquetError> {
        let mut builder = ColumnChunkMetaData::builder(Arc::clone(self.descr))
            .set_compression(self.compression)
            .set_encodings_mask(EncodingMask::new_from_encodings(
                [Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY].iter(),
            ))
            .set_page_encoding_stats(vec![
                PageEncodingStats {
                    page_type: PageType::DICTIONARY_PAGE,
                    encoding: Encoding::PLAIN,
                    count: 1,
                },
                PageEncodingStats {
                    page_type: PageType::DATA_PAGE,
                    encoding: Encoding::RLE_DICTIONARY,
                    count: self.pages,
                },
            ])
            .set_total_compressed_size(self.compressed as i64)
            .set_total_uncompressed_size(self.uncompressed as i64)
            .set_num_values(self.num_values as i64)
            .set_data_page_offset(self.data_page_offset.unwrap_or(0) as i64)
            .set_dictionary_page_offset(Some(0));
        if self.statistics != EnabledStatistics::None {
            let truncate = self.props.statistics_truncate_length();
            builder = builder
                .set_statistics(self.values.statistics(
                    self.min_max,
                    self.nulls,
                    truncate,
                    self.descr.sort_order().is_signed(),
                ))
                .set_unencoded_byte_array_data_bytes(
                    (V::PHYSICAL == PhysicalType::BYTE_ARRAY).then_some(self.value_bytes),
                )
                .set_definition_level_histogram(self.def_histogram.take());
        }
        let column_index = match self.column_index.take() {
            Some(mut index) => {
                index.set_boundary_order(match (self.ascending, self.descending) {
                    (true, _) => BoundaryOrder::ASCENDING,
                    (false, true) => BoundaryOrder::DESCENDING,
                    (false, false) => BoundaryOrder::UNORDERED,
                });
                Some(index.build()?)
            }
            None => None,
        };
        let bytes_written = self.sink.bytes_written() as u64;
        let data = Bytes::from(self.sink.into_inner()?);
        Ok(EncodedChunk {
            data,
            close: ColumnCloseResult {
                bytes_written,
                rows_written: rows as u64,
                metadata: builder.build()?,
                bloom_filter: None,
                column_index,
                offset_index: self.offset_index.take().map(OffsetIndexBuilder::build),
            },
        })
    }
}

/// The RLE / bit-packed hybrid encoding of a sequence of `width`-bit
/// values, given as runs of equal values.
///
/// A run of at least [`MIN_RLE_RUN`] values is an RLE run (its length and
/// the value); shorter runs go into groups of 8 bit-packed values, which
/// consecutive groups share one header. A group is only ever left partly
/// filled at the end (padded with zeros: readers stop at the page's value
/// count).
pub(super) struct Hybrid<'a> {
    out: &'a mut Vec<u8>,
    /// Groups of the bit-packed run being built.
    packed: &'a mut Vec<u8>,
    groups: u64,
    width: u8,
    group: [u32; 8],
    in_group: usize,
    /// Equal values are merged before they are encoded.
    pending: Run,
}

impl<'a> Hybrid<'a> {
    pub(super) fn new(width: u8, out: &'a mut Vec<u8>, packed: &'a mut Vec<u8>) -> Self {
        packed.clear();
        Self {
            out,
            packed,
            groups: 0,
            width,
            group: [0; 8],
            in_group: 0,
            pending: Run { key: 0, len: 0 },
        }
    }

    /// Appends `n` copies of `value` (which fits in `width` bits).
    pub(super) fn put(&mut self, value: u32, n: u32) {
        // Single values in a row (keys of mostly distinct values): the
        // previous one can only be bit-packed.
        if n == 1 && self.pending.len == 1 && self.pending.key != value {
            self.group[self.in_group] = self.pending.key;
            self.in_group += 1;
            if self.in_group == 8 {
                self.pack_group();
            }
            self.pending.key = value;
            return;
        }
        if self.pending.key == value || self.pending.len == 0 {
            self.pending = Run {
                key: value,
                len: self.pending.len + n,
            };
        } else {
            self.emit();
            self.pending = Run { key: value, len: n };
        }
    }

    fn emit(&mut self) {
        let Run { key: value, len } = std::mem::replace(&mut self.pending, Run { key: 0, len: 0 });
        let mut n = len as usize;
        if self.in_group > 0 {
            let take = n.min(8 - self.in_group);
            self.group[self.in_group..self.in_group + take].fill(value);
            self.in_group += take;
            n -= take;
            if self.in_group == 8 {
                self.pack_group();
            }
        }
        if n >= MIN_RLE_RUN as usize {
            self.end_packed();
            uleb128(self.out, (n as u64) << 1);
            let bytes = usize::from(self.width).div_ceil(8);
            self.out.extend_from_slice(&value.to_le_bytes()[..bytes]);
        } else if n > 0 {
            // The group is empty here: it was filled and packed above, or
            // the run ended inside it (then `n` is 0).
            self.group[..n].fill(value);
            self.in_group = n;
        }
    }

    fn pack_group(&mut self) {
        let width = usize::from(self.width);
        if width <= 16 {
            // Eight values of at most 16 bits: 128 bits, `width` bytes.
            let mut acc = 0u128;
            for (i, &v) in self.group.iter().enumerate() {
                acc |= u128::from(v) << (i * width);
            }
            self.packed.extend_from_slice(&acc.to_le_bytes()[..width]);
        } else {
            let mut acc = 0u64;
            let mut bits = 0;
            for &v in &self.group {
                acc |= u64::from(v) << bits;
                bits += width;
                while bits >= 8 {
                    self.packed.push(acc as u8);
                    acc >>= 8;
                    bits -= 8;
                }
            }
        }
        self.groups += 1;
        self.in_group = 0;
    }

    fn end_packed(&mut self) {
        if self.groups > 0 {
            uleb128(self.out, (self.groups << 1) | 1);
            self.out.extend_from_slice(self.packed);
            self.packed.clear();
            self.groups = 0;
        }
    }

    pub(super) fn finish(mut self) {
        self.emit();
        if self.in_group > 0 {
            self.group[self.in_group..].fill(0);
            self.pack_group();
        }
        self.end_packed();
    }
}

fn uleb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the hybrid encoding of `n` `width`-bit values.
    fn decode_hybrid(mut data: &[u8], width: u8, n: usize) -> Vec<u32> {
        let uleb = |data: &mut &[u8]| {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let b = data[0];
                *data = &data[1..];
                v |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b < 0x80 {
                    return v;
                }
            }
        };
        let mut out = Vec::new();
        while out.len() < n {
            let header = uleb(&mut data);
            if header & 1 == 0 {
                let bytes = usize::from(width).div_ceil(8);
                let mut v = [0u8; 4];
                v[..bytes].copy_from_slice(&data[..bytes]);
                data = &data[bytes..];
                out.extend(std::iter::repeat_n(
                    u32::from_le_bytes(v),
                    (header >> 1) as usize,
                ));
            } else {
                let values = (header >> 1) as usize * 8;
                for i in 0..values {
                    let mut v = 0u32;
                    for b in 0..usize::from(width) {
                        let bit = i * usize::from(width) + b;
                        v |= u32::from((data[bit / 8] >> (bit % 8)) & 1) << b;
                    }
                    out.push(v);
                }
                data = &data[values * usize::from(width) / 8..];
            }
        }
        assert!(data.is_empty(), "trailing bytes");
        out.truncate(n);
        out
    }

    #[test]
    fn hybrid_encoding_round_trips() {
        let mut seed = 7u64;
        for width in [0u8, 1, 2, 7, 8, 9, 17, 31] {
            for _ in 0..50 {
                let mut values = Vec::new();
                let mut runs = Vec::new();
                for _ in 0..(seed % 40) {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let v = if width == 0 {
                        0
                    } else {
                        ((seed >> 33) as u32) & (u32::MAX >> (32 - u32::from(width)))
                    };
                    let len = [1, 2, 3, 7, 8, 9, 100][(seed >> 20) as usize % 7];
                    values.extend(std::iter::repeat_n(v, len as usize));
                    runs.push((v, len));
                }
                let (mut out, mut packed) = (Vec::new(), Vec::new());
                let mut enc = Hybrid::new(width, &mut out, &mut packed);
                for (v, n) in &runs {
                    enc.put(*v, *n);
                }
                enc.finish();
                assert_eq!(
                    decode_hybrid(&out, width, values.len()),
                    values,
                    "width {width}"
                );
            }
        }
    }
}
