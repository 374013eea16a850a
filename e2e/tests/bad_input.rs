//! Refused writes, each through gRPC and HTTP: the exact status, a message
//! naming the line / table / column, nothing of the request applied (rows
//! and catalog columns), and no panic in the server log whatever the input.
//!
//! The server runs with `--max-request-bytes 1000`.

use std::time::Duration;

use futures::future::join_all;
use sluice_e2e::data::BASE_TIME;
use sluice_e2e::{Ingester, gzip, within};
use sluice_proto::v1;

const LIMIT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Grpc,
    Http,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Grpc => "grpc",
            Via::Http => "http",
        }
    }
}

/// A refusal as the client saw it.
#[derive(Debug)]
enum Refusal {
    Grpc(tonic::Code, String),
    /// Status, the JSON `code` (`None`: the body is not the documented
    /// JSON), the JSON `message` (or the whole body).
    Http(u16, Option<String>, String),
}

impl Refusal {
    fn message(&self) -> &str {
        match self {
            Refusal::Grpc(_, m) | Refusal::Http(_, _, m) => m,
        }
    }
}

async fn start() -> (tempfile::TempDir, Ingester) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut ing = Ingester::new(tmp.path().join("data"))
        .arg("--max-request-bytes")
        .arg(LIMIT.to_string());
    ing.start().await.expect("start ingester");
    (tmp, ing)
}

/// Sends one write; `Ok(())` if accepted, else how it was refused.
async fn send(
    ing: &Ingester,
    via: Via,
    ns: &str,
    body: &[u8],
    precision: v1::Precision,
    gzipped: bool,
) -> Result<(), Refusal> {
    match via {
        Via::Grpc => {
            assert!(!gzipped, "gzip is an HTTP feature");
            ing.write_lp_bytes(ns, body.to_vec(), precision)
                .await
                .map(|_| ())
                .map_err(|s| Refusal::Grpc(s.code(), s.message().to_string()))
        }
        Via::Http => {
            let p = match precision {
                v1::Precision::Unspecified | v1::Precision::Nanoseconds => "ns",
                v1::Precision::Microseconds => "us",
                v1::Precision::Milliseconds => "ms",
                v1::Precision::Seconds => "s",
            };
            let ns = ns.replace('/', "%2F");
            let (status, text) = ing
                .http_write_query(
                    &format!("bucket={ns}&precision={p}"),
                    body.to_vec(),
                    gzipped,
                )
                .await
                .expect("HTTP request");
            if status == 204 {
                return Ok(());
            }
            // `{code, message}`; anything else is kept whole (and fails
            // `assert_status`).
            let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
            let field = |k: &str| {
                json.as_ref()
                    .and_then(|j| j.get(k))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let message = field("message").unwrap_or_else(|| text.clone());
            Err(Refusal::Http(status, field("code"), message))
        }
    }
}

/// Asserts the refusal's status for `via`.
fn assert_status(r: &Refusal, via: Via, grpc: tonic::Code, http: u16, what: &str) {
    match (via, r) {
        (Via::Grpc, Refusal::Grpc(code, msg)) => {
            assert_eq!(*code, grpc, "{what} via gRPC: {msg}")
        }
        (Via::Http, Refusal::Http(status, code, msg)) => {
            assert_eq!(*status, http, "{what} via HTTP: {msg}");
            let Some(code) = code else {
                panic!("{what} via HTTP {status}: the body is not JSON {{code, message}}: {msg:?}")
            };
            let want = match http {
                400 => "invalid",
                413 => "request too large",
                _ => code.as_str(),
            };
            assert_eq!(code, want, "{what} via HTTP: JSON code");
        }
        _ => unreachable!(),
    }
}

fn assert_names(r: &Refusal, parts: &[&str], what: &str, via: Via) {
    for p in parts {
        assert!(
            r.message().contains(p),
            "{what} via {}: the message should name {p:?}: {:?}",
            via.name(),
            r.message()
        );
    }
}

/// One bad request in a namespace that already holds one good row.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    precision: v1::Precision,
    grpc: tonic::Code,
    http: u16,
    names: &'static [&'static str],
    /// Columns of table `m` the request mentions that must not exist after.
    absent: &'static [&'static str],
    /// Other tables of the request that must not exist after.
    absent_tables: &'static [&'static str],
}

