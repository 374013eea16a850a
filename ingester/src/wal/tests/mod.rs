//! Tests of the whole WAL: group commit, rotation, lifecycle. Recovery
//! (torn tails, bit flips) and injected I/O failures have their own files.

mod faults;
mod recovery;

use std::{future::Future, path::Path, sync::Arc, sync::atomic::Ordering::SeqCst, time::Duration};

use bytes::Bytes;

use super::{
    segment::{BODY_PREFIX_LEN, HEADER_LEN, read_frame, segment_path},
    writer::{FaultPlan, Faults},
    *,
};

/// Upper bound for any await in these tests.
const LIMIT: Duration = Duration::from_secs(30);

pub(super) async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

pub(super) fn config(dir: &Path) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        max_segment_bytes: 1 << 30,
        max_segment_age: None,
        max_group_bytes: DEFAULT_MAX_GROUP_BYTES,
        inline_max_bytes: DEFAULT_INLINE_MAX_BYTES,
        prewrite_bytes: DEFAULT_PREWRITE_BYTES,
    }
}

pub(super) fn open(cfg: WalConfig) -> Result<(Wal, Vec<SegmentFile>), WalError> {
    Wal::open(cfg, &prometheus::Registry::new())
}

pub(super) fn open_faulty(cfg: WalConfig) -> (Wal, Vec<SegmentFile>, Arc<FaultPlan>) {
    let plan = Arc::new(FaultPlan::default());
    let faults = Faults {
        plan: Arc::clone(&plan),
    };
    let (wal, files) = Wal::open_with(cfg, &prometheus::Registry::new(), faults).expect("open WAL");
    (wal, files, plan)
}

/// A line-protocol-like payload, different for every sequence number.
pub(super) fn payload(seq: u64) -> Bytes {
    Bytes::from(format!(
        "cpu,host=server{},region=eu-west usage_user={seq}i,usage_system={} {}\n",
        seq % 7,
        seq as f64 / 3.0,
        1_700_000_000_000_000_000u64 + seq
    ))
}

pub(super) fn op(seq: u64) -> WalOp {
    WalOp {
        sequence_number: seq,
        payload: payload(seq),
    }
}

/// Every op of `files`, in replay order; panics on any error.
pub(super) fn replay(files: &[SegmentFile]) -> Vec<(u64, Bytes)> {
    files
        .iter()
        .flat_map(|f| f.reader().expect("open segment"))
        .map(|r| r.expect("read op"))
        .collect()
}

pub(super) fn expected(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, Bytes)> {
    seqs.into_iter().map(|s| (s, payload(s))).collect()
}

fn metrics(wal: &Wal) -> &metrics::Metrics {
    &wal.inner.shared.metrics
}

