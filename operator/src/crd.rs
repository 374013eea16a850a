//! The `Ingester` custom resource (`sluice.dev/v1alpha1`, short name `ingr`).
//!
//! These Rust types are the single source of the CRD: `sluice-operator crd`
//! prints [`crd_yaml`], `crds/ingester.yaml` is that output committed, and a
//! test fails when the two drift apart.
//!
//! Validation happens in three layers, each catching what the one before
//! cannot:
//! 1. the OpenAPI schema (types, ranges, patterns, enums), enforced by the
//!    API server on every write;
//! 2. `x-kubernetes-validations` CEL rules for what spans fields or versions:
//!    more than one replica needs a PostgreSQL catalog and an S3 object
//!    store (SQLite and local files live inside one pod), and the WAL
//!    volume's storage class and size cannot change (a StatefulSet's
//!    `volumeClaimTemplates` are immutable, so the change could never be
//!    applied);
//! 3. [`crate::reconcile::validate`], which parses durations and checks what
//!    CEL cannot express (e.g. persist thresholds against the buffer limit)
//!    and turns the spec into the checked structure the builders take.
//!
//! The status is written only by the operator (server-side apply on the
//! status subresource). Routers and queriers read `status.endpoints`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, ResourceRequirements, SecretKeySelector, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the Sluice resources.
pub const GROUP: &str = "sluice.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// A set of Sluice ingester pods: a StatefulSet with one WAL volume per pod,
/// a headless Service giving each pod a stable DNS name, a client Service,
/// a ConfigMap and a PodDisruptionBudget, plus the operator's driver, which
/// drains pods before they go (scale-down, rolling restart, deletion).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// clippy sees the repeated `type_ = ...` of the printer columns as duplicates.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Ingester",
    plural = "ingesters",
    shortname = "ingr",
    category = "sluice",
    namespaced,
    status = "IngesterStatus",
    derive = "PartialEq",
    doc = "A set of Sluice ingester pods managed by sluice-operator",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired pods"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Pods that are ready"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Ready, Progressing, Draining or Degraded"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.replicas <= 1 || has(self.catalog.postgres)")
        .message("more than one replica needs a PostgreSQL catalog: a SQLite catalog lives inside one pod")
        .field_path(".catalog"),
    validation = Rule::new("self.replicas <= 1 || has(self.objectStore.s3)")
        .message("more than one replica needs a shared (S3) object store: a local object store lives inside one pod")
        .field_path(".objectStore")
)]
#[serde(rename_all = "camelCase")]
pub struct IngesterSpec {
    /// Number of ingester pods. Scaling down drains the leaving pods
    /// (highest ordinals first) before they are removed.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 128))]
    pub replicas: i32,

    /// Container image of `sluice-ingester`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Image pull policy; Kubernetes' default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Names of Secrets in the namespace used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<String>,

    /// The per-pod persistent volume holding the WAL (and, with a single
    /// replica, the local object store and the SQLite catalog).
    pub wal_volume: WalVolumeSpec,

    /// WAL segment rotation, and the usage limit of the WAL volume.
    #[serde(default)]
    pub wal: WalSpec,

    /// Persistence of buffered data to Parquet.
    #[serde(default)]
    pub persist: PersistSpec,

    /// Write limits.
    #[serde(default)]
    pub ingest: IngestSpec,

    /// Where Parquet files go.
    pub object_store: ObjectStoreSpec,

    /// Where tables, partitions and Parquet files are recorded.
    pub catalog: CatalogSpec,

    /// TLS on the pods' gRPC and HTTP listeners. Absent: plain text (fine
    /// for a single node on a trusted network, nothing to configure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Bearer-token authentication on every API of the pods. Absent: every
    /// request is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Compute resources of the ingester container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels a pod must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Pod affinity and anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// How pods spread over zones or nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// Priority class of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// The PodDisruptionBudget guarding voluntary evictions.
    #[serde(default)]
    pub disruption_budget: DisruptionBudgetSpec,

