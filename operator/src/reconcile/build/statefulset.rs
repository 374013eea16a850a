//! The StatefulSet: one pod per ingester, each with its own WAL volume.
//!
//! Choices that the driver relies on:
//! - `updateStrategy: OnDelete`: Kubernetes never restarts a pod for a
//!   template change; the driver drains a pod, deletes it, and the
//!   StatefulSet recreates it from the new template (a rolling restart that
//!   never kills a pod holding unpersisted data).
//! - `podManagementPolicy: Parallel`: pods start and stop without waiting
//!   for their neighbours; ordering is the driver's job.
//! - `replicas` comes from the caller, not the spec: a scale-down keeps the
//!   old count until the leaving pods have drained.
//! - The termination grace period is the drain timeout plus a margin, so a
//!   pod that Kubernetes stops on its own can still drain on SIGTERM.
//!
//! - With `spec.tls` / `spec.auth`, the TLS and tokens Secrets are mounted
//!   read-only, each whole as a directory (never `subPath`, whose files
//!   kubelet does not update), so a rotated certificate or token reaches
//!   the running pod and the ingester reloads it. Their names are part of
//!   the template: pointing at another Secret rolls the pods. The
//!   operator's control token is never mounted.
//!
//! The pod meets the "restricted" Pod Security Standard: non-root, read-only
//! root filesystem (`/tmp` is an `emptyDir`), no privilege escalation, all
//! capabilities dropped, `RuntimeDefault` seccomp.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, HTTPGetAction, LocalObjectReference, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{CONFIG_HASH_ANNOTATION, CONTAINER, DATA_VOLUME, labels, meta, selector_labels};
use crate::reconcile::validate::{
    CLIENT_CA_DIR, DATA_DIR, GRPC_PORT, HTTP_PORT, TLS_DIR, TOKENS_DIR, ValidatedIngester,
};

/// UID and GID the ingester runs as (the distroless `nonroot` user).
pub const RUN_AS: i64 = 65532;
/// Names of the Secret volumes.
pub const TLS_VOLUME: &str = "tls";
/// The volume of the client CA Secret (`spec.tls.clientAuth`).
pub const CLIENT_CA_VOLUME: &str = "client-ca";
pub const TOKENS_VOLUME: &str = "tokens";
/// Secret files: readable by the owner (root) and the pod's `fsGroup`
/// only.
const SECRET_MODE: i32 = 0o440;
/// Time beyond the drain timeout that a stopping pod gets.
const GRACE_MARGIN_SECS: i64 = 30;

pub fn build(v: &ValidatedIngester, replicas: i32, config_hash: &str) -> StatefulSet {
    StatefulSet {
        metadata: meta(v, v.statefulset_name()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(v.headless_service_name()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(v)),
                ..Default::default()
            },
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..Default::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(v.volume.on_delete.as_str().into()),
                    when_scaled: Some(v.volume.on_scale_down.as_str().into()),
                },
            ),
            template: pod_template(v, config_hash),
            volume_claim_templates: Some(vec![volume_claim(v)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volume_claim(v: &ValidatedIngester) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(selector_labels(v)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: v.volume.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(v.volume.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_template(v: &ValidatedIngester, config_hash: &str) -> PodTemplateSpec {
    let s = &v.scheduling;
    let grace = i64::try_from(v.drain_timeout.as_secs())
        .unwrap_or(i64::MAX / 2)
        .saturating_add(GRACE_MARGIN_SECS);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(v)),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_string(),
                config_hash.to_string(),
            )])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(v)],
            termination_grace_period_seconds: Some(grace),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // The ingester needs no API access.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            volumes: Some(volumes(v)),
            image_pull_secrets: (!v.image_pull_secrets.is_empty()).then(|| {
                v.image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect()
            }),
            node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
            affinity: s.affinity.clone(),
            tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
            topology_spread_constraints: (!s.topology_spread_constraints.is_empty())
                .then(|| s.topology_spread_constraints.clone()),
            priority_class_name: s.priority_class_name.clone(),
            ..Default::default()
        }),
    }
}

