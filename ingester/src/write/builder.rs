//! Column builders for one table of one request.
//!
//! Values are appended straight into Arrow builders (no per-row structs, no
//! per-row allocation); a row that lacks a column gets a null. Each column's
//! type is fixed by the catalog (through the cached schema) or, for a column
//! new to the table, by its first appearance in the request; any other type
//! later in the request is a conflict naming the line.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, ArrowPrimitiveType, BooleanBufferBuilder, BooleanBuilder, PrimitiveArray,
    StringBuilder,
};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimestampNanosecondType, UInt64Type,
};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use hashbrown::HashMap;

use super::WriteError;
use super::tag_dictionary::{SeriesCache, TagDictionary};
use crate::catalog::{ColumnType, TableSchema};
use crate::line_protocol::FieldValue;
use crate::schema::{TIME_COLUMN, arrow_field};

/// The values of one numeric column: a `Vec` and, once a null appears, a
/// validity bitmap (as [`TagDictionary`] does for keys). Arrow's
/// `PrimitiveBuilder::append_value` was an out-of-line call of ~45
/// instructions per value here; this is a push.
struct Primitive<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    /// `None` while every row has a value.
    nulls: Option<BooleanBufferBuilder>,
}

impl<T: ArrowPrimitiveType> Primitive<T> {
    fn with_capacity(cap: usize) -> Self {
        Self {
            values: Vec::with_capacity(cap),
            nulls: None,
        }
    }

    #[inline]
    fn append_value(&mut self, v: T::Native) {
        self.values.push(v);
        if let Some(n) = &mut self.nulls {
            n.append(true);
        }
    }

    fn append_nulls(&mut self, n: usize) {
        let nulls = self.nulls.get_or_insert_with(|| {
            let mut b = BooleanBufferBuilder::new(self.values.capacity().max(n));
            b.append_n(self.values.len(), true);
            b
        });
        nulls.append_n(n, false);
        self.values
            .resize(self.values.len() + n, T::Native::default());
    }

    /// The finished array (empty afterwards).
    fn finish(&mut self) -> PrimitiveArray<T> {
        let nulls = self.nulls.take().map(|mut b| NullBuffer::new(b.finish()));
        PrimitiveArray::new(ScalarBuffer::from(std::mem::take(&mut self.values)), nulls)
    }
}

enum ColumnData {
    Tag(TagDictionary),
    I64(Primitive<Int64Type>),
    U64(Primitive<UInt64Type>),
    F64(Primitive<Float64Type>),
    Bool(BooleanBuilder),
    String(StringBuilder),
}

impl ColumnData {
    fn new(t: ColumnType, cap: usize) -> Self {
        match t {
            ColumnType::Tag => Self::Tag(TagDictionary::with_capacity(cap)),
            ColumnType::I64 => Self::I64(Primitive::with_capacity(cap)),
            ColumnType::U64 => Self::U64(Primitive::with_capacity(cap)),
            ColumnType::F64 => Self::F64(Primitive::with_capacity(cap)),
            ColumnType::Bool => Self::Bool(BooleanBuilder::with_capacity(cap)),
            ColumnType::String => Self::String(StringBuilder::with_capacity(cap, cap * 8)),
            ColumnType::Time => unreachable!("time is not a builder column"),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        // A column created on the first row gets zero nulls: that must not
        // create a validity bitmap, which every later value would extend.
        if n == 0 {
            return;
        }
        match self {
            Self::Tag(b) => b.append_nulls(n),
            Self::I64(b) => b.append_nulls(n),
            Self::U64(b) => b.append_nulls(n),
            Self::F64(b) => b.append_nulls(n),
            Self::Bool(b) => b.append_nulls(n),
            Self::String(b) => {
                for _ in 0..n {
                    b.append_null()
                }
            }
        }
    }

    fn finish(self) -> Result<ArrayRef, String> {
        Ok(match self {
            Self::Tag(b) => b.finish()?,
            Self::I64(mut b) => Arc::new(b.finish()),
            Self::U64(mut b) => Arc::new(b.finish()),
            Self::F64(mut b) => Arc::new(b.finish()),
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::String(mut b) => Arc::new(b.finish()),
        })
    }
}

struct Column<'a> {
    /// Borrowed from the request's body unless the name had escapes: a
    /// one-line write creates every column, and an owned name was two
    /// allocations per column (here and in the index).
    name: Cow<'a, str>,
    column_type: ColumnType,
    data: ColumnData,
    /// Rows appended so far (values and nulls).
    len: usize,
    /// First line that used the column (for error messages).
    first_line: usize,
    /// Not in the cached catalog schema: must be added to the catalog.
    new: bool,
    /// `rows + 1` once [`TableBuilder::resolve_field`] gave this column to a
    /// field of the current row: a second field of the row naming it is a
    /// duplicate.
    mark: usize,
}

