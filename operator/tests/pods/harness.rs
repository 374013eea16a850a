//! The driver's [`Cluster`] played by real `sluice-ingester` processes.
//!
//! [`ProcessCluster`] behaves like a StatefulSet with `OnDelete` updates
//! and `Parallel` pod management: scaling starts or stops the processes
//! with the highest ordinals; a deleted pod is stopped (SIGTERM) and started
//! again on the same data directory (its persistent volume) with the
//! current update revision. Each pod's environment is what the operator
//! built for it: the ConfigMap's data plus the container's `env`, with the
//! Secret references and the pod-name field resolved, so the real binary
//! runs with exactly the settings a cluster would give it. Only the
//! addresses and directories are local (and, on this 2-core machine, one
//! persist thread per pod).
//!
//! Time: the driver is stepped with `SystemTime::now()` plus a virtual
//! offset ([`Clock`]), so a test can let a drain timeout or a rotation
//! interval pass without waiting for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arrow::array::AsArray;
use arrow::datatypes::{DataType, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::json;
use sluice_e2e::Ingester as Proc;
use sluice_operator::crd::{Ingester, IngesterStatus};
use sluice_operator::driver::{
    Action, Cluster, ClusterError, ControlAccess, ControlError, Driver, GrpcPodControl,
    IngesterRef, PodControl, PodFigures, PodInfo, PodSet, SecretData, StatefulSetState,
    StepOutcome, Target,
};
use sluice_operator::metrics::Metrics;
use sluice_operator::reconcile::build::build;
use sluice_operator::reconcile::validate::{
    CLIENT_CA_DIR, DATA_DIR, TLS_DIR, TOKENS_DIR, ValidateOptions, ValidatedIngester, validate,
};
use sluice_proto::v1;

use super::proxy::Proxy;

pub const NS: &str = "metrics";
pub const TABLE: &str = "load";

// ---- Shared services: PostgreSQL schema, S3 prefix, the S3 proxy ----------

/// A private PostgreSQL schema and S3 prefix on the shared test servers,
/// with the S3 traffic of the ingesters going through a [`Proxy`].
pub struct Services {
    pub catalog_url: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// What the test reads Parquet files through (not the proxy).
    pub store: Arc<dyn ObjectStore>,
    pub proxy: Proxy,
    pub tmp: tempfile::TempDir,
}

impl Services {
    /// `None` (with the reason printed) without the test servers.
    pub async fn new(name: &str) -> Option<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (Some(pg), Some(endpoint), Some(bucket), Some(access_key), Some(secret_key)) = (
            get("SLUICE_TEST_POSTGRES_URL"),
            get("SLUICE_TEST_S3_ENDPOINT"),
            get("SLUICE_TEST_S3_BUCKET"),
            get("SLUICE_TEST_S3_ACCESS_KEY"),
            get("SLUICE_TEST_S3_SECRET_KEY"),
        ) else {
            println!(
                "NOTICE: skipped: SLUICE_TEST_POSTGRES_URL and SLUICE_TEST_S3_* are not set \
                 (scripts/test.sh sets them)"
            );
            return None;
        };
        let region = get("SLUICE_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into());
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let unique = format!("{name}_{}_{nanos}", std::process::id());
        let schema = format!("op_{unique}");
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg)
            .await
            .expect("connect to SLUICE_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .expect("create the test's schema");
        admin.close().await;
        let sep = if pg.contains('?') { '&' } else { '?' };
        let catalog_url = format!("{pg}{sep}options[search_path]={schema}");
        let prefix = format!("operator/{unique}");
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(&bucket)
            .with_region(&region)
            .with_access_key_id(&access_key)
            .with_secret_access_key(&secret_key)
            .build()
            .expect("S3 client");
        let store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(s3, prefix.as_str()));
        let upstream = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Some(Self {
            catalog_url,
            bucket,
            prefix,
            region,
            access_key,
            secret_key,
            store,
            proxy: Proxy::start(upstream).await,
            tmp: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// An `Ingester` of `replicas` pods on these services (through the
    /// proxy), with `spec` merged over the defaults.
    pub fn ingester(&self, replicas: i32, spec: serde_json::Value) -> ValidatedIngester {
        let mut base = json!({
            "replicas": replicas,
            "image": "sluice-ingester:test",
            "walVolume": {"size": "1Gi"},
            "wal": {"rotationInterval": "1h"},
            "persist": {"workers": 2, "hotPartitionBytes": 1073741824u64, "hotPartitionRows": 100000000},
            "objectStore": {"s3": {
                "bucket": self.bucket,
                "prefix": self.prefix,
                "region": self.region,
                "endpoint": self.proxy.url(),
                "accessKeyId": {"name": "s3", "key": "id"},
                "secretAccessKey": {"name": "s3", "key": "secret"},
            }},
            "catalog": {"postgres": {"urlSecret": {"name": "catalog", "key": "url"}}},
            "drainTimeout": "2m",
            "logLevel": "info",
        });
        merge(&mut base, spec);
        validated(base)
    }

    pub fn secrets(&self) -> Secrets {
        Secrets(BTreeMap::from([
            (("s3".into(), "id".into()), self.access_key.clone()),
            (("s3".into(), "secret".into()), self.secret_key.clone()),
            (("catalog".into(), "url".into()), self.catalog_url.clone()),
        ]))
    }
}

/// A single node on its own volume (local object store, SQLite): needs no
/// test servers.
pub fn single_node(spec: serde_json::Value) -> ValidatedIngester {
    let mut base = json!({
        "replicas": 1,
        "image": "sluice-ingester:test",
        "walVolume": {"size": "1Gi"},
        "wal": {"rotationInterval": "1h"},
        "persist": {"workers": 1, "hotPartitionBytes": 1073741824u64, "hotPartitionRows": 100000000},
        "objectStore": {"local": {}},
        "catalog": {"sqlite": {}},
        "drainTimeout": "2m",
    });
    merge(&mut base, spec);
    validated(base)
}

fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

fn validated(spec: serde_json::Value) -> ValidatedIngester {
    let ing: Ingester = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Ingester",
        "metadata": {"name": "ingest", "namespace": "e2e", "uid": "e2e-uid", "generation": 1},
        "spec": spec,
    }))
    .expect("an Ingester");
    validate(&ing, &ValidateOptions::default()).expect("a valid Ingester")
}

