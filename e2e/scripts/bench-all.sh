#!/usr/bin/env bash
# Every issue-7 measurement in one sequence, against one set of release
# binaries, on an otherwise idle machine: the probe, the floors, targets 2a/2b,
# 1 (60 s; its rate sets 2c and 5c to half of it), 2c (both readings: the
# batch writers' own latency, and a one-line writer's alongside them) and its
# floors (transport only; transport + parsing CPU + fdatasync), 5c,
# 5a/5b, 3/3b/6a, 3b with one-line writes, a mix of small and large writes
# (memory, scans), 6b. Each measured process runs in its own autogroup at
# nice -15. Output: one log (default: bench-all.log).
#
#   e2e/scripts/bench-all.sh [log]
#
# Environment: CARGO_TARGET_DIR (where release/sluice-* are; built if missing).
# The criterion figures (targets 4, parse + validate) are separate:
#   cargo bench -p sluice-ingester -p sluice-e2e --features sluice-ingester/benches \
#     --bench persist --bench lp -- 'persist/job|lp/parse_validate/5000'
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-bench-all.log}"
json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cd "$root" || exit 1
N() { setsid bash -c 'echo -15 > /proc/self/autogroup; exec nice -n -15 "$@"' _ "$@"; }
step() { echo; echo "=== $* ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"; }
quiet() { grep -v '^\s*\[' || true; }
persist_off="--wal-segment-bytes 4294967296 --wal-rotation-interval 1h --hot-partition-bytes 8589934592 --hot-partition-rows 100000000"
{
  step probe
  N e2e/scripts/limits-probe.sh --seconds-per-test 2s 2>&1 | sed -n '/^test/,$p'
  step floor 8x5000
  N e2e/scripts/bench-floor.sh --hosts 1000 --batch-lines 5000 --writers 8 --duration 20s --warm-up 3s 2>&1 | quiet
  step floor 1-line fsync
  SLUICE_FLOOR_FSYNC=1 N e2e/scripts/bench-floor.sh --batch-lines 1 --writers 1 --duration 10s --warm-up 2s 2>&1 | quiet
  step target 2a/2b
  N e2e/scripts/bench-ingest.sh --batch-lines 1 --writers 1 --duration 15s --warm-up 2s 2>&1 | quiet
  step target 1
  N e2e/scripts/bench-ingest.sh --hosts 1000 --batch-lines 5000 --writers 8 --duration 60s --warm-up 10s --json "$json" 2>&1 | quiet
  rate=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['rows_per_sec'] / 2))" "$json" 2>/dev/null || echo 300000)
  step target 2c at "$rate" rows/s
  N e2e/scripts/bench-ingest.sh --hosts 1000 --batch-lines 5000 --writers 8 --rate "$rate" --duration 20s --warm-up 5s 2>&1 | quiet
  step target 2c read as one writer of one line per request, alongside 8x5000 at "$rate" rows/s
  SLUICE_BENCH_ALSO="--batch-lines 1 --writers 1 --duration 20s --warm-up 7s --seed 2" \
    N e2e/scripts/bench-ingest.sh --hosts 1000 --batch-lines 5000 --writers 8 --rate "$rate" --duration 25s --warm-up 5s 2>&1 | quiet
  step floor 2c, no fsync
  N e2e/scripts/bench-floor.sh --hosts 1000 --batch-lines 5000 --writers 8 --rate "$rate" --duration 15s --warm-up 3s 2>&1 | quiet
  step floor 2c, the least a durable parsing server does: 3.4 ms of CPU and an fdatasync of 27% of each request
  SLUICE_FLOOR_FSYNC=1 SLUICE_SINK_FSYNC_PERCENT=27 SLUICE_SINK_WORK_US=3400 \
    N e2e/scripts/bench-floor.sh --hosts 1000 --batch-lines 5000 --writers 8 --rate "$rate" --duration 15s --warm-up 3s 2>&1 | quiet
  step target 5c at "$rate" rows/s
  N e2e/scripts/bench-ingest.sh --hosts 1000 --batch-lines 5000 --writers 8 --rate "$rate" --query-concurrency 20 --duration 30s --warm-up 5s 2>&1 | quiet
  step target 5a/5b
  SLUICE_SERVER_ARGS="$persist_off --buffer-limit-bytes 8589934592" \
  SLUICE_BENCH_THEN="--batch-lines 1 --writers 1 --rate 10 --duration 15s --query-concurrency 1 --start-ns 1777225600000000000" \
    N e2e/scripts/bench-ingest.sh --hosts 1000 --batch-lines 5000 --writers 8 --rows 1000000 2>&1 | quiet
  step target 3/3b/6a
  SLUICE_BENCH_RESTART=1 SLUICE_SERVER_ARGS="$persist_off --buffer-limit-bytes 8589934592" \
    N e2e/scripts/bench-ingest.sh --hosts 1000 --batch-lines 5000 --writers 8 --rows 8000000 2>&1 | quiet
  step target 3b with one-line writes: ~1 GiB of WAL, a record per row
  SLUICE_BENCH_RESTART=1 SLUICE_SERVER_ARGS="$persist_off --buffer-limit-bytes 8589934592" \
    N e2e/scripts/bench-ingest.sh --batch-lines 1 --writers 16 --rows 1500000 2>&1 | quiet
  step mixed: 1,024-line writer and 8 one-line writers, persistence held off, then full scans
  SLUICE_SERVER_ARGS="$persist_off --buffer-limit-bytes 8589934592" \
  SLUICE_BENCH_ALSO="--batch-lines 1 --writers 8 --duration 20s --seed 2" \
  SLUICE_BENCH_THEN="--batch-lines 1 --writers 1 --rate 10 --duration 30s --query-concurrency 1 --start-ns 1777225600000000000" \
    N e2e/scripts/bench-ingest.sh --batch-lines 1024 --writers 1 --duration 20s 2>&1 | quiet
  step target 6b
  SLUICE_SERVER_ARGS="$persist_off --buffer-limit-bytes 134217728" \
    N e2e/scripts/bench-ingest.sh --hosts 1000 --batch-lines 5000 --writers 8 --duration 20s 2>&1 | quiet
  step finished
} >"$out" 2>&1
echo "results: $out" >&2
