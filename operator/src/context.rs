//! [`Context`]: what every reconcile shares. A plain struct, as in
//! `controller-rs`: the client, the Event recorder, metrics, the driver,
//! and the per-object failure counts behind the error backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};

use crate::crd::Ingester;
use crate::driver::kube_cluster::KubeCluster;
use crate::driver::{Driver, PodControl};
use crate::metrics::Metrics;
use crate::reconcile::build::MANAGER;
use crate::reconcile::validate::ValidateOptions;

/// First retry after a failure; doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub driver: Driver<KubeCluster, Arc<dyn PodControl>>,
    pub validate_options: ValidateOptions,
    /// Consecutive failures per `namespace/name`; bounded by the number of
    /// `Ingester`s (an entry is removed on the next success).
    failures: Mutex<HashMap<String, u32>>,
}

/// Settings of the operator process that reach the reconciler.
#[derive(Debug, Clone)]
pub struct ContextOptions {
    pub validate: ValidateOptions,
    pub poll_interval: Duration,
    /// Who publishes Events (the operator pod's name).
    pub instance: Option<String>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            validate: ValidateOptions::default(),
            poll_interval: Duration::from_secs(5),
            instance: None,
        }
    }
}

impl Context {
    pub fn new(
        client: Client,
        pods: Arc<dyn PodControl>,
        metrics: Arc<Metrics>,
        opts: ContextOptions,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: opts.instance,
            },
        );
        Self {
            driver: Driver::new(
                KubeCluster::new(client.clone()),
                pods,
                opts.poll_interval,
                metrics.clone(),
            ),
            client,
            recorder,
            metrics,
            validate_options: opts.validate,
            failures: Mutex::default(),
        }
    }

    pub(crate) fn key(&self, ing: &Ingester) -> String {
        format!("{}/{}", ing.namespace().unwrap_or_default(), ing.name_any())
    }

    /// Counts a failure of `key` and returns how long to wait.
    pub(crate) fn backoff(&self, key: &str) -> Duration {
        let mut f = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_for(*n)
    }

    pub(crate) fn reset_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Publishes an Event; a failure is logged, never fatal.
    pub(crate) async fn publish(
        &self,
        obj: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish_related(obj, None, type_, reason, action, note)
            .await;
    }

    /// Publishes an Event that also names a related object (a pod), so
    /// events about different pods are not folded into one series.
    pub(crate) async fn publish_related(
        &self,
        obj: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        tracing::info!(
            ingester = obj.name.as_deref().unwrap_or_default(),
            namespace = obj.namespace.as_deref().unwrap_or_default(),
            reason,
            action,
            %note,
            "event"
        );
        let mut ev = crate::reconcile::event(type_, reason, action, note);
        ev.secondary = related;
        if let Err(e) = self.recorder.publish(&ev, obj).await {
            tracing::warn!(error = %e, reason, "publishing an Event failed");
        }
    }
}

/// 2 s, 4 s, 8 s, … capped at 5 min.
pub fn backoff_for(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_for(1), Duration::from_secs(2));
        assert_eq!(backoff_for(2), Duration::from_secs(4));
        assert_eq!(backoff_for(5), Duration::from_secs(32));
        assert_eq!(backoff_for(9), BACKOFF_MAX);
        assert_eq!(backoff_for(u32::MAX), BACKOFF_MAX);
    }
}
