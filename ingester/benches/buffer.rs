//! The write path minus the WAL: validate, resolve against an in-memory
//! catalog, sequence, apply to the `BufferTree`. A 5,000-line TSBS batch per
//! request (the bulk case) and one line per request (the per-request cost).
//!
//! The buffer is replaced by a fresh one every few hundred requests (outside
//! the timed part) so a long run does not measure a machine out of memory.
//!
//! Then the merge of a one-line stream's small batches, Sluice's against
//! Arrow's `concat_batches`.
//!
//! `cargo bench -p sluice-ingester --features benches --bench buffer`

mod common;

use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_ingester::internal_implementation_details::{
    BenchIngester, merge_small_batches, merge_small_batches_arrow,
};

/// Requests written into one buffer before starting a fresh one.
const REQUESTS_PER_BUFFER: u64 = 200;

fn buffer(c: &mut Criterion) {
    let mut g = c.benchmark_group("buffer");
    for lines in [common::size(5000, 10), 1] {
        // Distinct batches (different hosts and times), cycled.
        let batches: Vec<Bytes> = (0..8)
            .map(|i| Bytes::from(common::tsbs_lines(i * lines, lines, 1000)))
            .collect();
        let check = BenchIngester::new();
        assert_eq!(check.write_lp("bench", batches[0].clone()), lines);
        g.throughput(Throughput::Elements(lines));
        g.bench_function(format!("write_lp/{lines}_lines"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut ing = BenchIngester::new();
                for i in 0..iters {
                    if i > 0 && i % REQUESTS_PER_BUFFER == 0 {
                        ing = BenchIngester::new();
                    }
                    let body = batches[(i % batches.len() as u64) as usize].clone();
                    let t = Instant::now();
                    let rows = ing.write_lp("bench", body);
                    total += t.elapsed();
                    assert_eq!(rows, lines, "write refused");
                }
                total
            })
        });
    }
    g.finish();

    // The merge of a one-line stream's batches: 32 one-row writes into one
    // batch (first level), 32 of those into one (second level).
    let mut g = c.benchmark_group("merge");
    let ing = BenchIngester::new();
    let one_row: Vec<RecordBatch> = (0..1024)
        .flat_map(|i| {
            ing.validated("bench", Bytes::from(common::tsbs_lines(i, 1, 1000)))
                .batches()
        })
        .collect();
    assert_eq!(one_row.len(), 1024, "one batch per one-line write");
    let first_level: Vec<RecordBatch> = one_row.chunks(32).map(merge_small_batches).collect();
    for (name, input) in [
        ("32x1_rows", &one_row[..32]),
        ("32x32_rows", &first_level[..]),
    ] {
        g.throughput(Throughput::Elements(
            input.iter().map(|b| b.num_rows() as u64).sum(),
        ));
        g.bench_function(format!("sluice/{name}"), |b| {
            b.iter(|| merge_small_batches(input).num_rows())
        });
        g.bench_function(format!("arrow/{name}"), |b| {
            b.iter(|| merge_small_batches_arrow(input).num_rows())
        });
    }
    g.finish();
}

criterion_group!(benches, buffer);
criterion_main!(benches);
