//! `sluice-loadgen`: drive an ingester the way its users will and measure it.
//!
//! A TSBS "devops cpu"-shaped workload (see [`workload`]) is sent by
//! `--writers` concurrent writers, each on its own connection, to Sluice's
//! gRPC `WriteService` (line protocol or Arrow) or to any InfluxDB
//! v2-compatible `/api/v2/write`. Optionally `--query-concurrency` scanners
//! run Flight full scans at the same time.
//!
//! # What is measured
//!
//! - **Throughput**: rows, payload bytes and requests acknowledged inside the
//!   measured window (after `--warm-up`), per second.
//! - **Ack latency** of each successful request. Closed loop (no `--rate`):
//!   from sending to the acknowledgement. Open loop (`--rate`): from the
//!   moment the batch was due, so a server that falls behind is charged for
//!   the queueing it causes (no coordinated omission); the pure service time
//!   is reported next to it. A batch is built before it is due.
//! - **Errors** by status, with one example message each.
//! - **Client CPU** (`getrusage`), so a result can be discounted by what the
//!   client took from a shared machine; payload building is timed separately.
//! - Optionally the server's CPU (`--server-pid`) and its Prometheus counters
//!   (`--metrics-url`): fdatasyncs per second, ops per group commit, time in
//!   validation and in the sink chain, persistence — what limits the figure.
//!
//! Batches are numbered and handed out through one atomic counter, so the
//! row sequence is the same whatever the number of writers.

pub mod auth;
pub mod direct;
pub mod http;
pub mod query;
pub mod stats;
pub mod target;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;

use stats::{Latency, Report, RunConfig, ServerMetrics, ServerProcess, new_hist, record};
use target::{PayloadGen, Sender, TargetConfig, TargetKind};
use workload::{FIELD_KEYS, Reuse, Workload, WorkloadConfig};

/// Command-line arguments of `sluice-loadgen`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "sluice-loadgen",
    about = "TSBS devops-cpu-shaped load against Sluice (gRPC) or any InfluxDB v2 /api/v2/write"
)]
pub struct Args {
    /// Write protocol.
    #[arg(long, value_enum, default_value = "grpc-lp")]
    pub target: TargetKind,
    /// Server address; default http://127.0.0.1:8082 (gRPC) or
    /// http://127.0.0.1:8080 (http).
    #[arg(long)]
    pub addr: Option<String>,
    /// Namespace (the bucket for --target http).
    #[arg(long, default_value = "loadgen")]
    pub namespace: String,
    /// Organisation (--target http; ignored by Sluice).
    #[arg(long, default_value = "sluice")]
    pub org: String,
    /// Bearer token (see `sluice-ingester serve --tokens-file`): sent as
    /// `authorization: Bearer …` over gRPC and `Authorization: Token …`
    /// over HTTP (InfluxDB's form, which Sluice also accepts). Needs the
    /// `write` scope, and `query` for --query-concurrency.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA bundle that signed the server's certificate, for `https://`
    /// addresses (--addr and --query-addr).
    #[arg(long, env = "SLUICE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Number of hosts (series cardinality).
    #[arg(long, default_value_t = 1000)]
    pub hosts: u64,
    /// Lines (rows) per request.
    #[arg(long, default_value_t = 5000)]
    pub batch_lines: u64,
    /// Concurrent writers, each with its own connection.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Length of the measured window (after the warm-up). Default 10s
    /// unless --rows is given.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many rows (warm-up rows included).
    #[arg(long)]
    pub rows: Option<u64>,
    /// Fixed target rate in rows/s (open loop); default: as fast as acks come.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Share of rows (0..1) that rewrite an earlier point of the same host.
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Run this long before measuring (not counted).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warm_up: Duration,
    /// Time between two points of one host.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Time of the first point, ns since the epoch (default 2026-01-01T00:00Z).
    #[arg(long, default_value_t = 1_767_225_600_000_000_000)]
    pub start_ns: i64,
    /// Pre-generated versions of each host's field values.
    #[arg(long, default_value_t = 16)]
    pub variants: usize,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Concurrent Flight full scans of the table while writing.
    #[arg(long, default_value_t = 0)]
    pub query_concurrency: usize,
    /// Run the scanners on threads of their own, this many nice steps below
    /// the writers (0: the writers' runtime). Stands in for queriers on
    /// other machines, so the scanners' own decoding only takes CPU the
    /// writers leave.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub query_nice: i32,
    /// Flight (gRPC) address for the scans; default: --addr for gRPC targets,
    /// http://127.0.0.1:8082 otherwise.
    #[arg(long)]
    pub query_addr: Option<String>,
    /// Also report this server process's CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also report the server's Prometheus counters over the window
    /// (e.g. http://127.0.0.1:8080/metrics).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Send line protocol through tonic's generated client, which copies
    /// each payload into its encoding buffer. By default the payload goes
    /// to the connection as it is (the same bytes on the wire, less of the
    /// client's CPU taken from a server on the same machine).
    #[arg(long)]
    pub tonic_encode: bool,
}

