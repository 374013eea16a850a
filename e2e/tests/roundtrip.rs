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
        .query_table_with_persisted(NS, TABLE)
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

/// One cell of a query result, for comparisons (floats by bit pattern).
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    I(i64),
    U(u64),
    F(u64),
    B(bool),
    S(String),
    T(i64),
}

fn f(x: f64) -> Val {
    Val::F(x.to_bits())
}

fn s(x: &str) -> Val {
    Val::S(x.to_string())
}

/// Every row of a result as `column → value`, ordered by (time, then the
/// rendering of the row) so that tests can compare without caring about
/// row order.
fn cells(r: &sluice_e2e::QueryResult) -> Vec<BTreeMap<String, Val>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
    let mut rows = Vec::new();
    for b in &r.batches {
        let schema = b.schema();
        for i in 0..b.num_rows() {
            let mut row = BTreeMap::new();
            for (field, col) in schema.fields().iter().zip(b.columns()) {
                let v = if col.is_null(i) {
                    Val::Null
                } else {
                    match field.data_type() {
                        DataType::Int64 => Val::I(col.as_primitive::<Int64Type>().value(i)),
                        DataType::UInt64 => Val::U(col.as_primitive::<UInt64Type>().value(i)),
                        DataType::Float64 => f(col.as_primitive::<Float64Type>().value(i)),
                        DataType::Boolean => Val::B(col.as_boolean().value(i)),
                        DataType::Utf8 => Val::S(col.as_string::<i32>().value(i).to_string()),
                        DataType::Dictionary(..) => Val::S(
                            data::strings(&b.slice(i, 1), field.name())[0]
                                .clone()
                                .expect("valid"),
                        ),
                        DataType::Timestamp(..) => Val::T(data::times(b)[i]),
                        other => panic!("column {} has type {other}", field.name()),
                    }
                };
                row.insert(field.name().clone(), v);
            }
            rows.push(row);
        }
    }
    rows.sort_by_key(|r| format!("{:?}{r:?}", r.get("time")));
    rows
}

