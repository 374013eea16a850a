//! The TSBS "devops cpu"-shaped workload, generated up front so that sending
//! it costs the client little CPU.
//!
//! # Shape
//!
//! Measurement `cpu`, 10 tags per host (as TSBS: `hostname`, `region`,
//! `datacenter`, `rack`, `os`, `arch`, `team`, `service`, `service_version`,
//! `service_environment`) and 10 float fields (`usage_user` …
//! `usage_guest_nice`), nanosecond timestamps.
//!
//! Rows are numbered `r = 0, 1, 2, …` in TSBS order: every host once per tick,
//! so row `r` is host `r % hosts` at tick `r / hosts`, time
//! `start + tick × interval`. Batch `b` is rows `[b × lines, (b+1) × lines)`.
//! The row sequence therefore does not depend on how many writers send it.
//!
//! With `duplicates = p`, row `r` (past the first tick) is, with probability
//! `p`, a rewrite: it carries the timestamp of one of the host's 16 previous
//! ticks (a point already written, or about to be by another writer) and
//! different field values, so deduplication has real work to do.
//!
//! # Cost per row when sending
//!
//! Every line is formatted once at start-up in `variants` versions (different
//! field values) per host, without its timestamp. Building a batch is one
//! `memcpy` of each pre-formatted line plus writing its timestamp digits: no
//! float formatting, no allocation per row. A writer's next batch of the
//! same shape only rewrites those digits in its previous one ([`Reuse`]). Arrow batches reuse
//! pre-built field arrays (shared, not copied) and pre-resolved dictionary keys
//! per host; only the time column and the keys are built per batch, then the
//! batch is IPC-encoded.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The measurement (table) name.
pub const MEASUREMENT: &str = "cpu";

/// Tag keys, in TSBS order.
pub const TAG_KEYS: [&str; 10] = [
    "hostname",
    "region",
    "datacenter",
    "rack",
    "os",
    "arch",
    "team",
    "service",
    "service_version",
    "service_environment",
];

/// Field keys, in TSBS order (all floats).
pub const FIELD_KEYS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

const REGIONS: [(&str, [&str; 3]); 9] = [
    ("us-east-1", ["us-east-1a", "us-east-1b", "us-east-1c"]),
    ("us-west-1", ["us-west-1a", "us-west-1b", "us-west-1c"]),
    ("us-west-2", ["us-west-2a", "us-west-2b", "us-west-2c"]),
    ("eu-west-1", ["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
    (
        "eu-central-1",
        ["eu-central-1a", "eu-central-1b", "eu-central-1b"],
    ),
    (
        "ap-southeast-1",
        ["ap-southeast-1a", "ap-southeast-1b", "ap-southeast-1b"],
    ),
    (
        "ap-southeast-2",
        ["ap-southeast-2a", "ap-southeast-2b", "ap-southeast-2b"],
    ),
    (
        "ap-northeast-1",
        ["ap-northeast-1a", "ap-northeast-1c", "ap-northeast-1c"],
    ),
    ("sa-east-1", ["sa-east-1a", "sa-east-1b", "sa-east-1c"]),
];
const OSES: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
const ARCHES: [&str; 2] = ["x64", "x86"];
const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const ENVIRONMENTS: [&str; 3] = ["production", "staging", "test"];

/// How far back (in ticks) a rewritten duplicate may reach.
const DUPLICATE_WINDOW: u64 = 16;

/// Parameters of the generated data.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Number of hosts (series cardinality).
    pub hosts: u64,
    /// Rows per batch (one request).
    pub batch_lines: u64,
    /// Time of tick 0, ns since the epoch.
    pub start_ns: i64,
    /// Time between two ticks of one host, ns.
    pub interval_ns: i64,
    /// Share of rows (0..=1) that rewrite an earlier point of their host.
    pub duplicates: f64,
    /// Distinct field-value versions per host line.
    pub variants: usize,
    /// Seed of everything random.
    pub seed: u64,
}

/// splitmix64: a cheap, well-mixed hash of a row number.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Where rows come from: hosts' tags, the row → (host, time, variant) map.
#[derive(Debug)]
pub struct Workload {
    pub config: WorkloadConfig,
    /// Per host, the index of each tag's value in that tag's value list.
    host_tags: Vec<[u32; 10]>,
    /// Per tag, its distinct values.
    tag_values: Vec<Vec<String>>,
    /// `duplicates` as a threshold on a 64-bit hash.
    dup_threshold: u64,
}

/// One row's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKey {
    pub host: u64,
    pub time: i64,
    pub variant: usize,
}

