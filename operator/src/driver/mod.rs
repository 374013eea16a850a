//! The driver: the loop that talks to each pod's `ControlService`.
//!
//! One step = observe → plan → execute:
//! - **observe**: read the pods through [`Cluster`] and ask every pod with an
//!   address for its `Status` (concurrently, each call bounded by the
//!   [`PodControl`] timeout);
//! - **plan**: [`plan::plan`], a pure function, decides (scale, drain,
//!   resume, delete, rotate, persist);
//! - **execute**: carry the actions out, in order. A failed pod RPC is
//!   recorded and retried on the next step; a failed cluster call ends the
//!   step with an error (the reconciler backs off).
//!
//! The driver holds no state that matters for safety: whether a pod may be
//! removed is decided from what it reports in the same step. The only
//! memory is the rotation schedule (see [`rotation`]) and drain start times,
//! which travel in the status.
//!
//! All cluster effects go through [`Cluster`]; the reconciler runs a step
//! after applying the objects, and the e2e tests run steps directly against
//! real ingester processes ([`Driver::tick`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::join_all;

pub mod access;
pub mod cluster;
pub mod kube_cluster;
#[cfg(test)]
pub mod mock;
pub mod plan;
pub mod pod_control;
pub mod rotation;

pub use access::{AccessError, ControlAccess, SecretData};
pub use cluster::{Cluster, ClusterError, IngesterRef, PodInfo, PodSet, StatefulSetState};
pub use plan::{Action, DrainReason, Observation, PersistReason, Plan, Progress};
pub use pod_control::{
    ControlError, GrpcPodControl, PodControl, PodFigures, PodState, Refusal, Target,
};

use crate::crd::{IngesterStatus, PodStatus};
use crate::metrics::Metrics;
use crate::reconcile::status;
use crate::reconcile::validate::ValidatedIngester;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub plan: Plan,
    /// Each action and how it went (`Err`: the reason, e.g. an RPC error).
    pub results: Vec<(Action, Result<(), String>)>,
}

pub struct Driver<C, P> {
    cluster: C,
    control: P,
    rotation: Mutex<rotation::RotationMemory>,
    poll_interval: Duration,
    metrics: Arc<Metrics>,
}

