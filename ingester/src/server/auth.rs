//! Bearer-token authentication: who may write, query and control.
//!
//! An ingester started with `--tokens-file` requires a token on every API
//! except health and readiness (and, with `--metrics-require-token`, also on
//! `/metrics`). Without the file it is open: the zero-config single node.
//!
//! ## The tokens file
//!
//! One token per line, `#` starts a comment:
//!
//! ```text
//! # <sha256 of the token, hex>  <scopes>         [name]
//! sha256:9f86d08188…0f00a08   write,query     router
//! sha256:2c26b46b68…a0a7b2e   control         operator
//! ```
//!
//! Only the SHA-256 of each token is stored, so the file (a Kubernetes Secret)
//! does not hold anything a client could present. Scopes are `write`,
//! `query`, `control` or `all`, separated by commas. `sluice-ingester token
//! new` prints a fresh token and its line.
//!
//! ## What is guaranteed
//!
//! * A missing, malformed or unknown token gets `UNAUTHENTICATED` (HTTP 401),
//!   a known token without the scope `PERMISSION_DENIED` (HTTP 403). The check
//!   runs before the request is decoded, so the answer never depends on the
//!   namespace or table named in it: nobody learns whether one exists.
//! * Tokens are compared by their SHA-256 (a hash-map lookup of the digest),
//!   so the time taken says nothing about how much of a token was right.
//! * The file is re-read when it changes (checked every few seconds), so a
//!   rotated Secret takes effect without a restart. A file that no longer
//!   parses is logged and ignored: the previous tokens stay in force rather
//!   than opening or closing the ingester by accident.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `WriteService`, `POST /api/v2/write`.
    Write,
    /// Flight queries and the catalog listing.
    Query,
    /// `ControlService`: rotate, persist, status, drain, resume.
    Control,
}

impl Scope {
    const fn bit(self) -> u8 {
        match self {
            Self::Write => 1,
            Self::Query => 2,
            Self::Control => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Query => "query",
            Self::Control => "control",
        }
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Self = Self(7);

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    /// `write,query` → the set; `all` means every scope.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = 0u8;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out |= match part.to_ascii_lowercase().as_str() {
                "write" => Scope::Write.bit(),
                "query" => Scope::Query.bit(),
                "control" => Scope::Control.bit(),
                "all" | "*" => Self::ALL.0,
                other => {
                    return Err(format!(
                        "unknown scope `{other}` (expected write, query, control or all)"
                    ));
                }
            };
        }
        if out == 0 {
            return Err("no scope given (expected write, query, control or all)".into());
        }
        Ok(Self(out))
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [Scope::Write, Scope::Query, Scope::Control]
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// Nothing (health, readiness).
    Open,
    /// Any valid token (reflection, `/metrics`, unknown paths).
    Authenticated,
    /// A valid token with this scope.
    Scope(Scope),
}

/// Why a request was refused. The messages are the same whatever the
/// request named, so they reveal nothing about namespaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `authorization: Bearer <token>`")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("the token lacks the `{}` scope", .0.as_str())]
    Forbidden(Scope),
}

/// A tokens file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokens file {path}, line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    scopes: Scopes,
}

/// The known tokens, by SHA-256.
#[derive(Debug, Default)]
struct TokenTable(HashMap<[u8; 32], Entry>);

