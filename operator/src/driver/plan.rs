//! The driver's decisions, as a pure function of what it observed.
//!
//! [`plan`] takes the pods, their control-RPC figures, the previous status
//! and the clock, and returns the actions to take plus the per-pod status.
//! It never deletes a pod or shrinks the StatefulSet unless the pods
//! concerned reported `Drained` with an empty WAL and buffer in this very
//! observation. Every rule is one branch here, tested without any I/O.
//!
//! Rules, in order of precedence:
//! 1. **Scale-down** (`spec.replicas` < StatefulSet replicas): every leaving
//!    pod (ordinal ≥ `spec.replicas`) gets `PrepareShutdown`; the
//!    StatefulSet shrinks once all of them are drained. No rolling restart
//!    meanwhile.
//! 2. **Scale-up**: the StatefulSet grows at once.
//! 3. **Resume**: a pod that stays (ordinal < `spec.replicas`) but is
//!    draining, and is not the rolling-restart target, gets `ResumeIngest`
//!    (replicas rose again mid-drain, or an interrupted restart is void).
//! 4. **Rolling restart** (not while scaling): the highest-ordinal pod on an
//!    old template is drained, then deleted; the next one starts only once
//!    every pod is back and ready.
//! 5. **Duties** of ready pods: staggered rotation and persist triggers.
//!
//! A drain that outlives `drainTimeout` sets `Degraded` and halts: the pod
//! is kept (draining, not deleted) until it finishes.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::access::ControlAccess;
use super::cluster::{PodInfo, PodSet};
use super::pod_control::{ControlError, PodFigures, PodState, Refusal};
use super::rotation::{RotationMemory, slot};
use crate::crd::PodStatus;
use crate::reconcile::validate::ValidatedIngester;

/// One thing the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Scale {
        from: i32,
        to: i32,
    },
    PrepareShutdown {
        pod: String,
        url: String,
        why: DrainReason,
    },
    ResumeIngest {
        pod: String,
        url: String,
    },
    DeletePod {
        pod: String,
    },
    RotateWal {
        pod: String,
        url: String,
    },
    Persist {
        pod: String,
        url: String,
        why: PersistReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    ScaleDown,
    RollingRestart,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistReason {
    Buffer,
    Wal,
}

impl Action {
    /// Metric label and Event action.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Scale { .. } => "Scale",
            Action::PrepareShutdown { .. } => "PrepareShutdown",
            Action::ResumeIngest { .. } => "ResumeIngest",
            Action::DeletePod { .. } => "DeletePod",
            Action::RotateWal { .. } => "RotateWal",
            Action::Persist { .. } => "Persist",
        }
    }

    /// The pod the action is about.
    pub fn pod(&self) -> Option<&str> {
        match self {
            Action::Scale { .. } => None,
            Action::PrepareShutdown { pod, .. }
            | Action::ResumeIngest { pod, .. }
            | Action::DeletePod { pod }
            | Action::RotateWal { pod, .. }
            | Action::Persist { pod, .. } => Some(pod),
        }
    }

    /// Event reason and a sentence for humans.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Action::Scale { from, to } if to < from => (
                "ScaledDown",
                format!("leaving pods drained; StatefulSet scaled {from} → {to}"),
            ),
            Action::Scale { from, to } => ("ScaledUp", format!("StatefulSet scaled {from} → {to}")),
            Action::PrepareShutdown { pod, why, .. } => (
                "DrainStarted",
                format!(
                    "asked {pod} to drain ({})",
                    match why {
                        DrainReason::ScaleDown => "scale-down",
                        DrainReason::RollingRestart => "rolling restart",
                        DrainReason::Delete => "Ingester deleted",
                    }
                ),
            ),
            Action::ResumeIngest { pod, .. } => (
                "DrainCancelled",
                format!("{pod} stays: asked it to accept writes again"),
            ),
            Action::DeletePod { pod } => (
                "PodRestarted",
                format!("{pod} drained; deleted it so it restarts on the new template"),
            ),
            Action::RotateWal { pod, .. } => (
                "WalRotated",
                format!("rotated the WAL of {pod} in its slot"),
            ),
            Action::Persist { pod, why, .. } => (
                "PersistTriggered",
                format!(
                    "asked {pod} to persist: its {} passed the threshold",
                    match why {
                        PersistReason::Buffer => "buffer",
                        PersistReason::Wal => "WAL",
                    }
                ),
            ),
        }
    }
}

