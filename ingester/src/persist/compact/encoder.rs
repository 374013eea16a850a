//! Parquet encoding with one task per column.
//!
//! Encoding is most of a persist's CPU: values are interned into page
//! dictionaries, keys and values bit-packed or split, pages compressed.
//! Columns are independent, so each column of the
//! current row group gets its own task on the executor, fed through a
//! 2-batch channel: with N executor threads a row group encodes up to N
//! times faster, and with one thread it costs the same as a single encoder.
//! A finished row group's column chunks are appended in schema order and
//! its bytes handed back for upload, so at most one row group of encoded
//! data (plus up to two batches per column) is held.
//!
//! Two kinds of column skip the Arrow writer while they can (see
//! [`super::chunk_writer`]): tag columns whose batches share one sorted
//! values array (a persist's output), encoded from their keys
//! ([`super::tag_chunk`]), and float fields that keep a dictionary
//! ([`super::float_chunk`]).

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{FieldRef, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowSchemaConverter;
use parquet::arrow::add_encoded_arrow_schema_to_metadata;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::ColumnDescPtr;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::chunk_writer::{ChunkBuilder, EncodedChunk};
use super::float_chunk::{self, FloatChunk};
use super::tag_chunk::{self, TagChunk};

/// Batches queued per column task.
const COLUMN_QUEUE: usize = 2;

pub(super) struct ParallelEncoder {
    schema: SchemaRef,
    file: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    /// Per column: the chunk builder it may take, if any.
    own_chunks: Vec<Option<OwnChunk>>,
    props: Arc<WriterProperties>,
    row_group_rows: usize,
    /// The row group being encoded.
    current: Option<RowGroup>,
    row_groups: usize,
}

/// A column chunk Sluice builds itself (see [`super::chunk_writer`]).
enum OwnChunk {
    Tag(ColumnDescPtr),
    Float(ColumnDescPtr),
}

/// One task per column of the current row group.
struct RowGroup {
    columns: Vec<(mpsc::Sender<ArrayRef>, ColumnTask)>,
    rows: usize,
}

/// Aborted if dropped unfinished (the encoder failed or was cancelled).
struct ColumnTask(Option<JoinHandle<Result<ColumnChunk, ParquetError>>>);

/// A column's encoded chunk, from either path.
enum ColumnChunk {
    Arrow(ArrowColumnChunk),
    Own(EncodedChunk),
}

impl ColumnChunk {
    fn append_to_row_group(
        self,
        writer: &mut SerializedRowGroupWriter<'_, Vec<u8>>,
    ) -> Result<(), ParquetError> {
        match self {
            Self::Arrow(chunk) => chunk.append_to_row_group(writer),
            Self::Own(chunk) => writer.append_column(&chunk.data, chunk.close),
        }
    }
}

impl Drop for ColumnTask {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

impl ParallelEncoder {
    /// An encoder for `schema` (flat: one Parquet leaf per column). The
    /// Arrow schema is embedded in the footer, as `ArrowWriter` does.
    pub(super) fn new(
        schema: SchemaRef,
        props: WriterProperties,
        row_group_rows: usize,
    ) -> Result<Self, ParquetError> {
        Self::with_own_chunks(schema, props, row_group_rows, true)
    }

    /// [`Self::new`]; `own_chunks: false` sends every column through the
    /// Arrow writer (to compare the two paths).
    pub(super) fn with_own_chunks(
        schema: SchemaRef,
        mut props: WriterProperties,
        row_group_rows: usize,
        own_chunks: bool,
    ) -> Result<Self, ParquetError> {
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let props = Arc::new(props);
        let parquet_schema = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)?;
        if parquet_schema.num_columns() != schema.fields().len() {
            return Err(ParquetError::General(
                "nested columns are not supported".into(),
            ));
        }
        let own_chunks = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let descr = parquet_schema.column(i);
                let t = f.data_type();
                if !own_chunks {
                    None
                } else if tag_chunk::supported(t, &descr, &props) {
                    Some(OwnChunk::Tag(descr))
                } else if float_chunk::supported(t, &descr, &props) {
                    Some(OwnChunk::Float(descr))
                } else {
                    None
                }
            })
            .collect();
        let file = SerializedFileWriter::new(
            Vec::new(),
            parquet_schema.root_schema_ptr(),
            Arc::clone(&props),
        )?;
        let factory = ArrowRowGroupWriterFactory::new(&file, Arc::clone(&schema));
        Ok(Self {
            schema,
            file,
            factory,
            own_chunks,
            props,
            row_group_rows: row_group_rows.max(1),
            current: None,
            row_groups: 0,
        })
    }

    /// Queues `batch`; returns encoded bytes when a row group completed.
    /// Must be called on a tokio runtime (the executor): it spawns there.
    pub(super) async fn write(
        &mut self,
        batch: &RecordBatch,
    ) -> Result<Option<Bytes>, ParquetError> {
        let mut out: Option<Vec<u8>> = None;
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.current.is_none() {
                let writers = self.factory.create_column_writers(self.row_groups)?;
                self.current = Some(RowGroup::start(
                    &self.schema,
                    writers,
                    &self.own_chunks,
                    &self.props,
                ));
            }
            let group = self.current.as_mut().expect("started above");
            let take = (self.row_group_rows - group.rows).min(batch.num_rows() - offset);
            group.send(&batch.slice(offset, take)).await?;
            offset += take;
            if group.rows == self.row_group_rows {
                self.flush_row_group().await?;
                out.get_or_insert_with(Vec::new)
                    .append(self.file.inner_mut());
            }
        }
        Ok(out.map(Bytes::from))
    }

    /// Encodes what is left and the footer; returns the last bytes and
    /// the file size.
    pub(super) async fn finish(mut self) -> Result<(Bytes, u64), ParquetError> {
        self.flush_row_group().await?;
        self.file.finish()?;
        let size = self.file.bytes_written() as u64;
        Ok((Bytes::from(std::mem::take(self.file.inner_mut())), size))
    }

    async fn flush_row_group(&mut self) -> Result<(), ParquetError> {
        let Some(group) = self.current.take() else {
            return Ok(());
        };
        let mut writer = self.file.next_row_group()?;
        for (tx, mut task) in group.columns {
            drop(tx); // end of input: the task closes its writer
            let handle = task.0.take().expect("joined once");
            let chunk = handle
                .await
                .map_err(|e| ParquetError::General(format!("column encoder task: {e}")))??;
            chunk.append_to_row_group(&mut writer)?;
        }
        writer.close()?;
        self.row_groups += 1;
        Ok(())
    }
}

