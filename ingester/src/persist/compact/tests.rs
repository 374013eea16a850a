//! End-to-end tests of the compaction pipeline, the Parquet writer and
//! `compact_sources`.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, SchemaRef, TimestampNanosecondType, UInt64Type};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::test_util::{Col, batch, executor, rows, table_schema, tag_type, time_type};
use super::*;

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn schema() -> SchemaRef {
    table_schema(
        &["host", "region"],
        &[
            ("b", DataType::Boolean),
            ("f", DataType::Float64),
            ("i", DataType::Int64),
            ("s", DataType::Utf8),
            ("u", DataType::UInt64),
        ],
    )
}

/// Compacts with the in-memory sort and with `SortExec`: the two must agree.
async fn run(exec: &Executor, batches: Vec<RecordBatch>, key: &[&str]) -> Vec<String> {
    let mut got = Vec::new();
    for in_memory in [true, false] {
        let out = pipeline::compact_with(exec, schema(), batches.clone(), &strs(key), in_memory)
            .await
            .expect("compact");
        let batches = out.collect().await.expect("collect");
        got.push(batches.iter().flat_map(rows).collect::<Vec<String>>());
    }
    assert_eq!(got[0], got[1], "in-memory sort vs SortExec");
    got.swap_remove(0)
}

#[tokio::test]
async fn dedup_semantics() {
    use Col::*;
    struct Case {
        name: &'static str,
        key: &'static [&'static str],
        batches: Vec<RecordBatch>,
        want: &'static [&'static str],
    }
    let cases = vec![
        Case {
            name: "same key twice, different field subsets",
            key: &["host", "time"],
            batches: vec![
                batch(&[
                    ("host", Tag(vec![Some("a")])),
                    ("time", Time(vec![1])),
                    ("f", F64(vec![Some(1.5)])),
                ]),
                batch(&[
                    ("host", Tag(vec![Some("a")])),
                    ("time", Time(vec![1])),
                    ("i", I64(vec![Some(2)])),
                ]),
            ],
            want: &["f=1.5 host=a i=2 time=1"],
        },
        Case {
            name: "three times: each field from its latest non-null",
            key: &["host", "time"],
            batches: vec![
                batch(&[
                    ("host", Tag(vec![Some("a")])),
                    ("time", Time(vec![1])),
                    ("f", F64(vec![Some(1.0)])),
                    ("i", I64(vec![Some(1)])),
                    ("b", Bool(vec![Some(true)])),
                ]),
                batch(&[
                    ("host", Tag(vec![Some("a")])),
                    ("time", Time(vec![1])),
                    ("f", F64(vec![Some(2.0)])),
                    ("i", I64(vec![None])),
                    ("b", Bool(vec![Some(false)])),
                ]),
                batch(&[
                    ("host", Tag(vec![Some("a")])),
                    ("time", Time(vec![1])),
                    ("i", I64(vec![Some(3)])),
                    ("s", Str(vec![Some("x")])),
                ]),
            ],
            want: &["b=false f=2 host=a i=3 s=x time=1"],
        },
        Case {
            name: "duplicates inside one batch, later row wins",
            key: &["host", "time"],
            batches: vec![batch(&[
                ("host", Tag(vec![Some("a"), Some("a"), Some("a")])),
                ("time", Time(vec![1, 1, 1])),
                ("u", U64(vec![Some(1), Some(2), None])),
            ])],
            want: &["host=a time=1 u=2"],
        },
        Case {
            name: "null tags equal each other, sort first, differ from values",
            key: &["host", "time"],
            batches: vec![batch(&[
                ("host", Tag(vec![None, Some("a"), None])),
                ("time", Time(vec![1, 1, 1])),
                ("f", F64(vec![Some(1.0), Some(2.0), Some(3.0)])),
            ])],
            want: &["f=3 host=∅ time=1", "f=2 host=a time=1"],
        },
        Case {
            name: "a column missing from a batch is null",
            key: &["host", "region", "time"],
            batches: vec![
                batch(&[
                    ("host", Tag(vec![Some("a")])),
                    ("time", Time(vec![1])),
                    ("f", F64(vec![Some(1.0)])),
                ]),
                batch(&[
                    ("host", Tag(vec![Some("a"), Some("a")])),
                    ("region", Tag(vec![Some("r"), None])),
                    ("time", Time(vec![1, 1])),
                    ("i", I64(vec![Some(7), Some(8)])),
                ]),
            ],
            // (a, ∅) from batch 0 merges with batch 1's second row.
            want: &[
                "f=1 host=a i=8 region=∅ time=1",
                "f=∅ host=a i=7 region=r time=1",
            ],
        },
        Case {
            name: "sorted by the key's order, then time",
            key: &["region", "host", "time"],
            batches: vec![batch(&[
                (
                    "host",
                    Tag(vec![Some("a"), Some("b"), Some("a"), Some("a")]),
                ),
                (
                    "region",
                    Tag(vec![Some("y"), Some("x"), Some("x"), Some("x")]),
                ),
                ("time", Time(vec![5, 9, 3, 1])),
            ])],
            want: &[
                "host=a region=x time=1",
                "host=a region=x time=3",
                "host=b region=x time=9",
                "host=a region=y time=5",
            ],
        },
        Case {
            name: "tags missing from the key still dedup (sorted after it)",
            key: &["time"],
            batches: vec![batch(&[
                ("host", Tag(vec![Some("b"), Some("a"), Some("b")])),
                ("time", Time(vec![1, 1, 1])),
                ("f", F64(vec![Some(1.0), Some(2.0), Some(3.0)])),
            ])],
            want: &["f=2 host=a time=1", "f=3 host=b time=1"],
        },
        Case {
            name: "same time, different series: both kept",
            key: &["host", "time"],
            batches: vec![batch(&[
                ("host", Tag(vec![Some("b"), Some("a")])),
                ("time", Time(vec![1, 1])),
                ("f", F64(vec![Some(1.0), Some(2.0)])),
            ])],
            want: &["f=2 host=a time=1", "f=1 host=b time=1"],
        },
        Case {
            name: "no input",
            key: &["host", "time"],
            batches: vec![],
            want: &[],
        },
    ];
    // Batch size 1: every key group crosses a sorted-batch boundary.
    for batch_size in [1, 2, 8192] {
        let dir = tempfile::tempdir().expect("tempdir");
        let exec = Executor::with_batch_size(1, 64 << 20, dir.path().to_path_buf(), batch_size)
            .expect("executor");
        for c in &cases {
            let got = run(&exec, c.batches.clone(), c.key).await;
            assert_eq!(got, c.want, "{} (batch size {batch_size})", c.name);
        }
    }
}

