"""Operations: Prometheus metrics (checked by promtool and scraped by a real Prometheus), health and aliveness,
resource alarms seen by pika, and the graceful drain on SIGTERM seen by pika and aio-pika."""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pika
import pytest

from conftest import Broker
from test_pika import raw_handshake

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def samples(text):
    """Prometheus text -> {'name{labels}': float}."""
    result = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        result[name] = float(value)
    return result


def promtool_check(text):
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def fresh_broker():
    b = Broker()
    yield b
    b.stop()
    assert b.process.returncode == 0, "".join(b.log[-50:])


def known_traffic(port):
    """5 confirmed publishes to queue m, 1 unroutable, one basic.get + ack, one get-empty on queue e."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    channel = connection.channel()
    channel.queue_declare("m")
    channel.queue_declare("e")
    channel.confirm_delivery()
    for i in range(5):
        channel.basic_publish("", "m", b"x" * 100)
    channel.basic_publish("amq.direct", "nowhere", b"lost")
    method, _, _ = channel.basic_get("m")
    channel.basic_ack(method.delivery_tag)
    assert channel.basic_get("e") == (None, None, None)
    return connection


# CI installs Debian's prometheus package (promtool and the server); elsewhere these tests skip without it.
REQUIRED = bool(os.environ.get("CI"))


@pytest.mark.skipif(PROMTOOL is None and not REQUIRED, reason="promtool (Debian's prometheus package) is missing")
def test_metrics_count_a_known_sequence_and_pass_promtool(fresh_broker):
    connection = known_traffic(fresh_broker.port)
    status, text = fresh_broker.http_get("/metrics")
    assert status == 200
    promtool_check(text)
    m = samples(text)
    amqp = '{protocol="amqp091"}'
    assert m["rabbitmq_global_messages_received_total" + amqp] == 6
    assert m["rabbitmq_global_messages_received_confirm_total" + amqp] == 6
    assert m["rabbitmq_global_messages_confirmed_total" + amqp] == 6
    assert m["rabbitmq_global_messages_routed_total" + amqp] == 5
    assert m["rabbitmq_global_messages_unroutable_dropped_total" + amqp] == 1
    assert m["rabbitmq_global_messages_delivered_get_manual_ack_total" + amqp] == 1
    assert m["rabbitmq_global_messages_get_empty_total" + amqp] == 1
    assert m["rabbitmq_global_messages_acknowledged_total" + amqp] == 1
    assert m["rabbitmq_auth_attempts_succeeded_total" + amqp] == 1
    assert m['rabbitmq_global_message_size_bytes_bucket{protocol="amqp091",le="64"}'] == 1
    assert m['rabbitmq_global_message_size_bytes_bucket{protocol="amqp091",le="256"}'] == 6
    assert m["rabbitmq_global_message_size_bytes_sum" + amqp] == 504
    assert m["rabbitmq_connections"] == 1 and m["rabbitmq_channels"] == 1
    assert m["rabbitmq_queues"] == 2 and m["rabbitmq_queues_created_total"] == 2
    assert m["rabbitmq_queue_messages_ready"] == 4
    assert m["rabbitmq_queue_messages_ready_bytes"] == 400
    assert m["rabbitmq_process_resident_memory_bytes"] > 1_000_000
    assert m["rabbitmq_process_open_fds"] > 3
    assert m["rabbitmq_disk_space_available_bytes"] > 0
    assert not any("queue=" in key for key in m)  # aggregated: constant size

    status, text = fresh_broker.http_get("/metrics/per-object")
    assert status == 200
    promtool_check(text)
    m = samples(text)
    assert m['rabbitmq_queue_messages_ready{vhost="/",queue="m"}'] == 4
    assert m['rabbitmq_queue_messages_ready{vhost="/",queue="e"}'] == 0
    assert m['rabbitmq_exchange_messages_published_total{vhost="/",exchange="amq.direct",type="direct"}'] == 1

    query = "?family=queue_coarse_metrics&family=connection_churn_metrics&family=queue_consumer_count&vhost=%2F"
    status, text = fresh_broker.http_get("/metrics/detailed" + query)
    assert status == 200
    promtool_check(text)
    m = samples(text)
    assert m['rabbitmq_detailed_queue_messages{vhost="/",queue="m"}'] == 4
    assert m["rabbitmq_detailed_queues_created_total"] == 2
    assert not any(key.startswith("rabbitmq_global_") for key in m)
    status, text = fresh_broker.http_get("/metrics/detailed?family=queue_coarse_metrics&vhost=elsewhere")
    assert not any("queue=" in key for key in samples(text))

    # A deleted queue disappears from the per-object output; counters stay.
    connection.channel().queue_delete("e")
    m = samples(fresh_broker.http_get("/metrics/per-object")[1])
    assert not any('queue="e"' in key for key in m)
    assert m["rabbitmq_queues_deleted_total"] == 1
    connection.close()
    m = samples(fresh_broker.http_get("/metrics")[1])
    assert m["rabbitmq_connections"] == 0 and m["rabbitmq_connections_closed_total"] == 1
    assert m['rabbitmq_global_messages_received_total{protocol="amqp091"}'] == 6


def test_per_object_scrape_of_many_queues(fresh_broker):
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", fresh_broker.port, heartbeat=0))
    channel = connection.channel()
    for i in range(10000):
        channel.queue_declare(f"many-{i}", arguments={})
    status, text = fresh_broker.http_get("/metrics/per-object")
    assert status == 200
    m = samples(text)
    assert sum(1 for key in m if key.startswith("rabbitmq_queue_messages_ready{")) == 10000
    connection.close()


def test_health_readiness_and_aliveness(fresh_broker):
    assert fresh_broker.http_get("/healthz") == (200, "ok\n")
    assert fresh_broker.http_get("/readyz") == (200, "ready\n")
    status, body = fresh_broker.http_get("/api/aliveness-test/%2F")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, body = fresh_broker.http_get("/api/aliveness-test/no-such-vhost")
    assert status == 503 and json.loads(body)["status"] == "failed"
    address = f"127.0.0.1:{fresh_broker.http_port}"
    assert subprocess.run([fresh_broker.binary, "health", "--address", address], capture_output=True).returncode == 0
    assert subprocess.run([fresh_broker.binary, "health", "--address", "127.0.0.1:1"], capture_output=True).returncode == 1


def test_disk_alarm_blocks_publishers_and_fails_readiness():
    broker = Broker(env={"WARREN_DISK_FREE_LIMIT": str(10**18)})
    try:
        assert broker.wait_for_log(r"disk alarm set")
        status, body = broker.http_get("/readyz")
        assert status == 503 and "disk alarm" in body
        m = samples(broker.http_get("/metrics")[1])
        assert m["rabbitmq_alarms_free_disk_space_watermark"] == 1
        assert m["rabbitmq_disk_space_available_limit_bytes"] == 10**18
        result = subprocess.run(
            [broker.binary, "health", "--address", f"127.0.0.1:{broker.http_port}", "--path", "/readyz"],
            capture_output=True,
        )
        assert result.returncode == 1
        # A raw client, so that the publish's three frames go in one write: the broker stops reading once it has
        # taken a publish, and frames of it still in flight would wait for the alarm to clear.
        from pika import frame, spec

        sock, read_frame, send = raw_handshake(
            broker.port, client_properties={"capabilities": {"connection.blocked": True}})
        send(1, spec.Channel.Open())
        assert isinstance(read_frame().method, spec.Channel.OpenOk)
        send(1, spec.Queue.Declare(queue="during-alarm"))  # not publishing: not blocked
        assert isinstance(read_frame().method, spec.Queue.DeclareOk)
        sock.sendall(
            frame.Method(1, spec.Basic.Publish(exchange="", routing_key="during-alarm")).marshal()
            + frame.Header(1, 5, spec.BasicProperties()).marshal()
            + frame.Body(1, b"first").marshal()
        )  # taken, then the connection is blocked
        blocked = read_frame().method
        assert isinstance(blocked, spec.Connection.Blocked) and blocked.reason == "low on disk space"
        m = samples(broker.http_get("/metrics")[1])
        assert m["rabbitmq_queue_messages_ready"] == 1  # the publish before the block was kept
        sock.close()
    finally:
        broker.stop()
    assert broker.process.returncode == 0


def test_sigterm_drains_consumers_and_publishers_then_closes_with_320():
    broker = Broker()
    params = pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0)
    consumer_events = []
    consuming = threading.Event()

    def consume():
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.queue_declare("drain-consumed")
        channel.add_on_cancel_callback(lambda frame: consumer_events.append(("cancel", frame.method.consumer_tag)))
        channel.basic_consume("drain-consumed", lambda *a: None, consumer_tag="drain-consumer")
        consuming.set()
        try:
            channel.start_consuming()  # returns once the broker cancelled the only consumer
            while connection.is_open:
                connection.process_data_events(time_limit=1)
        except pika.exceptions.ConnectionClosedByBroker as closed:
            consumer_events.append(("closed", closed.reply_code))
        except Exception as error:  # a reset instead of connection.close fails the test
            consumer_events.append(("error", repr(error)))

    thread = threading.Thread(target=consume)
    thread.start()
    assert consuming.wait(10)

    async def publish():
        import aio_pika

        connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{broker.port}/")
        closed = asyncio.get_running_loop().create_future()
        connection.close_callbacks.add(lambda _, exc: closed.done() or closed.set_result(exc))
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue("drain-published")
        confirmed = 0

        async def one(i):
            nonlocal confirmed
            await channel.default_exchange.publish(aio_pika.Message(b"m" * 512), routing_key="drain-published")
            confirmed += 1
            if confirmed == 500:
                broker.process.send_signal(signal.SIGTERM)

        # Many publishes are in flight when SIGTERM arrives: every one must get its confirm.
        results = await asyncio.gather(*(one(i) for i in range(20000)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        reason = await asyncio.wait_for(closed, 30)
        return confirmed, failures, reason

    confirmed, failures, reason = asyncio.run(publish())
    thread.join(30)
    broker.process.wait(30)
    broker.stop()
    assert failures == [] and confirmed == 20000
    assert "320" in repr(reason), repr(reason)
    assert consumer_events == [("cancel", "drain-consumer"), ("closed", 320)]
    assert broker.process.returncode == 0
    assert broker.logged(r"shutting down: draining")


@pytest.mark.skipif(PROMETHEUS is None and not REQUIRED, reason="prometheus (Debian's package) is missing")
def test_a_real_prometheus_scrapes_warren(fresh_broker, tmp_path):
    connection = known_traffic(fresh_broker.port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        web_port = s.getsockname()[1]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: warren
    static_configs: [{{targets: ["127.0.0.1:{fresh_broker.http_port}"]}}]
  - job_name: warren-per-object
    metrics_path: /metrics/per-object
    static_configs: [{{targets: ["127.0.0.1:{fresh_broker.http_port}"]}}]
"""
    )
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def query(expression):
            url = f"http://127.0.0.1:{web_port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    result = json.load(response)["data"]["result"]
            except OSError:
                return None
            return float(result[0]["value"][1]) if result else None

        expected = {
            'rabbitmq_global_messages_received_total{job="warren"}': 6,
            'rabbitmq_global_messages_routed_total{job="warren"}': 5,
            'rabbitmq_queue_messages_ready{job="warren"}': 4,
            'rabbitmq_queue_messages_ready{job="warren-per-object",queue="m"}': 4,
            'up{job="warren-per-object"}': 1,
        }
        seen = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and seen != expected:
            seen = {expression: query(expression) for expression in expected}
            if seen != expected:
                time.sleep(0.5)  # polling Prometheus's query API until its scrape lands (no event to await)
        assert seen == expected
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        connection.close()
