#!/usr/bin/env bash
# The hardware limits every benchmark figure is compared with: fdatasync
# latency (p50/p99) of small appends and sequential write bandwidth on the
# filesystem of a directory (default: next to ./data, where the WAL lives),
# plus one core's memcpy bandwidth.
#
#   e2e/scripts/limits-probe.sh [--dir DIR] [--json FILE] [--seconds-per-test 3s]
#
# Runs SLUICE_LIMITS_PROBE_BIN if set, else `sluice-limits-probe` from
# $CARGO_TARGET_DIR (or ./target)/release, built if missing, like the other
# bench scripts' binaries.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${SLUICE_LIMITS_PROBE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/sluice-limits-probe}"
if [[ ! -x "$bin" ]]; then
  (cd "$root" && cargo build --release -q -p sluice-e2e --bin sluice-limits-probe)
fi
echo "kernel $(uname -r), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec "$bin" "$@"
