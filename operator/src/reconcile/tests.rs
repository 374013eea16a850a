//! The reconciler against a mocked API server: the exact sequence of API
//! calls for each [`Scenario`], and what the calls carry.

use std::sync::Arc;

use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::{FINALIZER, error_policy, reconcile};
use crate::context::Context;
use crate::crd::Ingester;
use crate::driver::PodState;
use crate::driver::mock::MockPods;
use crate::fixtures::{
    ApiServerVerifier, pod_json, pod_url, sample, statefulset_json, with_api_server,
};

const NS: &str = "sluice";
const ING: &str = "/apis/sluice.dev/v1alpha1/namespaces/sluice/ingesters/ingest";
const STS: &str = "/apis/apps/v1/namespaces/sluice/statefulsets/ingest";
const PODS: &str = "/api/v1/namespaces/sluice/pods";
const CM: &str = "/api/v1/namespaces/sluice/configmaps/ingest-config";
const SVC_PODS: &str = "/api/v1/namespaces/sluice/services/ingest-pods";
const SVC: &str = "/api/v1/namespaces/sluice/services/ingest";
const PDB: &str = "/apis/policy/v1/namespaces/sluice/poddisruptionbudgets/ingest";

/// Named call sequences.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// A new object: only the finalizer is added.
    FinalizerCreation,
    /// Finalized, nothing exists yet: every object applied, orphans swept,
    /// status `Creating`.
    Create,
    /// A new generation disables the PDB: applied without it, the old PDB
    /// deleted as an orphan, status written.
    UpdateDeletesOrphan,
    /// `replicas` 3 → 1 while the pods are ready: the StatefulSet is applied
    /// with 3 still, the two leaving pods are asked to drain.
    ScaleDownDraining,
    /// The leaving pods report drained: the StatefulSet is scaled to 1.
    ScaleDownDrained,
    /// Deleted while pods run: drains start, the finalizer stays.
    DeleteDraining,
    /// Deleted, every pod drained: the finalizer is removed.
    DeleteDrained,
    /// The StatefulSet apply meets a 409 conflict.
    ApplyConflict,
    /// Listing the pods fails with 500.
    ListPods500,
    /// The status write gets 404 (the object vanished meanwhile).
    StatusWrite404,
    /// `spec.tls` and `spec.auth`: the three Secrets are read by name
    /// before the pods are observed; the pod template mounts two of them.
    SecretsRead,
    /// As `SecretsRead`, but the control token's Secret is missing:
    /// `Degraded` (`SecretNotFound`), and no pod is called.
    ControlTokenSecretMissing,
    /// `spec.tls.clientAuth` too: five Secrets read by name; the pods mount
    /// the client CA but never the operator's client certificate; its
    /// Secret missing (`cert_missing`) is `Degraded` (`SecretNotFound`)
    /// and no pod is called.
    MutualTls { cert_missing: bool },
}

impl Ingester {
    /// The `cluster.yaml` sample as the API server would hold it.
    fn test() -> Self {
        let mut ing = sample("cluster.yaml");
        ing.metadata.resource_version = Some("100".into());
        ing
    }
    fn finalized(mut self) -> Self {
        self.metadata.finalizers = Some(vec![FINALIZER.into()]);
        self
    }
    fn observed(mut self) -> Self {
        self.status = Some(crate::crd::IngesterStatus {
            observed_generation: self.metadata.generation,
            ..Default::default()
        });
        self
    }
    fn generation(mut self, g: i64) -> Self {
        self.metadata.generation = Some(g);
        self
    }
    fn replicas(mut self, n: i32) -> Self {
        self.spec.replicas = n;
        self
    }
    fn secured(mut self) -> Self {
        self.spec.tls =
            Some(serde_json::from_value(json!({"secretName": "ingest-tls"})).expect("tls"));
        self.spec.auth = Some(
            serde_json::from_value(json!({
                "tokensSecretName": "ingest-tokens",
                "controlTokenSecretName": "sluice-operator-token",
            }))
            .expect("auth"),
        );
        self
    }
    fn mutual_tls(mut self) -> Self {
        self.spec.tls = Some(
            serde_json::from_value(json!({
                "secretName": "ingest-tls",
                "clientAuth": {
                    "caSecretName": "ingest-client-ca",
                    "operatorCertSecretName": "sluice-operator-client",
                },
            }))
            .expect("tls"),
        );
        self
    }
    fn deleting(mut self) -> Self {
        self.metadata.deletion_timestamp =
            Some(crate::driver::plan::time(std::time::SystemTime::now()));
        self
    }
    fn json(&self) -> Value {
        serde_json::to_value(self).expect("serialise")
    }
}

