//! Internals for the criterion benches (`--features benches`). Not an API:
//! thin wrappers so benches can drive one stage of the pipeline at a time.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::StreamExt;

use crate::buffer_tree::BufferTree;
use crate::catalog::{Catalog, MemCatalog, SchemaCache};
use crate::ingest_state::{IngestState, IngestStateError};
use crate::persist::compact::{Executor, compact, sort_key, write_parquet};
use crate::query::{BufferQueryExec, QueryExec, QueryPlan};
use crate::timestamp_oracle::TimestampOracle;
use crate::write::{Payload, Precision, WriteHandler, WriteRequest, encode_wal_record};

pub use crate::line_protocol::Parser;
pub use crate::wal::{SegmentReader, Wal, WalConfig, WalOp};

/// Parses every line of `body`; returns the number of lines.
pub fn parse_lines(body: &[u8]) -> usize {
    let mut p = Parser::new(body);
    let mut n = 0;
    while let Some(l) = p.next_line() {
        if l.is_ok() {
            n += 1;
        }
    }
    n
}

/// Parses and validates `body` into Arrow batches (no catalog, no sink).
pub fn parse_and_validate(body: &[u8]) -> usize {
    crate::write::bench_build_tables(body)
}

/// [`parse_and_validate`] cut into `pieces`, built at once by the
/// server's code (the first on this thread, the others on `runtime`'s
/// blocking threads) and merged, as a write over `--write-split-bytes`
/// is when cores are idle. 0 if the body could not be cut.
pub fn parse_and_validate_split(
    runtime: &tokio::runtime::Runtime,
    body: &bytes::Bytes,
    pieces: usize,
) -> usize {
    crate::write::bench_build_tables_split(runtime, body, pieces)
}

/// A validated write (see [`BenchIngester::validated`]).
pub struct ValidatedWrite(crate::write::DmlOperation);

impl ValidatedWrite {
    /// Rows of the write.
    pub fn rows(&self) -> usize {
        self.0.rows
    }

    /// Its WAL record (what the write path appends).
    pub fn encode(&self) -> Bytes {
        encode_wal_record(&self.0).expect("encodable")
    }

    /// Its batches, one per partition.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.0
            .tables
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.batch.clone())
            .collect()
    }

    /// For comparison: its batches as Arrow IPC streams (schema, dictionary
    /// and record batch messages), one per partition, each prefixed by its
    /// length; without the names the WAL record also carries.
    pub fn encode_ipc(&self) -> Bytes {
        let mut out = Vec::new();
        for t in &self.0.tables {
            for p in &t.partitions {
                let mut buf = Vec::new();
                let mut w =
                    arrow::ipc::writer::StreamWriter::try_new(&mut buf, p.batch.schema_ref())
                        .expect("IPC writer");
                w.write(&p.batch).expect("IPC write");
                w.finish().expect("IPC finish");
                drop(w);
                out.extend_from_slice(&(buf.len() as u32).to_le_bytes());
                out.extend_from_slice(&buf);
            }
        }
        out.into()
    }
}

/// Merges a partition's small batches (all of the first one's schema) as
/// the buffer does; returns the merged batch.
pub fn merge_small_batches(batches: &[RecordBatch]) -> RecordBatch {
    crate::buffer_tree::concat_small(batches[0].schema_ref(), batches).expect("mergeable")
}

/// For comparison: the same with Arrow's `concat_batches`.
pub fn merge_small_batches_arrow(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(batches[0].schema_ref(), batches).expect("mergeable")
}

/// Decodes a WAL record (no catalog); returns its rows.
pub fn decode_wal_record(data: &[u8]) -> usize {
    crate::write::decode_wal_record(data)
        .map(|r| {
            r.tables
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.batch.num_rows())
                .sum()
        })
        .expect("valid record")
}

/// Decodes what [`ValidatedWrite::encode_ipc`] produced; returns its rows.
pub fn decode_ipc(mut data: &[u8]) -> usize {
    let mut rows = 0;
    while data.len() >= 4 {
        let n = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        let stream = &data[4..4 + n];
        for b in arrow::ipc::reader::StreamReader::try_new(stream, None).expect("IPC stream") {
            rows += b.expect("IPC batch").num_rows();
        }
        data = &data[4 + n..];
    }
    rows
}

