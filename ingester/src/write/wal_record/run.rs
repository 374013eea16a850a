//! Decoding a run of small records of one partition into one batch.
//!
//! Why: a WAL of one-line writes is a record per row. Decoded one by one,
//! each record became a batch of ~22 Arrow arrays (an aligned buffer, an
//! `Arc`, and for a tag two boxed `DataType`s each), all freed again when
//! 32 of them merged: replay ran at ~45k rows/s, malloc and free taking
//! over half of it. Here the records of a run are read side by side, one
//! column at a time, and their values appended to one builder per column:
//! a few allocations per run instead of ~140 per record.
//!
//! A run is records of one namespace, table and partition key each (what
//! [`peek_small`] finds), decoded as one only if every record has the same
//! columns in the same order; otherwise [`Decoder::decode_run`] returns
//! `None` and the caller decodes them one by one. Every check of the single
//! decoder is made here too (lengths, offsets, keys, UTF-8, the `time`
//! column), and decoding never panics.

use std::sync::Arc;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayRef, BooleanArray, BooleanBufferBuilder, Float64Array, Int64Array, StringArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::util::bit_util;

use super::{COLUMNAR_VERSION, DecodeError, Decoder, Reader, err};
use crate::catalog::ColumnType;
use crate::schema::TIME_COLUMN;
use crate::write::TagDictionary;

/// Records of at most this many rows may join a run.
pub(crate) const RUN_RECORD_ROWS: usize = 64;

/// The names of a record of one table and one partition, and its body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SmallRecord<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) table: &'a str,
    pub(crate) key: &'a str,
    pub(crate) body: SmallBody,
}

/// How many rows a small record has and where its columns start: what a
/// run keeps of each record, so it parses each header once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SmallBody {
    pub(crate) rows: usize,
    /// Offset of the column count.
    columns_at: usize,
}

impl SmallBody {
    /// The record's bytes before its row count: version, namespace, table
    /// and partition key. Records of one partition have the same.
    pub(crate) fn header<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        data.get(..self.columns_at.saturating_sub(4))
            .unwrap_or_default()
    }
}

/// The header of a columnar record of one table, one partition and at most
/// [`RUN_RECORD_ROWS`] rows; `None` for any other record (or bytes that do
/// not parse: the single decoder then names what is wrong).
pub(crate) fn peek_small(data: &[u8]) -> Option<SmallRecord<'_>> {
    let mut r = Reader { data, pos: 0 };
    if r.u8().ok()? != COLUMNAR_VERSION {
        return None;
    }
    let namespace = r.str().ok()?;
    if r.u32().ok()? != 1 {
        return None;
    }
    let table = r.str().ok()?;
    if r.u32().ok()? != 1 {
        return None;
    }
    let key = r.str().ok()?;
    let rows = r.u32().ok()? as usize;
    (rows <= RUN_RECORD_ROWS).then_some(SmallRecord {
        namespace,
        table,
        key,
        body: SmallBody {
            rows,
            columns_at: r.pos,
        },
    })
}

/// One column of the run, as it is built.
enum Builder {
    /// I64, U64, F64 and Time: the values' little-endian bits.
    Fixed(Vec<u64>),
    Bool(BooleanBufferBuilder),
    Str {
        offsets: Vec<i32>,
        data: Vec<u8>,
    },
    Tag(TagDictionary),
}

impl Decoder {
    /// Decodes `records` (each with the body [`peek_small`] found, all of
    /// one namespace, table and partition key) as one batch of all their
    /// rows, in order; `None` if they do not all have the same columns.
    pub(crate) fn decode_run(
        &mut self,
        records: &[(&[u8], SmallBody)],
    ) -> Result<Option<RecordBatch>, DecodeError> {
        let total: usize = records.iter().map(|(_, h)| h.rows).sum();
        let mut readers: Vec<Reader<'_>> = records
            .iter()
            .map(|(data, h)| Reader {
                data,
                pos: h.columns_at,
            })
            .collect();
        let mut n_cols = None;
        for r in &mut readers {
            let n = r.count(6)?;
            if *n_cols.get_or_insert(n) != n {
                return Ok(None);
            }
        }
        let n_cols = n_cols.unwrap_or(0);
        let mut columns = Vec::with_capacity(n_cols);
        let mut arrays = Vec::with_capacity(n_cols);
        let mut key_map = Vec::new();
        for _ in 0..n_cols {
            let mut name_type = None;
            let mut builder = None;
            let mut nulls = NullBufferBuilder::new(total);
            for (r, (_, h)) in readers.iter_mut().zip(records) {
                let name = r.str()?;
                let code = r.u8()?;
                let t = ColumnType::from_i16(code.into()).ok_or_else(|| {
                    DecodeError(format!("column `{name}`: unknown type code {code}"))
                })?;
                match name_type {
                    None => name_type = Some((name, t)),
                    Some(first) if first != (name, t) => return Ok(None),
                    Some(_) => {}
                }
                let b = builder.get_or_insert_with(|| Builder::new(t, total));
                append(r, b, &mut nulls, h.rows, &mut key_map)
                    .map_err(|e| DecodeError(format!("column `{name}`: {}", e.0)))?;
            }
            let (Some((name, t)), Some(builder)) = (name_type, builder) else {
                return err("a run of no records");
            };
            if (t == ColumnType::Time) != (name == TIME_COLUMN) {
                return err(format!("column `{name}` has type {t}"));
            }
            let nulls = nulls.finish();
            if t == ColumnType::Time && nulls.as_ref().is_some_and(|n| n.null_count() > 0) {
                return err("the `time` column has nulls");
            }
            arrays.push(
                builder
                    .finish(t, total, nulls)
                    .map_err(|e| DecodeError(format!("column `{name}`: {}", e.0)))?,
            );
            columns.push((name, t));
        }
        for r in &readers {
            if r.pos != r.data.len() {
                return err(format!(
                    "{} trailing bytes after the record",
                    r.data.len() - r.pos
                ));
            }
        }
        let schema = self.schema_for(&columns)?;
        RecordBatch::try_new_with_options(
            schema,
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(total)),
        )
        .map(Some)
        .map_err(|e| DecodeError(e.to_string()))
    }
}

