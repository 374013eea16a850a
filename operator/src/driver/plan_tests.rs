use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::driver::cluster::{PodInfo, PodSet, StatefulSetState};
use crate::fixtures::validated;

const REV_OLD: &str = "ingest-aaa";
const REV_NEW: &str = "ingest-bbb";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn v(replicas: i32) -> ValidatedIngester {
    let mut v = validated("cluster.yaml");
    v.replicas = replicas;
    v
}

fn figures(state: PodState) -> PodFigures {
    PodFigures {
        state,
        buffered_rows: if state == PodState::Drained { 0 } else { 10 },
        buffered_bytes: if state == PodState::Drained { 0 } else { 1000 },
        // A drained ingester keeps one empty open segment.
        wal_segments: if state == PodState::Drained { 1 } else { 2 },
        wal_bytes: if state == PodState::Drained { 16 } else { 5000 },
        persist_queue_depth: 0,
        persist_active_jobs: 0,
        oldest_unpersisted_write_age: Duration::from_secs(3),
        wal_empty: state == PodState::Drained,
    }
}

struct Pod {
    ordinal: i32,
    rev: &'static str,
    ready: bool,
    fig: Option<Result<PodFigures, ControlError>>,
}

fn ready(ordinal: i32) -> Pod {
    Pod {
        ordinal,
        rev: REV_NEW,
        ready: true,
        fig: Some(Ok(figures(PodState::Ready))),
    }
}

fn in_state(ordinal: i32, state: PodState) -> Pod {
    Pod {
        ordinal,
        rev: REV_NEW,
        ready: state == PodState::Ready,
        fig: Some(Ok(figures(state))),
    }
}

fn obs(sts_replicas: i32, pods: Vec<Pod>) -> Observation {
    let mut o = Observation {
        set: PodSet {
            statefulset: Some(StatefulSetState {
                replicas: sts_replicas,
                update_revision: Some(REV_NEW.into()),
            }),
            pods: Vec::new(),
        },
        figures: Vec::new(),
        access: None,
    };
    for p in pods {
        o.set.pods.push(PodInfo {
            name: format!("ingest-{}", p.ordinal),
            ordinal: p.ordinal,
            revision: Some(p.rev.into()),
            ready: p.ready,
            terminating: false,
            control_url: Some(format!("http://10.0.0.{}:8082", p.ordinal)),
        });
        o.figures.push(p.fig);
    }
    o
}

fn run(v: &ValidatedIngester, o: &Observation, prev: &[PodStatus]) -> Plan {
    run_at(v, o, prev, now(), &mut RotationMemory::default())
}

fn run_at(
    v: &ValidatedIngester,
    o: &Observation,
    prev: &[PodStatus],
    now: SystemTime,
    mem: &mut RotationMemory,
) -> Plan {
    plan(
        &PlanInput {
            v,
            obs: o,
            prev_pods: prev,
            now,
            poll_interval: Duration::from_secs(5),
        },
        mem,
    )
}

fn kinds(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::Scale { from, to } => format!("Scale {from}->{to}"),
            Action::PrepareShutdown { pod, .. } => format!("PrepareShutdown {pod}"),
            Action::ResumeIngest { pod, .. } => format!("Resume {pod}"),
            Action::DeletePod { pod } => format!("Delete {pod}"),
            Action::RotateWal { pod, .. } => format!("Rotate {pod}"),
            Action::Persist { pod, .. } => format!("Persist {pod}"),
        })
        .collect()
}

#[test]
fn steady_state_does_nothing() {
    let p = run(&v(3), &obs(3, vec![ready(0), ready(1), ready(2)]), &[]);
    assert_eq!(kinds(&p), Vec::<String>::new());
    assert_eq!(p.progress, Progress::Stable);
    assert_eq!(p.ready_replicas, 3);
    assert!(p.degraded.is_none());
    assert_eq!(p.pods[1].wal_segments, 2);
    assert!(p.pods.iter().all(|p| p.up_to_date));
}

#[test]
fn no_statefulset_yet() {
    let mut o = obs(3, vec![]);
    o.set.statefulset = None;
    let p = run(&v(3), &o, &[]);
    assert_eq!(p.progress, Progress::Creating);
    assert!(p.actions.is_empty());
}

#[test]
fn scale_down_drains_the_highest_ordinals_first() {
    let p = run(&v(1), &obs(3, vec![ready(0), ready(1), ready(2)]), &[]);
    assert_eq!(
        kinds(&p),
        ["PrepareShutdown ingest-1", "PrepareShutdown ingest-2"]
    );
    assert!(matches!(
        p.progress,
        Progress::ScalingDown { from: 3, to: 1, .. }
    ));
    assert_eq!(p.draining, ["ingest-1", "ingest-2"]);
    assert!(p.pods[1].drain_started_at.is_some());
    assert!(p.pods[0].drain_started_at.is_none());
}

