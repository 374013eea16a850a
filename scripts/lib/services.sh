# shellcheck shell=bash
# Starts and stops the throwaway servers the tests talk to: a PostgreSQL
# cluster (catalog tests) and s3s-fs (S3 object store tests). Everything lives
# under one state directory: data, sockets, logs, pid files and env.sh with
# the export lines. Servers listen on 127.0.0.1 only, on ports picked free at
# start. Sourced after common.sh and install.sh, never executed.

# Fixed test credentials: these servers hold nothing but test data.
SLUICE_PG_USER=sluice
SLUICE_PG_PASSWORD=sluice
SLUICE_PG_DB=sluice
SLUICE_S3_ACCESS_KEY=sluice-test-access-key
SLUICE_S3_SECRET_KEY=sluice-test-secret-key
SLUICE_S3_BUCKET=sluice-test
SLUICE_S3_REGION=us-east-1

# How long a server may take to answer after start, in seconds.
SLUICE_SERVICE_WAIT=${SLUICE_SERVICE_WAIT:-60}

# Runs a command as the PostgreSQL owner: the `postgres` user when we are
# root (the server refuses to run as root), else ourselves. From / so the
# other user never trips over an unreadable working directory.
run_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

pg_answers() { # URL
    "$PG_BIN/psql" -X -q -At -d "$1" -c 'select 1' | grep -qx 1
}

start_postgres() { # STATE_DIR
    local dir=$1/pg port url
    port=${SLUICE_PG_PORT:-$(free_port)}
    mkdir -p "$dir/data" "$dir/sock"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
        chown -R postgres: "$dir"
    fi
    chmod 0700 "$dir/data"
    log "initdb $dir/data"
    run_as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --no-locale --no-sync >"$1/pg-initdb.log" 2>&1 ||
        { show_log "$1/pg-initdb.log"; die "initdb failed"; }
    # Durability off: a test cluster that dies is thrown away anyway.
    log "starting PostgreSQL on 127.0.0.1:$port (socket dir $dir/sock)"
    run_as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$SLUICE_SERVICE_WAIT" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null ||
        { show_log "$dir/postgres.log"; die "PostgreSQL did not start on port $port"; }
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$port" -U postgres -d postgres \
        -c "CREATE ROLE $SLUICE_PG_USER LOGIN CREATEDB PASSWORD '$SLUICE_PG_PASSWORD'" \
        -c "CREATE DATABASE $SLUICE_PG_DB OWNER $SLUICE_PG_USER" ||
        { show_log "$dir/postgres.log"; die "could not create the $SLUICE_PG_USER role and database"; }
    url="postgres://$SLUICE_PG_USER:$SLUICE_PG_PASSWORD@127.0.0.1:$port/$SLUICE_PG_DB"
    wait_until "$SLUICE_SERVICE_WAIT" pg_answers "$url" ||
        { show_log "$dir/postgres.log"; die "PostgreSQL on port $port did not answer as $SLUICE_PG_USER within ${SLUICE_SERVICE_WAIT}s"; }
    log "PostgreSQL ready: $url"
    export SLUICE_TEST_POSTGRES_URL=$url
}

stop_postgres() { # STATE_DIR
    local data=$1/pg/data
    [ -f "$data/postmaster.pid" ] || return 0
    log "stopping PostgreSQL ($data)"
    run_as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
        log "warning: pg_ctl stop failed for $data"
}

# Any HTTP answer at all (even 403) means s3s-fs is listening.
s3_answers() { # ENDPOINT
    local code
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1/") || true
    [ -n "$code" ] && [ "$code" != 000 ]
}

# Signed request to the S3 server with curl's SigV4 support. S3 wants the
# payload hash in x-amz-content-sha256, which this curl does not add itself.
s3_curl() { # PAYLOAD_FILE|"" CURL_ARGS...
    local hash
    if [ -n "$1" ]; then
        hash=$(sha256sum <"$1" | cut -d' ' -f1)
    else
        hash=$(printf '' | sha256sum | cut -d' ' -f1)
    fi
    shift
    curl -sS -f -m 10 --aws-sigv4 "aws:amz:$SLUICE_S3_REGION:s3" \
        --user "$SLUICE_S3_ACCESS_KEY:$SLUICE_S3_SECRET_KEY" \
        -H "x-amz-content-sha256: $hash" "$@"
}

# PUT, GET (compared) and DELETE of one object, so a broken signature or
# bucket mapping fails here with a clear message rather than deep in a test.
s3_smoke_test() { # ENDPOINT STATE_DIR
    local url=$1/$SLUICE_S3_BUCKET/sluice-ci-smoke/object.txt body got file=$2/s3-smoke.txt
    body="sluice smoke $(date +%s%N)"
    printf '%s' "$body" >"$file"
    s3_curl "$file" -X PUT --data-binary "@$file" -H 'Content-Type: text/plain' "$url" >/dev/null ||
        die "s3s-fs smoke test: signed PUT $url failed"
    got=$(s3_curl "" "$url") || die "s3s-fs smoke test: signed GET $url failed"
    [ "$got" = "$body" ] || die "s3s-fs smoke test: GET returned '$got', expected '$body'"
    s3_curl "" -X DELETE "$url" >/dev/null || die "s3s-fs smoke test: signed DELETE $url failed"
    rm -f "$file"
    log "s3s-fs smoke test passed (signed PUT/GET/DELETE)"
}

