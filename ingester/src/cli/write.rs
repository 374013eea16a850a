//! `sluice-ingester write`: line protocol from files or stdin into one
//! ingester.
//!
//! Topology: a blocking reader thread cuts the inputs into batches of whole
//! lines ([`super::batch`]) and hands them over a channel of capacity
//! `--concurrency`; the async loop keeps at most `--concurrency` `Write` RPCs
//! in flight on one HTTP/2 connection. So memory is bounded by about
//! `2 × concurrency` batches, and a slow server slows the reader down rather
//! than filling memory.
//!
//! Failure handling: a refused write changes nothing on the server, so a
//! batch is either fully written or not at all. UNAVAILABLE and
//! RESOURCE_EXHAUSTED (draining, buffer full, persist queue full) are retried
//! with exponential backoff, up to `--max-retries` times; anything else (a
//! malformed line, a type conflict) is reported with the server's message, its
//! line number translated to the line of the input file, and the run goes on
//! (or stops with `--stop-on-error`, after the batches already in flight
//! finish). A batch with no answer within `--timeout` is counted as failed:
//! it may or may not have been written, and it is not retried.
//!
//! Ordering: with `--concurrency` above 1, batches can be applied out of
//! order; points with the same series and timestamp in different batches may
//! then resolve either way. `--concurrency 1` keeps input order.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_proto::v1::write_service_client::WriteServiceClient;
use sluice_proto::v1::{self, write_request};
use tokio::sync::{mpsc, oneshot};

use super::batch::{Batch, BatchInfo, Batcher, Input, InputError};
use super::{ConnectArgs, MAX_MESSAGE_BYTES, describe_status, human_bytes, thousands};

/// Timestamp precision of the input's line protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// Nanoseconds.
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl PrecisionArg {
    fn to_proto(self) -> v1::Precision {
        match self {
            Self::Ns => v1::Precision::Nanoseconds,
            Self::Us => v1::Precision::Microseconds,
            Self::Ms => v1::Precision::Milliseconds,
            Self::S => v1::Precision::Seconds,
        }
    }
}

/// How `write` reports progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A progress bar when stderr is a terminal, else a log line every 10 s.
    Auto,
    /// Always a progress bar.
    Bar,
    /// A log line every 10 s.
    Log,
    /// Only errors and the final summary.
    None,
}

/// Write line protocol to an ingester.
#[derive(Debug, Clone, clap::Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// Namespace (database / bucket) to write to; created on first write.
    #[arg(long, short = 'n', env = "SLUICE_NAMESPACE")]
    pub namespace: String,

    /// Precision of the timestamps in the input.
    #[arg(long, env = "SLUICE_PRECISION", value_enum, default_value_t = PrecisionArg::Ns)]
    pub precision: PrecisionArg,

    /// Lines (rows) per Write request. Blank and comment lines do not count.
    #[arg(long, env = "SLUICE_BATCH_LINES", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_lines: u64,

    /// A batch also closes once it holds this many bytes (a longer single
    /// line is sent alone). Keep it under the server's request size limit.
    #[arg(long, env = "SLUICE_BATCH_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=MAX_MESSAGE_BYTES as u64 / 2))]
    pub batch_bytes: u64,

    /// Write requests in flight at once. Above 1, batches may be applied out
    /// of input order.
    #[arg(long, env = "SLUICE_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub concurrency: u64,

    /// Retries of a batch refused with UNAVAILABLE or RESOURCE_EXHAUSTED,
    /// with exponential backoff from 100 ms up to 10 s.
    #[arg(long, env = "SLUICE_MAX_RETRIES", default_value_t = 5)]
    pub max_retries: u32,

    /// Give up on a request with no answer after this long (the batch may or
    /// may not have been written; it is not retried).
    #[arg(long, env = "SLUICE_WRITE_TIMEOUT", default_value = "60s", value_parser = super::parse_duration)]
    pub timeout: Duration,

    /// Stop at the first refused batch (batches in flight still finish).
    /// Without it, every batch is tried and the exit status is non-zero if
    /// any was refused.
    #[arg(long, env = "SLUICE_STOP_ON_ERROR")]
    pub stop_on_error: bool,

    /// Progress report on stderr.
    #[arg(long, env = "SLUICE_PROGRESS", value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Line protocol files, read in order; `-` or none means stdin. Gzip
    /// input (by its magic bytes) is decompressed.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Counts for progress and the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Totals {
    batches: u64,
    rows: u64,
    /// Bytes of the batches written.
    bytes: u64,
    /// Bytes of every batch answered, written or refused (the bar's position).
    processed: u64,
    failed_batches: u64,
    failed_lines: u64,
    retries: u64,
}

