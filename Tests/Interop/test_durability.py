"""Durability: a confirm means the message is on disk. Publishers (pika, and aio-pika with a window of confirms)
run while the broker is killed with SIGKILL at a random moment; after each restart every confirmed message is still
there. Durable topology declared at runtime comes back; transient messages and non-durable topology do not."""

import asyncio
import os
import random
import threading
import time

import aio_pika
import pika
import pytest

from conftest import Broker

pytestmark = pytest.mark.warren_only

EXCHANGE = "durability-x"
QUEUE = "durability-q"


class Confirmed:
    """The bodies whose publish was confirmed, and a way to wait until there are enough."""

    def __init__(self):
        self.bodies = set()
        self.changed = threading.Condition()

    def add(self, body):
        with self.changed:
            self.bodies.add(body)
            self.changed.notify_all()

    def wait_for(self, count, timeout=60):
        with self.changed:
            return self.changed.wait_for(lambda: len(self.bodies) >= count, timeout=timeout)


def pika_publisher(port, tag, confirmed):
    """One publish at a time, each confirmed before the next (pika's BlockingConnection)."""
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        channel.confirm_delivery()
        i = 0
        while True:
            body = f"{tag}-{i}"
            i += 1
            channel.basic_publish(EXCHANGE, "k", body.encode(), pika.BasicProperties(delivery_mode=2))
            confirmed.add(body)  # basic_publish returns once the broker acked it
    except Exception:
        return  # the broker was killed


def aio_pika_publisher(port, tag, confirmed, window=256):
    """Windows of `window` publishes in flight, each body recorded when its own confirm arrives."""

    pending = []

    async def publish():
        connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/")
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        i = 0
        while True:
            pending.clear()
            for _ in range(window):
                body = f"{tag}-{i}"
                i += 1
                message = aio_pika.Message(body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                pending.append((body, asyncio.ensure_future(exchange.publish(message, routing_key="k"))))
            for body, future in pending:
                await future
                confirmed.add(body)

    async def run():
        try:
            await publish()
        finally:  # the broker was killed: collect what the publishes in flight raised
            await asyncio.gather(*(future for _, future in pending), return_exceptions=True)

    try:
        asyncio.run(run())
    except BaseException:
        return


def declare(port):
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, "direct", durable=True)
    channel.queue_declare(QUEUE, durable=True)
    channel.queue_bind(QUEUE, EXCHANGE, "k")
    channel.exchange_declare("transient-x", "fanout")
    channel.queue_declare("transient-q")
    channel.basic_publish("", QUEUE, b"transient message", pika.BasicProperties(delivery_mode=1))
    connection.close()


def take_all(channel, queue):
    """Every message of a queue, with basic.get and no-ack: (body, redelivered) each."""
    got = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append((body.decode(), method.redelivered))


