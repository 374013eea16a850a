//! `compact` against a naive in-memory reference on random small inputs
//! (few series and timestamps, so duplicates are frequent; random column
//! subsets per batch; random sort keys; tiny sorted batches so groups
//! cross batch boundaries).

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use proptest::prelude::*;

use super::pipeline::compact_with;
use super::test_util::{Col, batch, rows, table_schema};
use super::{Executor, Source, TIME_COLUMN, compact, compact_sources};

const HOSTS: [&str; 3] = ["a", "b", "c"];
const REGIONS: [&str; 2] = ["x", "y"];
const STRS: [&str; 3] = ["p", "q", "r"];

#[derive(Debug, Clone)]
struct Row {
    host: Option<usize>,
    region: Option<usize>,
    time: i64,
    f: Option<i32>,
    i: Option<i64>,
    s: Option<usize>,
}

#[derive(Debug, Clone)]
struct Batch {
    /// Which optional columns the batch has: host, region, f, i, s.
    has: [bool; 5],
    rows: Vec<Row>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        proptest::option::weighted(0.8, 0..HOSTS.len()),
        proptest::option::weighted(0.7, 0..REGIONS.len()),
        0i64..3,
        proptest::option::of(-4i32..4),
        proptest::option::of(0i64..5),
        proptest::option::of(0..STRS.len()),
    )
        .prop_map(|(host, region, time, f, i, s)| Row {
            host,
            region,
            time,
            f,
            i,
            s,
        })
}

fn input() -> impl Strategy<Value = Vec<Batch>> {
    proptest::collection::vec(
        (any::<[bool; 5]>(), proptest::collection::vec(row(), 0..7))
            .prop_map(|(has, rows)| Batch { has, rows }),
        0..5,
    )
}

fn sort_key() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        Just(vec![]),
        Just(vec!["host"]),
        Just(vec!["host", "time"]),
        Just(vec!["region", "host", "time"]),
        Just(vec!["host", "region", "time"]),
        Just(vec!["time"]),
        Just(vec!["region", "time", "host"]),
    ]
    .prop_map(|v| v.into_iter().map(str::to_string).collect())
}

fn schema() -> SchemaRef {
    table_schema(
        &["host", "region"],
        &[
            ("f", DataType::Float64),
            ("i", DataType::Int64),
            ("s", DataType::Utf8),
        ],
    )
}

const NAMES: [&str; 5] = ["host", "region", "f", "i", "s"];

