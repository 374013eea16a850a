//! The driver against a real ingester serving TLS and requiring tokens,
//! configured exactly as the operator configures a pod (`spec.tls`,
//! `spec.auth`: the Secrets mounted as directories, the `SLUICE_TLS_*` and
//! `SLUICE_TOKENS_FILE` settings from the ConfigMap), and its credentials
//! built from the Secrets as the reconciler reads them.
//!
//! With the right CA and a `control` token the driver observes the pod and
//! drains it for a rolling restart: rows a router wrote over TLS are
//! persisted before the pod goes, and read back after. With a wrong CA, a certificate that
//! does not name the pod, a token without the `control` scope or no token
//! at all, the pod refuses, the error says why, and the `Ingester` turns
//! `Degraded` with a reason naming the cause; no action is taken.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_e2e::pki::Pki;
use sluice_e2e::{ingester_bin, within};
use sluice_operator::driver::{ControlAccess, ControlError, Refusal};
use sluice_operator::metrics::Metrics;
use tokio::io::AsyncWriteExt;

use super::harness::*;

const CONTROL_TOKEN: &str = "op-control-7f3a9c";
const WRITE_TOKEN: &str = "router-write-51be20";
const ROUTER_TOKEN: &str = "router-rw-0c4d11";
const ROWS: usize = 200;
/// The pod's DNS name for Ingester `ingest` in namespace `e2e`.
const POD_DNS: &str = "ingest-0.ingest-pods.e2e.svc.cluster.local";

/// The pod's PKI: CAs `ca` and `other-ca`, and `pod`, the pod's server
/// certificate signed by `ca`.
pub(super) fn pod_pki(dir: &Path) -> Pki {
    let p = Pki::new(dir);
    p.ca("ca");
    p.ca("other-ca");
    p.server("pod", "ca", &format!("DNS:{POD_DNS}"));
    p
}

