//! The composition root: the one place that assembles an ingester.
//!
//! ```text
//!  catalog ─┐
//!  WAL ─────┼─▶ replay (WriteHandler over the BufferTree, no WalSink)
//!           └─▶ live chain: WriteHandler ▶ Instrumentation ▶ WalSink ▶ BufferTree
//!  BufferTree ─▶ QueryExecTracing ▶ BufferQueryExec ─▶ Flight
//! ```
//!
//! [`serve`] binds the listeners first (so a port in use fails at once with
//! a clear error), starts HTTP (health is answered during replay, readiness
//! only after), replays the WAL, then serves gRPC until `shutdown`.

mod config;
mod wal_replay;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use config::Config;
use tokio::net::TcpListener;

use crate::buffer_tree::{BufferTree, HotPartitions, PartitionData};
use crate::catalog::{self, CatalogError, SchemaCache};
use crate::control::Control;
use crate::dml_sink::DmlSinkInstrumentation;
use crate::ingest_state::{IngestState, IngestStateError, Phase, PhaseCell};
use crate::persist::compact::Executor;
use crate::persist::journal::{self, Journal};
use crate::persist::{PersistConfig, PersistHandle, PersistObserver};
use crate::query::{BufferQueryExec, PersistedReader, QueryExecTracing};
use crate::server;
use crate::timestamp_oracle::TimestampOracle;
use crate::wal::{ReferenceTracker, Wal, WalConfig, WalError, WalSink};
use crate::write::{SplitValidation, WriteHandler};

// HTTP/2 settings of the gRPC listener (see where they are applied).
const GRPC_MAX_FRAME: u32 = 1 << 20;
const GRPC_STREAM_WINDOW: u32 = 8 << 20;
const GRPC_CONNECTION_WINDOW: u32 = 16 << 20;

