//! The listeners: accepting connections, the connection limit and TLS.
//!
//! Both servers (gRPC and HTTP) take their connections from [`incoming`]: one
//! task per listener accepts TCP connections, holding a permit of a shared
//! semaphore for each (so `--max-connections` bounds open connections across
//! both; past it the kernel backlog queues new ones), and, with TLS, runs each
//! handshake in its own task under a timeout, so a slow or hostile client
//! cannot stall the accept loop. Failed handshakes (plain-text clients, wrong
//! or expired client certificates) close that connection and nothing else.
//!
//! ## Reloading
//!
//! The certificate, key and client CA are files (a Kubernetes Secret). A
//! [`TlsReloader`] re-reads them when their modification time, size or inode
//! changes and swaps in new server configurations; connections already
//! open keep the certificate they started with. Files that do not load are
//! logged and the previous configuration stays, so a half-written rotation
//! never takes the listener down.
//!
//! gRPC connections negotiate `h2` with ALPN, HTTP ones `http/1.1`.
//!
//! ## Client certificates (mTLS)
//!
//! With a client CA, gRPC connections must present a certificate it signed
//! (the handshake fails otherwise). On HTTP the certificate is optional in
//! the handshake (one that is presented must still verify) and required by
//! [`require_client_cert`] for every path except `/health` and `/ready`:
//! kubelet probes cannot present one, and health and readiness stay open.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate, key or CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the server's TLS material is.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

/// Which protocol a listener speaks, for ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    Grpc,
    Http,
}

/// The current server configurations, swapped when the files change.
#[derive(Debug)]
pub struct TlsReloader {
    files: TlsFiles,
    grpc: RwLock<Arc<ServerConfig>>,
    http: RwLock<Arc<ServerConfig>>,
}

/// Identity of a file's current contents: (mtime, size, inode).
pub(crate) type FileStamp = Option<(SystemTime, u64, u64)>;

