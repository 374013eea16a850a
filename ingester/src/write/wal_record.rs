//! The WAL record of a write: the validated, partitioned columns.
//!
//! The WAL stores what the buffer receives — namespace, tables, partitions
//! and their Arrow columns — not the request that produced them. Replay
//! then costs a copy of each column and a catalog lookup per table instead
//! of re-parsing line protocol (which ran at ~0.6 M lines/s per core and
//! made start-up the slowest part of a restart), and the record is smaller
//! than the line protocol it came from: a TSBS `cpu` row is ~490 bytes of
//! text but 10 float values, 10 dictionary keys and a timestamp (~130
//! bytes) in columns. It is not compressed: the float fields of real
//! metrics barely compress, and LZ4 of the request was the single largest
//! cost of the write path (23% of its CPU).
//!
//! Why not Arrow IPC: an IPC stream repeats the schema (a flatbuffer per
//! field) and sends one message per dictionary, several KiB for a one-line
//! write whose data is a few hundred bytes (measured in the `wal` bench).
//! This encoding carries only names, a type code and the raw buffers.
//!
//! ```text
//! record    = version u8 (= 2) | namespace str | u32 tables | table*
//! table     = name str | u32 partitions | partition*
//! partition = key str | u32 rows | u32 columns | column*
//! column    = name str | type u8 (ColumnType::as_i16) | array
//! array     = validity | values                 (by type, `rows` values)
//! validity  = 0u8 (no nulls) | 1u8 bitmap[⌈rows/8⌉]
//! values    = i64/u64/f64/time: [8 bytes LE] × rows
//!           | bool: bitmap[⌈rows/8⌉]
//!           | string: strings(rows)
//!           | tag: keys i32 LE × rows | u32 n | validity(n) | strings(n)
//! strings(n)= offsets i32 LE × (n + 1), first 0 | data[last offset]
//! str       = u32 len | UTF-8
//! ```
//!
//! All integers little-endian; bitmaps are Arrow's (LSB first). Version 1
//! records are the request format (`request.rs`), still replayed so a WAL
//! written by an older release is not lost.
//!
//! Decoding never panics and never allocates more than the record's own
//! size: every length is checked against the bytes left before it is used,
//! offsets and dictionary keys are checked, strings must be UTF-8. Whether
//! the columns fit the catalog is the replay's check (`handler.rs`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array,
    StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{ArrowNativeType, DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use bytes::{BufMut, Bytes, BytesMut};

use super::DmlOperation;
use crate::catalog::ColumnType;
use crate::schema::{TIME_COLUMN, arrow_field};

#[cfg(not(target_endian = "little"))]
compile_error!("the WAL record format copies Arrow buffers as little-endian bytes");

/// The first byte of a columnar record.
pub(crate) const COLUMNAR_VERSION: u8 = 2;

/// A WAL payload that cannot be decoded (damaged, or written by a newer
/// release).
#[derive(Debug, thiserror::Error)]
#[error("undecodable WAL record: {0}")]
pub struct DecodeError(pub(crate) String);

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// Why an operation cannot be encoded (a column of a type the write path
/// never produces: a bug, refused rather than logged wrongly).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode column `{column}` of type {data_type} for the WAL")]
pub(crate) struct EncodeError {
    column: String,
    data_type: DataType,
}

/// A decoded record: what the write path built, by name.
#[derive(Debug)]
pub(crate) struct WalRecord {
    pub(crate) namespace: String,
    pub(crate) tables: Vec<RecordTable>,
}

#[derive(Debug)]
pub(crate) struct RecordTable {
    pub(crate) name: String,
    pub(crate) partitions: Vec<RecordPartition>,
}

#[derive(Debug)]
pub(crate) struct RecordPartition {
    pub(crate) key: String,
    /// Canonical Arrow types (`schema.rs`), fields nullable except `time`,
    /// in the order written.
    pub(crate) batch: RecordBatch,
}

impl RecordPartition {
    /// Columns with their catalog types, in the order written.
    pub(crate) fn columns(&self) -> impl Iterator<Item = (&str, ColumnType)> + Clone {
        self.batch.schema_ref().fields().iter().map(|f| {
            // Every field was built from a type code (`decode_batch`).
            let t = column_type_of(f.data_type()).unwrap_or(ColumnType::String);
            (f.name().as_str(), t)
        })
    }
}

// ───────────────────────────── encoding ─────────────────────────────

/// Encodes `op`'s tables for the WAL.
pub(crate) fn encode(op: &DmlOperation) -> Result<Bytes, EncodeError> {
    let mut size = 16 + op.namespace.len();
    for t in &op.tables {
        size += 8 + t.table.name.len();
        for p in &t.partitions {
            size += 16 + p.key.len() + p.batch.get_array_memory_size();
        }
    }
    let mut b = BytesMut::with_capacity(size);
    b.put_u8(COLUMNAR_VERSION);
    put_str(&mut b, &op.namespace);
    b.put_u32_le(op.tables.len() as u32);
    for t in &op.tables {
        put_str(&mut b, &t.table.name);
        b.put_u32_le(t.partitions.len() as u32);
        for p in &t.partitions {
            put_str(&mut b, &p.key);
            encode_batch(&mut b, &p.batch)?;
        }
    }
    Ok(b.freeze())
}

fn encode_batch(b: &mut BytesMut, batch: &RecordBatch) -> Result<(), EncodeError> {
    let rows = batch.num_rows();
    b.put_u32_le(rows as u32);
    b.put_u32_le(batch.num_columns() as u32);
    for (field, array) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        let unsupported = || EncodeError {
            column: field.name().clone(),
            data_type: array.data_type().clone(),
        };
        let t = column_type_of(array.data_type()).ok_or_else(unsupported)?;
        put_str(b, field.name());
        b.put_u8(t.as_i16() as u8);
        put_validity(b, array.nulls());
        let any = array.as_any();
        match t {
            ColumnType::I64 => put_scalars(b, any.downcast_ref::<Int64Array>().map(|a| a.values())),
            ColumnType::U64 => {
                put_scalars(b, any.downcast_ref::<UInt64Array>().map(|a| a.values()))
            }
            ColumnType::F64 => {
                put_scalars(b, any.downcast_ref::<Float64Array>().map(|a| a.values()))
            }
            ColumnType::Time => put_scalars(
                b,
                any.downcast_ref::<TimestampNanosecondArray>()
                    .map(|a| a.values()),
            ),
            ColumnType::Bool => {
                let a = any.downcast_ref::<BooleanArray>();
                a.map(|a| b.put_slice(&a.values().sliced()))
            }
            ColumnType::String => any.downcast_ref::<StringArray>().map(|a| put_strings(b, a)),
            ColumnType::Tag => any
                .downcast_ref::<DictionaryArray<Int32Type>>()
                .and_then(|d| {
                    let values = d.values().as_any().downcast_ref::<StringArray>()?;
                    b.put_slice(d.keys().values().inner().as_slice());
                    b.put_u32_le(values.len() as u32);
                    put_validity(b, values.nulls());
                    put_strings(b, values);
                    Some(())
                }),
        }
        .ok_or_else(unsupported)?;
    }
    Ok(())
}

