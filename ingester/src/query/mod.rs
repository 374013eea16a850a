//! Read-your-writes queries over the buffer.
//!
//! [`QueryExec`] answers one table's rows per partition. The snapshot (a
//! clone of each partition's batch `Arc`s) is taken when the query starts, so
//! every write acknowledged before it is visible; the work per batch
//! (reshaping to the table schema, projection, time filter) runs only as the
//! client pulls the stream, so a slow client holds references to immutable
//! batches, never a lock, and never a materialised copy of the result.

mod buffer;
mod persisted;
mod tracing;
mod r#trait;

pub(crate) use buffer::BufferQueryExec;
pub(crate) use persisted::PersistedReader;
pub(crate) use tracing::QueryExecTracing;
pub(crate) use r#trait::{PartitionResponse, QueryError, QueryExec, QueryPlan, QueryResponse};