/// The tokens-file line of `token`, made by `sluice-ingester token hash`.
async fn token_line(token: &str, scopes: &str) -> String {
    let mut child = tokio::process::Command::new(ingester_bin())
        .args(["token", "hash", "--scopes", scopes])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn token hash");
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
    assert!(out.status.success(), "token hash: {}", out.status);
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// Runs the CLI against pod `url` over TLS with `token`, `input` on stdin;
/// returns stdout.
async fn cli(pki: &Pki, url: &str, token: &str, args: &[&str], input: &str) -> String {
    let mut cmd = tokio::process::Command::new(ingester_bin());
    cmd.args(args)
        .arg("--addr")
        .arg(url.replacen("http://", "https://", 1))
        .args(["--token", token, "--tls-server-name", POD_DNS, "--ca-cert"])
        .arg(pki.dir.join("ca.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for k in ["SLUICE_TOKEN", "SLUICE_CA_CERT", "SLUICE_ADDR"] {
        cmd.env_remove(k);
    }
    let mut child = cmd.spawn().expect("spawn the CLI");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write");
    drop(stdin);
    let out = within(Duration::from_secs(60), "CLI", child.wait_with_output())
        .await
        .expect("CLI");
    assert!(
        out.status.success(),
        "sluice-ingester {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The driver's credentials for `spec` with the Secrets as given.
fn access(spec: serde_json::Value, secrets: &Secrets) -> ControlAccess {
    ControlAccess::build(&single_node(spec), &secrets.data()).expect("credentials")
}

fn spec() -> serde_json::Value {
    json!({
        "tls": {"secretName": "ingest-tls"},
        "auth": {
            "tokensSecretName": "ingest-tokens",
            "controlTokenSecretName": "sluice-operator-token",
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_verifies_the_pods_certificate_and_sends_its_control_token() {
    within(Duration::from_secs(150), "TLS and tokens", async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = pod_pki(&tmp.path().join("pki"));
        let tokens = format!(
            "# hashes only\n{}\n{}\n{}\n",
            token_line(CONTROL_TOKEN, "control").await,
            token_line(WRITE_TOKEN, "write").await,
            token_line(ROUTER_TOKEN, "write,query").await
        );
        let secrets = Secrets::default()
            .with("ingest-tls", "tls.crt", pki.read("pod.pem"))
            .with("ingest-tls", "tls.key", pki.read("pod.key"))
            .with("ingest-tls", "ca.crt", pki.read("ca.pem"))
            .with("ingest-tokens", "tokens", tokens)
            .with(
                "sluice-operator-token",
                "token",
                format!("{CONTROL_TOKEN}\n"),
            );
        let v = single_node(spec());
        // The pod starts with the operator's settings and answers its
        // HTTPS readiness probe.
        let cluster = ProcessCluster::start(&v, secrets.clone(), tmp.path().join("pods")).await;
        let metrics = Arc::new(Metrics::new());
        let d = driver(&cluster, &metrics);
        let clock = Clock::default();
        let mut prev = None;

        // 1. Right CA, control token: observed, and drained for a rolling
        //    restart (PrepareShutdown, Status until drained, delete).
        run_until_ready(&d, &v, &clock, &mut prev).await;
        let st = prev.clone().expect("status");
        assert_eq!(st.pods[0].state, "Ready", "{st:#?}");
        assert_eq!(st.pods[0].error, None);
        assert_eq!(condition(&st, "Degraded").status, "False");
        let endpoints = st.endpoints.as_ref().expect("endpoints");
        assert!(endpoints.tls);
        assert_eq!(endpoints.pods[0].url, format!("https://{POD_DNS}:8082"));

        // Rows a router wrote over TLS with its token: buffered, in the WAL.
        let url = cluster.url(0).await.expect("pod 0 runs");
        let lp = batch_lp(0, 0, ROWS as u64);
        cli(&pki, &url, ROUTER_TOKEN, &["write", "-n", NS, "-"], &lp).await;
        let (st, _) = d
            .tick(&v, &cluster.access(), prev.as_ref(), clock.now())
            .await
            .expect("step");
        assert_eq!(st.pods[0].buffered_rows, ROWS as i64, "{st:#?}");
        prev = Some(st);

        restart_the_one_pod(&d, &v, &clock, &mut prev, "rolling restart over TLS").await;
        // The drain persisted every row before the pod went: the restarted
        // pod buffers nothing (no WAL left to replay) and serves all of
        // them from Parquet.
        let st = prev.clone().expect("status");
        assert_eq!(st.pods[0].buffered_rows, 0, "{st:#?}");
        let url = cluster.url(0).await.expect("pod 0 runs again");
        let csv = cli(
            &pki,
            &url,
            ROUTER_TOKEN,
            &["query", "-n", NS, "-t", TABLE, "--format", "csv"],
            "",
        )
        .await;
        assert_eq!(csv.lines().count(), ROWS + 1, "header + rows:\n{csv}");

        // 2. What the pod refuses, each told apart and named.
        let status = |a: ControlAccess| {
            let url = url.clone();
            async move { pod_status(&url, &a).await }
        };
        let refused = |r: Result<_, ControlError>, want: Refusal, needle: &str| {
            let e = r.expect_err("refused");
            assert_eq!(e.refusal(), Some(want), "{e}");
            assert!(e.to_string().contains(needle), "`{needle}` not in: {e}");
            e
        };
        let wrong_ca = secrets
            .clone()
            .with("ingest-tls", "ca.crt", pki.read("other-ca.pem"));
        let e = refused(
            status(access(spec(), &wrong_ca)).await,
            Refusal::Tls,
            "UnknownIssuer",
        );
        assert!(
            e.to_string().contains(POD_DNS),
            "names the expected name: {e}"
        );

        let mut other_name = spec();
        other_name["tls"]["serverName"] = json!("ingest.example.com");
        refused(
            status(access(other_name, &secrets)).await,
            Refusal::Tls,
            "certificate not valid for name",
        );

        let write_only = secrets
            .clone()
            .with("sluice-operator-token", "token", WRITE_TOKEN);
        refused(
            status(access(spec(), &write_only)).await,
            Refusal::PermissionDenied,
            "PermissionDenied",
        );

        let no_token = json!({"tls": {"secretName": "ingest-tls"}});
        refused(
            status(access(no_token, &secrets)).await,
            Refusal::Unauthenticated,
            "Unauthenticated",
        );

        // 3. The driver with refused credentials: Degraded with the cause,
        //    and nothing done to the pod.
        for (bad, reason) in [
            (access(spec(), &write_only), "ControlPermissionDenied"),
            (access(spec(), &wrong_ca), "ControlTlsFailed"),
        ] {
            let c = refused_step(&d, &v, &bad, prev.as_ref(), &clock).await;
            assert_eq!(c.reason, reason, "{}", c.message);
        }

        // 4. Fixed credentials: the condition clears.
        let (st, _) = d
            .tick(&v, &cluster.access(), prev.as_ref(), clock.now())
            .await
            .expect("step");
        assert_eq!(condition(&st, "Degraded").status, "False", "{st:#?}");
        assert_eq!(st.pods[0].state, "Ready");
        cluster.shutdown().await;
    })
    .await;
}
