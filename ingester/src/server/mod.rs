//! The network face of an ingester: gRPC (Write, Flight, Catalog, Control,
//! health, reflection) and HTTP (health, readiness, metrics, InfluxDB v2
//! write). Each service lives in its own file and maps its errors to status
//! codes with an exhaustive match, so a new error cannot ship without one.

pub(crate) mod auth;
pub(crate) mod auth_config;
pub(crate) mod auth_grpc;
pub(crate) mod auth_http;
pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod tls;

pub use auth_config::SecurityOptions;
