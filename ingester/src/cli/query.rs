//! `sluice-ingester query`: one table's data over Arrow Flight `DoGet`.
//!
//! The ticket is a protobuf `QueryRequest`. The answer is, per partition, a
//! schema message whose `app_metadata` is a `PartitionMetadata`, then that
//! partition's record batches; they are written to the output as they arrive
//! ([`super::output`]), so a large table streams in bounded memory.
//! `--limit` stops reading (and cancels the call) once enough rows arrived.
//!
//! `--show-partitions` prints each partition's metadata to stderr and warns
//! when a partition's row count differs from what its metadata announced.

use std::path::PathBuf;

use arrow_flight::Ticket;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use sluice_proto::v1;

use super::output::Output;
use super::output::QueryFormat;
use super::{CliError, ConnectArgs, MAX_MESSAGE_BYTES, thousands};

/// Query one table of an ingester.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// Namespace of the table.
    #[arg(long, short = 'n', env = "SLUICE_NAMESPACE")]
    pub namespace: String,

    /// Table (measurement) to read.
    #[arg(long, short = 't', env = "SLUICE_TABLE")]
    pub table: String,

    /// Columns to return, comma separated (default: all). `time` is always
    /// allowed.
    #[arg(long, env = "SLUICE_COLUMNS", value_delimiter = ',')]
    pub columns: Vec<String>,

    /// Earliest time to return (inclusive): RFC 3339
    /// (`2024-05-01T12:00:00Z`), a date (`2024-05-01`, midnight UTC),
    /// nanoseconds since the epoch, `now`, or `now-1h` / `now+30m`.
    /// Default: no lower bound.
    #[arg(long, env = "SLUICE_START", value_parser = parse_time, allow_hyphen_values = true)]
    pub start: Option<i64>,

    /// Latest time to return (exclusive), same forms as --start. Default: no
    /// upper bound.
    #[arg(long, env = "SLUICE_END", value_parser = parse_time, allow_hyphen_values = true)]
    pub end: Option<i64>,

    /// Output format. `table` prints tables of up to 10,000 rows each.
    #[arg(long, short = 'f', env = "SLUICE_FORMAT", value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,

    /// Write the result to this file instead of stdout (required for
    /// parquet). It appears only once complete (written as FILE.partial).
    #[arg(long, short = 'o', env = "SLUICE_OUTPUT")]
    pub output: Option<PathBuf>,

    /// Only the ingester's buffered (not yet persisted) data. By default the
    /// ingester also reads its persisted Parquet files, so every row is
    /// returned once.
    #[arg(long, env = "SLUICE_NO_PERSISTED")]
    pub no_persisted: bool,

    /// Print each partition's metadata (id, key, rows, persisted batches) to
    /// stderr.
    #[arg(long, env = "SLUICE_SHOW_PARTITIONS")]
    pub show_partitions: bool,

    /// Stop after this many rows.
    #[arg(long, env = "SLUICE_LIMIT")]
    pub limit: Option<u64>,
}

/// Why a `--start` / `--end` value or the range was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TimeError {
    #[error(
        "`{0}` is not a time: use RFC 3339 (2024-05-01T12:00:00Z), a date (2024-05-01), \
         nanoseconds since the epoch, now, or now-1h"
    )]
    Unrecognised(String),
    #[error("`{0}` is outside the range of nanosecond timestamps (years 1677–2262)")]
    OutOfRange(String),
    #[error("--start ({start}) must be before --end ({end})")]
    EmptyRange { start: i64, end: i64 },
}

/// Parses a `--start` / `--end` value into nanoseconds since the epoch.
pub(crate) fn parse_time(s: &str) -> Result<i64, TimeError> {
    parse_time_at(s, chrono::Utc::now())
}

