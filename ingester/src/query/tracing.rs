//! Logs and counts queries around any `QueryExec`.

use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use super::{QueryError, QueryExec, QueryPlan, QueryResponse};

#[derive(Debug)]
pub(crate) struct QueryExecTracing<T> {
    inner: T,
    duration: Histogram,
    results: IntCounterVec,
}

impl<T> QueryExecTracing<T> {
    pub(crate) fn new(inner: T, registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_query_plan_duration_seconds",
                "Time to resolve a query and snapshot its partitions (streaming not included)",
            )
            .buckets(prometheus::exponential_buckets(0.00001, 2.5, 14)?),
        )?;
        let results = IntCounterVec::new(
            Opts::new("sluice_queries_total", "Queries, by result"),
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

impl<T: QueryExec> QueryExec for QueryExecTracing<T> {
    async fn query(&self, plan: QueryPlan) -> Result<QueryResponse, QueryError> {
        let start = Instant::now();
        let span = tracing::debug_span!("query", namespace = %plan.namespace, table = %plan.table);
        let _enter = span.enter();
        let (ns, table) = (plan.namespace.clone(), plan.table.clone());
        drop(_enter);
        let res = self.inner.query(plan).await;
        let elapsed = start.elapsed();
        self.duration.observe(elapsed.as_secs_f64());
        match &res {
            Ok(r) => {
                self.results.with_label_values(&["ok"]).inc();
                tracing::debug!(namespace = %ns, table = %table, partitions = r.partitions.len(), ?elapsed, "query planned");
            }
            Err(e) => {
                self.results.with_label_values(&["error"]).inc();
                tracing::debug!(namespace = %ns, table = %table, error = %e, "query refused");
            }
        }
        res
    }
}