/// Secret values by (secret name, key).
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<(String, String), String>);

impl Secrets {
    /// Adds (or replaces) one key of one Secret.
    pub fn with(mut self, name: &str, key: &str, value: impl Into<String>) -> Self {
        self.0.insert((name.into(), key.into()), value.into());
        self
    }

    /// What the API server would hand the operator for `get secret`.
    pub fn data(&self) -> SecretData {
        let mut out = SecretData::new();
        for ((name, key), value) in &self.0 {
            out.entry(name.clone())
                .or_insert_with(|| Some(BTreeMap::new()))
                .get_or_insert_with(BTreeMap::new)
                .insert(key.clone(), value.as_bytes().to_vec());
        }
        out
    }

    /// Writes every key of Secret `name` as a file under `dir`: what a
    /// Secret volume shows the pod.
    fn mount(&self, name: &str, dir: &std::path::Path) {
        std::fs::create_dir_all(dir).expect("secret dir");
        for ((n, key), value) in &self.0 {
            if n == name {
                std::fs::write(dir.join(key), value).expect("write secret file");
            }
        }
    }
}

// ---- The pods -------------------------------------------------------------

/// The environment the operator gives pod `pod`: ConfigMap data, then the
/// container's env (Secrets and the pod name resolved).
pub fn pod_env(v: &ValidatedIngester, secrets: &Secrets, pod: &str) -> Vec<(String, String)> {
    let r = build(v, v.replicas);
    let mut env: Vec<(String, String)> = r
        .config_map
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let container = r
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers[0].clone())
        .expect("the ingester container");
    for e in container.env.unwrap_or_default() {
        let value = match (e.value, e.value_from) {
            (Some(v), _) => v,
            (None, Some(from)) => {
                if let Some(s) = from.secret_key_ref {
                    secrets
                        .0
                        .get(&(s.name.clone(), s.key.clone()))
                        .unwrap_or_else(|| panic!("secret {}/{} for {}", s.name, s.key, e.name))
                        .clone()
                } else if from
                    .field_ref
                    .as_ref()
                    .is_some_and(|f| f.field_path == "metadata.name")
                {
                    pod.to_string()
                } else {
                    panic!("env {} has a source the harness does not resolve", e.name)
                }
            }
            (None, None) => String::new(),
        };
        env.push((e.name, value));
    }
    env
}

struct Pod {
    ordinal: i32,
    revision: String,
    proc: Proc,
    /// Started again by `delete_pod` (not the first start).
    restarted: bool,
}