#[tokio::test]
async fn metadata_and_validation() {
    let (exec, _dir) = executor(64 << 20);
    let b = batch(&[
        ("host", Col::Tag(vec![Some("a"), Some("a")])),
        ("time", Col::Time(vec![7, 3])),
    ]);
    let out = compact(
        &exec,
        schema(),
        vec![b.clone(), b],
        &strs(&["host", "time"]),
    )
    .await
    .expect("compact");
    assert_eq!(out.input_rows(), 4);
    assert_eq!(out.time_range(), Some((3, 7)));
    assert_eq!(out.sort_columns(), ["host", "time"]);
    let names: Vec<&str> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        ["host", "time"],
        "columns absent from every batch are dropped"
    );
    assert_eq!(
        out.collect()
            .await
            .expect("rows")
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        2
    );

    let wrong = batch(&[
        ("host", Col::Tag(vec![Some("a")])),
        ("time", Col::Time(vec![1])),
        ("f", Col::I64(vec![Some(1)])),
    ]);
    let err = compact(&exec, schema(), vec![wrong], &[])
        .await
        .expect_err("type mismatch");
    assert!(
        matches!(&err, CompactError::ColumnType { input: 0, column, .. } if column == "f"),
        "{err}"
    );
}

/// Rows of the memory test: `hosts` series × `times` timestamps, then every
/// 10th row again with `f` negated (must win).
fn big_input(hosts: usize, times: usize) -> Vec<RecordBatch> {
    let names: Vec<String> = (0..hosts).map(|h| format!("host-{h:05}")).collect();
    let mut out = Vec::new();
    let rows: Vec<(usize, usize)> = (0..times)
        .flat_map(|t| (0..hosts).map(move |h| (h, t)))
        .collect();
    let dups: Vec<(usize, usize)> = rows.iter().copied().step_by(10).collect();
    for (chunk, negate) in rows
        .chunks(5000)
        .map(|c| (c, false))
        .chain(dups.chunks(5000).map(|c| (c, true)))
    {
        out.push(batch(&[
            (
                "host",
                Col::Tag(
                    chunk
                        .iter()
                        .map(|&(h, _)| Some(names[h].as_str()))
                        .collect(),
                ),
            ),
            (
                "time",
                Col::Time(chunk.iter().map(|&(_, t)| t as i64).collect()),
            ),
            (
                "f",
                Col::F64(
                    chunk
                        .iter()
                        .map(|&(h, t)| {
                            Some(if negate { -1.0 } else { 1.0 } * (h * times + t) as f64)
                        })
                        .collect(),
                ),
            ),
            (
                "u",
                Col::U64(
                    chunk
                        .iter()
                        .map(|&(h, t)| Some((h * times + t) as u64))
                        .collect(),
                ),
            ),
        ]));
    }
    out
}

