//! The write path's front door, shared by gRPC, HTTP and WAL replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use super::builder::BuiltTable;
use super::request::{Payload, Precision, WriteRequest};
use super::{
    DmlOperation, PartitionWrite, TableWrite, WriteError, arrow_batch, lp, names, partition, split,
    wal_record,
};
use crate::catalog::{CachedNamespace, CatalogError, SchemaCache};
use crate::dml_sink::DmlSink;
use crate::ingest_state::IngestState;
use crate::timestamp_oracle::TimestampOracle;

/// What an accepted write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteSummary {
    pub(crate) sequence_number: u64,
    pub(crate) rows: u64,
    pub(crate) tables: u32,
}

#[derive(Debug, Clone)]
struct Metrics {
    requests: IntCounterVec,
    rows: IntCounter,
    bytes: IntCounter,
    validate: Histogram,
    split: IntCounter,
}

impl Metrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new("sluice_write_requests_total", "Write requests, by result"),
            &["result"],
        )?;
        let rows = IntCounter::new("sluice_write_rows_total", "Rows accepted")?;
        let bytes = IntCounter::new("sluice_write_bytes_total", "Payload bytes accepted")?;
        let validate = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_write_validate_duration_seconds",
                "Time to parse, validate and resolve a write (before the WAL)",
            )
            .buckets(prometheus::exponential_buckets(0.00002, 2.0, 16)?),
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(rows.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        let split = IntCounter::new(
            "sluice_write_split_requests_total",
            "Line-protocol bodies validated in pieces on several cores (--write-split-bytes)",
        )?;
        registry.register(Box::new(validate.clone()))?;
        registry.register(Box::new(split.clone()))?;
        Ok(Self {
            requests,
            rows,
            bytes,
            validate,
            split,
        })
    }
}

/// When a line-protocol body is validated in pieces on several cores
/// (see `split.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SplitValidation {
    /// Bodies of at least this many bytes may be split.
    pub(crate) min_bytes: usize,
    /// Cores to spread validation over: a body is cut into one piece per
    /// core not already validating another request, unless writes have
    /// lately been arriving to find more than this many writes in the
    /// handler (the server is saturated: every core has work, and pieces
    /// would only add the cost of cutting).
    pub(crate) cores: usize,
}

/// Validates, sequences and applies writes through the sink `S`.
#[derive(Debug)]
pub(crate) struct WriteHandler<S> {
    pub(super) cache: Arc<SchemaCache>,
    pub(super) oracle: Arc<TimestampOracle>,
    state: Arc<IngestState>,
    pub(super) sink: S,
    max_request_bytes: usize,
    metrics: Option<Metrics>,
    split: Option<SplitValidation>,
    /// Line-protocol bodies being validated now.
    validating: AtomicUsize,
    /// Live writes between arrival and acknowledgement.
    writing: AtomicUsize,
    /// How many writes each write lately found in the handler on arrival
    /// (itself included), as a moving average over ~8 arrivals, in 16ths.
    pub(super) crowd: AtomicUsize,
}

/// [`WriteHandler::crowd`]'s unit: 1/16 of a write.
const CROWD_ONE: usize = 16;