/// A field value to append (tags go through `append_tag`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    String(&'a str),
}

impl Value<'_> {
    pub(crate) fn column_type(&self) -> ColumnType {
        match self {
            Self::I64(_) => ColumnType::I64,
            Self::U64(_) => ColumnType::U64,
            Self::F64(_) => ColumnType::F64,
            Self::Bool(_) => ColumnType::Bool,
            Self::String(_) => ColumnType::String,
        }
    }
}

/// A column the catalog does not know yet.
#[derive(Debug, Clone)]
pub(crate) struct NewColumn {
    pub(crate) name: String,
    pub(crate) column_type: ColumnType,
    pub(crate) first_line: usize,
}

/// The finished batch of one table of a request.
#[derive(Debug)]
pub(crate) struct BuiltTable {
    pub(crate) name: String,
    pub(crate) batch: RecordBatch,
    pub(crate) new_columns: Vec<NewColumn>,
    /// The cached schema it was validated against, if any.
    pub(crate) cached: Option<Arc<TableSchema>>,
}

/// Builds one table's columns, row by row.
pub(crate) struct TableBuilder<'a> {
    name: Cow<'a, str>,
    cached: Option<Arc<TableSchema>>,
    columns: Vec<Column<'a>>,
    index: HashMap<Cow<'a, str>, usize>,
    times: Primitive<TimestampNanosecondType>,
    rows: usize,
    /// Column positions used by the previous row, in order: rows of one
    /// table usually repeat their keys, so this avoids hashing every name.
    hint: Vec<usize>,
    hint_pos: usize,
    /// Tag sections seen in this request → their dictionary keys.
    series: SeriesCache,
    /// Columns given a value in the current row: when it reaches the
    /// number of columns, [`finish_row`](Self::finish_row) has no null to
    /// pad and skips its walk over every column.
    filled: usize,
}

