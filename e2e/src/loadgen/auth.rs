//! Credentials of the load generator: the bearer token every request
//! carries (`--token`) and TLS for `https://` addresses, verified against
//! `--ca-cert`. Both the gRPC channels and the HTTP writer use it, so a
//! secured ingester is measured the way its clients reach it.
//!
//! TLS is `tokio-rustls` (ring), the stack the workspace already builds;
//! for gRPC it is a tonic connector (tonic's own TLS feature is not built).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Token and TLS settings shared by every connection of one run.
#[derive(Clone, Default)]
pub struct ClientAuth {
    /// `Bearer <token>`, ready to send.
    bearer: Option<AsciiMetadataValue>,
    /// The same, as an HTTP header value (`direct.rs` writes).
    bearer_header: Option<http::HeaderValue>,
    /// The raw token (HTTP sends `Authorization: Token <token>`).
    token: Option<String>,
    /// For `https://` addresses; `None` without `--ca-cert`.
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ClientAuth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A byte stream, plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl ClientAuth {
    /// `token` as given to `--token`; `ca_cert` a PEM bundle that signed the
    /// server's certificate (needed for `https://` addresses).
    pub fn new(token: Option<&str>, ca_cert: Option<&Path>) -> anyhow::Result<Self> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let bearer = token
            .map(|t| AsciiMetadataValue::try_from(format!("Bearer {t}")))
            .transpose()
            .map_err(|_| anyhow::anyhow!("--token must be printable ASCII"))?;
        let tls = match ca_cert {
            None => None,
            Some(path) => Some(Arc::new(client_config(path)?)),
        };
        // The same bytes, already checked, as an HTTP header value.
        let bearer_header = bearer
            .as_ref()
            .map(|b| http::HeaderValue::from_bytes(b.as_encoded_bytes()))
            .transpose()?
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Ok(Self {
            bearer,
            bearer_header,
            token: token.map(str::to_string),
            tls,
        })
    }

    /// The `authorization` header of a gRPC request, if a token was given.
    pub fn authorization(&self) -> Option<&http::HeaderValue> {
        self.bearer_header.as_ref()
    }

    /// The token for HTTP's `Authorization` header.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Adds `authorization: Bearer …` to a gRPC request, if a token is set.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(v) = &self.bearer {
            req.metadata_mut().insert("authorization", v.clone());
        }
        req
    }

    fn tls_config(&self, addr: &str) -> anyhow::Result<Arc<ClientConfig>> {
        match &self.tls {
            Some(c) => Ok(Arc::clone(c)),
            None => bail!("{addr} is https:// but no --ca-cert was given"),
        }
    }

    /// A gRPC channel to `addr` (`http://` or `https://`) with room for
    /// large requests and responses.
    pub async fn grpc_channel(&self, addr: &str) -> anyhow::Result<Channel> {
        let endpoint = Endpoint::from_shared(addr.to_string())?
            .tcp_nodelay(true)
            .initial_connection_window_size(Some(16 << 20))
            .initial_stream_window_size(Some(8 << 20));
        Ok(if addr.starts_with("https://") {
            let mut config = (*self.tls_config(addr)?).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let connector = TlsConnector(tokio_rustls::TlsConnector::from(Arc::new(config)));
            endpoint.connect_with_connector(connector).await?
        } else {
            endpoint.connect().await?
        })
    }

    /// Connects to `host:port`, over TLS when `tls` (HTTP/1.1 ALPN).
    pub async fn connect_http(&self, host: &str, tls: bool) -> anyhow::Result<Box<dyn Io>> {
        let tcp = TcpStream::connect(host)
            .await
            .with_context(|| format!("connect to {host}"))?;
        tcp.set_nodelay(true)?;
        if !tls {
            return Ok(Box::new(tcp));
        }
        let mut config = (*self.tls_config(host)?).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = server_name(host)?;
        let s = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host}"))?;
        Ok(Box::new(s))
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed) as a
/// name to verify.
fn server_name(host_port: &str) -> anyhow::Result<ServerName<'static>> {
    let host = match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).with_context(|| format!("server name `{host}`"))
}

fn client_config(path: &Path) -> anyhow::Result<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let what = || format!("--ca-cert {}", path.display());
    for c in CertificateDer::pem_file_iter(path).with_context(what)? {
        roots.add(c.with_context(what)?).with_context(what)?;
    }
    if roots.is_empty() {
        bail!("{}: no PEM certificate", what());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// TCP then TLS, for tonic's `https://` endpoints.
#[derive(Clone)]
struct TlsConnector(tokio_rustls::TlsConnector);

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl Service<Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.0.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("server name `{host}`: {e}")))?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(server_name("localhost:8080").is_ok());
        assert!(server_name("127.0.0.1:8080").is_ok());
        assert!(server_name("[::1]:8080").is_ok());
    }

    #[test]
    fn https_without_ca_cert_is_an_error() {
        let a = ClientAuth::new(Some(" secret-token\n"), None).expect("auth");
        assert!(a.tls_config("https://x").is_err());
        assert_eq!(a.token(), Some("secret-token"));
        let r = a.request(());
        assert_eq!(
            r.metadata().get("authorization").map(|v| v.to_str().ok()),
            Some(Some("Bearer secret-token"))
        );
        assert!(!format!("{a:?}").contains("secret"), "{a:?}");
        assert!(ClientAuth::new(Some("bad\u{7f}token"), None).is_err());
    }
}