fn row_of(pairs: &[(&str, Val)]) -> BTreeMap<String, Val> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Line protocol's corners (escapes, extreme numbers, every boolean
/// spelling, sparse rows) and an Arrow IPC write, read back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_values_and_arrow_writes_round_trip() {
    within(Duration::from_secs(90), "edge values", async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut ing = Ingester::new(tmp.path().join("data"));
        ing.start().await.expect("start");
        let t = BASE_TIME;

        // ---- line protocol corners ----
        let lp = format!(
            "# a comment line, then a blank line\n\
             \n\
             my\\ meas\\,x,tag\\ key=va\\,l\\=ue,uni=h\u{e9}llo i=-9223372036854775808i,u=18446744073709551615u,f=1.7976931348623157e308,b=t,s=\"he said \\\"hi\\\" \\\\ back\" {t0}\n\
             my\\ meas\\,x,tag\\ key=2 i=9223372036854775807i,f=-0.0,b=FALSE,s=\"multi\nline\" {t1}\n\
             my\\ meas\\,x f=5e-324,b=True {t2}\n\
             my\\ meas\\,x,uni=z u=0u,b=F,f=1E5 {t3}\n",
            t0 = t,
            t1 = t + 1,
            t2 = t + 2,
            t3 = t + 3,
        );
        let r = ing.write_lp("edge", &lp).await.expect("write corners");
        assert_eq!(r.rows, 4);
        let got = cells(&ing.query_table("edge", "my meas,x").await.expect("query corners"));
        let all = |pairs: &[(&str, Val)]| {
            let mut m = row_of(&[
                ("tag key", Val::Null),
                ("uni", Val::Null),
                ("i", Val::Null),
                ("u", Val::Null),
                ("f", Val::Null),
                ("b", Val::Null),
                ("s", Val::Null),
            ]);
            m.extend(row_of(pairs));
            m
        };
        let want = vec![
            all(&[
                ("tag key", s("va,l=ue")),
                ("uni", s("h\u{e9}llo")),
                ("i", Val::I(i64::MIN)),
                ("u", Val::U(u64::MAX)),
                ("f", f(f64::MAX)),
                ("b", Val::B(true)),
                ("s", s("he said \"hi\" \\ back")),
                ("time", Val::T(t)),
            ]),
            all(&[
                ("tag key", s("2")),
                ("i", Val::I(i64::MAX)),
                ("f", f(-0.0)),
                ("b", Val::B(false)),
                ("s", s("multi\nline")),
                ("time", Val::T(t + 1)),
            ]),
            all(&[
                ("f", f(5e-324)),
                ("b", Val::B(true)),
                ("time", Val::T(t + 2)),
            ]),
            all(&[
                ("uni", s("z")),
                ("u", Val::U(0)),
                ("b", Val::B(false)),
                ("f", f(1e5)),
                ("time", Val::T(t + 3)),
            ]),
        ];
        assert_eq!(got, want, "line protocol corners");
        let schema = ing.table_schema("edge", "my meas,x").await.expect("schema");
        let mut cols: Vec<(String, i32)> = schema
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.column_type))
            .collect();
        cols.sort();
        use v1::ColumnType as C;
        assert_eq!(
            cols,
            [
                ("b", C::Bool),
                ("f", C::F64),
                ("i", C::I64),
                ("s", C::String),
                ("tag key", C::Tag),
                ("time", C::Time),
                ("u", C::U64),
                ("uni", C::Tag),
            ]
            .map(|(n, c)| (n.to_string(), c as i32)),
            "catalog schema"
        );

        // ---- Arrow IPC ----
        use arrow::array::{
            ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int64Array, StringArray,
            TimestampNanosecondArray, UInt64Array,
        };
        use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
        use std::sync::Arc;
        let dc_field = Field::new(
            "dc",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )
        .with_metadata([("sluice.column_type".to_string(), "tag".to_string())].into());
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
            Field::new("host", DataType::Utf8, true),
            dc_field,
            Field::new("i", DataType::Int64, true),
            Field::new("u", DataType::UInt64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let dc: DictionaryArray<Int32Type> = vec![Some("eu"), None, Some("us")].into_iter().collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(vec![t, t + 1, t + NANOS_PER_DAY])),
            Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
            Arc::new(dc),
            Arc::new(Int64Array::from(vec![Some(1), None, Some(-3)])),
            Arc::new(UInt64Array::from(vec![None, Some(2), Some(u64::MAX)])),
            Arc::new(Float64Array::from(vec![Some(0.1), Some(f64::MIN_POSITIVE), None])),
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            Arc::new(StringArray::from(vec![Some("x"), Some(""), None])),
        ];
        let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), cols).expect("batch");
        let mut ipc = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &schema).expect("ipc");
            w.write(&batch).expect("ipc batch");
            w.finish().expect("ipc finish");
        }
        let mut c = ing.write_client().await.expect("client");
        let r = c
            .write(v1::WriteRequest {
                namespace: "edge".into(),
                payload: Some(v1::write_request::Payload::Arrow(v1::ArrowBatch {
                    table: "arrow".into(),
                    ipc_stream: ipc.into(),
                    tags: vec!["host".into()],
                })),
                precision: 0,
            })
            .await
            .expect("Arrow write")
            .into_inner();
        assert_eq!(r.rows, 3);
        let res = ing.query_table("edge", "arrow").await.expect("query arrow");
        let mut keys: Vec<&str> = res.partitions.iter().map(|p| p.partition_key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["2026-01-01", "2026-01-02"], "Arrow rows split by day");
        let got = cells(&res);
        let want = vec![
            row_of(&[
                ("b", Val::B(true)),
                ("dc", s("eu")),
                ("f", f(0.1)),
                ("host", s("a")),
                ("i", Val::I(1)),
                ("s", s("x")),
                ("time", Val::T(t)),
                ("u", Val::Null),
            ]),
            row_of(&[
                ("b", Val::Null),
                ("dc", Val::Null),
                ("f", f(f64::MIN_POSITIVE)),
                ("host", s("b")),
                ("i", Val::Null),
                ("s", s("")),
                ("time", Val::T(t + 1)),
                ("u", Val::U(2)),
            ]),
            row_of(&[
                ("b", Val::B(false)),
                ("dc", s("us")),
                ("f", Val::Null),
                ("host", Val::Null),
                ("i", Val::I(-3)),
                ("s", Val::Null),
                ("time", Val::T(t + NANOS_PER_DAY)),
                ("u", Val::U(u64::MAX)),
            ]),
        ];
        assert_eq!(got, want, "Arrow write read back");
        // Tags are tags, in the catalog and in the result's types.
        for b in &res.batches {
            for name in ["host", "dc"] {
                assert!(
                    matches!(b.schema().field_with_name(name).expect("tag").data_type(), DataType::Dictionary(..)),
                    "{name} is a dictionary"
                );
            }
        }

        // Both survive a restart (WAL replay of LP and Arrow payloads).
        ing.kill9();
        ing.start().await.expect("restart");
        let q = |table: &str| v1::QueryRequest {
            namespace: "edge".into(),
            table: table.into(),
            include_persisted: true,
            ..Default::default()
        };
        let replayed = cells(&ing.query(q("arrow")).await.expect("arrow after restart"));
        assert_eq!(replayed, want, "Arrow rows after replay");
        let replayed = cells(&ing.query(q("my meas,x")).await.expect("lp after restart"));
        assert_eq!(replayed.len(), 4, "LP rows after replay");
        ing.stop().await.expect("stop");
        ing.assert_no_panic();
    })
    .await;
}

