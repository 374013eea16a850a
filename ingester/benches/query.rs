//! Query of the buffer: a full scan of 1 M buffered TSBS rows (one day
//! partition, 200 buffered batches of 5,000 rows, 21 columns) through
//! `BufferQueryExec` as Flight `DoGet` drives it (without the gRPC encoding),
//! and the time to the first record batch.
//!
//! `cargo bench -p sluice-ingester --features benches --bench query`

mod common;

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_ingester::internal_implementation_details::BenchIngester;

fn query(c: &mut Criterion) {
    let lines = common::size(5000, 10);
    let batches = common::size(200, 3);
    let rows = lines * batches;
    let ing = BenchIngester::new();
    for i in 0..batches {
        let body = Bytes::from(common::tsbs_lines(i * lines, lines, 1000));
        assert_eq!(ing.write_lp("bench", body), lines, "write refused");
    }
    assert_eq!(ing.scan("bench", "cpu").0 as u64, rows);

    let mut g = c.benchmark_group("query");
    g.sample_size(20);
    g.throughput(Throughput::Elements(rows));
    g.bench_function(format!("full_scan/{rows}_rows"), |b| {
        b.iter(|| {
            let (n, _) = ing.scan("bench", "cpu");
            assert_eq!(n as u64, rows);
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("first_batch/{rows}_rows"), |b| {
        b.iter_custom(|iters| {
            (0..iters).fold(Duration::ZERO, |acc, _| {
                acc + ing.first_batch("bench", "cpu")
            })
        })
    });
    g.finish();
}

criterion_group!(benches, query);
criterion_main!(benches);
