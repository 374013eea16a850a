//! Fuzz harnesses on stable Rust: proptest over arbitrary (and mutated
//! valid) bytes for every input an untrusted client or a damaged disk can
//! hand the ingester. Each asserts: no panic, bounded work, and that a
//! refused input changes nothing.
//!
//! * `lp_*`: line protocol through the whole write handler (parse, validate,
//!   schema, sequence); a refused body reaches neither the sink nor the
//!   catalog, and the sequence numbers only move for accepted writes.
//! * `wal_*`: segment decoding (`SegmentReader`) and recovery (`Wal::open`)
//!   over arbitrary files and bit-flipped / truncated valid segments; every
//!   op read back from a damaged file must be one that was written.
//! * `ticket_*`: Flight tickets.
//! * `control_*`: every `ControlService` method with arbitrary bytes as its
//!   body (decoded by the server itself, through a raw-bytes gRPC codec),
//!   and `Persist` with arbitrary names and flags, also while draining,
//!   against a real ingester served in-process (`serve_on`); a refusal
//!   (INVALID_ARGUMENT, or INTERNAL for undecodable bytes) leaves the
//!   state, buffer and catalog as they were.
//!
//! CI runs the default case count (a few hundred per harness, seconds). A
//! long run: `PROPTEST_CASES=200000 cargo nextest run -p sluice-ingester
//! fuzz_tests` (see docs/security.md for the counts reached).

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use sluice_proto::v1;

use crate::catalog::{Catalog, MemCatalog, SchemaCache};
use crate::dml_sink::mock::MockDmlSink;
use crate::ingest_state::{IngestState, IngestStateError};
use crate::timestamp_oracle::TimestampOracle;
use crate::wal::{SegmentReader, Wal, WalConfig, WalOp};
use crate::write::{Payload, Precision, WriteHandler, WriteRequest};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Bytes that look a little like line protocol, often enough to get deep.
fn lp_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"cpu".to_vec()),
        Just(b",".to_vec()),
        Just(b" ".to_vec()),
        Just(b"=".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"host=a".to_vec()),
        Just(b"v=1i".to_vec()),
        Just(b"v=1u".to_vec()),
        Just(b"v=1.5".to_vec()),
        Just(b"v=t".to_vec()),
        Just(b"v=\"s\"".to_vec()),
        Just(b"time".to_vec()),
        Just(b"9223372036854775807".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"#".to_vec()),
        Just(vec![0u8]),
        Just(vec![0xff, 0xfe]),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(token, 0..64).prop_map(|v| v.concat()),
    ]
}

struct WriteCtx {
    handler: WriteHandler<Arc<MockDmlSink>>,
    sink: Arc<MockDmlSink>,
    catalog: Arc<dyn Catalog>,
}

