//! A recording stand-in for the Kubernetes API server, to learn which API
//! calls the operator makes — and so which RBAC rules it needs.
//!
//! The operator's public reconcile entry point and its controller loop run
//! against a `kube::Client` whose transport is this fake. It answers every
//! request the way the API server would in the scenario being played (a
//! StatefulSet that exists or not, pods on an old or new revision, an
//! orphaned PodDisruptionBudget, an injected 409) and records each one as
//! an RBAC triple: API group, resource (with subresource), verb. Watches
//! are recorded and then left pending, as a quiet watch would be.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// One permission the operator used: `(apiGroup, resource, verb)`.
pub type Call = (String, String, String);

/// What the fake API server holds for the scenario being played.
#[derive(Default, Clone)]
pub struct World {
    /// The Ingester, as returned by patches of it.
    pub ingester: Value,
    /// `(replicas, updateRevision)` of the StatefulSet, if it exists.
    pub statefulset: Option<(i32, String)>,
    /// `(ordinal, revision)` of each running, ready pod.
    pub pods: Vec<(i32, String)>,
    /// The orphan sweep finds one object of every kind it sweeps that the
    /// Ingester owns but no longer wants (e.g. after a rename).
    pub orphans: bool,
    /// Server-side apply of the StatefulSet answers 409.
    pub conflict_on_statefulset: bool,
    /// Secrets by name (`get` of any other answers 404).
    pub secrets: Vec<(String, Vec<(String, String)>)>,
}

#[derive(Clone, Default)]
pub struct Recorder {
    /// The leader-election Lease, once created.
    lease: Arc<Mutex<Option<Value>>>,
    pub calls: Arc<Mutex<BTreeSet<Call>>>,
    /// Every request as `METHOD path?query`, for failure messages.
    pub log: Arc<Mutex<Vec<String>>>,
    world: Arc<Mutex<World>>,
}

impl Recorder {
    pub fn set_world(&self, w: World) {
        *self.world.lock().expect("world") = w;
    }

    pub fn calls(&self) -> BTreeSet<Call> {
        self.calls.lock().expect("calls").clone()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// A client whose every request this recorder answers.
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let this = self.clone();
        tokio::spawn(async move {
            // Watches stay open until the client goes.
            let mut pending = Vec::new();
            while let Some((req, send)) = handle.next_request().await {
                match this.answer(req).await {
                    Some(resp) => send.send_response(resp),
                    None => pending.push(send),
                }
            }
        });
        kube::Client::new(service, "default")
    }

    async fn answer(&self, req: Request<Body>) -> Option<Response<Body>> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let query = uri.query().unwrap_or_default().to_string();
        self.log
            .lock()
            .expect("log")
            .push(format!("{method} {}", uri));
        let body = req.into_body().collect_bytes().await.expect("request body");
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let Some(p) = parse_path(uri.path()) else {
            return Some(reply(
                StatusCode::NOT_FOUND,
                status_body(404, "NotFound", &format!("unknown path {}", uri.path())),
            ));
        };
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb = match (&method, p.name.is_some()) {
            (&Method::GET, true) => "get",
            (&Method::GET, false) if watch => "watch",
            (&Method::GET, false) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, true) => "delete",
            (&Method::DELETE, false) => "deletecollection",
            _ => "unknown",
        };
        let resource = match &p.subresource {
            Some(s) => format!("{}/{s}", p.resource),
            None => p.resource.clone(),
        };
        self.calls.lock().expect("calls").insert((
            p.group.clone(),
            resource.clone(),
            verb.to_string(),
        ));
        if verb == "watch" {
            return None;
        }
        let world = self.world.lock().expect("world").clone();
        let ns = p.namespace.clone().unwrap_or_else(|| "default".into());
        let out = match (verb, resource.as_str()) {
            ("get", "leases") => match self.lease.lock().expect("lease").clone() {
                Some(l) => ok(l),
                None => reply(
                    StatusCode::NOT_FOUND,
                    status_body(404, "NotFound", "no lease"),
                ),
            },
            ("create", "leases") | ("update", "leases") => {
                let mut b = body.clone();
                b["metadata"]["resourceVersion"] = json!(format!("{}", self.log().len()));
                *self.lease.lock().expect("lease") = Some(b.clone());
                ok(b)
            }
            ("get", "statefulsets") => match &world.statefulset {
                Some((replicas, rev)) => ok(statefulset(
                    p.name.as_deref().unwrap_or_default(),
                    &ns,
                    *replicas,
                    rev,
                )),
                None => reply(
                    StatusCode::NOT_FOUND,
                    status_body(404, "NotFound", "statefulset not found"),
                ),
            },
            ("get", "secrets") => match world
                .secrets
                .iter()
                .find(|(n, _)| Some(n) == p.name.as_ref())
            {
                Some((name, data)) => ok(secret(name, &ns, data)),
                None => reply(
                    StatusCode::NOT_FOUND,
                    status_body(404, "NotFound", "secret not found"),
                ),
            },
            ("list", "pods") => ok(list(
                "PodList",
                world
                    .pods
                    .iter()
                    .map(|(o, rev)| pod(&world, &ns, *o, rev))
                    .collect(),
            )),
            ("list", "configmaps" | "services" | "statefulsets" | "poddisruptionbudgets")
                if world.orphans =>
            {
                ok(list("List", vec![orphan(&world, &ns, &p.resource)]))
            }
            ("list", _) => ok(list("List", vec![])),
            ("patch", "statefulsets") if world.conflict_on_statefulset => reply(
                StatusCode::CONFLICT,
                status_body(409, "Conflict", "injected conflict"),
            ),
            ("patch", "ingesters") | ("patch", "ingesters/status") => ok(world.ingester.clone()),
            ("patch", "statefulsets/scale") => ok(json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": p.name, "namespace": ns},
                "spec": {"replicas": body["spec"]["replicas"]}
            })),
            ("patch", _) | ("create", _) | ("update", _) => {
                let mut b = body.clone();
                if b.is_object() {
                    b["metadata"]["uid"] = json!("uid-of-child");
                    b["metadata"]["resourceVersion"] = json!("2");
                    if b["metadata"]["name"].is_null() {
                        b["metadata"]["name"] = json!(p.name.clone().unwrap_or("generated".into()));
                    }
                }
                ok(b)
            }
            ("delete", _) => ok(status_body(200, "", "deleted")),
            _ => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                status_body(405, "MethodNotAllowed", "not in this fake"),
            ),
        };
        Some(out)
    }
}

