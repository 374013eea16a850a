//! Leader election with a `coordination.k8s.io/v1` Lease, so two or more
//! operator replicas can run and exactly one reconciles.
//!
//! The protocol is the one client-go uses, reduced to what we need:
//! - the Lease names a holder and when it last renewed; a holder is live
//!   while `renewTime + leaseDurationSeconds` is in the future;
//! - a candidate takes the Lease when it is free, expired or already its
//!   own, by replacing it with the `resourceVersion` it read: of two
//!   candidates racing, the API server lets one write win and answers the
//!   other `409 Conflict`, which simply means "not leader";
//! - the leader renews every `lease_duration / 3`; if it cannot renew for a
//!   whole `renew_deadline` it must assume another replica took over, so
//!   [`LeaderElector::hold`] returns and the process stops reconciling
//!   (the caller exits and Kubernetes restarts it as a candidate);
//! - on a clean shutdown the leader releases the Lease (empty holder) so the
//!   next replica takes over at once instead of after the lease duration.
//!
//! Which action to take is decided by [`decide`], a pure function of the
//! Lease as read, tested without an API server. Clock skew between replicas
//! only shifts when an expired Lease is taken, never lets two hold it: each
//! write is guarded by the `resourceVersion`.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps leading while renewals fail.
    pub renew_deadline: Duration,
    /// How often a candidate retries.
    pub retry_period: Duration,
}

/// What a candidate does with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// Free or expired: take it over (a new transition).
    Acquire,
    /// Ours and live: renew it.
    Renew,
    /// Someone else holds a live Lease.
    Follow { holder: String },
}

/// Decides from the Lease as read at `now`.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: SystemTime) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    let expires = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| SystemTime::from(t.0) + duration);
    match expires {
        Some(t) if t > now => Decision::Follow {
            holder: holder.to_string(),
        },
        _ => Decision::Acquire,
    }
}

