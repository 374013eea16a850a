//! The in-memory buffer: namespace → table → partition.
//!
//! The tree is the last sink of the write chain and the source of queries
//! and persist jobs. Each level is a map behind a short-lived `RwLock`
//! (held to find or insert a child, never across I/O or an await); the data
//! itself lives in [`PartitionData`], each behind its own mutex, so writes to
//! different partitions never contend. Ids and names come resolved in the
//! [`DmlOperation`]: applying a write does no I/O and cannot fail.

mod concat;
mod partition;

use std::sync::Arc;
use std::time::Instant;

use hashbrown::HashMap;
use parking_lot::RwLock;
use prometheus::{IntGauge, Registry};

#[cfg(feature = "benches")]
pub(crate) use concat::concat_small;
pub(crate) use partition::{PartitionData, PartitionSnapshot, PersistingBatch};

use crate::catalog::{NamespaceId, PartitionId, TableId};
use crate::dml_sink::{DmlError, DmlSink};
use crate::ingest_state::IngestState;
use crate::write::DmlOperation;

/// How many nice steps the merge thread runs below the write path where it
/// cannot be `SCHED_IDLE`.
const MERGE_NICE: i32 = 10;

#[derive(Debug)]
pub(crate) struct TableData {
    pub(crate) id: TableId,
    pub(crate) name: Arc<str>,
    partitions: RwLock<HashMap<PartitionId, Arc<PartitionData>>>,
}

impl TableData {
    pub(crate) fn partitions(&self) -> Vec<Arc<PartitionData>> {
        let mut v: Vec<_> = self.partitions.read().values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }
}

#[derive(Debug)]
pub(crate) struct NamespaceData {
    pub(crate) id: NamespaceId,
    pub(crate) name: Arc<str>,
    tables: RwLock<HashMap<TableId, Arc<TableData>>>,
}

impl NamespaceData {
    pub(crate) fn tables(&self) -> Vec<Arc<TableData>> {
        self.tables.read().values().cloned().collect()
    }
}

/// Totals over the whole buffer.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BufferStats {
    pub(crate) buffered_rows: u64,
    pub(crate) buffered_bytes: u64,
    pub(crate) persisting_rows: u64,
    pub(crate) partitions: u64,
    pub(crate) oldest_write: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct BufferTree {
    namespaces: RwLock<HashMap<NamespaceId, Arc<NamespaceData>>>,
    state: Arc<IngestState>,
    bytes_gauge: IntGauge,
    hot: std::sync::OnceLock<HotPartitions>,
    /// Told, before the rows are buffered, of each write that lands in
    /// more than one partition (the WAL reference tracker must wait for
    /// every partition's persist before releasing its segment).
    multi_partition: std::sync::OnceLock<MultiPartitionObserver>,
    /// Where partitions with small batches to merge are sent (see
    /// [`Self::start_merger`]); without it writes merge them inline.
    merger: std::sync::OnceLock<std::sync::mpsc::Sender<Arc<PartitionData>>>,
    /// While replaying: the writes already in Parquet, skipped per
    /// partition (see `persist/journal.rs` for why).
    replay_filter: RwLock<Option<ReplayFilter>>,
    /// Per partition, how many batches this ingester persisted before it
    /// (re)started, so batch numbers continue instead of restarting at 1.
    batch_bases: RwLock<HashMap<PartitionId, u64>>,
}

/// Skips writes already persisted while replaying the WAL.
#[derive(Debug)]
struct ReplayFilter {
    persisted: Arc<crate::persist::journal::Recovered>,
    /// Writes skipped in every partition they touch.
    skipped: Vec<u64>,
    /// (partition, write) pairs skipped.
    skipped_partition_writes: u64,
}

/// See [`BufferTree::set_multi_partition_observer`].
struct MultiPartitionObserver(Box<dyn Fn(u64, u32) + Send + Sync>);

impl std::fmt::Debug for MultiPartitionObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MultiPartitionObserver")
    }
}

/// Where partitions over the hot limit are sent to be persisted at once.
#[derive(Debug)]
pub(crate) struct HotPartitions {
    pub(crate) max_bytes: usize,
    pub(crate) max_rows: usize,
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<Arc<PartitionData>>,
}

impl BufferTree {
    pub(crate) fn new(
        state: Arc<IngestState>,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let bytes_gauge = IntGauge::new(
            "sluice_buffer_bytes",
            "Bytes of Arrow data buffered in memory (including data being persisted)",
        )?;
        registry.register(Box::new(bytes_gauge.clone()))?;
        Ok(Self {
            namespaces: RwLock::new(HashMap::new()),
            state,
            bytes_gauge,
            hot: std::sync::OnceLock::new(),
            multi_partition: std::sync::OnceLock::new(),
            merger: std::sync::OnceLock::new(),
            replay_filter: RwLock::new(None),
            batch_bases: RwLock::new(HashMap::new()),
        })
    }