fn check_big_output(batches: &[RecordBatch], hosts: usize, times: usize) {
    let mut n = 0usize;
    for b in batches {
        let host = b.column_by_name("host").expect("host");
        let host = host.as_dictionary::<arrow::datatypes::Int32Type>();
        let names = host.values().as_string::<i32>();
        let time = b
            .column_by_name("time")
            .expect("time")
            .as_primitive::<TimestampNanosecondType>();
        let f = b
            .column_by_name("f")
            .expect("f")
            .as_primitive::<Float64Type>();
        let u = b
            .column_by_name("u")
            .expect("u")
            .as_primitive::<UInt64Type>();
        for r in 0..b.num_rows() {
            // Sorted output enumerates (host, time) in order, once each.
            let (h, t) = (n / times, n % times);
            let name = names.value(host.keys().value(r) as usize);
            assert_eq!(name, format!("host-{h:05}"), "row {n}");
            assert_eq!(time.value(r), t as i64, "row {n}");
            let id = h * times + t;
            let sign = if (t * hosts + h).is_multiple_of(10) {
                -1.0
            } else {
                1.0
            };
            assert_eq!(f.value(r), sign * id as f64, "row {n}");
            assert_eq!(u.value(r), id as u64, "row {n}");
            n += 1;
        }
    }
    assert_eq!(n, hosts * times);
}

#[tokio::test]
async fn input_four_times_the_memory_limit_spills_and_is_correct() {
    const LIMIT: usize = 4 << 20;
    let (hosts, times) = (1000, 600);
    let input = big_input(hosts, times);
    let input_bytes: usize = input.iter().map(RecordBatch::get_array_memory_size).sum();
    assert!(input_bytes >= 4 * LIMIT, "input is {input_bytes} bytes");

    let (exec, _dir) = executor(LIMIT);
    let mut out = compact(&exec, schema(), input, &strs(&["host", "time"]))
        .await
        .expect("compact");
    let mut batches = Vec::new();
    let first = out.next().await.expect("some output").expect("first batch");
    // The merge phase reads sorted runs back from disk.
    assert!(exec.spilled_bytes_now() > 0, "the sort spilled");
    batches.push(first);
    while let Some(b) = out.next().await {
        batches.push(b.expect("batch"));
    }
    check_big_output(&batches, hosts, times);
}

#[tokio::test]
async fn input_within_the_memory_limit_sorts_in_memory_and_is_correct() {
    // Over 2 × 64 Ki rows: several runs of the in-memory sort.
    let (hosts, times) = (600, 250);
    let input = big_input(hosts, times);
    let (exec, _dir) = executor(256 << 20);
    let out = compact(&exec, schema(), input, &strs(&["host", "time"]))
        .await
        .expect("compact");
    let batches = out.collect().await.expect("collect");
    assert_eq!(exec.spilled_bytes_now(), 0, "nothing spilled");
    check_big_output(&batches, hosts, times);
}

fn local_store() -> (Arc<dyn ObjectStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
    (Arc::new(store), dir)
}

