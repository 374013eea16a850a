//! Recording mocks of [`Cluster`] and [`PodControl`] for the driver's unit
//! tests. The cluster mock behaves like a StatefulSet: scaling adds or
//! removes the highest ordinals, a deleted pod comes back on the update
//! revision.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::cluster::{Cluster, ClusterError, IngesterRef, PodInfo, PodSet, StatefulSetState};
use super::pod_control::{ControlError, PodControl, PodFigures, PodState, Target};
use crate::crd::IngesterStatus;
use crate::reconcile::validate::ValidatedIngester;

#[derive(Debug)]
struct ClusterState {
    name: String,
    replicas: i32,
    update_revision: String,
    pods: Vec<PodInfo>,
    statuses: Vec<IngesterStatus>,
    deleted: Vec<String>,
    fail_scale: bool,
}

#[derive(Debug)]
pub struct MockCluster(Mutex<ClusterState>);

fn pod(name: &str, ordinal: i32, revision: &str) -> PodInfo {
    let pod = format!("{name}-{ordinal}");
    PodInfo {
        control_url: Some(format!("http://{pod}:8082")),
        name: pod,
        ordinal,
        revision: Some(revision.into()),
        ready: true,
        terminating: false,
    }
}

impl MockCluster {
    pub fn new(v: &ValidatedIngester, pods: usize) -> Self {
        let n = i32::try_from(pods).expect("few pods");
        Self(Mutex::new(ClusterState {
            name: v.name.clone(),
            replicas: n,
            update_revision: "rev-1".into(),
            pods: (0..n).map(|i| pod(&v.name, i, "rev-1")).collect(),
            statuses: Vec::new(),
            deleted: Vec::new(),
            fail_scale: false,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.0.lock().expect("mock lock")
    }

    pub fn url(&self, ordinal: usize) -> String {
        format!("http://{}-{ordinal}:8082", self.lock().name)
    }

    pub fn replicas(&self) -> i32 {
        self.lock().replicas
    }

    pub fn statuses(&self) -> Vec<IngesterStatus> {
        self.lock().statuses.clone()
    }

    pub fn deleted(&self) -> Vec<String> {
        self.lock().deleted.clone()
    }

    pub fn set_update_revision(&self, rev: &str) {
        self.lock().update_revision = rev.into();
    }

    pub fn fail_scale(&self) {
        self.lock().fail_scale = true;
    }
}

#[async_trait]
impl Cluster for MockCluster {
    async fn read_pods(&self, _ing: &IngesterRef) -> Result<PodSet, ClusterError> {
        let s = self.lock();
        Ok(PodSet {
            statefulset: Some(StatefulSetState {
                replicas: s.replicas,
                update_revision: Some(s.update_revision.clone()),
            }),
            pods: s.pods.clone(),
        })
    }

    async fn scale(&self, ing: &IngesterRef, replicas: i32) -> Result<(), ClusterError> {
        let mut s = self.lock();
        if s.fail_scale {
            return Err(ClusterError::Scale {
                ingester: ing.to_string(),
                replicas,
                message: "injected".into(),
            });
        }
        s.replicas = replicas;
        s.pods.retain(|p| p.ordinal < replicas);
        let have = i32::try_from(s.pods.len()).expect("few pods");
        for i in have..replicas {
            let p = pod(&s.name, i, &s.update_revision);
            s.pods.push(p);
        }
        Ok(())
    }

    async fn delete_pod(&self, _ing: &IngesterRef, name: &str) -> Result<(), ClusterError> {
        let mut s = self.lock();
        s.deleted.push(name.into());
        let rev = s.update_revision.clone();
        if let Some(p) = s.pods.iter_mut().find(|p| p.name == name) {
            p.revision = Some(rev);
        }
        Ok(())
    }

    async fn write_status(
        &self,
        _ing: &IngesterRef,
        status: &IngesterStatus,
    ) -> Result<(), ClusterError> {
        self.lock().statuses.push(status.clone());
        Ok(())
    }
}

/// Pods answering from a table of states; records every call as
/// `"<Call> <pod>"`.
#[derive(Debug, Default)]
pub struct MockPods {
    states: Mutex<HashMap<String, PodState>>,
    calls: Mutex<Vec<String>>,
    fail: Mutex<Vec<String>>,
}

impl MockPods {
    pub fn set(&self, url: &str, state: PodState) {
        self.states
            .lock()
            .expect("mock lock")
            .insert(url.into(), state);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("mock lock").clone()
    }

    /// The next call named `call` fails.
    pub fn fail_next(&self, call: &str) {
        self.fail.lock().expect("mock lock").push(call.into());
    }

    fn record(&self, call: &'static str, url: &str) -> Result<PodState, ControlError> {
        let pod = url
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap_or(url);
        self.calls
            .lock()
            .expect("mock lock")
            .push(format!("{call} {pod}"));
        let mut fail = self.fail.lock().expect("mock lock");
        if let Some(i) = fail.iter().position(|c| c == call) {
            fail.remove(i);
            return Err(ControlError::Rpc {
                call,
                url: url.into(),
                code: "Unavailable".into(),
                message: "injected".into(),
            });
        }
        Ok(*self
            .states
            .lock()
            .expect("mock lock")
            .get(url)
            .unwrap_or(&PodState::Unknown))
    }
}

#[async_trait]
impl PodControl for MockPods {
    async fn status(&self, to: &Target<'_>) -> Result<PodFigures, ControlError> {
        let state = self.record("Status", to.url)?;
        let empty = state == PodState::Drained;
        Ok(PodFigures {
            state,
            buffered_rows: if empty { 0 } else { 100 },
            buffered_bytes: if empty { 0 } else { 10_000 },
            // A drained ingester keeps its empty open segment.
            wal_segments: 1,
            wal_bytes: if empty { 16 } else { 4096 },
            persist_queue_depth: 0,
            persist_active_jobs: 0,
            oldest_unpersisted_write_age: Duration::from_secs(if empty { 0 } else { 2 }),
            wal_empty: empty,
        })
    }

    async fn rotate_wal(&self, to: &Target<'_>) -> Result<(), ControlError> {
        self.record("RotateWal", to.url).map(|_| ())
    }

    async fn persist(&self, to: &Target<'_>) -> Result<(), ControlError> {
        self.record("Persist", to.url).map(|_| ())
    }

    async fn prepare_shutdown(&self, to: &Target<'_>) -> Result<PodState, ControlError> {
        self.record("PrepareShutdown", to.url)?;
        self.set(to.url, PodState::Draining);
        Ok(PodState::Draining)
    }

    async fn resume_ingest(&self, to: &Target<'_>) -> Result<PodState, ControlError> {
        self.record("ResumeIngest", to.url)?;
        self.set(to.url, PodState::Ready);
        Ok(PodState::Ready)
    }
}