/// What the driver saw: the pods and each one's `Status` answer (`None`:
/// not asked, e.g. no address yet or terminating).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub set: PodSet,
    pub figures: Vec<Option<Result<PodFigures, ControlError>>>,
    /// How the pods were (and the step's actions will be) called; `None`:
    /// the credentials are missing and no pod was called.
    pub access: Option<ControlAccess>,
}

impl Observation {
    fn figures_of(&self, i: usize) -> Option<&Result<PodFigures, ControlError>> {
        self.figures.get(i).and_then(Option::as_ref)
    }
}

/// What the driver is in the middle of, for the `Progressing` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// No StatefulSet yet.
    Creating,
    Stable,
    ScalingUp {
        from: i32,
        to: i32,
    },
    ScalingDown {
        from: i32,
        to: i32,
        waiting: Vec<String>,
    },
    RollingRestart {
        pod: String,
        remaining: usize,
    },
    /// The `Ingester` is being deleted.
    Deleting {
        waiting: Vec<String>,
    },
}

/// Why the `Ingester` is `Degraded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degradation {
    pub reason: &'static str,
    pub message: String,
}

/// The decisions of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub pods: Vec<PodStatus>,
    pub progress: Progress,
    pub degraded: Option<Degradation>,
    /// Pods asked to drain and not gone yet.
    pub draining: Vec<String>,
    /// Drains that finished in this step (pod, duration), for metrics.
    pub drains_finished: Vec<(String, Duration)>,
    /// When the next step is due.
    pub next_step: Duration,
    /// Pods of the StatefulSet that are ready.
    pub ready_replicas: i32,
    /// `spec.replicas` of the StatefulSet (0 before it exists).
    pub sts_replicas: i32,
}

/// Inputs besides the observation.
pub struct PlanInput<'a> {
    pub v: &'a ValidatedIngester,
    pub obs: &'a Observation,
    /// `status.pods` of the previous step (drain start times).
    pub prev_pods: &'a [PodStatus],
    pub now: SystemTime,
    /// Upper bound of `next_step`.
    pub poll_interval: Duration,
}

