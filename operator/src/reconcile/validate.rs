//! Spec → [`ValidatedIngester`]: the one place that checks an `Ingester`.
//!
//! Everything after this step (the builders, apply, the driver) takes a
//! `ValidatedIngester` and so cannot see an unchecked spec. The checks
//! repeat the CRD's CEL rules on purpose: the operator may watch objects
//! written before a rule existed, or a cluster whose CRD is older than the
//! operator. Synchronous and pure: no client, no clock.
//!
//! An invalid spec is not retried on a timer (it cannot fix itself): the
//! reconciler reports it in the status and waits for the next change.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, EnvVarSource, ObjectFieldSelector, ResourceRequirements, SecretKeySelector,
    Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::crd::{CatalogSpec, Ingester, ObjectStoreSpec, PullPolicy, VolumeRetention};

/// Where the pod's volume is mounted; holds the WAL and, for one replica,
/// the local object store and the SQLite catalog.
pub const DATA_DIR: &str = "/var/lib/sluice";
/// Where the TLS Secret is mounted (a directory: Secret updates reach it).
pub const TLS_DIR: &str = "/etc/sluice/tls";
/// Where the client CA Secret of `spec.tls.clientAuth` is mounted, when it
/// is not the TLS Secret itself.
pub const CLIENT_CA_DIR: &str = "/etc/sluice/client-ca";
/// Where the tokens Secret is mounted.
pub const TOKENS_DIR: &str = "/etc/sluice/tokens";
/// gRPC port: Write, Flight, Catalog, Control.
pub const GRPC_PORT: i32 = 8082;
/// HTTP port: `/health`, `/ready`, `/metrics`, `/api/v2/write`.
pub const HTTP_PORT: i32 = 8080;
/// Longest Ingester name. A StatefulSet's pods carry the label
/// `controller-revision-hash: <name>-<10 chars>`, which must fit in 63.
pub const MAX_NAME_LEN: usize = 52;
/// The ingester's default buffer limit (`--buffer-limit-bytes`).
const DEFAULT_BUFFER_LIMIT: u64 = 2 << 30;

mod security;

pub use security::{AuthSettings, ClientAuthSettings, SecretKeyRef, Security, TlsSettings};

/// What is wrong with an `Ingester`. Each variant names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("metadata.{0} is missing")]
    MissingMetadata(&'static str),
    #[error(
        "metadata.name {name:?} must be a DNS-1035 label of at most {MAX_NAME_LEN} characters \
         (lower-case letters, digits, '-', starting with a letter)"
    )]
    BadName { name: String },
    #[error("spec.replicas is {0}; it must be between 0 and 128")]
    Replicas(i32),
    #[error("spec.replicas is {0}: more than one replica needs a PostgreSQL catalog")]
    ReplicasNeedPostgres(i32),
    #[error("spec.replicas is {0}: more than one replica needs an S3 object store")]
    ReplicasNeedS3(i32),
    #[error("spec.image is empty")]
    EmptyImage,
    #[error("spec.{field} {value:?} is not a duration like `10m` or `30s`: {reason}")]
    Duration {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("spec.{field} must be positive, not {value}")]
    NotPositive { field: &'static str, value: i64 },
    #[error(
        "spec.persist.triggerBufferBytes ({trigger}) must be below the buffer limit ({limit}), \
         or writes are refused before the operator asks for a persist"
    )]
    TriggerAboveBufferLimit { trigger: u64, limit: u64 },
    #[error("spec.objectStore.s3: accessKeyId and secretAccessKey must be given together")]
    S3CredentialsPair,
    #[error("spec.{field}: secret reference needs a name and a key")]
    SecretRef { field: &'static str },
    #[error("spec.env[{index}].name {name:?}: SLUICE_* variables are set by the operator")]
    ReservedEnv { index: usize, name: String },
    #[error(
        "spec.{field} {value:?} is not a Secret name (a DNS subdomain: lower-case letters, \
         digits, '-' and '.', at most 253 characters)"
    )]
    SecretName { field: &'static str, value: String },
    #[error(
        "spec.{field} {value:?} is not a Secret key (letters, digits, '-', '_' and '.', \
         at most 253 characters)"
    )]
    SecretKey { field: &'static str, value: String },
    #[error(
        "spec.auth.controlTokenSecretName {name:?} is also {other}: the operator's plain \
         control token would be mounted into every pod; keep it in a Secret of its own"
    )]
    ControlTokenMounted { name: String, other: &'static str },
    #[error(
        "spec.tls.clientAuth.operatorCertSecretName {name:?} is also {other}: the operator's \
         client key would be mounted into every pod; keep it in a Secret of its own"
    )]
    OperatorCertMounted { name: String, other: &'static str },
    #[error("spec.wal.maxVolumePercent is {0}; it must be between 0 (off) and 100")]
    VolumePercent(i32),
    #[error("spec.tls.serverName {0:?} is not a DNS name")]
    ServerName(String),
    #[error("spec.walVolume.size is empty")]
    EmptyVolumeSize,
    #[error("spec.logLevel is empty")]
    EmptyLogLevel,
}