/// The stamp of `path` (following symlinks, as Kubernetes Secrets use them).
pub(crate) fn file_stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn file_err(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(what, path, e))?;
    if certs.is_empty() {
        return Err(file_err(what, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn build_config(files: &TlsFiles, alpn: Alpn) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs("certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_err("private key", &files.key, e))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs("client CA", ca)? {
                roots.add(c).map_err(|e| file_err("client CA", ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            // HTTP: checked per path (probes stay open), see the module doc.
            let verifier = match alpn {
                Alpn::Grpc => verifier,
                Alpn::Http => verifier.allow_unauthenticated(),
            }
            .build()
            .map_err(|e| file_err("client CA", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| file_err("certificate/key pair", &files.cert, e))?;
    config.alpn_protocols = match alpn {
        Alpn::Grpc => vec![b"h2".to_vec()],
        Alpn::Http => vec![b"http/1.1".to_vec()],
    };
    Ok(config)
}

impl TlsReloader {
    /// Loads the files once; fails if they cannot be used.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let grpc = build_config(&files, Alpn::Grpc)?;
        let http = build_config(&files, Alpn::Http)?;
        Ok(Arc::new(Self {
            files,
            grpc: RwLock::new(Arc::new(grpc)),
            http: RwLock::new(Arc::new(http)),
        }))
    }

    fn stamps(&self) -> [FileStamp; 3] {
        [
            file_stamp(&self.files.cert),
            file_stamp(&self.files.key),
            self.files.client_ca.as_deref().and_then(file_stamp),
        ]
    }

    fn reload(&self) -> Result<(), TlsError> {
        let grpc = build_config(&self.files, Alpn::Grpc)?;
        let http = build_config(&self.files, Alpn::Http)?;
        *self.grpc.write() = Arc::new(grpc);
        *self.http.write() = Arc::new(http);
        Ok(())
    }

    fn acceptor(&self, alpn: Alpn) -> tokio_rustls::TlsAcceptor {
        let config = match alpn {
            Alpn::Grpc => Arc::clone(&self.grpc.read()),
            Alpn::Http => Arc::clone(&self.http.read()),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Checks the files every `interval` and reloads them when they change.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut last = this.stamps();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = this.stamps();
                if now == last {
                    continue;
                }
                last = now;
                let t = Arc::clone(&this);
                match tokio::task::spawn_blocking(move || t.reload()).await {
                    Ok(Ok(())) => tracing::info!(
                        cert = %this.files.cert.display(),
                        "TLS certificate reloaded"
                    ),
                    Ok(Err(e)) => tracing::error!(
                        error = %e,
                        "TLS files changed but cannot be used; keeping the previous certificate"
                    ),
                    Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
                }
            }
        })
    }
}

/// One accepted connection, plain or TLS, holding its connection permit.
#[derive(Debug)]
pub(crate) struct Conn {
    io: ConnIo,
    remote: SocketAddr,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Whether the peer presented a client certificate (which the
    /// handshake verified against the client CA).
    fn client_cert(&self) -> bool {
        match &self.io {
            ConnIo::Plain(_) => false,
            ConnIo::Tls(s) => s.get_ref().1.peer_certificates().is_some(),
        }
    }
}

/// What an HTTP handler knows of its connection's client certificate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientCert(bool);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for ClientCert
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Self {
        Self(stream.io().client_cert())
    }
}

/// Paths open without a client certificate under mTLS.
const PROBE_PATHS: [&str; 2] = ["/health", "/ready"];

/// `axum::middleware::from_fn_with_state(mtls, require_client_cert)`: with
/// `mtls` set, every path but the probes needs a client certificate.
pub(crate) async fn require_client_cert(
    axum::extract::State(mtls): axum::extract::State<bool>,
    axum::extract::ConnectInfo(cert): axum::extract::ConnectInfo<ClientCert>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path();
    if !mtls || cert.0 || PROBE_PATHS.contains(&path) {
        return next.run(req).await;
    }
    let body = serde_json::json!({
        "code": "unauthorized",
        "message": format!(
            "a client certificate signed by the server's client CA is required for {path} \
             (only /health and /ready are open without one)"
        ),
    });
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[derive(Debug)]
enum ConnIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Handlers see the peer as with tonic's own listener
/// (`Request::remote_addr` works), TLS or not.
impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let local_addr = match &self.io {
            ConnIo::Plain(s) => s.local_addr().ok(),
            ConnIo::Tls(s) => s.get_ref().0.local_addr().ok(),
        };
        tonic::transport::server::TcpConnectInfo {
            local_addr,
            remote_addr: Some(self.remote),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ConnIo::Plain(s) => s.is_write_vectored(),
            ConnIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` until the receiver is dropped. With
/// `tls`, only connections that complete the handshake are delivered.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<Arc<TlsReloader>>,
    alpn: Alpn,
    limit: Arc<Semaphore>,
) -> mpsc::Receiver<Conn> {
    let (tx, rx) = mpsc::channel::<Conn>(64);
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&limit).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            };
            let (stream, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, ?alpn, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = stream.set_nodelay(true);
            match &tls {
                None => {
                    let conn = Conn {
                        io: ConnIo::Plain(stream),
                        remote,
                        _permit: permit,
                    };
                    if tx.send(conn).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tls.acceptor(alpn);
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(s)) => {
                                let conn = Conn {
                                    io: ConnIo::Tls(Box::new(s)),
                                    remote,
                                    _permit: permit,
                                };
                                let _ = tx.send(conn).await;
                            }
                            Ok(Err(e)) => {
                                tracing::info!(%remote, ?alpn, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::info!(%remote, ?alpn, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    });
    rx
}

/// [`incoming`] as an `axum::serve` listener.
#[derive(Debug)]
pub(crate) struct HttpListener {
    rx: mpsc::Receiver<Conn>,
    local: SocketAddr,
}

impl HttpListener {
    pub(crate) fn new(rx: mpsc::Receiver<Conn>, local: SocketAddr) -> Self {
        Self { rx, local }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => {
                let remote = c.remote;
                (c, remote)
            }
            // The accept task only stops when this receiver is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
