//! Measurements: latency histograms, CPU time of this process and of the
//! server, the server's Prometheus counters, and the final report.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds")
}

/// Records `d` (saturating at the histogram's top).
pub fn record(h: &mut Histogram<u64>, d: std::time::Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// User + system CPU seconds of this process (`getrusage(RUSAGE_SELF)`).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: `getrusage` only writes into the struct we pass, which is a
    // plain-old-data `rusage` fully owned by this frame.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    if rc != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// User + system CPU seconds of process `pid` (from `/proc/<pid>/stat`).
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks / if hz > 0 { hz as f64 } else { 100.0 })
}

/// Resident and peak resident memory of `pid`, in MiB.
pub fn proc_rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<f64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<f64>()
            .ok()
    };
    Some((kb("VmRSS:")? / 1024.0, kb("VmHWM:")? / 1024.0))
}

/// Sums of every `sluice_*` sample in a Prometheus text exposition, by
/// metric name (labels summed over; `_bucket` series skipped).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name_labels, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        if !name.starts_with("sluice_") {
            continue;
        }
        let key = if name.ends_with("_bucket") {
            // Buckets of the fdatasync, validate and apply histograms
            // only, keyed `name:le`.
            if !QUANTILE_BUCKETS.contains(&name) {
                continue;
            }
            let Some(le) = name_labels
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            else {
                continue;
            };
            format!("{name}:{le}")
        } else {
            name.to_string()
        };
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(key).or_insert(0.0) += v;
        }
    }
    out
}

const SYNC_BUCKETS: &str = "sluice_wal_sync_duration_seconds_bucket";
const VALIDATE_BUCKETS: &str = "sluice_write_validate_duration_seconds_bucket";
const APPLY_BUCKETS: &str = "sluice_dml_apply_duration_seconds_bucket";
/// The histograms whose quantiles the report gives.
const QUANTILE_BUCKETS: [&str; 3] = [SYNC_BUCKETS, VALIDATE_BUCKETS, APPLY_BUCKETS];

/// The upper bound (ms) of the bucket of histogram `buckets` holding
/// quantile `q` of what was observed between two scrapes; `None` if
/// nothing was.
fn quantile_bound_ms(
    buckets: &str,
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    q: f64,
) -> Option<f64> {
    let prefix = format!("{buckets}:");
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v - before.get(k).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| le * 1000.0)
}

/// What the server did during the measured window, from its metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerMetrics {
    pub wal_syncs: f64,
    pub wal_syncs_per_sec: f64,
    /// Mean fdatasync time of a group commit.
    pub wal_sync_mean_ms: f64,
    /// Upper bounds of the histogram buckets holding the p50 and p99
    /// fdatasync time (the server's buckets: 0.25, 0.5, 1, 2, 5, 10 ms…).
    pub wal_sync_p50_le_ms: Option<f64>,
    pub wal_sync_p99_le_ms: Option<f64>,
    /// Share of the window the WAL writer spent in fdatasync.
    pub wal_sync_busy: f64,
    pub wal_ops_per_sync: f64,
    pub wal_mb_written_per_sec: f64,
    /// Mean time to parse and validate one request.
    pub validate_mean_ms: f64,
    /// Upper bound of the histogram bucket holding the p99 of that.
    pub validate_p99_le_ms: Option<f64>,
    /// Mean time through the sink chain (WAL + buffer) of one request.
    pub apply_mean_ms: f64,
    /// Upper bound of the histogram bucket holding the p99 of that.
    pub apply_p99_le_ms: Option<f64>,
    /// Share of the accepted requests validated in pieces on several
    /// cores (`--write-split-bytes`).
    pub split_share: f64,
    pub persisted_rows: f64,
    pub persist_jobs: f64,
    pub persist_saturated: f64,
    pub buffer_mib_end: f64,
    pub wal_mib_end: f64,
    /// Every `sluice_*` counter's change over the window.
    pub deltas: BTreeMap<String, f64>,
}

