//! [`Cluster`] implemented with kube: what the driver does in production.
//!
//! - pods: listed by the `Ingester`'s selector labels, addressed by pod IP
//!   (the headless Service's DNS names need the cluster's resolver, the pod
//!   IP does not, and a draining pod keeps its IP);
//! - scale: a merge patch of the StatefulSet's `scale` subresource, which
//!   touches `spec.replicas` only (a server-side apply with the operator's
//!   field manager would drop every other field it owns);
//! - status: server-side apply of `status` alone, forced, one field
//!   manager.

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;

use super::cluster::{
    Cluster, ClusterError, IngesterRef, PodInfo, PodSet, StatefulSetState, ordinal_of,
};
use crate::crd::{Ingester, IngesterStatus};
use crate::reconcile::build::{APP_NAME, MANAGER};
use crate::reconcile::validate::GRPC_PORT;

#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
}

impl KubeCluster {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The pod's view for the driver; `None` if it is not one of the
/// StatefulSet's pods.
pub fn pod_info(sts: &str, pod: &Pod) -> Option<PodInfo> {
    let name = pod.metadata.name.clone()?;
    let ordinal = ordinal_of(sts, &name)?;
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let control_url = status.and_then(|s| s.pod_ip.as_deref()).map(|ip| {
        if ip.contains(':') {
            format!("http://[{ip}]:{GRPC_PORT}")
        } else {
            format!("http://{ip}:{GRPC_PORT}")
        }
    });
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    Some(PodInfo {
        revision: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("controller-revision-hash").cloned()),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        control_url: if running { control_url } else { None },
        name,
        ordinal,
    })
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn read_pods(&self, ing: &IngesterRef) -> Result<PodSet, ClusterError> {
        let err = |e: kube::Error| ClusterError::Read {
            ingester: ing.to_string(),
            message: e.to_string(),
        };
        let sts_api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &ing.namespace);
        let statefulset =
            sts_api
                .get_opt(&ing.name)
                .await
                .map_err(err)?
                .map(|s| StatefulSetState {
                    replicas: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    update_revision: s.status.and_then(|s| s.update_revision),
                });
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), &ing.namespace);
        let selector = format!(
            "app.kubernetes.io/name={APP_NAME},app.kubernetes.io/instance={}",
            ing.name
        );
        let list = pod_api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(err)?;
        let mut pods: Vec<PodInfo> = list
            .items
            .iter()
            .filter_map(|p| pod_info(&ing.name, p))
            .collect();
        pods.sort_by_key(|p| p.ordinal);
        Ok(PodSet { statefulset, pods })
    }

    async fn scale(&self, ing: &IngesterRef, replicas: i32) -> Result<(), ClusterError> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &ing.namespace);
        api.patch_scale(
            &ing.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await
        .map(|_| ())
        .map_err(|e| ClusterError::Scale {
            ingester: ing.to_string(),
            replicas,
            message: e.to_string(),
        })
    }

    async fn delete_pod(&self, ing: &IngesterRef, pod: &str) -> Result<(), ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ing.namespace);
        match api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            // Already gone: what we wanted.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(ClusterError::DeletePod {
                pod: format!("{}/{pod}", ing.namespace),
                message: e.to_string(),
            }),
        }
    }

    async fn write_status(
        &self,
        ing: &IngesterRef,
        status: &IngesterStatus,
    ) -> Result<(), ClusterError> {
        let api: Api<Ingester> = Api::namespaced(self.client.clone(), &ing.namespace);
        let patch = json!({
            "apiVersion": Ingester::api_version(&()),
            "kind": Ingester::kind(&()),
            "status": status,
        });
        api.patch_status(
            &ing.name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| ClusterError::WriteStatus {
            ingester: ing.to_string(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_info_reads_readiness_revision_and_address() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "ingest-2",
                "labels": {"controller-revision-hash": "ingest-5d8f"}
            },
            "status": {
                "phase": "Running",
                "podIP": "10.1.2.3",
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .expect("pod");
        let p = pod_info("ingest", &pod).expect("one of ours");
        assert_eq!(p.ordinal, 2);
        assert!(p.ready);
        assert!(!p.terminating);
        assert_eq!(p.revision.as_deref(), Some("ingest-5d8f"));
        assert_eq!(p.control_url.as_deref(), Some("http://10.1.2.3:8082"));

        let pending: Pod = serde_json::from_value(json!({
            "metadata": {"name": "ingest-0", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Pending", "podIP": "fd00::1"}
        }))
        .expect("pod");
        let p = pod_info("ingest", &pending).expect("one of ours");
        assert!(!p.ready);
        assert!(p.terminating);
        assert_eq!(p.control_url, None, "not running: no control RPC");
        assert!(pod_info("other", &pending).is_none());
    }
}
