//! The answer to a write far over `--max-request-bytes`.
//!
//! The handler refuses a request over the limit with `RESOURCE_EXHAUSTED`
//! naming the limit. Tonic refuses to even decode a message over its own
//! decoding limit (the request limit plus some slack, so the handler's check
//! decides for everything near it) and answers `OUT_OF_RANGE` with a message
//! about its internal limit. A router that retries on `RESOURCE_EXHAUSTED`
//! and treats `OUT_OF_RANGE` as a bug would then see two answers to one
//! mistake. This wrapper rewrites tonic's answer into the documented one; the
//! message is never decoded, so nothing is applied.

use std::task::{Context, Poll};

use tonic::codegen::http::{HeaderValue, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

/// What tonic writes in `grpc-message` when a message is over its limit.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// A gRPC service whose "message too large" answers say
/// `RESOURCE_EXHAUSTED` and name the configured limit.
#[derive(Debug, Clone)]
pub(crate) struct SizeLimitAnswer<S> {
    inner: S,
    limit: usize,
}

impl<S> SizeLimitAnswer<S> {
    pub(crate) fn new(inner: S, limit: usize) -> Self {
        Self { inner, limit }
    }
}

impl<S: NamedService> NamedService for SizeLimitAnswer<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for SizeLimitAnswer<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let limit = self.limit;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            rewrite(&mut resp, limit);
            Ok(resp)
        })
    }
}

/// Rewrites a trailers-only "message too large" answer in place.
fn rewrite<B>(resp: &mut Response<B>, limit: usize) {
    let headers = resp.headers_mut();
    let is_out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    if !is_out_of_range {
        return;
    }
    let Some(message) = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
    else {
        return;
    };
    if !message.starts_with(TONIC_TOO_LARGE) {
        return;
    }
    let size = found_bytes(&message)
        .map(|n| format!("{n} bytes"))
        .unwrap_or_else(|| "larger".to_string());
    let text = format!(
        "request too large: {size}, over the limit of {limit} bytes \
         (--max-request-bytes / SLUICE_MAX_REQUEST_BYTES); nothing was applied, \
         split the batch"
    );
    headers.insert("grpc-status", HeaderValue::from_static("8"));
    if let Ok(v) = HeaderValue::from_str(&text) {
        headers.insert("grpc-message", v);
    }
}

/// The `found N bytes` figure in tonic's message.
fn found_bytes(message: &str) -> Option<u64> {
    let rest = &message[message.find("found ")? + "found ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 1]) << 4 | hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &str, message: &str) -> Response<()> {
        let mut r = Response::new(());
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from_str(status).unwrap());
        r.headers_mut()
            .insert("grpc-message", HeaderValue::from_str(message).unwrap());
        r
    }

    #[test]
    fn tonic_too_large_becomes_resource_exhausted_naming_the_limit() {
        let mut r = answer(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%20180040%20bytes,%20the%20limit%20is:%2066536%20bytes",
        );
        rewrite(&mut r, 65536);
        assert_eq!(r.headers()["grpc-status"], "8");
        let m = r.headers()["grpc-message"].to_str().unwrap();
        assert!(m.contains("180040 bytes"), "{m}");
        assert!(m.contains("limit of 65536 bytes"), "{m}");
    }

    #[test]
    fn other_answers_are_left_alone() {
        for (status, message) in [
            ("11", "time out of range"),
            ("3", "Error, decoded message length too large"),
            ("0", ""),
        ] {
            let mut r = answer(status, message);
            rewrite(&mut r, 1);
            assert_eq!(r.headers()["grpc-status"], status);
            assert_eq!(r.headers()["grpc-message"], message);
        }
    }

    #[test]
    fn percent_decoding_handles_truncated_escapes() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%+1"), "%+1");
    }
}
