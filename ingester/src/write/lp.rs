//! Line protocol → per-table Arrow batches.
//!
//! The whole body is parsed and validated before anything is applied: the
//! first error refuses the request and names its line, table and column.
//! A key repeated within one line keeps its last value, as InfluxDB does.

use std::borrow::Cow;
use std::sync::Arc;

use hashbrown::HashMap;

use super::WriteError;
use super::builder::{BuiltTable, TableBuilder, Value};
use super::names;
use super::request::Precision;
use crate::catalog::TableSchema;
use crate::line_protocol::{FieldValue, Line, Name, Parsed, Parser};

/// Parses and validates `body`, returning one batch per table in order of
/// first appearance. `cached` gives the catalog schema known for a table.
pub(crate) fn build_tables(
    body: &[u8],
    precision: Precision,
    default_time: i64,
    cached: &dyn Fn(&str) -> Option<Arc<TableSchema>>,
) -> Result<Vec<BuiltTable>, WriteError> {
    build_tables_with(body, precision, default_time, cached, true)
}

/// [`build_tables`], with the fields' fast path (`fast_fields`) or only
/// the general one (the reference the tests compare the fast path with).
pub(crate) fn build_tables_with(
    body: &[u8],
    precision: Precision,
    default_time: i64,
    cached: &dyn Fn(&str) -> Option<Arc<TableSchema>>,
    fast_fields: bool,
) -> Result<Vec<BuiltTable>, WriteError> {
    // Most bodies hold one table; a `TableBuilder` is large enough that
    // `Vec`'s first growth (to four) is a block glibc serves only after
    // consolidating its small free chunks.
    let mut tables: Vec<TableBuilder> = Vec::with_capacity(1);
    let mut index: HashMap<Cow<'_, str>, usize> = HashMap::new();
    let mut last: Option<usize> = None;
    let rows_hint = rows_hint(body);
    // Positions of tag keys overridden later in the same line (rare).
    let mut skip: Vec<bool> = Vec::new();
    let mut fields = FieldAppender::new(fast_fields);
    // The current line's tags as (column, dictionary key), for the cache.
    let mut tag_keys: Vec<(u32, i32)> = Vec::new();

    let mut parser = Parser::new(body);
    loop {
        // A line whose tag section the current table has seen in this
        // request is not parsed up to its fields (see `next_line_with`).
        // A section it does not know leaves its hash for the cache look-up
        // below: (table, address and length of the section, hash).
        let mut missed: Option<(usize, usize, usize, u64)> = None;
        let known = |section: &[u8]| {
            let t = last?;
            match tables[t].known_series(section) {
                Ok(id) => Some(id),
                Err(hash) => {
                    missed = Some((t, section.as_ptr() as usize, section.len(), hash));
                    None
                }
            }
        };
        let Some(parsed) = parser.next_line_with(known) else {
            break;
        };
        let line = match parsed.map_err(WriteError::Parse)? {
            Parsed::Known(line) => {
                // `known` answered for the table of the previous line.
                let Some(t) = last else {
                    return Err(WriteError::Internal(
                        "a known series without a table".into(),
                    ));
                };
                let table = &mut tables[t];
                let n = line.line_number;
                let time = row_time(table, line.timestamp, precision, default_time, n)?;
                table.append_series(line.series);
                fields.append(table, line.fields, n)?;
                table.finish_row(time);
                continue;
            }
            Parsed::Line(line) => line,
        };
        let n = line.line_number;
        let measurement = line.measurement.unescaped();

        let t = match last {
            Some(i) if tables[i].name() == measurement.as_ref() => i,
            _ => match index.get(measurement.as_ref()) {
                Some(&i) => i,
                None => {
                    names::check_table(&measurement).map_err(|reason| WriteError::InvalidName {
                        line: Some(n),
                        table: measurement.to_string(),
                        name: measurement.to_string(),
                        reason,
                    })?;
                    let i = tables.len();
                    // The first table gets room for the whole body; further
                    // tables of a mixed body start small and grow.
                    let cap = if i == 0 { rows_hint } else { 64 };
                    tables.push(TableBuilder::new(
                        measurement.clone(),
                        cached(&measurement),
                        cap,
                    ));
                    index.insert(measurement, i);
                    i
                }
            },
        };
        last = Some(t);
        let table = &mut tables[t];
        let time = row_time(table, line.timestamp, precision, default_time, n)?;

        // Duplicate keys within the line: the last one wins. Tags and
        // fields are separate (a name used as both is a type conflict).
        // Tags: a tag section already seen in this request (byte for byte)
        // reuses its dictionary keys; see `tag_dictionary.rs`.
        let series = tag_section(body, &line);
        // `Some(hash)`: a tag section not seen yet, to remember.
        let miss = match (series, missed) {
            // `known` just looked these bytes up in this table and missed:
            // no second hash or probe.
            (Some(raw), Some((mt, at, len, hash)))
                if (mt, at, len) == (t, raw.as_ptr() as usize, raw.len()) =>
            {
                Some(hash)
            }
            (Some(raw), _) => table.append_cached_tags(raw).err(),
            (None, _) => None,
        };
        let tags_done = series.is_some() && miss.is_none();
        if !tags_done {
            tag_keys.clear();
            // A quadratic scan over raw names, cheap for the handful of
            // tags a line has.
            if has_duplicates(line.tags.iter().map(|(k, _)| k.raw())) {
                skip.clear();
                mark_overridden(line.tags.iter().map(|(k, _)| k.unescaped()), &mut skip);
                for (i, (k, v)) in line.tags.iter().enumerate() {
                    if !skip[i] {
                        tag_keys.push(table.append_tag(k.unescaped(), &v.unescaped(), n)?);
                    }
                }
            } else {
                for (k, v) in line.tags {
                    tag_keys.push(table.append_tag(k.unescaped(), &v.unescaped(), n)?);
                }
            }
        }
        fields.append(table, line.fields, n)?;
        if let (Some(raw), Some(hash)) = (series, miss) {
            table.remember_tags(hash, raw, &tag_keys);
        }
        table.finish_row(time);
    }
    if tables.is_empty() {
        return Err(WriteError::Empty);
    }
    tables.into_iter().map(TableBuilder::finish).collect()
}

