//! One partition's data: the mutable buffer and the batches being persisted.
//!
//! Writes append immutable Arrow batches (one per write, tagged with its
//! sequence number); queries take a snapshot by cloning `Arc`s under the
//! lock, so a query sees every write applied before it started and never
//! blocks writers for longer than that clone. Many tiny writes are merged
//! into one batch now and then, keeping per-batch overhead (and RSS) close
//! to the data's Arrow size, also when large writes to the same partition
//! come between them (see `merge_plan`). A merge (a concatenation of 32
//! batches that rebuilds their tag dictionaries as one, see `concat.rs`)
//! runs outside the lock and, in a server, off the write path (see
//! `BufferTree::start_merger`): merging inline with Arrow's `concat` made
//! every 32nd one-line write ~1.5 ms slower, the whole of the p99 latency
//! above the disk's.
//!
//! Persisting moves the whole buffer, as one batch, to the back of the
//! `persisting` queue; the partition keeps accepting writes into a fresh
//! buffer meanwhile. Queries read the queue too, so persisting data stays
//! visible until the persist completes and the batch is dropped. Batches
//! complete in queue order (one partition always persists on one worker).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;

use super::concat::concat_small;
use crate::catalog::{NamespaceId, PartitionId, TableId};
use crate::schema::{align_batch, union_schema};

