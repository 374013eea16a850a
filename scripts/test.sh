#!/usr/bin/env bash
# Sluice's one test command: what CI runs (.ci/run) and what a developer runs.
#
#   scripts/test.sh [NEXTEST ARGS...]   install what is missing, start the test
#                                       servers, run every check, stop the servers
#   scripts/test.sh --services-only     only install and start PostgreSQL and
#                                       s3s-fs, print the export lines, leave
#                                       them running (same as scripts/services.sh)
#
# Phases, in order: install (PostgreSQL, s3s-fs, Python venv, helm/kubectl),
# start services, cargo fmt --check, cargo clippy -D warnings, cargo nextest
# (cargo test when nextest is missing), a smoke run of every criterion
# bench (each once, tiny input), doc tests. A failing check does not
# stop the later ones; the script exits non-zero if any phase failed and ends
# with a timing summary. Arguments go to nextest, e.g. `scripts/test.sh wal::`.
#
# Environment (all optional):
#   SLUICE_CACHE_DIR      cache for installs        (default $HOME/.cache/sluice)
#   CARGO_TARGET_DIR      cargo target dir          (default $SLUICE_CACHE_DIR/target)
#   SLUICE_SKIP_FMT=1     skip cargo fmt --check
#   SLUICE_SKIP_CLIPPY=1  skip cargo clippy
#   SLUICE_SKIP_TESTS=1   skip cargo nextest (unit and integration tests)
#   SLUICE_SKIP_BENCH_SMOKE=1 skip the criterion benches' smoke run
#   SLUICE_SKIP_DOCTEST=1 skip cargo test --doc
#   SLUICE_SKIP_CARGO=1   skip all five cargo phases above
#   SLUICE_SKIP_SERVICES=1  do not install or start PostgreSQL and s3s-fs
#   SLUICE_SKIP_PYTHON=1  do not build the Python venv (SLUICE_TEST_PYTHON unset)
#   SLUICE_SKIP_HELM=1    do not install helm and kubectl
#   SLUICE_TEST_POSTGRES_URL  use this PostgreSQL instead of starting one
#   SLUICE_TEST_S3_ENDPOINT   use this S3 endpoint instead of starting s3s-fs
#                         (then also set SLUICE_TEST_S3_{BUCKET,ACCESS_KEY,SECRET_KEY,REGION})
#   SLUICE_PG_PORT, SLUICE_S3_PORT  fixed ports for the servers (default: free ones)
#   SLUICE_SERVICE_WAIT   seconds a server may take to answer (default 60)
#   SLUICE_KEEP_TMP=1     keep the temp dir with server data and logs
#   SLUICE_CARGO_LOCKED   1: pass --locked to cargo (default 1 when CI is set, else 0)
#
# Exported to the tests: SLUICE_TEST_POSTGRES_URL (a role with CREATEDB; tests
# make their own schemas/databases), SLUICE_TEST_S3_{ENDPOINT,BUCKET,ACCESS_KEY,
# SECRET_KEY,REGION} (plain http, path-style), SLUICE_TEST_PYTHON (a python
# with kubernetes-validate, jsonschema, pyarrow, cel-python), SLUICE_TEST_PG_BIN
# and SLUICE_S3S_FS_BIN (PostgreSQL's bin directory and the s3s-fs binary, for
# the soak's private servers), and PATH with the venv and helm/kubectl first.

set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/install.sh
source "$ROOT/scripts/lib/install.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

case "${1:-}" in
    --services-only)
        shift
        exec "$ROOT/scripts/services.sh" start "$@"
        ;;
    -h | --help)
        sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$SLUICE_CACHE_DIR/target}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
if [ -n "${CI:-}" ]; then
    # A from-scratch build gains nothing from incremental state, and it bloats
    # the cached target dir.
    export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
    export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
fi
CARGO_LOCKED=()
if [ "${SLUICE_CARGO_LOCKED:-$([ -n "${CI:-}" ] && echo 1 || echo 0)}" = 1 ]; then
    CARGO_LOCKED=(--locked)
fi

STATE_DIR=
FAILED=0

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    finish_failed_setup_phase
    if [ -n "$STATE_DIR" ]; then
        stop_services "$STATE_DIR" || true
        if env_true SLUICE_KEEP_TMP; then
            log "kept server data and logs in $STATE_DIR"
        else
            rm -rf "$STATE_DIR"
        fi
    fi
    cleanup_dirs
    print_phase_summary
    if [ "$rc" -eq 0 ] && [ "$FAILED" -ne 0 ]; then
        rc=1
    fi
    log "$([ "$rc" -eq 0 ] && echo "all phases passed" || echo "FAILED (exit $rc)")"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$ROOT"
