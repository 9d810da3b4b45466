"""Queue semantics frameworks rely on (dead-lettering, TTL, length limits, queue expiry, priorities, single active
consumer, quorum queues' delivery limits, direct reply-to, consumer timeouts), through pika. They run against Warren
by default and against RabbitMQ with AMQP_TARGET_PORT (`make test-rabbitmq`), so Warren answers as RabbitMQ 3.x
does, to the header; the few marked warren_only test a deliberate difference or a Warren setting."""

import datetime
import time

import pika
import pytest
from test_behaviour import closed_with, conn, unique  # noqa: F401 (conn is a fixture)


def dead_letter_setup(ch, **arguments):
    """A work queue whose dead letters go, through a direct exchange, to a queue bound with the work queue's name
    and `dead` (a dead-letter routing key). Returns (work queue, dead-letter queue, exchange)."""
    work, dead, exchange = unique("work"), unique("dead"), unique("dlx")
    ch.exchange_declare(exchange, "direct", auto_delete=True)
    ch.queue_declare(dead, exclusive=True)
    ch.queue_bind(dead, exchange, routing_key=work)
    ch.queue_bind(dead, exchange, routing_key="dead")
    ch.queue_declare(work, exclusive=True, arguments={"x-dead-letter-exchange": exchange, **arguments})
    return work, dead, exchange


