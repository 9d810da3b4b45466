"""Interop tests: pika (from PyPI) against a warren process."""

import socket
import struct
import uuid

import pika
import pika.exceptions
import pytest


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def bodies(channel, queue):
    """Every ready message body of a queue, by basic.get."""
    out = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def drain(channel, queue, count, auto_ack=False, timeout=5):
    """Consumes exactly `count` messages (or fails after `timeout` seconds of silence)."""
    got = []
    for method, properties, body in channel.consume(queue, auto_ack=auto_ack, inactivity_timeout=timeout):
        assert method is not None, f"only {len(got)} of {count} messages arrived"
        got.append((method, properties, body))
        if len(got) == count:
            break
    channel.cancel()
    return got


def test_seed_scenario_direct_exchange_publish_and_subscribe(params):
    lines = [f"line {i}" for i in range(50)]
    publisher = pika.BlockingConnection(params)
    pch = publisher.channel()
    pch.exchange_declare("topic", "direct")
    pch.queue_declare("topic1")
    pch.queue_bind("topic1", "topic", "topic1")
    pch.queue_purge("topic1")
    for line in lines:
        pch.basic_publish("topic", "topic1", line.encode())
    subscriber = pika.BlockingConnection(params)
    sch = subscriber.channel()
    got = drain(sch, "topic1", len(lines), auto_ack=True)
    assert [b.decode() for _, _, b in got] == lines
    assert all(m.exchange == "topic" and m.routing_key == "topic1" for m, _, _ in got)
    publisher.close()
    subscriber.close()


def test_fanout_to_several_queues(channel):
    exchange = name("fan")
    channel.exchange_declare(exchange, "fanout")
    queues = [channel.queue_declare("", exclusive=True).method.queue for _ in range(4)]
    for q in queues:
        channel.queue_bind(q, exchange, "ignored")
    channel.basic_publish(exchange, "any-key", b"to all")
    for q in queues:
        method, _, body = channel.basic_get(q, auto_ack=True)
        assert body == b"to all"
        assert method.message_count == 0