fn to_batch(b: &Batch) -> RecordBatch {
    let r = &b.rows;
    let mut cols: Vec<(&str, Col<'static>)> =
        vec![(TIME_COLUMN, Col::Time(r.iter().map(|x| x.time).collect()))];
    let all = [
        Col::Tag(r.iter().map(|x| x.host.map(|h| HOSTS[h])).collect()),
        Col::Tag(r.iter().map(|x| x.region.map(|g| REGIONS[g])).collect()),
        Col::F64(r.iter().map(|x| x.f.map(|v| f64::from(v) / 2.0)).collect()),
        Col::I64(r.iter().map(|x| x.i).collect()),
        Col::Str(r.iter().map(|x| x.s.map(|s| STRS[s])).collect()),
    ];
    for ((name, col), has) in NAMES.iter().zip(all).zip(b.has) {
        if has {
            cols.push((name, col));
        }
    }
    batch(&cols)
}

/// The obvious implementation: a map from key to merged fields.
fn reference(input: &[Batch], sort_key: &[String]) -> Vec<String> {
    let present = |name: &str| {
        name == TIME_COLUMN
            || input
                .iter()
                .any(|b| b.has[NAMES.iter().position(|n| *n == name).expect("known")])
    };
    // Effective order: key tags/time (present), other present tags, time.
    let mut order: Vec<&str> = Vec::new();
    for k in sort_key {
        if ["host", "region", TIME_COLUMN].contains(&k.as_str())
            && present(k)
            && !order.contains(&k.as_str())
        {
            order.push(k);
        }
    }
    for t in ["host", "region", TIME_COLUMN] {
        if present(t) && !order.contains(&t) {
            order.push(t);
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Part {
        Tag(Option<&'static str>),
        Time(i64),
    }
    let mut groups: BTreeMap<Vec<Part>, BTreeMap<&str, String>> = BTreeMap::new();
    for b in input {
        for r in &b.rows {
            let host = if b.has[0] {
                r.host.map(|h| HOSTS[h])
            } else {
                None
            };
            let region = if b.has[1] {
                r.region.map(|g| REGIONS[g])
            } else {
                None
            };
            let key: Vec<Part> = order
                .iter()
                .map(|c| match *c {
                    "host" => Part::Tag(host),
                    "region" => Part::Tag(region),
                    _ => Part::Time(r.time),
                })
                .collect();
            let fields = groups.entry(key).or_default();
            fields.insert("host", host.unwrap_or("∅").to_string());
            fields.insert("region", region.unwrap_or("∅").to_string());
            fields.insert(TIME_COLUMN, r.time.to_string());
            if let (true, Some(v)) = (b.has[2], r.f) {
                fields.insert("f", (f64::from(v) / 2.0).to_string());
            }
            if let (true, Some(v)) = (b.has[3], r.i) {
                fields.insert("i", v.to_string());
            }
            if let (true, Some(v)) = (b.has[4], r.s) {
                fields.insert("s", STRS[v].to_string());
            }
        }
    }
    // Output columns: the schema's (sorted by name) present in some batch.
    let columns: Vec<&str> = ["f", "host", "i", "region", "s", TIME_COLUMN]
        .into_iter()
        .filter(|c| present(c))
        .collect();
    groups
        .values()
        .map(|fields| {
            columns
                .iter()
                .map(|c| format!("{c}={}", fields.get(c).map(String::as_str).unwrap_or("∅")))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn compact_matches_reference() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let executors: Vec<Executor> = [1, 3, 8192]
        .into_iter()
        .map(|n| {
            Executor::with_batch_size(1, 64 << 20, dir.path().to_path_buf(), n).expect("executor")
        })
        .collect();
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(input in input(), key in sort_key(), e in 0..3usize)| {
        let batches: Vec<RecordBatch> = input.iter().map(to_batch).collect();
        let want = reference(&input, &key);
        // Tags ranked (all input known up front).
        let got: Vec<String> = rt.block_on(async {
            let out = compact(&executors[e], schema(), batches.clone(), &key).await.expect("compact");
            out.collect().await.expect("collect")
        })
        .iter()
        .flat_map(rows)
        .collect();
        prop_assert_eq!(&got, &want);
        // The same through SortExec (the path for input over the memory
        // pool): identical rows, in the same order.
        let got: Vec<String> = rt.block_on(async {
            let out = compact_with(&executors[e], schema(), batches.clone(), &key, false)
                .await
                .expect("compact");
            out.collect().await.expect("collect")
        })
        .iter()
        .flat_map(rows)
        .collect();
        prop_assert_eq!(&got, &want);
        // Tags sorted as dictionaries (streamed sources), one source per
        // batch, projected to the columns `compact` keeps.
        let present: Vec<String> = schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| batches.iter().any(|b| b.schema_ref().column_with_name(n).is_some()))
            .collect();
        let sources = batches.into_iter().map(|b| Source::Batches(vec![b])).collect();
        let got: Vec<String> = rt.block_on(async {
            let out = compact_sources(&executors[e], schema(), sources, &key, Some(present), None)
                .await
                .expect("compact_sources");
            out.collect().await.expect("collect")
        })
        .iter()
        .flat_map(rows)
        .collect();
        prop_assert_eq!(got, want);
    });
}

/// A small deterministic generator for the tag chunk inputs below (whole
/// dictionaries of random strings are too slow to shrink usefully).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// Sorted distinct strings: lengths around the 64-byte statistics cut,
/// multi-byte characters, and one that cannot be incremented.
fn dictionary(rng: &mut SplitMix, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n)
        .map(|_| {
            let len = rng.pick(&[0usize, 1, 2, 5, 12, 63, 64, 65, 100]);
            (0..len)
                .map(|_| rng.pick(&['a', 'b', 'z', 'é', '\u{7FF}', '\u{10FFFF}']))
                .collect()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The tag chunk path against the Arrow writer on random sorted tag
/// columns (like a persist's output: sorted by the tags, nulls first):
/// same decoded rows, chunk statistics, level histograms and page index,
/// across random batch, page and row group sizes.
#[test]
fn tag_chunks_match_the_arrow_writer() {
    use super::tag_chunk::tests::{check_against_arrow, tag_batches};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        seed in any::<u64>(),
        columns in 1usize..4,
        n in 1usize..3000,
        batch_rows in 1usize..500,
        page_rows in 1usize..600,
        row_group_rows in 1usize..2000,
    )| {
        let mut rng = SplitMix(seed);
        let values: Vec<Vec<String>> = (0..columns)
            .map(|_| {
                let size = rng.pick(&[0usize, 1, 2, 3, 17, 300, 5000]);
                dictionary(&mut rng, size)
            })
            .collect();
        let null_percent: Vec<u64> = (0..columns).map(|_| rng.pick(&[0, 1, 30, 100])).collect();
        let mut rows: Vec<Vec<Option<u32>>> = (0..n)
            .map(|_| {
                values
                    .iter()
                    .zip(&null_percent)
                    .map(|(v, p)| {
                        (!v.is_empty() && rng.next() % 100 >= *p)
                            .then(|| (rng.next() % v.len() as u64) as u32)
                    })
                    .collect()
            })
            .collect();
        rows.sort();
        let keys: Vec<Vec<Option<u32>>> = (0..columns)
            .map(|c| rows.iter().map(|r| r[c]).collect())
            .collect();
        let batches = tag_batches(&values, &keys, batch_rows);
        rt.block_on(check_against_arrow(&batches, page_rows, row_group_rows));
    });
}
