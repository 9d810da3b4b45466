#!/usr/bin/env python3
"""Records real clients' conversations with Warren as the fuzzers' seed corpus (Fuzz/corpus/...).

A TCP proxy on 127.0.0.1 sits between each client and a broker this script starts; the bytes each client sends are
saved, one file per connection: pika (declare, confirms, publish, consume, ack, reject, tx, close), py-amqp, and
the Swift client's publisher example. Run it again after protocol changes: `python3 Scripts/capture-corpus.py`.
"""

import os
import socket
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "Tests", "Interop"))
from conftest import Broker  # noqa: E402

CORPUS = os.path.join(ROOT, "Fuzz", "corpus")


class RecordingProxy:
    """Accepts connections, forwards them to the broker, records what each client sent."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conversations = []
        self.threads = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            recorded = bytearray()
            self.conversations.append(recorded)
            for source, sink, record in ((client, upstream, recorded), (upstream, client, None)):
                thread = threading.Thread(target=self.pump, args=(source, sink, record), daemon=True)
                thread.start()
                self.threads.append(thread)

    @staticmethod
    def pump(source, sink, record):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (source, sink):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            if record is not None:
                record.extend(data)
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self):
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=10)


def pika_session(port):
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    ch = conn.channel()
    ch.exchange_declare("corpus-x", "topic")
    queue = ch.queue_declare("", exclusive=True, arguments={"x-max-length": 10, "x-note": {"nested": [1, "a"]}})
    ch.queue_bind(queue.method.queue, "corpus-x", "a.*")
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("corpus-x", "a.b", f"message {i}".encode(),
                         pika.BasicProperties(content_type="text/plain", headers={"i": i}, delivery_mode=2))
    ch.basic_qos(prefetch_count=2)
    for method, _, _ in ch.consume(queue.method.queue, inactivity_timeout=1):
        if method is None:
            break
        if method.delivery_tag == 2:
            ch.basic_reject(method.delivery_tag, requeue=False)
        else:
            ch.basic_ack(method.delivery_tag)
    ch.cancel()
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", queue.method.queue, b"in a transaction")
    tx.tx_rollback()
    conn.close()


def py_amqp_session(port):
    import amqp

    with amqp.Connection(f"127.0.0.1:{port}") as conn:
        ch = conn.channel()
        ch.queue_declare("corpus-amqp", auto_delete=True)
        ch.basic_publish(amqp.Message("from py-amqp", application_headers={"k": "v"}), routing_key="corpus-amqp")
        message = ch.basic_get("corpus-amqp")
        if message is not None:
            ch.basic_ack(message.delivery_tag)
        ch.queue_delete("corpus-amqp")


def swift_publisher_session(port):
    binary = os.path.join(subprocess.run(["swift", "build", "--show-bin-path"], cwd=ROOT, capture_output=True,
                                         text=True, check=True).stdout.strip(), "publisher")
    subprocess.run([binary, f"amqp://guest:guest@127.0.0.1:{port}/"], input="one\ntwo\n", text=True, check=True,
                   timeout=60)


def main():
    broker = Broker()
    proxy = RecordingProxy(broker.port)
    try:
        for session in (pika_session, py_amqp_session, swift_publisher_session):
            session(proxy.port)
    finally:
        proxy.close()
        broker.stop()
    names = ["pika", "py-amqp", "swift-client"]
    for directory in ("connection", "frames"):
        os.makedirs(os.path.join(CORPUS, directory), exist_ok=True)
    for index, conversation in enumerate(proxy.conversations):
        label = names[index] if index < len(names) else f"client-{index}"
        # The connection and frame fuzzers read their first byte as where to cut the reads.
        for directory, cut in (("connection", b"\x00"), ("frames", b"\x07")):
            with open(os.path.join(CORPUS, directory, f"{label}.bin"), "wb") as out:
                out.write(cut + bytes(conversation))
        print(f"{label}: {len(conversation)} bytes")


if __name__ == "__main__":
    main()