    /// Sets the observer of multi-partition writes (once, at start-up,
    /// before replay).
    pub(crate) fn set_multi_partition_observer(&self, f: Box<dyn Fn(u64, u32) + Send + Sync>) {
        let _ = self.multi_partition.set(MultiPartitionObserver(f));
    }

    /// Starts the thread that merges partitions' small batches (once, at
    /// start-up), so that no write waits for a merge: a stream of one-line
    /// writes merges every 32nd write (~25 µs of concatenation, see
    /// `concat.rs`, then freeing the 32 batches). The thread ends with the
    /// tree.
    pub(crate) fn start_merger(self: &Arc<Self>) -> std::io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<PartitionData>>();
        let tree = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sluice-merge".into())
            .spawn(move || {
                // Housekeeping: only on a core nothing else wants. Niced
                // (+10), it still held a core for up to a scheduler slice
                // when the write path's threads woke up: on two cores,
                // 0.3-0.4 ms more at the p99 of one-line writes (see
                // docs/benchmarks.md). If it starves, writes merge
                // themselves (`PartitionData::buffer_write`).
                crate::dedicated::run_when_idle(MERGE_NICE);
                while let Ok(partition) = rx.recv() {
                    let Some(tree) = tree.upgrade() else { return };
                    tree.account(partition.merge_all());
                    // Cleared after the merge, not before: writes during it
                    // (whose last 32 batches are still unmerged) would queue
                    // the partition again for nothing, each wake taking the
                    // partition's lock from under the write path. A write
                    // that lands between the last plan and this store is
                    // merged after the next one, which is due too.
                    partition
                        .merge_pending
                        .store(false, std::sync::atomic::Ordering::Release);
                }
            })?;
        let _ = self.merger.set(tx);
        Ok(())
    }

    /// Queues `partition`'s due merge for the merger thread, or merges it
    /// here: without the thread (unit tests, benches), or when the thread
    /// has been starved (`overdue`). One merge per partition at a time per
    /// flag; should the thread's and an overdue one overlap, the second to
    /// finish changes nothing (`PartitionData::finish_merge`). Returns the
    /// change in buffered bytes.
    fn merge(&self, partition: &Arc<PartitionData>, overdue: bool) -> isize {
        use std::sync::atomic::Ordering;
        let flag = if !partition.merge_pending.swap(true, Ordering::AcqRel) {
            match self.merger.get() {
                // The merger lives as long as the tree.
                Some(tx) => {
                    drop(tx.send(Arc::clone(partition)));
                    return 0;
                }
                None => &partition.merge_pending,
            }
        } else if overdue && !partition.merge_overdue.swap(true, Ordering::AcqRel) {
            &partition.merge_overdue
        } else {
            return 0;
        };
        let delta = partition.merge_all();
        flag.store(false, Ordering::Release);
        delta
    }

    /// Enables hot-partition persistence (once, at start-up).
    pub(crate) fn set_hot_partitions(&self, hot: HotPartitions) {
        let _ = self.hot.set(hot);
    }

    /// Batch numbers of these partitions continue after the given counts
    /// (set at start-up, before any write).
    pub(crate) fn set_batch_bases(&self, bases: impl IntoIterator<Item = (PartitionId, u64)>) {
        self.batch_bases.write().extend(bases);
    }

    /// Until [`Self::end_replay`], writes (partition, sequence number) that
    /// `persisted` lists are not buffered.
    pub(crate) fn begin_replay(&self, persisted: Arc<crate::persist::journal::Recovered>) {
        *self.replay_filter.write() = Some(ReplayFilter {
            persisted,
            skipped: Vec::new(),
            skipped_partition_writes: 0,
        });
    }

    /// Ends the replay filter. Returns the writes skipped in every
    /// partition they touched (nothing of them was buffered: their WAL
    /// references must be released by the caller) and the number of
    /// (partition, write) pairs skipped.
    pub(crate) fn end_replay(&self) -> (Vec<u64>, u64) {
        match self.replay_filter.write().take() {
            Some(f) => (f.skipped, f.skipped_partition_writes),
            None => (Vec::new(), 0),
        }
    }

    /// Drops the partitions of `op` whose rows are already persisted
    /// (replay only). `false` if nothing is left to apply.
    fn filter_replayed(&self, op: &mut DmlOperation) -> bool {
        if self.replay_filter.read().is_none() {
            return true;
        }
        let mut guard = self.replay_filter.write();
        let Some(f) = guard.as_mut() else {
            return true;
        };
        if !op.replayed_runs.is_empty() {
            return filter_replayed_run(f, op);
        }
        let seq = op.sequence_number;
        for tw in &mut op.tables {
            let before = tw.partitions.len();
            tw.partitions
                .retain(|pw| !f.persisted.is_persisted(pw.id, seq));
            f.skipped_partition_writes += (before - tw.partitions.len()) as u64;
        }
        op.tables.retain(|t| !t.partitions.is_empty());
        if op.tables.is_empty() {
            f.skipped.push(seq);
            return false;
        }
        true
    }

    fn namespace_entry(&self, id: NamespaceId, name: &Arc<str>) -> Arc<NamespaceData> {
        if let Some(ns) = self.namespaces.read().get(&id) {
            return Arc::clone(ns);
        }
        let mut w = self.namespaces.write();
        Arc::clone(w.entry(id).or_insert_with(|| {
            Arc::new(NamespaceData {
                id,
                name: Arc::clone(name),
                tables: RwLock::new(HashMap::new()),
            })
        }))
    }

    pub(crate) fn namespace(&self, id: NamespaceId) -> Option<Arc<NamespaceData>> {
        self.namespaces.read().get(&id).cloned()
    }

    pub(crate) fn namespaces(&self) -> Vec<Arc<NamespaceData>> {
        self.namespaces.read().values().cloned().collect()
    }

    pub(crate) fn table(&self, ns: NamespaceId, table: TableId) -> Option<Arc<TableData>> {
        self.namespace(ns)?.tables.read().get(&table).cloned()
    }

    /// Every partition of the tree.
    pub(crate) fn partitions(&self) -> Vec<Arc<PartitionData>> {
        let mut out = Vec::new();
        for ns in self.namespaces() {
            for t in ns.tables() {
                out.extend(t.partitions());
            }
        }
        out
    }

    /// Records a change in buffered bytes.
    pub(crate) fn account(&self, delta: isize) {
        if delta >= 0 {
            self.state.add_buffer_bytes(delta as u64);
        } else {
            self.state.release_buffer_bytes(delta.unsigned_abs() as u64);
        }
        self.bytes_gauge.set(self.state.buffer_bytes() as i64);
    }

    pub(crate) fn stats(&self) -> BufferStats {
        let mut s = BufferStats::default();
        for p in self.partitions() {
            let ps = p.stats();
            s.partitions += 1;
            s.buffered_rows += ps.buffered_rows as u64;
            s.buffered_bytes += (ps.buffered_bytes + ps.persisting_bytes) as u64;
            s.persisting_rows += ps.persisting_rows as u64;
            s.oldest_write = match (s.oldest_write, ps.oldest_write) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        s
    }

    fn apply_op(&self, mut op: DmlOperation) {
        if !self.filter_replayed(&mut op) {
            return;
        }
        // A replayed run's sequence numbers, for its one partition.
        let mut runs = std::mem::take(&mut op.replayed_runs);
        let partitions: usize = op.tables.iter().map(|t| t.partitions.len()).sum();
        if partitions > 1
            && let Some(f) = self.multi_partition.get()
        {
            (f.0)(op.sequence_number, partitions as u32);
        }
        let ns = self.namespace_entry(op.namespace_id, &op.namespace);
        let mut delta = 0isize;
        for tw in op.tables {
            let table = {
                let existing = ns.tables.read().get(&tw.table.id).cloned();
                match existing {
                    Some(t) => t,
                    None => Arc::clone(ns.tables.write().entry(tw.table.id).or_insert_with(|| {
                        Arc::new(TableData {
                            id: tw.table.id,
                            name: tw.table.name.as_str().into(),
                            partitions: RwLock::new(HashMap::new()),
                        })
                    })),
                }
            };
            for pw in tw.partitions {
                let partition = {
                    let existing = table.partitions.read().get(&pw.id).cloned();
                    match existing {
                        Some(p) => p,
                        None => {
                            Arc::clone(table.partitions.write().entry(pw.id).or_insert_with(|| {
                                let base =
                                    self.batch_bases.read().get(&pw.id).copied().unwrap_or(0);
                                Arc::new(PartitionData::new(
                                    pw.id,
                                    Arc::clone(&pw.key),
                                    ns.id,
                                    table.id,
                                    Arc::clone(&ns.name),
                                    Arc::clone(&table.name),
                                    base,
                                ))
                            }))
                        }
                    }
                };
                let w = if runs.is_empty() {
                    partition.buffer_write(pw.batch, op.sequence_number)
                } else {
                    partition.buffer_write_runs(pw.batch, std::mem::take(&mut runs))
                };
                delta += w.delta;
                if w.merge_due {
                    delta += self.merge(&partition, w.merge_overdue);
                }
                if let Some(hot) = self.hot.get()
                    && (w.bytes >= hot.max_bytes || w.rows >= hot.max_rows)
                    && !partition
                        .persist_pending
                        .swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    let _ = hot.tx.send(Arc::clone(&partition));
                }
            }
        }
        self.account(delta);
    }
}

