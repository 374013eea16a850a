//! The driver against real `sluice-ingester` processes.
//!
//! Every pod-facing flow of the operator runs here through its production
//! control client ([`GrpcPodControl`](sluice_operator::driver::GrpcPodControl))
//! against the real binary: staggered rotation, persist triggers, drain
//! before scale-down, rolling restart with drain, a drain that cannot
//! finish (object store stopped), resuming an aborted drain, and the
//! per-pod figures in the status. Only the cluster is played, by
//! [`harness::ProcessCluster`] (processes as pods).
//!
//! Multi-pod tests need the shared PostgreSQL and S3 test servers
//! (`SLUICE_TEST_POSTGRES_URL`, `SLUICE_TEST_S3_*`, set by
//! `scripts/test.sh`) and skip with a notice without them; the persist
//! trigger test runs a single node on its own volume and always runs.

mod harness;
mod mtls;
mod proxy;
mod tls;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;
use sluice_e2e::within;
use sluice_operator::driver::{Action, ControlAccess, PersistReason};
use sluice_operator::metrics::Metrics;

fn actions(outs: &[sluice_operator::driver::StepOutcome]) -> Vec<&Action> {
    outs.iter().flat_map(|o| o.plan.actions.iter()).collect()
}

fn drains_of(outs: &[sluice_operator::driver::StepOutcome]) -> Vec<&str> {
    actions(outs)
        .into_iter()
        .filter_map(|a| match a {
            Action::PrepareShutdown { pod, .. } => Some(pod.as_str()),
            _ => None,
        })
        .collect()
}

fn all_ok(outs: &[sluice_operator::driver::StepOutcome]) {
    for o in outs {
        for (a, r) in &o.results {
            assert!(r.is_ok(), "{a:?} failed: {r:?}");
        }
    }
}

