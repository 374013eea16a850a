use parking_lot::Mutex;

use super::{DmlError, DmlSink};
use crate::write::DmlOperation;

/// Records every operation it is given; always succeeds.
#[derive(Debug, Default)]
pub(crate) struct MockDmlSink {
    pub(crate) calls: Mutex<Vec<DmlOperation>>,
}

impl DmlSink for MockDmlSink {
    async fn apply(&self, op: DmlOperation) -> Result<(), DmlError> {
        self.calls.lock().push(op);
        Ok(())
    }
}
