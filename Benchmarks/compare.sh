#!/usr/bin/env bash
# Warren vs RabbitMQ, side by side, same machine, same load generator (`warren perf`; the latency rows use
# Benchmarks/LatencyFloor/client.c for both brokers and the floor), in alternation.
# Usage: Benchmarks/compare.sh [scenario ...]   (default: all; names below)
# Env: DURATION (seconds per throughput run, default 10).
# Installs Debian's rabbitmq-server if missing; starts both brokers on 127.0.0.1 and stops them (by PID) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(small small-unbatched large confirms confirms-unbatched rpc huge fanout many
  queues10k topic10k churn latency management queued idle persistent persistent4 recovery expiry tls)

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
swift build -c release >/dev/null
BIN=$(swift build -c release --show-bin-path)/warren
WORK=$(mktemp -d /tmp/warren-bench.XXXXXX)
chmod 755 "$WORK"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A throwaway CA and server certificate for the TLS rows (the same files for both brokers).
PKI="$WORK/pki"
Scripts/make-server-certificate.sh "$PKI"

WARREN_PID=""
RABBIT_DIR=""
# With MANAGEMENT=1 both brokers serve their management API (RabbitMQ's plugin costs it CPU, so only the
# management scenario turns it on).
start_brokers() {
  WARREN_PORT=$(free_port)
  WARREN_MANAGEMENT_PORT=$(free_port)
  WARREN_TLS_PORT=$(free_port)
  RABBIT_TLS_PORT=$(free_port)
  "$BIN" --port "$WARREN_PORT" --metrics-port 0 --management-port "$WARREN_MANAGEMENT_PORT" --data-dir "$WORK/warren-data" \
    --tls-port "$WARREN_TLS_PORT" --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" \
    --log-level ${WARREN_LOG_LEVEL:-warning} >> "$WORK/warren.log" 2>&1 &
  WARREN_PID=$!
  RABBIT_PORT=$(free_port)
  RABBIT_DIR="$WORK/rabbit-$RABBIT_PORT"
  RABBIT_MANAGEMENT_PORT=$(free_port)
  if [ "${MANAGEMENT:-0}" = 1 ]; then
    RABBITMQ_MANAGEMENT_PORT=$RABBIT_MANAGEMENT_PORT Benchmarks/rabbitmq.sh start "$RABBIT_PORT" "$RABBIT_DIR"
  else
    RABBITMQ_TLS_PORT=$RABBIT_TLS_PORT RABBITMQ_TLS_DIR=$PKI Benchmarks/rabbitmq.sh start "$RABBIT_PORT" "$RABBIT_DIR"
  fi
  RABBIT_PID=$(cat "$RABBIT_DIR/pid")
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$WARREN_PORT") 2>/dev/null && break; sleep 0.1; done
}
EXTRA_PID=""
stop_brokers() {
  [ -z "$EXTRA_PID" ] || { kill "$EXTRA_PID" 2>/dev/null || true; wait "$EXTRA_PID" 2>/dev/null || true; EXTRA_PID=""; }
  [ -z "$WARREN_PID" ] || { kill "$WARREN_PID" 2>/dev/null || true; wait "$WARREN_PID" 2>/dev/null || true; }
  [ -z "$RABBIT_DIR" ] || Benchmarks/rabbitmq.sh stop "$RABBIT_DIR"
  WARREN_PID=""; RABBIT_DIR=""
}
trap stop_brokers EXIT
start_brokers