/// Why one batch was not written.
#[derive(Debug)]
enum BatchFailure {
    Refused { status: tonic::Status, retries: u32 },
    Timeout(Duration),
}

/// Result of one batch: its info, bytes, and the rows written or the failure.
type Outcome = (BatchInfo, usize, u32, Result<u64, BatchFailure>);

/// Runs `sluice-ingester write`.
pub async fn run_write(args: WriteArgs) -> anyhow::Result<()> {
    if args.namespace.is_empty() {
        anyhow::bail!("--namespace must not be empty");
    }
    let inputs: Vec<Input> = if args.files.is_empty() {
        vec![Input::Stdin]
    } else {
        args.files.iter().cloned().map(Input::from_arg).collect()
    };
    if inputs.iter().filter(|i| **i == Input::Stdin).count() > 1 {
        anyhow::bail!("stdin (`-`) can be named only once");
    }
    // Open every file once up front: a typo fails before anything is sent.
    for input in inputs.iter().filter(|i| **i != Input::Stdin) {
        input.open()?;
    }
    let total_bytes: Option<u64> = inputs.iter().map(Input::plain_size).sum();
    if inputs.contains(&Input::Stdin) && std::io::stdin().is_terminal() {
        eprintln!("reading line protocol from the terminal (end with Ctrl-D)");
    }

    let channel = args.connect.connect().await?;
    let client = WriteServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let concurrency = usize::try_from(args.concurrency).unwrap_or(1).max(1);
    let (tx, mut rx) = mpsc::channel::<Batch>(concurrency);
    let (batch_lines, batch_bytes) = (
        args.batch_lines,
        usize::try_from(args.batch_bytes).unwrap_or(usize::MAX),
    );
    // A plain thread, not tokio's blocking pool: after --stop-on-error it may
    // sit in a read of stdin forever, and must not keep the process alive.
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-write-reader".into())
        .spawn(move || {
            // The receiver is gone only if the run already ended.
            let _ = done_tx.send(read_inputs(&inputs, batch_lines, batch_bytes, &tx));
        })
        .map_err(|e| anyhow::anyhow!("cannot start the input reader thread: {e}"))?;

    let sender = Sender {
        client,
        namespace: args.namespace.clone(),
        precision: args.precision.to_proto() as i32,
        max_retries: args.max_retries,
        timeout: args.timeout,
    };
    let progress = Progress::new(args.progress, total_bytes);
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut in_flight = FuturesUnordered::new();
    let mut input_open = true;
    let mut stopped = false;
    let mut tick = tokio::time::interval(LOG_INTERVAL);
    tick.tick().await; // the first tick is immediate

    loop {
        let room = input_open && in_flight.len() < concurrency;
        if !room && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            next = rx.recv(), if room => match next {
                Some(batch) => in_flight.push(sender.send(batch)),
                None => input_open = false,
            },
            Some((info, bytes, retries, result)) = in_flight.next() => {
                totals.batches += 1;
                totals.retries += u64::from(retries);
                totals.processed += bytes as u64;
                match result {
                    Ok(rows) => {
                        totals.rows += rows;
                        totals.bytes += bytes as u64;
                    }
                    Err(failure) => {
                        totals.failed_batches += 1;
                        totals.failed_lines += info.data_lines;
                        progress.println(&failure_message(&info, &failure));
                        if args.stop_on_error && input_open {
                            input_open = false;
                            stopped = true;
                            rx.close();
                        }
                    }
                }
                progress.update(&totals, started.elapsed());
            },
            _ = tick.tick() => progress.log(&totals, started.elapsed()),
        }
    }
    // A reader still running (after --stop-on-error) stops at its next batch.
    drop(rx);
    let elapsed = started.elapsed();
    progress.finish();
    eprintln!("{}", summary(&totals, elapsed));

    if !stopped {
        // The channel closed, so the reader has finished and sent its result.
        match done_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("the input reader thread panicked"),
        }
    }
    if totals.failed_batches > 0 {
        anyhow::bail!(
            "{} of {} batches were refused ({} lines not written)",
            thousands(totals.failed_batches),
            thousands(totals.batches),
            thousands(totals.failed_lines)
        );
    }
    Ok(())
}

