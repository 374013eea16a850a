//! `WalSink`: makes a write durable before anything else sees it.
//!
//! The operation is appended to the WAL (group-committed, fdatasync) and
//! only then passed to the inner sink (the buffer). Applying after the sync
//! rather than concurrently with it means a write that fails in the WAL
//! (disk full, I/O error) was never visible to a query or a persist: a
//! refused write changes nothing. The cost is the buffer apply (a few
//! microseconds) added after the fsync.

use std::fmt::Debug;

use super::{Wal, WalOp};
use crate::dml_sink::{DmlError, DmlSink};
use crate::write::DmlOperation;

#[derive(Debug)]
pub(crate) struct WalSink<T> {
    inner: T,
    wal: Wal,
}

impl<T> WalSink<T> {
    pub(crate) fn new(inner: T, wal: Wal) -> Self {
        Self { inner, wal }
    }
}

impl<T: DmlSink> DmlSink for WalSink<T> {
    async fn apply(&self, op: DmlOperation) -> Result<(), DmlError> {
        self.wal
            .append(&WalOp {
                sequence_number: op.sequence_number,
                payload: op.wal_payload.clone(),
            })
            .await?;
        self.inner.apply(op).await
    }
}
