//! Writing query results as a table, CSV, JSON lines or Parquet.
//!
//! Streaming: record batches are written as they arrive; only the `table`
//! format buffers, one chunk of about [`TABLE_CHUNK_ROWS`] rows (column widths
//! are computed per chunk, so a long result prints as several tables).
//!
//! One schema per output: CSV and Parquet need the same columns throughout.
//! The first schema received is the target; a later batch with fewer columns
//! or other types is adapted to it (missing columns become nulls, types are
//! cast); a batch with a column the target lacks is an error for CSV and
//! Parquet, and starts a new table (or simply new keys) for `table`/`jsonl`.
//!
//! Timestamps: for the text formats, UTC timestamp columns (the `time`
//! column, `Timestamp(ns, "UTC")`) are written as RFC 3339 with a `Z` suffix
//! and only as many fractional digits as needed (`2024-01-01T00:00:00.5Z`),
//! whatever time-zone support the Arrow build has. Tags stay dictionary
//! encoded: every writer here decodes `Dictionary(Int32, Utf8)` itself.
//!
//! Files are written to `FILE.partial` and renamed on success, so a failed
//! or interrupted query never leaves a truncated result (notably an invalid
//! Parquet file) under the requested name.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampNanosecondType};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

/// Rows per printed table in the `table` format.
pub(crate) const TABLE_CHUNK_ROWS: usize = 10_000;

/// Output format of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryFormat {
    /// Aligned text table(s), for people.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row (null values are left out).
    Jsonl,
    /// A Parquet file (zstd); needs --output.
    Parquet,
}

/// Why the result could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputError {
    #[error("the parquet format writes a file: pass --output FILE")]
    NeedsFile,
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot write {dest}: {source}")]
    Io { dest: String, source: io::Error },
    #[error("cannot write {dest}: {source}")]
    Arrow { dest: String, source: ArrowError },
    #[error("cannot write {dest}: {source}")]
    Parquet { dest: String, source: ParquetError },
    #[error(
        "column `{column}` appears in a later partition but not in the first; \
         {format:?} needs one set of columns: pass --columns"
    )]
    NewColumn { column: String, format: QueryFormat },
    #[error(
        "column `{column}`: cannot convert {from} to the first partition's type {to}: {source}"
    )]
    Cast {
        column: String,
        from: DataType,
        to: DataType,
        source: ArrowError,
    },
}

impl OutputError {
    /// The reader of stdout went away (`query … | head`): not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Self::Io { source, .. } => source.kind() == io::ErrorKind::BrokenPipe,
            Self::Arrow { source, .. } => match source {
                ArrowError::IoError(_, e) => e.kind() == io::ErrorKind::BrokenPipe,
                other => other.to_string().contains("Broken pipe"),
            },
            Self::Parquet { source, .. } => source.to_string().contains("Broken pipe"),
            _ => false,
        }
    }
}

type Sink = Box<dyn Write + Send>;

/// The format writer, created once the schema is known.
enum Writer {
    Table(Sink),
    Csv(arrow::csv::Writer<Sink>),
    Jsonl(arrow::json::LineDelimitedWriter<Sink>),
    Parquet(ArrowWriter<Sink>),
}

/// A query result being written.
pub(crate) struct Output {
    format: QueryFormat,
    /// For messages: `stdout` or the file name.
    dest: String,
    /// Until the format writer exists.
    sink: Option<Sink>,
    writer: Option<Writer>,
    target: Option<SchemaRef>,
    /// `table` format: batches (already converted for display) not printed yet.
    chunk: Vec<RecordBatch>,
    chunk_rows: usize,
    rows: u64,
    /// `(partial, final)` file paths; the partial file is removed on drop
    /// unless [`Output::finish`] renamed it.
    file: Option<(PathBuf, PathBuf)>,
}