impl Workload {
    pub fn new(config: WorkloadConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(config.hosts >= 1, "--hosts must be at least 1");
        anyhow::ensure!(config.batch_lines >= 1, "--batch-lines must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&config.duplicates),
            "--duplicates is a share between 0 and 1"
        );
        anyhow::ensure!(config.variants >= 1, "at least one variant");
        anyhow::ensure!(config.interval_ns > 0, "--interval must be positive");
        let mut rng = StdRng::seed_from_u64(config.seed);
        let hosts = usize::try_from(config.hosts)?;
        // Value lists: hostnames, then the small TSBS vocabularies.
        let mut tag_values: Vec<Vec<String>> = vec![Vec::new(); 10];
        tag_values[0] = (0..hosts).map(|h| format!("host_{h}")).collect();
        tag_values[1] = REGIONS.iter().map(|(r, _)| r.to_string()).collect();
        tag_values[2] = REGIONS
            .iter()
            .flat_map(|(_, d)| d.iter().map(|s| s.to_string()))
            .collect();
        tag_values[3] = (0..100).map(|i| i.to_string()).collect();
        tag_values[4] = OSES.iter().map(|s| s.to_string()).collect();
        tag_values[5] = ARCHES.iter().map(|s| s.to_string()).collect();
        tag_values[6] = TEAMS.iter().map(|s| s.to_string()).collect();
        tag_values[7] = (0..20).map(|i| i.to_string()).collect();
        tag_values[8] = (0..2).map(|i| i.to_string()).collect();
        tag_values[9] = ENVIRONMENTS.iter().map(|s| s.to_string()).collect();
        let host_tags = (0..hosts)
            .map(|h| {
                let region = rng.random_range(0..REGIONS.len() as u32);
                [
                    h as u32,
                    region,
                    region * 3 + rng.random_range(0..3),
                    rng.random_range(0..100),
                    rng.random_range(0..OSES.len() as u32),
                    rng.random_range(0..ARCHES.len() as u32),
                    rng.random_range(0..TEAMS.len() as u32),
                    rng.random_range(0..20),
                    rng.random_range(0..2),
                    rng.random_range(0..ENVIRONMENTS.len() as u32),
                ]
            })
            .collect();
        let dup_threshold = if config.duplicates >= 1.0 {
            u64::MAX
        } else {
            (config.duplicates * u64::MAX as f64) as u64
        };
        Ok(Self {
            config,
            host_tags,
            tag_values,
            dup_threshold,
        })
    }

    /// Host, time and field variant of row `r`.
    #[inline]
    pub fn row(&self, r: u64) -> RowKey {
        let c = &self.config;
        let host = r % c.hosts;
        let mut tick = r / c.hosts;
        let h = mix(r ^ c.seed);
        if tick > 0 && c.duplicates > 0.0 && h < self.dup_threshold {
            let back = 1 + mix(h) % tick.min(DUPLICATE_WINDOW);
            tick -= back;
        }
        RowKey {
            host,
            time: c
                .start_ns
                .saturating_add((tick as i64).saturating_mul(c.interval_ns)),
            variant: (h % c.variants as u64) as usize,
        }
    }

