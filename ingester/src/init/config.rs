//! Every setting of `sluice-ingester serve`, each a flag and an environment
//! variable, with defaults that run a complete single node under `./data`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one ingester.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Directory for everything local: the WAL (`<dir>/wal`), objects
    /// (`<dir>/objects`) and the SQLite catalog (`<dir>/catalog.sqlite`),
    /// unless set separately below.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// WAL directory; should be on the pod's persistent volume.
    /// [default: <data-dir>/wal]
    #[arg(long, env = "SLUICE_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,

    /// Catalog URL: `sqlite://<path>` (single node) or
    /// `postgres://user:pass@host/db` (shared by many pods).
    /// [default: sqlite://<data-dir>/catalog.sqlite]
    #[arg(long, env = "SLUICE_CATALOG")]
    pub catalog: Option<String>,

    /// Object store for Parquet files: `file:///<dir>` or `s3://bucket/prefix`.
    /// [default: file://<data-dir>/objects]
    #[arg(long, env = "SLUICE_OBJECT_STORE")]
    pub object_store: Option<String>,

    /// gRPC address: Write, Flight, Catalog, Control, health, reflection.
    #[arg(long, env = "SLUICE_GRPC_BIND", default_value = "0.0.0.0:8082")]
    pub grpc_bind: SocketAddr,

    /// HTTP address: /health, /ready, /metrics, /api/v2/write.
    #[arg(long, env = "SLUICE_HTTP_BIND", default_value = "0.0.0.0:8080")]
    pub http_bind: SocketAddr,

    /// This ingester's id, reported in query metadata and recorded with its
    /// Parquet files. [default: the host name]
    #[arg(long, env = "SLUICE_INGESTER_ID")]
    pub ingester_id: Option<String>,

    /// Largest write request accepted (bytes, after gzip decompression).
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Line-protocol bodies of at least this many bytes are validated in
    /// pieces, in parallel, on the cores no other request is validating on
    /// (a 5,000-line batch is ~2.4 MB): this cuts a large write's latency
    /// when the server has idle CPU, and changes nothing when it has none.
    /// 0: always one piece.
    #[arg(long, env = "SLUICE_WRITE_SPLIT_BYTES", default_value_t = 1024 * 1024)]
    pub write_split_bytes: usize,

    /// Buffer memory limit (bytes of Arrow data); over it writes get
    /// RESOURCE_EXHAUSTED until persisted data is released.
    #[arg(long, env = "SLUICE_BUFFER_LIMIT_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub buffer_limit_bytes: u64,

    /// Rotate the WAL segment once it reaches this size (bytes).
    #[arg(long, env = "SLUICE_WAL_SEGMENT_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub wal_segment_bytes: u64,

    /// Rotate the WAL segment once its first entry is this old (e.g. `10m`,
    /// `30s`). Rotation persists the buffered data the segment holds.
    #[arg(long, env = "SLUICE_WAL_ROTATION_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub wal_rotation_interval: Duration,

    /// A write whose WAL record is at most this many bytes, arriving while
    /// the WAL is idle, is written and fdatasynced on the thread that
    /// received it, skipping two thread hand-offs (lower latency for small
    /// writes). Larger records always go to the WAL writer thread. 0: off.
    #[arg(long, env = "SLUICE_WAL_INLINE_COMMIT_BYTES", default_value_t = crate::wal::DEFAULT_INLINE_MAX_BYTES)]
    pub wal_inline_commit_bytes: usize,

    /// When a small WAL entry (at most 64 KiB) would end past the segment
    /// file's end, write this many bytes of zeros after it, so the entries
    /// that follow overwrite them in place: their fdatasync then flushes
    /// data only, with no new file size to write (or to commit through the
    /// filesystem's journal): lower latency for small writes. Cut off when the segment is
    /// closed. 0: off; at most 64 MiB.
    #[arg(long, env = "SLUICE_WAL_PREWRITE_BYTES", default_value_t = crate::wal::DEFAULT_PREWRITE_BYTES,
          value_parser = prewrite_bytes)]
    pub wal_prewrite_bytes: usize,

    /// Persist workers: partitions persisted in parallel.
    #[arg(long, env = "SLUICE_PERSIST_WORKERS", default_value_t = 2)]
    pub persist_workers: usize,

    /// Persist jobs that may wait for a worker; when full, writes get
    /// RESOURCE_EXHAUSTED until the queue drains.
    #[arg(long, env = "SLUICE_PERSIST_QUEUE_DEPTH", default_value_t = 64)]
    pub persist_queue_depth: usize,

    /// Memory pool for sorting and deduplicating persist jobs (bytes); larger
    /// jobs spill to `<data-dir>/tmp`.
    #[arg(long, env = "SLUICE_PERSIST_MEMORY_LIMIT", default_value_t = 512 * 1024 * 1024)]
    pub persist_memory_limit: usize,

    /// Threads of the persist executor (sort, dedup, Parquet encoding), apart
    /// from the threads serving RPCs. [default: the number of CPUs]
    #[arg(long, env = "SLUICE_PERSIST_THREADS")]
    pub persist_threads: Option<usize>,

    /// How many steps of CPU priority (nice) persist jobs run below the
    /// write path while persistence keeps up: while less than
    /// --persist-lowered-below-percent of the buffer limit is buffered and
    /// no job waits for a worker, jobs run on a second pool of persist
    /// threads this much lower, so under CPU contention acknowledging
    /// writes goes first. Past that, jobs run at full priority and catch
    /// up. 0: one pool, always at the write path's priority; at most 19
    /// (docs/benchmarks.md, session 13: the write p99 at half of the
    /// two-core throughput, with and without).
    #[arg(long, env = "SLUICE_PERSIST_THREAD_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub persist_thread_nice: i32,

    /// The buffer fill (percent of --buffer-limit-bytes) at and above which
    /// persist jobs stop running below the write path
    /// (--persist-thread-nice) and take their full share of the CPU.
    #[arg(long, env = "SLUICE_PERSIST_LOWERED_BELOW_PERCENT", default_value_t = 25,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub persist_lowered_below_percent: u8,

    /// Threads that encode Flight scans, apart from the threads serving
    /// RPCs. [default: the number of CPUs]
    #[arg(long, env = "SLUICE_QUERY_THREADS")]
    pub query_threads: Option<usize>,

    /// How many steps of CPU priority (nice) the query threads run below
    /// the write path: under CPU contention, acknowledging writes goes
    /// first and scans take the rest (0: equal footing; at most 19).
    #[arg(long, env = "SLUICE_QUERY_THREAD_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub query_thread_nice: i32,

    /// A partition buffering more than this many bytes is persisted at once,
    /// without waiting for rotation.
    #[arg(long, env = "SLUICE_HOT_PARTITION_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub hot_partition_bytes: usize,

    /// A partition buffering more than this many rows is persisted at once.
    #[arg(long, env = "SLUICE_HOT_PARTITION_ROWS", default_value_t = 2_000_000)]
    pub hot_partition_rows: usize,

    /// On SIGTERM, drain (persist everything, empty the WAL) before exiting.
    #[arg(long, env = "SLUICE_PERSIST_ON_SHUTDOWN", default_value_t = false)]
    pub persist_on_shutdown: bool,

    #[command(flatten)]
    pub s3: crate::store::S3Options,

    /// Tokens, TLS and listener limits.
    #[command(flatten)]
    pub security: crate::server::SecurityOptions,

    /// WAL volume usage limit.
    #[command(flatten)]
    pub wal_limits: crate::wal::WalLimitOptions,
}