    /// Extra environment variables of the ingester container (e.g. `RUST_BACKTRACE`).
    /// Variables named `SLUICE_*` are set by the operator and may not be overridden.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// Log filter of the ingester, e.g. `info` or `sluice_ingester=debug,info`.
    #[serde(default = "default_log_level")]
    #[schemars(length(min = 1, max = 256))]
    pub log_level: String,

    /// How long a pod may take to drain (persist everything, empty its WAL)
    /// before the operator gives up, sets `Degraded` and stops the operation.
    /// Also sets the pods' termination grace period. Go duration-like, e.g. `10m`.
    #[serde(default = "default_drain_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub drain_timeout: String,
}

/// When Kubernetes pulls the image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The WAL volume of each pod (a StatefulSet volume claim template).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("(has(self.storageClassName) ? self.storageClassName : '') == (has(oldSelf.storageClassName) ? oldSelf.storageClassName : '')")
        .message("the WAL volume's storage class cannot change: existing volumes would not follow")
        .field_path(".storageClassName"),
    validation = Rule::new("self.size == oldSelf.size")
        .message("the WAL volume's size cannot change: a StatefulSet's volume claim templates are immutable")
        .field_path(".size")
)]
#[serde(rename_all = "camelCase")]
pub struct WalVolumeSpec {
    /// Requested size, e.g. `10Gi`.
    pub size: Quantity,
    /// Storage class; the cluster's default when absent. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// What happens to a pod's volume when scaling down removes the pod
    /// (it is drained first, so its WAL is empty either way).
    #[serde(default = "default_retain")]
    pub on_scale_down: VolumeRetention,
    /// What happens to the volumes when the Ingester is deleted.
    #[serde(default = "default_retain")]
    pub on_delete: VolumeRetention,
}

/// Maps to the StatefulSet's `persistentVolumeClaimRetentionPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VolumeRetention {
    Retain,
    Delete,
}

impl VolumeRetention {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeRetention::Retain => "Retain",
            VolumeRetention::Delete => "Delete",
        }
    }
}

/// WAL segment rotation. The operator rotates pod *i* of *n* at offset
/// *i·interval/n* so the pods do not all persist at once; each pod's own
/// timer is set to twice the interval, a backstop for when the operator is
/// away.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalSpec {
    /// Rotate each pod's open segment this often, e.g. `10m`.
    #[serde(default = "default_rotation_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub rotation_interval: String,
    /// Rotate a segment once it reaches this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub segment_bytes: Option<i64>,
    /// Refuse writes (`RESOURCE_EXHAUSTED`, HTTP 429) while the pod's volume
    /// is at least this full, in percent as `df` reports it; the WAL is
    /// rotated and persisted to free space and writes resume 2 points
    /// below. A full volume then refuses writes cleanly instead of failing
    /// them with `ENOSPC`. `0` turns the limit off.
    #[serde(default = "default_max_volume_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_volume_percent: i32,
    /// Also refuse writes while the WAL's segment files hold this many
    /// bytes (keep it well below `walVolume.size`, e.g. 80 %). No byte cap
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub max_bytes: Option<i64>,
}

impl Default for WalSpec {
    fn default() -> Self {
        Self {
            rotation_interval: default_rotation_interval(),
            segment_bytes: None,
            max_volume_percent: default_max_volume_percent(),
            max_bytes: None,
        }
    }
}

/// Persistence settings of each pod, and the thresholds at which the
/// operator asks a pod to persist.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistSpec {
    /// Partitions persisted in parallel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub workers: Option<i32>,
    /// Persist jobs that may wait for a worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub queue_depth: Option<i32>,
    /// Memory pool for sorting and deduplicating (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub memory_limit_bytes: Option<i64>,
    /// A partition buffering more bytes than this is persisted at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub hot_partition_bytes: Option<i64>,
    /// A partition buffering more rows than this is persisted at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub hot_partition_rows: Option<i64>,
    /// The operator triggers a persist when a pod buffers more than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub trigger_buffer_bytes: Option<i64>,
    /// The operator triggers a persist when a pod's WAL is larger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub trigger_wal_bytes: Option<i64>,
}

