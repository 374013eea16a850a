//! Reconciliation: `Ingester` → the objects that run it, and the driver.
//!
//! [`reconcile`] runs inside kube's `finalizer` helper: the first pass adds
//! the finalizer `sluice.dev/drain`; then `Apply` runs the pipeline and
//! `Cleanup` (deletion) drains every pod before the finalizer is removed
//! and the garbage collector takes the owned objects.
//!
//! The `Apply` pipeline, each step in its own module:
//! 1. [`validate`] the spec into a [`ValidatedIngester`] (an invalid spec
//!    sets `Degraded` and waits for a change);
//! 2. read the Secrets of `spec.tls`/`spec.auth` ([`secrets`]) into the
//!    driver's credentials (a missing one sets `Degraded` and the driver
//!    calls no pod), then observe the pods and StatefulSet (through the
//!    driver's `Cluster`);
//! 3. [`build`] every object (pure) — the StatefulSet keeps its current
//!    replica count while a scale-down is draining;
//! 4. [`apply`] them with server-side apply; on a new generation, delete
//!    orphans;
//! 5. one driver step (drain, scale, roll, rotate, persist);
//! 6. [`status`] computed and written (server-side apply) if it changed.
//!
//! Every action is also published as a Kubernetes Event. The reconcile is
//! requeued at the driver's next step (at most the poll interval); errors
//! requeue with exponential backoff per object ([`error_policy`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::context::Context;
use crate::crd::Ingester;
use crate::driver::plan::Action as DriverAction;
use crate::driver::plan::Degradation;
use crate::driver::{AccessError, Cluster, ControlAccess, IngesterRef, StepOutcome};
use crate::{Error, Result};

pub mod apply;
pub mod build;
pub mod secrets;
pub mod status;
pub mod validate;

pub use validate::{ValidatedIngester, validate};