/// Counts one request in a counter of [`WriteHandler`] while alive.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// Counts in `counter`; returns how many were counted before.
    fn enter(counter: &'a AtomicUsize) -> (Self, usize) {
        (Self(counter), counter.fetch_add(1, Ordering::Relaxed))
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S: DmlSink> WriteHandler<S> {
    pub(crate) fn new(
        cache: Arc<SchemaCache>,
        oracle: Arc<TimestampOracle>,
        state: Arc<IngestState>,
        sink: S,
        max_request_bytes: usize,
        registry: Option<&Registry>,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            cache,
            oracle,
            state,
            sink,
            max_request_bytes,
            metrics: registry.map(Metrics::new).transpose()?,
            split: None,
            validating: AtomicUsize::new(0),
            writing: AtomicUsize::new(0),
            crowd: AtomicUsize::new(0),
        })
    }

    /// Validates large line-protocol bodies on idle cores (see `split.rs`).
    pub(crate) fn with_split(mut self, split: SplitValidation) -> Self {
        self.split = (split.min_bytes > 0 && split.cores > 1).then_some(split);
        self
    }

    /// A live write: refused unless the ingester accepts writes; acknowledged
    /// (returns `Ok`) only once the sink chain, WAL fsync included, is done.
    pub(crate) async fn write(&self, req: WriteRequest) -> Result<WriteSummary, WriteError> {
        let (_writing, others) = Counted::enter(&self.writing);
        // Racy read-modify-write: a lost update only nudges an average.
        let crowd = self.crowd.load(Ordering::Relaxed);
        self.crowd.store(
            crowd - crowd / 8 + (others + 1) * CROWD_ONE / 8,
            Ordering::Relaxed,
        );
        let res = self.write_inner(req).await;
        if let Some(m) = &self.metrics {
            match &res {
                Ok(s) => {
                    m.requests.with_label_values(&["ok"]).inc();
                    m.rows.inc_by(s.rows);
                }
                Err(e) => m.requests.with_label_values(&[error_label(e)]).inc(),
            }
        }
        res
    }

    async fn write_inner(&self, req: WriteRequest) -> Result<WriteSummary, WriteError> {
        self.state.check().map_err(WriteError::State)?;
        if let Err((used, limit)) = self.state.check_buffer() {
            return Err(WriteError::BufferFull { used, limit });
        }
        let size = req.payload_len();
        if size > self.max_request_bytes {
            return Err(WriteError::TooLarge {
                size,
                limit: self.max_request_bytes,
            });
        }
        if size == 0 {
            return Err(WriteError::Empty);
        }
        let start = std::time::Instant::now();
        let mut op = self.validate(&req).await?;
        if let Some(m) = &self.metrics {
            m.validate.observe(start.elapsed().as_secs_f64());
            m.bytes.inc_by(size as u64);
        }
        // The WAL records the validated columns (see `wal_record.rs`),
        // encoded here in the writer's task, in parallel across writers.
        op.wal_payload =
            wal_record::encode(&op).map_err(|e| WriteError::Internal(e.to_string()))?;
        op.sequence_number = self.oracle.next();
        let summary = WriteSummary {
            sequence_number: op.sequence_number,
            rows: op.rows as u64,
            tables: op.tables.len() as u32,
        };
        self.sink.apply(op).await?;
        Ok(summary)
    }

    /// Replays a request-format (version 1) WAL record with its original
    /// sequence number, re-validating it as a live write. No state or size
    /// checks: it was accepted once already.
    pub(super) async fn replay_request(
        &self,
        sequence_number: u64,
        req: WriteRequest,
    ) -> Result<usize, WriteError> {
        self.oracle.observe(sequence_number);
        let mut op = self.validate(&req).await?;
        op.sequence_number = sequence_number;
        let rows = op.rows;
        self.sink.apply(op).await?;
        Ok(rows)
    }

    /// Parses, validates and resolves `req` against the catalog.
    pub(crate) async fn validate(&self, req: &WriteRequest) -> Result<DmlOperation, WriteError> {
        names::check_namespace(&req.namespace).map_err(|reason| WriteError::InvalidNamespace {
            name: req.namespace.clone(),
            reason,
        })?;
        // Look the namespace up without creating it: a refused body must not
        // leave a namespace behind. It is created once the body is valid.
        let existing = self
            .cache
            .existing_namespace(&req.namespace)
            .await
            .map_err(WriteError::Catalog)?;
        let lookup = |table: &str| existing.as_ref().and_then(|ns| ns.cached_table(table));
        let built: Vec<BuiltTable> = match &req.payload {
            Payload::LineProtocol {
                body,
                precision,
                default_time,
            } => {
                self.build_lp(body, *precision, *default_time, &existing)
                    .await?
            }
            Payload::Arrow { table, ipc, tags } => {
                vec![arrow_batch::build_table(table, ipc, tags, lookup(table))?]
            }
        };

        let ns = match existing {
            Some(ns) => ns,
            None => self
                .cache
                .namespace(&req.namespace)
                .await
                .map_err(WriteError::Catalog)?,
        };
        let mut tables = Vec::with_capacity(built.len());
        let mut rows = 0;
        for t in built {
            let schema = match (&t.cached, t.new_columns.is_empty()) {
                (Some(s), true) => Arc::clone(s),
                _ => {
                    let new: Vec<_> = t
                        .new_columns
                        .iter()
                        .map(|c| (c.name.clone(), c.column_type))
                        .collect();
                    self.cache
                        .resolve_table(&ns, &t.name, &new)
                        .await
                        .map_err(|e| match e {
                            CatalogError::ColumnTypeConflict {
                                column,
                                existing,
                                requested,
                                ..
                            } => WriteError::ColumnTypeConflict {
                                line: t
                                    .new_columns
                                    .iter()
                                    .find(|c| c.name == column)
                                    .map(|c| c.first_line)
                                    .filter(|l| *l > 0),
                                table: t.name.clone(),
                                column,
                                existing,
                                requested,
                            },
                            other => WriteError::Catalog(other),
                        })?
                }
            };
            rows += t.batch.num_rows();
            let mut partitions = Vec::new();
            for (key, batch) in partition::split_by_day(t.batch)? {
                let id = self
                    .cache
                    .partition(&ns, schema.id, &key)
                    .await
                    .map_err(WriteError::Catalog)?;
                partitions.push(PartitionWrite { id, key, batch });
            }
            tables.push(TableWrite {
                table: schema,
                partitions,
            });
        }
        Ok(DmlOperation {
            sequence_number: 0,
            namespace_id: ns.id,
            namespace: Arc::clone(&ns.name),
            tables,
            wal_payload: bytes::Bytes::new(),
            rows,
            replayed_runs: Vec::new(),
        })
    }
}