def drain(port):
    """Every body in the durable queue (the queue is empty after)."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    bodies = [body for body, _ in take_all(connection.channel(), QUEUE)]
    connection.close()
    return bodies


def test_kill9_loses_no_confirmed_message(tmp_path):
    data = str(tmp_path / "data")
    seed = int(os.environ.get("DURABILITY_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    confirmed = Confirmed()
    rounds = 4
    for round_number in range(rounds):
        broker = Broker(data_dir=data)
        if round_number == 0:
            declare(broker.port)
        threads = [
            threading.Thread(target=pika_publisher, args=(broker.port, f"r{round_number}-pika", confirmed)),
            threading.Thread(target=aio_pika_publisher, args=(broker.port, f"r{round_number}-aio", confirmed)),
            threading.Thread(target=aio_pika_publisher, args=(broker.port, f"r{round_number}-aio2", confirmed, 64)),
        ]
        for thread in threads:
            thread.start()
        target = len(confirmed.bodies) + rng.randrange(300, 3000)
        assert confirmed.wait_for(target), f"publishers stalled (seed {seed})"
        broker.kill()  # SIGKILL, mid-stream
        for thread in threads:
            thread.join(timeout=30)

    broker = Broker(data_dir=data)
    try:
        assert broker.logged(r"recovered from .* 1 exchanges, 1 queues, 1 bindings")
        # Non-durable topology is gone; the durable topology routes again.
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare("transient-q", passive=True)
        assert refused.value.reply_code == 404
        connection.close()
        found = drain(broker.port)
        missing = confirmed.bodies - set(found)
        assert not missing, f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:5]} (seed {seed})"
        assert "transient message" not in found
        assert len(confirmed.bodies) > 1000
    finally:
        broker.stop()


def test_unacknowledged_messages_come_back_redelivered_after_kill9(tmp_path):
    data = str(tmp_path / "data")
    broker = Broker(data_dir=data)
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    channel = connection.channel()
    channel.queue_declare("redeliver-q", durable=True)
    channel.confirm_delivery()
    for i in range(10):
        channel.basic_publish("", "redeliver-q", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    # Take three without acknowledging them, and one acknowledged; the connection stays open.
    taken = [channel.basic_get("redeliver-q", auto_ack=False) for _ in range(4)]
    channel.basic_ack(taken[3][0].delivery_tag)
    channel.queue_declare("redeliver-q", durable=True)  # a round trip: the ack was handled
    broker.kill()

    broker = Broker(data_dir=data)
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        got = take_all(connection.channel(), "redeliver-q")
        assert got == [("m0", True), ("m1", True), ("m2", True)] + [(f"m{i}", False) for i in range(4, 10)]
        connection.close()
    finally:
        broker.stop()


def test_ttl_counts_from_the_first_enqueue_across_paging_and_restarts(tmp_path):
    """A durable queue with a TTL keeps each persistent message's enqueue time in its record: 6,000 messages (most
    of them on disk, beyond what a queue keeps in memory) neither expire early after a kill -9 and restart, nor
    outlive their TTL: those with a short expiration, published before the crash, are gone after it."""
    data = str(tmp_path / "data")
    broker = Broker(data_dir=data)
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    channel = connection.channel()
    channel.queue_declare("ttl-q", durable=True, arguments={"x-message-ttl": 600_000})
    channel.queue_declare("short-q", durable=True)
    channel.confirm_delivery()
    for i in range(6000):
        channel.basic_publish("", "ttl-q", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    channel.basic_publish("", "short-q", b"short", pika.BasicProperties(delivery_mode=2, expiration="200"))
    broker.kill()
    time.sleep(0.3)  # the short expiration passes while the broker is down (no event to wait for)

    broker = Broker(data_dir=data)
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        channel = connection.channel()
        assert channel.queue_declare("short-q", passive=True).method.message_count == 0
        got = take_all(channel, "ttl-q")
        assert [body for body, _ in got] == [f"m{i}" for i in range(6000)]
        connection.close()
    finally:
        broker.stop()


def test_a_durable_priority_queue_keeps_its_order_across_kill9(tmp_path):
    data = str(tmp_path / "data")
    broker = Broker(data_dir=data)
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    channel = connection.channel()
    channel.queue_declare("prio-q", durable=True, arguments={"x-max-priority": 5})
    channel.confirm_delivery()
    for body, priority in [("a", 1), ("b", 5), ("c", 0), ("d", 5), ("e", 3)]:
        channel.basic_publish("", "prio-q", body.encode(), pika.BasicProperties(delivery_mode=2, priority=priority))
    broker.kill()

    broker = Broker(data_dir=data)
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        channel = connection.channel()
        channel.basic_publish("", "prio-q", b"f", pika.BasicProperties(delivery_mode=2, priority=4))
        assert [body for body, _ in take_all(channel, "prio-q")] == ["b", "d", "f", "e", "a", "c"]
        connection.close()
    finally:
        broker.stop()


def test_sigterm_then_restart_loses_nothing(tmp_path):
    data = str(tmp_path / "data")
    broker = Broker(data_dir=data)
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    channel = connection.channel()
    channel.queue_declare("term-q", durable=True)
    channel.exchange_declare("term-x", "fanout", durable=True)
    channel.queue_bind("term-q", "term-x")
    for i in range(500):  # no confirms: a clean shutdown still writes and syncs what it took
        channel.basic_publish("term-x", "", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    channel.queue_declare("term-q", durable=True)  # a round trip: every publish was read
    broker.stop()

    broker = Broker(data_dir=data)
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        channel = connection.channel()
        channel.basic_publish("term-x", "", b"after", pika.BasicProperties(delivery_mode=2))
        bodies = [body for body, _ in take_all(channel, "term-q")]
        assert bodies == [f"m{i}" for i in range(500)] + ["after"]
        connection.close()
    finally:
        broker.stop()


def test_second_broker_on_the_same_data_directory_is_refused(tmp_path):
    data = str(tmp_path / "data")
    broker = Broker(data_dir=data)
    try:
        with pytest.raises(RuntimeError) as failed:
            Broker(data_dir=data)
        assert "in use by another Warren" in str(failed.value)
    finally:
        broker.stop()


def test_unusable_data_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RuntimeError) as failed:
        Broker(data_dir=str(blocker / "data"))
    assert "cannot be used" in str(failed.value)
