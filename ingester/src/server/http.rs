//! HTTP: `/health`, `/ready`, `/metrics` and InfluxDB v2's `/api/v2/write`.
//!
//! The HTTP server starts before WAL replay so probes can see the pod is
//! alive (`/health` 200) but not ready (`/ready` 503) while it replays.
//! Write errors follow InfluxDB v2: a JSON body `{"code", "message"}` with
//! 400 (invalid), 413 (too large), 429 (back-pressure), 503 (unavailable).

use std::io::Read;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::dml_sink::DmlSink;
use crate::ingest_state::{IngestStateError, Phase, PhaseCell};
use crate::write::{Payload, Precision, WriteError, WriteHandler, WriteRequest};

/// Shared by the HTTP handlers.
#[derive(Debug)]
pub(crate) struct HttpState<S> {
    pub(crate) phase: Arc<PhaseCell>,
    pub(crate) registry: prometheus::Registry,
    /// Set once start-up (replay) is done.
    pub(crate) writer: OnceLock<Arc<WriteHandler<S>>>,
    pub(crate) max_request_bytes: usize,
}

pub(crate) fn router<S: DmlSink + 'static>(state: Arc<HttpState<S>>) -> Router {
    let limit = state.max_request_bytes;
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/api/v2/write", post(write::<S>))
        // Compressed bodies are limited here, decompressed ones in `write`.
        .layer(DefaultBodyLimit::max(limit.saturating_add(1024)))
        .with_state(state)
}

async fn ready<S: DmlSink + 'static>(State(s): State<Arc<HttpState<S>>>) -> Response {
    match s.phase.get() {
        Phase::Ready => (StatusCode::OK, "ready\n").into_response(),
        p => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {p:?}\n"),
        )
            .into_response(),
    }
}

async fn metrics<S: DmlSink + 'static>(State(s): State<Arc<HttpState<S>>>) -> Response {
    let families = s.registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct WriteParams {
    bucket: Option<String>,
    /// InfluxDB 1.x compatibility (`/write?db=`).
    db: Option<String>,
    precision: Option<String>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "code": code, "message": message.into() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The HTTP status and InfluxDB error code of a refused write.
fn write_error_response(e: &WriteError) -> Response {
    let msg = e.to_string();
    match e {
        WriteError::Empty
        | WriteError::InvalidNamespace { .. }
        | WriteError::Parse(_)
        | WriteError::InvalidName { .. }
        | WriteError::ColumnTypeConflict { .. }
        | WriteError::DuplicateColumn { .. }
        | WriteError::TimestampOutOfRange { .. }
        | WriteError::InvalidArrow { .. } => error(StatusCode::BAD_REQUEST, "invalid", msg),
        WriteError::TooLarge { .. } => {
            error(StatusCode::PAYLOAD_TOO_LARGE, "request too large", msg)
        }
        WriteError::BufferFull { .. } => {
            error(StatusCode::TOO_MANY_REQUESTS, "too many requests", msg)
        }
        WriteError::State(s) => match s {
            IngestStateError::PersistSaturated | IngestStateError::DiskFull => {
                error(StatusCode::TOO_MANY_REQUESTS, "too many requests", msg)
            }
            IngestStateError::Starting
            | IngestStateError::Draining
            | IngestStateError::ShuttingDown => {
                error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            }
        },
        WriteError::Catalog(c) if c.is_retryable() => {
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
        }
        WriteError::Catalog(_) | WriteError::Internal(_) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", msg)
        }
        WriteError::Dml(_) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg),
    }
}

async fn write<S: DmlSink + 'static>(
    State(s): State<Arc<HttpState<S>>>,
    Query(params): Query<WriteParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request too large",
                format!(
                    "request body over the limit of {} bytes (--max-request-bytes / \
                     SLUICE_MAX_REQUEST_BYTES); nothing was applied, split the batch",
                    s.max_request_bytes
                ),
            );
        }
        Err(r) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("could not read the request body: {}", r.body_text()),
            );
        }
    };
    let Some(writer) = s.writer.get() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the ingester is starting (replaying its WAL); retry shortly",
        );
    };
    let Some(namespace) = params.bucket.or(params.db) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "missing `bucket` query parameter",
        );
    };
    let precision = match Precision::parse(params.precision.as_deref().unwrap_or("ns")) {
        Some(p) => p,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "precision must be one of ns, us, ms, s",
            );
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = if gzip {
        let limit = s.max_request_bytes as u64;
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(&body[..]).take(limit + 1);
        if let Err(e) = dec.read_to_end(&mut out) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("invalid gzip body: {e}"),
            );
        }
        if out.len() as u64 > limit {
            return write_error_response(&WriteError::TooLarge {
                size: out.len(),
                limit: s.max_request_bytes,
            });
        }
        Bytes::from(out)
    } else {
        body
    };
    let req = WriteRequest {
        namespace,
        payload: Payload::LineProtocol {
            body,
            precision,
            default_time: super::grpc::write::now_ns(),
        },
    };
    match writer.write(req).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => write_error_response(&e),
    }
}
