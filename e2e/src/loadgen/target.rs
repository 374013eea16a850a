//! Where writes go: Sluice's gRPC `WriteService` (line protocol or Arrow) or
//! any InfluxDB v2-compatible `POST /api/v2/write`. Each writer owns its own
//! connection, as independent clients would.

use std::sync::Arc;

use bytes::Bytes;
use clap::ValueEnum;
use sluice_proto::v1;
use tonic::transport::Channel;

use super::auth::ClientAuth;
use super::direct;
use super::http::HttpWriter;
use super::workload::{ArrowGen, LineProtocolGen, MEASUREMENT, Reuse, TAG_KEYS, Workload};

/// The write protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// `WriteService.Write` with line protocol.
    GrpcLp,
    /// `WriteService.Write` with an Arrow IPC batch.
    GrpcArrow,
    /// InfluxDB v2 `POST /api/v2/write` (line protocol).
    Http,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::GrpcLp => "grpc-lp",
            Self::GrpcArrow => "grpc-arrow",
            Self::Http => "http",
        }
    }
}

/// Builds payloads for a target (shared by all writers, immutable).
#[derive(Debug)]
pub enum PayloadGen {
    Lp(LineProtocolGen),
    Arrow(ArrowGen),
}

impl PayloadGen {
    pub fn new(kind: TargetKind, workload: Arc<Workload>) -> Self {
        match kind {
            TargetKind::GrpcLp | TargetKind::Http => Self::Lp(LineProtocolGen::new(workload)),
            TargetKind::GrpcArrow => Self::Arrow(ArrowGen::new(workload)),
        }
    }

    /// The payload of batch `b` (rows `first..first + n`), reusing the
    /// writer's previous one where the format allows.
    pub fn build(&self, b: u64, first: u64, n: u64, reuse: &mut Reuse) -> anyhow::Result<Bytes> {
        match self {
            Self::Lp(g) => Ok(g.build_reusing(first, n, reuse)),
            Self::Arrow(g) => g.build(b, first, n),
        }
    }
}

/// Connection settings shared by the writers.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub kind: TargetKind,
    pub addr: String,
    pub namespace: String,
    pub org: String,
    /// Token and TLS (`--token`, `--ca-cert`).
    pub auth: ClientAuth,
    /// Line protocol through the generated client's encoder (a copy of each
    /// payload) rather than handed to the connection as it is (`direct.rs`).
    pub tonic_encode: bool,
}

/// One writer's connection.
#[derive(Debug)]
pub enum Sender {
    Grpc {
        client: v1::write_service_client::WriteServiceClient<Channel>,
        /// The same connection, for `direct::write`.
        channel: Channel,
        encoding: GrpcEncoding,
        namespace: String,
        auth: ClientAuth,
    },
    Http(HttpWriter),
}

/// How a gRPC writer puts its payload in a `WriteRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcEncoding {
    /// Line protocol handed to the connection as it is (`direct.rs`).
    Direct,
    /// Line protocol through the generated client (`--tonic-encode`).
    TonicLp,
    /// An Arrow IPC batch through the generated client.
    Arrow,
}

/// Why a write failed, as reported: a status name and a message.
#[derive(Debug)]
pub struct SendError {
    pub status: String,
    pub message: String,
}

/// A gRPC channel with room for large requests and responses (TLS for
/// `https://` addresses).
pub async fn grpc_channel(addr: &str, auth: &ClientAuth) -> anyhow::Result<Channel> {
    auth.grpc_channel(addr).await
}

impl Sender {
    pub async fn connect(t: &TargetConfig) -> anyhow::Result<Self> {
        Ok(match t.kind {
            TargetKind::GrpcLp | TargetKind::GrpcArrow => {
                let channel = grpc_channel(&t.addr, &t.auth).await?;
                Self::Grpc {
                    client: v1::write_service_client::WriteServiceClient::new(channel.clone())
                        .max_encoding_message_size(usize::MAX)
                        .max_decoding_message_size(usize::MAX),
                    channel,
                    encoding: match (t.kind, t.tonic_encode) {
                        (TargetKind::GrpcArrow, _) => GrpcEncoding::Arrow,
                        (_, true) => GrpcEncoding::TonicLp,
                        (_, false) => GrpcEncoding::Direct,
                    },
                    namespace: t.namespace.clone(),
                    auth: t.auth.clone(),
                }
            }
            TargetKind::Http => Self::Http(HttpWriter::new(
                &t.addr,
                &t.namespace,
                &t.org,
                t.auth.clone(),
            )?),
        })
    }

    /// Sends one payload; `Ok` once the server acknowledged it.
    pub async fn send(&mut self, payload: Bytes) -> Result<(), SendError> {
        match self {
            Self::Grpc {
                channel,
                encoding: GrpcEncoding::Direct,
                namespace,
                auth,
                ..
            } => {
                let precision = v1::Precision::Nanoseconds;
                let sent = match direct::head(namespace, precision, payload.len()) {
                    Ok(head) => direct::write(channel, auth.authorization(), head, payload).await,
                    Err(e) => Err(e),
                };
                sent.map_err(grpc_error)
            }
            Self::Grpc {
                client,
                encoding,
                namespace,
                auth,
                ..
            } => {
                let payload = if *encoding == GrpcEncoding::Arrow {
                    v1::write_request::Payload::Arrow(v1::ArrowBatch {
                        table: MEASUREMENT.into(),
                        ipc_stream: payload,
                        tags: TAG_KEYS.iter().map(|s| s.to_string()).collect(),
                    })
                } else {
                    v1::write_request::Payload::LineProtocol(payload)
                };
                client
                    .write(auth.request(v1::WriteRequest {
                        namespace: namespace.clone(),
                        payload: Some(payload),
                        precision: v1::Precision::Nanoseconds as i32,
                    }))
                    .await
                    .map(|_| ())
                    .map_err(grpc_error)
            }
            Self::Http(w) => match w.write(&payload).await {
                Ok(r) if (200..300).contains(&r.status) => Ok(()),
                Ok(r) => Err(SendError {
                    status: format!("http:{}", r.status),
                    message: r.body,
                }),
                Err(e) => Err(SendError {
                    status: "io".into(),
                    message: format!("{e:#}"),
                }),
            },
        }
    }
}

/// A refused gRPC write, reported by its status code.
fn grpc_error(s: tonic::Status) -> SendError {
    SendError {
        status: format!("grpc:{:?}", s.code()),
        message: s.message().to_string(),
    }
}
