//! One million rows, ~10% of them rewrites of earlier rows (a later write of
//! the same series and timestamp with new values for some fields), written
//! by concurrent clients while small WAL segments rotate (so persists run
//! during the writes). After `Persist` with `wait`:
//!
//! * the catalog lists every Parquet file and the store holds no other;
//! * every file, read with the `parquet` crate, is sorted by the sort key
//!   it records (the catalog's: tags by ascending cardinality, then time)
//!   and holds no duplicate series+timestamp;
//! * the files, merged oldest batch first field by field (as a querier
//!   does), hold exactly the deduplicated rows; a row appears in two files
//!   only when its rewrite arrived after its original had been persisted,
//!   and then the older file holds the original;
//! * the WAL directory holds only the open segment;
//! * an `include_persisted` query returns exactly the deduplicated rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use sluice_e2e::data::{self, BASE_TIME};
use sluice_e2e::{poll_until, within};

use crate::backend::Backend;
use crate::files;

const NS: &str = "million";
const TABLE: &str = "m";
const WRITERS: u32 = 4;
/// Distinct rows per writer.
const ORIGINALS: u64 = 225_000;
/// Originals per request (each request also rewrites ~1/9 of the previous one).
const CHUNK: u64 = 9_000;
const DAY: i64 = 86_400 * 1_000_000_000;

/// Rows `i` with `i % 9 == 4` are written twice: 25,000 per writer, so
/// 4 × (225,000 + 25,000) = 1,000,000 rows written, 900,000 distinct.
fn rewritten(i: u64) -> bool {
    i % 9 == 4
}

/// The final (deduplicated) values of a row.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    host: Arc<str>,
    region: Arc<str>,
    time: i64,
    usage: Option<f64>,
    count: Option<i64>,
    ok: Option<bool>,
}

/// Writer `w`'s row `i` as first written. Odd writers write the next day,
/// so the table has two partitions.
fn original(w: u32, i: u64) -> Row {
    let r = data::row(w, i);
    Row {
        host: r.host.into(),
        region: r.region.into(),
        time: r.time + DAY * i64::from(w % 2),
        usage: Some(r.usage),
        count: Some(r.count),
        ok: Some(r.ok),
    }
}

/// The rewrite changes `usage` and `ok` only: `count` keeps the original's
/// value (InfluxDB merges duplicates field by field).
fn rewrite(w: u32, i: u64) -> (f64, bool) {
    let r = data::row(w, i);
    (-r.usage - 1.0, !r.ok)
}

fn expected(w: u32, i: u64) -> Row {
    let mut r = original(w, i);
    if rewritten(i) {
        let (u, ok) = rewrite(w, i);
        r.usage = Some(u);
        r.ok = Some(ok);
    }
    r
}

/// Index of a row from its time (inverse of [`original`]).
fn index_of(time: i64) -> usize {
    let d = time - BASE_TIME;
    let w = (d % 1_000) as u32;
    let i = (d - DAY * i64::from(w % 2)) / 1_000;
    assert!(
        w < WRITERS && (0..ORIGINALS as i64).contains(&i),
        "a row that was never written: time {time}"
    );
    w as usize * ORIGINALS as usize + i as usize
}

fn escape(s: &str) -> String {
    s.replace(' ', "\\ ")
}

/// Request `k` of writer `w`: originals of chunk `k` (if any) and the
/// rewrites of chunk `k - 1` (if any).
fn request(w: u32, k: u64) -> (String, u64) {
    use std::fmt::Write;
    let mut s = String::with_capacity(CHUNK as usize * 100);
    let mut rows = 0;
    let chunks = ORIGINALS / CHUNK;
    if k < chunks {
        for i in k * CHUNK..(k + 1) * CHUNK {
            let r = original(w, i);
            let _ = writeln!(
                s,
                "{TABLE},host={},region={} usage={:?},count={}i,ok={} {}",
                r.host,
                escape(&r.region),
                r.usage.expect("set"),
                r.count.expect("set"),
                r.ok.expect("set"),
                r.time
            );
            rows += 1;
        }
    }
    if k > 0 {
        for i in (k - 1) * CHUNK..k * CHUNK {
            if !rewritten(i) {
                continue;
            }
            let r = original(w, i);
            let (usage, ok) = rewrite(w, i);
            let _ = writeln!(
                s,
                "{TABLE},host={},region={} usage={usage:?},ok={ok} {}",
                r.host,
                escape(&r.region),
                r.time
            );
            rows += 1;
        }
    }
    (s, rows)
}

/// Decodes result or file batches into rows (absent or null fields: None).
fn decode(batches: &[arrow::record_batch::RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let host = files::tag_strings(b, "host");
        let region = files::tag_strings(b, "region");
        let time = files::times(b);
        let usage = b
            .column_by_name("usage")
            .map(|c| c.as_primitive::<Float64Type>().clone());
        let count = b
            .column_by_name("count")
            .map(|c| c.as_primitive::<Int64Type>().clone());
        let ok = b.column_by_name("ok").map(|c| c.as_boolean().clone());
        for (i, t) in time.into_iter().enumerate() {
            out.push(Row {
                host: host[i].clone().expect("host is never null"),
                region: region[i].clone().expect("region is never null"),
                time: t,
                usage: usage
                    .as_ref()
                    .and_then(|a| a.is_valid(i).then(|| a.value(i))),
                count: count
                    .as_ref()
                    .and_then(|a| a.is_valid(i).then(|| a.value(i))),
                ok: ok.as_ref().and_then(|a| a.is_valid(i).then(|| a.value(i))),
            });
        }
    }
    out
}

