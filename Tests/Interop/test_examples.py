"""The Swift client's examples, run end to end against a warren process."""

import os
import subprocess
import threading

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
