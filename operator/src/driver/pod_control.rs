//! [`PodControl`]: the driver's view of one pod's `ControlService`, and
//! [`GrpcPodControl`], the production implementation over the generated
//! client in `sluice-proto`.
//!
//! Every call is bounded by a timeout: a hung pod must not stall the
//! reconcile of its `Ingester`, let alone others. Channels are cached per
//! address (and, with TLS, per server name and CA) and connect lazily, so
//! the cache lock is never held across I/O.
//!
//! With TLS ([`ControlAccess`]) the channel dials the pod's IP and verifies
//! its certificate against the `Ingester`'s CA and the pod's DNS name; the
//! control token goes in `authorization` on every call. A pod that refuses
//! the operator's credentials is told apart from one that is down
//! ([`ControlError::refusal`]): the first needs a human, the second time.
//!
//! With mutual TLS the channel also presents the operator's client
//! certificate. Under TLS 1.3 a pod refuses a client certificate only
//! after the client's side of the handshake has completed, with an alert;
//! had the client already written its first request, the pod's close would
//! reset the connection and lose the alert ("connection closed"). So every
//! TLS connection first waits for the pod's first bytes (the HTTP/2 server
//! sends its SETTINGS at once): an alert fails the connect with the pod's
//! reason, data is kept for hyper ([`Prefetched`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sluice_proto::v1;
use sluice_proto::v1::control_service_client::ControlServiceClient;
use tonic::codegen::http::Uri;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::access::ControlAccess;

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
    /// `code` is the gRPC code's name (`Unavailable`, `PermissionDenied`, …).
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

/// Why the pods refused the operator itself, as opposed to being down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `UNAUTHENTICATED`: no token, or one the pod does not know.
    Unauthenticated,
    /// `PERMISSION_DENIED`: a token without the `control` scope.
    PermissionDenied,
    /// The TLS handshake failed on the operator's side: the pod's
    /// certificate has an unknown CA, a wrong name or has expired, or the
    /// pod speaks plain text.
    Tls,
    /// The pod sent a TLS alert: it refused the operator's client
    /// certificate (mTLS): none, one of an unknown CA, or expired.
    ClientCertificate,
}

impl ControlError {
    /// `Some` when the pod answered but refused the operator's credentials:
    /// retrying will not help until a Secret or the spec changes.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            ControlError::Rpc { code, .. } if code == "Unauthenticated" => {
                Some(Refusal::Unauthenticated)
            }
            ControlError::Rpc { code, .. } if code == "PermissionDenied" => {
                Some(Refusal::PermissionDenied)
            }
            // The pod's alert first: it also fails the connect.
            ControlError::Rpc { message, .. } if message.contains(TLS_ALERT) => {
                Some(Refusal::ClientCertificate)
            }
            ControlError::Rpc { message, .. } if message.contains(TLS_FAILED) => Some(Refusal::Tls),
            _ => None,
        }
    }
}

/// Where and how to reach one pod's `ControlService`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The pod's name (with TLS it picks the certificate's name).
    pub pod: &'a str,
    /// `http://<pod ip>:8082` as the cluster reports it; dialled over TLS
    /// when `access` says so.
    pub url: &'a str,
    pub access: &'a ControlAccess,
}

