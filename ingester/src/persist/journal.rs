//! The persist journal: which buffered writes are already in Parquet, and
//! which uploads may have been left behind by a crash.
//!
//! Why it exists. A WAL segment is deleted only when every write in it is
//! persisted, so a segment outlives the persists of most of its partitions
//! while one slow partition keeps it. Without the journal, a restart
//! replays the whole segment, including rows already in Parquet files, and
//! persists them again as a *new* file. Deduplication follows arrival
//! order (files in catalog order, then the buffer), so that re-persisted
//! old row would then win over a newer value of the same series and
//! timestamp persisted in between: acknowledged data overwritten by older
//! data. The journal records, per partition, the sequence numbers each
//! persist made durable; replay skips exactly those, so a replayed row is
//! always one that no file holds yet and arrival order stays true.
//!
//! Second, a crash between uploading a Parquet file and recording it in the
//! catalog leaves an object nobody references. Each job journals its path
//! (an *intent*) before uploading; at start-up, an intent without its
//! *persisted* record whose path the catalog does not list is deleted from
//! the object store. Only this ingester writes its journal, so it never
//! touches another pod's upload in flight.
//!
//! Ordering that makes it sound: intent (fsync) → upload → catalog record →
//! persisted record (fsync) → drop the batch from memory → release WAL
//! references. A persisted record can be lost only by a crash before its
//! job completed, and then no later persist of that partition exists that
//! a replayed row could wrongly win over.
//!
//! Bounded: a persisted record lists the open WAL segment at the time it
//! was written; every segment holding its writes has an id ≤ that one
//! (segment ids only grow and a write is buffered only after its segment
//! was synced). Once the oldest live segment is newer, the record is
//! useless, and compaction (at start-up and whenever the file doubles)
//! rewrites the file without it.
//!
//! Format: an 8-byte header (`SLUICEPJ`, version), then records
//! `[len u32][crc32c u32][payload]`, little-endian. A torn or damaged tail
//! is cut off with a warning: a lost record costs a duplicate, not data.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::catalog::{PartitionId, TableId};
use crate::wal::{SegmentId, Wal};

const HEADER: [u8; 8] = [b'S', b'L', b'U', b'I', b'C', b'E', b'P', 1];
const KIND_INTENT: u8 = 1;
const KIND_PERSISTED: u8 = 2;
/// A record larger than this is damage, not data (a persisted record holds
/// its sequence numbers as runs: even a million interleaved writes fit).
const MAX_RECORD: u32 = 64 << 20;
/// Compact once the file is this large (and then whenever it doubles).
const COMPACT_AT: u64 = 1 << 20;

/// The journal's file name in the WAL directory (not a `*.wal` segment).
pub(crate) const FILE_NAME: &str = "persisted.journal";

/// An upload that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Intent {
    pub(crate) partition_id: PartitionId,
    pub(crate) table_id: TableId,
    pub(crate) path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Intent {
        open_segment: u64,
        intent: Intent,
    },
    Persisted {
        open_segment: u64,
        intent: Intent,
        /// Sorted, disjoint runs `(first, count)`.
        runs: Vec<(u64, u64)>,
    },
}

/// What the journal knew at start-up.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Per partition: sorted, merged runs `(first, count)` of persisted
    /// sequence numbers.
    persisted: HashMap<PartitionId, Vec<(u64, u64)>>,
    /// Uploads started but never journaled as persisted.
    pub(crate) unfinished: Vec<Intent>,
    /// The highest sequence number journaled (0 if none).
    pub(crate) max_sequence_number: u64,
}

impl Recovered {
    /// Sequence numbers of `partition` known persisted, for tests.
    #[cfg(test)]
    pub(crate) fn with_persisted(partition: PartitionId, seqs: &[u64]) -> Self {
        let mut runs: Vec<(u64, u64)> = seqs.iter().map(|s| (*s, 1)).collect();
        runs.sort_unstable();
        Self {
            persisted: HashMap::from([(partition, runs)]),
            ..Self::default()
        }
    }

    /// Whether write `seq` is already in a Parquet file of `partition`.
    pub(crate) fn is_persisted(&self, partition: PartitionId, seq: u64) -> bool {
        let Some(runs) = self.persisted.get(&partition) else {
            return false;
        };
        let i = runs.partition_point(|(first, _)| *first <= seq);
        i > 0 && {
            let (first, count) = runs[i - 1];
            seq - first < count
        }
    }

