//! Back-pressure: with a persist queue of one job and an object store that
//! stops answering (SIGSTOP of a private `s3s-fs`), hot partitions pile up
//! behind the stuck job and writes are refused with `RESOURCE_EXHAUSTED`
//! saying the persist queue is full — instead of buffering without bound
//! (RSS and buffered rows stay flat while writers keep trying). Once the
//! store answers again the job completes and writes are accepted. The same
//! after the store is killed outright (connections refused) and restarted:
//! jobs retry with backoff and lose nothing. At the end every acknowledged
//! row is served exactly once and no refused row at all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use sluice_e2e::data::BASE_TIME;
use sluice_e2e::{Ingester, poll_until, within};
use sluice_proto::v1;

use crate::backend::OwnS3;
use crate::files;
use crate::rows::Outcome;

const NS: &str = "backpressure";
const TABLES: u64 = 4;
const ROWS: u64 = 1_000;

fn lines(j: u64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for n in 0..ROWS {
        let _ = writeln!(
            s,
            "t{},h=h{} v={j}i {}",
            j % TABLES,
            n % 10,
            BASE_TIME + j as i64 * 1_000_000 + n as i64 * 1_000
        );
    }
    s
}

struct Writer {
    client: v1::write_service_client::WriteServiceClient<tonic::transport::Channel>,
    log: Vec<Outcome>,
}

impl Writer {
    /// Writes request `log.len()`; returns the refusal, if any.
    async fn write(&mut self) -> Option<tonic::Status> {
        let j = self.log.len() as u64;
        let r = within(
            Duration::from_secs(30),
            "a write (must be answered, not stall, while the store is stopped)",
            sluice_e2e::write_lp(&mut self.client, NS, lines(j).as_bytes()),
        )
        .await;
        match r {
            Ok(_) => {
                self.log.push(Outcome::Acked);
                None
            }
            Err(s) => {
                assert_eq!(
                    s.code(),
                    tonic::Code::ResourceExhausted,
                    "request {j}: only back-pressure refusals expected: {s}"
                );
                self.log.push(Outcome::Refused);
                Some(s)
            }
        }
    }

    /// Writes until one is refused (limit: `max` requests).
    async fn until_refused(&mut self, max: usize) -> tonic::Status {
        for _ in 0..max {
            if let Some(s) = self.write().await {
                return s;
            }
        }
        panic!("{max} writes accepted with the object store unavailable");
    }

