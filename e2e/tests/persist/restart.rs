//! What a restart must not change about persisted data.
//!
//! A WAL segment outlives the persists of most of its partitions while one
//! partition keeps it referenced. [`replay_keeps_newer_persisted_values`]
//! builds exactly that: an old value of a row is persisted, its segment is
//! kept alive by another table, a newer value of the same row is persisted,
//! and the process is killed. Replaying the old segment must not bring the
//! old value back on top (it would, if replay re-buffered rows already in
//! Parquet: deduplication follows arrival order). It also checks what a
//! querier relies on after a restart: `persisted_batches` and the files'
//! batch numbers continue instead of restarting at 1, and new writes get
//! sequence numbers above every persisted one. Finally, after the restart
//! every object in the store is a cataloged file.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use sluice_e2e::data::BASE_TIME;
use sluice_e2e::{Ingester, QueryResult, poll_until};
use sluice_proto::v1;

use crate::backend::Backend;
use crate::files;

const MEM_ROWS: u64 = 400_000;
const CHUNK: u64 = 50_000;

/// The `v` values of the table's rows, in order.
fn values(r: &QueryResult) -> Vec<i64> {
    r.batches
        .iter()
        .flat_map(|b| {
            let v = b.column_by_name("v").expect("column v");
            v.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

async fn cpu_everywhere(ing: &Ingester, ns: &str) -> Vec<i64> {
    values(
        &ing.query_table_with_persisted(ns, "cpu")
            .await
            .expect("include_persisted query"),
    )
}

async fn cpu_files(ing: &Ingester, ns: &str) -> Vec<v1::ParquetFile> {
    let mut f = ing.parquet_files(ns, "cpu").await.expect("list files");
    f.sort_by_key(|f| f.batch_number);
    f
}

fn persisted_batches(r: &QueryResult) -> Vec<u64> {
    r.partitions.iter().map(|p| p.persisted_batches).collect()
}

/// Builds the situation in namespace `ns`; returns the highest sequence
/// number persisted, or `None` if the `mem` persist finished too early
/// (a timing the caller retries with a fresh namespace).
async fn set_up(ing: &Ingester, ns: &str) -> Option<u64> {
    let t = BASE_TIME;
    // Segment 1: the old value, and enough `mem` rows that their persist
    // takes a while, keeping segment 1 referenced.
    ing.write_lp(ns, &format!("cpu,host=a v=1i {t}\nmem,host=a v=0i {t}"))
        .await
        .expect("write old value");
    for chunk in 0..MEM_ROWS / CHUNK {
        let mut lp = String::with_capacity(CHUNK as usize * 40);
        for i in chunk * CHUNK..(chunk + 1) * CHUNK {
            lp.push_str(&format!("mem,host=h{} v={i}i {}\n", i % 1000, t + i as i64));
        }
        ing.write_lp(ns, &lp).await.expect("write mem rows");
    }
    let ids = ing.query_table(ns, "cpu").await.expect("query").partitions[0].partition_id;
    let mem_id = ing.query_table(ns, "mem").await.expect("query").partitions[0].partition_id;
    assert_ne!(
        ids % 2,
        mem_id % 2,
        "setup: cpu and mem on different persist workers"
    );
    ing.persist(ns, "cpu", true).await.expect("persist cpu");
    // Closing segment 1 starts the (slow) `mem` persist.
    ing.rotate_wal().await.expect("rotate");
    // Segment 2: the newer value; closing it persists `cpu` again, and once
    // that file is recorded segment 2 is deleted.
    ing.write_lp(ns, &format!("cpu,host=a v=2i {t}"))
        .await
        .expect("write new value");
    let s2 = ing.wal_segments().last().cloned().expect("open segment");
    ing.rotate_wal().await.expect("rotate again");
    ing.persist(ns, "cpu", true)
        .await
        .expect("persist cpu again");
    poll_until(Duration::from_secs(30), "segment 2 deleted", || async {
        (!s2.exists())
            .then_some(())
            .ok_or_else(|| "still there".to_string())
    })
    .await;
    assert_eq!(cpu_everywhere(ing, ns).await, vec![2], "before the crash");
    let files = cpu_files(ing, ns).await;
    assert_eq!(
        files.iter().map(|f| f.batch_number).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let max_seq = files
        .iter()
        .map(|f| f.max_sequence_number)
        .max()
        .unwrap_or(0);
    // The situation needs the `mem` persist (keeping segment 1) to be
    // still running now.
    ing.parquet_files(ns, "mem")
        .await
        .expect("mem files")
        .is_empty()
        .then_some(max_seq)
}

pub async fn replay_keeps_newer_persisted_values(backend: Arc<Backend>) {
    // Two workers: `cpu` and `mem` (consecutive partition ids) persist on
    // different ones, so `cpu` can finish while `mem` is still running.
    let mut ing = backend.ingester().arg("--persist-workers").arg("2");
    ing.start().await.expect("start");
    let t = BASE_TIME;
    let mut situation = None;
    for attempt in 1..=4 {
        let ns = format!("restart{attempt}");
        if let Some(max_seq) = set_up(&ing, &ns).await {
            situation = Some((ns, max_seq));
            break;
        }
        eprintln!(
            "attempt {attempt}: the mem persist finished too early; again in a fresh namespace"
        );
    }
    let (ns, max_seq) =
        situation.expect("the mem persist outlived the cpu persists in one of 4 attempts");
    let ns = ns.as_str();

    ing.kill9();
    ing.start().await.expect("restart");
    assert_eq!(
        cpu_everywhere(&ing, ns).await,
        vec![2],
        "the replayed old value must not win over the newer persisted one"
    );
    let buffered = ing.query_table(ns, "cpu").await.expect("buffer query");
    assert_eq!(
        buffered.rows(),
        0,
        "rows already in Parquet are not buffered again"
    );
    // (Replayed rows are persisted at once in the background: count them
    // wherever they are.)
    let mem = ing
        .query_table_with_persisted(ns, "mem")
        .await
        .expect("mem query");
    assert_eq!(
        mem.rows() as u64,
        MEM_ROWS + 1,
        "unpersisted rows are replayed"
    );
    // Replayed data is persisted at start-up; wait for it, then no new
    // `cpu` file may have appeared.
    ing.persist_all(true).await.expect("Persist(wait)");
    assert_eq!(cpu_files(&ing, ns).await.len(), 2, "no re-persisted copy");
    assert_eq!(cpu_everywhere(&ing, ns).await, vec![2]);

    // Numbers continue after the restart.
    ing.write_lp(ns, &format!("cpu,host=a v=3i {t}"))
        .await
        .expect("write after restart");
    let buffered = ing.query_table(ns, "cpu").await.expect("buffer query");
    assert_eq!(
        persisted_batches(&buffered),
        vec![2],
        "persisted_batches continues"
    );
    ing.persist(ns, "cpu", true)
        .await
        .expect("persist after restart");
    let files = cpu_files(&ing, ns).await;
    assert_eq!(
        files.iter().map(|f| f.batch_number).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(
        files[2].min_sequence_number > max_seq,
        "sequence numbers continue above every persisted one: {} after {max_seq}",
        files[2].min_sequence_number
    );
    assert_eq!(cpu_everywhere(&ing, ns).await, vec![3]);

    // Every object in the store is a cataloged file (the upload the kill
    // interrupted, if any, was deleted at restart), and each is sound.
    for table in ["cpu", "mem"] {
        for f in files::read_table(&backend, &ing, ns, table, false).await {
            files::check_file(&f, &["host"]);
        }
    }
    ing.stop().await.expect("stop");
    ing.assert_no_panic();
}
