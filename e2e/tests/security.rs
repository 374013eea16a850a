//! Authentication and TLS against the real binary: every API with no token,
//! a wrong token and a token without the scope, over gRPC, HTTP and the CLI;
//! refusals that never reveal whether a namespace exists; tokens and
//! certificates reloaded from their files; TLS with an expired server
//! certificate, a plain-text client, and mutual TLS with missing and expired
//! client certificates. Certificates are made with the `openssl` CLI.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::Ticket;
use arrow_flight::flight_service_client::FlightServiceClient;
use prost::Message;
use sluice_e2e::pki::Pki;
use sluice_e2e::{Ingester, ingester_bin, within};
use sluice_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const W: &str = "tok-write-1";
const Q: &str = "tok-query-1";
const C: &str = "tok-control-1";
const ALL: &str = "tok-all-1";

// ---------------------------------------------------------------- helpers

/// Runs the CLI (killed if late) with no token or TLS settings inherited.
async fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(ingester_bin());
    cmd.args(args).kill_on_drop(true);
    for k in [
        "SLUICE_TOKEN",
        "SLUICE_CA_CERT",
        "SLUICE_CLIENT_CERT",
        "SLUICE_CLIENT_KEY",
        "SLUICE_ADDR",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let what = format!("sluice-ingester {}", args.join(" "));
    within(Duration::from_secs(60), &what, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_cli_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

fn assert_cli_fails(o: &Output, what: &str, needle: &str) {
    assert!(!o.status.success(), "{what}: succeeded but should not");
    assert!(
        stderr(o).contains(needle),
        "{what}: expected `{needle}` in stderr:\n{}",
        stderr(o)
    );
}

/// The `token hash` line for a token, made by the CLI itself.
async fn token_line(token: &str, scopes: &str) -> String {
    let mut cmd = tokio::process::Command::new(ingester_bin());
    cmd.args(["token", "hash", "--scopes", scopes])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn token hash");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(token.as_bytes()).await.expect("write");
    drop(stdin);
    let out = within(
        Duration::from_secs(30),
        "token hash",
        child.wait_with_output(),
    )
    .await
    .expect("token hash");
    assert_cli_ok(&out, "token hash");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

async fn write_tokens_file(path: &Path, tokens: &[(&str, &str)]) {
    let mut text = String::from("# test tokens\n");
    for (t, scopes) in tokens {
        text.push_str(&token_line(t, scopes).await);
        text.push('\n');
    }
    // Write then rename, as a Secret update would swap the file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write tokens");
    std::fs::rename(&tmp, path).expect("rename tokens");
}

/// Adds `authorization: Bearer <token>` when given.
#[derive(Clone)]
struct Bearer(Option<String>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            let v = format!("Bearer {t}").parse().expect("ascii token");
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

async fn channel(url: &str, token: Option<&str>) -> Authed {
    let ch = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect");
    InterceptedService::new(ch, Bearer(token.map(str::to_owned)))
}

/// A fresh timestamp per write, so no two accepted rows are duplicates.
fn next_ts() -> i64 {
    static TS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
    TS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

async fn grpc_write(url: &str, token: Option<&str>, ns: &str) -> Result<(), tonic::Status> {
    let mut c = v1::write_service_client::WriteServiceClient::new(channel(url, token).await);
    let t = next_ts();
    c.write(v1::WriteRequest {
        namespace: ns.into(),
        payload: Some(v1::write_request::Payload::LineProtocol(
            format!("cpu,host=a usage=1 {t}\ncpu,host=b usage=2 {t}\n").into(),
        )),
        precision: 0,
    })
    .await
    .map(|_| ())
}

/// Rows of a Flight query, or its refusal.
async fn grpc_query(url: &str, token: Option<&str>, ns: &str) -> Result<usize, tonic::Status> {
    use futures::TryStreamExt;
    let mut c = FlightServiceClient::new(channel(url, token).await);
    let req = v1::QueryRequest {
        namespace: ns.into(),
        table: "cpu".into(),
        ..Default::default()
    };
    let stream = c
        .do_get(Ticket {
            ticket: req.encode_to_vec().into(),
        })
        .await?
        .into_inner();
    let batches: Vec<_> = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s))),
    )
    .try_collect()
    .await
    .map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

async fn grpc_status(url: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut c = v1::control_service_client::ControlServiceClient::new(channel(url, token).await);
    c.status(v1::StatusRequest {}).await.map(|_| ())
}

async fn grpc_namespaces(url: &str, token: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    let mut c = v1::catalog_service_client::CatalogServiceClient::new(channel(url, token).await);
    let r = c
        .list_namespaces(v1::ListNamespacesRequest {})
        .await?
        .into_inner();
    Ok(r.namespaces.into_iter().map(|n| n.name).collect())
}

fn code_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

/// One HTTP/1.1 request (plain or TLS) with optional headers; returns
/// (status, body).
async fn http(
    addr: std::net::SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut resp = Vec::new();
    match tls {
        None => {
            let mut s = tcp;
            s.write_all(head.as_bytes()).await?;
            s.write_all(body).await?;
            s.read_to_end(&mut resp).await?;
        }
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let mut s = tls.connect(name, tcp).await?;
            s.write_all(head.as_bytes()).await?;
            s.write_all(body).await?;
            s.flush().await?;
            // A peer that closes without close_notify is fine here.
            let _ = s.read_to_end(&mut resp).await;
        }
    }
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

async fn http_write(
    addr: std::net::SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
    auth: Option<&str>,
    bucket: &str,
) -> (u16, String) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    http(
        addr,
        tls,
        "POST",
        &format!("/api/v2/write?bucket={bucket}"),
        &headers,
        format!("cpu,host=h usage=3 {}\n", next_ts()).as_bytes(),
    )
    .await
    .expect("HTTP write")
}

/// Polls `cond` until it holds (generous: CI is slow and shared).
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not within 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- certificates

/// The ingester's test PKI: CA `ca`, server certificates `server` and
/// `server-expired` for localhost / 127.0.0.1, client certificates `client`
/// and `client-expired`.
struct Certs {
    pki: Pki,
}

impl Certs {
    fn path(&self, name: &str) -> PathBuf {
        self.pki.path(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn new(dir: &Path) -> Self {
        let pki = Pki::new(dir);
        let san = "DNS:localhost,IP:127.0.0.1";
        pki.ca("ca");
        pki.server("server", "ca", san);
        pki.expired_server("server-expired", "ca", san);
        pki.client("client", "ca", "localhost");
        pki.expired_client("client-expired", "ca", "localhost");
        Self { pki }
    }

    /// Installs `<name>.pem/.key` as the server's `live.pem/.key` (atomic
    /// renames, like a Secret update).
    fn install_server(&self, name: &str) {
        for ext in ["key", "pem"] {
            let tmp = self.path(&format!("live.{ext}.tmp"));
            std::fs::copy(self.path(&format!("{name}.{ext}")), &tmp).expect("copy");
            std::fs::rename(&tmp, self.path(&format!("live.{ext}"))).expect("rename");
        }
    }

    /// A test-side TLS client trusting the CA (and presenting `client`).
    fn connector(&self, client: Option<&str>) -> tokio_rustls::TlsConnector {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("ca") {
            roots.add(c.expect("ca cert")).expect("add ca");
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match client {
            None => b.with_no_client_auth(),
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .expect("client cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert");
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key")))
                    .expect("client key");
                b.with_client_auth_cert(chain, key).expect("client auth")
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// Waits for `/ready` over HTTPS.
async fn wait_ready_tls(ing: &mut Ingester, tls: &tokio_rustls::TlsConnector) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = ing.try_exit_status().expect("status") {
            panic!("ingester exited with {s}; log:\n{}", ing.log());
        }
        if let Ok((200, _)) = http(ing.http, Some(tls), "GET", "/ready", &[], b"").await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not ready over TLS; log:\n{}",
            ing.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_every_api_without_revealing_namespaces() {
    within(Duration::from_secs(240), "tokens", tokens()).await;
}

async fn tokens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tokens = tmp.path().join("tokens");
    write_tokens_file(
        &tokens,
        &[(W, "write"), (Q, "query"), (C, "control"), (ALL, "all")],
    )
    .await;
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--tokens-file")
        .arg(tokens.display().to_string())
        .arg("--metrics-require-token")
        .arg("--reload-interval")
        .arg("100ms");
    // `start` waits for /ready without a token: probes stay open.
    ing.start().await.expect("start");
    let url = ing.grpc_url();

    // gRPC write: no token, wrong token, wrong scope, right scope.
    let (code, _) = code_of(grpc_write(&url, None, "sec").await);
    assert_eq!(code, Code::Unauthenticated);
    let (code, _) = code_of(grpc_write(&url, Some("nope"), "sec").await);
    assert_eq!(code, Code::Unauthenticated);
    for t in [Q, C] {
        let (code, _) = code_of(grpc_write(&url, Some(t), "sec").await);
        assert_eq!(code, Code::PermissionDenied, "token {t}");
    }
    grpc_write(&url, Some(W), "sec").await.expect("write");
    grpc_write(&url, Some(ALL), "sec").await.expect("write");

    // Nothing was written by the refused calls: only two accepted writes of
    // two rows each.
    assert_eq!(grpc_query(&url, Some(Q), "sec").await.expect("query"), 4);

    // Refusals are identical for an existing and a missing namespace.
    for (token, want) in [
        (None, Code::Unauthenticated),
        (Some("nope"), Code::Unauthenticated),
        (Some(W), Code::PermissionDenied),
        (Some(C), Code::PermissionDenied),
    ] {
        let exists = code_of(grpc_query(&url, token, "sec").await);
        let missing = code_of(grpc_query(&url, token, "no_such_ns").await);
        assert_eq!(exists.0, want, "{token:?}");
        assert_eq!(exists, missing, "query refusal differs for {token:?}");
    }
    for token in [None, Some("nope"), Some(Q)] {
        let exists = code_of(grpc_write(&url, token, "sec").await);
        let missing = code_of(grpc_write(&url, token, "no_such_ns").await);
        assert_eq!(exists, missing, "write refusal differs for {token:?}");
    }

    // Catalog needs `query`, control needs `control`.
    assert_eq!(
        code_of(grpc_namespaces(&url, None).await).0,
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(grpc_namespaces(&url, Some(W)).await).0,
        Code::PermissionDenied
    );
    let names = grpc_namespaces(&url, Some(Q)).await.expect("namespaces");
    assert!(names.contains(&"sec".to_owned()), "{names:?}");
    assert_eq!(
        code_of(grpc_status(&url, None).await).0,
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(grpc_status(&url, Some(Q)).await).0,
        Code::PermissionDenied
    );
    grpc_status(&url, Some(C))
        .await
        .expect("status with control");

    // HTTP: probes open, /metrics and writes need tokens.
    let a = ing.http;
    for path in ["/health", "/ready"] {
        let (s, _) = http(a, None, "GET", path, &[], b"").await.expect("probe");
        assert_eq!(s, 200, "{path}");
    }
    let (s, body) = http(a, None, "GET", "/metrics", &[], b"")
        .await
        .expect("metrics");
    assert_eq!(s, 401, "{body}");
    let (s, _) = http(
        a,
        None,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {Q}"))],
        b"",
    )
    .await
    .expect("metrics");
    assert_eq!(s, 200);
    let (s, body) = http_write(a, None, None, "sec").await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    let (s, _) = http_write(a, None, Some("Token nope"), "sec").await;
    assert_eq!(s, 401);
    let (s, body) = http_write(a, None, Some(&format!("Token {Q}")), "sec").await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    let missing = http_write(a, None, Some(&format!("Token {Q}")), "no_such_ns").await;
    assert_eq!((s, body), missing, "HTTP refusal differs by namespace");
    let (s, body) = http_write(a, None, Some(&format!("Token {W}")), "sec").await;
    assert_eq!(s, 204, "{body}");
    let (s, body) = http_write(a, None, Some(&format!("Bearer {W}")), "sec").await;
    assert_eq!(s, 204, "{body}");
    assert_eq!(grpc_query(&url, Some(Q), "sec").await.expect("query"), 6);

    // The CLI: --token and SLUICE_TOKEN.
    let out = cli(&["status", "--addr", &url], &[]).await;
    assert_cli_fails(&out, "status without token", "UNAUTHENTICATED");
    let out = cli(&["status", "--addr", &url, "--token", Q], &[]).await;
    assert_cli_fails(&out, "status with a query token", "PERMISSION_DENIED");
    let out = cli(&["status", "--addr", &url, "--token", C], &[]).await;
    assert_cli_ok(&out, "status with --token");
    let out = cli(&["status", "--addr", &url], &[("SLUICE_TOKEN", C)]).await;
    assert_cli_ok(&out, "status with SLUICE_TOKEN");

    // Rotating the file: the old write token stops working, the new starts.
    write_tokens_file(&tokens, &[("tok-write-2", "write"), (Q, "query")]).await;
    eventually("new token accepted", || async {
        grpc_write(&url, Some("tok-write-2"), "sec").await.is_ok()
    })
    .await;
    assert_eq!(
        code_of(grpc_write(&url, Some(W), "sec").await).0,
        Code::Unauthenticated
    );
    // A broken file keeps the tokens in force.
    std::fs::write(&tokens, "this is not a tokens file\n").expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    grpc_write(&url, Some("tok-write-2"), "sec")
        .await
        .expect("previous tokens still valid");
    assert!(
        ing.log().contains("keeping the previous tokens"),
        "{}",
        ing.log()
    );
    ing.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_on_a_bad_tokens_file() {
    within(Duration::from_secs(60), "bad tokens", async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tokens = tmp.path().join("tokens");
        std::fs::write(&tokens, "# ok\nsha256:abc write\n").expect("write");
        let mut ing = Ingester::new(tmp.path().join("data"))
            .arg("--tokens-file")
            .arg(tokens.display().to_string());
        ing.spawn().expect("spawn");
        let status = ing.wait_exit(Duration::from_secs(30)).await.expect("exits");
        assert!(!status.success());
        assert!(ing.log().contains("line 2"), "{}", ing.log());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_both_listeners_and_reloads_certificates() {
    within(Duration::from_secs(240), "tls", tls()).await;
}

async fn tls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = Certs::new(&tmp.path().join("certs"));
    certs.install_server("server");
    let tokens = tmp.path().join("tokens");
    write_tokens_file(&tokens, &[(ALL, "all")]).await;
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--tls-cert")
        .arg(certs.s("live.pem"))
        .arg("--tls-key")
        .arg(certs.s("live.key"))
        .arg("--tokens-file")
        .arg(tokens.display().to_string())
        .arg("--reload-interval")
        .arg("100ms");
    ing.spawn().expect("spawn");
    let tls = certs.connector(None);
    wait_ready_tls(&mut ing, &tls).await;
    let https = format!("https://localhost:{}", ing.grpc.port());
    let ca = certs.s("ca.pem");

    // The CLI over TLS, with the token.
    let out = cli(
        &["status", "--addr", &https, "--ca-cert", &ca, "--token", ALL],
        &[],
    )
    .await;
    assert_cli_ok(&out, "status over TLS");
    let out = cli(&["status", "--addr", &https, "--ca-cert", &ca], &[]).await;
    assert_cli_fails(&out, "TLS without token", "UNAUTHENTICATED");
    // Without the CA the server is not trusted.
    let out = cli(&["status", "--addr", &https, "--token", ALL], &[]).await;
    assert!(!out.status.success(), "untrusted server accepted");

    // A plain-text client gets nothing from the TLS listeners.
    let plain = tonic::transport::Endpoint::from_shared(ing.grpc_url())
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let r = match plain.connect().await {
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        Ok(ch) => {
            let mut c = v1::control_service_client::ControlServiceClient::new(
                InterceptedService::new(ch, Bearer(Some(ALL.into()))),
            );
            c.status(v1::StatusRequest {}).await.map(|_| ())
        }
    };
    assert!(r.is_err(), "plain-text gRPC against TLS succeeded");
    if let Ok((s, body)) = http(ing.http, None, "GET", "/health", &[], b"").await {
        panic!("plain HTTP against TLS answered {s}: {body}");
    }

    // HTTPS writes need the token too.
    let (s, _) = http_write(ing.http, Some(&tls), None, "tls").await;
    assert_eq!(s, 401);
    let (s, body) = http_write(ing.http, Some(&tls), Some(&format!("Token {ALL}")), "tls").await;
    assert_eq!(s, 204, "{body}");

    // Reload: an expired certificate is served (and refused by clients),
    // then a valid one again, all without a restart.
    certs.install_server("server-expired");
    eventually("expired certificate served", || async {
        let out = cli(
            &["status", "--addr", &https, "--ca-cert", &ca, "--token", ALL],
            &[],
        )
        .await;
        !out.status.success() && stderr(&out).to_lowercase().contains("expired")
    })
    .await;
    assert!(
        http(ing.http, Some(&tls), "GET", "/health", &[], b"")
            .await
            .is_err(),
        "a client accepted an expired certificate"
    );
    certs.install_server("server");
    eventually("valid certificate served again", || async {
        cli(
            &["status", "--addr", &https, "--ca-cert", &ca, "--token", ALL],
            &[],
        )
        .await
        .status
        .success()
    })
    .await;
    assert!(
        ing.log().contains("TLS certificate reloaded"),
        "{}",
        ing.log()
    );
    ing.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_missing_and_expired_client_certificates() {
    within(Duration::from_secs(240), "mtls", mtls()).await;
}

async fn mtls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = Certs::new(&tmp.path().join("certs"));
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--tls-cert")
        .arg(certs.s("server.pem"))
        .arg("--tls-key")
        .arg(certs.s("server.key"))
        .arg("--tls-client-ca")
        .arg(certs.s("ca.pem"));
    ing.spawn().expect("spawn");
    let with_cert = certs.connector(Some("client"));
    wait_ready_tls(&mut ing, &with_cert).await;
    let https = format!("https://127.0.0.1:{}", ing.grpc.port());
    let ca = certs.s("ca.pem");
    let (cc, ck) = (certs.s("client.pem"), certs.s("client.key"));
    let (ec, ek) = (certs.s("client-expired.pem"), certs.s("client-expired.key"));

    let out = cli(
        &[
            "status",
            "--addr",
            &https,
            "--ca-cert",
            &ca,
            "--client-cert",
            &cc,
            "--client-key",
            &ck,
        ],
        &[],
    )
    .await;
    assert_cli_ok(&out, "mTLS with a valid client certificate");
    let out = cli(&["status", "--addr", &https, "--ca-cert", &ca], &[]).await;
    assert!(!out.status.success(), "mTLS without a client certificate");
    let out = cli(
        &[
            "status",
            "--addr",
            &https,
            "--ca-cert",
            &ca,
            "--client-cert",
            &ec,
            "--client-key",
            &ek,
        ],
        &[],
    )
    .await;
    assert!(
        !out.status.success(),
        "mTLS with an expired client certificate"
    );

    // HTTPS: a valid certificate opens everything; without one only the
    // probes answer (kubelet cannot present one); an expired one fails the
    // handshake.
    let lp = b"m,h=a v=1i 1";
    for path in ["/health", "/ready", "/metrics"] {
        let (s, _) = http(ing.http, Some(&with_cert), "GET", path, &[], b"")
            .await
            .expect("HTTPS with a client certificate");
        assert_eq!(s, 200, "{path} with a client certificate");
    }
    let (s, _) = http(
        ing.http,
        Some(&with_cert),
        "POST",
        "/api/v2/write?bucket=mtls",
        &[],
        lp,
    )
    .await
    .expect("write with a client certificate");
    assert_eq!(s, 204, "write with a client certificate");
    let without = certs.connector(None);
    for path in ["/health", "/ready"] {
        let (s, _) = http(ing.http, Some(&without), "GET", path, &[], b"")
            .await
            .expect("probe without a client certificate");
        assert_eq!(s, 200, "{path} stays open without a client certificate");
    }
    let (s, body) = http(ing.http, Some(&without), "GET", "/metrics", &[], b"")
        .await
        .expect("metrics without a client certificate");
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("client certificate"), "{body}");
    let (s, body) = http(
        ing.http,
        Some(&without),
        "POST",
        "/api/v2/write?bucket=mtls_refused",
        &[],
        lp,
    )
    .await
    .expect("write without a client certificate");
    assert_eq!(s, 401, "{body}");
    // Applied with the certificate, not applied without it.
    let query = |ns: &'static str| {
        let (https, ca, cc, ck) = (https.clone(), ca.clone(), cc.clone(), ck.clone());
        async move {
            cli(
                &[
                    "query",
                    "--addr",
                    &https,
                    "--ca-cert",
                    &ca,
                    "--client-cert",
                    &cc,
                    "--client-key",
                    &ck,
                    "--namespace",
                    ns,
                    "--table",
                    "m",
                    "--format",
                    "csv",
                ],
                &[],
            )
            .await
        }
    };
    let out = query("mtls").await;
    assert_cli_ok(&out, "query with a client certificate");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2,
        "header and the one row written with a certificate"
    );
    let out = query("mtls_refused").await;
    assert!(
        !out.status.success(),
        "the refused write created its namespace"
    );
    let (s, _) = http(ing.http, Some(&with_cert), "GET", "/health", &[], b"")
        .await
        .expect("health with a client certificate");
    assert_eq!(s, 200);
    assert!(
        http(
            ing.http,
            Some(&certs.connector(Some("client-expired"))),
            "GET",
            "/health",
            &[],
            b""
        )
        .await
        .is_err(),
        "HTTPS with an expired client certificate answered"
    );
    let log = ing.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    ing.assert_no_panic();
}

/// Runs `sluice-loadgen` (no token or CA inherited) and returns its JSON
/// report.
async fn loadgen(dir: &Path, args: &[&str]) -> serde_json::Value {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let json = dir.join(format!(
        "loadgen-{}.json",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"));
    cmd.args(args)
        .arg("--quiet")
        .arg("--json")
        .arg(&json)
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_CA_CERT")
        .kill_on_drop(true);
    let what = format!("sluice-loadgen {}", args.join(" "));
    let out = within(Duration::from_secs(120), &what, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_cli_ok(&out, &what);
    let text = std::fs::read_to_string(&json).expect("loadgen report");
    serde_json::from_str(&text).expect("loadgen JSON")
}

/// `errors[status]` of a report (or of its `queries`), 0 if absent.
fn errors_of(v: &serde_json::Value, status: &str) -> u64 {
    v["errors"][status].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_over_tls_with_tokens() {
    within(Duration::from_secs(240), "loadgen over TLS", loadgen_tls()).await;
}

async fn loadgen_tls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = Certs::new(&tmp.path().join("certs"));
    certs.install_server("server");
    let tokens = tmp.path().join("tokens");
    write_tokens_file(&tokens, &[(W, "write"), (Q, "query")]).await;
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--tls-cert")
        .arg(certs.s("live.pem"))
        .arg("--tls-key")
        .arg(certs.s("live.key"))
        .arg("--tokens-file")
        .arg(tokens.display().to_string());
    ing.spawn().expect("spawn");
    wait_ready_tls(&mut ing, &certs.connector(None)).await;
    let ca = certs.s("ca.pem");
    let grpc = format!("https://localhost:{}", ing.grpc.port());
    let http_addr = format!("https://localhost:{}", ing.http.port());
    let rows = "20000";
    let common = [
        "--ca-cert",
        &ca,
        "--rows",
        rows,
        "--batch-lines",
        "1000",
        "--writers",
        "2",
        "--hosts",
        "50",
    ];

    // gRPC and HTTP over TLS with a write token: every row acknowledged
    // and queryable (over TLS, with the query token). Line protocol over
    // gRPC both ways: its payload handed to the connection as it is (the
    // default), and through tonic's encoder.
    for (target, addr, ns, extra) in [
        ("grpc-lp", &grpc, "lg_grpc", None),
        ("grpc-lp", &grpc, "lg_grpc_tonic", Some("--tonic-encode")),
        ("grpc-arrow", &grpc, "lg_arrow", None),
        ("http", &http_addr, "lg_http", None),
    ] {
        let mut args = vec!["--target", target, "--addr", addr, "--namespace", ns];
        args.extend(extra);
        args.extend(common);
        args.extend(["--token", W]);
        let r = loadgen(tmp.path(), &args).await;
        assert_eq!(r["rows"].as_u64(), Some(20_000), "{target}: {r}");
        assert_eq!(r["errors"], serde_json::json!({}), "{target}: {r}");
        let out = cli(
            &[
                "query",
                "--addr",
                &grpc,
                "--ca-cert",
                &ca,
                "--token",
                Q,
                "-n",
                ns,
                "-t",
                "cpu",
                "-f",
                "csv",
            ],
            &[],
        )
        .await;
        assert_cli_ok(&out, "query the loadgen's rows");
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, 20_001, "{target}: rows queried (plus the header)");
    }

    // The token and CA also come from the environment.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"));
    cmd.args([
        "--target",
        "grpc-lp",
        "--addr",
        &grpc,
        "--namespace",
        "lg_env",
    ])
    .args([
        "--rows",
        "1000",
        "--batch-lines",
        "500",
        "--writers",
        "1",
        "--quiet",
    ])
    .env("SLUICE_TOKEN", W)
    .env("SLUICE_CA_CERT", &ca)
    .kill_on_drop(true);
    let out = within(Duration::from_secs(120), "loadgen with env", cmd.output())
        .await
        .expect("run loadgen");
    assert_cli_ok(&out, "loadgen with SLUICE_TOKEN and SLUICE_CA_CERT");

    // A wrong token: every request refused, reported by status.
    for (target, addr, status) in [
        ("grpc-lp", &grpc, "grpc:Unauthenticated"),
        ("http", &http_addr, "http:401"),
    ] {
        let r = loadgen(
            tmp.path(),
            &[
                "--target",
                target,
                "--addr",
                addr,
                "--namespace",
                "lg_wrong",
                "--ca-cert",
                &ca,
                "--token",
                "not-a-token",
                "--duration",
                "1s",
                "--writers",
                "1",
                "--batch-lines",
                "100",
            ],
        )
        .await;
        assert_eq!(r["rows"].as_u64(), Some(0), "{target}: {r}");
        assert!(errors_of(&r, status) > 0, "{target}: no {status} in {r}");
    }
    // A write-only token may write but not scan: the scanner's refusals
    // are reported by status too.
    let r = loadgen(
        tmp.path(),
        &[
            "--target",
            "grpc-lp",
            "--addr",
            &grpc,
            "--namespace",
            "lg_grpc",
            "--ca-cert",
            &ca,
            "--token",
            W,
            "--duration",
            "1s",
            "--writers",
            "1",
            "--batch-lines",
            "100",
            "--query-concurrency",
            "1",
        ],
    )
    .await;
    assert!(r["rows"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(
        errors_of(&r["queries"], "grpc:PermissionDenied") > 0,
        "no PERMISSION_DENIED for the scans: {r}"
    );
    // Without --ca-cert an https:// address is an error, not plain text.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice-loadgen"));
    cmd.args(["--addr", &grpc, "--token", W, "--rows", "100", "--quiet"])
        .env_remove("SLUICE_CA_CERT")
        .kill_on_drop(true);
    let out = within(Duration::from_secs(60), "loadgen without CA", cmd.output())
        .await
        .expect("run loadgen");
    assert!(
        !out.status.success(),
        "https:// without --ca-cert succeeded"
    );
    ing.assert_no_panic();
}

/// `--max-connections`: connections past the limit (across both listeners)
/// are not served while the limit is reached — they wait in the kernel's
/// backlog — and are served as soon as one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_until_one_closes() {
    within(
        Duration::from_secs(120),
        "max connections",
        max_connections(),
    )
    .await;
}

async fn max_connections() {
    use tokio::io::AsyncBufReadExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--max-connections")
        .arg("2");
    ing.start().await.expect("start");
    // `start` polled /ready with short-lived connections; wait until the
    // server has let go of them.
    let req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    /// One keep-alive request on `s`; the status code.
    async fn ask(s: &mut tokio::io::BufReader<tokio::net::TcpStream>, req: &[u8]) -> u16 {
        s.get_mut().write_all(req).await.expect("send");
        let mut line = String::new();
        s.read_line(&mut line).await.expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // Skip headers and the (Content-Length) body.
        let mut len = 0usize;
        loop {
            line.clear();
            s.read_line(&mut line).await.expect("header");
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await.expect("body");
        status
    }
    let connect = |addr| async move {
        tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await.expect("connect"))
    };
    // Two connections in use: one on each listener (the limit is shared).
    let mut a = connect(ing.http).await;
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Earlier probe connections may still hold permits for a moment.
        match tokio::time::timeout(Duration::from_secs(2), ask(&mut a, req)).await {
            Ok(200) => break,
            Ok(s) => panic!("/health answered {s}"),
            Err(_) => {
                assert!(Instant::now() < deadline, "first connection never served");
                a = connect(ing.http).await;
            }
        }
    }
    held.push(a);
    let grpc = tonic::transport::Endpoint::from_shared(ing.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("gRPC connection");
    let mut control = v1::control_service_client::ControlServiceClient::new(grpc);
    control
        .status(v1::StatusRequest {})
        .await
        .expect("Status on the second connection");

    // The third waits: connected by the kernel, never answered.
    let mut third = connect(ing.http).await;
    let waiting = tokio::time::timeout(Duration::from_secs(2), ask(&mut third, req)).await;
    assert!(
        waiting.is_err(),
        "a third connection was served past the limit of 2"
    );

    // Closing the gRPC connection lets it in.
    drop(control);
    let served = tokio::time::timeout(Duration::from_secs(60), ask(&mut third, req))
        .await
        .expect("the waiting connection was not served after one closed");
    assert_eq!(served, 200);
    // The held HTTP connection still works.
    assert_eq!(ask(&mut held[0], req).await, 200);
    ing.assert_no_panic();
}
