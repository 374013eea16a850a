//! The persist actor end to end over real parts: in-memory catalog, a local
//! object store directory, the real executor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;

use super::compact::Executor;
use super::{PersistConfig, PersistHandle, PersistObserver};
use crate::buffer_tree::BufferTree;
use crate::catalog::{Catalog, MemCatalog, SchemaCache};
use crate::ingest_state::{IngestState, IngestStateError};
use crate::timestamp_oracle::TimestampOracle;
use crate::write::{Payload, Precision, WriteHandler, WriteRequest};

#[derive(Debug, Default)]
struct Recorder {
    seqs: Mutex<Vec<u64>>,
    calls: AtomicUsize,
}

impl PersistObserver for Recorder {
    fn persisted(&self, sequence_numbers: Arc<[u64]>) {
        self.calls.fetch_add(1, Ordering::AcqRel);
        self.seqs.lock().extend_from_slice(&sequence_numbers);
    }
}

struct Ctx {
    _dir: tempfile::TempDir,
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn ObjectStore>,
    buffer: Arc<BufferTree>,
    state: Arc<IngestState>,
    handler: WriteHandler<Arc<BufferTree>>,
    persist: PersistHandle,
    recorder: Arc<Recorder>,
    registry: prometheus::Registry,
}

fn ctx(workers: usize, queue_depth: usize) -> Ctx {
    ctx_with(workers, queue_depth, None)
}

/// With `lowered_below`: a background pool 5 steps down, used while fewer
/// bytes than that are buffered.
fn ctx_with(workers: usize, queue_depth: usize, lowered_below: Option<u64>) -> Ctx {
    let dir = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(MemCatalog::new());
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let state = Arc::new(IngestState::new(u64::MAX));
    state.unset(IngestStateError::Starting);
    let registry = prometheus::Registry::new();
    let buffer = Arc::new(BufferTree::new(Arc::clone(&state), &registry).unwrap());
    let cache = Arc::new(SchemaCache::new(Arc::clone(&catalog)));
    let handler = WriteHandler::new(
        cache,
        Arc::new(TimestampOracle::new(0)),
        Arc::clone(&state),
        Arc::clone(&buffer),
        usize::MAX,
        None,
    )
    .unwrap();
    let executor = Arc::new(Executor::new(2, 64 << 20, dir.path().join("tmp")).unwrap());
    let background = lowered_below.map(|below_bytes| super::Background {
        executor: Arc::new(executor.lowered(5).unwrap()),
        below_bytes,
    });
    let recorder = Arc::new(Recorder::default());
    let persist = PersistHandle::new(
        PersistConfig {
            journal: None,
            workers,
            queue_depth,
            ingester_id: "test".into(),
            background,
        },
        Arc::clone(&catalog),
        Arc::clone(&store),
        executor,
        Arc::clone(&buffer),
        Arc::clone(&state),
        vec![Arc::clone(&recorder) as Arc<dyn PersistObserver>],
        &registry,
    )
    .unwrap();
    Ctx {
        _dir: dir,
        catalog,
        store,
        buffer,
        state,
        handler,
        persist,
        recorder,
        registry,
    }
}

