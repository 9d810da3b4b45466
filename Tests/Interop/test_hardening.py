"""Hostile input: HTTP without credentials, unfinished requests, deep nesting, bodies declared huge and never sent.
Each test checks that the broker answers as it should, stays within bounded memory, and serves the next client."""

import base64
import json
import socket
import struct
import urllib.request

import pika
import pytest

from conftest import Broker


def resident_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_http_api_needs_an_administrator(broker, tmp_path):
    assert broker.http_get("/healthz", auth=None) == (200, "ok\n")  # health and metrics stay open
    assert broker.http_get("/metrics", auth=None)[0] == 200
    status, body = broker.http_get("/api/definitions", auth=None)
    assert status == 401 and json.loads(body)["error"] == "not_authorized"
    assert broker.http_get("/api/definitions", auth=("guest", "wrong"))[0] == 401
    assert broker.http_get("/api/aliveness-test/%2F", auth=None)[0] == 401
    status, body = broker.http_get("/api/definitions")
    assert status == 200 and "users" in json.loads(body)


def test_http_api_refuses_users_without_the_administrator_tag(tmp_path):
    config = tmp_path / "users.yaml"
    config.write_text(
        "users:\n  - {name: app, password: app-secret}\n  - {name: ops, password: ops-secret, tags: administrator}\n"
        "permissions:\n  - {user: app, vhost: /}\n  - {user: ops, vhost: /}\n")
    broker = Broker("--config", str(config))
    try:
        assert broker.http_get("/api/definitions", auth=("app", "app-secret"))[0] == 403
        status, body = broker.http_get("/api/definitions", auth=("ops", "ops-secret"))
        assert status == 200
        assert {"name": "ops", "tags": ["administrator"]}.items() <= next(
            u for u in json.loads(body)["users"] if u["name"] == "ops").items()
    finally:
        broker.stop()


def test_http_errors_are_json_whatever_the_path(broker):
    status, body = broker.http_get('/api/aliveness-test/no%22such%5Cvhost')
    assert status == 503
    assert json.loads(body) == {"status": "failed", "reason": 'vhost \'no"such\\vhost\' not found'}
    status, body = broker.http_get('/api/"quoted')
    assert status == 404 and json.loads(body)["error"] == "Object Not Found"


def test_an_unfinished_http_request_is_closed_after_the_idle_timeout():
    broker = Broker(env={"WARREN_HTTP_IDLE_TIMEOUT": "0.5"})
    try:
        with socket.create_connection(("127.0.0.1", broker.http_port), timeout=10) as slow:
            slow.sendall(b"GET /api/definitions HTTP/1.1\r\nHost: x\r\n")  # never finished
            assert slow.recv(1024) == b""  # closed by the broker (the 10 s socket timeout would raise instead)
        assert broker.http_get("/healthz", auth=None)[0] == 200
    finally:
        broker.stop()


def test_tables_nested_too_deep_are_refused_and_the_broker_goes_on(broker):
    nested = {"leaf": 1}
    for _ in range(100):
        nested = {"n": nested}
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        conn.channel().queue_declare("too-deep", arguments={"x-deep": nested})
    for _ in range(40):  # 40 levels are fine
        nested = nested["n"]
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    conn.channel().queue_declare("deep-enough", arguments={"x-deep": nested})
    status, body = broker.http_get("/api/definitions")
    assert status == 200 and "deep-enough" in body and "too-deep" not in body
    conn.channel().queue_delete("deep-enough")
    conn.close()


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def short(text):
    return bytes([len(text)]) + text.encode()