fn lp_request(namespace: &str, body: Bytes) -> WriteRequest {
    WriteRequest {
        namespace: namespace.into(),
        payload: Payload::LineProtocol {
            body,
            precision: Precision::Nanoseconds,
            default_time: 0,
        },
    }
}

/// The write path minus the WAL: validate, resolve (in-memory catalog),
/// apply to a buffer; and the query path over that buffer.
pub struct BenchIngester {
    handler: WriteHandler<Arc<BufferTree>>,
    exec: BufferQueryExec,
    buffer: Arc<BufferTree>,
    catalog: Arc<dyn Catalog>,
    rt: tokio::runtime::Runtime,
}

impl Default for BenchIngester {
    fn default() -> Self {
        Self::new()
    }
}

impl BenchIngester {
    pub fn new() -> Self {
        Self::with_catalog(Arc::new(MemCatalog::new()))
    }

    /// An ingester with an empty buffer and a cold cache over this one's
    /// catalog: what a restarted pod replays its WAL into.
    pub fn restarted(&self) -> Self {
        Self::with_catalog(Arc::clone(&self.catalog))
    }

    fn with_catalog(catalog: Arc<dyn Catalog>) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cache = Arc::new(SchemaCache::new(Arc::clone(&catalog)));
        let state = Arc::new(IngestState::new(u64::MAX));
        state.unset(IngestStateError::Starting);
        let registry = prometheus::Registry::new();
        let buffer = Arc::new(BufferTree::new(Arc::clone(&state), &registry).expect("metrics"));
        let handler = WriteHandler::new(
            Arc::clone(&cache),
            Arc::new(TimestampOracle::new(0)),
            state,
            Arc::clone(&buffer),
            usize::MAX,
            None,
        )
        .expect("handler");
        let exec = BufferQueryExec::new(Arc::clone(&buffer), cache, None);
        Self {
            handler,
            exec,
            buffer,
            catalog,
            rt,
        }
    }

    /// Writes line protocol; returns rows.
    pub fn write_lp(&self, namespace: &str, body: Bytes) -> u64 {
        let req = lp_request(namespace, body);
        self.rt
            .block_on(self.handler.write(req))
            .map(|s| s.rows)
            .unwrap_or(0)
    }

    /// The WAL record a live write of `body` appends (validated against
    /// and recorded in this ingester's catalog; nothing is buffered).
    pub fn wal_record(&self, namespace: &str, body: Bytes) -> Bytes {
        let req = lp_request(namespace, body);
        self.rt
            .block_on(self.handler.validate(&req))
            .map_err(|e| e.to_string())
            .and_then(|op| encode_wal_record(&op).map_err(|e| e.to_string()))
            .expect("valid write")
    }

    /// `body` validated as a live write would be (recorded in the catalog,
    /// nothing buffered), to measure its WAL record.
    pub fn validated(&self, namespace: &str, body: Bytes) -> ValidatedWrite {
        let req = lp_request(namespace, body);
        ValidatedWrite(
            self.rt
                .block_on(self.handler.validate(&req))
                .expect("valid write"),
        )
    }

    /// Replays one WAL segment file as start-up does (read, check, decode,
    /// resolve in the catalog, apply to the buffer); returns (ops, rows).
    pub fn replay_segment(&self, path: &std::path::Path) -> Result<(u64, u64), String> {
        self.rt.block_on(async {
            let (mut ops, mut rows) = (0u64, 0u64);
            let mut state = crate::write::ReplayState::default();
            for entry in SegmentReader::open(path).map_err(|e| e.to_string())? {
                let (seq, payload) = entry.map_err(|e| e.to_string())?;
                rows += self
                    .handler
                    .replay_with(&mut state, seq, payload)
                    .await
                    .map_err(|e| e.to_string())? as u64;
                ops += 1;
            }
            rows += self
                .handler
                .finish_run(&mut state)
                .await
                .map_err(|e| e.to_string())? as u64;
            Ok((ops, rows))
        })
    }

    /// Streams every row of a table; returns (rows, time to first batch).
    pub fn scan(&self, namespace: &str, table: &str) -> (usize, std::time::Duration) {
        self.rt.block_on(async {
            let start = std::time::Instant::now();
            let mut first = None;
            let resp = self
                .exec
                .query(QueryPlan {
                    namespace: namespace.into(),
                    table: table.into(),
                    ..Default::default()
                })
                .await
                .expect("query");
            let mut rows = 0;
            for p in resp.partitions {
                let mut s = p.batches;
                while let Some(b) = s.next().await {
                    let b: RecordBatch = b.expect("batch");
                    first.get_or_insert_with(|| start.elapsed());
                    rows += b.num_rows();
                }
            }
            (rows, first.unwrap_or_default())
        })
    }

    /// The buffered batches of every partition, as the persist worker takes
    /// them (arrival order).
    pub fn buffered_batches(&self) -> Vec<RecordBatch> {
        self.buffer
            .partitions()
            .iter()
            .flat_map(|p| p.snapshot().batches)
            .collect()
    }

    /// Time from issuing a query of a whole table to its first record batch
    /// (the stream is dropped after it).
    pub fn first_batch(&self, namespace: &str, table: &str) -> std::time::Duration {
        self.rt.block_on(async {
            let start = std::time::Instant::now();
            let resp = self
                .exec
                .query(QueryPlan {
                    namespace: namespace.into(),
                    table: table.into(),
                    ..Default::default()
                })
                .await
                .expect("query");
            for p in resp.partitions {
                let mut s = p.batches;
                if let Some(b) = s.next().await {
                    b.expect("batch");
                    return start.elapsed();
                }
            }
            start.elapsed()
        })
    }
}

