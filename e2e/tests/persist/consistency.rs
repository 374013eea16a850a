//! What queries see while data moves from memory to Parquet.
//!
//! * [`include_persisted_same_rows_before_during_after`] — `include_persisted`
//!   queries return exactly the deduplicated rows (a model kept by the test,
//!   field-by-field last-write-wins) before a persist, continuously while it
//!   runs, after it, and after a restart that replays and persists again.
//! * [`exactly_once_while_persisting`] — under continuous writes, hot
//!   partitions and WAL rotations, every buffer-only query together with the
//!   cataloged files its `app_metadata` says are persisted (batch number ≤
//!   `persisted_batches`) holds each acknowledged row exactly once — the
//!   contract a querier relies on — and `include_persisted` queries do too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use sluice_e2e::data::BASE_TIME;
use sluice_e2e::{Ingester, poll_until};
use sluice_proto::v1;

use crate::backend::Backend;
use crate::files;
use crate::rows::{DAY, key_of, time_of};

// ---------------------------------------------------------------------------
// include_persisted before / during / after
// ---------------------------------------------------------------------------

const NS: &str = "consistency";
const TABLE: &str = "c";
const ROUNDS: u64 = 5;
const NEW_PER_ROUND: u64 = 10_000;

type Key = (Arc<str>, Arc<str>, i64);

#[derive(Debug, Clone, PartialEq, Default)]
struct Fields {
    a: Option<i64>,
    b: Option<f64>,
    s: Option<String>,
}

impl Fields {
    fn overlay(&mut self, newer: &Fields) {
        if newer.a.is_some() {
            self.a = newer.a;
        }
        if newer.b.is_some() {
            self.b = newer.b;
        }
        if newer.s.is_some() {
            self.s.clone_from(&newer.s);
        }
    }
}

/// The key of row `n`: three days, 40 hosts, 2 data centres.
fn key(n: u64) -> Key {
    (
        Arc::from(format!("h{}", n % 40)),
        Arc::from(["dc a", "dc-b"][(n % 2) as usize]),
        BASE_TIME + DAY * (n % 3) as i64 + n as i64 * 1_000,
    )
}

fn line(k: &Key, f: &Fields) -> String {
    let mut fields = Vec::new();
    if let Some(a) = f.a {
        fields.push(format!("a={a}i"));
    }
    if let Some(b) = f.b {
        fields.push(format!("b={b:?}"));
    }
    if let Some(s) = &f.s {
        fields.push(format!("s=\"{s}\""));
    }
    format!(
        "{TABLE},host={},dc={} {} {}\n",
        k.0,
        k.1.replace(' ', "\\ "),
        fields.join(","),
        k.2
    )
}

fn decode(batches: &[RecordBatch]) -> Vec<(Key, Fields)> {
    let mut out = Vec::new();
    for b in batches {
        let host = files::tag_strings(b, "host");
        let dc = files::tag_strings(b, "dc");
        let time = files::times(b);
        let a = b
            .column_by_name("a")
            .map(|c| c.as_primitive::<Int64Type>().clone());
        let bb = b
            .column_by_name("b")
            .map(|c| c.as_primitive::<Float64Type>().clone());
        let s = b.column_by_name("s").map(|c| c.as_string::<i32>().clone());
        for (i, t) in time.into_iter().enumerate() {
            out.push((
                (
                    host[i].clone().expect("host"),
                    dc[i].clone().expect("dc"),
                    t,
                ),
                Fields {
                    a: a.as_ref().and_then(|x| x.is_valid(i).then(|| x.value(i))),
                    b: bb.as_ref().and_then(|x| x.is_valid(i).then(|| x.value(i))),
                    s: s.as_ref()
                        .and_then(|x| x.is_valid(i).then(|| x.value(i).to_string())),
                },
            ));
        }
    }
    out
}