impl RowGroup {
    fn start(
        schema: &SchemaRef,
        writers: Vec<ArrowColumnWriter>,
        own_chunks: &[Option<OwnChunk>],
        props: &Arc<WriterProperties>,
    ) -> Self {
        let columns = schema
            .fields()
            .iter()
            .cloned()
            .zip(writers)
            .zip(own_chunks)
            .map(|((field, writer), own)| {
                let (tx, rx) = mpsc::channel(COLUMN_QUEUE);
                let props = Arc::clone(props);
                let task = match own {
                    Some(OwnChunk::Tag(descr)) => {
                        let chunk = TagChunk::new(Arc::clone(descr), props);
                        tokio::spawn(encode_own_column(field, writer, chunk, rx))
                    }
                    Some(OwnChunk::Float(descr)) => {
                        let chunk = FloatChunk::new(Arc::clone(descr), props);
                        tokio::spawn(encode_own_column(field, writer, chunk, rx))
                    }
                    None => tokio::spawn(encode_column(field, writer, rx)),
                };
                (tx, ColumnTask(Some(task)))
            })
            .collect();
        Self { columns, rows: 0 }
    }

    async fn send(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        for ((tx, task), column) in self.columns.iter_mut().zip(batch.columns()) {
            if tx.send(Arc::clone(column)).await.is_err() {
                // The task ended early: it failed. Report its error.
                let handle = task.0.take().expect("not joined yet");
                return match handle.await {
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(_)) => Err(ParquetError::General("column encoder stopped early".into())),
                    Err(e) => Err(ParquetError::General(format!("column encoder task: {e}"))),
                };
            }
        }
        self.rows += batch.num_rows();
        Ok(())
    }
}