    /// Writes until one is accepted again.
    async fn until_accepted(&mut self, limit: Duration, ing: &Ingester) {
        let deadline = Instant::now() + limit;
        loop {
            if self.write().await.is_none() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "writes still refused {limit:?} after the store came back; log:\n{}",
                ing.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Keeps writing for `dur` while refused; returns the largest RSS seen and
/// checks the buffer did not grow.
async fn hammer_refused(w: &mut Writer, ing: &Ingester, dur: Duration) -> (u64, u32) {
    let before = ing.status().await.expect("status");
    let mut max_rss = 0;
    let mut refused = 0;
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let s = w
            .write()
            .await
            .expect("still refused while the store is unavailable");
        assert!(
            s.message().contains("persist queue is full"),
            "the refusal names the reason: {s}"
        );
        refused += 1;
        max_rss = max_rss.max(ing.rss_bytes().expect("rss"));
    }
    let after = ing.status().await.expect("status");
    assert_eq!(
        after.buffered_rows, before.buffered_rows,
        "refused writes buffer nothing"
    );
    (max_rss, refused)
}

pub async fn backpressure_stopped_object_store() {
    let Some(mut s3) = OwnS3::start().await else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (args, env) = s3.env.ingester_config(&s3.endpoint, "bp");
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--persist-queue-depth")
        .arg("1")
        .arg("--persist-workers")
        .arg("1")
        .arg("--hot-partition-rows")
        .arg("2500");
    for a in args {
        ing = ing.arg(a);
    }
    for (k, v) in env {
        ing = ing.with_env(k, v);
    }
    ing.start().await.expect("start");
    let mut w = Writer {
        client: ing.write_client().await.expect("client"),
        log: Vec::new(),
    };

    // ---- healthy: hot partitions persist (a queue of one refuses now
    // and then even so; such writes are retried as new requests) ----
    let mut accepted = 0;
    while accepted < 12 {
        match w.write().await {
            None => accepted += 1,
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    poll_until(
        Duration::from_secs(60),
        "hot partitions persisted",
        || async {
            let n = ing
                .metric("sluice_persist_files_total")
                .await
                .map_err(|e| e.to_string())?;
            (n.unwrap_or(0.0) >= 2.0)
                .then_some(())
                .ok_or(format!("{n:?} files"))
        },
    )
    .await;
    let rss_healthy = ing.rss_bytes().expect("rss");

    // ---- stopped store: refusals, flat memory ----
    s3.pause();
    let first = w.until_refused(200).await;
    assert!(
        first.message().contains("persist queue is full"),
        "RESOURCE_EXHAUSTED names the reason: {first}"
    );
    let rss_at_refusal = ing.rss_bytes().expect("rss");
    let (max_rss, refused) = hammer_refused(&mut w, &ing, Duration::from_secs(3)).await;
    let st = ing.status().await.expect("status");
    assert!(
        st.persist_active_jobs + st.persist_queue_depth >= 1,
        "{st:?}"
    );
    assert!(
        max_rss < rss_at_refusal + (64 << 20),
        "RSS grew from {rss_at_refusal} to {max_rss} bytes while writes were refused"
    );
    let refusals = ing
        .metric("sluice_persist_saturated_total")
        .await
        .expect("metrics")
        .unwrap_or(0.0);
    assert!(refusals >= 1.0, "saturation is counted");

    // ---- resumed store: accepted again ----
    let resumed = Instant::now();
    s3.resume();
    w.until_accepted(Duration::from_secs(120), &ing).await;
    let recovery = resumed.elapsed();
    for _ in 0..5 {
        if w.write().await.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // ---- killed store: retries with backoff, nothing lost ----
    s3.kill();
    let second = w.until_refused(200).await;
    assert!(
        second.message().contains("persist queue is full"),
        "{second}"
    );
    s3.restart().await;
    let restarted = Instant::now();
    w.until_accepted(Duration::from_secs(120), &ing).await;
    let recovery2 = restarted.elapsed();

    // ---- everything acknowledged is there, once ----
    ing.persist_all(true).await.expect("Persist(wait)");
    let mut served: HashMap<u64, u64> = HashMap::new();
    for t in 0..TABLES {
        let r = ing
            .query(v1::QueryRequest {
                namespace: NS.into(),
                table: format!("t{t}"),
                include_persisted: true,
                ..Default::default()
            })
            .await
            .expect("query");
        for b in &r.batches {
            let v = b
                .column_by_name("v")
                .expect("v")
                .as_primitive::<Int64Type>();
            for (i, time) in files::times(b).into_iter().enumerate() {
                let j = v.value(i) as u64;
                assert_eq!(
                    (time - BASE_TIME) / 1_000_000,
                    j as i64,
                    "row of request {j}"
                );
                *served.entry(j).or_default() += 1;
            }
        }
    }
    let mut acked = 0;
    for (j, o) in w.log.iter().enumerate() {
        let n = served.get(&(j as u64)).copied().unwrap_or(0);
        match o {
            Outcome::Acked => {
                assert_eq!(n, ROWS, "acknowledged request {j}: rows served");
                acked += 1;
            }
            Outcome::Refused => assert_eq!(n, 0, "refused request {j} was applied"),
            Outcome::Unknown => unreachable!("this scenario records only answered requests"),
        }
    }
    let objects = {
        let store = s3.env.store(&s3.endpoint, "bp");
        let listed: Vec<object_store::ObjectMeta> =
            futures::TryStreamExt::try_collect(store.list(None))
                .await
                .expect("list S3");
        listed.len()
    };
    let mut cataloged = 0;
    for t in 0..TABLES {
        cataloged += ing
            .parquet_files(NS, &format!("t{t}"))
            .await
            .expect("files")
            .len();
    }
    assert_eq!(objects, cataloged, "every object in S3 is cataloged");
    eprintln!(
        "backpressure: RSS healthy {} MiB, at first refusal {} MiB, max while refused {} MiB \
         ({refused} refusals in 3 s); accepted {:.1}s after SIGCONT and {:.1}s after restart; \
         {acked} acknowledged requests all served once; {cataloged} files",
        rss_healthy >> 20,
        rss_at_refusal >> 20,
        max_rss >> 20,
        recovery.as_secs_f64(),
        recovery2.as_secs_f64()
    );
    ing.stop().await.expect("stop");
    ing.assert_no_panic();
}