/// A checked `Ingester`: the only input of the builders and the driver.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedIngester {
    pub name: String,
    pub namespace: String,
    pub generation: Option<i64>,
    /// Controller owner reference to the `Ingester`, put on every object.
    pub owner: OwnerReference,
    pub replicas: i32,
    pub image: String,
    pub image_pull_policy: Option<PullPolicy>,
    pub image_pull_secrets: Vec<String>,
    pub volume: VolumeSettings,
    /// The operator's staggered rotation period.
    pub rotation_interval: Duration,
    /// How long a drain may take before the pod is reported `Degraded`.
    pub drain_timeout: Duration,
    /// Non-secret ingester settings, `SLUICE_*` → value (the ConfigMap).
    pub settings: BTreeMap<String, String>,
    /// Secret-backed settings (`valueFrom.secretKeyRef`), put on the container.
    pub secret_env: Vec<EnvVar>,
    pub triggers: PersistTriggers,
    pub scheduling: Scheduling,
    /// `maxUnavailable` of the PodDisruptionBudget; `None`: no PDB.
    pub pdb_max_unavailable: Option<i32>,
    /// User env, after the reserved names were rejected.
    pub extra_env: Vec<EnvVar>,
    /// For pod DNS names in the status.
    pub cluster_domain: String,
    /// TLS and tokens; both `None`: plain text, every request allowed.
    pub security: Security,
}

/// The WAL volume claim template.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeSettings {
    pub size: String,
    pub storage_class_name: Option<String>,
    pub on_scale_down: VolumeRetention,
    pub on_delete: VolumeRetention,
}

/// When the driver asks a pod to persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PersistTriggers {
    pub buffer_bytes: Option<u64>,
    pub wal_bytes: Option<u64>,
}

/// Pod placement, passed through unchanged.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scheduling {
    pub resources: Option<ResourceRequirements>,
    pub node_selector: BTreeMap<String, String>,
    pub affinity: Option<Affinity>,
    pub tolerations: Vec<Toleration>,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    pub priority_class_name: Option<String>,
}

/// Settings of the operator that shape what it builds.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub cluster_domain: String,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
        }
    }
}

impl ValidatedIngester {
    /// The StatefulSet, the client Service and the PodDisruptionBudget.
    pub fn statefulset_name(&self) -> &str {
        &self.name
    }
    /// The headless Service behind the pods' stable DNS names.
    pub fn headless_service_name(&self) -> String {
        format!("{}-pods", self.name)
    }
    pub fn client_service_name(&self) -> &str {
        &self.name
    }
    pub fn config_map_name(&self) -> String {
        format!("{}-config", self.name)
    }
    pub fn pod_name(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.name)
    }
    /// `<pod>.<headless>.<ns>.svc.<domain>`.
    pub fn pod_dns(&self, ordinal: i32) -> String {
        format!(
            "{}.{}.{}.svc.{}",
            self.pod_name(ordinal),
            self.headless_service_name(),
            self.namespace,
            self.cluster_domain
        )
    }
    pub fn client_service_dns(&self) -> String {
        format!(
            "{}.{}.svc.{}",
            self.client_service_name(),
            self.namespace,
            self.cluster_domain
        )
    }
}

