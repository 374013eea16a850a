//! The `sluice-ingester` CLI against a running server: `write` (a plain and
//! a gzipped file), `query --format csv|jsonl|parquet --output …` and
//! `status --json`; every output is parsed and compared value for value
//! with the generator.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use sluice_e2e::data::{self, Row};
use sluice_e2e::{Ingester, gzip, ingester_bin, within};

const NS: &str = "clitest";
const TABLE: &str = "cpu";
const PLAIN_ROWS: u64 = 3_000;
const GZIP_ROWS: u64 = 2_000;

/// Runs the CLI with a timeout (it is a child process; killed if late).
async fn cli(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(ingester_bin());
    cmd.args(args).kill_on_drop(true);
    let what = format!("sluice-ingester {}", args.join(" "));
    within(Duration::from_secs(60), &what, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `2026-01-01T00:00:00.000001Z` → nanoseconds since the epoch.
fn parse_rfc3339(s: &str) -> i64 {
    let bad = || -> ! { panic!("not an RFC 3339 UTC time: {s:?}") };
    let num = |p: &str| -> i64 { p.parse().unwrap_or_else(|_| bad()) };
    let Some(s) = s.strip_suffix('Z') else { bad() };
    let Some((date, time)) = s.split_once('T') else {
        bad()
    };
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms.split(':').map(num).collect();
    if d.len() != 3 || t.len() != 3 || frac.len() > 9 {
        bad();
    }
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        num(&format!("{frac:0<9}"))
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000_000) + nanos
}

fn expected() -> Vec<Row> {
    let mut v: Vec<Row> = (0..PLAIN_ROWS)
        .map(|i| data::row(0, i))
        .chain((0..GZIP_ROWS).map(|i| data::row(1, i)))
        .collect();
    v.sort_by_key(|r| r.time);
    v
}

fn check(mut got: Vec<Row>, what: &str) {
    got.sort_by_key(|r| r.time);
    let want = expected();
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "{what}");
    }
}

fn read_csv(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).expect("read CSV");
    let mut lines = text.lines();
    let header = lines.next().expect("CSV header");
    assert_eq!(header, "count,host,ok,region,time,usage", "CSV header");
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 6, "CSV line {l:?}");
            Row {
                count: f[0].parse().expect("count"),
                host: f[1].to_string(),
                ok: f[2].parse().expect("ok"),
                region: f[3].to_string(),
                time: parse_rfc3339(f[4]),
                usage: f[5].parse().expect("usage"),
            }
        })
        .collect()
}

fn read_jsonl(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).expect("read JSONL");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            let o = v.as_object().expect("one object per line");
            assert_eq!(o.len(), 6, "keys of {l}");
            Row {
                count: o["count"].as_i64().expect("count"),
                host: o["host"].as_str().expect("host").to_string(),
                ok: o["ok"].as_bool().expect("ok"),
                region: o["region"].as_str().expect("region").to_string(),
                time: parse_rfc3339(o["time"].as_str().expect("time")),
                usage: o["usage"].as_f64().expect("usage"),
            }
        })
        .collect()
}