#[tokio::test]
async fn write_parquet_round_trip() {
    let (exec, _dir) = executor(64 << 20);
    let (store, root) = local_store();
    let (hosts, times) = (50, 300);
    let out = compact(
        &exec,
        schema(),
        big_input(hosts, times),
        &strs(&["host", "time"]),
    )
    .await
    .expect("compact");
    let path = Path::from("ns/table/2024-01-01/file.parquet");
    let kv = vec![
        ("sluice.sort_key".to_string(), "host,time".to_string()),
        ("sluice.max_sequence_number".to_string(), "42".to_string()),
    ];
    let meta = write_parquet(Arc::clone(&store), &path, out, kv)
        .await
        .expect("write");
    assert_eq!(meta.row_count, (hosts * times) as u64);
    assert_eq!((meta.min_time, meta.max_time), (0, times as i64 - 1));

    let file_path = root.path().join("ns/table/2024-01-01/file.parquet");
    let on_disk = std::fs::metadata(&file_path).expect("file exists").len();
    // For checking with other readers by hand (e.g. pyarrow).
    if let Ok(keep) = std::env::var("SLUICE_COMPACT_KEEP_PARQUET") {
        std::fs::copy(&file_path, keep).expect("copy");
    }
    assert_eq!(meta.file_size_bytes, on_disk);

    let file = std::fs::File::open(&file_path).expect("open");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("reader");
    let md = reader.metadata().clone();
    let kv = md
        .file_metadata()
        .key_value_metadata()
        .expect("kv metadata");
    let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
    assert_eq!(get("sluice.sort_key").as_deref(), Some("host,time"));
    assert_eq!(get("sluice.max_sequence_number").as_deref(), Some("42"));
    let rg = md.row_group(0);
    let sorting = rg.sorting_columns().expect("sorting columns");
    let names: Vec<String> = sorting
        .iter()
        .map(|s| {
            md.file_metadata()
                .schema_descr()
                .column(s.column_idx as usize)
                .name()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["host", "time"]);
    for c in rg.columns() {
        assert!(
            matches!(c.compression(), parquet::basic::Compression::ZSTD(_)),
            "{}",
            c.column_path()
        );
        assert!(
            c.statistics().is_some(),
            "statistics for {}",
            c.column_path()
        );
        // Tags are dictionary-encoded; `f` and `u` (every value distinct)
        // skip the dictionary from the first page on.
        let name = c.column_path().string();
        assert_eq!(
            c.dictionary_page_offset().is_some(),
            name == "host",
            "dictionary page for {name}"
        );
    }
    let schema = reader.schema().clone();
    assert_eq!(
        schema.field_with_name("host").expect("host").data_type(),
        &tag_type()
    );
    assert_eq!(
        schema.field_with_name("time").expect("time").data_type(),
        &time_type()
    );
    let batches: Vec<RecordBatch> = reader
        .build()
        .expect("build")
        .collect::<Result<_, _>>()
        .expect("read");
    check_big_output(&batches, hosts, times);
}

#[tokio::test]
async fn failed_compaction_leaves_no_file() {
    let (exec, _dir) = executor(64 << 20);
    let (store, root) = local_store();
    // `time` has nulls in the second batch: fails validation up front.
    let bad = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("time", time_type(), true),
        ])),
        vec![Arc::new(
            arrow::array::TimestampNanosecondArray::from(vec![None, Some(1)]).with_timezone("UTC"),
        )],
    )
    .expect("batch");
    let err = compact(&exec, schema(), vec![bad], &[])
        .await
        .expect_err("null time");
    assert!(
        matches!(
            err,
            CompactError::ColumnType { .. } | CompactError::NullTime { .. }
        ),
        "{err}"
    );

    // A stream error mid-write aborts the upload: nothing at the path.
    let ok = compact(&exec, schema(), big_input(10, 10), &[])
        .await
        .expect("compact");
    let (handle, mut job) = ok.into_job();
    job.batches = job
        .batches
        .take(1)
        .chain(futures::stream::once(async {
            Err(CompactError::Schema("injected".into()))
        }))
        .boxed();
    let out = CompactOutput::new(job.schema, job.sort_columns, 0, None, job.batches, handle);
    let path = Path::from("x.parquet");
    let err = write_parquet(Arc::clone(&store), &path, out, vec![])
        .await
        .expect_err("injected");
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(!root.path().join("x.parquet").exists());
}

