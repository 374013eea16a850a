//! [`PodControl`]: the driver's view of one pod's `ControlService`, and
//! [`GrpcPodControl`], the production implementation over the generated
//! client in `sluice-proto`.
//!
//! Every call is bounded by a timeout: a hung pod must not stall the
//! reconcile of its `Ingester`, let alone others. Channels are cached per
//! address and connect lazily, so the cache lock is never held across I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sluice_proto::v1;
use sluice_proto::v1::control_service_client::ControlServiceClient;
use tonic::transport::{Channel, Endpoint};

/// The ingester's state, as the control RPC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    Starting,
    Replaying,
    Ready,
    Draining,
    Drained,
    Unknown,
}

impl PodState {
    pub fn from_proto(s: i32) -> Self {
        match v1::IngesterState::try_from(s) {
            Ok(v1::IngesterState::Starting) => PodState::Starting,
            Ok(v1::IngesterState::Replaying) => PodState::Replaying,
            Ok(v1::IngesterState::Ready) => PodState::Ready,
            Ok(v1::IngesterState::Draining) => PodState::Draining,
            Ok(v1::IngesterState::Drained) => PodState::Drained,
            Ok(v1::IngesterState::Unspecified) | Err(_) => PodState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Starting => "Starting",
            PodState::Replaying => "Replaying",
            PodState::Ready => "Ready",
            PodState::Draining => "Draining",
            PodState::Drained => "Drained",
            PodState::Unknown => "Unknown",
        }
    }

    /// Asked to drain (finished or not).
    pub fn is_draining(self) -> bool {
        matches!(self, PodState::Draining | PodState::Drained)
    }
}

/// `ControlService.Status`, in the driver's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodFigures {
    pub state: PodState,
    pub buffered_rows: u64,
    pub buffered_bytes: u64,
    pub wal_segments: u64,
    pub wal_bytes: u64,
    pub persist_queue_depth: u64,
    pub persist_active_jobs: u64,
    pub oldest_unpersisted_write_age: Duration,
    /// No write left in the WAL (its empty open segment still counts in
    /// `wal_segments`/`wal_bytes`).
    pub wal_empty: bool,
}

impl PodFigures {
    /// Drained with nothing left: safe to remove. The state alone is the
    /// ingester's promise; the WAL and buffer figures are checked as well so
    /// that a pod is never removed on one word it reported.
    pub fn is_drained(&self) -> bool {
        self.state == PodState::Drained && self.wal_empty && self.buffered_rows == 0
    }
}

impl From<v1::StatusResponse> for PodFigures {
    fn from(r: v1::StatusResponse) -> Self {
        PodFigures {
            state: PodState::from_proto(r.state),
            buffered_rows: r.buffered_rows,
            buffered_bytes: r.buffered_bytes,
            wal_segments: r.wal_segments,
            wal_bytes: r.wal_bytes,
            persist_queue_depth: r.persist_queue_depth,
            persist_active_jobs: r.persist_active_jobs,
            oldest_unpersisted_write_age: Duration::from_millis(r.oldest_unpersisted_write_age_ms),
            wal_empty: r.wal_empty,
        }
    }
}

/// A control RPC that failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ControlError {
    #[error("{call} to {url}: no answer within {timeout:?}")]
    Timeout {
        call: &'static str,
        url: String,
        timeout: Duration,
    },
    #[error("{call} to {url}: {code}: {message}")]
    Rpc {
        call: &'static str,
        url: String,
        code: String,
        message: String,
    },
    #[error("bad control address {url:?}: {message}")]
    BadUrl { url: String, message: String },
}

/// One pod's control RPC. `url` is `http://host:port`.
#[async_trait]
pub trait PodControl: Send + Sync {
    async fn status(&self, url: &str) -> Result<PodFigures, ControlError>;
    async fn rotate_wal(&self, url: &str) -> Result<(), ControlError>;
    /// Starts persisting everything; does not wait.
    async fn persist(&self, url: &str) -> Result<(), ControlError>;
    /// Starts a drain; does not wait (the driver polls `status`).
    async fn prepare_shutdown(&self, url: &str) -> Result<PodState, ControlError>;
    async fn resume_ingest(&self, url: &str) -> Result<PodState, ControlError>;
}