/// The column type of a canonical Arrow type (`schema::arrow_type`).
fn column_type_of(t: &DataType) -> Option<ColumnType> {
    Some(match t {
        DataType::Int64 => ColumnType::I64,
        DataType::UInt64 => ColumnType::U64,
        DataType::Float64 => ColumnType::F64,
        DataType::Boolean => ColumnType::Bool,
        DataType::Utf8 => ColumnType::String,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => ColumnType::Time,
        DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
            ColumnType::Tag
        }
        _ => return None,
    })
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

fn put_validity(b: &mut BytesMut, nulls: Option<&NullBuffer>) {
    match nulls.filter(|n| n.null_count() > 0) {
        None => b.put_u8(0),
        Some(n) => {
            b.put_u8(1);
            b.put_slice(&n.inner().sliced());
        }
    }
}

fn put_scalars<T: ArrowNativeType>(b: &mut BytesMut, v: Option<&ScalarBuffer<T>>) -> Option<()> {
    b.put_slice(v?.inner().as_slice());
    Some(())
}

/// Offsets rebased to 0, then the bytes they cover.
fn put_strings(b: &mut BytesMut, a: &StringArray) {
    let offsets = a.value_offsets();
    let first = offsets.first().copied().unwrap_or(0);
    let last = offsets.last().copied().unwrap_or(0);
    if first == 0 {
        b.put_slice(a.offsets().inner().inner().as_slice());
    } else {
        for o in offsets {
            b.put_i32_le(o - first);
        }
    }
    b.put_slice(&a.values()[first as usize..last as usize]);
}