fn write_ctx() -> WriteCtx {
    let catalog: Arc<dyn Catalog> = Arc::new(MemCatalog::new());
    let state = Arc::new(IngestState::new(1 << 30));
    state.unset(IngestStateError::Starting);
    let sink = Arc::new(MockDmlSink::default());
    let handler = WriteHandler::new(
        Arc::new(SchemaCache::new(Arc::clone(&catalog))),
        Arc::new(TimestampOracle::new(0)),
        state,
        Arc::clone(&sink),
        64 * 1024,
        None,
    )
    .expect("handler");
    WriteCtx {
        handler,
        sink,
        catalog,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bodies and namespaces through the write handler.
    #[test]
    fn lp_write_handler_never_panics_and_refusals_change_nothing(
        body in lp_bytes(),
        namespace in prop_oneof![Just("ns".to_owned()), ".{0,12}"],
        precision in prop_oneof![
            Just(Precision::Nanoseconds),
            Just(Precision::Microseconds),
            Just(Precision::Milliseconds),
            Just(Precision::Seconds),
        ],
    ) {
        let c = write_ctx();
        let rt = rt();
        let before = rt.block_on(c.catalog.list_namespaces()).map(|n| n.len()).unwrap_or(0);
        let res = rt.block_on(c.handler.write(WriteRequest {
            namespace: namespace.clone(),
            payload: Payload::LineProtocol {
                body: Bytes::from(body),
                precision,
                default_time: 1,
            },
        }));
        let calls = c.sink.calls.lock().len();
        match res {
            Ok(s) => {
                prop_assert_eq!(calls, 1);
                prop_assert!(s.rows > 0);
            }
            Err(_) => {
                // Nothing reaches the WAL or the buffer, and no namespace is
                // created: the body is validated before the namespace is
                // (this harness once found the opposite order).
                prop_assert_eq!(calls, 0, "a refused write reached the sink");
                let after = rt.block_on(c.catalog.list_namespaces()).map(|n| n.len()).unwrap_or(0);
                prop_assert_eq!(after, before, "a refused write created a namespace");
            }
        }
    }

    /// Arbitrary bytes as a Flight ticket: an error or a plan, never a panic.
    #[test]
    fn ticket_decoding_never_panics(ticket in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = crate::server::grpc::flight::decode_ticket(&ticket);
    }

    /// Valid tickets with arbitrary strings decode to exactly what was sent.
    #[test]
    fn ticket_round_trips(ns in ".{1,16}", table in ".{1,16}", cols in prop::collection::vec(".{0,8}", 0..4), start in any::<i64>(), end in any::<i64>()) {
        let req = sluice_proto::v1::QueryRequest {
            namespace: ns.clone(),
            table: table.clone(),
            columns: cols.clone(),
            range: Some(sluice_proto::v1::TimeRange { start, end }),
            include_persisted: true,
        };
        let plan = crate::server::grpc::flight::decode_ticket(&req.encode_to_vec())
            .expect("valid ticket");
        prop_assert_eq!(plan.namespace, ns);
        prop_assert_eq!(plan.table, table);
        prop_assert_eq!(plan.columns, cols);
        prop_assert_eq!(plan.range, Some((start, end)));
    }
}

/// A valid segment with `ops`, written by the real WAL; returns its bytes.
fn valid_segment(ops: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let registry = prometheus::Registry::new();
    let (wal, _) = Wal::open(WalConfig::new(dir.path()), &registry).expect("open");
    rt.block_on(async {
        for (seq, payload) in ops {
            wal.append(&WalOp {
                sequence_number: *seq,
                payload: Bytes::from(payload.clone()),
            })
            .await
            .expect("append");
        }
        wal.shutdown().await.expect("shutdown");
    });
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    std::fs::read(files.last().expect("a segment")).expect("read segment")
}

/// Reads every op of a segment file; stops at the first error.
fn read_all(path: &std::path::Path) -> Vec<(u64, Bytes)> {
    let Ok(reader) = SegmentReader::open(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in reader.take(10_000) {
        match r {
            Ok(op) => out.push(op),
            Err(_) => break,
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Damage::Flip(i, b)),
        any::<usize>().prop_map(Damage::Truncate),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes as a segment file: reading and recovery never panic.
    #[test]
    fn wal_arbitrary_segment_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.wal");
        std::fs::write(&path, &bytes).expect("write");
        let _ = read_all(&path);
        let registry = prometheus::Registry::new();
        if let Ok((wal, segs)) = Wal::open(WalConfig::new(dir.path()), &registry) {
            for s in &segs {
                let _ = read_all(&s.path);
            }
            rt().block_on(wal.shutdown()).expect("shutdown");
        }
    }

    /// A damaged valid segment: whatever is read back was written, in order,
    /// and recovery either repairs the tail or reports corruption.
    #[test]
    fn wal_damaged_segments_yield_only_written_ops(
        ops in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)), 1..6),
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        let mut bytes = valid_segment(&ops);
        for d in damages {
            match d {
                // A truncation before the flip may have emptied the file.
                Damage::Flip(i, b) => {
                    let n = bytes.len();
                    if n > 0 {
                        bytes[i % n] ^= b;
                    }
                }
                Damage::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
                Damage::Append(extra) => bytes.extend_from_slice(&extra),
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.wal");
        std::fs::write(&path, &bytes).expect("write");
        let got = read_all(&path);
        prop_assert!(got.len() <= ops.len());
        for (g, (seq, payload)) in got.iter().zip(&ops) {
            prop_assert_eq!(g.0, *seq);
            prop_assert_eq!(&g.1[..], &payload[..]);
        }
        let registry = prometheus::Registry::new();
        if let Ok((wal, segs)) = Wal::open(WalConfig::new(dir.path()), &registry) {
            for s in &segs {
                let again = read_all(&s.path);
                for (g, (seq, payload)) in again.iter().zip(&ops) {
                    prop_assert_eq!(g.0, *seq);
                    prop_assert_eq!(&g.1[..], &payload[..]);
                }
            }
            rt().block_on(wal.shutdown()).expect("shutdown");
        }
    }
}

// ------------------------------------------------------------- control

/// A real ingester served in-process (`serve_on`, SQLite catalog and local
/// objects in a temporary directory), shared by every case of the control
/// harnesses: building one per case would spend the run on start-up.
struct ControlFixture {
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
    /// Held for a whole case: the fixture is one server per process, and
    /// `cargo test` (unlike nextest) runs both harnesses in one process at
    /// once, where one case's `PrepareShutdown` would show up as a change
    /// in the other's before/after comparison.
    exclusive: std::sync::Mutex<()>,
    _dir: tempfile::TempDir,
}

impl ControlFixture {
    /// The fixture for one case, to itself until the guard drops.
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A failed case poisons the lock; the next case still runs alone.
        self.exclusive.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The namespace and table the fixture writes to before every case, so
/// there is always buffered data a control call could touch.
const FUZZ_NS: &str = "fuzz";
const FUZZ_TABLE: &str = "t";

fn control_fixture() -> &'static ControlFixture {
    static F: std::sync::OnceLock<ControlFixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            config: crate::Config,
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().display().to_string();
        let args = Args::try_parse_from(["serve", "--data-dir", &data, "--ingester-id", "fuzz"])
            .expect("config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let channel = rt.block_on(async {
            let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let http = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", grpc.local_addr().expect("addr"));
            tokio::spawn(crate::serve_on(
                args.config,
                grpc,
                http,
                std::future::pending(),
            ));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                if let Ok(ch) = tonic::transport::Endpoint::from_shared(url.clone())
                    .expect("url")
                    .connect()
                    .await
                {
                    let mut c = v1::control_service_client::ControlServiceClient::new(ch.clone());
                    if let Ok(s) = c.status(v1::StatusRequest {}).await
                        && s.get_ref().state == v1::IngesterState::Ready as i32
                    {
                        break ch;
                    }
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "in-process ingester not ready"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        ControlFixture {
            rt,
            channel,
            exclusive: std::sync::Mutex::new(()),
            _dir: dir,
        }
    })
}

/// What a control call may change, and what a refused one must not.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    state: i32,
    buffered_rows: u64,
    partitions: u64,
    namespaces: Vec<String>,
}

