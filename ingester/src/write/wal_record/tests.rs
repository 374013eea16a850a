//! The columnar WAL record: round trip, replay against the catalog, and
//! decoding of damaged bytes.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::catalog::{Catalog, MemCatalog, SchemaCache};
use crate::dml_sink::mock::MockDmlSink;
use crate::ingest_state::IngestState;
use crate::timestamp_oracle::TimestampOracle;
use crate::write::replay::{ReplayError, ReplayState};
use crate::write::{Payload, Precision, WriteHandler, WriteRequest};
use arrow::array::ArrayRef;

/// Every column type, nulls, non-ASCII strings, two tables, two days.
const BODY: &str = "cpu,host=a,region=eu usage=0.5,count=3i 10\n\
    cpu,host=b usage=1,big=7u,ok=t,msg=\"h\u{e9} \\\"x\\\"\" 86400000000005\n\
    cpu,host=a usage=2,ok=f\n\
    mem,host=a free=1i 20\n";

struct Ctx {
    handler: WriteHandler<Arc<MockDmlSink>>,
    sink: Arc<MockDmlSink>,
}

/// A handler over `catalog` with a cold cache (a freshly started pod).
fn ctx(catalog: &Arc<dyn Catalog>) -> Ctx {
    let state = Arc::new(IngestState::new(1 << 30));
    state.unset(crate::ingest_state::IngestStateError::Starting);
    let sink = Arc::new(MockDmlSink::default());
    let handler = WriteHandler::new(
        Arc::new(SchemaCache::new(Arc::clone(catalog))),
        Arc::new(TimestampOracle::new(0)),
        state,
        Arc::clone(&sink),
        1 << 20,
        None,
    )
    .unwrap();
    Ctx { handler, sink }
}

fn lp(ns: &str, body: &str) -> WriteRequest {
    WriteRequest {
        namespace: ns.into(),
        payload: Payload::LineProtocol {
            body: Bytes::copy_from_slice(body.as_bytes()),
            precision: Precision::Nanoseconds,
            default_time: 42,
        },
    }
}

/// Writes `body` through a live handler over `catalog`; returns the op the
/// sink received (its `wal_payload` is what the WAL appends).
async fn write(catalog: &Arc<dyn Catalog>, ns: &str, body: &str) -> DmlOperation {
    let c = ctx(catalog);
    c.handler.write(lp(ns, body)).await.unwrap();
    c.sink.calls.lock().pop().unwrap()
}

fn mem() -> Arc<dyn Catalog> {
    Arc::new(MemCatalog::new())
}

#[tokio::test]
async fn roundtrip_keeps_names_types_nulls_and_values() {
    let op = write(&mem(), "ns", BODY).await;
    assert_eq!(op.wal_payload[0], COLUMNAR_VERSION);
    let rec = decode(&op.wal_payload).unwrap();
    assert_eq!(rec.namespace, "ns");
    let names: Vec<_> = rec.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["cpu", "mem"]);
    for (t, orig) in rec.tables.iter().zip(&op.tables) {
        let keys: Vec<_> = t.partitions.iter().map(|p| p.key.as_str()).collect();
        let orig_keys: Vec<_> = orig.partitions.iter().map(|p| &*p.key).collect();
        assert_eq!(keys, orig_keys);
        for (p, o) in t.partitions.iter().zip(&orig.partitions) {
            assert_eq!(p.batch, o.batch, "table {} partition {}", t.name, p.key);
            for (name, ty) in p.columns() {
                if name != "time" {
                    assert_eq!(orig.table.column_type(name), Some(ty), "{name}");
                }
            }
        }
    }
    assert_eq!(rec.tables[0].partitions.len(), 2, "two days of cpu");
}

#[tokio::test]
async fn sliced_columns_are_encoded_from_their_offset() {
    let mut op = write(&mem(), "ns", BODY).await;
    let p = &mut op.tables[0].partitions[0];
    assert_eq!(p.batch.num_rows(), 2);
    p.batch = p.batch.slice(1, 1);
    let sliced = p.batch.clone();
    let rec = decode(&encode(&op).unwrap()).unwrap();
    assert_eq!(rec.tables[0].partitions[0].batch, sliced);
}

