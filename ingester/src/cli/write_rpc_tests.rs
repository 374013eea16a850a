//! `run_write` against in-process WriteService mocks.

use std::collections::HashSet;
use std::sync::Mutex;

use sluice_proto::v1::write_service_server::{WriteService, WriteServiceServer};
use tonic::{Request, Response, Status};

use super::*;

/// A WriteService that refuses a body holding a `bad` line (naming its
/// line within the body), answers UNAVAILABLE the first time it sees a
/// body holding `busy`, and records what it accepted.
#[derive(Default)]
struct MockWrite {
    accepted: Mutex<Vec<String>>,
    seen_busy: Mutex<HashSet<String>>,
}

#[tonic::async_trait]
impl WriteService for MockWrite {
    async fn write(
        &self,
        request: Request<v1::WriteRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let r = request.into_inner();
        assert_eq!(r.namespace, "ns");
        assert_eq!(r.precision, v1::Precision::Milliseconds as i32);
        let Some(write_request::Payload::LineProtocol(body)) = r.payload else {
            return Err(Status::invalid_argument("no payload"));
        };
        let body = String::from_utf8(body.to_vec()).expect("test input is utf8");
        if let Some(i) = body.split('\n').position(|l| l.starts_with("bad")) {
            return Err(Status::invalid_argument(format!(
                "line {}, column 1: bad line",
                i + 1
            )));
        }
        if body.contains("busy") && self.seen_busy.lock().expect("lock").insert(body.clone()) {
            return Err(Status::unavailable("the ingester is starting"));
        }
        let rows = body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        self.accepted.lock().expect("lock").push(body);
        Ok(Response::new(v1::WriteResponse {
            sequence_number: 1,
            rows: rows as u64,
            tables: 1,
        }))
    }
}

async fn serve(mock: Arc<MockWrite>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WriteServiceServer::from_arc(mock))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn args(addr: String, files: Vec<PathBuf>) -> WriteArgs {
    WriteArgs {
        connect: ConnectArgs {
            addr,
            connect_timeout: Duration::from_secs(5),
            auth: Default::default(),
        },
        namespace: "ns".into(),
        precision: PrecisionArg::Ms,
        batch_lines: 2,
        batch_bytes: 1 << 20,
        concurrency: 3,
        max_retries: 3,
        timeout: Duration::from_secs(10),
        stop_on_error: false,
        progress: ProgressMode::None,
        files,
    }
}

#[tokio::test]
async fn writes_every_batch_retries_transient_refusals_and_reports_bad_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("in.lp");
    // Batches of 2 lines: [1,2] [3 busy,4] [5,bad 6] [7].
    std::fs::write(
        &file,
        "m f=1 1\nm f=2 2\nm,busy=y f=3 3\nm f=4 4\nm f=5 5\nbad 6\nm f=7 7\n",
    )
    .expect("write input");
    let mock = Arc::new(MockWrite::default());
    let addr = serve(Arc::clone(&mock)).await;

    let err = run_write(args(addr, vec![file]))
        .await
        .expect_err("one batch is bad");
    assert_eq!(
        err.to_string(),
        "1 of 4 batches were refused (2 lines not written)"
    );

    let mut accepted = mock.accepted.lock().expect("lock").clone();
    accepted.sort();
    assert_eq!(
        accepted,
        [
            "m f=1 1\nm f=2 2\n",
            "m f=7 7\n",
            "m,busy=y f=3 3\nm f=4 4\n"
        ],
        "the busy batch is retried once, the bad one never applied"
    );
}

#[tokio::test]
async fn stop_on_error_sends_no_more_batches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("in.lp");
    let mut input = String::from("bad 1\n");
    for i in 0..1000 {
        input.push_str(&format!("m f={i} {i}\n"));
    }
    std::fs::write(&file, input).expect("write input");
    let mock = Arc::new(MockWrite::default());
    let addr = serve(Arc::clone(&mock)).await;

    let mut a = args(addr, vec![file]);
    a.stop_on_error = true;
    a.concurrency = 1;
    let err = run_write(a).await.expect_err("first batch is bad");
    assert!(
        err.to_string().starts_with("1 of 1 batches were refused"),
        "{err}"
    );
    assert!(mock.accepted.lock().expect("lock").is_empty());
}

/// Accepts everything, counting lines: measures the client alone.
struct CountingWrite(std::sync::atomic::AtomicU64);

#[tonic::async_trait]
impl WriteService for CountingWrite {
    async fn write(
        &self,
        request: Request<v1::WriteRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let Some(write_request::Payload::LineProtocol(body)) = request.into_inner().payload else {
            return Err(Status::invalid_argument("no payload"));
        };
        let rows = memchr::memchr_iter(b'\n', &body).count() as u64;
        self.0.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(v1::WriteResponse {
            sequence_number: 1,
            rows,
            tables: 1,
        }))
    }
}

/// `cargo test --release throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn throughput() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("big.lp");
    let lines = 2_000_000u64;
    let mut input = String::with_capacity(lines as usize * 100);
    for i in 0..lines {
        input.push_str(&format!(
            "cpu,host=server{:02},region=us-west usage_idle={}.5,usage_user=1.5,state=\"ok\" {}\n",
            i % 50,
            i % 100,
            1_700_000_000_000_000_000 + i
        ));
    }
    std::fs::write(&file, &input).expect("write input");
    let mock = Arc::new(CountingWrite(Default::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WriteServiceServer::from_arc(Arc::clone(&mock)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut a = args(format!("http://{addr}"), vec![file]);
    a.precision = PrecisionArg::Ns;
    a.batch_lines = 5000;
    a.concurrency = 4;
    let started = Instant::now();
    run_write(a).await.expect("write");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(mock.0.load(std::sync::atomic::Ordering::Relaxed), lines);
    eprintln!(
        "{lines} lines, {} MB in {secs:.2} s: {:.0} lines/s, {:.0} MB/s",
        input.len() / 1_000_000,
        lines as f64 / secs,
        input.len() as f64 / 1e6 / secs
    );
}
