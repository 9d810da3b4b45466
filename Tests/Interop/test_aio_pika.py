"""Interop tests: aio-pika (from PyPI) against a warren process."""

import aio_pika
import aiormq
import pytest


async def test_seed_scenario_with_aio_pika(target_port):
    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{target_port}/")
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange("aio-topic", aio_pika.ExchangeType.DIRECT)
        queue = await channel.declare_queue("aio-topic1", auto_delete=True)
        await queue.bind(exchange, routing_key="aio-topic1")
        for i in range(20):
            await exchange.publish(aio_pika.Message(body=f"m{i}".encode()), routing_key="aio-topic1")
        received = []
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    received.append(message.body.decode())
                if len(received) == 20:
                    break
        assert received == [f"m{i}" for i in range(20)]


async def test_rpc_reply_to_and_correlation_id(target_port):
    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{target_port}/")
    async with connection:
        channel = await connection.channel()
        requests = await channel.declare_queue("", exclusive=True)
        replies = await channel.declare_queue("", exclusive=True)

        async def serve(message: aio_pika.abc.AbstractIncomingMessage):
            async with message.process():
                await channel.default_exchange.publish(
                    aio_pika.Message(body=message.body.upper(), correlation_id=message.correlation_id),
                    routing_key=message.reply_to,
                )

        await requests.consume(serve)
        await channel.default_exchange.publish(
            aio_pika.Message(body=b"ping", reply_to=replies.name, correlation_id="42"), routing_key=requests.name
        )
        async with replies.iterator(timeout=10) as messages:
            async for reply in messages:
                await reply.ack()
                break
        assert reply.body == b"PING" and reply.correlation_id == "42"


async def test_retry_through_ttl_and_dead_lettering_with_aio_pika(target_port):
    """The retry pattern of Celery and Spring, with aio-pika: a rejected message waits in a TTL queue and is
    dead-lettered back to its work queue, with x-death counting the rounds; a full queue with reject-publish nacks."""
    import uuid

    suffix = uuid.uuid4().hex[:8]
    connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{target_port}/")
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        work = await channel.declare_queue(
            f"aio-work-{suffix}",
            exclusive=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"aio-retry-{suffix}"},
        )
        await channel.declare_queue(
            f"aio-retry-{suffix}",
            exclusive=True,
            arguments={
                "x-message-ttl": 30,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"aio-work-{suffix}",
            },
        )
        await channel.default_exchange.publish(aio_pika.Message(body=b"job"), routing_key=work.name)
        rounds = []
        async with work.iterator() as messages:
            async for message in messages:
                deaths = (message.headers or {}).get("x-death") or []
                rounds.append(sum(d["count"] for d in deaths if d["queue"] == f"aio-work-{suffix}"))
                if len(rounds) == 3:
                    await message.ack()
                    break
                await message.reject(requeue=False)
        assert rounds == [0, 1, 2]

        bounded = await channel.declare_queue(
            f"aio-bounded-{suffix}", exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        await channel.default_exchange.publish(aio_pika.Message(body=b"1"), routing_key=bounded.name)
        with pytest.raises(aiormq.exceptions.DeliveryError, match="Basic.Nack"):
            await channel.default_exchange.publish(aio_pika.Message(body=b"2"), routing_key=bounded.name)