impl Output {
    /// Opens the destination: `None` or `-` is stdout.
    pub fn create(format: QueryFormat, path: Option<&Path>) -> Result<Self, OutputError> {
        let path = path.filter(|p| p.as_os_str() != "-");
        let (sink, dest, file): (Sink, String, _) = match path {
            None if format == QueryFormat::Parquet => return Err(OutputError::NeedsFile),
            None => (
                Box::new(BufWriter::new(io::stdout())),
                "stdout".to_owned(),
                None,
            ),
            Some(path) => {
                let mut partial = path.as_os_str().to_owned();
                partial.push(".partial");
                let partial = PathBuf::from(partial);
                let f = File::create(&partial).map_err(|source| OutputError::Create {
                    path: partial.clone(),
                    source,
                })?;
                (
                    Box::new(BufWriter::with_capacity(1 << 20, f)),
                    path.display().to_string(),
                    Some((partial, path.to_owned())),
                )
            }
        };
        Ok(Self {
            format,
            dest,
            sink: Some(sink),
            writer: None,
            target: None,
            chunk: Vec::new(),
            chunk_rows: 0,
            rows: 0,
            file,
        })
    }

    /// Notes a schema message: the first one fixes the output's columns
    /// (so an empty result still gets a header or a valid Parquet file).
    pub fn schema(&mut self, schema: &SchemaRef) {
        if self.target.is_none() {
            self.target = Some(nullable(schema));
        }
    }

