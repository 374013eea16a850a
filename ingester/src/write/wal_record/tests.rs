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
        assert_eq!(n, 1);
    }
    {
        let applied = pod.sink.calls.lock();
        assert_eq!(applied.len(), 2);
        for (i, (r, o)) in applied.iter().zip(&ops).enumerate() {
            assert_eq!(r.sequence_number, 10 + i as u64);
            assert_eq!(
                r.tables[0].partitions[0].batch,
                o.tables[0].partitions[0].batch
            );
        }
    }
    // Same columns, another type for `v`.
    let other = write(&mem(), "ns", "cpu,host=a v=1i 3").await;
    let e = pod
        .handler
        .replay_with(&mut state, 12, other.wal_payload)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("column `v` has type i64 in the WAL but f64"),
        "{e}"
    );
    assert_eq!(pod.sink.calls.lock().len(), 2, "nothing more applied");
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
