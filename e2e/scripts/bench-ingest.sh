#!/usr/bin/env bash
# Runs one load-generator scenario against a fresh release `sluice-ingester
# serve` (its own data directory, default settings: WAL fsync on every group
# commit, persistence on) and stops it afterwards. The loadgen reports the
# server's CPU and WAL/persist counters next to its own figures.
#
#   e2e/scripts/bench-ingest.sh [loadgen args…]
#
# Examples (docs/benchmarks.md lists the ones behind the published figures):
#   e2e/scripts/bench-ingest.sh --hosts 1000 --batch-lines 5000 --writers 8 --duration 60s --warm-up 10s
#   e2e/scripts/bench-ingest.sh --writers 1 --batch-lines 1 --duration 30s --warm-up 3s
#   e2e/scripts/bench-ingest.sh --target http --writers 8 --duration 30s
#
# Environment:
#   SLUICE_BENCH_PARENT  where the data directory is created (default: the
#                        repository root, i.e. the same filesystem as ./data)
#   SLUICE_SERVER_ARGS   extra `serve` flags (e.g. "--persist-workers 1")
#   SLUICE_BENCH_KEEP=1  keep the data directory and server log
#   SLUICE_PERF=SECONDS  also record a CPU profile of the server (perf,
#                        software clock) for SECONDS after the warm-up start
#   SLUICE_PERF_CALLGRAPH  perf's call-graph option for that profile (default
#                        "-g"; "--call-graph dwarf,16384" gives whole stacks
#                        of Rust code, which keeps no frame pointers)
#   SLUICE_BENCH_THEN="ARGS"  after the run, a second loadgen run with ARGS
#                        against the same server (e.g. Flight scans of the
#                        rows the first run left in the buffer; target 5)
#   SLUICE_BENCH_ALSO="ARGS"  a second loadgen with ARGS runs alongside the
#                        first, against the same server, from the same start;
#                        its report is printed with "alongside| " before each
#                        line (e.g. one writer of one line per request, with a
#                        longer --warm-up and a shorter --duration than the
#                        first, to measure small writes' latency under load)
#   SLUICE_BENCH_RESTART=1  after the load, kill -9 the server and start it
#                        again on the same data directory: prints the WAL's
#                        size and the time until /ready (replay; target 3b).
#                        Pair with SLUICE_SERVER_ARGS that keep the WAL from
#                        rotating (and so from being persisted and deleted):
#                        "--wal-segment-bytes 4294967296 --wal-rotation-interval 1h
#                         --hot-partition-bytes 8589934592 --hot-partition-rows 100000000
#                         --buffer-limit-bytes 8589934592"
#   SLUICE_BENCH_THREADS=1  after the load, the server's CPU time by thread
#                        name (tokio workers, WAL writer, merge, persist...),
#                        in all and per write request, since it started
#   CARGO_TARGET_DIR     where the release binaries are (built if missing)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
if [[ ! -x "$bin/sluice-ingester" || ! -x "$bin/sluice-loadgen" ]]; then
  (cd "$root" && cargo build --release -q -p sluice-ingester -p sluice-e2e)
fi
parent="${SLUICE_BENCH_PARENT:-$root}"
data="$(mktemp -d "$parent/.bench-data.XXXXXX")"
port_base=$((20000 + RANDOM % 20000))
grpc="127.0.0.1:$port_base"
http="127.0.0.1:$((port_base + 1))"
log="$data.log"

# shellcheck disable=SC2086
"$bin/sluice-ingester" serve --data-dir "$data" --grpc-bind "$grpc" --http-bind "$http" \
  ${SLUICE_SERVER_ARGS:-} >"$log" 2>&1 &
pid=$!
cleanup() {
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [[ "${SLUICE_BENCH_KEEP:-0}" != 1 ]]; then
    rm -rf "$data" "$log"
  else
    echo "kept $data and $log" >&2
  fi
}
trap cleanup EXIT
for _ in $(seq 1 600); do
  curl -sf "http://$http/ready" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done

addr="http://$grpc"
for a in "$@"; do [[ "$a" == http ]] && addr="http://$http"; done
echo "server pid $pid, data $data ($(df -T "$data" | awk 'NR==2 {print $2, $1}')), load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