impl ControlFixture {
    fn control(
        &self,
    ) -> v1::control_service_client::ControlServiceClient<tonic::transport::Channel> {
        v1::control_service_client::ControlServiceClient::new(self.channel.clone())
    }

    /// Back to a known state: a complete drain (which also ends a drain an
    /// earlier case started, so no drain loop runs in the background),
    /// accepting writes again, one buffered row in `fuzz.t`, and no persist
    /// job running: nothing changes on its own while a case runs.
    async fn settle(&self, n: u64) {
        let mut c = self.control();
        c.prepare_shutdown(v1::PrepareShutdownRequest { wait: true })
            .await
            .expect("PrepareShutdown(wait)");
        c.resume_ingest(v1::ResumeIngestRequest {})
            .await
            .expect("ResumeIngest");
        let mut w = v1::write_service_client::WriteServiceClient::new(self.channel.clone());
        w.write(v1::WriteRequest {
            namespace: FUZZ_NS.into(),
            payload: Some(v1::write_request::Payload::LineProtocol(Bytes::from(
                format!(
                    "{FUZZ_TABLE},host=h{} v={n}i {}\n",
                    n % 3,
                    1_767_225_600_000_000_000i64 + n as i64
                ),
            ))),
            precision: 0,
        })
        .await
        .expect("write");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let s = c
                .status(v1::StatusRequest {})
                .await
                .expect("Status")
                .into_inner();
            if s.persist_active_jobs == 0 && s.persist_queue_depth == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "persist never idle: {s:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    async fn observe(&self) -> Observed {
        let s = self
            .control()
            .status(v1::StatusRequest {})
            .await
            .expect("Status")
            .into_inner();
        let mut cat = v1::catalog_service_client::CatalogServiceClient::new(self.channel.clone());
        let mut namespaces: Vec<String> = cat
            .list_namespaces(v1::ListNamespacesRequest {})
            .await
            .expect("ListNamespaces")
            .into_inner()
            .namespaces
            .into_iter()
            .map(|n| n.name)
            .collect();
        namespaces.sort();
        Observed {
            state: s.state,
            buffered_rows: s.buffered_rows,
            partitions: s.partitions,
            namespaces,
        }
    }
}

/// Sends raw bytes as a gRPC message body and returns the raw answer, so
/// the server's own decoding meets the arbitrary bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

const CONTROL_METHODS: [&str; 5] = [
    "/sluice.ingester.v1.ControlService/RotateWal",
    "/sluice.ingester.v1.ControlService/Persist",
    "/sluice.ingester.v1.ControlService/Status",
    "/sluice.ingester.v1.ControlService/PrepareShutdown",
    "/sluice.ingester.v1.ControlService/ResumeIngest",
];

/// Names a client might send: the real ones, empty, odd and long strings.
fn control_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(FUZZ_NS.to_owned()),
        Just(FUZZ_TABLE.to_owned()),
        Just("missing".to_owned()),
        Just("fuzz/t".to_owned()),
        Just("\0".to_owned()),
        ".{0,24}",
        "[a-z_]{200,300}",
    ]
}

