//! The WAL with real fdatasync, in a temporary directory on the filesystem
//! of `$SLUICE_BENCH_DIR` (default: the system temp dir — set it to the WAL
//! volume to measure that disk).
//!
//! - `wal_record/<encode|decode>/<columnar|ipc>/<N>_lines`: the WAL record
//!   of a validated TSBS write of 1 or 5,000 lines, in the format the WAL
//!   uses (`columnar`) and, for comparison, as Arrow IPC streams; the sizes
//!   are printed next to the line protocol's.
//! - `wal_append/<op>/<N>_writers`: N tasks each appending ops back to back,
//!   group-committed by the writer thread; `<op>` is `1_line` or `batch`
//!   (5,000 lines, as the WAL record the `WalSink` appends).
//!   Throughput is ops/s; ops per fdatasync is printed after each case.
//! - `wal_replay/read`: read a segment of 1 M rows (200 ops of 5,000 lines):
//!   chunked reads, CRC32C, copy out.
//! - `wal_replay/decode`: the same, and each record decoded into batches.
//! - `wal_replay/to_buffer`: the same segment replayed as start-up does:
//!   read, decode, resolve names in the catalog (cold cache), apply to a
//!   fresh buffer.
//!
//! The segment is read from the page cache (it was just written): replay
//! after a reboot adds the disk's read time (see the limits probe).
//!
//! `cargo bench -p sluice-ingester --features benches --bench wal`

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice_ingester::internal_implementation_details::{
    BenchIngester, SegmentReader, Wal, WalConfig, WalOp, decode_ipc, decode_wal_record,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A metric's value in the registry's text exposition (summed over labels).
fn metric(registry: &prometheus::Registry, name: &str) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn record(c: &mut Criterion) {
    let ing = BenchIngester::new();
    let mut g = c.benchmark_group("wal_record");
    for lines in [1, common::size(5000, 10)] {
        let body = Bytes::from(common::tsbs_lines(0, lines, 1000));
        let w = ing.validated("bench", body.clone());
        let (columnar, ipc) = (w.encode(), w.encode_ipc());
        assert_eq!(decode_wal_record(&columnar), lines as usize);
        assert_eq!(decode_ipc(&ipc), lines as usize);
        eprintln!(
            "wal_record/{lines}_lines: line protocol {} bytes, columnar record {} bytes, Arrow IPC {} bytes",
            body.len(),
            columnar.len(),
            ipc.len()
        );
        g.throughput(Throughput::Elements(lines));
        g.bench_function(format!("encode/columnar/{lines}_lines"), |b| {
            b.iter(|| w.encode())
        });
        g.bench_function(format!("encode/ipc/{lines}_lines"), |b| {
            b.iter(|| w.encode_ipc())
        });
        g.bench_function(format!("decode/columnar/{lines}_lines"), |b| {
            b.iter(|| decode_wal_record(&columnar))
        });
        g.bench_function(format!("decode/ipc/{lines}_lines"), |b| {
            b.iter(|| decode_ipc(&ipc))
        });
    }
    g.finish();
}

fn append(c: &mut Criterion) {
    let ing = BenchIngester::new();
    let rt = runtime();
    let dir = common::bench_dir("sluice-wal-bench-");
    let registry = prometheus::Registry::new();
    let (wal, _) = rt
        .block_on(async { Wal::open(WalConfig::new(dir.path().join("wal")), &registry) })
        .expect("open WAL");
    // Delete closed segments as they rotate, so a long run does not fill the disk.
    let mut rotations = wal.subscribe_rotations();
    let cleaner = {
        let wal = wal.clone();
        rt.spawn(async move {
            while let Some(seg) = rotations.recv().await {
                let _ = wal.delete_segment(seg.id).await;
            }
        })
    };
    let seq = Arc::new(AtomicU64::new(1));

    let batch_lines = common::size(5000, 10);
    let cases = [
        (
            "1_line",
            1u64,
            Bytes::from(common::tsbs_lines(0, 1, 1000)),
            &[1usize, 8, 64][..],
        ),
        (
            "batch",
            batch_lines,
            Bytes::from(common::tsbs_lines(0, batch_lines, 1000)),
            &[1usize, 8][..],
        ),
    ];
    let mut g = c.benchmark_group("wal_append");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for (name, lines, body, writer_counts) in cases {
        let op = WalOp {
            sequence_number: 0,
            payload: ing.wal_record("bench", body),
        };
        for &writers in writer_counts {
            let syncs0 = metric(&registry, "sluice_wal_syncs_total");
            let ops0 = Arc::new(AtomicU64::new(0));
            g.throughput(Throughput::Elements(writers as u64));
            g.bench_function(format!("{name}/{writers}_writers"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..writers)
                            .map(|_| {
                                let wal = wal.clone();
                                let mut op = op.clone();
                                let seq = Arc::clone(&seq);
                                let ops = Arc::clone(&ops0);
                                tokio::spawn(async move {
                                    for _ in 0..iters {
                                        op.sequence_number = seq.fetch_add(1, Ordering::Relaxed);
                                        wal.append(&op).await.expect("WAL append");
                                        ops.fetch_add(1, Ordering::Relaxed);
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.expect("writer task");
                        }
                        start.elapsed()
                    })
                })
            });
            let syncs = metric(&registry, "sluice_wal_syncs_total") - syncs0;
            let ops = ops0.load(Ordering::Relaxed) as f64;
            eprintln!(
                "wal_append/{name}/{writers}_writers: {:.1} ops per fdatasync ({} rows/op, payload {} bytes)",
                ops / syncs.max(1.0),
                lines,
                op.payload.len()
            );
        }
    }
    g.finish();
    rt.block_on(wal.shutdown()).expect("WAL shutdown");
    cleaner.abort();
}

fn replay(c: &mut Criterion) {
    let dir = common::bench_dir("sluice-wal-bench-");
    let lines = common::size(5000, 10);
    let ops = common::size(200, 2);
    let rows = ops * lines;
    let ing = BenchIngester::new();
    // Encoded first: `write_segment` runs its own runtime.
    let records: Vec<Bytes> = (0..ops)
        .map(|i| {
            let body = Bytes::from(common::tsbs_lines(i * lines, lines, 1000));
            ing.wal_record("bench", body)
        })
        .collect();
    let path = common::write_segment(&dir.path().join("wal"), records);
    let bytes = std::fs::metadata(&path).expect("segment").len();
    eprintln!("wal_replay: segment of {rows} rows in {ops} ops, {bytes} bytes on disk");

    let mut g = c.benchmark_group("wal_replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows));
    g.bench_function(format!("read/{rows}_rows"), |b| {
        b.iter(|| {
            let mut n = 0u64;
            for entry in SegmentReader::open(&path).expect("open segment") {
                let (_, payload) = entry.expect("valid entry");
                n += payload.len() as u64;
            }
            n
        })
    });
    g.bench_function(format!("decode/{rows}_rows"), |b| {
        b.iter(|| {
            let mut n = 0;
            for entry in SegmentReader::open(&path).expect("open segment") {
                let (_, payload) = entry.expect("valid entry");
                n += decode_wal_record(&payload);
            }
            assert_eq!(n as u64, rows);
        })
    });
    g.bench_function(format!("to_buffer/{rows}_rows"), |b| {
        b.iter_batched_ref(
            || ing.restarted(),
            |ing| {
                let (n_ops, n_rows) = ing.replay_segment(&path).expect("replay");
                assert_eq!((n_ops, n_rows), (ops, rows));
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, record, append, replay);
criterion_main!(benches);