/// Write limits of each pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestSpec {
    /// Buffer memory limit (bytes); over it writes are refused until data is persisted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576))]
    pub buffer_limit_bytes: Option<i64>,
    /// Largest write request accepted (bytes, after decompression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_request_bytes: Option<i64>,
}

/// Object store for Parquet files: exactly one of `local` or `s3`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(
    clippy::large_enum_variant,
    reason = "one per resource; boxing buys nothing"
)]
pub enum ObjectStoreSpec {
    /// Files on the pod's own volume. One replica only.
    Local(LocalObjectStore),
    /// An S3 bucket (AWS or S3-compatible), shared by all pods.
    S3(S3ObjectStore),
}

/// The local object store has no settings: it lives on the WAL volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct LocalObjectStore {}

/// An S3 bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3ObjectStore {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!_.*'()/-]{1,512}$"))]
    pub prefix: Option<String>,
    /// Region, e.g. `eu-west-1`.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Endpoint URL of an S3-compatible server; AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,
    /// Secret key holding the access key id; the pod's ambient AWS
    /// credentials when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<SecretKeySelector>,
    /// Secret key holding the secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<SecretKeySelector>,
}

/// Catalog: exactly one of `sqlite` or `postgres`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CatalogSpec {
    /// A SQLite file on the pod's volume. One replica only.
    Sqlite(SqliteCatalog),
    /// A PostgreSQL database shared by all pods.
    Postgres(PostgresCatalog),
}

/// The SQLite catalog has no settings: it lives on the WAL volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct SqliteCatalog {}

/// A PostgreSQL catalog.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresCatalog {
    /// Secret key holding the URL, `postgres://user:password@host:5432/db`.
    pub url_secret: SecretKeySelector,
}

/// TLS of the pods, from Secrets in the `Ingester`'s namespace.
///
/// The pods mount the Secret as a directory (updates reach them and are
/// reloaded without a restart); the operator reads the CA with `get` on
/// that one Secret, to verify the pods' certificates when it calls their
/// control RPC. Changing a Secret *name* rolls the pods; changing a
/// Secret's *contents* does not (the ingester reloads it).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.clientAuth) || self.clientAuth.operatorCertSecretName != self.secretName")
        .message("clientAuth.operatorCertSecretName must differ from secretName: the operator's private key would be mounted into every pod")
        .field_path(".clientAuth.operatorCertSecretName")
)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret: `tls.crt` (chain, leaf first) and
    /// `tls.key` are every pod's certificate and key. The certificate must
    /// name each pod's DNS name (e.g.
    /// `*.<name>-pods.<namespace>.svc.cluster.local`) or `serverName`, and
    /// the client Service's name for clients that use it.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: String,
    /// Secret holding the CA that signed the pods' certificate, which the
    /// operator trusts when it calls the pods. Defaults to `secretName`
    /// (cert-manager puts its issuer's CA there as `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub ca_secret_name: Option<String>,
    /// Key of the CA (PEM) in that Secret.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub ca_key: String,
    /// The name the operator requires in every pod's certificate. Absent:
    /// each pod's own DNS name, `<pod>.<name>-pods.<namespace>.svc.<cluster domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub server_name: Option<String>,
    /// Mutual TLS: the pods require a client certificate on gRPC and on
    /// every HTTP path but `/health` and `/ready` (so kubelet probes work).
    /// Absent: any client may connect (tokens still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuthSpec>,
}

