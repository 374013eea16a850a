//! Hand-run throughput measurement (ignored by default):
//!
//! ```text
//! cargo test --lib throughput -- --ignored --nocapture
//! ```
//!
//! A 1,000,000-row partition shaped like TSBS `cpu` (10 tags, 10 float
//! fields as full-precision random walks in [0, 100]; 1,000 hosts × 1,000
//! timestamps 10 s apart), plus 10% duplicate rows sent again later with
//! other values, arriving in batches of 5,000 rows.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringDictionaryBuilder, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use super::test_util::{tag_type, time_type};
use super::{CompactOutput, Executor, compact, sort_key, write_parquet};

const HOSTS: usize = 1000;
const TIMES: usize = 1000;
const BATCH_ROWS: usize = 5000;
const TAGS: [&str; 10] = [
    "arch",
    "datacenter",
    "hostname",
    "os",
    "rack",
    "region",
    "service",
    "service_environment",
    "service_version",
    "team",
];
const FIELDS: [&str; 10] = [
    "usage_guest",
    "usage_guest_nice",
    "usage_idle",
    "usage_iowait",
    "usage_irq",
    "usage_nice",
    "usage_softirq",
    "usage_steal",
    "usage_system",
    "usage_user",
];
/// Distinct values per tag, as in TSBS (hostname: one per host).
const CARDINALITY: [usize; 10] = [2, 60, HOSTS, 3, 100, 9, 20, 2, 2, 3];

fn schema() -> SchemaRef {
    let mut fields: Vec<Field> = TAGS
        .iter()
        .map(|t| Field::new(*t, tag_type(), true))
        .collect();
    fields.extend(
        FIELDS
            .iter()
            .map(|f| Field::new(*f, DataType::Float64, true)),
    );
    fields.push(Field::new("time", time_type(), false));
    fields.sort_by(|a, b| a.name().cmp(b.name()));
    Arc::new(Schema::new(fields))
}

/// xorshift: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A deterministic random walk in [0, 100] for (host, field), at step `t`
/// (a smooth function of `t`, so duplicates sent later differ slightly).
fn walk(h: usize, k: usize, t: usize) -> f64 {
    let phase = (h * 31 + k * 17) as f64;
    let x = 50.0
        + 30.0 * ((t as f64 + phase) / 37.0).sin()
        + 15.0 * ((t as f64 * 1.7 + phase) / 5.3).cos();
    let noise = ((h * 7919 + k * 104_729 + t * 1_299_709) % 1_000_003) as f64 / 1_000_003.0;
    (x + noise).clamp(0.0, 100.0)
}

fn input() -> Vec<RecordBatch> {
    let schema = schema();
    let tag_values: Vec<Vec<String>> = TAGS
        .iter()
        .zip(CARDINALITY)
        .map(|(t, n)| (0..n).map(|v| format!("{t}_{v}")).collect())
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rows: Vec<(usize, usize, bool)> = (0..TIMES)
        .flat_map(|t| (0..HOSTS).map(move |h| (h, t, false)))
        .collect();
    let dups: Vec<(usize, usize, bool)> = (0..rows.len() / 10)
        .map(|_| {
            let (h, t, _) = rows[(rng.next() % rows.len() as u64) as usize];
            (h, t, true)
        })
        .collect();
    rows.extend(dups);
    rows.chunks(BATCH_ROWS)
        .map(|chunk| {
            let mut columns: Vec<(String, ArrayRef)> = Vec::new();
            for (k, t) in TAGS.iter().enumerate() {
                let mut b = StringDictionaryBuilder::<Int32Type>::new();
                for &(h, _, _) in chunk {
                    // Host h's tag set is fixed (hostname = h).
                    let v = if *t == "hostname" {
                        h
                    } else {
                        (h * 7 + k) % CARDINALITY[k]
                    };
                    b.append_value(&tag_values[k][v]);
                }
                columns.push((t.to_string(), Arc::new(b.finish())));
            }
            for (k, f) in FIELDS.iter().enumerate() {
                let v: Float64Array = chunk
                    .iter()
                    .map(|&(h, t, dup)| Some(walk(h, k, t) + if dup { 0.25 } else { 0.0 }))
                    .collect();
                columns.push((f.to_string(), Arc::new(v)));
            }
            let time = TimestampNanosecondArray::from_iter_values(
                chunk
                    .iter()
                    .map(|&(_, t, _)| 1_700_000_000_000_000_000 + t as i64 * 10_000_000_000),
            )
            .with_timezone("UTC");
            columns.push(("time".to_string(), Arc::new(time)));
            columns.sort_by(|a, b| a.0.cmp(&b.0));
            RecordBatch::try_new(
                Arc::clone(&schema),
                columns.into_iter().map(|(_, c)| c).collect(),
            )
            .expect("batch")
        })
        .collect()
}

