//! One million rows in over gRPC (8 concurrent clients) and HTTP (one
//! request gzipped), every value read back over Flight and compared with
//! the generator; a projection + time-range query returns exactly its
//! subset; partition metadata names the UTC day and the ingester.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_e2e::data::{self, BASE_TIME};
use sluice_e2e::{Ingester, gzip, within};
use sluice_proto::v1;

const NS: &str = "roundtrip";
const TABLE: &str = "cpu";
const GRPC_WRITERS: u32 = 8;
const ROWS_PER_GRPC_WRITER: u64 = 125_000;
const BATCH: u64 = 5_000;
/// The HTTP writer's id in the generator.
const HTTP_WRITER: u32 = GRPC_WRITERS;
const HTTP_ROWS: u64 = 20_000;
const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn million_rows_round_trip_value_for_value() {
    within(Duration::from_secs(240), "roundtrip test", run()).await;
}

async fn run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Nothing is persisted during the test: every row stays buffered, so a
    // buffer query (include_persisted = false) must return each row once.
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--ingester-id")
        .arg("e2e-roundtrip")
        .arg("--hot-partition-rows")
        .arg("100000000")
        .arg("--hot-partition-bytes")
        .arg("8000000000");
    ing.start().await.expect("start ingester");

    // ---- write ----
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..GRPC_WRITERS {
        let mut client = ing.write_client().await.expect("write client");
        tasks.push(tokio::spawn(async move {
            let mut rows = 0u64;
            let mut i = 0;
            while i < ROWS_PER_GRPC_WRITER {
                let end = (i + BATCH).min(ROWS_PER_GRPC_WRITER);
                let lp = data::lines(TABLE, w, i..end);
                let r = within(
                    Duration::from_secs(60),
                    "one gRPC write",
                    sluice_e2e::write_lp(&mut client, NS, lp.as_bytes()),
                )
                .await
                .unwrap_or_else(|s| panic!("writer {w}, rows {i}..{end}: {s}"));
                assert_eq!(r.rows, end - i, "rows acknowledged by one write");
                assert_eq!(r.tables, 1);
                rows += r.rows;
                i = end;
            }
            rows
        }));
    }
    // HTTP: four requests of 5,000 lines, the second one gzipped.
    let http_rows = {
        let mut rows = 0;
        for (n, start) in (0..HTTP_ROWS).step_by(BATCH as usize).enumerate() {
            let end = (start + BATCH).min(HTTP_ROWS);
            let lp = data::lines(TABLE, HTTP_WRITER, start..end).into_bytes();
            let gz = n == 1;
            let body = if gz { gzip(&lp) } else { lp };
            let (status, text) = ing
                .http_write(NS, body, gz)
                .await
                .expect("HTTP write request");
            assert_eq!(status, 204, "HTTP write {n} (gzip {gz}): {text}");
            rows += end - start;
        }
        rows
    };
    let mut written = http_rows;
    for t in tasks {
        written += t.await.expect("writer task");
    }
    let write_secs = started.elapsed().as_secs_f64();
    let total = u64::from(GRPC_WRITERS) * ROWS_PER_GRPC_WRITER + HTTP_ROWS;
    assert_eq!(written, total);
    eprintln!(
        "roundtrip: wrote {total} rows in {write_secs:.2}s = {:.0} rows/s",
        total as f64 / write_secs
    );

    // ---- read everything back ----
    let started = Instant::now();
    let result = ing.query_table(NS, TABLE).await.expect("query all rows");
    let query_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "roundtrip: queried {} rows in {query_secs:.2}s = {:.0} rows/s",
        result.rows(),
        result.rows() as f64 / query_secs
    );
    assert_eq!(result.rows() as u64, total, "rows returned by the buffer");

    // Columns sorted by name, with the documented types.
    let names: Vec<String> = result.batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["count", "host", "ok", "region", "time", "usage"]);

    let started = Instant::now();
    let rows = data::decode_rows(&result.batches);
    let mut seen: Vec<Vec<bool>> = (0..=HTTP_WRITER)
        .map(|w| {
            let n = if w == HTTP_WRITER {
                HTTP_ROWS
            } else {
                ROWS_PER_GRPC_WRITER
            };
            vec![false; n as usize]
        })
        .collect();
    for r in &rows {
        let (w, i) = data::key_of_time(r.time);
        let slot = seen
            .get_mut(w as usize)
            .and_then(|s| s.get_mut(i as usize))
            .unwrap_or_else(|| panic!("row with unexpected time {}: {r:?}", r.time));
        assert!(!*slot, "row ({w}, {i}) returned twice");
        *slot = true;
        let expected = data::row(w, i);
        // Exact comparison, floats included: `{:?}` in line protocol is a
        // round-trip representation.
        assert_eq!(r, &expected, "row ({w}, {i})");
    }
    assert!(seen.iter().flatten().all(|s| *s), "every row was returned");
    eprintln!(
        "roundtrip: compared {} rows value for value in {:.2}s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    drop(rows);

    // Partition metadata: one partition (all rows are on 2026-01-01).
    assert_eq!(result.partitions.len(), 1, "{:?}", result.partitions);
    let p = &result.partitions[0];
    assert_eq!(p.partition_key, "2026-01-01");
    assert_eq!(p.ingester_id, "e2e-roundtrip");
    assert_eq!(p.rows, total, "rows in the partition's metadata");
    assert!(!p.persisted);
    assert!(p.partition_id > 0, "{p:?}");

    // ---- projection + time range ----
    // Rows 1000..2000 of every writer: time = BASE + i*1000 + w.
    let (start, end) = (BASE_TIME + 1_000 * 1_000, BASE_TIME + 2_000 * 1_000);
    let sub = ing
        .query(v1::QueryRequest {
            namespace: NS.into(),
            table: TABLE.into(),
            columns: vec!["usage".into(), "time".into(), "host".into()],
            range: Some(v1::TimeRange { start, end }),
            include_persisted: false,
        })
        .await
        .expect("projected range query");
    for b in &sub.batches {
        let names: Vec<&str> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["host", "time", "usage"], "projected columns");
    }
    let mut got: Vec<(i64, String, f64)> = data::decode_rows(&sub.batches)
        .into_iter()
        .map(|r| (r.time, r.host, r.usage))
        .collect();
    got.sort_by_key(|g| g.0);
    let mut want: Vec<(i64, String, f64)> = (0..=HTTP_WRITER)
        .flat_map(|w| (1_000..2_000).map(move |i| data::row(w, i)))
        .map(|r| (r.time, r.host, r.usage))
        .collect();
    want.sort_by_key(|g| g.0);
    assert_eq!(got.len(), want.len(), "rows in range");
    assert_eq!(got, want, "projected rows in range");
    // Range boundaries: start inclusive, end exclusive.
    let edge = ing
        .query(v1::QueryRequest {
            namespace: NS.into(),
            table: TABLE.into(),
            columns: vec!["time".into()],
            range: Some(v1::TimeRange {
                start: BASE_TIME + 1_000,
                end: BASE_TIME + 1_000 + 3,
            }),
            include_persisted: false,
        })
        .await
        .expect("boundary query");
    let mut t: Vec<i64> = edge
        .batches
        .iter()
        .flat_map(|b| data::times(b).to_vec())
        .collect();
    t.sort_unstable();
    assert_eq!(
        t,
        [BASE_TIME + 1_000, BASE_TIME + 1_001, BASE_TIME + 1_002],
        "[start, end) of row 1 of writers 0..3"
    );

    // ---- partitioning by UTC day ----
    // Three days, the first row at midnight exactly, one just before the
    // next midnight.
    let day0 = BASE_TIME;
    let times = [
        day0,
        day0 + NANOS_PER_DAY - 1,
        day0 + NANOS_PER_DAY,
        day0 + 2 * NANOS_PER_DAY + 5,
        day0 + 2 * NANOS_PER_DAY + 6,
    ];
    let lp: String = times
        .iter()
        .enumerate()
        .map(|(i, t)| format!("days,k=v{i} n={i}i {t}\n"))
        .collect();
    ing.write_lp(NS, &lp).await.expect("write across days");
    let days = ing.query_table(NS, "days").await.expect("query days");
    let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
    for p in &days.partitions {
        assert_eq!(p.ingester_id, "e2e-roundtrip");
        *per_key.entry(p.partition_key.clone()).or_default() += p.rows;
    }
    assert_eq!(
        per_key,
        BTreeMap::from([
            ("2026-01-01".to_string(), 2),
            ("2026-01-02".to_string(), 1),
            ("2026-01-03".to_string(), 2),
        ]),
        "rows per partition key"
    );
    assert_eq!(days.rows(), 5);

    // ---- the same rows again, after persisting, deduplicated view ----
    let started = Instant::now();
    ing.persist_all(true).await.expect("persist everything");
    let persist_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let persisted = ing
        .query(v1::QueryRequest {
            namespace: NS.into(),
            table: TABLE.into(),
            include_persisted: true,
            ..Default::default()
        })
        .await
        .expect("query with persisted data");
    eprintln!(
        "roundtrip: persisted in {persist_secs:.2}s; queried {} rows incl. Parquet in {:.2}s",
        persisted.rows(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(persisted.rows() as u64, total, "rows after persisting");
    let mut rows = data::decode_rows(&persisted.batches);
    rows.sort_by_key(|r| r.time);
    let mut prev = None;
    for r in &rows {
        assert_ne!(prev, Some(r.time), "a row returned twice after persisting");
        prev = Some(r.time);
        let (w, i) = data::key_of_time(r.time);
        assert_eq!(r, &data::row(w, i), "row ({w}, {i}) after persisting");
    }
    for p in &persisted.partitions {
        assert_eq!(p.partition_key, "2026-01-01");
        assert_eq!(p.ingester_id, "e2e-roundtrip");
    }

    ing.stop().await.expect("stop");
    ing.assert_no_panic();
}