#[async_trait]
impl<T: PodControl + ?Sized> PodControl for Arc<T> {
    async fn status(&self, url: &str) -> Result<PodFigures, ControlError> {
        (**self).status(url).await
    }
    async fn rotate_wal(&self, url: &str) -> Result<(), ControlError> {
        (**self).rotate_wal(url).await
    }
    async fn persist(&self, url: &str) -> Result<(), ControlError> {
        (**self).persist(url).await
    }
    async fn prepare_shutdown(&self, url: &str) -> Result<PodState, ControlError> {
        (**self).prepare_shutdown(url).await
    }
    async fn resume_ingest(&self, url: &str) -> Result<PodState, ControlError> {
        (**self).resume_ingest(url).await
    }
}

/// [`PodControl`] over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcPodControl {
    timeout: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl GrpcPodControl {
    /// Each call (connect included) must finish within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            channels: Arc::default(),
        }
    }

    fn client(&self, url: &str) -> Result<ControlServiceClient<Channel>, ControlError> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = channels.get(url) {
            return Ok(ControlServiceClient::new(c.clone()));
        }
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| ControlError::BadUrl {
                url: url.into(),
                message: e.to_string(),
            })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect_lazy();
        // Pod IPs change as pods come and go; old entries are few and cheap,
        // but bound the map anyway.
        if channels.len() >= 1024 {
            channels.clear();
        }
        channels.insert(url.to_string(), channel.clone());
        Ok(ControlServiceClient::new(channel))
    }

    async fn call<T, F, Fut>(&self, call: &'static str, url: &str, f: F) -> Result<T, ControlError>
    where
        F: FnOnce(ControlServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client(url)?;
        match tokio::time::timeout(self.timeout, f(client)).await {
            Err(_) => Err(ControlError::Timeout {
                call,
                url: url.into(),
                timeout: self.timeout,
            }),
            Ok(Err(s)) => Err(ControlError::Rpc {
                call,
                url: url.into(),
                code: format!("{:?}", s.code()),
                message: s.message().to_string(),
            }),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }
}

#[async_trait]
impl PodControl for GrpcPodControl {
    async fn status(&self, url: &str) -> Result<PodFigures, ControlError> {
        self.call("Status", url, |mut c| async move {
            c.status(v1::StatusRequest {}).await
        })
        .await
        .map(PodFigures::from)
    }

    async fn rotate_wal(&self, url: &str) -> Result<(), ControlError> {
        self.call("RotateWal", url, |mut c| async move {
            c.rotate_wal(v1::RotateWalRequest {}).await
        })
        .await
        .map(|_| ())
    }

    async fn persist(&self, url: &str) -> Result<(), ControlError> {
        self.call("Persist", url, |mut c| async move {
            c.persist(v1::PersistRequest::default()).await
        })
        .await
        .map(|_| ())
    }

    async fn prepare_shutdown(&self, url: &str) -> Result<PodState, ControlError> {
        self.call("PrepareShutdown", url, |mut c| async move {
            c.prepare_shutdown(v1::PrepareShutdownRequest { wait: false })
                .await
        })
        .await
        .map(|r| PodState::from_proto(r.state))
    }

    async fn resume_ingest(&self, url: &str) -> Result<PodState, ControlError> {
        self.call("ResumeIngest", url, |mut c| async move {
            c.resume_ingest(v1::ResumeIngestRequest {}).await
        })
        .await
        .map(|r| PodState::from_proto(r.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_from_proto() {
        assert_eq!(
            PodState::from_proto(v1::IngesterState::Drained as i32),
            PodState::Drained
        );
        assert_eq!(PodState::from_proto(99), PodState::Unknown);
        assert!(PodState::Draining.is_draining());
        assert!(!PodState::Ready.is_draining());
    }

    #[test]
    fn drained_means_nothing_left() {
        let mut f = PodFigures::from(v1::StatusResponse {
            state: v1::IngesterState::Drained as i32,
            // The empty open segment.
            wal_segments: 1,
            wal_bytes: 16,
            wal_empty: true,
            ..Default::default()
        });
        assert!(f.is_drained());
        f.wal_empty = false;
        assert!(!f.is_drained(), "a WAL entry left");
        f.wal_empty = true;
        f.buffered_rows = 1;
        assert!(!f.is_drained(), "a buffered row left");
    }

    #[tokio::test]
    async fn unreachable_pod_is_an_error_not_a_hang() {
        // A port nothing listens on: connection refused, well within the
        // timeout.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let pc = GrpcPodControl::new(Duration::from_secs(2));
        let err = pc
            .status(&format!("http://{addr}"))
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(err, ControlError::Rpc { call: "Status", .. }),
            "{err}"
        );
        let err = pc.status("not a url").await.expect_err("bad url");
        assert!(matches!(err, ControlError::BadUrl { .. }), "{err}");
    }
}
