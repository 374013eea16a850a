//! One partition's data: the mutable buffer and the batches being persisted.
//!
//! Writes append immutable Arrow batches (one per write, tagged with its
//! sequence number); queries take a snapshot by cloning `Arc`s under the
//! lock, so a query sees every write applied before it started and never
//! blocks writers for longer than that clone. Many tiny writes are merged
//! into one batch now and then, keeping per-batch overhead (and RSS) close
//! to the data's Arrow size.
//!
//! Persisting moves the whole buffer, as one batch, to the back of the
//! `persisting` queue; the partition keeps accepting writes into a fresh
//! buffer meanwhile. Queries read the queue too, so persisting data stays
//! visible until the persist completes and the batch is dropped. Batches
//! complete in queue order (one partition always persists on one worker).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;

use crate::catalog::{NamespaceId, PartitionId, TableId};
use crate::schema::{align_batch, union_schema};

/// Below this many rows a batch counts as small and may be merged.
const SMALL_BATCH_ROWS: usize = 1024;
/// Merge once this many small batches trail the buffer.
const MERGE_AFTER_SMALL_BATCHES: usize = 32;

/// Sequence numbers of a batch's rows, as runs: `(sequence number, rows)`.
pub(crate) type SequenceRuns = Vec<(u64, u32)>;

/// A batch of buffered rows with the sequence numbers of its writes.
#[derive(Debug, Clone)]
pub(crate) struct BufferedBatch {
    pub(crate) batch: RecordBatch,
    pub(crate) sequence_numbers: SequenceRuns,
}

/// Data handed to the persist system: everything buffered at one moment.
#[derive(Debug, Clone)]
pub(crate) struct PersistingBatch {
    /// 1-based count of persists of this partition by this ingester,
    /// continued across restarts.
    pub(crate) batch_number: u64,
    pub(crate) batches: Vec<BufferedBatch>,
    pub(crate) rows: usize,
    pub(crate) bytes: usize,
}

impl PersistingBatch {
    /// Every sequence number in the batch.
    pub(crate) fn sequence_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.batches
            .iter()
            .flat_map(|b| b.sequence_numbers.iter().map(|(s, _)| *s))
    }
}

/// What a query sees of a partition.
#[derive(Debug, Clone)]
pub(crate) struct PartitionSnapshot {
    pub(crate) id: PartitionId,
    pub(crate) key: Arc<str>,
    pub(crate) batches: Vec<RecordBatch>,
    pub(crate) persisted_batches: u64,
    pub(crate) rows: usize,
}

#[derive(Debug, Default)]
struct Inner {
    buffer: Vec<BufferedBatch>,
    buffer_rows: usize,
    buffer_bytes: usize,
    /// Small batches at the end of `buffer`.
    trailing_small: usize,
    /// Of those, the unmerged ones (one write each) at the very end.
    trailing_unmerged: usize,
    persisting: VecDeque<PersistingBatch>,
    /// Persists started (the next batch number is this + 1).
    persists_started: u64,
    /// Persists completed.
    persisted_batches: u64,
    /// When the oldest unpersisted write arrived.
    oldest_write: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct PartitionData {
    pub(crate) id: PartitionId,
    pub(crate) key: Arc<str>,
    pub(crate) namespace_id: NamespaceId,
    pub(crate) table_id: TableId,
    pub(crate) namespace: Arc<str>,
    pub(crate) table: Arc<str>,
    /// Set while a persist of this partition is queued or running, so hot
    /// partition checks do not enqueue it again and again.
    pub(crate) persist_pending: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
    /// Persists completed so far, for callers waiting on them (`Persist`
    /// with `wait` must also wait for jobs others started: a rotation may
    /// have taken the buffer just before).
    persisted_tx: tokio::sync::watch::Sender<u64>,
}

/// Buffer figures of a partition.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PartitionStats {
    pub(crate) buffered_rows: usize,
    pub(crate) buffered_bytes: usize,
    pub(crate) persisting_rows: usize,
    pub(crate) persisting_bytes: usize,
    pub(crate) oldest_write: Option<Instant>,
}

