//! The `serve` flags for access control and listener limits: tokens, TLS,
//! connection and request limits. Flattened into [`Config`](crate::Config);
//! all are off by default, so a single local node needs no setup.

use std::path::PathBuf;
use std::time::Duration;

use super::auth::{Auth, TokensFileError};
use super::tls::{TlsError, TlsFiles};

/// Access control and limits of the gRPC and HTTP listeners.
#[derive(Debug, Clone, clap::Args)]
pub struct SecurityOptions {
    /// Require bearer tokens, listed in this file (re-read when it changes).
    /// Without it every API is open.
    ///
    /// One token per line: `sha256:<hex SHA-256 of the token> <scopes>
    /// [name]`, `#` starts a comment. Scopes (comma-separated): `write`
    /// (WriteService, POST /api/v2/write), `query` (Flight, CatalogService),
    /// `control` (ControlService), or `all`. Only hashes are stored; `sluice-ingester
    /// token new --scopes write` prints a fresh token and its line. Clients
    /// send `authorization: Bearer <token>` (HTTP also `Token <token>`).
    /// /health and /ready never need a token.
    #[arg(long, env = "SLUICE_TOKENS_FILE", verbatim_doc_comment)]
    pub tokens_file: Option<PathBuf>,

    /// Require a valid token (any scope) on /metrics too.
    #[arg(long, env = "SLUICE_METRICS_REQUIRE_TOKEN", default_value_t = false)]
    pub metrics_require_token: bool,

    /// Serve gRPC and HTTP over TLS with this PEM certificate chain (leaf
    /// first); needs --tls-key. Re-read when it changes.
    #[arg(long, env = "SLUICE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this PEM CA bundle (mutual TLS).
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the tokens file and TLS files are checked for changes.
    #[arg(long, env = "SLUICE_RELOAD_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,

    /// Open connections accepted across both listeners; more wait in the
    /// kernel's backlog until one closes.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Flight queries running at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_QUERIES", default_value_t = 32)]
    pub max_concurrent_queries: usize,

    /// Longest time until a write, catalog call or query starts answering
    /// (DEADLINE_EXCEEDED after it); control calls are exempt. `0s` disables.
    #[arg(long, env = "SLUICE_REQUEST_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        Self {
            tokens_file: None,
            metrics_require_token: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            reload_interval: Duration::from_secs(5),
            max_connections: 4096,
            max_concurrent_queries: 32,
            request_timeout: Duration::from_secs(120),
        }
    }
}

impl SecurityOptions {
    /// The authenticator: open without a tokens file.
    pub(crate) fn auth(&self) -> Result<Auth, TokensFileError> {
        match &self.tokens_file {
            None => Ok(Auth::open()),
            Some(p) => Auth::from_file(p, self.metrics_require_token),
        }
    }

    /// The TLS files, if TLS is on.
    pub(crate) fn tls_files(&self) -> Result<Option<TlsFiles>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (None, None) => Ok(None),
            _ => Err(TlsError::Config(
                "--tls-cert and --tls-key must be given together".into(),
            )),
        }
    }
}
