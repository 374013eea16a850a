//! A partition several times larger than `--persist-memory-limit` persists:
//! the sort spills to the data volume instead of failing (a failing job
//! would retry forever and `Persist(wait)` would never answer) or using
//! unbounded memory. The file holds exactly the deduplicated rows, sorted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use sluice_e2e::data::BASE_TIME;
use sluice_e2e::within;

use crate::backend::Backend;
use crate::files;

const NS: &str = "memory";
const TABLE: &str = "big";
const LIMIT: u64 = 4 << 20;
const REQUESTS: u64 = 30;
const ROWS: u64 = 10_000;

/// Row `n` (unique); every 10th request rewrites the previous request's
/// rows with `v = -n`.
fn lines(k: u64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let rewrite = k % 10 == 9;
    let base = if rewrite { k - 1 } else { k };
    for n in base * ROWS..(base + 1) * ROWS {
        let v = if rewrite { -(n as i64) } else { n as i64 };
        let _ = writeln!(
            s,
            "{TABLE},host=host-{:04},rack=r{} v={v}i,note=\"a string field that makes each row a little wider {n}\" {}",
            n % 1_000,
            n % 7,
            BASE_TIME + n as i64 * 1_000
        );
    }
    s
}

/// The final `v` of row `n`.
fn expected_v(n: u64) -> i64 {
    let k = n / ROWS;
    if k % 10 == 8 && k + 1 < REQUESTS {
        -(n as i64)
    } else {
        n as i64
    }
}

pub async fn partition_larger_than_persist_memory_limit(backend: Arc<Backend>) {
    let mut ing = backend
        .ingester()
        .arg("--persist-memory-limit")
        .arg(LIMIT.to_string())
        .arg("--hot-partition-rows")
        .arg("100000000");
    ing.start().await.expect("start");
    let mut c = ing.write_client().await.expect("client");
    // Requests 9, 19, 29 rewrite 8, 18, 28; the others are new rows.
    for k in 0..REQUESTS {
        sluice_e2e::write_lp(&mut c, NS, lines(k).as_bytes())
            .await
            .unwrap_or_else(|s| panic!("write {k}: {s}"));
    }
    let st = ing.status().await.expect("status");
    assert!(
        st.buffered_bytes >= 4 * LIMIT,
        "the partition ({} bytes) is several times the pool ({LIMIT})",
        st.buffered_bytes
    );
    let buffered_bytes = st.buffered_bytes;

    // Watch the spill directory while the persist runs.
    let spill_dir = backend.data_dir().join("tmp");
    let spilled = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (spilled, stop) = (Arc::clone(&spilled), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                if walk_files(&spill_dir) > 0 {
                    spilled.store(true, Ordering::Release);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let started = Instant::now();
    within(
        Duration::from_secs(90),
        "Persist(wait) of a partition larger than the memory pool",
        ing.persist_all(true),
    )
    .await
    .expect("Persist(wait)");
    let persist_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    watcher.await.expect("watcher");
    let rss = ing.rss_bytes().unwrap_or(0);

    let fs = files::read_table(&backend, &ing, NS, TABLE, false).await;
    assert_eq!(fs.len(), 1, "one partition, one persist, one file");
    let f = &fs[0];
    files::check_file(f, &["host", "rack"]);
    let distinct = (REQUESTS - REQUESTS / 10) * ROWS;
    assert_eq!(f.rows() as u64, distinct, "deduplicated rows in the file");
    let mut seen = vec![false; (REQUESTS * ROWS) as usize];
    for b in &f.batches {
        let v = b
            .column_by_name("v")
            .expect("v")
            .as_primitive::<Int64Type>();
        for (i, t) in files::times(b).into_iter().enumerate() {
            let n = ((t - BASE_TIME) / 1_000) as u64;
            assert!(!seen[n as usize], "row {n} twice");
            seen[n as usize] = true;
            assert_eq!(v.value(i), expected_v(n), "v of row {n}");
        }
    }
    let st = ing.status().await.expect("status");
    assert_eq!(st.buffered_rows, 0);
    eprintln!(
        "memory ({:?}): {} buffered bytes persisted with a {} MiB pool in {persist_secs:.1}s \
         (spill files seen: {}); RSS after: {} MiB",
        backend.kind,
        buffered_bytes,
        LIMIT >> 20,
        spilled.load(Ordering::Acquire),
        rss >> 20
    );
    ing.stop().await.expect("stop");
    ing.assert_no_panic();
}

fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() { walk_files(&p) } else { 1 }
        })
        .sum()
}
