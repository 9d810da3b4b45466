"""The YAML configuration: topology and users applied at boot, bad files refused."""

import os
import re
import subprocess
import signal

import pika

from conftest import ROOT, Broker


def warren():
    return os.environ.get("WARREN_BIN", os.path.join(ROOT, ".build", "debug", "warren"))


GOOD = """
users:
  - name: app
    password: ${WARREN_TEST_APP_PASSWORD}
permissions:
  - {user: app, vhost: /}
exchanges:
  - name: events
    type: topic
queues:
  - name: orders
    arguments: {x-max-length: 10}
bindings:
  - source: events
    destination: orders
    routing_key: "order.#"
"""


def test_topology_and_users_from_yaml(tmp_path):
    path = tmp_path / "warren.yaml"
    path.write_text(GOOD)
    os.environ["WARREN_TEST_APP_PASSWORD"] = "from-the-environment"
    broker = Broker("--config", str(path))
    try:
        credentials = pika.PlainCredentials("app", "from-the-environment")
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, credentials=credentials))
        ch = conn.channel()
        ch.basic_publish("events", "order.created.eu", b"declared by the file")
        assert ch.basic_get("orders", auto_ack=True)[2] == b"declared by the file"
        ch.queue_declare("orders", passive=True, arguments={"x-max-length": 10})
        conn.close()
        # Round trip: YAML -> broker -> export -> import.
        exported = tmp_path / "exported.json"
        exported.write_text(subprocess.run(
            [warren(), "export-definitions", "--from", f"127.0.0.1:{broker.http_port}"],
            capture_output=True, text=True, check=True, timeout=60).stdout)
    finally:
        broker.stop()
    assert broker.process.returncode == 0
    assert broker.logged("configuration .* applied")
    assert broker.logged("user 'app' has a plaintext password")
    again = Broker("--config", str(exported))
    try:
        credentials = pika.PlainCredentials("app", "from-the-environment")  # the exported hash still verifies
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", again.port, credentials=credentials))
        ch = conn.channel()
        ch.basic_publish("events", "order.created.eu", b"after the round trip")
        assert ch.basic_get("orders", auto_ack=True)[2] == b"after the round trip"
        conn.close()
    finally:
        again.stop()
    assert again.process.returncode == 0


