//! The `Ingester` status: conditions computed from the driver's plan,
//! with `lastTransitionTime` kept while a condition's status stays the same
//! (so `kubectl wait` and alerting see real transitions, not every poll).
//!
//! Conditions: `Ready` (every wanted pod is ready), `Progressing` (scaling,
//! rolling restart, creation, deletion), `Degraded` (invalid spec, a drain
//! that timed out) and `Draining` (pods asked to drain). `phase` condenses
//! them into one word for the printer column.

use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::crd::{IngesterEndpoints, IngesterStatus, PodEndpoint};
use crate::driver::plan::{Plan, Progress, time};
use crate::reconcile::validate::{GRPC_PORT, HTTP_PORT, ValidatedIngester, ValidationError};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const DRAINING: &str = "Draining";

/// The status after a driver step.
pub fn compute(
    prev: Option<&IngesterStatus>,
    generation: Option<i64>,
    desired: i32,
    plan: &Plan,
    endpoints: Option<IngesterEndpoints>,
    now: SystemTime,
) -> IngesterStatus {
    let prev_conds = prev.map_or(&[][..], |p| &p.conditions[..]);
    let mut c = Conditions::new(prev_conds, generation, now);

    let ready = plan.ready_replicas >= desired && !matches!(plan.progress, Progress::Creating);
    c.set(
        READY,
        ready,
        if ready {
            "AllPodsReady"
        } else {
            "PodsNotReady"
        },
        format!("{}/{desired} pods ready", plan.ready_replicas.min(desired)),
    );
    let (progressing, reason, message) = match &plan.progress {
        Progress::Creating => (true, "Creating", "creating the StatefulSet".to_string()),
        Progress::Stable => (false, "Stable", "nothing to do".to_string()),
        Progress::ScalingUp { from, to } => (
            true,
            "ScalingUp",
            format!("scaling up from {from} to {to} pods"),
        ),
        Progress::ScalingDown { from, to, waiting } => (
            true,
            "ScalingDown",
            if waiting.is_empty() {
                format!("leaving pods drained; scaling down from {from} to {to}")
            } else {
                format!(
                    "scaling down from {from} to {to}: waiting for {} to drain",
                    waiting.join(", ")
                )
            },
        ),
        Progress::RollingRestart { pod, remaining } => (
            true,
            "RollingRestart",
            format!("restarting {pod} on the new pod template ({remaining} to go)"),
        ),
        Progress::Deleting { waiting } => (
            true,
            "Deleting",
            if waiting.is_empty() {
                "every pod drained; releasing the objects".to_string()
            } else {
                format!("draining {} before deletion", waiting.join(", "))
            },
        ),
    };
    c.set(PROGRESSING, progressing, reason, message);
    match &plan.degraded {
        Some(d) => c.set(DEGRADED, true, d.reason, d.message.clone()),
        None => c.set(DEGRADED, false, "AsExpected", "no problem seen".into()),
    }
    if plan.draining.is_empty() {
        c.set(DRAINING, false, "NoDrain", "no pod is draining".into());
    } else {
        c.set(
            DRAINING,
            true,
            "PodsDraining",
            format!("draining: {}", plan.draining.join(", ")),
        );
    }

    let phase = if plan.degraded.is_some() {
        DEGRADED
    } else if !plan.draining.is_empty() {
        DRAINING
    } else if progressing {
        PROGRESSING
    } else if ready {
        READY
    } else {
        "NotReady"
    };
    IngesterStatus {
        observed_generation: generation,
        replicas: plan.sts_replicas,
        ready_replicas: plan.ready_replicas,
        phase: Some(phase.into()),
        conditions: c.done(),
        endpoints,
        pods: plan.pods.clone(),
    }
}

/// The status of an `Ingester` whose spec failed validation: `Degraded`
/// with the reason; the rest as it was.
pub fn invalid(
    prev: Option<&IngesterStatus>,
    generation: Option<i64>,
    err: &ValidationError,
    now: SystemTime,
) -> IngesterStatus {
    let mut s = prev.cloned().unwrap_or_default();
    let mut c = Conditions::new(&s.conditions, generation, now);
    c.set(DEGRADED, true, "InvalidSpec", err.to_string());
    for t in [READY, PROGRESSING, DRAINING] {
        c.keep(t);
    }
    s.conditions = c.done();
    s.observed_generation = generation;
    s.phase = Some(DEGRADED.into());
    s
}

/// Addresses for routers and queriers: the client Service and pods
/// `0..pods` (every pod that exists, draining ones included: they still
/// hold data that queriers must read).
pub fn endpoints(v: &ValidatedIngester, pods: i32) -> IngesterEndpoints {
    let tls = v.security.tls.is_some();
    let scheme = if tls { "https" } else { "http" };
    IngesterEndpoints {
        service: v.client_service_dns(),
        grpc_port: GRPC_PORT,
        http_port: HTTP_PORT,
        tls,
        pods: (0..pods.max(0))
            .map(|i| {
                let dns = v.pod_dns(i);
                PodEndpoint {
                    name: v.pod_name(i),
                    grpc: format!("{dns}:{GRPC_PORT}"),
                    url: format!("{scheme}://{dns}:{GRPC_PORT}"),
                    dns,
                }
            })
            .collect(),
    }
}