impl Builder {
    fn new(t: ColumnType, rows: usize) -> Self {
        match t {
            ColumnType::I64 | ColumnType::U64 | ColumnType::F64 | ColumnType::Time => {
                Self::Fixed(Vec::with_capacity(rows))
            }
            ColumnType::Bool => Self::Bool(BooleanBufferBuilder::new(rows)),
            ColumnType::String => Self::Str {
                offsets: {
                    let mut o = Vec::with_capacity(rows + 1);
                    o.push(0);
                    o
                },
                data: Vec::new(),
            },
            ColumnType::Tag => Self::Tag(TagDictionary::with_capacity(rows)),
        }
    }

    fn finish(
        self,
        t: ColumnType,
        rows: usize,
        nulls: Option<NullBuffer>,
    ) -> Result<ArrayRef, DecodeError> {
        Ok(match self {
            // A `Vec<u64>`'s buffer is 8-byte aligned, as each of these
            // types needs; the bits are the values (little-endian only,
            // see the parent module).
            Self::Fixed(v) => {
                let buffer = Buffer::from_vec(v);
                match t {
                    ColumnType::I64 => {
                        Arc::new(Int64Array::new(ScalarBuffer::new(buffer, 0, rows), nulls))
                    }
                    ColumnType::U64 => {
                        Arc::new(UInt64Array::new(ScalarBuffer::new(buffer, 0, rows), nulls))
                    }
                    ColumnType::F64 => {
                        Arc::new(Float64Array::new(ScalarBuffer::new(buffer, 0, rows), nulls))
                    }
                    _ => Arc::new(
                        TimestampNanosecondArray::new(ScalarBuffer::new(buffer, 0, rows), nulls)
                            .with_timezone("UTC"),
                    ),
                }
            }
            Self::Bool(mut b) => Arc::new(BooleanArray::new(b.finish(), nulls)),
            Self::Str { offsets, data } => Arc::new(
                StringArray::try_new(
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    Buffer::from_vec(data),
                    nulls,
                )
                .map_err(|e| DecodeError(e.to_string()))?,
            ),
            Self::Tag(dict) => dict.finish().map_err(DecodeError)?,
        })
    }
}

/// Appends one record's column (`rows` values, after its name and type) to
/// `b`, its validity to `nulls` (tags keep their own).
fn append(
    r: &mut Reader<'_>,
    b: &mut Builder,
    nulls: &mut NullBufferBuilder,
    rows: usize,
    key_map: &mut Vec<i32>,
) -> Result<(), DecodeError> {
    let valid = r.validity_bits(rows)?;
    match b {
        Builder::Fixed(v) => {
            let raw = r.take(Reader::len_bytes(rows, 8)?)?;
            let (words, _) = raw.as_chunks::<8>();
            v.extend(words.iter().map(|w| u64::from_le_bytes(*w)));
        }
        Builder::Bool(values) => {
            let bits = r.take(rows.div_ceil(8))?;
            values.append_packed_range(0..rows, bits);
        }
        Builder::Str { offsets, data } => {
            let strings = r.string_parts(rows)?;
            let base = data.len();
            for k in 0..rows {
                strings.value(k)?;
                let end = i32::try_from(base + strings.end(k))
                    .map_err(|_| DecodeError("strings overflow 32-bit offsets".into()))?;
                offsets.push(end);
            }
            data.extend_from_slice(strings.bytes);
        }
        Builder::Tag(dict) => {
            /// Not yet looked up in the run's dictionary.
            const UNSEEN: i32 = -1;
            let keys = r.take(Reader::len_bytes(rows, 4)?)?;
            let n = r.u32()? as usize;
            let value_valid = r.validity_bits(n)?;
            let values = r.string_parts(n)?;
            key_map.clear();
            key_map.resize(n, UNSEEN);
            let (keys, _) = keys.as_chunks::<4>();
            for (row, k) in keys.iter().enumerate() {
                if valid.is_some_and(|v| !bit_util::get_bit(v, row)) {
                    dict.append_nulls(1);
                    continue;
                }
                let k = usize::try_from(i32::from_le_bytes(*k))
                    .ok()
                    .filter(|&k| k < n)
                    .ok_or_else(|| DecodeError("a tag key is out of range".into()))?;
                if value_valid.is_some_and(|v| !bit_util::get_bit(v, k)) {
                    dict.append_nulls(1);
                    continue;
                }
                match key_map[k] {
                    UNSEEN => {
                        key_map[k] = dict.append_value(values.value(k)?).ok_or_else(|| {
                            DecodeError("tag values overflow 32-bit offsets".into())
                        })?;
                    }
                    mapped => dict.append_key(mapped),
                }
            }
            // The dictionary tracks its own nulls.
            return Ok(());
        }
    }
    match valid {
        None => nulls.append_n_non_nulls(rows),
        Some(bits) => (0..rows).for_each(|i| nulls.append(bit_util::get_bit(bits, i))),
    }
    Ok(())
}
