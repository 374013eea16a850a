use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use super::{DmlError, DmlSink};
use crate::write::DmlOperation;

/// Counts and times every operation passing through the wrapped sink.
#[derive(Debug)]
pub(crate) struct DmlSinkInstrumentation<T> {
    inner: T,
    duration: Histogram,
    results: IntCounterVec,
}

impl<T> DmlSinkInstrumentation<T> {
    pub(crate) fn new(inner: T, registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_dml_apply_duration_seconds",
                "Time to apply a sequenced write through the sink chain (WAL fsync included)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]),
        )?;
        let results = IntCounterVec::new(
            Opts::new(
                "sluice_dml_apply_total",
                "Sequenced writes applied, by result",
            ),
            &["result"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(results.clone()))?;
        Ok(Self {
            inner,
            duration,
            results,
        })
    }
}

impl<T: DmlSink> DmlSink for DmlSinkInstrumentation<T> {
    async fn apply(&self, op: DmlOperation) -> Result<(), DmlError> {
        let start = Instant::now();
        let res = self.inner.apply(op).await;
        self.duration.observe(start.elapsed().as_secs_f64());
        let label = if res.is_ok() { "ok" } else { "error" };
        self.results.with_label_values(&[label]).inc();
        res
    }
}