#[tokio::test]
async fn a_one_line_record_is_small() {
    let line = "cpu,hostname=host_1,region=eu-west-1,datacenter=eu-west-1a,rack=17,os=Ubuntu16.04LTS,arch=x64,team=NYC,service=4,service_version=1,service_environment=test usage_user=58.1,usage_system=2.2,usage_idle=24.9,usage_nice=61.2,usage_iowait=22.5,usage_irq=63.9,usage_softirq=6.3,usage_steal=44.7,usage_guest=80.1,usage_guest_nice=38.3 1767225600000000000\n";
    let op = write(&mem(), "ns", line).await;
    let n = op.wal_payload.len();
    assert!(
        n < 2 * line.len(),
        "{n} bytes for a {}-byte line",
        line.len()
    );
}

#[tokio::test]
async fn replay_applies_the_columns_with_the_original_sequence_number() {
    let catalog = mem();
    let op = write(&catalog, "ns", BODY).await;
    let pod = ctx(&catalog);
    let rows = pod
        .handler
        .replay(77, op.wal_payload.clone())
        .await
        .unwrap();
    assert_eq!(rows, op.rows);
    let replayed = pod.sink.calls.lock().pop().unwrap();
    assert_eq!(replayed.sequence_number, 77);
    assert_eq!(replayed.namespace_id, op.namespace_id);
    assert_eq!(&*replayed.namespace, "ns");
    assert_eq!(replayed.rows, op.rows);
    assert!(replayed.wal_payload.is_empty());
    assert_eq!(replayed.tables.len(), op.tables.len());
    for (r, o) in replayed.tables.iter().zip(&op.tables) {
        assert_eq!(r.table.id, o.table.id);
        assert_eq!(r.partitions.len(), o.partitions.len());
        for (rp, op) in r.partitions.iter().zip(&o.partitions) {
            assert_eq!((rp.id, &rp.key), (op.id, &op.key));
            assert_eq!(rp.batch, op.batch);
        }
    }
    // The oracle moved past the replayed sequence number.
    let s = pod.handler.write(lp("ns", "cpu usage=1 1")).await.unwrap();
    assert_eq!(s.sequence_number, 78);
}

#[tokio::test]
async fn replay_refuses_what_the_catalog_does_not_know() {
    let catalog = mem();
    write(&catalog, "ns", "cpu,host=a v=1 1").await;
    let pod = ctx(&catalog);
    let err = |e: ReplayError| e.to_string();

    // A namespace the catalog lacks.
    let other = write(&mem(), "elsewhere", "cpu v=1 1").await;
    let e = err(pod.handler.replay(5, other.wal_payload).await.unwrap_err());
    assert!(e.contains("namespace `elsewhere`"), "{e}");

    // A table the catalog lacks.
    let other = write(&mem(), "ns", "disk v=1 1").await;
    let e = err(pod.handler.replay(5, other.wal_payload).await.unwrap_err());
    assert!(e.contains("table `disk`"), "{e}");

    // A column the catalog lacks.
    let other = write(&mem(), "ns", "cpu,host=a v=1,w=2 1").await;
    let e = err(pod.handler.replay(5, other.wal_payload).await.unwrap_err());
    assert!(e.contains("column `w` is not in the catalog"), "{e}");

    // A column of another type.
    let other = write(&mem(), "ns", "cpu,host=a v=1i 1").await;
    let e = err(pod.handler.replay(5, other.wal_payload).await.unwrap_err());
    assert!(
        e.contains("column `v` has type i64 in the WAL but f64 in the catalog"),
        "{e}"
    );
    assert!(pod.sink.calls.lock().is_empty(), "nothing applied");
}

#[tokio::test]
async fn replay_sees_columns_added_by_another_pod() {
    let catalog = mem();
    write(&catalog, "ns", "cpu v=1 1").await;
    let pod = ctx(&catalog);
    // Warm the pod's cache with the old schema.
    pod.handler.write(lp("ns", "cpu v=2 2")).await.unwrap();
    let newer = write(&catalog, "ns", "cpu v=3,w=4 3").await;
    assert_eq!(pod.handler.replay(9, newer.wal_payload).await.unwrap(), 1);
}

/// The only batch of a decoded record.
fn only_batch(rec: &WalRecord) -> &RecordBatch {
    assert_eq!(rec.tables.len(), 1);
    assert_eq!(rec.tables[0].partitions.len(), 1);
    &rec.tables[0].partitions[0].batch
}

