//! The client side of `sluice-ingester`: `write`, `query`, `status`, `rotate`,
//! `persist`, `drain`, `resume`, `tables` and `namespaces`.
//!
//! Every subcommand is a `clap::Args` struct plus an `async fn run_*(args)`
//! that `main.rs` calls; each talks to one ingester over gRPC and knows
//! nothing of the ingester's internals (only the generated `sluice-proto`
//! clients and Arrow Flight), so it works against any build of the server.
//!
//! What the commands promise:
//!
//! * **Clear failures.** A server that cannot be reached is reported as
//!   `cannot connect to http://…: connection refused` (the root cause, not a
//!   transport error chain), and a refused RPC as its gRPC code and the
//!   server's message. `run_*` returns `Err` for anything that should make the
//!   process exit non-zero; the error's `Display` is the message to print.
//! * **Scriptable output.** Data and requested reports go to stdout; progress,
//!   warnings and summaries go to stderr, so `query … > out.csv` is clean.
//! * **Bounded memory.** `write` holds at most `2 × --concurrency` batches;
//!   `query` streams record batches straight to the output (`table` format
//!   holds one chunk of [`query`]'s `TABLE_CHUNK_ROWS` rows).
//!
//! Message sizes: the gRPC clients accept and send messages up to
//! [`MAX_MESSAGE_BYTES`] (tonic's default of 4 MiB is too small for wide
//! query batches and large write batches).

mod batch;
mod control;
mod output;
mod query;
mod tls;
mod token;
mod write;

use std::error::Error as _;
use std::time::Duration;

use tonic::transport::Endpoint;

pub use tls::{ClientAuthArgs, GrpcChannel, TokenInterceptor};

pub use control::{
    DrainArgs, NamespacesArgs, PersistArgs, ResumeArgs, RotateArgs, StatusArgs, TablesArgs,
    run_drain, run_namespaces, run_persist, run_resume, run_rotate, run_status, run_tables,
};
pub use query::{QueryArgs, run_query};
pub use token::{TokenArgs, run_token};
pub use write::{WriteArgs, run_write};

/// Largest gRPC message the clients encode or decode: 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Where the ingester's gRPC server is; shared by every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// gRPC address of the ingester (its `--grpc-bind`). A bare `host:port`
    /// means `http://host:port`; `https://` uses TLS (see --ca-cert).
    #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:8082")]
    pub addr: String,

    /// How long to wait for the TCP connection to the ingester, e.g. `5s`,
    /// `500ms`.
    #[arg(long, env = "SLUICE_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    #[command(flatten)]
    pub auth: ClientAuthArgs,
}

/// What went wrong talking to an ingester.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid address `{addr}`: {reason}")]
    InvalidAddress { addr: String, reason: String },

    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },

    #[error("TLS: {reason}")]
    Tls { reason: String },

    /// An RPC answered with an error status.
    #[error("{what} failed: {}", describe_status(status))]
    Rpc {
        what: &'static str,
        status: Box<tonic::Status>,
    },
}

impl CliError {
    pub(crate) fn rpc(what: &'static str, status: tonic::Status) -> Self {
        Self::Rpc {
            what,
            status: Box::new(status),
        }
    }
}

