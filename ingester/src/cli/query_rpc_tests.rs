//! `run_query` against an in-process Flight mock that answers as the ingester does.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, RecordBatch, TimestampNanosecondArray,
};
use arrow::datatypes::Int32Type;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult,
};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::*;

fn cpu(hosts: &[&str], times: &[i64]) -> RecordBatch {
    let host: DictionaryArray<Int32Type> = hosts.iter().copied().collect();
    let usage: Float64Array = times.iter().map(|&t| Some(t as f64)).collect();
    let time = TimestampNanosecondArray::from(times.to_vec()).with_timezone("UTC");
    RecordBatch::try_from_iter([
        ("host", Arc::new(host) as ArrayRef),
        ("usage", Arc::new(usage) as ArrayRef),
        ("time", Arc::new(time) as ArrayRef),
    ])
    .expect("valid batch")
}

/// Answers DoGet as the ingester does: per partition a schema message
/// with `PartitionMetadata`, then its batches. Records the tickets.
#[derive(Default)]
struct MockFlight {
    tickets: Mutex<Vec<v1::QueryRequest>>,
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for MockFlight {
    type HandshakeStream = Boxed<HandshakeResponse>;
    type ListFlightsStream = Boxed<FlightInfo>;
    type DoGetStream = Boxed<FlightData>;
    type DoPutStream = Boxed<PutResult>;
    type DoActionStream = Boxed<arrow_flight::Result>;
    type ListActionsStream = Boxed<ActionType>;
    type DoExchangeStream = Boxed<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let req = v1::QueryRequest::decode(request.into_inner().ticket)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.table != "cpu" {
            return Err(Status::not_found(format!(
                "table `{}` not found",
                req.table
            )));
        }
        self.tickets.lock().expect("lock").push(req);
        let partitions = [
            (1, vec![cpu(&["a", "b"], &[1, 2]), cpu(&["a"], &[3])]),
            (2, vec![cpu(&["c"], &[4])]),
        ];
        let schema = cpu(&[], &[]).schema();
        let stream = futures::stream::iter(partitions).flat_map(move |(id, batches)| {
            let meta = v1::PartitionMetadata {
                partition_id: id,
                partition_key: format!("day{id}"),
                ingester_id: "ing-0".into(),
                persisted_batches: 0,
                rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
                persisted: false,
            };
            FlightDataEncoderBuilder::new()
                .with_schema(Arc::clone(&schema))
                .with_metadata(meta.encode_to_vec().into())
                .with_dictionary_handling(DictionaryHandling::Resend)
                .build(futures::stream::iter(batches.into_iter().map(Ok)))
        });
        Ok(Response::new(
            stream.map_err(|e| Status::internal(e.to_string())).boxed(),
        ))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("mock"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("mock"))
    }
}

async fn serve(mock: Arc<MockFlight>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FlightServiceServer::from_arc(mock))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn args(addr: String, output: PathBuf) -> QueryArgs {
    QueryArgs {
        connect: ConnectArgs {
            addr,
            connect_timeout: Duration::from_secs(5),
            auth: Default::default(),
        },
        namespace: "ns".into(),
        table: "cpu".into(),
        columns: vec!["host".into(), "time".into()],
        start: Some(1),
        end: None,
        format: QueryFormat::Csv,
        output: Some(output),
        no_persisted: false,
        show_partitions: true,
        limit: None,
    }
}

#[tokio::test]
async fn streams_every_partition_to_the_output() {
    let mock = Arc::new(MockFlight::default());
    let addr = serve(Arc::clone(&mock)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.csv");

    run_query(args(addr.clone(), path.clone()))
        .await
        .expect("query");
    assert_eq!(
        std::fs::read_to_string(&path).expect("output"),
        "host,usage,time\n\
         a,1.0,1970-01-01T00:00:00.000000001Z\n\
         b,2.0,1970-01-01T00:00:00.000000002Z\n\
         a,3.0,1970-01-01T00:00:00.000000003Z\n\
         c,4.0,1970-01-01T00:00:00.000000004Z\n"
    );
    let ticket = mock.tickets.lock().expect("lock")[0].clone();
    assert_eq!(
        ticket,
        v1::QueryRequest {
            namespace: "ns".into(),
            table: "cpu".into(),
            columns: vec!["host".into(), "time".into()],
            range: Some(v1::TimeRange {
                start: 1,
                end: i64::MAX
            }),
            include_persisted: true,
        }
    );

    // --limit stops mid-partition.
    let mut a = args(addr.clone(), path.clone());
    a.limit = Some(3);
    a.format = QueryFormat::Jsonl;
    run_query(a).await.expect("query");
    assert_eq!(
        std::fs::read_to_string(&path)
            .expect("output")
            .lines()
            .count(),
        3
    );

    // A refusal names the RPC, the code and the server's message.
    let mut a = args(addr, dir.path().join("none.csv"));
    a.table = "mem".into();
    let err = run_query(a).await.expect_err("no such table");
    assert_eq!(
        err.to_string(),
        "query failed: NOT_FOUND: table `mem` not found"
    );
    assert!(!dir.path().join("none.csv").exists());
    assert!(!dir.path().join("none.csv.partial").exists());
}