start_s3s() { # STATE_DIR
    local dir=$1/s3 port endpoint pid
    port=${SLUICE_S3_PORT:-$(free_port)}
    endpoint=http://127.0.0.1:$port
    # s3s-fs maps each top-level directory of its root to a bucket.
    mkdir -p "$dir/root/$SLUICE_S3_BUCKET"
    log "starting s3s-fs on $endpoint (root $dir/root)"
    # setsid: its own session, so it outlives scripts/services.sh and a
    # terminal hang-up; stopped by pid. The inner shell writes its own pid
    # and then becomes s3s-fs (exec), so the pid file is right whether or not
    # setsid had to fork.
    rm -f "$dir/pid"
    # shellcheck disable=SC2016 # $$, $0 and $@ are the inner shell's
    RUST_LOG=info setsid bash -c 'echo $$ >"$0" && exec "$@"' "$dir/pid" \
        "$SLUICE_TOOLS_DIR/bin/s3s-fs" --host 127.0.0.1 --port "$port" \
        --access-key "$SLUICE_S3_ACCESS_KEY" --secret-key "$SLUICE_S3_SECRET_KEY" \
        "$dir/root" </dev/null >"$dir/s3s-fs.log" 2>&1 &
    local deadline=$(($(now_s) + SLUICE_SERVICE_WAIT))
    until [ -s "$dir/pid" ] && s3_answers "$endpoint"; do
        pid=$(cat "$dir/pid" 2>/dev/null || true)
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            show_log "$dir/s3s-fs.log"
            die "s3s-fs exited during start-up (port $port)"
        fi
        if [ "$(now_s)" -ge "$deadline" ]; then
            show_log "$dir/s3s-fs.log"
            die "s3s-fs on $endpoint did not answer within ${SLUICE_SERVICE_WAIT}s"
        fi
        sleep 0.5
    done
    s3_smoke_test "$endpoint" "$dir" || { show_log "$dir/s3s-fs.log"; return 1; }
    log "s3s-fs ready: $endpoint bucket $SLUICE_S3_BUCKET"
    export SLUICE_TEST_S3_ENDPOINT=$endpoint
    export SLUICE_TEST_S3_BUCKET=$SLUICE_S3_BUCKET
    export SLUICE_TEST_S3_ACCESS_KEY=$SLUICE_S3_ACCESS_KEY
    export SLUICE_TEST_S3_SECRET_KEY=$SLUICE_S3_SECRET_KEY
    export SLUICE_TEST_S3_REGION=$SLUICE_S3_REGION
}

stop_s3s() { # STATE_DIR
    local pidfile=$1/s3/pid pid _
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping s3s-fs (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# Starts what is not already given: a SLUICE_TEST_POSTGRES_URL or
# SLUICE_TEST_S3_ENDPOINT already in the environment is used as is.
start_services() { # STATE_DIR
    chmod 0755 "$1" # the postgres user must reach its directory inside
    # The binaries themselves, for tests that run (and crash) private
    # instances of their own (e2e/tests/soak.rs).
    if [ -n "${PG_BIN:-}" ] && [ -z "${SLUICE_TEST_PG_BIN:-}" ]; then
        export SLUICE_TEST_PG_BIN=$PG_BIN
    fi
    if [ -x "$SLUICE_TOOLS_DIR/bin/s3s-fs" ] && [ -z "${SLUICE_S3S_FS_BIN:-}" ]; then
        export SLUICE_S3S_FS_BIN=$SLUICE_TOOLS_DIR/bin/s3s-fs
    fi
    if [ -n "${SLUICE_TEST_POSTGRES_URL:-}" ]; then
        log "using the given SLUICE_TEST_POSTGRES_URL; not starting PostgreSQL"
    else
        start_postgres "$1"
    fi
    if [ -n "${SLUICE_TEST_S3_ENDPOINT:-}" ]; then
        log "using the given SLUICE_TEST_S3_ENDPOINT; not starting s3s-fs"
    else
        start_s3s "$1"
    fi
    write_env_file "$1/env.sh"
}

stop_services() { # STATE_DIR
    stop_s3s "$1"
    stop_postgres "$1"
}

# The export lines for the running services, also written to a file that a
# shell can source.
env_lines() {
    local v
    for v in SLUICE_TEST_POSTGRES_URL SLUICE_TEST_S3_ENDPOINT SLUICE_TEST_S3_BUCKET \
        SLUICE_TEST_S3_ACCESS_KEY SLUICE_TEST_S3_SECRET_KEY SLUICE_TEST_S3_REGION \
        SLUICE_TEST_PYTHON SLUICE_TEST_PG_BIN SLUICE_S3S_FS_BIN; do
        if [ -n "${!v:-}" ]; then
            printf 'export %s=%q\n' "$v" "${!v}"
        fi
    done
}

write_env_file() { # FILE
    env_lines >"$1"
}