    /// Rows `[first, first + n)` of batch `b` (`n` shorter at the end of a
    /// fixed row count).
    pub fn batch_rows(&self, b: u64, total_rows: Option<u64>) -> Option<(u64, u64)> {
        let first = b.checked_mul(self.config.batch_lines)?;
        let end = first.checked_add(self.config.batch_lines)?;
        let end = match total_rows {
            Some(t) if first >= t => return None,
            Some(t) => end.min(t),
            None => end,
        };
        Some((first, end - first))
    }

    fn tag_value(&self, tag: usize, host: u64) -> &str {
        &self.tag_values[tag][self.host_tags[host as usize][tag] as usize]
    }
}

/// Field values of `variant` for `host`: a TSBS-like point of a random walk
/// between 0 and 100 (the walk's position differs per variant).
fn field_values(rng: &mut StdRng) -> [f64; 10] {
    let mut v = [0.0; 10];
    for x in &mut v {
        *x = rng.random_range(0.0..100.0);
    }
    v
}

/// Pre-formatted line protocol: per variant, every host's line without its
/// timestamp (`cpu,<tags> <fields> `), back to back.
#[derive(Debug)]
pub struct LineProtocolGen {
    workload: Arc<Workload>,
    /// Per variant: all hosts' line heads concatenated.
    text: Vec<Vec<u8>>,
    /// Per variant: `hosts + 1` offsets into `text[v]`.
    starts: Vec<Vec<usize>>,
    /// Average bytes per line, for capacity estimates.
    avg_line: usize,
}

impl LineProtocolGen {
    pub fn new(workload: Arc<Workload>) -> Self {
        use std::io::Write;
        let c = &workload.config;
        let mut rng = StdRng::seed_from_u64(c.seed ^ 0x5EED);
        let mut text = Vec::with_capacity(c.variants);
        let mut starts = Vec::with_capacity(c.variants);
        for _ in 0..c.variants {
            let mut t = Vec::with_capacity(c.hosts as usize * 400);
            let mut s = Vec::with_capacity(c.hosts as usize + 1);
            for h in 0..c.hosts {
                s.push(t.len());
                t.extend_from_slice(MEASUREMENT.as_bytes());
                for (i, k) in TAG_KEYS.iter().enumerate() {
                    // TSBS vocabularies need no escaping (checked in a test).
                    let _ = write!(t, ",{k}={}", workload.tag_value(i, h));
                }
                for (i, (k, v)) in FIELD_KEYS.iter().zip(field_values(&mut rng)).enumerate() {
                    let sep = if i == 0 { ' ' } else { ',' };
                    let _ = write!(t, "{sep}{k}={v}");
                }
                t.push(b' ');
            }
            s.push(t.len());
            text.push(t);
            starts.push(s);
        }
        let avg_line = text[0].len() / c.hosts as usize + 21;
        Self {
            workload,
            text,
            starts,
            avg_line,
        }
    }

    /// Line protocol for `n` rows starting at row `first`.
    pub fn build(&self, first: u64, n: u64) -> Bytes {
        self.build_reusing(first, n, &mut Reuse::default())
    }

    /// [`Self::build`], reusing a writer's previous batch (see [`Reuse`]):
    /// when it had the same length and first host and this batch's
    /// timestamps have as many digits, only the timestamps are rewritten in
    /// place. Otherwise the batch is built afresh, into the old buffer if
    /// there is one.
    pub fn build_reusing(&self, first: u64, n: u64, reuse: &mut Reuse) -> Bytes {
        let host0 = first % self.workload.config.hosts;
        let mut out = match reuse.buf.take() {
            // `time_at` describes the buffer given back: same shape, patch.
            Some(mut out)
                if reuse.time_at.len() as u64 == n
                    && reuse.host0 == host0
                    && let Some(width) = reuse.time_width =>
            {
                if self.patch_times(first, &mut out, &reuse.time_at, width) {
                    return out.freeze();
                }
                out
            }
            Some(out) => out,
            None => BytesMut::new(),
        };
        out.clear();
        out.reserve(self.avg_line * n as usize + 64);
        reuse.time_at.clear();
        let mut width = None;
        let mut same_width = true;
        for r in first..first + n {
            let k = self.workload.row(r);
            let s = &self.starts[k.variant];
            let h = k.host as usize;
            out.extend_from_slice(&self.text[k.variant][s[h]..s[h + 1]]);
            let at = out.len();
            reuse.time_at.push(at);
            push_i64(&mut out, k.time);
            let w = out.len() - at;
            same_width &= *width.get_or_insert(w) == w;
            out.extend_from_slice(b"\n");
        }
        reuse.time_width = width.filter(|_| same_width);
        reuse.host0 = host0;
        out.freeze()
    }

