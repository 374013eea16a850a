//! Rotation racing writes, and `kill -9` while persist jobs run.
//!
//! Writers send unique rows without pause while another task rotates the
//! WAL as fast as it can (so writes land just before, during and after each
//! rotation) and hot partitions persist every few thousand rows. Each round
//! the process is killed with SIGKILL at a moment a persist job is running
//! (seen in `Status`), restarted (replay, then everything replayed is
//! persisted again), and checked:
//!
//! * every acknowledged row is served exactly once by `include_persisted`
//!   (persisted before the crash, replayed, or both — deduplicated);
//! * a write whose answer was lost is there entirely or not at all;
//! * no row appears that was never sent.
//!
//! At the end `Persist(wait)` leaves only the open WAL segment, the
//! Parquet files alone (merged) hold every acknowledged row, and every
//! object in the store is a cataloged file (no upload orphaned by a kill).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use sluice_e2e::data::BASE_TIME;
use sluice_e2e::{Ingester, poll_until};
use sluice_proto::v1;

use crate::backend::Backend;
use crate::files;
use crate::rows::{DAY, Log, Outcome};

const NS: &str = "crash_persist";
const TABLE: &str = "k";
const WRITERS: u32 = 3;
const ROWS: u64 = 400;
const ROUNDS: u32 = 5;

fn time_of(w: u32, n: u64) -> i64 {
    BASE_TIME + DAY * (n / 5_000 % 2) as i64 + n as i64 * 1_000 + i64::from(w)
}

fn key_of(t: i64) -> (u32, u64) {
    let d = t - BASE_TIME;
    let w = (d % 1_000) as u32;
    let n = (d / 1_000) as u64;
    // Undo the day offset (n / 5_000 % 2 days).
    let n = if n >= (DAY / 1_000) as u64 {
        n - (DAY / 1_000) as u64
    } else {
        n
    };
    (w, n)
}

fn lines(w: u32, k: u64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for n in k * ROWS..(k + 1) * ROWS {
        let _ = writeln!(
            s,
            "{TABLE},w=w{w},host=h{} v={n}i {}",
            n % 20,
            time_of(w, n)
        );
    }
    s
}

/// Writes until `stop`; records every request's outcome.
async fn writer(ing: Arc<Ingester>, w: u32, log: Log, stop: Arc<AtomicBool>) {
    let Ok(mut c) = ing.write_client().await else {
        return;
    };
    while !stop.load(Ordering::Acquire) {
        let k = log.lock().expect("log")[w as usize].len() as u64;
        log.lock().expect("log")[w as usize].push(Outcome::Unknown);
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            sluice_e2e::write_lp(&mut c, NS, lines(w, k).as_bytes()),
        )
        .await;
        let outcome = match r {
            Ok(Ok(resp)) => {
                assert_eq!(resp.rows, ROWS);
                Outcome::Acked
            }
            Ok(Err(s))
                if matches!(
                    s.code(),
                    tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument
                ) || (s.code() == tonic::Code::Unavailable
                    && s.message().contains("ingester")) =>
            {
                Outcome::Refused
            }
            // Transport errors: the process is gone; the answer is lost.
            Ok(Err(_)) | Err(_) => {
                return;
            }
        };
        log.lock().expect("log")[w as usize][k as usize] = outcome;
    }
}