fn pods(n: i32) -> Vec<Value> {
    (0..n)
        .map(|i| pod_json("ingest", NS, i, "rev-1", true))
        .collect()
}

async fn observe(v: &mut ApiServerVerifier, sts: Option<i32>, n_pods: i32) {
    match sts {
        None => v.expect_error(Method::GET, STS, 404, "NotFound").await,
        Some(r) => {
            v.expect(Method::GET, STS, StatusCode::OK, move |_| {
                statefulset_json("ingest", NS, r, "rev-1")
            })
            .await;
        }
    }
    let q = v.expect_list(PODS, "Pod", pods(n_pods)).await;
    assert!(
        q.contains("app.kubernetes.io%2Finstance%3Dingest"),
        "pods listed by selector: {q}"
    );
}

async fn apply_all(v: &mut ApiServerVerifier, pdb: bool) -> Value {
    let cm = v.expect_apply(CM).await;
    assert_eq!(cm["data"]["SLUICE_PERSIST_WORKERS"], "4");
    let hl = v.expect_apply(SVC_PODS).await;
    assert_eq!(hl["spec"]["clusterIP"], "None");
    v.expect_apply(SVC).await;
    let sts = v.expect_apply(STS).await;
    assert_eq!(sts["kind"], "StatefulSet");
    assert_eq!(sts["metadata"]["ownerReferences"][0]["kind"], "Ingester");
    assert_eq!(sts["metadata"]["ownerReferences"][0]["controller"], true);
    if pdb {
        v.expect_apply(PDB).await;
    }
    sts
}

async fn sweep(v: &mut ApiServerVerifier, old_pdb: bool) {
    for (path, kind) in [
        ("/api/v1/namespaces/sluice/configmaps", "ConfigMap"),
        ("/api/v1/namespaces/sluice/services", "Service"),
        (
            "/apis/apps/v1/namespaces/sluice/statefulsets",
            "StatefulSet",
        ),
    ] {
        let q = v.expect_list(path, kind, vec![]).await;
        assert!(q.contains("managed-by%3Dsluice-operator"), "{q}");
    }
    let items = if old_pdb {
        vec![json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "ingest", "namespace": NS, "ownerReferences": [{
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Ingester", "name": "ingest",
                "uid": "0a0b0c0d-uid", "controller": true
            }]}
        })]
    } else {
        vec![]
    };
    v.expect_list(
        "/apis/policy/v1/namespaces/sluice/poddisruptionbudgets",
        "PodDisruptionBudget",
        items,
    )
    .await;
    if old_pdb {
        v.expect(
            Method::DELETE,
            PDB,
            StatusCode::OK,
            |_| json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}),
        )
        .await;
        let ev = v.expect_event(NS).await;
        assert_eq!(ev["reason"], "OrphanDeleted");
    }
}

async fn expect_status(v: &mut ApiServerVerifier, ing: &Ingester) -> Value {
    let obj = ing.json();
    let seen = v
        .expect(
            Method::PATCH,
            &format!("{ING}/status"),
            StatusCode::OK,
            move |b| {
                let mut o = obj.clone();
                o["status"] = b["status"].clone();
                o
            },
        )
        .await;
    assert!(seen.query.contains("fieldManager=sluice-operator"));
    assert_eq!(seen.body["kind"], "Ingester");
    assert!(seen.body.get("spec").is_none(), "status only");
    seen.body["status"].clone()
}

fn condition<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("condition {t} in {status}"))
}

/// A Secret as the API server returns it (`data` base64-encoded).
fn secret_json(name: &str, data: &[(&str, &str)]) -> Value {
    let s = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Default::default()
    };
    let mut v = serde_json::to_value(s).expect("secret");
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