/// `/tmp`, and the Secrets of `spec.tls` and `spec.auth`.
fn volumes(v: &ValidatedIngester) -> Vec<Volume> {
    let secret = |volume: &str, secret: &str| Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(SECRET_MODE),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut out = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    if let Some(t) = &v.security.tls {
        out.push(secret(TLS_VOLUME, &t.secret_name));
        // The client CA; in the TLS Secret it is already mounted. The
        // operator's client certificate Secret never is.
        if let Some(c) = t.client_auth.as_ref().filter(|c| c.ca_in_own_secret(t)) {
            out.push(secret(CLIENT_CA_VOLUME, &c.ca.name));
        }
    }
    if let Some(a) = &v.security.auth {
        out.push(secret(TOKENS_VOLUME, &a.tokens.name));
    }
    out
}

fn volume_mounts(v: &ValidatedIngester) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    let mut out = vec![
        mount(DATA_VOLUME, DATA_DIR, false),
        mount("tmp", "/tmp", false),
    ];
    if let Some(t) = &v.security.tls {
        out.push(mount(TLS_VOLUME, TLS_DIR, true));
        if t.client_auth
            .as_ref()
            .is_some_and(|c| c.ca_in_own_secret(t))
        {
            out.push(mount(CLIENT_CA_VOLUME, CLIENT_CA_DIR, true));
        }
    }
    if v.security.auth.is_some() {
        out.push(mount(TOKENS_VOLUME, TOKENS_DIR, true));
    }
    out
}