def wait_get(conn, ch, queue, timeout=10.0):
    """basic.get until a message comes (it may be on its way through a timer), or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, properties, body = ch.basic_get(queue, auto_ack=True)
        if method:
            return method, properties, body
        conn.process_data_events(time_limit=0.02)
    return None


def death(properties, index=0):
    return properties.headers["x-death"][index]


def test_rejected_message_is_dead_lettered_with_x_death_and_first_death_headers(conn):
    ch = conn.channel()
    work, dead, exchange = dead_letter_setup(ch)
    ch.basic_publish("", work, b"job", pika.BasicProperties(headers={"app": "x", "CC": ["cc-key"]}))
    got = None
    for _ in range(100):
        got, _, _ = ch.basic_get(work)
        if got:
            break
        conn.process_data_events(time_limit=0.01)
    ch.basic_reject(got.delivery_tag, requeue=False)
    method, properties, body = wait_get(conn, ch, dead)
    assert body == b"job"
    assert method.exchange == exchange and method.routing_key == work
    headers = properties.headers
    assert headers["app"] == "x" and headers["CC"] == ["cc-key"]
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-queue"] == work
    assert headers["x-first-death-exchange"] == ""
    entry = death(properties)
    assert entry["count"] == 1
    assert entry["reason"] == "rejected"
    assert entry["queue"] == work
    assert entry["exchange"] == ""
    assert entry["routing-keys"] == [work, "cc-key"]
    assert abs(entry["time"].replace(tzinfo=datetime.timezone.utc).timestamp() - time.time()) < 60
    assert "original-expiration" not in entry


def test_nack_without_requeue_dead_letters_with_the_dead_letter_routing_key_and_drops_cc(conn):
    ch = conn.channel()
    work, dead, exchange = dead_letter_setup(ch, **{"x-dead-letter-routing-key": "dead"})
    ch.basic_publish("", work, b"job", pika.BasicProperties(headers={"CC": ["cc-key"]}))
    got = None
    while not got:
        got, _, _ = ch.basic_get(work)
    ch.basic_nack(got.delivery_tag, requeue=False)
    method, properties, _ = wait_get(conn, ch, dead)
    assert method.routing_key == "dead"
    assert "CC" not in properties.headers
    assert death(properties)["routing-keys"] == [work, "cc-key"]
    # nack with requeue puts it back instead: nothing more is dead-lettered.
    ch.basic_publish("", work, b"again")
    got = None
    while not got:
        got, _, _ = ch.basic_get(work)
    ch.basic_nack(got.delivery_tag, requeue=True)
    again, _, body = ch.basic_get(work, auto_ack=True)
    assert body == b"again" and again.redelivered
    assert ch.basic_get(dead)[0] is None


def test_queue_ttl_expires_messages_to_the_dead_letter_exchange(conn):
    ch = conn.channel()
    work, dead, _ = dead_letter_setup(ch, **{"x-message-ttl": 30})
    ch.basic_publish("", work, b"short-lived")
    method, properties, body = wait_get(conn, ch, dead)
    assert body == b"short-lived"
    entry = death(properties)
    assert entry["reason"] == "expired" and entry["queue"] == work and entry["count"] == 1
    assert "original-expiration" not in entry
    assert ch.queue_declare(work, passive=True).method.message_count == 0


def test_message_expiration_moves_to_original_expiration_and_the_lower_ttl_wins(conn):
    ch = conn.channel()
    work, dead, _ = dead_letter_setup(ch, **{"x-message-ttl": 600_000})
    ch.basic_publish("", work, b"m", pika.BasicProperties(expiration="40"))
    _, properties, _ = wait_get(conn, ch, dead)
    assert properties.expiration is None
    entry = death(properties)
    assert entry["reason"] == "expired"
    assert entry["original-expiration"] == "40"


def test_expiration_zero_reaches_only_a_waiting_consumer(conn):
    ch = conn.channel()
    work, dead, _ = dead_letter_setup(ch)
    ch.basic_publish("", work, b"nobody waits", pika.BasicProperties(expiration="0"))
    _, properties, body = wait_get(conn, ch, dead)
    assert body == b"nobody waits" and death(properties)["reason"] == "expired"
    got = []
    ch.basic_consume(work, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", work, b"someone waits", pika.BasicProperties(expiration="0"))
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert got == [b"someone waits"]
    assert ch.basic_get(dead)[0] is None


@pytest.mark.parametrize(
    "expiration, reason",
    [("abc", "no_integer"), ("-1", "{value_negative,-1}"), ("10x", '{leftover_string,"x"}')],
)
def test_an_invalid_expiration_closes_the_channel_with_406(conn, expiration, reason):
    ch = conn.channel()
    queue = unique("q")
    ch.queue_declare(queue, exclusive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        ch.basic_publish("", queue, b"m", pika.BasicProperties(expiration=expiration))
        ch.queue_declare(queue, passive=True)  # the close arrives before this answer
    assert error.value.reply_code == 406
    assert error.value.reply_text == f"PRECONDITION_FAILED - invalid expiration '{expiration}': {reason}"


def test_max_length_drops_the_oldest_to_the_dead_letter_exchange(conn):
    ch = conn.channel()
    work, dead, _ = dead_letter_setup(ch, **{"x-max-length": 2})
    for body in [b"1", b"2", b"3"]:
        ch.basic_publish("", work, body)
    _, properties, body = wait_get(conn, ch, dead)
    assert body == b"1" and death(properties)["reason"] == "maxlen"
    assert [ch.basic_get(work, auto_ack=True)[2] for _ in range(2)] == [b"2", b"3"]


def test_max_length_bytes_counts_body_bytes(conn):
    ch = conn.channel()
    work, dead, _ = dead_letter_setup(ch, **{"x-max-length-bytes": 10})
    for body in [b"aaaa", b"bbbb", b"cccc"]:  # 12 bytes: the first goes
        ch.basic_publish("", work, body)
    assert wait_get(conn, ch, dead)[2] == b"aaaa"
    assert ch.queue_declare(work, passive=True).method.message_count == 2


def test_reject_publish_nacks_the_publisher_and_keeps_the_queue(conn):
    ch = conn.channel()
    work, dead, _ = dead_letter_setup(ch, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", work, b"first")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", work, b"second")
    assert ch.basic_get(work, auto_ack=True)[2] == b"first"
    assert ch.basic_get(dead)[0] is None  # reject-publish does not dead-letter
    ch.basic_publish("", work, b"third")  # room again


def test_reject_publish_dlx_nacks_and_dead_letters(conn):
    ch = conn.channel()
    work, dead, _ = dead_letter_setup(ch, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    ch.confirm_delivery()
    ch.basic_publish("", work, b"first")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", work, b"second")
    _, properties, body = wait_get(conn, ch, dead)
    assert body == b"second" and death(properties)["reason"] == "maxlen"
    assert ch.queue_declare(work, passive=True).method.message_count == 1


def test_a_missing_dead_letter_exchange_drops_silently(conn):
    ch = conn.channel()
    work = unique("work")
    ch.queue_declare(work, exclusive=True, arguments={"x-dead-letter-exchange": unique("absent")})
    ch.basic_publish("", work, b"m")
    got = None
    while not got:
        got, _, _ = ch.basic_get(work)
    ch.basic_reject(got.delivery_tag, requeue=False)
    assert ch.queue_declare(work, passive=True).method.message_count == 0
    assert conn.is_open and ch.is_open


def cycle_setup(ch, ttl):
    """A queue whose dead letters go through a fanout exchange back to itself and to an observer queue."""
    work, observer, exchange = unique("cycle"), unique("observer"), unique("fan")
    ch.exchange_declare(exchange, "fanout", auto_delete=True)
    arguments = {"x-dead-letter-exchange": exchange}
    if ttl is not None:
        arguments["x-message-ttl"] = ttl
    ch.queue_declare(work, exclusive=True, arguments=arguments)
    ch.queue_declare(observer, exclusive=True)
    ch.queue_bind(work, exchange)
    ch.queue_bind(observer, exchange)
    return work, observer


def test_a_dead_letter_cycle_without_rejection_is_cut(conn):
    ch = conn.channel()
    work, observer = cycle_setup(ch, ttl=20)
    ch.basic_publish("", work, b"m")
    _, properties, _ = wait_get(conn, ch, observer)
    assert death(properties)["count"] == 1
    # Without the cut it would expire again every 20 ms and reach the observer again.
    conn.sleep(0.3)
    assert ch.queue_declare(observer, passive=True).method.message_count == 0
    assert ch.queue_declare(work, passive=True).method.message_count == 0


def test_a_dead_letter_cycle_with_a_rejection_goes_round_and_counts(conn):
    ch = conn.channel()
    work, observer = cycle_setup(ch, ttl=None)
    ch.basic_publish("", work, b"m")
    for count in (1, 2):
        got = None
        while not got:
            got, _, _ = ch.basic_get(work)
        ch.basic_reject(got.delivery_tag, requeue=False)
        _, properties, _ = wait_get(conn, ch, observer)
        entry = death(properties)
        assert entry["count"] == count and entry["reason"] == "rejected" and entry["queue"] == work
        assert len(properties.headers["x-death"]) == 1
    assert ch.queue_declare(work, passive=True).method.message_count == 1


def test_x_death_keeps_one_entry_per_queue_and_reason_most_recent_first(conn):
    ch = conn.channel()
    first, second = unique("first"), unique("second")
    ch.queue_declare(second, exclusive=True)
    ch.queue_declare(
        first, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": second}
    )
    ch.basic_publish("", first, b"m")
    got = None
    while not got:
        got, _, _ = ch.basic_get(first)
    ch.basic_reject(got.delivery_tag, requeue=False)
    method, properties, body = wait_get(conn, ch, second)
    # Published again by hand, with its headers, to a queue that expires it into `second` once more.
    third = unique("third")
    ch.queue_declare(
        third,
        exclusive=True,
        arguments={"x-message-ttl": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": second},
    )
    ch.basic_publish("", third, body, properties)
    _, properties, _ = wait_get(conn, ch, second)
    deaths = properties.headers["x-death"]
    assert [(d["queue"], d["reason"]) for d in deaths] == [(third, "expired"), (first, "rejected")]
    assert properties.headers["x-first-death-queue"] == first


def test_an_unused_queue_expires(conn):
    ch = conn.channel()
    queue = unique("expiring")
    ch.queue_declare(queue, arguments={"x-expires": 100})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = conn.channel()
        try:
            probe.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            assert error.reply_code == 404
            return
        probe.close()
        conn.sleep(0.25)  # longer than the period: a passive declare renews it, as any declare does
    pytest.fail("the queue was not deleted")


def test_a_passive_declare_renews_the_lease(conn):
    ch = conn.channel()
    queue = unique("renewed")
    ch.queue_declare(queue, arguments={"x-expires": 300})
    for _ in range(8):  # 0.8 s in all, more than twice the period
        conn.sleep(0.1)
        ch.queue_declare(queue, passive=True)
    ch.queue_delete(queue)


def test_a_consumer_keeps_an_expiring_queue(conn):
    ch = conn.channel()
    queue = unique("kept")
    ch.queue_declare(queue, arguments={"x-expires": 50})
    tag = ch.basic_consume(queue, lambda *_: None, auto_ack=True)
    conn.sleep(0.3)
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    ch.basic_cancel(tag)
    ch.queue_delete(queue)


def test_dead_letter_counters_have_rabbitmq_names(broker):
    """Warren's metrics count dead-lettered messages by reason and strategy, with RabbitMQ 3.13's names."""
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
    ch = c.channel()

    def counter(reason, strategy):
        text = broker.http_get("/metrics")[1]
        for line in text.splitlines():
            if line.startswith(f"rabbitmq_global_messages_dead_lettered_{reason}_total{{") and (
                f'dead_letter_strategy="{strategy}"' in line
            ):
                return int(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {reason}/{strategy} sample")

    before = counter("maxlen", "at_most_once"), counter("rejected", "disabled")
    work, dead, _ = dead_letter_setup(ch, **{"x-max-length": 1})
    ch.basic_publish("", work, b"1")
    ch.basic_publish("", work, b"2")  # drops 1 to the dead-letter exchange
    plain = unique("plain")
    ch.queue_declare(plain, exclusive=True)
    ch.basic_publish("", plain, b"x")
    got = None
    while not got:
        got, _, _ = ch.basic_get(plain)
    ch.basic_reject(got.delivery_tag, requeue=False)  # no dead-letter exchange: dropped
    assert wait_get(c, ch, dead)[2] == b"1"
    assert (counter("maxlen", "at_most_once"), counter("rejected", "disabled")) == (before[0] + 1, before[1] + 1)
    c.close()


@pytest.mark.parametrize(
    "properties, word",
    [({"durable": False}, "non-durable"), ({"exclusive": True}, "exclusive-owner"), ({"auto_delete": True}, "auto-delete")],
)
def test_a_quorum_queue_must_be_durable_shared_and_kept(conn, properties, word):
    name = unique("qq")
    kw = {"durable": True, **properties}
    code, text = closed_with(conn, lambda ch: ch.queue_declare(name, arguments={"x-queue-type": "quorum"}, **kw))
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid property '{word}' for queue '{name}' in vhost '/'")


def test_quorum_queue_arguments_and_types_are_checked(conn):
    name = unique("qq")
    code, text = closed_with(
        conn, lambda ch: ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum", "x-max-priority": 5})
    )
    assert (code, text) == (
        406,
        f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{name}' in vhost '/' "
        "of queue type rabbit_quorum_queue",
    )
    code, text = closed_with(conn, lambda ch: ch.queue_declare(name, durable=True, arguments={"x-queue-type": "foo"}))
    assert (code, text) == (
        406,
        f"PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{name}' in vhost '/': "
        "\"unsupported queue type 'foo'\"",
    )
    ch = conn.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    code, text = closed_with(conn, lambda ch: ch.queue_declare(name, durable=True))
    assert (code, text) == (
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{name}' in vhost '/': "
        "received none but current is the value 'quorum' of type 'longstr'",
    )
    conn.channel().queue_delete(name)


@pytest.mark.warren_only
def test_streams_are_refused_until_they_exist(conn):
    name = unique("stream")
    code, text = closed_with(
        conn, lambda ch: ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    )
    assert code == 406 and "unsupported queue type 'stream'" in text


def test_a_quorum_queue_counts_redeliveries_and_dead_letters_over_the_delivery_limit(conn):
    ch = conn.channel()
    work, dead = unique("qq"), unique("qq-dead")
    ch.queue_declare(dead, exclusive=True)
    ch.queue_declare(
        work,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead,
        },
    )
    try:
        ch.basic_publish("", work, b"job", pika.BasicProperties(headers={"app": 1}))
        seen = []
        for _ in range(2):
            method, properties = None, None
            deadline = time.monotonic() + 10
            while method is None and time.monotonic() < deadline:
                method, properties, _ = ch.basic_get(work)
                if method is None:
                    conn.process_data_events(time_limit=0.01)
            seen.append((method.redelivered, (properties.headers or {}).get("x-delivery-count")))
            ch.basic_nack(method.delivery_tag, requeue=True)
        assert seen[1] == (True, 1)
        assert seen[0][0] is False
        _, properties, body = wait_get(conn, ch, dead)
        assert body == b"job"
        assert death(properties)["reason"] == "delivery_limit"
        assert properties.headers["app"] == 1
    finally:
        ch.queue_delete(work)


def test_a_priority_queue_delivers_higher_priorities_first_and_fifo_within_one(conn):
    ch = conn.channel()
    queue = unique("prio")
    ch.queue_declare(queue, exclusive=True, arguments={"x-max-priority": 10})
    sent = [("low", 1), ("mid-a", 5), ("none", None), ("top", 10), ("above", 200), ("mid-b", 5)]
    for body, priority in sent:
        ch.basic_publish("", queue, body.encode(), pika.BasicProperties(priority=priority))
    first, _, body = ch.basic_get(queue)
    assert body == b"top"
    ch.basic_nack(first.delivery_tag, requeue=True)  # back to its place among its level
    got = []
    while True:
        method, _, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        got.append(body.decode())
    assert got == ["top", "above", "mid-a", "mid-b", "low", "none"]


def test_single_active_consumer_delivers_to_one_and_fails_over_in_order(conn, target_port):
    queue = unique("sac")
    ch = conn.channel()
    ch.queue_declare(queue, arguments={"x-single-active-consumer": True})
    other = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", target_port, heartbeat=0))
    try:
        first_ch, second_ch = other.channel(), other.channel()
        first, second = [], []
        first_ch.basic_qos(prefetch_count=10)
        first_tag = first_ch.basic_consume(queue, lambda c, m, p, b: first.append((m, b)))
        second_ch.basic_consume(queue, lambda c, m, p, b: second.append((m.redelivered, b)), auto_ack=True)
        for i in range(4):
            ch.basic_publish("", queue, f"m{i}".encode())
        deadline = time.monotonic() + 10
        while len(first) < 4 and time.monotonic() < deadline:
            other.process_data_events(time_limit=0.05)
        assert [b for _, b in first] == [b"m0", b"m1", b"m2", b"m3"] and second == []
        first_ch.basic_ack(first[0][0].delivery_tag)
        first_ch.basic_cancel(first_tag)
        ch.basic_publish("", queue, b"m4")  # to the consumer that is active now
        first_ch.close()  # its unacknowledged deliveries go back, and to the active consumer
        deadline = time.monotonic() + 10
        while len(second) < 4 and time.monotonic() < deadline:
            other.process_data_events(time_limit=0.05)
        assert sorted(second) == [(False, b"m4"), (True, b"m1"), (True, b"m2"), (True, b"m3")]
        code, text = closed_with(conn, lambda c: c.basic_consume(queue, lambda *_: None, exclusive=True))
        assert (code, text) == (403, f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use")
    finally:
        other.close()
        conn.channel().queue_delete(queue)


def test_direct_reply_to_round_trip(conn, target_port):
    client = conn.channel()
    replies = []
    tag = client.basic_consume(
        "amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((m, p, b)), auto_ack=True
    )
    server_conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", target_port, heartbeat=0))
    try:
        server = server_conn.channel()
        queue = unique("rpc")
        server.queue_declare(queue, exclusive=True)
        for i in range(3):
            client.basic_publish(
                "", queue, f"req{i}".encode(), pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=str(i))
            )
            method = None
            while method is None:
                method, properties, body = server.basic_get(queue, auto_ack=True)
            assert properties.reply_to.startswith("amq.rabbitmq.reply-to.")
            server.basic_publish("", properties.reply_to, body.upper(), pika.BasicProperties(correlation_id=str(i)))
        deadline = time.monotonic() + 10
        while len(replies) < 3 and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
        assert [(p.correlation_id, b) for _, p, b in replies] == [("0", b"REQ0"), ("1", b"REQ1"), ("2", b"REQ2")]
        method = replies[0][0]
        assert method.consumer_tag == tag and method.exchange == "" and not method.redelivered
        assert method.routing_key == properties.reply_to
        # A reply to a name nobody consumes is unroutable: a mandatory one comes back.
        server.confirm_delivery()
        with pytest.raises(pika.exceptions.UnroutableError):
            server.basic_publish("", "amq.rabbitmq.reply-to.nobody", b"x", mandatory=True)
    finally:
        server_conn.close()
    declared = conn.channel().queue_declare("amq.rabbitmq.reply-to", passive=True).method
    assert (declared.queue, declared.message_count, declared.consumer_count) == ("amq.rabbitmq.reply-to", 0, 1)


def test_direct_reply_to_misuse_is_refused_as_rabbitmq_does(conn):
    code, text = closed_with(conn, lambda ch: ch.basic_consume("amq.rabbitmq.reply-to", lambda *_: None))
    assert (code, text) == (406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")

    def twice(ch):
        ch.basic_consume("amq.rabbitmq.reply-to", lambda *_: None, auto_ack=True)
        ch.basic_consume("amq.rabbitmq.reply-to", lambda *_: None, auto_ack=True)

    assert closed_with(conn, twice) == (406, "PRECONDITION_FAILED - reply consumer already set")

    def without_consumer(ch):
        ch.basic_publish("", "anything", b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
        ch.queue_declare("amq.rabbitmq.reply-to", passive=True)  # the close comes first

    assert closed_with(conn, without_consumer) == (406, "PRECONDITION_FAILED - fast reply consumer does not exist")


@pytest.mark.warren_only
def test_a_per_consumer_qos_change_applies_to_existing_consumers(conn):
    """Unlike RabbitMQ (whose per-consumer basic.qos applies to consumers created after it), and as LavinMQ:
    Celery raises a live consumer's prefetch this way, and its countdown tasks would block the worker otherwise."""
    ch = conn.channel()
    queue = unique("qos")
    ch.queue_declare(queue, exclusive=True)
    for i in range(10):
        ch.basic_publish("", queue, f"m{i}".encode())
    got = []
    ch.basic_qos(prefetch_count=2)
    ch.basic_consume(queue, lambda c, m, p, b: got.append(m))
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    conn.process_data_events(time_limit=0.1)
    assert len(got) == 2  # held at the prefetch
    ch.basic_qos(prefetch_count=5)  # raised for the live consumer
    deadline = time.monotonic() + 10
    while len(got) < 5 and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    conn.process_data_events(time_limit=0.1)
    assert len(got) == 5


