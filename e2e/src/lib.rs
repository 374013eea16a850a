//! Harness for end-to-end tests: runs the real `sluice-ingester` binary as
//! a child process and talks to it only through its public APIs (gRPC,
//! Flight, HTTP, CLI, files on disk).
//!
//! The binary is taken from `SLUICE_INGESTER_BIN` if set, else built once
//! per test process with `cargo build --workspace --bins --tests` (what
//! `scripts/test.sh` builds first) into the workspace's target dir.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::record_batch::RecordBatch;
use arrow_flight::Ticket;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use sluice_proto::v1;

pub mod data;
pub mod loadgen;
pub mod pki;
pub mod soak;

/// What a client knows about one write it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered OK: durable, must be served exactly once.
    Acked,
    /// The server answered with a refusal: nothing may be applied.
    Refused,
    /// No answer (the process died): all rows or none, at most once.
    Unknown,
}

/// Whether `s`, the answer to a write, is one of the ingester's refusals,
/// which apply none of the write: invalid input, a resource limit, or
/// `UNAVAILABLE` saying the ingester is not accepting writes (draining,
/// shutting down). Any other error leaves the outcome unknown.
pub fn is_refusal(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
    ) || (s.code() == tonic::Code::Unavailable && s.message().starts_with("the ingester is"))
}

/// The `sluice-ingester` binary.
pub fn ingester_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SLUICE_INGESTER_BIN") {
            return PathBuf::from(p);
        }
        let root = manifest_dir()
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            // The same package selection as `scripts/test.sh` builds, so the
            // dependencies' features unify the same way and nothing is
            // rebuilt with another feature set.
            .args(["build", "--workspace", "--bins", "--tests"])
            .current_dir(&root)
            .status()
            .expect("run cargo build for sluice-ingester");
        assert!(status.success(), "building sluice-ingester failed");
        target.join("debug").join("sluice-ingester")
    })
}