/// Writes large enough to be validated in pieces on both cores
/// (`--write-split-bytes`, lowered here so the generator's batches qualify)
/// come back value for value, from the buffer and after `kill -9` and a
/// replay of their WAL records: the pieces' concatenated columns (their
/// tag dictionaries repeat values) survive the WAL and the buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_validated_in_pieces_round_trip_and_replay() {
    within(Duration::from_secs(180), "split writes test", split_run()).await;
}

async fn split_run() {
    const WRITES: u64 = 12;
    const LINES: u64 = 3_000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--write-split-bytes")
        .arg("16384");
    ing.start().await.expect("start ingester");
    let mut client = ing.write_client().await.expect("write client");
    // One writer, one request at a time: the server always has a free core.
    for n in 0..WRITES {
        let lp = data::lines(TABLE, 0, n * LINES..(n + 1) * LINES);
        assert!(lp.len() > 16384);
        let r = sluice_e2e::write_lp(&mut client, NS, lp.as_bytes())
            .await
            .unwrap_or_else(|s| panic!("write {n}: {s}"));
        assert_eq!(r.rows, LINES);
    }
    let split = ing
        .metric("sluice_write_split_requests_total")
        .await
        .expect("metrics")
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        assert_eq!(split, WRITES as f64, "every write was split");
    }

    let check = |result: &sluice_e2e::QueryResult, when: &str| {
        let rows = data::decode_rows(&result.batches);
        assert_eq!(rows.len() as u64, WRITES * LINES, "{when}: rows");
        let mut seen = vec![false; (WRITES * LINES) as usize];
        for r in &rows {
            let (w, i) = data::key_of_time(r.time);
            assert_eq!(w, 0, "{when}: {r:?}");
            let slot = &mut seen[i as usize];
            assert!(!*slot, "{when}: row {i} twice");
            *slot = true;
            assert_eq!(r, &data::row(0, i), "{when}: row {i}");
        }
    };
    let live = ing.query_table(NS, TABLE).await.expect("query");
    check(&live, "live");

    ing.kill9();
    ing.start().await.expect("restart after kill -9");
    let replayed = ing
        .query_table(NS, TABLE)
        .await
        .expect("query after replay");
    check(&replayed, "after replay");
}
