"""The delayed-message exchange (`x-delayed-message`, RabbitMQ's community plugin) through pika and aio-pika: a
message with an `x-delay` header is held and routed when it is due, like the `x-delayed-type` routes; persistent
delayed messages of a durable exchange survive a kill -9. Warren only: Debian's RabbitMQ has no such plugin."""

import time

import aio_pika
import pika
import pytest
from conftest import Broker
from test_behaviour import closed_with, conn, unique  # noqa: F401 (conn is a fixture)
from test_queue_semantics import wait_get

pytestmark = pytest.mark.warren_only


def delayed_setup(ch, delayed_type="direct", durable=False, key="k"):
    exchange, queue = unique("delayed"), unique("delayed-q")
    ch.exchange_declare(
        exchange, "x-delayed-message", durable=durable, arguments={"x-delayed-type": delayed_type}
    )
    ch.queue_declare(queue, durable=durable, exclusive=not durable)
    ch.queue_bind(queue, exchange, routing_key=key)
    return exchange, queue


def test_delayed_messages_arrive_when_due_in_due_order_with_x_delay_negated(conn):
    ch = conn.channel()
    exchange, queue = delayed_setup(ch)
    start = time.monotonic()
    ch.basic_publish(exchange, "k", b"late", pika.BasicProperties(headers={"x-delay": 600}))
    ch.basic_publish(exchange, "k", b"soon", pika.BasicProperties(headers={"x-delay": 200, "app": "kept"}))
    ch.basic_publish(exchange, "k", b"now", pika.BasicProperties(headers={"x-delay": 0}))
    ch.basic_publish(exchange, "k", b"undelayed")
    assert [wait_get(conn, ch, queue)[2] for _ in range(2)] == [b"now", b"undelayed"]
    _, properties, body = wait_get(conn, ch, queue)
    assert body == b"soon" and time.monotonic() - start >= 0.2
    assert properties.headers == {"x-delay": -200, "app": "kept"}
    _, properties, body = wait_get(conn, ch, queue)
    assert body == b"late" and time.monotonic() - start >= 0.6
    assert properties.headers["x-delay"] == -600


def test_a_delayed_message_is_routed_like_the_delayed_type_with_the_bindings_it_has_when_due(conn):
    ch = conn.channel()
    exchange, queue = delayed_setup(ch, delayed_type="topic", key="orders.*")
    ch.basic_publish(exchange, "orders.new", b"held", pika.BasicProperties(headers={"x-delay": 300}))
    later = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(later, exchange, routing_key="#.new")  # bound after the publish, before it is due
    assert wait_get(conn, ch, queue)[2] == b"held"
    assert wait_get(conn, ch, later)[2] == b"held"


def test_declaring_needs_an_existing_x_delayed_type(conn):
    code, text = closed_with(conn, lambda ch: ch.exchange_declare(unique("d"), "x-delayed-message"))
    assert code == 406 and "x-delayed-type" in text
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as error:
        conn.channel().exchange_declare(unique("d"), "x-delayed-message", arguments={"x-delayed-type": "nonesuch"})
    assert error.value.reply_code == 503


def test_the_holding_queue_is_not_for_clients_and_mandatory_delayed_publishes_are_not_returned(conn):
    ch = conn.channel()
    exchange, queue = delayed_setup(ch)
    ch.confirm_delivery()
    returned = []
    ch.add_on_return_callback(lambda *args: returned.append(args))
    ch.basic_publish(exchange, "nowhere", b"held", pika.BasicProperties(headers={"x-delay": 60_000}), mandatory=True)
    conn.process_data_events(time_limit=0.05)
    assert returned == []
    code, _ = closed_with(conn, lambda c: c.basic_consume(f"amq.delayed.{exchange}", lambda *a: None))
    assert code == 403
    code, _ = closed_with(conn, lambda c: c.queue_declare(f"amq.delayed.{exchange}"))
    assert code == 403
    ch.exchange_delete(exchange)  # its held messages go with it


def test_persistent_delayed_messages_of_a_durable_exchange_survive_kill9(tmp_path):
    data = str(tmp_path / "data")
    broker = Broker(data_dir=data)
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    channel = connection.channel()
    exchange, queue = delayed_setup(channel, durable=True)
    channel.confirm_delivery()
    published = time.monotonic()
    for body, delay in [(b"second", 1500), (b"first", 1000)]:
        channel.basic_publish(
            exchange, "k", body, pika.BasicProperties(delivery_mode=2, headers={"x-delay": delay})
        )  # returns once confirmed: the held message is on disk
    channel.basic_publish(exchange, "k", b"transient", pika.BasicProperties(headers={"x-delay": 1000}))
    broker.kill()

    broker = Broker(data_dir=data)
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        channel = connection.channel()
        _, properties, body = wait_get(connection, channel, queue)
        assert body == b"first" and time.monotonic() - published >= 1.0
        assert properties.headers["x-delay"] == -1000
        assert wait_get(connection, channel, queue)[2] == b"second"
        assert wait_get(connection, channel, queue, timeout=0.5) is None  # transient ones do not survive
        connection.close()
    finally:
        broker.stop()


async def test_aio_pika_publishes_through_a_delayed_exchange(target_port):
    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{target_port}/")
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            unique("aio-delayed"), "x-delayed-message", arguments={"x-delayed-type": "fanout"}, auto_delete=True
        )
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(exchange)
        start = time.monotonic()
        await exchange.publish(aio_pika.Message(b"later", headers={"x-delay": 250}), routing_key="")
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    assert message.body == b"later" and message.headers["x-delay"] == -250
                    assert time.monotonic() - start >= 0.25
                    break