    /// Writes rows `first..`'s timestamps over the previous ones (each
    /// `width` digits at `time_at`); false, leaving `out` half-written, if
    /// one has another width.
    fn patch_times(&self, first: u64, out: &mut [u8], time_at: &[usize], width: usize) -> bool {
        // Consecutive lines mostly share a time (one per host and tick):
        // the digits are worked out once per time and copied after that.
        let mut last: Option<(i64, [u8; 20])> = None;
        for (r, &at) in (first..).zip(time_at) {
            let Some(slot) = out.get_mut(at..at + width) else {
                return false;
            };
            let time = self.workload.row(r).time;
            match &mut last {
                Some((t, digits)) if *t == time => slot.copy_from_slice(&digits[..width]),
                _ => {
                    if width > 20 || !overwrite_digits(slot, time) {
                        return false;
                    }
                    let mut digits = [0u8; 20];
                    digits[..width].copy_from_slice(slot);
                    last = Some((time, digits));
                }
            }
        }
        true
    }
}

/// Writes the decimal digits of `v` over `slot`, in place (no copy through
/// a scratch buffer: this runs for every line of a reused batch); false if
/// `v` is negative or has another number of digits than `slot` holds.
#[inline]
fn overwrite_digits(slot: &mut [u8], v: i64) -> bool {
    let Ok(mut x) = u64::try_from(v) else {
        return false;
    };
    for d in slot.iter_mut().rev() {
        *d = b'0' + (x % 10) as u8;
        x /= 10;
    }
    // All digits written, and no leading zero (unless `v` is 0 itself).
    x == 0 && (slot.len() == 1 || slot.first() != Some(&b'0'))
}

/// A writer's previous line-protocol batch, kept so that the next one costs
/// only its timestamps: building a 5,000-line batch line by line is ~1 ms of
/// client CPU (copies from a template larger than the cache), rewriting its
/// timestamps ~0.1 ms. A reused batch keeps the previous batch's field
/// values (variants) for each line: row `r`'s host, tags and time are as
/// described above, its field values are those of an earlier row of the same
/// host.
#[derive(Debug, Default)]
pub struct Reuse {
    /// The buffer, once the request that carried it is gone.
    buf: Option<BytesMut>,
    /// Where each line's timestamp starts (one entry per line).
    time_at: Vec<usize>,
    /// The timestamps' digit count, if they all had the same.
    time_width: Option<usize>,
    /// The batch's first host.
    host0: u64,
}

impl Reuse {
    /// Takes back the buffer of a sent batch, if nothing else holds it.
    pub fn give_back(&mut self, sent: Bytes) {
        self.buf = sent.try_into_mut().ok();
    }
}

/// Appends the decimal digits of `v` (no allocation).
#[inline]
fn push_i64(out: &mut BytesMut, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let neg = v < 0;
    let mut x = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if x == 0 {
            break;
        }
    }
    if neg {
        out.extend_from_slice(b"-");
    }
    out.extend_from_slice(&buf[i..]);
}

