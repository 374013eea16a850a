# shellcheck shell=bash
# Shared helpers for scripts/test.sh and scripts/services.sh: logging, phase
# timing, bounded waits and free-port picking. Sourced, never executed.

# Where installs are cached between runs (tools, venv, cargo target dir).
SLUICE_CACHE_DIR=${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}

log() {
    printf '[%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

die() {
    log "ERROR: $*"
    exit 1
}

# Seconds since the epoch, for phase timing.
now_s() {
    date +%s
}

# Phase bookkeeping: parallel arrays, printed by print_phase_summary.
PHASE_NAMES=()
PHASE_SECS=()
PHASE_RESULTS=()

record_phase() { # NAME SECONDS RESULT
    PHASE_NAMES+=("$1")
    PHASE_SECS+=("$2")
    PHASE_RESULTS+=("$3")
}

# Runs a setup step that must succeed (an install or a server start) under
# the caller's `set -e`: any failing command inside stops the whole run, since
# nothing after it can be trusted. (Running it inside `if` would silently turn
# errexit off for the whole function.) The EXIT trap records the failure via
# finish_failed_setup_phase.
CURRENT_SETUP_PHASE=
CURRENT_SETUP_START=0
setup_phase() { # NAME CMD...
    CURRENT_SETUP_PHASE=$1
    CURRENT_SETUP_START=$(now_s)
    shift
    log "==> $CURRENT_SETUP_PHASE"
    "$@"
    record_phase "$CURRENT_SETUP_PHASE" $(($(now_s) - CURRENT_SETUP_START)) ok
    CURRENT_SETUP_PHASE=
}

# For the EXIT trap: records the setup phase that was running, if any.
finish_failed_setup_phase() {
    if [ -n "$CURRENT_SETUP_PHASE" ]; then
        record_phase "$CURRENT_SETUP_PHASE" $(($(now_s) - CURRENT_SETUP_START)) FAILED
        CURRENT_SETUP_PHASE=
    fi
}

# Temporary directories removed by the EXIT trap (cleanup_dirs).
CLEANUP_DIRS=()
make_temp_dir() { # PREFIX; sets TEMP_DIR (not printed: $(...) would lose the registration)
    local d
    d=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    CLEANUP_DIRS+=("$d")
    # shellcheck disable=SC2034 # read by the caller
    TEMP_DIR=$d
}
drop_temp_dir() { # DIR: removes one dir made by make_temp_dir
    local d keep=()
    rm -rf "$1"
    for d in "${CLEANUP_DIRS[@]}"; do
        [ "$d" = "$1" ] || keep+=("$d")
    done
    CLEANUP_DIRS=("${keep[@]}")
}
cleanup_dirs() {
    local d
    for d in "${CLEANUP_DIRS[@]}"; do
        rm -rf "$d"
    done
    CLEANUP_DIRS=()
}

# Runs a check phase (one command, e.g. cargo clippy); a failure is recorded
# and the run goes on, so one run reports every failing phase. Returns the
# command's status.
check_phase() { # NAME CMD...
    local name=$1 start rc
    shift
    log "==> $name: $*"
    start=$(now_s)
    if "$@"; then rc=0; else rc=$?; fi
    record_phase "$name" $(($(now_s) - start)) "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)")"
    if [ "$rc" -ne 0 ]; then
        log "$name FAILED (exit $rc)"
    fi
    return "$rc"
}

skip_phase() { # NAME REASON
    log "==> $1: skipped ($2)"
    record_phase "$1" 0 "skipped ($2)"
}

print_phase_summary() {
    local i total=0
    [ "${#PHASE_NAMES[@]}" -gt 0 ] || return 0
    log "Phase timings:"
    for i in "${!PHASE_NAMES[@]}"; do
        printf '  %-28s %6ss  %s\n' "${PHASE_NAMES[$i]}" "${PHASE_SECS[$i]}" "${PHASE_RESULTS[$i]}" >&2
        total=$((total + PHASE_SECS[i]))
    done
    printf '  %-28s %6ss\n' "total" "$total" >&2
}

# True when the named environment variable is set to 1/true/yes.
env_true() { # VARNAME
    case "${!1:-}" in
        1 | true | TRUE | yes | YES) return 0 ;;
        *) return 1 ;;
    esac
}

# Prints a TCP port on 127.0.0.1 that is free right now. Another process may
# take it before the server binds; the servers' start-up waits catch that.
free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# Polls CMD... every 0.5 s until it succeeds or TIMEOUT seconds pass.
wait_until() { # TIMEOUT CMD...
    local timeout=$1 deadline
    shift
    deadline=$(($(now_s) + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ "$(now_s)" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.5
    done
}

# Prints the last lines of a server log to stderr, for failure reports.
show_log() { # FILE
    if [ -f "$1" ]; then
        log "---- last 50 lines of $1 ----"
        tail -n 50 "$1" >&2 || true
        log "---- end of $1 ----"
    else
        log "(no log file at $1)"
    fi
}