log "Sluice checks in $ROOT (cache $SLUICE_CACHE_DIR, target $CARGO_TARGET_DIR)"
mkdir -p "$SLUICE_CACHE_DIR"
command -v curl >/dev/null || as_root_apt_install curl ca-certificates

# ---- installs (each a no-op when cached) ---------------------------------
if env_true SLUICE_SKIP_SERVICES; then
    skip_phase "install postgresql" SLUICE_SKIP_SERVICES
    skip_phase "install s3s-fs" SLUICE_SKIP_SERVICES
else
    setup_phase "install postgresql" ensure_postgres
    setup_phase "install s3s-fs" ensure_s3s_fs
fi
if env_true SLUICE_SKIP_PYTHON; then
    skip_phase "install python venv" SLUICE_SKIP_PYTHON
else
    setup_phase "install python venv" ensure_python_venv
fi
if env_true SLUICE_SKIP_HELM; then
    skip_phase "install helm/kubectl" SLUICE_SKIP_HELM
else
    setup_phase "install helm/kubectl" ensure_helm_kubectl
fi

# ---- services ------------------------------------------------------------
if env_true SLUICE_SKIP_SERVICES; then
    skip_phase "start services" SLUICE_SKIP_SERVICES
else
    # Removed by on_exit once the servers have stopped.
    STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-test.XXXXXX")
    setup_phase "start services" start_services "$STATE_DIR"
    env_lines | sed 's/^/    /' >&2
fi

# ---- cargo checks --------------------------------------------------------
cargo_phase() { # SKIPVAR NAME CMD...
    local skipvar=$1 name=$2
    shift 2
    if env_true SLUICE_SKIP_CARGO; then
        skip_phase "$name" SLUICE_SKIP_CARGO
    elif env_true "$skipvar"; then
        skip_phase "$name" "$skipvar"
    else
        check_phase "$name" "$@" || { FAILED=1; return 1; }
    fi
}

show_server_logs_on_failure() {
    [ -n "$STATE_DIR" ] || return 0
    show_log "$STATE_DIR/pg/postgres.log"
    show_log "$STATE_DIR/s3/s3s-fs.log"
}

# Each phase records its own failure in FAILED; `|| true` keeps set -e from
# stopping the run so the later phases still report.
cargo_phase SLUICE_SKIP_FMT "cargo fmt" cargo fmt --all --check || true
# Every cargo phase builds with one feature set, so sluice-ingester is
# compiled once for all of them. The `benches` feature only changes
# sluice-ingester's own features (no dependency is rebuilt): it exposes the
# internals its criterion benches use.
FEATURES=(--features sluice-ingester/benches)
# Build the binaries and tests once; the e2e tests use the binary built here
# (SLUICE_INGESTER_BIN).
cargo_phase SLUICE_SKIP_TESTS "cargo build" cargo build "${CARGO_LOCKED[@]}" --workspace "${FEATURES[@]}" --bins --tests || true
export SLUICE_INGESTER_BIN="$CARGO_TARGET_DIR/debug/sluice-ingester"
cargo_phase SLUICE_SKIP_CLIPPY "cargo clippy" \
    cargo clippy "${CARGO_LOCKED[@]}" --workspace --all-targets "${FEATURES[@]}" -- -D warnings || true
if cargo nextest --version >/dev/null 2>&1; then
    TEST_CMD=(cargo nextest run "${CARGO_LOCKED[@]}" --workspace "${FEATURES[@]}" --no-fail-fast "$@")
else
    log "cargo-nextest not found; falling back to cargo test"
    TEST_CMD=(cargo test "${CARGO_LOCKED[@]}" --workspace "${FEATURES[@]}" --no-fail-fast "$@")
fi
cargo_phase SLUICE_SKIP_TESTS "cargo ${TEST_CMD[1]}" "${TEST_CMD[@]}" || show_server_logs_on_failure
# Each criterion bench once, with a tiny input (criterion's test mode; see
# ingester/benches/common `size`): the benches keep working, and cost seconds.
cargo_phase SLUICE_SKIP_BENCH_SMOKE "bench smoke" \
    cargo test "${CARGO_LOCKED[@]}" --workspace "${FEATURES[@]}" --bench '*' || true
cargo_phase SLUICE_SKIP_DOCTEST "doc tests" cargo test "${CARGO_LOCKED[@]}" --workspace "${FEATURES[@]}" --doc || true