if [[ -n "${SLUICE_PERF:-}" ]]; then
  # shellcheck disable=SC2086  # the call-graph option is one or two words
  ( sleep 2; perf record -F 999 ${SLUICE_PERF_CALLGRAPH:--g} -p "$pid" -o "$data.perf" -- sleep "$SLUICE_PERF" >/dev/null 2>&1
    echo "profile: $data.perf (perf report -i $data.perf)" >&2 ) &
  perf_pid=$!
fi
if [[ -n "${SLUICE_BENCH_ALSO:-}" ]]; then
  echo "alongside: ${SLUICE_BENCH_ALSO}" >&2
  # shellcheck disable=SC2086
  ( "$bin/sluice-loadgen" --addr "$addr" --query-addr "http://$grpc" --quiet ${SLUICE_BENCH_ALSO} 2>&1 \
      | sed 's/^/alongside| /' >&2 ) &
  also_pid=$!
fi
"$bin/sluice-loadgen" --addr "$addr" --query-addr "http://$grpc" --server-pid "$pid" \
  --metrics-url "http://$http/metrics" "$@"
if [[ -n "${also_pid:-}" ]]; then wait "$also_pid" || true; fi
if [[ -n "${perf_pid:-}" ]]; then wait "$perf_pid" || true; fi
if [[ -n "${SLUICE_BENCH_THEN:-}" ]]; then
  echo "second run against the same server: ${SLUICE_BENCH_THEN}" >&2
  # shellcheck disable=SC2086
  "$bin/sluice-loadgen" --addr "$addr" --query-addr "http://$grpc" --server-pid "$pid" \
    --metrics-url "http://$http/metrics" ${SLUICE_BENCH_THEN}
fi

# Buffered Arrow bytes against the server's resident memory (target 6).
memory() {
  local buffered rss hwm
  buffered=$(curl -sf "http://$http/metrics" | awk '$1 == "sluice_buffer_bytes" {print $2}')
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  echo "memory $1: buffered Arrow ${buffered:-?} bytes, RSS $((rss / 1024)) MiB, peak RSS $((hwm / 1024)) MiB" >&2
}
memory "after the load"

# CPU by thread name (utime + stime since start), per write request.
if [[ "${SLUICE_BENCH_THREADS:-0}" == 1 ]]; then
  requests=$(curl -sf "http://$http/metrics" | awk '$1 ~ /^sluice_write_requests_total/ {s += $2} END {print s + 0}')
  tick=$(getconf CLK_TCK)
  for t in /proc/"$pid"/task/*; do
    # comm may hold spaces: the fields after it start at the last ')'.
    stat=$(cat "$t/stat" 2>/dev/null) || continue
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    echo "$(cat "$t/comm" 2>/dev/null) $((f[11] + f[12]))"
  done | awk -v req="$requests" -v tick="$tick" '
    { sub(/-?[0-9]+$/, "", $1); cpu[$1] += $2; all += $2 }
    END {
      printf "server CPU by thread (%d write requests):\n", req
      for (n in cpu) if (cpu[n] > 0)
        printf "  %-22s %8.2f s  %8.1f us/request\n", n, cpu[n] / tick, req ? cpu[n] / tick / req * 1e6 : 0
      printf "  %-22s %8.2f s  %8.1f us/request\n", "all", all / tick, req ? all / tick / req * 1e6 : 0
    }' >&2
fi

if [[ "${SLUICE_BENCH_RESTART:-0}" == 1 ]]; then
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  wal_bytes=$(du -sb "$data/wal" | cut -f1)
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$bin/sluice-ingester" serve --data-dir "$data" --grpc-bind "$grpc" --http-bind "$http" \
    ${SLUICE_SERVER_ARGS:-} >>"$log" 2>&1 &
  pid=$!
  until curl -sf "http://$http/ready" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; exit 1; }
    sleep 0.02
  done
  ready=$(date +%s.%N)
  echo "restart after kill -9: $wal_bytes bytes of WAL, ready in $(echo "$ready - $start" | bc) s" >&2
  grep -E "WAL replay done" "$log" | tail -1 >&2 || true
  memory "after the replay"
fi