impl PartitionData {
    pub(crate) fn new(
        id: PartitionId,
        key: Arc<str>,
        namespace_id: NamespaceId,
        table_id: TableId,
        namespace: Arc<str>,
        table: Arc<str>,
        persisted_before: u64,
    ) -> Self {
        Self {
            id,
            key,
            namespace_id,
            table_id,
            namespace,
            table,
            persist_pending: std::sync::atomic::AtomicBool::new(false),
            // Batch numbers continue after the files this ingester
            // recorded before it restarted.
            inner: Mutex::new(Inner {
                persists_started: persisted_before,
                persisted_batches: persisted_before,
                ..Inner::default()
            }),
            persisted_tx: tokio::sync::watch::Sender::new(persisted_before),
        }
    }

    /// Appends a write's rows. Returns the change in buffered bytes (may be
    /// negative after a merge shrank the buffer) and the buffer's new size.
    pub(crate) fn buffer_write(
        &self,
        batch: RecordBatch,
        sequence_number: u64,
    ) -> (isize, usize, usize) {
        let rows = batch.num_rows();
        let bytes = batch.get_array_memory_size();
        let mut g = self.inner.lock();
        g.oldest_write.get_or_insert_with(Instant::now);
        g.buffer.push(BufferedBatch {
            batch,
            sequence_numbers: vec![(sequence_number, rows as u32)],
        });
        g.buffer_rows += rows;
        g.buffer_bytes += bytes;
        let mut delta = bytes as isize;
        // Two levels, so each row is copied at most twice: 32 single-write
        // batches merge into one; 32 small merged batches merge again.
        // (Re-merging one growing batch every 32 writes would copy each row
        // of a stream of tiny writes some 17 times before it reached
        // SMALL_BATCH_ROWS.)
        if rows < SMALL_BATCH_ROWS {
            g.trailing_small += 1;
            g.trailing_unmerged += 1;
            if g.trailing_unmerged >= MERGE_AFTER_SMALL_BATCHES {
                let n = g.trailing_unmerged;
                delta += merge_trailing(&mut g, n);
            } else if g.trailing_small >= MERGE_AFTER_SMALL_BATCHES {
                let n = g.trailing_small;
                delta += merge_trailing(&mut g, n);
            }
        } else {
            g.trailing_small = 0;
            g.trailing_unmerged = 0;
        }
        (delta, g.buffer_bytes, g.buffer_rows)
    }

    /// A consistent view for a query.
    pub(crate) fn snapshot(&self) -> PartitionSnapshot {
        let g = self.inner.lock();
        let mut batches = Vec::with_capacity(g.buffer.len() + g.persisting.len());
        let mut rows = 0;
        for p in &g.persisting {
            for b in &p.batches {
                rows += b.batch.num_rows();
                batches.push(b.batch.clone());
            }
        }
        for b in &g.buffer {
            rows += b.batch.num_rows();
            batches.push(b.batch.clone());
        }
        PartitionSnapshot {
            id: self.id,
            key: Arc::clone(&self.key),
            batches,
            persisted_batches: g.persisted_batches,
            rows,
        }
    }

    /// Moves the buffer to the persisting queue; `None` if it is empty.
    pub(crate) fn mark_persisting(&self) -> Option<PersistingBatch> {
        let mut g = self.inner.lock();
        if g.buffer.is_empty() {
            return None;
        }
        g.persists_started += 1;
        let batch = PersistingBatch {
            batch_number: g.persists_started,
            batches: std::mem::take(&mut g.buffer),
            rows: std::mem::take(&mut g.buffer_rows),
            bytes: std::mem::take(&mut g.buffer_bytes),
        };
        g.trailing_small = 0;
        g.trailing_unmerged = 0;
        g.persisting.push_back(batch.clone());
        Some(batch)
    }

    /// Drops a persisted batch. Returns its bytes (to release from the
    /// memory account), or `None` if it is not the oldest persisting batch.
    pub(crate) fn mark_persisted(&self, batch_number: u64) -> Option<usize> {
        let mut g = self.inner.lock();
        match g.persisting.front() {
            Some(p) if p.batch_number == batch_number => {}
            _ => return None,
        }
        let done = g.persisting.pop_front().expect("front checked");
        g.persisted_batches += 1;
        if g.buffer.is_empty() && g.persisting.is_empty() {
            g.oldest_write = None;
        }
        self.persisted_tx.send_replace(g.persisted_batches);
        Some(done.bytes)
    }

