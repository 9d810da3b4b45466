"""The Swift client's examples, run end to end against a warren process."""

import os
import subprocess
import threading
import pytest

from conftest import ROOT


def binary(name):
    warren = os.environ.get("WARREN_BIN", os.path.join(ROOT, ".build", "debug", "warren"))
    return os.path.join(os.path.dirname(warren), name)


def test_publisher_lines_appear_at_the_subscriber(broker):
    url = f"amqp://guest:guest@127.0.0.1:{broker.port}/"
    subscriber = subprocess.Popen([binary("subscriber"), url], stdout=subprocess.PIPE, text=True)
    try:
        assert subscriber.stdout.readline().strip() == "waiting for messages on topic1"
        lines = [f"line {i} from the publisher" for i in range(20)]
        subprocess.run([binary("publisher"), url], input="\n".join(lines) + "\n", text=True, check=True, timeout=60)
        received = []
        timer = threading.Timer(30, subscriber.kill)  # a bound on the wait, not a synchronisation
        timer.start()
        while len(received) < len(lines):
            line = subscriber.stdout.readline()
            if not line:
                break
            received.append(line.rstrip("\n"))
        timer.cancel()
        assert received == lines
    finally:
        subscriber.terminate()
        subscriber.wait(timeout=10)


def test_fanout_example(broker):
    out = subprocess.run([binary("fanout-example"), f"amqp://guest:guest@127.0.0.1:{broker.port}/"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    assert len(out) == 3
    assert all(line.endswith(": info: started | warning: disk at 80% | info: stopped") for line in out)


def test_rpc_example(broker):
    out = subprocess.run([binary("rpc-example"), f"amqp://guest:guest@127.0.0.1:{broker.port}/"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    assert out == ["hello -> HELLO", "warren -> WARREN", "rpc -> RPC"]


def test_the_retry_example_topology_boots_and_behaves(tmp_path):
    """config/examples/retry.yaml, as the README shows it: a rejected job comes back from the retry queue with its
    x-death count, a full bounded queue nacks, a priority queue orders."""
    import time

    import pika

    from conftest import ROOT, Broker

    broker = Broker("--config", os.path.join(ROOT, "config", "examples", "retry.yaml"), data_dir=str(tmp_path / "d"))
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
        ch = conn.channel()
        ch.basic_publish("jobs", "jobs", b"job-1")
        method = None
        while method is None:
            method, _, _ = ch.basic_get("jobs")
        ch.basic_reject(method.delivery_tag, requeue=False)  # fails: off to jobs.retry for 5 s
        deadline = time.monotonic() + 20
        again = None
        while again is None and time.monotonic() < deadline:
            again, properties, body = ch.basic_get("jobs", auto_ack=True)
            if again is None:
                conn.process_data_events(time_limit=0.1)
        assert body == b"job-1"
        assert properties.headers["x-death"][0]["queue"] == "jobs.retry"
        assert [d["count"] for d in properties.headers["x-death"]] == [1, 1]

        ch.confirm_delivery()
        for i in range(1000):
            ch.basic_publish("", "uploads", b"u")
        with pytest.raises(pika.exceptions.NackError):
            ch.basic_publish("", "uploads", b"one too many")
        ch.queue_purge("uploads")

        for body, priority in [(b"low", 1), (b"high", 9), (b"mid", 5)]:
            ch.basic_publish("", "alerts", body, pika.BasicProperties(priority=priority))
        assert [ch.basic_get("alerts", auto_ack=True)[2] for _ in range(3)] == [b"high", b"mid", b"low"]
        conn.close()
    finally:
        broker.stop()
