//! `sluice-operator`: runs Sluice ingesters on Kubernetes.
//!
//! Cluster admins apply `Ingester` resources ([`crd`]); the operator turns
//! each into a StatefulSet of ingester pods plus Services, a ConfigMap and
//! a PodDisruptionBudget ([`reconcile`]), and drives the pods through their
//! control RPC ([`driver`]) so that no pod leaves with unpersisted data:
//!
//! ```text
//!   Ingester ──watch──▶ reconcile: validate → build → apply → driver step → status
//!                                                   │            │
//!                                      server-side apply   ControlService (gRPC)
//!                                                   ▼            ▼
//!                        ConfigMap, Services, StatefulSet, PDB   pods: Status, RotateWal,
//!                                                                Persist, PrepareShutdown,
//!                                                                ResumeIngest
//! ```
//!
//! Guarantees the driver keeps:
//! - a pod is deleted (rolling restart) or scaled away only after it
//!   reported `Drained` with an empty WAL and buffer in the same step;
//! - at most one pod restarts at a time, the next only once all are ready;
//! - a drain that outlives `drainTimeout` sets `Degraded` and halts the
//!   operation instead of forcing it;
//! - the `Ingester` is not released (finalizer) before every pod drained;
//! - with `spec.tls`/`spec.auth` it calls a pod only over TLS verified
//!   against the `Ingester`'s CA and the pod's own DNS name, with its
//!   `control` token and, with `spec.tls.clientAuth`, its own client
//!   certificate (never mounted into a pod); missing Secrets or refused
//!   credentials set
//!   `Degraded` with the cause (and, like any pod it cannot ask, block
//!   every removal) rather than fail the reconcile.
//!
//! The process ([`server`], [`leader`]): `/metrics`, `/health`, `/ready`,
//! leader election with a Lease so several replicas can run.

pub mod context;
pub mod crd;
pub mod driver;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod server;

#[cfg(test)]
mod fixtures;

pub use context::{Context, ContextOptions};

use driver::DriverError;

/// Why a reconcile failed. The variant name is the Event reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Ingester has no metadata.{0}")]
    MissingMetadata(&'static str),
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing {kind}s to find orphans: {source}")]
    ListOrphans {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("deleting orphaned {kind} {name}: {source}")]
    DeleteOrphan {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
    #[error("deletion waits for {pending} pods to drain")]
    StillDraining { pending: usize },
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error of the reconcile step itself, unwrapped from the finalizer.
    pub fn inner(&self) -> &Error {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.inner(),
                _ => self,
            },
            e => e,
        }
    }

    /// Label of the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Apply { .. } => "apply",
            Error::ListOrphans { .. } => "list_orphans",
            Error::DeleteOrphan { .. } => "delete_orphan",
            Error::Driver(DriverError::Cluster(c)) => c.label(),
            Error::StillDraining { .. } => "still_draining",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// The Event reason for this failure.
    pub fn event_reason(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::Apply { .. } => "ApplyFailed",
            Error::ListOrphans { .. } => "ListOrphansFailed",
            Error::DeleteOrphan { .. } => "DeleteOrphanFailed",
            Error::Driver(_) => "DriverFailed",
            Error::StillDraining { .. } => "StillDraining",
            Error::Finalizer(_) => "FinalizerFailed",
        }
    }
}
