"""Interop tests: aio-pika (from PyPI) against a warren process."""

import aio_pika


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