#[tokio::test]
async fn append_shutdown_reopen_replays_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, files) = open(config(dir.path())).unwrap();
    assert!(files.is_empty());
    for s in 0..10 {
        assert_eq!(within(wal.append(&op(s))).await.unwrap(), SegmentId::new(0));
    }
    // Each lone append is its own group: no waiting for company.
    assert_eq!(metrics(&wal).syncs.get(), 10);
    within(wal.shutdown()).await.unwrap();

    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].id, SegmentId::new(0));
    assert_eq!(replay(&files), expected(0..10));
    assert_eq!(wal.segments().open_segment, SegmentId::new(1));
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, plan) = open_faulty(config(dir.path()));
    // A slow disk: every fdatasync takes 20 ms, so appends pile up behind it.
    plan.sync_delay_ms.store(20, SeqCst);
    let tasks: Vec<_> = (0..200)
        .map(|s| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(&op(s)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(within(t).await.unwrap().unwrap(), SegmentId::new(0));
    }
    let m = metrics(&wal);
    let syncs = m.syncs.get();
    assert!(
        (1..50).contains(&syncs),
        "200 concurrent appends took {syncs} syncs"
    );
    assert_eq!(m.ops_per_sync.get_sample_sum(), 200.0);
    assert_eq!(m.ops_per_sync.get_sample_count(), syncs);
    within(wal.shutdown()).await.unwrap();

    let (wal, files) = open(config(dir.path())).unwrap();
    let mut got = replay(&files);
    got.sort_by_key(|(s, _)| *s);
    assert_eq!(got, expected(0..200));
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_respect_the_byte_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_group_bytes = 400;
    let (wal, _, plan) = open_faulty(cfg);
    plan.sync_delay_ms.store(10, SeqCst);
    let tasks: Vec<_> = (0..60)
        .map(|s| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(&op(s)).await })
        })
        .collect();
    for t in tasks {
        within(t).await.unwrap().unwrap();
    }
    within(wal.shutdown()).await.unwrap();

    let data = std::fs::read(segment_path(dir.path(), SegmentId::new(0))).unwrap();
    let (mut pos, mut entries, mut multi) = (HEADER_LEN, 0, 0);
    while pos < data.len() {
        let frame = read_frame(&data, pos).unwrap();
        let ops = super::segment::check_body(frame.body).unwrap().ops;
        assert!(
            frame.body.len() - BODY_PREFIX_LEN <= 400 || ops == 1,
            "group of {ops} ops over the cap"
        );
        multi += usize::from(ops > 1);
        entries += 1;
        pos = frame.end;
    }
    assert!(entries >= 60 * 90 / 400, "{entries} entries");
    assert!(multi > 0, "no group held more than one op");
}

