//! gRPC services.

pub(crate) mod catalog;
pub(crate) mod control;
pub(crate) mod flight;
pub(crate) mod limits;
pub(crate) mod size_limit;
pub(crate) mod write;

use tonic::Status;

use crate::catalog::CatalogError;
use crate::ingest_state::IngestStateError;
use crate::write::WriteError;

/// The gRPC status of a refused write. Exhaustive on purpose.
pub(crate) fn write_error_status(e: &WriteError) -> Status {
    let msg = e.to_string();
    match e {
        WriteError::Empty
        | WriteError::InvalidNamespace { .. }
        | WriteError::Parse(_)
        | WriteError::InvalidName { .. }
        | WriteError::ColumnTypeConflict { .. }
        | WriteError::DuplicateColumn { .. }
        | WriteError::TimestampOutOfRange { .. }
        | WriteError::InvalidArrow { .. } => Status::invalid_argument(msg),
        WriteError::TooLarge { .. } | WriteError::BufferFull { .. } => {
            Status::resource_exhausted(msg)
        }
        WriteError::State(s) => match s {
            IngestStateError::Starting
            | IngestStateError::Draining
            | IngestStateError::ShuttingDown => Status::unavailable(msg),
            IngestStateError::PersistSaturated | IngestStateError::DiskFull => {
                Status::resource_exhausted(msg)
            }
        },
        WriteError::Catalog(c) => catalog_status(c, msg),
        WriteError::Dml(_) => Status::unavailable(msg),
        WriteError::Internal(_) => Status::internal(msg),
    }
}

pub(crate) fn catalog_status(e: &CatalogError, msg: String) -> Status {
    if e.is_retryable() {
        Status::unavailable(msg)
    } else {
        Status::internal(msg)
    }
}