/// [`BufferTree::filter_replayed`] for a replayed run of small records of
/// one partition (`DmlOperation::replayed_runs`): the rows of the records
/// already persisted are dropped, and those records no longer hold their
/// segments. `false` if nothing is left to apply.
fn filter_replayed_run(f: &mut ReplayFilter, op: &mut DmlOperation) -> bool {
    let Some(pw) = op.tables.first_mut().and_then(|t| t.partitions.first_mut()) else {
        return false;
    };
    let persisted: Vec<bool> = op
        .replayed_runs
        .iter()
        .map(|(seq, _)| f.persisted.is_persisted(pw.id, *seq))
        .collect();
    if !persisted.contains(&true) {
        return true;
    }
    let mut keep = arrow::array::BooleanBufferBuilder::new(pw.batch.num_rows());
    for ((seq, rows), done) in op.replayed_runs.iter().zip(&persisted) {
        keep.append_n(*rows as usize, !done);
        if *done {
            f.skipped.push(*seq);
            f.skipped_partition_writes += 1;
        }
    }
    if persisted.iter().all(|done| *done) {
        op.tables.clear();
        return false;
    }
    let keep = arrow::array::BooleanArray::new(keep.finish(), None);
    match arrow::compute::filter_record_batch(&pw.batch, &keep) {
        Ok(batch) => pw.batch = batch,
        // The run's rows add up to the batch's (`replay.rs`): not reached.
        // Applying the persisted rows again loses nothing (dedup keeps one).
        Err(e) => {
            tracing::warn!(error = %e, "replay: could not drop a run's persisted rows");
            return true;
        }
    }
    let mut done = persisted.iter();
    op.replayed_runs
        .retain(|_| !done.next().copied().unwrap_or(false));
    op.rows = pw.batch.num_rows();
    true
}

