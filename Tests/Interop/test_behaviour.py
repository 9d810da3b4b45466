"""Behaviour that must be the same on Warren and RabbitMQ: run against Warren by default, against any broker with
AMQP_TARGET_PORT=N (`make test-rabbitmq` starts Debian's RabbitMQ and does that), so a divergence fails a test."""

import uuid

import pika
import pytest
from test_pika import raw_handshake


@pytest.fixture
def conn(target_port):
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", target_port, heartbeat=0))
    yield c
    if c.is_open:
        c.close()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def closed_with(conn, action):
    """Runs `action` on a fresh channel; returns the channel.close code and text it caused."""
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
        action(ch)
    return error.value.reply_code, error.value.reply_text


def test_acks_inside_a_transaction_apply_at_commit(conn):
    ch = conn.channel()
    queue = ch.queue_declare(unique("tx-ack"), exclusive=True).method.queue
    ch.basic_publish("", queue, b"one")
    ch.tx_select()
    method, _, body = ch.basic_get(queue)
    assert body == b"one"
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()  # was 406 "unknown delivery tag" in Warren
    assert ch.queue_declare(queue, passive=True).method.message_count == 0
    ch.close()
    assert conn.channel().queue_declare(queue, passive=True).method.message_count == 0  # acked: not requeued


def test_rolled_back_ack_leaves_the_message_unacked(conn):
    ch = conn.channel()
    queue = ch.queue_declare(unique("tx-rollback"), exclusive=True).method.queue
    ch.basic_publish("", queue, b"kept")
    ch.tx_select()
    method, _, _ = ch.basic_get(queue)
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()
    # Still unacked on this channel: it can be acked again, and closing the channel would requeue it.
    ch.close()
    other = conn.channel()
    assert other.queue_declare(queue, passive=True).method.message_count == 1
    assert other.basic_get(queue, auto_ack=True)[2] == b"kept"


def test_user_id_must_be_the_authenticated_user(conn):
    queue = unique("user-id")
    conn.channel().queue_declare(queue, auto_delete=False)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", queue, b"ok", pika.BasicProperties(user_id="guest"))
    code, text = closed_with(
        conn, lambda c: c.basic_publish("", queue, b"forged", pika.BasicProperties(user_id="mallory")) or
        c.queue_declare(queue, passive=True))
    assert code == 406
    assert text == "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"
    assert conn.channel().queue_delete(queue).method.message_count == 1


def test_passive_declare_of_the_default_exchange_is_refused(conn):
    code, text = closed_with(conn, lambda c: c.exchange_declare("", passive=True))
    assert code == 403
    assert text == "ACCESS_REFUSED - operation not permitted on the default exchange"


def test_non_exclusive_redeclare_of_an_exclusive_queue_is_resource_locked(conn):
    queue = unique("exclusive")
    conn.channel().queue_declare(queue, exclusive=True)
    code, text = closed_with(conn, lambda c: c.queue_declare(queue, exclusive=False))
    assert code == 405
    assert text.startswith(f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue}' in vhost '/'")


def test_a_high_channel_number_may_be_opened_alone(conn):
    ch = conn.channel(channel_number=2000)
    ch.queue_declare("", exclusive=True)
    assert ch.is_open


def test_channel_max_exceeded_is_530(target_port):
    """As RabbitMQ: channel_max counts open channels; any number may be used (runs against RabbitMQ too)."""
    from pika import spec

    sock, read_frame, send = raw_handshake(target_port, channel_max=2)
    for number in (5000, 6000):
        send(number, spec.Channel.Open())
        assert isinstance(read_frame().method, spec.Channel.OpenOk)
    send(7000, spec.Channel.Open())
    reply = read_frame()
    assert isinstance(reply.method, spec.Connection.Close)
    assert reply.method.reply_code == 530
    assert reply.method.reply_text == "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
