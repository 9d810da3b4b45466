"""Vhost limits (max-connections, max-queues), user limits (max-connections, max-channels) set over the management
API, as RabbitMQ has them: the N+1th is refused with RabbitMQ's code and text, and nothing else is affected. These
run against RabbitMQ too (MANAGEMENT_TARGET_PORT with AMQP_TARGET_PORT); the YAML, node-wide limit and metrics
tests are Warren's own."""

import os
import subprocess

import pika
import pytest

from conftest import ROOT, Broker
from test_management import API, api, mgmt_port, q, unique  # noqa: F401 (fixtures)


@pytest.fixture
def amqp_port(request):
    port = os.environ.get("AMQP_TARGET_PORT")
    return int(port) if port else request.getfixturevalue("broker").port


@pytest.fixture
def vhost(api):
    name = unique("limits")
    assert api.json("PUT", f"/api/vhosts/{q(name)}", {})[0] == 201
    assert api.json("PUT", f"/api/permissions/{q(name)}/guest",
                    {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    yield name
    api.request("DELETE", f"/api/vhosts/{q(name)}")


@pytest.fixture
def limited_user(api):
    name = unique("limited")
    assert api.json("PUT", f"/api/users/{name}", {"password": "pw", "tags": ""})[0] == 201
    assert api.json("PUT", f"/api/permissions/%2F/{name}", {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    yield name
    api.request("DELETE", f"/api/users/{name}")


def connect(port, vhost="/", user="guest", password="guest"):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, virtual_host=vhost, credentials=pika.PlainCredentials(user, password),
        connection_attempts=1, heartbeat=0))


def test_vhost_max_connections(api, vhost, amqp_port):
    assert api.json("PUT", f"/api/vhost-limits/{q(vhost)}/max-connections", {"value": 1})[0] == 204
    first = connect(amqp_port, vhost)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
        connect(amqp_port, vhost)
    assert (f"(530) \"NOT_ALLOWED - access to vhost '{vhost}' refused for user 'guest': connection limit (1) is "
            "reached\"") in str(refused.value)
    other = connect(amqp_port, "/")  # another vhost is not affected
    other.close()
    first.close()
    again = connect(amqp_port, vhost)  # the closed connection no longer counts
    assert api.json("PUT", f"/api/vhost-limits/{q(vhost)}/max-connections", {"value": 0})[0] == 204
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as zero:
        connect(amqp_port, vhost)
    assert "connection limit (0) is reached" in str(zero.value)
    assert again.is_open  # lowering a limit does not close what is open
    again.close()
    assert api.json("PUT", f"/api/vhost-limits/{q(vhost)}/max-connections", {"value": -1})[0] == 204
    connect(amqp_port, vhost).close()


def test_vhost_max_queues(api, vhost, amqp_port):
    assert api.json("PUT", f"/api/vhost-limits/{q(vhost)}/max-queues", {"value": 1})[0] == 204
    connection = connect(amqp_port, vhost)
    channel = connection.channel()
    channel.queue_declare("first")
    channel.queue_declare("first")  # redeclaring is not a new queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_declare("second")
    assert refused.value.reply_code == 406
    assert refused.value.reply_text == (
        f"PRECONDITION_FAILED - cannot declare queue 'second': queue limit in vhost '{vhost}' (1) is reached")
    assert connection.is_open  # a channel error: the connection goes on
    channel = connection.channel()
    channel.queue_declare("first", passive=True)
    connection.close()
    status, limits = api.json("GET", f"/api/vhost-limits/{q(vhost)}")
    assert status == 200 and limits == [{"vhost": vhost, "value": {"max-queues": 1}}]
    assert api.request("DELETE", f"/api/vhost-limits/{q(vhost)}/max-queues")[0] == 204
    assert api.json("GET", f"/api/vhost-limits/{q(vhost)}")[1] == []


def test_user_max_connections_and_channels(api, limited_user, amqp_port):
    assert api.json("PUT", f"/api/user-limits/{limited_user}/max-connections", {"value": 1})[0] == 204
    assert api.json("PUT", f"/api/user-limits/{limited_user}/max-channels", {"value": 1})[0] == 204
    connection = connect(amqp_port, user=limited_user, password="pw")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
        connect(amqp_port, user=limited_user, password="pw")
    assert (f"(530) \"NOT_ALLOWED - connection refused for user '{limited_user}': user connection limit (1) is "
            "reached\"") in str(refused.value)
    guest = connect(amqp_port)  # other users are not affected
    guest.channel()
    guest.channel()
    guest.close()
    connection.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        connection.channel()
    assert closed.value.reply_code == 530
    assert closed.value.reply_text == (
        f"NOT_ALLOWED - number of channels opened for user '{limited_user}' has reached the maximum allowed user "
        "limit of (1)")
    status, limits = api.json("GET", "/api/user-limits")
    assert status == 200
    assert {"user": limited_user, "value": {"max-connections": 1, "max-channels": 1}} in [
        {"user": row["user"], "value": dict(row["value"])} for row in limits]


def test_vhost_limits_travel_in_definitions_as_rabbitmq_parameters(api):
    name = unique("deflimits")
    definitions = {
        "vhosts": [{"name": name}],
        "parameters": [{"vhost": name, "component": "vhost-limits", "name": "limits",
                        "value": {"max-queues": 4}}],
    }
    try:
        assert api.json("POST", "/api/definitions", definitions)[0] in (200, 201, 204)
        status, limits = api.json("GET", f"/api/vhost-limits/{q(name)}")
        assert status == 200 and [dict(row["value"]) for row in limits] == [{"max-queues": 4}]
        status, exported = api.json("GET", "/api/definitions")
        assert status == 200
        assert {"vhost": name, "component": "vhost-limits", "name": "limits", "value": {"max-queues": 4}} in [
            {key: dict(value) if isinstance(value, dict) else value for key, value in row.items()}
            for row in exported["parameters"]]
    finally:
        api.request("DELETE", f"/api/vhosts/{q(name)}")


def test_bad_limits_are_refused_as_rabbitmq_does(api, vhost):
    status, body = api.json("PUT", f"/api/vhost-limits/{q(vhost)}/bogus", {"value": 1})
    assert status == 400 and body["reason"] == 'Validation failed\n\nUnrecognised terms [{<<"bogus">>,1}] in limits\n'
    status, body = api.json("PUT", f"/api/vhost-limits/{q(vhost)}/max-queues", {"value": "x"})
    assert status == 400 and body["reason"] == 'Validation failed\n\nmax-queues should be a number, actually was <<"x">>\n'


@pytest.mark.warren_only
def test_limits_from_yaml_the_node_limit_and_metrics(tmp_path):
    config = tmp_path / "warren.yaml"
    config.write_text(
        "server:\n  connection_max: 2\n"
        "vhosts:\n  - name: /\n  - name: small\n    limits: {max-connections: 1, max-queues: 5}\n"
        "users:\n  - name: guest\n    password: guest\n    tags: administrator\n"
        "    limits: {max-channels: 3}\n"
        "permissions:\n  - {user: guest, vhost: small, configure: '.*', write: '.*', read: '.*'}\n")
    binary = os.environ.get("WARREN_BIN", os.path.join(ROOT, ".build", "debug", "warren"))
    check = subprocess.run([binary, "check-config", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    broker = Broker("--config", str(config))
    try:
        first = connect(broker.port, "small")
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
            connect(broker.port, "small")
        second = connect(broker.port)
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as node:
            connect(broker.port)
        assert "node connection limit (2) is reached" in str(node.value)
        status, text = broker.http_get("/metrics")
        assert status == 200
        assert 'rabbitmq_limit{kind="vhost",name="small",limit="max-connections"} 1' in text
        assert 'rabbitmq_limit_used{kind="vhost",name="small",limit="max-connections"} 1' in text
        assert 'rabbitmq_limit{kind="user",name="guest",limit="max-channels"} 3' in text
        assert 'rabbitmq_limit_used{kind="node",name="",limit="connection_max"} 2' in text
        first.close()
        second.close()
    finally:
        broker.stop()
    assert broker.logged(r"connection limit")