/// Below this many rows a batch counts as small and may be merged.
const SMALL_BATCH_ROWS: usize = 1024;
/// Merge once this many small batches trail the buffer.
const MERGE_AFTER_SMALL_BATCHES: usize = 32;
/// Writes merge themselves once this many small batches trail the buffer.
const MERGE_OVERDUE_BATCHES: usize = 4 * MERGE_AFTER_SMALL_BATCHES;
/// How many batches back from the end a merge plan looks for a closed run
/// of small writes (see [`merge_plan`]).
const CLOSED_RUN_LOOKBACK: usize = 256;

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
    pub(crate) batches: Vec<Arc<BufferedBatch>>,
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
    /// Each batch behind an `Arc`, so a merge plans with one reference
    /// count per batch: the merge thread holds this lock for as little as
    /// possible, since a write waits for it meanwhile.
    buffer: Vec<Arc<BufferedBatch>>,
    buffer_rows: usize,
    buffer_bytes: usize,
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
    /// Set while a merge of this partition's small batches is queued or
    /// running, so writes do not queue it again.
    pub(crate) merge_pending: std::sync::atomic::AtomicBool,
    /// Set while a write merges overdue batches itself (one at a time).
    pub(crate) merge_overdue: std::sync::atomic::AtomicBool,
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
            merge_pending: std::sync::atomic::AtomicBool::new(false),
            merge_overdue: std::sync::atomic::AtomicBool::new(false),
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

    /// Appends a write's rows: its Arrow bytes, the buffer's new size, and
    /// whether small batches are due a [`Self::merge_small`].
    pub(crate) fn buffer_write(&self, batch: RecordBatch, sequence_number: u64) -> Buffered {
        let rows = batch.num_rows() as u32;
        self.buffer_write_runs(batch, vec![(sequence_number, rows)])
    }

    /// [`Self::buffer_write`] of rows of several writes (a replayed run of
    /// small WAL records): each one's sequence number and rows, in order.
    pub(crate) fn buffer_write_runs(
        &self,
        batch: RecordBatch,
        sequence_numbers: SequenceRuns,
    ) -> Buffered {
        let rows = batch.num_rows();
        let bytes = batch.get_array_memory_size();
        let mut g = self.inner.lock();
        g.oldest_write.get_or_insert_with(Instant::now);
        g.buffer.push(Arc::new(BufferedBatch {
            batch,
            sequence_numbers,
        }));
        g.buffer_rows += rows;
        g.buffer_bytes += bytes;
        // n small single-write batches at the end.
        let unmerged_tail = |n: usize| {
            g.buffer.len() >= n && g.buffer[g.buffer.len() - n..].iter().all(|b| b.is_single())
        };
        // 32 of them: a first-level merge (`merge_plan`), which the second
        // level follows when due. A large write closes the run of small ones
        // before it: due when two or more.
        let merge_due = if rows < SMALL_BATCH_ROWS {
            unmerged_tail(MERGE_AFTER_SMALL_BATCHES)
        } else {
            let before = &g.buffer[..g.buffer.len() - 1];
            before.len() >= 2 && before[before.len() - 2..].iter().all(|b| b.is_single())
        };
        Buffered {
            delta: bytes as isize,
            bytes: g.buffer_bytes,
            rows: g.buffer_rows,
            merge_due,
            merge_overdue: merge_due
                && rows < SMALL_BATCH_ROWS
                && unmerged_tail(MERGE_OVERDUE_BATCHES),
        }
    }

    /// Merges the small batches at the end of the buffer, if enough of them
    /// trail it (see [`merge_plan`]): they are copied under the lock (`Arc`
    /// clones), concatenated without it, and swapped in unless a persist
    /// took the buffer meanwhile. Returns the change in buffered bytes, or
    /// `None` when nothing was due (or the batches cannot be concatenated:
    /// merging is an optimisation only). One merge per partition at a time
    /// (the merger's `merge_pending` flag, or the applying task).
    fn merge_small(&self) -> Option<isize> {
        let plan = self.plan_merge()?;
        let merged = plan.concat()?;
        Some(self.finish_merge(plan, merged))
    }

    /// [`Self::merge_small`] until nothing is due (a first-level merge can
    /// make a second-level one due). Returns the change in buffered bytes.
    pub(crate) fn merge_all(&self) -> isize {
        let mut delta = 0;
        while let Some(d) = self.merge_small() {
            delta += d;
        }
        delta
    }

    fn plan_merge(&self) -> Option<MergePlan> {
        let g = self.inner.lock();
        let range = merge_plan(&g.buffer)?;
        Some(MergePlan {
            start: range.start,
            parts: g.buffer[range].to_vec(),
            generation: g.persists_started,
        })
    }

    fn finish_merge(&self, plan: MergePlan, merged: BufferedBatch) -> isize {
        let old_bytes: usize = plan
            .parts
            .iter()
            .map(|b| b.batch.get_array_memory_size())
            .sum();
        let new_bytes = merged.batch.get_array_memory_size();
        let mut g = self.inner.lock();
        // Writes only append, so unless a persist moved the buffer away (or
        // another merge got there first, which the callers' flag rules out)
        // `start..start + n` still holds the planned batches: checked by
        // identity (the plan holds them, so no other batch can have their
        // addresses), which is as good as checking every one of them.
        let end = plan.start + plan.parts.len();
        let same = |i: usize, planned: Option<&Arc<BufferedBatch>>| matches!((g.buffer.get(i), planned), (Some(b), Some(p)) if Arc::ptr_eq(b, p));
        if g.persists_started != plan.generation
            || end > g.buffer.len()
            || !same(plan.start, plan.parts.first())
            || !same(end - 1, plan.parts.last())
        {
            return 0;
        }
        // The removed batches are the plan's too: dropping them here only
        // counts references down; the plan frees them after the lock.
        g.buffer.splice(plan.start..end, [Arc::new(merged)]);
        g.buffer_bytes = g.buffer_bytes + new_bytes - old_bytes;
        new_bytes as isize - old_bytes as isize
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

impl BufferedBatch {
    /// A small batch of one write: what merges collect.
    fn is_single(&self) -> bool {
        self.batch.num_rows() < SMALL_BATCH_ROWS && self.sequence_numbers.len() == 1
    }
}

/// Consecutive batches of a buffer to merge, as they were when planned.
struct MergePlan {
    start: usize,
    parts: Vec<Arc<BufferedBatch>>,
    /// `persists_started` then: a persist since took the buffer.
    generation: u64,
}

impl MergePlan {
    fn concat(&self) -> Option<BufferedBatch> {
        let first = self.parts.first()?.batch.schema_ref();
        // Writes of the same columns share one schema (see
        // `write::builder`): nothing to align then.
        let batch = if self
            .parts
            .iter()
            .all(|b| Arc::ptr_eq(b.batch.schema_ref(), first))
        {
            concat_small(first, self.parts.iter().map(|b| &b.batch)).ok()?
        } else {
            let schema = union_schema(self.parts.iter().map(|b| b.batch.schema_ref()));
            let aligned: Result<Vec<RecordBatch>, _> = self
                .parts
                .iter()
                .map(|b| align_batch(&b.batch, &schema))
                .collect();
            aligned.and_then(|a| concat_small(&schema, &a)).ok()?
        };
        let mut sequence_numbers = SequenceRuns::with_capacity(self.parts.len());
        for b in &self.parts {
            sequence_numbers.extend_from_slice(&b.sequence_numbers);
        }
        Some(BufferedBatch {
            batch,
            sequence_numbers,
        })
    }
}

/// What [`PartitionData::buffer_write`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Buffered {
    /// Change in buffered bytes.
    pub(crate) delta: isize,
    /// The buffer's size after the write.
    pub(crate) bytes: usize,
    pub(crate) rows: usize,
    /// Small batches are due a merge.
    pub(crate) merge_due: bool,
    /// So many that the merge thread, which only gets idle CPU, must have
    /// been starved: the write should merge them itself.
    pub(crate) merge_overdue: bool,
}