/// Reads every input in order, handing whole-line batches to the sender.
/// Returns early (without error) once the receiving side is gone.
fn read_inputs(
    inputs: &[Input],
    batch_lines: u64,
    batch_bytes: usize,
    tx: &mpsc::Sender<Batch>,
) -> Result<(), InputError> {
    for input in inputs {
        let name = input.name();
        let mut reader = input.open()?;
        let mut batcher = Batcher::new(Arc::clone(&name), batch_lines, batch_bytes);
        loop {
            while let Some(batch) = batcher.next_batch() {
                if tx.blocking_send(batch).is_err() {
                    return Ok(());
                }
            }
            match batcher.read_from(&mut reader) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(InputError::Read { name, source }),
            }
        }
        batcher.finish();
        while let Some(batch) = batcher.next_batch() {
            if tx.blocking_send(batch).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Everything needed to send one batch, shared by the in-flight requests.
#[derive(Debug)]
struct Sender {
    client: WriteServiceClient<super::GrpcChannel>,
    namespace: String,
    precision: i32,
    max_retries: u32,
    timeout: Duration,
}

impl Sender {
    /// Sends one batch, retrying transient refusals.
    fn send(&self, batch: Batch) -> impl Future<Output = Outcome> + use<> {
        let mut client = self.client.clone();
        let namespace = self.namespace.clone();
        let (precision, max_retries, timeout) = (self.precision, self.max_retries, self.timeout);
        async move {
            let Batch { info, body } = batch;
            let bytes = body.len();
            let mut retries = 0;
            loop {
                let request = v1::WriteRequest {
                    namespace: namespace.clone(),
                    payload: Some(write_request::Payload::LineProtocol(body.clone())),
                    precision,
                };
                let result = match tokio::time::timeout(timeout, client.write(request)).await {
                    Err(_) => Err(BatchFailure::Timeout(timeout)),
                    Ok(Ok(response)) => Ok(response.into_inner().rows),
                    Ok(Err(status)) if retries < max_retries && is_retryable(&status) => {
                        tokio::time::sleep(backoff(retries)).await;
                        retries += 1;
                        continue;
                    }
                    Ok(Err(status)) => Err(BatchFailure::Refused { status, retries }),
                };
                return (info, bytes, retries, result);
            }
        }
    }
}

/// Transient refusals: draining/starting (UNAVAILABLE), memory or queue
/// full (RESOURCE_EXHAUSTED) — but not a request over the size limit, which
/// no retry fixes.
fn is_retryable(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::ResourceExhausted => !status.message().contains("over the limit"),
        _ => false,
    }
}

/// 100 ms, 200 ms, 400 ms, … capped at 10 s.
fn backoff(retry: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << retry.min(7))).min(Duration::from_secs(10))
}

fn failure_message(info: &BatchInfo, failure: &BatchFailure) -> String {
    let lines = format!(
        "{} lines {}–{}",
        info.source,
        info.first_line,
        info.last_line()
    );
    match failure {
        BatchFailure::Refused { status, retries } => {
            let translated =
                tonic::Status::new(status.code(), info.translate_message(status.message()));
            let mut msg = format!(
                "error: batch of {lines} refused: {}",
                describe_status(&translated)
            );
            if *retries > 0 {
                msg.push_str(&format!(" (after {retries} retries)"));
            }
            if status.code() == tonic::Code::ResourceExhausted && !is_retryable(status) {
                msg.push_str("; lower --batch-bytes / --batch-lines");
            }
            msg
        }
        BatchFailure::Timeout(t) => format!(
            "error: batch of {lines}: no answer within {t:?}; it may or may not have been written"
        ),
    }
}

fn rate(count: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        (count as f64 / secs) as u64
    } else {
        0
    }
}

fn progress_line(t: &Totals, elapsed: Duration) -> String {
    let mut s = format!(
        "{} rows ({} rows/s), {} in {} batches",
        thousands(t.rows),
        thousands(rate(t.rows, elapsed)),
        human_bytes(t.bytes),
        thousands(t.batches),
    );
    if t.failed_batches > 0 {
        s.push_str(&format!(", {} refused", thousands(t.failed_batches)));
    }
    if t.retries > 0 {
        s.push_str(&format!(", {} retries", thousands(t.retries)));
    }
    s
}

fn summary(t: &Totals, elapsed: Duration) -> String {
    format!(
        "wrote {} rows in {} batches ({}) in {:.1} s: {} rows/s; {} batches refused ({} lines), {} retries",
        thousands(t.rows),
        thousands(t.batches - t.failed_batches),
        human_bytes(t.bytes),
        elapsed.as_secs_f64(),
        thousands(rate(t.rows, elapsed)),
        thousands(t.failed_batches),
        thousands(t.failed_lines),
        thousands(t.retries),
    )
}