/// The finalizer that holds an `Ingester` until its pods have drained.
pub const FINALIZER: &str = "sluice.dev/drain";
/// Drain timeout used when deleting an `Ingester` whose spec is invalid.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Reconciles one `Ingester`.
pub async fn reconcile(ing: Arc<Ingester>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    ctx.metrics.reconciles.inc();
    let ns = ing.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Ingester> = Api::namespaced(ctx.client.clone(), &ns);
    let obj_ref = ing.object_ref(&());
    let key = ctx.key(&ing);
    let result = finalizer(&api, FINALIZER, ing, |event| async {
        match event {
            Finalizer::Apply(ing) => apply_ingester(&ing, &ctx).await,
            Finalizer::Cleanup(ing) => cleanup_ingester(&ing, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match &result {
        Ok(_) => ctx.reset_failures(&key),
        Err(e) if matches!(e.inner(), Error::StillDraining { .. }) => {}
        Err(e) => {
            ctx.publish(
                &obj_ref,
                EventType::Warning,
                e.inner().event_reason(),
                "Reconcile",
                e.to_string(),
            )
            .await;
        }
    }
    result
}

/// What to do after a failed reconcile: retry with exponential backoff
/// (2 s doubling to 5 min), except for a deletion waiting on drains,
/// which polls.
pub fn error_policy(ing: Arc<Ingester>, err: &Error, ctx: Arc<Context>) -> Action {
    let inner = err.inner();
    if matches!(inner, Error::StillDraining { .. }) {
        return Action::requeue(ctx.driver.poll_interval());
    }
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[inner.metric_label()])
        .inc();
    let backoff = ctx.backoff(&ctx.key(&ing));
    tracing::warn!(
        ingester = %ctx.key(&ing),
        error = %err,
        retry_in = ?backoff,
        "reconcile failed"
    );
    Action::requeue(backoff)
}

fn ingester_ref(ing: &Ingester) -> Result<IngesterRef> {
    Ok(IngesterRef {
        namespace: ing.namespace().ok_or(Error::MissingMetadata("namespace"))?,
        name: ing
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingMetadata("name"))?,
    })
}

async fn apply_ingester(ing: &Ingester, ctx: &Context) -> Result<Action> {
    let now = SystemTime::now();
    let iref = ingester_ref(ing)?;
    let obj_ref = ing.object_ref(&());
    let prev = ing.status.as_ref();
    let v = match validate(ing, &ctx.validate_options) {
        Ok(v) => v,
        Err(e) => {
            let st = status::invalid(prev, ing.metadata.generation, &e, now);
            if prev != Some(&st) {
                ctx.publish(
                    &obj_ref,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    e.to_string(),
                )
                .await;
                write_status(ctx, &iref, &st).await?;
            }
            // It cannot fix itself: wait for the next change.
            return Ok(Action::await_change());
        }
    };

    let access = secrets::control_access(&ctx.client, &v).await;
    let mut obs = ctx.driver.observe(&iref, access.as_ref().ok()).await?;
    let sts_replicas = match &obs.set.statefulset {
        Some(s) if s.replicas > v.replicas => s.replicas,
        _ => v.replicas,
    };
    let resources = build::build(&v, sts_replicas);
    apply::apply_all(&ctx.client, &v, &resources).await?;
    // The StatefulSet now has the replicas just applied.
    if let Some(s) = &mut obs.set.statefulset {
        s.replicas = sts_replicas;
    }
    if prev.and_then(|s| s.observed_generation) != v.generation {
        for orphan in apply::delete_orphans(&ctx.client, &v, &resources).await? {
            ctx.publish(
                &obj_ref,
                EventType::Normal,
                "OrphanDeleted",
                "DeleteOrphan",
                format!("deleted {orphan}, no longer wanted"),
            )
            .await;
        }
    }

    let prev_pods = prev.map_or(&[][..], |s| &s.pods[..]);
    let mut outcome = ctx.driver.step(&v, &obs, prev_pods, now).await?;
    degrade_on(&access, &mut outcome);
    publish_outcome(ctx, &obj_ref, prev, &outcome).await;
    let pods = outcome.plan.sts_replicas.max(v.replicas);
    let st = status::compute(
        prev,
        v.generation,
        v.replicas,
        &outcome.plan,
        Some(status::endpoints(&v, pods)),
        now,
    );
    if prev != Some(&st) {
        write_status(ctx, &iref, &st).await?;
    }
    Ok(Action::requeue(outcome.plan.next_step))
}

async fn cleanup_ingester(ing: &Ingester, ctx: &Context) -> Result<Action> {
    let now = SystemTime::now();
    let iref = ingester_ref(ing)?;
    let obj_ref = ing.object_ref(&());
    let prev = ing.status.as_ref();
    let (drain_timeout, access) = match validate(ing, &ctx.validate_options) {
        Ok(v) => (
            v.drain_timeout,
            secrets::control_access(&ctx.client, &v).await,
        ),
        // Without a valid spec the Secrets are unknown: try plain text.
        Err(_) => (DEFAULT_DRAIN_TIMEOUT, Ok(ControlAccess::plain())),
    };
    let obs = ctx.driver.observe(&iref, access.as_ref().ok()).await?;
    let prev_pods = prev.map_or(&[][..], |s| &s.pods[..]);
    let (mut outcome, done) = ctx
        .driver
        .cleanup(&iref, &obs, prev_pods, drain_timeout, now)
        .await?;
    degrade_on(&access, &mut outcome);
    publish_outcome(ctx, &obj_ref, prev, &outcome).await;
    if done {
        ctx.publish(
            &obj_ref,
            EventType::Normal,
            "Drained",
            "Delete",
            "every pod drained; the objects go with the Ingester".into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let st = status::compute(prev, ing.metadata.generation, 0, &outcome.plan, None, now);
    if prev != Some(&st) {
        write_status(ctx, &iref, &st).await?;
    }
    let pending = match &outcome.plan.progress {
        crate::driver::Progress::Deleting { waiting } => waiting.len(),
        _ => 0,
    };
    Err(Error::StillDraining { pending })
}

/// Missing or unusable credentials outrank whatever else the step saw:
/// they are why nothing else can progress.
fn degrade_on(access: &Result<ControlAccess, AccessError>, outcome: &mut StepOutcome) {
    if let Err(e) = access {
        outcome.plan.degraded = Some(Degradation {
            reason: e.reason(),
            message: format!("{e}; the operator cannot call the pods until it is fixed"),
        });
    }
}

async fn write_status(
    ctx: &Context,
    iref: &IngesterRef,
    st: &crate::crd::IngesterStatus,
) -> Result<()> {
    ctx.driver
        .cluster()
        .write_status(iref, st)
        .await
        .map_err(|e| Error::Driver(e.into()))
}

/// One Event per driver action, and one when `Degraded` appears.
async fn publish_outcome(
    ctx: &Context,
    obj_ref: &k8s_openapi::api::core::v1::ObjectReference,
    prev: Option<&crate::crd::IngesterStatus>,
    outcome: &StepOutcome,
) {
    for (action, result) in &outcome.results {
        let (reason, note) = action.describe();
        let related = action
            .pod()
            .map(|pod| k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.to_string()),
                namespace: obj_ref.namespace.clone(),
                ..Default::default()
            });
        match result {
            Ok(()) => {
                // Rotations are routine: one event per rotation would bury
                // the rest; the metric counts them.
                if !matches!(action, DriverAction::RotateWal { .. }) {
                    ctx.publish_related(
                        obj_ref,
                        related,
                        EventType::Normal,
                        reason,
                        action.kind(),
                        note,
                    )
                    .await;
                }
            }
            Err(e) => {
                ctx.publish_related(
                    obj_ref,
                    related,
                    EventType::Warning,
                    "ActionFailed",
                    action.kind(),
                    format!("{note}: failed: {e}"),
                )
                .await;
            }
        }
    }
    if let Some(d) = &outcome.plan.degraded {
        let was = prev
            .map(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == status::DEGRADED && c.status == "True" && c.reason == d.reason
                })
            })
            .unwrap_or(false);
        if !was {
            ctx.publish(
                obj_ref,
                EventType::Warning,
                d.reason,
                "Drain",
                d.message.clone(),
            )
            .await;
        }
    }
}

/// Runs the controller until `shutdown` resolves: watches `Ingester`s (in
/// one namespace or all) and the objects they own.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    macro_rules! api {
        ($k:ty) => {
            match &namespace {
                Some(ns) => Api::<$k>::namespaced(client.clone(), ns),
                None => Api::<$k>::all(client.clone()),
            }
        };
    }
    let owned = watcher::Config::default()
        .labels(&format!("app.kubernetes.io/managed-by={}", build::MANAGER));
    Controller::new(api!(Ingester), watcher::Config::default().any_semantic())
        .owns(api!(StatefulSet), owned.clone())
        .owns(api!(Service), owned.clone())
        .owns(api!(ConfigMap), owned.clone())
        .owns(api!(PodDisruptionBudget), owned)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(ingester = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
}

/// An Event on `obj` (publishing failures are logged, never fatal).
pub(crate) fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1024)),
        action: action.into(),
        secondary: None,
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
