//! The one narrow door through which the driver changes the cluster.
//!
//! Four effects and nothing else: read the pods (and the StatefulSet's
//! replica count and current template revision), scale the StatefulSet,
//! delete a pod, write the status. Production implements it with kube
//! ([`super::kube_cluster::KubeCluster`]); the e2e harness implements it by
//! starting and stopping real `sluice-ingester` processes; unit tests use a
//! recording mock. Keeping it this small is what makes the driver testable
//! against real pods without an API server.

use async_trait::async_trait;

use crate::crd::IngesterStatus;

/// Which `Ingester` an operation is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IngesterRef {
    pub namespace: String,
    pub name: String,
}

/// What the cluster holds for one `Ingester` right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSet {
    /// `None` until the StatefulSet exists.
    pub statefulset: Option<StatefulSetState>,
    /// In ordinal order.
    pub pods: Vec<PodInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatefulSetState {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.updateRevision`: pods whose revision differs run an old
    /// template and are due for a rolling restart.
    pub update_revision: Option<String>,
}

/// One pod as the cluster reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub name: String,
    pub ordinal: i32,
    /// The `controller-revision-hash` label.
    pub revision: Option<String>,
    /// The `Ready` condition (the ingester's `/ready`).
    pub ready: bool,
    /// Being deleted: ignored by the driver.
    pub terminating: bool,
    /// `http://<pod ip>:8082`, once the pod has an address.
    pub control_url: Option<String>,
}

/// A failure of the cluster behind the trait.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("reading the pods of {ingester}: {message}")]
    Read { ingester: String, message: String },
    #[error("scaling StatefulSet {ingester} to {replicas}: {message}")]
    Scale {
        ingester: String,
        replicas: i32,
        message: String,
    },
    #[error("deleting pod {pod}: {message}")]
    DeletePod { pod: String, message: String },
    #[error("writing the status of {ingester}: {message}")]
    WriteStatus { ingester: String, message: String },
}

impl ClusterError {
    /// For metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            ClusterError::Read { .. } => "read_pods",
            ClusterError::Scale { .. } => "scale",
            ClusterError::DeletePod { .. } => "delete_pod",
            ClusterError::WriteStatus { .. } => "write_status",
        }
    }
}

#[async_trait]
pub trait Cluster: Send + Sync {
    async fn read_pods(&self, ing: &IngesterRef) -> Result<PodSet, ClusterError>;
    async fn scale(&self, ing: &IngesterRef, replicas: i32) -> Result<(), ClusterError>;
    async fn delete_pod(&self, ing: &IngesterRef, pod: &str) -> Result<(), ClusterError>;
    async fn write_status(
        &self,
        ing: &IngesterRef,
        status: &IngesterStatus,
    ) -> Result<(), ClusterError>;
}

#[async_trait]
impl<T: Cluster + ?Sized> Cluster for std::sync::Arc<T> {
    async fn read_pods(&self, ing: &IngesterRef) -> Result<PodSet, ClusterError> {
        (**self).read_pods(ing).await
    }
    async fn scale(&self, ing: &IngesterRef, replicas: i32) -> Result<(), ClusterError> {
        (**self).scale(ing, replicas).await
    }
    async fn delete_pod(&self, ing: &IngesterRef, pod: &str) -> Result<(), ClusterError> {
        (**self).delete_pod(ing, pod).await
    }
    async fn write_status(
        &self,
        ing: &IngesterRef,
        status: &IngesterStatus,
    ) -> Result<(), ClusterError> {
        (**self).write_status(ing, status).await
    }
}

impl std::fmt::Display for IngesterRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The ordinal of a StatefulSet pod named `<sts>-<ordinal>`.
pub fn ordinal_of(sts: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(sts)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("ingest", "ingest-0"), Some(0));
        assert_eq!(ordinal_of("ingest", "ingest-12"), Some(12));
        assert_eq!(ordinal_of("ingest", "ingest-x"), None);
        assert_eq!(ordinal_of("ingest", "ingest2-1"), None);
        assert_eq!(ordinal_of("ingest", "other-1"), None);
    }
}