impl<'a> TableBuilder<'a> {
    pub(crate) fn new(name: Cow<'a, str>, cached: Option<Arc<TableSchema>>, cap: usize) -> Self {
        // Room for the columns the catalog knows (time among them, which
        // has no builder here): a table's writes mostly carry them all, and growing
        // `columns` 4 → 8 → 16 → 32 copied ~200-byte `Column`s into blocks
        // large enough to send glibc's malloc into `malloc_consolidate`
        // (a one-line write, `buffer/write_lp/1_lines`).
        let known = cached.as_ref().map_or(0, |s| s.len());
        Self {
            name,
            cached,
            columns: Vec::with_capacity(known),
            index: HashMap::with_capacity(known),
            times: Primitive::with_capacity(cap),
            rows: 0,
            hint: Vec::new(),
            hint_pos: 0,
            series: SeriesCache::default(),
            filled: 0,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Finds or creates the column `name` of type `t` for the current row.
    fn column(
        &mut self,
        name: Cow<'a, str>,
        t: ColumnType,
        line: usize,
    ) -> Result<usize, WriteError> {
        // Fast path: same key at the same position as in the previous row.
        let idx = match self.hint.get(self.hint_pos) {
            Some(&i) if same_name(&self.columns[i].name, &name) => i,
            _ => match self.index.get(name.as_ref()) {
                Some(&i) => i,
                None => self.create_column(name, t, line)?,
            },
        };
        if self.hint_pos < self.hint.len() {
            self.hint[self.hint_pos] = idx;
        } else {
            self.hint.push(idx);
        }
        self.hint_pos += 1;
        let col = &self.columns[idx];
        if col.column_type != t {
            return Err(WriteError::ColumnTypeConflict {
                line: Some(line),
                table: self.name.to_string(),
                column: col.name.to_string(),
                existing: col.column_type,
                requested: t,
            });
        }
        Ok(idx)
    }

    fn create_column(
        &mut self,
        name: Cow<'a, str>,
        t: ColumnType,
        line: usize,
    ) -> Result<usize, WriteError> {
        super::names::check_column(&name).map_err(|reason| WriteError::InvalidName {
            line: Some(line),
            table: self.name.to_string(),
            name: name.to_string(),
            reason,
        })?;
        let (column_type, new) = match self.cached.as_ref().and_then(|s| s.column(&name)) {
            Some(existing) => (existing.column_type, false),
            None => (t, true),
        };
        if column_type != t {
            return Err(WriteError::ColumnTypeConflict {
                line: Some(line),
                table: self.name.to_string(),
                column: name.to_string(),
                existing: column_type,
                requested: t,
            });
        }
        let mut data = ColumnData::new(column_type, self.times.values.capacity());
        data.append_nulls(self.rows);
        let idx = self.columns.len();
        self.index.insert(name.clone(), idx);
        self.columns.push(Column {
            name,
            column_type,
            data,
            len: self.rows,
            first_line: line,
            new,
            mark: 0,
        });
        Ok(idx)
    }

    /// The fast path for a row's fields, step 1 of 2: the column of field
    /// `name`, if the table already has it and no other field of this row
    /// resolved to it. Nothing is appended: the caller resolves every field
    /// of the row first, then appends them with
    /// [`append_resolved`](Self::append_resolved). On `None` it must call
    /// [`abandon_fields`](Self::abandon_fields) with what
    /// [`fields_start`](Self::fields_start) returned, and take the general
    /// path ([`append`](Self::append)), which creates columns and reports
    /// duplicates. Rows of one table usually repeat their keys in the same
    /// order, so the name is compared with the previous row's column at the
    /// same position before any hashing.
    #[inline]
    pub(crate) fn resolve_field(&mut self, name: &str) -> Option<u32> {
        let idx = match self.hint.get(self.hint_pos) {
            Some(&i) if same_name(&self.columns[i].name, name) => i,
            _ => *self.index.get(name)?,
        };
        let mark = self.rows + 1;
        let col = &mut self.columns[idx];
        if col.mark == mark {
            return None;
        }
        col.mark = mark;
        if self.hint_pos < self.hint.len() {
            self.hint[self.hint_pos] = idx;
        } else {
            self.hint.push(idx);
        }
        self.hint_pos += 1;
        // Column positions are bounded by the request's names, far below 2^32.
        u32::try_from(idx).ok()
    }

    /// Where the fields of the current row start in the hints (see
    /// [`resolve_field`](Self::resolve_field)).
    #[inline]
    pub(crate) fn fields_start(&self) -> usize {
        self.hint_pos
    }

    /// Gives up the fast path for the current row's fields (see
    /// [`resolve_field`](Self::resolve_field)).
    #[cold]
    pub(crate) fn abandon_fields(&mut self, start: usize) {
        self.hint_pos = start;
        // Marks of this row stay set; only `resolve_field` reads them, and
        // the general path that follows does not call it.
    }

    /// The fast path for a row's fields, step 2: appends `value` to column
    /// `idx` from [`resolve_field`](Self::resolve_field). False (nothing
    /// appended) when the value's type is not the column's: the caller
    /// reports it with [`field_type_conflict`](Self::field_type_conflict).
    /// No duplicate can reach here. A plain `bool` rather than a `Result`
    /// carrying a `WriteError`: this runs for every field of every row, and
    /// moving the large error type through every call cost ~40
    /// instructions per field.
    #[inline(always)]
    pub(crate) fn push_field(&mut self, idx: u32, value: &FieldValue<'_>) -> bool {
        let col = &mut self.columns[idx as usize];
        match (&mut col.data, value) {
            (ColumnData::F64(b), FieldValue::F64(v)) => b.append_value(*v),
            (ColumnData::I64(b), FieldValue::I64(v)) => b.append_value(*v),
            (ColumnData::U64(b), FieldValue::U64(v)) => b.append_value(*v),
            (ColumnData::Bool(b), FieldValue::Bool(v)) => b.append_value(*v),
            (ColumnData::String(b), FieldValue::String(v)) => b.append_value(v.unescaped()),
            _ => return false,
        }
        col.len += 1;
        self.filled += 1;
        true
    }

    /// The error for a value [`push_field`](Self::push_field) refused.
    #[cold]
    pub(crate) fn field_type_conflict(
        &self,
        idx: u32,
        value: &FieldValue<'_>,
        line: usize,
    ) -> WriteError {
        let requested = match value {
            FieldValue::I64(_) => ColumnType::I64,
            FieldValue::U64(_) => ColumnType::U64,
            FieldValue::F64(_) => ColumnType::F64,
            FieldValue::Bool(_) => ColumnType::Bool,
            FieldValue::String(_) => ColumnType::String,
        };
        self.type_conflict(idx as usize, requested, line)
    }

    #[cold]
    fn type_conflict(&self, idx: usize, requested: ColumnType, line: usize) -> WriteError {
        let col = &self.columns[idx];
        WriteError::ColumnTypeConflict {
            line: Some(line),
            table: self.name.to_string(),
            column: col.name.to_string(),
            existing: col.column_type,
            requested,
        }
    }

    /// Appends tag `name` = `value` to the current row; returns the column
    /// and dictionary key, for [`remember_tags`](Self::remember_tags).
    pub(crate) fn append_tag(
        &mut self,
        name: Cow<'a, str>,
        value: &str,
        line: usize,
    ) -> Result<(u32, i32), WriteError> {
        // The previous row's tag at this position, inline (the common
        // case); anything else through `column`.
        let idx = match self.hint.get(self.hint_pos) {
            Some(&i)
                if self.columns[i].column_type == ColumnType::Tag
                    && same_name(&self.columns[i].name, &name) =>
            {
                self.hint_pos += 1;
                i
            }
            _ => self.column(name, ColumnType::Tag, line)?,
        };
        let col = &mut self.columns[idx];
        if col.len > self.rows {
            return Err(WriteError::DuplicateColumn {
                line,
                table: self.name.to_string(),
                column: col.name.to_string(),
            });
        }
        let ColumnData::Tag(d) = &mut col.data else {
            unreachable!("column type checked above");
        };
        let Some(key) = d.append_value(value) else {
            return Err(WriteError::Internal(format!(
                "tag column `{}` outgrew 32-bit offsets",
                col.name
            )));
        };
        col.len += 1;
        self.filled += 1;
        Ok((idx as u32, key))
    }

    /// Appends the tags of a line whose raw tag section `raw` (measurement
    /// included) an earlier line of this request had: the same bytes give
    /// the same tags, so their keys are reused without looking at names or
    /// values. `Err` with the section's hash when `raw` was not seen: append
    /// the tags one by one, then [`remember_tags`](Self::remember_tags)
    /// with that hash.
    #[inline]
    pub(crate) fn append_cached_tags(&mut self, raw: &[u8]) -> Result<(), u64> {
        let id = self.known_series(raw)?;
        self.append_series(id);
        Ok(())
    }

    /// The id of tag section `raw` if a line of this request had it (for
    /// [`Parser::next_line_with`](crate::line_protocol::Parser::next_line_with)),
    /// else its hash (for [`remember_tags`](Self::remember_tags), so that
    /// a new section is hashed once).
    #[inline]
    pub(crate) fn known_series(&self, raw: &[u8]) -> Result<u32, u64> {
        let hash = self.series.hash(raw);
        self.series.find(hash, raw).ok_or(hash)
    }

    /// Appends the tags of series `id` ([`known_series`](Self::known_series))
    /// to the current row, as [`append_cached_tags`](Self::append_cached_tags)
    /// does on a hit.
    #[inline]
    pub(crate) fn append_series(&mut self, id: u32) {
        let pairs = self.series.pairs(id);
        for &(idx, key) in pairs {
            let col = &mut self.columns[idx as usize];
            if let ColumnData::Tag(d) = &mut col.data {
                d.append_key(key);
                col.len += 1;
                self.filled += 1;
            }
        }
        // Field hints follow the tags' positions.
        self.hint_pos = pairs.len();
    }

    /// Records what the tag section `raw` produced (see
    /// [`append_cached_tags`](Self::append_cached_tags), which gave `hash`).
    pub(crate) fn remember_tags(&mut self, hash: u64, raw: &[u8], pairs: &[(u32, i32)]) {
        self.series.insert(hash, raw, pairs);
    }

    /// Appends `value` to column `name` of the current row.
    pub(crate) fn append(
        &mut self,
        name: Cow<'a, str>,
        value: Value<'_>,
        line: usize,
    ) -> Result<(), WriteError> {
        let idx = self.column(name, value.column_type(), line)?;
        let col = &mut self.columns[idx];
        if col.len > self.rows {
            return Err(WriteError::DuplicateColumn {
                line,
                table: self.name.to_string(),
                column: col.name.to_string(),
            });
        }
        match (&mut col.data, value) {
            (ColumnData::I64(b), Value::I64(v)) => b.append_value(v),
            (ColumnData::U64(b), Value::U64(v)) => b.append_value(v),
            (ColumnData::F64(b), Value::F64(v)) => b.append_value(v),
            (ColumnData::Bool(b), Value::Bool(v)) => b.append_value(v),
            (ColumnData::String(b), Value::String(v)) => b.append_value(v),
            _ => unreachable!("column type checked above"),
        }
        col.len += 1;
        self.filled += 1;
        Ok(())
    }

    /// Ends the current row with timestamp `time` (ns), padding nulls.
    pub(crate) fn finish_row(&mut self, time: i64) {
        self.times.append_value(time);
        self.rows += 1;
        if self.hint_pos < self.hint.len() {
            self.hint.truncate(self.hint_pos);
        }
        self.hint_pos = 0;
        // Every column got one value (each counted once: a second value
        // for a column is refused before it is counted): no null to pad.
        let filled = std::mem::take(&mut self.filled);
        if filled == self.columns.len() {
            return;
        }
        let rows = self.rows;
        for c in &mut self.columns {
            if c.len < rows {
                c.data.append_nulls(rows - c.len);
                c.len = rows;
            }
        }
    }

    /// Drops the partial current row (after an error on one of its values
    /// the whole request is refused anyway; this keeps the builder sane).
    pub(crate) fn finish(mut self) -> Result<BuiltTable, WriteError> {
        let mut fields = Vec::new();
        let mut arrays = Vec::with_capacity(self.columns.len() + 1);
        let mut new_columns = Vec::new();
        let recent = recent_schema(&self.columns);
        for c in self.columns {
            if recent.is_none() {
                fields.push(arrow_field(&c.name, c.column_type));
            }
            arrays.push(
                c.data.finish().map_err(|e| {
                    WriteError::Internal(format!("building column `{}`: {e}", c.name))
                })?,
            );
            if c.new {
                new_columns.push(NewColumn {
                    name: c.name.into_owned(),
                    column_type: c.column_type,
                    first_line: c.first_line,
                });
            }
        }
        arrays.push(Arc::new(self.times.finish().with_timezone("UTC")));
        let schema = recent.unwrap_or_else(|| {
            fields.push(arrow_field(TIME_COLUMN, ColumnType::Time));
            let schema = Arc::new(Schema::new(fields.into_iter().collect::<Vec<Field>>()));
            remember_schema(&schema);
            schema
        });
        let batch = RecordBatch::try_new_with_options(
            schema,
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(self.rows)),
        )
        .map_err(|e| WriteError::Internal(format!("building batch for `{}`: {e}", self.name)))?;
        Ok(BuiltTable {
            name: self.name.into_owned(),
            batch,
            new_columns,
            cached: self.cached,
        })
    }
}

/// How many Arrow schemas each thread remembers (see [`recent_schema`]).
const RECENT_SCHEMAS: usize = 8;

thread_local! {
    /// The last Arrow schemas this thread built, replaced in turn.
    static RECENT: std::cell::RefCell<([Option<SchemaRef>; RECENT_SCHEMAS], usize)> =
        const { std::cell::RefCell::new(([const { None }; RECENT_SCHEMAS], 0)) };
}

/// A schema this thread built before for the same columns (names, types,
/// order), if it remembers one. A table's writes mostly carry the same
/// columns in the same order; sharing one `Arc<Schema>` spares each write
/// two allocations per column (and their frees later, on the merge thread,
/// where they took the allocator's lock from under the write path), and
/// lets a merge of batches that share it skip aligning them.
fn recent_schema(columns: &[Column]) -> Option<SchemaRef> {
    RECENT.with_borrow(|(slots, _)| {
        slots
            .iter()
            .flatten()
            .find(|s| same_columns(s, columns))
            .cloned()
    })
}

fn remember_schema(schema: &SchemaRef) {
    RECENT.with_borrow_mut(|(slots, next)| {
        slots[*next] = Some(Arc::clone(schema));
        *next = (*next + 1) % RECENT_SCHEMAS;
    });
}

/// `schema` is what [`TableBuilder::finish`] builds for `columns`: theirs
/// in order, then time (whose type never changes).
fn same_columns(schema: &Schema, columns: &[Column]) -> bool {
    let fields = schema.fields();
    fields.len() == columns.len() + 1
        && fields[columns.len()].name() == TIME_COLUMN
        && fields
            .iter()
            .zip(columns)
            .all(|(f, c)| same_name(f.name(), &c.name) && has_type(f.data_type(), c.column_type))
}

/// `arrow_type(t) == dt`, without building the type (a tag's allocates).
fn has_type(dt: &DataType, t: ColumnType) -> bool {
    match (t, dt) {
        (ColumnType::Tag, DataType::Dictionary(k, v)) => {
            **k == DataType::Int32 && **v == DataType::Utf8
        }
        (ColumnType::I64, DataType::Int64)
        | (ColumnType::U64, DataType::UInt64)
        | (ColumnType::F64, DataType::Float64)
        | (ColumnType::Bool, DataType::Boolean)
        | (ColumnType::String, DataType::Utf8) => true,
        _ => false,
    }
}

/// `a == b` for column names, inline: names are short, and a call to
/// `memcmp` per field of every row was a visible share of the write path.
/// Names of 8 to 16 bytes (most field and tag keys) are compared as two
/// overlapping 8-byte words.
#[inline(always)]
fn same_name(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// [`same_name`] for bytes (tag values, in `tag_dictionary.rs`).
#[inline(always)]
pub(super) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if let (Some(a0), Some(a1), Some(b0), Some(b1)) = (
        a.first_chunk::<8>(),
        a.last_chunk::<8>(),
        b.first_chunk::<8>(),
        b.last_chunk::<8>(),
    ) && a.len() <= 16
    {
        return (u64::from_ne_bytes(*a0) ^ u64::from_ne_bytes(*b0))
            | (u64::from_ne_bytes(*a1) ^ u64::from_ne_bytes(*b1))
            == 0;
    }
    // 4 to 7 bytes (`x64`-like tag values are common): two overlapping
    // 4-byte words.
    if let (Some(a0), Some(a1), Some(b0), Some(b1)) = (
        a.first_chunk::<4>(),
        a.last_chunk::<4>(),
        b.first_chunk::<4>(),
        b.last_chunk::<4>(),
    ) && a.len() < 8
    {
        return (u32::from_ne_bytes(*a0) ^ u32::from_ne_bytes(*b0))
            | (u32::from_ne_bytes(*a1) ^ u32::from_ne_bytes(*b1))
            == 0;
    }
    // 1 to 3 bytes: the first, middle and last cover them all.
    if let (Some(&a0), Some(&b0)) = (a.first(), b.first())
        && a.len() < 4
    {
        let (mid, last) = (a.len() / 2, a.len() - 1);
        return (a0 == b0) & (a[mid] == b[mid]) & (a[last] == b[last]);
    }
    a == b
}

#[cfg(test)]
mod tests {
    use super::{Primitive, same_name};
    use arrow::array::Array;
    use arrow::datatypes::Float64Type;