/// Arrow batches of the same rows, IPC-encoded for `WriteService` (`tags`
/// are [`TAG_KEYS`], dictionary-encoded; fields Float64; `time` a UTC
/// nanosecond timestamp).
#[derive(Debug)]
pub struct ArrowGen {
    workload: Arc<Workload>,
    schema: SchemaRef,
    /// Per tag, its dictionary values.
    dicts: Vec<ArrayRef>,
    /// Per variant, per field: `batch_lines` values.
    fields: Vec<Vec<ArrayRef>>,
}

impl ArrowGen {
    pub fn new(workload: Arc<Workload>) -> Self {
        let c = &workload.config;
        let mut cols = vec![Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        )];
        for k in TAG_KEYS {
            cols.push(Field::new(
                k,
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ));
        }
        for k in FIELD_KEYS {
            cols.push(Field::new(k, DataType::Float64, true));
        }
        let schema = Arc::new(Schema::new(cols));
        let dicts = workload
            .tag_values
            .iter()
            .map(|v| Arc::new(StringArray::from_iter_values(v)) as ArrayRef)
            .collect();
        let mut rng = StdRng::seed_from_u64(c.seed ^ 0xA770);
        let fields = (0..c.variants)
            .map(|_| {
                (0..FIELD_KEYS.len())
                    .map(|_| {
                        Arc::new(Float64Array::from_iter_values(
                            (0..c.batch_lines).map(|_| rng.random_range(0.0..100.0)),
                        )) as ArrayRef
                    })
                    .collect()
            })
            .collect();
        Self {
            workload,
            schema,
            dicts,
            fields,
        }
    }

    /// The batch of `n` rows from row `first`, as an Arrow IPC stream.
    pub fn build(&self, batch: u64, first: u64, n: u64) -> anyhow::Result<Bytes> {
        let w = &self.workload;
        let len = n as usize;
        let mut time = Vec::with_capacity(len);
        let mut hosts = Vec::with_capacity(len);
        for r in first..first + n {
            let k = w.row(r);
            time.push(k.time);
            hosts.push(k.host as usize);
        }
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(21);
        cols.push(Arc::new(
            TimestampNanosecondArray::from(time).with_timezone("UTC"),
        ));
        for (tag, dict) in self.dicts.iter().enumerate() {
            let col = if tag == 0 && (w.config.hosts as usize) > len {
                // Fewer rows than hosts: ship only the names used, not the
                // whole host list with every batch.
                let values =
                    StringArray::from_iter_values(hosts.iter().map(|&h| w.tag_value(0, h as u64)));
                let keys = Int32Array::from_iter_values(0..len as i32);
                DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))?
            } else {
                let keys =
                    Int32Array::from_iter_values(hosts.iter().map(|&h| w.host_tags[h][tag] as i32));
                DictionaryArray::<Int32Type>::try_new(keys, Arc::clone(dict))?
            };
            cols.push(Arc::new(col));
        }
        let variant = (mix(batch ^ w.config.seed) % w.config.variants as u64) as usize;
        for f in &self.fields[variant] {
            cols.push(if f.len() == len {
                Arc::clone(f)
            } else {
                f.slice(0, len)
            });
        }
        let rb = RecordBatch::try_new(Arc::clone(&self.schema), cols)?;
        let mut out = Vec::with_capacity(len * 130 + 4096);
        {
            let mut wr = StreamWriter::try_new(&mut out, &self.schema)?;
            wr.write(&rb)?;
            wr.finish()?;
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(hosts: u64, lines: u64, dups: f64) -> Arc<Workload> {
        Arc::new(
            Workload::new(WorkloadConfig {
                hosts,
                batch_lines: lines,
                start_ns: 1_767_225_600_000_000_000,
                interval_ns: 10_000_000_000,
                duplicates: dups,
                variants: 4,
                seed: 1,
            })
            .expect("valid config"),
        )
    }

    #[test]
    fn rows_follow_tsbs_order() {
        let w = workload(3, 5, 0.0);
        let keys: Vec<_> = (0..7).map(|r| w.row(r)).collect();
        assert_eq!(
            keys.iter().map(|k| k.host).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2, 0]
        );
        let t0 = 1_767_225_600_000_000_000;
        assert_eq!(keys[0].time, t0);
        assert_eq!(keys[3].time, t0 + 10_000_000_000);
        assert_eq!(keys[6].time, t0 + 20_000_000_000);
        assert_eq!(w.batch_rows(1, Some(7)), Some((5, 2)));
        assert_eq!(w.batch_rows(2, Some(7)), None);
        assert_eq!(w.batch_rows(2, None), Some((10, 5)));
    }

    #[test]
    fn duplicates_rewrite_earlier_points_at_the_requested_share() {
        let w = workload(10, 100, 0.1);
        let n = 200_000u64;
        let mut dups = 0;
        for r in 0..n {
            let k = w.row(r);
            let own = w.config.start_ns + (r / 10) as i64 * w.config.interval_ns;
            assert!(k.time <= own, "row {r} points to the future");
            assert!(own - k.time <= DUPLICATE_WINDOW as i64 * w.config.interval_ns);
            if k.time != own {
                dups += 1;
            }
        }
        let share = dups as f64 / n as f64;
        assert!((0.09..0.11).contains(&share), "share {share}");
        // The first tick has nothing to rewrite.
        assert!((0..10).all(|r| w.row(r).time == w.config.start_ns));
    }

    #[test]
    fn line_protocol_has_ten_tags_ten_fields_and_the_row_time() {
        let w = workload(7, 10, 0.0);
        let g = LineProtocolGen::new(Arc::clone(&w));
        let body = g.build(12, 10);
        let text = std::str::from_utf8(&body).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10);
        for (i, line) in lines.iter().enumerate() {
            let r = 12 + i as u64;
            let k = w.row(r);
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 3, "{line}");
            let series: Vec<&str> = parts[0].split(',').collect();
            assert_eq!(series[0], "cpu");
            assert_eq!(series.len(), 11);
            assert_eq!(series[1], format!("hostname=host_{}", k.host));
            let fields: Vec<&str> = parts[1].split(',').collect();
            assert_eq!(fields.len(), 10);
            for (f, key) in fields.iter().zip(FIELD_KEYS) {
                let (name, v) = f.split_once('=').expect("key=value");
                assert_eq!(name, key);
                let v: f64 = v.parse().expect("a float");
                assert!((0.0..100.0).contains(&v));
                assert!(f.contains('.') || f.contains('e'), "float spelling: {f}");
            }
            assert_eq!(parts[2].parse::<i64>().expect("time"), k.time);
        }
        // Nothing needs escaping in the vocabularies.
        for vals in &w.tag_values {
            for v in vals {
                assert!(!v.contains([' ', ',', '=', '"', '\\']), "{v}");
            }
        }
    }

    #[test]
    fn arrow_batches_decode_with_the_same_keys() {
        use arrow::array::AsArray;
        use arrow::datatypes::TimestampNanosecondType;
        for hosts in [5, 50] {
            let w = workload(hosts, 20, 0.2);
            let g = ArrowGen::new(Arc::clone(&w));
            let ipc = g.build(3, 60, 20).expect("build");
            let mut rd = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
                .expect("IPC stream");
            let b = rd.next().expect("one batch").expect("valid batch");
            assert_eq!(b.num_rows(), 20);
            assert_eq!(b.num_columns(), 21);
            let time = b.column(0).as_primitive::<TimestampNanosecondType>();
            let host = arrow::compute::cast(b.column(1), &DataType::Utf8).expect("cast");
            let host = host.as_string::<i32>();
            for i in 0..20 {
                let k = w.row(60 + i as u64);
                assert_eq!(time.value(i), k.time);
                assert_eq!(host.value(i), format!("host_{}", k.host));
            }
        }
    }

    /// (host, time, tags + fields) of each line.
    fn lines(body: &[u8]) -> Vec<(String, i64, String)> {
        std::str::from_utf8(body)
            .expect("utf-8")
            .lines()
            .map(|l| {
                let (head, time) = l.rsplit_once(' ').expect("timestamp");
                let host = head.split(',').nth(1).expect("hostname").to_string();
                (host, time.parse().expect("time"), head.to_string())
            })
            .collect()
    }

    #[test]
    fn a_reused_batch_gets_the_new_rows_hosts_and_times() {
        let w = workload(10, 10, 0.3);
        let g = LineProtocolGen::new(Arc::clone(&w));
        let mut reuse = Reuse::default();
        let first = g.build_reusing(20, 30, &mut reuse);
        let kept = lines(&first);
        reuse.give_back(first);
        assert!(reuse.buf.is_some(), "the sole owner gets the buffer back");
        // Same length and first host: timestamps patched.
        let second = g.build_reusing(50, 30, &mut reuse);
        let fresh = lines(&g.build(50, 30));
        let patched = lines(&second);
        assert_eq!(patched.len(), 30);
        for (i, ((p, f), k)) in patched.iter().zip(&fresh).zip(&kept).enumerate() {
            assert_eq!(p.0, f.0, "line {i}: host");
            assert_eq!(p.1, f.1, "line {i}: the new row's time");
            assert_eq!(p.2, k.2, "line {i}: the previous batch's tags and fields");
        }
        assert_ne!(patched[0].1, kept[0].1);
        // Another shape is built afresh, in the same buffer.
        reuse.give_back(second);
        let other = g.build_reusing(53, 25, &mut reuse);
        assert_eq!(other, g.build(53, 25));
        // A buffer someone else still holds is not reused.
        let held = other.clone();
        reuse.give_back(other);
        assert!(reuse.buf.is_none());
        drop(held);
    }

    #[test]
    fn a_timestamp_of_another_width_rebuilds_the_batch() {
        // Tick 1 is at 99, tick 2 at 198: two digits, then three.
        let w = Arc::new(
            Workload::new(WorkloadConfig {
                hosts: 5,
                batch_lines: 5,
                start_ns: 0,
                interval_ns: 99,
                duplicates: 0.0,
                variants: 4,
                seed: 1,
            })
            .expect("valid config"),
        );
        let g = LineProtocolGen::new(Arc::clone(&w));
        let mut reuse = Reuse::default();
        let a = g.build_reusing(5, 5, &mut reuse);
        reuse.give_back(a);
        let b = g.build_reusing(10, 5, &mut reuse);
        assert_eq!(b, g.build(10, 5));
        assert!(lines(&b).iter().all(|l| l.1 == 198));
    }

    #[test]
    fn digits_are_overwritten_only_at_their_own_width() {
        let mut slot = *b"xxxxx";
        assert!(overwrite_digits(&mut slot, 12345));
        assert_eq!(&slot, b"12345");
        // Fewer digits would leave a leading zero, more would not fit.
        assert!(!overwrite_digits(&mut slot, 1234));
        assert!(!overwrite_digits(&mut slot, 123_456));
        assert!(!overwrite_digits(&mut slot, -1234));
        let mut one = *b"x";
        assert!(overwrite_digits(&mut one, 0));
        assert_eq!(&one, b"0");
        let mut wide = [0u8; 19];
        assert!(overwrite_digits(&mut wide, 1_767_225_600_000_000_000));
        assert_eq!(&wide, b"1767225600000000000");
    }

    #[test]
    fn push_i64_matches_display() {
        for v in [0, 7, -1, i64::MIN, i64::MAX, 1_767_225_600_000_000_000] {
            let mut out = BytesMut::new();
            push_i64(&mut out, v);
            assert_eq!(
                String::from_utf8(out.to_vec()).expect("digits"),
                v.to_string()
            );
        }
    }
}