impl TokenTable {
    fn parse(path: &Path, text: &str) -> Result<Self, TokensFileError> {
        let err = |line: usize, reason: String| TokensFileError::Parse {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut map = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(hash), Some(scopes)) = (fields.next(), fields.next()) else {
                return Err(err(
                    line_no,
                    "expected `sha256:<64 hex digits> <scopes> [name]`".into(),
                ));
            };
            let name = fields.next().unwrap_or("");
            if fields.next().is_some() {
                return Err(err(line_no, "too many fields".into()));
            }
            let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
            let digest = parse_hex32(hex).ok_or_else(|| {
                err(
                    line_no,
                    "the first field must be the token's SHA-256 as 64 hex digits \
                     (the token itself is never stored; see `sluice-ingester token hash`)"
                        .into(),
                )
            })?;
            let scopes = Scopes::parse(scopes).map_err(|r| err(line_no, r))?;
            let name: Arc<str> = if name.is_empty() {
                format!("line-{line_no}").into()
            } else {
                name.into()
            };
            if map.insert(digest, Entry { name, scopes }).is_some() {
                return Err(err(line_no, "the same token appears twice".into()));
            }
        }
        Ok(Self(map))
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// `sha256:<hex>` of a token: the form stored in the tokens file.
pub fn hash_token(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A fresh random token (`slc_` and 43 base64url characters, 256 bits).
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(4 + 43);
    out.push_str("slc_");
    // 256 bits in 6-bit groups.
    let mut acc: u32 = 0;
    let mut nbits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((acc >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((acc << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

/// The authenticator shared by the gRPC layer and the HTTP middleware.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Option<Arc<AuthInner>>,
    metrics_require_token: bool,
}

#[derive(Debug)]
struct AuthInner {
    path: PathBuf,
    table: RwLock<Arc<TokenTable>>,
}

impl Auth {
    /// No authentication: every request is allowed.
    pub fn open() -> Self {
        Self {
            inner: None,
            metrics_require_token: false,
        }
    }

    /// Loads the tokens file; fails if it cannot be read or parsed.
    pub fn from_file(path: &Path, metrics_require_token: bool) -> Result<Self, TokensFileError> {
        let table = load(path)?;
        Ok(Self {
            inner: Some(Arc::new(AuthInner {
                path: path.to_path_buf(),
                table: RwLock::new(Arc::new(table)),
            })),
            metrics_require_token,
        })
    }

    /// Whether tokens are required at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Number of tokens currently known (0 when open).
    pub fn token_count(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.table.read().0.len())
    }

    /// What `/metrics` needs.
    pub fn metrics_requirement(&self) -> Required {
        if self.metrics_require_token {
            Required::Authenticated
        } else {
            Required::Open
        }
    }

    /// Checks an `authorization` header value (`Bearer x` or InfluxDB's
    /// `Token x`) against what the request needs.
    pub fn check(&self, authorization: Option<&[u8]>, required: Required) -> Result<(), AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        if required == Required::Open {
            return Ok(());
        }
        let token = authorization
            .and_then(bearer_token)
            .ok_or(AuthError::Missing)?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        let table = Arc::clone(&inner.table.read());
        let entry = table.0.get(&digest).ok_or(AuthError::Invalid)?;
        match required {
            Required::Open | Required::Authenticated => Ok(()),
            Required::Scope(s) if entry.scopes.contains(s) => Ok(()),
            Required::Scope(s) => {
                tracing::debug!(token = %entry.name, scope = s.as_str(), "token lacks scope");
                Err(AuthError::Forbidden(s))
            }
        }
    }

    /// Re-reads the tokens file whenever its modification time, size or
    /// inode changes, every `interval`, until the returned task is aborted.
    pub fn spawn_reloader(&self, interval: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let inner = Arc::clone(self.inner.as_ref()?);
        Some(tokio::spawn(async move {
            let mut last = crate::server::tls::file_stamp(&inner.path);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let stamp = crate::server::tls::file_stamp(&inner.path);
                if stamp == last {
                    continue;
                }
                last = stamp;
                let path = inner.path.clone();
                match tokio::task::spawn_blocking(move || load(&path)).await {
                    Ok(Ok(table)) => {
                        let n = table.0.len();
                        *inner.table.write() = Arc::new(table);
                        tracing::info!(path = %inner.path.display(), tokens = n, "tokens file reloaded");
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "tokens file changed but cannot be used; keeping the previous tokens");
                    }
                    Err(e) => tracing::error!(error = %e, "tokens reload task failed"),
                }
            }
        }))
    }
}

fn load(path: &Path) -> Result<TokenTable, TokensFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    TokenTable::parse(path, &text)
}

