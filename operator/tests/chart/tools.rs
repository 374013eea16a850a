//! Finding and running the external tools the chart and docs tests need
//! (helm, the test Python with kubernetes-validate and jsonschema).
//!
//! A missing tool is a failure when the environment says it should be
//! there — `CI` is set, `SLUICE_REQUIRE_TOOLS=1`, or `SLUICE_TEST_PYTHON`
//! names a Python that does not exist — and a printed skip only on a
//! developer machine without them.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The workspace root.
pub fn root() -> PathBuf {
    manifest_dir()
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether the tools must be present (CI), so a missing one fails.
pub fn tools_required() -> bool {
    env_set("CI") || env_set("SLUICE_REQUIRE_TOOLS")
}

fn missing(what: &str, how: &str) -> Option<PathBuf> {
    if tools_required() {
        panic!("{what} is required here (CI or SLUICE_REQUIRE_TOOLS is set) but missing: {how}");
    }
    println!("NOTICE: skipping: {what} not found ({how}); scripts/test.sh installs it");
    None
}

/// `helm`: `$SLUICE_HELM`, then `PATH`, then the cache scripts/test.sh
/// installs into (`$SLUICE_CACHE_DIR` or `~/.cache/sluice`, `tools/bin`).
pub fn helm() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_HELM") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Some(p)
        } else {
            panic!("SLUICE_HELM={} does not exist", p.display())
        };
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let cache = std::env::var_os("SLUICE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/sluice")));
    if let Some(c) = cache {
        dirs.push(c.join("tools/bin"));
    }
    for d in dirs {
        let p = d.join("helm");
        if p.is_file() {
            return Some(p);
        }
    }
    missing("helm", "not on PATH nor in ~/.cache/sluice/tools/bin")
}

/// The test Python (`$SLUICE_TEST_PYTHON`), with kubernetes-validate,
/// jsonschema and cel-python.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("SLUICE_TEST_PYTHON") {
        Some(p) if Path::new(&p).is_file() => Some(PathBuf::from(p)),
        Some(p) => panic!(
            "SLUICE_TEST_PYTHON={} does not exist",
            Path::new(&p).display()
        ),
        None => missing("the test Python", "SLUICE_TEST_PYTHON is not set"),
    }
}

/// Runs `program args…` with `stdin`, returning its output.
pub fn run<I, S>(program: &Path, args: I, stdin: Option<&str>) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_string();
        // A writer thread: a large input must not deadlock against a full
        // stdout pipe.
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("wait for the child");
        writer.join().expect("stdin writer");
        return out;
    }
    child.wait_with_output().expect("wait for the child")
}

/// stdout + stderr, lossily.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A committed generated file must equal `want`. With `update_env` set in
/// the environment the file is rewritten first; otherwise a difference
/// fails with its first differing line and `how_to_update`.
pub fn assert_generated(path: &Path, want: &str, update_env: &str, how_to_update: &str) {
    if std::env::var_os(update_env).is_some() {
        std::fs::write(path, want).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()))
            + 1;
        panic!(
            "{} differs from what is generated (first at line {line}); {how_to_update}",
            path.display()
        );
    }
}

/// This package's directory. Cargo sets `CARGO_MANIFEST_DIR` when it runs a
/// test, so the checkout being tested wins over the path compiled in: a
/// target dir shared by checkouts at different paths can hand one of them a
/// test binary built in the other, whose compiled-in path may be gone.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