/// Rotates the WAL in a loop until `stop` (errors ignored: the process
/// may be gone).
async fn rotator(ing: Arc<Ingester>, stop: Arc<AtomicBool>) -> u32 {
    let mut n = 0;
    let Ok(mut c) = ing.control_client().await else {
        return 0;
    };
    while !stop.load(Ordering::Acquire) {
        if c.rotate_wal(v1::RotateWalRequest {}).await.is_ok() {
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n
}

/// Checks the served rows against the write log.
async fn verify(ing: &Ingester, log: &Log, when: &str) -> usize {
    let r = ing
        .query_table_with_persisted(NS, TABLE)
        .await
        .unwrap_or_else(|s| panic!("{when}: query: {s}\n{}", ing.log()));
    let mut seen: HashMap<(u32, u64), u32> = HashMap::new();
    for b in &r.batches {
        let v = b
            .column_by_name("v")
            .expect("v")
            .as_primitive::<Int64Type>();
        for (i, t) in files::times(b).into_iter().enumerate() {
            let (w, n) = key_of(t);
            assert_eq!(v.value(i), n as i64, "{when}: value of ({w}, {n})");
            *seen.entry((w, n)).or_default() += 1;
        }
    }
    let mut log = log.lock().expect("log");
    let mut rows = 0;
    for (w, reqs) in log.iter_mut().enumerate() {
        for (k, outcome) in reqs.iter_mut().enumerate() {
            let counts: Vec<u32> = (k as u64 * ROWS..(k as u64 + 1) * ROWS)
                .map(|n| seen.remove(&(w as u32, n)).unwrap_or(0))
                .collect();
            let present = counts.iter().filter(|c| **c > 0).count();
            assert!(
                counts.iter().all(|c| *c <= 1),
                "{when}: writer {w} request {k} ({outcome:?}): a row served twice"
            );
            match outcome {
                Outcome::Acked => assert_eq!(
                    present,
                    ROWS as usize,
                    "{when}: writer {w} request {k}: acknowledged rows lost\n{}",
                    ing.log()
                ),
                Outcome::Refused => {
                    assert_eq!(
                        present, 0,
                        "{when}: writer {w} request {k}: refused but applied"
                    )
                }
                Outcome::Unknown => {
                    assert!(
                        present == 0 || present == ROWS as usize,
                        "{when}: writer {w} request {k}: partially applied ({present} rows)"
                    );
                    // Settled by recovery: from now on it must stay so.
                    *outcome = if present > 0 {
                        Outcome::Acked
                    } else {
                        Outcome::Refused
                    };
                }
            }
            rows += present;
        }
    }
    assert!(
        seen.is_empty(),
        "{when}: rows never sent: {:?}",
        seen.keys().take(5).collect::<Vec<_>>()
    );
    rows
}

pub async fn rotation_race_and_kill9_during_persist(backend: Arc<Backend>) {
    let mut ing = backend
        .ingester()
        .arg("--wal-segment-bytes")
        .arg("131072")
        .arg("--hot-partition-rows")
        .arg("3000");
    let log: Log = Arc::new(Mutex::new(vec![Vec::new(); WRITERS as usize]));
    let (mut rotations, mut kills_during_persist) = (0, 0);
    for round in 0..ROUNDS {
        ing.start().await.expect("start");
        if round > 0 {
            verify(&ing, &log, &format!("round {round}, right after restart")).await;
        }
        let shared = Arc::new(std::mem::replace(&mut ing, Ingester::new("/nonexistent")));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            tasks.push(tokio::spawn(writer(
                Arc::clone(&shared),
                w,
                Arc::clone(&log),
                Arc::clone(&stop),
            )));
        }
        let rot = tokio::spawn(rotator(Arc::clone(&shared), Arc::clone(&stop)));
        // Let data accumulate, then kill while a persist job runs.
        let min_rows = 20_000 * u64::from(round + 1);
        let mut polls = 0;
        loop {
            let st = shared.status().await.expect("status");
            let acked: usize = log
                .lock()
                .expect("log")
                .iter()
                .map(|r| r.iter().filter(|o| **o == Outcome::Acked).count())
                .sum();
            polls += 1;
            if acked as u64 * ROWS >= min_rows && st.persist_active_jobs > 0 {
                kills_during_persist += 1;
                break;
            }
            assert!(polls < 20_000, "no persist job seen running: {st:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The writers hold clones of the handle: kill by pid.
        let pid = shared.pid().expect("running");
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill -9");
        stop.store(true, Ordering::Release);
        for t in tasks {
            t.await.expect("writer task");
        }
        rotations += rot.await.expect("rotator");
        ing = Arc::into_inner(shared).expect("all tasks done");
        ing.kill9(); // reap
    }
    ing.start().await.expect("final start");
    let rows = verify(&ing, &log, "after the last restart").await;
    ing.persist_all(true).await.expect("Persist(wait)");
    poll_until(
        Duration::from_secs(60),
        "WAL emptied to the open segment",
        || async {
            let segs = ing.wal_segments();
            (segs.len() == 1)
                .then_some(())
                .ok_or_else(|| format!("{segs:?}"))
        },
    )
    .await;
    verify(&ing, &log, "after Persist(wait)").await;
    // The Parquet files alone hold every row (duplicates across files are
    // re-persisted replays; each file is sorted and duplicate-free).
    // No orphans: an upload a kill left unrecorded was deleted at restart.
    let fs = files::read_table(&backend, &ing, NS, TABLE, false).await;
    let mut in_files: HashMap<(u32, u64), ()> = HashMap::new();
    for f in &fs {
        files::check_file(f, &["host", "w"]);
        for b in &f.batches {
            for t in files::times(b) {
                in_files.insert(key_of(t), ());
            }
        }
    }
    assert_eq!(in_files.len(), rows, "distinct rows in Parquet");
    eprintln!(
        "crash ({:?}): {ROUNDS} kills during persist ({kills_during_persist}), {rotations} \
         requested rotations, {rows} rows verified, {} files",
        backend.kind,
        fs.len()
    );
    ing.stop().await.expect("stop");
    ing.assert_no_panic();
}