struct ApiPath {
    group: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

/// `/api/v1/…` or `/apis/<group>/<version>/…`, then optionally
/// `namespaces/<ns>/`, then `<resource>[/<name>[/<subresource>]]`.
fn parse_path(path: &str) -> Option<ApiPath> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match *seg.first()? {
        "api" => ("", seg.get(2..)?),
        "apis" => (*seg.get(1)?, seg.get(3..)?),
        _ => return None,
    };
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    Some(ApiPath {
        group: group.to_string(),
        namespace,
        resource: rest.first()?.to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn reply(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
        .expect("response")
}

fn ok(body: Value) -> Response<Body> {
    reply(StatusCode::OK, body)
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn ingester_name(w: &World) -> String {
    w.ingester["metadata"]["name"]
        .as_str()
        .unwrap_or("ingest")
        .to_string()
}

fn secret(name: &str, ns: &str, data: &[(String, String)]) -> Value {
    let s = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    let mut v = serde_json::to_value(s).expect("secret");
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

fn statefulset(name: &str, ns: &str, replicas: i32, rev: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "uid": "sts-uid"},
        "spec": {
            "replicas": replicas, "serviceName": format!("{name}-pods"),
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "template": {"spec": {"containers": []}}
        },
        "status": {"replicas": replicas, "updateRevision": rev}
    })
}

/// A running, ready pod at `10.0.0.<ordinal>`.
fn pod(w: &World, ns: &str, ordinal: i32, rev: &str) -> Value {
    let sts = ingester_name(w);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{sts}-{ordinal}"), "namespace": ns,
            "labels": {
                "controller-revision-hash": rev,
                "app.kubernetes.io/name": "sluice-ingester",
                "app.kubernetes.io/instance": sts
            }
        },
        "status": {
            "phase": "Running", "podIP": format!("10.0.0.{ordinal}"),
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    })
}

/// An object of `resource` labelled and owned (as controller) by the
/// Ingester, under a name the build does not use.
fn orphan(w: &World, ns: &str, resource: &str) -> Value {
    let name = ingester_name(w);
    let (api_version, kind) = match resource {
        "configmaps" => ("v1", "ConfigMap"),
        "services" => ("v1", "Service"),
        "statefulsets" => ("apps/v1", "StatefulSet"),
        _ => ("policy/v1", "PodDisruptionBudget"),
    };
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {
            "name": format!("{name}-old"), "namespace": ns,
            "labels": {
                "app.kubernetes.io/name": "sluice-ingester",
                "app.kubernetes.io/instance": name,
                "app.kubernetes.io/managed-by": "sluice-operator"
            },
            "ownerReferences": [{
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Ingester", "name": name,
                "uid": w.ingester["metadata"]["uid"], "controller": true
            }]
        }
    })
}