fn case(name: &'static str, body: impl Into<Vec<u8>>, names: &'static [&'static str]) -> Case {
    Case {
        name,
        body: body.into(),
        precision: v1::Precision::Nanoseconds,
        grpc: tonic::Code::InvalidArgument,
        http: 400,
        names,
        absent: &[],
        absent_tables: &[],
    }
}

fn cases() -> Vec<Case> {
    let big: String = (0..40)
        .map(|i| format!("m,host=h{i} ok={i}i,big=1i {}\n", BASE_TIME + i))
        .collect();
    assert!(big.len() > LIMIT && big.len() < 2 * LIMIT);
    vec![
        Case {
            absent: &["fx"],
            ..case(
                "malformed",
                "m,host=a ok=2i 2\nm,host=b fx= 3\n",
                &["line 2", "`fx`"],
            )
        },
        Case {
            absent: &["nf"],
            ..case(
                "conflict_within_request",
                "m,host=a ok=2i,nf=1i 2\nm,host=b ok=3i,nf=2.5 3\n",
                &["line 2", "`m`", "`nf`"],
            )
        },
        case(
            "conflict_with_existing_column",
            "m,host=a ok=2.5 2\n",
            &["line 1", "`m`", "`ok`"],
        ),
        case("empty", "", &["empty"]),
        case(
            "tag_named_time",
            "m,time=x ok=2i 2\n",
            &["line 1", "`m`", "`time`"],
        ),
        case(
            "field_named_time",
            "m,host=a time=2i 2\n",
            &["line 1", "`m`", "`time`"],
        ),
        Case {
            absent: &["tf"],
            ..case(
                "tag_and_field_same_name",
                "m,host=a,tf=x tf=2i 2\n",
                &["line 1", "`m`", "`tf`"],
            )
        },
        case(
            "non_utf8",
            &b"m,host=a ok=2i 2\nm,host=\xff\xfe ok=3i 3\n"[..],
            &["line 2", "UTF-8"],
        ),
        Case {
            precision: v1::Precision::Seconds,
            ..case(
                "timestamp_too_large",
                "m,host=a ok=2i 100000000000\n",
                &["line 1", "`m`"],
            )
        },
        Case {
            precision: v1::Precision::Seconds,
            ..case(
                "timestamp_too_small",
                "m,host=a ok=2i 1\nm,host=a ok=2i -100000000000\n",
                &["line 2", "`m`"],
            )
        },
        case(
            "timestamp_not_i64",
            "m,host=a ok=2i 99999999999999999999\n",
            &["line 1"],
        ),
        Case {
            absent: &["nm"],
            absent_tables: &["n"],
            ..case(
                "line_3_of_5_bad",
                "m,host=a ok=2i,nm=1i 2\n\
                 n,host=a v=1i 3\n\
                 m,host=a ok=3i,nm=\"x 4\n\
                 m,host=b ok=4i,nm=2i 5\n\
                 n,host=b v=2i 6\n",
                &["line 3", "`nm`"],
            )
        },
        // Line 3 is well-formed but conflicts with the table's schema (found
        // after parsing, while resolving columns). A new column of the other
        // lines may stay in the schema (documented: schema is not data).
        Case {
            absent_tables: &["n"],
            ..case(
                "line_3_of_5_conflicts",
                format!(
                    "m,host=a ok=2i,nm=1i {t}\n\
                     n,host=a v=1i {t}\n\
                     m,host=a ok=3.5 {t}\n\
                     m,host=b ok=4i,nm=2i {t}\n\
                     n,host=b v=2i {t}\n",
                    t = BASE_TIME + 1
                ),
                &["line 3", "`m`", "`ok`"],
            )
        },
        Case {
            precision: v1::Precision::Milliseconds,
            absent_tables: &["n"],
            ..case(
                "line_3_of_5_out_of_range",
                "m,host=a ok=2i 1\n\
                 n,host=a v=1i 2\n\
                 m,host=a ok=3i 9999999999999999\n\
                 m,host=b ok=4i 4\n\
                 n,host=b v=2i 5\n",
                &["line 3", "`m`"],
            )
        },
        Case {
            grpc: tonic::Code::ResourceExhausted,
            http: 413,
            absent: &["big"],
            ..case("over_the_size_limit", big, &["1000"])
        },
    ]
}

async fn run_case(ing: &Ingester, c: &Case, via: Via) {
    let ns = format!("bad_{}_{}", c.name, via.name());
    // One good row, so "nothing applied" means "still one row".
    send(
        ing,
        via,
        &ns,
        format!("m,host=pre ok=1i {BASE_TIME}\n").as_bytes(),
        v1::Precision::Nanoseconds,
        false,
    )
    .await
    .unwrap_or_else(|r| panic!("{ns}: the good row was refused: {r:?}"));
    let before = ing.column_names(&ns, "m").await.expect("schema");
    let r = send(ing, via, &ns, &c.body, c.precision, false).await;
    let Err(r) = r else {
        panic!("{ns}: accepted a bad request")
    };
    eprintln!("bad_input: {ns}: {r:?}");
    assert_status(&r, via, c.grpc, c.http, c.name);
    assert_names(&r, c.names, c.name, via);
    assert_eq!(
        ing.count_rows(&ns, "m", true).await.expect("count"),
        1,
        "{ns}: rows of the refused request were applied"
    );
    for t in c.absent_tables {
        assert_eq!(
            ing.count_rows(&ns, t, true).await.expect("count"),
            0,
            "{ns}: rows of table {t} were applied"
        );
    }
    let after = ing.column_names(&ns, "m").await.expect("schema");
    for col in c.absent {
        assert!(
            !after.iter().any(|a| a == col),
            "{ns}: column `{col}` of the refused request is in the catalog: {after:?}"
        );
    }
    if before != after {
        eprintln!("bad_input: {ns}: columns {before:?} became {after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_change_nothing() {
    within(Duration::from_secs(180), "bad input cases", async {
        let (_tmp, ing) = start().await;
        let mut failures = Vec::new();
        for c in cases() {
            for via in [Via::Grpc, Via::Http] {
                let outcome = std::panic::AssertUnwindSafe(run_case(&ing, &c, via));
                if let Err(e) = futures::FutureExt::catch_unwind(outcome).await {
                    failures.push(panic_message(e));
                }
            }
        }
        ing.assert_no_panic();
        assert!(
            failures.is_empty(),
            "{} failed case(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_requests_are_refused_cleanly() {
    within(Duration::from_secs(120), "odd requests", async {
        let (_tmp, ing) = start().await;

        // A namespace with `/` (names are also path segments downstream).
        for via in [Via::Grpc, Via::Http] {
            let r = send(
                &ing,
                via,
                "bad/ns",
                b"m,host=a ok=1i 1\n",
                v1::Precision::Nanoseconds,
                false,
            )
            .await
            .expect_err("namespace with a slash");
            assert_status(&r, via, tonic::Code::InvalidArgument, 400, "bad namespace");
            assert_names(&r, &["bad/ns"], "bad namespace", via);
        }
        let mut cat = ing.catalog_client().await.expect("catalog");
        let nss = cat
            .list_namespaces(v1::ListNamespacesRequest {})
            .await
            .expect("ListNamespaces")
            .into_inner();
        assert!(
            nss.namespaces.iter().all(|n| !n.name.contains('/')),
            "{nss:?}"
        );

        // Gzip: a body that inflates past the limit, and one that is not gzip.
        let lp: String = (0..200)
            .map(|i| format!("m,host=h ok={i}i {}\n", BASE_TIME + i))
            .collect();
        let gz = gzip(lp.as_bytes());
        assert!(gz.len() < LIMIT, "compressed body under the limit");
        let r = send(&ing, Via::Http, "gz", &gz, v1::Precision::Nanoseconds, true)
            .await
            .expect_err("inflates past the limit");
        assert_status(&r, Via::Http, tonic::Code::Ok, 413, "gzip bomb");
        let r = send(
            &ing,
            Via::Http,
            "gz",
            b"not gzip",
            v1::Precision::Nanoseconds,
            true,
        )
        .await
        .expect_err("not gzip");
        assert_status(&r, Via::Http, tonic::Code::Ok, 400, "bad gzip");
        assert_eq!(ing.count_rows("gz", "m", true).await.expect("count"), 0);
        // A good gzip body is accepted.
        let small = gzip(b"m,host=h ok=1i 1\n");
        send(
            &ing,
            Via::Http,
            "gz",
            &small,
            v1::Precision::Nanoseconds,
            true,
        )
        .await
        .expect("small gzip body");
        assert_eq!(ing.count_rows("gz", "m", true).await.expect("count"), 1);

        // HTTP parameters.
        for (q, what) in [
            ("precision=ns", "missing bucket"),
            ("bucket=p&precision=minutes", "unknown precision"),
        ] {
            let (status, text) = ing
                .http_write_query(q, b"m ok=1i 1\n".to_vec(), false)
                .await
                .expect("HTTP");
            assert_eq!(status, 400, "{what}: {text}");
            let j: serde_json::Value = serde_json::from_str(&text).expect("JSON error body");
            assert_eq!(j["code"], "invalid", "{what}: {text}");
        }
        // An unknown gRPC precision.
        let mut c = ing.write_client().await.expect("client");
        let s = c
            .write(v1::WriteRequest {
                namespace: "p".into(),
                payload: Some(v1::write_request::Payload::LineProtocol(
                    b"m ok=1i 1\n".to_vec().into(),
                )),
                precision: 99,
            })
            .await
            .expect_err("precision 99");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s}");
        // No payload at all.
        let s = c
            .write(v1::WriteRequest {
                namespace: "p".into(),
                payload: None,
                precision: 0,
            })
            .await
            .expect_err("no payload");
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s}");
        assert_eq!(ing.count_rows("p", "m", true).await.expect("count"), 0);

        // Empty namespace names.
        let r = send(
            &ing,
            Via::Grpc,
            "",
            b"m ok=1i 1\n",
            v1::Precision::Nanoseconds,
            false,
        )
        .await
        .expect_err("empty namespace");
        assert_status(
            &r,
            Via::Grpc,
            tonic::Code::InvalidArgument,
            400,
            "empty namespace",
        );
        let (status, text) = ing
            .http_write_query("bucket=", b"m ok=1i 1\n".to_vec(), false)
            .await
            .expect("HTTP");
        assert_eq!(status, 400, "empty bucket: {text}");

        // The extremes of the time range: accepted and returned exactly, or
        // refused cleanly.
        for (t, key) in [
            (i64::MAX, "2262-04-11"),
            (i64::MIN, "1677-09-21"),
            (-1, "1969-12-31"),
        ] {
            let lp = format!("edge,k=v ok=1i {t}\n");
            match send(
                &ing,
                Via::Grpc,
                "edges",
                lp.as_bytes(),
                v1::Precision::Nanoseconds,
                false,
            )
            .await
            {
                Ok(()) => {
                    let r = ing
                        .query(v1::QueryRequest {
                            namespace: "edges".into(),
                            table: "edge".into(),
                            ..Default::default()
                        })
                        .await
                        .expect("query edges");
                    let times: Vec<i64> = r
                        .batches
                        .iter()
                        .flat_map(|b| sluice_e2e::data::times(b).to_vec())
                        .collect();
                    assert!(times.contains(&t), "time {t} returned: {times:?}");
                    assert!(
                        r.partitions.iter().any(|p| p.partition_key == key),
                        "partition {key} for {t}: {:?}",
                        r.partitions
                    );
                }
                Err(r) => {
                    eprintln!("bad_input: time {t} refused: {r:?}");
                    assert_status(
                        &r,
                        Via::Grpc,
                        tonic::Code::InvalidArgument,
                        400,
                        "edge time",
                    );
                }
            }
        }

        // Garbage of every kind: refused or accepted, never a crash.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for n in 0..300 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 200) as usize;
            let alphabet = b"m,= \\\"\n\t#ift0123456789.eE-+_\xff\xc3\xa9\x00";
            let body: Vec<u8> = (0..len)
                .map(|i| {
                    let x = seed.rotate_left((i % 64) as u32) ^ (i as u64 * 0x9e37_79b9);
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let via = if n % 2 == 0 { Via::Grpc } else { Via::Http };
            if let Err(r) = send(&ing, via, "fuzz", &body, v1::Precision::Nanoseconds, false).await
            {
                match &r {
                    Refusal::Grpc(code, _) => assert_eq!(
                        *code,
                        tonic::Code::InvalidArgument,
                        "fuzz body {body:?}: {r:?}"
                    ),
                    Refusal::Http(status, ..) => {
                        assert_eq!(*status, 400, "fuzz body {body:?}: {r:?}")
                    }
                }
            }
        }
        ing.assert_no_panic();
    })
    .await;
}

/// 16 concurrent first writes of one new column, alternating i64 and f64:
/// one type wins, every write of the other type is refused and none of its
/// rows is present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_writes_of_a_column_agree_on_one_type() {
    within(
        Duration::from_secs(120),
        "concurrent type conflict",
        async {
            let (_tmp, ing) = start().await;
            for via in [Via::Grpc, Via::Http] {
                for trial in 0..3 {
                    let ns = format!("race_{}_{trial}", via.name());
                    // The table exists; the column `x` is new.
                    send(
                        &ing,
                        via,
                        &ns,
                        format!("m,w=pre y=1i {BASE_TIME}\n").as_bytes(),
                        v1::Precision::Nanoseconds,
                        false,
                    )
                    .await
                    .expect("create table");
                    let ing = &ing;
                    let results = join_all((0..16u32).map(|w| {
                        let ns = ns.clone();
                        async move {
                            let value = |i: u32| {
                                if w % 2 == 0 {
                                    format!("{}i", i)
                                } else {
                                    format!("{}.5", i)
                                }
                            };
                            let body: String = (0..3)
                                .map(|i| {
                                    format!(
                                        "m,w=w{w} x={} {}\n",
                                        value(i),
                                        BASE_TIME + 1 + i64::from(i)
                                    )
                                })
                                .collect();
                            (
                                w,
                                send(
                                    ing,
                                    via,
                                    &ns,
                                    body.as_bytes(),
                                    v1::Precision::Nanoseconds,
                                    false,
                                )
                                .await,
                            )
                        }
                    }))
                    .await;
                    let schema = ing.table_schema(&ns, "m").await.expect("schema");
                    let x = schema
                        .columns
                        .iter()
                        .find(|c| c.name == "x")
                        .expect("column x exists");
                    let int_won = x.column_type == v1::ColumnType::I64 as i32;
                    assert!(
                        int_won || x.column_type == v1::ColumnType::F64 as i32,
                        "type of x: {x:?}"
                    );
                    let mut accepted = Vec::new();
                    for (w, r) in &results {
                        let winner = (w % 2 == 0) == int_won;
                        match r {
                            Ok(()) => {
                                assert!(winner, "{ns}: writer {w} of the losing type was accepted");
                                accepted.push(format!("w{w}"));
                            }
                            Err(r) => {
                                assert!(
                                    !winner,
                                    "{ns}: writer {w} of the winning type refused: {r:?}"
                                );
                                assert_status(
                                    r,
                                    via,
                                    tonic::Code::InvalidArgument,
                                    400,
                                    "type race",
                                );
                                assert_names(r, &["line 1", "`m`", "`x`"], "type race", via);
                            }
                        }
                    }
                    assert_eq!(accepted.len(), 8, "{ns}: every write of the winning type");
                    // Exactly the winners' rows are present.
                    let res = ing
                        .query(v1::QueryRequest {
                            namespace: ns.clone(),
                            table: "m".into(),
                            include_persisted: true,
                            ..Default::default()
                        })
                        .await
                        .expect("query");
                    let mut ws: Vec<String> = res
                        .batches
                        .iter()
                        .flat_map(|b| sluice_e2e::data::strings(b, "w"))
                        .map(|w| w.expect("w"))
                        .filter(|w| w != "pre")
                        .collect();
                    ws.sort();
                    let mut want: Vec<String> = accepted
                        .iter()
                        .flat_map(|w| [w.clone(), w.clone(), w.clone()])
                        .collect();
                    want.sort();
                    assert_eq!(ws, want, "{ns}: rows present");
                    eprintln!(
                        "bad_input: {ns}: {} won",
                        if int_won { "i64" } else { "f64" }
                    );
                }
            }
            ing.assert_no_panic();
        },
    )
    .await;
}

/// A request far over the limit is refused by the transport (tonic's
/// message limit, axum's body limit) before the write handler sees it; it
/// must still get the documented answer: RESOURCE_EXHAUSTED, and HTTP 413
/// with a JSON `{code, message}` body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_far_over_the_limit_get_the_documented_answer() {
    within(Duration::from_secs(60), "transport limits", async {
        let (_tmp, ing) = start().await;
        let c = Case {
            grpc: tonic::Code::ResourceExhausted,
            http: 413,
            absent: &["big"],
            ..case(
                "far_over_the_size_limit",
                "m,host=a big=1i 1\n".repeat(10_000),
                &[],
            )
        };
        let mut failures = Vec::new();
        for via in [Via::Grpc, Via::Http] {
            let outcome = std::panic::AssertUnwindSafe(run_case(&ing, &c, via));
            if let Err(e) = futures::FutureExt::catch_unwind(outcome).await {
                failures.push(panic_message(e));
            }
        }
        ing.assert_no_panic();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    })
    .await;
}

fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}