# run BROKER ARGS... -> prints the RESULT json (over TLS with TLS=1)
run() {
  local broker=$1; shift
  local port pid scheme=amqp
  if [ "$broker" = warren ]; then port=$WARREN_PORT; pid=$WARREN_PID; else port=$RABBIT_PORT; pid=$RABBIT_PID; fi
  if [ "${TLS:-0}" = 1 ]; then
    scheme=amqps
    if [ "$broker" = warren ]; then port=$WARREN_TLS_PORT; else port=$RABBIT_TLS_PORT; fi
  fi
  local out
  out=$("$BIN" perf --uri "$scheme://guest:guest@127.0.0.1:$port/" --ca "$PKI/ca.pem" --broker-pid "$pid" "$@" 2>&1 | tee -a "$WORK/perf.log" \
    | grep '^RESULT ' | sed 's/^RESULT //' | tail -n 1 || true)  # perf exits 2 after a loss: its RESULT still counts
  if [ -n "$out" ]; then echo "$out"; else echo '{}'; fi
}
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get(sys.argv[2], 0))' "$1" "$2"; }

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); printf '%-52s warren %-12s rabbitmq %-12s ratio %-8s (target %s)\n' "$1" "$2" "$3" "$4" "$5"; }
ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.2f}x" if b else "n/a")' "$1" "$2"; }
median() { python3 -c 'import statistics,sys; print(round(statistics.median(float(v) for v in sys.argv[1:])))' "$@"; }
spread() { python3 -c 'import sys; v=sorted(int(float(x)) for x in sys.argv[1:]); print(f"{v[0]:,}-{v[-1]:,}")' "$@"; }

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
  cpu_rows "$w" "$r"
}

# cpu_rows WARREN_RESULT RABBITMQ_RESULT [unit]: the broker's and the load generator's CPU time per message.
cpu_rows() {
  local unit=${3:-message} wc rc
  wc=$(field "$1" broker_cpu_us_per_msg); rc=$(field "$2" broker_cpu_us_per_msg)
  row "  broker CPU per $unit (lower is better)" "$wc us" "$rc us" "$(ratio "$wc" "$rc")" "<= 0.1x"
  wc=$(field "$1" client_cpu_us_per_msg); rc=$(field "$2" client_cpu_us_per_msg)
  row "  client CPU per $unit (lower is better)" "$wc us" "$rc us" "$(ratio "$wc" "$rc")" "-"
}

