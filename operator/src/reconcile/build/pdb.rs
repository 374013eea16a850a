//! The PodDisruptionBudget: voluntary evictions (node drains) take at most
//! `maxUnavailable` pods at once. Each evicted pod still drains itself on
//! SIGTERM (`SLUICE_PERSIST_ON_SHUTDOWN`) within its grace period.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{meta, selector_labels};
use crate::reconcile::validate::ValidatedIngester;

pub fn build(v: &ValidatedIngester) -> Option<PodDisruptionBudget> {
    let max_unavailable = v.pdb_max_unavailable?;
    Some(PodDisruptionBudget {
        metadata: meta(v, v.statefulset_name()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(v)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::validated;

    #[test]
    fn budget_from_spec() {
        let v = validated("cluster.yaml");
        let p = build(&v).expect("enabled");
        let spec = p.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.selector.and_then(|s| s.match_labels),
            Some(selector_labels(&v))
        );
    }

    #[test]
    fn disabled_budget_is_not_built() {
        let mut v = validated("cluster.yaml");
        v.pdb_max_unavailable = None;
        assert_eq!(build(&v), None);
    }
}
