//! The two deployments every persistence test runs against: SQLite + a
//! local directory (the single-node default) and PostgreSQL + S3 (`s3s-fs`,
//! what a cluster uses). Each test gets its own PostgreSQL schema and its
//! own S3 key prefix, so tests run in parallel against the shared servers
//! without seeing each other's catalog rows or objects.
//!
//! The test reads the object store itself (a local directory, or the S3
//! API), never through the ingester, so what it checks is what any Parquet
//! reader would find there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_e2e::Ingester;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SQLite catalog and a local object directory (the defaults).
    Local,
    /// PostgreSQL catalog and an S3 (`s3s-fs`) bucket.
    PgS3,
}

/// What a test needs to run against one deployment.
pub struct Backend {
    pub kind: Kind,
    /// Scratch space: the ingester's data directory lives here.
    pub tmp: tempfile::TempDir,
    /// The object store as the ingester sees it (object paths in the
    /// catalog are relative to it).
    pub store: Arc<dyn ObjectStore>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pg: Option<PgSchema>,
    s3_prefix: Option<String>,
}

struct PgSchema {
    admin: sqlx::PgPool,
    schema: String,
}

fn unique_suffix(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0);
    format!(
        "{name}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The S3 settings of the shared test server, if configured.
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl S3Env {
    pub fn from_env() -> Option<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Self {
            endpoint: get("SLUICE_TEST_S3_ENDPOINT")?,
            bucket: get("SLUICE_TEST_S3_BUCKET")?,
            access_key: get("SLUICE_TEST_S3_ACCESS_KEY")?,
            secret_key: get("SLUICE_TEST_S3_SECRET_KEY")?,
            region: get("SLUICE_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        })
    }

    /// A client of `bucket` at `endpoint`, scoped to `prefix`.
    pub fn store(&self, endpoint: &str, prefix: &str) -> Arc<dyn ObjectStore> {
        let s3 = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .build()
            .expect("S3 client for the test server");
        Arc::new(PrefixStore::new(s3, prefix))
    }

    /// Ingester arguments and environment for `s3://bucket/prefix` at
    /// `endpoint` (the secret goes through the environment, not argv).
    pub fn ingester_config(
        &self,
        endpoint: &str,
        prefix: &str,
    ) -> (Vec<String>, Vec<(String, String)>) {
        (
            vec![
                "--object-store".into(),
                format!("s3://{}/{prefix}", self.bucket),
                "--s3-endpoint".into(),
                endpoint.into(),
                "--s3-region".into(),
                self.region.clone(),
                "--s3-access-key-id".into(),
                self.access_key.clone(),
            ],
            vec![(
                "SLUICE_S3_SECRET_ACCESS_KEY".into(),
                self.secret_key.clone(),
            )],
        )
    }
}

impl Backend {
    /// `None` (with the reason printed) when the PostgreSQL/S3 test servers
    /// are not configured.
    pub async fn new(kind: Kind, name: &str) -> Option<Self> {
        let tmp = tempfile::tempdir().expect("tempdir");
        match kind {
            Kind::Local => {
                let objects = tmp.path().join("data").join("objects");
                std::fs::create_dir_all(&objects).expect("create the object directory");
                let store: Arc<dyn ObjectStore> = Arc::new(
                    LocalFileSystem::new_with_prefix(&objects).expect("local object store"),
                );
                Some(Self {
                    kind,
                    tmp,
                    store,
                    args: Vec::new(),
                    env: Vec::new(),
                    pg: None,
                    s3_prefix: None,
                })
            }
            Kind::PgS3 => {
                let Ok(pg_url) = std::env::var("SLUICE_TEST_POSTGRES_URL") else {
                    eprintln!("skipped: SLUICE_TEST_POSTGRES_URL is not set");
                    return None;
                };
                let Some(s3) = S3Env::from_env() else {
                    eprintln!("skipped: SLUICE_TEST_S3_* are not set");
                    return None;
                };
                let suffix = unique_suffix(name);
                let schema = format!("e2e_{suffix}");
                let admin = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&pg_url)
                    .await
                    .expect("connect to SLUICE_TEST_POSTGRES_URL");
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await
                    .expect("create the test's PostgreSQL schema");
                let sep = if pg_url.contains('?') { '&' } else { '?' };
                let catalog = format!("{pg_url}{sep}options[search_path]={schema}");
                let prefix = format!("e2e/{suffix}");
                let (mut args, env) = s3.ingester_config(&s3.endpoint, &prefix);
                args.extend(["--catalog".to_string(), catalog]);
                Some(Self {
                    kind,
                    tmp,
                    store: s3.store(&s3.endpoint, &prefix),
                    args,
                    env,
                    pg: Some(PgSchema { admin, schema }),
                    s3_prefix: Some(prefix),
                })
            }
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// An ingester on this backend (not started).
    pub fn ingester(&self) -> Ingester {
        self.ingester_in(&self.data_dir())
    }

    /// An ingester with its own data directory on this backend's catalog
    /// and object store.
    pub fn ingester_in(&self, data_dir: &Path) -> Ingester {
        let mut ing = Ingester::new(data_dir);
        for a in &self.args {
            ing = ing.arg(a.clone());
        }
        for (k, v) in &self.env {
            ing = ing.with_env(k.clone(), v.clone());
        }
        ing
    }

    /// Every object under `prefix` (relative to the ingester's store root).
    pub async fn list_objects(&self, prefix: &str) -> Vec<object_store::ObjectMeta> {
        let p = object_store::path::Path::from(prefix);
        let mut v: Vec<_> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .expect("list the object store");
        v.sort_by(|a, b| a.location.cmp(&b.location));
        v
    }

    /// Drops the PostgreSQL schema and deletes the S3 objects (best effort:
    /// a failing cleanup is reported, not fatal).
    pub async fn cleanup(self) {
        if let Some(pg) = self.pg {
            if let Err(e) = sqlx::query(&format!("DROP SCHEMA {} CASCADE", pg.schema))
                .execute(&pg.admin)
                .await
            {
                eprintln!("could not drop schema {}: {e}", pg.schema);
            }
            pg.admin.close().await;
        }
        if self.s3_prefix.is_some() {
            let all: Vec<_> = match self.store.list(None).try_collect::<Vec<_>>().await {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("could not list test objects for cleanup: {e}");
                    return;
                }
            };
            for o in all {
                if let Err(e) = self.store.delete(&o.location).await {
                    eprintln!("could not delete {}: {e}", o.location);
                }
            }
        }
    }
}

/// Runs `test` on a fresh backend of `kind` within `limit`, then cleans up.
pub async fn run<F, Fut>(kind: Kind, name: &str, limit: std::time::Duration, test: F)
where
    F: FnOnce(Arc<Backend>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(backend) = Backend::new(kind, name).await else {
        return;
    };
    let backend = Arc::new(backend);
    let started = std::time::Instant::now();
    sluice_e2e::within(limit, name, test(Arc::clone(&backend))).await;
    eprintln!(
        "{name} ({kind:?}): passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if let Ok(b) = Arc::try_unwrap(backend) {
        b.cleanup().await;
    }
}

/// A private `s3s-fs` server, for tests that stop or kill their object
/// store. Killed when dropped.
pub struct OwnS3 {
    pub root: tempfile::TempDir,
    pub endpoint: String,
    pub env: S3Env,
    port: u16,
    child: Option<std::process::Child>,
}

/// The `s3s-fs` binary: `SLUICE_S3S_FS_BIN`, `$SLUICE_TOOLS_DIR/bin`, the
/// test script's cache, or `PATH`.
fn s3s_fs_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_S3S_FS_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("SLUICE_TOOLS_DIR") {
        candidates.push(PathBuf::from(d).join("bin/s3s-fs"));
    }
    if let Some(d) = std::env::var_os("SLUICE_CACHE_DIR") {
        candidates.push(PathBuf::from(d).join("tools/bin/s3s-fs"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(h).join(".cache/sluice/tools/bin/s3s-fs"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("s3s-fs")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

impl OwnS3 {
    /// Starts a server on a free port. `None` (reason printed) when there
    /// is no `s3s-fs` binary and no shared S3 test server is configured
    /// either; with a shared server configured the binary must exist.
    pub async fn start() -> Option<Self> {
        let Some(bin) = s3s_fs_bin() else {
            assert!(
                std::env::var_os("SLUICE_TEST_S3_ENDPOINT").is_none(),
                "S3 tests are configured but no s3s-fs binary was found \
                 (set SLUICE_S3S_FS_BIN or SLUICE_TOOLS_DIR)"
            );
            eprintln!("skipped: no s3s-fs binary (SLUICE_S3S_FS_BIN)");
            return None;
        };
        let root = tempfile::tempdir().expect("tempdir");
        let env = S3Env {
            endpoint: String::new(),
            bucket: "own-bucket".into(),
            access_key: "own-access-key".into(),
            secret_key: "own-secret-key".into(),
            region: "us-east-1".into(),
        };
        std::fs::create_dir_all(root.path().join(&env.bucket)).expect("bucket directory");
        let port = sluice_e2e::free_addr().port();
        let mut s = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
            env,
            port,
            child: None,
        };
        s.env.endpoint = s.endpoint.clone();
        s.spawn(&bin).await;
        Some(s)
    }

    async fn spawn(&mut self, bin: &Path) {
        let log = std::fs::File::create(self.root.path().join("s3s-fs.log")).expect("log file");
        let child = std::process::Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.env.access_key])
            .args(["--secret-key", &self.env.secret_key])
            .arg(self.root.path())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn s3s-fs");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        sluice_e2e::poll_until(
            std::time::Duration::from_secs(30),
            "s3s-fs listening",
            || async {
                tokio::net::TcpStream::connect(&addr)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await;
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGSTOP: connections are accepted by the kernel, never answered.
    pub fn pause(&self) {
        // SAFETY: signalling our own child process by pid.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGSTOP) }, 0);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        // SAFETY: signalling our own child process by pid.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGCONT) }, 0);
    }

    /// Kills the server (connections refused from now on).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and root.
    pub async fn restart(&mut self) {
        self.kill();
        let bin = s3s_fs_bin().expect("s3s-fs binary");
        self.spawn(&bin).await;
    }
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        self.kill();
    }
}