def test_bad_file_stops_the_start_with_every_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  amqp_port: nope\nqueues:\n  - name: q\n    colour: blue\n")
    result = subprocess.run([warren(), "--config", str(path), "--port", "0"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert f"{path}:2:14: amqp_port must be an integer" in result.stderr
    assert f"{path}:5:5: unknown key 'colour' in a queue" in result.stderr
    assert "AMQP listener" not in result.stdout
    check = subprocess.run([warren(), "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "2 problem(s)" in check.stderr
    good = subprocess.run([warren(), "check-config", os.path.join(ROOT, "config", "warren.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0


PERMISSIONS = """
users:
  - {name: limited, password: pw}
  - {name: nobody, password: pw}
permissions:
  - {user: guest, vhost: /}
  - {user: limited, vhost: /, configure: "^lim-", write: "^lim-", read: "^lim-"}
queues:
  - name: other
"""


def test_permissions_for_each_operation(tmp_path):
    import pytest

    path = tmp_path / "perm.yaml"
    path.write_text(PERMISSIONS)
    broker = Broker("--config", str(path))
    try:
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as denied:
            pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", broker.port, credentials=pika.PlainCredentials("nobody", "pw")))
        assert "access to vhost '/' refused for user 'nobody'" in str(denied.value)

        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", broker.port, credentials=pika.PlainCredentials("limited", "pw")))

        def refused(operation):
            ch = conn.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
                operation(ch)
                ch.queue_declare("lim-q", passive=True)  # a round trip, for operations without a reply
            assert error.value.reply_code == 403, error.value
            assert "refused for user 'limited'" in error.value.reply_text

        ch = conn.channel()
        ch.queue_declare("lim-q")                                   # configure ^lim-
        ch.exchange_declare("lim-x", "direct")
        ch.queue_bind("lim-q", "lim-x", "k")                        # write queue, read exchange
        ch.basic_publish("lim-x", "k", b"allowed")                  # write exchange
        assert ch.basic_get("lim-q", auto_ack=True)[2] == b"allowed"  # read queue
        refused(lambda c: c.queue_declare("other-q"))               # configure
        refused(lambda c: c.exchange_declare("x", "direct"))        # configure
        refused(lambda c: c.queue_delete("other"))                  # configure
        refused(lambda c: c.basic_publish("amq.direct", "k", b"x"))  # write
        refused(lambda c: c.queue_bind("lim-q", "amq.direct", "k"))  # read on the exchange
        refused(lambda c: c.basic_get("other"))                     # read
        refused(lambda c: c.basic_consume("other", lambda *a: None))  # read
        refused(lambda c: c.queue_purge("other"))                   # read
        ch.queue_delete("lim-q")
        ch.exchange_delete("lim-x")
        conn.close()
    finally:
        broker.stop()
    assert broker.process.returncode == 0


def test_rabbitmq_definitions_imported(tmp_path):
    import pytest

    fixture = os.path.join(ROOT, "Tests", "Interop", "fixtures", "rabbitmq-3.10-definitions.json")
    broker = Broker("--config", fixture)
    try:
        params = pika.ConnectionParameters("127.0.0.1", broker.port, virtual_host="fixture-vhost",
                                           credentials=pika.PlainCredentials("fixture", "fixture-password"))
        conn = pika.BlockingConnection(params)  # RabbitMQ's own password hash
        ch = conn.channel()
        ch.basic_publish("fx-events", "order.created", b"routed by imported bindings")
        assert ch.basic_get("fx-orders", auto_ack=True)[2] == b"routed by imported bindings"
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as error:
            ch.queue_declare("not-fx")  # configure is ^fx- for this user
        assert error.value.reply_code == 403
        conn.close()
    finally:
        broker.stop()
    exported = subprocess.run([warren(), "export-definitions", "--config", fixture], capture_output=True, text=True,
                              check=True, timeout=60).stdout
    assert '"password_hash" : "HHD3EFUfQPyr4vwLNU0MlXbFX+EJ6yJXKPlrxr2RJnA7\\/Fss"' in exported or \
        '"password_hash": "HHD3EFUfQPyr4vwLNU0MlXbFX+EJ6yJXKPlrxr2RJnA7/Fss"' in exported or \
        "HHD3EFUfQPyr4vwLNU0MlXbFX+EJ6yJXKPlrxr2RJnA7" in exported


def test_sighup_applies_additions_and_reports_the_rest(tmp_path):
    import signal

    path = tmp_path / "live.yaml"
    path.write_text("exchanges:\n  - {name: live-x, type: direct}\nqueues:\n  - {name: live-q}\n")
    broker = Broker("--config", str(path))
    try:
        path.write_text(
            "exchanges:\n  - {name: live-x, type: fanout}\n  - {name: live-y, type: direct}\n"
            "queues:\n  - {name: live-q}\n  - {name: live-new}\n"
            "bindings:\n  - {source: live-y, destination: live-new, routing_key: k}\n")
        broker.process.send_signal(signal.SIGHUP)
        assert broker.wait_for_log(r"SIGHUP: added binding")
        assert broker.logged(r"SIGHUP: added exchange 'live-y'")
        assert broker.logged(r"SIGHUP: added queue 'live-new'")
        assert broker.logged(r"SIGHUP: not changed: PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'live-x'")
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        ch = conn.channel()
        ch.basic_publish("live-y", "k", b"after reload")
        assert ch.basic_get("live-new", auto_ack=True)[2] == b"after reload"
        conn.close()
    finally:
        broker.stop()
    assert broker.process.returncode == 0


def test_policies_apply_to_live_queues_and_reapply_on_sighup(tmp_path):
    """A file's policy limits a queue declared over AMQP; SIGHUP with the policy changed applies the change to that
    live queue, and with the policy gone the queue is unbounded again."""
    path = tmp_path / "policies.yaml"
    path.write_text('policies:\n  - {name: bounded, pattern: "^jobs", apply_to: queues, definition: {max-length: 1}}\n')
    broker = Broker("--config", str(path))
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        ch = conn.channel()
        ch.queue_declare("jobs-a")
        for body in [b"1", b"2", b"3"]:
            ch.basic_publish("", "jobs-a", body)
        assert ch.queue_declare("jobs-a", passive=True).method.message_count == 1
        path.write_text('policies:\n  - {name: bounded, pattern: "^jobs", definition: {max-length: 3}}\n')
        broker.process.send_signal(signal.SIGHUP)
        assert broker.wait_for_log(r"SIGHUP: policies of vhost '/': bounded")
        for body in [b"4", b"5", b"6"]:
            ch.basic_publish("", "jobs-a", body)
        assert ch.queue_declare("jobs-a", passive=True).method.message_count == 3
        path.write_text("policies: []\n")
        broker.process.send_signal(signal.SIGHUP)
        assert broker.wait_for_log(r"SIGHUP: queue 'jobs-a' in vhost '/': policy none")
        assert broker.logged(r"SIGHUP: policies of vhost '/': none")
        for i in range(5):
            ch.basic_publish("", "jobs-a", b"more")
        assert ch.queue_declare("jobs-a", passive=True).method.message_count == 8
        ch.queue_delete("jobs-a")
        conn.close()
    finally:
        broker.stop()
    assert broker.process.returncode == 0


def test_default_vhost_setting(tmp_path):
    import pytest

    path = tmp_path / "vhost.yaml"
    path.write_text("server:\n  default_vhost: main\n")
    broker = Broker("--config", str(path))
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, virtual_host="main"))
        assert conn.is_open
        conn.close()
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
            pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, virtual_host="/"))
    finally:
        broker.stop()


def test_health_and_running_topology_over_http(broker):
    import json
    import urllib.request

    base = f"http://127.0.0.1:{broker.http_port}"
    assert urllib.request.urlopen(base + "/healthz", timeout=10).read() == b"ok\n"
    assert urllib.request.urlopen(base + "/readyz", timeout=10).read() == b"ready\n"
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    ch = conn.channel()
    ch.exchange_declare("running-x", "fanout", durable=True)
    ch.queue_declare("running-q", durable=True, arguments={"x-max-length": 7})
    ch.queue_bind("running-q", "running-x", "")
    ch.queue_declare("", exclusive=True)  # a connection's own queue is not exported
    status, body = broker.http_get("/api/definitions")
    assert status == 200
    definitions = json.loads(body)
    assert {"name": "running-x", "vhost": "/", "type": "fanout", "durable": True, "auto_delete": False,
            "internal": False, "arguments": {}} in definitions["exchanges"]
    assert any(q["name"] == "running-q" and q["arguments"] == {"x-max-length": 7} for q in definitions["queues"])
    assert not any(q["name"].startswith("amq.gen-") for q in definitions["queues"])
    assert any(b["source"] == "running-x" and b["destination"] == "running-q" for b in definitions["bindings"])
    exported = subprocess.run([warren(), "export-definitions", "--from", f"127.0.0.1:{broker.http_port}",
                               "--format", "yaml"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "name: running-q" in exported
    # The export is a configuration Warren (and RabbitMQ) can load.
    check = subprocess.run([warren(), "export-definitions", "--from", f"127.0.0.1:{broker.http_port}"],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(check)["product_name"] == "Warren"
    ch.queue_delete("running-q")
    ch.exchange_delete("running-x")
    conn.close()


def test_every_flag_of_the_settings_table_is_a_flag_of_warren_serve():
    table = subprocess.run([warren(), "settings"], capture_output=True, text=True, check=True, timeout=60).stdout
    flags = re.findall(r"`(--[a-z-]+)`", table)
    assert len(flags) >= 8
    help_text = subprocess.run([warren(), "serve", "--help"], capture_output=True, text=True, check=True,
                               timeout=60).stdout
    for flag in flags:
        assert flag in help_text, f"{flag} is in the settings table but not a flag of warren serve"
    # And each flag's help is the table's.
    assert "The AMQP port; 0 picks a free one (logged) (default 5672)." in " ".join(help_text.split())
