"""Interop tests: rabbitmq-c's command-line tools (Debian's amqp-tools) against a warren process."""

import shutil
import subprocess
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("amqp-publish") is None, reason="amqp-tools not installed")


def run(*args, input=None):
    return subprocess.run(args, input=input, capture_output=True, timeout=30, check=True)


def test_declare_publish_get_consume_delete(broker):
    server = f"127.0.0.1:{broker.port}"
    queue = f"c-{uuid.uuid4().hex[:8]}"
    declared = run("amqp-declare-queue", "-s", server, "-q", queue).stdout.decode().strip()
    assert declared == queue
    for i in range(3):
        run("amqp-publish", "-s", server, "-r", queue, "-p", "-C", "text/plain", "-b", f"body {i}")
    got = run("amqp-get", "-s", server, "-q", queue).stdout
    assert got == b"body 0"
    consumed = run("amqp-consume", "-s", server, "-q", queue, "-c", "2", "cat").stdout
    assert consumed == b"body 1body 2"
    run("amqp-delete-queue", "-s", server, "-q", queue)
    missing = subprocess.run(["amqp-get", "-s", server, "-q", queue], capture_output=True, timeout=30)
    assert missing.returncode != 0


def test_fanout_exchange_with_amqp_tools(broker):
    server = f"127.0.0.1:{broker.port}"
    exchange = f"cx-{uuid.uuid4().hex[:8]}"
    queue = f"cq-{uuid.uuid4().hex[:8]}"
    run("amqp-declare-queue", "-s", server, "-q", queue)
    # amqp-consume can declare and bind: use pika-free binding through a temporary consumer instead.
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    ch = conn.channel()
    ch.exchange_declare(exchange, "fanout")
    ch.queue_bind(queue, exchange, "")
    conn.close()
    run("amqp-publish", "-s", server, "-e", exchange, "-r", "whatever", "-b", "fanned")
    assert run("amqp-get", "-s", server, "-q", queue).stdout == b"fanned"
    run("amqp-delete-queue", "-s", server, "-q", queue)