// ───────────────────────────── decoding ─────────────────────────────

/// Decodes a columnar record (its first byte must be [`COLUMNAR_VERSION`]).
#[cfg(any(test, feature = "benches"))]
pub(crate) fn decode(data: &[u8]) -> Result<WalRecord, DecodeError> {
    Decoder::default().decode(data)
}

/// How many Arrow schemas a [`Decoder`] remembers.
const RECENT_SCHEMAS: usize = 8;

/// Decodes records one after another, as replay does, sharing one Arrow
/// schema between records of the same columns (names, types, order).
///
/// Why: a WAL of one-line writes is a record per row. A schema of its own
/// for each cost two allocations per column, and their frees, and made
/// every merge of the replayed one-row batches align each batch to the
/// union of their schemas first (`buffer_tree::partition`), where batches
/// that share one schema are concatenated as they are. The live write path
/// shares schemas the same way (`builder::recent_schema`).
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    recent: Vec<SchemaRef>,
    next: usize,
}

impl Decoder {
    /// Decodes a columnar record (its first byte must be [`COLUMNAR_VERSION`]).
    pub(crate) fn decode(&mut self, data: &[u8]) -> Result<WalRecord, DecodeError> {
        let mut r = Reader { data, pos: 0 };
        let version = r.u8()?;
        if version != COLUMNAR_VERSION {
            return err(format!(
                "unknown record format version {version} (this release reads 1 and {COLUMNAR_VERSION})"
            ));
        }
        let namespace = r.str()?.to_string();
        let n_tables = r.count(8)?;
        let mut tables = Vec::with_capacity(n_tables);
        for _ in 0..n_tables {
            let name = r.str()?.to_string();
            let n_parts = r.count(12)?;
            let mut partitions = Vec::with_capacity(n_parts);
            for _ in 0..n_parts {
                let key = r.str()?.to_string();
                let batch = self
                    .decode_batch(&mut r)
                    .map_err(|e| DecodeError(format!("table `{name}`: {}", e.0)))?;
                partitions.push(RecordPartition { key, batch });
            }
            tables.push(RecordTable { name, partitions });
        }
        if r.pos != data.len() {
            return err(format!(
                "{} trailing bytes after the record",
                data.len() - r.pos
            ));
        }
        Ok(WalRecord { namespace, tables })
    }

    fn decode_batch(&mut self, r: &mut Reader<'_>) -> Result<RecordBatch, DecodeError> {
        let rows = r.u32()? as usize;
        let n_cols = r.count(6)?;
        let mut columns = Vec::with_capacity(n_cols);
        let mut arrays = Vec::with_capacity(n_cols);
        for _ in 0..n_cols {
            let name = r.str()?;
            let code = r.u8()?;
            let t = ColumnType::from_i16(code.into())
                .ok_or_else(|| DecodeError(format!("column `{name}`: unknown type code {code}")))?;
            let array = decode_array(r, t, rows)
                .map_err(|e| DecodeError(format!("column `{name}`: {}", e.0)))?;
            if (t == ColumnType::Time) != (name == TIME_COLUMN) {
                return err(format!("column `{name}` has type {t}"));
            }
            if t == ColumnType::Time && array.null_count() > 0 {
                return err("the `time` column has nulls");
            }
            arrays.push(array);
            columns.push((name, t));
        }
        let schema = self.schema_for(&columns)?;
        RecordBatch::try_new_with_options(
            schema,
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| DecodeError(e.to_string()))
    }