async fn query_all(ing: &Ingester, include_persisted: bool) -> sluice_e2e::QueryResult {
    ing.query(v1::QueryRequest {
        namespace: NS.into(),
        table: TABLE.into(),
        include_persisted,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|s| panic!("query (include_persisted {include_persisted}): {s}"))
}

/// Checks an `include_persisted` answer against the model.
fn check_dedup(r: &sluice_e2e::QueryResult, model: &BTreeMap<Key, Fields>, when: &str) {
    let mut got = decode(&r.batches);
    got.sort_by(|x, y| x.0.cmp(&y.0));
    for w in got.windows(2) {
        assert_ne!(w[0].0, w[1].0, "{when}: a row returned twice: {:?}", w[0]);
    }
    assert_eq!(got.len(), model.len(), "{when}: rows");
    for ((k, f), (mk, mf)) in got.iter().zip(model) {
        assert_eq!((k, f), (mk, mf), "{when}: row");
    }
    for p in &r.partitions {
        assert!(
            p.persisted,
            "{when}: include_persisted streams say so: {p:?}"
        );
    }
}

pub async fn include_persisted_same_rows_before_during_after(backend: Arc<Backend>) {
    let mut ing = backend
        .ingester()
        .arg("--persist-workers")
        .arg("1")
        // Persists happen only when the test asks.
        .arg("--hot-partition-rows")
        .arg("100000000");
    ing.start().await.expect("start");
    let mut model: BTreeMap<Key, Fields> = BTreeMap::new();
    let mut next = 0u64;
    let (mut during, mut queries) = (0u32, 0u32);
    for round in 0..ROUNDS {
        // New rows, in two requests; the second request also rewrites rows
        // of earlier rounds (persisted by now) with `b` and `s` only, and
        // rewrites rows of the first request (still buffered) with `a`.
        let mut reqs = [String::new(), String::new()];
        for n in next..next + NEW_PER_ROUND {
            let f = Fields {
                a: Some(n as i64),
                b: Some(n as f64 * 0.5),
                s: Some(format!("r{round}")),
            };
            let half = usize::from(n >= next + NEW_PER_ROUND / 2);
            reqs[half].push_str(&line(&key(n), &f));
            model.insert(key(n), f);
        }
        let mut rewrites = Vec::new();
        for n in (0..next).step_by(7) {
            rewrites.push((
                key(n),
                Fields {
                    a: None,
                    b: Some(-(n as f64) - round as f64),
                    s: Some(format!("rewritten in {round}")),
                },
            ));
        }
        for n in (next..next + NEW_PER_ROUND / 2).step_by(11) {
            rewrites.push((
                key(n),
                Fields {
                    a: Some(-(n as i64)),
                    b: None,
                    s: None,
                },
            ));
        }
        for (k, f) in &rewrites {
            reqs[1].push_str(&line(k, f));
            model.get_mut(k).expect("rewrites existing rows").overlay(f);
        }
        for r in &reqs {
            ing.write_lp(NS, r).await.expect("write");
        }
        next += NEW_PER_ROUND;

        check_dedup(
            &query_all(&ing, true).await,
            &model,
            &format!("round {round}, before persisting"),
        );
        ing.persist(NS, "", false).await.expect("Persist");
        loop {
            let st = ing.status().await.expect("status");
            let busy = st.persist_active_jobs + st.persist_queue_depth > 0 || st.buffered_rows > 0;
            let r = query_all(&ing, true).await;
            queries += 1;
            check_dedup(
                &r,
                &model,
                &format!("round {round}, while persisting (query {queries})"),
            );
            if !busy {
                break;
            }
            during += 1;
        }
        // All of it is in Parquet now: the buffer alone is empty.
        assert_eq!(query_all(&ing, false).await.rows(), 0, "round {round}");
        check_dedup(
            &query_all(&ing, true).await,
            &model,
            &format!("round {round}, after persisting"),
        );
    }
    assert!(
        during > 0,
        "no query ran while a persist was in progress ({queries} queries)"
    );

    // Restart: the WAL still holds everything (one open segment), so the
    // rows are replayed and persisted a second time; the view is unchanged.
    ing.stop().await.expect("stop");
    ing.start().await.expect("restart");
    check_dedup(
        &query_all(&ing, true).await,
        &model,
        "after restart, replayed data buffered",
    );
    poll_until(
        Duration::from_secs(60),
        "replayed data persisted",
        || async {
            let st = ing.status().await.map_err(|e| e.to_string())?;
            (st.buffered_rows == 0)
                .then_some(())
                .ok_or_else(|| format!("{st:?}"))
        },
    )
    .await;
    check_dedup(
        &query_all(&ing, true).await,
        &model,
        "after restart, replayed data persisted again",
    );
    eprintln!(
        "include_persisted ({:?}): {} rows, {queries} queries while persisting ({during} saw a \
         persist in progress)",
        backend.kind,
        model.len()
    );
    ing.stop().await.expect("stop");
    ing.assert_no_panic();
}

// ---------------------------------------------------------------------------
// Exactly once: buffer + cataloged files named by app_metadata
// ---------------------------------------------------------------------------

const XNS: &str = "exactly_once";
const XTABLE: &str = "x";
const XWRITERS: u32 = 3;
const XREQUESTS: u64 = 120;
const XROWS: u64 = 1_000;

fn xlines(w: u32, range: std::ops::Range<u64>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for n in range {
        let _ = writeln!(
            s,
            "{XTABLE},host=h{},w=w{w} v={n}i {}",
            n % 50,
            time_of(w, n)
        );
    }
    s
}

/// `(writer, row)` of every row in `batches`, checking `v`.
fn xrows(batches: &[RecordBatch]) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for b in batches {
        let v = b
            .column_by_name("v")
            .map(|c| c.as_primitive::<Int64Type>().clone());
        for (i, t) in files::times(b).into_iter().enumerate() {
            let (w, n) = key_of(t);
            if let Some(v) = &v {
                assert_eq!(v.value(i), n as i64, "value of row ({w}, {n})");
            }
            out.push((w, n));
        }
    }
    out
}