impl ConnectArgs {
    /// The address as a URI string: `http://` is added to a bare `host:port`.
    fn uri(&self) -> String {
        if self.addr.contains("://") {
            self.addr.clone()
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Connects eagerly, so an unreachable server is reported once, up front,
    /// with its root cause. Every call carries `--token`, if given.
    pub async fn connect(&self) -> Result<GrpcChannel, CliError> {
        let uri = self.uri();
        let interceptor = TokenInterceptor::new(self.auth.token.as_deref()).map_err(|reason| {
            CliError::InvalidAddress {
                addr: self.addr.clone(),
                reason,
            }
        })?;
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| CliError::InvalidAddress {
                addr: self.addr.clone(),
                reason: root_cause(&e),
            })?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Spot a dead server during long `--wait` calls and queries.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let connected = if uri.starts_with("https://") {
            let config = self
                .auth
                .client_config()
                .map_err(|reason| CliError::Tls { reason })?;
            let connector = tls::TlsConnector::new(config, self.auth.tls_server_name.as_deref())
                .map_err(|reason| CliError::Tls { reason })?;
            endpoint.connect_with_connector(connector).await
        } else {
            endpoint.connect().await
        };
        match connected {
            Ok(channel) => Ok(GrpcChannel::new(channel, interceptor)),
            Err(e) => Err(CliError::Connect {
                addr: uri,
                reason: connect_reason(&e, self.connect_timeout),
            }),
        }
    }
}

/// The innermost message of an error chain, lower-cased the way people say
/// it ("connection refused"), without the `(os error 111)` suffix.
fn connect_reason(e: &(dyn std::error::Error + 'static), timeout: Duration) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::TimedOut => format!("no answer within {timeout:?}"),
                _ => strip_os_error(&io.to_string()),
            };
        }
        cur = err.source();
    }
    let cause = root_cause(e);
    if cause.contains("timed out") {
        format!("no answer within {timeout:?}")
    } else {
        cause
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    strip_os_error(&last.to_string())
}

fn strip_os_error(s: &str) -> String {
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => s,
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `INVALID_ARGUMENT: line 3, column 5: …` — the code as gRPC spells it,
/// then the server's message.
pub(crate) fn describe_status(status: &tonic::Status) -> String {
    let message = status.message();
    // A transport failure mid-call surfaces as UNAVAILABLE with the cause in
    // the source chain rather than the message.
    if message.is_empty() {
        if let Some(src) = status.source() {
            return format!("{}: {}", code_name(status.code()), root_cause(src));
        }
        return code_name(status.code()).to_owned();
    }
    format!("{}: {message}", code_name(status.code()))
}

/// The canonical upper-case name of a gRPC code.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Parses `5s`, `1m30s`, `250ms` (humantime syntax).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 5s or 250ms: {e}"))
}

/// `1234567` → `1,234,567`, for counts people read.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1536` → `1.5 KiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn describes_statuses_with_their_grpc_code() {
        let s = tonic::Status::invalid_argument("line 3: bad");
        assert_eq!(describe_status(&s), "INVALID_ARGUMENT: line 3: bad");
        assert_eq!(
            CliError::rpc("Status", tonic::Status::unimplemented("not yet")).to_string(),
            "Status failed: UNIMPLEMENTED: not yet"
        );
    }

    #[test]
    fn bare_host_port_gets_a_scheme() {
        let mut args = ConnectArgs {
            addr: "127.0.0.1:8082".into(),
            connect_timeout: Duration::from_secs(1),
            auth: Default::default(),
        };
        assert_eq!(args.uri(), "http://127.0.0.1:8082");
        args.addr = "http://h:1".into();
        assert_eq!(args.uri(), "http://h:1");
    }

    #[tokio::test]
    async fn unreachable_server_is_named_with_the_root_cause() {
        // Bind then drop a listener: the port is (almost certainly) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
            l.local_addr().expect("local addr").port()
        };
        let args = ConnectArgs {
            addr: format!("http://127.0.0.1:{port}"),
            connect_timeout: Duration::from_secs(2),
            auth: Default::default(),
        };
        let err = args.connect().await.expect_err("nothing listens there");
        assert_eq!(
            err.to_string(),
            format!("cannot connect to http://127.0.0.1:{port}: connection refused")
        );
    }

    #[test]
    fn invalid_address_is_refused() {
        let args = ConnectArgs {
            addr: "http://exa mple:1".into(),
            connect_timeout: Duration::from_secs(1),
            auth: Default::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt.block_on(args.connect()).expect_err("space in host");
        assert!(
            err.to_string()
                .starts_with("invalid address `http://exa mple:1`"),
            "{err}"
        );
    }
}
