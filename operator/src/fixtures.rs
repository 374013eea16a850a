//! Test fixtures: sample `Ingester`s and validated forms of them.

use crate::crd::Ingester;
use crate::reconcile::validate::{ValidateOptions, ValidatedIngester, validate};

/// Parses an `Ingester` and fills in what the API server would have set
/// (uid, namespace, generation).
pub fn ingester_from_yaml(yaml: &str) -> Ingester {
    // Through JSON: serde_yaml-style YAML maps enums to `!tags`, while the
    // API (and these fixtures) use `{variant: {...}}` objects.
    let value: serde_json::Value = yaml_serde::from_str(yaml).expect("fixture is YAML");
    let mut ing: Ingester = serde_json::from_value(value).expect("fixture is an Ingester");
    ing.metadata
        .uid
        .get_or_insert_with(|| "0a0b0c0d-uid".into());
    ing.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    ing.metadata.generation.get_or_insert(1);
    ing
}

/// `operator/examples/<name>`.
pub fn sample(name: &str) -> Ingester {
    let path = manifest_dir().join("examples").join(name);
    let yaml = std::fs::read_to_string(&path).expect("read sample");
    ingester_from_yaml(&yaml)
}

pub fn validated(name: &str) -> ValidatedIngester {
    validate(&sample(name), &ValidateOptions::default()).expect("sample is valid")
}

// ---- A mocked API server (the controller-rs pattern) ----------------------

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use crate::context::{Context, ContextOptions};
use crate::driver::mock::MockPods;
use crate::metrics::Metrics;

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Plays the API server for one reconcile: each `expect_*` step takes the
/// next request, asserts its method and path (and whatever the step checks
/// in the body), and answers as the API server would.
pub struct ApiServerVerifier {
    handle: ApiServerHandle,
    /// `METHOD path?query` of every request, in order.
    pub seen: Vec<String>,
}

/// A request the verifier took: its parsed body and query.
pub struct Seen {
    pub body: Value,
    pub query: String,
}

impl Context {
    /// A context whose client talks to the returned verifier and whose pods
    /// answer from the returned mock.
    pub fn test() -> (Arc<Context>, ApiServerVerifier, Arc<MockPods>) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let pods = Arc::new(MockPods::default());
        let ctx = Context::new(
            client,
            pods.clone(),
            Arc::new(Metrics::new()),
            ContextOptions {
                poll_interval: Duration::from_secs(5),
                ..Default::default()
            },
        );
        (
            Arc::new(ctx),
            ApiServerVerifier {
                handle,
                seen: Vec::new(),
            },
            pods,
        )
    }
}

impl ApiServerVerifier {
    /// A client whose every request this verifier answers.
    pub fn client() -> (kube::Client, ApiServerVerifier) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (
            kube::Client::new(service, "default"),
            ApiServerVerifier {
                handle,
                seen: Vec::new(),
            },
        )
    }

    /// Takes the next request; asserts `method` and `path`; replies with
    /// `status` and what `reply` makes of the request body.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        status: StatusCode,
        reply: impl FnOnce(&Value) -> Value,
    ) -> Seen {
        let (req, send) = tokio::time::timeout(Duration::from_secs(1), self.handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("expected {method} {path}; no request came"))
            .unwrap_or_else(|| panic!("expected {method} {path}; the client is gone"));
        let uri = req.uri().clone();
        self.seen.push(format!("{} {}", req.method(), uri));
        assert_eq!(
            (req.method(), uri.path()),
            (&method, path),
            "requests so far: {:#?}",
            self.seen
        );
        let bytes = req.into_body().collect_bytes().await.expect("request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON request body")
        };
        let out = reply(&body);
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&out).expect("JSON")))
                .expect("response"),
        );
        Seen {
            body,
            query: uri.query().unwrap_or_default().to_string(),
        }
    }

    /// A server-side apply of `kind` `name`, echoed back.
    pub async fn expect_apply(&mut self, path: &str) -> Value {
        let seen = self
            .expect(Method::PATCH, path, StatusCode::OK, |b| {
                let mut b = b.clone();
                b["metadata"]["uid"] = json!("uid-of-child");
                b
            })
            .await;
        assert!(
            seen.query.contains("fieldManager=sluice-operator")
                && seen.query.contains("force=true"),
            "apply of {path} must be forced with our field manager: {}",
            seen.query
        );
        seen.body
    }

    /// An Event being created.
    pub async fn expect_event(&mut self, ns: &str) -> Value {
        self.expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
            StatusCode::CREATED,
            Value::clone,
        )
        .await
        .body
    }

    /// A list answered with `items`.
    pub async fn expect_list(&mut self, path: &str, kind: &str, items: Vec<Value>) -> String {
        let kind = kind.to_string();
        self.expect(Method::GET, path, StatusCode::OK, move |_| {
            json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "1"}, "items": items})
        })
        .await
        .query
    }

    /// Answers the next request with an API error.
    pub async fn expect_error(&mut self, method: Method, path: &str, code: u16, reason: &str) {
        let status = StatusCode::from_u16(code).expect("status code");
        let reason = reason.to_string();
        self.expect(method, path, status, move |_| api_error(code, &reason))
            .await;
    }

    /// Fails if the client sent anything else.
    pub async fn expect_nothing_more(mut self) {
        if let Ok(Some((req, _))) =
            tokio::time::timeout(Duration::from_millis(100), self.handle.next_request()).await
        {
            panic!(
                "unexpected request {} {}; before it: {:#?}",
                req.method(),
                req.uri(),
                self.seen
            );
        }
    }
}

/// The body of an API error (`metav1.Status`).
pub fn api_error(code: u16, reason: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": format!("injected {reason}"), "reason": reason, "code": code
    })
}

/// A StatefulSet as the API server returns it.
pub fn statefulset_json(name: &str, ns: &str, replicas: i32, update_revision: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "uid": "sts-uid"},
        "spec": {
            "replicas": replicas, "serviceName": format!("{name}-pods"),
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "template": {"spec": {"containers": []}}
        },
        "status": {"replicas": replicas, "updateRevision": update_revision}
    })
}

/// A running pod of the StatefulSet at `10.0.0.<ordinal>`.
pub fn pod_json(sts: &str, ns: &str, ordinal: i32, revision: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{sts}-{ordinal}"), "namespace": ns,
            "labels": {"controller-revision-hash": revision, "app.kubernetes.io/instance": sts}
        },
        "status": {
            "phase": "Running", "podIP": format!("10.0.0.{ordinal}"),
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    })
}

/// The control URL of pod `ordinal` in [`pod_json`].
pub fn pod_url(ordinal: i32) -> String {
    format!("http://10.0.0.{ordinal}:8082")
}

/// Runs `scenario` against the verifier concurrently with `work`, failing
/// if the scenario does not complete within 2 s.
pub async fn with_api_server<T, F, Fut>(
    verifier: ApiServerVerifier,
    scenario: F,
    work: impl std::future::Future<Output = T>,
) -> T
where
    F: FnOnce(ApiServerVerifier) -> Fut,
    Fut: std::future::Future<Output = ApiServerVerifier> + Send + 'static,
{
    let scenario = scenario(verifier);
    let server = tokio::spawn(async move {
        let v = scenario.await;
        v.expect_nothing_more().await;
    });
    let out = work.await;
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the scenario did not finish in time")
        .expect("the scenario's assertions held");
    out
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
