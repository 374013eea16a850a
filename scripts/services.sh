#!/usr/bin/env bash
# The test servers on their own, for running single tests by hand.
#
#   eval "$(scripts/services.sh)"   install if needed and start PostgreSQL and
#                                   s3s-fs, print export lines for the tests
#   scripts/services.sh start       the same (it is the default)
#   scripts/services.sh env         print the export lines of running servers
#   scripts/services.sh stop        stop both servers and delete their data
#
# The export lines go to stdout (and to $SLUICE_SERVICES_DIR/env.sh); logs go
# to stderr. `start` while the servers run just prints their exports again.
# The servers keep running after this script exits, until `stop`.
#
# Environment: SLUICE_SERVICES_DIR (state dir, default ${TMPDIR:-/tmp}/sluice-services),
# SLUICE_CACHE_DIR, SLUICE_PG_PORT, SLUICE_S3_PORT, SLUICE_SERVICE_WAIT: see
# scripts/test.sh.

set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/install.sh
source "$ROOT/scripts/lib/install.sh"
# shellcheck source=scripts/lib/services.sh
source "$ROOT/scripts/lib/services.sh"

DIR=${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}

running() {
    local pid
    [ -f "$DIR/env.sh" ] && [ -f "$DIR/pg/data/postmaster.pid" ] && [ -f "$DIR/s3/pid" ] || return 1
    pid=$(cat "$DIR/s3/pid")
    kill -0 "$pid" 2>/dev/null || return 1
    PG_BIN=$(postgres_bindir) || return 1
    # shellcheck disable=SC1091
    (source "$DIR/env.sh" && pg_answers "$SLUICE_TEST_POSTGRES_URL" && s3_answers "$SLUICE_TEST_S3_ENDPOINT")
}

stop() {
    [ -d "$DIR" ] || return 0
    PG_BIN=$(postgres_bindir) || PG_BIN=
    stop_s3s "$DIR"
    if [ -n "$PG_BIN" ]; then
        stop_postgres "$DIR"
    fi
    rm -rf "$DIR"
    log "stopped; removed $DIR"
}

case "${1:-start}" in
    start)
        if running; then
            log "already running (state in $DIR)"
        else
            stop
            # The env of the caller must not make us skip a server.
            unset SLUICE_TEST_POSTGRES_URL SLUICE_TEST_S3_ENDPOINT
            ensure_postgres
            ensure_s3s_fs
            mkdir -p "$DIR"
            start_services "$DIR"
            log "started; stop with: scripts/services.sh stop (logs in $DIR)"
        fi
        cat "$DIR/env.sh"
        ;;
    env)
        running || die "not running; start with scripts/services.sh start"
        cat "$DIR/env.sh"
        ;;
    stop)
        stop
        ;;
    -h | --help)
        sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        ;;
    *)
        die "unknown command '$1' (start | env | stop)"
        ;;
esac
