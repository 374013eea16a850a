//! Shared by the benches: TSBS "devops cpu"-shaped line protocol and the
//! smoke-test switch.
//!
//! Every bench runs in two modes. `cargo bench … --features benches` measures
//! with full-size inputs (5,000-line batches, 1 M buffered rows). With
//! criterion's `--test` flag (`cargo bench -p sluice-ingester --features
//! benches -- --test`, what CI runs) each benchmark runs once on a tiny input,
//! so the benches stay compiled and correct without costing CI minutes.

#![allow(dead_code)] // each bench uses part of this

use std::fmt::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sluice_ingester::internal_implementation_details::{Wal, WalConfig, WalOp};

/// True when criterion runs each benchmark once as a test — `cargo bench --
/// --test`, or `cargo test --benches` (which does not pass `--bench`): use
/// tiny inputs.
pub fn smoke() -> bool {
    let has = |flag: &str| std::env::args().any(|a| a == flag);
    has("--test") || !has("--bench")
}

/// `full` normally, `tiny` in smoke mode.
pub fn size(full: u64, tiny: u64) -> u64 {
    if smoke() { tiny } else { full }
}

/// Base time of generated rows: 2026-01-01T00:00:00Z.
pub const BASE_TIME: i64 = 1_767_225_600_000_000_000;
/// Time between two points of one host (TSBS default).
pub const INTERVAL: i64 = 10_000_000_000;

const REGIONS: [&str; 9] = [
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
];
const OSES: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const ENVS: [&str; 3] = ["production", "staging", "test"];
const FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Rows `first..first + n` in TSBS order (every host once per tick) as line
/// protocol: `cpu` with 10 tags and 10 float fields, like the load generator
/// sends (`sluice-loadgen`, which the ingester crate cannot depend on).
pub fn tsbs_lines(first: u64, n: u64, hosts: u64) -> String {
    let mut s = String::with_capacity(n as usize * 460);
    for r in first..first + n {
        tsbs_line(&mut s, r, hosts, 0);
    }
    s
}

/// `n` lines that rewrite rows picked at random among `0..rows` (same host,
/// same time) with other field values (`variant` > 0): duplicates that a
/// persist job must collapse.
pub fn tsbs_duplicate_lines(seed: u64, n: u64, rows: u64, hosts: u64) -> String {
    let mut s = String::with_capacity(n as usize * 460);
    for i in 0..n {
        let r = mix(seed.wrapping_mul(0x1000_0000).wrapping_add(i)) % rows;
        tsbs_line(&mut s, r, hosts, 1 + i % 7);
    }
    s
}

/// Rows `first..first + n` like [`tsbs_lines`], but each host's fields
/// take one of `per_host` pre-drawn points (as `sluice-loadgen` sends them,
/// 16 by default): gauges whose values repeat, so Parquet keeps their
/// dictionaries.
pub fn tsbs_gauge_lines(first: u64, n: u64, hosts: u64, per_host: u64) -> String {
    let mut s = String::with_capacity(n as usize * 460);
    for r in first..first + n {
        let point = (r % hosts) * per_host + mix(r ^ 0x5EED) % per_host;
        tsbs_line_with(&mut s, r, hosts, |i| unit(mix(point * 16 + i as u64)));
    }
    s
}

/// Row `r` of the TSBS sequence; `variant` changes the field values only.
pub fn tsbs_line(s: &mut String, r: u64, hosts: u64, variant: u64) {
    tsbs_line_with(s, r, hosts, |i| {
        unit(mix(
            (r * 16 + i as u64) ^ variant.wrapping_mul(0x5851_F42D_4C95_7F2D)
        ))
    });
}

/// A float in [0, 100) from random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64 * 100.0
}

/// Row `r` of the TSBS sequence with field `i` = `value(i)`.
fn tsbs_line_with(s: &mut String, r: u64, hosts: u64, value: impl Fn(usize) -> f64) {
    let h = r % hosts;
    let t = BASE_TIME + (r / hosts) as i64 * INTERVAL;
    let k = mix(h);
    let region = (k % 9) as usize;
    let _ = write!(
        s,
        "cpu,hostname=host_{h},region={},datacenter={}{},rack={},os={},arch={},team={},service={},service_version={},service_environment={}",
        REGIONS[region],
        REGIONS[region],
        ["a", "b", "c"][(k >> 8) as usize % 3],
        (k >> 12) % 100,
        OSES[(k >> 20) as usize % 3],
        ["x64", "x86"][(k >> 24) as usize % 2],
        TEAMS[(k >> 28) as usize % 4],
        (k >> 32) % 20,
        (k >> 40) % 2,
        ENVS[(k >> 44) as usize % 3],
    );
    for (i, f) in FIELDS.iter().enumerate() {
        let v = value(i);
        let _ = write!(s, "{}{f}={v}", if i == 0 { ' ' } else { ',' });
    }
    let _ = writeln!(s, " {t}");
}

/// Writes one WAL segment in `dir` holding one op per payload (WAL records,
/// e.g. from `BenchIngester::wal_record`); returns its path.
pub fn write_segment(dir: &Path, payloads: impl IntoIterator<Item = Bytes>) -> PathBuf {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let registry = prometheus::Registry::new();
    // One segment for everything: no rotation by size on the way.
    let mut config = WalConfig::new(dir);
    config.max_segment_bytes = u64::MAX;
    let (wal, _) = Wal::open(config, &registry).expect("open WAL");
    rt.block_on(async {
        for (i, payload) in payloads.into_iter().enumerate() {
            wal.append(&WalOp {
                sequence_number: i as u64 + 1,
                payload,
            })
            .await
            .expect("WAL append");
        }
        let seg = wal.rotate().await.expect("rotate");
        wal.shutdown().await.expect("shutdown");
        seg.path
    })
}

/// A temporary directory on the filesystem of `$SLUICE_BENCH_DIR` (default:
/// the system temp dir — set it to the WAL volume to measure that disk).
pub fn bench_dir(prefix: &str) -> tempfile::TempDir {
    let base = std::env::var_os("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("temporary directory for the bench")
}