/// One pod's control RPC.
#[async_trait]
pub trait PodControl: Send + Sync {
    async fn status(&self, to: &Target<'_>) -> Result<PodFigures, ControlError>;
    async fn rotate_wal(&self, to: &Target<'_>) -> Result<(), ControlError>;
    /// Starts persisting everything; does not wait.
    async fn persist(&self, to: &Target<'_>) -> Result<(), ControlError>;
    /// Starts a drain; does not wait (the driver polls `status`).
    async fn prepare_shutdown(&self, to: &Target<'_>) -> Result<PodState, ControlError>;
    async fn resume_ingest(&self, to: &Target<'_>) -> Result<PodState, ControlError>;
}

#[async_trait]
impl<T: PodControl + ?Sized> PodControl for Arc<T> {
    async fn status(&self, to: &Target<'_>) -> Result<PodFigures, ControlError> {
        (**self).status(to).await
    }
    async fn rotate_wal(&self, to: &Target<'_>) -> Result<(), ControlError> {
        (**self).rotate_wal(to).await
    }
    async fn persist(&self, to: &Target<'_>) -> Result<(), ControlError> {
        (**self).persist(to).await
    }
    async fn prepare_shutdown(&self, to: &Target<'_>) -> Result<PodState, ControlError> {
        (**self).prepare_shutdown(to).await
    }
    async fn resume_ingest(&self, to: &Target<'_>) -> Result<PodState, ControlError> {
        (**self).resume_ingest(to).await
    }
}

/// Channels are cached per address, TLS name and CA.
type ChannelKey = (String, Option<(String, u64)>);

type Client = ControlServiceClient<InterceptedService<Channel, Bearer>>;

/// [`PodControl`] over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcPodControl {
    timeout: Duration,
    channels: Arc<Mutex<HashMap<ChannelKey, Channel>>>,
}

impl GrpcPodControl {
    /// Each call (connect included) must finish within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            channels: Arc::default(),
        }
    }

    fn client(&self, to: &Target<'_>) -> Result<Client, ControlError> {
        let bad = |message: String| ControlError::BadUrl {
            url: to.url.into(),
            message,
        };
        let tls = to.access.tls().map(|t| (t, t.server_name(to.pod)));
        let key: ChannelKey = (
            to.url.to_string(),
            tls.as_ref().map(|(t, n)| (n.clone(), t.fingerprint)),
        );
        let bearer = Bearer(to.access.authorization().cloned());
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = channels.get(&key) {
            return Ok(ControlServiceClient::with_interceptor(c.clone(), bearer));
        }
        let channel = match &tls {
            None => Endpoint::from_shared(to.url.to_string())
                .map_err(|e| bad(e.to_string()))?
                .connect_timeout(self.timeout)
                .timeout(self.timeout)
                .connect_lazy(),
            Some((t, name)) => {
                let uri: Uri = to.url.parse().map_err(|e| bad(format!("{e}")))?;
                let authority = uri
                    .authority()
                    .ok_or_else(|| bad("no host and port".into()))?;
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|e| bad(format!("TLS server name {name:?}: {e}")))?;
                Endpoint::from_shared(format!("https://{authority}"))
                    .map_err(|e| bad(e.to_string()))?
                    .connect_timeout(self.timeout)
                    .timeout(self.timeout)
                    .connect_with_connector_lazy(TlsConnect {
                        tls: tokio_rustls::TlsConnector::from(t.config.clone()),
                        server_name,
                        first_read: self.timeout,
                    })
            }
        };
        // Pod IPs change as pods come and go; old entries are few and cheap,
        // but bound the map anyway.
        if channels.len() >= 1024 {
            channels.clear();
        }
        channels.insert(key, channel.clone());
        Ok(ControlServiceClient::with_interceptor(channel, bearer))
    }

    async fn call<T, F, Fut>(
        &self,
        call: &'static str,
        to: &Target<'_>,
        f: F,
    ) -> Result<T, ControlError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.client(to)?;
        match tokio::time::timeout(self.timeout, f(client)).await {
            Err(_) => Err(ControlError::Timeout {
                call,
                url: to.url.into(),
                timeout: self.timeout,
            }),
            Ok(Err(s)) => Err(ControlError::Rpc {
                call,
                url: to.url.into(),
                code: format!("{:?}", s.code()),
                message: status_message(&s),
            }),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }
}

/// The status message with its chain of causes: a failed connection says
/// only "transport error" by itself, the cause says why (refused, or the
/// TLS handshake's reason).
fn status_message(s: &tonic::Status) -> String {
    let mut out = s.message().to_string();
    let mut cause = std::error::Error::source(s);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(Option<AsciiMetadataValue>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Marks a failed handshake in the error text ([`ControlError::refusal`]).
const TLS_FAILED: &str = "TLS handshake failed";
/// How rustls words an alert the pod sent ([`ControlError::refusal`]).
const TLS_ALERT: &str = "received fatal alert";

/// Connects TCP to the URI's address, then TLS verifying `server_name`
/// (not the address: pods are dialled by IP, their certificates name DNS
/// names).
#[derive(Clone)]
struct TlsConnect {
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    /// How long to wait for the pod's first bytes after the handshake.
    first_read: Duration,
}

type TlsIo = TokioIo<Prefetched<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>;

/// A stream whose first bytes were already read (`head`, from `at`).
struct Prefetched<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefetched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefetched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::codegen::Service<Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = this.server_name.clone();
            let tls = this.tls.connect(name.clone(), tcp).await.map_err(|e| {
                std::io::Error::other(format!(
                    "{TLS_FAILED} with {host}:{port} expecting the name {}: {e}",
                    name.to_str()
                ))
            })?;
            // The pod's verdict on our certificate, before we write.
            let mut tls = tls;
            let mut head = vec![0; 1024];
            let n = match tokio::time::timeout(
                this.first_read,
                tokio::io::AsyncReadExt::read(&mut tls, &mut head),
            )
            .await
            {
                // A slow pod: hyper reads the rest.
                Err(_) => 0,
                Ok(Ok(0)) => {
                    return Err(std::io::Error::other(format!(
                        "{TLS_FAILED} with {host}:{port}: closed after the handshake"
                    )));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    return Err(std::io::Error::other(format!(
                        "{TLS_FAILED} with {host}:{port}: the pod refused the session: {e}"
                    )));
                }
            };
            head.truncate(n);
            Ok(TokioIo::new(Prefetched {
                head,
                at: 0,
                inner: tls,
            }))
        })
    }
}