    /// Number of (partition, sequence number) pairs known persisted.
    pub(crate) fn len(&self) -> u64 {
        self.persisted
            .values()
            .flat_map(|r| r.iter().map(|(_, n)| *n))
            .sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    #[error("persist journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("persist journal {path}: not a journal (bad header)")]
    BadHeader { path: PathBuf },
}

#[derive(Debug)]
struct State {
    file: File,
    len: u64,
    compact_at: u64,
}

/// Append-only journal shared by the persist workers.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    wal: Wal,
    state: Mutex<State>,
}

impl Journal {
    /// Opens (or creates) the journal in `wal`'s directory and reads it.
    pub(crate) fn open(wal: Wal) -> Result<(Arc<Self>, Recovered), JournalError> {
        let path = wal.dir().join(FILE_NAME);
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let (records, good_len) = match File::open(&path) {
            Ok(f) => read_records(&path, f)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0),
            Err(e) => return Err(io(e)),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let disk_len = file.metadata().map_err(io)?.len();
        let len = if good_len == 0 {
            file.set_len(0).map_err(io)?;
            file.write_all(&HEADER).map_err(io)?;
            file.sync_data().map_err(io)?;
            HEADER.len() as u64
        } else {
            if disk_len > good_len {
                tracing::warn!(
                    path = %path.display(),
                    kept = good_len,
                    dropped = disk_len - good_len,
                    "persist journal: cut off a torn or damaged tail (those writes may be persisted again)"
                );
                file.set_len(good_len).map_err(io)?;
                file.sync_data().map_err(io)?;
            }
            good_len
        };
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let recovered = recover(&records);
        let journal = Arc::new(Self {
            path,
            wal,
            state: Mutex::new(State {
                file,
                len,
                compact_at: COMPACT_AT,
            }),
        });
        Ok((journal, recovered))
    }

    /// Journals an upload about to start (synced before it returns).
    pub(crate) async fn intent(self: &Arc<Self>, intent: Intent) -> Result<(), JournalError> {
        let open_segment = self.wal.segments().open_segment.get();
        self.append(Record::Intent {
            open_segment,
            intent,
        })
        .await
    }

    /// Journals that `seqs` of `intent.partition_id` are recorded in the
    /// catalog in `intent.path` (synced before it returns).
    pub(crate) async fn persisted(
        self: &Arc<Self>,
        intent: Intent,
        seqs: &[u64],
    ) -> Result<(), JournalError> {
        let open_segment = self.wal.segments().open_segment.get();
        self.append(Record::Persisted {
            open_segment,
            intent,
            runs: runs_of(seqs),
        })
        .await
    }

    async fn append(self: &Arc<Self>, record: Record) -> Result<(), JournalError> {
        let this = Arc::clone(self);
        let bytes = encode(&record);
        tokio::task::spawn_blocking(move || this.append_blocking(&bytes))
            .await
            .map_err(|e| JournalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?
    }

    fn append_blocking(&self, bytes: &[u8]) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        // One writer at a time: records must not interleave. Persists are
        // rare next to writes, so a plain mutex in a blocking thread is fine.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let written = s.file.write_all(bytes).and_then(|()| s.file.sync_data());
        if let Err(e) = written {
            // Undo a partial record so the next one starts at a boundary.
            let len = s.len;
            let _ = s.file.set_len(len);
            let _ = s.file.seek(SeekFrom::Start(len));
            return Err(io(e));
        }
        s.len += bytes.len() as u64;
        if s.len >= s.compact_at {
            let oldest = self.oldest_live_segment();
            match self.compact_filtered(&mut s, oldest, &[]) {
                Ok(()) => s.compact_at = COMPACT_AT.max(s.len * 2),
                Err(e) => {
                    tracing::warn!(error = %e, "persist journal: compaction failed; will retry");
                    s.compact_at = s.len * 2;
                }
            }
        }
        Ok(())
    }

    fn oldest_live_segment(&self) -> SegmentId {
        let w = self.wal.segments();
        w.closed_segments.first().copied().unwrap_or(w.open_segment)
    }