/// What one persist job produced.
#[derive(Debug, Clone, Copy)]
pub struct PersistResult {
    pub rows_in: usize,
    pub rows_out: u64,
    pub file_bytes: u64,
}

/// The persist job as the worker runs it (sort key, sort + dedup on the
/// persist executor, zstd Parquet written to a local-filesystem object
/// store), without the catalog bookkeeping.
pub struct BenchPersister {
    executor: Executor,
    store: Arc<dyn object_store::ObjectStore>,
    rt: tokio::runtime::Runtime,
    files: std::sync::atomic::AtomicU64,
}

impl BenchPersister {
    /// `threads` executor threads (the server's default is one per core),
    /// `memory_limit` bytes of sort memory (default 512 MiB), files and spill
    /// under `dir`.
    pub fn new(threads: usize, memory_limit: usize, dir: &std::path::Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let executor = Executor::new(threads, memory_limit, dir.join("spill")).expect("executor");
        std::fs::create_dir_all(dir.join("store")).expect("store dir");
        let store = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir.join("store"))
                .expect("local store"),
        );
        Self {
            executor,
            store,
            rt,
            files: Default::default(),
        }
    }

    /// Persists `batches` (one partition, arrival order) to a new file.
    pub fn persist(&self, batches: Vec<RecordBatch>) -> Result<PersistResult, String> {
        let n = self
            .files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = object_store::path::Path::from(format!("bench/{n}.parquet"));
        self.rt.block_on(async {
            let rows_in = batches.iter().map(RecordBatch::num_rows).sum();
            let schema = crate::schema::union_schema(batches.iter().map(|b| b.schema_ref()));
            let key = sort_key(&batches, &[]);
            let out = compact(&self.executor, schema, batches, &key)
                .await
                .map_err(|e| e.to_string())?;
            let meta = write_parquet(Arc::clone(&self.store), &path, out, vec![])
                .await
                .map_err(|e| e.to_string())?;
            let _ = object_store::ObjectStoreExt::delete(&*self.store, &path).await;
            Ok(PersistResult {
                rows_in,
                rows_out: meta.row_count,
                file_bytes: meta.file_size_bytes,
            })
        })
    }
}
