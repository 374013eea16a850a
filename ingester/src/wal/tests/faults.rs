//! Injected I/O failures: nothing of a failed group is acknowledged, and
//! the segment stays replayable.

use super::*;

fn seg_len(dir: &Path, id: u64) -> u64 {
    std::fs::metadata(segment_path(dir, SegmentId::new(id)))
        .unwrap()
        .len()
}

#[tokio::test]
async fn failed_write_is_refused_truncated_and_recoverable() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, plan) = open_faulty(config(dir.path()));
    within(wal.append(&op(0))).await.unwrap();
    let good = wal.segments().open_segment_bytes;

    // ENOSPC after 10 bytes of the entry reached the file.
    plan.fail_writes.store(1, SeqCst);
    plan.partial_write.store(10, SeqCst);
    let e = within(wal.append(&op(1))).await.unwrap_err();
    assert!(
        matches!(e, WalError::Write { segment, .. } if segment == SegmentId::new(0)),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("not durable") && msg.contains("00000000000000000000.wal"),
        "{msg}"
    );
    assert_eq!(seg_len(dir.path(), 0), good, "partial entry truncated away");
    assert_eq!(wal.segments().open_segment_bytes, good);

    // Space is back: the WAL carries on.
    within(wal.append(&op(2))).await.unwrap();
    assert_eq!(metrics(&wal).write_errors.get(), 1);
    assert_eq!(metrics(&wal).syncs.get(), 2);
    within(wal.shutdown()).await.unwrap();

    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(replay(&files), expected([0, 2]));
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test]
async fn failed_fdatasync_is_refused_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, plan) = open_faulty(config(dir.path()));
    within(wal.append(&op(0))).await.unwrap();
    let good = wal.segments().open_segment_bytes;
    plan.fail_syncs.store(1, SeqCst);
    let e = within(wal.append(&op(1))).await.unwrap_err();
    assert!(matches!(e, WalError::Write { .. }), "{e}");
    // The whole entry had been written; it is gone again.
    assert_eq!(seg_len(dir.path(), 0), good);
    within(wal.append(&op(2))).await.unwrap();
    within(wal.shutdown()).await.unwrap();

    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(replay(&files), expected([0, 2]));
    within(wal.shutdown()).await.unwrap();
}

/// Every op of a failed group gets the error, none is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_op_of_a_failed_group_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, plan) = open_faulty(config(dir.path()));
    // Op 0's sync is slow and succeeds; the group queued behind it fails.
    plan.sync_delay_ms.store(300, SeqCst);
    plan.skip_syncs.store(1, SeqCst);
    plan.fail_syncs.store(1, SeqCst);
    let first = {
        let wal = wal.clone();
        tokio::spawn(async move { wal.append(&op(0)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rest: Vec<_> = (1..=20)
        .map(|s| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(&op(s)).await })
        })
        .collect();
    within(first).await.unwrap().unwrap();
    for t in rest {
        let e = within(t).await.unwrap().unwrap_err();
        assert!(matches!(e, WalError::Write { .. }), "{e}");
    }
    assert_eq!(
        metrics(&wal).write_errors.get(),
        1,
        "the 20 ops formed one group"
    );
    plan.sync_delay_ms.store(0, SeqCst);
    within(wal.shutdown()).await.unwrap();

    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(replay(&files), expected([0]));
    within(wal.shutdown()).await.unwrap();
}

/// If the failed entry cannot even be truncated away, the WAL refuses all
/// further writes (never writes after garbage); restart recovers.
#[tokio::test]
async fn failed_truncation_fails_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    // No zeros ahead of the entries: the file's length is the test's measure
    // of what was written after the last good entry.
    let mut cfg = config(dir.path());
    cfg.prewrite_bytes = 0;
    let (wal, _, plan) = open_faulty(cfg);
    within(wal.append(&op(0))).await.unwrap();
    let good = wal.segments().open_segment_bytes;
    plan.fail_writes.store(1, SeqCst);
    plan.partial_write.store(10, SeqCst);
    plan.fail_truncates.store(1, SeqCst);
    let e = within(wal.append(&op(1))).await.unwrap_err();
    assert!(matches!(e, WalError::Write { .. }), "{e}");
    for s in 2..4 {
        let e = within(wal.append(&op(s))).await.unwrap_err();
        assert!(matches!(e, WalError::Failed { .. }), "{e}");
        assert!(e.to_string().contains(&format!("offset {good}")), "{e}");
    }
    assert!(matches!(
        within(wal.rotate()).await,
        Err(WalError::Failed { .. })
    ));
    assert_eq!(
        seg_len(dir.path(), 0),
        good + 10,
        "garbage left, nothing after it"
    );
    within(wal.shutdown()).await.unwrap();

    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(seg_len(dir.path(), 0), good, "torn tail cut at start-up");
    assert_eq!(replay(&files), expected([0]));
    within(wal.append(&op(4))).await.unwrap();
    within(wal.shutdown()).await.unwrap();
}

#[tokio::test]
async fn failed_segment_creation_keeps_the_open_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _, plan) = open_faulty(config(dir.path()));
    within(wal.append(&op(0))).await.unwrap();
    plan.fail_creates.store(1, SeqCst);
    let e = within(wal.rotate()).await.unwrap_err();
    assert!(matches!(e, WalError::Io { .. }), "{e}");
    assert!(
        !segment_path(dir.path(), SegmentId::new(1)).exists(),
        "partial file removed"
    );
    assert_eq!(within(wal.append(&op(1))).await.unwrap(), SegmentId::new(0));
    let c = within(wal.rotate()).await.unwrap();
    assert_eq!(
        (c.id, &*c.sequence_numbers),
        (SegmentId::new(0), &[0, 1][..])
    );
    // The id of the failed attempt is not reused.
    assert_eq!(within(wal.append(&op(2))).await.unwrap(), SegmentId::new(2));
    within(wal.shutdown()).await.unwrap();

    let (wal, files) = open(config(dir.path())).unwrap();
    assert_eq!(files.iter().map(|f| f.id.get()).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(replay(&files), expected(0..3));
    within(wal.shutdown()).await.unwrap();
}