/// The row's time in nanoseconds: its timestamp in the write's precision,
/// or the request's default time.
#[inline]
fn row_time(
    table: &TableBuilder,
    timestamp: Option<i64>,
    precision: Precision,
    default_time: i64,
    line: usize,
) -> Result<i64, WriteError> {
    match timestamp {
        None => Ok(default_time),
        Some(ts) => {
            ts.checked_mul(precision.multiplier())
                .ok_or_else(|| WriteError::TimestampOutOfRange {
                    line,
                    table: table.name().to_string(),
                    value: ts,
                    precision,
                })
        }
    }
}

/// Appends lines' fields to their rows, with scratch space reused from
/// line to line.
struct FieldAppender {
    /// Whether to try the fast path (the tests compare it with the
    /// general one).
    fast: bool,
    /// The current line's field columns (the fast path of `resolve_field`).
    cols: Vec<u32>,
    /// Positions of keys overridden later in the same line (rare).
    skip: Vec<bool>,
}

impl FieldAppender {
    fn new(fast: bool) -> Self {
        Self {
            fast,
            cols: Vec::new(),
            skip: Vec::new(),
        }
    }

    /// Appends a line's fields to the current row of `table`. The fast
    /// path finds every field's existing column, all distinct (so no
    /// duplicate), before appending anything; a new column or a repeated
    /// name sends the line to the general path, where the last of repeated
    /// keys wins.
    #[inline]
    fn append<'a>(
        &mut self,
        table: &mut TableBuilder<'a>,
        fields: &[(Name<'a>, FieldValue<'_>)],
        n: usize,
    ) -> Result<(), WriteError> {
        let start = table.fields_start();
        self.cols.clear();
        for (k, _) in fields.iter().filter(|_| self.fast) {
            match table.resolve_field(&k.unescaped()) {
                Some(idx) => self.cols.push(idx),
                None => break,
            }
        }
        if self.fast && self.cols.len() == fields.len() {
            for ((_, v), &idx) in fields.iter().zip(self.cols.iter()) {
                if !table.push_field(idx, v) {
                    return Err(table.field_type_conflict(idx, v, n));
                }
            }
            return Ok(());
        }
        table.abandon_fields(start);
        if has_duplicates(fields.iter().map(|(k, _)| k.raw())) {
            self.skip.clear();
            mark_overridden(fields.iter().map(|(k, _)| k.unescaped()), &mut self.skip);
            for (i, (k, v)) in fields.iter().enumerate() {
                if !self.skip[i] {
                    append_field(table, k.unescaped(), v, n)?;
                }
            }
        } else {
            for (k, v) in fields {
                append_field(table, k.unescaped(), v, n)?;
            }
        }
        Ok(())
    }
}

