//! The HTTP side of [`Auth`](super::auth::Auth): a middleware in front of
//! every route.
//!
//! `/health` and `/ready` stay open (kubelet probes carry no token),
//! `/metrics` needs any valid token with `--metrics-require-token`, and
//! everything else — `/api/v2/write` — the `write` scope. InfluxDB clients
//! send `Authorization: Token <t>`, others `Bearer <t>`; both are accepted.
//! Refusals use InfluxDB's JSON error shape with 401 or 403, and are decided
//! before the body is read.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{Auth, AuthError, Required, Scope};

/// What an HTTP path needs.
pub(crate) fn http_requirement(auth: &Auth, path: &str) -> Required {
    match path {
        "/health" | "/ready" => Required::Open,
        "/metrics" => auth.metrics_requirement(),
        _ => Required::Scope(Scope::Write),
    }
}

/// `axum::middleware::from_fn_with_state(auth, require_token)`.
pub(crate) async fn require_token(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let required = http_requirement(&auth, req.uri().path());
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match auth.check(header, required) {
        Ok(()) => next.run(req).await,
        Err(e) => refusal(&e),
    }
}

fn refusal(e: &AuthError) -> Response {
    let (status, code) = match e {
        AuthError::Missing | AuthError::Invalid => (StatusCode::UNAUTHORIZED, "unauthorized"),
        AuthError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
    };
    let body = serde_json::json!({ "code": code, "message": e.to_string() });
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sluice\""),
        );
    }
    resp
}