/// Why the ingester could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind {what} to {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("catalog {url}: {source}")]
    Catalog { url: String, source: CatalogError },
    #[error("WAL: {0}")]
    Wal(#[from] WalError),
    #[error("WAL replay: {0}")]
    Replay(String),
    #[error("{0}")]
    Journal(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("executor: {0}")]
    Executor(String),
    #[error("cannot start the buffer's merge thread: {0}")]
    Merger(std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("gRPC server: {0}")]
    Grpc(String),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Tokens(#[from] server::auth::TokensFileError),
    #[error(transparent)]
    Tls(#[from] server::tls::TlsError),
}

type LiveSink = DmlSinkInstrumentation<WalSink<Arc<BufferTree>>>;
type HttpState = server::http::HttpState<LiveSink>;

/// Runs a complete ingester until `shutdown` resolves, then stops cleanly:
/// new writes are refused, in-flight ones finish, the WAL is synced.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), InitError> {
    let grpc_listener = TcpListener::bind(config.grpc_bind)
        .await
        .map_err(|source| InitError::Bind {
            what: "gRPC",
            addr: config.grpc_bind,
            source,
        })?;
    let http_listener = TcpListener::bind(config.http_bind)
        .await
        .map_err(|source| InitError::Bind {
            what: "HTTP",
            addr: config.http_bind,
            source,
        })?;
    serve_on(config, grpc_listener, http_listener, shutdown).await
}

/// [`serve`] on listeners bound by the caller.
pub async fn serve_on(
    config: Config,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), InitError> {
    // Tokens and certificates are checked before anything else starts, so
    // a bad Secret fails the pod at once with the file and line.
    let auth = config.security.auth()?;
    let tls = match config.security.tls_files()? {
        Some(files) => Some(server::tls::TlsReloader::load(files)?),
        None => None,
    };
    let _reloaders = BackgroundTasks(
        [
            auth.spawn_reloader(config.security.reload_interval),
            tls.as_ref()
                .map(|t| t.spawn_reloader(config.security.reload_interval)),
        ]
        .into_iter()
        .flatten()
        .collect(),
    );
    let connections = Arc::new(tokio::sync::Semaphore::new(
        config.security.max_connections.max(1),
    ));
    tracing::info!(
        auth = auth.enabled(),
        tokens = auth.token_count(),
        tls = tls.is_some(),
        mtls = config.security.tls_client_ca.is_some(),
        "listener security"
    );
    let registry = prometheus::Registry::new();
    let phase = Arc::new(PhaseCell::new());
    let http_state: Arc<HttpState> = Arc::new(server::http::HttpState {
        phase: Arc::clone(&phase),
        registry: registry.clone(),
        writer: OnceLock::new(),
        max_request_bytes: config.max_request_bytes,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http_addr = http_listener.local_addr().ok();
    let http_incoming = server::tls::HttpListener::new(
        server::tls::incoming(
            http_listener,
            tls.clone(),
            server::tls::Alpn::Http,
            Arc::clone(&connections),
        ),
        http_addr.unwrap_or(config.http_bind),
    );
    let mtls = tls.is_some() && config.security.tls_client_ca.is_some();
    let http_router = server::http::router(Arc::clone(&http_state))
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            server::auth_http::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            mtls,
            server::tls::require_client_cert,
        ));
    let http = tokio::spawn(
        axum::serve(
            http_incoming,
            http_router.into_make_service_with_connect_info::<server::tls::ClientCert>(),
        )
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        })
        .into_future(),
    );
    tracing::info!(addr = ?http_addr, "HTTP listening (health now, ready after replay)");

    for dir in [&config.data_dir, &config.wal_dir()] {
        std::fs::create_dir_all(dir).map_err(|source| InitError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let catalog_url = config.catalog_url();
    let catalog = catalog::connect(&catalog_url)
        .await
        .map_err(|source| InitError::Catalog {
            url: redact(&catalog_url),
            source,
        })?;
    let state = Arc::new(IngestState::new(config.buffer_limit_bytes));
    let buffer = Arc::new(BufferTree::new(Arc::clone(&state), &registry)?);
    let cache = Arc::new(SchemaCache::new(Arc::clone(&catalog)));
    let oracle = Arc::new(TimestampOracle::new(0));

    let store = crate::store::from_url(&config.object_store_url(), &config.s3)?;
    let spill_dir = config.data_dir.join("tmp");
    std::fs::create_dir_all(&spill_dir).map_err(|source| InitError::CreateDir {
        path: spill_dir.clone(),
        source,
    })?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let executor = Arc::new(
        Executor::new(
            config.persist_threads.unwrap_or(cpus),
            config.persist_memory_limit,
            spill_dir,
        )
        .map_err(|e| InitError::Executor(e.to_string()))?,
    );
    let background = if config.persist_thread_nice > 0 {
        Some(crate::persist::Background {
            executor: Arc::new(
                executor
                    .lowered(config.persist_thread_nice)
                    .map_err(|e| InitError::Executor(e.to_string()))?,
            ),
            below_bytes: config.buffer_limit_bytes / 100
                * u64::from(config.persist_lowered_below_percent),
        })
    } else {
        None
    };
    let query_runtime = crate::dedicated::DedicatedRuntime::start(
        "sluice-query",
        config.query_threads.unwrap_or(cpus),
        config.query_thread_nice,
        Duration::from_secs(1),
    )
    .map_err(|e| InitError::Executor(format!("query threads: {e}")))?;
    let ingester_id: Arc<str> = config.ingester_id().into();

    let mut wal_config = WalConfig::new(config.wal_dir());
    wal_config.max_segment_bytes = config.wal_segment_bytes;
    wal_config.max_segment_age = Some(config.wal_rotation_interval);
    wal_config.inline_max_bytes = config.wal_inline_commit_bytes;
    wal_config.prewrite_bytes = config.wal_prewrite_bytes;
    let (wal, segments) = Wal::open(wal_config, &registry)?;
    let mut rotations = wal.subscribe_rotations();
    let (journal, recovered) =
        Journal::open(wal.clone()).map_err(|e| InitError::Journal(e.to_string()))?;
    // Continue where this ingester stopped: batch numbers per partition,
    // and sequence numbers above every one already used (a file may hold
    // numbers whose WAL segments are long deleted).
    let mine = catalog
        .ingester_partitions(&ingester_id)
        .await
        .map_err(|source| InitError::Catalog {
            url: redact(&catalog_url),
            source,
        })?;
    buffer.set_batch_bases(mine.iter().map(|p| (p.partition_id, p.max_batch_number)));
    let catalog_max_seq = mine
        .iter()
        .map(|p| p.max_sequence_number)
        .max()
        .unwrap_or(0);
    oracle.observe(catalog_max_seq.max(recovered.max_sequence_number));
    let recovered = Arc::new(recovered);
    tracing::info!(
        persisted_partitions = mine.len(),
        max_sequence_number = catalog_max_seq,
        journaled_writes = recovered.len(),
        unfinished_uploads = recovered.unfinished.len(),
        "persist state recovered"
    );
    let tracker = ReferenceTracker::spawn(wal.clone());
    {
        let t = tracker.clone();
        buffer
            .set_multi_partition_observer(Box::new(move |seq, n| t.applied_to_partitions(seq, n)));
    }
    let persist = PersistHandle::new(
        PersistConfig {
            workers: config.persist_workers,
            queue_depth: config.persist_queue_depth,
            ingester_id: Arc::clone(&ingester_id),
            journal: Some(Arc::clone(&journal)),
            background,
        },
        Arc::clone(&catalog),
        Arc::clone(&store),
        Arc::clone(&executor),
        Arc::clone(&buffer),
        Arc::clone(&state),
        vec![Arc::new(TrackerObserver(tracker.clone())) as Arc<dyn PersistObserver>],
        &registry,
    )?;

    phase.set(Phase::Replaying);
    let replay_handler = WriteHandler::new(
        Arc::clone(&cache),
        Arc::clone(&oracle),
        Arc::clone(&state),
        Arc::clone(&buffer),
        usize::MAX,
        None,
    )?;
    buffer.begin_replay(Arc::clone(&recovered));
    let (_, replayed_rows, replayed) = wal_replay::replay(&segments, &replay_handler).await?;
    drop(replay_handler);
    let (skipped, skipped_pairs) = buffer.end_replay();
    // Only now: during replay the replaying task merges small batches
    // itself. With the thread, each merge of a one-line stream's batches
    // freed them on another thread than the one allocating the next ones,
    // and both then queued for the same malloc arena's lock: a WAL of
    // one-line writes replayed at 17k ops/s.
    buffer.start_merger().map_err(InitError::Merger)?;
    for (id, seqs) in replayed {
        tracker.segment_closed(id, seqs);
    }
    if skipped_pairs > 0 {
        tracing::info!(
            writes = skipped.len(),
            partition_writes = skipped_pairs,
            "replay skipped writes already persisted"
        );
    }
    // Writes whose every partition was already persisted hold their
    // segments no more.
    if !skipped.is_empty() {
        tracker.persisted(skipped.into());
    }
    if let Err(e) = journal.compact(Vec::new()).await {
        tracing::warn!(error = %e, "persist journal: compaction failed");
    }
    // Uploads a crash may have orphaned are settled in the background: an
    // object store that is down (retrying for minutes) must not hold up
    // start-up for what is only clean-up.
    if !recovered.unfinished.is_empty() {
        let (catalog, store, journal) = (
            Arc::clone(&catalog),
            Arc::clone(&store),
            Arc::clone(&journal),
        );
        let unfinished = recovered.unfinished.clone();
        tokio::spawn(async move {
            let settled =
                journal::settle_unfinished(catalog.as_ref(), store.as_ref(), &unfinished).await;
            if !settled.is_empty()
                && let Err(e) = journal.compact(settled).await
            {
                tracing::warn!(error = %e, "persist journal: compaction failed");
            }
        });
    }
    let control = Arc::new(Control::new(
        Arc::clone(&ingester_id),
        Arc::clone(&buffer),
        wal.clone(),
        tracker.clone(),
        persist.clone(),
        Arc::clone(&state),
        Arc::clone(&phase),
    ));
    if replayed_rows > 0 {
        // Everything replayed is persisted at once, in the background: the
        // pod is ready as soon as replay is done.
        let c = Arc::clone(&control);
        tokio::spawn(async move {
            let (n, rows) = c.persist("", "", true).await;
            tracing::info!(partitions = n, rows, "replayed data persisted");
        });
    }
    // Rotation: release the closed segment's references, persist what the
    // buffer holds.
    {
        let tracker = tracker.clone();
        let c = Arc::clone(&control);
        tokio::spawn(async move {
            while let Some(closed) = rotations.recv().await {
                tracing::info!(
                    segment = closed.id.get(),
                    bytes = closed.bytes,
                    writes = closed.sequence_numbers.len(),
                    reason = closed.reason.as_str(),
                    "WAL segment closed; persisting buffered partitions"
                );
                tracker.segment_closed(closed.id, Arc::clone(&closed.sequence_numbers));
                c.persist("", "", false).await;
            }
        });
    }
    // Hot partitions: persisted without waiting for rotation.
    {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<PartitionData>>();
        buffer.set_hot_partitions(HotPartitions {
            max_bytes: config.hot_partition_bytes,
            max_rows: config.hot_partition_rows,
            tx,
        });
        let persist = persist.clone();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                tracing::debug!(partition = %p.key, table = %p.table, "hot partition: persisting");
                if persist.enqueue(Arc::clone(&p)).await.is_none() {
                    p.persist_pending
                        .store(false, std::sync::atomic::Ordering::Release);
                }
            }
        });
    }

    let live_sink =
        DmlSinkInstrumentation::new(WalSink::new(Arc::clone(&buffer), wal.clone()), &registry)?;
    let writer = Arc::new(
        WriteHandler::new(
            Arc::clone(&cache),
            Arc::clone(&oracle),
            Arc::clone(&state),
            live_sink,
            config.max_request_bytes,
            Some(&registry),
        )?
        .with_split(SplitValidation {
            min_bytes: config.write_split_bytes,
            cores: cpus,
        }),
    );
    let _ = http_state.writer.set(Arc::clone(&writer));
    let query = Arc::new(QueryExecTracing::new(
        BufferQueryExec::new(
            Arc::clone(&buffer),
            Arc::clone(&cache),
            Some(PersistedReader {
                catalog: Arc::clone(&catalog),
                store: Arc::clone(&store),
                executor: Arc::clone(&executor),
            }),
        ),
        &registry,
    )?);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| InitError::Grpc(e.to_string()))?;
    let max_msg = config.max_request_bytes.saturating_add(64 * 1024);
    use sluice_proto::v1::{
        catalog_service_server::CatalogServiceServer, control_service_server::ControlServiceServer,
        write_service_server::WriteServiceServer,
    };
    let write_svc = server::grpc::size_limit::SizeLimitAnswer::new(
        WriteServiceServer::new(server::grpc::write::WriteService::new(Arc::clone(&writer)))
            .max_decoding_message_size(max_msg),
        config.max_request_bytes,
    );
    let flight_svc = arrow_flight::flight_service_server::FlightServiceServer::new(
        server::grpc::flight::FlightQueryService::new(
            Arc::clone(&query),
            Arc::clone(&ingester_id),
            query_runtime.handle().clone(),
        ),
    )
    .max_encoding_message_size(usize::MAX);
    let catalog_svc = CatalogServiceServer::new(server::grpc::catalog::CatalogService::new(
        Arc::clone(&catalog),
    ));
    let control_svc = ControlServiceServer::new(server::grpc::control::ControlService::new(
        Arc::clone(&control),
    ));
    health_reporter
        .set_serving::<WriteServiceServer<server::grpc::write::WriteService<LiveSink>>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let mut grpc_stop = stop_rx.clone();
    let grpc_addr = grpc_listener.local_addr().ok();
    let grpc_incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(server::tls::incoming(
            grpc_listener,
            tls.clone(),
            server::tls::Alpn::Grpc,
            Arc::clone(&connections),
        )),
        Ok::<_, std::io::Error>,
    );
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            // Writes are megabytes: with HTTP/2's 16 KiB frames and hyper's
            // 1 MiB windows a 2.4 MB request arrives in ~150 frames and
            // waits for window updates. Measured with `sluice-sink` (8
            // writers x 5,000 lines): 0.51 -> 0.25 µs of server CPU per row.
            // Memory stays bounded by --max-request-bytes per request.
            .max_frame_size(Some(GRPC_MAX_FRAME))
            .initial_stream_window_size(Some(GRPC_STREAM_WINDOW))
            .initial_connection_window_size(Some(GRPC_CONNECTION_WINDOW))
            .layer(server::auth_grpc::GrpcAuthLayer::new(auth.clone()))
            .layer(server::grpc::limits::LimitsLayer::new(
                config.security.max_concurrent_queries,
                Some(config.security.request_timeout).filter(|t| !t.is_zero()),
            ))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(write_svc)
            .add_service(flight_svc)
            .add_service(catalog_svc)
            .add_service(control_svc)
            .serve_with_incoming_shutdown(grpc_incoming, async move {
                let _ = grpc_stop.wait_for(|s| *s).await;
            }),
    );

    // The WAL volume's usage limit: refuse writes and free space past it.
    let limit = config.wal_limits.limit();
    let _usage_guard = BackgroundTasks(if limit.is_set() {
        let state = Arc::clone(&state);
        vec![crate::wal::spawn_usage_guard(
            wal.clone(),
            limit,
            move |full| {
                if full {
                    state.set(IngestStateError::DiskFull);
                } else {
                    state.unset(IngestStateError::DiskFull);
                }
            },
        )]
    } else {
        Vec::new()
    });
    state.unset(IngestStateError::Starting);
    phase.set(Phase::Ready);
    tracing::info!(grpc = ?grpc_addr, ingester_id = %ingester_id, "ready");

    shutdown.await;
    if config.persist_on_shutdown {
        tracing::info!("shutting down: draining first (--persist-on-shutdown)");
        control.prepare_shutdown(true).await;
    }
    tracing::info!("shutting down: refusing new writes, finishing in-flight ones");
    state.set(IngestStateError::ShuttingDown);
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = stop_tx.send(true);
    let grpc_res = grpc.await;
    let http_res = http.await;
    wal.shutdown().await?;
    tracing::info!("WAL synced and closed; bye");
    match grpc_res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(InitError::Grpc(e.to_string())),
        Err(e) => return Err(InitError::Grpc(e.to_string())),
    }
    match http_res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(InitError::Http(e)),
        Err(e) => Err(InitError::Grpc(e.to_string())),
    }
}

/// Background tasks (file reloaders, the WAL usage guard); stopped on drop.
struct BackgroundTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Tells the WAL reference tracker what each persist made durable.
#[derive(Debug)]
struct TrackerObserver(ReferenceTracker);

impl PersistObserver for TrackerObserver {
    fn persisted(&self, sequence_numbers: Arc<[u64]>) {
        self.0.persisted(sequence_numbers);
    }
}

/// Hides a password in a connection URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            super::redact("sqlite:///data/c.sqlite"),
            "sqlite:///data/c.sqlite"
        );
    }
}