/// Builds the condition list, carrying transition times over.
struct Conditions<'a> {
    prev: &'a [Condition],
    out: Vec<Condition>,
    generation: Option<i64>,
    now: SystemTime,
}

impl<'a> Conditions<'a> {
    fn new(prev: &'a [Condition], generation: Option<i64>, now: SystemTime) -> Self {
        Self {
            prev,
            out: Vec::new(),
            generation,
            now,
        }
    }

    fn set(&mut self, type_: &str, status: bool, reason: &str, message: String) {
        let status = if status { "True" } else { "False" };
        let last_transition_time = self
            .prev
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| time(self.now), |c| c.last_transition_time.clone());
        self.out.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: self.generation,
            last_transition_time,
        });
    }

    fn keep(&mut self, type_: &str) {
        if let Some(c) = self.prev.iter().find(|c| c.type_ == type_) {
            self.out.push(c.clone());
        }
    }

    fn done(mut self) -> Vec<Condition> {
        let order = |t: &str| {
            [READY, PROGRESSING, DEGRADED, DRAINING]
                .iter()
                .position(|x| *x == t)
        };
        self.out.sort_by_key(|c| order(&c.type_));
        self.out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::driver::plan::Degradation;
    use crate::fixtures::validated;

    fn plan(progress: Progress, ready: i32) -> Plan {
        Plan {
            actions: vec![],
            pods: vec![],
            progress,
            degraded: None,
            draining: vec![],
            drains_finished: vec![],
            next_step: Duration::from_secs(5),
            ready_replicas: ready,
            sts_replicas: 3,
        }
    }

    fn cond<'a>(s: &'a IngesterStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn stable_and_ready() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let s = compute(None, Some(4), 3, &plan(Progress::Stable, 3), None, t0);
        assert_eq!(s.phase.as_deref(), Some("Ready"));
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, PROGRESSING).status, "False");
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert_eq!(cond(&s, DRAINING).status, "False");
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(cond(&s, READY).observed_generation, Some(4));
        let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, PROGRESSING, DEGRADED, DRAINING]);
    }

    #[test]
    fn transition_times_are_kept_until_the_status_flips() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let t1 = t0 + Duration::from_secs(60);
        let t2 = t1 + Duration::from_secs(60);
        let s0 = compute(None, Some(1), 3, &plan(Progress::Stable, 3), None, t0);
        let s1 = compute(Some(&s0), Some(1), 3, &plan(Progress::Stable, 3), None, t1);
        assert_eq!(cond(&s1, READY).last_transition_time, time(t0));
        let mut p = plan(
            Progress::ScalingDown {
                from: 3,
                to: 1,
                waiting: vec!["ingest-2".into()],
            },
            3,
        );
        p.draining = vec!["ingest-2".into()];
        let s2 = compute(Some(&s1), Some(2), 1, &p, None, t2);
        assert_eq!(cond(&s2, PROGRESSING).status, "True");
        assert_eq!(cond(&s2, PROGRESSING).reason, "ScalingDown");
        assert_eq!(cond(&s2, PROGRESSING).last_transition_time, time(t2));
        assert!(cond(&s2, PROGRESSING).message.contains("ingest-2"));
        assert_eq!(
            cond(&s2, READY).last_transition_time,
            time(t0),
            "still ready"
        );
        assert_eq!(s2.phase.as_deref(), Some("Draining"));
    }

    #[test]
    fn degraded_wins_the_phase() {
        let mut p = plan(
            Progress::RollingRestart {
                pod: "ingest-2".into(),
                remaining: 3,
            },
            2,
        );
        p.degraded = Some(Degradation {
            reason: "DrainTimeout",
            message: "ingest-2 has not drained".into(),
        });
        p.draining = vec!["ingest-2".into()];
        let s = compute(None, Some(1), 3, &p, None, UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
        assert_eq!(cond(&s, DEGRADED).reason, "DrainTimeout");
        assert_eq!(cond(&s, READY).status, "False");
    }

    #[test]
    fn invalid_spec_keeps_the_rest() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let s0 = compute(None, Some(1), 3, &plan(Progress::Stable, 3), None, t0);
        let s1 = invalid(
            Some(&s0),
            Some(2),
            &ValidationError::ReplicasNeedS3(3),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(cond(&s1, DEGRADED).status, "True");
        assert_eq!(cond(&s1, DEGRADED).reason, "InvalidSpec");
        assert_eq!(cond(&s1, READY), cond(&s0, READY));
        assert_eq!(s1.observed_generation, Some(2));
    }

    #[test]
    fn endpoints_name_every_pod() {
        let v = validated("cluster.yaml");
        let e = endpoints(&v, 2);
        assert_eq!(e.service, "ingest.sluice.svc.cluster.local");
        assert_eq!(e.pods.len(), 2);
        assert_eq!(
            e.pods[1].grpc,
            "ingest-1.ingest-pods.sluice.svc.cluster.local:8082"
        );
    }
}