/// The spec we write for `decision` (not for `Follow`).
pub fn next_spec(
    prev: Option<&LeaseSpec>,
    decision: &Decision,
    cfg: &LeaseConfig,
    now: SystemTime,
) -> LeaseSpec {
    let now = micro_time(now);
    let duration = i32::try_from(cfg.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let transitions = prev.and_then(|p| p.lease_transitions).unwrap_or(0);
    match decision {
        Decision::Renew => LeaseSpec {
            renew_time: Some(now),
            lease_duration_seconds: Some(duration),
            ..prev.cloned().unwrap_or_default()
        },
        Decision::Create | Decision::Acquire | Decision::Follow { .. } => LeaseSpec {
            holder_identity: Some(cfg.identity.clone()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(if matches!(decision, Decision::Create) {
                0
            } else {
                transitions.saturating_add(1)
            }),
            ..Default::default()
        },
    }
}

fn micro_time(t: SystemTime) -> MicroTime {
    MicroTime(Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading Lease {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing Lease {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs the election for one replica.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
}

impl LeaderElector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        let (leader, _) = watch::channel(false);
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            leader,
        }
    }

    /// `true` while this replica leads.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// One attempt: `Ok(true)` if we hold the Lease afterwards. A 409
    /// (another replica wrote first) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let (ns, name) = (&self.cfg.namespace, &self.cfg.name);
        let current = self
            .api
            .get_opt(name)
            .await
            .map_err(|source| LeaseError::Read {
                namespace: ns.clone(),
                name: name.clone(),
                source,
            })?;
        let now = SystemTime::now();
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.cfg.identity,
            now,
        );
        let write_err = |source| LeaseError::Write {
            namespace: ns.clone(),
            name: name.clone(),
            source,
        };
        let result = match (&decision, current) {
            (Decision::Follow { holder }, _) => {
                tracing::debug!(holder, lease = %name, "another replica leads");
                return Ok(false);
            }
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        ..Default::default()
                    },
                    spec: Some(next_spec(None, &Decision::Create, &self.cfg, now)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (d, Some(mut lease)) => {
                lease.spec = Some(next_spec(lease.spec.as_ref(), d, &self.cfg, now));
                // `replace` carries the resourceVersion we read: a
                // concurrent writer makes this a 409.
                self.api.replace(name, &PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => {
                if matches!(decision, Decision::Create | Decision::Acquire) {
                    tracing::info!(identity = %self.cfg.identity, lease = %name, "became leader");
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(write_err(e)),
        }
    }

    /// Waits until this replica leads. `ready` is called after the first
    /// answer from the API server (leader or not).
    pub async fn acquire(&self, mut ready: impl FnMut()) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    ready();
                    let _ = self.leader.send(true);
                    return;
                }
                Ok(false) => ready(),
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews the Lease until a renewal has failed for `renew_deadline`
    /// (or another replica took it); then returns, no longer leader.
    pub async fn hold(&self) {
        let every = self.cfg.lease_duration / 3;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("lost the Lease to another replica");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the Lease failed");
                    if last_ok.elapsed() > self.cfg.renew_deadline {
                        tracing::error!(
                            deadline = ?self.cfg.renew_deadline,
                            "could not renew the Lease in time; stepping down"
                        );
                        break;
                    }
                }
            }
        }
        let _ = self.leader.send(false);
    }

    /// Gives the Lease up (clean shutdown), so another replica takes over
    /// without waiting for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.cfg.identity.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = &mut lease.spec {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.cfg.name, "released the Lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the Lease failed"),
        }
        let _ = self.leader.send(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn held(by: &str, renewed: u64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            renew_time: Some(micro_time(at(renewed))),
            acquire_time: Some(micro_time(at(renewed))),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            namespace: "ops".into(),
            name: "sluice-operator".into(),
            identity: "op-a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "op-a", at(100)), Decision::Create);
        let s = next_spec(None, &Decision::Create, &cfg(), at(100));
        assert_eq!(s.holder_identity.as_deref(), Some("op-a"));
        assert_eq!(s.lease_duration_seconds, Some(15));
        assert_eq!(s.lease_transitions, Some(0));
    }

    #[test]
    fn a_live_lease_of_another_is_followed() {
        let l = held("op-b", 100, 15);
        assert_eq!(
            decide(Some(&l), "op-a", at(114)),
            Decision::Follow {
                holder: "op-b".into()
            }
        );
    }

    #[test]
    fn an_expired_or_free_lease_is_taken_with_a_transition() {
        let l = held("op-b", 100, 15);
        assert_eq!(decide(Some(&l), "op-a", at(116)), Decision::Acquire);
        let s = next_spec(Some(&l), &Decision::Acquire, &cfg(), at(116));
        assert_eq!(s.holder_identity.as_deref(), Some("op-a"));
        assert_eq!(s.lease_transitions, Some(4));
        assert_eq!(s.acquire_time, Some(micro_time(at(116))));

        let mut free = l.clone();
        free.holder_identity = None;
        assert_eq!(decide(Some(&free), "op-a", at(101)), Decision::Acquire);
    }

    mod api {
        use http::{Method, StatusCode};
        use serde_json::{Value, json};

        use super::*;
        use crate::fixtures::{ApiServerVerifier, api_error, with_api_server};

        const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/sluice-operator";

        fn lease_json(holder: &str, renewed: &str) -> Value {
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "sluice-operator", "namespace": "ops", "resourceVersion": "7"},
                "spec": {"holderIdentity": holder, "renewTime": renewed,
                         "acquireTime": renewed, "leaseDurationSeconds": 15, "leaseTransitions": 2}
            })
        }

        async fn attempt(
            scenario: impl FnOnce(
                ApiServerVerifier,
            ) -> futures::future::BoxFuture<'static, ApiServerVerifier>,
        ) -> Result<bool, LeaseError> {
            let (client, v) = ApiServerVerifier::client();
            let e = LeaderElector::new(client, cfg());
            with_api_server(v, scenario, e.try_acquire_or_renew()).await
        }

        #[tokio::test]
        async fn creates_a_missing_lease() {
            let r = attempt(|mut v| {
                Box::pin(async move {
                    v.expect_error(Method::GET, LEASE, 404, "NotFound").await;
                    let seen = v
                        .expect(
                            Method::POST,
                            "/apis/coordination.k8s.io/v1/namespaces/ops/leases",
                            StatusCode::CREATED,
                            Value::clone,
                        )
                        .await;
                    assert_eq!(seen.body["spec"]["holderIdentity"], "op-a");
                    assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 15);
                    v
                })
            })
            .await;
            assert!(r.expect("no error"));
        }

        #[tokio::test]
        async fn follows_a_live_holder_without_writing() {
            let now = Timestamp::now().to_string();
            let r = attempt(move |mut v| {
                Box::pin(async move {
                    v.expect(Method::GET, LEASE, StatusCode::OK, move |_| {
                        lease_json("op-b", &now)
                    })
                    .await;
                    v
                })
            })
            .await;
            assert!(!r.expect("no error"));
        }

        #[tokio::test]
        async fn takes_an_expired_lease_guarded_by_its_resource_version() {
            let r = attempt(|mut v| {
                Box::pin(async move {
                    v.expect(Method::GET, LEASE, StatusCode::OK, |_| {
                        lease_json("op-b", "2020-01-01T00:00:00.000000Z")
                    })
                    .await;
                    let seen = v
                        .expect(Method::PUT, LEASE, StatusCode::OK, Value::clone)
                        .await;
                    assert_eq!(seen.body["metadata"]["resourceVersion"], "7");
                    assert_eq!(seen.body["spec"]["holderIdentity"], "op-a");
                    assert_eq!(seen.body["spec"]["leaseTransitions"], 3);
                    v
                })
            })
            .await;
            assert!(r.expect("no error"));
        }

        #[tokio::test]
        async fn a_conflict_means_another_replica_won() {
            let r = attempt(|mut v| {
                Box::pin(async move {
                    v.expect(Method::GET, LEASE, StatusCode::OK, |_| {
                        lease_json("op-b", "2020-01-01T00:00:00.000000Z")
                    })
                    .await;
                    v.expect_error(Method::PUT, LEASE, 409, "Conflict").await;
                    v
                })
            })
            .await;
            assert!(!r.expect("409 is no error"));
        }

        #[tokio::test]
        async fn a_server_error_is_an_error() {
            let r = attempt(|mut v| {
                Box::pin(async move {
                    v.expect(
                        Method::GET,
                        LEASE,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        |_| api_error(500, "InternalError"),
                    )
                    .await;
                    v
                })
            })
            .await;
            assert!(matches!(r, Err(LeaseError::Read { .. })), "{r:?}");
        }
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_the_acquire_time() {
        let l = held("op-a", 100, 15);
        assert_eq!(decide(Some(&l), "op-a", at(105)), Decision::Renew);
        let s = next_spec(Some(&l), &Decision::Renew, &cfg(), at(105));
        assert_eq!(s.acquire_time, Some(micro_time(at(100))));
        assert_eq!(s.renew_time, Some(micro_time(at(105))));
        assert_eq!(s.lease_transitions, Some(3));
    }
}