#[async_trait]
impl PodControl for GrpcPodControl {
    async fn status(&self, to: &Target<'_>) -> Result<PodFigures, ControlError> {
        self.call("Status", to, |mut c| async move {
            c.status(v1::StatusRequest {}).await
        })
        .await
        .map(PodFigures::from)
    }

    async fn rotate_wal(&self, to: &Target<'_>) -> Result<(), ControlError> {
        self.call("RotateWal", to, |mut c| async move {
            c.rotate_wal(v1::RotateWalRequest {}).await
        })
        .await
        .map(|_| ())
    }

    async fn persist(&self, to: &Target<'_>) -> Result<(), ControlError> {
        self.call("Persist", to, |mut c| async move {
            c.persist(v1::PersistRequest::default()).await
        })
        .await
        .map(|_| ())
    }

    async fn prepare_shutdown(&self, to: &Target<'_>) -> Result<PodState, ControlError> {
        self.call("PrepareShutdown", to, |mut c| async move {
            c.prepare_shutdown(v1::PrepareShutdownRequest { wait: false })
                .await
        })
        .await
        .map(|r| PodState::from_proto(r.state))
    }

    async fn resume_ingest(&self, to: &Target<'_>) -> Result<PodState, ControlError> {
        self.call("ResumeIngest", to, |mut c| async move {
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
        let access = ControlAccess::plain();
        let url = format!("http://{addr}");
        let to = |url| Target {
            pod: "a-0",
            url,
            access: &access,
        };
        let err = pc.status(&to(&url)).await.expect_err("nothing listens");
        assert!(
            matches!(err, ControlError::Rpc { call: "Status", .. }),
            "{err}"
        );
        assert_eq!(err.refusal(), None, "down, not refusing");
        let err = pc.status(&to("not a url")).await.expect_err("bad url");
        assert!(matches!(err, ControlError::BadUrl { .. }), "{err}");
    }
}