fn counter(c: &Ctx, name: &str) -> u64 {
    c.registry
        .gather()
        .iter()
        .find(|f| f.name() == name)
        .map(|f| f.get_metric()[0].get_counter().get_value() as u64)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

async fn write(c: &Ctx, body: String) -> u64 {
    c.handler
        .write(WriteRequest {
            namespace: "ns".into(),
            payload: Payload::LineProtocol {
                body: Bytes::from(body),
                precision: Precision::Nanoseconds,
                default_time: 0,
            },
        })
        .await
        .unwrap()
        .sequence_number
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persists_dedups_records_and_releases() {
    let c = ctx(2, 4);
    let s1 = write(&c, "cpu,host=a v=1 10\ncpu,host=b v=2 10\n".into()).await;
    let s2 = write(&c, "cpu,host=a v=3 10\ncpu,host=a w=9i 20\n".into()).await;
    let parts = c.buffer.partitions();
    assert_eq!(parts.len(), 1);
    assert!(c.state.buffer_bytes() > 0);
    c.persist.persist_and_wait(Arc::clone(&parts[0])).await;

    // Memory released, batch dropped, observers told both writes.
    assert_eq!(c.state.buffer_bytes(), 0);
    assert_eq!(parts[0].snapshot().rows, 0);
    assert_eq!(parts[0].snapshot().persisted_batches, 1);
    let mut seqs = c.recorder.seqs.lock().clone();
    seqs.sort();
    assert_eq!(seqs, vec![s1, s2]);

    // One file in the catalog and in the store, deduplicated.
    let ns = c.catalog.get_namespace("ns").await.unwrap().unwrap();
    let t = c.catalog.get_table(ns, "cpu").await.unwrap().unwrap();
    let files = c.catalog.list_parquet_files(t.id).await.unwrap();
    assert_eq!(files.len(), 1);
    let f = &files[0];
    assert_eq!(f.row_count, 3, "host=a@10 written twice is one row");
    assert_eq!((f.min_time, f.max_time), (10, 20));
    assert_eq!((f.min_sequence_number, f.max_sequence_number), (s1, s2));
    assert_eq!(f.sort_key.last().map(String::as_str), Some("time"));
    let obj = c
        .store
        .get(&object_store::path::Path::from(f.object_path.as_str()))
        .await
        .unwrap();
    let bytes = obj.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, f.file_size_bytes);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 3);
    // The partition's sort key is in the catalog.
    let p = c
        .catalog
        .get_or_create_partition(t.id, "1970-01-01")
        .await
        .unwrap();
    assert_eq!(p.sort_key, f.sort_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_does_not_deadlock_and_saturation_clears() {
    // One worker, one queue slot, many partitions enqueued at once by many
    // tasks (as rotations and hot partitions do): everything completes.
    let c = Arc::new(ctx(1, 1));
    let day = 86_400_000_000_000i64;
    for d in 0..24 {
        write(&c, format!("cpu,host=a v={d} {}\n", d * day)).await;
    }
    let parts = c.buffer.partitions();
    assert_eq!(parts.len(), 24);
    let mut tasks = Vec::new();
    for p in parts {
        let c = Arc::clone(&c);
        tasks.push(tokio::spawn(
            async move { c.persist.persist_and_wait(p).await },
        ));
    }
    let all = futures::future::join_all(tasks);
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("persist jobs deadlocked");
    assert_eq!(c.recorder.calls.load(Ordering::Acquire), 24);
    assert_eq!(c.state.buffer_bytes(), 0);
    assert!(
        !c.state.is_set(IngestStateError::PersistSaturated),
        "saturation must clear once the queue drains"
    );
    assert_eq!(c.persist.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_persist_stay_visible_and_persist_next_time() {
    let c = ctx(1, 4);
    write(&c, "cpu,host=a v=1 1\n".into()).await;
    let p = c.buffer.partitions().remove(0);
    let rx = c.persist.enqueue(Arc::clone(&p)).await.expect("job");
    // Written while the first batch persists: in the fresh buffer.
    write(&c, "cpu,host=b v=2 2\n".into()).await;
    rx.await.unwrap();
    assert_eq!(p.snapshot().rows, 1);
    c.persist.persist_and_wait(Arc::clone(&p)).await;
    assert_eq!(p.snapshot().rows, 0);
    assert_eq!(p.snapshot().persisted_batches, 2);
    let ns = c.catalog.get_namespace("ns").await.unwrap().unwrap();
    let t = c.catalog.get_table(ns, "cpu").await.unwrap().unwrap();
    let files = c.catalog.list_parquet_files(t.id).await.unwrap();
    assert_eq!(files.iter().map(|f| f.row_count).sum::<u64>(), 2);
    assert_eq!(
        files.iter().map(|f| f.batch_number).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

/// One-line writes with the merge thread running and persists taking the
/// buffer at random moments: the buffer ends up merged, its memory account
/// matches what it holds, and every row is persisted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_merge_thread_leaves_the_merge_to_writes() {
    let c = ctx(1, 4);
    // No merge thread here; a merge marked queued that never runs is a
    // merge thread that gets no CPU.
    write(&c, "cpu,host=h v=0 0\n".to_string()).await;
    let p = c.buffer.partitions().remove(0);
    p.merge_pending
        .store(true, std::sync::atomic::Ordering::Release);
    let n = 2000u64;
    let mut most = 0;
    for i in 1..n {
        write(&c, format!("cpu,host=h{} v={i} {i}\n", i % 7)).await;
        most = most.max(p.snapshot().batches.len());
    }
    // Merged by the writes themselves once 128 small batches trailed.
    assert!(most <= 2 * 128, "{most} batches at most");
    assert!(
        most >= 128,
        "writes merged before the merge was overdue: {most}"
    );
    let snap = p.snapshot();
    assert_eq!(snap.rows as u64, n);
    assert!(
        snap.batches.len() < 128 + 32,
        "{} batches",
        snap.batches.len()
    );
    assert_eq!(c.state.buffer_bytes(), p.stats().buffered_bytes as u64);
    c.persist.persist_and_wait(Arc::clone(&p)).await;
    let ns = c.catalog.get_namespace("ns").await.unwrap().unwrap();
    let t = c.catalog.get_table(ns, "cpu").await.unwrap().unwrap();
    let files = c.catalog.list_parquet_files(t.id).await.unwrap();
    assert_eq!(files.iter().map(|f| f.row_count).sum::<u64>(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_off_the_write_path_race_persists_without_loss() {
    let c = ctx(1, 4);
    c.buffer.start_merger().unwrap();
    let n = 3000u64;
    for i in 0..n {
        write(&c, format!("cpu,host=h{} v={i} {i}\n", i % 7)).await;
        if i % 977 == 500 {
            let p = c.buffer.partitions().remove(0);
            c.persist.persist_and_wait(p).await;
        }
    }
    let p = c.buffer.partitions().remove(0);
    // The merger catches up: few batches left, the account exact.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats = p.stats();
        let batches = p.snapshot().batches.len();
        if batches < 2 + 32 + 32 && c.state.buffer_bytes() == stats.buffered_bytes as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{batches} batches, account {} for {} buffered bytes",
            c.state.buffer_bytes(),
            stats.buffered_bytes
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        p.snapshot().batches.len() < p.snapshot().rows / 8,
        "merged: {} batches for {} rows",
        p.snapshot().batches.len(),
        p.snapshot().rows
    );
    c.persist.persist_and_wait(Arc::clone(&p)).await;
    assert_eq!(c.state.buffer_bytes(), 0);
    let ns = c.catalog.get_namespace("ns").await.unwrap().unwrap();
    let t = c.catalog.get_table(ns, "cpu").await.unwrap().unwrap();
    let files = c.catalog.list_parquet_files(t.id).await.unwrap();
    assert_eq!(files.iter().map(|f| f.row_count).sum::<u64>(), n);
    let mut seqs = c.recorder.seqs.lock().clone();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len() as u64, n, "every write persisted once");
}

/// A job starts on the lowered pool while the buffer holds less than the
/// threshold, and at full priority once it holds more; both persist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_lowered_only_while_the_buffer_has_room() {
    let c = ctx_with(1, 4, Some(64 << 10));
    write(&c, "cpu,host=a v=1 10\n".into()).await;
    assert!(c.state.buffer_bytes() < 64 << 10);
    let part = Arc::clone(&c.buffer.partitions()[0]);
    c.persist.persist_and_wait(Arc::clone(&part)).await;
    assert_eq!(counter(&c, "sluice_persist_lowered_jobs_total"), 1);

    let body: String = (0..10_000)
        .map(|i| format!("cpu,host=h{} v={i},w={i}i,x=\"s{i}\" {}\n", i % 100, 20 + i))
        .collect();
    write(&c, body).await;
    assert!(
        c.state.buffer_bytes() >= 64 << 10,
        "{}",
        c.state.buffer_bytes()
    );
    c.persist.persist_and_wait(part).await;
    assert_eq!(counter(&c, "sluice_persist_lowered_jobs_total"), 1);
    assert_eq!(counter(&c, "sluice_persist_files_total"), 2);
    assert_eq!(c.state.buffer_bytes(), 0);
    let ns = c.catalog.get_namespace("ns").await.unwrap().unwrap();
    let t = c.catalog.get_table(ns, "cpu").await.unwrap().unwrap();
    let rows: u64 = c
        .catalog
        .list_parquet_files(t.id)
        .await
        .unwrap()
        .iter()
        .map(|f| f.row_count)
        .sum();
    assert_eq!(rows, 10_001);
}
