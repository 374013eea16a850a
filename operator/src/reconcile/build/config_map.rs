//! The ConfigMap of non-secret ingester settings, read by the container as
//! `SLUICE_*` environment variables (`envFrom`). Secrets never land here:
//! the catalog URL and S3 keys are `secretKeyRef` variables on the pod.

use k8s_openapi::api::core::v1::ConfigMap;

use super::{fnv1a, meta};
use crate::reconcile::validate::ValidatedIngester;

pub fn build(v: &ValidatedIngester) -> ConfigMap {
    ConfigMap {
        metadata: meta(v, v.config_map_name()),
        data: Some(v.settings.clone()),
        ..Default::default()
    }
}

/// Hex hash of the data, put on the pod template: a pod started with other
/// settings is out of date and gets rolled. `data` is a `BTreeMap`, so the
/// order is stable.
pub fn hash(cm: &ConfigMap) -> String {
    let data = cm.data.iter().flatten();
    let h = fnv1a(data.flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()]));
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::validated;

    #[test]
    fn settings_become_the_data() {
        let v = validated("cluster.yaml");
        let cm = build(&v);
        assert_eq!(cm.metadata.name.as_deref(), Some("ingest-config"));
        let data = cm.data.as_ref().expect("data");
        assert_eq!(data["SLUICE_PERSIST_WORKERS"], "4");
        assert_eq!(
            data["SLUICE_S3_ENDPOINT"],
            "https://s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(data["SLUICE_GRPC_BIND"], "0.0.0.0:8082");
        // Secrets stay out of the ConfigMap.
        assert!(!data.contains_key("SLUICE_CATALOG"));
        assert!(!data.contains_key("SLUICE_S3_SECRET_ACCESS_KEY"));
        assert!(data.keys().all(|k| k.starts_with("SLUICE_")));
    }

    #[test]
    fn hash_follows_the_data() {
        let mut v = validated("cluster.yaml");
        let before = hash(&build(&v));
        assert_eq!(before.len(), 16);
        assert_eq!(before, hash(&build(&v)));
        v.settings.insert("SLUICE_LOG".into(), "debug".into());
        assert_ne!(before, hash(&build(&v)));
    }
}
