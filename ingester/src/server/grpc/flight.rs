//! Arrow Flight: `DoGet` with a protobuf `QueryRequest` ticket.
//!
//! Each partition is sent as its own encoder run: a schema message whose
//! `app_metadata` is the partition's `PartitionMetadata`, then its record
//! batches (dictionaries resent, so tags stay `Dictionary(Int32, Utf8)`).
//! Partitions are encoded one after another as the client reads.
//!
//! The encoding (IPC: copying every buffer of the scanned batches) runs on
//! the query runtime, a [`DedicatedRuntime`](crate::dedicated) whose threads
//! have a lower CPU priority than the ones that acknowledge writes: a burst
//! of large scans takes the cores writes leave idle, not the writes' turn.
//! A two-message channel hands the encoded messages to the RPC's stream,
//! so a slow reader holds up its own scan only, and a reader that goes away
//! ends it (the next send fails).

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use sluice_proto::v1;
use tonic::{Request, Response, Status, Streaming};

use crate::query::{QueryError, QueryExec, QueryPlan};

#[derive(Debug)]
pub(crate) struct FlightQueryService<Q> {
    exec: Arc<Q>,
    ingester_id: Arc<str>,
    /// Where scans are encoded (the query runtime).
    encode_on: tokio::runtime::Handle,
}

impl<Q> FlightQueryService<Q> {
    pub(crate) fn new(
        exec: Arc<Q>,
        ingester_id: Arc<str>,
        encode_on: tokio::runtime::Handle,
    ) -> Self {
        Self {
            exec,
            ingester_id,
            encode_on,
        }
    }
}

/// Polls `stream` on `rt`, handing its items over a two-slot channel.
fn drive_on<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    mut stream: BoxStream<'static, Result<T, Status>>,
) -> FlightStream<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    rt.spawn(async move {
        while let Some(item) = stream.next().await {
            if tx.send(item).await.is_err() {
                // The reader went away: stop scanning.
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

fn query_status(e: &QueryError) -> Status {
    let msg = e.to_string();
    match e {
        QueryError::NamespaceNotFound(_) | QueryError::TableNotFound { .. } => {
            Status::not_found(msg)
        }
        QueryError::ColumnNotFound { .. } | QueryError::InvalidRange { .. } => {
            Status::invalid_argument(msg)
        }
        QueryError::Catalog(c) => super::catalog_status(c, msg),
        QueryError::Internal(_) => Status::internal(msg),
    }
}

/// A failure while streaming: `UNAVAILABLE` when the object store failed
/// (an `include_persisted` read; retrying later can succeed), else
/// `INTERNAL`.
fn stream_status(e: &FlightError) -> Status {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<object_store::Error>().is_some() {
            return Status::unavailable(format!("object store: {e}"));
        }
        cause = c.source();
    }
    Status::internal(e.to_string())
}

/// Decodes a ticket into a plan.
pub(crate) fn decode_ticket(ticket: &[u8]) -> Result<QueryPlan, Status> {
    let req = v1::QueryRequest::decode(ticket).map_err(|e| {
        Status::invalid_argument(format!(
            "ticket is not a sluice.ingester.v1.QueryRequest: {e}"
        ))
    })?;
    if req.namespace.is_empty() || req.table.is_empty() {
        return Err(Status::invalid_argument(
            "ticket needs a namespace and a table",
        ));
    }
    Ok(QueryPlan {
        namespace: req.namespace,
        table: req.table,
        columns: req.columns,
        range: req.range.map(|r| (r.start, r.end)),
        include_persisted: req.include_persisted,
    })
}

type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<Q: QueryExec + 'static> FlightService for FlightQueryService<Q> {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let plan = decode_ticket(&request.into_inner().ticket)?;
        let response = self.exec.query(plan).await.map_err(|e| query_status(&e))?;
        let schema = response.schema;
        let ingester_id = Arc::clone(&self.ingester_id);
        let stream: BoxStream<'static, Result<FlightData, FlightError>> =
            if response.partitions.is_empty() {
                FlightDataEncoderBuilder::new()
                    .with_schema(Arc::clone(&schema))
                    .build(futures::stream::empty())
                    .boxed()
            } else {
                futures::stream::iter(response.partitions)
                    .flat_map(move |p| {
                        let meta = v1::PartitionMetadata {
                            partition_id: p.id.get(),
                            partition_key: p.key.to_string(),
                            ingester_id: ingester_id.to_string(),
                            persisted_batches: p.persisted_batches,
                            rows: p.rows as u64,
                            persisted: p.persisted,
                        };
                        FlightDataEncoderBuilder::new()
                            .with_schema(Arc::clone(&schema))
                            .with_metadata(meta.encode_to_vec().into())
                            .with_dictionary_handling(DictionaryHandling::Resend)
                            .build(p.batches.map_err(FlightError::from))
                    })
                    .boxed()
            };
        Ok(Response::new(drive_on(
            &self.encode_on,
            stream.map_err(|e| stream_status(&e)).boxed(),
        )))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "handshake is not needed: DoGet with a QueryRequest ticket",
        ))
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("use CatalogService to list tables"))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("DoGet with a QueryRequest ticket"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("DoGet with a QueryRequest ticket"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("use CatalogService.GetTableSchema"))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("write with WriteService.Write"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("no exchange"))
    }
}

#[cfg(test)]
mod stream_status_tests {
    use super::*;
    use arrow::error::ArrowError;

    #[test]
    fn object_store_failures_are_unavailable_others_internal() {
        let store = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        let e = FlightError::Arrow(ArrowError::ExternalError(Box::new(store)));
        let s = stream_status(&e);
        assert_eq!(s.code(), tonic::Code::Unavailable, "{s}");
        assert!(s.message().contains("connection refused"), "{s}");
        let e = FlightError::Arrow(ArrowError::ComputeError("bad".into()));
        assert_eq!(stream_status(&e).code(), tonic::Code::Internal);
    }
}

#[cfg(test)]
mod drive_on_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::dedicated::DedicatedRuntime;

    /// Items arrive in order, produced on the other runtime's threads; a
    /// reader that goes away stops the producer after at most the
    /// channel's two slots and one item in hand.
    #[tokio::test]
    async fn items_come_from_the_other_runtime_and_a_dropped_reader_stops_it() {
        let rt =
            DedicatedRuntime::start("test-query", 1, 0, Duration::from_secs(1)).expect("runtime");
        let produced = Arc::new(AtomicUsize::new(0));
        let p = Arc::clone(&produced);
        let source = futures::stream::iter(0..1_000_000usize)
            .map(move |i| {
                p.fetch_add(1, Ordering::SeqCst);
                Ok((i, std::thread::current().name().map(str::to_owned)))
            })
            .boxed();
        let mut out = drive_on(rt.handle(), source);
        for want in 0..10 {
            let (i, thread) = out.next().await.expect("item").expect("ok");
            assert_eq!(i, want);
            assert_eq!(thread.as_deref(), Some("test-query"));
        }
        drop(out);
        // The producer notices at its next send and stops.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = produced.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = produced.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
            assert!(
                std::time::Instant::now() < deadline,
                "the producer kept going"
            );
        }
        assert!(last <= 10 + 3, "produced {last} items for a reader of 10");
    }
}
