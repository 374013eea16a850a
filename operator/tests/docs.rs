//! The admin documentation, kept true by running it:
//!
//! - `docs/crd-reference.md` is exactly what [`crd_reference::render`] makes
//!   of `crds/ingester.yaml` (regenerate: `scripts/gen-docs.sh`, which sets
//!   `SLUICE_UPDATE_DOCS=1`);
//! - every shell block of `docs/quickstart.md` and `docs/api.md` marked
//!   `<!-- ci: run -->` runs against a real `sluice-ingester serve` started
//!   the way the block marked `<!-- ci: server -->` says, and every block
//!   marked `<!-- ci: python -->` runs with the test Python (pyarrow). A
//!   marker may add `expect="TEXT"`: the block's output must contain it.
//!
//! Commands are run as written, except: `cargo run --release -p
//! sluice-ingester --` becomes the binary `$SLUICE_INGESTER_BIN` (CI builds
//! it once, in debug), and the documented ports 8080/8082 become free ports,
//! so the test can run beside others. Needs `SLUICE_INGESTER_BIN` (and
//! `SLUICE_TEST_PYTHON` for Python blocks); when `CI` is set a missing one
//! fails the test.

#[path = "docs/crd_reference.rs"]
mod crd_reference;
#[path = "chart/tools.rs"]
mod tools;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tools::{python, root, tools_required};

#[test]
fn crd_reference_is_generated_from_the_crd() {
    let crd = std::fs::read_to_string(root().join("crds/ingester.yaml")).expect("read CRD");
    let want = crd_reference::render(&crd);
    tools::assert_generated(
        &root().join("docs/crd-reference.md"),
        &want,
        "SLUICE_UPDATE_DOCS",
        "regenerate it with scripts/gen-docs.sh",
    );
    // It documents what matters, with the validation messages.
    for must in [
        "## `spec`",
        "## `spec.walVolume`",
        "| `replicas` |",
        "## `status`",
    ] {
        assert!(want.contains(must), "reference lacks {must}");
    }
}

// ---- runnable documentation ------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Server,
    Run,
    Python,
}

#[derive(Debug)]
struct Block {
    mode: Mode,
    expect: Option<String>,
    code: String,
    line: usize,
}

/// The marked fenced blocks of a Markdown file.
fn marked_blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut pending: Option<(Mode, Option<String>)> = None;
    let mut lines = md.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let t = line.trim();
        if let Some(rest) = t
            .strip_prefix("<!-- ci: ")
            .and_then(|r| r.strip_suffix("-->"))
        {
            let rest = rest.trim();
            let (word, attrs) = rest.split_once(' ').unwrap_or((rest, ""));
            let mode = match word {
                "server" => Mode::Server,
                "run" => Mode::Run,
                "python" => Mode::Python,
                other => panic!("line {}: unknown ci marker {other:?}", i + 1),
            };
            let expect = attrs
                .trim()
                .strip_prefix("expect=\"")
                .and_then(|e| e.strip_suffix('"'))
                .map(String::from);
            pending = Some((mode, expect));
            continue;
        }
        if t.starts_with("```") {
            let mut code = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                code.push_str(l);
                code.push('\n');
            }
            if let Some((mode, expect)) = pending.take() {
                out.push(Block {
                    mode,
                    expect,
                    code,
                    line: i + 1,
                });
            }
        }
    }
    out
}

fn free_port() -> u16 {
    sluice_e2e::free_addr().port()
}

/// The block as it runs here: the CI-built binary, the test's ports.
fn localise(code: &str, bin: &Path, http: u16, grpc: u16) -> String {
    code.replace(
        "cargo run --release -p sluice-ingester --",
        &format!("'{}'", bin.display()),
    )
    .replace("127.0.0.1:8080", &format!("127.0.0.1:{http}"))
    .replace("127.0.0.1:8082", &format!("127.0.0.1:{grpc}"))
    .replace("localhost:8080", &format!("localhost:{http}"))
    .replace("localhost:8082", &format!("localhost:{grpc}"))
}

