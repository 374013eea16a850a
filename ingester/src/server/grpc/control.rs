//! `ControlService`: how the operator (and `sluice-ingester status|rotate|…`)
//! drives a pod.

use std::sync::Arc;

use sluice_proto::v1;
use tonic::{Request, Response, Status};

use crate::buffer_tree::BufferTree;
use crate::ingest_state::{Phase, PhaseCell};
use crate::wal::Wal;

#[derive(Debug)]
pub(crate) struct ControlService {
    pub(crate) ingester_id: Arc<str>,
    pub(crate) buffer: Arc<BufferTree>,
    pub(crate) wal: Wal,
    pub(crate) phase: Arc<PhaseCell>,
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

impl ControlService {
    pub(crate) fn status(&self) -> v1::StatusResponse {
        let b = self.buffer.stats();
        let w = self.wal.segments();
        v1::StatusResponse {
            ingester_id: self.ingester_id.to_string(),
            state: proto_state(self.phase.get()) as i32,
            buffered_rows: b.buffered_rows + b.persisting_rows,
            buffered_bytes: b.buffered_bytes,
            wal_segments: w.segments as u64,
            wal_bytes: w.bytes,
            persist_queue_depth: 0,
            persist_active_jobs: 0,
            oldest_unpersisted_write_age_ms: b
                .oldest_write
                .map(|t| t.elapsed().as_millis() as u64)
                .unwrap_or(0),
            partitions: b.partitions,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

#[tonic::async_trait]
impl v1::control_service_server::ControlService for ControlService {
    async fn rotate_wal(
        &self,
        _: Request<v1::RotateWalRequest>,
    ) -> Result<Response<v1::RotateWalResponse>, Status> {
        let closed = self
            .wal
            .rotate()
            .await
            .map_err(|e| Status::internal(format!("rotating the WAL: {e}")))?;
        tracing::info!(
            segment = closed.id.get(),
            bytes = closed.bytes,
            "WAL rotated on request"
        );
        Ok(Response::new(v1::RotateWalResponse {
            closed_segment: closed.id.get(),
            partitions_marked: 0,
        }))
    }

    async fn persist(
        &self,
        _: Request<v1::PersistRequest>,
    ) -> Result<Response<v1::PersistResponse>, Status> {
        Err(Status::unimplemented(
            "persistence is not built yet (issue: persistence)",
        ))
    }

    async fn status(
        &self,
        _: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        Ok(Response::new(ControlService::status(self)))
    }

    async fn prepare_shutdown(
        &self,
        _: Request<v1::PrepareShutdownRequest>,
    ) -> Result<Response<v1::PrepareShutdownResponse>, Status> {
        Err(Status::unimplemented(
            "draining needs persistence, not built yet",
        ))
    }

    async fn resume_ingest(
        &self,
        _: Request<v1::ResumeIngestRequest>,
    ) -> Result<Response<v1::ResumeIngestResponse>, Status> {
        Err(Status::unimplemented(
            "draining needs persistence, not built yet",
        ))
    }
}
