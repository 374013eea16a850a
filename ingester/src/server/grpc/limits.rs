//! Per-request limits of the gRPC server: concurrent Flight queries and the
//! time a unary request may take.
//!
//! * **Queries.** Each `DoGet` holds a permit of a semaphore until its
//!   response stream ends or is dropped (the permit lives in the response
//!   body), so `--max-concurrent-queries` bounds the queries scanning at once,
//!   and with them the memory they hold. Past it a query is answered
//!   `RESOURCE_EXHAUSTED` at once rather than queued: the client (or querier)
//!   retries or goes to another replica.
//! * **Time.** `--request-timeout` bounds the time until a response starts
//!   for writes, catalog calls and queries (a query's stream may then run
//!   longer). Control calls are exempt: `Persist` and `PrepareShutdown` with
//!   `wait` legitimately take minutes. Clients' own `grpc-timeout` deadlines
//!   apply as well.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};

const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";
const CONTROL: &str = "/sluice.ingester.v1.ControlService/";

/// The limits, shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct LimitsLayer {
    queries: Arc<Semaphore>,
    max_queries: usize,
    timeout: Option<Duration>,
}

impl LimitsLayer {
    pub(crate) fn new(max_queries: usize, timeout: Option<Duration>) -> Self {
        let max_queries = max_queries.max(1);
        Self {
            queries: Arc::new(Semaphore::new(max_queries)),
            max_queries,
            timeout,
        }
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = Limits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limits {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Limits<S> {
    inner: S,
    limits: LimitsLayer,
}

impl<S, ReqB> Service<Request<ReqB>> for Limits<S>
where
    S: Service<Request<ReqB>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let path = req.uri().path();
        let permit = if path == DO_GET {
            match Arc::clone(&self.limits.queries).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let status = tonic::Status::resource_exhausted(format!(
                        "too many concurrent queries (limit {}, --max-concurrent-queries); retry shortly",
                        self.limits.max_queries
                    ));
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        } else {
            None
        };
        let timeout = self.limits.timeout.filter(|_| !path.starts_with(CONTROL));
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        Box::pin(async move {
            let resp = match timeout {
                None => fut.await?,
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Ok(tonic::Status::deadline_exceeded(format!(
                            "no answer within --request-timeout {t:?}"
                        ))
                        .into_http());
                    }
                },
            };
            Ok(match permit {
                None => resp,
                Some(permit) => resp.map(|body| {
                    Body::new(PermitBody {
                        inner: body,
                        _permit: permit,
                    })
                }),
            })
        })
    }
}

/// A response body that holds a query permit until it is finished or dropped.
struct PermitBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Ready;

    /// A response body still streaming (as a query's is).
    struct Streaming;

    impl http_body::Body for Streaming {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            Poll::Pending
        }
    }

    /// Answers every request with a streaming OK body.
    #[derive(Clone)]
    struct Ok200;

    impl Service<Request<()>> for Ok200 {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Ready<Result<Response<Body>, Self::Error>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(Body::new(Streaming))))
        }
    }

    fn req(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).expect("request")
    }

    fn grpc_status(r: &Response<Body>) -> Option<&str> {
        r.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn queries_beyond_the_limit_are_refused_until_one_finishes() {
        let mut svc = tower::Layer::layer(&LimitsLayer::new(2, None), Ok200);
        let a = svc.call(req(DO_GET)).await.expect("a");
        let b = svc.call(req(DO_GET)).await.expect("b");
        assert_eq!(grpc_status(&a), None);
        let c = svc.call(req(DO_GET)).await.expect("c");
        assert_eq!(grpc_status(&c), Some("8"), "RESOURCE_EXHAUSTED");
        // Writes are not queries.
        let w = svc
            .call(req("/sluice.ingester.v1.WriteService/Write"))
            .await
            .expect("w");
        assert_eq!(grpc_status(&w), None);
        drop(a);
        let d = svc.call(req(DO_GET)).await.expect("d");
        assert_eq!(grpc_status(&d), None, "a finished query frees its permit");
        drop((b, d));
    }

    #[derive(Clone)]
    struct Slow;

    impl Service<Request<()>> for Slow {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Response<Body>, Self::Error>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: Request<()>) -> Self::Future {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Response::new(Body::empty()))
            })
        }
    }

    #[tokio::test]
    async fn slow_requests_time_out_except_control() {
        let layer = LimitsLayer::new(4, Some(Duration::from_millis(100)));
        let mut svc = tower::Layer::layer(&layer, Slow);
        let w = svc
            .call(req("/sluice.ingester.v1.WriteService/Write"))
            .await
            .expect("w");
        assert_eq!(grpc_status(&w), Some("4"), "DEADLINE_EXCEEDED");
        let control = svc.call(req("/sluice.ingester.v1.ControlService/Persist"));
        let r = tokio::time::timeout(Duration::from_millis(500), control).await;
        assert!(r.is_err(), "control calls are not cut off");
    }
}
