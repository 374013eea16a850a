//! Persistence: buffered partitions → sorted, deduplicated Parquet files in
//! the object store, recorded in the catalog.
//!
//! ```text
//!  enqueue(partition) ─▶ permit (bounded queue) ─▶ mark_persisting ─▶ worker[hash(partition)]
//!     worker: sort key (catalog CAS) ─▶ compact (sort + dedup, Executor) ─▶ Parquet ─▶ object store
//!             ─▶ catalog: record file ─▶ journal ─▶ partition drops the batch ─▶ observers (WAL references)
//! ```
//!
//! ## Topology
//!
//! N workers, each with its own FIFO queue. A partition always goes to the
//! same worker (hash of its id), so its batches persist in the order they
//! were taken and its sort key updates never race each other on this pod.
//!
//! ## Overload and back-pressure
//!
//! The queue is bounded by a semaphore of `queue_depth` permits, taken
//! before a job is created. When none is free the enqueuer waits (rotation
//! and hot-partition tasks, never a write request) and the `PersistSaturated`
//! bit of [`IngestState`](crate::ingest_state::IngestState) is set, so writes
//! fail fast with `RESOURCE_EXHAUSTED` instead of growing the buffer without
//! bound; it is cleared once the queue has drained below half. No lock is held
//! while waiting for a permit, and the one short lock that orders "take the
//! buffer, hand it to the worker" is never held across an await, so many
//! writers and rotations enqueuing at once cannot deadlock.
//!
//! ## Failure
//!
//! A job retries with capped exponential backoff until it succeeds (object
//! store or catalog down): data is dropped from memory only after its file
//! is recorded in the catalog, and WAL segments are released only after that.

pub(crate) mod compact;
mod handle;
pub(crate) mod journal;
mod worker;

pub(crate) use handle::{Background, PersistConfig, PersistHandle, PersistObserver};

#[cfg(test)]
mod tests;