/// The token of `Bearer x` or `Token x` (scheme case-insensitive).
fn bearer_token(v: &[u8]) -> Option<&[u8]> {
    let v = v.trim_ascii();
    let sp = v.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = v.split_at(sp);
    if !(scheme.eq_ignore_ascii_case(b"bearer") || scheme.eq_ignore_ascii_case(b"token")) {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// What each gRPC method needs, by its path (`/package.Service/Method`).
pub fn grpc_requirement(path: &str) -> Required {
    let service = path
        .strip_prefix('/')
        .and_then(|p| p.split('/').next())
        .unwrap_or("");
    match service {
        "grpc.health.v1.Health" => Required::Open,
        "sluice.ingester.v1.WriteService" => Required::Scope(Scope::Write),
        "sluice.ingester.v1.CatalogService" | "arrow.flight.protocol.FlightService" => {
            Required::Scope(Scope::Query)
        }
        "sluice.ingester.v1.ControlService" => Required::Scope(Scope::Control),
        // Reflection and anything unknown: a valid token, no scope.
        _ => Required::Authenticated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(lines: &str) -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, lines).expect("write tokens");
        let auth = Auth::from_file(&path, true).expect("valid tokens file");
        (dir, auth)
    }

    #[test]
    fn hashes_are_sha256_hex() {
        // sha256("test"), a published test vector.
        assert_eq!(
            hash_token("test"),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn new_tokens_are_random_and_well_formed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 43);
        assert!(
            a[4..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn scopes_are_enforced() {
        let (_d, auth) = auth_with(&format!(
            "# comment\n\n{} write router\n{} query,control  # trailing\n{} all\n",
            hash_token("w"),
            hash_token("qc"),
            hash_token("root")
        ));
        assert_eq!(auth.token_count(), 3);
        let w = Required::Scope(Scope::Write);
        let q = Required::Scope(Scope::Query);
        let c = Required::Scope(Scope::Control);
        assert_eq!(auth.check(Some(b"Bearer w"), w), Ok(()));
        assert_eq!(auth.check(Some(b"Token w"), w), Ok(()));
        assert_eq!(auth.check(Some(b"bearer  w "), w), Ok(()));
        assert_eq!(
            auth.check(Some(b"Bearer w"), q),
            Err(AuthError::Forbidden(Scope::Query))
        );
        assert_eq!(auth.check(Some(b"Bearer qc"), q), Ok(()));
        assert_eq!(auth.check(Some(b"Bearer qc"), c), Ok(()));
        assert_eq!(
            auth.check(Some(b"Bearer qc"), w),
            Err(AuthError::Forbidden(Scope::Write))
        );
        for r in [w, q, c, Required::Authenticated] {
            assert_eq!(auth.check(Some(b"Bearer root"), r), Ok(()));
            assert_eq!(auth.check(None, r), Err(AuthError::Missing));
            assert_eq!(auth.check(Some(b"Bearer nope"), r), Err(AuthError::Invalid));
            assert_eq!(auth.check(Some(b"Basic dzp3"), r), Err(AuthError::Missing));
            assert_eq!(auth.check(Some(b"Bearer "), r), Err(AuthError::Missing));
            assert_eq!(auth.check(Some(b"\xff\xfe"), r), Err(AuthError::Missing));
        }
        assert_eq!(auth.check(None, Required::Open), Ok(()));
        assert_eq!(auth.metrics_requirement(), Required::Authenticated);
    }

    #[test]
    fn open_allows_everything() {
        let auth = Auth::open();
        assert!(!auth.enabled());
        assert_eq!(auth.check(None, Required::Scope(Scope::Control)), Ok(()));
        assert_eq!(auth.metrics_requirement(), Required::Open);
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        for (text, want) in [
            ("abc write\n", "line 1"),
            ("\n# x\nsha256:zz write\n", "line 3"),
            (
                &format!("{} read\n", hash_token("a")),
                "unknown scope `read`",
            ),
            (&format!("{}\n", hash_token("a")), "expected"),
            (&format!("{} write a b\n", hash_token("a")), "too many"),
            (
                &format!("{} write\n{} query\n", hash_token("a"), hash_token("a")),
                "twice",
            ),
        ] {
            let e = TokenTable::parse(Path::new("t"), text).expect_err(text);
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn grpc_paths_map_to_scopes() {
        assert_eq!(
            grpc_requirement("/grpc.health.v1.Health/Check"),
            Required::Open
        );
        assert_eq!(
            grpc_requirement("/sluice.ingester.v1.WriteService/Write"),
            Required::Scope(Scope::Write)
        );
        assert_eq!(
            grpc_requirement("/arrow.flight.protocol.FlightService/DoGet"),
            Required::Scope(Scope::Query)
        );
        assert_eq!(
            grpc_requirement("/sluice.ingester.v1.CatalogService/ListNamespaces"),
            Required::Scope(Scope::Query)
        );
        assert_eq!(
            grpc_requirement("/sluice.ingester.v1.ControlService/PrepareShutdown"),
            Required::Scope(Scope::Control)
        );
        assert_eq!(
            grpc_requirement("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Required::Authenticated
        );
        assert_eq!(grpc_requirement("garbage"), Required::Authenticated);
    }

    #[tokio::test]
    async fn reloads_when_the_file_changes_and_keeps_old_tokens_on_errors() {
        let (dir, auth) = auth_with(&format!("{} write\n", hash_token("old")));
        let task = auth
            .spawn_reloader(Duration::from_millis(10))
            .expect("enabled");
        let path = dir.path().join("tokens");
        let w = Required::Scope(Scope::Write);
        // A broken file keeps the old tokens.
        std::fs::write(&path, "garbage that does not parse\n").expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(auth.check(Some(b"Bearer old"), w), Ok(()));
        std::fs::write(&path, format!("{} write\n", hash_token("new"))).expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while auth.check(Some(b"Bearer new"), w).is_err() {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(auth.check(Some(b"Bearer old"), w), Err(AuthError::Invalid));
        task.abort();
    }
}
