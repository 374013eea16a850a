//! The write path from request to `DmlOperation`, against an in-memory
//! catalog and a recording sink.

use std::sync::Arc;

use arrow::array::{Array, ArrayAccessor, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampNanosecondType, UInt64Type};
use bytes::Bytes;

use super::*;
use crate::catalog::{Catalog, MemCatalog, SchemaCache};
use crate::dml_sink::mock::MockDmlSink;
use crate::ingest_state::IngestState;
use crate::timestamp_oracle::TimestampOracle;

struct Ctx {
    handler: WriteHandler<Arc<MockDmlSink>>,
    sink: Arc<MockDmlSink>,
    catalog: Arc<dyn Catalog>,
    state: Arc<IngestState>,
}

fn ctx_with_limit(max_request_bytes: usize) -> Ctx {
    ctx_with(max_request_bytes, None)
}

fn ctx_with(max_request_bytes: usize, registry: Option<&prometheus::Registry>) -> Ctx {
    let catalog: Arc<dyn Catalog> = Arc::new(MemCatalog::new());
    let cache = Arc::new(SchemaCache::new(Arc::clone(&catalog)));
    let state = Arc::new(IngestState::new(1 << 30));
    state.unset(crate::ingest_state::IngestStateError::Starting);
    let sink = Arc::new(MockDmlSink::default());
    let handler = WriteHandler::new(
        cache,
        Arc::new(TimestampOracle::new(0)),
        Arc::clone(&state),
        Arc::clone(&sink),
        max_request_bytes,
        registry,
    )
    .unwrap();
    Ctx {
        handler,
        sink,
        catalog,
        state,
    }
}