/// CPU time of this process so far (user + system), from /proc: wall time
/// on a shared machine mostly measures the neighbours.
fn cpu_time() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based) of the whole line;
    // `rest` starts at field 3. Clock ticks are 10 ms on Linux.
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    std::time::Duration::from_millis(ticks * 10)
}

struct Phase(Instant, std::time::Duration);
impl Phase {
    fn start() -> Self {
        Self(Instant::now(), cpu_time())
    }
    fn stop(&self, name: &str, rows: usize) {
        let (wall, cpu) = (self.0.elapsed(), cpu_time() - self.1);
        println!(
            "{name:<22} wall {wall:>10.3?} ({:>9.0} rows/s)   cpu {cpu:>10.3?} ({:>9.0} rows/s)",
            rows as f64 / wall.as_secs_f64(),
            rows as f64 / cpu.as_secs_f64().max(1e-9),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore = "throughput measurement; run by hand"]
async fn throughput() {
    let input = input();
    let rows_in: usize = input.iter().map(RecordBatch::num_rows).sum();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("store"));
    // SLUICE_COMPACT_THREADS: executor threads (default 1).
    let threads = std::env::var("SLUICE_COMPACT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let exec = Executor::new(threads, 1 << 30, dir.path().join("spill")).expect("executor");
    println!("executor threads: {threads}");

    let p = Phase::start();
    let key = sort_key(&input, &[]);
    p.stop("sort_key", rows_in);

    // For profiling one phase: SLUICE_COMPACT_PROFILE=compact|write runs
    // it a few more times.
    let profile = std::env::var("SLUICE_COMPACT_PROFILE").unwrap_or_default();
    for _ in 0..if profile == "compact" { 5 } else { 0 } {
        let out = compact(&exec, schema(), input.clone(), &key)
            .await
            .expect("compact");
        drop(out.collect().await.expect("collect"));
    }

    // Sort + dedup alone.
    let p = Phase::start();
    let out = compact(&exec, schema(), input.clone(), &key)
        .await
        .expect("compact");
    let sorted = out.collect().await.expect("collect");
    p.stop("compact (sort+dedup)", rows_in);
    let rows_out: usize = sorted.iter().map(RecordBatch::num_rows).sum();

    // Parquet encode + write alone, from the sorted batches.
    for i in 0..if profile == "write" { 5 } else { 0 } {
        let pre = futures::stream::iter(sorted.clone().into_iter().map(Ok)).boxed();
        let out = CompactOutput::new(
            sorted[0].schema(),
            key.clone(),
            0,
            None,
            pre,
            exec.handle().clone(),
        );
        write_parquet(
            store.clone(),
            &Path::from(format!("p{i}.parquet")),
            out,
            vec![],
        )
        .await
        .expect("write");
    }
    let p = Phase::start();
    let handle = exec.handle().clone();
    let out_schema = sorted[0].schema();
    let pre = futures::stream::iter(sorted.into_iter().map(Ok)).boxed();
    let out = CompactOutput::new(out_schema, key.clone(), 0, None, pre, handle);
    write_parquet(store.clone(), &Path::from("encode.parquet"), out, vec![])
        .await
        .expect("write");
    p.stop("write_parquet", rows_in);

    // End to end, as the persist worker runs it.
    let p = Phase::start();
    let key2 = sort_key(&input, &[]);
    let out = compact(&exec, schema(), input, &key2)
        .await
        .expect("compact");
    let meta = write_parquet(store, &Path::from("all.parquet"), out, vec![])
        .await
        .expect("write");
    p.stop("end to end", rows_in);
    println!("key: {key:?}");
    println!(
        "rows in {rows_in}, rows out {rows_out}, file {} bytes",
        meta.file_size_bytes
    );
    assert_eq!(rows_out, HOSTS * TIMES);
}

#[test]
#[ignore = "throughput measurement; run by hand"]
fn throughput_key_packing() {
    let input = input();
    let rows_in: usize = input.iter().map(RecordBatch::num_rows).sum();
    let key = sort_key(&input, &[]);
    let cols: Vec<String> = schema().fields().iter().map(|f| f.name().clone()).collect();
    let p = Phase::start();
    let layout = super::layout::Layout::new(schema(), &cols, &key, Some(&input)).expect("layout");
    p.stop("layout (collect ranks)", rows_in);
    let p = Phase::start();
    let mut next = 0;
    for (i, b) in input.iter().enumerate() {
        layout.align(i, b, &mut next).expect("align");
    }
    p.stop("align (encode keys)", rows_in);
}