/// A free localhost port for a server a test starts.
///
/// Chosen at random *below* the kernel's ephemeral range and checked free
/// by binding it, then released. A port from the ephemeral range (what
/// binding port 0 gives) can be handed to any outgoing connection of any
/// test between its release and the server's bind, and then the server
/// fails with "Address already in use" (seen once in `soak_with_chaos`);
/// below the range only another test's pick can collide.
pub fn free_addr() -> SocketAddr {
    use rand::Rng;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut rng = rand::rng();
    if low > 10_000 {
        for _ in 0..1000 {
            let port = rng.random_range(10_000..low);
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                return l.local_addr().expect("local addr");
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

/// One ingester process.
pub struct Ingester {
    pub data_dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    log_path: PathBuf,
    starts: u32,
}

impl Ingester {
    /// Configured, not started.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        let log_path = data_dir.with_extension("log");
        Self {
            data_dir,
            grpc: free_addr(),
            http: free_addr(),
            extra_args: Vec::new(),
            env: Vec::new(),
            child: None,
            log_path,
            starts: 0,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.extra_args.push(a.into());
        self
    }

    /// Adds an environment variable for the process.
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The log file of the current (or last) run.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The WAL directory (`<data>/wal`).
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }

    /// Panics if the log shows a panic (`panicked at`).
    pub fn assert_no_panic(&self) {
        let log = self.log();
        assert!(
            !log.contains("panicked"),
            "the ingester panicked; log:\n{log}"
        );
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The log of the current (or last) run, without ANSI colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    /// Spawns the process without waiting for readiness.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(&self.log_path).context("create log file")?;
        let mut cmd = Command::new(ingester_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--grpc-bind")
            .arg(self.grpc.to_string())
            .arg("--http-bind")
            .arg(self.http.to_string())
            .args(&self.extra_args)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().context("spawn sluice-ingester")?);
        Ok(())
    }

    /// Spawns and waits until `/ready` answers 200.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready(Duration::from_secs(60)).await
    }

    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/ready", self.http_url());
        loop {
            if let Some(status) = self.try_exit_status()? {
                bail!(
                    "ingester exited with {status} before ready; log:\n{}",
                    self.log()
                );
            }
            if let Ok(200) = http_get_status(&url).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("ingester not ready after {timeout:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `Some(exit status)` if the process has exited.
    pub fn try_exit_status(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        match &mut self.child {
            None => Ok(None),
            Some(c) => Ok(c.try_wait()?),
        }
    }

    /// Waits for the process to exit by itself (e.g. a start-up error).
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit_status()? {
                self.child = None;
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("ingester still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let Some(c) = &self.child else {
            bail!("not running")
        };
        let pid = c.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        self.wait_exit(Duration::from_secs(30)).await
    }

    pub async fn write_client(
        &self,
    ) -> anyhow::Result<v1::write_service_client::WriteServiceClient<tonic::transport::Channel>>
    {
        Ok(
            v1::write_service_client::WriteServiceClient::connect(self.grpc_url())
                .await?
                .max_encoding_message_size(64 << 20),
        )
    }

    pub async fn control_client(
        &self,
    ) -> anyhow::Result<v1::control_service_client::ControlServiceClient<tonic::transport::Channel>>
    {
        Ok(v1::control_service_client::ControlServiceClient::connect(self.grpc_url()).await?)
    }

    pub async fn catalog_client(
        &self,
    ) -> anyhow::Result<v1::catalog_service_client::CatalogServiceClient<tonic::transport::Channel>>
    {
        Ok(v1::catalog_service_client::CatalogServiceClient::connect(self.grpc_url()).await?)
    }

    /// `CatalogService.GetTableSchema`.
    pub async fn table_schema(
        &self,
        namespace: &str,
        table: &str,
    ) -> Result<v1::TableSchema, tonic::Status> {
        let mut c = self
            .catalog_client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        c.get_table_schema(v1::GetTableSchemaRequest {
            namespace: namespace.into(),
            table: table.into(),
        })
        .await
        .map(|r| r.into_inner())
    }

    /// The names of a table's columns in the catalog; empty if the
    /// namespace or table does not exist.
    pub async fn column_names(&self, namespace: &str, table: &str) -> anyhow::Result<Vec<String>> {
        match self.table_schema(namespace, table).await {
            Ok(s) => Ok(s.columns.into_iter().map(|c| c.name).collect()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(Vec::new()),
            Err(s) => bail!("GetTableSchema {namespace}.{table}: {s}"),
        }
    }

    /// The sum of a Prometheus metric's samples on `/metrics` (all label
    /// sets); `None` if the metric is absent.
    pub async fn metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        let (status, text) = http_request(
            "GET",
            &format!("{}/metrics", self.http_url()),
            Vec::new(),
            false,
        )
        .await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        let mut sum = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let metric = series.split('{').next().unwrap_or(series);
            if metric == name {
                *sum.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        Ok(sum)
    }

    /// `ControlService.Status`.
    pub async fn status(&self) -> anyhow::Result<v1::StatusResponse> {
        let mut c = self.control_client().await?;
        Ok(c.status(v1::StatusRequest {}).await?.into_inner())
    }

    /// `ControlService.RotateWal`.
    pub async fn rotate_wal(&self) -> anyhow::Result<v1::RotateWalResponse> {
        let mut c = self.control_client().await?;
        Ok(c.rotate_wal(v1::RotateWalRequest {}).await?.into_inner())
    }

    /// `ControlService.Persist` of everything.
    pub async fn persist_all(&self, wait: bool) -> anyhow::Result<v1::PersistResponse> {
        let mut c = self.control_client().await?;
        Ok(c.persist(v1::PersistRequest {
            wait,
            ..Default::default()
        })
        .await?
        .into_inner())
    }

    /// `ControlService.Persist` of one namespace (and table, if not empty).
    pub async fn persist(
        &self,
        namespace: &str,
        table: &str,
        wait: bool,
    ) -> anyhow::Result<v1::PersistResponse> {
        let mut c = self.control_client().await?;
        Ok(c.persist(v1::PersistRequest {
            namespace: namespace.into(),
            table: table.into(),
            wait,
        })
        .await?
        .into_inner())
    }

    /// `ControlService.PrepareShutdown`.
    pub async fn prepare_shutdown(
        &self,
        wait: bool,
    ) -> Result<v1::PrepareShutdownResponse, tonic::Status> {
        let mut c = self
            .control_client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        c.prepare_shutdown(v1::PrepareShutdownRequest { wait })
            .await
            .map(|r| r.into_inner())
    }

    /// `ControlService.ResumeIngest`.
    pub async fn resume_ingest(&self) -> anyhow::Result<v1::ResumeIngestResponse> {
        let mut c = self.control_client().await?;
        Ok(c.resume_ingest(v1::ResumeIngestRequest {})
            .await?
            .into_inner())
    }

    /// `CatalogService.ListParquetFiles` of a table.
    pub async fn parquet_files(
        &self,
        namespace: &str,
        table: &str,
    ) -> Result<Vec<v1::ParquetFile>, tonic::Status> {
        let mut c = self
            .catalog_client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        c.list_parquet_files(v1::ListParquetFilesRequest {
            namespace: namespace.into(),
            table: table.into(),
        })
        .await
        .map(|r| r.into_inner().files)
    }

    /// The WAL segment files (`*.wal`) in the WAL directory, sorted.
    pub fn wal_segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.wal_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The resident set size of the running process (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Rows of a table (0 if the namespace or table does not exist).
    pub async fn count_rows(
        &self,
        namespace: &str,
        table: &str,
        include_persisted: bool,
    ) -> anyhow::Result<usize> {
        let r = self
            .query(v1::QueryRequest {
                namespace: namespace.into(),
                table: table.into(),
                include_persisted,
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => Ok(r.rows()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(0),
            Err(s) => bail!("query {namespace}.{table}: {s}"),
        }
    }

    /// Writes line protocol over gRPC with a timestamp precision.
    pub async fn write_lp_bytes(
        &self,
        namespace: &str,
        lp: impl Into<bytes::Bytes>,
        precision: v1::Precision,
    ) -> Result<v1::WriteResponse, tonic::Status> {
        let mut c = self
            .write_client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        c.write(v1::WriteRequest {
            namespace: namespace.into(),
            payload: Some(v1::write_request::Payload::LineProtocol(lp.into())),
            precision: precision as i32,
        })
        .await
        .map(|r| r.into_inner())
    }

    /// Writes line protocol over HTTP with `precision=` (if given); `query`
    /// is appended to the URL as is (e.g. `bucket=a%2Fb`).
    pub async fn http_write_query(
        &self,
        query: &str,
        body: Vec<u8>,
        gzip: bool,
    ) -> anyhow::Result<(u16, String)> {
        http_post(
            &format!("{}/api/v2/write?{query}", self.http_url()),
            body,
            gzip,
        )
        .await
    }

    /// Writes line protocol over gRPC.
    pub async fn write_lp(
        &self,
        namespace: &str,
        lp: &str,
    ) -> Result<v1::WriteResponse, tonic::Status> {
        let mut c = self
            .write_client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        write_lp(&mut c, namespace, lp.as_bytes()).await
    }

    /// Writes line protocol over HTTP `/api/v2/write`; returns (status, body).
    pub async fn http_write(
        &self,
        bucket: &str,
        body: Vec<u8>,
        gzip: bool,
    ) -> anyhow::Result<(u16, String)> {
        http_post(
            &format!("{}/api/v2/write?bucket={bucket}", self.http_url()),
            body,
            gzip,
        )
        .await
    }

    /// A Flight query of the whole table (or `columns`, `range`).
    pub async fn query(&self, req: v1::QueryRequest) -> Result<QueryResult, tonic::Status> {
        query(&self.grpc_url(), req).await
    }

    /// All rows of a table as batches.
    pub async fn query_table(
        &self,
        namespace: &str,
        table: &str,
    ) -> Result<QueryResult, tonic::Status> {
        self.query(v1::QueryRequest {
            namespace: namespace.into(),
            table: table.into(),
            ..Default::default()
        })
        .await
    }

    /// All rows of a table, buffered and persisted, deduplicated
    /// (`include_persisted`).
    pub async fn query_table_with_persisted(
        &self,
        namespace: &str,
        table: &str,
    ) -> Result<QueryResult, tonic::Status> {
        self.query(v1::QueryRequest {
            namespace: namespace.into(),
            table: table.into(),
            include_persisted: true,
            ..Default::default()
        })
        .await
    }
}

impl Drop for Ingester {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn write_lp(
    c: &mut v1::write_service_client::WriteServiceClient<tonic::transport::Channel>,
    namespace: &str,
    lp: &[u8],
) -> Result<v1::WriteResponse, tonic::Status> {
    c.write(v1::WriteRequest {
        namespace: namespace.into(),
        payload: Some(v1::write_request::Payload::LineProtocol(
            bytes::Bytes::copy_from_slice(lp),
        )),
        precision: 0,
    })
    .await
    .map(|r| r.into_inner())
}

/// `s` without ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Runs `fut`, failing the test if it takes longer than `limit`. The
/// binary under test is built (once per process) before the clock starts,
/// so a cold build does not count against the limit.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    ingester_bin();
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {limit:?}"),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing the test
/// with `what` and the last `Err` seen if `limit` passes first.
pub async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("{what}: not reached within {limit:?}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Gzip-compresses `data` with the system's `gzip` (no extra dependency).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("gzip output");
    feeder
        .join()
        .expect("gzip feeder thread")
        .expect("write to gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

/// A query's answer: batches plus each partition's metadata.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub batches: Vec<RecordBatch>,
    pub partitions: Vec<v1::PartitionMetadata>,
}

impl QueryResult {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

pub async fn query(url: &str, req: v1::QueryRequest) -> Result<QueryResult, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = FlightServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let stream = client
        .do_get(Ticket {
            ticket: req.encode_to_vec().into(),
        })
        .await?
        .into_inner();
    let mut decoder = FlightDataDecoder::new(
        stream.map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s))),
    );
    let mut out = QueryResult::default();
    while let Some(msg) = decoder.next().await {
        let msg = msg.map_err(|e| tonic::Status::internal(e.to_string()))?;
        match msg.payload {
            DecodedPayload::Schema(_) => {
                if !msg.app_metadata().is_empty() {
                    let m = v1::PartitionMetadata::decode(msg.app_metadata())
                        .map_err(|e| tonic::Status::internal(e.to_string()))?;
                    out.partitions.push(m);
                }
            }
            DecodedPayload::RecordBatch(b) => out.batches.push(b),
            DecodedPayload::None => {}
        }
    }
    Ok(out)
}

async fn http_get_status(url: &str) -> anyhow::Result<u16> {
    let (status, _) = http_request("GET", url, Vec::new(), false).await?;
    Ok(status)
}

pub async fn http_post(url: &str, body: Vec<u8>, gzip: bool) -> anyhow::Result<(u16, String)> {
    http_request("POST", url, body, gzip).await
}

/// A minimal HTTP/1.1 client (one request per connection), enough for
/// tests and free of another dependency.
pub async fn http_request(
    method: &str,
    url: &str,
    body: Vec<u8>,
    gzip: bool,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if gzip {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(&body).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .context("status line")?
        .parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// This package's directory. Cargo sets `CARGO_MANIFEST_DIR` when it runs a
/// test, so the checkout being tested wins over the path compiled in: a
/// target dir shared by checkouts at different paths can hand one of them a
/// test binary built in the other, whose compiled-in path may be gone.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