for scenario in "${SCENARIOS[@]}"; do
  case $scenario in
    small) throughput "16 B transient, auto-ack" ">= 10x" consume_rate --size 16 ;;
    small-unbatched) throughput "16 B transient, auto-ack, a write per publish" "-" consume_rate --size 16 --unbatched ;;
    large) throughput "1 KiB transient, auto-ack" ">= 5x" consume_rate --size 1024 ;;
    confirms) throughput "1 KiB, confirms (256) + manual ack, prefetch 256" ">= 5x" consume_rate \
        --size 1024 --confirm 256 --ack --prefetch 256 ;;
    confirms-unbatched) throughput "1 KiB, confirms (256) + manual ack, a write per publish and per ack" ">= 5x" \
        consume_rate --size 1024 --confirm 256 --ack --prefetch 256 --unbatched ;;
    rpc) throughput "16 B, prefetch 1, an ack per delivery (RPC-like)" "-" consume_rate \
        --size 16 --confirm 256 --ack --prefetch 1 --unbatched ;;
    huge) throughput "1 MiB messages, confirms (16) + manual ack, prefetch 16" "-" consume_rate \
        --size 1048576 --confirm 16 --ack --prefetch 16 ;;
    fanout) throughput "fan-out to 10 queues, 10 consumers, 256 B (delivered)" ">= 5x" consume_rate \
        --size 256 --exchange-type fanout --queues 10 --consumers 10 ;;
    many) throughput "200 publishers (100 msg/s each) + 200 consumers on 200 queues, 16 B" "-" consume_rate \
        --size 16 --publishers 200 --consumers 200 --queues 200 --spread --rate 100 ;;
    queues10k) throughput "10,000 queues, 1,000 active (a publisher at 10 msg/s and a consumer each)" "-" \
        consume_rate --size 16 --queues 10000 --spread --publishers 1000 --consumers 1000 --rate 10 --warmup 5 ;;
    topic10k) throughput "topic exchange with 10,000 bindings, 16 B" "-" consume_rate \
        --size 16 --exchange-type topic --extra-bindings 10000 ;;
    churn)
      w=$(run warren --churn --publishers 4 --duration "$DURATION"); r=$(run rabbitmq --churn --publishers 4 --duration "$DURATION")
      wv=$(field "$w" connection_rate); rv=$(field "$r" connection_rate)
      row "connection churn: open, publish once, close (4 at a time)" "$wv conn/s" "$rv conn/s" "$(ratio "$wv" "$rv")" ">= 5x"
      cpu_rows "$w" "$r" connection ;;
    latency)
      # One client for the brokers and the floor: Benchmarks/LatencyFloor/client.c (C, a publisher thread at a fixed
      # rate, the consumer in the main thread), speaking AMQP to a broker or raw bytes to relay.c (a do-nothing epoll
      # relay), so the difference between a broker's row and the floor's is the broker's own.
      gcc -O2 -o "$WORK/floor-relay" Benchmarks/LatencyFloor/relay.c
      gcc -O2 -pthread -o "$WORK/floor-client" Benchmarks/LatencyFloor/client.c
      ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
      clock_ticks=$(getconf CLK_TCK)
      # latency_run PORT PID RATE -> "p50 p99 p999 cpu_us_per_msg" of one broker
      latency_run() {
        local before out after
        before=$(ticks "$2")
        out=$("$WORK/floor-client" "$1" $((DURATION * $3)) "$3" amqp || true)
        after=$(ticks "$2")
        echo "$(echo "$out" | sed -n 's/.*p50_us=\([0-9]*\).*p99_us=\([0-9]*\).*p999_us=\([0-9]*\).*/\1 \2 \3/p')" \
          "$(python3 -c "print(round(($after - $before) * 1e6 / $clock_ticks / ($DURATION * $3), 2))")"
      }
      for rate in 1000 10000 50000; do
        read -r w50 w99 w999 wcpu <<< "$(latency_run "$WARREN_PORT" "$WARREN_PID" $rate)"
        read -r r50 r99 r999 rcpu <<< "$(latency_run "$RABBIT_PORT" "$RABBIT_PID" $rate)"
        floor_port=$(free_port)
        "$WORK/floor-relay" "$floor_port" > "$WORK/floor-relay.out" & floor_pid=$!
        fl=$("$WORK/floor-client" "$floor_port" $((DURATION * rate)) $rate)
        wait "$floor_pid" 2>/dev/null || true
        target="-"; [ $rate = 1000 ] && target="p99 within 15 us of the floor"; [ $rate = 50000 ] && target="p99 within 2x of the floor"
        for p in p50 p99 p999; do
          eval "wv=\$w${p#p}; rv=\$r${p#p}"
          fv=$(echo "$fl" | sed -n "s/.*${p}_us=\([0-9]*\).*/\1/p")
          row "latency $p at $rate msg/s, 1 KiB (lower is better)" "${wv:--} us" "${rv:--} us" "$(ratio "${wv:-0}" "${rv:-0}")" \
            "$([ $p = p99 ] && echo "$target" || echo -)"
          row "  floor: bare C relay, same client ($p)" "${fv:--} us" "-" "-" "-"
        done
        row "  broker CPU per message (lower is better)" "$wcpu us" "$rcpu us" "$(ratio "$wcpu" "$rcpu")" "<= 0.1x"
        fc=$(sed -n 's/.*cpu_us_per_msg=\([0-9.]*\).*/\1/p' "$WORK/floor-relay.out")
        row "  floor: the relay's CPU per message" "${fc:--} us" "-" "-" "-"
      done ;;
    management)
      # The management API with 10,000 queues (imported as definitions): a paged listing (100 per page) and the
      # whole list, the median of 5 requests each, on brokers started with their management API.
      stop_brokers; MANAGEMENT=1 start_brokers
      python3 -c 'import json; print(json.dumps({"queues": [{"name": f"mgmt-{i:05d}", "vhost": "/", "durable": True,
        "auto_delete": False, "arguments": {}} for i in range(10000)]}))' > "$WORK/queues10k.json"
      times=()
      for port in "$WARREN_MANAGEMENT_PORT" "$RABBIT_MANAGEMENT_PORT"; do
        "$BIN" ctl import "$WORK/queues10k.json" --address "127.0.0.1:$port" >/dev/null
        for _ in $(seq 1 100); do  # RabbitMQ lists its queues once its statistics are collected
          n=$(curl -s -u guest:guest "http://127.0.0.1:$port/api/queues?page=1&page_size=1&columns=name" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin).get("total_count", 0))' 2>/dev/null || echo 0)
          [ "$n" -ge 10000 ] && break; sleep 0.2
        done
        for path in "/api/queues?page=50&page_size=100" "/api/queues"; do
          times+=("$(for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' -u guest:guest "http://127.0.0.1:$port$path"; done \
            | sort -n | sed -n 3p | python3 -c 'import sys; print(round(float(sys.stdin.read()) * 1000, 1))')")
        done
      done
      row "management: a page of 100 of 10,000 queues (ms, lower is better)" "${times[0]} ms" "${times[2]} ms" "$(ratio "${times[0]}" "${times[2]}")" "< 100 ms"
      row "management: all 10,000 queues (ms, lower is better)" "${times[1]} ms" "${times[3]} ms" "$(ratio "${times[1]}" "${times[3]}")" "< 1,000 ms"
      stop_brokers; start_brokers ;;
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
    tls)
      # The same client over TLS to both brokers (TLS costs CPU per byte: is the one event loop the limit now?).
      args=(--duration "$DURATION" --size 1024 --confirm 256 --ack --prefetch 256)
      w=$(TLS=1 run warren "${args[@]}"); r=$(TLS=1 run rabbitmq "${args[@]}"); p=$(run warren "${args[@]}")
      wv=$(field "$w" consume_rate); rv=$(field "$r" consume_rate); pv=$(field "$p" consume_rate)
      row "1 KiB over TLS, confirms (256) + manual ack, prefetch 256" "$wv msg/s" "$rv msg/s" "$(ratio "$wv" "$rv")" "-"
      cpu_rows "$w" "$r"
      row "  Warren without TLS, same run" "$pv msg/s" "-" "-" "-"
      # The other design: the sockets and their TLS on a loop of their own (connection_threads 1), each read's
      # bytes handed to the broker's loop. A second Warren, the same client.
      local_port=$(free_port); local_tls=$(free_port)
      "$BIN" --port "$local_port" --metrics-port 0 --management-port 0 --data-dir "$WORK/warren-data-threads" \
        --tls-port "$local_tls" --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" --connection-threads 1 \
        --log-level ${WARREN_LOG_LEVEL:-warning} >> "$WORK/warren.log" 2>&1 &
      EXTRA_PID=$!
      for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$local_port") 2>/dev/null && break; sleep 0.1; done
      saved_tls=$WARREN_TLS_PORT saved_pid=$WARREN_PID
      WARREN_TLS_PORT=$local_tls WARREN_PID=$EXTRA_PID
      t=$(TLS=1 run warren "${args[@]}")
      WARREN_TLS_PORT=$saved_tls WARREN_PID=$saved_pid
      kill "$EXTRA_PID"; wait "$EXTRA_PID" 2>/dev/null || true; EXTRA_PID=""
      tv=$(field "$t" consume_rate)
      row "  Warren over TLS with connection_threads 1" "$tv msg/s" "$rv msg/s" "$(ratio "$tv" "$rv")" "-"
      row "    its broker CPU per message, both loops" "$(field "$t" broker_cpu_us_per_msg) us" \
        "$(field "$r" broker_cpu_us_per_msg) us" "-" "-" ;;
    persistent|persistent4)
      # Warren fsyncs before each confirm; RabbitMQ's classic queues do not (their store flushes at least every
      # 200 ms), its quorum queues do.
      # The disk of a shared machine makes single runs move by 20% or more (both brokers'), so each figure is the
      # median of PERSISTENT_RUNS runs (3 by default), the three queues measured in turn, with the range after it.
      n=1; [ "$scenario" = persistent4 ] && n=4
      args=(--duration "$DURATION" --size 1024 --confirm 256 --persistent --ack --prefetch 1000 --publishers $n --consumers $n)
      ws=(); cs=(); qs=()
      for _ in $(seq 1 "${PERSISTENT_RUNS:-3}"); do
        ws+=("$(field "$(run warren "${args[@]}")" consume_rate)")
        cs+=("$(field "$(run rabbitmq "${args[@]}")" consume_rate)")
        qs+=("$(field "$(run rabbitmq "${args[@]}" --queue-type quorum)" consume_rate)")
      done
      wv=$(median "${ws[@]}"); cv=$(median "${cs[@]}"); qv=$(median "${qs[@]}")
      row "persistent 1 KiB, confirms (256), ${n}p/${n}c, vs classic (no fsync), median of ${#ws[@]}" \
        "$wv msg/s ($(spread "${ws[@]}"))" "$cv msg/s ($(spread "${cs[@]}"))" "$(ratio "$wv" "$cv")" ">= 3x"
      row "  same, vs a quorum queue (fsync), median of ${#ws[@]}" "$wv msg/s" "$qv msg/s ($(spread "${qs[@]}"))" \
        "$(ratio "$wv" "$qv")" ">= 10x" ;;
    recovery)
      # 1,000,000 persistent 1 KiB messages queued, then kill -9 and restart on the same data: memory above idle,
      # time until the listener answers again (recovery included), and the drain rate afterwards.
      COUNT=${RECOVERY_COUNT:-1000000}
      stop_brokers; rm -rf "$WORK/warren-data"; WARREN_LOG_LEVEL=info start_brokers
      fill=(--consumers 0 --count "$COUNT" --confirm 256 --size 1024 --persistent --queue-name recovery)
      results=()
      for broker in warren rabbitmq; do
        if [ "$broker" = warren ]; then pid=$WARREN_PID; port=$WARREN_PORT; else pid=$RABBIT_PID; port=$RABBIT_PORT; fi
        idle=$(ps -o rss= -p "$pid")
        run "$broker" "${fill[@]}" >/dev/null
        full=$(ps -o rss= -p "$pid")
        kill -9 "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        start=$(date +%s.%N)
        if [ "$broker" = warren ]; then
          "$BIN" --port "$WARREN_PORT" --metrics-port 0 --management-port 0 --data-dir "$WORK/warren-data" --log-level info \
            >> "$WORK/warren.log" 2>&1 &
          WARREN_PID=$!; pid=$WARREN_PID
          until (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do sleep 0.02; done
        else
          Benchmarks/rabbitmq.sh start "$RABBIT_PORT" "$RABBIT_DIR"; RABBIT_PID=$(cat "$RABBIT_DIR/pid"); pid=$RABBIT_PID
        fi
        seconds=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
        after=$(ps -o rss= -p "$pid")
        drained=$("$BIN" perf --uri "amqp://guest:guest@127.0.0.1:$port/" --drain recovery --count "$COUNT" 2>&1 \
          | grep '^RESULT ' | sed 's/^RESULT //' || echo '{}')
        results+=("$(( (full - idle) / 1024 ))" "$(( (after - idle) / 1024 ))" "$seconds" "$(field "$drained" consume_rate)")
      done
      row "memory above idle, $COUNT persistent 1 KiB queued" "${results[0]} MB" "${results[4]} MB" "$(ratio "${results[0]}" "${results[4]}")" "< 100 MB"
      row "  same, after kill -9 and recovery" "${results[1]} MB" "${results[5]} MB" "$(ratio "${results[1]}" "${results[5]}")" "< 100 MB"
      row "restart after kill -9 with $COUNT queued (s, lower is better)" "${results[2]} s" "${results[6]} s" "$(ratio "${results[2]}" "${results[6]}")" "< 5 s"
      row "drain rate after recovery" "${results[3]} msg/s" "${results[7]} msg/s" "$(ratio "${results[3]}" "${results[7]}")" "-" ;;
    expiry)
      # 500,000 messages (16 B) with a 30 s TTL are queued; then, while they expire (all within about the time it
      # took to publish them), another connection publishes and consumes at 1,000 msg/s on its own queue: its
      # latency shows whether expiry stalls the broker (Warren expires at most 2,000 per turn of its loop).
      results=()
      for broker in warren rabbitmq; do
        start=$(date +%s)
        run "$broker" --consumers 0 --count 500000 --size 16 --message-ttl 30000 --queue-name expiring >/dev/null
        waited=$(( 35 - ($(date +%s) - start) ))
        probe=$(run "$broker" --duration "$(( waited > 5 ? waited : 5 ))" --warmup 0 --size 16 --rate 1000 --queue-name probe)
        results+=("$(field "$probe" p99_us)" "$(field "$probe" max_us)")
      done
      row "latency p99 at 1,000 msg/s while 500,000 messages expire (lower is better)" "${results[0]} us" "${results[2]} us" "$(ratio "${results[0]}" "${results[2]}")" "-"
      row "  same, max" "${results[1]} us" "${results[3]} us" "$(ratio "${results[1]}" "${results[3]}")" "-" ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
done

echo
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null); $(date -u +%Y-%m-%d)"
echo "| scenario | Warren | RabbitMQ | Warren / RabbitMQ | target |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS[@]}"
