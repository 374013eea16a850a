//! `ControlService`: how the operator (and `sluice-ingester
//! status|rotate|persist|drain|resume`) drives a pod. A thin mapping onto
//! [`Control`](crate::control::Control).

use std::sync::Arc;

use sluice_proto::v1;
use tonic::{Request, Response, Status};

use crate::control::Control;
use crate::ingest_state::Phase;

#[derive(Debug)]
pub(crate) struct ControlService {
    control: Arc<Control>,
}

impl ControlService {
    pub(crate) fn new(control: Arc<Control>) -> Self {
        Self { control }
    }
}

pub(crate) fn proto_state(p: Phase) -> v1::IngesterState {
    match p {
        Phase::Starting => v1::IngesterState::Starting,
        Phase::Replaying => v1::IngesterState::Replaying,
        Phase::Ready => v1::IngesterState::Ready,
        Phase::Draining => v1::IngesterState::Draining,
        Phase::Drained => v1::IngesterState::Drained,
    }
}

#[tonic::async_trait]
impl v1::control_service_server::ControlService for ControlService {
    async fn rotate_wal(
        &self,
        _: Request<v1::RotateWalRequest>,
    ) -> Result<Response<v1::RotateWalResponse>, Status> {
        let partitions = self.control.buffer.stats().partitions;
        let closed = self
            .control
            .rotate()
            .await
            .map_err(|e| Status::unavailable(format!("rotating the WAL: {e}")))?;
        tracing::info!(
            segment = closed.id.get(),
            bytes = closed.bytes,
            "WAL rotated on request"
        );
        Ok(Response::new(v1::RotateWalResponse {
            closed_segment: closed.id.get(),
            partitions_marked: partitions,
        }))
    }

    async fn persist(
        &self,
        request: Request<v1::PersistRequest>,
    ) -> Result<Response<v1::PersistResponse>, Status> {
        let r = request.into_inner();
        if r.namespace.is_empty() && !r.table.is_empty() {
            return Err(Status::invalid_argument("a table needs its namespace"));
        }
        let (partitions, rows) = self.control.persist(&r.namespace, &r.table, r.wait).await;
        Ok(Response::new(v1::PersistResponse {
            partitions_enqueued: partitions,
            rows_enqueued: rows,
        }))
    }

    async fn status(
        &self,
        _: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let s = self.control.status();
        Ok(Response::new(v1::StatusResponse {
            ingester_id: self.control.ingester_id.to_string(),
            state: proto_state(s.phase) as i32,
            buffered_rows: s.buffer.buffered_rows + s.buffer.persisting_rows,
            buffered_bytes: s.buffer.buffered_bytes,
            wal_segments: s.wal.segments as u64,
            wal_bytes: s.wal.bytes,
            persist_queue_depth: s.persist_queue_depth as u64,
            persist_active_jobs: s.persist_active_jobs as u64,
            oldest_unpersisted_write_age_ms: s
                .buffer
                .oldest_write
                .map(|t| t.elapsed().as_millis() as u64)
                .unwrap_or(0),
            partitions: s.buffer.partitions,
            version: env!("CARGO_PKG_VERSION").to_string(),
            wal_empty: s.wal_empty(),
        }))
    }

    async fn prepare_shutdown(
        &self,
        request: Request<v1::PrepareShutdownRequest>,
    ) -> Result<Response<v1::PrepareShutdownResponse>, Status> {
        let wait = request.into_inner().wait;
        let phase = self.control.prepare_shutdown(wait).await;
        let s = self.control.status();
        Ok(Response::new(v1::PrepareShutdownResponse {
            state: proto_state(phase) as i32,
            buffered_rows: s.buffer.buffered_rows + s.buffer.persisting_rows,
            wal_segments: s.wal.segments as u64,
        }))
    }

    async fn resume_ingest(
        &self,
        _: Request<v1::ResumeIngestRequest>,
    ) -> Result<Response<v1::ResumeIngestResponse>, Status> {
        let phase = self.control.resume();
        Ok(Response::new(v1::ResumeIngestResponse {
            state: proto_state(phase) as i32,
        }))
    }
}