#[derive(Default)]
struct State {
    replicas: i32,
    update_revision: String,
    pods: BTreeMap<i32, Pod>,
    statuses: Vec<IngesterStatus>,
    deleted: Vec<String>,
    scaled: Vec<i32>,
}

/// How long a restarted pod took from start to `/ready` (WAL replay
/// included).
#[derive(Debug, Clone)]
pub struct Restart {
    pub pod: String,
    pub ready_after: Duration,
}

pub struct ProcessCluster {
    name: String,
    secrets: Secrets,
    v: Mutex<ValidatedIngester>,
    dir: PathBuf,
    state: tokio::sync::Mutex<State>,
    restarts: Arc<Mutex<Vec<Restart>>>,
    /// gRPC URLs of the ready pods: what a router sees behind the client
    /// Service.
    ready_urls: Arc<Mutex<Vec<String>>>,
    /// With `spec.tls`: how the "kubelet" asks `/ready` over HTTPS.
    probe: Option<Probe>,
}

/// An HTTPS `/ready` probe trusting the CA of `spec.tls`.
#[derive(Clone)]
struct Probe {
    tls: tokio_rustls::TlsConnector,
    /// The pods' DNS names are `<pod>.<suffix>`.
    suffix: String,
}

impl ProcessCluster {
    /// Starts `v.replicas` pods on revision `rev-1` and waits until all
    /// are ready.
    pub async fn start(v: &ValidatedIngester, secrets: Secrets, dir: PathBuf) -> Arc<Self> {
        let probe = v.security.tls.as_ref().map(|t| {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let ca = &secrets.0[&(t.ca.name.clone(), t.ca.key.clone())];
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.expect("CA PEM")).expect("CA");
            }
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Probe {
                tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
                suffix: format!(
                    "{}.{}.svc.{}",
                    v.headless_service_name(),
                    v.namespace,
                    v.cluster_domain
                ),
            }
        });
        let c = Arc::new(Self {
            probe,
            name: v.name.clone(),
            secrets,
            v: Mutex::new(v.clone()),
            dir,
            state: tokio::sync::Mutex::new(State {
                update_revision: "rev-1".into(),
                ..Default::default()
            }),
            restarts: Arc::default(),
            ready_urls: Arc::default(),
        });
        {
            let mut s = c.state.lock().await;
            s.replicas = v.replicas;
            for i in 0..v.replicas {
                let mut p = c.spawn(i, "rev-1", false);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !c.is_ready(&p).await {
                    if let Ok(Some(st)) = p.proc.try_exit_status() {
                        panic!("pod {i} exited with {st}:\n{}", p.proc.log());
                    }
                    assert!(
                        Instant::now() < deadline,
                        "pod {i} not ready in 60 s:\n{}",
                        p.proc.log()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                s.pods.insert(i, p);
            }
        }
        c.read_pods(&c.iref()).await.expect("read pods");
        c
    }

    /// The driver's credentials, from the Secrets as the operator reads
    /// them.
    pub fn access(&self) -> ControlAccess {
        let v = self.v.lock().expect("lock").clone();
        ControlAccess::build(&v, &self.secrets.data()).expect("the test's Secrets are complete")
    }

    pub fn iref(&self) -> IngesterRef {
        IngesterRef {
            namespace: "e2e".into(),
            name: self.name.clone(),
        }
    }

    /// A template change: pods on another revision are due for a restart.
    pub async fn set_update_revision(&self, rev: &str) {
        self.state.lock().await.update_revision = rev.into();
    }

    pub fn pod_dir(&self, ordinal: i32) -> PathBuf {
        self.dir.join(format!("{}-{ordinal}", self.name))
    }

    fn spawn(&self, ordinal: i32, rev: &str, restarted: bool) -> Pod {
        let name = format!("{}-{ordinal}", self.name);
        let v = self.v.lock().expect("lock").clone();
        let data = self.pod_dir(ordinal);
        let mut proc = Proc::new(&data);
        // The Secret volumes, as kubelet shows them to the pod.
        let tls_dir = self.dir.join(format!("{name}-tls"));
        let tokens_dir = self.dir.join(format!("{name}-tokens"));
        let client_ca_dir = self.dir.join(format!("{name}-client-ca"));
        if let Some(t) = &v.security.tls {
            self.secrets.mount(&t.secret_name, &tls_dir);
            if let Some(c) = t.client_auth.as_ref().filter(|c| c.ca_in_own_secret(t)) {
                self.secrets.mount(&c.ca.name, &client_ca_dir);
            }
        }
        if let Some(a) = &v.security.auth {
            self.secrets.mount(&a.tokens.name, &tokens_dir);
        }
        for (k, val) in pod_env(&v, &self.secrets, &name) {
            // The volume and the addresses are this machine's (and how
            // full its shared disk is says nothing about the pod).
            if matches!(
                k.as_str(),
                "SLUICE_DATA_DIR"
                    | "SLUICE_GRPC_BIND"
                    | "SLUICE_HTTP_BIND"
                    | "SLUICE_WAL_MAX_FRACTION"
            ) {
                continue;
            }
            // The volume is mounted here rather than at the pod's path.
            let val = val
                .replace(DATA_DIR, &data.display().to_string())
                .replace(TLS_DIR, &tls_dir.display().to_string())
                .replace(CLIENT_CA_DIR, &client_ca_dir.display().to_string())
                .replace(TOKENS_DIR, &tokens_dir.display().to_string());
            proc = proc.with_env(k, val);
        }
        proc = proc.with_env("SLUICE_PERSIST_THREADS", "1");
        proc.spawn().expect("spawn sluice-ingester");
        if restarted && self.probe.is_none() {
            // Time to ready, measured finely in the background.
            let url = format!("{}/ready", proc.http_url());
            let restarts = self.restarts.clone();
            let started = Instant::now();
            let pod = name.clone();
            tokio::spawn(async move {
                while started.elapsed() < Duration::from_secs(120) {
                    if let Ok((200, _)) =
                        sluice_e2e::http_request("GET", &url, Vec::new(), false).await
                    {
                        restarts.lock().expect("lock").push(Restart {
                            pod,
                            ready_after: started.elapsed(),
                        });
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        Pod {
            ordinal,
            revision: rev.into(),
            proc,
            restarted,
        }
    }

    pub fn restarts(&self) -> Vec<Restart> {
        self.restarts.lock().expect("lock").clone()
    }

    pub fn ready_urls(&self) -> Vec<String> {
        self.ready_urls.lock().expect("lock").clone()
    }

    pub async fn deleted(&self) -> Vec<String> {
        self.state.lock().await.deleted.clone()
    }

    pub async fn scaled(&self) -> Vec<i32> {
        self.state.lock().await.scaled.clone()
    }

    /// (ordinal, pid, revision) of every running pod.
    pub async fn pods(&self) -> Vec<(i32, Option<u32>, String)> {
        let s = self.state.lock().await;
        s.pods
            .values()
            .map(|p| (p.ordinal, p.proc.pid(), p.revision.clone()))
            .collect()
    }

    /// The gRPC URL of a running pod.
    pub async fn url(&self, ordinal: i32) -> Option<String> {
        let s = self.state.lock().await;
        s.pods.get(&ordinal).map(|p| p.proc.grpc_url())
    }

    /// `Status` of a running pod.
    pub async fn pod_status(&self, ordinal: i32) -> v1::StatusResponse {
        let s = self.state.lock().await;
        s.pods[&ordinal].proc.status().await.expect("Status")
    }

    /// Every pod's log, for failure messages.
    pub async fn logs(&self) -> String {
        let s = self.state.lock().await;
        s.pods
            .values()
            .map(|p| format!("--- {}-{}:\n{}", self.name, p.ordinal, tail(&p.proc.log())))
            .collect()
    }

    /// Stops every pod.
    pub async fn shutdown(&self) {
        let mut s = self.state.lock().await;
        for p in s.pods.values_mut() {
            p.proc.kill9();
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl ProcessCluster {
    /// Whether the pod's `/ready` answers 200 (over HTTPS with `spec.tls`,
    /// as the kubelet's probe does).
    async fn is_ready(&self, p: &Pod) -> bool {
        let check = async {
            match &self.probe {
                None => {
                    let url = format!("{}/ready", p.proc.http_url());
                    matches!(
                        sluice_e2e::http_request("GET", &url, Vec::new(), false).await,
                        Ok((200, _))
                    )
                }
                Some(probe) => https_ready(probe, &p.proc, &format!("{}-{}", self.name, p.ordinal))
                    .await
                    .unwrap_or(false),
            }
        };
        tokio::time::timeout(Duration::from_secs(2), check)
            .await
            .unwrap_or(false)
    }
}

/// `GET /ready` over TLS, verifying the pod's certificate names its DNS
/// name.
async fn https_ready(probe: &Probe, p: &Proc, pod: &str) -> std::io::Result<bool> {
    Ok(https_get(probe, p, pod, "/ready")
        .await?
        .starts_with(b"HTTP/1.1 200"))
}

impl ProcessCluster {
    /// The response to `GET path` on a running pod's HTTP port over TLS,
    /// as kubelet's probe asks: no client certificate. `None` without
    /// `spec.tls` or the pod.
    pub async fn https_get(&self, ordinal: i32, path: &str) -> Option<std::io::Result<String>> {
        let probe = self.probe.as_ref()?;
        let s = self.state.lock().await;
        let p = s.pods.get(&ordinal)?;
        let pod = format!("{}-{ordinal}", self.name);
        Some(
            https_get(probe, &p.proc, &pod, path)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        )
    }
}

/// `GET path` over TLS without a client certificate; the raw response.
async fn https_get(probe: &Probe, p: &Proc, pod: &str, path: &str) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = p
        .http_url()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let name = rustls::pki_types::ServerName::try_from(format!("{pod}.{}", probe.suffix))
        .map_err(std::io::Error::other)?;
    let mut tls = probe.tls.connect(name, tcp).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await?;
    Ok(buf)
}

#[async_trait]
impl Cluster for ProcessCluster {
    async fn read_pods(&self, _ing: &IngesterRef) -> Result<PodSet, ClusterError> {
        let mut s = self.state.lock().await;
        let mut pods = Vec::new();
        let mut ready_urls = Vec::new();
        for p in s.pods.values_mut() {
            let running = matches!(p.proc.try_exit_status(), Ok(None));
            let ready = running && self.is_ready(p).await;
            if ready {
                ready_urls.push(p.proc.grpc_url());
            }
            pods.push(PodInfo {
                name: format!("{}-{}", self.name, p.ordinal),
                ordinal: p.ordinal,
                revision: Some(p.revision.clone()),
                ready,
                terminating: false,
                control_url: running.then(|| p.proc.grpc_url()),
            });
        }
        *self.ready_urls.lock().expect("lock") = ready_urls;
        Ok(PodSet {
            statefulset: Some(StatefulSetState {
                replicas: s.replicas,
                update_revision: Some(s.update_revision.clone()),
            }),
            pods,
        })
    }

    async fn scale(&self, _ing: &IngesterRef, replicas: i32) -> Result<(), ClusterError> {
        let mut s = self.state.lock().await;
        s.scaled.push(replicas);
        s.replicas = replicas;
        let leaving: Vec<i32> = s.pods.keys().copied().filter(|o| *o >= replicas).collect();
        for o in leaving {
            if let Some(mut p) = s.pods.remove(&o) {
                p.proc.stop().await.map_err(|e| ClusterError::Scale {
                    ingester: self.name.clone(),
                    replicas,
                    message: format!("stopping pod {o}: {e}"),
                })?;
            }
        }
        let rev = s.update_revision.clone();
        for o in 0..replicas {
            if let std::collections::btree_map::Entry::Vacant(e) = s.pods.entry(o) {
                e.insert(self.spawn(o, &rev, false));
            }
        }
        Ok(())
    }

    async fn delete_pod(&self, _ing: &IngesterRef, pod: &str) -> Result<(), ClusterError> {
        let mut s = self.state.lock().await;
        s.deleted.push(pod.to_string());
        let Some(o) = s
            .pods
            .values()
            .find(|p| format!("{}-{}", self.name, p.ordinal) == pod)
            .map(|p| p.ordinal)
        else {
            return Ok(());
        };
        if let Some(mut p) = s.pods.remove(&o) {
            p.proc.stop().await.map_err(|e| ClusterError::DeletePod {
                pod: pod.into(),
                message: e.to_string(),
            })?;
        }
        // The StatefulSet controller recreates it from the new template.
        let rev = s.update_revision.clone();
        let p = self.spawn(o, &rev, true);
        debug_assert!(p.restarted);
        s.pods.insert(o, p);
        Ok(())
    }

    async fn write_status(
        &self,
        _ing: &IngesterRef,
        status: &IngesterStatus,
    ) -> Result<(), ClusterError> {
        self.state.lock().await.statuses.push(status.clone());
        Ok(())
    }
}

// ---- The driver and the clock ----------------------------------------------

/// Wall-clock time plus a virtual offset the test can advance.
#[derive(Default)]
pub struct Clock(AtomicU64);

impl Clock {
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.0.load(Ordering::Acquire))
    }
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::AcqRel,
        );
    }
}

pub type TestDriver = Driver<Arc<ProcessCluster>, GrpcPodControl>;

pub fn driver(cluster: &Arc<ProcessCluster>, metrics: &Arc<Metrics>) -> TestDriver {
    Driver::new(
        cluster.clone(),
        GrpcPodControl::new(Duration::from_secs(10)),
        Duration::from_millis(200),
        metrics.clone(),
    )
}

/// Steps the driver until the Ingester reports phase `Ready` (30 s at most);
/// returns every step's outcome.
pub async fn run_until_ready(
    d: &TestDriver,
    v: &ValidatedIngester,
    clock: &Clock,
    prev: &mut Option<IngesterStatus>,
) -> Vec<StepOutcome> {
    run_until(
        d,
        v,
        clock,
        prev,
        Duration::from_secs(30),
        "ready",
        |st, _| st.phase.as_deref() == Some("Ready"),
    )
    .await
}

/// Steps the driver (every 100 ms) until `done` holds for the status and
/// the step's outcome; returns every step's outcome. Fails after `limit`.
pub async fn run_until(
    d: &TestDriver,
    v: &ValidatedIngester,
    clock: &Clock,
    prev: &mut Option<IngesterStatus>,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&IngesterStatus, &StepOutcome) -> bool,
) -> Vec<StepOutcome> {
    let deadline = Instant::now() + limit;
    let mut outcomes = Vec::new();
    loop {
        let (st, out) = d
            .tick(v, &d.cluster().access(), prev.as_ref(), clock.now())
            .await
            .unwrap_or_else(|e| panic!("{what}: driver step failed: {e}"));
        let finished = done(&st, &out);
        *prev = Some(st);
        outcomes.push(out);
        if finished {
            return outcomes;
        }
        if Instant::now() > deadline {
            let last = prev.as_ref().map(|s| format!("{s:#?}")).unwrap_or_default();
            let logs = d.cluster().logs().await;
            panic!("{what}: not reached within {limit:?}; last status: {last}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A rolling restart of a one-pod Ingester: sets a new update revision and
/// steps the driver until the pod is up to date again (60 s at most). The pod
/// was drained (`PrepareShutdown`) and deleted once, and every action
/// succeeded.
pub async fn restart_the_one_pod(
    d: &TestDriver,
    v: &ValidatedIngester,
    clock: &Clock,
    prev: &mut Option<IngesterStatus>,
    what: &str,
) {
    d.cluster().set_update_revision("rev-2").await;
    let outs = run_until(d, v, clock, prev, Duration::from_secs(60), what, |st, _| {
        st.phase.as_deref() == Some("Ready") && st.pods.iter().all(|p| p.up_to_date)
    })
    .await;
    let acts: Vec<&Action> = outs.iter().flat_map(|o| o.plan.actions.iter()).collect();
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::PrepareShutdown { pod, .. } if pod == "ingest-0")),
        "{what}: {acts:?}"
    );
    for o in &outs {
        for (a, r) in &o.results {
            assert!(r.is_ok(), "{what}: {a:?} failed: {r:?}");
        }
    }
    assert_eq!(d.cluster().deleted().await, ["ingest-0"]);
}

/// Pod `ingest-0`'s Status at `url` through a fresh control client using
/// `access`.
pub async fn pod_status(url: &str, access: &ControlAccess) -> Result<PodFigures, ControlError> {
    GrpcPodControl::new(Duration::from_secs(10))
        .status(&Target {
            pod: "ingest-0",
            url,
            access,
        })
        .await
}

/// One driver step of a one-pod Ingester due for a restart, with credentials
/// the pod refuses: nothing is done (no action, no restart), the pod is
/// `Unknown`, and the returned `Degraded` condition is true.
pub async fn refused_step(
    d: &TestDriver,
    v: &ValidatedIngester,
    bad: &ControlAccess,
    prev: Option<&IngesterStatus>,
    clock: &Clock,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    d.cluster().set_update_revision("rev-3").await;
    let (st, out) = d.tick(v, bad, prev, clock.now()).await.expect("step");
    assert!(out.plan.actions.is_empty(), "{:?}", out.plan.actions);
    let c = condition(&st, "Degraded").clone();
    assert_eq!(c.status, "True", "{}", c.message);
    assert!(
        c.message.contains("ingest-0 refused the operator"),
        "{}",
        c.message
    );
    assert_eq!(st.pods[0].state, "Unknown");
    assert_eq!(d.cluster().deleted().await, ["ingest-0"], "no restart");
    d.cluster().set_update_revision("rev-2").await;
    c
}

pub fn condition<'a>(
    st: &'a IngesterStatus,
    t: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    st.conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no condition {t}"))
}

// ---- Write load ------------------------------------------------------------

/// Writers acting as routers: each batch goes to one ready pod (round
/// robin over what [`ProcessCluster::ready_urls`] lists); a refused batch
/// is retried on the next pod until one acknowledges it.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<WriterReport>>,
}

/// What one writer saw.
#[derive(Debug, Default)]
pub struct WriterReport {
    /// Keys `(writer, seq)` of acknowledged rows.
    pub acked: Vec<(u32, u64)>,
    /// Refusals (e.g. UNAVAILABLE while a pod drains), all retried.
    pub refused: u64,
    /// Failures whose outcome is unknown (the batch may have been applied).
    pub ambiguous: u64,
}

pub const ROWS_PER_BATCH: u64 = 25;

impl Load {
    pub fn start(cluster: &Arc<ProcessCluster>, writers: u32, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..writers)
            .map(|w| {
                let stop = stop.clone();
                let cluster = cluster.clone();
                tokio::spawn(async move { writer(w, cluster, stop, pause).await })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the writers (each finishes its batch) and merges the reports.
    pub async fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::Release);
        let mut all = WriterReport::default();
        for t in self.tasks {
            let r = t.await.expect("writer task");
            all.acked.extend(r.acked);
            all.refused += r.refused;
            all.ambiguous += r.ambiguous;
        }
        all
    }
}

/// Line protocol of rows `seq..seq+n` of writer `w`: one series per
/// writer, a distinct timestamp per row, so no two rows deduplicate.
pub fn batch_lp(w: u32, seq: u64, n: u64) -> String {
    let base: u64 = 1_700_000_000_000_000_000;
    let mut lp = String::new();
    for s in seq..seq + n {
        lp.push_str(&format!(
            "{TABLE},w=w{w} seq={s}i,v={}.5 {}\n",
            s % 1000,
            base + u64::from(w) * 1_000_000_000_000 + s
        ));
    }
    lp
}

async fn writer(
    w: u32,
    cluster: Arc<ProcessCluster>,
    stop: Arc<AtomicBool>,
    pause: Duration,
) -> WriterReport {
    let mut report = WriterReport::default();
    let mut clients: HashMap<String, v1::write_service_client::WriteServiceClient<_>> =
        HashMap::new();
    let mut seq = 0u64;
    let mut turn = w as usize;
    while !stop.load(Ordering::Acquire) {
        let lp = batch_lp(w, seq, ROWS_PER_BATCH);
        let mut acked = false;
        while !acked {
            let urls = cluster.ready_urls();
            if urls.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            turn = turn.wrapping_add(1);
            let url = urls[turn % urls.len()].clone();
            let client = match clients.get(&url) {
                Some(c) => c.clone(),
                None => {
                    let Ok(ep) = tonic::transport::Endpoint::from_shared(url.clone()) else {
                        continue;
                    };
                    match ep.connect_timeout(Duration::from_secs(5)).connect().await {
                        Ok(ch) => {
                            let c = v1::write_service_client::WriteServiceClient::new(ch);
                            clients.insert(url.clone(), c.clone());
                            c
                        }
                        Err(_) => {
                            report.refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
            };
            let mut c = client;
            let r = tokio::time::timeout(
                Duration::from_secs(30),
                sluice_e2e::write_lp(&mut c, NS, lp.as_bytes()),
            )
            .await;
            match r {
                Ok(Ok(_)) => acked = true,
                // Refused before anything was applied: draining, full,
                // or the pod is gone (connection refused).
                Ok(Err(s))
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                    ) =>
                {
                    report.refused += 1;
                    clients.remove(&url);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(Err(s)) => {
                    eprintln!("writer {w}: ambiguous failure: {s}");
                    report.ambiguous += 1;
                    clients.remove(&url);
                }
                Err(_) => {
                    eprintln!("writer {w}: a write timed out");
                    report.ambiguous += 1;
                    clients.remove(&url);
                }
            }
        }
        report
            .acked
            .extend((seq..seq + ROWS_PER_BATCH).map(|s| (w, s)));
        seq += ROWS_PER_BATCH;
        tokio::time::sleep(pause).await;
    }
    report
}

// ---- Reading what was written ----------------------------------------------

/// `(writer, seq)` of every row in `batches` (columns `w` and `seq`).
pub fn keys(batches: &[RecordBatch]) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for b in batches {
        let w = arrow::compute::cast(b.column_by_name("w").expect("column w"), &DataType::Utf8)
            .expect("w as text");
        let w = w.as_string::<i32>();
        let seq = b
            .column_by_name("seq")
            .expect("column seq")
            .as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            let writer: u32 = w
                .value(i)
                .trim_start_matches('w')
                .parse()
                .expect("writer id");
            out.push((writer, u64::try_from(seq.value(i)).expect("seq")));
        }
    }
    out
}

/// Rows of every Parquet file the catalog lists for the table, read from
/// the object store directly, with the ingester that wrote each file.
pub async fn persisted_rows(
    store: &Arc<dyn ObjectStore>,
    files: &[v1::ParquetFile],
) -> Vec<(String, Vec<(u32, u64)>)> {
    let mut out = Vec::new();
    for f in files {
        let path = object_store::path::Path::from(f.object_path.as_str());
        let bytes = store
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("read {}: {e}", f.object_path))
            .bytes()
            .await
            .expect("object bytes");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("a Parquet file")
            .build()
            .expect("Parquet reader");
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("read batches");
        assert_eq!(
            batches.iter().map(|b| b.num_rows() as i64).sum::<i64>(),
            f.row_count,
            "{}: the catalog's row count matches the file",
            f.object_path
        );
        // The time column is there and typed as the design says.
        for b in &batches {
            let t = b.column_by_name("time").expect("time column");
            assert!(t.as_primitive_opt::<TimestampNanosecondType>().is_some());
        }
        out.push((f.ingester_id.clone(), keys(&batches)));
    }
    out
}

/// Every object under the test's prefix (to tell a listed file from one
/// that is only in the store).
pub async fn object_count(store: &Arc<dyn ObjectStore>) -> usize {
    store
        .list(None)
        .try_collect::<Vec<_>>()
        .await
        .expect("list objects")
        .len()
}

/// Checks that `found` holds every acknowledged key exactly once, and
/// nothing that was not written.
pub fn assert_exactly_once(acked: &[(u32, u64)], found: &[(u32, u64)], ambiguous: u64) {
    let want: HashSet<(u32, u64)> = acked.iter().copied().collect();
    assert_eq!(want.len(), acked.len(), "acknowledged keys are distinct");
    let mut seen: HashMap<(u32, u64), u32> = HashMap::new();
    for k in found {
        *seen.entry(*k).or_default() += 1;
    }
    let missing: Vec<_> = want.iter().filter(|k| !seen.contains_key(k)).collect();
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let extra: Vec<_> = seen.keys().filter(|k| !want.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged rows lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        dup.is_empty(),
        "{} rows seen more than once, e.g. {:?}",
        dup.len(),
        &dup[..dup.len().min(5)]
    );
    if ambiguous == 0 {
        assert!(
            extra.is_empty(),
            "{} rows that were never acknowledged",
            extra.len()
        );
    }
}

/// Waits until a pod has no persist job queued or running.
pub async fn persist_idle(cluster: &ProcessCluster, ordinal: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = cluster.pod_status(ordinal).await;
        if s.persist_queue_depth + s.persist_active_jobs == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pod {ordinal} persist never idle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(entries-bearing segments, total bytes)` of a stopped pod's WAL
/// directory: a drained WAL holds at most empty segments (header only).
pub fn wal_files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir.join("wal"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().to_string(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Rows a pod still buffers (not yet persisted), by key.
pub async fn buffered_keys(url: &str) -> Vec<(u32, u64)> {
    match sluice_e2e::query(
        url,
        v1::QueryRequest {
            namespace: NS.into(),
            table: TABLE.into(),
            include_persisted: false,
            ..Default::default()
        },
    )
    .await
    {
        Ok(r) => keys(&r.batches),
        Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
        Err(s) => panic!("query {url}: {s}"),
    }
}

/// Files the catalog lists for the table (through any pod).
pub async fn catalog_files(url: &str) -> Vec<v1::ParquetFile> {
    let mut c = v1::catalog_service_client::CatalogServiceClient::connect(url.to_string())
        .await
        .expect("catalog client");
    match c
        .list_parquet_files(v1::ListParquetFilesRequest {
            namespace: NS.into(),
            table: TABLE.into(),
        })
        .await
    {
        Ok(r) => r.into_inner().files,
        Err(s) if s.code() == tonic::Code::NotFound => Vec::new(),
        Err(s) => panic!("ListParquetFiles: {s}"),
    }
}
