//! `sluice-limits-probe`: what this machine's storage and memory allow, so
//! every benchmark figure can be stated as a ratio to the hardware limit.
//!
//! Measures, on the filesystem of a directory (default: a temporary directory
//! next to `./data`, i.e. where the WAL would live):
//!
//! - **append + fdatasync** latency and rate for appends of several sizes to a
//!   growing file — exactly what a WAL group commit does (Sluice's WAL does not
//!   preallocate, so each sync also commits the file size);
//! - the same for **overwrites of a preallocated** file (no size change: the
//!   cheapest possible durable write, the floor for any WAL design);
//! - **sequential write bandwidth**: a large file written in 1 MiB chunks,
//!   then one fdatasync (time includes the sync);
//! - **memcpy bandwidth** of one core (the ceiling for anything that copies
//!   every byte once).
//!
//! Usage: `sluice-limits-probe [--dir D] [--seconds-per-test 3] [--json FILE]`
//! (`e2e/scripts/limits-probe.sh` wraps it).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "fdatasync latency, sequential write and memcpy bandwidth of this machine")]
struct Args {
    /// Directory to test in (a temporary subdirectory is created and removed).
    /// Default: next to ./data (or in the current directory if it is missing).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Append sizes (bytes) for the append + fdatasync test.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "512,4096,65536,1048576,4194304"
    )]
    sizes: Vec<usize>,
    /// Time budget per fdatasync test.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    seconds_per_test: Duration,
    /// Bytes written by the sequential bandwidth test.
    #[arg(long, default_value_t = 1 << 30)]
    seq_bytes: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Debug)]
struct SyncResult {
    test: String,
    append_bytes: usize,
    ops: u64,
    ops_per_sec: f64,
    mb_per_sec: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    dir: String,
    filesystem: String,
    sync: Vec<SyncResult>,
    seq_write_bytes: u64,
    seq_write_mb_per_sec: f64,
    seq_write_buffered_mb_per_sec: f64,
    memcpy_gb_per_sec: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => {
            let data = Path::new("./data");
            if data.is_dir() {
                data.to_path_buf()
            } else {
                PathBuf::from(".")
            }
        }
    };
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".sluice-limits-probe-")
        .tempdir_in(&base)
        .with_context(|| format!("temporary directory in {}", base.display()))?;
    let dir = tmp.path();
    let filesystem = filesystem_of(dir);
    eprintln!("probing {} ({filesystem})", dir.display());

    let mut sync = Vec::new();
    for &size in &args.sizes {
        let r = append_sync(dir, size, args.seconds_per_test)?;
        eprintln!("  append+fdatasync {:>8} B: p50 {:>8.1} µs", size, r.p50_us);
        sync.push(r);
    }
    let r = overwrite_sync(dir, 4096, args.seconds_per_test)?;
    eprintln!("  overwrite+fdatasync 4096 B: p50 {:>8.1} µs", r.p50_us);
    sync.push(r);
    let (seq, buffered) = sequential(dir, args.seq_bytes)?;
    let memcpy = memcpy_bandwidth();

    let report = Report {
        dir: base.display().to_string(),
        filesystem,
        sync,
        seq_write_bytes: args.seq_bytes,
        seq_write_mb_per_sec: seq,
        seq_write_buffered_mb_per_sec: buffered,
        memcpy_gb_per_sec: memcpy,
    };
    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// `df -T`'s type and device for `dir`, best effort.
fn filesystem_of(dir: &Path) -> String {
    std::process::Command::new("df")
        .arg("-T")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).to_string();
            let line = s.lines().nth(1)?.to_string();
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some(format!(
                "{} {}",
                cols.first().copied().unwrap_or("?"),
                cols.get(1).copied().unwrap_or("?")
            ))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Non-compressible bytes (xorshift), so no layer can shortcut them.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds")
}

fn summarize(test: &str, size: usize, h: &Histogram<u64>, elapsed: Duration) -> SyncResult {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    SyncResult {
        test: test.into(),
        append_bytes: size,
        ops: h.len(),
        ops_per_sec: h.len() as f64 / secs,
        mb_per_sec: (h.len() as f64 * size as f64) / secs / 1e6,
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        max_us: h.max() as f64 / 1000.0,
    }
}

