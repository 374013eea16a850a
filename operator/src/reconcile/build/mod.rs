//! Pure builders: [`ValidatedIngester`] → the Kubernetes objects of one
//! `Ingester`.
//!
//! No client, no clock, no randomness: the same input always yields the
//! same objects, so server-side apply is a no-op when nothing changed and
//! each builder is tested on its own from sample specs. Every object carries
//! the [`labels`] that [`super::apply`] uses to find orphans and a
//! controller owner reference, so the garbage collector removes it with
//! the `Ingester`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::validate::ValidatedIngester;

pub mod config_map;
pub mod pdb;
pub mod service;
pub mod statefulset;

/// `app.kubernetes.io/name` of everything the operator makes.
pub const APP_NAME: &str = "sluice-ingester";
/// `app.kubernetes.io/managed-by`, and the server-side apply field manager.
pub const MANAGER: &str = "sluice-operator";
/// Pod template annotation: hash of the ConfigMap data, so a settings
/// change is a template change and rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "sluice.dev/config-hash";
/// Name of the container and of the volume claim template.
pub const CONTAINER: &str = "ingester";
pub const DATA_VOLUME: &str = "data";

/// Every object the operator wants for one `Ingester`, in apply order:
/// configuration first (pods read it at start), Services before the
/// StatefulSet (its `serviceName` must exist for pod DNS), the
/// StatefulSet, then the budget that guards its pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub client_service: Service,
    pub statefulset: StatefulSet,
    /// `None` when the spec disables the budget; an existing one is then an
    /// orphan and deleted.
    pub pdb: Option<PodDisruptionBudget>,
}

/// Builds all objects. `sts_replicas` is what the StatefulSet should have
/// now, which is not always `spec.replicas`: during a scale-down it stays
/// at the old count until the leaving pods have drained.
pub fn build(v: &ValidatedIngester, sts_replicas: i32) -> Resources {
    let config_map = config_map::build(v);
    let config_hash = config_map::hash(&config_map);
    Resources {
        headless_service: service::build_headless(v),
        client_service: service::build_client(v),
        statefulset: statefulset::build(v, sts_replicas, &config_hash),
        pdb: pdb::build(v),
        config_map,
    }
}

impl Resources {
    /// All objects as one multi-document YAML stream (for tests and
    /// `kubectl`-style inspection).
    pub fn to_yaml(&self) -> Result<String, yaml_serde::Error> {
        let Resources {
            config_map,
            headless_service,
            client_service,
            statefulset,
            pdb,
        } = self;
        let mut docs = vec![
            yaml_serde::to_string(&with_type(config_map))?,
            yaml_serde::to_string(&with_type(headless_service))?,
            yaml_serde::to_string(&with_type(client_service))?,
            yaml_serde::to_string(&with_type(statefulset))?,
        ];
        if let Some(p) = pdb {
            docs.push(yaml_serde::to_string(&with_type(p))?);
        }
        Ok(docs
            .into_iter()
            .map(|d| format!("---\n{d}"))
            .collect::<String>())
    }
}

/// `apiVersion` and `kind` of a typed object, which k8s-openapi does not
/// serialise by itself.
pub fn with_type<K>(obj: &K) -> serde_json::Value
where
    K: k8s_openapi::Resource + serde::Serialize,
{
    let mut v = serde_json::to_value(obj).expect("k8s-openapi objects serialise");
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), K::API_VERSION.into());
        m.insert("kind".into(), K::KIND.into());
    }
    v
}

/// The labels that select the pods: stable for the life of the
/// StatefulSet (its selector is immutable).
pub fn selector_labels(v: &ValidatedIngester) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), APP_NAME.into()),
        ("app.kubernetes.io/instance".into(), v.name.clone()),
    ])
}

/// Selector labels plus the ones that mark objects as the operator's; the
/// orphan sweep lists by these.
pub fn labels(v: &ValidatedIngester) -> BTreeMap<String, String> {
    let mut l = selector_labels(v);
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l.insert("app.kubernetes.io/component".into(), "ingester".into());
    l.insert("app.kubernetes.io/part-of".into(), "sluice".into());
    l
}

/// The label selector (as a string) of everything one `Ingester` owns.
pub fn owned_selector(name: &str) -> String {
    format!(
        "app.kubernetes.io/name={APP_NAME},app.kubernetes.io/instance={name},\
         app.kubernetes.io/managed-by={MANAGER}"
    )
}

/// Metadata of an owned object.
pub fn meta(v: &ValidatedIngester, name: impl Into<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels(v)),
        owner_references: Some(vec![v.owner.clone()]),
        ..Default::default()
    }
}

/// 64-bit FNV-1a: stable across builds and platforms (unlike std's
/// `DefaultHasher`), which a hash stored in the cluster must be.
pub(crate) fn fnv1a(parts: impl IntoIterator<Item = impl AsRef<[u8]>>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.as_ref() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::validated;

    #[test]
    fn every_object_is_labelled_and_owned() {
        let v = validated("cluster.yaml");
        let r = build(&v, 3);
        let metas = [
            &r.config_map.metadata,
            &r.headless_service.metadata,
            &r.client_service.metadata,
            &r.statefulset.metadata,
            &r.pdb.as_ref().expect("pdb").metadata,
        ];
        for m in metas {
            let labels = m.labels.as_ref().expect("labels");
            assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGER);
            assert_eq!(labels["app.kubernetes.io/instance"], "ingest");
            let owners = m.owner_references.as_ref().expect("owner");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "Ingester");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(m.namespace.as_deref(), Some("sluice"));
        }
    }

    #[test]
    fn build_is_deterministic() {
        let v = validated("cluster.yaml");
        assert_eq!(build(&v, 3), build(&v, 3));
        assert_eq!(
            build(&v, 3).to_yaml().expect("yaml"),
            build(&v, 3).to_yaml().expect("yaml")
        );
    }

    #[test]
    fn fnv_is_the_reference_function() {
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c; then the separator.
        let mut h: u64 = 0xaf63_dc4c_8601_ec8c;
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
        assert_eq!(fnv1a(["a"]), h);
        assert_ne!(fnv1a(["ab", "c"]), fnv1a(["a", "bc"]));
    }

    #[test]
    fn yaml_has_types() {
        let v = validated("single-node.yaml");
        let y = build(&v, 1).to_yaml().expect("yaml");
        assert!(y.contains("kind: StatefulSet"));
        assert!(y.contains("apiVersion: apps/v1"));
        assert!(y.contains("apiVersion: policy/v1"));
        assert_eq!(y.matches("---\n").count(), 5);
    }
}
