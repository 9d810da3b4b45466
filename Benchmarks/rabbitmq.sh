#!/usr/bin/env bash
# Starts or stops a private RabbitMQ node (Debian's rabbitmq-server) on 127.0.0.1 for comparisons.
# Usage: Benchmarks/rabbitmq.sh start PORT DIR   |   Benchmarks/rabbitmq.sh stop DIR
# Installs rabbitmq-server with apt-get if it is missing. Prints nothing but errors; exit 0 once the node answers.
set -euo pipefail
cmd=${1:?start|stop}
if [ "$cmd" = start ]; then
  port=${2:?port}; dir=${3:?dir}
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server) >/dev/null
  fi
  # Debian's package starts its own node; we use a private one and leave the system one alone.
  mkdir -p "$dir/mnesia" "$dir/log" "$dir/home"
  cat > "$dir/rabbitmq.conf" <<CONF
loopback_users = none
listeners.tcp.default = 127.0.0.1:$port
CONF
  # RABBITMQ_MANAGEMENT_PORT=N enables the management plugin on 127.0.0.1:N (the management API tests' reference).
  plugins=()
  if [ -n "${RABBITMQ_MANAGEMENT_PORT:-}" ]; then
    printf 'management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n' "$RABBITMQ_MANAGEMENT_PORT" >> "$dir/rabbitmq.conf"
    plugins+=(rabbitmq_management)
  fi
  # RABBITMQ_TLS_PORT=N with RABBITMQ_TLS_DIR (ca.pem, server.pem, server.key) opens an AMQPS listener on N.
  if [ -n "${RABBITMQ_TLS_PORT:-}" ]; then
    mkdir -p "$dir/tls"
    cp "$RABBITMQ_TLS_DIR/ca.pem" "$RABBITMQ_TLS_DIR/server.pem" "$RABBITMQ_TLS_DIR/server.key" "$dir/tls/"
    cat >> "$dir/rabbitmq.conf" <<CONF
listeners.ssl.default = 127.0.0.1:$RABBITMQ_TLS_PORT
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/server.pem
ssl_options.keyfile = $dir/tls/server.key
ssl_options.verify = ${RABBITMQ_TLS_VERIFY:-verify_none}
ssl_options.fail_if_no_peer_cert = false
CONF
    # RABBITMQ_TLS_EXTERNAL=1: certificate login (EXTERNAL, the common name), and short handshake timeouts (tests).
    if [ "${RABBITMQ_TLS_EXTERNAL:-0}" = 1 ]; then
      printf 'auth_mechanisms.1 = PLAIN\nauth_mechanisms.2 = AMQPLAIN\nauth_mechanisms.3 = EXTERNAL\n' >> "$dir/rabbitmq.conf"
      printf 'ssl_cert_login_from = common_name\nhandshake_timeout = 1000\nssl_handshake_timeout = 1000\n' >> "$dir/rabbitmq.conf"
      plugins+=(rabbitmq_auth_mechanism_ssl)
    fi
  fi
  # RABBITMQ_EXTRA_CONF: more rabbitmq.conf lines (e.g. "connection_max = 1"), to ask RabbitMQ how it answers.
  if [ -n "${RABBITMQ_EXTRA_CONF:-}" ]; then printf '%s\n' "$RABBITMQ_EXTRA_CONF" >> "$dir/rabbitmq.conf"; fi
  chown -R rabbitmq:rabbitmq "$dir" 2>/dev/null || true
  node="warren-ref-$port@localhost"
  export RABBITMQ_NODENAME="$node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$port" \
    ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_DIST_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')" \
    HOME="$dir/home" RABBITMQ_PID_FILE="$dir/pid"
  (IFS=,; echo "[${plugins[*]}].") > "$dir/enabled_plugins"; chown rabbitmq:rabbitmq "$dir/enabled_plugins" 2>/dev/null || true
  # setpriv rather than the package wrapper's su: su resets the open-file limit to 1024.
  nohup setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server \
    > "$dir/stdout.log" 2>&1 &
  echo "$node" > "$dir/nodename"
  for _ in $(seq 1 120); do
    if [ -s "$dir/pid" ] && (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null \
      && { [ -z "${RABBITMQ_MANAGEMENT_PORT:-}" ] || (exec 3<>/dev/tcp/127.0.0.1/"$RABBITMQ_MANAGEMENT_PORT") 2>/dev/null; } \
      && { [ -z "${RABBITMQ_TLS_PORT:-}" ] || (exec 3<>/dev/tcp/127.0.0.1/"$RABBITMQ_TLS_PORT") 2>/dev/null; }; then
      # The start script's su resets the open-file limit to 1024: give the node as many as we have.
      prlimit --pid "$(cat "$dir/pid")" --nofile="$(ulimit -Hn):$(ulimit -Hn)" 2>/dev/null || true
      exit 0
    fi
    sleep 0.5
  done
  echo "RabbitMQ did not start; see $dir/stdout.log" >&2
  exit 1
elif [ "$cmd" = stop ]; then
  dir=${2:?dir}
  # Stop the node we started, by its PID (RabbitMQ wrote it to the pid file).
  if [ -s "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
fi
