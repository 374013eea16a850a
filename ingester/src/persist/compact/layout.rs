//! Which columns enter the sort, in what form, and how the output is
//! rebuilt from them.
//!
//! Two forms:
//!
//! - **Packed** ([`compact`](super::compact)): all input is known, so tags,
//!   `time` and the arrival number are packed into one `FixedSizeBinary`
//!   sort column ([`super::key`]); only fields travel beside it.
//! - **Columns** ([`compact_sources`](super::compact_sources), or tags that
//!   cannot be ranked): tags (dictionaries), `time` and an arrival column
//!   are sorted as separate columns.
//!
//! Either way the sort order is: the sort key's tags and `time` as given,
//! then the schema's other tags (so duplicates are adjacent), then `time`
//! if the key lacked it; and finally arrival.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt64Array, new_null_array};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_expr::expressions::Column;

use super::key::{Item, PackedKey};
use super::ranks::{TagRanks, rankable};
use super::{ARRIVAL_COLUMN, CompactError, KEY_COLUMN, RESERVED_PREFIX, TIME_COLUMN, is_tag};

/// How the sort key is represented.
#[derive(Debug)]
pub(super) enum Mode {
    /// One key column at `key` (tags, time; see [`PackedKey`]) and, when
    /// the key does not include it, the arrival number at `arrival`.
    Packed {
        key: usize,
        arrival: Option<usize>,
        packed: PackedKey,
    },
    /// Separate sort columns.
    Columns {
        time: usize,
        /// Every tag: with `time`, the dedup key.
        tags: Vec<usize>,
        arrival: usize,
        /// Sort columns in order (arrival excluded).
        sort_order: Vec<usize>,
    },
}

/// Where an output column comes from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Out {
    /// A sort-schema column; `merge` for fields (merged across
    /// duplicates), not for key columns (equal across duplicates).
    Column { pos: usize, merge: bool },
    /// A tag decoded from the packed key (index in [`PackedKey`]).
    Tag(usize),
    /// `time` decoded from the packed key.
    Time,
}

/// The shape of one compaction.
#[derive(Debug)]
pub(super) struct Layout {
    /// The table schema inputs are checked against.
    pub(super) table: SchemaRef,
    /// The batches entering the sort.
    pub(super) sort_schema: SchemaRef,
    pub(super) mode: Mode,
    /// One per output column.
    pub(super) outputs: Vec<Out>,
    pub(super) output_schema: SchemaRef,
    /// The sort order by name (without arrival).
    order: Vec<Item>,
    /// The table columns read to build the sort input, in table order.
    inputs: Vec<String>,
}

