//! `PrepareShutdown` under concurrent writes.
//!
//! Phase 1: writers run without pause; a drain starts. From a writer's
//! first refusal on, every write it sends is refused with `UNAVAILABLE`;
//! `/ready` turns 503. `PrepareShutdown(wait)` — a second call, joining the
//! running drain — answers `DRAINED` with nothing buffered; a third call
//! answers the same at once. Every WAL segment left is empty, and the
//! Parquet files (read from the store, not through the ingester) hold every
//! acknowledged row and no refused one.
//!
//! Phase 2: `ResumeIngest`, more writes, a drain started and the process
//! killed with SIGKILL in the middle of it. After the restart (replay)
//! `PrepareShutdown(wait)` ends the same way; then SIGTERM exits cleanly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use sluice_e2e::{Ingester, http_request, poll_until};
use sluice_proto::v1;

use crate::backend::Backend;
use crate::files;
use crate::rows::{Log, Outcome, key_of, time_of};

const NS: &str = "drain";
const TABLE: &str = "d";
const WRITERS: u32 = 3;
const ROWS: u64 = 500;

fn lines(w: u32, k: u64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for n in k * ROWS..(k + 1) * ROWS {
        let _ = writeln!(s, "{TABLE},w=w{w},h=h{} v={n}i {}", n % 25, time_of(w, n));
    }
    s
}

/// Writes until `stop`, or until 5 writes in a row were refused after a
/// drain began. Returns the number of refusals.
async fn writer(ing: Arc<Ingester>, w: u32, log: Log, stop: Arc<AtomicBool>) -> u32 {
    let Ok(mut c) = ing.write_client().await else {
        return 0;
    };
    let mut refused = 0;
    while !stop.load(Ordering::Acquire) && refused < 5 {
        let k = {
            let mut l = log.lock().expect("log");
            l[w as usize].push(Outcome::Unknown);
            l[w as usize].len() as u64 - 1
        };
        let outcome = match sluice_e2e::write_lp(&mut c, NS, lines(w, k).as_bytes()).await {
            Ok(_) => {
                assert_eq!(
                    refused, 0,
                    "writer {w}: request {k} accepted after a refusal"
                );
                Outcome::Acked
            }
            Err(s) if s.code() == tonic::Code::Unavailable && s.message().contains("draining") => {
                refused += 1;
                Outcome::Refused
            }
            // The process was killed: the answer is lost.
            Err(_) => return refused,
        };
        log.lock().expect("log")[w as usize][k as usize] = outcome;
    }
    refused
}

struct Writers {
    tasks: Vec<tokio::task::JoinHandle<u32>>,
    stop: Arc<AtomicBool>,
}

fn start_writers(ing: &Arc<Ingester>, log: &Log) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..WRITERS)
        .map(|w| {
            tokio::spawn(writer(
                Arc::clone(ing),
                w,
                Arc::clone(log),
                Arc::clone(&stop),
            ))
        })
        .collect();
    Writers { tasks, stop }
}

fn acked_rows(log: &Log) -> u64 {
    log.lock()
        .expect("log")
        .iter()
        .flatten()
        .filter(|o| **o == Outcome::Acked)
        .count() as u64
        * ROWS
}

async fn wait_acked(log: &Log, rows: u64) {
    poll_until(Duration::from_secs(60), "rows acknowledged", || async {
        let n = acked_rows(log);
        (n >= rows).then_some(()).ok_or(format!("{n} rows"))
    })
    .await;
}

/// Checks the drained state: `DRAINED`, nothing buffered, only empty WAL
/// segments, `/ready` 503.
async fn assert_drained(ing: &Ingester, r: &v1::PrepareShutdownResponse, when: &str) {
    assert_eq!(
        r.state,
        v1::IngesterState::Drained as i32,
        "{when}: {r:?}; log:\n{}",
        ing.log()
    );
    assert_eq!(r.buffered_rows, 0, "{when}: {r:?}");
    let st = ing.status().await.expect("status");
    assert_eq!(
        st.state,
        v1::IngesterState::Drained as i32,
        "{when}: {st:?}"
    );
    assert_eq!(st.buffered_rows, 0, "{when}: {st:?}");
    assert_eq!(
        st.persist_queue_depth + st.persist_active_jobs,
        0,
        "{when}: {st:?}"
    );
    for seg in ing.wal_segments() {
        let len = std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0);
        assert!(
            len <= 16,
            "{when}: WAL segment {} holds entries ({len} bytes)",
            seg.display()
        );
    }
    assert!(
        ing.wal_segments().len() <= 1,
        "{when}: {:?}",
        ing.wal_segments()
    );
    let (status, _) = http_request(
        "GET",
        &format!("{}/ready", ing.http_url()),
        Vec::new(),
        false,
    )
    .await
    .expect("/ready");
    assert_eq!(status, 503, "{when}: /ready while drained");
}

