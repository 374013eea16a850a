//! The chain of sinks a validated, sequenced write passes through.
//!
//! `init` stacks them: `DmlSinkInstrumentation<WalSink<BufferTree>>` for live
//! writes, and the same chain minus the `WalSink` for replay, so a replayed
//! write takes exactly the path a live one took after it became durable.

mod instrumentation;
#[cfg(test)]
pub(crate) mod mock;
mod r#trait;

pub(crate) use instrumentation::DmlSinkInstrumentation;
pub(crate) use r#trait::{DmlError, DmlSink};