/// The three Secrets of [`Ingester::secured`], in the order they are
/// read (by name); the last one answers 404 when `control_missing`. With
/// `mtls` also those of [`Ingester::mutual_tls`] (`Some(true)`: the
/// operator's client certificate answers 404).
async fn read_secrets(v: &mut ApiServerVerifier, control_missing: bool, mtls: Option<bool>) {
    let secrets = "/api/v1/namespaces/sluice/secrets";
    let ca = include_str!("../driver/testdata/ca.pem");
    if mtls.is_some() {
        let client_ca = secret_json("ingest-client-ca", &[("ca.crt", ca)]);
        v.expect(
            Method::GET,
            &format!("{secrets}/ingest-client-ca"),
            StatusCode::OK,
            move |_| client_ca,
        )
        .await;
    }
    let tls = secret_json(
        "ingest-tls",
        &[("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", ca)],
    );
    v.expect(
        Method::GET,
        &format!("{secrets}/ingest-tls"),
        StatusCode::OK,
        move |_| tls,
    )
    .await;
    let tokens = secret_json("ingest-tokens", &[("tokens", "sha256:00 control")]);
    v.expect(
        Method::GET,
        &format!("{secrets}/ingest-tokens"),
        StatusCode::OK,
        move |_| tokens,
    )
    .await;
    if let Some(cert_missing) = mtls {
        let path = format!("{secrets}/sluice-operator-client");
        if cert_missing {
            v.expect_error(Method::GET, &path, 404, "NotFound").await;
        } else {
            let cert = secret_json(
                "sluice-operator-client",
                &[
                    ("tls.crt", include_str!("../driver/testdata/client.pem")),
                    ("tls.key", include_str!("../driver/testdata/client.key")),
                ],
            );
            v.expect(Method::GET, &path, StatusCode::OK, move |_| cert)
                .await;
        }
    }
    let path = format!("{secrets}/sluice-operator-token");
    if control_missing {
        v.expect_error(Method::GET, &path, 404, "NotFound").await;
    } else {
        let token = secret_json("sluice-operator-token", &[("token", "t0k3n\n")]);
        v.expect(Method::GET, &path, StatusCode::OK, move |_| token)
            .await;
    }
}

