//! The persist job on one partition of 1 M TSBS rows plus 10% duplicates
//! (rows rewritten later with other field values, as 5,000-line writes):
//!
//! - `persist/job`: sort key, sort + dedup on the persist executor, zstd
//!   Parquet written through a local-filesystem object store — what a persist
//!   worker does, without the catalog bookkeeping. The input batches are the
//!   buffer's own (written through the write path), so their layout
//!   (dictionary tags, 5,000-row batches) is the real one. Throughput counts
//!   input rows.
//! - `persist/replay_then_persist`: start-up after a crash with that data
//!   only in the WAL: replay the segment into a fresh buffer, then persist
//!   the partition.
//! - `persist/job_gauges`: the job on the same rows without duplicates,
//!   each host's fields drawn from 16 points as `sluice-loadgen` sends
//!   them (target 1's data): values repeat, so the float fields keep
//!   their Parquet dictionaries.
//!
//! Executor threads: `SLUICE_BENCH_PERSIST_THREADS` (default 1, the figure
//! per worker thread; the server's default is one per core). Sort memory:
//! 512 MiB, the server's default.
//!
//! `cargo bench -p sluice-ingester --features benches --bench persist`

mod common;

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use sluice_ingester::internal_implementation_details::{BenchIngester, BenchPersister};

const HOSTS: u64 = 1000;

fn persist(c: &mut Criterion) {
    let lines = common::size(5000, 100);
    let batches = common::size(200, 4);
    let rows = lines * batches;
    let dups = rows / 10;
    // Originals in TSBS order, then the rewrites.
    let mut bodies: Vec<Bytes> = (0..batches)
        .map(|i| Bytes::from(common::tsbs_lines(i * lines, lines, HOSTS)))
        .collect();
    bodies.extend((0..dups.div_ceil(lines)).map(|i| {
        let n = lines.min(dups - i * lines);
        Bytes::from(common::tsbs_duplicate_lines(i, n, rows, HOSTS))
    }));
    let rows_in = rows + dups;

    let ing = BenchIngester::new();
    for b in &bodies {
        assert!(ing.write_lp("bench", b.clone()) > 0, "write refused");
    }
    let input = ing.buffered_batches();
    assert_eq!(
        input.iter().map(|b| b.num_rows() as u64).sum::<u64>(),
        rows_in
    );

    let threads = std::env::var("SLUICE_BENCH_PERSIST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let dir = common::bench_dir("sluice-persist-bench-");
    let persister = BenchPersister::new(threads, 512 << 20, dir.path());
    // Duplicates collapse to exactly one row per (host, time).
    let first = persister.persist(input.clone()).expect("persist");
    assert_eq!(first.rows_out, rows, "dedup result");
    eprintln!(
        "persist: {rows_in} rows in ({} batches, {dups} duplicates) -> {} rows, {} bytes of Parquet, {threads} executor thread(s)",
        input.len(),
        first.rows_out,
        first.file_bytes
    );

    let mut g = c.benchmark_group("persist");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(if common::smoke() { 1 } else { 20 }));
    g.throughput(Throughput::Elements(rows_in));
    bench_job(
        &mut g,
        &format!("job/{rows_in}_rows"),
        &persister,
        &input,
        rows,
    );

    let wal_dir = dir.path().join("wal");
    // Encoded first: `write_segment` runs its own runtime.
    let records: Vec<Bytes> = bodies
        .into_iter()
        .map(|b| ing.wal_record("bench", b))
        .collect();
    let segment = common::write_segment(&wal_dir, records);
    g.bench_function(format!("replay_then_persist/{rows_in}_rows"), |b| {
        b.iter_batched(
            || ing.restarted(),
            |ing| {
                let (_, replayed) = ing.replay_segment(&segment).expect("replay");
                assert_eq!(replayed, rows_in);
                let r = persister.persist(ing.buffered_batches()).expect("persist");
                assert_eq!(r.rows_out, rows);
                ing
            },
            BatchSize::PerIteration,
        )
    });

    // Target 1's data: gauges with 16 points per host.
    let gauges = BenchIngester::new();
    for i in 0..batches {
        let body = common::tsbs_gauge_lines(i * lines, lines, HOSTS, 16);
        assert!(
            gauges.write_lp("bench", Bytes::from(body)) > 0,
            "write refused"
        );
    }
    let input = gauges.buffered_batches();
    let first = persister.persist(input.clone()).expect("persist");
    assert_eq!(first.rows_out, rows, "no duplicates");
    eprintln!(
        "persist gauges: {rows} rows -> {} bytes of Parquet",
        first.file_bytes
    );
    g.throughput(Throughput::Elements(rows));
    bench_job(
        &mut g,
        &format!("job_gauges/{rows}_rows"),
        &persister,
        &input,
        rows,
    );
    g.finish();
}

/// One persist job per iteration on a copy of `input`, which dedups to
/// `rows_out` rows.
fn bench_job(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    persister: &BenchPersister,
    input: &[RecordBatch],
    rows_out: u64,
) {
    g.bench_function(name, |b| {
        b.iter_batched(
            || input.to_vec(),
            |input| {
                let r = persister.persist(input).expect("persist");
                assert_eq!(r.rows_out, rows_out);
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(benches, persist);
criterion_main!(benches);
