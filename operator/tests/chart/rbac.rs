//! The API calls the operator makes, learnt by running its public
//! reconcile function and its controller loop against [`Recorder`] through
//! the same scenarios its reconcile tests play: finalizer added, first
//! create, an orphan deleted, a scale-down drained, a rolling restart, a
//! deletion drained, a repeated failure (an Event series), TLS, mTLS and
//! token Secrets read (present and missing), the
//! controller's watches (cluster-wide and one namespace), and leader
//! election (take, renew, release the Lease).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sluice_operator::crd::{Ingester, IngesterStatus};
use sluice_operator::driver::{ControlError, PodControl, PodFigures, PodState, Target};
use sluice_operator::leader::{LeaderElector, LeaseConfig};
use sluice_operator::metrics::Metrics;
use sluice_operator::reconcile::{FINALIZER, reconcile, run};
use sluice_operator::{Context, ContextOptions};
use sluice_proto::v1;

use super::api_recorder::{Call, Recorder, World};
use super::tools::root;

/// Pods answering the control RPC from a table of states; unknown pods
/// are `Ready`. Drained pods report an empty WAL and buffer.
#[derive(Default)]
struct Pods {
    states: Mutex<HashMap<String, PodState>>,
}

impl Pods {
    fn with(states: &[(i32, PodState)]) -> Arc<Self> {
        let p = Pods::default();
        for (ordinal, s) in states {
            p.states
                .lock()
                .expect("states")
                .insert(format!("http://10.0.0.{ordinal}:8082"), *s);
        }
        Arc::new(p)
    }

    fn state(&self, url: &str) -> PodState {
        *self
            .states
            .lock()
            .expect("states")
            .get(url)
            .unwrap_or(&PodState::Ready)
    }
}

#[async_trait]
impl PodControl for Pods {
    async fn status(&self, to: &Target<'_>) -> Result<PodFigures, ControlError> {
        let state = self.state(to.url);
        // Through the proto message, as the real client does: a drained pod
        // has an empty WAL and buffer, any other holds a little.
        let busy = u64::from(state != PodState::Drained);
        let proto_state = match state {
            PodState::Drained => v1::IngesterState::Drained,
            PodState::Draining => v1::IngesterState::Draining,
            _ => v1::IngesterState::Ready,
        };
        Ok(PodFigures::from(v1::StatusResponse {
            state: proto_state as i32,
            buffered_rows: busy,
            buffered_bytes: busy * 100,
            wal_segments: 1,
            wal_bytes: busy * 100,
            oldest_unpersisted_write_age_ms: busy * 1000,
            wal_empty: busy == 0,
            ..Default::default()
        }))
    }
    async fn rotate_wal(&self, _to: &Target<'_>) -> Result<(), ControlError> {
        Ok(())
    }
    async fn persist(&self, _to: &Target<'_>) -> Result<(), ControlError> {
        Ok(())
    }
    async fn prepare_shutdown(&self, to: &Target<'_>) -> Result<PodState, ControlError> {
        let mut s = self.states.lock().expect("states");
        let st = s.entry(to.url.to_string()).or_insert(PodState::Draining);
        if *st != PodState::Drained {
            *st = PodState::Draining;
        }
        Ok(*st)
    }
    async fn resume_ingest(&self, to: &Target<'_>) -> Result<PodState, ControlError> {
        self.states
            .lock()
            .expect("states")
            .insert(to.url.to_string(), PodState::Ready);
        Ok(PodState::Ready)
    }
}

/// The `cluster.yaml` sample as the API server would hold it.
fn sample() -> Ingester {
    let text = std::fs::read_to_string(root().join("operator/examples/cluster.yaml"))
        .expect("read operator/examples/cluster.yaml");
    let value: serde_json::Value = yaml_serde::from_str(&text).expect("sample is YAML");
    let mut ing: Ingester = serde_json::from_value(value).expect("sample is an Ingester");
    ing.metadata.uid = Some("00000000-0000-0000-0000-00000000abcd".into());
    ing.metadata
        .namespace
        .get_or_insert_with(|| "sluice".into());
    ing.metadata.generation = Some(1);
    ing.metadata.resource_version = Some("100".into());
    ing
}