/// Appends `size` bytes to a growing file and fdatasyncs, repeatedly.
fn append_sync(dir: &Path, size: usize, budget: Duration) -> anyhow::Result<SyncResult> {
    let path = dir.join(format!("append-{size}"));
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    f.sync_all().context("initial sync")?;
    let buf = noise(size, size as u64);
    let mut h = new_hist();
    let start = Instant::now();
    // At least 20 samples, even for slow large appends.
    while start.elapsed() < budget || h.len() < 20 {
        let t = Instant::now();
        f.write_all(&buf).context("append")?;
        f.sync_data().context("fdatasync")?;
        h.record(t.elapsed().as_nanos() as u64)
            .expect("latency within histogram bounds");
        // Keep the file small enough for a tmpfs-sized budget: restart it
        // every 1 GiB (rare; a new file's first sync is like any other append).
        if f.stream_position().context("position")? > (1 << 30) {
            f.set_len(0).context("truncate")?;
            f.seek(SeekFrom::Start(0)).context("seek")?;
            f.sync_all().context("sync after truncate")?;
        }
    }
    let elapsed = start.elapsed();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(summarize("append+fdatasync", size, &h, elapsed))
}

/// Overwrites `size` bytes at increasing offsets of a preallocated, synced
/// file and fdatasyncs: no metadata changes, only the data.
fn overwrite_sync(dir: &Path, size: usize, budget: Duration) -> anyhow::Result<SyncResult> {
    let path = dir.join("prealloc");
    let len: u64 = 64 << 20;
    let f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    // Really allocate (write) the blocks: set_len alone leaves a hole.
    let chunk = noise(1 << 20, 7);
    for i in 0..(len >> 20) {
        f.write_all_at(&chunk, i << 20).context("preallocate")?;
    }
    f.sync_all().context("sync preallocated")?;
    let buf = noise(size, 99);
    let mut h = new_hist();
    let mut off = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget || h.len() < 20 {
        let t = Instant::now();
        f.write_all_at(&buf, off).context("overwrite")?;
        f.sync_data().context("fdatasync")?;
        h.record(t.elapsed().as_nanos() as u64)
            .expect("latency within histogram bounds");
        off = (off + size as u64) % (len - size as u64);
    }
    let elapsed = start.elapsed();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(summarize(
        "overwrite+fdatasync (preallocated)",
        size,
        &h,
        elapsed,
    ))
}

/// Sequential write of `total` bytes in 1 MiB chunks. Returns (MB/s including
/// the final fdatasync, MB/s of the buffered writes alone).
fn sequential(dir: &Path, total: u64) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("sequential");
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let chunk = noise(1 << 20, 3);
    let start = Instant::now();
    let mut written = 0u64;
    while written < total {
        f.write_all(&chunk).context("sequential write")?;
        written += chunk.len() as u64;
    }
    let buffered = start.elapsed();
    f.sync_data().context("fdatasync")?;
    let synced = start.elapsed();
    drop(f);
    let _ = std::fs::remove_file(&path);
    let mb = written as f64 / 1e6;
    Ok((
        mb / synced.as_secs_f64().max(1e-9),
        mb / buffered.as_secs_f64().max(1e-9),
    ))
}

/// One core's memcpy bandwidth on a buffer much larger than the caches.
fn memcpy_bandwidth() -> f64 {
    let len = 256 << 20;
    let src = noise(len, 5);
    let mut dst = vec![0u8; len];
    dst.copy_from_slice(&src); // fault the pages in
    let start = Instant::now();
    let mut copied = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        copied += len as u64;
    }
    copied as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn print_table(r: &Report) {
    println!("directory: {} ({})", r.dir, r.filesystem);
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "test", "bytes", "p50 µs", "p90 µs", "p99 µs", "max µs", "ops/s", "MB/s"
    );
    for s in &r.sync {
        println!(
            "{:<36} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>9.1}",
            s.test,
            s.append_bytes,
            s.p50_us,
            s.p90_us,
            s.p99_us,
            s.max_us,
            s.ops_per_sec,
            s.mb_per_sec
        );
    }
    println!(
        "sequential write {} MiB, 1 MiB chunks + fdatasync: {:.0} MB/s (buffered part alone {:.0} MB/s)",
        r.seq_write_bytes >> 20,
        r.seq_write_mb_per_sec,
        r.seq_write_buffered_mb_per_sec
    );
    println!("memcpy, one core: {:.1} GB/s", r.memcpy_gb_per_sec);
}