async fn encode_column(
    field: FieldRef,
    mut writer: ArrowColumnWriter,
    mut rx: mpsc::Receiver<ArrayRef>,
) -> Result<ColumnChunk, ParquetError> {
    while let Some(array) = rx.recv().await {
        write_arrow(&field, &mut writer, &array)?;
    }
    writer.close().map(ColumnChunk::Arrow)
}

/// A column Sluice encodes itself while the batches allow it, else (from
/// the first batch it refuses, or at the end) the Arrow writer, fed what
/// the chunk had taken first.
async fn encode_own_column(
    field: FieldRef,
    mut writer: ArrowColumnWriter,
    mut chunk: impl ChunkBuilder,
    mut rx: mpsc::Receiver<ArrayRef>,
) -> Result<ColumnChunk, ParquetError> {
    while let Some(array) = rx.recv().await {
        if !chunk.push(array.as_ref())? {
            chunk.replay(&field, &mut writer)?;
            drop(chunk);
            write_arrow(&field, &mut writer, &array)?;
            return encode_column(field, writer, rx).await;
        }
    }
    match chunk.finish()? {
        Some(encoded) => Ok(ColumnChunk::Own(encoded)),
        None => {
            chunk.replay(&field, &mut writer)?;
            writer.close().map(ColumnChunk::Arrow)
        }
    }
}

fn write_arrow(
    field: &FieldRef,
    writer: &mut ArrowColumnWriter,
    array: &ArrayRef,
) -> Result<(), ParquetError> {
    for leaf in compute_leaves(field, array)? {
        writer.write(&leaf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::persist::compact::test_util::{Col, batch, rows, tag_type};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_groups_split_batches_and_keep_order() {
        let make = |i: i64| {
            let t: Vec<i64> = (i * 5..i * 5 + 5).collect();
            batch(&[
                ("f", Col::F64(t.iter().map(|&v| Some(v as f64)).collect())),
                (
                    "host",
                    Col::Tag(
                        t.iter()
                            .map(|&v| if v % 3 == 0 { None } else { Some("h") })
                            .collect(),
                    ),
                ),
                ("time", Col::Time(t)),
            ])
        };
        let input: Vec<RecordBatch> = (0..4).map(make).collect();
        let mut enc = ParallelEncoder::new(input[0].schema(), WriterProperties::default(), 7)
            .expect("encoder");
        let mut file = Vec::new();
        for b in &input {
            if let Some(bytes) = enc.write(b).await.expect("write") {
                file.extend_from_slice(&bytes);
            }
        }
        let (last, size) = enc.finish().await.expect("finish");
        file.extend_from_slice(&last);
        assert_eq!(size, file.len() as u64);

        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).expect("reader");
        let sizes: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(sizes, [7, 7, 6]);
        assert_eq!(
            reader
                .schema()
                .field_with_name("host")
                .expect("host")
                .data_type(),
            &tag_type()
        );
        assert_eq!(
            reader.schema().field_with_name("f").expect("f").data_type(),
            &DataType::Float64
        );
        let got: Vec<String> = reader
            .build()
            .expect("build")
            .map(|b| b.expect("batch"))
            .flat_map(|b| rows(&b))
            .collect();
        let want: Vec<String> = input.iter().flat_map(rows).collect();
        assert_eq!(got, want);
    }
}
