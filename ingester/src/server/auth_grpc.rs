//! The gRPC side of [`Auth`](super::auth::Auth): a tower layer around every
//! service of the gRPC server.
//!
//! It runs on the raw HTTP/2 request, before tonic decodes the message, so a
//! refused request costs one hash and is answered with a trailers-only
//! `UNAUTHENTICATED` / `PERMISSION_DENIED` whatever it contained. Which scope
//! a method needs comes from its path alone ([`grpc_requirement`]).

use std::task::{Context, Poll};

use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};

use super::auth::{Auth, AuthError, grpc_requirement};

/// Adds the token check to a service.
#[derive(Debug, Clone)]
pub(crate) struct GrpcAuthLayer {
    auth: Auth,
}

impl GrpcAuthLayer {
    pub(crate) fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// A service that answers unauthorised requests itself.
#[derive(Debug, Clone)]
pub(crate) struct GrpcAuth<S> {
    inner: S,
    auth: Auth,
}

/// The gRPC status of a refused request.
pub(crate) fn auth_status(e: &AuthError) -> tonic::Status {
    match e {
        AuthError::Missing | AuthError::Invalid => tonic::Status::unauthenticated(e.to_string()),
        AuthError::Forbidden(_) => tonic::Status::permission_denied(e.to_string()),
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for GrpcAuth<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let required = grpc_requirement(req.uri().path());
        let header = req
            .headers()
            .get(tonic::codegen::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match self.auth.check(header, required) {
            Ok(()) => {
                // The clone is ready only if polled; swap so the ready one
                // serves this call (tower's usual pattern).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Err(e) => {
                let status = auth_status(&e);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