proptest! {
    // Each case is several RPCs to a real server: fewer cases by default,
    // and PROPTEST_CASES still sets the count for a long run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes as the body of every control method, through the
    /// server's real decoding: an answer or a clean refusal, never a
    /// crash; a refusal changes nothing; the server keeps answering.
    #[test]
    fn control_arbitrary_bytes_for_every_method(
        method in 0..CONTROL_METHODS.len(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            // Valid field tags with arbitrary payloads get past the framing.
            (1u8..=3, prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(f, v)| {
                let mut b = vec![(f << 3) | 2, v.len() as u8];
                b.extend(v);
                b
            }),
            (1u8..=3, any::<u64>()).prop_map(|(f, x)| {
                let mut b = vec![f << 3];
                prost::encoding::encode_varint(x, &mut b);
                b
            }),
        ],
        n in any::<u32>(),
    ) {
        let f = control_fixture();
        let _alone = f.lock();
        let (before, result, after) = f.rt.block_on(async {
            f.settle(u64::from(n)).await;
            let before = f.observe().await;
            let mut grpc = tonic::client::Grpc::new(f.channel.clone());
            grpc.ready().await.expect("ready");
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(CONTROL_METHODS[method]);
            let result = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                grpc.unary(tonic::Request::new(body.clone()), path, RawCodec),
            )
            .await
            .expect("a control call hung");
            let after = f.observe().await;
            (before, result, after)
        });
        match result {
            Ok(resp) => {
                // A well-formed answer of the method's type.
                let b = resp.into_inner();
                let ok = match method {
                    0 => v1::RotateWalResponse::decode(&b[..]).is_ok(),
                    1 => v1::PersistResponse::decode(&b[..]).is_ok(),
                    2 => v1::StatusResponse::decode(&b[..]).is_ok(),
                    3 => v1::PrepareShutdownResponse::decode(&b[..]).is_ok(),
                    _ => v1::ResumeIngestResponse::decode(&b[..]).is_ok(),
                };
                prop_assert!(ok, "undecodable answer");
                // No control call creates or removes a namespace.
                prop_assert_eq!(&before.namespaces, &after.namespaces);
            }
            Err(s) => {
                prop_assert!(
                    matches!(s.code(), tonic::Code::InvalidArgument)
                        || (s.code() == tonic::Code::Internal && s.message().contains("decode")),
                    "unexpected refusal {s:?}"
                );
                prop_assert_eq!(before, after, "a refused control call changed something");
            }
        }
    }

    /// `Persist` with arbitrary names and flags: an unknown namespace or
    /// table persists nothing; a table without a namespace is refused and
    /// changes nothing; nothing is ever created.
    #[test]
    fn control_persist_arbitrary_names(
        namespace in control_name(),
        table in control_name(),
        wait in any::<bool>(),
        drain in any::<bool>(),
        n in any::<u32>(),
    ) {
        let f = control_fixture();
        let _alone = f.lock();
        let (before, result, after) = f.rt.block_on(async {
            f.settle(u64::from(n)).await;
            let mut c = f.control();
            if drain {
                // Also while draining (writes refused, persist allowed).
                c.prepare_shutdown(v1::PrepareShutdownRequest { wait: false })
                    .await
                    .expect("PrepareShutdown");
            }
            let before = f.observe().await;
            let result = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                c.persist(v1::PersistRequest {
                    namespace: namespace.clone(),
                    table: table.clone(),
                    wait,
                }),
            )
            .await
            .expect("Persist hung");
            let after = f.observe().await;
            (before, result.map(|r| r.into_inner()), after)
        });
        prop_assert_eq!(&before.namespaces, &after.namespaces);
        let known_ns = namespace.is_empty() || namespace == FUZZ_NS;
        let known_table = table.is_empty() || table == FUZZ_TABLE;
        match result {
            Err(s) => {
                prop_assert_eq!(s.code(), tonic::Code::InvalidArgument, "{:?}", s);
                prop_assert!(namespace.is_empty() && !table.is_empty());
                if !drain {
                    prop_assert_eq!(before, after, "a refused Persist changed something");
                }
            }
            Ok(r) => {
                prop_assert!(!namespace.is_empty() || table.is_empty(), "accepted a table without a namespace");
                if !(known_ns && known_table) {
                    prop_assert_eq!((r.partitions_enqueued, r.rows_enqueued), (0, 0));
                    if !drain {
                        prop_assert_eq!(before.buffered_rows, after.buffered_rows);
                    }
                } else if !drain {
                    // The settled buffer holds a row of `fuzz.t`, and no job
                    // has taken it yet (a running drain may have).
                    prop_assert!(r.partitions_enqueued >= 1, "{:?}", r);
                }
            }
        }
    }
}