/// Mutual TLS of the pods, from Secrets in the `Ingester`'s namespace.
///
/// Two Secrets on purpose: the client CA is mounted into every pod; the
/// operator's own client certificate and key are read by the operator
/// (like its control token) and never mounted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.operatorCertSecretName != self.caSecretName")
        .message("operatorCertSecretName must differ from caSecretName: the operator's private key would be mounted into every pod")
        .field_path(".operatorCertSecretName")
)]
#[serde(rename_all = "camelCase")]
pub struct ClientAuthSpec {
    /// Secret holding the CA bundle (PEM) that signs the certificates of
    /// allowed clients (routers, the operator, Prometheus). Mounted into
    /// every pod as a directory and re-read when it changes. May be
    /// `secretName` when one CA signs both the pods and their clients.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub ca_secret_name: String,
    /// Key of the client CA bundle in that Secret.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub ca_key: String,
    /// A `kubernetes.io/tls` Secret with the operator's client certificate
    /// (`tls.crt`, chain leaf first, signed by the client CA) and key
    /// (`tls.key`), presented when the operator calls the pods. Read by the
    /// operator, never mounted into the pods.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub operator_cert_secret_name: String,
}

/// Bearer tokens, from Secrets in the `Ingester`'s namespace.
///
/// Two Secrets on purpose: the tokens file holds only SHA-256 hashes and is
/// mounted into every pod; the operator's own `control` token is a plain
/// token, read by the operator and never mounted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.tokensSecretName != self.controlTokenSecretName")
        .message("controlTokenSecretName must differ from tokensSecretName: the plain control token would be mounted into every pod")
        .field_path(".controlTokenSecretName")
)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret holding the tokens file (lines of `sluice-ingester token
    /// new|hash`: `sha256:<hex> <scopes> [name]`), mounted into every pod
    /// and re-read when it changes.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub tokens_secret_name: String,
    /// Key of the tokens file in that Secret.
    #[serde(default = "default_tokens_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub tokens_key: String,
    /// Secret holding the plain token the operator sends to the pods'
    /// control RPC; its hash must be in the tokens file with the `control`
    /// (or `all`) scope.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub control_token_secret_name: String,
    /// Key of the control token in that Secret.
    #[serde(default = "default_control_token_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub control_token_key: String,
    /// `/metrics` also requires a token (any scope). `/health` and `/ready`
    /// never do (kubelet probes carry none).
    #[serde(default)]
    pub metrics_require_token: bool,
}

/// The PodDisruptionBudget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Create a PodDisruptionBudget.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Pods that may be evicted at once.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 0, max = 128))]
    pub max_unavailable: i32,
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: default_max_unavailable(),
        }
    }
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngesterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the StatefulSet.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// One word for the printer column: `Ready`, `Progressing`, `Draining`
    /// or `Degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Ready`, `Progressing`, `Degraded` and `Draining`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Addresses for routers and queriers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<IngesterEndpoints>,
    /// Per-pod figures from the control RPC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodStatus>,
}

/// Where routers and queriers find the pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngesterEndpoints {
    /// DNS name of the client Service (ready pods only).
    pub service: String,
    /// gRPC port: Write, Flight query, Catalog, Control.
    pub grpc_port: i32,
    /// HTTP port: `/api/v2/write`, `/health`, `/ready`, `/metrics`.
    pub http_port: i32,
    /// The pods serve TLS on both ports: use `https://` and verify against
    /// the CA of `spec.tls`.
    #[serde(default)]
    pub tls: bool,
    /// Every pod's stable DNS name, in ordinal order.
    #[serde(default)]
    pub pods: Vec<PodEndpoint>,
}

/// One pod's address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodEndpoint {
    pub name: String,
    /// `<pod>.<headless service>.<namespace>.svc.<cluster domain>`.
    pub dns: String,
    /// `dns:grpcPort`.
    pub grpc: String,
    /// `http://dns:grpcPort`, or `https://…` with TLS.
    #[serde(default)]
    pub url: String,
}

