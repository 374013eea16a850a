//! Client-side credentials: the bearer token sent with every call and TLS
//! for `https://` addresses (server verification against `--ca-cert` or the
//! system's roots, and a client certificate for mutual TLS).
//!
//! TLS is a custom tonic connector over `tokio-rustls` (ring), the crypto
//! stack the workspace already builds, rather than tonic's own TLS feature.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Token and TLS flags shared by every client subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientAuthArgs {
    /// Bearer token sent with every call (see `serve --tokens-file`).
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// PEM CA bundle that signed the server's certificate, for `https://`
    /// addresses. [default: the system's trusted roots]
    #[arg(long, env = "SLUICE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, env = "SLUICE_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, env = "SLUICE_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Name to verify in the server's certificate, when it differs from the
    /// host in --addr (e.g. connecting to a pod IP).
    #[arg(long, env = "SLUICE_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

/// A channel that adds `authorization: Bearer <token>` to every call.
pub type GrpcChannel = InterceptedService<Channel, TokenInterceptor>;

/// Adds the bearer token, if any.
#[derive(Debug, Clone)]
pub struct TokenInterceptor(Option<AsciiMetadataValue>);

impl TokenInterceptor {
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        match token {
            None => Ok(Self(None)),
            Some(t) => AsciiMetadataValue::try_from(format!("Bearer {}", t.trim()))
                .map(|v| Self(Some(v)))
                .map_err(|_| "the token must be printable ASCII".to_owned()),
        }
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

fn pem_err(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

impl ClientAuthArgs {
    /// The rustls client configuration for `https://`.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| pem_err("--ca-cert", path, e))?;
                for c in certs {
                    let c = c.map_err(|e| pem_err("--ca-cert", path, e))?;
                    roots.add(c).map_err(|e| pem_err("--ca-cert", path, e))?;
                }
                if roots.is_empty() {
                    return Err(pem_err("--ca-cert", path, "no PEM certificate"));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err("no trusted root certificates found on this system; \
                                pass --ca-cert"
                        .into());
                }
            }
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| pem_err("--client-cert", cert, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| pem_err("--client-cert", cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| pem_err("--client-key", key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--client-cert/--client-key: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Connects TCP, then TLS for `https://` URIs.
#[derive(Clone)]
pub struct TlsConnector {
    tls: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl TlsConnector {
    pub fn new(config: ClientConfig, server_name: Option<&str>) -> Result<Self, String> {
        let server_name = server_name
            .map(|n| {
                ServerName::try_from(n.to_owned())
                    .map_err(|e| format!("--tls-server-name `{n}`: {e}"))
            })
            .transpose()?;
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

type Io = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl Service<Uri> for TlsConnector {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Io, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = match this.server_name {
                Some(n) => n,
                None => ServerName::try_from(host.clone())
                    .map_err(|e| invalid(format!("server name `{host}`: {e}")))?,
            };
            let tls = this.tls.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
