#!/usr/bin/env bash
# Proves the container image for real with podman and runc (no registry needed): builds a fully static release
# binary, builds the Dockerfile's runtime image from it, runs it, and checks /healthz, an AMQP round trip with
# pika, a configuration file mounted from the host, and that `podman stop` ends it with exit code 0.
#
# Usage: Scripts/container-test.sh   (installs podman and runc with apt-get when missing; run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc >/dev/null
fi
python=${PYTHON:-$root/.venv/bin/python}

if command -v promtool >/dev/null 2>&1; then
  promtool check config config/prometheus.yml >/dev/null  # compose.yaml's Prometheus configuration
fi

echo "container-test: building a static release binary"
swift build -c release --product warren -Xswiftc -static-executable --scratch-path .build-static >/dev/null
binary="$(swift build -c release --product warren --scratch-path .build-static --show-bin-path)/warren"
if ldd "$binary" >/dev/null 2>&1; then
  echo "container-test: $binary is not static" >&2
  exit 1
fi

work=$(mktemp -d)
tag="localhost/warren-test:$$"
name="warren-test-$$"
podman=(podman --runtime runc)
cleanup() {
  "${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true
  "${podman[@]}" rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The build context: the Dockerfile with the binary built here (its "binary-from-host" stage).
mkdir -p "$work/context/config" "$work/context/container"
cp Dockerfile "$work/context/"
cp "$binary" "$work/context/warren"
cp config/warren.yaml "$work/context/config/"
cp -r container/data "$work/context/container/"
echo "container-test: building the image"
"${podman[@]}" build -q --format docker --build-arg BINARY_FROM=binary-from-host --target runtime -t "$tag" "$work/context" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
amqp_port=$(free_port)
http_port=$(free_port)
management_port=$(free_port)
tls_port=$(free_port)

# Certificates from a mounted directory (made here; no key is committed): the image's AMQPS listener uses them.
Scripts/make-server-certificate.sh "$work/tls"

# A configuration from the host: a user, a queue and a binding the broker must have at start.
cat > "$work/warren.yaml" <<YAML
server:
  log_level: info
users:
  - name: app
    password: app-secret
    tags: management
permissions:
  - user: app
    vhost: /
    configure: ".*"
    write: ".*"
    read: ".*"
exchanges:
  - name: orders
    type: direct
queues:
  - name: from-mounted-config
    durable: true
bindings:
  - source: orders
    destination: from-mounted-config
    routing_key: new
YAML
chmod 644 "$work/warren.yaml"

echo "container-test: running it"
"${podman[@]}" run -d --name "$name" --network host \
  --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
  -e WARREN_AMQP_PORT="$amqp_port" -e WARREN_METRICS_PORT="$http_port" -e WARREN_MANAGEMENT_PORT="$management_port" \
  -e WARREN_TLS_PORT="$tls_port" -e WARREN_TLS_CERT=/etc/warren/tls/server.pem \
  -e WARREN_TLS_KEY=/etc/warren/tls/server.key \
  -v "$work/warren.yaml:/etc/warren/warren.yaml:ro" -v "$work/tls:/etc/warren/tls:ro" \
  "$tag" >/dev/null 2>"$work/run.log" || { cat "$work/run.log" >&2; exit 1; }

# Wait for /healthz (the container logs "HTTP listener on" when it is up).
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; then break; fi
  if [ "$("${podman[@]}" inspect -f '{{.State.Running}}' "$name")" != "true" ]; then
    "${podman[@]}" logs "$name" >&2
    echo "container-test: the container stopped" >&2
    exit 1
  fi
  sleep 0.2
done
test "$(curl -fsS "http://127.0.0.1:$http_port/healthz")" = "ok"
test "$(curl -fsS "http://127.0.0.1:$http_port/readyz")" = "ready"
# The image's HEALTHCHECK (warren health), run by podman as a health check (no systemd timer here: run it once).
"${podman[@]}" healthcheck run "$name"
test "$("${podman[@]}" inspect -f '{{.State.Healthcheck.Status}}' "$name")" = "healthy"
test "$("${podman[@]}" exec "$name" /usr/local/bin/warren health --path /readyz)" = "ready"
echo "container-test: /healthz, /readyz and the image's HEALTHCHECK answer"
# The management API and UI, bound to 0.0.0.0 in the image, with the mounted file's user.
# Each body is read whole before it is searched: `curl | grep -q` fails under pipefail when grep stops at a match
# before curl has written everything (curl exits 23).
queue_json=$(curl -fsS -u app:app-secret "http://127.0.0.1:$management_port/api/queues/%2F/from-mounted-config")
grep -q '"durable":true' <<<"$queue_json"
ui_page=$(curl -fsS "http://127.0.0.1:$management_port/")
grep -q "Warren management" <<<"$ui_page"
echo "container-test: the management API and UI answer"

"$python" - "$amqp_port" <<'PY'
import sys
import pika

port = int(sys.argv[1])
credentials = pika.PlainCredentials("app", "app-secret")
connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, credentials=credentials))
channel = connection.channel()
channel.queue_declare("from-mounted-config", passive=True, durable=True)  # declared by the mounted file
channel.confirm_delivery()
channel.basic_publish("orders", "new", b"through the container")
method, _, body = channel.basic_get("from-mounted-config", auto_ack=True)
assert body == b"through the container", body
# A persistent message on a durable queue: it must be in the volume after the restart below.
channel.queue_declare("survives-restart", durable=True)
channel.basic_publish("", "survives-restart", b"kept on the volume", pika.BasicProperties(delivery_mode=2))
connection.close()
print("container-test: AMQP round trip with pika through the mounted configuration's exchange and queue")
PY

"$python" - "$tls_port" "$work/tls/ca.pem" <<'PY'
import ssl
import sys
import pika

context = ssl.create_default_context(cafile=sys.argv[2])
connection = pika.BlockingConnection(pika.ConnectionParameters(
    "127.0.0.1", int(sys.argv[1]), credentials=pika.PlainCredentials("app", "app-secret"),
    ssl_options=pika.SSLOptions(context, "localhost")))
channel = connection.channel()
channel.queue_declare("from-mounted-config", passive=True, durable=True)
connection.close()
print("container-test: AMQPS with pika, the certificate from the mounted directory")
PY

metrics=$(curl -fsS "http://127.0.0.1:$http_port/metrics")
grep -q '^rabbitmq_global_messages_received_total{protocol="amqp091"} 2$' <<<"$metrics"
echo "container-test: /metrics counted the two publishes"

"${podman[@]}" stop -t 30 "$name" >/dev/null
code=$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$name")
logs=$("${podman[@]}" logs "$name" 2>&1)
if [ "$code" != 0 ] || ! grep -q "shutting down: draining" <<<"$logs"; then
  echo "$logs" >&2
  echo "container-test: podman stop ended it with exit code $code" >&2
  exit 1
fi
echo "container-test: podman stop drained and ended it with exit code 0"

# Started again on the same volume: the queue declared at runtime and its persistent message are recovered.
"${podman[@]}" start "$name" >/dev/null
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
"$python" - "$amqp_port" <<'PY'
import sys
import pika

connection = pika.BlockingConnection(pika.ConnectionParameters(
    "127.0.0.1", int(sys.argv[1]), credentials=pika.PlainCredentials("app", "app-secret")))
channel = connection.channel()
method, _, body = channel.basic_get("survives-restart", auto_ack=True)
assert body == b"kept on the volume", body
connection.close()
print("container-test: a persistent message survived the restart on the data volume")
PY
"${podman[@]}" stop -t 30 "$name" >/dev/null
echo "container-test: OK"