impl DmlSink for BufferTree {
    async fn apply(&self, op: DmlOperation) -> Result<(), DmlError> {
        self.apply_op(op);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use arrow::record_batch::RecordBatch;

    use super::*;
    use crate::catalog::{ColumnId, ColumnSchema, ColumnType, PartitionId, TableSchema};
    use crate::persist::journal::Recovered;
    use crate::write::{PartitionWrite, TableWrite};

    /// A replayed run of four one-row records to partition 7.
    fn run_op(values: [i64; 4], seqs: [u64; 4]) -> DmlOperation {
        let table = TableSchema::new(
            TableId(1),
            NamespaceId(1),
            "cpu".into(),
            vec![ColumnSchema {
                id: ColumnId(1),
                name: "v".into(),
                column_type: ColumnType::I64,
            }],
        );
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))])
            .unwrap();
        DmlOperation {
            sequence_number: seqs[3],
            namespace_id: NamespaceId(1),
            namespace: "ns".into(),
            tables: vec![TableWrite {
                table: Arc::new(table),
                partitions: vec![PartitionWrite {
                    id: PartitionId(7),
                    key: "2026-01-01".into(),
                    batch,
                }],
            }],
            wal_payload: bytes::Bytes::new(),
            rows: 4,
            replayed_runs: seqs.iter().map(|s| (*s, 1)).collect(),
        }
    }

    /// Of a replayed run, the rows of records already persisted are
    /// dropped and their sequence numbers handed back as skipped; the rest
    /// is buffered with each record's own sequence number. A run persisted
    /// whole is skipped whole.
    #[test]
    fn a_replayed_run_keeps_only_what_is_not_yet_persisted() {
        let tree = BufferTree::new(
            Arc::new(IngestState::new(u64::MAX)),
            &prometheus::Registry::new(),
        )
        .unwrap();
        tree.begin_replay(Arc::new(Recovered::with_persisted(
            PartitionId(7),
            &[11, 13, 20, 21, 22, 23],
        )));
        tree.apply_op(run_op([1, 2, 3, 4], [10, 11, 12, 13]));
        tree.apply_op(run_op([5, 6, 7, 8], [20, 21, 22, 23]));
        let (skipped, pairs) = tree.end_replay();
        assert_eq!(skipped, [11, 13, 20, 21, 22, 23]);
        assert_eq!(pairs, 6);
        let partitions = tree.partitions();
        assert_eq!(partitions.len(), 1);
        let persisting = partitions[0].mark_persisting().unwrap();
        assert_eq!(persisting.rows, 2);
        let batches: Vec<RecordBatch> =
            persisting.batches.iter().map(|b| b.batch.clone()).collect();
        let all = arrow::compute::concat_batches(batches[0].schema_ref(), &batches).unwrap();
        assert_eq!(all.column(0).as_primitive::<Int64Type>().values(), &[1, 3]);
        assert_eq!(persisting.sequence_numbers().collect::<Vec<_>>(), [10, 12]);
    }
}