    /// Rewrites the journal without records no live segment needs (and
    /// without `drop_intents`, whose fate start-up has settled).
    pub(crate) async fn compact(
        self: &Arc<Self>,
        drop_intents: Vec<Intent>,
    ) -> Result<(), JournalError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut s = this.state.lock().unwrap_or_else(|p| p.into_inner());
            let oldest = this.oldest_live_segment();
            this.compact_filtered(&mut s, oldest, &drop_intents)
        })
        .await
        .map_err(|e| JournalError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?
    }

    fn compact_filtered(
        &self,
        s: &mut State,
        oldest: SegmentId,
        drop_intents: &[Intent],
    ) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let f = File::open(&self.path).map_err(io)?;
        let (records, _) = read_records(&self.path, f)?;
        let finished: std::collections::HashSet<String> = records
            .iter()
            .filter_map(|r| match r {
                Record::Persisted { intent, .. } => Some(intent.path.clone()),
                Record::Intent { .. } => None,
            })
            .collect();
        let keep = records.into_iter().filter(|r| match r {
            // An unfinished upload stays until start-up settles it.
            Record::Intent { intent, .. } => {
                !finished.contains(&intent.path) && !drop_intents.contains(intent)
            }
            Record::Persisted { open_segment, .. } => *open_segment >= oldest.get(),
        });
        let tmp = self.path.with_extension("journal.tmp");
        let mut out = Vec::with_capacity(HEADER.len());
        out.extend_from_slice(&HEADER);
        for r in keep {
            out.extend_from_slice(&encode(&r));
        }
        {
            let mut t = File::create(&tmp).map_err(io)?;
            t.write_all(&out).map_err(io)?;
            t.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        s.file = file;
        s.len = out.len() as u64;
        Ok(())
    }

    /// The journal file's size in bytes.
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).len
    }
}

/// Settles the uploads a crash interrupted: an object whose path the
/// catalog does not list is deleted. Returns the intents settled (recorded
/// after all, or deleted, or never uploaded); one that could not be checked
/// (catalog or object store down) stays for the next start.
pub(crate) async fn settle_unfinished(
    catalog: &dyn crate::catalog::Catalog,
    store: &dyn object_store::ObjectStore,
    unfinished: &[Intent],
) -> Vec<Intent> {
    let mut settled = Vec::with_capacity(unfinished.len());
    for intent in unfinished {
        let recorded = match catalog
            .list_parquet_files_by_partition(intent.partition_id)
            .await
        {
            Ok(files) => files.iter().any(|f| f.object_path == intent.path),
            Err(e) => {
                tracing::warn!(path = %intent.path, error = %e, "unfinished upload: catalog not readable; checking again at the next start");
                continue;
            }
        };
        if recorded {
            settled.push(intent.clone());
            continue;
        }
        let path = object_store::path::Path::from(intent.path.as_str());
        match object_store::ObjectStoreExt::delete(store, &path).await {
            Ok(()) => {
                tracing::info!(path = %intent.path, "deleted a Parquet file a crash left unrecorded");
                settled.push(intent.clone());
            }
            Err(object_store::Error::NotFound { .. }) => settled.push(intent.clone()),
            Err(e) => {
                tracing::warn!(path = %intent.path, error = %e, "unfinished upload: could not delete; trying again at the next start");
            }
        }
    }
    settled
}

/// Sorted, deduplicated `seqs` as runs `(first, count)`.
fn runs_of(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for s in sorted {
        match runs.last_mut() {
            Some((first, count)) if *first + *count == s => *count += 1,
            _ => runs.push((s, 1)),
        }
    }
    runs
}

fn recover(records: &[Record]) -> Recovered {
    let mut r = Recovered::default();
    let mut intents: BTreeMap<String, Intent> = BTreeMap::new();
    let mut raw: HashMap<PartitionId, Vec<(u64, u64)>> = HashMap::new();
    for rec in records {
        match rec {
            Record::Intent { intent, .. } => {
                intents.insert(intent.path.clone(), intent.clone());
            }
            Record::Persisted { intent, runs, .. } => {
                intents.remove(&intent.path);
                if let Some((first, count)) = runs.last() {
                    r.max_sequence_number = r.max_sequence_number.max(first + count - 1);
                }
                raw.entry(intent.partition_id)
                    .or_default()
                    .extend_from_slice(runs);
            }
        }
    }
    for (p, mut runs) in raw {
        runs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
        for (first, count) in runs {
            match merged.last_mut() {
                Some((f, c)) if *f + *c >= first => {
                    let end = (*f + *c).max(first + count);
                    *c = end - *f;
                }
                _ => merged.push((first, count)),
            }
        }
        r.persisted.insert(p, merged);
    }
    r.unfinished = intents.into_values().collect();
    r
}

fn encode(r: &Record) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    let (kind, open_segment, intent) = match r {
        Record::Intent {
            open_segment,
            intent,
        } => (KIND_INTENT, *open_segment, intent),
        Record::Persisted {
            open_segment,
            intent,
            ..
        } => (KIND_PERSISTED, *open_segment, intent),
    };
    p.push(kind);
    p.extend_from_slice(&open_segment.to_le_bytes());
    p.extend_from_slice(&intent.partition_id.0.to_le_bytes());
    p.extend_from_slice(&intent.table_id.0.to_le_bytes());
    p.extend_from_slice(&(intent.path.len() as u32).to_le_bytes());
    p.extend_from_slice(intent.path.as_bytes());
    if let Record::Persisted { runs, .. } = r {
        p.extend_from_slice(&(runs.len() as u32).to_le_bytes());
        for (first, count) in runs {
            p.extend_from_slice(&first.to_le_bytes());
            p.extend_from_slice(&count.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(p.len() + 8);
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&p).to_le_bytes());
    out.extend_from_slice(&p);
    out
}