/// Records of the same columns share one schema through a decoder; other
/// columns get their own, and a record naming a column twice is refused
/// however many good records came before it.
#[tokio::test]
async fn a_decoder_shares_one_schema_between_records_of_the_same_columns() {
    let catalog = mem();
    let a = write(&catalog, "ns", "cpu,host=a v=1,w=2 1").await;
    let b = write(&catalog, "ns", "cpu,host=b v=3,w=4 2").await;
    let c = write(&catalog, "ns", "cpu,host=c v=5 3").await;
    let mut d = Decoder::default();
    let (ra, rb, rc) = (
        d.decode(&a.wal_payload).unwrap(),
        d.decode(&b.wal_payload).unwrap(),
        d.decode(&c.wal_payload).unwrap(),
    );
    assert!(Arc::ptr_eq(
        only_batch(&ra).schema_ref(),
        only_batch(&rb).schema_ref()
    ));
    assert!(!Arc::ptr_eq(
        only_batch(&ra).schema_ref(),
        only_batch(&rc).schema_ref()
    ));
    // The values are each record's own.
    assert_eq!(only_batch(&rb), &b.tables[0].partitions[0].batch);
    assert_eq!(only_batch(&rc), &c.tables[0].partitions[0].batch);
    assert_eq!(
        d.decode(&a.wal_payload).unwrap().tables[0].partitions[0].key,
        "1970-01-01"
    );

    // `w` renamed `v` (same length) in a's bytes: a column named twice.
    let mut twice = a.wal_payload.to_vec();
    let at = twice
        .windows(5)
        .position(|x| x == b"\x01\x00\x00\x00w")
        .expect("the name `w` in the record");
    twice[at + 4] = b'v';
    let e = d.decode(&twice).unwrap_err().to_string();
    assert!(e.contains("column `v` appears twice"), "{e}");
}

/// One replay state across records, as start-up replays them: every record
/// is applied, and a record that does not fit the catalog is still refused
/// after records that did.
#[tokio::test]
async fn a_replay_state_still_refuses_a_record_that_does_not_fit() {
    let catalog = mem();
    let ops = [
        write(&catalog, "ns", "cpu,host=a v=1 1").await,
        write(&catalog, "ns", "cpu,host=b v=2 2").await,
    ];
    let pod = ctx(&catalog);
    let mut state = ReplayState::default();
    for (i, op) in ops.iter().enumerate() {
        let n = pod
            .handler
            .replay_with(&mut state, 10 + i as u64, op.wal_payload.clone())
            .await
            .unwrap();
        assert_eq!(n, 0, "small records wait in the run");
    }
    assert_eq!(pod.handler.finish_run(&mut state).await.unwrap(), 2);
    {
        let applied = pod.sink.calls.lock();
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].replayed_runs, [(10, 1), (11, 1)]);
        let p = &applied[0].tables[0].partitions[0];
        assert_eq!(
            plain(&p.batch.slice(0, 1)),
            plain(&ops[0].tables[0].partitions[0].batch)
        );
        assert_eq!(
            plain(&p.batch.slice(1, 1)),
            plain(&ops[1].tables[0].partitions[0].batch)
        );
    }
    // Same columns, another type for `v`: refused when its run is applied,
    // naming the run.
    let other = write(&mem(), "ns", "cpu,host=a v=1i 3").await;
    let n = pod
        .handler
        .replay_with(&mut state, 12, other.wal_payload)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let e = pod
        .handler
        .finish_run(&mut state)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("column `v` has type i64 in the WAL but f64"),
        "{e}"
    );
    assert!(
        e.contains("WAL records 12 to 12 (replayed as a run of 1)"),
        "{e}"
    );
    assert_eq!(pod.sink.calls.lock().len(), 1, "nothing more applied");
}

/// `batch` with every dictionary column cast to strings, so batches whose
/// dictionaries differ only in key order compare equal.
fn plain(batch: &RecordBatch) -> Vec<ArrayRef> {
    batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Dictionary(_, _) => arrow::compute::cast(c, &DataType::Utf8).unwrap(),
            _ => Arc::clone(c),
        })
        .collect()
}

/// Small records of one partition, each of one or two lines (so columns a
/// line lacks are null), with every column type.
const RUN_LINES: [&str; 4] = [
    "cpu,host=a,region=eu usage=0.5,count=3i,big=7u,ok=t,msg=\"h\u{e9}\" 10",
    "cpu,host=b,region=eu usage=1.5,count=4i,big=8u,ok=f,msg=\"\" 11\n\
     cpu,host=a usage=2.5,count=5i,big=9u,ok=t 12",
    "cpu,host=c,region=us usage=3.5,count=6i,big=10u,ok=t,msg=\"x\" 13",
    "cpu,region=us usage=4.5,count=7i,big=11u,ok=f,msg=\"yz\" 14",
];