/// Plays `scenario` for `ing`.
async fn play(mut v: ApiServerVerifier, scenario: Scenario, ing: Ingester) -> ApiServerVerifier {
    match scenario {
        Scenario::FinalizerCreation => {
            let obj = ing.json();
            let seen = v
                .expect(Method::PATCH, ING, StatusCode::OK, move |_| {
                    let mut o = obj.clone();
                    o["metadata"]["finalizers"] = json!([FINALIZER]);
                    o
                })
                .await;
            assert_eq!(
                seen.body,
                json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": null},
                    {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
                ])
            );
        }
        Scenario::Create => {
            observe(&mut v, None, 0).await;
            let sts = apply_all(&mut v, true).await;
            assert_eq!(sts["spec"]["replicas"], 3);
            sweep(&mut v, false).await;
            let st = expect_status(&mut v, &ing).await;
            assert_eq!(st["phase"], "Progressing");
            assert_eq!(condition(&st, "Progressing")["reason"], "Creating");
            assert_eq!(st["observedGeneration"], 1);
            assert_eq!(
                st["endpoints"]["pods"][2]["dns"],
                "ingest-2.ingest-pods.sluice.svc.cluster.local"
            );
        }
        Scenario::UpdateDeletesOrphan => {
            observe(&mut v, Some(3), 3).await;
            apply_all(&mut v, false).await;
            sweep(&mut v, true).await;
            let st = expect_status(&mut v, &ing).await;
            assert_eq!(st["phase"], "Ready");
            assert_eq!(st["readyReplicas"], 3);
            assert_eq!(st["observedGeneration"], 2);
            assert_eq!(st["pods"][0]["state"], "Ready");
            assert_eq!(st["pods"][0]["walSegments"], 1);
        }
        Scenario::ScaleDownDraining => {
            observe(&mut v, Some(3), 3).await;
            let sts = apply_all(&mut v, true).await;
            assert_eq!(
                sts["spec"]["replicas"], 3,
                "kept until the leaving pods drain"
            );
            for pod in ["ingest-1", "ingest-2"] {
                let ev = v.expect_event(NS).await;
                assert_eq!(ev["reason"], "DrainStarted");
                assert!(
                    ev["note"].as_str().unwrap_or_default().contains(pod),
                    "{ev}"
                );
            }
            let st = expect_status(&mut v, &ing).await;
            assert_eq!(st["phase"], "Draining");
            assert_eq!(condition(&st, "Draining")["status"], "True");
            assert_eq!(condition(&st, "Progressing")["reason"], "ScalingDown");
            assert!(st["pods"][2]["drainStartedAt"].is_string());
        }
        Scenario::ScaleDownDrained => {
            observe(&mut v, Some(3), 3).await;
            let sts = apply_all(&mut v, true).await;
            assert_eq!(sts["spec"]["replicas"], 3);
            let seen = v
                .expect(
                    Method::PATCH,
                    &format!("{STS}/scale"),
                    StatusCode::OK,
                    |_| {
                        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                           "metadata": {"name": "ingest"}, "spec": {"replicas": 1}})
                    },
                )
                .await;
            assert_eq!(seen.body, json!({"spec": {"replicas": 1}}));
            let ev = v.expect_event(NS).await;
            assert_eq!(ev["reason"], "ScaledDown");
            let st = expect_status(&mut v, &ing).await;
            assert_eq!(condition(&st, "Progressing")["reason"], "ScalingDown");
            assert_eq!(condition(&st, "Draining")["status"], "False");
        }
        Scenario::DeleteDraining => {
            observe(&mut v, Some(2), 2).await;
            for _ in 0..2 {
                let ev = v.expect_event(NS).await;
                assert_eq!(ev["reason"], "DrainStarted");
            }
            let st = expect_status(&mut v, &ing).await;
            assert_eq!(condition(&st, "Progressing")["reason"], "Deleting");
            assert_eq!(st["phase"], "Draining");
        }
        Scenario::DeleteDrained => {
            observe(&mut v, Some(2), 2).await;
            let ev = v.expect_event(NS).await;
            assert_eq!(ev["reason"], "Drained");
            let obj = ing.json();
            let seen = v
                .expect(Method::PATCH, ING, StatusCode::OK, move |_| {
                    let mut o = obj.clone();
                    o["metadata"]["finalizers"] = json!([]);
                    o
                })
                .await;
            assert_eq!(
                seen.body,
                json!([
                    {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                    {"op": "remove", "path": "/metadata/finalizers/0"}
                ])
            );
        }
        Scenario::ApplyConflict => {
            observe(&mut v, Some(3), 3).await;
            v.expect_apply(CM).await;
            v.expect_apply(SVC_PODS).await;
            v.expect_apply(SVC).await;
            v.expect_error(Method::PATCH, STS, 409, "Conflict").await;
            let ev = v.expect_event(NS).await;
            assert_eq!(ev["reason"], "ApplyFailed");
            assert_eq!(ev["type"], "Warning");
        }
        Scenario::ListPods500 => {
            v.expect(Method::GET, STS, StatusCode::OK, |_| {
                statefulset_json("ingest", NS, 3, "rev-1")
            })
            .await;
            v.expect_error(Method::GET, PODS, 500, "InternalError")
                .await;
            let ev = v.expect_event(NS).await;
            assert_eq!(ev["reason"], "DriverFailed");
        }
        Scenario::SecretsRead | Scenario::ControlTokenSecretMissing => {
            let missing = matches!(scenario, Scenario::ControlTokenSecretMissing);
            read_secrets(&mut v, missing, None).await;
            observe(&mut v, Some(3), 3).await;
            let sts = apply_all(&mut v, true).await;
            let pod = &sts["spec"]["template"]["spec"];
            let volumes: Vec<_> = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .filter_map(|v| v["secret"]["secretName"].as_str())
                .collect();
            assert_eq!(
                volumes,
                ["ingest-tls", "ingest-tokens"],
                "never the control token"
            );
            if missing {
                let ev = v.expect_event(NS).await;
                assert_eq!(ev["reason"], "SecretNotFound");
                assert_eq!(ev["type"], "Warning");
            }
            let st = expect_status(&mut v, &ing).await;
            let degraded = condition(&st, "Degraded");
            if missing {
                assert_eq!(degraded["status"], "True");
                assert_eq!(degraded["reason"], "SecretNotFound");
                let msg = degraded["message"].as_str().unwrap_or_default();
                assert!(msg.contains("sluice-operator-token"), "{msg}");
                assert_eq!(st["phase"], "Degraded");
                assert_eq!(st["pods"][0]["state"], "Unknown");
            } else {
                assert_eq!(degraded["status"], "False");
                assert_eq!(st["endpoints"]["tls"], true);
                assert_eq!(
                    st["endpoints"]["pods"][0]["url"],
                    "https://ingest-0.ingest-pods.sluice.svc.cluster.local:8082"
                );
            }
        }
        Scenario::MutualTls { cert_missing } => {
            read_secrets(&mut v, false, Some(cert_missing)).await;
            observe(&mut v, Some(3), 3).await;
            let sts = apply_all(&mut v, true).await;
            let pod = &sts["spec"]["template"]["spec"];
            let volumes: Vec<_> = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .filter_map(|v| v["secret"]["secretName"].as_str())
                .collect();
            assert_eq!(
                volumes,
                ["ingest-tls", "ingest-client-ca", "ingest-tokens"],
                "never the operator's client certificate or token"
            );
            if cert_missing {
                let ev = v.expect_event(NS).await;
                assert_eq!(ev["reason"], "SecretNotFound");
            }
            let st = expect_status(&mut v, &ing).await;
            let degraded = condition(&st, "Degraded");
            if cert_missing {
                assert_eq!(degraded["status"], "True");
                assert_eq!(degraded["reason"], "SecretNotFound");
                let msg = degraded["message"].as_str().unwrap_or_default();
                assert!(
                    msg.contains("sluice-operator-client")
                        && msg.contains("the operator's client certificate"),
                    "{msg}"
                );
            } else {
                assert_eq!(degraded["status"], "False");
            }
        }
        Scenario::StatusWrite404 => {
            observe(&mut v, Some(3), 3).await;
            apply_all(&mut v, true).await;
            v.expect_error(Method::PATCH, &format!("{ING}/status"), 404, "NotFound")
                .await;
            let ev = v.expect_event(NS).await;
            assert_eq!(ev["reason"], "DriverFailed");
        }
    }
    v
}