impl Layout {
    /// `columns`: the output columns, in order (key columns are read for
    /// the dedup regardless). `pack_from`: all the input, when known up
    /// front, to pack the key.
    pub(super) fn new(
        table: SchemaRef,
        columns: &[String],
        sort_key: &[String],
        pack_from: Option<&[RecordBatch]>,
    ) -> Result<Self, CompactError> {
        let Some((_, time_field)) = table.column_with_name(TIME_COLUMN) else {
            return Err(CompactError::Schema(format!("no {TIME_COLUMN:?} column")));
        };
        let DataType::Timestamp(TimeUnit::Nanosecond, timezone) = time_field.data_type() else {
            return Err(CompactError::Schema(format!(
                "{TIME_COLUMN:?} is {}, not a nanosecond timestamp",
                time_field.data_type()
            )));
        };
        if let Some(f) = table
            .fields()
            .iter()
            .find(|f| f.name().starts_with(RESERVED_PREFIX))
        {
            return Err(CompactError::Schema(format!(
                "reserved column name {:?}",
                f.name()
            )));
        }
        if let Some(c) = columns.iter().find(|c| table.column_with_name(c).is_none()) {
            return Err(CompactError::UnknownProjection(c.clone()));
        }
        let needed: Vec<Arc<Field>> = table
            .fields()
            .iter()
            .filter(|f| {
                f.name() == TIME_COLUMN || is_tag(f.data_type()) || columns.contains(f.name())
            })
            .cloned()
            .collect();
        let inputs: Vec<String> = needed.iter().map(|f| f.name().clone()).collect();
        let tags: Vec<String> = needed
            .iter()
            .filter(|f| is_tag(f.data_type()))
            .map(|f| f.name().clone())
            .collect();

        let mut order: Vec<Item> = Vec::with_capacity(tags.len() + 1);
        for name in sort_key {
            let item = match name.as_str() {
                TIME_COLUMN => Item::Time,
                n if tags.iter().any(|t| t == n) => Item::Tag(n.to_string()),
                _ => continue, // a field, or absent: not part of the key
            };
            if !order.contains(&item) {
                order.push(item);
            }
        }
        for item in tags
            .iter()
            .map(|t| Item::Tag(t.clone()))
            .chain(std::iter::once(Item::Time))
        {
            if !order.contains(&item) {
                order.push(item);
            }
        }
        let output_schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| table.field_with_name(c).cloned())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CompactError::Schema(e.to_string()))?,
        ));

        let packed = match pack_from {
            Some(batches)
                if needed
                    .iter()
                    .all(|f| !is_tag(f.data_type()) || rankable(f.data_type())) =>
            {
                tags.iter()
                    .map(|t| TagRanks::collect(batches, t).map(|r| (t.clone(), r)))
                    .collect::<Option<Vec<_>>>()
                    .and_then(|ranks| PackedKey::new(&order, ranks, timezone.clone()).ok())
            }
            _ => None,
        };
        let (sort_schema, mode, outputs) = match packed {
            Some(packed) => {
                let mut fields: Vec<Arc<Field>> = needed
                    .iter()
                    .filter(|f| f.name() != TIME_COLUMN && !is_tag(f.data_type()))
                    .cloned()
                    .collect();
                let key = fields.len();
                fields.push(Arc::new(Field::new(KEY_COLUMN, packed.data_type(), false)));
                let arrival = packed.needs_arrival().then(|| {
                    fields.push(Arc::new(Field::new(
                        ARRIVAL_COLUMN,
                        DataType::UInt64,
                        false,
                    )));
                    key + 1
                });
                let outputs = columns
                    .iter()
                    .map(|c| match packed.tag_index(c) {
                        Some(t) => Out::Tag(t),
                        None if c == TIME_COLUMN => Out::Time,
                        None => Out::Column {
                            pos: fields
                                .iter()
                                .position(|f| f.name() == c)
                                .expect("fields are needed"),
                            merge: true,
                        },
                    })
                    .collect();
                (
                    fields,
                    Mode::Packed {
                        key,
                        arrival,
                        packed,
                    },
                    outputs,
                )
            }
            None => {
                let mut fields = needed;
                let pos = |name: &str| {
                    fields
                        .iter()
                        .position(|f| f.name() == name)
                        .expect("needed")
                };
                let time = pos(TIME_COLUMN);
                let tag_pos: Vec<usize> = tags.iter().map(|t| pos(t)).collect();
                let sort_order = order
                    .iter()
                    .map(|i| match i {
                        Item::Time => time,
                        Item::Tag(t) => pos(t),
                    })
                    .collect();
                let outputs = columns
                    .iter()
                    .map(|c| {
                        let p = pos(c);
                        Out::Column {
                            pos: p,
                            merge: p != time && !tag_pos.contains(&p),
                        }
                    })
                    .collect();
                let arrival = fields.len();
                fields.push(Arc::new(Field::new(
                    ARRIVAL_COLUMN,
                    DataType::UInt64,
                    false,
                )));
                let mode = Mode::Columns {
                    time,
                    tags: tag_pos,
                    arrival,
                    sort_order,
                };
                (fields, mode, outputs)
            }
        };
        Ok(Self {
            table,
            sort_schema: Arc::new(Schema::new(sort_schema)),
            mode,
            outputs,
            output_schema,
            order,
            inputs,
        })
    }

    /// The table columns read to build the sort input (requested columns
    /// plus the dedup key), in table order: a Parquet scan's projection.
    pub(super) fn input_columns(&self) -> &[String] {
        &self.inputs
    }

    /// The sort expressions for DataFusion.
    pub(super) fn sort_exprs(&self) -> Vec<PhysicalSortExpr> {
        let opts = SortOptions {
            descending: false,
            nulls_first: true,
        };
        let cols: Vec<usize> = match &self.mode {
            Mode::Packed { key, .. } => vec![*key],
            Mode::Columns {
                arrival,
                sort_order,
                ..
            } => sort_order
                .iter()
                .chain(std::iter::once(arrival))
                .copied()
                .collect(),
        };
        cols.into_iter()
            .map(|i| {
                PhysicalSortExpr::new(
                    Arc::new(Column::new(self.sort_schema.field(i).name(), i)),
                    opts,
                )
            })
            .collect()
    }

    /// The output's sort order by name, as far as the output has the
    /// columns (for the Parquet `sorting_columns` metadata).
    pub(super) fn output_sort_columns(&self) -> Vec<String> {
        self.order
            .iter()
            .map(|i| match i {
                Item::Time => TIME_COLUMN,
                Item::Tag(t) => t.as_str(),
            })
            .map_while(|n| {
                self.output_schema
                    .column_with_name(n)
                    .map(|_| n.to_string())
            })
            .collect()
    }

    /// Checks `batch` against the table schema; returns its `time` column.
    pub(super) fn check<'a>(
        &self,
        input: usize,
        batch: &'a RecordBatch,
    ) -> Result<Option<&'a ArrayRef>, CompactError> {
        let mut time = None;
        for (f, c) in batch.schema_ref().fields().iter().zip(batch.columns()) {
            let Some((_, expected)) = self.table.column_with_name(f.name()) else {
                return Err(CompactError::UnknownColumn {
                    input,
                    column: f.name().clone(),
                });
            };
            if expected.data_type() != f.data_type() {
                return Err(CompactError::ColumnType {
                    input,
                    column: f.name().clone(),
                    expected: expected.data_type().clone(),
                    actual: f.data_type().clone(),
                });
            }
            if f.name() == TIME_COLUMN {
                if c.null_count() > 0 {
                    return Err(CompactError::NullTime {
                        input,
                        nulls: c.null_count(),
                    });
                }
                time = Some(c);
            }
        }
        if time.is_none() && batch.num_rows() > 0 {
            return Err(CompactError::MissingTime { input });
        }
        Ok(time)
    }

    /// `batch` (checked, non-empty) in the sort schema: columns it lacks
    /// are null, its rows numbered from `*next` in arrival order.
    pub(super) fn align(
        &self,
        input: usize,
        batch: &RecordBatch,
        next: &mut u64,
    ) -> Result<RecordBatch, CompactError> {
        let n = batch.num_rows();
        let err = |source| CompactError::Align { input, source };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sort_schema.fields().len());
        let plain = match &self.mode {
            Mode::Packed { key, .. } => *key,
            Mode::Columns { arrival, .. } => *arrival,
        };
        for f in &self.sort_schema.fields()[..plain] {
            columns.push(match batch.column_by_name(f.name()) {
                Some(c) => Arc::clone(c),
                None => new_null_array(f.data_type(), n),
            });
        }
        let first = *next;
        *next += n as u64;
        let arrival =
            || Arc::new(UInt64Array::from_iter_values(first..first + n as u64)) as ArrayRef;
        match &self.mode {
            Mode::Packed {
                packed, arrival: a, ..
            } => {
                columns.push(packed.encode(batch, first).map_err(err)?);
                if a.is_some() {
                    columns.push(arrival());
                }
            }
            Mode::Columns { .. } => columns.push(arrival()),
        }
        RecordBatch::try_new_with_options(
            Arc::clone(&self.sort_schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;

    use super::*;
    use crate::persist::compact::test_util::{Col, batch, table_schema};

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn table() -> SchemaRef {
        table_schema(
            &["a", "b"],
            &[("f", DataType::Float64), ("g", DataType::Float64)],
        )
    }

    #[test]
    fn columns_mode_adds_key_columns_and_orders_the_sort() {
        let l =
            Layout::new(table(), &strs(&["g"]), &strs(&["b", "f", "time"]), None).expect("layout");
        let names: Vec<&str> = l
            .sort_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["a", "b", "g", "time", ARRIVAL_COLUMN]);
        let Mode::Columns { sort_order, .. } = &l.mode else {
            panic!("columns mode")
        };
        // "f" is a field: ignored; "a" was missing from the key: after time.
        let order: Vec<&str> = sort_order.iter().map(|&i| names[i]).collect();
        assert_eq!(order, ["b", "time", "a"]);
        assert_eq!(l.output_schema.fields().len(), 1);
        assert!(l.output_sort_columns().is_empty());
    }

    #[test]
    fn packed_mode_carries_only_fields_beside_the_key() {
        let b = batch(&[
            ("a", Col::Tag(vec![Some("x")])),
            ("time", Col::Time(vec![1])),
            ("f", Col::F64(vec![Some(1.0)])),
        ]);
        let cols = strs(&["a", "b", "f", "time"]);
        let l = Layout::new(
            table(),
            &cols,
            &strs(&["b", "a"]),
            Some(std::slice::from_ref(&b)),
        )
        .expect("layout");
        let names: Vec<&str> = l
            .sort_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            ["f", KEY_COLUMN, ARRIVAL_COLUMN],
            "narrow key: arrival beside it"
        );
        assert!(matches!(
            l.outputs[..],
            [
                Out::Tag(_),
                Out::Tag(_),
                Out::Column {
                    pos: 0,
                    merge: true
                },
                Out::Time
            ]
        ));
        assert_eq!(l.output_sort_columns(), ["b", "a", "time"]);
        let mut next = 5;
        let aligned = l.align(0, &b, &mut next).expect("align");
        assert_eq!(next, 6);
        assert_eq!(
            aligned
                .column(2)
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .value(0),
            5
        );
    }

    #[test]
    fn rejects_bad_schemas() {
        assert!(matches!(
            Layout::new(table(), &strs(&["nope"]), &[], None),
            Err(CompactError::UnknownProjection(c)) if c == "nope"
        ));
        let no_time = Arc::new(Schema::new(vec![Field::new("f", DataType::Float64, true)]));
        assert!(matches!(
            Layout::new(no_time, &[], &[], None),
            Err(CompactError::Schema(_))
        ));
        let reserved = table_schema(&[], &[(KEY_COLUMN, DataType::Float64)]);
        assert!(matches!(
            Layout::new(reserved, &[], &[], None),
            Err(CompactError::Schema(_))
        ));
    }

    #[test]
    fn check_names_the_bad_column() {
        let l = Layout::new(table(), &strs(&["a", "f", "time"]), &[], None).expect("layout");
        let wrong = batch(&[("time", Col::Time(vec![1])), ("f", Col::I64(vec![Some(1)]))]);
        let err = l.check(3, &wrong).expect_err("type mismatch");
        assert!(
            matches!(&err, CompactError::ColumnType { input: 3, column, .. } if column == "f"),
            "{err}"
        );
        let unknown = batch(&[
            ("time", Col::Time(vec![1])),
            ("x", Col::F64(vec![Some(1.0)])),
        ]);
        assert!(matches!(
            l.check(0, &unknown),
            Err(CompactError::UnknownColumn { .. })
        ));
        let no_time = batch(&[("f", Col::F64(vec![Some(1.0)]))]);
        assert!(matches!(
            l.check(0, &no_time),
            Err(CompactError::MissingTime { input: 0 })
        ));
    }
}