async fn run_records(catalog: &Arc<dyn Catalog>) -> Vec<DmlOperation> {
    let mut ops = Vec::new();
    for body in RUN_LINES {
        ops.push(write(catalog, "ns", body).await);
    }
    ops
}

/// A run of small records decodes as the records' batches one after
/// another: the same values, nulls, strings and tags, in order.
#[tokio::test]
async fn a_run_decodes_as_its_records_one_after_another() {
    let ops = run_records(&mem()).await;
    let payloads: Vec<&[u8]> = ops.iter().map(|o| &o.wal_payload[..]).collect();
    let headers: Vec<_> = payloads.iter().map(|p| peek_small(p).unwrap()).collect();
    assert!(
        headers
            .iter()
            .all(|h| (h.namespace, h.table) == ("ns", "cpu"))
    );
    assert_eq!(
        headers.iter().map(|h| h.body.rows).collect::<Vec<_>>(),
        [1, 2, 1, 1]
    );
    // The records do not all have the same columns (no `msg` in the second
    // line of the second, nulls elsewhere): each is decoded alone first.
    let mut d = Decoder::default();
    let alone: Vec<RecordBatch> = payloads
        .iter()
        .map(|p| only_batch(&d.decode(p).unwrap()).clone())
        .collect();
    let same: Vec<usize> = (0..alone.len())
        .filter(|&i| alone[i].schema_ref() == alone[0].schema_ref())
        .collect();
    assert!(same.len() >= 2, "a run needs records of the same columns");
    let records: Vec<_> = same
        .iter()
        .map(|&i| (payloads[i], headers[i].body))
        .collect();
    let run = d.decode_run(&records).unwrap().expect("same columns");
    let parts: Vec<RecordBatch> = same.iter().map(|&i| alone[i].clone()).collect();
    let expected = arrow::compute::concat_batches(parts[0].schema_ref(), &parts).unwrap();
    assert_eq!(run.schema_ref(), expected.schema_ref());
    assert_eq!(plain(&run), plain(&expected));
    assert_eq!(
        run.columns()
            .iter()
            .map(|c| c.null_count())
            .collect::<Vec<_>>(),
        expected
            .columns()
            .iter()
            .map(|c| c.null_count())
            .collect::<Vec<_>>()
    );
}

/// Records whose columns differ are not a run; large or multi-partition
/// records are never offered as one.
#[tokio::test]
async fn records_of_other_columns_are_not_a_run() {
    let catalog = mem();
    let a = write(&catalog, "ns", "cpu,host=a v=1 1").await;
    let b = write(&catalog, "ns", "cpu,host=a v=1,w=2 2").await;
    let c = write(&catalog, "ns", "cpu,host=a w=2 3").await;
    let (pa, pb, pc) = (&a.wal_payload[..], &b.wal_payload[..], &c.wal_payload[..]);
    let (ha, hb, hc) = (
        peek_small(pa).unwrap(),
        peek_small(pb).unwrap(),
        peek_small(pc).unwrap(),
    );
    let mut d = Decoder::default();
    assert!(
        d.decode_run(&[(pa, ha.body), (pb, hb.body)])
            .unwrap()
            .is_none()
    );
    assert!(
        d.decode_run(&[(pa, ha.body), (pc, hc.body)])
            .unwrap()
            .is_none()
    );
    // Two partitions (days), or more rows than a run takes: not small.
    let two_days = write(&catalog, "ns", "cpu v=1 1\ncpu v=2 86400000000001").await;
    assert!(peek_small(&two_days.wal_payload).is_none());
    let many: String = (0..=run::RUN_RECORD_ROWS)
        .map(|i| format!("cpu v={i} {i}\n"))
        .collect();
    assert!(peek_small(&write(&catalog, "ns", &many).await.wal_payload).is_none());
}