/// State shared by writers, scanners and the progress line.
#[derive(Debug, Default)]
pub struct Shared {
    /// Set when everything should stop.
    pub stop: AtomicBool,
    /// Set while inside the measured window.
    pub measuring: AtomicBool,
    next_batch: AtomicU64,
    /// Whole-run totals, for the progress line.
    rows: AtomicU64,
    bytes: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Nanoseconds spent building payloads (whole run).
    gen_nanos: AtomicU64,
}

/// One writer's measured-window results.
#[derive(Debug)]
struct WriterStats {
    rows: u64,
    bytes: u64,
    requests: u64,
    latency: Histogram<u64>,
    service: Histogram<u64>,
    /// Since the last progress line (whole run).
    interval: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
    last_ack: Option<Instant>,
}

impl WriterStats {
    fn new() -> Self {
        Self {
            rows: 0,
            bytes: 0,
            requests: 0,
            latency: new_hist(),
            service: new_hist(),
            interval: new_hist(),
            errors: BTreeMap::new(),
            error_examples: BTreeMap::new(),
            last_ack: None,
        }
    }
}

struct Writer {
    sender: Sender,
    gen_: Arc<PayloadGen>,
    workload: Arc<Workload>,
    shared: Arc<Shared>,
    stats: Arc<Mutex<WriterStats>>,
    /// The previous payload, for the next one to reuse.
    reuse: Reuse,
    total_rows: Option<u64>,
    rate: Option<f64>,
    start: Instant,
}

