#!/usr/bin/env bash
# Warren vs RabbitMQ, side by side, same machine, same load generator (`warren perf`), in alternation.
# Usage: Benchmarks/compare.sh [scenario ...]   (default: all; names below)
# Env: DURATION (seconds per throughput run, default 10).
# Installs Debian's rabbitmq-server if missing; starts both brokers on 127.0.0.1 and stops them (by PID) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(small large confirms fanout latency queued idle)

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
swift build -c release >/dev/null
BIN=$(swift build -c release --show-bin-path)/warren
WORK=$(mktemp -d /tmp/warren-bench.XXXXXX)
chmod 755 "$WORK"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

WARREN_PID=""
RABBIT_DIR=""
start_brokers() {
  WARREN_PORT=$(free_port)
  "$BIN" --port "$WARREN_PORT" --log-level warning >> "$WORK/warren.log" 2>&1 &
  WARREN_PID=$!
  RABBIT_PORT=$(free_port)
  RABBIT_DIR="$WORK/rabbit-$RABBIT_PORT"
  Benchmarks/rabbitmq.sh start "$RABBIT_PORT" "$RABBIT_DIR"
  RABBIT_PID=$(cat "$RABBIT_DIR/pid")
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$WARREN_PORT") 2>/dev/null && break; sleep 0.1; done
}
stop_brokers() {
  [ -z "$WARREN_PID" ] || { kill "$WARREN_PID" 2>/dev/null || true; wait "$WARREN_PID" 2>/dev/null || true; }
  [ -z "$RABBIT_DIR" ] || Benchmarks/rabbitmq.sh stop "$RABBIT_DIR"
  WARREN_PID=""; RABBIT_DIR=""
}
trap stop_brokers EXIT
start_brokers

# run BROKER ARGS... -> prints the RESULT json
run() {
  local broker=$1; shift
  local port pid
  if [ "$broker" = warren ]; then port=$WARREN_PORT; pid=$WARREN_PID; else port=$RABBIT_PORT; pid=$RABBIT_PID; fi
  "$BIN" perf --uri "amqp://guest:guest@127.0.0.1:$port/" --broker-pid "$pid" "$@" 2>&1 | tee -a "$WORK/perf.log" \
    | grep '^RESULT ' | sed 's/^RESULT //' || echo '{}'
}
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get(sys.argv[2], 0))' "$1" "$2"; }

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); printf '%-52s warren %-12s rabbitmq %-12s ratio %-8s (target %s)\n' "$1" "$2" "$3" "$4" "$5"; }
ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.2f}x" if b else "n/a")' "$1" "$2"; }

throughput() { # name target key args...
  local name=$1 target=$2 key=$3; shift 3
  local w r
  w=$(run warren --duration "$DURATION" "$@"); r=$(run rabbitmq --duration "$DURATION" "$@")
  for result in "$w" "$r"; do
    [ "$(field "$result" lost)" = 0 ] && [ "$(field "$result" duplicates)" = 0 ] && [ "$(field "$result" corrupted)" = 0 ] \
      || echo "WARNING: $name: lost/duplicated/corrupted messages: $result" >&2
  done
  local wv rv; wv=$(field "$w" "$key"); rv=$(field "$r" "$key")
  row "$name" "$wv msg/s" "$rv msg/s" "$(ratio "$wv" "$rv")" "$target"
}

for scenario in "${SCENARIOS[@]}"; do
  case $scenario in
    small) throughput "16 B transient, auto-ack" ">= 10x" consume_rate --size 16 ;;
    large) throughput "1 KiB transient, auto-ack" ">= 5x" consume_rate --size 1024 ;;
    confirms) throughput "1 KiB, confirms (256) + manual ack, prefetch 256" ">= 5x" consume_rate \
        --size 1024 --confirm 256 --ack --prefetch 256 ;;
    fanout) throughput "fan-out to 10 queues, 10 consumers, 256 B (delivered)" ">= 5x" consume_rate \
        --size 256 --exchange-type fanout --queues 10 --consumers 10 ;;
    latency)
      w=$(run warren --duration "$DURATION" --size 1024 --rate 1000); r=$(run rabbitmq --duration "$DURATION" --size 1024 --rate 1000)
      wv=$(field "$w" p99_us); rv=$(field "$r" p99_us)
      row "latency p99 at 1,000 msg/s, 1 KiB (lower is better)" "$wv us" "$rv us" "$(ratio "$wv" "$rv")" "<= 0.33x"
      # The machine's floor: a bare C epoll relay (no broker, no AMQP) under the same rate and size.
      if command -v gcc >/dev/null 2>&1; then
        gcc -O2 -o "$WORK/floor-relay" Benchmarks/LatencyFloor/relay.c
        gcc -O2 -pthread -o "$WORK/floor-client" Benchmarks/LatencyFloor/client.c
        floor_port=$(free_port)
        "$WORK/floor-relay" "$floor_port" & floor_pid=$!
        fv=$("$WORK/floor-client" "$floor_port" $((DURATION * 1000)) 1000 | sed 's/.*p99_us=\([0-9]*\).*/\1/')
        wait "$floor_pid" 2>/dev/null || true
        row "  floor: bare C relay, no broker (p99, same load)" "-" "-" "$fv us = $(ratio "$fv" "$rv") of RabbitMQ" "-"
      fi ;;
    queued)
      stop_brokers; start_brokers  # memory is measured on fresh brokers
      args=(--consumers 0 --count 1000000 --confirm 1000 --size 16)
      w=$(run warren "${args[@]}"); r=$(run rabbitmq "${args[@]}")
      per() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(round((d["rss_after_kb"]-d["rss_before_kb"])*1024/d["published"]))' "$1"; }
      wv=$(per "$w"); rv=$(per "$r")
      row "memory per queued 16 B message (1,000,000 queued)" "$wv B" "$rv B" "$(ratio "$wv" "$rv")" "<= 0.1x" ;;
    idle)
      stop_brokers; start_brokers
      args=(--idle-connections 10000 --warmup 3)
      w=$(run warren "${args[@]}"); r=$(run rabbitmq "${args[@]}")
      per() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(round((d["rss_after_kb"]-d["rss_before_kb"])*1024/max(1,d["connections"])))' "$1"; }
      wv=$(per "$w"); rv=$(per "$r")
      row "memory per idle connection (10,000 open)" "$wv B" "$rv B" "$(ratio "$wv" "$rv")" "<= 0.2x" ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
done

echo
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null); $(date -u +%Y-%m-%d)"
echo "| scenario | Warren | RabbitMQ | Warren / RabbitMQ | target |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