/// Replay collects small records of one partition into one batch that
/// carries each record's sequence number; a record of another partition
/// ends the run, and the end of the replay applies what is left.
#[tokio::test]
async fn replay_applies_a_run_as_one_batch_with_every_sequence_number() {
    let catalog = mem();
    let ops = [
        write(&catalog, "ns", "cpu,host=a v=1 1").await,
        write(&catalog, "ns", "cpu,host=b v=2 2").await,
        write(&catalog, "ns", "cpu,host=a v=3 3").await,
        write(&catalog, "ns", "cpu,host=c v=4 86400000000004").await,
        write(&catalog, "ns", "cpu,host=d v=5 86400000000005").await,
    ];
    let pod = ctx(&catalog);
    let mut state = ReplayState::default();
    let mut rows = 0;
    for (i, op) in ops.iter().enumerate() {
        rows += pod
            .handler
            .replay_with(&mut state, 20 + i as u64, op.wal_payload.clone())
            .await
            .unwrap();
    }
    assert_eq!(rows, 3, "the first day's run, ended by the second day's");
    rows += pod.handler.finish_run(&mut state).await.unwrap();
    assert_eq!(rows, 5);
    {
        let applied = pod.sink.calls.lock();
        assert_eq!(applied.len(), 2);
        assert_eq!(applied[0].replayed_runs, [(20, 1), (21, 1), (22, 1)]);
        assert_eq!(applied[0].sequence_number, 22);
        assert_eq!(applied[1].replayed_runs, [(23, 1), (24, 1)]);
        for (op, range) in applied.iter().zip([0..3, 3..5]) {
            let p = &op.tables[0].partitions[0];
            let parts: Vec<_> = ops[range.clone()]
                .iter()
                .map(|o| o.tables[0].partitions[0].batch.clone())
                .collect();
            let expected = arrow::compute::concat_batches(parts[0].schema_ref(), &parts).unwrap();
            assert_eq!(plain(&p.batch), plain(&expected));
            assert_eq!(p.key, ops[range.start].tables[0].partitions[0].key);
            assert_eq!(op.rows, p.batch.num_rows());
        }
    }
    // The oracle moved past the run's last sequence number.
    let s = pod.handler.write(lp("ns", "cpu v=6 6")).await.unwrap();
    assert_eq!(s.sequence_number, 25);
}

#[test]
fn unknown_versions_are_named() {
    let e = decode(&[9, 0, 0]).unwrap_err().to_string();
    assert!(e.contains("unknown record format version 9"), "{e}");
}

/// A valid record of `BODY`, built once.
fn sample() -> &'static Bytes {
    static SAMPLE: OnceLock<Bytes> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { write(&mem(), "ns", BODY).await.wal_payload })
    })
}

/// Four one-line records of the same columns, built once.
fn run_payloads() -> &'static Vec<Bytes> {
    static RUN: OnceLock<Vec<Bytes>> = OnceLock::new();
    RUN.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let catalog = mem();
                let mut v = Vec::new();
                for i in 0..4 {
                    let line = format!("cpu,host=h{i},region=eu usage={i}.5,ok=t,msg=\"m{i}\" {i}");
                    v.push(write(&catalog, "ns", &line).await.wal_payload);
                }
                v
            })
    })
}

/// Touches every value, so a decoded batch that lied about its contents
/// would panic here.
fn read_all(rec: &WalRecord) {
    for t in &rec.tables {
        for p in &t.partitions {
            for c in p.batch.columns() {
                if let Ok(f) =
                    arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                {
                    for i in 0..c.len() {
                        let _ = f.value(i).to_string();
                    }
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(
        mut data in proptest::collection::vec(any::<u8>(), 0..400),
        columnar in any::<bool>(),
    ) {
        if columnar && !data.is_empty() {
            data[0] = COLUMNAR_VERSION;
        }
        if let Ok(rec) = decode(&data) {
            read_all(&rec);
        }
    }

    #[test]
    fn every_truncation_is_an_error(cut in 0usize..10_000) {
        let rec = sample();
        let cut = cut % rec.len();
        prop_assert!(decode(&rec[..cut]).is_err());
    }

    /// A run with one damaged record decodes or fails, never panics.
    #[test]
    fn damaged_runs_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let payloads = run_payloads();
        let mut damaged: Vec<Vec<u8>> = payloads.iter().map(|p| p.to_vec()).collect();
        for (at, byte) in edits {
            let i = at.index(damaged[which].len());
            damaged[which][i] = byte;
        }
        let headers: Option<Vec<_>> = damaged.iter().map(|p| peek_small(p)).collect();
        if let Some(headers) = headers {
            let records: Vec<_> = damaged
                .iter()
                .map(|p| &p[..])
                .zip(headers.iter().map(|h| h.body))
                .collect();
            if let Ok(Some(batch)) = Decoder::default().decode_run(&records) {
                read_all(&WalRecord {
                    namespace: String::new(),
                    tables: vec![RecordTable {
                        name: String::new(),
                        partitions: vec![RecordPartition { key: String::new(), batch }],
                    }],
                });
            }
        }
    }

    #[test]
    fn damaged_records_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut data = sample().to_vec();
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        if let Ok(rec) = decode(&data) {
            read_all(&rec);
        }
    }
}
