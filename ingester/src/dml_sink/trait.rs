use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use crate::write::DmlOperation;

/// Why a sink refused or failed an operation.
///
/// Every variant means the write was **not** acknowledged. A WAL failure may
/// still leave the operation in the log (it is then replayed on restart, the
/// normal "unacknowledged writes may or may not be present" case).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DmlError {
    #[error("write-ahead log: {0}")]
    Wal(#[from] crate::wal::WalError),
}

/// One step of the write path. Implementations either do the work or wrap
/// another sink (decorators: WAL, metrics).
pub(crate) trait DmlSink: Debug + Send + Sync {
    /// Apply `op`. Resolves once the step (and every step it wraps) is done.
    fn apply(&self, op: DmlOperation) -> impl Future<Output = Result<(), DmlError>> + Send;
}

impl<T: DmlSink> DmlSink for Arc<T> {
    fn apply(&self, op: DmlOperation) -> impl Future<Output = Result<(), DmlError>> + Send {
        (**self).apply(op)
    }
}