fn finalized(mut ing: Ingester) -> Ingester {
    ing.metadata.finalizers = Some(vec![FINALIZER.into()]);
    ing
}

fn observed(mut ing: Ingester) -> Ingester {
    ing.status = Some(IngesterStatus {
        observed_generation: ing.metadata.generation,
        ..Default::default()
    });
    ing
}

fn context(rec: &Recorder, pods: Arc<Pods>) -> Arc<Context> {
    Arc::new(Context::new(
        rec.client(),
        pods,
        Arc::new(Metrics::new()),
        ContextOptions {
            poll_interval: Duration::from_secs(5),
            ..Default::default()
        },
    ))
}

async fn play(rec: &Recorder, ctx: &Arc<Context>, ing: Ingester, world: World) {
    let mut world = world;
    world.ingester = serde_json::to_value(&ing).expect("serialise");
    rec.set_world(world);
    // Success or a reported failure both count: the calls are what matter.
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        reconcile(Arc::new(ing), ctx.clone()),
    )
    .await
    .expect("reconcile finishes");
    if let Err(e) = r {
        println!("(scenario ended with: {e})");
    }
}

fn ready_pods(n: i32, rev: &str) -> Vec<(i32, String)> {
    (0..n).map(|i| (i, rev.to_string())).collect()
}