#[test]
fn scale_down_waits_for_every_leaving_pod() {
    let o = obs(
        3,
        vec![
            ready(0),
            in_state(1, PodState::Drained),
            in_state(2, PodState::Draining),
        ],
    );
    let p = run(&v(1), &o, &[]);
    assert_eq!(kinds(&p), Vec::<String>::new(), "ingest-2 still draining");
    // A drained state with WAL segments left is not drained.
    let mut o = obs(
        3,
        vec![
            ready(0),
            in_state(1, PodState::Drained),
            in_state(2, PodState::Drained),
        ],
    );
    if let Some(Ok(f)) = &mut o.figures[2] {
        f.wal_empty = false;
    }
    assert_eq!(kinds(&run(&v(1), &o, &[])), Vec::<String>::new());
}

#[test]
fn scale_down_shrinks_once_all_drained_and_reports_drain_time() {
    let o = obs(
        3,
        vec![
            ready(0),
            in_state(1, PodState::Drained),
            in_state(2, PodState::Drained),
        ],
    );
    let prev = vec![PodStatus {
        name: "ingest-2".into(),
        drain_started_at: Some(time(now() - Duration::from_secs(42))),
        ..Default::default()
    }];
    let p = run(&v(1), &o, &prev);
    assert_eq!(kinds(&p), ["Scale 3->1"]);
    let d: HashMap<_, _> = p.drains_finished.iter().cloned().collect();
    assert_eq!(d["ingest-2"], Duration::from_secs(42));
    assert!(
        p.draining.is_empty(),
        "drains that finished in this step are over: {:?}",
        p.draining
    );
}

#[test]
fn unreachable_leaving_pod_blocks_scale_down() {
    let mut o = obs(2, vec![ready(0), ready(1)]);
    o.figures[1] = Some(Err(ControlError::Timeout {
        call: "Status",
        url: "u".into(),
        timeout: Duration::from_secs(1),
    }));
    let p = run(&v(1), &o, &[]);
    assert_eq!(kinds(&p), Vec::<String>::new());
    assert!(p.pods[1].error.is_some());
}

#[test]
fn replicas_rising_mid_drain_resume_the_pod() {
    let o = obs(
        3,
        vec![
            ready(0),
            in_state(1, PodState::Draining),
            in_state(2, PodState::Drained),
        ],
    );
    let p = run(&v(3), &o, &[]);
    assert_eq!(kinds(&p), ["Resume ingest-1", "Resume ingest-2"]);
    assert!(p.pods[1].drain_started_at.is_none());
}

#[test]
fn scale_up_is_immediate_and_resumes_leaving_pods() {
    let o = obs(2, vec![ready(0), in_state(1, PodState::Draining)]);
    let p = run(&v(3), &o, &[]);
    assert_eq!(kinds(&p), ["Scale 2->3", "Resume ingest-1"]);
}

#[test]
fn rolling_restart_drains_then_deletes_the_highest_outdated_pod() {
    let mut pods = vec![ready(0), ready(1), ready(2)];
    for p in &mut pods {
        p.rev = REV_OLD;
    }
    let p = run(&v(3), &obs(3, pods), &[]);
    assert_eq!(kinds(&p), ["PrepareShutdown ingest-2"]);
    assert_eq!(
        p.progress,
        Progress::RollingRestart {
            pod: "ingest-2".into(),
            remaining: 3
        }
    );
    assert!(p.pods.iter().all(|p| !p.up_to_date));

    let mut pods = vec![ready(0), ready(1), in_state(2, PodState::Drained)];
    for p in &mut pods {
        p.rev = REV_OLD;
    }
    assert_eq!(kinds(&run(&v(3), &obs(3, pods), &[])), ["Delete ingest-2"]);
}

#[test]
fn rolling_restart_waits_for_the_restarted_pod() {
    // ingest-2 restarted on the new template and is not ready yet.
    let mut pods = vec![ready(0), ready(1), in_state(2, PodState::Replaying)];
    pods[0].rev = REV_OLD;
    pods[1].rev = REV_OLD;
    let p = run(&v(3), &obs(3, pods), &[]);
    assert_eq!(kinds(&p), Vec::<String>::new());
    assert_eq!(
        p.progress,
        Progress::RollingRestart {
            pod: "ingest-1".into(),
            remaining: 2
        }
    );
    // ... nor while it is missing altogether.
    let mut pods = vec![ready(0), ready(1)];
    pods[0].rev = REV_OLD;
    pods[1].rev = REV_OLD;
    assert_eq!(kinds(&run(&v(3), &obs(3, pods), &[])), Vec::<String>::new());
}

#[test]
fn rolling_restart_never_deletes_an_undrained_pod_and_degrades_on_timeout() {
    let mut pods = vec![ready(0), ready(1), in_state(2, PodState::Draining)];
    for p in &mut pods {
        p.rev = REV_OLD;
    }
    let o = obs(3, pods);
    let started = now() - Duration::from_secs(16 * 60); // drainTimeout is 15m
    let prev = vec![PodStatus {
        name: "ingest-2".into(),
        drain_started_at: Some(time(started)),
        ..Default::default()
    }];
    let p = run(&v(3), &o, &prev);
    assert_eq!(kinds(&p), Vec::<String>::new(), "no delete, no other drain");
    let d = p.degraded.expect("degraded");
    assert_eq!(d.reason, "DrainTimeout");
    assert!(d.message.contains("ingest-2"), "{}", d.message);
    // The start time is kept, so the timeout keeps counting.
    assert_eq!(p.pods[2].drain_started_at, Some(time(started)));
    // Within the timeout: not degraded.
    let prev = vec![PodStatus {
        name: "ingest-2".into(),
        drain_started_at: Some(time(now() - Duration::from_secs(60))),
        ..Default::default()
    }];
    assert!(run(&v(3), &o, &prev).degraded.is_none());
}