#[tokio::test]
async fn compact_sources_later_sources_win() {
    let (exec, _dir) = executor(64 << 20);
    let (store, _root) = local_store();
    let key = strs(&["host", "time"]);
    let write = |batches: Vec<RecordBatch>, name: &'static str| {
        let store = Arc::clone(&store);
        let exec = &exec;
        let key = key.clone();
        async move {
            let out = compact(exec, schema(), batches, &key)
                .await
                .expect("compact");
            let path = Path::from(name);
            write_parquet(store, &path, out, vec![])
                .await
                .expect("write");
            path
        }
    };
    use Col::*;
    let older = write(
        vec![batch(&[
            (
                "host",
                Tag(vec![Some("a"), Some("a"), Some("b"), Some("c")]),
            ),
            ("time", Time(vec![1, 2, 1, 50])),
            ("f", F64(vec![Some(1.0), Some(1.0), Some(1.0), Some(1.0)])),
            ("i", I64(vec![Some(10), Some(10), None, Some(10)])),
        ])],
        "older.parquet",
    )
    .await;
    let newer = write(
        vec![batch(&[
            ("host", Tag(vec![Some("a"), Some("b")])),
            ("time", Time(vec![1, 1])),
            ("f", F64(vec![Some(2.0), None])),
            ("s", Str(vec![Some("n"), Some("n")])),
        ])],
        "newer.parquet",
    )
    .await;
    let buffered = batch(&[
        ("host", Tag(vec![Some("a"), Some("d")])),
        ("time", Time(vec![1, 3])),
        ("f", F64(vec![Some(3.0), Some(3.0)])),
    ]);
    let sources = || {
        vec![
            Source::Parquet {
                store: Arc::clone(&store),
                path: older.clone(),
            },
            Source::Parquet {
                store: Arc::clone(&store),
                path: newer.clone(),
            },
            Source::Batches(vec![buffered.clone()]),
        ]
    };

    let all = compact_sources(&exec, schema(), sources(), &key, None, None)
        .await
        .expect("sources");
    let got: Vec<String> = all
        .collect()
        .await
        .expect("rows")
        .iter()
        .flat_map(rows)
        .collect();
    assert_eq!(
        got,
        [
            "b=∅ f=3 host=a i=10 region=∅ s=n time=1 u=∅",
            "b=∅ f=1 host=a i=10 region=∅ s=∅ time=2 u=∅",
            "b=∅ f=1 host=b i=∅ region=∅ s=n time=1 u=∅",
            "b=∅ f=1 host=c i=10 region=∅ s=∅ time=50 u=∅",
            "b=∅ f=3 host=d i=∅ region=∅ s=∅ time=3 u=∅",
        ]
    );

    // Projection without the key columns, and a time range [1, 3).
    let some = compact_sources(
        &exec,
        schema(),
        sources(),
        &key,
        Some(strs(&["i", "f"])),
        Some((1, 3)),
    )
    .await
    .expect("sources");
    let names: Vec<&str> = some
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["i", "f"]);
    let got: Vec<String> = some
        .collect()
        .await
        .expect("rows")
        .iter()
        .flat_map(rows)
        .collect();
    assert_eq!(got, ["i=10 f=3", "i=10 f=1", "i=∅ f=1"]);

    // A missing file is an error naming it.
    let missing = vec![Source::Parquet {
        store: Arc::clone(&store),
        path: Path::from("gone.parquet"),
    }];
    let out = compact_sources(&exec, schema(), missing, &key, None, None)
        .await
        .expect("lazy");
    let err = out.collect().await.expect_err("missing file");
    assert!(
        matches!(&err, CompactError::ReadParquet { input: 0, path, .. } if path == "gone.parquet"),
        "{err}"
    );
}

#[tokio::test]
async fn dropping_the_output_cancels_the_pipeline() {
    let (exec, _dir) = executor(64 << 20);
    let mut out = compact(
        &exec,
        schema(),
        big_input(200, 100),
        &strs(&["host", "time"]),
    )
    .await
    .expect("compact");
    let first = out.next().await.expect("one").expect("batch");
    assert!(first.num_rows() > 0);
    drop(out);
    // The executor stays usable.
    let again = compact(&exec, schema(), big_input(2, 2), &[])
        .await
        .expect("compact");
    assert_eq!(
        again
            .collect()
            .await
            .expect("rows")
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        4
    );
}

