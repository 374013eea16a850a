//! Soak and chaos: the real `sluice-ingester` on its own PostgreSQL catalog
//! and its own `s3s-fs` object store, for `SLUICE_SOAK_SECONDS` (default
//! 180), under:
//!
//! * writers at a fixed rate (two over gRPC, one over HTTP), every row
//!   unique and never retried; each write's outcome is recorded: acknowledged,
//!   refused (an answer that guarantees nothing was applied), or unknown (no
//!   answer, or an answer that does not say);
//! * Flight queries of random time windows, with and without persisted data:
//!   no row is served twice, and with `include_persisted` every row
//!   acknowledged before the query started is in its answer;
//! * `RotateWal` and `Persist` control calls;
//! * chaos, one event at a time at random moments: `kill -9` of the
//!   ingester and restart; a crash (`kill -9`) and restart of `s3s-fs`; an
//!   immediate shutdown (crash) and restart of PostgreSQL; and a full WAL
//!   volume: the ingester restarted with a small `--wal-max-bytes`, so writes
//!   get RESOURCE_EXHAUSTED / 429 until its own rotations and persists free
//!   space, then restarted without it (SIGTERM, which must exit 0).
//!
//! Sampled every 100 ms: the ingester's RSS (from `/proc`), the WAL's
//! segment count and bytes, and whether the process exited by itself (it
//! must not: every exit is one the test caused).
//!
//! At the end (after one more `kill -9` and restart):
//!
//! * every acknowledged row is served exactly once with `include_persisted`;
//!   an unknown-outcome write entirely or not at all; a refused write not at
//!   all; no row that was never sent; the buffer alone never holds a row
//!   twice;
//! * after `Persist(wait)`, the cataloged Parquet files, read from the object
//!   store with the `parquet` crate, hold exactly the served rows (each file
//!   free of duplicates; a row in two files is a replay persisted again after
//!   a crash, which query-time dedup merges);
//! * peak RSS stayed under a bound derived from the configured buffer and
//!   persist memory limits, and the WAL within its bounds.
//!
//! Figures are printed at the end (`soak:` lines). The seed is printed and
//! can be fixed with `SLUICE_SOAK_SEED`. Skips (with the reason) when
//! `SLUICE_TEST_PG_BIN` or `SLUICE_S3S_FS_BIN` is unset (`scripts/test.sh`
//! sets both).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sluice_e2e::data::{self, BASE_TIME};
use sluice_e2e::soak::{PrivatePostgres, PrivateS3, pg_bin_from_env, s3s_fs_bin_from_env};
use sluice_e2e::{Ingester, Outcome, poll_until};
use sluice_proto::v1;

const NS: &str = "soak";
const TABLE: &str = "soak";
/// Writers 0 and 1 write over gRPC, writer 2 over HTTP.
const WRITERS: u32 = 3;
const HTTP_WRITER: u32 = 2;
const ROWS_PER_WRITE: u64 = 100;
/// Each writer sends one write per interval (skipping ticks while a write
/// is outstanding): 3 × 100 rows / 200 ms = 1,500 rows/s.
const WRITE_INTERVAL: Duration = Duration::from_millis(200);
/// Rows of one writer per partition (day) before it moves to the next.
const ROWS_PER_DAY_BLOCK: u64 = 20_000;
const DAY: i64 = 86_400 * 1_000_000_000;

const SEGMENT_BYTES: u64 = 256 * 1024;
const HOT_PARTITION_ROWS: u64 = 30_000;
const BUFFER_LIMIT: u64 = 64 << 20;
const PERSIST_MEMORY: u64 = 64 << 20;
/// The WAL cap of the normal phases (never reached while the object store
/// is up: persists keep the WAL small).
const WAL_CAP: u64 = 32 << 20;
/// The WAL cap of the full-volume phase: a few writes' worth (the WAL holds
/// LZ4-compressed requests, under 1 KiB per write here), so it is reached
/// again within a second of every rotation that frees it.
const WAL_CAP_FULL: u64 = 4 * 1024;
/// What the process may use beyond its configured buffer and persist
/// memory limits: code, runtime, RPC and query buffers, allocator slack (a
/// debug build).
const RSS_ALLOWANCE: u64 = 320 << 20;

/// The row key: (writer, counter).
type Key = (u32, u64);

fn time_of(w: u32, c: u64) -> i64 {
    BASE_TIME + DAY * ((c / ROWS_PER_DAY_BLOCK) % 3) as i64 + c as i64 * 1_000 + i64::from(w)
}

fn value_of(w: u32, c: u64) -> f64 {
    c as f64 * 0.5 + f64::from(w)
}