fn http_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs every marked block of `doc` in order; returns how many ran.
fn run_doc(doc: &str) -> usize {
    let Some(bin) = ingester_bin() else { return 0 };
    let md = std::fs::read_to_string(root().join(doc)).expect("read doc");
    let blocks = marked_blocks(&md);
    assert!(
        blocks.iter().any(|b| b.mode == Mode::Run),
        "{doc} has no `<!-- ci: run -->` block: the test would check nothing"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (http, grpc) = (free_port(), free_port());
    let envs = [
        ("SLUICE_HTTP_BIND", format!("127.0.0.1:{http}")),
        ("SLUICE_GRPC_BIND", format!("127.0.0.1:{grpc}")),
        ("SLUICE_ADDR", format!("http://127.0.0.1:{grpc}")),
        ("SLUICE_PROGRESS", "none".into()),
    ];
    let mut server: Option<Server> = None;
    let mut ran = 0;
    let python = if blocks.iter().any(|b| b.mode == Mode::Python) {
        python()
    } else {
        None
    };
    for b in &blocks {
        let code = localise(&b.code, &bin, http, grpc);
        match b.mode {
            Mode::Server => {
                let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
                let child = Command::new("bash")
                    .args(["-c", &format!("exec {}", code.trim())])
                    .current_dir(dir.path())
                    .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
                    .stdout(Stdio::from(log.try_clone().expect("log")))
                    .stderr(Stdio::from(log))
                    .spawn()
                    .expect("start the server block");
                server = Some(Server(child));
                let deadline = Instant::now() + Duration::from_secs(90);
                while !http_ok(http, "/ready") {
                    let log =
                        std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                    if let Some(Server(c)) = server.as_mut()
                        && let Ok(Some(st)) = c.try_wait()
                    {
                        panic!("{doc}:{}: the server exited ({st}):\n{log}", b.line);
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{doc}:{}: not ready after 90 s:\n{log}",
                        b.line
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Mode::Run | Mode::Python => {
                let out = if b.mode == Mode::Run {
                    Command::new("bash")
                        .args(["-euo", "pipefail", "-c", &code])
                        .current_dir(dir.path())
                        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
                        .output()
                        .expect("run block")
                } else {
                    let Some(py) = &python else { continue };
                    let script = dir.path().join("block.py");
                    std::fs::write(&script, &code).expect("write block");
                    Command::new(py)
                        .arg(&script)
                        .current_dir(dir.path())
                        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
                        .output()
                        .expect("run python block")
                };
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                println!("--- {doc}:{}\n{code}{text}", b.line);
                assert!(
                    out.status.success(),
                    "{doc}:{}: block failed ({}):\n{code}\n{text}",
                    b.line,
                    out.status
                );
                if let Some(e) = &b.expect {
                    assert!(
                        text.contains(e.as_str()),
                        "{doc}:{}: output lacks {e:?}:\n{text}",
                        b.line
                    );
                }
                ran += 1;
            }
        }
    }
    drop(server);
    ran
}

fn ingester_bin() -> Option<PathBuf> {
    match std::env::var_os("SLUICE_INGESTER_BIN") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        Some(p) => panic!(
            "SLUICE_INGESTER_BIN={} does not exist",
            Path::new(&p).display()
        ),
        None if tools_required() => {
            panic!("SLUICE_INGESTER_BIN must be set in CI (scripts/test.sh sets it)")
        }
        None => {
            println!("NOTICE: SLUICE_INGESTER_BIN is not set; skipping the documented commands");
            None
        }
    }
}

#[test]
fn quickstart_commands_run() {
    let ran = run_doc("docs/quickstart.md");
    println!("ran {ran} blocks");
}

#[test]
fn api_examples_run() {
    let ran = run_doc("docs/api.md");
    println!("ran {ran} blocks");
}

#[test]
fn readme_try_it_matches_the_quickstart() {
    // The quick start repeats the README's commands; they must not drift.
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let qs = std::fs::read_to_string(root().join("docs/quickstart.md")).expect("quickstart");
    for cmd in [
        "cargo run --release -p sluice-ingester -- serve",
        "cargo run --release -p sluice-ingester -- query --namespace demo --table cpu",
    ] {
        assert!(readme.contains(cmd), "README lacks {cmd}");
        assert!(qs.contains(cmd), "docs/quickstart.md lacks {cmd}");
    }
}