/// How often the non-TTY progress line is printed.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Progress on stderr: a bar, a periodic log line, or nothing.
enum Progress {
    Bar(ProgressBar),
    Log,
    Quiet,
}

impl Progress {
    fn new(mode: ProgressMode, total_bytes: Option<u64>) -> Self {
        let tty = std::io::stderr().is_terminal();
        match mode {
            ProgressMode::None => Self::Quiet,
            ProgressMode::Log => Self::Log,
            ProgressMode::Auto if !tty => Self::Log,
            ProgressMode::Auto | ProgressMode::Bar => {
                let bar = match total_bytes {
                    Some(total) => {
                        let bar = ProgressBar::with_draw_target(
                            Some(total),
                            ProgressDrawTarget::stderr(),
                        );
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, eta {eta}) {msg}",
                            )
                            .expect("valid progress template")
                            .progress_chars("=> "),
                        );
                        bar
                    }
                    None => {
                        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{spinner} {elapsed_precise} {bytes} ({binary_bytes_per_sec}) {msg}",
                            )
                            .expect("valid progress template"),
                        );
                        bar
                    }
                };
                bar.enable_steady_tick(Duration::from_millis(200));
                Self::Bar(bar)
            }
        }
    }

    fn update(&self, t: &Totals, elapsed: Duration) {
        if let Self::Bar(bar) = self {
            bar.set_position(t.processed);
            bar.set_message(progress_line(t, elapsed));
        }
    }

    fn log(&self, t: &Totals, elapsed: Duration) {
        if let Self::Log = self {
            eprintln!("{}", progress_line(t, elapsed));
        }
    }

    fn println(&self, line: &str) {
        match self {
            Self::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            Self::Log | Self::Quiet => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
#[path = "write_rpc_tests.rs"]
mod rpc_tests;

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::*;

    #[test]
    fn failure_messages_name_the_input_line() {
        let info = BatchInfo {
            source: Arc::from("in.lp"),
            first_line: 11,
            physical_lines: 10,
            data_lines: 10,
        };
        let refused = BatchFailure::Refused {
            status: Status::invalid_argument("line 4, column 2: missing field key"),
            retries: 0,
        };
        assert_eq!(
            failure_message(&info, &refused),
            "error: batch of in.lp lines 11–20 refused: INVALID_ARGUMENT: line 14 of in.lp, column 2: missing field key"
        );
        let too_big = BatchFailure::Refused {
            status: Status::resource_exhausted("request of 9 bytes is over the limit of 8 bytes"),
            retries: 0,
        };
        assert!(
            failure_message(&info, &too_big).ends_with("; lower --batch-bytes / --batch-lines")
        );
    }

    #[test]
    fn retries_only_what_a_retry_can_fix() {
        assert!(is_retryable(&Status::unavailable("draining")));
        assert!(is_retryable(&Status::resource_exhausted(
            "buffer memory is full"
        )));
        assert!(!is_retryable(&Status::resource_exhausted(
            "request of 9 bytes is over the limit of 8 bytes"
        )));
        assert!(!is_retryable(&Status::invalid_argument("line 1: x")));
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }

    #[test]
    fn progress_bars_build_and_update() {
        for total in [Some(1000), None] {
            let p = Progress::new(ProgressMode::Bar, total);
            assert!(matches!(p, Progress::Bar(_)));
            let t = Totals {
                batches: 1,
                rows: 10,
                bytes: 500,
                processed: 500,
                ..Totals::default()
            };
            p.update(&t, Duration::from_secs(1));
            p.println("a line");
            p.finish();
        }
        assert!(matches!(
            Progress::new(ProgressMode::None, None),
            Progress::Quiet
        ));
        assert!(matches!(
            Progress::new(ProgressMode::Log, None),
            Progress::Log
        ));
    }

    #[test]
    fn summary_reads_well() {
        let t = Totals {
            batches: 10,
            rows: 40_000,
            bytes: 2 * 1024 * 1024,
            processed: 0,
            failed_batches: 1,
            failed_lines: 5000,
            retries: 2,
        };
        assert_eq!(
            summary(&t, Duration::from_secs(2)),
            "wrote 40,000 rows in 9 batches (2.0 MiB) in 2.0 s: 20,000 rows/s; 1 batches refused (5,000 lines), 2 retries"
        );
    }
}