/// Files whose tag chunks took [`super::tag_chunk`], read by other readers:
/// pyarrow and DataFusion (with pruning by statistics and page index).
mod tag_chunk_readers {
    use std::process::Command;

    use bytes::Bytes;
    use datafusion::physical_plan::metrics::MetricValue;
    use datafusion::physical_plan::{ExecutionPlan, collect};
    use datafusion::prelude::{Expr, ParquetReadOptions, SessionContext, col, lit};

    use super::super::tag_chunk::tests::{
        encode, names, props, sorted_dictionaries, tag_batches, xorshift,
    };

    const ROWS: usize = 60_000;
    const PAGE_ROWS: usize = 4096;
    const ROW_GROUP_ROWS: usize = 25_000;

    /// Tag values per row: `t0` sorted over 3,000 values (runs of 20, a
    /// leading null run), `t1` random over 70,000 values (17-bit keys,
    /// ~10% nulls), `t2` all null.
    fn input() -> (Vec<Vec<String>>, Vec<Vec<Option<u32>>>) {
        let mut rand = xorshift(0x2545_f491_4f6c_dd1d);
        let keys = vec![
            (0..ROWS)
                .map(|i| (i >= 500).then(|| ((i - 500) / 20) as u32))
                .collect(),
            (0..ROWS)
                .map(|_| {
                    let r = rand();
                    (!r.is_multiple_of(10)).then_some((r >> 16) as u32 % 70_000)
                })
                .collect(),
            vec![None; ROWS],
        ];
        (vec![names(3000), names(70_000), names(5)], keys)
    }

    async fn file(dir: &std::path::Path) -> (std::path::PathBuf, Vec<Vec<Option<String>>>) {
        let (values, keys) = input();
        let batches = tag_batches(&values, &keys, 5000);
        let bytes: Bytes = encode(&batches, props(PAGE_ROWS), ROW_GROUP_ROWS, true).await;
        for group in sorted_dictionaries(&bytes) {
            assert_eq!(group[..3], [true; 3], "tag chunk path taken");
        }
        let path = dir.join("tags.parquet");
        std::fs::write(&path, &bytes).expect("write file");
        let strings = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| k.iter().map(|k| k.map(|k| v[k as usize].clone())).collect())
            .collect();
        (path, strings)
    }

    const PYARROW_SCRIPT: &str = r#"
import json, sys
import pyarrow.parquet as pq

f = pq.ParquetFile(sys.argv[1])
md = f.metadata
groups = []
for g in range(md.num_row_groups):
    rg = md.row_group(g)
    cols = []
    for c in range(rg.num_columns):
        col = rg.column(c)
        if col.path_in_schema == "time":
            continue
        s = col.statistics
        mm = s is not None and s.has_min_max
        cols.append({
            "name": col.path_in_schema,
            "min": s.min if mm else None,
            "max": s.max if mm else None,
            "null_count": s.null_count if s is not None else None,
        })
    groups.append({"rows": rg.num_rows, "columns": cols})