fn lines(w: u32, counters: std::ops::Range<u64>) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(((counters.end - counters.start) * 64) as usize);
    for c in counters {
        let _ = writeln!(
            s,
            "{TABLE},w={w},s=s{} c={c}i,v={:?} {}",
            c % 16,
            value_of(w, c),
            time_of(w, c)
        );
    }
    s
}

#[derive(Debug, Clone)]
struct Attempt {
    writer: u32,
    counters: std::ops::Range<u64>,
    outcome: Outcome,
    /// When the answer arrived (acknowledged writes: queries that start
    /// later must see them).
    answered: Instant,
}

/// Counters the tasks update and the end prints.
#[derive(Default)]
struct Stats {
    attempts: Mutex<Vec<Attempt>>,
    /// "grpc RESOURCE_EXHAUSTED", "http 429", "grpc unknown: …" → count.
    answers: Mutex<BTreeMap<String, u64>>,
    /// The first message seen for each entry of `answers`.
    examples: Mutex<BTreeMap<String, String>>,
    acked_writes: AtomicU64,
    /// Writes refused for the full WAL volume (not other back-pressure).
    exhausted: AtomicU64,
    queries_ok: AtomicU64,
    /// Checks that failed while the soak ran (asserted at the end, after
    /// the figures are printed).
    violations: Mutex<Vec<String>>,
    /// What the chaos loop is doing, and since when (for messages).
    chaos: Mutex<(String, Option<Instant>)>,
    queries_failed: AtomicU64,
    query_rows: AtomicU64,
    controls_ok: AtomicU64,
    controls_failed: AtomicU64,
}

impl Stats {
    fn violation(&self, v: String) {
        eprintln!("soak: VIOLATION {v}");
        let mut g = self.violations.lock().expect("lock");
        if g.len() < 50 {
            g.push(v);
        }
    }

    fn set_chaos(&self, what: &str) {
        *self.chaos.lock().expect("lock") = (what.to_string(), Some(Instant::now()));
    }