/// Decides one step of the driver for a live `Ingester`.
pub fn plan(input: &PlanInput<'_>, rotation: &mut RotationMemory) -> Plan {
    let PlanInput {
        v,
        obs,
        prev_pods,
        now,
        poll_interval,
    } = *input;
    let desired = v.replicas;
    let mut st = State::new(obs, prev_pods, now, v.drain_timeout);
    let Some(sts) = &obs.set.statefulset else {
        return st.finish(Progress::Creating, poll_interval, 0);
    };
    let current = sts.replicas;
    let update_revision = sts.update_revision.clone();
    let outdated = |p: &PodInfo| match (&update_revision, &p.revision) {
        (Some(want), Some(have)) => want != have,
        _ => false,
    };
    // The highest-ordinal staying pod on an old template.
    let roll_target = obs
        .set
        .pods
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.terminating && p.ordinal < desired && outdated(p))
        .max_by_key(|(_, p)| p.ordinal)
        .map(|(i, _)| i);
    for (i, p) in obs.set.pods.iter().enumerate() {
        st.pods[i].up_to_date = !outdated(p);
    }

    let progress = if desired < current {
        // 1. Scale-down.
        let mut waiting = Vec::new();
        for (i, p) in obs.set.pods.iter().enumerate() {
            if p.terminating || p.ordinal < desired {
                continue;
            }
            if !st.drain(i, DrainReason::ScaleDown) {
                waiting.push(p.name.clone());
            }
        }
        if waiting.is_empty() {
            st.actions.push(Action::Scale {
                from: current,
                to: desired,
            });
            st.finish_drains(|p| p.ordinal >= desired);
        }
        Progress::ScalingDown {
            from: current,
            to: desired,
            waiting,
        }
    } else if desired > current {
        // 2. Scale-up.
        st.actions.push(Action::Scale {
            from: current,
            to: desired,
        });
        Progress::ScalingUp {
            from: current,
            to: desired,
        }
    } else if let Some(t) = roll_target {
        // 4. Rolling restart, one pod at a time.
        let target = &obs.set.pods[t];
        let remaining = obs
            .set
            .pods
            .iter()
            .filter(|p| !p.terminating && p.ordinal < desired && outdated(p))
            .count();
        let live = obs.set.pods.iter().filter(|p| !p.terminating).count();
        let others_ready = obs
            .set
            .pods
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != t && !p.terminating && p.ordinal < desired)
            .all(|(_, p)| p.ready);
        let all_present = live >= usize::try_from(desired).unwrap_or(0);
        let already_draining = st.is_draining(t);
        if (already_draining || (others_ready && all_present))
            && st.drain(t, DrainReason::RollingRestart)
        {
            st.actions.push(Action::DeletePod {
                pod: target.name.clone(),
            });
            st.finish_drains(|p| p.name == target.name);
        }
        Progress::RollingRestart {
            pod: target.name.clone(),
            remaining,
        }
    } else {
        Progress::Stable
    };

    // 3. Resume staying pods that drain for no reason.
    for (i, p) in obs.set.pods.iter().enumerate() {
        if p.terminating || p.ordinal >= desired || Some(i) == roll_target {
            continue;
        }
        if st.is_draining(i)
            && let Some(url) = &p.control_url
        {
            st.actions.push(Action::ResumeIngest {
                pod: p.name.clone(),
                url: url.clone(),
            });
            st.pods[i].drain_started_at = None;
        }
    }

    // 5. Duties of ready, staying pods.
    let mut next_step = poll_interval;
    let n = u32::try_from(desired.max(1)).unwrap_or(1);
    let mut seen = Vec::new();
    for (i, p) in obs.set.pods.iter().enumerate() {
        let Some(Ok(f)) = obs.figures_of(i) else {
            continue;
        };
        let Some(url) = &p.control_url else { continue };
        if p.terminating || p.ordinal >= desired || f.state != PodState::Ready {
            continue;
        }
        let key = format!("{}/{}/{}", v.namespace, v.name, p.name);
        let ordinal = u32::try_from(p.ordinal).unwrap_or(0);
        let (s, next) = slot(now, v.rotation_interval, ordinal, n);
        if rotation.due(&key, s) {
            st.actions.push(Action::RotateWal {
                pod: p.name.clone(),
                url: url.clone(),
            });
        }
        seen.push(key);
        if let Ok(wait) = next.duration_since(now) {
            next_step = next_step.min(wait.max(Duration::from_millis(10)));
        }
        let idle = f.persist_queue_depth + f.persist_active_jobs == 0;
        let why = if v
            .triggers
            .buffer_bytes
            .is_some_and(|t| f.buffered_bytes > t)
        {
            Some(PersistReason::Buffer)
        } else if v.triggers.wal_bytes.is_some_and(|t| f.wal_bytes > t) {
            Some(PersistReason::Wal)
        } else {
            None
        };
        if let (Some(why), true) = (why, idle) {
            st.actions.push(Action::Persist {
                pod: p.name.clone(),
                url: url.clone(),
                why,
            });
        }
    }
    let prefix = format!("{}/{}/", v.namespace, v.name);
    rotation.retain(|k| !k.starts_with(&prefix) || seen.iter().any(|s| s == k));

    st.finish(progress, next_step, current)
}