async fn run(
    scenario: Scenario,
    ing: Ingester,
    setup: impl FnOnce(&MockPods),
) -> (crate::Result<Action>, Arc<Context>, Arc<MockPods>) {
    let (ctx, verifier, pods) = Context::test();
    setup(&pods);
    let obj = ing.clone();
    let r = with_api_server(
        verifier,
        move |v| play(v, scenario, obj),
        reconcile(Arc::new(ing), ctx.clone()),
    )
    .await;
    (r, ctx, pods)
}

fn ready(pods: &MockPods, n: i32) {
    for i in 0..n {
        pods.set(&pod_url(i), PodState::Ready);
    }
}

#[tokio::test]
async fn finalizer_is_added_first() {
    let (r, _, pods) = run(Scenario::FinalizerCreation, Ingester::test(), |_| {}).await;
    assert_eq!(r.expect("ok"), Action::await_change());
    assert!(
        pods.calls().is_empty(),
        "no pod is touched before the finalizer"
    );
}

#[tokio::test]
async fn create_applies_everything() {
    let (r, ctx, _) = run(Scenario::Create, Ingester::test().finalized(), |_| {}).await;
    assert_eq!(r.expect("ok"), Action::requeue(ctx.driver.poll_interval()));
}

#[tokio::test]
async fn update_deletes_the_disabled_pdb() {
    let mut ing = Ingester::test().finalized().observed().generation(2);
    ing.spec.disruption_budget.enabled = false;
    let (r, _, pods) = run(Scenario::UpdateDeletesOrphan, ing, |p| ready(p, 3)).await;
    r.expect("ok");
    assert_eq!(
        pods.calls().len(),
        3,
        "one Status per pod: {:?}",
        pods.calls()
    );
}

#[tokio::test]
async fn scale_down_drains_before_shrinking() {
    let ing = Ingester::test().finalized().observed().replicas(1);
    let (r, _, pods) = run(Scenario::ScaleDownDraining, ing.clone(), |p| ready(p, 3)).await;
    r.expect("ok");
    assert_eq!(
        &pods.calls()[3..],
        ["PrepareShutdown 10.0.0.1", "PrepareShutdown 10.0.0.2"]
    );

    let (r, _, pods) = run(Scenario::ScaleDownDrained, ing, |p| {
        p.set(&pod_url(0), PodState::Ready);
        p.set(&pod_url(1), PodState::Drained);
        p.set(&pod_url(2), PodState::Drained);
    })
    .await;
    r.expect("ok");
    assert_eq!(pods.calls().len(), 3, "only Status: {:?}", pods.calls());
}

#[tokio::test]
async fn delete_keeps_the_finalizer_until_drained() {
    let ing = Ingester::test().finalized().observed().deleting();
    let (r, ctx, pods) = run(Scenario::DeleteDraining, ing.clone(), |p| ready(p, 2)).await;
    let err = r.expect_err("still draining");
    assert!(
        matches!(err.inner(), crate::Error::StillDraining { pending: 2 }),
        "{err}"
    );
    assert_eq!(
        error_policy(Arc::new(ing.clone()), &err, ctx.clone()),
        Action::requeue(ctx.driver.poll_interval())
    );
    assert!(
        !ctx.metrics.render().contains("reconcile_errors_total{"),
        "draining is no error"
    );
    assert_eq!(
        &pods.calls()[2..],
        ["PrepareShutdown 10.0.0.0", "PrepareShutdown 10.0.0.1"]
    );

    let (r, _, _) = run(Scenario::DeleteDrained, ing, |p| {
        p.set(&pod_url(0), PodState::Drained);
        p.set(&pod_url(1), PodState::Drained);
    })
    .await;
    assert_eq!(r.expect("finalizer removed"), Action::await_change());
}