pub async fn million_rows_persist_sorted_deduplicated(backend: Arc<Backend>) {
    let mut ing = backend
        .ingester()
        .arg("--ingester-id")
        .arg("e2e-million")
        // Rotations (and with them persists) happen during the writes.
        .arg("--wal-segment-bytes")
        .arg("8388608");
    ing.start().await.expect("start ingester");

    // ---- write: 4 concurrent clients, 26 requests each ----
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut client = ing.write_client().await.expect("write client");
        tasks.push(tokio::spawn(async move {
            let mut rows = 0;
            for k in 0..=ORIGINALS / CHUNK {
                let (lp, n) = request(w, k);
                let r = within(
                    Duration::from_secs(60),
                    "one write",
                    sluice_e2e::write_lp(&mut client, NS, lp.as_bytes()),
                )
                .await
                .unwrap_or_else(|s| panic!("writer {w}, request {k}: {s}"));
                assert_eq!(r.rows, n, "rows acknowledged");
                rows += n;
            }
            rows
        }));
    }
    let mut written = 0;
    for t in tasks {
        written += t.await.expect("writer task");
    }
    assert_eq!(written, 1_000_000);
    let write_secs = started.elapsed().as_secs_f64();
    let rotations = ing
        .metric("sluice_wal_rotations_total")
        .await
        .expect("metrics")
        .unwrap_or(0.0);

    // ---- persist everything and wait ----
    let started = Instant::now();
    ing.persist_all(true).await.expect("Persist(wait)");
    let persist_secs = started.elapsed().as_secs_f64();
    let st = ing.status().await.expect("status");
    assert_eq!(
        st.buffered_rows, 0,
        "nothing buffered after Persist(wait): {st:?}"
    );

    // ---- the files, read back ----
    let started = Instant::now();
    let files = files::read_table(&backend, &ing, NS, TABLE, false).await;
    assert!(files.len() >= 2, "one file per partition at least");
    let total = WRITERS as usize * ORIGINALS as usize;
    let mut merged: Vec<Option<Row>> = vec![None; total];
    let mut stale = 0usize;
    let mut file_rows = 0usize;
    for f in &files {
        assert_eq!(f.meta.ingester_id, "e2e-million");
        // Region (3 values) before host (388 values): ascending cardinality.
        assert_eq!(
            f.sort_key(),
            ["region", "host", "time"],
            "{}",
            f.meta.object_path
        );
        files::check_file(f, &["host", "region"]);
        let day = if f.meta.partition_key == "2026-01-01" {
            0
        } else {
            assert_eq!(f.meta.partition_key, "2026-01-02");
            1
        };
        for r in decode(&f.batches) {
            file_rows += 1;
            let idx = index_of(r.time);
            assert_eq!(
                (idx / ORIGINALS as usize) % 2,
                day,
                "row in the wrong partition's file"
            );
            match &mut merged[idx] {
                slot @ None => *slot = Some(r),
                Some(old) => {
                    // Seen in an earlier file: the original, superseded by
                    // its rewrite in this one.
                    stale += 1;
                    let w = (idx / ORIGINALS as usize) as u32;
                    let i = (idx % ORIGINALS as usize) as u64;
                    assert!(rewritten(i), "row ({w}, {i}) persisted twice: {r:?}");
                    assert_eq!(
                        *old,
                        original(w, i),
                        "the older file holds the original of ({w}, {i})"
                    );
                    old.usage = r.usage.or(old.usage);
                    old.count = r.count.or(old.count);
                    old.ok = r.ok.or(old.ok);
                }
            }
        }
    }
    for (idx, got) in merged.iter().enumerate() {
        let (w, i) = (
            (idx / ORIGINALS as usize) as u32,
            (idx % ORIGINALS as usize) as u64,
        );
        match got {
            None => panic!("row ({w}, {i}) is in no Parquet file"),
            Some(got) => assert_eq!(got, &expected(w, i), "row ({w}, {i}) in Parquet"),
        }
    }
    assert_eq!(file_rows, total + stale);
    let check_secs = started.elapsed().as_secs_f64();

    // ---- the WAL holds only the open segment ----
    poll_until(
        Duration::from_secs(30),
        "closed WAL segments deleted",
        || async {
            let segs = ing.wal_segments();
            let st = ing.status().await.map_err(|e| e.to_string())?;
            if segs.len() == 1 && st.wal_segments == 1 {
                Ok(())
            } else {
                Err(format!("files {segs:?}, status {st:?}"))
            }
        },
    )
    .await;

    // ---- the deduplicated view over Flight ----
    let started = Instant::now();
    let q = ing
        .query_table_with_persisted(NS, TABLE)
        .await
        .expect("include_persisted query");
    assert_eq!(q.rows(), total, "rows of the deduplicated view");
    let mut seen = vec![false; total];
    for r in decode(&q.batches) {
        let idx = index_of(r.time);
        assert!(!seen[idx], "row {idx} returned twice");
        seen[idx] = true;
        let (w, i) = (
            (idx / ORIGINALS as usize) as u32,
            (idx % ORIGINALS as usize) as u64,
        );
        assert_eq!(r, expected(w, i), "row ({w}, {i}) over Flight");
    }
    eprintln!(
        "million ({:?}): wrote 1,000,000 rows in {write_secs:.1}s ({rotations} WAL rotations); \
         Persist(wait) {persist_secs:.1}s; {} files, {file_rows} rows ({stale} superseded \
         originals), checked in {check_secs:.1}s; include_persisted query + check {:.1}s",
        backend.kind,
        files.len(),
        started.elapsed().as_secs_f64()
    );
    ing.stop().await.expect("stop");
    ing.assert_no_panic();
}