fn ctx() -> Ctx {
    ctx_with_limit(1 << 20)
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

#[tokio::test]
async fn builds_columns_with_nulls_and_types() {
    let c = ctx();
    let s = c
        .handler
        .write(lp(
            "ns",
            "cpu,host=a usage=0.5,count=3i 10\ncpu,host=b,region=eu usage=1,big=7u,ok=t,msg=\"hi \\\"x\\\"\" 20\ncpu usage=2\n",
        ))
        .await
        .unwrap();
    assert_eq!(s.rows, 3);
    assert_eq!(s.tables, 1);
    assert_eq!(s.sequence_number, 1);
    let op = c.sink.calls.lock()[0].clone();
    assert_eq!(op.sequence_number, 1);
    let batch = &op.tables[0].partitions[0].batch;
    let col = |n: &str| batch.column_by_name(n).unwrap().clone();
    let host = col("host");
    let host = host.as_dictionary::<Int32Type>();
    let hv = host.downcast_dict::<arrow::array::StringArray>().unwrap();
    assert_eq!(hv.value(0), "a");
    assert_eq!(hv.value(1), "b");
    assert!(host.is_null(2));
    let region = col("region");
    assert!(region.is_null(0) && !region.is_null(1) && region.is_null(2));
    let usage = col("usage");
    assert_eq!(
        usage.as_primitive::<Float64Type>().values().to_vec(),
        vec![0.5, 1.0, 2.0]
    );
    let count = col("count");
    assert_eq!(count.as_primitive::<Int64Type>().value(0), 3);
    assert!(count.is_null(1));
    assert_eq!(col("big").as_primitive::<UInt64Type>().value(1), 7);
    assert!(col("ok").as_boolean().value(1));
    assert_eq!(col("msg").as_string::<i32>().value(1), "hi \"x\"");
    let time = col("time");
    assert_eq!(
        time.as_primitive::<TimestampNanosecondType>()
            .values()
            .to_vec(),
        vec![10, 20, 42],
        "a line without timestamp gets the request's default time"
    );
    // The catalog learnt every column with its type.
    let ns = c.catalog.get_namespace("ns").await.unwrap().unwrap();
    let t = c.catalog.get_table(ns, "cpu").await.unwrap().unwrap();
    assert_eq!(t.column_type("host"), Some(ColumnType::Tag));
    assert_eq!(t.column_type("usage"), Some(ColumnType::F64));
    assert_eq!(t.column_type("big"), Some(ColumnType::U64));
    assert_eq!(t.column_type("msg"), Some(ColumnType::String));
}

#[tokio::test]
async fn type_conflict_within_request_names_line_and_nothing_applied() {
    let c = ctx();
    let err = c
        .handler
        .write(lp("ns", "cpu v=1 1\ncpu v=2 2\ncpu v=3i 3\n"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, WriteError::ColumnTypeConflict { line: Some(3), .. }),
        "{msg}"
    );
    assert!(
        msg.contains("line 3") && msg.contains("`cpu`") && msg.contains("`v`"),
        "{msg}"
    );
    assert!(c.sink.calls.lock().is_empty());
}

#[tokio::test]
async fn type_conflict_across_requests_uses_catalog() {
    let c = ctx();
    c.handler.write(lp("ns", "cpu v=1 1")).await.unwrap();
    // A second handler with a cold cache still sees the catalog's type.
    let cold = cold_handler(&c);
    let err = cold
        .write(lp("ns", "cpu w=1i 1\ncpu v=\"s\" 2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::ColumnTypeConflict { line: Some(2), column, existing: ColumnType::F64, requested: ColumnType::String, .. } if column == "v"),
        "{err}"
    );
}

#[tokio::test]
async fn tag_and_field_with_one_name_is_refused() {
    let c = ctx();
    let err = c
        .handler
        .write(lp("ns", "cpu,x=a x=1 1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::ColumnTypeConflict { line: Some(1), .. }),
        "{err}"
    );
}

#[tokio::test]
async fn bad_names_are_refused() {
    let c = ctx();
    for body in ["cpu,time=a v=1 1", "cpu time=1 1"] {
        let err = c.handler.write(lp("ns", body)).await.unwrap_err();
        assert!(
            matches!(err, WriteError::InvalidName { line: Some(1), .. }),
            "{body}: {err}"
        );
        assert!(err.to_string().contains("`time`"), "{err}");
    }
    let err = c.handler.write(lp("a/b", "cpu v=1 1")).await.unwrap_err();
    assert!(matches!(err, WriteError::InvalidNamespace { .. }), "{err}");
    assert!(c.sink.calls.lock().is_empty());
}

#[tokio::test]
async fn empty_oversized_and_out_of_range() {
    let c = ctx_with_limit(64);
    assert!(matches!(
        c.handler.write(lp("ns", "")).await,
        Err(WriteError::Empty)
    ));
    assert!(matches!(
        c.handler.write(lp("ns", "# only a comment\n\n")).await,
        Err(WriteError::Empty)
    ));
    let big = "cpu v=1 1\n".repeat(10);
    assert!(matches!(
        c.handler.write(lp("ns", &big)).await,
        Err(WriteError::TooLarge {
            size: 100,
            limit: 64
        })
    ));
    let mut req = lp("ns", "cpu v=1 100000000000");
    if let Payload::LineProtocol { precision, .. } = &mut req.payload {
        *precision = Precision::Seconds;
    }
    let err = c.handler.write(req).await.unwrap_err();
    assert!(
        matches!(err, WriteError::TimestampOutOfRange { line: 1, .. }),
        "{err}"
    );
    let err = c
        .handler
        .write(lp("ns", "cpu v=1 1\ncpu v=\n"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::Parse(p) if p.line_number == 2),
        "{err}"
    );
    let err = c
        .handler
        .write(WriteRequest {
            namespace: "ns".into(),
            payload: Payload::LineProtocol {
                body: Bytes::from_static(b"cpu v=1 1\ncpu,h=\xff v=1 2\n"),
                precision: Precision::Nanoseconds,
                default_time: 0,
            },
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::Parse(p) if p.line_number == 2),
        "{err}"
    );
    assert!(c.sink.calls.lock().is_empty());
}

#[tokio::test]
async fn duplicate_keys_in_a_line_keep_the_last() {
    let c = ctx();
    c.handler
        .write(lp("ns", "cpu,h=a,h=b v=1,v=2 1"))
        .await
        .unwrap();
    let ops = c.sink.calls.lock();
    let b = &ops[0].tables[0].partitions[0].batch;
    assert_eq!(b.num_rows(), 1);
    let v = b.column_by_name("v").unwrap();
    assert_eq!(v.as_primitive::<Float64Type>().value(0), 2.0);
    let h = b
        .column_by_name("h")
        .unwrap()
        .as_dictionary::<Int32Type>()
        .downcast_dict::<arrow::array::StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    assert_eq!(h, "b");
}

#[tokio::test]
async fn rows_split_by_utc_day_and_tables() {
    let c = ctx();
    let day = 86_400_000_000_000i64;
    let body = format!("a v=1 {}\nb v=1 0\na v=2 {}\na v=3 5\n", day + 1, day * 3);
    let s = c.handler.write(lp("ns", &body)).await.unwrap();
    assert_eq!((s.rows, s.tables), (4, 2));
    let ops = c.sink.calls.lock();
    let a = ops[0].tables.iter().find(|t| t.table.name == "a").unwrap();
    let mut keys: Vec<_> = a
        .partitions
        .iter()
        .map(|p| (p.key.to_string(), p.batch.num_rows()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("1970-01-01".into(), 1),
            ("1970-01-02".into(), 1),
            ("1970-01-04".into(), 1)
        ]
    );
}

#[tokio::test]
async fn refused_when_state_says_so() {
    let c = ctx();
    c.state.set(crate::ingest_state::IngestStateError::Draining);
    let err = c.handler.write(lp("ns", "cpu v=1 1")).await.unwrap_err();
    assert!(matches!(err, WriteError::State(_)));
    c.state
        .unset(crate::ingest_state::IngestStateError::Draining);
    c.state.add_buffer_bytes(1 << 30);
    let err = c.handler.write(lp("ns", "cpu v=1 1")).await.unwrap_err();
    assert!(matches!(err, WriteError::BufferFull { .. }));
    assert!(c.sink.calls.lock().is_empty());
}

#[tokio::test]
async fn replay_of_a_request_record_keeps_sequence_numbers_and_moves_the_oracle() {
    // A version 1 record (the request, as earlier releases logged it).
    let c = ctx();
    let rows = c
        .handler
        .replay(77, lp("ns", "cpu v=1 1").encode())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let s = c.handler.write(lp("ns", "cpu v=2 2")).await.unwrap();
    assert_eq!(s.sequence_number, 78);
    let ops = c.sink.calls.lock();
    assert_eq!(ops[0].sequence_number, 77);
}

#[tokio::test]
async fn arrow_batches_are_validated_and_normalised() {
    use arrow::array::{Float64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let schema = Arc::new(Schema::new(vec![
        Field::new("host", DataType::Utf8, true),
        Field::new("usage", DataType::Float64, true),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Float64Array::from(vec![1.0, 2.0])),
            Arc::new(TimestampMillisecondArray::from(vec![1, 2])),
        ],
    )
    .unwrap();
    let mut ipc = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    let c = ctx();
    let req = WriteRequest {
        namespace: "ns".into(),
        payload: Payload::Arrow {
            table: "cpu".into(),
            ipc: Bytes::from(ipc.clone()),
            tags: vec!["host".into()],
        },
    };
    let s = c.handler.write(req).await.unwrap();
    assert_eq!(s.rows, 2);
    {
        let ops = c.sink.calls.lock();
        let b = &ops[0].tables[0].partitions[0].batch;
        assert_eq!(
            b.column_by_name("host").unwrap().data_type(),
            &crate::schema::tag_data_type()
        );
        let t = b.column_by_name("time").unwrap();
        assert_eq!(
            t.as_primitive::<TimestampNanosecondType>()
                .values()
                .to_vec(),
            vec![1_000_000, 2_000_000]
        );
    }
    // Without the tag list, `host` is a string field: conflicts with the tag.
    let req = WriteRequest {
        namespace: "ns".into(),
        payload: Payload::Arrow {
            table: "cpu".into(),
            ipc: Bytes::from(ipc),
            tags: vec![],
        },
    };
    let err = c.handler.write(req).await.unwrap_err();
    assert!(
        matches!(err, WriteError::ColumnTypeConflict { .. }),
        "{err}"
    );
    let req = WriteRequest {
        namespace: "ns".into(),
        payload: Payload::Arrow {
            table: "cpu".into(),
            ipc: Bytes::from_static(b"not arrow"),
            tags: vec![],
        },
    };
    assert!(matches!(
        c.handler.write(req).await,
        Err(WriteError::InvalidArrow { .. })
    ));
}

#[tokio::test]
async fn concurrent_first_writes_of_a_column_one_type_wins() {
    let c = Arc::new(ctx());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let c = Arc::clone(&c);
        tasks.push(tokio::spawn(async move {
            let body = if i % 2 == 0 {
                "cpu x=1i 1"
            } else {
                "cpu x=1 1"
            };
            c.handler.write(lp("ns", body)).await.is_ok()
        }));
    }
    let mut ok_int = 0;
    let mut ok_float = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.unwrap() {
            if i % 2 == 0 {
                ok_int += 1
            } else {
                ok_float += 1
            }
        }
    }
    assert!(
        ok_int == 0 || ok_float == 0,
        "both types accepted: {ok_int} int, {ok_float} float"
    );
    assert_eq!(ok_int + ok_float, 8);
}

#[tokio::test]
async fn repeated_tag_sections_reuse_keys_and_keep_every_value() {
    // Lines 3, 5 and 7 repeat an earlier tag section byte for byte (the
    // series cache); line 4's duplicate tag keeps its last value, also when
    // repeated; an escaped key is its own column.
    let c = ctx();
    let body = "cpu,host=a,dc=x v=1 1\n\
                cpu,host=b v=2 2\n\
                cpu,host=a,dc=x v=3 3\n\
                cpu,host=a,host=b v=4 4\n\
                cpu,host=a,host=b v=5 5\n\
                cpu,h\\ ost=a v=6 6\n\
                cpu,h\\ ost=a v=7 7\n\
                cpu,dc=x,host=a v=8 8\n";
    c.handler.write(lp("ns", body)).await.unwrap();
    let op = c.sink.calls.lock()[0].clone();
    let batch = &op.tables[0].partitions[0].batch;
    let tag = |n: &str| -> Vec<Option<String>> {
        let col = batch.column_by_name(n).unwrap();
        let d = col.as_dictionary::<Int32Type>();
        let v = d.downcast_dict::<arrow::array::StringArray>().unwrap();
        v.into_iter().map(|x| x.map(str::to_string)).collect()
    };
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        tag("host"),
        [s("a"), s("b"), s("a"), s("b"), s("b"), None, None, s("a")]
    );
    assert_eq!(
        tag("dc"),
        [s("x"), None, s("x"), None, None, None, None, s("x")]
    );
    assert_eq!(
        tag("h ost"),
        [None, None, None, None, None, s("a"), s("a"), None]
    );
    let host = batch.column_by_name("host").unwrap();
    assert_eq!(
        host.as_dictionary::<Int32Type>().values().len(),
        2,
        "each value once in the dictionary"
    );
}

#[tokio::test]
async fn a_repeated_tag_section_still_conflicts_with_a_field_of_its_name() {
    let c = ctx();
    let err = c
        .handler
        .write(lp("ns", "cpu,host=a v=1 1\ncpu,host=a host=2 2\n"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::ColumnTypeConflict { line: Some(2), column, .. } if column == "host"),
        "{err}"
    );
    assert!(c.sink.calls.lock().is_empty());
}

#[test]
fn columns_are_sized_to_the_body_even_when_the_first_line_is_long() {
    // The first line is one byte longer than the rest: a guess from its
    // length alone falls ~170 rows short, and builders that then double
    // keep twice the data's size in the buffer until it is persisted.
    let mut s = String::from("cpu,hostname=hX0000,region=r v=0000 0000\n");
    for r in 1..5000 {
        s.push_str(&format!(
            "cpu,hostname=h{:04},region=r v={r:04} {r:04}\n",
            r % 10
        ));
    }
    let t = lp::build_tables(s.as_bytes(), Precision::Nanoseconds, 0, &|_| None).unwrap();
    let b = &t[0].batch;
    assert_eq!(b.num_rows(), 5000);
    let v = b.column_by_name("v").unwrap().get_buffer_memory_size();
    assert!(v <= 5000 * 8 * 13 / 10, "{v} bytes for 5,000 floats");
}

#[test]
fn columns_without_missing_values_have_no_validity_bitmap() {
    let body = "cpu,host=a f=1,i=2i,u=3u,b=t,s=\"x\" 1\ncpu,host=b f=2,i=3i,u=4u,b=f,s=\"y\" 2\n";
    let t = lp::build_tables(body.as_bytes(), Precision::Nanoseconds, 0, &|_| None).unwrap();
    for (f, col) in t[0]
        .batch
        .schema()
        .fields()
        .iter()
        .zip(t[0].batch.columns())
    {
        assert!(col.nulls().is_none(), "column {} has a bitmap", f.name());
    }
    // A column that appears on a later line has nulls before it.
    let body = "cpu f=1 1\ncpu f=2,g=3 2\n";
    let t = lp::build_tables(body.as_bytes(), Precision::Nanoseconds, 0, &|_| None).unwrap();
    let g = t[0].batch.column_by_name("g").unwrap();
    assert_eq!((g.null_count(), g.is_valid(1)), (1, true));
}

/// Tag values of every column of `batch`, by column name, row by row.
fn tag_rows(batch: &arrow::record_batch::RecordBatch) -> Vec<Vec<(String, String)>> {
    let mut rows = vec![Vec::new(); batch.num_rows()];
    for (f, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let Some(d) = col.as_dictionary_opt::<Int32Type>() else {
            continue;
        };
        let v = d.downcast_dict::<arrow::array::StringArray>().unwrap();
        for (i, x) in v.into_iter().enumerate() {
            if let Some(x) = x {
                rows[i].push((f.name().clone(), x.to_string()));
            }
        }
    }
    for r in &mut rows {
        r.sort();
    }
    rows
}

/// A body's batches (or error message), for comparisons.
fn built(body: &str, fast_fields: bool) -> Result<Vec<(String, RecordBatchDebug)>, String> {
    lp::build_tables_with(
        body.as_bytes(),
        Precision::Nanoseconds,
        0,
        &|_| None,
        fast_fields,
    )
    .map(|tables| {
        tables
            .into_iter()
            .map(|t| {
                let new: Vec<String> = t
                    .new_columns
                    .iter()
                    .map(|c| format!("{} {:?} {}", c.name, c.column_type, c.first_line))
                    .collect();
                (t.name, RecordBatchDebug(t.batch, new))
            })
            .collect()
    })
    .map_err(|e| e.to_string())
}

/// A batch and its new columns, compared by value.
#[derive(Debug, PartialEq)]
struct RecordBatchDebug(arrow::record_batch::RecordBatch, Vec<String>);

proptest::proptest! {
    /// The fields' fast path (every key found in the previous row's column
    /// order, no duplicate) gives exactly the batches, or the error, of the
    /// general path: lines mixing repeated, escaped, new and duplicate keys,
    /// type conflicts and keys that are also tags.
    #[test]
    fn fast_field_path_matches_the_general_path(
        lines in proptest::collection::vec(
            (
                0usize..3,
                proptest::collection::vec((0usize..7, 0usize..6), 1..6),
            ),
            1..30,
        ),
        shuffle in proptest::bool::ANY,
    ) {
        const TAGS: [&str; 3] = ["cpu,host=a", "cpu,host=b,dc=x", "mem,host=a"];
        const KEYS: [&str; 7] = ["usage_user", "usage_idle", "f", "g\\ x", "g x", "host", "usage_guest_nice"];
        const VALUES: [&str; 6] = ["1.5", "58.13171323049762", "2i", "3u", "t", "\"s\""];
        let mut body = String::new();
        for (i, (tags, fields)) in lines.iter().enumerate() {
            let fields: Vec<String> = fields
                .iter()
                .map(|&(k, v)| {
                    // Mostly floats, so rows repeat their keys' types.
                    let v = if shuffle { v } else { v % 2 };
                    format!("{}={}", KEYS[k].replace("g x", "g\\=x"), VALUES[v])
                })
                .collect();
            body.push_str(&format!("{} {} {i}\n", TAGS[*tags], fields.join(",")));
        }
        proptest::prop_assert_eq!(built(&body, true), built(&body, false), "{}", body);
    }

    /// The tag-set cache changes nothing: a body whose lines repeat tag
    /// sections (with escapes and duplicate keys), followed by one or two
    /// spaces and fields of several spellings, gives every row the tags and
    /// field values it gets when each line is a request of its own (where
    /// neither the cache nor the parser's shortcut for known sections can
    /// apply).
    #[test]
    fn tag_set_cache_gives_each_line_its_own_tags(
        picks in proptest::collection::vec((0usize..6, 0usize..2, 0usize..4), 1..40),
    ) {
        const SECTIONS: [&str; 6] = [
            "cpu,host=a,dc=x",
            "cpu,host=b",
            "cpu,host=a,host=b",
            "cpu,h\\ ost=a,dc=x\\,y",
            "cpu,dc=x,host=a",
            "cpu,host=a\\=b",
        ];
        const FIELDS: [&str; 4] = ["v=#", "v=#,n=2i", "s=\"a b\",v=#", "w\\ x=1i,v=#"];
        let lines: Vec<String> = picks
            .iter()
            .enumerate()
            .map(|(i, &(p, sep, f))| {
                let sep = if sep == 0 { " " } else { "  " };
                format!("{}{sep}{} {i}\n", SECTIONS[p], FIELDS[f].replace('#', &format!("{i}.5")))
            })
            .collect();
        let whole = lp::build_tables(lines.concat().as_bytes(), Precision::Nanoseconds, 0, &|_| None)
            .unwrap();
        let got = tag_rows(&whole[0].batch);
        let got_fields = field_rows(&whole[0].batch);
        for (i, line) in lines.iter().enumerate() {
            let one = lp::build_tables(line.as_bytes(), Precision::Nanoseconds, 0, &|_| None)
                .unwrap();
            proptest::prop_assert_eq!(&got[i], &tag_rows(&one[0].batch)[0], "line {}", i);
            proptest::prop_assert_eq!(&got_fields[i], &field_rows(&one[0].batch)[0], "line {}", i);
        }
    }
}

/// Values of every non-tag column of `batch` (time included), by column
/// name, row by row; nulls left out.
fn field_rows(batch: &arrow::record_batch::RecordBatch) -> Vec<Vec<(String, String)>> {
    let mut rows = vec![Vec::new(); batch.num_rows()];
    for (f, col) in batch.schema().fields().iter().zip(batch.columns()) {
        if col.as_dictionary_opt::<Int32Type>().is_some() {
            continue;
        }
        for (i, row) in rows.iter_mut().enumerate() {
            if col.is_valid(i) {
                let v = arrow::util::display::array_value_to_string(col, i).unwrap();
                row.push((f.name().clone(), v));
            }
        }
    }
    for r in &mut rows {
        r.sort();
    }
    rows
}

/// Writes of the same columns, in the same order, share one Arrow schema;
/// another order, another type or another column set gets its own, with
/// the fields it really has.
#[test]
fn writes_of_the_same_columns_share_one_schema() {
    let build = |body: &str| {
        let t = lp::build_tables(body.as_bytes(), Precision::Nanoseconds, 0, &|_| None).unwrap();
        t[0].batch.schema()
    };
    let a = build("cpu,host=a f=1,i=2i 1\n");
    let b = build("cpu,host=b f=3,i=4i 2\n");
    assert!(Arc::ptr_eq(&a, &b));
    let names = |s: &arrow::datatypes::SchemaRef| -> Vec<String> {
        s.fields().iter().map(|f| f.name().clone()).collect()
    };
    for (body, expected) in [
        ("cpu,host=a i=2i,f=1 1\n", vec!["host", "i", "f", "time"]),
        ("cpu,host=a f=1i,i=2i 1\n", vec!["host", "f", "i", "time"]),
        ("cpu,host=a f=1 1\n", vec!["host", "f", "time"]),
        (
            "cpu,host=a,dc=x f=1,i=2i 1\n",
            vec!["host", "dc", "f", "i", "time"],
        ),
    ] {
        let s = build(body);
        assert!(!Arc::ptr_eq(&a, &s), "{body}");
        assert_eq!(names(&s), expected, "{body}");
    }
    // `f` as an integer: the schema says so, not the float one's.
    let s = build("cpu,host=a f=1i,i=2i 1\n");
    assert_eq!(
        s.field_with_name("f").unwrap().data_type(),
        &arrow::datatypes::DataType::Int64
    );
    assert!(Arc::ptr_eq(&build("cpu,host=c f=5,i=6i 3\n"), &a));
}

/// A handler that validates bodies of any size in up to `cores` pieces
/// (`split.rs`), with its own catalog, and the registry holding its
/// `sluice_write_split_requests_total`.
fn split_ctx(cores: usize) -> (Ctx, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let c = ctx_with(1 << 24, Some(&registry));
    let handler = c.handler.with_split(SplitValidation {
        min_bytes: 1,
        cores,
    });
    (Ctx { handler, ..c }, registry)
}

/// Another writer on `c`'s catalog, with a cache of its own (cold).
fn cold_handler(c: &Ctx) -> WriteHandler<Arc<MockDmlSink>> {
    WriteHandler::new(
        Arc::new(SchemaCache::new(Arc::clone(&c.catalog))),
        Arc::new(TimestampOracle::new(100)),
        Arc::clone(&c.state),
        Arc::new(MockDmlSink::default()),
        1 << 20,
        None,
    )
    .unwrap()
}

fn split_count(registry: &prometheus::Registry) -> u64 {
    registry
        .gather()
        .iter()
        .find(|f| f.name() == "sluice_write_split_requests_total")
        .map(|f| f.get_metric()[0].get_counter().get_value() as u64)
        .unwrap_or(0)
}

/// The op's tables as `(table, columns by name: (type, values as text))`:
/// dictionaries as their values, so two builds of the same rows compare
/// equal whatever their dictionaries hold.
fn canonical(op: &DmlOperation) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for t in &op.tables {
        for p in &t.partitions {
            let b = &p.batch;
            let mut cols = Vec::new();
            for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                let text = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap();
                let text = text.as_string::<i32>();
                let values: Vec<String> = (0..text.len())
                    .map(|i| {
                        if text.is_null(i) {
                            "∅".to_string()
                        } else {
                            text.value(i).to_string()
                        }
                    })
                    .collect();
                cols.push((
                    format!("{}:{:?}", f.name(), f.data_type()),
                    values.join("|"),
                ));
            }
            out.push((format!("{}/{}", t.table.name, p.key), cols));
        }
    }
    out
}

