//! Prometheus metrics of the operator, served on `/metrics`.
//!
//! Per-pod gauges carry `namespace`, `ingester` and `pod` labels; a pod's
//! series are removed when it is gone, so the number of series is bounded
//! by the pods that exist.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::crd::PodStatus;

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub driver_actions: IntCounterVec,
    pub driver_action_errors: IntCounterVec,
    pub drain_duration: HistogramVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    pod_gauges: Vec<(&'static str, IntGaugeVec)>,
    published: Mutex<HashMap<(String, String), BTreeSet<String>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const POD_GAUGES: [(&str, &str); 6] = [
    ("wal_segments", "WAL segments of the pod"),
    ("wal_bytes", "WAL bytes of the pod"),
    ("buffered_bytes", "bytes buffered in memory by the pod"),
    ("buffered_rows", "rows buffered in memory by the pod"),
    ("persist_queue", "persist jobs queued or running in the pod"),
    (
        "oldest_unpersisted_write_age_seconds",
        "age of the pod's oldest unpersisted write",
    ),
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("sluice_operator".into()), None)
            .expect("a valid metric prefix");
        let reconciles =
            IntCounter::new("reconciles_total", "reconciles started").expect("valid metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "reconciles that failed, by error"),
            &["error"],
        )
        .expect("valid metric");
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new("reconcile_duration_seconds", "time of one reconcile")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        let driver_actions = IntCounterVec::new(
            Opts::new("driver_actions_total", "actions the driver took, by kind"),
            &["action"],
        )
        .expect("valid metric");
        let driver_action_errors = IntCounterVec::new(
            Opts::new(
                "driver_action_errors_total",
                "driver actions that failed, by kind",
            ),
            &["action"],
        )
        .expect("valid metric");
        let drain_duration = HistogramVec::new(
            HistogramOpts::new(
                "drain_duration_seconds",
                "from PrepareShutdown until the pod reported drained",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
            &["reason"],
        )
        .expect("valid metric");
        let leader = IntGauge::new("leader", "1 while this replica holds the leader Lease")
            .expect("valid metric");
        let pod_gauges: Vec<_> = POD_GAUGES
            .iter()
            .map(|(name, help)| {
                let g = IntGaugeVec::new(
                    Opts::new(format!("pod_{name}"), *help),
                    &["namespace", "ingester", "pod"],
                )
                .expect("valid metric");
                (*name, g)
            })
            .collect();
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(driver_actions.clone()),
            Box::new(driver_action_errors.clone()),
            Box::new(drain_duration.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        for (_, g) in &pod_gauges {
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            driver_actions,
            driver_action_errors,
            drain_duration,
            leader,
            pod_gauges,
            published: Mutex::default(),
        }
    }

    pub fn observe_drain(&self, reason: &str, d: Duration) {
        self.drain_duration
            .with_label_values(&[reason])
            .observe(d.as_secs_f64());
    }

    /// Publishes the figures of an `Ingester`'s pods and removes the series
    /// of pods no longer listed.
    pub fn publish_pods(&self, namespace: &str, ingester: &str, pods: &[PodStatus]) {
        let key = (namespace.to_string(), ingester.to_string());
        let now: BTreeSet<String> = pods.iter().map(|p| p.name.clone()).collect();
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = published.remove(&key).unwrap_or_default();
        for gone in before.difference(&now) {
            for (_, g) in &self.pod_gauges {
                let _ = g.remove_label_values(&[namespace, ingester, gone]);
            }
        }
        for p in pods {
            let labels = [namespace, ingester, p.name.as_str()];
            for (name, g) in &self.pod_gauges {
                let v = match *name {
                    "wal_segments" => p.wal_segments,
                    "wal_bytes" => p.wal_bytes,
                    "buffered_bytes" => p.buffered_bytes,
                    "buffered_rows" => p.buffered_rows,
                    "persist_queue" => p.persist_queue,
                    _ => p.oldest_unpersisted_write_age_seconds,
                };
                g.with_label_values(&labels).set(v);
            }
        }
        if !now.is_empty() {
            published.insert(key, now);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_series_follow_the_pods() {
        let m = Metrics::new();
        let pod = |n: &str, wal: i64| PodStatus {
            name: n.into(),
            wal_bytes: wal,
            ..Default::default()
        };
        m.publish_pods("ns", "ing", &[pod("ing-0", 10), pod("ing-1", 20)]);
        let text = m.render();
        assert!(
            text.contains(
                r#"sluice_operator_pod_wal_bytes{ingester="ing",namespace="ns",pod="ing-1"} 20"#
            ),
            "{text}"
        );
        m.publish_pods("ns", "ing", &[pod("ing-0", 11)]);
        let text = m.render();
        assert!(!text.contains(r#"pod="ing-1""#), "{text}");
        assert!(text.contains(r#"pod="ing-0"} 11"#));
        m.reconciles.inc();
        m.observe_drain("ScaleDown", Duration::from_secs(3));
        let text = m.render();
        assert!(text.contains("sluice_operator_reconciles_total 1"));
        assert!(
            text.contains("sluice_operator_drain_duration_seconds_count{reason=\"ScaleDown\"} 1")
        );
    }
}