/// Rows to reserve per column: the body's length over its first line's,
/// plus 1/16. The lines of a batch are usually alike, so the builders
/// neither regrow nor keep several times the data's size as spare
/// capacity, which the buffer would hold (and count against its limit)
/// until persisted. The margin matters: a first line a few bytes longer
/// than the average made the guess a few rows short, and the builders then
/// doubled — live 5,000-line TSBS batches held 1.7× their data's size.
fn rows_hint(body: &[u8]) -> usize {
    let first = memchr::memchr(b'\n', body).map_or(body.len(), |i| i + 1);
    // A short first line (a comment, say) must not inflate the guess.
    let rows = body.len().div_ceil(first.max(32));
    (rows + rows / 16 + 4).clamp(1, 1 << 16)
}

/// The raw bytes of `line` from its measurement to the end of its last tag
/// value, or `None` for a line without tags.
fn tag_section<'a>(body: &'a [u8], line: &Line<'_, 'a>) -> Option<&'a [u8]> {
    let (_, last) = line.tags.last()?;
    let base = body.as_ptr() as usize;
    let start = (line.measurement.raw().as_ptr() as usize).checked_sub(base)?;
    let end = (last.raw().as_ptr() as usize + last.raw().len()).checked_sub(base)?;
    body.get(start..end)
}

fn append_field<'a>(
    table: &mut TableBuilder<'a>,
    name: Cow<'a, str>,
    v: &FieldValue<'_>,
    line: usize,
) -> Result<(), WriteError> {
    with_value(v, |value| table.append(name, value, line))
}

/// Calls `f` with a parsed field as a column value (a string unescaped
/// only if it has escapes).
#[inline]
fn with_value<R>(v: &FieldValue<'_>, f: impl FnOnce(Value<'_>) -> R) -> R {
    match v {
        FieldValue::I64(x) => f(Value::I64(*x)),
        FieldValue::U64(x) => f(Value::U64(*x)),
        FieldValue::F64(x) => f(Value::F64(*x)),
        FieldValue::Bool(x) => f(Value::Bool(*x)),
        FieldValue::String(x) => f(Value::String(&x.unescaped())),
    }
}

fn has_duplicates<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> bool {
    let mut rest = keys.clone();
    for k in keys {
        rest.next();
        if rest.clone().any(|o| o == k) {
            return true;
        }
    }
    false
}

fn mark_overridden<'a>(keys: impl Iterator<Item = Cow<'a, str>>, skip: &mut Vec<bool>) {
    let keys: Vec<Cow<'a, str>> = keys.collect();
    for (i, k) in keys.iter().enumerate() {
        skip.push(keys[i + 1..].iter().any(|o| o == k));
    }
}