    /// The schema of `columns`: a remembered one, or a new one once checked
    /// (a remembered schema had no duplicate and a `time` column, so only a
    /// new one needs checking).
    fn schema_for(&mut self, columns: &[(&str, ColumnType)]) -> Result<SchemaRef, DecodeError> {
        if let Some(schema) = self.recent(columns) {
            return Ok(schema);
        }
        for (i, (name, _)) in columns.iter().enumerate() {
            if columns[..i].iter().any(|(n, _)| n == name) {
                return err(format!("column `{name}` appears twice"));
            }
        }
        if !columns.iter().any(|(_, t)| *t == ColumnType::Time) {
            return err("no `time` column");
        }
        let fields: Vec<Field> = columns.iter().map(|(n, t)| arrow_field(n, *t)).collect();
        let schema = Arc::new(Schema::new(fields));
        self.remember(&schema);
        Ok(schema)
    }

    /// A remembered schema of exactly `columns`.
    fn recent(&self, columns: &[(&str, ColumnType)]) -> Option<SchemaRef> {
        self.recent
            .iter()
            .find(|s| {
                let fields = s.fields();
                fields.len() == columns.len()
                    && fields.iter().zip(columns).all(|(f, (name, t))| {
                        f.name() == name && column_type_of(f.data_type()) == Some(*t)
                    })
            })
            .cloned()
    }

    fn remember(&mut self, schema: &SchemaRef) {
        if self.recent.len() < RECENT_SCHEMAS {
            self.recent.push(Arc::clone(schema));
        } else {
            self.recent[self.next] = Arc::clone(schema);
            self.next = (self.next + 1) % RECENT_SCHEMAS;
        }
    }
}

fn decode_array(r: &mut Reader<'_>, t: ColumnType, rows: usize) -> Result<ArrayRef, DecodeError> {
    let nulls = r.validity(rows)?;
    Ok(match t {
        ColumnType::I64 => Arc::new(Int64Array::new(r.scalars(rows)?, nulls)),
        ColumnType::U64 => Arc::new(UInt64Array::new(r.scalars(rows)?, nulls)),
        ColumnType::F64 => Arc::new(Float64Array::new(r.scalars(rows)?, nulls)),
        ColumnType::Time => {
            Arc::new(TimestampNanosecondArray::new(r.scalars(rows)?, nulls).with_timezone("UTC"))
        }
        ColumnType::Bool => Arc::new(BooleanArray::new(r.bitmap(rows)?, nulls)),
        ColumnType::String => Arc::new(r.strings(rows, nulls)?),
        ColumnType::Tag => {
            let keys = Int32Array::new(r.scalars(rows)?, nulls);
            let n = r.u32()? as usize;
            let value_nulls = r.validity(n)?;
            let values = r.strings(n, value_nulls)?;
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))
                    .map_err(|e| DecodeError(e.to_string()))?,
            )
        }
    })
}