def test_publisher_confirms_and_mandatory_return(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.confirm_delivery()
    for i in range(100):
        channel.basic_publish("", queue, str(i).encode(), mandatory=True)  # raises unless acked
    assert channel.queue_declare(queue, passive=True).method.message_count == 100
    with pytest.raises(pika.exceptions.UnroutableError) as error:
        channel.basic_publish("", name("nowhere"), b"lost", mandatory=True)
    returned = error.value.messages[0]
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.body == b"lost"


def test_properties_and_headers_arrive_unchanged(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers={"a": 1, "b": "two", "c": [1, 2]},
        delivery_mode=2, priority=5, correlation_id="corr", reply_to="replies", expiration="60000",
        message_id="mid", timestamp=1700000000, type="kind", user_id="guest", app_id="tests",
    )
    channel.basic_publish("", queue, b"{}", properties=props)
    _, got, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"{}"
    for field in ["content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
                  "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id"]:
        assert getattr(got, field) == getattr(props, field), field


def test_basic_get_and_get_empty(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    assert channel.basic_get(queue) == (None, None, None)
    channel.basic_publish("", queue, b"a")
    channel.basic_publish("", queue, b"b")
    method, _, body = channel.basic_get(queue)
    assert body == b"a" and method.message_count == 1 and not method.redelivered
    channel.basic_ack(method.delivery_tag)
    method, _, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"b" and method.message_count == 0


def test_reject_requeue_sets_redelivered_and_keeps_order(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    for body in [b"1", b"2", b"3"]:
        channel.basic_publish("", queue, body)
    first, _, _ = channel.basic_get(queue)
    second, _, _ = channel.basic_get(queue)
    channel.basic_reject(second.delivery_tag, requeue=True)
    channel.basic_nack(first.delivery_tag, requeue=True)
    bodies = []
    for _ in range(3):
        method, _, body = channel.basic_get(queue, auto_ack=True)
        bodies.append((body, method.redelivered))
    assert bodies == [(b"1", True), (b"2", True), (b"3", False)]
    # reject without requeue drops the message
    channel.basic_publish("", queue, b"drop me")
    method, _, _ = channel.basic_get(queue)
    channel.basic_reject(method.delivery_tag, requeue=False)
    assert channel.queue_declare(queue, passive=True).method.message_count == 0


def test_prefetch_limits_in_flight_deliveries(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    for i in range(10):
        channel.basic_publish("", queue, str(i).encode())
    channel.basic_qos(prefetch_count=3)
    received = []
    channel.basic_consume(queue, lambda ch, m, p, b: received.append(m))
    # A synchronous round trip: every delivery the broker sent before it has arrived when it returns.
    while len(received) < 3:
        channel.connection.process_data_events(time_limit=1)
    assert channel.queue_declare(queue, passive=True).method.message_count == 7
    channel.connection.process_data_events(time_limit=0)
    assert len(received) == 3
    channel.basic_ack(received[0].delivery_tag)
    while len(received) < 4:
        channel.connection.process_data_events(time_limit=1)
    assert channel.queue_declare(queue, passive=True).method.message_count == 6
    channel.connection.process_data_events(time_limit=0)
    assert len(received) == 4
    channel.basic_ack(0, multiple=True)
    while len(received) < 7:
        channel.connection.process_data_events(time_limit=1)
    assert channel.queue_declare(queue, passive=True).method.message_count == 3


def test_round_robin_between_consumers(params):
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    queue = ch.queue_declare(name("rr"), auto_delete=True).method.queue
    got = {"a": [], "b": []}
    ch.basic_consume(queue, lambda c, m, p, b: got["a"].append(b), auto_ack=True, consumer_tag="a")
    ch.basic_consume(queue, lambda c, m, p, b: got["b"].append(b), auto_ack=True, consumer_tag="b")
    for i in range(10):
        ch.basic_publish("", queue, str(i).encode())
    while len(got["a"]) + len(got["b"]) < 10:
        conn.process_data_events(time_limit=1)
    assert len(got["a"]) == 5 and len(got["b"]) == 5
    conn.close()


def test_consumer_cancelled_when_queue_deleted(params):
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    cancelled = []
    ch.basic_consume(queue, lambda *a: None, consumer_tag="c1")
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    other = conn.channel()
    other.queue_delete(queue)
    while not cancelled:
        conn.process_data_events(time_limit=1)
    assert cancelled == ["c1"]
    conn.close()


def test_channel_error_leaves_other_channels_working(connection):
    broken = connection.channel()
    healthy = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        broken.queue_declare(name("missing"), passive=True)
    assert error.value.reply_code == 404
    queue = healthy.queue_declare("", exclusive=True).method.queue
    healthy.basic_publish("", queue, b"still fine")
    assert healthy.basic_get(queue, auto_ack=True)[2] == b"still fine"
    again = connection.channel()
    assert again.queue_declare(queue, passive=True).method.message_count == 0


def test_channel_error_on_one_connection_does_not_affect_another(params):
    a = pika.BlockingConnection(params)
    b = pika.BlockingConnection(params)
    ach = a.channel()
    bch = b.channel()
    queue = bch.queue_declare("", exclusive=True).method.queue
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as error:
        ach.exchange_declare(name("x"), "no-such-type")
    assert error.value.reply_code == 503
    bch.basic_publish("", queue, b"ok")
    assert bch.basic_get(queue, auto_ack=True)[2] == b"ok"
    b.close()


def test_unacked_messages_requeued_in_order_when_channel_closes(params, channel):
    queue = channel.queue_declare(name("requeue"), auto_delete=False).method.queue
    for i in range(5):
        channel.basic_publish("", queue, str(i).encode())
    consumer = pika.BlockingConnection(params)
    cch = consumer.channel()
    got = drain_no_cancel(cch, queue, 5)
    assert [b for _, _, b in got] == [b"0", b"1", b"2", b"3", b"4"]
    cch.basic_ack(got[1][0].delivery_tag)
    consumer.close()  # returns after close-ok: the broker has requeued by then
    bodies = []
    for _ in range(4):
        method, _, body = channel.basic_get(queue, auto_ack=True)
        bodies.append((body, method.redelivered))
    assert bodies == [(b"0", True), (b"2", True), (b"3", True), (b"4", True)]
    assert channel.basic_get(queue) == (None, None, None)
    channel.queue_delete(queue)


def test_unacked_messages_requeued_when_tcp_connection_drops(broker, channel):
    from pika import spec

    queue = channel.queue_declare(name("dropped"), auto_delete=False).method.queue
    for i in range(3):
        channel.basic_publish("", queue, str(i).encode())
    sock, read_frame, send = raw_handshake(broker.port)
    send(1, spec.Channel.Open())
    assert isinstance(read_frame().method, spec.Channel.OpenOk)
    send(1, spec.Basic.Consume(queue=queue, consumer_tag="dropper"))
    deliveries = 0
    while deliveries < 3:
        f = read_frame()
        if type(f).__name__ == "Method" and isinstance(f.method, spec.Basic.Deliver):
            deliveries += 1
    assert channel.queue_declare(queue, passive=True).method.message_count == 0
    sock.close()  # no connection.close: the broker notices the TCP close
    deadline = 200
    while channel.queue_declare(queue, passive=True).method.message_count < 3 and deadline > 0:
        channel.connection.process_data_events(time_limit=0.05)
        deadline -= 1
    method, _, body = channel.basic_get(queue, auto_ack=True)
    assert (body, method.redelivered) == (b"0", True)
    channel.queue_delete(queue)


def drain_no_cancel(channel, queue, count):
    got = []
    for method, properties, body in channel.consume(queue, inactivity_timeout=5):
        assert method is not None
        got.append((method, properties, body))
        if len(got) == count:
            return got


def test_exclusive_queue_locked_and_deleted_with_its_connection(params):
    owner = pika.BlockingConnection(params)
    queue = owner.channel().queue_declare(name("excl"), exclusive=True).method.queue
    other = pika.BlockingConnection(params)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        other.channel().queue_declare(queue, passive=True)
    assert error.value.reply_code == 405
    owner.close()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        other.channel().queue_declare(queue, passive=True)
    assert error.value.reply_code == 404
    other.close()


def test_transactions_commit_and_rollback(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.tx_select()
    channel.basic_publish("", queue, b"rolled back")
    channel.tx_rollback()
    channel.basic_publish("", queue, b"committed")
    assert channel.queue_declare(queue, passive=True).method.message_count == 0
    channel.tx_commit()
    assert channel.queue_declare(queue, passive=True).method.message_count == 1


def test_wrong_password_refused_with_403(broker):
    params = pika.ConnectionParameters("127.0.0.1", broker.port, credentials=pika.PlainCredentials("guest", "wrong"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as error:
        pika.BlockingConnection(params)
    assert "403" in str(error.value) or "ACCESS_REFUSED" in str(error.value)


def test_unknown_vhost_refused(broker):
    params = pika.ConnectionParameters("127.0.0.1", broker.port, virtual_host="no-such-vhost")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as error:
        pika.BlockingConnection(params)
    assert "530" in str(error.value) or "NOT_ALLOWED" in str(error.value)


def test_thousand_queues_declared_and_deleted(channel):
    names = [name("many") for _ in range(1000)]
    for n in names:
        channel.queue_declare(n)
    for n in names:
        assert channel.queue_delete(n).method.message_count == 0
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        channel.queue_declare(names[0], passive=True)


def test_large_message_split_over_body_frames(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    body = bytes(range(256)) * 8192  # 2 MiB, many frames at frame_max 131072
    channel.basic_publish("", queue, body)
    assert channel.basic_get(queue, auto_ack=True)[2] == body


def test_exchange_to_exchange_binding(channel):
    source = name("src")
    middle = name("mid")
    channel.exchange_declare(source, "direct")
    channel.exchange_declare(middle, "fanout")
    channel.exchange_bind(middle, source, "k")
    channel.exchange_bind(source, middle, "k")  # a cycle must not loop
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, middle, "")
    channel.queue_bind(queue, source, "k")  # two paths, one copy
    channel.basic_publish(source, "k", b"once")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"once"
    assert channel.basic_get(queue, auto_ack=True) == (None, None, None)


def test_redeclare_with_other_properties_is_406(channel):
    queue = name("redeclare")
    channel.queue_declare(queue, auto_delete=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        channel.queue_declare(queue, durable=True, auto_delete=True)
    assert error.value.reply_code == 406
    assert "inequivalent arg 'durable'" in error.value.reply_text


# ---- Raw sockets: what pika cannot send ----

def raw_handshake(port, heartbeat=0, channel_max=None, client_properties=None):
    from pika import frame, spec

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    buffer = b""

    def read_frame():
        nonlocal buffer
        while True:
            if len(buffer) >= 7:
                size = struct.unpack(">I", buffer[3:7])[0]
                if len(buffer) >= size + 8:
                    consumed, decoded = frame.decode_frame(buffer)
                    buffer = buffer[consumed:]
                    return decoded
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buffer += chunk

    def send(channel, method):
        sock.sendall(frame.Method(channel, method).marshal())

    assert isinstance(read_frame().method, spec.Connection.Start)
    send(0, spec.Connection.StartOk(client_properties=client_properties or {}, mechanism="PLAIN",
                                    response=b"\0guest\0guest"))
    tune = read_frame().method
    assert isinstance(tune, spec.Connection.Tune)
    send(0, spec.Connection.TuneOk(channel_max=tune.channel_max if channel_max is None else channel_max,
                                   frame_max=tune.frame_max, heartbeat=heartbeat))
    send(0, spec.Connection.Open(virtual_host="/"))
    assert isinstance(read_frame().method, spec.Connection.OpenOk)
    return sock, read_frame, send


def test_heartbeat_timeout_closes_a_silent_client(broker):
    sock, read_frame, _ = raw_handshake(broker.port, heartbeat=1)
    sock.settimeout(15)
    # The broker sends heartbeats, then gives up on us: the socket ends.
    saw_heartbeat = False
    while True:
        f = read_frame()
        if f is None:
            break
        saw_heartbeat = saw_heartbeat or type(f).__name__ == "Heartbeat"
    assert saw_heartbeat


def test_bad_protocol_header_answered_with_ours(broker):
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    sock.sendall(b"AMQP\x01\x01\x08\x00")
    data = b""
    while True:
        chunk = sock.recv(100)
        if not chunk:
            break
        data += chunk
    assert data == b"AMQP\x00\x00\x09\x01"


def test_bad_frame_end_is_501_and_other_connections_live_on(broker, channel):
    from pika import spec

    sock, read_frame, _ = raw_handshake(broker.port)
    sock.sendall(b"\x08\x00\x00\x00\x00\x00\x00\x00")  # heartbeat with a wrong frame end
    reply = read_frame()
    assert isinstance(reply.method, spec.Connection.Close)
    assert reply.method.reply_code == 501
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"fine")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"fine"


def test_oversized_frame_is_501(broker):
    from pika import spec

    sock, read_frame, _ = raw_handshake(broker.port)
    sock.sendall(b"\x01\x00\x01" + struct.pack(">I", 10_000_000))
    reply = read_frame()
    assert isinstance(reply.method, spec.Connection.Close)
    assert reply.method.reply_code == 501


def test_content_without_publish_is_505(broker):
    from pika import spec

    sock, read_frame, send = raw_handshake(broker.port)
    send(1, spec.Channel.Open())
    assert isinstance(read_frame().method, spec.Channel.OpenOk)
    sock.sendall(b"\x03\x00\x01\x00\x00\x00\x02hi\xce")  # a body frame with no publish before it
    reply = read_frame()
    assert isinstance(reply.method, spec.Connection.Close)
    assert reply.method.reply_code == 505


def test_dropped_connection_mid_handshake_is_cleaned_up(broker, channel):
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        sock.close()
    queue = channel.queue_declare("", exclusive=True).method.queue
    assert channel.queue_declare(queue, passive=True).method.consumer_count == 0


@pytest.mark.parametrize("confirms", [True, False])
def test_stuck_consumer_never_stops_a_publisher_and_nothing_is_lost(params, confirms):
    """A consumer that stops reading fills its socket. A flooding publisher is held back (briefly) but not
    stopped; one that waits for each confirm is not held back at all. Then everything arrives, in order."""
    consumer = pika.BlockingConnection(params)
    cch = consumer.channel()
    queue = cch.queue_declare(name("slow"), auto_delete=True).method.queue
    got = []
    cch.basic_consume(queue, lambda c, m, p, b: got.append(b), auto_ack=True)
    publisher = pika.BlockingConnection(params)
    pch = publisher.channel()
    if confirms:
        pch.confirm_delivery()
    total = 30000
    body = b"x" * 200
    for i in range(total):
        pch.basic_publish("", queue, str(i).encode() + body)  # the consumer reads nothing meanwhile
    # A round trip on the publisher's channel: the broker has read every publish before it answers.
    pch.queue_declare(queue, passive=True)
    while len(got) < total:
        consumer.process_data_events(time_limit=1)
    assert [g[: -len(body)] for g in got] == [str(i).encode() for i in range(total)]
    publisher.close()
    consumer.close()


def test_message_over_the_configured_maximum_is_406():
    from conftest import Broker

    small = Broker("--max-message-size", "1000")
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", small.port))
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", queue, b"x" * 1000)  # at the limit: fine
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
            ch.basic_publish("", queue, b"x" * 1001)
            ch.queue_declare(queue, passive=True)
        assert error.value.reply_code == 406
        assert "larger than configured max size 1000" in error.value.reply_text
        assert conn.channel().queue_declare(queue, passive=True).method.message_count == 1
        conn.close()
    finally:
        small.stop()
    assert small.process.returncode == 0


def test_global_prefetch_limits_the_whole_channel(channel):
    q1 = channel.queue_declare("", exclusive=True).method.queue
    q2 = channel.queue_declare("", exclusive=True).method.queue
    for i in range(5):
        channel.basic_publish("", q1, b"a")
        channel.basic_publish("", q2, b"b")
    channel.basic_qos(prefetch_count=3, global_qos=True)
    received = []
    channel.basic_consume(q1, lambda c, m, p, b: received.append(m))
    channel.basic_consume(q2, lambda c, m, p, b: received.append(m))
    while len(received) < 3:
        channel.connection.process_data_events(time_limit=1)
    ready = (channel.queue_declare(q1, passive=True).method.message_count
             + channel.queue_declare(q2, passive=True).method.message_count)
    channel.connection.process_data_events(time_limit=0)
    assert len(received) == 3 and ready == 7


def test_recover_requeues_unacked_as_redelivered(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"again")
    method, _, _ = channel.basic_get(queue)
    assert not method.redelivered
    channel.basic_recover(requeue=True)
    method, _, body = channel.basic_get(queue, auto_ack=True)
    assert body == b"again" and method.redelivered


@pytest.mark.warren_only  # RabbitMQ answers channel.flow(false) with 540
def test_channel_flow_pauses_and_resumes_deliveries(channel):
    queue = channel.queue_declare("", exclusive=True).method.queue
    received = []
    channel.flow(False)
    channel.basic_consume(queue, lambda c, m, p, b: received.append(b), auto_ack=True)
    channel.basic_publish("", queue, b"held")
    assert channel.queue_declare(queue, passive=True).method.message_count == 1
    channel.connection.process_data_events(time_limit=0)
    assert received == []
    channel.flow(True)
    while not received:
        channel.connection.process_data_events(time_limit=1)
    assert received == [b"held"]


def test_update_secret_is_answered(broker):
    from pika import spec

    sock, read_frame, send = raw_handshake(broker.port)
    send(0, spec.Connection.UpdateSecret(new_secret=b"token", reason="refresh"))
    assert isinstance(read_frame().method, spec.Connection.UpdateSecretOk)


def test_topic_exchange_routes_with_wildcards(channel):
    queues = {}
    for key in ["stock.usd.*", "stock.#", "*.eur.nyse", "#"]:
        queues[key] = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queues[key], "amq.topic", key)
    channel.basic_publish("amq.topic", "stock.usd.nyse", b"1")
    channel.basic_publish("amq.topic", "stock.eur.nyse", b"2")
    channel.basic_publish("amq.topic", "bond.eur", b"3")

    assert bodies(channel, queues["stock.usd.*"]) == [b"1"]
    assert bodies(channel, queues["stock.#"]) == [b"1", b"2"]
    assert bodies(channel, queues["*.eur.nyse"]) == [b"2"]
    assert bodies(channel, queues["#"]) == [b"1", b"2", b"3"]


def test_headers_exchange_all_and_any(channel):
    all_q = channel.queue_declare("", exclusive=True).method.queue
    any_q = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(all_q, "amq.headers", "", arguments={"x-match": "all", "format": "pdf", "type": "report"})
    channel.queue_bind(any_q, "amq.match", "", arguments={"x-match": "any", "format": "pdf", "type": "log"})
    for headers, body in [({"format": "pdf", "type": "report"}, b"both"), ({"format": "zip", "type": "log"}, b"any"),
                          ({"format": "zip"}, b"none")]:
        channel.basic_publish("amq.headers", "", body, pika.BasicProperties(headers=headers))
        channel.basic_publish("amq.match", "", body, pika.BasicProperties(headers=headers))

    assert bodies(channel, all_q) == [b"both"]
    assert bodies(channel, any_q) == [b"both", b"any"]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        channel.queue_bind(all_q, "amq.headers", "", arguments={"x-match": "some"})
    assert error.value.reply_code == 406


@pytest.mark.warren_only  # a plugin RabbitMQ does not enable by default
def test_consistent_hash_exchange_spreads_by_weight(channel):
    exchange = name("hash")
    channel.exchange_declare(exchange, "x-consistent-hash")
    queues = []
    for weight in ["1", "3"]:
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, exchange, weight)
        queues.append(queue)
    for i in range(4000):
        channel.basic_publish(exchange, f"key-{i}", b"")
    counts = [channel.queue_declare(q, passive=True).method.message_count for q in queues]
    assert sum(counts) == 4000
    assert 800 <= counts[0] <= 1200 and 2800 <= counts[1] <= 3200


def test_alternate_exchange_takes_unroutable_messages(channel):
    alternate = name("ae")
    main = name("main")
    channel.exchange_declare(alternate, "fanout")
    channel.exchange_declare(main, "direct", arguments={"alternate-exchange": alternate})
    unrouted = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(unrouted, alternate, "")
    routed = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(routed, main, "known")
    channel.basic_publish(main, "known", b"to routed")
    channel.basic_publish(main, "unknown", b"to alternate")
    assert channel.basic_get(routed, auto_ack=True)[2] == b"to routed"
    assert channel.basic_get(unrouted, auto_ack=True)[2] == b"to alternate"
    assert channel.basic_get(unrouted, auto_ack=True) == (None, None, None)


def test_internal_exchange_refuses_publishes_but_routes_from_bindings(channel):
    internal = name("internal")
    front = name("front")
    channel.exchange_declare(internal, "fanout", internal=True)
    channel.exchange_declare(front, "fanout")
    channel.exchange_bind(internal, front)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, internal, "")
    channel.basic_publish(front, "", b"via binding")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"via binding"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        channel.basic_publish(internal, "", b"direct")
        channel.queue_declare(queue, passive=True)
    assert error.value.reply_code == 403


def test_cc_and_bcc_headers(channel):
    exchange = name("cc")
    channel.exchange_declare(exchange, "direct")
    queues = {}
    for key in ["to", "cc", "bcc"]:
        queues[key] = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queues[key], exchange, key)
    channel.basic_publish(exchange, "to", b"memo", pika.BasicProperties(headers={"CC": ["cc"], "BCC": ["bcc"]}))
    for key in ["to", "cc", "bcc"]:
        method, properties, body = channel.basic_get(queues[key], auto_ack=True)
        assert body == b"memo"
        assert properties.headers == {"CC": ["cc"]}