impl<S> WriteHandler<S> {
    /// Parses and validates a line-protocol body: in one pass, or in
    /// pieces on the cores no other validation holds (see `split.rs`).
    async fn build_lp(
        &self,
        body: &Bytes,
        precision: Precision,
        default_time: i64,
        existing: &Option<Arc<CachedNamespace>>,
    ) -> Result<Vec<BuiltTable>, WriteError> {
        // Owned, so that pieces on other threads can use it too.
        let ns = existing.clone();
        let lookup = move |table: &str| ns.as_ref().and_then(|ns| ns.cached_table(table));
        let (_validating, others) = Counted::enter(&self.validating);
        let cuts = match self.split {
            Some(s)
                if body.len() >= s.min_bytes
                    && others + 1 < s.cores
                    && self.crowd.load(Ordering::Relaxed) <= s.cores * CROWD_ONE =>
            {
                split::cut_points(body, s.cores - others)
            }
            _ => Vec::new(),
        };
        if cuts.is_empty() {
            return lp::build_tables(body, precision, default_time, &lookup);
        }
        let merged =
            split::build_in_pieces(body, &cuts, precision, default_time, lookup.clone()).await;
        match merged {
            Some(tables) => {
                if let Some(m) = &self.metrics {
                    m.split.inc();
                }
                Ok(tables)
            }
            None => lp::build_tables(body, precision, default_time, &lookup),
        }
    }
}

fn error_label(e: &WriteError) -> &'static str {
    match e {
        WriteError::Empty
        | WriteError::InvalidNamespace { .. }
        | WriteError::Parse(_)
        | WriteError::InvalidName { .. }
        | WriteError::ColumnTypeConflict { .. }
        | WriteError::DuplicateColumn { .. }
        | WriteError::TimestampOutOfRange { .. }
        | WriteError::InvalidArrow { .. } => "invalid",
        WriteError::TooLarge { .. } => "too_large",
        WriteError::BufferFull { .. } => "buffer_full",
        WriteError::State(_) => "unavailable",
        WriteError::Catalog(_) => "catalog",
        WriteError::Dml(_) => "wal",
        WriteError::Internal(_) => "internal",
    }
}