#[tokio::test]
async fn rotation_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_segment_bytes = 600;
    let (wal, _) = open(cfg.clone()).unwrap();
    let mut rx = wal.subscribe_rotations();
    let mut holder = Vec::new();
    for s in 0..30 {
        holder.push(within(wal.append(&op(s))).await.unwrap());
    }
    // Shutdown is queued behind the last size check: all rotations are out.
    within(wal.shutdown()).await.unwrap();
    let mut closed = Vec::new();
    while let Ok(c) = rx.try_recv() {
        closed.push(c);
    }
    assert!(closed.len() >= 3, "only {} rotations", closed.len());
    let open_id = wal.segments().open_segment;
    for (i, c) in closed.iter().enumerate() {
        assert_eq!(c.id, SegmentId::new(i as u64));
        assert_eq!(c.reason, RotationReason::Size);
        assert!(c.bytes >= 600, "closed at {} bytes", c.bytes);
        assert_eq!(std::fs::metadata(&c.path).unwrap().len(), c.bytes);
        assert_eq!(c.min_sequence_number, c.sequence_numbers.first().copied());
    }
    for (s, id) in holder.iter().enumerate() {
        match closed.iter().find(|c| c.id == *id) {
            Some(c) => assert!(c.sequence_numbers.contains(&(s as u64))),
            None => assert_eq!(*id, open_id),
        }
    }
    assert_eq!(
        metrics(&wal).rotations.with_label_values(&["size"]).get(),
        closed.len() as u64
    );

    let stats = wal.segments();
    assert_eq!(stats.segments, closed.len() + 1);
    let on_disk: u64 = super::segment::list_segments(dir.path())
        .unwrap()
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(stats.bytes, on_disk);
    assert_eq!(metrics(&wal).bytes.get() as u64, on_disk);

    let (wal, files) = open(cfg).unwrap();
    let ids: Vec<u64> = files.iter().map(|f| f.id.get()).collect();
    assert_eq!(ids, (0..=open_id.get()).collect::<Vec<_>>());
    assert_eq!(
        wal.segments().open_segment,
        SegmentId::new(open_id.get() + 1)
    );
    assert_eq!(replay(&files), expected(0..30));
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test]
async fn rotation_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_segment_age = Some(Duration::from_millis(150));
    let (wal, _) = open(cfg).unwrap();
    let mut rx = wal.subscribe_rotations();
    within(wal.append(&op(1))).await.unwrap();
    // Committed on this thread: the writer thread learns of the segment's
    // age from a wake-up message, not from the append.
    assert_eq!(metrics(&wal).inline_commits.get(), 1);
    let c = within(rx.recv()).await.unwrap();
    assert_eq!((c.id, c.reason), (SegmentId::new(0), RotationReason::Age));
    assert_eq!(&*c.sequence_numbers, &[1]);

    // An idle, empty segment is not rotated over and over.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(rx.try_recv().is_err());

    // A busy WAL (never idle long enough for a receive timeout) still rotates.
    let start = std::time::Instant::now();
    let mut s = 2;
    while start.elapsed() < Duration::from_millis(700) {
        within(wal.append(&op(s))).await.unwrap();
        s += 1;
    }
    let c = within(rx.recv()).await.unwrap();
    assert_eq!((c.id, c.reason), (SegmentId::new(1), RotationReason::Age));
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test]
async fn rotation_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(config(dir.path())).unwrap();
    let mut rx = wal.subscribe_rotations();
    for s in [5, 3, 9] {
        within(wal.append(&op(s))).await.unwrap();
    }
    let c = within(wal.rotate()).await.unwrap();
    assert_eq!(
        (c.id, c.reason),
        (SegmentId::new(0), RotationReason::Requested)
    );
    assert_eq!(&*c.sequence_numbers, &[3, 5, 9]);
    assert_eq!(
        (c.min_sequence_number, c.max_sequence_number),
        (Some(3), Some(9))
    );
    assert_eq!(std::fs::metadata(&c.path).unwrap().len(), c.bytes);
    assert_eq!(within(rx.recv()).await.unwrap(), c);

    assert_eq!(within(wal.append(&op(4))).await.unwrap(), SegmentId::new(1));
    let c = within(wal.rotate()).await.unwrap();
    assert_eq!(&*c.sequence_numbers, &[4]);
    let empty = within(wal.rotate()).await.unwrap();
    assert_eq!(empty.id, SegmentId::new(2));
    assert!(empty.sequence_numbers.is_empty() && empty.min_sequence_number.is_none());
    assert_eq!(
        metrics(&wal)
            .rotations
            .with_label_values(&["requested"])
            .get(),
        3
    );
    assert_eq!(
        wal.segments().closed_segments,
        [0, 1, 2].map(SegmentId::new)
    );
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test]
async fn delete_and_ids_monotonic_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(config(dir.path())).unwrap();
    within(wal.append(&op(1))).await.unwrap();
    within(wal.rotate()).await.unwrap();
    within(wal.rotate()).await.unwrap();
    // Segments 0 and 1 closed, 2 open.
    let e = within(wal.delete_segment(SegmentId::new(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, WalError::SegmentOpen(id) if id == SegmentId::new(2)),
        "{e}"
    );
    within(wal.delete_segment(SegmentId::new(0))).await.unwrap();
    assert!(!segment_path(dir.path(), SegmentId::new(0)).exists());
    for id in [0, 7] {
        let e = within(wal.delete_segment(SegmentId::new(id)))
            .await
            .unwrap_err();
        assert!(matches!(e, WalError::UnknownSegment(_)), "{e}");
    }
    let stats = wal.segments();
    assert_eq!((stats.segments, stats.open_segment), (2, SegmentId::new(2)));
    within(wal.shutdown()).await.unwrap();

    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(files.iter().map(|f| f.id.get()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(wal.segments().open_segment, SegmentId::new(3));
    // Replayed segments are closed segments: deletable.
    for f in &files {
        within(wal.delete_segment(f.id)).await.unwrap();
    }
    assert_eq!(wal.segments().segments, 1);
    within(wal.shutdown()).await.unwrap();

    // Only the last open (empty) segment is left; the next id still grows.
    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(files.iter().map(|f| f.id.get()).collect::<Vec<_>>(), [3]);
    assert_eq!(wal.segments().open_segment, SegmentId::new(4));
    within(wal.shutdown()).await.unwrap();
}

/// A crash while a deleted segment's space is being freed leaves a shrunk
/// file with a torn tail. It must neither be replayed nor stop the next
/// open, and the open removes it.
#[tokio::test]
async fn a_crash_while_freeing_a_deleted_segment_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(config(dir.path())).unwrap();
    for seq in 1..=50 {
        within(wal.append(&op(seq))).await.unwrap();
    }
    within(wal.rotate()).await.unwrap();
    within(wal.append(&op(51))).await.unwrap();
    within(wal.rotate()).await.unwrap();
    within(wal.shutdown()).await.unwrap();

    // What a crash in the middle of deleting segment 0 leaves: renamed out
    // of the segment names, then cut in the middle of an entry.
    let seg0 = segment_path(dir.path(), SegmentId::new(0));
    let len = std::fs::metadata(&seg0).unwrap().len();
    let renamed = reclaim::discard(dir.path(), SegmentId::new(0))
        .unwrap()
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&renamed)
        .unwrap()
        .set_len(len / 2 + 3)
        .unwrap();

    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(files.iter().map(|f| f.id.get()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(replay(&files), expected([51]));
    assert!(!renamed.exists(), "the leftover is removed at open");
    assert_eq!(wal.segments().open_segment, SegmentId::new(3));
    within(wal.shutdown()).await.unwrap();
}

/// `delete_segment` returns once the segment is out of the segment names;
/// the reclaim thread then frees and removes the file.
#[tokio::test]
async fn deleted_segments_are_freed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(config(dir.path())).unwrap();
    within(wal.append(&op(1))).await.unwrap();
    within(wal.rotate()).await.unwrap();
    within(wal.delete_segment(SegmentId::new(0))).await.unwrap();
    assert!(!segment_path(dir.path(), SegmentId::new(0)).exists());
    let renamed = reclaim::reclaim_path(dir.path(), SegmentId::new(0));
    let deadline = std::time::Instant::now() + LIMIT;
    while renamed.exists() || metrics(&wal).reclaim_pending_bytes.get() != 0 {
        assert!(std::time::Instant::now() < deadline, "never freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test]
async fn shutdown_lock_and_registration() {
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let (wal, _) = Wal::open(config(dir.path()), &registry).unwrap();
    let names: Vec<String> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    for n in [
        "sluice_wal_syncs_total",
        "sluice_wal_sync_duration_seconds",
        "sluice_wal_ops_per_sync",
        "sluice_wal_bytes_written_total",
        "sluice_wal_segments",
        "sluice_wal_bytes",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    // Two writers on one directory are refused.
    assert!(matches!(
        open(config(dir.path())),
        Err(WalError::Locked { .. })
    ));

    within(wal.append(&op(1))).await.unwrap();
    within(wal.shutdown()).await.unwrap();
    within(wal.shutdown()).await.unwrap();
    assert!(matches!(
        within(wal.append(&op(2))).await,
        Err(WalError::ShutDown)
    ));
    assert!(matches!(
        within(wal.rotate()).await,
        Err(WalError::ShutDown)
    ));

    // Dropping the last handle stops the writer and frees the directory.
    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(replay(&files), expected([1]));
    within(wal.append(&op(3))).await.unwrap();
    drop(wal);
    let deadline = std::time::Instant::now() + LIMIT;
    let (wal, files) = loop {
        match open(config(dir.path())) {
            Ok(x) => break x,
            Err(WalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(replay(&files), expected([1, 3]));
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_racing_shutdown_are_durable_iff_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(config(dir.path())).unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|s| {
            let wal = wal.clone();
            tokio::spawn(async move { (s, wal.append(&op(s)).await) })
        })
        .collect();
    tokio::task::yield_now().await;
    within(wal.shutdown()).await.unwrap();
    let mut acked = Vec::new();
    for t in tasks {
        match within(t).await.unwrap() {
            (s, Ok(_)) => acked.push(s),
            (_, Err(WalError::ShutDown)) => {}
            (s, Err(e)) => panic!("op {s}: {e}"),
        }
    }
    let (wal, files) = open(config(dir.path())).unwrap();
    let mut got = replay(&files);
    got.sort_by_key(|(s, _)| *s);
    acked.sort_unstable();
    assert_eq!(got, expected(acked));
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test]
async fn oversized_op_is_refused_before_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(config(dir.path())).unwrap();
    let big = WalOp {
        sequence_number: 8,
        payload: Bytes::from(vec![0u8; MAX_OP_BYTES + 1]),
    };
    let e = within(wal.append(&big)).await.unwrap_err();
    assert!(
        matches!(
            e,
            WalError::OpTooLarge {
                sequence_number: 8,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(metrics(&wal).syncs.get(), 0);
    within(wal.shutdown()).await.unwrap();
}

fn big_op(seq: u64) -> WalOp {
    WalOp {
        sequence_number: seq,
        payload: Bytes::from(vec![b'x'; DEFAULT_INLINE_MAX_BYTES + seq as usize % 100]),
    }
}

#[tokio::test]
async fn lone_small_appends_commit_inline_large_ones_on_the_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(config(dir.path())).unwrap();
    for s in 0..5 {
        within(wal.append(&op(s))).await.unwrap();
    }
    let m = metrics(&wal);
    assert_eq!((m.inline_commits.get(), m.syncs.get()), (5, 5));
    within(wal.append(&big_op(5))).await.unwrap();
    assert_eq!((m.inline_commits.get(), m.syncs.get()), (5, 6));
    within(wal.append(&op(6))).await.unwrap();
    assert_eq!((m.inline_commits.get(), m.syncs.get()), (6, 7));
    within(wal.shutdown()).await.unwrap();
    // After the shutdown neither path writes.
    assert!(matches!(
        within(wal.append(&op(7))).await,
        Err(WalError::ShutDown)
    ));

    let mut cfg = config(dir.path());
    cfg.inline_max_bytes = 0;
    let (wal, files) = open(cfg.clone()).unwrap();
    let got: Vec<u64> = replay(&files).into_iter().map(|(s, _)| s).collect();
    assert_eq!(got, (0..7).collect::<Vec<_>>());
    within(wal.append(&op(10))).await.unwrap();
    assert_eq!(metrics(&wal).inline_commits.get(), 0, "turned off");
    within(wal.shutdown()).await.unwrap();
}

/// Small entries are written over zeros put ahead of them; the file is
/// longer than its entries only by those zeros, which a crash image
/// recovers from (cut as a tail) and a close cuts. Large entries are not
/// padded.
#[tokio::test]
async fn small_entries_overwrite_prewritten_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.prewrite_bytes = 4096;
    let (wal, _) = open(cfg.clone()).unwrap();
    let path = segment_path(dir.path(), SegmentId::new(0));
    let file_len = || std::fs::metadata(&path).unwrap().len();
    let mut lengths = std::collections::BTreeSet::new();
    for s in 0..200 {
        within(wal.append(&op(s))).await.unwrap();
        let logical = wal.segments().open_segment_bytes;
        let physical = file_len();
        assert!(
            physical > logical && physical - logical <= 4096,
            "op {s}: file {physical} bytes, entries end at {logical}"
        );
        lengths.insert(physical);
    }
    // ~100-byte entries: the file grew by a 4 KiB step every ~40 of them,
    // not with each one.
    let logical = wal.segments().open_segment_bytes;
    assert!(logical > 4 * 4096, "{logical}");
    assert!(
        lengths.len() >= 4 && lengths.len() <= (logical / 4096) as usize + 1,
        "{} distinct file lengths for {logical} bytes of entries",
        lengths.len()
    );
    let data = std::fs::read(&path).unwrap();
    assert!(data[logical as usize..].iter().all(|&b| b == 0));

    // What a kill -9 leaves: the entries, then zeros. All 200 replay, and the
    // recovered segment ends with its last entry.
    let crashed = tempfile::tempdir().unwrap();
    std::fs::copy(&path, segment_path(crashed.path(), SegmentId::new(0))).unwrap();
    let (other, files) = open(config(crashed.path())).unwrap();
    assert_eq!(replay(&files), expected(0..200));
    assert_eq!(files[0].bytes, logical);
    assert_eq!(
        std::fs::metadata(segment_path(crashed.path(), SegmentId::new(0)))
            .unwrap()
            .len(),
        logical
    );
    within(other.shutdown()).await.unwrap();

    // A large entry is written as is: the file ends where it ends.
    within(wal.append(&big_op(200))).await.unwrap();
    assert_eq!(file_len(), wal.segments().open_segment_bytes);
    // Rotation cuts the zeros of the closed segment.
    within(wal.append(&op(201))).await.unwrap();
    assert!(file_len() > wal.segments().open_segment_bytes);
    let closed = within(wal.rotate()).await.unwrap();
    assert_eq!(file_len(), closed.bytes);
    within(wal.append(&op(202))).await.unwrap();
    within(wal.shutdown()).await.unwrap();
    let next = segment_path(dir.path(), SegmentId::new(1));
    let (wal, files) = open(cfg).unwrap();
    assert_eq!(
        std::fs::metadata(&next).unwrap().len(),
        files[1].bytes,
        "shutdown cut the open segment's zeros"
    );
    let got: Vec<u64> = replay(&files).into_iter().map(|(s, _)| s).collect();
    assert_eq!(got, (0..203).collect::<Vec<_>>());
    within(wal.shutdown()).await.unwrap();
}

/// Appenders committing inline, appends queued to the writer thread (large
/// ones, and small ones that find it busy), rotations and deletions, all at
/// once: every acknowledged op is replayed exactly once, from the segment
/// its append named, and every closed segment lists exactly the ops it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_and_queued_commits_race_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_segment_bytes = 512 << 10;
    let (wal, _) = open(cfg.clone()).unwrap();
    let mut rotations = wal.subscribe_rotations();
    let writers: Vec<_> = (0..6u64)
        .map(|w| {
            let wal = wal.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..150u64 {
                    let seq = w * 1000 + i;
                    let o = if i % 10 == 3 { big_op(seq) } else { op(seq) };
                    let id = wal.append(&o).await.expect("append");
                    acked.push((seq, id));
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                acked
            })
        })
        .collect();
    let rotator = {
        let wal = wal.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                wal.rotate().await.expect("rotate");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(within(w).await.unwrap());
    }
    within(rotator).await.unwrap();
    let m = metrics(&wal);
    let inline = m.inline_commits.get();
    assert!(
        inline > 0 && inline < 900,
        "{inline} of 900 appends committed inline"
    );
    within(wal.shutdown()).await.unwrap();

    let mut closed = std::collections::BTreeMap::new();
    while let Ok(c) = rotations.try_recv() {
        closed.insert(c.id, c.sequence_numbers.to_vec());
    }
    let (wal, files) = open(cfg).unwrap();
    let mut found = Vec::new();
    for f in &files {
        let mut seqs: Vec<u64> = f
            .reader()
            .unwrap()
            .map(|r| {
                let (seq, payload) = r.unwrap();
                let o = if seq % 1000 % 10 == 3 {
                    big_op(seq)
                } else {
                    op(seq)
                };
                assert_eq!(payload, o.payload, "op {seq}");
                found.push((seq, f.id));
                seq
            })
            .collect();
        seqs.sort_unstable();
        if let Some(listed) = closed.get(&f.id) {
            assert_eq!(&seqs, listed, "segment {} lists what it holds", f.id);
        }
    }
    acked.sort_unstable();
    found.sort_unstable();
    assert_eq!(found, acked);
    assert!(closed.len() >= 20, "{} rotations", closed.len());
    within(wal.shutdown()).await.unwrap();
}