/// A bounds-checked cursor.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len());
        let Some(end) = end else {
            return err(format!(
                "truncated: {n} bytes needed at offset {}, {} left",
                self.pos,
                self.data.len() - self.pos
            ));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    /// A count of items each at least `min_bytes` long: refused when the
    /// rest of the record could not hold them (bounds the allocation).
    fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes) > self.data.len() - self.pos {
            return err(format!(
                "count {n} at offset {} exceeds the record",
                self.pos - 4
            ));
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.u32()? as usize;
        let raw = self.take(n)?;
        std::str::from_utf8(raw).map_err(|_| DecodeError("a name is not UTF-8".into()))
    }

    fn len_bytes(n: usize, width: usize) -> Result<usize, DecodeError> {
        n.checked_mul(width)
            .ok_or_else(|| DecodeError(format!("{n} values overflow")))
    }

    /// `n` fixed-width values, copied into an aligned buffer.
    fn scalars<T: ArrowNativeType>(&mut self, n: usize) -> Result<ScalarBuffer<T>, DecodeError> {
        let raw = self.take(Self::len_bytes(n, std::mem::size_of::<T>())?)?;
        // A fresh buffer is 64-byte aligned and exactly n values long, so
        // `ScalarBuffer::new`'s alignment and length checks hold.
        Ok(ScalarBuffer::new(Buffer::from_slice_ref(raw), 0, n))
    }

    fn bitmap(&mut self, n: usize) -> Result<BooleanBuffer, DecodeError> {
        let raw = self.take(n.div_ceil(8))?;
        Ok(BooleanBuffer::new(Buffer::from_slice_ref(raw), 0, n))
    }

    fn validity(&mut self, n: usize) -> Result<Option<NullBuffer>, DecodeError> {
        Ok(self
            .validity_bits(n)?
            .map(|bits| NullBuffer::new(BooleanBuffer::new(Buffer::from_slice_ref(bits), 0, n))))
    }

    /// The validity bitmap of `n` values, if the record has one, in place.
    fn validity_bits(&mut self, n: usize) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.take(n.div_ceil(8))?)),
            other => err(format!("bad validity flag {other}")),
        }
    }

    fn strings(&mut self, n: usize, nulls: Option<NullBuffer>) -> Result<StringArray, DecodeError> {
        let s = self.string_parts(n)?;
        // Checked by `string_parts`: `OffsetBuffer::new` panics on bad ones.
        let offsets = ScalarBuffer::new(Buffer::from_slice_ref(s.offsets.as_flattened()), 0, n + 1);
        StringArray::try_new(
            OffsetBuffer::new(offsets),
            Buffer::from_slice_ref(s.bytes),
            nulls,
        )
        .map_err(|e| DecodeError(e.to_string()))
    }

    /// `n` strings in place, their offsets checked (`n + 1` of them, from
    /// 0, never decreasing, the last within the record).
    fn string_parts(&mut self, n: usize) -> Result<Strings<'a>, DecodeError> {
        let raw = self.take(Self::len_bytes(n.saturating_add(1), 4)?)?;
        let (offsets, _) = raw.as_chunks::<4>();
        let at = |w: &[u8; 4]| i32::from_le_bytes(*w);
        if offsets.first().map(at) != Some(0) {
            return err("string offsets must start at 0");
        }
        if offsets.windows(2).any(|w| at(&w[1]) < at(&w[0])) {
            return err("string offsets decrease");
        }
        let last = offsets.last().map_or(0, at) as usize;
        let bytes = self.take(last)?;
        Ok(Strings { offsets, bytes })
    }
}

/// Strings as they are in a record: little-endian `i32` offsets and bytes.
struct Strings<'a> {
    offsets: &'a [[u8; 4]],
    bytes: &'a [u8],
}

impl<'a> Strings<'a> {
    /// Where value `k` (< n) ends.
    fn end(&self, k: usize) -> usize {
        i32::from_le_bytes(self.offsets[k + 1]) as usize
    }

    /// Value `k` (< n).
    fn value(&self, k: usize) -> Result<&'a str, DecodeError> {
        let start = i32::from_le_bytes(self.offsets[k]) as usize;
        std::str::from_utf8(&self.bytes[start..self.end(k)])
            .map_err(|_| DecodeError("a string is not UTF-8".into()))
    }
}

mod run;
pub(crate) use run::{SmallBody, peek_small};

#[cfg(test)]
mod tests;