#[tokio::test]
async fn conflict_is_an_error_with_backoff() {
    let ing = Ingester::test().finalized().observed();
    let (r, ctx, _) = run(Scenario::ApplyConflict, ing.clone(), |p| ready(p, 3)).await;
    let err = r.expect_err("409");
    assert!(
        matches!(
            err.inner(),
            crate::Error::Apply {
                kind: "StatefulSet",
                ..
            }
        ),
        "{err}"
    );
    let ing = Arc::new(ing);
    let a1 = error_policy(ing.clone(), &err, ctx.clone());
    let a2 = error_policy(ing.clone(), &err, ctx.clone());
    assert_eq!(a1, Action::requeue(std::time::Duration::from_secs(2)));
    assert_eq!(a2, Action::requeue(std::time::Duration::from_secs(4)));
    assert!(
        ctx.metrics
            .render()
            .contains("sluice_operator_reconcile_errors_total{error=\"apply\"} 2")
    );
}

#[tokio::test]
async fn server_error_listing_pods() {
    let ing = Ingester::test().finalized().observed();
    let (r, _, _) = run(Scenario::ListPods500, ing, |_| {}).await;
    let err = r.expect_err("500");
    assert_eq!(err.inner().metric_label(), "read_pods");
    assert!(err.to_string().contains("injected InternalError"), "{err}");
}

#[tokio::test]
async fn status_write_not_found() {
    let ing = Ingester::test().finalized().observed();
    let (r, _, _) = run(Scenario::StatusWrite404, ing, |p| ready(p, 3)).await;
    let err = r.expect_err("404");
    assert_eq!(err.inner().metric_label(), "write_status");
}

#[tokio::test]
async fn invalid_spec_sets_degraded_and_waits() {
    let (ctx, verifier, _) = Context::test();
    let ing = Ingester::test().finalized().observed().replicas(200);
    let obj = ing.clone();
    let r = with_api_server(
        verifier,
        move |mut v| async move {
            let ev = v.expect_event(NS).await;
            assert_eq!(ev["reason"], "InvalidSpec");
            let st = expect_status(&mut v, &obj).await;
            assert_eq!(condition(&st, "Degraded")["reason"], "InvalidSpec");
            v
        },
        reconcile(Arc::new(ing), ctx),
    )
    .await;
    assert_eq!(r.expect("ok"), Action::await_change());
}

#[tokio::test]
async fn secrets_are_read_before_the_pods_are_called() {
    let ing = Ingester::test().finalized().observed().secured();
    let (r, _, pods) = run(Scenario::SecretsRead, ing, |p| ready(p, 3)).await;
    r.expect("ok");
    assert_eq!(
        pods.calls().len(),
        3,
        "one Status per pod: {:?}",
        pods.calls()
    );
}

#[tokio::test]
async fn mutual_tls_reads_the_operator_certificate_and_mounts_only_the_client_ca() {
    let ing = Ingester::test()
        .finalized()
        .observed()
        .secured()
        .mutual_tls();
    let (r, _, pods) = run(
        Scenario::MutualTls {
            cert_missing: false,
        },
        ing.clone(),
        |p| ready(p, 3),
    )
    .await;
    r.expect("ok");
    assert_eq!(pods.calls().len(), 3, "{:?}", pods.calls());

    let (r, ctx, pods) = run(Scenario::MutualTls { cert_missing: true }, ing, |p| {
        ready(p, 3)
    })
    .await;
    assert_eq!(r.expect("ok"), Action::requeue(ctx.driver.poll_interval()));
    assert!(pods.calls().is_empty(), "{:?}", pods.calls());
}

#[tokio::test]
async fn missing_secret_is_degraded_and_no_pod_is_called() {
    let ing = Ingester::test().finalized().observed().secured();
    let (r, ctx, pods) = run(Scenario::ControlTokenSecretMissing, ing, |p| ready(p, 3)).await;
    // Not an error: the reconcile polls until the Secret appears.
    assert_eq!(r.expect("ok"), Action::requeue(ctx.driver.poll_interval()));
    assert!(pods.calls().is_empty(), "{:?}", pods.calls());
}