/// Every `(apiGroup, resource, verb)` the operator used.
pub async fn operator_api_calls() -> (BTreeSet<Call>, Vec<String>) {
    let rec = Recorder::default();
    let rev = "rev-1".to_string();

    // 1. A new Ingester: the finalizer is added.
    let ctx = context(&rec, Pods::with(&[]));
    play(&rec, &ctx, sample(), World::default()).await;

    // 2. First reconcile: nothing exists yet; everything applied.
    play(&rec, &ctx, finalized(sample()), World::default()).await;

    // 3. A new generation disables the PDB; objects of an old name are orphans.
    let mut ing = observed(finalized(sample()));
    ing.metadata.generation = Some(2);
    ing.spec.disruption_budget.enabled = false;
    let world = World {
        statefulset: Some((3, rev.clone())),
        pods: ready_pods(3, &rev),
        orphans: true,
        ..Default::default()
    };
    play(&rec, &context(&rec, Pods::with(&[])), ing, world).await;

    // 4. Scale-down 3 → 1: drains start, then (drained) the StatefulSet scales.
    let mut ing = observed(finalized(sample()));
    ing.spec.replicas = 1;
    let world = World {
        statefulset: Some((3, rev.clone())),
        pods: ready_pods(3, &rev),
        ..Default::default()
    };
    play(
        &rec,
        &context(&rec, Pods::with(&[])),
        ing.clone(),
        world.clone(),
    )
    .await;
    let drained = Pods::with(&[(1, PodState::Drained), (2, PodState::Drained)]);
    play(&rec, &context(&rec, drained), ing, world).await;

    // 5. Rolling restart: pod 2 is on the old revision and drained: deleted.
    let ing = observed(finalized(sample()));
    let world = World {
        statefulset: Some((3, "rev-2".into())),
        pods: vec![(0, "rev-2".into()), (1, "rev-2".into()), (2, rev.clone())],
        ..Default::default()
    };
    let drained = Pods::with(&[(2, PodState::Drained)]);
    play(&rec, &context(&rec, drained), ing, world).await;

    // 6. Deletion: pods drained, the finalizer removed.
    let mut ing = observed(finalized(sample()));
    ing.metadata.deletion_timestamp = Some(sluice_operator::driver::plan::time(SystemTime::now()));
    let world = World {
        statefulset: Some((2, rev.clone())),
        pods: ready_pods(2, &rev),
        ..Default::default()
    };
    let drained = Pods::with(&[(0, PodState::Drained), (1, PodState::Drained)]);
    play(
        &rec,
        &context(&rec, drained.clone()),
        ing.clone(),
        world.clone(),
    )
    .await;

    // 7. The same failure twice: the second Event extends a series (patch).
    let ctx = context(&rec, Pods::with(&[]));
    let world = World {
        statefulset: Some((3, rev.clone())),
        pods: ready_pods(3, &rev),
        conflict_on_statefulset: true,
        ..Default::default()
    };
    let ing = observed(finalized(sample()));
    play(&rec, &ctx, ing.clone(), world.clone()).await;
    play(&rec, &ctx, ing, world).await;

    // 8. TLS and tokens: the Secrets the spec names are read by name
    //    (complete, then one missing: Degraded, no other call).
    let mut ing = observed(finalized(sample()));
    ing.spec.tls =
        Some(serde_json::from_value(serde_json::json!({"secretName": "ingest-tls"})).expect("tls"));
    ing.spec.auth = Some(
        serde_json::from_value(serde_json::json!({
            "tokensSecretName": "ingest-tokens",
            "controlTokenSecretName": "sluice-operator-token",
        }))
        .expect("auth"),
    );
    let ca = std::fs::read_to_string(root().join("operator/src/driver/testdata/ca.pem"))
        .expect("read the test CA");
    let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut world = World {
        statefulset: Some((3, rev.clone())),
        pods: ready_pods(3, &rev),
        secrets: vec![
            (
                "ingest-tls".into(),
                kv(&[("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", &ca)]),
            ),
            ("ingest-tokens".into(), kv(&[("tokens", "# hashes")])),
            ("sluice-operator-token".into(), kv(&[("token", "t0k3n")])),
        ],
        ..Default::default()
    };
    play(
        &rec,
        &context(&rec, Pods::with(&[])),
        ing.clone(),
        world.clone(),
    )
    .await;
    world.secrets.pop();
    play(
        &rec,
        &context(&rec, Pods::with(&[])),
        ing.clone(),
        world.clone(),
    )
    .await;
    //    Mutual TLS: the client CA and the operator's client certificate
    //    are read the same way.
    ing.spec.tls = Some(
        serde_json::from_value(serde_json::json!({
            "secretName": "ingest-tls",
            "clientAuth": {
                "caSecretName": "ingest-client-ca",
                "operatorCertSecretName": "sluice-operator-client",
            },
        }))
        .expect("tls"),
    );
    let testdata = |f: &str| {
        std::fs::read_to_string(root().join("operator/src/driver/testdata").join(f))
            .expect("read test PEM")
    };
    world
        .secrets
        .push(("sluice-operator-token".into(), kv(&[("token", "t0k3n")])));
    world
        .secrets
        .push(("ingest-client-ca".into(), kv(&[("ca.crt", &ca)])));
    world.secrets.push((
        "sluice-operator-client".into(),
        kv(&[
            ("tls.crt", &testdata("client.pem")),
            ("tls.key", &testdata("client.key")),
        ]),
    ));
    play(&rec, &context(&rec, Pods::with(&[])), ing, world).await;

    // 9. The controller: its watches, cluster-wide and in one namespace.
    for namespace in [None, Some("sluice".to_string())] {
        let before = rec
            .log()
            .iter()
            .filter(|l| l.contains("watch=true"))
            .count();
        let ctx = context(&rec, Pods::with(&[]));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let controller = tokio::spawn(run(ctx, namespace, 1, async move {
            let _ = stopped.await;
        }));
        // Wait (bounded) until the five watches have started.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while rec
            .log()
            .iter()
            .filter(|l| l.contains("watch=true"))
            .count()
            < before + 5
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), controller).await;
    }
    // 10. Leader election: take the free Lease, renew it, release it.
    let elector = LeaderElector::new(
        rec.client(),
        LeaseConfig {
            namespace: "sluice-system".into(),
            name: "sluice-operator".into(),
            identity: "sluice-operator-0".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(1),
        },
    );
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(20), elector.acquire(|| {}))
            .await
            .expect("the Lease is taken (then renewed)");
    }
    tokio::time::timeout(Duration::from_secs(20), elector.release())
        .await
        .expect("the Lease is released");
    (rec.calls(), rec.log())
}