impl<C: Cluster, P: PodControl> Driver<C, P> {
    /// `poll_interval` bounds the time between steps of one `Ingester`.
    pub fn new(cluster: C, control: P, poll_interval: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            cluster,
            control,
            rotation: Mutex::default(),
            poll_interval,
            metrics,
        }
    }

    pub fn cluster(&self) -> &C {
        &self.cluster
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Reads the pods and polls each one's `Status` with `access`; with
    /// `None` (the credentials are missing) no pod is called and none can
    /// be confirmed drained.
    pub async fn observe(
        &self,
        ing: &IngesterRef,
        access: Option<&ControlAccess>,
    ) -> Result<Observation, DriverError> {
        let set = self.cluster.read_pods(ing).await?;
        let figures = match access {
            None => vec![None; set.pods.len()],
            Some(access) => {
                join_all(set.pods.iter().map(|p| async move {
                    match (&p.control_url, p.terminating) {
                        (Some(url), false) => Some(
                            self.control
                                .status(&Target {
                                    pod: &p.name,
                                    url,
                                    access,
                                })
                                .await,
                        ),
                        _ => None,
                    }
                }))
                .await
            }
        };
        Ok(Observation {
            set,
            figures,
            access: access.cloned(),
        })
    }

    /// Plans and executes one step for a live `Ingester`.
    pub async fn step(
        &self,
        v: &ValidatedIngester,
        obs: &Observation,
        prev_pods: &[PodStatus],
        now: SystemTime,
    ) -> Result<StepOutcome, DriverError> {
        let plan = {
            let mut rotation = self
                .rotation
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            plan::plan(
                &plan::PlanInput {
                    v,
                    obs,
                    prev_pods,
                    now,
                    poll_interval: self.poll_interval,
                },
                &mut rotation,
            )
        };
        let ing = IngesterRef {
            namespace: v.namespace.clone(),
            name: v.name.clone(),
        };
        self.execute(&ing, obs, plan).await
    }

    /// One step while the `Ingester` is being deleted; `true` once every
    /// pod has drained.
    pub async fn cleanup(
        &self,
        ing: &IngesterRef,
        obs: &Observation,
        prev_pods: &[PodStatus],
        drain_timeout: Duration,
        now: SystemTime,
    ) -> Result<(StepOutcome, bool), DriverError> {
        let (plan, done) =
            plan::plan_cleanup(obs, prev_pods, now, drain_timeout, self.poll_interval);
        let outcome = self.execute(ing, obs, plan).await?;
        if done {
            let mut rotation = self
                .rotation
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let prefix = format!("{}/{}/", ing.namespace, ing.name);
            rotation.retain(|k| !k.starts_with(&prefix));
        }
        Ok((outcome, done))
    }

    /// Observe, step, compute and write the status: a reconcile without the
    /// apply. The e2e tests drive real pods with it.
    pub async fn tick(
        &self,
        v: &ValidatedIngester,
        access: &ControlAccess,
        prev: Option<&IngesterStatus>,
        now: SystemTime,
    ) -> Result<(IngesterStatus, StepOutcome), DriverError> {
        let ing = IngesterRef {
            namespace: v.namespace.clone(),
            name: v.name.clone(),
        };
        let obs = self.observe(&ing, Some(access)).await?;
        let prev_pods = prev.map_or(&[][..], |s| &s.pods[..]);
        let outcome = self.step(v, &obs, prev_pods, now).await?;
        let pods = outcome.plan.sts_replicas.max(v.replicas);
        let st = status::compute(
            prev,
            v.generation,
            v.replicas,
            &outcome.plan,
            Some(status::endpoints(v, pods)),
            now,
        );
        self.cluster.write_status(&ing, &st).await?;
        Ok((st, outcome))
    }

    async fn execute(
        &self,
        ing: &IngesterRef,
        obs: &Observation,
        plan: Plan,
    ) -> Result<StepOutcome, DriverError> {
        let mut results = Vec::with_capacity(plan.actions.len());
        // Without credentials the plan holds no pod call (no figures, no
        // call); should one appear, it goes out plain and the pod refuses.
        let plain = ControlAccess::plain();
        let access = obs.access.as_ref().unwrap_or(&plain);
        for action in &plan.actions {
            let r = match action {
                Action::Scale { to, .. } => {
                    self.cluster.scale(ing, *to).await?;
                    Ok(())
                }
                Action::DeletePod { pod } => {
                    self.cluster.delete_pod(ing, pod).await?;
                    Ok(())
                }
                Action::PrepareShutdown { pod, url, .. } => self
                    .control
                    .prepare_shutdown(&Target { pod, url, access })
                    .await
                    .map(|_| ()),
                Action::ResumeIngest { pod, url } => self
                    .control
                    .resume_ingest(&Target { pod, url, access })
                    .await
                    .map(|_| ()),
                Action::RotateWal { pod, url } => {
                    self.control.rotate_wal(&Target { pod, url, access }).await
                }
                Action::Persist {
                    pod,
                    url,
                    why: PersistReason::Wal,
                } => {
                    // Persisting alone empties the buffer, but the open
                    // segment keeps its entries and the WAL stays as large:
                    // close it first, so the pod deletes it once the writes
                    // it holds are persisted.
                    let to = Target { pod, url, access };
                    match self.control.rotate_wal(&to).await {
                        Ok(()) => self.control.persist(&to).await,
                        Err(e) => Err(e),
                    }
                }
                Action::Persist { pod, url, .. } => {
                    self.control.persist(&Target { pod, url, access }).await
                }
            };
            match &r {
                Ok(()) => self
                    .metrics
                    .driver_actions
                    .with_label_values(&[action.kind()])
                    .inc(),
                Err(e) => {
                    tracing::warn!(ingester = %ing, action = action.kind(), error = %e, "driver action failed");
                    self.metrics
                        .driver_action_errors
                        .with_label_values(&[action.kind()])
                        .inc();
                }
            }
            results.push((action.clone(), r.map_err(|e| e.to_string())));
        }
        let reason = match &plan.progress {
            Progress::ScalingDown { .. } => "ScaleDown",
            Progress::RollingRestart { .. } => "RollingRestart",
            Progress::Deleting { .. } => "Delete",
            _ => "Other",
        };
        for (pod, d) in &plan.drains_finished {
            tracing::info!(ingester = %ing, pod, drain_seconds = d.as_secs_f64(), reason, "drain finished");
            self.metrics.observe_drain(reason, *d);
        }
        self.metrics
            .publish_pods(&ing.namespace, &ing.name, &plan.pods);
        Ok(StepOutcome { plan, results })
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::mock::{MockCluster, MockPods};
    use super::*;
    use crate::fixtures::validated;

    fn driver(
        replicas: i32,
        pods: usize,
    ) -> (Driver<Arc<MockCluster>, Arc<MockPods>>, ValidatedIngester) {
        let mut v = validated("cluster.yaml");
        v.replicas = replicas;
        let cluster = Arc::new(MockCluster::new(&v, pods));
        let control = Arc::new(MockPods::default());
        for i in 0..pods {
            control.set(&cluster.url(i), PodState::Ready);
        }
        let d = Driver::new(
            cluster,
            control,
            Duration::from_secs(5),
            Arc::new(Metrics::new()),
        );
        (d, v)
    }

    #[tokio::test]
    async fn scale_down_drains_then_scales_and_writes_status() {
        let (d, v) = driver(1, 3);
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (s1, o1) = d
            .tick(&v, &ControlAccess::plain(), None, t)
            .await
            .expect("tick");
        assert_eq!(o1.results.len(), 2, "{:?}", o1.results);
        assert!(o1.results.iter().all(|(_, r)| r.is_ok()));
        assert_eq!(s1.phase.as_deref(), Some("Draining"));
        assert_eq!(d.cluster().replicas(), 3, "not before the drain");
        assert_eq!(
            d.control.calls(),
            [
                "Status ingest-0",
                "Status ingest-1",
                "Status ingest-2",
                "PrepareShutdown ingest-1",
                "PrepareShutdown ingest-2"
            ]
        );
        // The mock pods finish draining.
        d.control.set(&d.cluster().url(1), PodState::Drained);
        d.control.set(&d.cluster().url(2), PodState::Drained);
        let (s2, o2) = d
            .tick(
                &v,
                &ControlAccess::plain(),
                Some(&s1),
                t + Duration::from_secs(7),
            )
            .await
            .expect("tick");
        assert_eq!(o2.plan.actions, [Action::Scale { from: 3, to: 1 }]);
        assert_eq!(d.cluster().replicas(), 1);
        assert_eq!(o2.plan.drains_finished.len(), 2);
        assert_eq!(o2.plan.drains_finished[0].1, Duration::from_secs(7));
        assert_eq!(d.cluster().statuses().len(), 2);
        assert_eq!(s2.pods.len(), 3);
        let text = d.metrics.render();
        assert!(
            text.contains("sluice_operator_driver_actions_total{action=\"Scale\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn failed_rpc_is_recorded_and_retried() {
        let (d, v) = driver(1, 2);
        d.control.fail_next("PrepareShutdown");
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (s1, o1) = d
            .tick(&v, &ControlAccess::plain(), None, t)
            .await
            .expect("tick");
        assert!(o1.results[0].1.is_err());
        let (_, o2) = d
            .tick(&v, &ControlAccess::plain(), Some(&s1), t)
            .await
            .expect("tick");
        assert!(matches!(o2.plan.actions[0], Action::PrepareShutdown { .. }));
        assert!(o2.results[0].1.is_ok());
    }

    #[tokio::test]
    async fn cluster_errors_end_the_step() {
        let (d, v) = driver(1, 2);
        d.control.set(&d.cluster().url(1), PodState::Drained);
        d.cluster().fail_scale();
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let err = d
            .tick(&v, &ControlAccess::plain(), None, t)
            .await
            .expect_err("scale fails");
        assert!(matches!(
            err,
            DriverError::Cluster(ClusterError::Scale { .. })
        ));
    }

    #[tokio::test]
    async fn rolling_restart_one_pod_at_a_time() {
        let (d, v) = driver(2, 2);
        d.cluster().set_update_revision("rev-2");
        let t = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (s, o) = d
            .tick(&v, &ControlAccess::plain(), None, t)
            .await
            .expect("tick");
        assert_eq!(o.plan.actions.len(), 1);
        assert!(
            matches!(&o.plan.actions[0], Action::PrepareShutdown { pod, .. } if pod == "ingest-1")
        );
        d.control.set(&d.cluster().url(1), PodState::Drained);
        let (s, o) = d
            .tick(&v, &ControlAccess::plain(), Some(&s), t)
            .await
            .expect("tick");
        assert_eq!(
            o.plan.actions,
            [Action::DeletePod {
                pod: "ingest-1".into()
            }]
        );
        // The mock recreates the pod on the new revision, ready.
        d.control.set(&d.cluster().url(1), PodState::Ready);
        let (_, o) = d
            .tick(&v, &ControlAccess::plain(), Some(&s), t)
            .await
            .expect("tick");
        assert!(
            matches!(&o.plan.actions[0], Action::PrepareShutdown { pod, .. } if pod == "ingest-0")
        );
        assert_eq!(d.cluster().deleted(), ["ingest-1"]);
    }
}