/// A cursor over a record's payload; every read is bounds-checked.
struct Cur<'a>(&'a [u8]);

impl Cur<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cur(payload);
    let kind = c.u8()?;
    let open_segment = c.u64()?;
    let partition_id = PartitionId(c.i64()?);
    let table_id = TableId(c.i64()?);
    let n = c.u32()? as usize;
    let path = std::str::from_utf8(c.take(n)?).ok()?.to_string();
    let intent = Intent {
        partition_id,
        table_id,
        path,
    };
    let r = match kind {
        KIND_INTENT => Record::Intent {
            open_segment,
            intent,
        },
        KIND_PERSISTED => {
            let n = c.u32()? as usize;
            if n > c.0.len() / 16 {
                return None;
            }
            let mut runs = Vec::with_capacity(n);
            for _ in 0..n {
                let first = c.u64()?;
                let count = c.u64()?;
                if count == 0 || first.checked_add(count).is_none() {
                    return None;
                }
                runs.push((first, count));
            }
            Record::Persisted {
                open_segment,
                intent,
                runs,
            }
        }
        _ => return None,
    };
    c.0.is_empty().then_some(r)
}

/// Every good record, and the file length they end at (0: no header).
fn read_records(path: &Path, f: File) -> Result<(Vec<Record>, u64), JournalError> {
    let mut data = Vec::new();
    BufReader::new(f)
        .read_to_end(&mut data)
        .map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if data.len() < HEADER.len() {
        // Empty or a torn header: nothing was ever journaled in it.
        return Ok((Vec::new(), 0));
    }
    if data[..8] != HEADER {
        return Err(JournalError::BadHeader {
            path: path.to_path_buf(),
        });
    }
    let mut pos = HEADER.len();
    let mut out = Vec::new();
    while data.len() - pos >= 8 {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
        if len > MAX_RECORD || data.len() - pos - 8 < len as usize {
            break;
        }
        let payload = &data[pos + 8..pos + 8 + len as usize];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Some(r) = decode(payload) else { break };
        out.push(r);
        pos += 8 + len as usize;
    }
    Ok((out, pos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(p: i64, path: &str) -> Intent {
        Intent {
            partition_id: PartitionId(p),
            table_id: TableId(7),
            path: path.into(),
        }
    }

    #[test]
    fn runs_merge_consecutive_numbers() {
        assert_eq!(runs_of(&[5, 3, 4, 9, 10, 4]), vec![(3, 3), (9, 2)]);
        assert!(runs_of(&[]).is_empty());
    }

    #[test]
    fn recover_answers_membership_exactly() {
        let recs = vec![
            Record::Intent {
                open_segment: 1,
                intent: intent(1, "a"),
            },
            Record::Persisted {
                open_segment: 1,
                intent: intent(1, "a"),
                runs: vec![(3, 3), (10, 1)],
            },
            Record::Intent {
                open_segment: 2,
                intent: intent(2, "b"),
            },
            Record::Persisted {
                open_segment: 2,
                intent: intent(1, "c"),
                runs: vec![(6, 2)],
            },
        ];
        let r = recover(&recs);
        let p1 = PartitionId(1);
        let hits: Vec<u64> = (0..13).filter(|s| r.is_persisted(p1, *s)).collect();
        assert_eq!(hits, vec![3, 4, 5, 6, 7, 10]);
        assert!(
            !r.is_persisted(PartitionId(2), 3),
            "other partitions untouched"
        );
        assert_eq!(r.unfinished, vec![intent(2, "b")]);
        assert_eq!(r.max_sequence_number, 10);
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn every_record_roundtrips_and_every_truncation_is_refused() {
        let recs = [
            Record::Intent {
                open_segment: 9,
                intent: intent(-1, "ns/t/p/ü.parquet"),
            },
            Record::Persisted {
                open_segment: u64::MAX,
                intent: intent(i64::MAX, ""),
                runs: vec![(0, 1), (u64::MAX - 1, 1)],
            },
        ];
        for r in recs {
            let bytes = encode(&r);
            assert_eq!(decode(&bytes[8..]).as_ref(), Some(&r));
            for cut in 8..bytes.len() - 1 {
                assert_eq!(decode(&bytes[8..cut]), None, "cut at {cut}");
            }
        }
    }

    #[tokio::test]
    async fn survives_restarts_torn_tails_and_compacts_what_no_segment_needs() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(
            crate::wal::WalConfig::new(dir.path()),
            &prometheus::Registry::new(),
        )
        .unwrap();
        let (j, r) = Journal::open(wal.clone()).unwrap();
        assert_eq!((r.len(), r.unfinished.len()), (0, 0));
        j.intent(intent(1, "a")).await.unwrap();
        j.persisted(intent(1, "a"), &[3, 1, 2]).await.unwrap();
        j.intent(intent(2, "b")).await.unwrap();
        let len = j.len();
        drop(j);

        // A torn record at the end is cut off; everything before it stays.
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (j, r) = Journal::open(wal.clone()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        assert!((1..=3).all(|s| r.is_persisted(PartitionId(1), s)));
        assert!(!r.is_persisted(PartitionId(1), 4));
        assert_eq!(r.unfinished, vec![intent(2, "b")]);
        assert_eq!(r.max_sequence_number, 3);

        // Still needed while segment 1 (open when it was written) lives.
        j.compact(Vec::new()).await.unwrap();
        let (_, r) = Journal::open(wal.clone()).unwrap();
        assert_eq!(r.len(), 3);
        let closed = wal.rotate().await.unwrap();
        wal.delete_segment(closed.id).await.unwrap();
        j.compact(Vec::new()).await.unwrap();
        let (_, r) = Journal::open(wal.clone()).unwrap();
        assert_eq!(r.len(), 0, "its segment is gone: the record is too");
        assert_eq!(r.unfinished, vec![intent(2, "b")], "unsettled intents stay");
        j.compact(vec![intent(2, "b")]).await.unwrap();
        let (_, r) = Journal::open(wal.clone()).unwrap();
        assert!(r.unfinished.is_empty());
        assert_eq!(j.len(), HEADER.len() as u64);
        // Appends after a compaction land in the new file.
        j.persisted(intent(5, "c"), &[9]).await.unwrap();
        let (_, r) = Journal::open(wal).unwrap();
        assert!(r.is_persisted(PartitionId(5), 9));
    }

    /// A crash between upload and catalog record: the object is deleted at
    /// start-up; a recorded file and a never-uploaded path are left alone.
    #[tokio::test]
    async fn unrecorded_uploads_are_deleted_recorded_ones_kept() {
        use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
        let dir = tempfile::tempdir().unwrap();
        let catalog = crate::catalog::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("c.sqlite").display()
        ))
        .await
        .unwrap();
        let objects = dir.path().join("objects");
        std::fs::create_dir_all(&objects).unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(&objects).unwrap();
        let ns = catalog.get_or_create_namespace("ns").await.unwrap();
        let table = catalog.get_or_create_table(ns, "t").await.unwrap().id;
        let p = catalog
            .get_or_create_partition(table, "d")
            .await
            .unwrap()
            .id;
        let mk = |path: &str| Intent {
            partition_id: p,
            table_id: table,
            path: path.into(),
        };
        for path in ["ns/t/d/orphan.parquet", "ns/t/d/recorded.parquet"] {
            store
                .put(&path.into(), PutPayload::from_static(b"PAR1"))
                .await
                .unwrap();
        }
        catalog
            .add_parquet_file(crate::catalog::ParquetFileParams {
                namespace_id: ns,
                table_id: table,
                partition_id: p,
                object_path: "ns/t/d/recorded.parquet".into(),
                file_size_bytes: 4,
                row_count: 1,
                min_time: 0,
                max_time: 0,
                min_sequence_number: 1,
                max_sequence_number: 1,
                sort_key: vec!["time".into()],
                ingester_id: "i".into(),
                batch_number: 1,
            })
            .await
            .unwrap();
        let intents = [
            mk("ns/t/d/orphan.parquet"),
            mk("ns/t/d/recorded.parquet"),
            mk("ns/t/d/never-uploaded.parquet"),
        ];
        let settled = settle_unfinished(catalog.as_ref(), &store, &intents).await;
        assert_eq!(settled, intents.to_vec(), "all three settled");
        let left: Vec<String> = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(None))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        assert_eq!(left, vec!["ns/t/d/recorded.parquet".to_string()]);
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"not a journal at all").unwrap();
        let f = File::open(&path).unwrap();
        assert!(matches!(
            read_records(&path, f),
            Err(JournalError::BadHeader { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode(&data);
        }
    }
}