def open_connection(port, channels, user="guest", password="guest"):
    """A raw AMQP connection logged in as `user` with `channels` channels open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    sock.recv(4096)  # connection.start
    response = b"\x00" + user.encode() + b"\x00" + password.encode()
    start_ok = struct.pack(">HH", 10, 11) + struct.pack(">I", 0) + short("PLAIN") + struct.pack(">I", len(response)) \
        + response + short("en_US")
    sock.sendall(frame(1, 0, start_ok))
    sock.recv(4096)  # connection.tune
    sock.sendall(frame(1, 0, struct.pack(">HHHIH", 10, 31, 0, 131072, 0)))
    sock.sendall(frame(1, 0, struct.pack(">HH", 10, 40) + short("/") + short("") + b"\x00"))
    for number in range(1, channels + 1):
        sock.sendall(frame(1, number, struct.pack(">HH", 20, 10) + short("")))
    return sock


def test_bodies_declared_huge_and_never_sent_hold_no_memory(broker):
    """Each of 20 connections x 10 channels declares a 128 MiB body and sends one byte: Warren used to reserve the
    declared size and die; now it holds what arrived."""
    before = resident_kb(broker.process.pid)
    sockets = []
    for _ in range(20):
        sock = open_connection(broker.port, 10)
        for number in range(1, 11):
            publish = struct.pack(">HHH", 60, 40, 0) + short("") + short("q") + b"\x00"
            header = struct.pack(">HHQH", 60, 0, 128 << 20, 0)
            sock.sendall(frame(1, number, publish) + frame(2, number, header) + frame(3, number, b"x"))
        sockets.append(sock)
    # A second client is served meanwhile, and sees the broker's memory bounded.
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    conn.channel().queue_declare("", exclusive=True)
    conn.close()
    assert resident_kb(broker.process.pid) - before < 100 * 1024  # 200 x 128 MiB were declared
    for sock in sockets:
        sock.close()


def test_memory_alarm_blocks_a_flood_in_time_and_clears_after_a_purge():
    """A consumer takes a flood of 1 MiB messages and acknowledges none against a 64 MiB watermark (unacknowledged
    messages stay in memory): the publisher is blocked near the watermark (not hundreds of MB later); once the
    consumer goes (its messages requeued) a purge unblocks it within seconds, although the allocator had kept the
    freed memory."""
    watermark = 64 * 2**20
    broker = Broker(env={"WARREN_MEMORY_HIGH_WATERMARK": str(watermark)})
    try:
        events = []
        consumer = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
        consumer_channel = consumer.channel()
        consumer_channel.queue_declare("flood")
        consumer_channel.basic_consume("flood", lambda *_: None, auto_ack=False)  # never acknowledges
        publisher = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
        publisher.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
        publisher.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
        ch = publisher.channel()
        body = b"x" * 2**20
        sent = 0
        while "blocked" not in events and sent < 400:
            ch.basic_publish("", "flood", body)
            sent += 1
            publisher.process_data_events(time_limit=0.01)
            consumer.process_data_events(time_limit=0)
        assert "blocked" in events, f"not blocked after {sent} MiB"
        assert sent < 3 * watermark // 2**20  # blocked near the watermark
        assert broker.wait_for_log(r"memory alarm set")
        consumer.close()  # its unacknowledged messages go back to the queue
        admin = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
        admin.channel().queue_purge("flood")
        admin.close()
        for _ in range(300):  # up to 30 s, woken by each event
            publisher.process_data_events(time_limit=0.1)
            if "unblocked" in events:
                break
        assert "unblocked" in events
        ch.basic_publish("", "flood", b"after")  # publishing works again
        publisher.close()
    finally:
        broker.stop()


def test_transient_messages_nobody_consumes_are_paged_to_disk_instead_of_blocking_publishers():
    """Against a 64 MiB watermark, 300 MiB of transient messages to a queue nobody consumes: the broker pages them
    to disk, the publisher is never blocked, resident memory stays bounded, and every message comes back in order."""
    watermark = 64 * 2**20
    broker = Broker(env={"WARREN_MEMORY_HIGH_WATERMARK": str(watermark)})
    try:
        events = []
        publisher = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
        publisher.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
        ch = publisher.channel()
        ch.queue_declare("unconsumed")  # not durable: nothing of it survives a restart
        ch.confirm_delivery()
        for i in range(300):
            ch.basic_publish("", "unconsumed", i.to_bytes(4, "big") + b"x" * (2**20 - 4))
        assert events == []
        assert broker.wait_for_log(r"paging messages to disk", timeout=10)
        assert resident_kb(broker.process.pid) < 3 * watermark // 1024
        got = []
        while True:
            method, _, body = ch.basic_get("unconsumed", auto_ack=True)
            if method is None:
                break
            got.append(int.from_bytes(body[:4], "big"))
            assert len(body) == 2**20
        assert got == list(range(300))
        publisher.close()
    finally:
        broker.stop()


def read_frames(sock, count):
    """Reads `count` frames: (type, channel, payload) each."""
    data = b""
    frames = []
    while len(frames) < count:
        while len(data) < 7 or len(data) < 8 + struct.unpack(">I", data[3:7])[0]:
            chunk = sock.recv(65536)
            assert chunk, "the broker closed the connection"
            data += chunk
        size = struct.unpack(">I", data[3:7])[0]
        frames.append((data[0], struct.unpack(">H", data[1:3])[0], data[7:7 + size]))
        data = data[8 + size:]
    return frames


def test_a_publisher_without_write_permission_is_refused_before_sending_its_body(tmp_path):
    config = tmp_path / "reader.yaml"
    config.write_text("users:\n  - {name: reader, password: pw}\n"
                      "permissions:\n  - {user: reader, vhost: /, configure: '.*', write: '', read: '.*'}\n")
    broker = Broker("--config", str(config))
    try:
        sock = open_connection(broker.port, 1, user="reader", password="pw")
        # start, tune, open-ok, channel.open-ok were sent; then only the basic.publish of a 128 MiB message.
        read_frames(sock, 2)
        publish = struct.pack(">HHH", 60, 40, 0) + short("amq.direct") + short("k") + b"\x00"
        sock.sendall(frame(1, 1, publish))
        kind, channel, payload = read_frames(sock, 1)[0]
        class_id, method_id, code = struct.unpack(">HHH", payload[:6])
        assert (kind, channel, class_id, method_id, code) == (1, 1, 20, 40, 403)
        assert b"access to exchange 'amq.direct' in vhost '/' refused for user 'reader'" in payload
        sock.close()
    finally:
        broker.stop()