impl ServerMetrics {
    pub fn between(
        before: &BTreeMap<String, f64>,
        after: &BTreeMap<String, f64>,
        secs: f64,
    ) -> Self {
        let d =
            |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let syncs = d("sluice_wal_syncs_total");
        let deltas = after
            .iter()
            .filter(|(k, _)| !k.contains(':'))
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v != 0.0)
            .collect();
        Self {
            wal_syncs: syncs,
            wal_syncs_per_sec: ratio(syncs, secs),
            wal_sync_mean_ms: 1000.0
                * ratio(
                    d("sluice_wal_sync_duration_seconds_sum"),
                    d("sluice_wal_sync_duration_seconds_count"),
                ),
            wal_sync_p50_le_ms: quantile_bound_ms(SYNC_BUCKETS, before, after, 0.5),
            wal_sync_p99_le_ms: quantile_bound_ms(SYNC_BUCKETS, before, after, 0.99),
            validate_p99_le_ms: quantile_bound_ms(VALIDATE_BUCKETS, before, after, 0.99),
            apply_p99_le_ms: quantile_bound_ms(APPLY_BUCKETS, before, after, 0.99),
            wal_sync_busy: ratio(d("sluice_wal_sync_duration_seconds_sum"), secs),
            wal_ops_per_sync: ratio(
                d("sluice_wal_ops_per_sync_sum"),
                d("sluice_wal_ops_per_sync_count"),
            ),
            wal_mb_written_per_sec: ratio(d("sluice_wal_bytes_written_total"), secs) / 1e6,
            validate_mean_ms: 1000.0
                * ratio(
                    d("sluice_write_validate_duration_seconds_sum"),
                    d("sluice_write_validate_duration_seconds_count"),
                ),
            apply_mean_ms: 1000.0
                * ratio(
                    d("sluice_dml_apply_duration_seconds_sum"),
                    d("sluice_dml_apply_duration_seconds_count"),
                ),
            split_share: ratio(
                d("sluice_write_split_requests_total"),
                d("sluice_write_validate_duration_seconds_count"),
            ),
            persisted_rows: d("sluice_persist_rows_total"),
            persist_jobs: d("sluice_persist_total_duration_seconds_count"),
            persist_saturated: d("sluice_persist_saturated_total"),
            buffer_mib_end: after.get("sluice_buffer_bytes").copied().unwrap_or(0.0) / 1048576.0,
            wal_mib_end: after.get("sluice_wal_bytes").copied().unwrap_or(0.0) / 1048576.0,
            deltas,
        }
    }
}

/// The server process during the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerProcess {
    pub pid: u32,
    pub cpu_seconds: f64,
    /// CPU seconds per wall second (2.0 = both cores of a 2-core machine).
    pub cores: f64,
    pub rss_mib_end: f64,
    pub rss_peak_mib: f64,
}

/// Concurrent Flight scans during the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueryReport {
    pub concurrency: usize,
    pub scans: u64,
    pub errors: BTreeMap<String, u64>,
    pub rows_per_scan_mean: f64,
    pub rows_per_sec: f64,
    pub latency: Latency,
    pub first_batch: Latency,
}

/// The run's configuration as reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunConfig {
    pub target: String,
    pub addr: String,
    pub namespace: String,
    pub hosts: u64,
    pub batch_lines: u64,
    pub writers: usize,
    pub rate_rows_per_sec: Option<f64>,
    pub duplicates: f64,
    pub duration_s: Option<f64>,
    pub rows: Option<u64>,
    pub warmup_s: f64,
    pub query_concurrency: usize,
    /// Nice steps of the scanners' threads below the writers (0: shared).
    pub query_nice: i32,
    pub machine_load_before: String,
}

