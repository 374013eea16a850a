//! `WriteService`.

use std::sync::Arc;

use sluice_proto::v1::{self, write_request};
use tonic::{Request, Response, Status};

use crate::dml_sink::DmlSink;
use crate::write::{Payload, Precision, WriteHandler, WriteRequest};

#[derive(Debug)]
pub(crate) struct WriteService<S> {
    handler: Arc<WriteHandler<S>>,
}

impl<S> WriteService<S> {
    pub(crate) fn new(handler: Arc<WriteHandler<S>>) -> Self {
        Self { handler }
    }
}

/// Server time in nanoseconds, for lines without a timestamp.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn precision(p: i32) -> Result<Precision, Status> {
    Ok(match v1::Precision::try_from(p) {
        Ok(v1::Precision::Unspecified | v1::Precision::Nanoseconds) => Precision::Nanoseconds,
        Ok(v1::Precision::Microseconds) => Precision::Microseconds,
        Ok(v1::Precision::Milliseconds) => Precision::Milliseconds,
        Ok(v1::Precision::Seconds) => Precision::Seconds,
        Err(_) => return Err(Status::invalid_argument(format!("unknown precision {p}"))),
    })
}

#[tonic::async_trait]
impl<S: DmlSink + 'static> v1::write_service_server::WriteService for WriteService<S> {
    async fn write(
        &self,
        request: Request<v1::WriteRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let r = request.into_inner();
        let payload = match r.payload {
            Some(write_request::Payload::LineProtocol(body)) => Payload::LineProtocol {
                body,
                precision: precision(r.precision)?,
                default_time: now_ns(),
            },
            Some(write_request::Payload::Arrow(a)) => Payload::Arrow {
                table: a.table,
                ipc: a.ipc_stream,
                tags: a.tags,
            },
            None => return Err(Status::invalid_argument("empty write: no payload")),
        };
        let summary = self
            .handler
            .write(WriteRequest {
                namespace: r.namespace,
                payload,
            })
            .await
            .map_err(|e| super::write_error_status(&e))?;
        Ok(Response::new(v1::WriteResponse {
            sequence_number: summary.sequence_number,
            rows: summary.rows,
            tables: summary.tables,
        }))
    }
}