@pytest.mark.warren_only
def test_a_delivery_unacknowledged_past_x_consumer_timeout_closes_the_channel_and_comes_back(conn):
    ch = conn.channel()
    queue = unique("slow")
    ch.queue_declare(queue, exclusive=True, arguments={"x-consumer-timeout": 200})
    ch.basic_publish("", queue, b"job")
    got = []
    ch.basic_consume(queue, lambda c, m, p, b: got.append(b))  # never acknowledged
    deadline = time.monotonic() + 10
    while ch.is_open and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert got == [b"job"] and ch.is_closed
    # The message went back to the queue, redelivered.
    method, _, body = conn.channel().basic_get(queue, auto_ack=True)
    assert body == b"job" and method.redelivered


@pytest.mark.warren_only
def test_consumer_timeout_setting_uses_rabbitmq_reply_text():
    from conftest import Broker

    broker = Broker(env={"WARREN_CONSUMER_TIMEOUT": "300"})
    try:
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
        ch = c.channel()
        queue = unique("slow")
        ch.queue_declare(queue, exclusive=True)
        ch.basic_publish("", queue, b"job")
        ch.basic_get(queue, auto_ack=False)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                ch.queue_declare(queue, passive=True)  # round trips until the close arrives during one
        assert error.value.reply_code == 406
        assert error.value.reply_text == (
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 300 ms. "
            "This timeout value can be configured, see consumers doc guide to learn more"
        )
        assert broker.wait_for_log(r"timed out", timeout=10)  # the log line may follow the close frame
        c.close()
    finally:
        broker.stop()