impl Config {
    /// The defaults of `serve` with no arguments, rooted at `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            wal_dir: None,
            catalog: None,
            object_store: None,
            grpc_bind: "0.0.0.0:8082".parse().expect("valid literal"),
            http_bind: "0.0.0.0:8080".parse().expect("valid literal"),
            ingester_id: None,
            max_request_bytes: 32 * 1024 * 1024,
            write_split_bytes: 1024 * 1024,
            buffer_limit_bytes: 2 * 1024 * 1024 * 1024,
            wal_segment_bytes: 128 * 1024 * 1024,
            wal_rotation_interval: Duration::from_secs(600),
            wal_inline_commit_bytes: crate::wal::DEFAULT_INLINE_MAX_BYTES,
            wal_prewrite_bytes: crate::wal::DEFAULT_PREWRITE_BYTES,
            persist_workers: 2,
            persist_queue_depth: 64,
            persist_memory_limit: 512 * 1024 * 1024,
            persist_threads: None,
            persist_thread_nice: 10,
            persist_lowered_below_percent: 25,
            query_threads: None,
            query_thread_nice: 10,
            hot_partition_bytes: 256 * 1024 * 1024,
            hot_partition_rows: 2_000_000,
            persist_on_shutdown: false,
            s3: crate::store::S3Options {
                s3_region: "us-east-1".into(),
                ..Default::default()
            },
            security: Default::default(),
            wal_limits: Default::default(),
        }
    }

    pub fn object_store_url(&self) -> String {
        self.object_store.clone().unwrap_or_else(|| {
            format!(
                "file://{}",
                absolute(&self.data_dir.join("objects")).display()
            )
        })
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("wal"))
    }

    pub fn catalog_url(&self) -> String {
        self.catalog.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("catalog.sqlite").display()
            )
        })
    }

    pub fn ingester_id(&self) -> String {
        self.ingester_id.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                })
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "sluice-ingester".to_string())
        })
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `--wal-prewrite-bytes`: a byte count of at most 64 MiB.
fn prewrite_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("not a byte count ({e})"))?;
    if n > 64 << 20 {
        return Err(format!("{n} bytes is more than the 64 MiB allowed"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        config: super::Config,
    }

    fn parse(args: &[&str]) -> Result<super::Config, clap::Error> {
        let mut all = vec!["serve", "--data-dir", "/tmp/x"];
        all.extend_from_slice(args);
        Args::try_parse_from(all).map(|a| a.config)
    }

    /// `--wal-prewrite-bytes` defaults to the WAL's default, takes 0 (off)
    /// and refuses more than 64 MiB with a message naming the limit.
    #[test]
    fn wal_prewrite_bytes() {
        let defaults = parse(&[]).expect("defaults");
        assert_eq!(
            defaults.wal_prewrite_bytes,
            crate::wal::DEFAULT_PREWRITE_BYTES
        );
        assert_eq!(
            super::Config::new("/tmp/x").wal_prewrite_bytes,
            defaults.wal_prewrite_bytes
        );
        let off = parse(&["--wal-prewrite-bytes", "0"]).expect("off");
        assert_eq!(off.wal_prewrite_bytes, 0);
        let err = parse(&["--wal-prewrite-bytes", "67108865"])
            .expect_err("over the limit")
            .to_string();
        assert!(err.contains("64 MiB"), "{err}");
        assert!(parse(&["--wal-prewrite-bytes", "1k"]).is_err());
    }

    /// `--write-split-bytes`: 1 MiB by default, 0 for never.
    #[test]
    fn write_split_bytes() {
        assert_eq!(parse(&[]).expect("defaults").write_split_bytes, 1 << 20);
        assert_eq!(super::Config::new("/tmp/x").write_split_bytes, 1 << 20);
        let never = parse(&["--write-split-bytes", "0"]).expect("0");
        assert_eq!(never.write_split_bytes, 0);
        assert!(parse(&["--write-split-bytes", "-1"]).is_err());
    }

    /// `--persist-thread-nice` and `--persist-lowered-below-percent`:
    /// lowered by 10 until a quarter full by default; 0..=19 and 1..=100.
    #[test]
    fn persist_thread_nice() {
        let defaults = parse(&[]).expect("defaults");
        let new = super::Config::new("/tmp/x");
        assert_eq!(
            (
                defaults.persist_thread_nice,
                defaults.persist_lowered_below_percent
            ),
            (10, 25)
        );
        assert_eq!(
            (new.persist_thread_nice, new.persist_lowered_below_percent),
            (10, 25)
        );
        let off = parse(&["--persist-thread-nice", "0"]).expect("0");
        assert_eq!(off.persist_thread_nice, 0);
        assert!(parse(&["--persist-thread-nice", "20"]).is_err());
        assert!(parse(&["--persist-thread-nice", "-1"]).is_err());
        let half = parse(&["--persist-lowered-below-percent", "50"]).expect("50");
        assert_eq!(half.persist_lowered_below_percent, 50);
        assert!(parse(&["--persist-lowered-below-percent", "0"]).is_err());
        assert!(parse(&["--persist-lowered-below-percent", "101"]).is_err());
    }
}