/// Checks `ing` and derives everything the builders need.
pub fn validate(
    ing: &Ingester,
    opts: &ValidateOptions,
) -> Result<ValidatedIngester, ValidationError> {
    let name = ing
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::MissingMetadata("name"))?;
    let namespace = ing
        .metadata
        .namespace
        .clone()
        .ok_or(ValidationError::MissingMetadata("namespace"))?;
    if !is_dns1035_label(&name) || name.len() > MAX_NAME_LEN {
        return Err(ValidationError::BadName { name });
    }
    let owner = ing
        .controller_owner_ref(&())
        .filter(|o| !o.uid.is_empty())
        .ok_or(ValidationError::MissingMetadata("uid"))?;
    let spec = &ing.spec;

    if !(0..=128).contains(&spec.replicas) {
        return Err(ValidationError::Replicas(spec.replicas));
    }
    if spec.replicas > 1 && !matches!(spec.catalog, CatalogSpec::Postgres(_)) {
        return Err(ValidationError::ReplicasNeedPostgres(spec.replicas));
    }
    if spec.replicas > 1 && !matches!(spec.object_store, ObjectStoreSpec::S3(_)) {
        return Err(ValidationError::ReplicasNeedS3(spec.replicas));
    }
    if spec.image.trim().is_empty() {
        return Err(ValidationError::EmptyImage);
    }
    if spec.wal_volume.size.0.trim().is_empty() {
        return Err(ValidationError::EmptyVolumeSize);
    }
    if spec.log_level.trim().is_empty() {
        return Err(ValidationError::EmptyLogLevel);
    }
    let rotation_interval = duration("wal.rotationInterval", &spec.wal.rotation_interval)?;
    let drain_timeout = duration("drainTimeout", &spec.drain_timeout)?;

    let mut settings = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        settings.insert(k.to_string(), v);
    };
    set("SLUICE_DATA_DIR", DATA_DIR.into());
    set("SLUICE_WAL_DIR", format!("{DATA_DIR}/wal"));
    set("SLUICE_GRPC_BIND", format!("0.0.0.0:{GRPC_PORT}"));
    set("SLUICE_HTTP_BIND", format!("0.0.0.0:{HTTP_PORT}"));
    set("SLUICE_LOG", spec.log_level.clone());
    set("SLUICE_LOG_FORMAT", "json".into());
    // A pod that Kubernetes stops on its own (node drain, eviction) still
    // drains within its grace period.
    set("SLUICE_PERSIST_ON_SHUTDOWN", "true".into());
    // The operator rotates on the staggered schedule; the pod's own timer is
    // a backstop for when the operator is away.
    set(
        "SLUICE_WAL_ROTATION_INTERVAL",
        humantime::format_duration(rotation_interval * 2).to_string(),
    );

    let mut put_positive = |field: &'static str, key: &str, v: Option<i64>| match v {
        None => Ok(()),
        Some(v) if v > 0 => {
            settings.insert(key.to_string(), v.to_string());
            Ok(())
        }
        Some(value) => Err(ValidationError::NotPositive { field, value }),
    };
    put_positive(
        "wal.segmentBytes",
        "SLUICE_WAL_SEGMENT_BYTES",
        spec.wal.segment_bytes,
    )?;
    put_positive("wal.maxBytes", "SLUICE_WAL_MAX_BYTES", spec.wal.max_bytes)?;
    let p = &spec.persist;
    put_positive(
        "persist.workers",
        "SLUICE_PERSIST_WORKERS",
        p.workers.map(i64::from),
    )?;
    put_positive(
        "persist.queueDepth",
        "SLUICE_PERSIST_QUEUE_DEPTH",
        p.queue_depth.map(i64::from),
    )?;
    put_positive(
        "persist.memoryLimitBytes",
        "SLUICE_PERSIST_MEMORY_LIMIT",
        p.memory_limit_bytes,
    )?;
    put_positive(
        "persist.hotPartitionBytes",
        "SLUICE_HOT_PARTITION_BYTES",
        p.hot_partition_bytes,
    )?;
    put_positive(
        "persist.hotPartitionRows",
        "SLUICE_HOT_PARTITION_ROWS",
        p.hot_partition_rows,
    )?;
    put_positive(
        "ingest.bufferLimitBytes",
        "SLUICE_BUFFER_LIMIT_BYTES",
        spec.ingest.buffer_limit_bytes,
    )?;
    put_positive(
        "ingest.maxRequestBytes",
        "SLUICE_MAX_REQUEST_BYTES",
        spec.ingest.max_request_bytes,
    )?;

    let triggers = PersistTriggers {
        buffer_bytes: positive("persist.triggerBufferBytes", p.trigger_buffer_bytes)?,
        wal_bytes: positive("persist.triggerWalBytes", p.trigger_wal_bytes)?,
    };
    let limit = spec
        .ingest
        .buffer_limit_bytes
        .map_or(DEFAULT_BUFFER_LIMIT, |l| l.unsigned_abs());
    if let Some(trigger) = triggers.buffer_bytes
        && trigger >= limit
    {
        return Err(ValidationError::TriggerAboveBufferLimit { trigger, limit });
    }

    match spec.wal.max_volume_percent {
        0 => {}
        p @ 1..=100 => {
            settings.insert(
                "SLUICE_WAL_MAX_FRACTION".into(),
                format!("{}", f64::from(p) / 100.0),
            );
        }
        p => return Err(ValidationError::VolumePercent(p)),
    }
    let security = security::security(spec)?;
    if security.tls.is_some() {
        // A `kubernetes.io/tls` Secret's keys, mounted as a directory.
        settings.insert("SLUICE_TLS_CERT".into(), format!("{TLS_DIR}/tls.crt"));
        settings.insert("SLUICE_TLS_KEY".into(), format!("{TLS_DIR}/tls.key"));
    }
    if let Some(t) = &security.tls
        && let Some(c) = &t.client_auth
    {
        let dir = if c.ca_in_own_secret(t) {
            CLIENT_CA_DIR
        } else {
            TLS_DIR
        };
        settings.insert("SLUICE_TLS_CLIENT_CA".into(), format!("{dir}/{}", c.ca.key));
    }
    if let Some(a) = &security.auth {
        settings.insert(
            "SLUICE_TOKENS_FILE".into(),
            format!("{TOKENS_DIR}/{}", a.tokens.key),
        );
        if spec.auth.as_ref().is_some_and(|a| a.metrics_require_token) {
            settings.insert("SLUICE_METRICS_REQUIRE_TOKEN".into(), "true".into());
        }
    }

    let mut secret_env = Vec::new();
    match &spec.object_store {
        ObjectStoreSpec::Local(_) => {
            settings.insert(
                "SLUICE_OBJECT_STORE".into(),
                format!("file://{DATA_DIR}/objects"),
            );
        }
        ObjectStoreSpec::S3(s3) => {
            let prefix = s3.prefix.as_deref().unwrap_or("").trim_matches('/');
            let url = if prefix.is_empty() {
                format!("s3://{}", s3.bucket)
            } else {
                format!("s3://{}/{prefix}", s3.bucket)
            };
            settings.insert("SLUICE_OBJECT_STORE".into(), url);
            settings.insert("SLUICE_S3_REGION".into(), s3.region.clone());
            if let Some(e) = &s3.endpoint {
                settings.insert("SLUICE_S3_ENDPOINT".into(), e.clone());
            }
            match (&s3.access_key_id, &s3.secret_access_key) {
                (Some(id), Some(secret)) => {
                    secret_env.push(secret_var(
                        "SLUICE_S3_ACCESS_KEY_ID",
                        "objectStore.s3.accessKeyId",
                        id,
                    )?);
                    secret_env.push(secret_var(
                        "SLUICE_S3_SECRET_ACCESS_KEY",
                        "objectStore.s3.secretAccessKey",
                        secret,
                    )?);
                }
                (None, None) => {}
                _ => return Err(ValidationError::S3CredentialsPair),
            }
        }
    }
    match &spec.catalog {
        CatalogSpec::Sqlite(_) => {
            settings.insert(
                "SLUICE_CATALOG".into(),
                format!("sqlite://{DATA_DIR}/catalog.sqlite"),
            );
        }
        CatalogSpec::Postgres(pg) => {
            secret_env.push(secret_var(
                "SLUICE_CATALOG",
                "catalog.postgres.urlSecret",
                &pg.url_secret,
            )?);
        }
    }
    // Each pod's id is its name: stable across restarts, recorded with its
    // Parquet files.
    secret_env.push(EnvVar {
        name: "SLUICE_INGESTER_ID".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });

    for (index, e) in spec.env.iter().enumerate() {
        if e.name.starts_with("SLUICE_") {
            return Err(ValidationError::ReservedEnv {
                index,
                name: e.name.clone(),
            });
        }
    }

    Ok(ValidatedIngester {
        generation: ing.metadata.generation,
        owner,
        replicas: spec.replicas,
        image: spec.image.clone(),
        image_pull_policy: spec.image_pull_policy,
        image_pull_secrets: spec.image_pull_secrets.clone(),
        volume: VolumeSettings {
            size: spec.wal_volume.size.0.clone(),
            storage_class_name: spec.wal_volume.storage_class_name.clone(),
            on_scale_down: spec.wal_volume.on_scale_down,
            on_delete: spec.wal_volume.on_delete,
        },
        rotation_interval,
        drain_timeout,
        settings,
        secret_env,
        triggers,
        scheduling: Scheduling {
            resources: spec.resources.clone(),
            node_selector: spec.node_selector.clone(),
            affinity: spec.affinity.clone(),
            tolerations: spec.tolerations.clone(),
            topology_spread_constraints: spec.topology_spread_constraints.clone(),
            priority_class_name: spec.priority_class_name.clone(),
        },
        pdb_max_unavailable: spec
            .disruption_budget
            .enabled
            .then_some(spec.disruption_budget.max_unavailable),
        extra_env: spec.env.clone(),
        cluster_domain: opts.cluster_domain.clone(),
        security,
        name: ing.name_any(),
        namespace,
    })
}