    /// `"<event> for 1.23s"`.
    fn chaos_now(&self) -> String {
        let g = self.chaos.lock().expect("lock");
        let since = g.1.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        format!("{} for {since:.2}s", g.0)
    }
    fn count(&self, what: String, message: &str) {
        self.examples
            .lock()
            .expect("lock")
            .entry(what.clone())
            .or_insert_with(|| message.chars().take(160).collect());
        *self.answers.lock().expect("lock").entry(what).or_default() += 1;
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_with_chaos() {
    let Some(pg_bin) = pg_bin_from_env() else {
        eprintln!("skipped: SLUICE_TEST_PG_BIN (PostgreSQL's bin directory) is not set");
        return;
    };
    let Some(s3_bin) = s3s_fs_bin_from_env() else {
        eprintln!("skipped: SLUICE_S3S_FS_BIN (the s3s-fs binary) is not set");
        return;
    };
    let secs = env_u64("SLUICE_SOAK_SECONDS").unwrap_or(180);
    let seed = env_u64("SLUICE_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    eprintln!("soak: {secs} s, seed {seed} (SLUICE_SOAK_SECONDS, SLUICE_SOAK_SEED)");
    // Set-up, the final checks and slow restarts on a busy machine come on
    // top of the soak itself.
    let limit = Duration::from_secs(secs + 300);
    sluice_e2e::within(limit, "soak", run(secs, seed, pg_bin, s3_bin)).await;
}

/// The ingester's arguments with a WAL byte cap.
fn with_wal_cap(base: &[String], cap: u64) -> Vec<String> {
    let mut v = base.to_vec();
    v.extend(["--wal-max-bytes".to_string(), cap.to_string()]);
    v
}

/// Which chaos event comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    KillIngester,
    CrashObjectStore,
    CrashCatalog,
    FullWal,
}

/// Peaks of the sampled figures.
#[derive(Debug, Default)]
struct Peaks {
    rss: u64,
    wal_bytes: u64,
    wal_files: usize,
    /// During the full-volume phases only, above what the WAL held when the
    /// phase began (the segments of the previous run are replayed, then
    /// persisted and deleted; only new writes are held to the small cap).
    wal_bytes_full: u64,
    /// The same, absolute.
    wal_bytes_full_abs: u64,
    samples: u64,
}

struct Chaos {
    ing: Ingester,
    pg: PrivatePostgres,
    s3: PrivateS3,
    base_args: Vec<String>,
    peaks: Peaks,
    full_wal: bool,
    /// WAL bytes when the current full-volume phase began.
    full_wal_base: u64,
    kills: u32,
    sigterms: u32,
    s3_restarts: u32,
    pg_restarts: u32,
    full_wal_phases: u32,
    restart_secs: Vec<f64>,
}

impl Chaos {
    /// One sample of RSS and WAL usage; fails the test if the ingester
    /// exited by itself.
    fn sample(&mut self) {
        if let Some(st) = self.ing.try_exit_status().expect("try_wait") {
            panic!(
                "the ingester exited by itself with {st}; log:\n{}",
                self.ing.log()
            );
        }
        if let Some(rss) = self.ing.rss_bytes() {
            self.peaks.rss = self.peaks.rss.max(rss);
        }
        let segs = self.ing.wal_segments();
        let bytes: u64 = segs
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        self.peaks.wal_files = self.peaks.wal_files.max(segs.len());
        if self.full_wal {
            self.peaks.wal_bytes_full_abs = self.peaks.wal_bytes_full_abs.max(bytes);
            self.peaks.wal_bytes_full = self
                .peaks
                .wal_bytes_full
                .max(bytes.saturating_sub(self.full_wal_base));
        } else {
            self.peaks.wal_bytes = self.peaks.wal_bytes.max(bytes);
        }
        self.peaks.samples += 1;
    }

    /// Samples every 100 ms for `d` (the chaos timeline; nothing waits on
    /// these sleeps for a condition).
    async fn sample_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            self.sample();
            if Instant::now() >= end {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9` (after checking the process is still running and its log
    /// shows no panic).
    fn kill9(&mut self) {
        self.sample();
        let log = self.ing.log();
        assert!(!log.contains("panicked"), "panic in the log:\n{log}");
        self.ing.kill9();
        self.kills += 1;
    }

    async fn start(&mut self) {
        let t = Instant::now();
        self.ing.spawn().expect("spawn the ingester");
        self.ing
            .wait_ready(Duration::from_secs(180))
            .await
            .unwrap_or_else(|e| panic!("restart: {e:#}"));
        self.restart_secs.push(t.elapsed().as_secs_f64());
    }

    async fn event(&mut self, e: Event, rng: &mut StdRng, stats: &Stats) {
        match e {
            Event::KillIngester => {
                self.kill9();
                stats.set_chaos("KillIngester: killed, restarting");
                self.start().await;
                stats.set_chaos("KillIngester: ready again");
            }
            Event::CrashObjectStore => {
                self.s3.kill();
                let down = Duration::from_millis(rng.random_range(500..=4_000));
                self.sample_for(down).await;
                stats.set_chaos("CrashObjectStore: starting s3s-fs");
                self.s3.start_again().await.expect("restart s3s-fs");
                self.s3_restarts += 1;
            }
            Event::CrashCatalog => {
                self.pg.crash().await.expect("crash PostgreSQL");
                let down = Duration::from_millis(rng.random_range(500..=4_000));
                self.sample_for(down).await;
                stats.set_chaos("CrashCatalog: starting PostgreSQL");
                self.pg.start_again().await.expect("restart PostgreSQL");
                self.pg_restarts += 1;
            }
            Event::FullWal => {
                self.kill9();
                self.ing.extra_args = with_wal_cap(&self.base_args, WAL_CAP_FULL);
                self.full_wal_base = self
                    .ing
                    .wal_segments()
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum();
                self.full_wal = true;
                self.start().await;
                // Persistence frees WAL space within one usage sample (tens
                // of ms), so with the object store up, writes paced like
                // ours may never meet a refusal: take the store away so
                // the volume stays full, until writes are refused; then
                // bring it back and wait until they are accepted again
                // (space freed by the ingester's own rotations and
                // persists).
                self.s3.kill();
                let mut store_down = true;
                let refused_before = stats.exhausted.load(Ordering::Relaxed);
                let phase = Instant::now();
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut acked_after_refusal = None;
                loop {
                    self.sample_for(Duration::from_millis(100)).await;
                    let refused = stats.exhausted.load(Ordering::Relaxed);
                    let acked = stats.acked_writes.load(Ordering::Relaxed);
                    match acked_after_refusal {
                        None if refused > refused_before => {
                            eprintln!(
                                "soak: full WAL: first refusal {:.1}s after the restart",
                                phase.elapsed().as_secs_f64()
                            );
                            acked_after_refusal = Some(acked);
                            stats.set_chaos("FullWal: refused; starting s3s-fs");
                            self.s3.start_again().await.expect("restart s3s-fs");
                            self.s3_restarts += 1;
                            store_down = false;
                        }
                        Some(a) if acked > a + 2 => break,
                        _ => {}
                    }
                    if Instant::now() >= deadline {
                        if store_down {
                            let _ = self.s3.start_again().await;
                        }
                        let log = self.ing.log();
                        let tail: Vec<&str> = log.lines().rev().take(80).collect();
                        let status = self.ing.status().await;
                        panic!(
                            "full WAL phase: no refusal then resumption within 120 s \
                             (refusals {refused_before} → {refused}, acked {acked}); \
                             status {status:?}; log tail:\n{}",
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        );
                    }
                }
                // Leave the phase with a clean stop under load.
                self.sample();
                let st = self.ing.stop().await.expect("SIGTERM");
                assert!(st.success(), "SIGTERM: exit {st}; log:\n{}", self.ing.log());
                self.ing.assert_no_panic();
                self.sigterms += 1;
                self.full_wal = false;
                self.ing.extra_args = with_wal_cap(&self.base_args, WAL_CAP);
                self.start().await;
                self.full_wal_phases += 1;
            }
        }
    }
}

async fn run(secs: u64, seed: u64, pg_bin: std::path::PathBuf, s3_bin: std::path::PathBuf) {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let pg = PrivatePostgres::start(&pg_bin)
        .await
        .expect("start a private PostgreSQL");
    let s3 = PrivateS3::start(&s3_bin)
        .await
        .expect("start a private s3s-fs");
    let tmp = tempfile::tempdir().expect("tempdir");
    let base_args: Vec<String> = [
        "--catalog".to_string(),
        pg.url(),
        "--object-store".into(),
        format!("s3://{}/sluice", s3.bucket),
        "--s3-endpoint".into(),
        s3.endpoint(),
        "--s3-access-key-id".into(),
        s3.access_key.clone(),
        "--wal-segment-bytes".into(),
        SEGMENT_BYTES.to_string(),
        "--hot-partition-rows".into(),
        HOT_PARTITION_ROWS.to_string(),
        "--buffer-limit-bytes".into(),
        BUFFER_LIMIT.to_string(),
        "--persist-memory-limit".into(),
        PERSIST_MEMORY.to_string(),
        "--wal-rotation-interval".into(),
        "20s".into(),
    ]
    .into();
    let mut ing = Ingester::new(tmp.path().join("data"))
        .with_env("SLUICE_S3_SECRET_ACCESS_KEY", s3.secret_key.clone());
    ing.extra_args = with_wal_cap(&base_args, WAL_CAP);
    let mut chaos = Chaos {
        ing,
        pg,
        s3,
        base_args,
        peaks: Peaks::default(),
        full_wal: false,
        full_wal_base: 0,
        kills: 0,
        sigterms: 0,
        s3_restarts: 0,
        pg_restarts: 0,
        full_wal_phases: 0,
        restart_secs: Vec::new(),
    };
    chaos.start().await;
    eprintln!(
        "soak: set-up (PostgreSQL, s3s-fs, ingester) in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        tasks.push(tokio::spawn(writer(
            w,
            chaos.ing.grpc_url(),
            chaos.ing.http_url(),
            Arc::clone(&stop),
            Arc::clone(&stats),
        )));
    }
    for q in 0..2u64 {
        tasks.push(tokio::spawn(querier(
            chaos.ing.grpc_url(),
            seed ^ (q + 1),
            Arc::clone(&stop),
            Arc::clone(&stats),
        )));
    }
    tasks.push(tokio::spawn(controller(
        chaos.ing.grpc_url(),
        seed ^ 0xC0,
        Arc::clone(&stop),
        Arc::clone(&stats),
    )));

    // Each kind of event at least once (in random order), then any.
    let mut events = vec![
        Event::KillIngester,
        Event::CrashObjectStore,
        Event::CrashCatalog,
        Event::FullWal,
    ];
    events.shuffle(&mut rng);
    // FullWal last (see below).
    let all = [
        Event::KillIngester,
        Event::KillIngester,
        Event::CrashObjectStore,
        Event::CrashCatalog,
        Event::FullWal,
    ];
    let soak_end = Instant::now() + Duration::from_secs(secs);
    let mut event_log = Vec::new();
    while Instant::now() < soak_end {
        let gap = Duration::from_millis(rng.random_range(2_000..=7_000));
        chaos.sample_for(gap.min(soak_end - Instant::now())).await;
        if Instant::now() >= soak_end {
            break;
        }
        let left = soak_end.saturating_duration_since(Instant::now());
        let e = if !events.is_empty() {
            events.remove(0)
        } else if left < Duration::from_secs(30) {
            // The full-WAL phase can take a while on a busy machine: not
            // at the very end, so the run ends close to its time.
            all[rng.random_range(0..all.len() - 1)]
        } else {
            all[rng.random_range(0..all.len())]
        };
        let t = Instant::now();
        stats.set_chaos(&format!("{e:?}"));
        chaos.event(e, &mut rng, &stats).await;
        stats.set_chaos(&format!("quiet after {e:?}"));
        event_log.push(format!("{e:?} {:.1}s", t.elapsed().as_secs_f64()));
    }
    stop.store(true, Ordering::Release);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a soak task did not stop within 120 s")
            .expect("soak task");
    }
    chaos.sample();
    eprintln!("soak: events: {}", event_log.join(", "));

    // One more crash, then the checks.
    chaos.kill9();
    chaos.start().await;
    let soak_secs = started.elapsed().as_secs_f64();
    let attempts = stats.attempts.lock().expect("lock").clone();
    let served = verify(&chaos.ing, &attempts, "after the soak").await;
    chaos
        .ing
        .persist_all(true)
        .await
        .expect("Persist(wait) at the end");
    let served_after = verify(&chaos.ing, &attempts, "after Persist(wait)").await;
    assert_eq!(served, served_after, "rows served before and after Persist");
    let (files, file_rows) = check_parquet(&chaos, &served).await;
    chaos.sample();
    let st = chaos.ing.stop().await.expect("SIGTERM");
    assert!(st.success(), "final SIGTERM: {st}");
    chaos.ing.assert_no_panic();

    // Figures.
    let rows = |o: Outcome| {
        attempts
            .iter()
            .filter(|a| a.outcome == o)
            .map(|a| a.counters.end - a.counters.start)
            .sum::<u64>()
    };
    let unknown_applied = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Unknown && served.contains(&(a.writer, a.counters.start)))
        .count();
    let unknown = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Unknown)
        .count();
    let p = &chaos.peaks;
    chaos.restart_secs.sort_by(f64::total_cmp);
    eprintln!(
        "soak: {soak_secs:.0}s; {} writes: rows acknowledged {}, refused {}, unknown outcome {} \
         ({unknown_applied} of {unknown} unknown writes applied); {} rows served at the end",
        attempts.len(),
        rows(Outcome::Acked),
        rows(Outcome::Refused),
        rows(Outcome::Unknown),
        served.len()
    );
    eprintln!(
        "soak: kill -9 of the ingester {} (incl. the final one), SIGTERM {}, s3s-fs restarts {}, \
         PostgreSQL restarts {}, full-WAL phases {}; restart to ready median {:.2}s max {:.2}s",
        chaos.kills,
        chaos.sigterms,
        chaos.s3_restarts,
        chaos.pg_restarts,
        chaos.full_wal_phases,
        chaos.restart_secs[chaos.restart_secs.len() / 2],
        chaos.restart_secs.last().copied().unwrap_or_default()
    );
    eprintln!(
        "soak: answers other than OK: {:?}",
        stats.answers.lock().expect("lock")
    );
    for (what, example) in stats.examples.lock().expect("lock").iter() {
        eprintln!("soak:   e.g. {what}: {example}");
    }
    eprintln!(
        "soak: queries ok {} (rows {}), failed {}; control calls ok {}, failed {}",
        stats.queries_ok.load(Ordering::Relaxed),
        stats.query_rows.load(Ordering::Relaxed),
        stats.queries_failed.load(Ordering::Relaxed),
        stats.controls_ok.load(Ordering::Relaxed),
        stats.controls_failed.load(Ordering::Relaxed),
    );
    let rss_bound = BUFFER_LIMIT + PERSIST_MEMORY + RSS_ALLOWANCE;
    let wal_full_bound = 4 * WAL_CAP_FULL + SEGMENT_BYTES;
    eprintln!(
        "soak: peak RSS {:.0} MiB (bound {:.0} MiB); peak WAL {} files, {:.1} MiB (bound {} MiB), \
         in full-WAL phases {:.2} MiB, {:.2} MiB above the phase's start (cap {} KiB, \
         bound {:.2} MiB); {} samples; \
         {files} Parquet files with {file_rows} rows",
        p.rss as f64 / 1048576.0,
        rss_bound as f64 / 1048576.0,
        p.wal_files,
        p.wal_bytes as f64 / 1048576.0,
        WAL_CAP >> 20,
        p.wal_bytes_full_abs as f64 / 1048576.0,
        p.wal_bytes_full as f64 / 1048576.0,
        WAL_CAP_FULL >> 10,
        wal_full_bound as f64 / 1048576.0,
        p.samples,
    );

    let violations = stats.violations.lock().expect("lock").clone();
    assert!(
        violations.is_empty(),
        "{} checks failed during the soak (seed {seed}):\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(rows(Outcome::Acked) > 0, "nothing was acknowledged");
    assert!(
        stats.exhausted.load(Ordering::Relaxed) > 0,
        "the full WAL never refused a write"
    );
    assert!(
        stats.queries_ok.load(Ordering::Relaxed) > 0,
        "no query succeeded"
    );
    assert!(
        p.rss > 0 && p.rss <= rss_bound,
        "peak RSS {} over {rss_bound}",
        p.rss
    );
    assert!(
        p.wal_bytes <= WAL_CAP,
        "WAL {} bytes over its cap",
        p.wal_bytes
    );
    assert!(
        p.wal_bytes_full <= wal_full_bound,
        "WAL grew by {} bytes in a full phase, over {wal_full_bound}",
        p.wal_bytes_full
    );
    // Segments are at most SEGMENT_BYTES unless rotated earlier (RotateWal,
    // the rotation interval, the cap): a generous bound on their number.
    assert!(
        p.wal_files <= 64,
        "{} WAL segment files at once",
        p.wal_files
    );
}

/// One writer: a write of `ROWS_PER_WRITE` fresh rows every
/// `WRITE_INTERVAL` until `stop`.
async fn writer(w: u32, grpc: String, http: String, stop: Arc<AtomicBool>, stats: Arc<Stats>) {
    let mut tick = tokio::time::interval(WRITE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut client = None;
    let mut next = 0u64;
    while !stop.load(Ordering::Acquire) {
        tick.tick().await;
        let counters = next..next + ROWS_PER_WRITE;
        let lp = lines(w, counters.clone());
        let outcome = if w == HTTP_WRITER {
            let url = format!("{http}/api/v2/write?bucket={NS}");
            let r = tokio::time::timeout(
                Duration::from_secs(60),
                sluice_e2e::http_post(&url, lp.into_bytes(), false),
            )
            .await;
            match r {
                Ok(Ok((204, _))) => Outcome::Acked,
                Ok(Ok((status, body))) if (400..500).contains(&status) => {
                    if status == 429 && body.contains("WAL volume") {
                        stats.exhausted.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.count(format!("http {status}"), &body);
                    Outcome::Refused
                }
                Ok(Ok((status, body))) => {
                    stats.count(format!("http {status} (unknown outcome)"), &body);
                    Outcome::Unknown
                }
                Ok(Err(e)) => {
                    stats.count("http no answer (unknown outcome)".into(), &format!("{e:#}"));
                    Outcome::Unknown
                }
                Err(_) => {
                    stats.count("http timeout (unknown outcome)".into(), "");
                    Outcome::Unknown
                }
            }
        } else {
            if client.is_none() {
                client = tokio::time::timeout(
                    Duration::from_secs(5),
                    v1::write_service_client::WriteServiceClient::connect(grpc.clone()),
                )
                .await
                .ok()
                .and_then(Result::ok);
            }
            // Not connected: nothing was sent; the counters are reused.
            let Some(c) = &mut client else { continue };
            let r = tokio::time::timeout(
                Duration::from_secs(60),
                sluice_e2e::write_lp(c, NS, lp.as_bytes()),
            )
            .await;
            match r {
                Ok(Ok(resp)) => {
                    assert_eq!(resp.rows, ROWS_PER_WRITE, "rows acknowledged");
                    Outcome::Acked
                }
                Ok(Err(s)) if sluice_e2e::is_refusal(&s) => {
                    if s.code() == tonic::Code::ResourceExhausted
                        && s.message().contains("WAL volume")
                    {
                        stats.exhausted.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.count(format!("grpc {:?}", s.code()), s.message());
                    Outcome::Refused
                }
                Ok(Err(s)) => {
                    stats.count(
                        format!("grpc {:?} (unknown outcome)", s.code()),
                        s.message(),
                    );
                    client = None;
                    Outcome::Unknown
                }
                Err(_) => {
                    stats.count("grpc timeout (unknown outcome)".into(), "");
                    client = None;
                    Outcome::Unknown
                }
            }
        };
        next += ROWS_PER_WRITE;
        if outcome == Outcome::Acked {
            stats.acked_writes.fetch_add(1, Ordering::Relaxed);
        }
        stats.attempts.lock().expect("lock").push(Attempt {
            writer: w,
            counters,
            outcome,
            answered: Instant::now(),
        });
    }
}

/// Occurrences of each key in batches (of a query or a Parquet file),
/// checking each row's time and value.
fn occurrences(batches: &[RecordBatch], seen: &mut HashMap<Key, u32>, what: &str) {
    for b in batches {
        let ws = data::strings(b, "w");
        let time = cast(data::column(b, "time"), &DataType::Int64).expect("time as Int64");
        let times = time.as_primitive::<Int64Type>();
        let cs = data::column(b, "c").as_primitive::<Int64Type>();
        let vs = data::column(b, "v").as_primitive::<Float64Type>();
        for (i, w) in ws.iter().enumerate() {
            let w: u32 = w
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{what}: tag w of row {i}: {w:?}"));
            assert!(cs.is_valid(i) && vs.is_valid(i), "{what}: null field");
            let c = u64::try_from(cs.value(i)).expect("counter >= 0");
            assert_eq!(times.value(i), time_of(w, c), "{what}: time of ({w}, {c})");
            assert_eq!(vs.value(i), value_of(w, c), "{what}: v of ({w}, {c})");
            *seen.entry((w, c)).or_default() += 1;
        }
    }
}

/// Random windows of 2,000 counters (all writers) within one day block,
/// alternately with and without persisted data, until `stop`.
async fn querier(grpc: String, seed: u64, stop: Arc<AtomicBool>, stats: Arc<Stats>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let include_persisted = n.is_multiple_of(2);
        // Pick a window below the highest counter written so far.
        let (max_c, acked_before) = {
            let a = stats.attempts.lock().expect("lock");
            (a.iter().map(|a| a.counters.end).max().unwrap_or(0), a.len())
        };
        if max_c == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let window = 2_000u64;
        let first = rng.random_range(0..max_c.div_ceil(window)) * window;
        let range = v1::TimeRange {
            start: time_of(0, first),
            end: time_of(0, first + window - 1) + 1_000,
        };
        let started = Instant::now();
        let chaos_at_start = stats.chaos_now();
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            sluice_e2e::query(
                &grpc,
                v1::QueryRequest {
                    namespace: NS.into(),
                    table: TABLE.into(),
                    range: Some(range),
                    include_persisted,
                    ..Default::default()
                },
            ),
        )
        .await;
        match r {
            Ok(Ok(res)) => {
                stats.queries_ok.fetch_add(1, Ordering::Relaxed);
                stats
                    .query_rows
                    .fetch_add(res.rows() as u64, Ordering::Relaxed);
                let mut seen = HashMap::new();
                occurrences(&res.batches, &mut seen, "query");
                let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
                if !twice.is_empty() {
                    stats.violation(format!(
                        "a query (include_persisted {include_persisted}) served rows twice: \
                         {twice:?}; chaos at start: {chaos_at_start}, at end: {}",
                        stats.chaos_now()
                    ));
                }
                if include_persisted {
                    // Read-your-writes: acknowledged before the query began.
                    let mut missed = Vec::new();
                    let a = stats.attempts.lock().expect("lock");
                    for a in a[..acked_before]
                        .iter()
                        .filter(|a| a.outcome == Outcome::Acked && a.answered < started)
                    {
                        missed.extend(
                            a.counters
                                .clone()
                                .filter(|c| (first..first + window).contains(c))
                                .filter(|c| !seen.contains_key(&(a.writer, *c)))
                                .map(|c| (a.writer, c)),
                        );
                    }
                    drop(a);
                    if !missed.is_empty() {
                        let partitions: Vec<String> = res
                            .partitions
                            .iter()
                            .map(|p| {
                                format!(
                                    "{} rows {} persisted {} batches {}",
                                    p.partition_key, p.rows, p.persisted, p.persisted_batches
                                )
                            })
                            .collect();
                        stats.violation(format!(
                            "a query with include_persisted of window {first}..{} missed {} \
                             acknowledged rows (first {:?}); it served {} rows; partitions \
                             {partitions:?}; query took {:.2}s; chaos at start: \
                             {chaos_at_start}, at end: {}",
                            first + window,
                            missed.len(),
                            &missed[..missed.len().min(5)],
                            res.rows(),
                            started.elapsed().as_secs_f64(),
                            stats.chaos_now()
                        ));
                    }
                }
            }
            Ok(Err(s)) => {
                stats.queries_failed.fetch_add(1, Ordering::Relaxed);
                stats.count(format!("query {:?}", s.code()), s.message());
            }
            Err(_) => {
                stats.queries_failed.fetch_add(1, Ordering::Relaxed);
                stats.count("query timeout".into(), "");
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..=500))).await;
    }
}

/// `RotateWal`, `Persist` and `Persist(wait)` at random moments until
/// `stop`.
async fn controller(grpc: String, seed: u64, stop: Arc<AtomicBool>, stats: Arc<Stats>) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..=2_000))).await;
        let which = rng.random_range(0..3);
        let call = async {
            let mut c = v1::control_service_client::ControlServiceClient::connect(grpc.clone())
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            match which {
                0 => c.rotate_wal(v1::RotateWalRequest {}).await.map(|_| ()),
                1 => c.persist(v1::PersistRequest::default()).await.map(|_| ()),
                _ => c
                    .persist(v1::PersistRequest {
                        namespace: NS.into(),
                        table: TABLE.into(),
                        wait: true,
                    })
                    .await
                    .map(|_| ()),
            }
        };
        let name = ["RotateWal", "Persist", "Persist(wait)"][which];
        match tokio::time::timeout(Duration::from_secs(60), call).await {
            Ok(Ok(())) => {
                stats.controls_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(s)) => {
                stats.controls_failed.fetch_add(1, Ordering::Relaxed);
                stats.count(format!("{name} {:?}", s.code()), s.message());
            }
            Err(_) => {
                stats.controls_failed.fetch_add(1, Ordering::Relaxed);
                stats.count(format!("{name} timeout"), "");
            }
        }
    }
}

/// Checks the served rows (`include_persisted`) against every attempt;
/// returns the set of served keys.
async fn verify(ing: &Ingester, attempts: &[Attempt], when: &str) -> HashSet<Key> {
    let full = match ing.query_table_with_persisted(NS, TABLE).await {
        Ok(r) => r,
        Err(s) => panic!("{when}: query: {s}; log:\n{}", ing.log()),
    };
    let mut seen = HashMap::with_capacity(full.rows());
    occurrences(&full.batches, &mut seen, when);
    let mut expected = 0usize;
    for a in attempts {
        let counts: Vec<u32> = a
            .counters
            .clone()
            .map(|c| seen.get(&(a.writer, c)).copied().unwrap_or(0))
            .collect();
        let present = counts.iter().filter(|&&n| n > 0).count();
        let ctx = || {
            format!(
                "{when}: write of writer {} rows {:?} ({:?}): occurrences {counts:?}",
                a.writer, a.counters, a.outcome
            )
        };
        assert!(
            counts.iter().all(|&n| n <= 1),
            "a row served twice: {}",
            ctx()
        );
        match a.outcome {
            Outcome::Acked => {
                assert_eq!(present, counts.len(), "acknowledged rows lost: {}", ctx())
            }
            Outcome::Refused => assert_eq!(present, 0, "refused rows applied: {}", ctx()),
            Outcome::Unknown => assert!(
                present == 0 || present == counts.len(),
                "a write applied partially: {}",
                ctx()
            ),
        }
        expected += present;
    }
    assert_eq!(seen.len(), expected, "{when}: rows that no write sent");

    let buffered = ing
        .query_table(NS, TABLE)
        .await
        .unwrap_or_else(|s| panic!("{when}: buffer query: {s}"));
    let mut in_buffer = HashMap::new();
    occurrences(&buffered.batches, &mut in_buffer, when);
    let twice: Vec<_> = in_buffer.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "{when}: buffered twice: {twice:?}");
    seen.into_keys().collect()
}

/// Reads every cataloged Parquet file of the table from the object store:
/// no file holds a row twice, and together (deduplicated) they hold
/// exactly `served`. Returns (files, rows in files).
async fn check_parquet(chaos: &Chaos, served: &HashSet<Key>) -> (usize, u64) {
    let s3 = &chaos.s3;
    let store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(
        AmazonS3Builder::new()
            .with_endpoint(s3.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(&s3.bucket)
            .with_region("us-east-1")
            .with_access_key_id(&s3.access_key)
            .with_secret_access_key(&s3.secret_key)
            .build()
            .expect("S3 client"),
        "sluice",
    ));
    let metas = chaos
        .ing
        .parquet_files(NS, TABLE)
        .await
        .expect("ListParquetFiles");
    let stored: HashSet<String> = store
        .list(None)
        .try_collect::<Vec<_>>()
        .await
        .expect("list the bucket")
        .into_iter()
        .map(|o| o.location.to_string())
        .collect();
    let mut union: HashSet<Key> = HashSet::with_capacity(served.len());
    let mut rows = 0u64;
    for m in &metas {
        assert!(
            stored.contains(&m.object_path),
            "cataloged file missing from the store: {}",
            m.object_path
        );
        let path = object_store::path::Path::from(m.object_path.as_str());
        let bytes = store
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("get {path}: {e}"))
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("read {path}: {e}"));
        assert_eq!(bytes.len() as i64, m.file_size_bytes, "{path}: size");
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap_or_else(|e| panic!("{path} is not Parquet: {e}"))
            .build()
            .unwrap_or_else(|e| panic!("{path}: reader: {e}"))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{path}: decoding: {e}"));
        let mut in_file = HashMap::new();
        let what = format!("file {path}");
        occurrences(&batches, &mut in_file, &what);
        let file_rows: u64 = in_file.values().map(|&n| u64::from(n)).sum();
        assert_eq!(file_rows as i64, m.row_count, "{path}: row count");
        assert_eq!(
            in_file.len() as u64,
            file_rows,
            "{path}: a row twice in one file"
        );
        rows += file_rows;
        union.extend(in_file.into_keys());
    }
    let missing = served.difference(&union).take(5).collect::<Vec<_>>();
    let extra = union.difference(served).take(5).collect::<Vec<_>>();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "after Persist(wait) the Parquet files must hold exactly the served rows: \
         missing {missing:?}, extra {extra:?}"
    );
    // Persist(wait) left nothing to replay but the open segment.
    poll_until(
        Duration::from_secs(60),
        "WAL emptied to the open segment",
        || async {
            let segs = chaos.ing.wal_segments();
            (segs.len() == 1)
                .then_some(())
                .ok_or_else(|| format!("{segs:?}"))
        },
    )
    .await;
    (metas.len(), rows)
}
