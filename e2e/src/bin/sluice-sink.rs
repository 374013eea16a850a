//! `sluice-sink`: the floor under any gRPC ingester on this machine.
//!
//! A `WriteService` that does nothing with a write but receive it: tonic
//! reads the HTTP/2 frames and decodes the protobuf, the handler counts
//! the payload's bytes and answers. With `--fsync-file` it also appends
//! each payload to a file and `fdatasync`s it before answering (one request
//! at a time, no group commit, on the thread that received it, with no
//! hand-off to another thread): the least a durable write can cost.
//!
//! Driven by `sluice-loadgen` exactly as the ingester is
//! (`e2e/scripts/bench-floor.sh`), it measures what the transport and the
//! client cost per row and per request on this machine, so the ingester's
//! figures can be read against it: whatever the sink spends, no ingester
//! behind the same gRPC stack can spend less. It is a measuring instrument,
//! not a server: it keeps nothing and refuses nothing.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use sluice_proto::v1::{self, write_request};
use tonic::{Request, Response, Status};

/// A gRPC `WriteService` that receives writes and drops them (see the
/// module docs of `e2e/src/bin/sluice-sink.rs`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to serve `WriteService` on.
    #[arg(long, env = "SLUICE_SINK_GRPC_BIND", default_value = "127.0.0.1:8082")]
    grpc_bind: SocketAddr,
    /// Append every payload to this file and fdatasync it before answering.
    #[arg(long, env = "SLUICE_SINK_FSYNC_FILE")]
    fsync_file: Option<PathBuf>,
    /// With `--fsync-file`: write this many bytes of zeros to the file
    /// first (and sync them), then overwrite it from the start, wrapping at
    /// the end, instead of appending: each fdatasync then flushes data only,
    /// with no change of size or block allocation to write (what a WAL on
    /// pre-written segments costs).
    #[arg(long, env = "SLUICE_SINK_PREALLOCATE", default_value_t = 0)]
    preallocate: u64,
    /// With `--fsync-file`: write only this share (percent) of each
    /// payload. A server that logs a compact encoding of what it received
    /// writes less than the request: the ingester's columnar WAL record of
    /// a 5,000-line TSBS batch is 27% of its line protocol.
    #[arg(long, env = "SLUICE_SINK_FSYNC_PERCENT", default_value_t = 100,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    fsync_percent: u8,
    /// HTTP/2 stream receive window (bytes; the ingester's by default).
    #[arg(long, env = "SLUICE_SINK_STREAM_WINDOW", default_value_t = 8 << 20)]
    stream_window: u32,
    /// HTTP/2 connection receive window (bytes; the ingester's by default).
    #[arg(long, env = "SLUICE_SINK_CONN_WINDOW", default_value_t = 16 << 20)]
    conn_window: u32,
    /// Largest HTTP/2 frame the client may send (bytes; the ingester's by
    /// default; HTTP/2's own default is 16384).
    #[arg(long, env = "SLUICE_SINK_MAX_FRAME", default_value_t = 1 << 20)]
    max_frame: u32,
    /// Spin this many microseconds of CPU per request before answering, on
    /// the thread that received it: a server that does that much work per
    /// request (parsing, validating, buffering), to see what a given CPU
    /// cost per request does to latency on this machine.
    #[arg(long, env = "SLUICE_SINK_WORK_US", default_value_t = 0)]
    work_us: u64,
}

/// The file payloads are appended or written to, and where the next goes.
struct SinkFile {
    file: File,
    /// `Some(size)`: overwrite a pre-written file of `size` bytes.
    wrap: Option<u64>,
    offset: u64,
    /// The share of each payload written (`--fsync-percent`).
    percent: u8,
}

impl SinkFile {
    /// Writes the first `percent`% of `body` and fdatasyncs it.
    fn write(&mut self, body: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let body = &body[..body.len() * usize::from(self.percent) / 100];
        match self.wrap {
            None => self.file.write_all(body)?,
            Some(size) => {
                if self.offset + body.len() as u64 > size {
                    self.offset = 0;
                }
                self.file.write_all_at(body, self.offset)?;
                self.offset += body.len() as u64;
            }
        }
        self.file.sync_data()
    }
}