fn duration(field: &'static str, value: &str) -> Result<Duration, ValidationError> {
    let err = |reason: String| ValidationError::Duration {
        field,
        value: value.to_string(),
        reason,
    };
    let d = humantime::parse_duration(value).map_err(|e| err(e.to_string()))?;
    if d < Duration::from_secs(1) {
        return Err(err("must be at least 1s".into()));
    }
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err(err("must be at most 7 days".into()));
    }
    Ok(d)
}

fn positive(field: &'static str, v: Option<i64>) -> Result<Option<u64>, ValidationError> {
    match v {
        None => Ok(None),
        Some(v) if v > 0 => Ok(Some(v.unsigned_abs())),
        Some(value) => Err(ValidationError::NotPositive { field, value }),
    }
}

fn secret_var(
    name: &str,
    field: &'static str,
    sel: &SecretKeySelector,
) -> Result<EnvVar, ValidationError> {
    if sel.name.is_empty() || sel.key.is_empty() {
        return Err(ValidationError::SecretRef { field });
    }
    Ok(EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(sel.clone()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ingester_from_yaml, sample};

    fn v(yaml: &str) -> Result<ValidatedIngester, ValidationError> {
        validate(&ingester_from_yaml(yaml), &ValidateOptions::default())
    }

    #[test]
    fn single_node_sample() {
        let vi = validate(&sample("single-node.yaml"), &ValidateOptions::default())
            .expect("valid sample");
        assert_eq!(vi.replicas, 1);
        assert_eq!(
            vi.settings["SLUICE_CATALOG"],
            "sqlite:///var/lib/sluice/catalog.sqlite"
        );
        assert_eq!(
            vi.settings["SLUICE_OBJECT_STORE"],
            "file:///var/lib/sluice/objects"
        );
        assert_eq!(vi.settings["SLUICE_PERSIST_ON_SHUTDOWN"], "true");
        assert_eq!(vi.owner.kind, "Ingester");
        assert_eq!(vi.owner.controller, Some(true));
    }

    #[test]
    fn cluster_sample_takes_secrets_from_env() {
        let vi =
            validate(&sample("cluster.yaml"), &ValidateOptions::default()).expect("valid sample");
        assert_eq!(vi.replicas, 3);
        assert_eq!(vi.settings["SLUICE_OBJECT_STORE"], "s3://sluice-data/prod");
        assert!(!vi.settings.contains_key("SLUICE_CATALOG"));
        let names: Vec<_> = vi.secret_env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "SLUICE_S3_ACCESS_KEY_ID",
                "SLUICE_S3_SECRET_ACCESS_KEY",
                "SLUICE_CATALOG",
                "SLUICE_INGESTER_ID"
            ]
        );
        // Rotation is the operator's; the pod's timer is the 2x backstop.
        assert_eq!(vi.rotation_interval, Duration::from_secs(300));
        assert_eq!(vi.settings["SLUICE_WAL_ROTATION_INTERVAL"], "10m");
        assert_eq!(vi.triggers.buffer_bytes, Some(536_870_912));
        assert_eq!(
            vi.pod_dns(2),
            "ingest-2.ingest-pods.sluice.svc.cluster.local"
        );
    }

    const BASE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Ingester
