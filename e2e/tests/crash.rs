//! `kill -9` at random moments under concurrent writes (gRPC and HTTP),
//! restart, verify, repeat.
//!
//! Every row is unique: (writer, round, counter), and no write is ever
//! retried with the same rows. After each restart:
//!
//! * every acknowledged row is served exactly once (with persisted data,
//!   which the server deduplicates, and at most once in the buffer alone);
//! * a write whose answer was lost in the crash is present entirely or not
//!   at all (a write is one WAL entry), never partially, never twice;
//! * a write the server refused (INVALID_ARGUMENT, RESOURCE_EXHAUSTED or an
//!   HTTP 4xx/5xx answer) is absent;
//! * no row appears that was never sent.
//!
//! Small WAL segments make rotations and persist jobs run while the
//! process is killed. Every 5th round also kills the process during
//! start-up (replay); every 4th round stops it with SIGTERM under load
//! instead of SIGKILL (it must exit 0; writes it refuses with
//! "the ingester is shutting down" must be absent). Rounds: `SLUICE_CRASH_ROUNDS` (default 20); the
//! random seed is printed and can be fixed with `SLUICE_CRASH_SEED`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_e2e::data::{self, BASE_TIME};
use sluice_e2e::{Ingester, Outcome, QueryResult, within};
use sluice_proto::v1;

const NS: &str = "crash";
const TABLE: &str = "crash";
const WRITERS: u32 = 4;
/// Writer 3 writes over HTTP, the others over gRPC.
const HTTP_WRITER: u32 = 3;
const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

#[derive(Debug, Clone)]
struct Attempt {
    writer: u32,
    round: u32,
    counters: std::ops::Range<u64>,
    outcome: Outcome,
    /// For `Unknown`: whether its rows were found after the first restart.
    /// Recovery settles it; later restarts must agree.
    resolved: Option<bool>,
}

type Key = (u32, u32, u64);

fn time_of(w: u32, round: u32, c: u64) -> i64 {
    // Three partitions (days); unique per series (w, round).
    BASE_TIME + i64::from(round % 3) * NANOS_PER_DAY + (c as i64) * 1_000 + i64::from(w)
}

fn value_of(w: u32, round: u32, c: u64) -> f64 {
    (c as f64) * 0.25 + f64::from(w) + f64::from(round) * 1000.0
}