/// A body whose later part brings what the earlier part did not: a second
/// table, a tag and a field first seen late, rows missing columns, comments,
/// blank lines, `\r\n`, an escaped newline and repeated rows.
fn mixed_body(lines: usize) -> String {
    let mut body = String::new();
    for i in 0..lines {
        let host = i % 7;
        match i % 11 {
            0 => body.push_str("# a comment line\n\n"),
            5 => body.push_str(&format!(
                "mem,host=h{host} used={i}i,free={}u {i}\r\n",
                i * 2
            )),
            _ => {}
        }
        if i > lines * 2 / 3 {
            body.push_str(&format!(
                "cpu,host=h{host},zone=z{} usage={i}.5,extra=t {i}\n",
                i % 3
            ));
        } else if i % 13 == 0 {
            body.push_str(&format!("cpu,host=h\\ {host} usage={i}.25 {i}\n"));
        } else {
            body.push_str(&format!("cpu,host=h{host} usage={i}.5,count={i}i {i}\n"));
        }
        if i == lines / 2 {
            // The same row twice, and a line continued by an escaped newline.
            body.push_str(&format!("cpu,host=h{host} usage=1.5 {i}\n"));
            body.push_str(&format!("cpu,host=h{host} usage=1.5 {i}\n"));
            body.push_str("cpu,host=esc\\\ndone usage=2 3\n");
        }
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_validation_builds_what_one_pass_builds() {
    let body = mixed_body(600);
    let one = ctx_with_limit(1 << 24);
    let one_summary = one.handler.write(lp("ns", &body)).await.unwrap();
    for cores in [2, 3, 5] {
        let (split, registry) = split_ctx(cores);
        let summary = split.handler.write(lp("ns", &body)).await.unwrap();
        assert_eq!(
            split_count(&registry),
            1,
            "{cores} cores: the body was split"
        );
        assert_eq!(summary.rows, one_summary.rows);
        assert_eq!(summary.tables, one_summary.tables);
        let a = canonical(&one.sink.calls.lock()[0]);
        let b = canonical(&split.sink.calls.lock()[0]);
        assert_eq!(a, b, "{cores} cores");
        // The catalog learnt the same columns with the same types.
        let ns = split.catalog.get_namespace("ns").await.unwrap().unwrap();
        let t = split.catalog.get_table(ns, "cpu").await.unwrap().unwrap();
        assert_eq!(t.column_type("zone"), Some(ColumnType::Tag));
        assert_eq!(t.column_type("extra"), Some(ColumnType::Bool));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_validation_refuses_what_one_pass_refuses_with_the_same_message() {
    let good = mixed_body(300);
    let cases = [
        // A type conflict between the pieces: each is valid alone.
        format!("{good}cpu,host=h1 usage=1i 5\n"),
        // A parse error in the last piece.
        format!("{good}cpu,host=h1 usage=1.5.5 5\n"),
        // A tag and a field with one name, in different pieces.
        format!("{good}cpu,host=h1 host=1.5 5\n"),
        // An error in the first piece.
        format!("cpu usage=1 1 1\n{good}"),
    ];
    for body in &cases {
        let one = ctx_with_limit(1 << 24);
        let expected = one
            .handler
            .write(lp("ns", body))
            .await
            .unwrap_err()
            .to_string();
        let (split, registry) = split_ctx(2);
        let err = split.handler.write(lp("ns", body)).await.unwrap_err();
        assert_eq!(err.to_string(), expected);
        assert_eq!(
            split_count(&registry),
            0,
            "refused: nothing counted as split"
        );
        assert!(split.sink.calls.lock().is_empty(), "nothing applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_validation_names_the_line_of_a_late_new_column_the_catalog_refuses() {
    let body = mixed_body(300);
    let extra_line = body
        .lines()
        .position(|l| l.contains("extra="))
        .expect("a late column")
        + 1;
    let mut messages = Vec::new();
    for split in [false, true] {
        let (c, registry) = split_ctx(if split { 2 } else { 1 });
        // The handler's cache knows `cpu` without `extra`; another writer
        // then makes `extra` an integer in the catalog.
        c.handler.write(lp("ns", "cpu usage=1 1")).await.unwrap();
        cold_handler(&c)
            .write(lp("ns", "cpu extra=1i 1"))
            .await
            .unwrap();
        let err = c.handler.write(lp("ns", &body)).await.unwrap_err();
        assert!(
            matches!(&err, WriteError::ColumnTypeConflict { line: Some(l), column, .. } if *l == extra_line && column == "extra"),
            "split {split}: {err}"
        );
        assert_eq!(split_count(&registry), u64::from(split));
        messages.push(err.to_string());
    }
    assert_eq!(messages[0], messages[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_with_an_early_quote_or_under_the_size_are_not_split() {
    let quoted = format!("cpu,host=a msg=\"x\ny\" 1\n{}", mixed_body(200));
    let one = ctx_with_limit(1 << 24);
    one.handler.write(lp("ns", &quoted)).await.unwrap();
    let (split, registry) = split_ctx(2);
    split.handler.write(lp("ns", &quoted)).await.unwrap();
    assert_eq!(split_count(&registry), 0, "a quote before the cut");
    assert_eq!(
        canonical(&one.sink.calls.lock()[0]),
        canonical(&split.sink.calls.lock()[0])
    );

    let (c, registry) = split_ctx(2);
    let c = Ctx {
        handler: c.handler.with_split(SplitValidation {
            min_bytes: 1 << 20,
            cores: 2,
        }),
        ..c
    };
    c.handler.write(lp("ns", &mixed_body(200))).await.unwrap();
    assert_eq!(split_count(&registry), 0, "under --write-split-bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_server_does_not_split() {
    use std::sync::atomic::Ordering;
    let body = mixed_body(200);
    let (c, registry) = split_ctx(2);
    // Writes have lately found three others in the handler on two cores:
    // every core has work. One write that finds none does not change that.
    c.handler.crowd.store(4 * 16, Ordering::Relaxed);
    c.handler.write(lp("ns", &body)).await.unwrap();
    assert_eq!(split_count(&registry), 0);
    // Arrivals that find the handler empty bring the average down.
    let mut writes = 1;
    while split_count(&registry) == 0 {
        c.handler.write(lp("ns", &body)).await.unwrap();
        writes += 1;
        assert!(writes < 20, "the average never came down");
    }
    assert!(writes > 2, "one quiet arrival is not a quiet server");
    assert_eq!(c.sink.calls.lock().len(), writes);
}