metadata: {name: a, namespace: ns, uid: "u-1"}
spec:
  image: sluice:1
  walVolume: {size: 1Gi}
  objectStore: {local: {}}
  catalog: {sqlite: {}}
"#;

    #[test]
    fn rejects_more_replicas_without_shared_storage() {
        let y = BASE.replace("image: sluice:1", "image: sluice:1\n  replicas: 2");
        assert_eq!(v(&y), Err(ValidationError::ReplicasNeedPostgres(2)));
        let y = y.replace(
            "catalog: {sqlite: {}}",
            "catalog: {postgres: {urlSecret: {name: pg, key: url}}}",
        );
        assert_eq!(v(&y), Err(ValidationError::ReplicasNeedS3(2)));
    }

    #[test]
    fn rejects_bad_durations_and_names() {
        let y = BASE.replace("walVolume", "drainTimeout: soon\n  walVolume");
        assert!(matches!(
            v(&y),
            Err(ValidationError::Duration {
                field: "drainTimeout",
                ..
            })
        ));
        let y = BASE.replace("name: a,", "name: A_b,");
        assert!(matches!(v(&y), Err(ValidationError::BadName { .. })));
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let y = BASE.replace("name: a,", &format!("name: {long},"));
        assert!(matches!(v(&y), Err(ValidationError::BadName { .. })));
        let mut no_uid = ingester_from_yaml(BASE);
        no_uid.metadata.uid = None;
        assert_eq!(
            validate(&no_uid, &ValidateOptions::default()),
            Err(ValidationError::MissingMetadata("uid"))
        );
    }

    #[test]
    fn rejects_reserved_env_and_half_credentials() {
        let y = BASE.replace(
            "walVolume",
            "env: [{name: RUST_LOG, value: x}, {name: SLUICE_LOG, value: y}]\n  walVolume",
        );
        assert_eq!(
            v(&y),
            Err(ValidationError::ReservedEnv {
                index: 1,
                name: "SLUICE_LOG".into()
            })
        );
        let y = BASE.replace(
            "objectStore: {local: {}}",
            "objectStore: {s3: {bucket: bkt, accessKeyId: {name: s, key: k}}}",
        );
        assert_eq!(v(&y), Err(ValidationError::S3CredentialsPair));
    }

    #[test]
    fn trigger_must_be_below_the_buffer_limit() {
        let y = BASE.replace(
            "walVolume",
            "ingest: {bufferLimitBytes: 1048576}\n  persist: {triggerBufferBytes: 2097152}\n  walVolume",
        );
        assert_eq!(
            v(&y),
            Err(ValidationError::TriggerAboveBufferLimit {
                trigger: 2_097_152,
                limit: 1_048_576
            })
        );
    }

    #[test]
    fn tls_and_auth_settings() {
        let y = BASE.replace(
            "walVolume",
            "tls: {secretName: a-tls, caSecretName: a-ca, caKey: root.pem, serverName: ingest.example.com}\n  \
             auth: {tokensSecretName: a-tokens, controlTokenSecretName: a-op, metricsRequireToken: true}\n  walVolume",
        );
        let vi = v(&y).expect("valid");
        let t = vi.security.tls.as_ref().expect("tls");
        assert_eq!(t.secret_name, "a-tls");
        assert_eq!(
            t.ca,
            SecretKeyRef {
                name: "a-ca".into(),
                key: "root.pem".into()
            }
        );
        assert_eq!(t.server_name.as_deref(), Some("ingest.example.com"));
        let a = vi.security.auth.as_ref().expect("auth");
        assert_eq!(a.tokens.key, "tokens", "default key");
        assert_eq!(a.control_token.key, "token", "default key");
        assert_eq!(
            vi.settings["SLUICE_TOKENS_FILE"],
            "/etc/sluice/tokens/tokens"
        );
        assert_eq!(vi.settings["SLUICE_METRICS_REQUIRE_TOKEN"], "true");

        // The CA defaults to the TLS Secret's `ca.crt`.
        let y = BASE.replace("walVolume", "tls: {secretName: a-tls}\n  walVolume");
        let t = v(&y).expect("valid").security.tls.expect("tls");
        assert_eq!(t.ca.name, "a-tls");
        assert_eq!(t.ca.key, "ca.crt");
        assert_eq!(t.server_name, None);
    }

    #[test]
    fn client_auth_settings() {
        // A client CA of its own: its own directory.
        let y = BASE.replace(
            "walVolume",
            "tls: {secretName: a-tls, clientAuth: {caSecretName: a-clients, caKey: roots.pem, \
             operatorCertSecretName: a-op-cert}}\n  walVolume",
        );
        let vi = v(&y).expect("valid");
        let c = vi
            .security
            .tls
            .as_ref()
            .and_then(|t| t.client_auth.clone())
            .expect("client auth");
        assert_eq!(
            c.ca,
            SecretKeyRef {
                name: "a-clients".into(),
                key: "roots.pem".into()
            }
        );
        assert_eq!(c.operator_cert_secret_name, "a-op-cert");
        assert_eq!(
            vi.settings["SLUICE_TLS_CLIENT_CA"],
            "/etc/sluice/client-ca/roots.pem"
        );
        // One CA for pods and clients: the TLS Secret's directory.
        let y = BASE.replace(
            "walVolume",
            "tls: {secretName: a-tls, clientAuth: {caSecretName: a-tls, operatorCertSecretName: op}}\n  walVolume",
        );
        let vi = v(&y).expect("valid");
        assert_eq!(
            vi.settings["SLUICE_TLS_CLIENT_CA"], "/etc/sluice/tls/ca.crt",
            "default key"
        );
        // Without clientAuth: no client CA.
        let y = BASE.replace("walVolume", "tls: {secretName: a-tls}\n  walVolume");
        assert!(
            !v(&y)
                .expect("valid")
                .settings
                .contains_key("SLUICE_TLS_CLIENT_CA")
        );
    }

    #[test]
    fn rejects_an_operator_client_key_that_would_be_mounted() {
        for (y, other) in [
            (
                "tls: {secretName: s, clientAuth: {caSecretName: c, operatorCertSecretName: s}}",
                "tls.secretName",
            ),
            (
                "tls: {secretName: s, clientAuth: {caSecretName: c, operatorCertSecretName: c}}",
                "tls.clientAuth.caSecretName",
            ),
            (
                "tls: {secretName: s, clientAuth: {caSecretName: c, operatorCertSecretName: t}}\n  \
                 auth: {tokensSecretName: t, controlTokenSecretName: op}",
                "auth.tokensSecretName",
            ),
        ] {
            let e =
                v(&BASE.replace("walVolume", &format!("{y}\n  walVolume"))).expect_err("mounted");
            assert!(
                matches!(&e, ValidationError::OperatorCertMounted { other: o, .. } if *o == other),
                "{e:?}"
            );
            assert!(e.to_string().contains("client key would be mounted"), "{e}");
        }
        // The control token may not sit in the client CA Secret either.
        let y = "tls: {secretName: s, clientAuth: {caSecretName: c, operatorCertSecretName: op}}\n  \
                 auth: {tokensSecretName: t, controlTokenSecretName: c}";
        assert!(matches!(
            v(&BASE.replace("walVolume", &format!("{y}\n  walVolume"))),
            Err(ValidationError::ControlTokenMounted {
                other: "tls.clientAuth.caSecretName",
                ..
            })
        ));
        // Both operator credentials in one Secret of their own: fine.
        let y = "tls: {secretName: s, clientAuth: {caSecretName: c, operatorCertSecretName: op}}\n  \
                 auth: {tokensSecretName: t, controlTokenSecretName: op}";
        v(&BASE.replace("walVolume", &format!("{y}\n  walVolume"))).expect("valid");
        // Bad names are named by their field.
        let y = "tls: {secretName: s, clientAuth: {caSecretName: Bad, operatorCertSecretName: op}}";
        assert_eq!(
            v(&BASE.replace("walVolume", &format!("{y}\n  walVolume"))),
            Err(ValidationError::SecretName {
                field: "tls.clientAuth.caSecretName",
                value: "Bad".into()
            })
        );
    }

    #[test]
    fn rejects_a_control_token_that_would_be_mounted() {
        let y = BASE.replace(
            "walVolume",
            "auth: {tokensSecretName: t, controlTokenSecretName: t}\n  walVolume",
        );
        let e = v(&y).expect_err("same Secret");
        assert_eq!(
            e,
            ValidationError::ControlTokenMounted {
                name: "t".into(),
                other: "auth.tokensSecretName"
            }
        );
        assert!(e.to_string().contains("mounted into every pod"), "{e}");
        let y = BASE.replace(
            "walVolume",
            "tls: {secretName: s}\n  auth: {tokensSecretName: t, controlTokenSecretName: s}\n  walVolume",
        );
        assert!(matches!(
            v(&y),
            Err(ValidationError::ControlTokenMounted {
                other: "tls.secretName",
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_secret_names_keys_and_server_names() {
        let y = BASE.replace("walVolume", "tls: {secretName: Bad_Name}\n  walVolume");
        assert_eq!(
            v(&y),
            Err(ValidationError::SecretName {
                field: "tls.secretName",
                value: "Bad_Name".into()
            })
        );
        let y = BASE.replace(
            "walVolume",
            "tls: {secretName: s, caKey: \"a/b\"}\n  walVolume",
        );
        assert!(matches!(
            v(&y),
            Err(ValidationError::SecretKey {
                field: "tls.caKey",
                ..
            })
        ));
        let y = BASE.replace(
            "walVolume",
            "tls: {secretName: s, serverName: \"-x.example\"}\n  walVolume",
        );
        assert_eq!(v(&y), Err(ValidationError::ServerName("-x.example".into())));
    }

    #[test]
    fn wal_usage_limit() {
        let vi = v(BASE).expect("valid");
        assert_eq!(
            vi.settings["SLUICE_WAL_MAX_FRACTION"], "0.9",
            "on by default"
        );
        assert!(!vi.settings.contains_key("SLUICE_WAL_MAX_BYTES"));
        let y = BASE.replace(
            "walVolume",
            "wal: {maxVolumePercent: 0, maxBytes: 1073741824}\n  walVolume",
        );
        let vi = v(&y).expect("valid");
        assert!(
            !vi.settings.contains_key("SLUICE_WAL_MAX_FRACTION"),
            "0: off"
        );
        assert_eq!(vi.settings["SLUICE_WAL_MAX_BYTES"], "1073741824");
        let y = BASE.replace("walVolume", "wal: {maxVolumePercent: 101}\n  walVolume");
        assert_eq!(v(&y), Err(ValidationError::VolumePercent(101)));
    }
}