#[test]
fn no_rolling_restart_while_scaling_down() {
    let mut pods = vec![ready(0), ready(1), ready(2)];
    pods[0].rev = REV_OLD;
    let p = run(&v(2), &obs(3, pods), &[]);
    assert_eq!(kinds(&p), ["PrepareShutdown ingest-2"]);
}

#[test]
fn persist_triggers_on_thresholds_when_idle() {
    let vi = v(2); // triggers: buffer 512 MiB, WAL 1 GiB
    let mut o = obs(2, vec![ready(0), ready(1)]);
    if let Some(Ok(f)) = &mut o.figures[0] {
        f.buffered_bytes = 600 << 20;
    }
    if let Some(Ok(f)) = &mut o.figures[1] {
        f.wal_bytes = 2 << 30;
        f.persist_active_jobs = 1; // already persisting
    }
    let p = run(&vi, &o, &[]);
    assert_eq!(kinds(&p), ["Persist ingest-0"]);
    assert!(matches!(
        p.actions[0],
        Action::Persist {
            why: PersistReason::Buffer,
            ..
        }
    ));
}

#[test]
fn rotation_is_staggered_across_steps() {
    let vi = v(3); // rotationInterval 5m: pods at offsets 0, 100 s, 200 s
    let o = obs(3, vec![ready(0), ready(1), ready(2)]);
    let mut mem = RotationMemory::default();
    let base = UNIX_EPOCH + Duration::from_secs(300 * 1000); // a slot boundary of pod 0
    let mut rotated = Vec::new();
    for s in 0..=400 {
        let t = base + Duration::from_secs(s);
        let p = run_at(&vi, &o, &[], t, &mut mem);
        for k in kinds(&p) {
            rotated.push((s, k));
        }
        assert!(p.next_step <= Duration::from_secs(5));
    }
    assert_eq!(
        rotated,
        [
            (100, "Rotate ingest-1".to_string()),
            (200, "Rotate ingest-2".to_string()),
            (300, "Rotate ingest-0".to_string()),
            (400, "Rotate ingest-1".to_string()),
        ]
    );
}

#[test]
fn cleanup_drains_everything() {
    let o = obs(2, vec![ready(0), in_state(1, PodState::Drained)]);
    let (p, done) = plan_cleanup(
        &o,
        &[],
        now(),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    assert!(!done);
    assert_eq!(kinds(&p), ["PrepareShutdown ingest-0"]);
    let o = obs(
        2,
        vec![
            in_state(0, PodState::Drained),
            in_state(1, PodState::Drained),
        ],
    );
    let (_, done) = plan_cleanup(
        &o,
        &[],
        now(),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    assert!(done);
    let (_, done) = plan_cleanup(
        &obs(0, vec![]),
        &[],
        now(),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    assert!(done, "no pods: nothing to drain");
}

#[test]
fn refused_credentials_degrade_with_the_cause_and_block_the_drain() {
    let rpc = |code: &str, message: &str| ControlError::Rpc {
        call: "Status",
        url: "http://10.0.0.2:8082".into(),
        code: code.into(),
        message: message.into(),
    };
    for (err, reason) in [
        (
            rpc("PermissionDenied", "token lacks scope control"),
            "ControlPermissionDenied",
        ),
        (
            rpc("Unauthenticated", "unknown token"),
            "ControlUnauthenticated",
        ),
        (
            rpc(
                "Unavailable",
                "TLS handshake failed with 10.0.0.2:8082 expecting the name x: invalid peer certificate: UnknownIssuer",
            ),
            "ControlTlsFailed",
        ),
        (
            rpc(
                "Unavailable",
                "TLS handshake failed with 10.0.0.2:8082: the pod refused the session: received fatal alert: CertificateRequired",
            ),
            "ControlClientCertRefused",
        ),
    ] {
        let mut leaving = ready(2);
        leaving.fig = Some(Err(err));
        let o = obs(3, vec![ready(0), ready(1), leaving]);
        let p = run(&v(2), &o, &[]);
        assert!(p.actions.is_empty(), "{reason}: {:?}", p.actions);
        let d = p.degraded.expect("degraded");
        assert_eq!(d.reason, reason);
        assert!(
            d.message.starts_with("ingest-2 refused the operator"),
            "{}",
            d.message
        );
    }
    // A pod that is merely down is not a refusal.
    let mut down = ready(2);
    down.fig = Some(Err(rpc("Unavailable", "connection refused")));
    let p = run(&v(3), &obs(3, vec![ready(0), ready(1), down]), &[]);
    assert_eq!(p.degraded, None);
}
