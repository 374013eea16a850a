//! The driver against a real ingester requiring client certificates
//! (`spec.tls.clientAuth`), configured exactly as the operator configures
//! a pod: the client CA Secret mounted as a directory and
//! `SLUICE_TLS_CLIENT_CA` pointing into it; the operator's own client
//! certificate read from its Secret, never mounted.
//!
//! With the operator's certificate (signed by the client CA) the driver
//! observes the pod and drains it for a rolling restart. Without a client
//! certificate, with one of another CA or an expired one, the pod refuses
//! the handshake, the error carries the pod's TLS alert, and the
//! `Ingester` turns `Degraded` (`ControlClientCertRefused`) with no action
//! taken. Kubelet's
//! probe, which has no client certificate, still gets `/ready` over HTTPS
//! (the harness's readiness check is exactly that), while `/metrics`
//! without one is refused.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_e2e::within;
use sluice_operator::driver::{ControlAccess, ControlError, Refusal};
use sluice_operator::metrics::Metrics;

use super::harness::*;
use super::tls::pod_pki;

fn spec() -> serde_json::Value {
    json!({
        "tls": {
            "secretName": "ingest-tls",
            "clientAuth": {
                "caSecretName": "ingest-client-ca",
                "operatorCertSecretName": "sluice-operator-client",
            },
        },
    })
}

fn access(spec: serde_json::Value, secrets: &Secrets) -> ControlAccess {
    ControlAccess::build(&single_node(spec), &secrets.data()).expect("credentials")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_presents_its_client_certificate_and_probes_need_none() {
    within(Duration::from_secs(150), "mutual TLS", async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = pod_pki(&tmp.path().join("pki"));
        pki.ca("client-ca");
        pki.client("operator", "client-ca", "sluice-operator");
        pki.client("rogue", "other-ca", "sluice-operator");
        pki.expired_client("expired", "client-ca", "sluice-operator");
        let secrets = Secrets::default()
            .with("ingest-tls", "tls.crt", pki.read("pod.pem"))
            .with("ingest-tls", "tls.key", pki.read("pod.key"))
            .with("ingest-tls", "ca.crt", pki.read("ca.pem"))
            .with("ingest-client-ca", "ca.crt", pki.read("client-ca.pem"))
            .with(
                "sluice-operator-client",
                "tls.crt",
                pki.read("operator.pem"),
            )
            .with(
                "sluice-operator-client",
                "tls.key",
                pki.read("operator.key"),
            );
        let v = single_node(spec());
        assert!(
            v.settings["SLUICE_TLS_CLIENT_CA"].ends_with("/client-ca/ca.crt"),
            "{:?}",
            v.settings
        );
        // The pod starts with the operator's settings and answers the
        // harness's HTTPS readiness probe, which has no client certificate
        // (as kubelet's).
        let cluster = ProcessCluster::start(&v, secrets.clone(), tmp.path().join("pods")).await;
        assert!(cluster.access().tls().expect("tls").presents_client_cert());
        let ready = cluster
            .https_get(0, "/ready")
            .await
            .expect("a TLS pod")
            .expect("/ready over HTTPS without a client certificate");
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        let metrics = cluster
            .https_get(0, "/metrics")
            .await
            .expect("a TLS pod")
            .expect("/metrics answers");
        assert!(
            metrics.starts_with("HTTP/1.1 401"),
            "/metrics needs a client certificate: {metrics}"
        );

        let m = Arc::new(Metrics::new());
        let d = driver(&cluster, &m);
        let clock = Clock::default();
        let mut prev = None;

        // 1. The operator's certificate: observed, and drained for a
        //    rolling restart (PrepareShutdown, Status until drained, delete).
        run_until_ready(&d, &v, &clock, &mut prev).await;
        let st = prev.clone().expect("status");
        assert_eq!(st.pods[0].state, "Ready", "{st:#?}");
        assert_eq!(condition(&st, "Degraded").status, "False");
        restart_the_one_pod(&d, &v, &clock, &mut prev, "rolling restart over mTLS").await;

        // 2. What the pod refuses, named by its alert.
        let url = cluster.url(0).await.expect("pod 0 runs again");
        let status = |a: ControlAccess| {
            let url = url.clone();
            async move { pod_status(&url, &a).await }
        };
        let refused = |r: Result<_, ControlError>, needle: &str| {
            let e = r.expect_err("refused");
            assert_eq!(e.refusal(), Some(Refusal::ClientCertificate), "{e}");
            assert!(e.to_string().contains(needle), "`{needle}` not in: {e}");
        };
        // The right certificate works on a fresh client too.
        status(cluster.access())
            .await
            .expect("Status with the operator's certificate");

        let no_cert = json!({"tls": {"secretName": "ingest-tls"}});
        let no_cert = access(no_cert, &secrets);
        assert!(!no_cert.tls().expect("tls").presents_client_cert());
        refused(status(no_cert.clone()).await, "CertificateRequired");

        let rogue = secrets
            .clone()
            .with("sluice-operator-client", "tls.crt", pki.read("rogue.pem"))
            .with("sluice-operator-client", "tls.key", pki.read("rogue.key"));
        let rogue = access(spec(), &rogue);
        refused(status(rogue.clone()).await, "UnknownCA");

        let expired = secrets
            .clone()
            .with("sluice-operator-client", "tls.crt", pki.read("expired.pem"))
            .with("sluice-operator-client", "tls.key", pki.read("expired.key"));
        refused(status(access(spec(), &expired)).await, "CertificateExpired");

        // 3. The driver refused: Degraded with the cause, nothing done.
        for bad in [no_cert, rogue] {
            let c = refused_step(&d, &v, &bad, prev.as_ref(), &clock).await;
            assert_eq!(c.reason, "ControlClientCertRefused", "{}", c.message);
            assert!(c.message.contains("spec.tls.clientAuth"), "{}", c.message);
        }

        // 4. The operator's certificate again: the condition clears.
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