/// Waits until every pod holds some buffered rows (the load reached it).
async fn every_pod_has_data(cluster: &ProcessCluster, n: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..n {
        loop {
            if cluster.pod_status(i).await.buffered_rows > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "no write reached pod {i}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_three_to_one_under_write_load() {
    let Some(svc) = Services::new("scale_down").await else {
        return;
    };
    within(Duration::from_secs(180), "scale-down 3 → 1", async {
        let v3 = svc.ingester(3, json!({}));
        let cluster = ProcessCluster::start(&v3, svc.secrets(), svc.tmp.path().to_path_buf()).await;
        let metrics = Arc::new(Metrics::new());
        let d = driver(&cluster, &metrics);
        let clock = Clock::default();
        let mut prev = None;
        let outs = run_until_ready(&d, &v3, &clock, &mut prev).await;
        assert!(drains_of(&outs).is_empty(), "nothing to drain at 3 of 3");

        let load = Load::start(&cluster, 3, Duration::from_millis(5));
        every_pod_has_data(&cluster, 3).await;

        // spec.replicas 3 → 1, under load.
        let v1 = svc.ingester(1, json!({}));
        let t0 = Instant::now();
        let outs = run_until(
            &d,
            &v1,
            &clock,
            &mut prev,
            Duration::from_secs(90),
            "the StatefulSet scaled to 1",
            |_, o| {
                o.plan
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Scale { to: 1, .. }))
            },
        )
        .await;
        let drain_wall = t0.elapsed();
        all_ok(&outs);
        let mut drained: Vec<&str> = drains_of(&outs);
        drained.sort();
        assert_eq!(
            drained,
            ["ingest-1", "ingest-2"],
            "each leaving pod drained once"
        );
        assert!(
            !actions(&outs)
                .iter()
                .any(|a| matches!(a, Action::DeletePod { .. })),
            "no pod deleted"
        );
        // The step that scaled saw both leaving pods drained, nothing left.
        let last = outs.last().expect("a step");
        for p in &last.plan.pods[1..] {
            assert_eq!(p.state, "Drained", "{p:?}");
            assert_eq!(p.buffered_rows, 0, "{p:?}");
        }
        // Every earlier step kept the StatefulSet at 3.
        assert_eq!(cluster.scaled().await, [1]);
        let drain_times: BTreeMap<String, Duration> =
            last.plan.drains_finished.iter().cloned().collect();

        // Writes keep landing on the remaining pod for a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let report = load.stop().await;

        // The status settles: one pod, ready, nothing draining.
        let _ = run_until(
            &d,
            &v1,
            &clock,
            &mut prev,
            Duration::from_secs(30),
            "stable at 1",
            |st, _| st.phase.as_deref() == Some("Ready"),
        )
        .await;
        let st = prev.clone().expect("status");
        assert_eq!(st.replicas, 1);
        assert_eq!(st.pods.len(), 1);
        assert_eq!(condition(&st, "Draining").status, "False");
        assert_eq!(st.endpoints.as_ref().map(|e| e.pods.len()), Some(1));
        assert_eq!(
            cluster.pods().await.iter().map(|p| p.0).collect::<Vec<_>>(),
            [0]
        );

        // The leaving pods' WALs are empty: only header-only segments.
        for o in 1..3 {
            let files = wal_files(&cluster.pod_dir(o));
            assert!(
                files.iter().all(|(_, len)| *len <= 16),
                "ingest-{o} WAL: {files:?}"
            );
        }

        // Every acknowledged row exactly once: the remaining pod's buffer
        // plus every cataloged Parquet file.
        persist_idle(&cluster, 0).await;
        let url0 = cluster.url(0).await.expect("ingest-0");
        let files = catalog_files(&url0).await;
        let persisted = persisted_rows(&svc.store, &files).await;
        let mut moved: BTreeMap<String, usize> = BTreeMap::new();
        let mut found = Vec::new();
        for (ingester, keys) in &persisted {
            *moved.entry(ingester.clone()).or_default() += keys.len();
            found.extend(keys.iter().copied());
        }
        for leaving in ["ingest-1", "ingest-2"] {
            assert!(
                moved.get(leaving).copied().unwrap_or(0) > 0,
                "{leaving} persisted its rows: {moved:?}"
            );
        }
        let buffered = buffered_keys(&url0).await;
        found.extend(buffered.iter().copied());
        assert_exactly_once(&report.acked, &found, report.ambiguous);
        assert!(object_count(&svc.store).await >= files.len());
        let text = metrics.render();
        assert!(
            text.contains("sluice_operator_drain_duration_seconds_count{reason=\"ScaleDown\"} 2"),
            "{text}"
        );
        println!(
            "FIGURES scale-down 3→1: {} rows acknowledged ({} refusals retried, {} ambiguous); \
             drain+scale wall time {:?}; drain times {:?}; rows in Parquet by pod {:?}; \
             {} rows still buffered on ingest-0",
            report.acked.len(),
            report.refused,
            report.ambiguous,
            drain_wall,
            drain_times,
            moved,
            buffered.len()
        );
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_write_load() {
    let Some(svc) = Services::new("rolling").await else {
        return;
    };
    within(Duration::from_secs(240), "rolling restart", async {
        let v = svc.ingester(3, json!({}));
        let cluster = ProcessCluster::start(&v, svc.secrets(), svc.tmp.path().to_path_buf()).await;
        let metrics = Arc::new(Metrics::new());
        let d = driver(&cluster, &metrics);
        let clock = Clock::default();
        let mut prev = None;
        run_until_ready(&d, &v, &clock, &mut prev).await;
        let load = Load::start(&cluster, 3, Duration::from_millis(5));
        every_pod_has_data(&cluster, 3).await;

        // A new pod template.
        cluster.set_update_revision("rev-2").await;
        let t0 = Instant::now();
        let outs = run_until(
            &d,
            &v,
            &clock,
            &mut prev,
            Duration::from_secs(180),
            "every pod restarted on rev-2",
            |st, o| {
                st.phase.as_deref() == Some("Ready")
                    && st.pods.len() == 3
                    && st.pods.iter().all(|p| p.up_to_date && p.state == "Ready")
                    && o.plan.actions.is_empty()
            },
        )
        .await;
        let roll_wall = t0.elapsed();
        all_ok(&outs);
        let report = load.stop().await;

        assert_eq!(
            cluster.deleted().await,
            ["ingest-2", "ingest-1", "ingest-0"],
            "highest ordinal first, each once"
        );
        assert!(cluster.pods().await.iter().all(|p| p.2 == "rev-2"));
        for o in &outs {
            // One pod at a time.
            let draining = o
                .plan
                .pods
                .iter()
                .filter(|p| p.state == "Draining" || p.state == "Drained")
                .count();
            assert!(draining <= 1, "{:?}", o.plan.pods);
            // A pod is deleted only when drained in the same step.
            for a in &o.plan.actions {
                if let Action::DeletePod { pod } = a {
                    let p = o.plan.pods.iter().find(|p| &p.name == pod).expect("pod");
                    assert_eq!(p.state, "Drained", "{p:?}");
                    assert_eq!(p.buffered_rows, 0, "{p:?}");
                }
            }
        }
        let restarts = cluster.restarts();
        assert_eq!(restarts.len(), 3, "{restarts:?}");
        for r in &restarts {
            assert!(
                r.ready_after < Duration::from_secs(5),
                "{} took {:?} to replay and be ready",
                r.pod,
                r.ready_after
            );
        }

        // Nothing lost, nothing doubled.
        let mut found = Vec::new();
        for i in 0..3 {
            persist_idle(&cluster, i).await;
        }
        let url0 = cluster.url(0).await.expect("ingest-0");
        for (_, keys) in persisted_rows(&svc.store, &catalog_files(&url0).await).await {
            found.extend(keys);
        }
        let mut buffered = 0;
        for i in 0..3 {
            let keys = buffered_keys(&cluster.url(i).await.expect("pod")).await;
            buffered += keys.len();
            found.extend(keys);
        }
        assert_exactly_once(&report.acked, &found, report.ambiguous);
        let drain_times: Vec<_> = outs
            .iter()
            .flat_map(|o| o.plan.drains_finished.iter().cloned())
            .collect();
        println!(
            "FIGURES rolling restart of 3: {} rows acknowledged ({} refusals retried, {} \
             ambiguous), {buffered} buffered at the end; roll wall time {roll_wall:?}; drains \
             {drain_times:?}; start→ready after restart {:?}",
            report.acked.len(),
            report.refused,
            report.ambiguous,
            restarts
                .iter()
                .map(|r| (r.pod.clone(), r.ready_after))
                .collect::<Vec<_>>()
        );
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undrainable_pod_sets_degraded_and_is_kept() {
    let Some(svc) = Services::new("degraded").await else {
        return;
    };
    within(Duration::from_secs(240), "undrainable pod", async {
        let v = svc.ingester(2, json!({"drainTimeout": "5s"}));
        let cluster = ProcessCluster::start(&v, svc.secrets(), svc.tmp.path().to_path_buf()).await;
        let metrics = Arc::new(Metrics::new());
        let d = driver(&cluster, &metrics);
        let clock = Clock::default();
        let mut prev = None;
        run_until_ready(&d, &v, &clock, &mut prev).await;
        let mut acked = Vec::new();
        for i in 0..2 {
            let url = cluster.url(i).await.expect("pod");
            let mut c = sluice_proto::v1::write_service_client::WriteServiceClient::connect(url)
                .await
                .expect("connect");
            let w = u32::try_from(i).expect("small");
            sluice_e2e::write_lp(&mut c, NS, batch_lp(w, 0, 100).as_bytes())
                .await
                .expect("write");
            acked.extend((0..100).map(|s| (w, s)));
        }

        // The object store stops; then the pod template changes.
        svc.proxy.cut();
        cluster.set_update_revision("rev-2").await;
        let pid1 = cluster.pods().await[1].1;
        run_until(
            &d,
            &v,
            &clock,
            &mut prev,
            Duration::from_secs(30),
            "ingest-1 draining",
            |st, _| st.pods.get(1).is_some_and(|p| p.state == "Draining"),
        )
        .await;
        // Let the drain timeout pass.
        clock.advance(Duration::from_secs(6));
        let outs = run_until(
            &d,
            &v,
            &clock,
            &mut prev,
            Duration::from_secs(30),
            "Degraded",
            |st, _| condition(st, "Degraded").status == "True",
        )
        .await;
        let st = prev.clone().expect("status");
        let deg = condition(&st, "Degraded");
        assert_eq!(deg.reason, "DrainTimeout");
        assert!(deg.message.contains("ingest-1"), "{}", deg.message);
        assert!(deg.message.contains("not deleted"), "{}", deg.message);
        assert_eq!(st.phase.as_deref(), Some("Degraded"));
        // It stays so: the pod is kept, the roll does not go on.
        let more = run_until(
            &d,
            &v,
            &clock,
            &mut prev,
            Duration::from_secs(30),
            "ten more steps",
            {
                let mut n = 0;
                move |st, _| {
                    assert_eq!(condition(st, "Degraded").status, "True");
                    n += 1;
                    n >= 10
                }
            },
        )
        .await;
        let mut all = outs;
        all.extend(more);
        assert!(
            cluster.deleted().await.is_empty(),
            "an undrained pod was deleted"
        );
        assert_eq!(cluster.pods().await[1].1, pid1, "ingest-1 still runs");
        assert_eq!(
            drains_of(&all),
            Vec::<&str>::new(),
            "no new drain while degraded"
        );
        let s1 = cluster.pod_status(1).await;
        assert!(s1.buffered_rows > 0, "ingest-1 still holds its rows");
        assert!(!s1.wal_empty);

        // The store comes back: ingest-1 drains, the roll goes on, and
        // Degraded clears.
        svc.proxy.restore();
        let outs = run_until(
            &d,
            &v,
            &clock,
            &mut prev,
            Duration::from_secs(150),
            "roll finished after the store came back",
            |st, o| {
                st.phase.as_deref() == Some("Ready")
                    && st.pods.len() == 2
                    && st.pods.iter().all(|p| p.up_to_date && p.state == "Ready")
                    && o.plan.actions.is_empty()
            },
        )
        .await;
        all_ok(&outs);
        let st = prev.clone().expect("status");
        assert_eq!(condition(&st, "Degraded").status, "False");
        assert_eq!(cluster.deleted().await, ["ingest-1", "ingest-0"]);
        // Both drained before their restart: everything is in Parquet.
        let url0 = cluster.url(0).await.expect("ingest-0");
        let mut found = Vec::new();
        for (_, keys) in persisted_rows(&svc.store, &catalog_files(&url0).await).await {
            found.extend(keys);
        }
        assert_exactly_once(&acked, &found, 0);
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_drain_resumes_ingest() {
    let Some(svc) = Services::new("resume").await else {
        return;
    };
    within(
        Duration::from_secs(180),
        "resume after an aborted drain",
        async {
            let v2 = svc.ingester(2, json!({}));
            let cluster =
                ProcessCluster::start(&v2, svc.secrets(), svc.tmp.path().to_path_buf()).await;
            let metrics = Arc::new(Metrics::new());
            let d = driver(&cluster, &metrics);
            let clock = Clock::default();
            let mut prev = None;
            run_until_ready(&d, &v2, &clock, &mut prev).await;
            let url1 = cluster.url(1).await.expect("ingest-1");
            let mut c1 =
                sluice_proto::v1::write_service_client::WriteServiceClient::connect(url1.clone())
                    .await
                    .expect("connect");
            sluice_e2e::write_lp(&mut c1, NS, batch_lp(1, 0, 100).as_bytes())
                .await
                .expect("write");
            let pid1 = cluster.pods().await[1].1;

            // The store is away, so the drain cannot finish; scale 2 → 1.
            svc.proxy.cut();
            let v1 = svc.ingester(1, json!({}));
            run_until(
                &d,
                &v1,
                &clock,
                &mut prev,
                Duration::from_secs(30),
                "ingest-1 draining",
                |st, _| st.pods.get(1).is_some_and(|p| p.state == "Draining"),
            )
            .await;
            let st = prev.clone().expect("status");
            assert_eq!(condition(&st, "Draining").status, "True");
            let refused = sluice_e2e::write_lp(&mut c1, NS, batch_lp(1, 100, 10).as_bytes())
                .await
                .expect_err("a draining pod refuses writes");
            assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

            // Replicas back to 2 before the drain finished.
            let outs = run_until(
                &d,
                &v2,
                &clock,
                &mut prev,
                Duration::from_secs(30),
                "resumed",
                |st, _| {
                    st.pods.get(1).is_some_and(|p| p.state == "Ready")
                        && condition(st, "Draining").status == "False"
                },
            )
            .await;
            all_ok(&outs);
            assert!(
                actions(&outs)
                    .iter()
                    .any(|a| matches!(a, Action::ResumeIngest { pod, .. } if pod == "ingest-1")),
                "{:?}",
                actions(&outs)
            );
            sluice_e2e::write_lp(&mut c1, NS, batch_lp(1, 100, 10).as_bytes())
                .await
                .expect("ingest-1 accepts writes again");
            assert!(cluster.scaled().await.is_empty(), "never scaled");
            assert!(cluster.deleted().await.is_empty());
            assert_eq!(cluster.pods().await[1].1, pid1, "the same process");
            let st = prev.clone().expect("status");
            assert_eq!(st.replicas, 2);
            assert!(st.pods[1].drain_started_at.is_none());

            // Nothing was lost by the aborted drain.
            svc.proxy.restore();
            let mut found = buffered_keys(&url1).await;
            found.sort();
            found.dedup();
            let want: HashSet<(u32, u64)> = (0..110).map(|s| (1, s)).collect();
            let mut got: HashSet<(u32, u64)> = found.into_iter().collect();
            let url0 = cluster.url(0).await.expect("ingest-0");
            for (_, keys) in persisted_rows(&svc.store, &catalog_files(&url0).await).await {
                got.extend(keys);
            }
            assert_eq!(got, want);
            cluster.shutdown().await;
        },
    )
    .await;
}

/// Rotation slots of pod `i` of `n` start at `i·interval/n` into each
/// interval: with a 30 s interval and three pods, at 0 s, 10 s and 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_staggered_across_real_pods() {
    let Some(svc) = Services::new("rotation").await else {
        return;
    };
    within(Duration::from_secs(180), "staggered rotation", async {
        let v = svc.ingester(3, json!({"wal": {"rotationInterval": "30s"}}));
        let cluster = ProcessCluster::start(&v, svc.secrets(), svc.tmp.path().to_path_buf()).await;
        let metrics = Arc::new(Metrics::new());
        let d = driver(&cluster, &metrics);
        let clock = Clock::default();
        let first_segment: Vec<u64> = (0..3)
            .map(|i| last_segment_id(&cluster.pod_dir(i)))
            .collect();
        let load = Load::start(&cluster, 1, Duration::from_millis(10));
        every_pod_has_data(&cluster, 3).await;

        // 100 virtual seconds, one per step.
        let mut prev = None;
        let mut rotations: Vec<(String, u128)> = Vec::new();
        for _ in 0..100 {
            let now = clock.now();
            let (st, out) = d
                .tick(&v, &ControlAccess::plain(), prev.as_ref(), now)
                .await
                .expect("step");
            prev = Some(st);
            let ms = now
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis();
            let rotated: Vec<_> = out
                .results
                .iter()
                .filter_map(|(a, r)| match a {
                    Action::RotateWal { pod, .. } => {
                        assert!(r.is_ok(), "{r:?}");
                        Some(pod.clone())
                    }
                    _ => None,
                })
                .collect();
            assert!(
                rotated.len() <= 1,
                "two pods rotated in one step: {rotated:?}"
            );
            rotations.extend(rotated.into_iter().map(|p| (p, ms)));
            clock.advance(Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = load.stop().await;
        for i in 0..3u128 {
            let pod = format!("ingest-{i}");
            let times: Vec<u128> = rotations
                .iter()
                .filter(|(p, _)| *p == pod)
                .map(|(_, t)| *t)
                .collect();
            assert!(times.len() >= 3, "{pod} rotated {times:?}");
            for t in &times {
                // Just after the slot boundary (one step of 1 s plus the
                // real time the step took).
                let into = (t + 30_000 - i * 10_000) % 30_000;
                assert!(into < 2_000, "{pod} rotated {into} ms into its slot");
            }
            // Each rotation really closed a segment of that pod.
            let o = i32::try_from(i).expect("small");
            let advanced = last_segment_id(&cluster.pod_dir(o))
                - first_segment[usize::try_from(i).expect("small")];
            assert_eq!(
                advanced,
                u64::try_from(times.len()).expect("few"),
                "{pod}: segments opened vs rotations"
            );
        }
        // Rotation persists what the closed segment held: every pod wrote
        // Parquet files.
        let url0 = cluster.url(0).await.expect("ingest-0");
        let files = catalog_files(&url0).await;
        let writers: HashSet<&str> = files.iter().map(|f| f.ingester_id.as_str()).collect();
        for i in 0..3 {
            assert!(
                writers.contains(format!("ingest-{i}").as_str()),
                "{writers:?}"
            );
        }
        let text = metrics.render();
        assert!(
            text.contains("sluice_operator_driver_actions_total{action=\"RotateWal\"}"),
            "{text}"
        );
        println!(
            "FIGURES rotation: {} rotations over 100 virtual s; {} rows written; {} files",
            rotations.len(),
            report.acked.len(),
            files.len()
        );
        cluster.shutdown().await;
    })
    .await;
}

fn last_segment_id(pod_dir: &std::path::Path) -> u64 {
    wal_files(pod_dir)
        .iter()
        .filter_map(|(n, _)| n.trim_end_matches(".wal").parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// A single node (local object store, SQLite): the persist triggers and
/// the per-pod figures in the status and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_triggers_and_status_figures() {
    within(Duration::from_secs(120), "persist triggers", async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let v_buf = single_node(json!({"persist": {"triggerBufferBytes": 262144}}));
        let cluster =
            ProcessCluster::start(&v_buf, Secrets::default(), tmp.path().to_path_buf()).await;
        let metrics = Arc::new(Metrics::new());
        let d = driver(&cluster, &metrics);
        let clock = Clock::default();
        let url = cluster.url(0).await.expect("ingest-0");
        let mut c = sluice_proto::v1::write_service_client::WriteServiceClient::connect(url.clone())
            .await
            .expect("connect");

        // Below the threshold: figures only.
        sluice_e2e::write_lp(&mut c, NS, batch_lp(0, 0, 10).as_bytes())
            .await
            .expect("write");
        let (st, out) = d.tick(&v_buf, &ControlAccess::plain(), None, clock.now()).await.expect("step");
        assert!(out.plan.actions.is_empty(), "{:?}", out.plan.actions);
        let direct = cluster.pod_status(0).await;
        let p = &st.pods[0];
        assert_eq!(p.name, "ingest-0");
        assert_eq!(p.state, "Ready");
        assert_eq!(p.buffered_rows, 10);
        assert_eq!(p.buffered_rows, i64::try_from(direct.buffered_rows).expect("small"));
        assert_eq!(p.buffered_bytes, i64::try_from(direct.buffered_bytes).expect("small"));
        assert!(p.buffered_bytes > 0);
        assert_eq!(p.wal_segments, 1);
        assert!(p.wal_bytes > 16, "{p:?}");
        assert_eq!(p.persist_queue, 0);
        assert!(p.error.is_none());
        let text = metrics.render();
        assert!(
            text.contains(
                "sluice_operator_pod_buffered_rows{ingester=\"ingest\",namespace=\"e2e\",pod=\"ingest-0\"} 10"
            ),
            "{text}"
        );

        // Past the buffer threshold: one Persist, and the buffer empties.
        let mut seq = 10;
        while cluster.pod_status(0).await.buffered_bytes <= 262_144 {
            sluice_e2e::write_lp(&mut c, NS, batch_lp(0, seq, 2000).as_bytes())
                .await
                .expect("write");
            seq += 2000;
        }
        let (st, out) = d.tick(&v_buf, &ControlAccess::plain(), Some(&st), clock.now()).await.expect("step");
        assert!(
            matches!(
                out.plan.actions[..],
                [Action::Persist { why: PersistReason::Buffer, .. }]
            ),
            "{:?}",
            out.plan.actions
        );
        assert!(out.results[0].1.is_ok(), "{:?}", out.results);
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.pod_status(0).await.buffered_rows > 0 {
            assert!(Instant::now() < deadline, "the persist never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let files = catalog_files(&url).await;
        let rows: i64 = files.iter().map(|f| f.row_count).sum();
        assert_eq!(rows, i64::try_from(seq).expect("small"), "every row in Parquet");
        // Persisting alone leaves the WAL as it was: the open segment holds
        // the entries.
        let wal_before = cluster.pod_status(0).await.wal_bytes;
        assert!(wal_before > 16, "the persist left the WAL: {wal_before}");
        // Grow the WAL past the next threshold.
        while cluster.pod_status(0).await.wal_bytes <= 200_000 {
            sluice_e2e::write_lp(&mut c, NS, batch_lp(0, seq, 2000).as_bytes())
                .await
                .expect("write");
            seq += 2000;
        }

        // The WAL threshold (and no buffer threshold): rotate + persist,
        // and the WAL shrinks to an empty open segment.
        let v_wal = single_node(json!({"persist": {"triggerWalBytes": 200000}}));
        let (st, out) = d.tick(&v_wal, &ControlAccess::plain(), Some(&st), clock.now()).await.expect("step");
        assert!(
            matches!(
                out.plan.actions[..],
                [Action::Persist { why: PersistReason::Wal, .. }]
            ),
            "{:?}",
            out.plan.actions
        );
        assert!(out.results[0].1.is_ok(), "{:?}", out.results);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = cluster.pod_status(0).await;
            if s.wal_empty && s.wal_segments == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the WAL never shrank: {s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (st, out) = d.tick(&v_wal, &ControlAccess::plain(), Some(&st), clock.now()).await.expect("step");
        assert!(out.plan.actions.is_empty(), "below the threshold again");
        assert!(st.pods[0].wal_bytes < 200_000);
        assert_eq!(st.pods[0].buffered_rows, 0);
        assert_eq!(st.pods[0].oldest_unpersisted_write_age_seconds, 0);
        let text = metrics.render();
        assert!(
            text.contains("sluice_operator_driver_actions_total{action=\"Persist\"} 2"),
            "{text}"
        );
        cluster.shutdown().await;
    })
    .await;
}
