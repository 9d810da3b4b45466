#!/usr/bin/env bash
# The behaviour tests (Tests/Interop/test_behaviour.py, test_pika.py, test_aio_pika.py, test_py_amqp.py,
# test_queue_semantics.py, test_management.py, test_ctl.py, test_limits.py and test_tls.py, with RabbitMQ's management
# plugin and an AMQPS listener with certificate login (EXTERNAL), less the tests that need Warren's own process or check one of its deliberate
# differences) against Debian's RabbitMQ: a private node on 127.0.0.1, started here (installed with apt-get if
# missing) and stopped by its PID at the end. The same tests run against Warren in `make test`, so a divergence
# between the two brokers fails one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
management_port=$(free_port)
dir=$(mktemp -d /tmp/warren-rabbitmq.XXXXXX)
chmod 755 "$dir"
tls_port=$(free_port)
trap 'Benchmarks/rabbitmq.sh stop "$dir" || true; rm -rf "$dir"' EXIT
# The same throwaway PKI the TLS tests make for Warren.
mkdir -p "$dir/pki"
"$PYTHON" -c "import sys; sys.path.insert(0, 'Tests/Interop'); import tls_support; tls_support.make_pki('$dir/pki')"
chmod -R a+rX "$dir/pki"
RABBITMQ_MANAGEMENT_PORT=$management_port RABBITMQ_TLS_PORT=$tls_port RABBITMQ_TLS_DIR=$dir/pki \
  RABBITMQ_TLS_VERIFY=verify_peer RABBITMQ_TLS_EXTERNAL=1 Benchmarks/rabbitmq.sh start "$port" "$dir"
AMQP_TARGET_PORT=$port MANAGEMENT_TARGET_PORT=$management_port TLS_TARGET_PORT=$tls_port TLS_TARGET_PKI=$dir/pki \
  "$PYTHON" -m pytest -c Tests/Interop/pytest.ini Tests/Interop/test_behaviour.py \
  Tests/Interop/test_pika.py Tests/Interop/test_aio_pika.py Tests/Interop/test_py_amqp.py Tests/Interop/test_queue_semantics.py \
  Tests/Interop/test_management.py Tests/Interop/test_ctl.py Tests/Interop/test_limits.py Tests/Interop/test_tls.py -q
