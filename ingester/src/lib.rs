//! # Sluice ingester
//!
//! One pod of Sluice: it takes writes from routers, makes them durable in a
//! write-ahead log, buffers them in memory per partition and answers
//! read-your-writes queries over Arrow Flight.
//!
//! ```text
//!  router ─gRPC Write / HTTP /api/v2/write─▶ WriteHandler
//!      parse + validate (line protocol or Arrow) ─▶ catalog: ids, new columns
//!      ─▶ sequence number (TimestampOracle)
//!      ─▶ DmlSinkInstrumentation ─▶ WalSink (append, group commit, fdatasync)
//!      ─▶ BufferTree (namespace → table → partition: Arrow batches)
//!  querier ─Flight DoGet(QueryRequest)─▶ QueryExecTracing ─▶ BufferQueryExec
//!      (snapshot per partition, streamed as the client reads)
//!  operator ─Control RPC─▶ rotate, status
//! ```
//!
//! ## Durability
//!
//! A write is acknowledged only after its WAL entry is on disk (fdatasync)
//! and it has been applied to the buffer. A write that is refused, for any
//! reason, was neither logged nor applied. At start-up the WAL is replayed,
//! oldest segment first, through the same validation a live write takes.
//!
//! ## Write reordering
//!
//! Sequence numbers identify writes; they do not order them. Concurrent
//! writes are group-committed and may be applied to the buffer in another
//! order than their numbers. Every buffered row keeps its write's sequence
//! number, and deduplication (the same series and timestamp written twice)
//! keeps the row with the highest number, whatever order it arrived in.
//!
//! Only [`init`]'s items are public: the rest is internal and may change
//! at any time (benches reach it through the `benches` feature).

mod buffer_tree;
// A complete subsystem API: some items serve only tests and benches.
#[allow(dead_code, unused_imports)]
mod catalog;
mod control;
mod dedicated;
mod dml_sink;
mod ingest_state;
mod init;
// A complete subsystem API: some items serve only tests and benches.
#[allow(dead_code, unused_imports)]
mod line_protocol;
mod persist;
mod query;
mod schema;
mod server;
mod store;
mod timestamp_oracle;
// A complete subsystem API: some items serve only tests and benches.
#[allow(dead_code, unused_imports)]
mod wal;

#[cfg(test)]
mod fuzz_tests;
mod write;

pub use init::*;
pub use server::SecurityOptions;
pub use server::auth::{hash_token, new_token};
pub use store::S3Options;

/// Internals for the criterion benches. Not a stable API: please do not
/// use it elsewhere (it exists only with `--features benches`).
#[cfg(feature = "benches")]
#[path = "bench_api.rs"]
pub mod internal_implementation_details;
