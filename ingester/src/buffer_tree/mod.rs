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
                let w = partition.buffer_write(pw.batch, op.sequence_number);
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

impl DmlSink for BufferTree {
    async fn apply(&self, op: DmlOperation) -> Result<(), DmlError> {
        self.apply_op(op);
        Ok(())
    }
}