fn read_parquet(path: &Path) -> Vec<Row> {
    let f = std::fs::File::open(path).expect("open Parquet");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("Parquet file")
        .build()
        .expect("Parquet reader");
    let batches: Vec<_> = reader.map(|b| b.expect("Parquet batch")).collect();
    data::decode_rows(&batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_round_trips_a_dataset() {
    within(Duration::from_secs(180), "cli test", run()).await;
}

async fn run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ing = Ingester::new(tmp.path().join("data"));
    ing.start().await.expect("start");
    let addr = ing.grpc_url();

    let plain = tmp.path().join("plain.lp");
    std::fs::write(&plain, data::lines(TABLE, 0, 0..PLAIN_ROWS)).expect("write plain file");
    let gz = tmp.path().join("more.lp.gz");
    std::fs::write(&gz, gzip(data::lines(TABLE, 1, 0..GZIP_ROWS).as_bytes())).expect("gz file");

    for (file, what) in [(&plain, "write plain"), (&gz, "write gzip")] {
        let out = cli(&[
            "write",
            "--addr",
            &addr,
            "--namespace",
            NS,
            "--progress",
            "none",
            "--batch-lines",
            "700",
            file.to_str().expect("utf-8 path"),
        ])
        .await;
        ok(&out, what);
        eprintln!(
            "cli: {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    for format in ["csv", "jsonl", "parquet"] {
        let path = tmp.path().join(format!("out.{format}"));
        let out = cli(&[
            "query",
            "--addr",
            &addr,
            "--namespace",
            NS,
            "--table",
            TABLE,
            "--format",
            format,
            "--output",
            path.to_str().expect("utf-8 path"),
        ])
        .await;
        ok(&out, format);
        assert!(
            out.stdout.is_empty(),
            "{format}: nothing on stdout with --output"
        );
        assert!(
            !tmp.path().join(format!("out.{format}.partial")).exists(),
            "{format}: no partial file left"
        );
        let rows = match format {
            "csv" => read_csv(&path),
            "jsonl" => read_jsonl(&path),
            _ => read_parquet(&path),
        };
        check(rows, format);
    }

    // CSV on stdout, with a projection and a time range.
    let start = data::row(0, 100).time;
    let end = data::row(0, 200).time;
    let out = cli(&[
        "query",
        "--addr",
        &addr,
        "--namespace",
        NS,
        "--table",
        TABLE,
        "--format",
        "csv",
        "--columns",
        "usage,time",
        "--start",
        &start.to_string(),
        "--end",
        &end.to_string(),
    ])
    .await;
    ok(&out, "projected CSV");
    let text = String::from_utf8(out.stdout).expect("UTF-8 CSV");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("time,usage"), "projected header");
    let mut got: Vec<(i64, f64)> = lines
        .map(|l| {
            let (t, u) = l.split_once(',').expect("two fields");
            (parse_rfc3339(t), u.parse().expect("usage"))
        })
        .collect();
    got.sort_by_key(|g| g.0);
    let mut want: Vec<(i64, f64)> = expected()
        .into_iter()
        .filter(|r| r.time >= start && r.time < end)
        .map(|r| (r.time, r.usage))
        .collect();
    want.sort_by_key(|g| g.0);
    assert_eq!(got, want, "projected range over the CLI");

    let out = cli(&["status", "--addr", &addr, "--json"]).await;
    ok(&out, "status");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(st["state"], "READY", "{st}");
    assert_eq!(st["buffered_rows"], PLAIN_ROWS + GZIP_ROWS, "{st}");
    assert!(
        st["ingester_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{st}"
    );
    assert!(st["wal_segments"].as_u64().is_some_and(|n| n >= 1), "{st}");
    assert!(
        st["version"].as_str().is_some_and(|s| !s.is_empty()),
        "{st}"
    );
    eprintln!("cli: status {st}");

    // Failures exit non-zero with a message.
    let bad = tmp.path().join("bad.lp");
    std::fs::write(&bad, "cpu,host=x usage=\n").expect("bad file");
    let out = cli(&[
        "write",
        "--addr",
        &addr,
        "--namespace",
        NS,
        "--progress",
        "none",
        bad.to_str().expect("path"),
    ])
    .await;
    assert!(!out.status.success(), "a refused batch fails the command");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("line 1"),
        "{err}"
    );

    let closed = sluice_e2e::free_addr();
    let out = cli(&["status", "--addr", &format!("http://{closed}")]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");

    // Nothing else changed the data.
    assert_eq!(
        ing.count_rows(NS, TABLE, true).await.expect("count"),
        (PLAIN_ROWS + GZIP_ROWS) as usize
    );
    ing.stop().await.expect("stop");
    ing.assert_no_panic();
}