/// Decides one step while the `Ingester` is being deleted: drain every
/// pod. `done` once all pods are drained (or none are left).
pub fn plan_cleanup(
    obs: &Observation,
    prev_pods: &[PodStatus],
    now: SystemTime,
    drain_timeout: Duration,
    poll_interval: Duration,
) -> (Plan, bool) {
    let mut st = State::new(obs, prev_pods, now, drain_timeout);
    let mut waiting = Vec::new();
    for (i, p) in obs.set.pods.iter().enumerate() {
        if p.terminating {
            continue;
        }
        if !st.drain(i, DrainReason::Delete) {
            waiting.push(p.name.clone());
        }
    }
    let done = waiting.is_empty();
    if done {
        st.finish_drains(|_| true);
    }
    let current = obs.set.statefulset.as_ref().map_or(0, |s| s.replicas);
    (
        st.finish(Progress::Deleting { waiting }, poll_interval, current),
        done,
    )
}

/// Working state of one plan.
struct State<'a> {
    obs: &'a Observation,
    now: SystemTime,
    drain_timeout: Duration,
    actions: Vec<Action>,
    pods: Vec<PodStatus>,
    degraded: Option<Degradation>,
    drains_finished: Vec<(String, Duration)>,
}

impl<'a> State<'a> {
    fn new(
        obs: &'a Observation,
        prev_pods: &[PodStatus],
        now: SystemTime,
        drain_timeout: Duration,
    ) -> Self {
        let prev: HashMap<&str, &PodStatus> =
            prev_pods.iter().map(|p| (p.name.as_str(), p)).collect();
        let pods = obs
            .set
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut s = PodStatus {
                    name: p.name.clone(),
                    ordinal: p.ordinal,
                    state: PodState::Unknown.as_str().into(),
                    up_to_date: true,
                    ..Default::default()
                };
                match obs.figures_of(i) {
                    Some(Ok(f)) => {
                        s.state = f.state.as_str().into();
                        s.wal_segments = clamp(f.wal_segments);
                        s.wal_bytes = clamp(f.wal_bytes);
                        s.buffered_bytes = clamp(f.buffered_bytes);
                        s.buffered_rows = clamp(f.buffered_rows);
                        s.persist_queue = clamp(f.persist_queue_depth + f.persist_active_jobs);
                        s.oldest_unpersisted_write_age_seconds =
                            clamp(f.oldest_unpersisted_write_age.as_secs());
                        if f.state.is_draining() {
                            // Keep the first start time we know of.
                            s.drain_started_at = prev
                                .get(p.name.as_str())
                                .and_then(|p| p.drain_started_at.clone())
                                .or_else(|| Some(time(now)));
                        }
                    }
                    Some(Err(e)) => {
                        s.error = Some(e.to_string());
                        s.drain_started_at = prev
                            .get(p.name.as_str())
                            .and_then(|p| p.drain_started_at.clone());
                    }
                    None => {
                        s.drain_started_at = prev
                            .get(p.name.as_str())
                            .and_then(|p| p.drain_started_at.clone());
                    }
                }
                s
            })
            .collect();
        Self {
            obs,
            now,
            drain_timeout,
            actions: Vec::new(),
            pods,
            degraded: None,
            drains_finished: Vec::new(),
        }
    }

    fn is_draining(&self, i: usize) -> bool {
        matches!(self.obs.figures_of(i), Some(Ok(f)) if f.state.is_draining())
    }

    /// Moves pod `i` towards drained; true once it is drained with nothing
    /// left. Starts the drain if needed, and reports a drain that is late.
    fn drain(&mut self, i: usize, why: DrainReason) -> bool {
        let p = &self.obs.set.pods[i];
        match self.obs.figures_of(i) {
            Some(Ok(f)) if f.is_drained() => return true,
            Some(Ok(f)) if f.state.is_draining() => {}
            Some(Ok(_)) => {
                if let Some(url) = &p.control_url {
                    self.actions.push(Action::PrepareShutdown {
                        pod: p.name.clone(),
                        url: url.clone(),
                        why,
                    });
                    self.pods[i].drain_started_at = Some(time(self.now));
                }
                return false;
            }
            // Unreachable or no address: cannot be confirmed drained.
            Some(Err(_)) | None => {}
        }
        if self.pods[i].drain_started_at.is_none() {
            self.pods[i].drain_started_at = Some(time(self.now));
        }
        let started = self.pods[i]
            .drain_started_at
            .as_ref()
            .map_or(self.now, |t| system_time(&t.0));
        let elapsed = self.now.duration_since(started).unwrap_or_default();
        if elapsed > self.drain_timeout && self.degraded.is_none() {
            let s = &self.pods[i];
            let detail = match &s.error {
                Some(e) => format!("control RPC failing: {e}"),
                None => format!(
                    "state {}, {} WAL segments, {} bytes buffered, {} persist jobs",
                    s.state, s.wal_segments, s.buffered_bytes, s.persist_queue
                ),
            };
            self.degraded = Some(Degradation {
                reason: "DrainTimeout",
                message: format!(
                    "{} has not drained within {} ({detail}); it is kept, not deleted, \
                     until it drains",
                    p.name,
                    humantime::format_duration(self.drain_timeout)
                ),
            });
        }
        false
    }

    /// The first pod that refused the operator's credentials: nothing the
    /// driver does can work until a Secret or the spec is fixed.
    fn refused(&self) -> Option<Degradation> {
        self.obs
            .set
            .pods
            .iter()
            .zip(&self.obs.figures)
            .find_map(|(p, f)| {
                let Some(Err(e)) = f else { return None };
                let (reason, hint) = match e.refusal()? {
                    Refusal::Unauthenticated => (
                        "ControlUnauthenticated",
                        "the operator's control token (spec.auth.controlTokenSecretName) \
                         is missing from the pods' tokens file, or spec.auth is not set",
                    ),
                    Refusal::PermissionDenied => (
                        "ControlPermissionDenied",
                        "the operator's control token lacks the `control` scope in the \
                         pods' tokens file",
                    ),
                    Refusal::Tls => (
                        "ControlTlsFailed",
                        "the pod's certificate is not signed by the CA of spec.tls, does \
                         not name the pod's DNS name (or spec.tls.serverName), has \
                         expired, or the pod does not serve TLS",
                    ),
                    Refusal::ClientCertificate => (
                        "ControlClientCertRefused",
                        "the pod requires a client certificate signed by the CA of \
                         spec.tls.clientAuth: the operator's certificate \
                         (spec.tls.clientAuth.operatorCertSecretName) is missing, signed \
                         by another CA, or has expired",
                    ),
                };
                Some(Degradation {
                    reason,
                    message: format!("{} refused the operator ({hint}): {e}", p.name),
                })
            })
    }

    /// Records drain durations of the pods `which` selects that are drained.
    fn finish_drains(&mut self, which: impl Fn(&PodInfo) -> bool) {
        for (i, p) in self.obs.set.pods.iter().enumerate() {
            if !which(p) {
                continue;
            }
            if let Some(t) = &self.pods[i].drain_started_at {
                let d = self
                    .now
                    .duration_since(system_time(&t.0))
                    .unwrap_or_default();
                self.drains_finished.push((p.name.clone(), d));
            }
        }
    }

    fn finish(mut self, progress: Progress, next_step: Duration, sts_replicas: i32) -> Plan {
        if self.degraded.is_none() {
            self.degraded = self.refused();
        }
        // A drain that finished in this step (the pod is scaled away or
        // deleted by this very plan) no longer counts: the status describes
        // the state after the step.
        let draining = self
            .pods
            .iter()
            .filter(|p| p.drain_started_at.is_some())
            .filter(|p| !self.drains_finished.iter().any(|(n, _)| *n == p.name))
            .map(|p| p.name.clone())
            .collect();
        let ready_replicas = self
            .obs
            .set
            .pods
            .iter()
            .filter(|p| p.ready && !p.terminating)
            .count();
        Plan {
            actions: self.actions,
            pods: self.pods,
            progress,
            degraded: self.degraded,
            draining,
            drains_finished: self.drains_finished,
            next_step,
            ready_replicas: i32::try_from(ready_replicas).unwrap_or(i32::MAX),
            sts_replicas,
        }
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A Kubernetes `Time` (second precision on the wire, so truncate).
pub fn time(t: SystemTime) -> Time {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}

pub fn system_time(t: &Timestamp) -> SystemTime {
    SystemTime::from(*t)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