t = f.read()
columns = {n: t.column(n).to_pylist() for n in t.column_names if n != "time"}
filtered = pq.read_table(sys.argv[1], filters=[("t0", "=", sys.argv[2])]).num_rows
print(json.dumps({"groups": groups, "columns": columns, "filtered": filtered}))
"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pyarrow_reads_values_and_statistics() {
        let Some(python) = std::env::var_os("SLUICE_TEST_PYTHON") else {
            println!("NOTICE: SLUICE_TEST_PYTHON is not set; skipping the pyarrow check");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, want) = file(dir.path()).await;
        let out = Command::new(python)
            .args(["-c", PYARROW_SCRIPT])
            .arg(&path)
            .arg("v0001234")
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "pyarrow failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");

        for (c, values) in want.iter().enumerate() {
            let column: Vec<Option<String>> =
                serde_json::from_value(got["columns"][format!("t{c}")].clone()).expect("column");
            assert!(column == *values, "t{c} values differ");
        }
        let groups = got["groups"].as_array().expect("groups");
        assert_eq!(groups.len(), ROWS.div_ceil(ROW_GROUP_ROWS));
        for (g, group) in groups.iter().enumerate() {
            let rows = g * ROW_GROUP_ROWS..((g + 1) * ROW_GROUP_ROWS).min(ROWS);
            assert_eq!(group["rows"].as_u64(), Some(rows.len() as u64));
            for (c, values) in want.iter().enumerate() {
                let stats = &group["columns"][c];
                assert_eq!(stats["name"], format!("t{c}"));
                let present = values[rows.clone()].iter().flatten();
                let nulls = values[rows.clone()].iter().filter(|v| v.is_none()).count();
                assert_eq!(stats["null_count"].as_u64(), Some(nulls as u64), "{g}/{c}");
                assert_eq!(
                    stats["min"].as_str(),
                    present.clone().min().map(String::as_str)
                );
                assert_eq!(stats["max"].as_str(), present.max().map(String::as_str));
            }
        }
        let matching = want[0]
            .iter()
            .flatten()
            .filter(|v| *v == "v0001234")
            .count();
        assert_eq!(matching, 20);
        assert_eq!(got["filtered"].as_u64(), Some(matching as u64));
    }

    /// Rows (and rows pruned by the page index) of the file's rows where
    /// `predicate` holds.
    async fn query(ctx: &SessionContext, path: &str, predicate: Expr) -> (usize, usize) {
        let plan = ctx
            .read_parquet(path, ParquetReadOptions::default())
            .await
            .expect("read")
            .filter(predicate)
            .expect("filter")
            .create_physical_plan()
            .await
            .expect("physical plan");
        let batches = collect(plan.clone(), ctx.task_ctx()).await.expect("query");
        fn pruned(plan: &dyn ExecutionPlan) -> usize {
            let own = plan
                .metrics()
                .and_then(|m| m.sum_by_name("page_index_rows_pruned"))
                .map_or(0, |v| match v {
                    MetricValue::PruningMetrics {
                        pruning_metrics, ..
                    } => pruning_metrics.pruned(),
                    _ => 0,
                });
            own + plan
                .children()
                .iter()
                .map(|c| pruned(c.as_ref()))
                .sum::<usize>()
        }
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        (rows, pruned(plan.as_ref()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datafusion_prunes_by_tag_without_losing_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, want) = file(dir.path()).await;
        let path = path.to_str().expect("utf-8 path");
        let ctx = SessionContext::new();
        let count = |c: usize, f: &dyn Fn(Option<&str>) -> bool| {
            want[c].iter().filter(|v| f(v.as_deref())).count()
        };
        let is = |v: &'static str| move |x: Option<&str>| x == Some(v);
        // First and last values, values at page and row group edges, one
        // that is absent, a range, nulls.
        let cases: Vec<(Expr, usize)> = vec![
            (col("t0").eq(lit("v0000000")), count(0, &is("v0000000"))),
            (col("t0").eq(lit("v0002974")), count(0, &is("v0002974"))),
            (col("t0").eq(lit("v0001225")), count(0, &is("v0001225"))),
            (col("t0").eq(lit("v0001226")), count(0, &is("v0001226"))),
            (col("t0").eq(lit("v0000180")), count(0, &is("v0000180"))),
            (col("t0").eq(lit("nope")), 0),
            (
                col("t0")
                    .gt_eq(lit("v0001000"))
                    .and(col("t0").lt(lit("v0001500"))),
                count(0, &|v| {
                    v.is_some_and(|v| ("v0001000".."v0001500").contains(&v))
                }),
            ),
            (col("t0").is_null(), count(0, &|v| v.is_none())),
            (col("t1").eq(lit("v0069999")), count(1, &is("v0069999"))),
            (col("t1").is_null(), count(1, &|v| v.is_none())),
            (col("t2").eq(lit("v0000001")), 0),
            (col("t2").is_null(), ROWS),
        ];
        let mut pruned = 0;
        for (predicate, expected) in cases {
            let what = predicate.to_string();
            let (rows, p) = query(&ctx, path, predicate).await;
            assert_eq!(rows, expected, "{what}");
            pruned += p;
        }
        // The page index was used (so a wrong one would have lost rows).
        assert!(pruned > 0, "no page was pruned");
    }
}