    #[test]
    fn primitive_columns_keep_values_and_nulls() {
        let mut p = Primitive::<Float64Type>::with_capacity(2);
        p.append_value(1.5);
        let a = p.finish();
        assert_eq!(a.values().as_ref(), [1.5]);
        assert!(a.nulls().is_none(), "no bitmap without nulls");

        p.append_nulls(2);
        p.append_value(2.5);
        p.append_value(3.5);
        p.append_nulls(1);
        let a = p.finish();
        let got: Vec<Option<f64>> = a.iter().collect();
        assert_eq!(got, [None, None, Some(2.5), Some(3.5), None]);
        assert_eq!(a.null_count(), 3);
    }

    #[test]
    fn same_name_is_string_equality() {
        // Every length class (0, 1–3, 4–7, 8–16, longer), differing at the
        // start, the middle and the end.
        let names = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "aa",
            "abc",
            "acc",
            "abd",
            "xbc",
            "abcd",
            "abce",
            "xbcd",
            "abcdefg",
            "abcdeff",
            "xbcdefg",
            "abcxefg",
            "usage_u",
            "usage_us",
            "usage_use",
            "usage_user",
            "usage_usex",
            "xsage_user",
            "usage_guest_nice",
            "usage_guest_nicf",
            "usage_guest_nice_",
            "usage_guest_nice_x",
            "ü",
            "u\u{308}",
        ];
        for a in names {
            for b in names {
                assert_eq!(same_name(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }
}
