//! Line protocol: parse only, and parse + validate into Arrow batches (no
//! catalog, no sink), on a 5,000-line TSBS batch (10 tags, 10 float fields).
//!
//! `cargo bench -p sluice-ingester --features benches --bench lp`

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_ingester::internal_implementation_details::{
    parse_and_validate, parse_and_validate_split, parse_lines,
};

fn lp(c: &mut Criterion) {
    let lines = common::size(5000, 10);
    let body = common::tsbs_lines(0, lines, 1000);
    // A broken parser must not produce fast, meaningless figures.
    assert_eq!(parse_lines(body.as_bytes()) as u64, lines);
    assert_eq!(parse_and_validate(body.as_bytes()) as u64, lines);
    // The server's blocking threads, kept between iterations as there.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    let shared = bytes::Bytes::from(body.clone());
    assert_eq!(parse_and_validate_split(&runtime, &shared, 2) as u64, lines);
    eprintln!(
        "lp: {lines} lines, {} bytes ({} bytes/line)",
        body.len(),
        body.len() as u64 / lines
    );

    let mut g = c.benchmark_group("lp");
    g.throughput(Throughput::Elements(lines));
    g.bench_function(format!("parse/{lines}_lines"), |b| {
        b.iter(|| parse_lines(black_box(body.as_bytes())))
    });
    g.bench_function(format!("parse_validate/{lines}_lines"), |b| {
        b.iter(|| parse_and_validate(black_box(body.as_bytes())))
    });
    // Two pieces on two threads, then the merge (`--write-split-bytes`):
    // the latency of a split write on an idle machine.
    g.bench_function(format!("parse_validate_split2/{lines}_lines"), |b| {
        b.iter(|| parse_and_validate_split(&runtime, black_box(&shared), 2))
    });
    g.finish();

    let mut g = c.benchmark_group("lp_bytes");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function(format!("parse_validate/{lines}_lines"), |b| {
        b.iter(|| parse_and_validate(black_box(body.as_bytes())))
    });
    g.finish();
}

criterion_group!(benches, lp);
criterion_main!(benches);