fn container(v: &ValidatedIngester) -> Container {
    // Health and readiness never need a token; with TLS, kubelet speaks
    // HTTPS (it does not verify the certificate).
    let scheme = v.security.tls.as_ref().map(|_| "HTTPS".to_string());
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: scheme.clone(),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let mut env = v.secret_env.clone();
    env.extend(v.extra_env.iter().cloned());
    Container {
        name: CONTAINER.into(),
        image: Some(v.image.clone()),
        image_pull_policy: v.image_pull_policy.map(|p| p.as_str().into()),
        args: Some(vec!["serve".into()]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: v.config_map_name(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        env: Some(env),
        resources: v.scheduling.resources.clone(),
        // WAL replay can take a while after a crash: the startup probe holds
        // off liveness for up to 10 minutes.
        startup_probe: Some(probe("/health", 5, 120)),
        liveness_probe: Some(probe("/health", 10, 6)),
        // 503 while replaying or draining: the client Service stops
        // sending writes to a pod that refuses them.
        readiness_probe: Some(probe("/ready", 5, 2)),
        volume_mounts: Some(volume_mounts(v)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::validated;

    fn pod(sts: &StatefulSet) -> &PodSpec {
        sts.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn replicas_come_from_the_caller() {
        let v = validated("cluster.yaml");
        let sts = build(&v, 5, "h");
        assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(5));
    }

    #[test]
    fn the_operator_decides_restarts() {
        let v = validated("cluster.yaml");
        let spec = build(&v, 3, "h").spec.expect("spec");
        assert_eq!(
            spec.update_strategy.and_then(|u| u.type_).as_deref(),
            Some("OnDelete")
        );
        assert_eq!(spec.service_name.as_deref(), Some("ingest-pods"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    }

    #[test]
    fn wal_volume_and_retention() {
        let v = validated("cluster.yaml");
        let spec = build(&v, 3, "h").spec.expect("spec");
        let policy = spec
            .persistent_volume_claim_retention_policy
            .expect("policy");
        assert_eq!(policy.when_scaled.as_deref(), Some("Delete"));
        assert_eq!(policy.when_deleted.as_deref(), Some("Retain"));
        let vct = &spec.volume_claim_templates.expect("vct")[0];
        let pvc = vct.spec.as_ref().expect("pvc spec");
        assert_eq!(pvc.storage_class_name.as_deref(), Some("fast-ssd"));
        assert_eq!(
            pvc.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .map(|r| &r["storage"]),
            Some(&Quantity("50Gi".into()))
        );
        let mounts = spec.template.spec.as_ref().expect("pod").containers[0]
            .volume_mounts
            .clone()
            .expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.name == DATA_VOLUME && m.mount_path == DATA_DIR)
        );
    }

    #[test]
    fn pod_meets_the_restricted_standard() {
        let v = validated("cluster.yaml");
        let sts = build(&v, 3, "h");
        let p = pod(&sts);
        let psc = p.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        for c in &p.containers {
            let sc = c
                .security_context
                .as_ref()
                .expect("container security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(
                sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_string()])
            );
            assert!(
                c.security_context
                    .as_ref()
                    .and_then(|s| s.capabilities.as_ref())
                    .and_then(|c| c.add.as_ref())
                    .is_none()
            );
        }
    }

    #[test]
    fn probes_and_grace_period() {
        let v = validated("cluster.yaml");
        let sts = build(&v, 3, "h");
        let p = pod(&sts);
        // drainTimeout 15m + 30 s margin.
        assert_eq!(p.termination_grace_period_seconds, Some(930));
        let c = &p.containers[0];
        let path = |pr: &Option<Probe>| {
            pr.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/ready"));
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/health"));
        assert_eq!(path(&c.startup_probe).as_deref(), Some("/health"));
    }

    #[test]
    fn env_settings_and_config_hash() {
        let v = validated("cluster.yaml");
        let sts = build(&v, 3, "abc123");
        let spec = sts.spec.as_ref().expect("spec");
        let ann = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .expect("annotations");
        assert_eq!(ann[CONFIG_HASH_ANNOTATION], "abc123");
        let c = &pod(&sts).containers[0];
        assert_eq!(
            c.env_from.as_ref().expect("envFrom")[0]
                .config_map_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            Some("ingest-config")
        );
        let env: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert!(env.contains(&"SLUICE_CATALOG"));
        assert!(env.contains(&"SLUICE_INGESTER_ID"));
        assert!(
            env.contains(&"RUST_BACKTRACE"),
            "user env is passed through"
        );
    }

    #[test]
    fn scheduling_is_passed_through() {
        let v = validated("cluster.yaml");
        let sts = build(&v, 3, "h");
        let p = pod(&sts);
        assert_eq!(p.priority_class_name.as_deref(), Some("sluice-critical"));
        assert_eq!(p.tolerations.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            p.topology_spread_constraints.as_ref().map(Vec::len),
            Some(1)
        );
        assert!(p.affinity.is_some());
        assert_eq!(
            p.node_selector
                .as_ref()
                .map(|n| n["node.kubernetes.io/pool"].as_str()),
            Some("ingest")
        );
        let single = validated("single-node.yaml");
        let sts = build(&single, 1, "h");
        let p = pod(&sts);
        assert_eq!(p.tolerations, None);
        assert_eq!(p.node_selector, None);
    }

    fn secured() -> ValidatedIngester {
        let mut ing = crate::fixtures::sample("single-node.yaml");
        ing.spec.tls =
            Some(serde_json::from_value(serde_json::json!({"secretName": "n-tls"})).expect("tls"));
        ing.spec.auth = Some(
            serde_json::from_value(serde_json::json!({
                "tokensSecretName": "n-tokens",
                "tokensKey": "tokens.txt",
                "controlTokenSecretName": "n-control",
            }))
            .expect("auth"),
        );
        crate::reconcile::validate(&ing, &Default::default()).expect("valid")
    }

    #[test]
    fn plain_by_default() {
        let v = validated("single-node.yaml");
        let sts = build(&v, 1, "h");
        let p = pod(&sts);
        let c = &p.containers[0];
        assert!(
            p.volumes.iter().flatten().all(|v| v.secret.is_none()),
            "no Secret volume without spec.tls/auth"
        );
        let scheme = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.scheme.clone());
        assert_eq!(scheme, None, "HTTP");
        assert!(!v.settings.contains_key("SLUICE_TLS_CERT"));
        assert!(!v.settings.contains_key("SLUICE_TOKENS_FILE"));
    }

    #[test]
    fn tls_and_tokens_secrets_are_mounted_whole_and_read_only() {
        let v = secured();
        let sts = build(&v, 1, "h");
        let p = pod(&sts);
        let c = &p.containers[0];
        let secret_volumes: Vec<_> = p
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref().map(|s| (v.name.as_str(), s)))
            .collect();
        assert_eq!(secret_volumes.len(), 2);
        for (name, s) in &secret_volumes {
            let want = match *name {
                TLS_VOLUME => "n-tls",
                TOKENS_VOLUME => "n-tokens",
                other => panic!("unexpected volume {other}"),
            };
            assert_eq!(s.secret_name.as_deref(), Some(want));
            assert_eq!(s.items, None, "the whole Secret");
            assert_eq!(s.default_mode, Some(0o440));
        }
        let mounts = c.volume_mounts.as_ref().expect("mounts");
        for (vol, path) in [(TLS_VOLUME, TLS_DIR), (TOKENS_VOLUME, TOKENS_DIR)] {
            let m = mounts.iter().find(|m| m.name == vol).expect("mounted");
            assert_eq!(m.mount_path, path);
            assert_eq!(m.read_only, Some(true));
            assert_eq!(m.sub_path, None, "subPath files never update");
        }
        // The ingester finds the files through its settings (the ConfigMap).
        assert_eq!(v.settings["SLUICE_TLS_CERT"], "/etc/sluice/tls/tls.crt");
        assert_eq!(v.settings["SLUICE_TLS_KEY"], "/etc/sluice/tls/tls.key");
        assert_eq!(
            v.settings["SLUICE_TOKENS_FILE"],
            "/etc/sluice/tokens/tokens.txt"
        );
        assert!(!v.settings.contains_key("SLUICE_TLS_CLIENT_CA"));
        for probe in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe] {
            let h = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("http probe");
            assert_eq!(h.scheme.as_deref(), Some("HTTPS"));
        }
        // The control token is the operator's: nowhere in the pod.
        let yaml = yaml_serde::to_string(&sts).expect("yaml");
        assert!(!yaml.contains("n-control"), "{yaml}");
    }

    #[test]
    fn client_ca_is_mounted_and_the_operator_certificate_is_not() {
        let mut ing = crate::fixtures::sample("single-node.yaml");
        ing.spec.tls = Some(
            serde_json::from_value(serde_json::json!({
                "secretName": "n-tls",
                "clientAuth": {"caSecretName": "n-clients", "operatorCertSecretName": "n-op-cert"},
            }))
            .expect("tls"),
        );
        let v = crate::reconcile::validate(&ing, &Default::default()).expect("valid");
        let sts = build(&v, 1, "h");
        let p = pod(&sts);
        let vol = p
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == CLIENT_CA_VOLUME)
            .expect("client CA volume");
        let s = vol.secret.as_ref().expect("secret");
        assert_eq!(s.secret_name.as_deref(), Some("n-clients"));
        assert_eq!(s.items, None, "the whole Secret");
        let m = p.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == CLIENT_CA_VOLUME)
            .expect("mounted");
        assert_eq!(m.mount_path, CLIENT_CA_DIR);
        assert_eq!(m.read_only, Some(true));
        assert_eq!(m.sub_path, None);
        assert_eq!(
            v.settings["SLUICE_TLS_CLIENT_CA"],
            "/etc/sluice/client-ca/ca.crt"
        );
        // Probes stay HTTPS without a client certificate: the ingester
        // leaves /health and /ready open.
        let h = p.containers[0]
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("probe");
        assert_eq!(h.scheme.as_deref(), Some("HTTPS"));
        let yaml = yaml_serde::to_string(&sts).expect("yaml");
        assert!(
            !yaml.contains("n-op-cert"),
            "the operator's key stays out: {yaml}"
        );

        // One CA Secret for pods and clients: no second volume.
        ing.spec.tls = Some(
            serde_json::from_value(serde_json::json!({
                "secretName": "n-tls",
                "clientAuth": {"caSecretName": "n-tls", "operatorCertSecretName": "n-op-cert"},
            }))
            .expect("tls"),
        );
        let v = crate::reconcile::validate(&ing, &Default::default()).expect("valid");
        let sts = build(&v, 1, "h");
        let p = pod(&sts);
        assert!(
            p.volumes
                .iter()
                .flatten()
                .all(|v| v.name != CLIENT_CA_VOLUME)
        );
        assert_eq!(v.settings["SLUICE_TLS_CLIENT_CA"], "/etc/sluice/tls/ca.crt");
    }

    #[test]
    fn another_secret_name_changes_the_template() {
        let a = secured();
        let mut b = a.clone();
        b.security.tls.as_mut().expect("tls").secret_name = "n-tls-2".into();
        let ta = build(&a, 1, "h").spec.expect("spec").template;
        let tb = build(&b, 1, "h").spec.expect("spec").template;
        assert_ne!(ta, tb, "the StatefulSet gets a new revision: pods roll");
    }
}