    /// Persists started so far (taken from the buffer, done or not).
    pub(crate) fn persists_started(&self) -> u64 {
        self.inner.lock().persists_started
    }

    /// Resolves once `n` persists of this partition have completed.
    pub(crate) async fn wait_persisted(&self, n: u64) {
        let mut rx = self.persisted_tx.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail.
        let _ = rx.wait_for(|done| *done >= n).await;
    }

    pub(crate) fn stats(&self) -> PartitionStats {
        let g = self.inner.lock();
        PartitionStats {
            buffered_rows: g.buffer_rows,
            buffered_bytes: g.buffer_bytes,
            persisting_rows: g.persisting.iter().map(|p| p.rows).sum(),
            persisting_bytes: g.persisting.iter().map(|p| p.bytes).sum(),
            oldest_write: g.oldest_write,
        }
    }
}

/// Merges the trailing small batches into one. Returns the byte delta.
fn merge_trailing(g: &mut Inner, n: usize) -> isize {
    let start = g.buffer.len() - n;
    let parts = &g.buffer[start..];
    let schema = union_schema(parts.iter().map(|b| b.batch.schema_ref()));
    let aligned: Result<Vec<RecordBatch>, _> = parts
        .iter()
        .map(|b| align_batch(&b.batch, &schema))
        .collect();
    let merged = match aligned.and_then(|a| concat_batches(&schema, &a)) {
        Ok(m) => m,
        // Leave the batches as they are; merging is an optimisation only.
        Err(_) => {
            g.trailing_small = 0;
            g.trailing_unmerged = 0;
            return 0;
        }
    };
    let old_bytes: usize = parts.iter().map(|b| b.batch.get_array_memory_size()).sum();
    let mut runs = SequenceRuns::with_capacity(n);
    for b in parts {
        runs.extend_from_slice(&b.sequence_numbers);
    }
    let new_bytes = merged.get_array_memory_size();
    let rows = merged.num_rows();
    g.buffer.truncate(start);
    g.buffer.push(BufferedBatch {
        batch: merged,
        sequence_numbers: runs,
    });
    g.buffer_bytes = g.buffer_bytes + new_bytes - old_bytes;
    // A merged batch that is still small counts towards the next level.
    g.trailing_small = if rows < SMALL_BATCH_ROWS {
        g.trailing_small - n + 1
    } else {
        0
    };
    g.trailing_unmerged = 0;
    new_bytes as isize - old_bytes as isize
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn one_row(v: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap()
    }

    /// A stream of one-row writes is merged in two levels: every row stays,
    /// in order, with its sequence number, and the buffer holds few batches.
    #[test]
    fn tiny_writes_merge_in_two_levels() {
        let p = PartitionData::new(
            PartitionId(1),
            "2026-01-01".into(),
            NamespaceId(1),
            TableId(1),
            "ns".into(),
            "t".into(),
            0,
        );
        let n = 3000i64;
        for i in 0..n {
            let (_, _, rows) = p.buffer_write(one_row(i), i as u64 + 1);
            assert_eq!(rows, i as usize + 1);
        }
        let snap = p.snapshot();
        assert_eq!(snap.rows, n as usize);
        let values: Vec<i64> = snap
            .batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(values, (0..n).collect::<Vec<_>>());
        // 3000 = 2 × 1024-row merges + 952 rows: 29 merged batches of 32 rows
        // and 24 unmerged ones.
        assert!(
            snap.batches.len() <= 2 + 31 + 31,
            "{} batches",
            snap.batches.len()
        );
        let g = p.inner.lock();
        let seqs: Vec<u64> = g
            .buffer
            .iter()
            .flat_map(|b| {
                b.sequence_numbers.iter().map(|(s, r)| {
                    assert_eq!(*r, 1);
                    *s
                })
            })
            .collect();
        assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
        let bytes: usize = g
            .buffer
            .iter()
            .map(|b| b.batch.get_array_memory_size())
            .sum();
        assert_eq!(g.buffer_bytes, bytes);
        assert!(
            g.buffer
                .iter()
                .all(|b| b.batch.column(0).len() == b.batch.num_rows())
        );
    }
}