/// The whole result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub config: RunConfig,
    /// Measured window (after warm-up).
    pub elapsed_s: f64,
    pub rows: u64,
    pub requests: u64,
    pub payload_bytes: u64,
    pub rows_per_sec: f64,
    pub mb_per_sec: f64,
    pub field_values_per_sec: f64,
    pub requests_per_sec: f64,
    /// Acknowledgement latency of successful requests. With `--rate`, from
    /// the moment the request was due (so a client that falls behind is
    /// charged for it: no coordinated omission); otherwise from sending.
    pub latency: Latency,
    /// With `--rate`: from actually sending to the acknowledgement.
    pub service_latency: Option<Latency>,
    /// Failed requests by status (`grpc:RESOURCE_EXHAUSTED`, `http:429`, `io`…).
    pub errors: BTreeMap<String, u64>,
    /// First error message seen per status, to tell causes apart.
    pub error_examples: BTreeMap<String, String>,
    pub client_cpu_seconds: f64,
    pub client_cores: f64,
    /// Time spent building payloads (inside the client CPU above).
    pub client_generate_seconds: f64,
    pub server: Option<ServerProcess>,
    pub server_metrics: Option<ServerMetrics>,
    pub queries: Option<QueryReport>,
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(
            s,
            "target {} {}  ns={}  hosts={} batch={} writers={}{}{}  dups={}  window {:.1}s (warm-up {:.0}s)",
            c.target,
            c.addr,
            c.namespace,
            c.hosts,
            c.batch_lines,
            c.writers,
            c.rate_rows_per_sec
                .map(|r| format!(" rate={}", thousands(r)))
                .unwrap_or_default(),
            if c.query_concurrency > 0 && c.query_nice > 0 {
                format!(" scans={} (nice {})", c.query_concurrency, c.query_nice)
            } else if c.query_concurrency > 0 {
                format!(" scans={}", c.query_concurrency)
            } else {
                String::new()
            },
            c.duplicates,
            self.elapsed_s,
            c.warmup_s
        );
        let _ = writeln!(s, "{:<28} {:>16}", "rows/s", thousands(self.rows_per_sec));
        let _ = writeln!(
            s,
            "{:<28} {:>16}",
            "field values/s",
            thousands(self.field_values_per_sec)
        );
        let _ = writeln!(s, "{:<28} {:>16.1}", "MB/s (payload)", self.mb_per_sec);
        let _ = writeln!(s, "{:<28} {:>16.1}", "requests/s", self.requests_per_sec);
        let _ = writeln!(
            s,
            "{:<28} {:>16}",
            "rows acknowledged",
            thousands(self.rows as f64)
        );
        let lat = |s: &mut String, name: &str, l: &Latency| {
            let _ = writeln!(
                s,
                "{name:<28} p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (n={})",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
            );
        };
        lat(&mut s, "ack latency ms", &self.latency);
        if let Some(l) = &self.service_latency {
            lat(&mut s, "  service time ms", l);
        }
        if self.errors.is_empty() {
            let _ = writeln!(s, "{:<28} {:>16}", "errors", 0);
        } else {
            for (k, v) in &self.errors {
                let ex = self.error_examples.get(k).map(String::as_str).unwrap_or("");
                let _ = writeln!(
                    s,
                    "{:<28} {:>16}  e.g. {}",
                    format!("errors {k}"),
                    v,
                    truncate(ex, 120)
                );
            }
        }
        let _ = writeln!(
            s,
            "{:<28} {:>16.2}  ({:.2} cores; payload building {:.2}s)",
            "client CPU s",
            self.client_cpu_seconds,
            self.client_cores,
            self.client_generate_seconds
        );
        if let Some(p) = &self.server {
            let _ = writeln!(
                s,
                "{:<28} {:>16.2}  ({:.2} cores; RSS {:.0} MiB, peak {:.0} MiB)",
                "server CPU s", p.cpu_seconds, p.cores, p.rss_mib_end, p.rss_peak_mib
            );
        }
        if let Some(m) = &self.server_metrics {
            let _ = writeln!(
                s,
                "{:<28} {:>16.1}  (mean fdatasync {:.3} ms, WAL writer busy syncing {:.0}%, {:.1} ops/sync, WAL {:.1} MB/s)",
                "server WAL syncs/s",
                m.wal_syncs_per_sec,
                m.wal_sync_mean_ms,
                100.0 * m.wal_sync_busy,
                m.wal_ops_per_sync,
                m.wal_mb_written_per_sec
            );
            // Bucket bounds such as 0.00512 s print as 5.12 ms, not 5.1199….
            let bound = |b: Option<f64>| {
                b.map_or("-".to_string(), |b| {
                    let b = format!("{b:.3}");
                    format!("<= {} ms", b.trim_end_matches('0').trim_end_matches('.'))
                })
            };
            let _ = writeln!(
                s,
                "{:<28} {:>16}  (p99 {})",
                "server fdatasync p50",
                bound(m.wal_sync_p50_le_ms),
                bound(m.wal_sync_p99_le_ms)
            );
            let _ = writeln!(
                s,
                "{:<28} {:>16.3}  (p99 {}; {:.0}% split across cores)",
                "server validate ms/req",
                m.validate_mean_ms,
                bound(m.validate_p99_le_ms),
                100.0 * m.split_share
            );
            let _ = writeln!(
                s,
                "{:<28} {:>16.3}  (p99 {})",
                "server WAL + apply ms/req",
                m.apply_mean_ms,
                bound(m.apply_p99_le_ms)
            );
            let _ = writeln!(
                s,
                "{:<28} {:>16}  ({} jobs, saturated {}x; buffer {:.0} MiB, WAL {:.0} MiB at end)",
                "server persisted rows",
                thousands(m.persisted_rows),
                m.persist_jobs,
                m.persist_saturated,
                m.buffer_mib_end,
                m.wal_mib_end
            );
        }
        if let Some(q) = &self.queries {
            let _ = writeln!(
                s,
                "{:<28} {:>16}  ({} concurrent, {} rows/scan, {} rows/s scanned)",
                "flight scans",
                q.scans,
                q.concurrency,
                thousands(q.rows_per_scan_mean),
                thousands(q.rows_per_sec)
            );
            lat(&mut s, "  scan latency ms", &q.latency);
            lat(&mut s, "  first batch ms", &q.first_batch);
            for (k, v) in &q.errors {
                let _ = writeln!(s, "  scan errors {k:<16} {v:>8}");
            }
        }
        s
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_over_labels_and_skip_buckets() {
        let text = "# HELP x\n\
            sluice_wal_syncs_total 10\n\
            sluice_write_rows_total{namespace=\"a\"} 5\n\
            sluice_write_rows_total{namespace=\"b\"} 7\n\
            sluice_wal_sync_duration_seconds_bucket{le=\"0.1\"} 3\n\
            sluice_wal_sync_duration_seconds_sum 0.5\n\
            other_metric 1\n";
        let m = parse_metrics(text);
        assert_eq!(m.get("sluice_wal_syncs_total"), Some(&10.0));
        assert_eq!(m.get("sluice_write_rows_total"), Some(&12.0));
        assert_eq!(m.get("sluice_wal_sync_duration_seconds_sum"), Some(&0.5));
        assert!(!m.contains_key("sluice_wal_sync_duration_seconds_bucket"));
        assert_eq!(
            m.get("sluice_wal_sync_duration_seconds_bucket:0.1"),
            Some(&3.0)
        );
        assert!(!m.contains_key("other_metric"));
    }

    #[test]
    fn sync_quantiles_come_from_bucket_deltas() {
        let before = parse_metrics(
            "sluice_wal_sync_duration_seconds_bucket{le=\"0.001\"} 50\n\
             sluice_wal_sync_duration_seconds_bucket{le=\"0.005\"} 100\n\
             sluice_wal_sync_duration_seconds_bucket{le=\"+Inf\"} 100\n",
        );
        // Window: 10 syncs <= 1 ms, 80 in (1, 5] ms, 10 above 5 ms.
        let after = parse_metrics(
            "sluice_wal_sync_duration_seconds_bucket{le=\"0.001\"} 60\n\
             sluice_wal_sync_duration_seconds_bucket{le=\"0.005\"} 190\n\
             sluice_wal_sync_duration_seconds_bucket{le=\"+Inf\"} 200\n",
        );
        let m = ServerMetrics::between(&before, &after, 1.0);
        assert_eq!(m.wal_sync_p50_le_ms, Some(5.0));
        assert_eq!(m.wal_sync_p99_le_ms, Some(f64::INFINITY));
        assert!(m.deltas.keys().all(|k| !k.contains(':')));
        let none = ServerMetrics::between(&before, &before, 1.0);
        assert_eq!(none.wal_sync_p50_le_ms, None);
    }

    #[test]
    fn validate_and_apply_quantiles_come_from_their_own_buckets() {
        let before = parse_metrics("");
        // 98 validations <= 2.56 ms, 2 in (2.56, 5.12]; 100 applies <= 1 ms.
        let after = parse_metrics(
            "sluice_write_validate_duration_seconds_bucket{le=\"0.00256\"} 98\n\
             sluice_write_validate_duration_seconds_bucket{le=\"0.00512\"} 100\n\
             sluice_write_validate_duration_seconds_bucket{le=\"+Inf\"} 100\n\
             sluice_dml_apply_duration_seconds_bucket{le=\"0.001\"} 100\n\
             sluice_dml_apply_duration_seconds_bucket{le=\"+Inf\"} 100\n\
             sluice_other_duration_seconds_bucket{le=\"0.001\"} 7\n",
        );
        assert!(!after.keys().any(|k| k.starts_with("sluice_other")));
        let m = ServerMetrics::between(&before, &after, 1.0);
        assert_eq!(
            m.validate_p99_le_ms.map(|b| (b * 100.0).round()),
            Some(512.0)
        );
        assert_eq!(m.apply_p99_le_ms, Some(1.0));
        assert_eq!(m.wal_sync_p99_le_ms, None);
    }

    #[test]
    fn server_metrics_are_deltas_over_the_window() {
        let before = parse_metrics(
            "sluice_wal_syncs_total 100\nsluice_wal_sync_duration_seconds_sum 1\nsluice_wal_sync_duration_seconds_count 100\n",
        );
        let after = parse_metrics(
            "sluice_wal_syncs_total 300\nsluice_wal_sync_duration_seconds_sum 2\nsluice_wal_sync_duration_seconds_count 300\n",
        );
        let m = ServerMetrics::between(&before, &after, 2.0);
        assert_eq!(m.wal_syncs, 200.0);
        assert_eq!(m.wal_syncs_per_sec, 100.0);
        assert!((m.wal_sync_mean_ms - 5.0).abs() < 1e-9);
        assert!((m.wal_sync_busy - 0.5).abs() < 1e-9);
    }

    #[test]
    fn own_cpu_time_grows() {
        let a = self_cpu_seconds();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let b = self_cpu_seconds();
        assert!(b > a, "{a} -> {b}");
        let me = proc_cpu_seconds(std::process::id()).expect("own /proc stat");
        assert!(me > 0.0);
    }

    #[test]
    fn thousands_separates() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
    }
}
