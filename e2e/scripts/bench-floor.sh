#!/usr/bin/env bash
# The floor under any gRPC ingester on this machine: runs one load-generator
# scenario against `sluice-sink` (a WriteService that only receives and
# answers; with SLUICE_FLOOR_FSYNC=1 it also appends each payload to a file
# and fdatasyncs it, one request at a time) instead of the ingester. The
# loadgen reports the sink's CPU next to its own, so a figure of
# `bench-ingest.sh` can be read against what the transport and the client
# alone cost for the same workload.
#
#   e2e/scripts/bench-floor.sh [loadgen args…]
#
# Examples (docs/benchmarks.md lists the ones behind the published figures):
#   e2e/scripts/bench-floor.sh --hosts 1000 --batch-lines 5000 --writers 8 --duration 20s --warm-up 3s
#   SLUICE_FLOOR_FSYNC=1 e2e/scripts/bench-floor.sh --batch-lines 1 --writers 1 --duration 15s --warm-up 2s
#
# Environment:
#   SLUICE_BENCH_PARENT  where the fsync file is created (default: the
#                        repository root, i.e. the same filesystem as ./data)
#   SLUICE_FLOOR_FSYNC=1 append + fdatasync every payload before answering
#   SLUICE_SINK_FSYNC_PERCENT=N  with it: write only N% of each payload (27:
#                        the size of the ingester's WAL record of a TSBS batch)
#   SLUICE_SINK_WORK_US=N  spin N µs of CPU per request before answering
#                        (3400: parsing and validating 5,000 TSBS lines)
#   SLUICE_FLOOR_PREALLOCATE=BYTES  with it: write that many zeros to the file
#                        first, then overwrite it in place (wrapping) instead
#                        of appending, so no fdatasync has metadata to write
#   CARGO_TARGET_DIR     where the release binaries are (built if missing)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
if [[ ! -x "$bin/sluice-sink" || ! -x "$bin/sluice-loadgen" ]]; then
  (cd "$root" && cargo build --release -q -p sluice-e2e)
fi
parent="${SLUICE_BENCH_PARENT:-$root}"
dir="$(mktemp -d "$parent/.bench-floor.XXXXXX")"
grpc="127.0.0.1:$((20000 + RANDOM % 20000))"
args=(--grpc-bind "$grpc")
[[ "${SLUICE_FLOOR_FSYNC:-0}" == 1 ]] && args+=(--fsync-file "$dir/sink.log")
[[ -n "${SLUICE_FLOOR_PREALLOCATE:-}" ]] && args+=(--preallocate "$SLUICE_FLOOR_PREALLOCATE")
"$bin/sluice-sink" "${args[@]}" 2>"$dir/sink.err" &
pid=$!
cleanup() {
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  cat "$dir/sink.err" >&2
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
  grep -q listening "$dir/sink.err" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || exit 1
  sleep 0.1
done
echo "sink pid $pid (fsync ${SLUICE_FLOOR_FSYNC:-0}, $(df -T "$dir" | awk 'NR==2 {print $2, $1}')), load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$bin/sluice-loadgen" --addr "http://$grpc" --server-pid "$pid" "$@"