fn lines(w: u32, round: u32, counters: std::ops::Range<u64>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for c in counters {
        let _ = writeln!(
            s,
            "{TABLE},w={w},r={round} c={c}i,v={:?} {}",
            value_of(w, round, c),
            time_of(w, round, c)
        );
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9() {
    let rounds: u32 = std::env::var("SLUICE_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash: {rounds} rounds, seed {seed} (SLUICE_CRASH_SEED)");
    let limit = Duration::from_secs(90 + u64::from(rounds) * 10);
    within(limit, "crash test", run(rounds, seed)).await;
}

async fn run(rounds: u32, seed: u64) {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--wal-segment-bytes")
        .arg("65536");
    let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let mut restart_secs = Vec::new();
    // Seen in the logs of the killed processes.
    let (mut rotations, mut persists) = (0u64, 0u64);

    let mut kills_during_start = 0;
    let mut sigterms = 0;
    for round in 0..rounds {
        if round % 5 == 4 {
            // A crash during start-up (replay, or persisting what it replayed).
            ing.spawn().expect("spawn");
            let delay = rng.random_range(0..=150);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            ing.kill9();
            kills_during_start += 1;
        }
        let t = Instant::now();
        ing.start()
            .await
            .unwrap_or_else(|e| panic!("restart before round {round}: {e:#}"));
        restart_secs.push(t.elapsed().as_secs_f64());
        verify(&ing, &attempts, round).await;

        // Concurrent writers until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let stop = Arc::clone(&stop);
            let attempts = Arc::clone(&attempts);
            let grpc = ing.grpc_url();
            let http = ing.http_url();
            let wseed = rng.random::<u64>();
            tasks.push(tokio::spawn(async move {
                writer(w, round, wseed, &grpc, &http, &stop, &attempts).await
            }));
        }
        let delay = rng.random_range(50..=400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let metric = |name| ing.metric(name);
        rotations += metric("sluice_wal_rotations_total")
            .await
            .ok()
            .flatten()
            .unwrap_or(0.0) as u64;
        persists += metric("sluice_persist_files_total")
            .await
            .ok()
            .flatten()
            .unwrap_or(0.0) as u64;
        let log = if round % 4 == 3 {
            // A clean stop under load: in-flight writes finish or are
            // refused; the process exits 0.
            let st = within(Duration::from_secs(40), "SIGTERM under load", ing.stop())
                .await
                .expect("SIGTERM");
            assert!(
                st.success(),
                "round {round}: exit {st}; log:\n{}",
                ing.log()
            );
            sigterms += 1;
            ing.log()
        } else {
            let log = ing.log();
            ing.kill9();
            log
        };
        assert!(
            !log.contains("panicked"),
            "round {round}: panic in log:\n{log}"
        );
        stop.store(true, Ordering::Release);
        for t in tasks {
            within(Duration::from_secs(30), "writer to stop", t)
                .await
                .expect("writer task");
        }
    }

    // Once more after the last kill, then a clean stop and start.
    ing.start().await.expect("final restart");
    verify(&ing, &attempts, rounds).await;
    let st = ing.stop().await.expect("SIGTERM");
    assert!(st.success(), "clean stop: {st}; log:\n{}", ing.log());
    ing.assert_no_panic();
    ing.start().await.expect("start after clean stop");
    verify(&ing, &attempts, rounds + 1).await;
    let files = ing
        .catalog_client()
        .await
        .expect("catalog client")
        .list_parquet_files(v1::ListParquetFilesRequest {
            namespace: NS.into(),
            table: TABLE.into(),
        })
        .await
        .expect("ListParquetFiles")
        .into_inner()
        .files;
    let file_rows: i64 = files.iter().map(|f| f.row_count).sum();
    ing.stop().await.expect("SIGTERM");
    ing.assert_no_panic();
    let all = attempts.lock().expect("lock").clone();

    let count = |o: Outcome| {
        all.iter()
            .filter(|a| a.outcome == o)
            .map(|a| a.counters.end - a.counters.start)
            .sum::<u64>()
    };
    let http_acked: u64 = all
        .iter()
        .filter(|a| a.outcome == Outcome::Acked && a.writer == HTTP_WRITER)
        .map(|a| a.counters.end - a.counters.start)
        .sum();
    let unknown_present = all
        .iter()
        .filter(|a| a.outcome == Outcome::Unknown && a.resolved == Some(true))
        .count();
    let unknown = all.iter().filter(|a| a.outcome == Outcome::Unknown).count();
    eprintln!(
        "crash: {rotations} WAL rotations and {persists} Parquet files written before the kills; \
         {} Parquet files with {file_rows} rows at the end; \
         {unknown_present} of {unknown} unanswered writes were applied",
        files.len()
    );
    restart_secs.sort_by(f64::total_cmp);
    eprintln!("crash: {kills_during_start} kills during start-up, {sigterms} SIGTERMs under load");
    eprintln!(
        "crash: {rounds} rounds in {:.1}s; {} writes; acked rows {} ({} over HTTP), \
         unknown-outcome rows {}, refused rows {}; restart to ready: median {:.2}s, max {:.2}s",
        started.elapsed().as_secs_f64(),
        all.len(),
        count(Outcome::Acked),
        http_acked,
        count(Outcome::Unknown),
        count(Outcome::Refused),
        restart_secs[restart_secs.len() / 2],
        restart_secs.last().copied().unwrap_or_default(),
    );
    assert!(
        count(Outcome::Acked) > 0,
        "no write was acknowledged at all"
    );
}

/// One writer: batches of 1–300 fresh rows until `stop`.
async fn writer(
    w: u32,
    round: u32,
    seed: u64,
    grpc: &str,
    http: &str,
    stop: &AtomicBool,
    attempts: &Mutex<Vec<Attempt>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = None;
    let mut next = 0u64;
    while !stop.load(Ordering::Acquire) {
        let n = rng.random_range(1..=300u64);
        let counters = next..next + n;
        next += n;
        let lp = lines(w, round, counters.clone());
        let outcome = if w == HTTP_WRITER {
            let url = format!("{http}/api/v2/write?bucket={NS}");
            let r = tokio::time::timeout(
                Duration::from_secs(20),
                sluice_e2e::http_post(&url, lp.into_bytes(), false),
            )
            .await;
            match r {
                Ok(Ok((204, _))) => Outcome::Acked,
                // A complete answer from the server: a refusal.
                Ok(Ok((status, body))) if body.contains("\"code\"") => {
                    eprintln!("crash: HTTP write refused: {status} {body}");
                    Outcome::Refused
                }
                _ => Outcome::Unknown,
            }
        } else {
            if client.is_none() {
                client = v1::write_service_client::WriteServiceClient::connect(grpc.to_string())
                    .await
                    .ok();
            }
            match &mut client {
                // Not connected: nothing was sent.
                None => {
                    next -= n;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Some(c) => {
                    let r = tokio::time::timeout(
                        Duration::from_secs(20),
                        sluice_e2e::write_lp(c, NS, lp.as_bytes()),
                    )
                    .await;
                    match r {
                        Ok(Ok(resp)) => {
                            assert_eq!(resp.rows, n, "rows acknowledged");
                            Outcome::Acked
                        }
                        Ok(Err(s)) if sluice_e2e::is_refusal(&s) => {
                            eprintln!("crash: gRPC write refused: {s}");
                            Outcome::Refused
                        }
                        _ => {
                            client = None;
                            Outcome::Unknown
                        }
                    }
                }
            }
        };
        let failed = outcome != Outcome::Acked;
        attempts.lock().expect("lock").push(Attempt {
            writer: w,
            round,
            counters,
            outcome,
            resolved: None,
        });
        if failed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Occurrences of each key in a query result, checking each row's values.
fn occurrences(r: &QueryResult) -> HashMap<Key, u32> {
    let mut out = HashMap::with_capacity(r.rows());
    for b in &r.batches {
        let ws = data::strings(b, "w");
        let rs = data::strings(b, "r");
        let times = data::times(b);
        let cs = data::column(b, "c").as_primitive::<Int64Type>();
        let vs = data::column(b, "v").as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let w: u32 = ws[i]
                .as_deref()
                .and_then(|s| s.parse().ok())
                .expect("tag w");
            let round: u32 = rs[i]
                .as_deref()
                .and_then(|s| s.parse().ok())
                .expect("tag r");
            assert!(cs.is_valid(i) && vs.is_valid(i), "null field in row {i}");
            let c = u64::try_from(cs.value(i)).expect("counter >= 0");
            assert_eq!(
                times[i],
                time_of(w, round, c),
                "time of ({w}, {round}, {c})"
            );
            assert_eq!(
                vs.value(i),
                value_of(w, round, c),
                "v of ({w}, {round}, {c})"
            );
            *out.entry((w, round, c)).or_default() += 1;
        }
    }
    out
}

async fn verify(ing: &Ingester, attempts: &Mutex<Vec<Attempt>>, round: u32) {
    if attempts.lock().expect("lock").is_empty() {
        return;
    }
    let query = |include_persisted| {
        ing.query(v1::QueryRequest {
            namespace: NS.into(),
            table: TABLE.into(),
            include_persisted,
            ..Default::default()
        })
    };
    // The namespace may not exist yet if no write of round 0 got through.
    let full = match query(true).await {
        Ok(r) => r,
        Err(s) if s.code() == tonic::Code::NotFound => QueryResult::default(),
        Err(s) => panic!("after round {round}: query: {s}; log:\n{}", ing.log()),
    };
    let seen = occurrences(&full);
    let mut expected_keys = 0usize;
    {
        let mut attempts = attempts.lock().expect("lock");
        for a in attempts.iter_mut() {
            let counts: Vec<u32> = a
                .counters
                .clone()
                .map(|c| seen.get(&(a.writer, a.round, c)).copied().unwrap_or(0))
                .collect();
            let present = counts.iter().filter(|&&n| n > 0).count();
            let ctx = || {
                format!(
                    "after round {round}: write of writer {} round {} rows {:?} ({:?}, {:?}): \
                 occurrences {:?}",
                    a.writer,
                    a.round,
                    a.counters,
                    a.outcome,
                    a.resolved,
                    summarize(&counts)
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
                Outcome::Unknown => {
                    assert!(
                        present == 0 || present == counts.len(),
                        "a write applied partially: {}",
                        ctx()
                    );
                    let now = present > 0;
                    match a.resolved {
                        None => a.resolved = Some(now),
                        Some(before) => assert_eq!(
                            before,
                            now,
                            "a write's presence changed after recovery: {}",
                            ctx()
                        ),
                    }
                }
            }
            expected_keys += present;
        }
    }
    assert_eq!(
        seen.len(),
        expected_keys,
        "after round {round}: rows that no attempt wrote"
    );

    // The buffer alone never holds a row twice.
    let buffered = match query(false).await {
        Ok(r) => r,
        Err(s) if s.code() == tonic::Code::NotFound => QueryResult::default(),
        Err(s) => panic!("after round {round}: buffer query: {s}"),
    };
    let twice = occurrences(&buffered)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .take(5)
        .collect::<Vec<_>>();
    assert!(
        twice.is_empty(),
        "after round {round}: buffered twice: {twice:?}"
    );
}

/// `[1, 1, 0, 0]` → `"2×1, 2×0"` (run-length, for messages).
fn summarize(counts: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < counts.len() {
        let mut j = i;
        while j < counts.len() && counts[j] == counts[i] {
            j += 1;
        }
        out.push(format!("{}×{}", j - i, counts[i]));
        i = j;
    }
    out.join(", ")
}