/// One pod as the driver last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub name: String,
    pub ordinal: i32,
    /// The ingester's state: `Starting`, `Replaying`, `Ready`, `Draining`,
    /// `Drained`, or `Unknown` when the control RPC did not answer.
    pub state: String,
    /// The pod runs the current pod template.
    #[serde(default)]
    pub up_to_date: bool,
    #[serde(default)]
    pub wal_segments: i64,
    #[serde(default)]
    pub wal_bytes: i64,
    #[serde(default)]
    pub buffered_bytes: i64,
    #[serde(default)]
    pub buffered_rows: i64,
    /// Persist jobs queued plus running.
    #[serde(default)]
    pub persist_queue: i64,
    /// Age of the oldest write not yet persisted, in seconds.
    #[serde(default)]
    pub oldest_unpersisted_write_age_seconds: i64,
    /// When the operator asked this pod to drain; kept until it is gone or
    /// resumed, so a restarted operator keeps counting the drain timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_started_at: Option<Time>,
    /// Why the control RPC failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn default_replicas() -> i32 {
    1
}
fn default_log_level() -> String {
    "info".into()
}
fn default_drain_timeout() -> String {
    "10m".into()
}
fn default_rotation_interval() -> String {
    "10m".into()
}
fn default_retain() -> VolumeRetention {
    VolumeRetention::Retain
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_max_volume_percent() -> i32 {
    90
}
fn default_ca_key() -> String {
    "ca.crt".into()
}
fn default_tokens_key() -> String {
    "tokens".into()
}
fn default_control_token_key() -> String {
    "token".into()
}
fn default_true() -> bool {
    true
}
fn default_max_unavailable() -> i32 {
    1
}

/// The CRD as YAML, exactly what `sluice-operator crd` prints and
/// `crds/ingester.yaml` holds.
pub fn crd_yaml() -> Result<String, yaml_serde::Error> {
    let yaml = yaml_serde::to_string(&Ingester::crd())?;
    Ok(format!(
        "# Generated by `sluice-operator crd` from operator/src/crd.rs. Do not edit.\n---\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> serde_json::Value {
        let crd = serde_json::to_value(Ingester::crd()).expect("CRD serialises");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn names_and_short_name() {
        let crd = Ingester::crd();
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.names.kind, "Ingester");
        assert_eq!(crd.spec.names.plural, "ingesters");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["ingr".to_string()][..]),
            "`ing` is Ingress"
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.versions[0].name, VERSION);
    }

    #[test]
    fn printer_columns() {
        let crd = Ingester::crd();
        let cols: Vec<_> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .expect("printer columns")
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                ("Replicas", ".spec.replicas"),
                ("Ready", ".status.readyReplicas"),
                ("Status", ".status.phase"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
    }

    #[test]
    fn cel_rules_are_in_the_schema() {
        let s = schema();
        let spec_rules = s["properties"]["spec"]["x-kubernetes-validations"]
            .as_array()
            .expect("spec rules");
        assert_eq!(spec_rules.len(), 2);
        assert!(spec_rules[0]["rule"].as_str().unwrap().contains("postgres"));
        assert!(spec_rules[1]["rule"].as_str().unwrap().contains("s3"));
        let vol_rules =
            s["properties"]["spec"]["properties"]["walVolume"]["x-kubernetes-validations"]
                .as_array()
                .expect("walVolume rules");
        assert!(
            vol_rules
                .iter()
                .all(|r| r["rule"].as_str().unwrap().contains("oldSelf"))
        );
    }

    #[test]
    fn enums_are_structural() {
        // Externally tagged enums become an object with one optional
        // property per variant plus oneOf/required: the API server only
        // accepts structural schemas.
        let s = schema();
        let store = &s["properties"]["spec"]["properties"]["objectStore"];
        assert_eq!(store["type"], "object");
        assert!(store["properties"]["s3"].is_object());
        assert!(store["properties"]["local"].is_object());
        let one_of = store["oneOf"].as_array().expect("oneOf");
        assert_eq!(one_of.len(), 2);
    }

    #[test]
    fn yaml_round_trips() {
        let yaml = crd_yaml().expect("yaml");
        let back: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            yaml_serde::from_str(&yaml).expect("parse back");
        assert_eq!(back, Ingester::crd());
    }
}
