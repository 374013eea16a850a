//! Deletes a closed WAL segment once every write it holds is persisted.
//!
//! Each closed segment is reference-counted by the set of sequence numbers
//! it holds. Persist jobs report the sequence numbers they made durable in
//! Parquet; when a segment's set becomes empty its file is deleted.
//!
//! Reports can arrive before the segment holding them is closed (a write in
//! the open segment may be persisted by a hot-partition persist before the
//! rotation): such numbers are kept in `unmatched` and subtracted when the
//! segment closes. A write racing a rotation therefore cannot have its
//! segment deleted early: the segment's set comes from the WAL itself (what
//! was written into the file), never from the buffer.
//!
//! A write that spans several partitions (tables, or days) is one WAL
//! entry with one sequence number, persisted by several jobs. Its number
//! counts as persisted only when the last of them reports it
//! ([`ReferenceTracker::applied_to_partitions`] says how many there are);
//! otherwise the first job to finish would release the segment while the
//! other partitions' rows were still only in memory, and a crash then
//! lost them.
//!
//! An actor (handle + task): the state is owned by one task, so no lock is
//! held while a file is deleted; the task stops when the last handle drops.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{SegmentId, Wal};

enum Msg {
    Applied(u64, u32),
    Closed(SegmentId, Arc<[u64]>),
    Persisted(Arc<[u64]>),
    Stats(oneshot::Sender<TrackerStats>),
}

/// Figures for `Status` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TrackerStats {
    /// Closed segments still referenced.
    pub(crate) segments: usize,
    /// Unpersisted writes in closed segments.
    pub(crate) referenced_writes: usize,
    /// Persisted writes not yet seen in a closed segment.
    pub(crate) unmatched: usize,
}

/// Cheap-clone handle of the tracker.
#[derive(Debug, Clone)]
pub(crate) struct ReferenceTracker {
    tx: mpsc::UnboundedSender<Msg>,
}

impl ReferenceTracker {
    /// Starts the tracker task; it deletes files through `wal`.
    pub(crate) fn spawn(wal: Wal) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(wal, rx));
        Self { tx }
    }

    /// A segment was closed (rotation, or found at start-up) holding `seqs`.
    pub(crate) fn segment_closed(&self, id: SegmentId, seqs: Arc<[u64]>) {
        let _ = self.tx.send(Msg::Closed(id, seqs));
    }

    /// Write `seq` was buffered in `partitions` (> 1) partitions: it is
    /// persisted once that many jobs have reported it. Must be called
    /// before the rows become visible to persist jobs.
    pub(crate) fn applied_to_partitions(&self, seq: u64, partitions: u32) {
        let _ = self.tx.send(Msg::Applied(seq, partitions));
    }

    /// `seqs` are durable in Parquet and recorded in the catalog.
    pub(crate) fn persisted(&self, seqs: Arc<[u64]>) {
        let _ = self.tx.send(Msg::Persisted(seqs));
    }

    pub(crate) async fn stats(&self) -> TrackerStats {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Stats(tx)).is_err() {
            return TrackerStats::default();
        }
        rx.await.unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    segments: BTreeMap<SegmentId, HashSet<u64>>,
    owner: HashMap<u64, SegmentId>,
    unmatched: HashSet<u64>,
    /// Multi-partition writes: persist reports still expected, minus one.
    outstanding: HashMap<u64, u32>,
}

impl State {
    /// Returns segments now free to delete.
    fn closed(&mut self, id: SegmentId, seqs: &[u64]) -> Vec<SegmentId> {
        let mut set = HashSet::with_capacity(seqs.len());
        for s in seqs {
            if !self.unmatched.remove(s) {
                set.insert(*s);
                self.owner.insert(*s, id);
            }
        }
        if set.is_empty() {
            return vec![id];
        }
        self.segments.insert(id, set);
        Vec::new()
    }

    fn applied(&mut self, seq: u64, partitions: u32) {
        if partitions > 1 {
            self.outstanding.insert(seq, partitions - 1);
        }
    }

    fn persisted(&mut self, seqs: &[u64]) -> Vec<SegmentId> {
        let mut free = Vec::new();
        for s in seqs {
            if let Some(left) = self.outstanding.get_mut(s) {
                // Other partitions of this write are not persisted yet.
                *left -= 1;
                if *left == 0 {
                    self.outstanding.remove(s);
                }
                continue;
            }
            match self.owner.remove(s) {
                Some(id) => {
                    if let Some(set) = self.segments.get_mut(&id) {
                        set.remove(s);
                        if set.is_empty() {
                            self.segments.remove(&id);
                            free.push(id);
                        }
                    }
                }
                None => {
                    self.unmatched.insert(*s);
                }
            }
        }
        free
    }
}

async fn run(wal: Wal, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut state = State::default();
    while let Some(msg) = rx.recv().await {
        let free = match msg {
            Msg::Applied(seq, n) => {
                state.applied(seq, n);
                continue;
            }
            Msg::Closed(id, seqs) => state.closed(id, &seqs),
            Msg::Persisted(seqs) => state.persisted(&seqs),
            Msg::Stats(tx) => {
                let _ = tx.send(TrackerStats {
                    segments: state.segments.len(),
                    referenced_writes: state.owner.len(),
                    unmatched: state.unmatched.len(),
                });
                continue;
            }
        };
        for id in free {
            match wal.delete_segment(id).await {
                Ok(()) => {
                    tracing::info!(segment = id.get(), "WAL segment fully persisted: deleted")
                }
                Err(e) => {
                    tracing::warn!(segment = id.get(), error = %e, "cannot delete persisted WAL segment")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u64) -> SegmentId {
        SegmentId::new(n)
    }

    #[test]
    fn segment_freed_when_all_persisted() {
        let mut s = State::default();
        assert!(s.closed(seg(1), &[1, 2, 3]).is_empty());
        assert!(s.persisted(&[1, 3]).is_empty());
        assert_eq!(s.persisted(&[2]), vec![seg(1)]);
        assert!(s.segments.is_empty() && s.owner.is_empty());
    }

    #[test]
    fn persisted_before_close_is_matched_later() {
        let mut s = State::default();
        assert!(s.persisted(&[5, 6]).is_empty());
        assert!(
            s.closed(seg(2), &[4, 5]).is_empty(),
            "4 is still unpersisted"
        );
        assert_eq!(s.unmatched, HashSet::from([6]));
        assert_eq!(s.persisted(&[4]), vec![seg(2)]);
        assert_eq!(s.closed(seg(3), &[6]), vec![seg(3)]);
        assert!(s.unmatched.is_empty());
    }

    #[test]
    fn multi_partition_write_waits_for_every_partition() {
        let mut s = State::default();
        s.applied(7, 3);
        assert!(s.closed(seg(1), &[7]).is_empty());
        assert!(s.persisted(&[7]).is_empty(), "1 of 3 partitions");
        assert!(s.persisted(&[7]).is_empty(), "2 of 3 partitions");
        assert_eq!(s.persisted(&[7]), vec![seg(1)]);
        assert!(s.outstanding.is_empty());
    }

    #[test]
    fn empty_segment_is_free_at_once_and_others_wait() {
        let mut s = State::default();
        assert_eq!(s.closed(seg(1), &[]), vec![seg(1)]);
        assert!(s.closed(seg(2), &[10]).is_empty());
        assert!(s.closed(seg(3), &[11]).is_empty());
        assert_eq!(s.persisted(&[11]), vec![seg(3)]);
        assert_eq!(s.segments.len(), 1);
    }
}
