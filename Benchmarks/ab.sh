#!/usr/bin/env bash
# A/B of Warren against itself: each configuration (a set of environment variables, or "-" for none) gets a fresh
# broker on a fresh data directory and one `warren perf` run, the configurations in turn, ROUNDS times; then the
# average per configuration. Single runs on a shared machine's disk move by 20%, so judge by several rounds.
# Usage: Benchmarks/ab.sh ROUNDS CONFIG... e.g. Benchmarks/ab.sh 5 - "WARREN_CONNECTION_THREADS=1"
# Env: DURATION (seconds per run, default 8); PERF_ARGS (default: 1 KiB persistent, confirms 256, manual acks, 1p/1c).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:?rounds}; shift
[ $# -gt 0 ] || { echo "usage: $0 ROUNDS CONFIG..." >&2; exit 64; }
swift build -c release >/dev/null
BIN=$(swift build -c release --show-bin-path)/warren
WORK=$(mktemp -d /tmp/warren-ab.XXXXXX)
read -r -a perf_args <<< "${PERF_ARGS:---size 1024 --confirm 256 --persistent --ack --prefetch 1000}"
pid=""
trap '[ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; rm -rf "$WORK"' EXIT
results="$WORK/results"
for _ in $(seq 1 "$rounds"); do
  for config in "$@"; do
    rm -rf "$WORK/data"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    read -r -a vars <<< "$([ "$config" = - ] || echo "$config")"
    env "${vars[@]}" "$BIN" --port "$port" --metrics-port 0 --management-port 0 --data-dir "$WORK/data" \
      --log-level warning >> "$WORK/warren.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
    out=$("$BIN" perf --uri "amqp://guest:guest@127.0.0.1:$port/" --duration "${DURATION:-8}" --broker-pid "$pid" \
      "${perf_args[@]}" 2>&1 | grep '^RESULT ' | sed 's/^RESULT //' || true)
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    line=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1] or "{}")
print(d.get("consume_rate", 0), d.get("broker_cpu_us_per_msg", 0), d.get("client_cpu_us_per_msg", 0))' "$out")
    printf '%s\t%s\n' "$config" "$line" | tee -a "$results"
  done
done
echo
python3 - "$results" <<'PY'
import collections, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    config, values = line.rstrip("\n").split("\t")
    rows[config].append([float(v) for v in values.split()])
print(f"{'configuration':<50} {'runs':>4} {'msg/s':>10} {'broker us/msg':>14} {'client us/msg':>14}")
for config, runs in rows.items():
    n = len(runs)
    print(f"{config:<50} {n:>4} {sum(r[0] for r in runs)/n:>10,.0f} {sum(r[1] for r in runs)/n:>14.2f} {sum(r[2] for r in runs)/n:>14.2f}")
PY