struct Sink {
    file: Option<Arc<Mutex<SinkFile>>>,
    work: std::time::Duration,
    bytes: AtomicU64,
    requests: AtomicU64,
}

#[tonic::async_trait]
impl v1::write_service_server::WriteService for Sink {
    async fn write(
        &self,
        request: Request<v1::WriteRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let body = match request.into_inner().payload {
            Some(write_request::Payload::LineProtocol(body)) => body,
            Some(write_request::Payload::Arrow(a)) => a.ipc_stream,
            None => return Err(Status::invalid_argument("empty write: no payload")),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        if !self.work.is_zero() {
            let start = std::time::Instant::now();
            while start.elapsed() < self.work {
                std::hint::spin_loop();
            }
        }
        if let Some(file) = &self.file {
            // On the runtime thread that received the request, blocking it:
            // no hand-off to another thread and back, which is what makes
            // this the floor (the runtime's other threads keep serving).
            let mut f = file
                .lock()
                .map_err(|_| Status::internal("sink file lock poisoned"))?;
            f.write(&body)
                .map_err(|e| Status::unavailable(format!("sink file: {e}")))?;
        }
        Ok(Response::new(v1::WriteResponse::default()))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = match &args.fsync_file {
        Some(path) => Some(Arc::new(Mutex::new(open_sink_file(
            path,
            args.preallocate,
            args.fsync_percent,
        )?))),
        None => None,
    };
    let sink = Arc::new(Sink {
        file,
        work: std::time::Duration::from_micros(args.work_us),
        bytes: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.grpc_bind)
            .await
            .with_context(|| format!("bind {}", args.grpc_bind))?;
        eprintln!("sluice-sink listening on {}", listener.local_addr()?);
        let service = v1::write_service_server::WriteServiceServer::from_arc(Arc::clone(&sink))
            .max_decoding_message_size(usize::MAX);
        tonic::transport::Server::builder()
            .initial_stream_window_size(Some(args.stream_window))
            .initial_connection_window_size(Some(args.conn_window))
            .max_frame_size(Some(args.max_frame))
            .add_service(service)
            .serve_with_incoming_shutdown(tokio_stream_incoming(listener), async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serve")
    })?;
    eprintln!(
        "sluice-sink: {} requests, {} bytes",
        sink.requests.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed)
    );
    Ok(())
}

fn open_sink_file(
    path: &std::path::Path,
    preallocate: u64,
    percent: u8,
) -> anyhow::Result<SinkFile> {
    let mut file = File::options()
        .create(true)
        .write(true)
        .append(preallocate == 0)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    if preallocate == 0 {
        return Ok(SinkFile {
            file,
            wrap: None,
            offset: 0,
            percent,
        });
    }
    let zeros = vec![0u8; 1 << 20];
    let mut left = preallocate;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
        .with_context(|| format!("sync {}", path.display()))?;
    Ok(SinkFile {
        file,
        wrap: Some(preallocate),
        offset: 0,
        percent,
    })
}

/// Accepted connections as the stream tonic serves, with Nagle off as the
/// ingester has it.
fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((conn, listener))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_asked_share_of_each_payload_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let path = dir.path().join("appended");
        let mut f = open_sink_file(&path, 0, 27).expect("open");
        f.write(&body).expect("write");
        f.write(&body[..10]).expect("write");
        let written = std::fs::read(&path).expect("read");
        // 27% of 1,000 bytes, then 2 of 10: each payload's first bytes.
        assert_eq!(written.len(), 270 + 2);
        assert_eq!(&written[..270], &body[..270]);
        assert_eq!(&written[270..], &body[..2]);

        // Overwriting a pre-written file wraps by the share written too.
        let path = dir.path().join("prewritten");
        let mut f = open_sink_file(&path, 600, 50).expect("open");
        f.write(&body).expect("write");
        assert_eq!(f.offset, 500);
        f.write(&body).expect("write");
        assert_eq!(f.offset, 500, "the second half-payload wrapped to 0");
        let written = std::fs::read(&path).expect("read");
        assert_eq!(written.len(), 600);
        assert_eq!(&written[..500], &body[..500]);
    }
}