/// Which batches of `buffer` to merge now.
///
/// At its end, in two levels so each row is copied at most twice: 32
/// single-write small batches merge into one; 32 small batches (merged ones
/// included) merge again. (Merging one growing batch every 32 writes would
/// copy each row of a stream of tiny writes some 17 times before it reached
/// [`SMALL_BATCH_ROWS`].)
///
/// Before its end, closed runs: two or more single-write small batches
/// followed by a large one. When small and large writes reach one partition
/// together (a one-line writer next to batch writers), the large writes cut
/// the small ones into runs shorter than 32 that the rule above never sees:
/// unmerged, every one-row batch kept its own ~22 Arrow arrays (a 1,024-line
/// writer next to 8 one-line writers: RSS 1.6 GiB instead of 0.95, and a
/// full scan 13.5 s instead of 2.5; `docs/benchmarks.md`, session 17).
/// A run merges once, in place, so row order (which dedup relies on: the
/// last arrival wins) is kept; the small batches left are then at most
/// about one per large batch.
fn merge_plan(buffer: &[Arc<BufferedBatch>]) -> Option<std::ops::Range<usize>> {
    let len = buffer.len();
    let mut small = 0;
    let mut unmerged = 0;
    for b in buffer.iter().rev() {
        if b.batch.num_rows() >= SMALL_BATCH_ROWS {
            break;
        }
        if unmerged == small && b.sequence_numbers.len() == 1 {
            unmerged += 1;
        }
        small += 1;
    }
    if unmerged >= MERGE_AFTER_SMALL_BATCHES {
        return Some(len - unmerged..len);
    } else if unmerged == 0 && small >= MERGE_AFTER_SMALL_BATCHES {
        // Only right after a first-level merge, so that the second level
        // takes 32 merged batches, not the last one plus a few new writes
        // (which would copy one growing batch every 32 writes).
        return Some(len - small..len);
    }
    // The newest closed run within the lookback, looking back from the open
    // run at the end (single-write batches are not followed by one there).
    let stop = len.saturating_sub(CLOSED_RUN_LOOKBACK);
    let mut end = len - unmerged;
    while end > stop {
        if !buffer[end - 1].is_single() {
            end -= 1;
            continue;
        }
        let mut start = end - 1;
        while start > stop && buffer[start - 1].is_single() {
            start -= 1;
        }
        if end - start >= 2 {
            return Some(start..end);
        }
        end = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn one_row(v: i64) -> RecordBatch {
        row(
            &Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            v,
        )
    }

    /// One row of `v` in the single Int64 column of `schema`.
    fn row(schema: &arrow::datatypes::SchemaRef, v: i64) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![Arc::new(Int64Array::from(vec![v]))],
        )
        .unwrap()
    }

    /// A stream of one-row writes is merged in two levels: every row stays,
    /// in order, with its sequence number, and the buffer holds few batches.
    #[test]
    fn tiny_writes_merge_in_two_levels() {
        let p = partition();
        let n = 3000i64;
        for i in 0..n {
            let w = p.buffer_write(one_row(i), i as u64 + 1);
            assert_eq!(w.rows, i as usize + 1);
            if w.merge_due {
                assert!(p.merge_small().is_some());
                p.merge_all();
            }
            assert!(p.inner.lock().buffer.len() < 2 + 32 + 32);
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
        // and 24 unmerged ones. Each row was copied at most twice; a merge
        // that took in the growing batch again and again would leave fewer,
        // larger batches here.
        let shape: Vec<usize> = snap.batches.iter().map(|b| b.num_rows()).collect();
        let expected: Vec<usize> = [1024, 1024]
            .into_iter()
            .chain(std::iter::repeat_n(32, 29))
            .chain(std::iter::repeat_n(1, 24))
            .collect();
        assert_eq!(shape, expected);
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
        assert_bytes_exact(&g);
        assert!(
            g.buffer
                .iter()
                .all(|b| b.batch.column(0).len() == b.batch.num_rows())
        );
    }

    /// Small writes between large ones (a one-line writer next to batch
    /// writers) merge in closed runs, in place: every row stays in order
    /// with its sequence number, and only a run of one is left unmerged.
    #[test]
    fn small_writes_between_large_ones_merge_in_place() {
        let p = partition();
        let schema = one_row(0).schema();
        let large = |from: i64| {
            let values = from..from + SMALL_BATCH_ROWS as i64;
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from_iter_values(values))],
            )
            .unwrap()
        };
        let (mut next, mut seq) = (0i64, 0u64);
        for run in [5, 1, 0, 12, 2, 40, 7] {
            for _ in 0..run {
                seq += 1;
                if p.buffer_write(row(&schema, next), seq).merge_due {
                    p.merge_all();
                }
                next += 1;
            }
            seq += 1;
            let w = p.buffer_write(large(next), seq);
            next += SMALL_BATCH_ROWS as i64;
            // 40: the first 32 merged at the end already, 8 are left.
            assert_eq!(w.merge_due, run >= 2, "run of {run}");
            assert!(!w.merge_overdue);
            if w.merge_due {
                p.merge_all();
            }
        }
        // An open run at the end waits for 32, or for a large write.
        for _ in 0..3 {
            seq += 1;
            assert!(!p.buffer_write(row(&schema, next), seq).merge_due);
            next += 1;
        }
        assert_eq!(p.merge_all(), 0);
        let g = p.inner.lock();
        let l = SMALL_BATCH_ROWS;
        let shape: Vec<usize> = g.buffer.iter().map(|b| b.batch.num_rows()).collect();
        assert_eq!(shape, [5, l, 1, l, l, 12, l, 2, l, 32, 8, l, 7, l, 1, 1, 1]);
        assert_eq!(values(&g.buffer), (0..next).collect::<Vec<_>>());
        assert_eq!(seqs(&g.buffer), (1..=seq).collect::<Vec<_>>());
        assert_bytes_exact(&g);
    }

    /// A merger that fell behind finds every closed run within the
    /// lookback, not only the newest.
    #[test]
    fn a_late_merge_finds_every_closed_run() {
        let p = partition();
        let schema = one_row(0).schema();
        let (mut next, mut seq) = (0i64, 0u64);
        for run in [3, 4, 1, 6] {
            for _ in 0..run {
                seq += 1;
                p.buffer_write(row(&schema, next), seq);
                next += 1;
            }
            seq += 1;
            let values = next..next + SMALL_BATCH_ROWS as i64;
            let large = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from_iter_values(values))],
            )
            .unwrap();
            p.buffer_write(large, seq);
            next += SMALL_BATCH_ROWS as i64;
        }
        assert!(p.merge_all() < 0, "merged batches take less memory");
        let g = p.inner.lock();
        let l = SMALL_BATCH_ROWS;
        let shape: Vec<usize> = g.buffer.iter().map(|b| b.batch.num_rows()).collect();
        assert_eq!(shape, [3, l, 4, l, 1, l, 6, l]);
        assert_eq!(values(&g.buffer), (0..next).collect::<Vec<_>>());
        assert_eq!(seqs(&g.buffer), (1..=seq).collect::<Vec<_>>());
        assert_bytes_exact(&g);
    }

    fn partition() -> PartitionData {
        PartitionData::new(
            PartitionId(1),
            "2026-01-01".into(),
            NamespaceId(1),
            TableId(1),
            "ns".into(),
            "t".into(),
            0,
        )
    }

    fn values(batches: &[Arc<BufferedBatch>]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.batch
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    fn write_rows(p: &PartitionData, rows: std::ops::Range<i64>) {
        for i in rows {
            p.buffer_write(one_row(i), i as u64 + 1);
        }
    }

    fn assert_bytes_exact(g: &Inner) {
        let bytes: usize = g
            .buffer
            .iter()
            .map(|b| b.batch.get_array_memory_size())
            .sum();
        assert_eq!(g.buffer_bytes, bytes);
    }

    fn seqs(batches: &[Arc<BufferedBatch>]) -> Vec<u64> {
        batches
            .iter()
            .flat_map(|b| b.sequence_numbers.iter().map(|(s, _)| *s))
            .collect()
    }

    /// Batches that share one schema merge without aligning, into a batch
    /// of that schema; batches of different columns are aligned to their
    /// union (missing values null).
    #[test]
    fn merges_with_a_shared_schema_and_without() {
        let p = partition();
        let schema = one_row(0).schema();
        for i in 0..32 {
            p.buffer_write(row(&schema, i), i as u64 + 1);
        }
        p.merge_all();
        {
            let g = p.inner.lock();
            assert_eq!(g.buffer.len(), 1);
            assert!(Arc::ptr_eq(g.buffer[0].batch.schema_ref(), &schema));
            assert_eq!(values(&g.buffer), (0..32).collect::<Vec<_>>());
            assert_bytes_exact(&g);
        }
        let other = Arc::new(Schema::new(vec![Field::new("w", DataType::Int64, true)]));
        for i in 32..64 {
            let b = if i % 2 == 0 {
                one_row(i)
            } else {
                row(&other, i)
            };
            p.buffer_write(b, i as u64 + 1);
        }
        p.merge_all();
        let g = p.inner.lock();
        let last = &g.buffer.last().unwrap().batch;
        assert_eq!(last.num_rows(), 32);
        let v = last
            .column_by_name("v")
            .unwrap()
            .as_primitive::<Int64Type>();
        let w = last
            .column_by_name("w")
            .unwrap()
            .as_primitive::<Int64Type>();
        for r in 0..32 {
            let i = 32 + r as i64;
            let (set, unset) = if i % 2 == 0 { (v, w) } else { (w, v) };
            assert_eq!(set.value(r), i);
            assert!(unset.is_null(r));
        }
        assert_bytes_exact(&g);
    }

    /// Writes that arrive while a merge runs (between its plan and its
    /// swap) stay, after the merged batch, and the byte count stays exact.
    #[test]
    fn writes_during_a_merge_stay_after_it() {
        let p = partition();
        write_rows(&p, 0..32);
        let plan = p.plan_merge().expect("32 small batches");
        write_rows(&p, 32..40);
        let merged = plan.concat().expect("concat");
        assert!(p.finish_merge(plan, merged) < 0, "merging saves memory");
        let g = p.inner.lock();
        assert_eq!(g.buffer.len(), 1 + 8);
        assert_eq!(g.buffer[0].batch.num_rows(), 32);
        assert_eq!(values(&g.buffer), (0..40).collect::<Vec<_>>());
        assert_eq!(seqs(&g.buffer), (1..=40).collect::<Vec<_>>());
        assert_bytes_exact(&g);
        assert_eq!(g.buffer_rows, 40);
    }

    /// Two merges planned on the same batches: the second finds them gone
    /// and changes nothing (no batch lost or doubled).
    #[test]
    fn a_second_merge_of_the_same_batches_changes_nothing() {
        let p = partition();
        write_rows(&p, 0..32);
        let first = p.plan_merge().expect("32 small batches");
        let second = p.plan_merge().expect("the same 32");
        // Enough later writes that the planned range still fits the buffer.
        write_rows(&p, 32..70);
        let merged = first.concat().expect("concat");
        assert!(p.finish_merge(first, merged) < 0);
        let merged = second.concat().expect("concat");
        assert_eq!(p.finish_merge(second, merged), 0);
        let g = p.inner.lock();
        assert_eq!(values(&g.buffer), (0..70).collect::<Vec<_>>());
        assert_bytes_exact(&g);
    }

    /// A merge whose batches a persist took after it planned changes
    /// nothing: the persist has them as they were, the new buffer only the
    /// writes since.
    #[test]
    fn a_persist_during_a_merge_wins() {
        let p = partition();
        write_rows(&p, 0..32);
        let plan = p.plan_merge().expect("32 small batches");
        let persisting = p.mark_persisting().expect("buffered");
        write_rows(&p, 32..34);
        let merged = plan.concat().expect("concat");
        assert_eq!(p.finish_merge(plan, merged), 0);
        assert_eq!(values(&persisting.batches), (0..32).collect::<Vec<_>>());
        let g = p.inner.lock();
        assert_eq!(values(&g.buffer), vec![32, 33]);
        assert_eq!(seqs(&g.buffer), vec![33, 34]);
        assert_bytes_exact(&g);
    }
}