impl Writer {
    async fn run(mut self) {
        while !self.shared.stop.load(Ordering::Relaxed) {
            let b = self.shared.next_batch.fetch_add(1, Ordering::Relaxed);
            let Some((first, n)) = self.workload.batch_rows(b, self.total_rows) else {
                break;
            };
            let due = self
                .rate
                .map(|r| self.start + Duration::from_secs_f64(first as f64 / r));
            // Built before it is due, as a client sending at a fixed rate
            // has its batch ready: the time it takes is the client's, not
            // part of the latency (a build that ends past the due time is
            // still counted, from the due time).
            let g = Instant::now();
            let payload = match self.gen_.build(b, first, n, &mut self.reuse) {
                Ok(p) => p,
                Err(e) => {
                    // A generator bug, not a server error: stop loudly.
                    eprintln!("building batch {b} failed: {e:#}");
                    self.shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
            };
            self.shared
                .gen_nanos
                .fetch_add(g.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
                if self.shared.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            let len = payload.len() as u64;
            // A handle on the payload: once the request (and the client's
            // copy of it) is gone, its buffer is ours again for the next one.
            let sent_payload = payload.clone();
            let sent = Instant::now();
            let result = self.sender.send(payload).await;
            let done = Instant::now();
            self.reuse.give_back(sent_payload);
            let measuring = self.shared.measuring.load(Ordering::Relaxed)
                && !self.shared.stop.load(Ordering::Relaxed);
            let refused = result.is_err();
            {
                let mut st = self.stats.lock().expect("writer stats lock");
                match result {
                    Ok(()) => {
                        self.shared.rows.fetch_add(n, Ordering::Relaxed);
                        self.shared.bytes.fetch_add(len, Ordering::Relaxed);
                        self.shared.requests.fetch_add(1, Ordering::Relaxed);
                        let latency = done - due.unwrap_or(sent).min(sent);
                        record(&mut st.interval, latency);
                        if measuring {
                            st.rows += n;
                            st.bytes += len;
                            st.requests += 1;
                            record(&mut st.latency, latency);
                            record(&mut st.service, done - sent);
                            st.last_ack = Some(done);
                        }
                    }
                    Err(e) => {
                        self.shared.errors.fetch_add(1, Ordering::Relaxed);
                        if measuring {
                            *st.errors.entry(e.status.clone()).or_default() += 1;
                            st.error_examples.entry(e.status).or_insert(e.message);
                        }
                    }
                }
            }
            if refused {
                // Do not spin on a refusing server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The machine's load average, for the report.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn scrape(url: &str) -> Option<BTreeMap<String, f64>> {
    match crate::http_request("GET", url, Vec::new(), false).await {
        Ok((200, body)) => Some(stats::parse_metrics(&body)),
        Ok((s, _)) => {
            eprintln!("metrics {url}: HTTP {s}");
            None
        }
        Err(e) => {
            eprintln!("metrics {url}: {e:#}");
            None
        }
    }
}

/// Snapshot of the counters at one end of the measured window.
struct Snapshot {
    at: Instant,
    client_cpu: f64,
    server_cpu: Option<f64>,
    metrics: Option<BTreeMap<String, f64>>,
    gen_nanos: u64,
}

async fn snapshot(args: &Args, shared: &Shared) -> Snapshot {
    let metrics = match &args.metrics_url {
        Some(u) => scrape(u).await,
        None => None,
    };
    Snapshot {
        at: Instant::now(),
        client_cpu: stats::self_cpu_seconds(),
        server_cpu: args.server_pid.and_then(stats::proc_cpu_seconds),
        metrics,
        gen_nanos: shared.gen_nanos.load(Ordering::Relaxed),
    }
}

/// Runs the load and returns the report (also printed / written by the
/// binary).
pub async fn run(args: Args) -> anyhow::Result<Report> {
    let load_before = loadavg();
    let addr = args.addr.clone().unwrap_or_else(|| match args.target {
        TargetKind::Http => "http://127.0.0.1:8080".into(),
        _ => "http://127.0.0.1:8082".into(),
    });
    let duration = match (args.duration, args.rows) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let t = Instant::now();
    let workload = Arc::new(Workload::new(WorkloadConfig {
        hosts: args.hosts,
        batch_lines: args.batch_lines,
        start_ns: args.start_ns,
        interval_ns: i64::try_from(args.interval.as_nanos()).context("--interval too long")?,
        duplicates: args.duplicates,
        variants: args.variants,
        seed: args.seed,
    })?);
    let gen_ = Arc::new(PayloadGen::new(args.target, Arc::clone(&workload)));
    if !args.quiet {
        eprintln!("generated the workload templates in {:.2?}", t.elapsed());
    }

    let auth = auth::ClientAuth::new(args.token.as_deref(), args.ca_cert.as_deref())?;
    let tc = TargetConfig {
        kind: args.target,
        addr: addr.clone(),
        namespace: args.namespace.clone(),
        org: args.org.clone(),
        auth: auth.clone(),
        tonic_encode: args.tonic_encode,
    };
    let shared = Arc::new(Shared::default());
    let mut senders = Vec::with_capacity(args.writers);
    for _ in 0..args.writers {
        senders.push(
            Sender::connect(&tc)
                .await
                .with_context(|| format!("connect to {addr}"))?,
        );
    }

    let warm_up = args.warm_up;
    let mut before = None;
    if warm_up.is_zero() {
        before = Some(snapshot(&args, &shared).await);
        shared.measuring.store(true, Ordering::Relaxed);
    }
    let start = Instant::now();
    let mut writer_stats = Vec::new();
    let mut writers = Vec::new();
    for sender in senders {
        let stats = Arc::new(Mutex::new(WriterStats::new()));
        writer_stats.push(Arc::clone(&stats));
        writers.push(tokio::spawn(
            Writer {
                sender,
                gen_: Arc::clone(&gen_),
                workload: Arc::clone(&workload),
                shared: Arc::clone(&shared),
                stats,
                reuse: Reuse::default(),
                total_rows: args.rows,
                rate: args.rate,
                start,
            }
            .run(),
        ));
    }
    let query_addr = args
        .query_addr
        .clone()
        .unwrap_or_else(|| match args.target {
            TargetKind::Http => "http://127.0.0.1:8082".into(),
            _ => addr.clone(),
        });
    let scan_rt = if args.query_nice > 0 && args.query_concurrency > 0 {
        let nice = args.query_nice;
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("loadgen-scan")
                // SAFETY: nice(2) changes only the calling thread's priority
                // (Linux keeps it per thread).
                .on_thread_start(move || unsafe {
                    let _ = libc::nice(nice);
                })
                .enable_all()
                .build()
                .context("start the scanners' runtime")?,
        )
    } else {
        None
    };
    let scan_handle = scan_rt
        .as_ref()
        .map(|rt| rt.handle().clone())
        .unwrap_or_else(tokio::runtime::Handle::current);
    let scanners: Vec<_> = (0..args.query_concurrency)
        .map(|_| {
            scan_handle.spawn(query::scanner(
                query_addr.clone(),
                auth.clone(),
                args.namespace.clone(),
                Arc::clone(&shared),
            ))
        })
        .collect();
    let progress = (!args.quiet).then(|| {
        tokio::spawn(progress_line(
            Arc::clone(&shared),
            writer_stats.clone(),
            start,
        ))
    });

    let all_done = || writers.iter().all(|w| w.is_finished());
    if !warm_up.is_zero() {
        while start.elapsed() < warm_up && !all_done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        before = Some(snapshot(&args, &shared).await);
        shared.measuring.store(true, Ordering::Relaxed);
    }
    let before = before.expect("taken at start or after the warm-up");
    let deadline = duration.map(|d| before.at + d);
    loop {
        if all_done() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = snapshot(&args, &shared).await;
    shared.measuring.store(false, Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    let server_mem = args.server_pid.and_then(stats::proc_rss_mib);
    for w in writers {
        // In-flight requests finish (uncounted); a hung server gets 60 s.
        if tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .is_err()
        {
            eprintln!("a writer did not finish within 60 s of the end");
        }
    }
    let mut scans = Vec::new();
    for s in scanners {
        if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(60), s).await {
            scans.push(st);
        }
    }
    if let Some(rt) = scan_rt {
        // Dropping a runtime inside another one must not block.
        rt.shutdown_background();
    }
    if let Some(p) = progress {
        let _ = p.await;
    }

    // Fold the writers' results.
    let mut latency = new_hist();
    let mut service = new_hist();
    let mut errors = BTreeMap::new();
    let mut error_examples = BTreeMap::new();
    let (mut rows, mut bytes, mut requests) = (0u64, 0u64, 0u64);
    let mut last_ack = None;
    for s in &writer_stats {
        let s = s.lock().expect("writer stats lock");
        rows += s.rows;
        bytes += s.bytes;
        requests += s.requests;
        latency.add(&s.latency).expect("same histogram bounds");
        service.add(&s.service).expect("same histogram bounds");
        for (k, v) in &s.errors {
            *errors.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &s.error_examples {
            error_examples.entry(k.clone()).or_insert_with(|| v.clone());
        }
        last_ack = last_ack.max(s.last_ack);
    }
    // With a row count the window ends at the last acknowledgement.
    let end = match deadline {
        Some(_) => after.at,
        None => last_ack.unwrap_or(after.at).max(before.at),
    };
    let secs = (end - before.at).as_secs_f64().max(1e-9);
    let client_cpu = after.client_cpu - before.client_cpu;
    let server = match (args.server_pid, before.server_cpu, after.server_cpu) {
        (Some(pid), Some(a), Some(b)) => Some(ServerProcess {
            pid,
            cpu_seconds: b - a,
            cores: (b - a) / secs,
            rss_mib_end: server_mem.map_or(0.0, |m| m.0),
            rss_peak_mib: server_mem.map_or(0.0, |m| m.1),
        }),
        _ => None,
    };
    let server_metrics = match (&before.metrics, &after.metrics) {
        (Some(a), Some(b)) => Some(ServerMetrics::between(a, b, secs)),
        _ => None,
    };
    let queries = (args.query_concurrency > 0).then(|| {
        let mut lat = new_hist();
        let mut first = new_hist();
        let mut q = stats::QueryReport {
            concurrency: args.query_concurrency,
            ..Default::default()
        };
        let mut scanned = 0u64;
        for s in &scans {
            q.scans += s.scans;
            scanned += s.rows;
            lat.add(&s.latency).expect("same histogram bounds");
            first.add(&s.first_batch).expect("same histogram bounds");
            for (k, v) in &s.errors {
                *q.errors.entry(k.clone()).or_insert(0) += v;
            }
        }
        q.rows_per_scan_mean = if q.scans > 0 {
            scanned as f64 / q.scans as f64
        } else {
            0.0
        };
        q.rows_per_sec = scanned as f64 / secs;
        q.latency = Latency::of(&lat);
        q.first_batch = Latency::of(&first);
        q
    });

    Ok(Report {
        config: RunConfig {
            target: args.target.name().into(),
            addr,
            namespace: args.namespace.clone(),
            hosts: args.hosts,
            batch_lines: args.batch_lines,
            writers: args.writers,
            rate_rows_per_sec: args.rate,
            duplicates: args.duplicates,
            duration_s: duration.map(|d| d.as_secs_f64()),
            rows: args.rows,
            warmup_s: warm_up.as_secs_f64(),
            query_concurrency: args.query_concurrency,
            query_nice: args.query_nice,
            machine_load_before: load_before,
        },
        elapsed_s: secs,
        rows,
        requests,
        payload_bytes: bytes,
        rows_per_sec: rows as f64 / secs,
        mb_per_sec: bytes as f64 / secs / 1e6,
        field_values_per_sec: (rows * FIELD_KEYS.len() as u64) as f64 / secs,
        requests_per_sec: requests as f64 / secs,
        latency: Latency::of(&latency),
        service_latency: args.rate.map(|_| Latency::of(&service)),
        errors,
        error_examples,
        client_cpu_seconds: client_cpu,
        client_cores: client_cpu / secs,
        client_generate_seconds: (after.gen_nanos - before.gen_nanos) as f64 / 1e9,
        server,
        server_metrics,
        queries,
    })
}

/// One line per second on stderr: the last second's rate and latency.
async fn progress_line(shared: Arc<Shared>, writers: Vec<Arc<Mutex<WriterStats>>>, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut rows0, mut bytes0, mut req0) = (0u64, 0u64, 0u64);
    let mut t0 = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let rows = shared.rows.load(Ordering::Relaxed);
        let bytes = shared.bytes.load(Ordering::Relaxed);
        let req = shared.requests.load(Ordering::Relaxed);
        let now = Instant::now();
        let dt = (now - t0).as_secs_f64().max(1e-9);
        let mut h = new_hist();
        for w in &writers {
            let mut s = w.lock().expect("writer stats lock");
            h.add(&s.interval).expect("same histogram bounds");
            s.interval.reset();
        }
        let l = Latency::of(&h);
        eprintln!(
            "[{:>5.0}s]{} {:>11} rows/s {:>8.1} MB/s {:>7.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  errors {}  total {}",
            (now - start).as_secs_f64(),
            if shared.measuring.load(Ordering::Relaxed) {
                " "
            } else {
                "w"
            },
            stats::thousands((rows - rows0) as f64 / dt),
            (bytes - bytes0) as f64 / dt / 1e6,
            (req - req0) as f64 / dt,
            l.p50_ms,
            l.p99_ms,
            shared.errors.load(Ordering::Relaxed),
            stats::thousands(rows as f64),
        );
        (rows0, bytes0, req0, t0) = (rows, bytes, req, now);
    }
}