    /// Writes one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        let target = match &self.target {
            Some(t) => Arc::clone(t),
            None => {
                let t = nullable(&batch.schema());
                self.target = Some(Arc::clone(&t));
                t
            }
        };
        let batch = match adapt(batch, &target) {
            Ok(b) => b,
            Err(OutputError::NewColumn { column, .. }) => {
                if !matches!(self.format, QueryFormat::Table | QueryFormat::Jsonl) {
                    return Err(OutputError::NewColumn {
                        column,
                        format: self.format,
                    });
                }
                self.flush_chunk()?;
                let t = nullable(&batch.schema());
                self.target = Some(Arc::clone(&t));
                adapt(batch, &t)?
            }
            Err(e) => return Err(e),
        };
        self.write_adapted(batch)
    }

    fn write_adapted(&mut self, batch: RecordBatch) -> Result<(), OutputError> {
        self.rows += batch.num_rows() as u64;
        if self.format == QueryFormat::Table {
            let batch = self.text(&batch)?;
            self.chunk_rows += batch.num_rows();
            self.chunk.push(batch);
            if self.chunk_rows >= TABLE_CHUNK_ROWS {
                self.flush_chunk()?;
            }
            return Ok(());
        }
        let text = match self.format {
            QueryFormat::Csv | QueryFormat::Jsonl => Some(self.text(&batch)?),
            _ => None,
        };
        let dest = self.dest.clone();
        let arrow_err = |source| OutputError::Arrow {
            dest: dest.clone(),
            source,
        };
        match self.writer(&batch.schema())? {
            Writer::Csv(w) => w.write(text.as_ref().unwrap_or(&batch)).map_err(arrow_err),
            Writer::Jsonl(w) => w.write(text.as_ref().unwrap_or(&batch)).map_err(arrow_err),
            Writer::Parquet(w) => w.write(&batch).map_err(|source| OutputError::Parquet {
                dest: dest.clone(),
                source,
            }),
            Writer::Table(_) => Ok(()),
        }
    }

    fn text(&self, batch: &RecordBatch) -> Result<RecordBatch, OutputError> {
        timestamps_as_text(batch).map_err(|source| OutputError::Arrow {
            dest: self.dest.clone(),
            source,
        })
    }

    /// The format writer, created on first use for `schema`.
    fn writer(&mut self, schema: &SchemaRef) -> Result<&mut Writer, OutputError> {
        if self.writer.is_none() {
            let sink = self
                .sink
                .take()
                .expect("the sink is taken only to create the writer");
            self.writer = Some(match self.format {
                QueryFormat::Table => Writer::Table(sink),
                QueryFormat::Csv => Writer::Csv(
                    arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(sink),
                ),
                QueryFormat::Jsonl => Writer::Jsonl(arrow::json::LineDelimitedWriter::new(sink)),
                QueryFormat::Parquet => {
                    let props = WriterProperties::builder()
                        .set_compression(Compression::ZSTD(ZstdLevel::default()))
                        .build();
                    let w = ArrowWriter::try_new(sink, Arc::clone(schema), Some(props)).map_err(
                        |source| OutputError::Parquet {
                            dest: self.dest.clone(),
                            source,
                        },
                    )?;
                    Writer::Parquet(w)
                }
            });
        }
        Ok(self.writer.as_mut().expect("created above"))
    }

    /// `table` format: prints the buffered chunk as one table.
    fn flush_chunk(&mut self) -> Result<(), OutputError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.chunk);
        self.chunk_rows = 0;
        self.print_table(&chunk[0].schema(), &chunk)
    }

    fn print_table(
        &mut self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(), OutputError> {
        let dest = self.dest.clone();
        let table =
            arrow::util::pretty::pretty_format_batches_with_schema(Arc::clone(schema), batches)
                .map_err(|source| OutputError::Arrow {
                    dest: dest.clone(),
                    source,
                })?;
        let Writer::Table(sink) = self.writer(schema)? else {
            unreachable!("print_table is only called for the table format")
        };
        writeln!(sink, "{table}").map_err(|source| OutputError::Io { dest, source })
    }

    /// Flushes everything and moves a file into place; returns the rows
    /// written.
    pub fn finish(mut self) -> Result<u64, OutputError> {
        let dest = self.dest.clone();
        let io_err = |source| OutputError::Io {
            dest: dest.clone(),
            source,
        };
        if self.format == QueryFormat::Table {
            if self.rows == 0 {
                // An empty result still shows its columns.
                if let Some(target) = self.target.clone() {
                    let empty = self.text(&RecordBatch::new_empty(Arc::clone(&target)))?;
                    self.print_table(&empty.schema(), &[])?;
                }
            } else {
                self.flush_chunk()?;
            }
        } else if self.rows == 0 && self.format != QueryFormat::Jsonl {
            // CSV header / a valid Parquet file with the columns and no rows.
            if let Some(target) = self.target.clone() {
                self.write_adapted(RecordBatch::new_empty(target))?;
            }
        }
        let mut sink = match (self.writer.take(), self.sink.take()) {
            (Some(Writer::Table(s)), _) => s,
            (Some(Writer::Csv(w)), _) => w.into_inner(),
            (Some(Writer::Jsonl(mut w)), _) => {
                w.finish().map_err(|source| OutputError::Arrow {
                    dest: dest.clone(),
                    source,
                })?;
                w.into_inner()
            }
            (Some(Writer::Parquet(w)), _) => {
                w.into_inner().map_err(|source| OutputError::Parquet {
                    dest: dest.clone(),
                    source,
                })?
            }
            (None, Some(s)) => s,
            (None, None) => unreachable!("the sink is only taken to create the writer"),
        };
        sink.flush().map_err(io_err)?;
        drop(sink);
        if let Some((partial, path)) = self.file.take() {
            std::fs::rename(&partial, &path).map_err(io_err)?;
        }
        Ok(self.rows)
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some((partial, _)) = self.file.take() {
            // Best effort: the result is incomplete either way.
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// `schema` with every field nullable: the output's target schema, so that a
/// partition lacking a column can fill it with nulls.
fn nullable(schema: &SchemaRef) -> SchemaRef {
    if schema.fields().iter().all(|f| f.is_nullable()) {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Fits `batch` to `target` (all fields nullable): same columns in the same
/// order, missing ones as nulls, other types cast; columns are shared, not
/// copied, when the types match. A column `target` lacks is an error.
pub(crate) fn adapt(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, OutputError> {
    let schema = batch.schema();
    if Arc::ptr_eq(&schema, target) {
        return Ok(batch.clone());
    }
    if let Some(extra) = schema
        .fields()
        .iter()
        .find(|f| target.field_with_name(f.name()).is_err())
    {
        return Err(OutputError::NewColumn {
            column: extra.name().clone(),
            format: QueryFormat::Csv,
        });
    }
    let columns = target
        .fields()
        .iter()
        .map(|field| match schema.index_of(field.name()) {
            Ok(i) => {
                let column = batch.column(i);
                if column.data_type() == field.data_type() {
                    Ok(Arc::clone(column))
                } else {
                    cast(column, field.data_type()).map_err(|source| OutputError::Cast {
                        column: field.name().clone(),
                        from: column.data_type().clone(),
                        to: field.data_type().clone(),
                        source,
                    })
                }
            }
            Err(_) => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(Arc::clone(target), columns).map_err(|source| OutputError::Arrow {
        dest: "the result".to_owned(),
        source,
    })
}

/// Whether a time zone name means UTC.
fn is_utc(tz: &str) -> bool {
    matches!(
        tz,
        "UTC" | "utc" | "Z" | "Etc/UTC" | "+00:00" | "+0000" | "+00"
    )
}

/// Rewrites nanosecond UTC (or zone-less) timestamp columns as RFC 3339
/// strings; other columns are shared, not copied.
pub(crate) fn timestamps_as_text(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let is_target = |dt: &DataType| matches!(dt, DataType::Timestamp(TimeUnit::Nanosecond, tz) if tz.as_deref().is_none_or(is_utc));
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| is_target(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !is_target(field.data_type()) {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        }
        let values = column.as_primitive::<TimestampNanosecondType>();
        // "2024-01-01T00:00:00.123456789Z" is 30 bytes.
        let mut text = StringBuilder::with_capacity(values.len(), values.len() * 30);
        for v in values.iter() {
            match v {
                Some(ns) => {
                    let t = chrono::DateTime::from_timestamp_nanos(ns);
                    write!(text, "{}", t.format("%Y-%m-%dT%H:%M:%S%.fZ")).map_err(|e| {
                        ArrowError::ComputeError(format!("formatting a timestamp: {e}"))
                    })?;
                    text.append_value("");
                }
                None => text.append_null(),
            }
        }
        fields.push(Arc::new(
            Field::new(field.name(), DataType::Utf8, field.is_nullable())
                .with_metadata(field.metadata().clone()),
        ));
        columns.push(Arc::new(text.finish()) as ArrayRef);
    }
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Float64Array, Int64Array, TimestampNanosecondArray};
    use arrow::datatypes::Int32Type;

    use super::*;

    /// `host` tag, `usage` field, `time` as the server sends them.
    fn cpu(hosts: &[&str], usage: &[Option<f64>], times: &[i64]) -> RecordBatch {
        let host: DictionaryArray<Int32Type> = hosts.iter().copied().collect();
        let time = TimestampNanosecondArray::from(times.to_vec()).with_timezone("UTC");
        RecordBatch::try_from_iter([
            ("host", Arc::new(host) as ArrayRef),
            (
                "usage",
                Arc::new(Float64Array::from(usage.to_vec())) as ArrayRef,
            ),
            ("time", Arc::new(time) as ArrayRef),
        ])
        .expect("valid batch")
    }

    fn write_all(format: QueryFormat, batches: &[RecordBatch]) -> Result<Vec<u8>, OutputError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out");
        let mut out = Output::create(format, Some(&path))?;
        if let Some(b) = batches.first() {
            out.schema(&b.schema());
        }
        for b in batches {
            out.write(b)?;
        }
        out.finish()?;
        assert!(!dir.path().join("out.partial").exists());
        Ok(std::fs::read(&path).expect("output file"))
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("text output")
    }

    #[test]
    fn csv_decodes_tags_and_writes_rfc3339_times() {
        let a = cpu(&["a", "b"], &[Some(1.5), None], &[0, 1_500_000_000]);
        let b = cpu(&["a"], &[Some(2.0)], &[1_714_564_800_000_000_001]);
        let out = text(write_all(QueryFormat::Csv, &[a, b]).expect("csv"));
        assert_eq!(
            out,
            "host,usage,time\n\
             a,1.5,1970-01-01T00:00:00Z\n\
             b,,1970-01-01T00:00:01.500Z\n\
             a,2.0,2024-05-01T12:00:00.000000001Z\n"
        );
    }

    #[test]
    fn jsonl_writes_one_object_per_row() {
        let a = cpu(&["a", "b"], &[Some(1.5), None], &[0, 1]);
        let out = text(write_all(QueryFormat::Jsonl, &[a]).expect("jsonl"));
        assert_eq!(
            out,
            "{\"host\":\"a\",\"usage\":1.5,\"time\":\"1970-01-01T00:00:00Z\"}\n\
             {\"host\":\"b\",\"time\":\"1970-01-01T00:00:00.000000001Z\"}\n"
        );
    }

    #[test]
    fn table_prints_aligned_rows_and_an_empty_result_header() {
        let a = cpu(&["a", "bb"], &[Some(1.5), None], &[0, 1_000_000_000]);
        let out = text(write_all(QueryFormat::Table, std::slice::from_ref(&a)).expect("table"));
        assert_eq!(
            out,
            "+------+-------+----------------------+\n\
             | host | usage | time                 |\n\
             +------+-------+----------------------+\n\
             | a    | 1.5   | 1970-01-01T00:00:00Z |\n\
             | bb   |       | 1970-01-01T00:00:01Z |\n\
             +------+-------+----------------------+\n"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("empty");
        let mut out = Output::create(QueryFormat::Table, Some(&path)).expect("create");
        out.schema(&a.schema());
        assert_eq!(out.finish().expect("finish"), 0);
        assert_eq!(
            text(std::fs::read(&path).expect("read")),
            "+------+-------+------+\n| host | usage | time |\n+------+-------+------+\n+------+-------+------+\n"
        );
    }

    #[test]
    fn long_results_print_in_chunks() {
        let n = TABLE_CHUNK_ROWS + 5;
        let hosts = vec!["h"; n];
        let usage = vec![Some(1.0); n];
        let times: Vec<i64> = (0..n as i64).collect();
        let out = text(
            write_all(
                QueryFormat::Table,
                &[cpu(&hosts, &usage, &times), cpu(&["x"], &[None], &[0])],
            )
            .expect("table"),
        );
        assert_eq!(out.matches("| host | usage |").count(), 2, "two tables");
        assert_eq!(
            out.lines()
                .filter(|l| l.starts_with("| h ") || l.starts_with("| x "))
                .count(),
            n + 1
        );
    }

    #[test]
    fn parquet_round_trips_types() {
        let a = cpu(&["a", "b"], &[Some(1.5), None], &[0, 1]);
        let bytes = write_all(QueryFormat::Parquet, std::slice::from_ref(&a)).expect("parquet");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(bytes),
        )
        .expect("valid parquet")
        .build()
        .expect("reader");
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("read back");
        assert_eq!(batches.len(), 1);
        let got = &batches[0];
        assert_eq!(got.num_rows(), 2);
        assert_eq!(
            got.schema().field(0).data_type(),
            a.schema().field(0).data_type()
        );
        assert_eq!(
            got.schema().field(2).data_type(),
            a.schema().field(2).data_type()
        );
        assert_eq!(got.column(1), a.column(1));

        assert!(matches!(
            Output::create(QueryFormat::Parquet, None),
            Err(OutputError::NeedsFile)
        ));
    }

    #[test]
    fn later_partitions_are_fitted_to_the_first_schema() {
        let a = cpu(&["a"], &[Some(1.0)], &[0]);
        // A partition without `usage`, with `time` first.
        let b = RecordBatch::try_from_iter([
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(vec![5]).with_timezone("UTC")) as ArrayRef,
            ),
            (
                "host",
                Arc::new(["b"].into_iter().collect::<DictionaryArray<Int32Type>>()) as ArrayRef,
            ),
        ])
        .expect("valid batch");
        let out = text(write_all(QueryFormat::Csv, &[a.clone(), b]).expect("csv"));
        assert_eq!(
            out,
            "host,usage,time\na,1.0,1970-01-01T00:00:00Z\nb,,1970-01-01T00:00:00.000000005Z\n"
        );

        // A partition with a column the first lacks: CSV cannot, JSON lines can.
        let c = RecordBatch::try_from_iter([
            (
                "host",
                Arc::new(["c"].into_iter().collect::<DictionaryArray<Int32Type>>()) as ArrayRef,
            ),
            ("count", Arc::new(Int64Array::from(vec![7])) as ArrayRef),
        ])
        .expect("valid batch");
        let err = write_all(QueryFormat::Csv, &[a.clone(), c.clone()]).expect_err("new column");
        assert_eq!(
            err.to_string(),
            "column `count` appears in a later partition but not in the first; Csv needs one set of columns: pass --columns"
        );
        let out = text(write_all(QueryFormat::Jsonl, &[a, c]).expect("jsonl"));
        assert_eq!(
            out,
            "{\"host\":\"a\",\"usage\":1.0,\"time\":\"1970-01-01T00:00:00Z\"}\n{\"host\":\"c\",\"count\":7}\n"
        );
    }

    #[test]
    fn an_unfinished_file_is_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.csv");
        let mut out = Output::create(QueryFormat::Csv, Some(&path)).expect("create");
        out.write(&cpu(&["a"], &[None], &[0])).expect("write");
        assert!(dir.path().join("out.csv.partial").exists());
        drop(out);
        assert!(!dir.path().join("out.csv.partial").exists());
        assert!(!path.exists());
    }
}