pub async fn exactly_once_while_persisting(backend: Arc<Backend>) {
    let mut ing = backend
        .ingester()
        .arg("--hot-partition-rows")
        .arg("12000")
        .arg("--wal-segment-bytes")
        .arg("262144");
    ing.start().await.expect("start");
    let ing = Arc::new(ing);
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..XWRITERS).map(|_| AtomicU64::new(0)).collect());
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..XWRITERS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..XWRITERS {
        let (ing, acked, sent) = (Arc::clone(&ing), Arc::clone(&acked), Arc::clone(&sent));
        writers.push(tokio::spawn(async move {
            let mut c = ing.write_client().await.expect("client");
            for k in 0..XREQUESTS {
                let range = k * XROWS..(k + 1) * XROWS;
                sent[w as usize].store(range.end, Ordering::Release);
                let lp = xlines(w, range.clone());
                sluice_e2e::write_lp(&mut c, XNS, lp.as_bytes())
                    .await
                    .unwrap_or_else(|s| panic!("writer {w}, request {k}: {s}"));
                acked[w as usize].store(range.end, Ordering::Release);
            }
        }));
    }
    let stopper = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            for w in writers {
                w.await.expect("writer");
            }
            done.store(true, Ordering::Release);
        })
    };

    let mut file_cache: HashMap<String, Vec<(u32, u64)>> = HashMap::new();
    let (mut rounds, mut max_files, mut with_persisted) = (0u32, 0usize, 0u32);
    loop {
        let finished = done.load(Ordering::Acquire);
        let floor: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
        // (1) The buffer, with each partition's persisted-batch count.
        let r = match ing
            .query(v1::QueryRequest {
                namespace: XNS.into(),
                table: XTABLE.into(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => r,
            Err(s) if s.code() == tonic::Code::NotFound => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(s) => panic!("buffer query: {s}"),
        };
        let mut seen: Vec<Vec<u8>> = (0..XWRITERS)
            .map(|_| vec![0u8; (XREQUESTS * XROWS) as usize])
            .collect();
        let mut count = |(w, n): (u32, u64), from: &str| {
            let slot = &mut seen[w as usize][n as usize];
            *slot += 1;
            assert_eq!(
                *slot, 1,
                "round {rounds}: row ({w}, {n}) seen twice ({from})"
            );
        };
        for k in xrows(&r.batches) {
            count(k, "buffer");
        }
        // (2) The files those partitions have persisted, by batch number.
        let persisted: HashMap<i64, u64> = r
            .partitions
            .iter()
            .map(|p| (p.partition_id, p.persisted_batches))
            .collect();
        for p in &r.partitions {
            assert!(!p.persisted, "a buffer stream: {p:?}");
        }
        let files = ing.parquet_files(XNS, XTABLE).await.expect("list files");
        max_files = max_files.max(files.len());
        let mut per_partition: HashMap<i64, Vec<u64>> = HashMap::new();
        for f in files {
            // A partition the query did not report had persisted nothing
            // when it ran.
            let n = persisted.get(&f.partition_id).copied().unwrap_or(0);
            if f.batch_number > n {
                continue; // persisted after the query's snapshot
            }
            per_partition
                .entry(f.partition_id)
                .or_default()
                .push(f.batch_number);
            let path = f.object_path.clone();
            if !file_cache.contains_key(&path) {
                let read = files::read(&backend.store, f).await;
                file_cache.insert(path.clone(), xrows(&read.batches));
            }
            for k in &file_cache[&path] {
                count(*k, "a file");
            }
        }
        for (id, n) in &persisted {
            let mut got = per_partition.remove(id).unwrap_or_default();
            got.sort_unstable();
            let want: Vec<u64> = (1..=*n).collect();
            assert_eq!(
                got, want,
                "partition {id}: files of batches 1..=persisted_batches"
            );
            if *n > 0 {
                with_persisted += 1;
            }
        }
        let ceiling: Vec<u64> = sent.iter().map(|a| a.load(Ordering::Acquire)).collect();
        for w in 0..XWRITERS as usize {
            for (n, c) in seen[w].iter().enumerate() {
                let n = n as u64;
                if n < floor[w] {
                    assert_eq!(*c, 1, "round {rounds}: acknowledged row ({w}, {n}) missing");
                } else if n >= ceiling[w] {
                    assert_eq!(*c, 0, "round {rounds}: row ({w}, {n}) was never sent");
                }
            }
        }
        // (3) The deduplicated view: each row once, nothing acked missing.
        let floor: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
        let r = ing
            .query_table_with_persisted(XNS, XTABLE)
            .await
            .expect("include_persisted query");
        let mut rows = xrows(&r.batches);
        rows.sort_unstable();
        for w in rows.windows(2) {
            assert_ne!(w[0], w[1], "include_persisted: row {:?} twice", w[0]);
        }
        let per_writer: Vec<u64> = (0..XWRITERS)
            .map(|w| {
                rows.iter()
                    .filter(|(x, n)| *x == w && *n < floor[w as usize])
                    .count() as u64
            })
            .collect();
        assert_eq!(
            per_writer, floor,
            "include_persisted: acknowledged rows present"
        );
        rounds += 1;
        if finished {
            break;
        }
    }
    stopper.await.expect("writers");
    let persists = ing
        .metric("sluice_persist_files_total")
        .await
        .expect("metrics")
        .unwrap_or(0.0);
    assert!(
        max_files >= 4,
        "persists ran during the test ({max_files} files)"
    );
    assert!(with_persisted > 0, "some queries saw persisted batches");
    eprintln!(
        "exactly-once ({:?}): {rounds} query rounds during {} writes, {persists} files persisted",
        backend.kind,
        XWRITERS as u64 * XREQUESTS
    );
    let mut ing = Arc::try_unwrap(ing).unwrap_or_else(|_| panic!("ingester still shared"));
    ing.stop().await.expect("stop");
    ing.assert_no_panic();
}