fn parse_time_at(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64, TimeError> {
    let s = s.trim();
    let out_of_range = || TimeError::OutOfRange(s.to_owned());
    if let Ok(ns) = s.parse::<i64>() {
        return Ok(ns);
    }
    if let Some(rest) = s.strip_prefix("now") {
        let t = if rest.is_empty() {
            now
        } else {
            let (sign, d) = rest.split_at(1);
            let d = humantime::parse_duration(d.trim())
                .map_err(|_| TimeError::Unrecognised(s.to_owned()))?;
            let d = chrono::Duration::from_std(d).map_err(|_| out_of_range())?;
            match sign {
                "-" => now.checked_sub_signed(d),
                "+" => now.checked_add_signed(d),
                _ => return Err(TimeError::Unrecognised(s.to_owned())),
            }
            .ok_or_else(out_of_range)?
        };
        return t.timestamp_nanos_opt().ok_or_else(out_of_range);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt().ok_or_else(out_of_range);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_nanos_opt()
            .ok_or_else(out_of_range);
    }
    Err(TimeError::Unrecognised(s.to_owned()))
}

/// The `TimeRange` of the ticket: absent when neither bound is given; an
/// open side becomes the extreme `i64` value.
pub(crate) fn time_range(
    start: Option<i64>,
    end: Option<i64>,
) -> Result<Option<v1::TimeRange>, TimeError> {
    if start.is_none() && end.is_none() {
        return Ok(None);
    }
    let (start, end) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
    if start >= end {
        return Err(TimeError::EmptyRange { start, end });
    }
    Ok(Some(v1::TimeRange { start, end }))
}

/// Follows the partitions of the stream for `--show-partitions`.
#[derive(Debug, Default)]
struct Partitions {
    show: bool,
    count: u64,
    /// The partition being received: its announced rows and rows seen.
    current: Option<(v1::PartitionMetadata, u64)>,
    /// Printed lines, kept for tests.
    printed: Vec<String>,
}

impl Partitions {
    fn emit(&mut self, line: String) {
        eprintln!("{line}");
        self.printed.push(line);
    }

    /// A schema message: a new partition starts if it carries metadata.
    fn start(&mut self, app_metadata: &[u8]) {
        self.end_current();
        if app_metadata.is_empty() {
            return;
        }
        match v1::PartitionMetadata::decode(app_metadata) {
            Ok(meta) => {
                self.count += 1;
                if self.show {
                    self.emit(format!(
                        "partition {} `{}` from {}: {} rows, {} persisted batches{}",
                        meta.partition_id,
                        meta.partition_key,
                        if meta.ingester_id.is_empty() {
                            "?"
                        } else {
                            &meta.ingester_id
                        },
                        thousands(meta.rows),
                        meta.persisted_batches,
                        if meta.persisted {
                            " (persisted data)"
                        } else {
                            ""
                        },
                    ));
                }
                self.current = Some((meta, 0));
            }
            Err(e) => {
                if self.show {
                    self.emit(format!("warning: partition metadata does not decode: {e}"));
                }
            }
        }
    }

    fn rows(&mut self, n: usize) {
        if let Some((_, seen)) = &mut self.current {
            *seen += n as u64;
        }
    }

    fn end_current(&mut self) {
        if let Some((meta, seen)) = self.current.take()
            && self.show
            && seen != meta.rows
        {
            self.emit(format!(
                "warning: partition {} announced {} rows but sent {}",
                meta.partition_id,
                thousands(meta.rows),
                thousands(seen)
            ));
        }
    }
}

/// Runs `sluice-ingester query`.
pub async fn run_query(args: QueryArgs) -> anyhow::Result<()> {
    if args.namespace.is_empty() || args.table.is_empty() {
        anyhow::bail!("--namespace and --table must not be empty");
    }
    let range = time_range(args.start, args.end)?;
    // Before connecting, so a bad --output fails fast.
    let mut output = Output::create(args.format, args.output.as_deref())?;

    let channel = args.connect.connect().await?;
    let mut client = FlightServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let request = v1::QueryRequest {
        namespace: args.namespace.clone(),
        table: args.table.clone(),
        columns: args.columns.clone(),
        range,
        include_persisted: !args.no_persisted,
    };
    let ticket = Ticket {
        ticket: request.encode_to_vec().into(),
    };
    let stream = client
        .do_get(ticket)
        .await
        .map_err(|s| CliError::rpc("query", s))?
        .into_inner()
        .map_err(FlightError::from);
    let mut decoder = FlightDataDecoder::new(stream);

    let mut partitions = Partitions {
        show: args.show_partitions,
        ..Partitions::default()
    };
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    while remaining > 0 {
        let Some(item) = decoder.next().await else {
            break;
        };
        let item = item.map_err(|e| match e {
            FlightError::Tonic(status) => anyhow::Error::from(CliError::rpc("query", *status)),
            other => anyhow::anyhow!("query failed: the answer does not decode: {other}"),
        })?;
        match item.payload {
            DecodedPayload::Schema(schema) => {
                partitions.start(&item.inner.app_metadata);
                output.schema(&schema);
            }
            DecodedPayload::RecordBatch(batch) => {
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(batch.num_rows());
                let batch = if take < batch.num_rows() {
                    batch.slice(0, take)
                } else {
                    batch
                };
                remaining -= batch.num_rows() as u64;
                partitions.rows(batch.num_rows());
                match output.write(&batch) {
                    Ok(()) => {}
                    Err(e) if e.is_broken_pipe() => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            DecodedPayload::None => {}
        }
    }
    let limited = remaining == 0;
    if !limited {
        partitions.end_current();
    }
    drop(decoder); // cancels the call when --limit stopped early
    let to_file = args.output.as_ref().is_some_and(|p| p.as_os_str() != "-");
    let rows = match output.finish() {
        Ok(rows) => rows,
        Err(e) if e.is_broken_pipe() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if to_file || args.show_partitions {
        eprintln!(
            "{} rows from {} partitions{}{}",
            thousands(rows),
            thousands(partitions.count),
            if limited { " (stopped at --limit)" } else { "" },
            match &args.output {
                Some(p) if to_file => format!(" written to {}", p.display()),
                _ => String::new(),
            }
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "query_rpc_tests.rs"]
mod rpc_tests;

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn parses_the_time_forms() {
        let now = chrono::Utc
            .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
            .single()
            .expect("valid date");
        let now_ns = now.timestamp_nanos_opt().expect("in range");
        let hour = 3_600_000_000_000;
        assert_eq!(
            parse_time_at("1714564800000000000", now),
            Ok(1_714_564_800_000_000_000)
        );
        assert_eq!(parse_time_at("-5", now), Ok(-5));
        assert_eq!(parse_time_at("2024-05-01T12:00:00Z", now), Ok(now_ns));
        assert_eq!(
            parse_time_at("2024-05-01T14:00:00.5+02:00", now),
            Ok(now_ns + 500_000_000)
        );
        assert_eq!(parse_time_at("2024-05-01", now), Ok(now_ns - 12 * hour));
        assert_eq!(parse_time_at("now", now), Ok(now_ns));
        assert_eq!(parse_time_at("now-1h", now), Ok(now_ns - hour));
        assert_eq!(parse_time_at("now+30m", now), Ok(now_ns + hour / 2));
        assert!(matches!(
            parse_time_at("yesterday", now),
            Err(TimeError::Unrecognised(_))
        ));
        assert!(matches!(
            parse_time_at("now*1h", now),
            Err(TimeError::Unrecognised(_))
        ));
        assert!(matches!(
            parse_time_at("3000-01-01", now),
            Err(TimeError::OutOfRange(_))
        ));
    }

    #[test]
    fn builds_the_ticket_range() {
        assert_eq!(time_range(None, None), Ok(None));
        assert_eq!(
            time_range(Some(5), None),
            Ok(Some(v1::TimeRange {
                start: 5,
                end: i64::MAX
            }))
        );
        assert_eq!(
            time_range(None, Some(5)),
            Ok(Some(v1::TimeRange {
                start: i64::MIN,
                end: 5
            }))
        );
        assert_eq!(
            time_range(Some(5), Some(5)),
            Err(TimeError::EmptyRange { start: 5, end: 5 })
        );
    }

    #[test]
    fn reports_partitions_and_row_count_mismatches() {
        let mut p = Partitions {
            show: true,
            ..Partitions::default()
        };
        let meta = |id, rows| {
            v1::PartitionMetadata {
                partition_id: id,
                partition_key: "2024-05-01".into(),
                ingester_id: "ing-0".into(),
                persisted_batches: 2,
                rows,
                persisted: id == 2,
            }
            .encode_to_vec()
        };
        p.start(&meta(1, 3));
        p.rows(2);
        p.rows(1);
        p.start(&meta(2, 5));
        p.rows(4);
        p.start(&[]);
        p.end_current();
        assert_eq!(p.count, 2);
        assert_eq!(
            p.printed,
            [
                "partition 1 `2024-05-01` from ing-0: 3 rows, 2 persisted batches",
                "partition 2 `2024-05-01` from ing-0: 5 rows, 2 persisted batches (persisted data)",
                "warning: partition 2 announced 5 rows but sent 4",
            ]
        );
    }
}