/// Every acknowledged row is in the Parquet files; no refused row is.
/// Settles unknown outcomes (all or nothing). Returns the distinct rows.
async fn assert_in_parquet(backend: &Backend, ing: &Ingester, log: &Log, when: &str) -> usize {
    let fs = files::read_table(backend, ing, NS, TABLE, true).await;
    let mut present: HashMap<(u32, u64), u32> = HashMap::new();
    for f in &fs {
        files::check_file(f, &["h", "w"]);
        for b in &f.batches {
            let v = b
                .column_by_name("v")
                .expect("v")
                .as_primitive::<Int64Type>();
            for (i, t) in files::times(b).into_iter().enumerate() {
                let (w, n) = key_of(t);
                assert_eq!(v.value(i), n as i64, "{when}: v of ({w}, {n})");
                *present.entry((w, n)).or_default() += 1;
            }
        }
    }
    let distinct = present.len();
    let mut log = log.lock().expect("log");
    for (w, reqs) in log.iter_mut().enumerate() {
        for (k, o) in reqs.iter_mut().enumerate() {
            let n = (k as u64 * ROWS..(k as u64 + 1) * ROWS)
                .filter(|n| present.remove(&(w as u32, *n)).is_some())
                .count() as u64;
            match o {
                Outcome::Acked => {
                    assert_eq!(
                        n, ROWS,
                        "{when}: writer {w} request {k}: acked rows not in Parquet"
                    )
                }
                Outcome::Refused => assert_eq!(n, 0, "{when}: writer {w} request {k}: refused"),
                Outcome::Unknown => {
                    assert!(
                        n == 0 || n == ROWS,
                        "{when}: writer {w} request {k}: partial"
                    );
                    *o = if n == ROWS {
                        Outcome::Acked
                    } else {
                        Outcome::Refused
                    };
                }
            }
        }
    }
    assert!(present.is_empty(), "{when}: rows never sent are in Parquet");
    distinct
}

pub async fn prepare_shutdown_under_writes(backend: Arc<Backend>) {
    let mut ing = backend
        .ingester()
        .arg("--wal-segment-bytes")
        .arg("262144")
        .arg("--hot-partition-rows")
        .arg("6000");
    ing.start().await.expect("start");
    let log: Log = Arc::new(Mutex::new(vec![Vec::new(); WRITERS as usize]));

    // ---- phase 1: drain under writes, called three times ----
    let shared = Arc::new(ing);
    let ws = start_writers(&shared, &log);
    wait_acked(&log, 30_000).await;
    let first = shared
        .prepare_shutdown(false)
        .await
        .expect("PrepareShutdown");
    assert!(
        first.state == v1::IngesterState::Draining as i32
            || first.state == v1::IngesterState::Drained as i32,
        "{first:?}"
    );
    let mut refusals = 0;
    for t in ws.tasks {
        refusals += t.await.expect("writer");
    }
    assert_eq!(
        refusals,
        5 * WRITERS,
        "every writer was refused once the drain began"
    );
    let second = shared
        .prepare_shutdown(true)
        .await
        .expect("PrepareShutdown(wait)");
    assert_drained(&shared, &second, "second call").await;
    let third = shared
        .prepare_shutdown(true)
        .await
        .expect("PrepareShutdown again");
    assert_drained(&shared, &third, "third call").await;
    let err = shared
        .write_lp(NS, &lines(0, 1_000_000))
        .await
        .expect_err("writes after the drain are refused");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    let rows1 = assert_in_parquet(&backend, &shared, &log, "after the drain").await;

    // ---- phase 2: resume, write, kill -9 mid-drain, restart, drain ----
    let r = shared.resume_ingest().await.expect("ResumeIngest");
    assert_eq!(r.state, v1::IngesterState::Ready as i32);
    let ws = start_writers(&shared, &log);
    wait_acked(&log, acked_rows(&log) + 30_000).await;
    shared
        .prepare_shutdown(false)
        .await
        .expect("PrepareShutdown");
    // Kill once the drain is under way but not finished.
    let st = shared.status().await.expect("status");
    let pid = shared.pid().expect("running");
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill -9");
    ws.stop.store(true, Ordering::Release);
    for t in ws.tasks {
        t.await.expect("writer");
    }
    let mut ing = Arc::into_inner(shared).expect("writers done");
    ing.kill9();
    ing.start().await.expect("restart after kill -9 mid-drain");
    let after = ing
        .prepare_shutdown(true)
        .await
        .expect("PrepareShutdown after restart");
    assert_drained(&ing, &after, "after kill -9 mid-drain and restart").await;
    let rows2 = assert_in_parquet(&backend, &ing, &log, "after the second drain").await;
    assert!(rows2 > rows1);
    // The deduplicated view agrees (replay may have persisted rows twice).
    let q = ing
        .query_table_with_persisted(NS, TABLE)
        .await
        .expect("query");
    assert_eq!(q.rows(), rows2, "each row once after deduplication");
    let exit = ing.stop().await.expect("SIGTERM");
    assert!(exit.success(), "clean exit after the drain: {exit}");
    ing.assert_no_panic();
    eprintln!(
        "drain ({:?}): {rows1} rows in Parquet after the first drain, {rows2} after the \
         second; killed with state {:?}, {} buffered rows",
        backend.kind,
        v1::IngesterState::try_from(st.state).unwrap_or_default(),
        st.buffered_rows
    );
}
