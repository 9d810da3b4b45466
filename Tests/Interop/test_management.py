"""The management HTTP API (RabbitMQ's `/api`), with plain HTTP requests, pika, and rabbitmqadmin (Debian's
rabbitmq-server ships it). Runs against Warren's management port, or against RabbitMQ's management plugin when
MANAGEMENT_TARGET_PORT is set (with AMQP_TARGET_PORT for the same node): the same requests must get the same
answers, but for the differences named here."""

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pika
import pytest

from conftest import Broker

RABBITMQ = bool(os.environ.get("MANAGEMENT_TARGET_PORT"))
# Warren answers 403 for a request beyond the caller's tag (authenticated, not allowed); RabbitMQ 3.10 answers 401.
BEYOND_TAG = 401 if RABBITMQ else 403


class API:
    def __init__(self, port, user="guest", password="guest"):
        self.port = port
        self.user = user
        self.password = password

    def as_user(self, user, password):
        return API(self.port, user, password)

    def request(self, method, path, body=None, auth=True, raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def json(self, method, path, body=None, **kw):
        status, content, headers = self.request(method, path, body, **kw)
        return status, (json.loads(content) if content.strip() else None)

    def get(self, path, **kw):
        return self.json("GET", path, **kw)


@pytest.fixture(scope="module")
def mgmt_port(request):
    port = os.environ.get("MANAGEMENT_TARGET_PORT")
    if port:
        return int(port)
    return request.getfixturevalue("broker").management_port


@pytest.fixture
def api(mgmt_port):
    return API(mgmt_port)


def q(name):
    return urllib.parse.quote(name, safe="")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate, timeout=10):
    """Polls the API (its figures are sampled) until predicate() holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def users(api):
    made = []

    def make(tags, password="secret"):
        name = unique("user")
        status, _ = api.json("PUT", f"/api/users/{name}", {"password": password, "tags": tags})
        assert status == 201
        made.append(name)
        return API(api.port, name, password)

    yield make
    for name in made:
        api.request("DELETE", f"/api/users/{name}")


def test_authentication_and_tags(api, users):
    status, content, headers = api.request("GET", "/api/overview", auth=False)
    assert status == 401
    assert "Basic" in headers.get("www-authenticate", headers.get("WWW-Authenticate", ""))
    status, body = api.as_user("guest", "wrong").get("/api/overview")
    assert status == 401 and body == {"error": "not_authorized", "reason": "Login failed"}
    status, body = users("").get("/api/overview")
    assert status == 401 and body["reason"] == "Not management user"
    management = users("management")
    status, body = management.get("/api/whoami")
    assert status == 200 and body["tags"] == ["management"]
    status, body = management.get("/api/users")
    assert status == BEYOND_TAG and body["reason"] == "Not administrator user"
    assert management.get("/api/definitions")[0] == BEYOND_TAG
    # A management user sees only the vhosts it has permissions in: none yet.
    assert management.get("/api/vhosts") == (200, [])
    assert api.json("PUT", f"/api/permissions/%2F/{management.user}", {"configure": ".*", "write": ".*", "read": ".*"})[0] == 201
    assert [v["name"] for v in management.get("/api/vhosts")[1]] == ["/"]
    monitor = users("monitoring")
    # (a RabbitMQ node that has just started adds its figures once its statistics have been collected)
    status, body = wait_until(lambda: (lambda r: r if r[0] == 200 and r[1] and "mem_used" in r[1][0] else None)(
        monitor.get("/api/nodes")))
    assert status == 200 and len(body) == 1 and "mem_used" in body[0]


def test_whoami_and_overview(api):
    assert api.get("/api/whoami") == (200, {"name": "guest", "tags": ["administrator"]})
    status, overview = api.get("/api/overview")
    assert status == 200
    for key in ["management_version", "object_totals", "message_stats", "node", "listeners", "exchange_types"]:
        assert key in overview
    assert {"connections", "channels", "exchanges", "queues", "consumers"} <= set(overview["object_totals"])


def test_queue_lifecycle_and_errors(api):
    name = unique("mq")
    path = f"/api/queues/%2F/{name}"
    assert api.json("PUT", path, {"durable": True, "arguments": {"x-max-length": 10}})[0] == 201
    assert api.json("PUT", path, {"durable": True, "arguments": {"x-max-length": 10}})[0] == 204
    # (RabbitMQ adds most figures once its statistics have been collected.)
    status, queue = wait_until(lambda: (lambda r: r if "state" in r[1] else None)(api.get(path)))
    assert status == 200
    assert (queue["name"], queue["vhost"], queue["durable"], queue["auto_delete"], queue["exclusive"]) == (
        name, "/", True, False, False)
    assert queue["arguments"] == {"x-max-length": 10}
    assert queue["messages"] == 0 and queue["consumers"] == 0 and queue["state"] == "running"
    status, body = api.json("PUT", path, {"durable": False})
    assert status == 400 and body["error"] == "bad_request"
    assert "inequivalent arg 'durable'" in body["reason"]
    assert api.request("DELETE", path)[0] == 204
    assert api.get(path) == (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert api.get("/api/queues/no-such-vhost")[0] == 404
    assert api.get("/api/no-such-thing")[0] == 404


def test_bad_input_gets_json_errors(api):
    name = unique("bad")
    for raw in [b"{bad", b"[1, 2", b"\xff\xfe", b"[1]", b"5"]:
        status, content, _ = api.request("PUT", f"/api/queues/%2F/{name}", raw=raw)
        assert status == 400
        assert json.loads(content) == {"error": "bad_request", "reason": "not_json"}
    status, content, _ = api.request("PUT", f"/api/queues/%2F/{name}", raw=b'"a string"')
    assert status == 400 and "doubly-JSON-encoded" in json.loads(content)["reason"]
    # An encoded quote and other odd characters in the path: still a JSON answer.
    for path in ["/api/queues/%2F/%22%27%3C%3E", "/api/exchanges/%22/x", "/api/queues/%2F/a%00b"]:
        status, content, _ = api.request("GET", path)
        assert status in (400, 404)
        assert set(json.loads(content)) == {"error", "reason"}
    assert api.get(f"/api/queues/%2F/{name}")[0] == 404  # nothing was made
    status, body = api.json("PUT", f"/api/queues/%2F/{'x' * 300}", {})
    assert status == 400 and "255 bytes" in body["reason"]
    status, body = api.json("PUT", "/api/queues/%2F/amq.reserved", {})
    assert status == 401 and body["reason"] == "Access refused."
    # Unknown fields are ignored, as RabbitMQ does.
    assert api.json("PUT", f"/api/queues/%2F/{name}", {"durable": False, "no-such-field": 1})[0] == 201
    api.request("DELETE", f"/api/queues/%2F/{name}")


@pytest.mark.warren_only
def test_oversized_body_refused(api):
    status, content, _ = api.request("PUT", "/api/queues/%2F/big", raw=b"{" + b" " * (21 * 1024 * 1024) + b"}")
    assert status == 413 and json.loads(content)["error"] == "bad_request"
    assert api.get("/api/whoami")[0] == 200  # the listener goes on


def test_queue_declared_over_amqp_shows_its_messages(api, channel):
    name = unique("amqpq")
    channel.queue_declare(name, auto_delete=False)
    for i in range(3):
        channel.basic_publish("", name, f"m{i}".encode())
    status, queue = wait_until(lambda: (lambda r: r if r[1] and r[1].get("messages") == 3 else None)(
        api.get(f"/api/queues/%2F/{name}")))
    assert status == 200 and queue["messages_ready"] == 3 and queue["messages_unacknowledged"] == 0
    channel.queue_delete(name)


def test_bindings_publish_get_and_purge(api):
    name = unique("bq")
    assert api.json("PUT", f"/api/queues/%2F/{name}", {"durable": False})[0] == 201
    status, content, headers = api.request(
        "POST", f"/api/bindings/%2F/e/amq.direct/q/{name}", {"routing_key": "rk", "arguments": {}})
    assert status == 201
    assert {k.lower(): v for k, v in headers.items()}["location"] == f"{name}/rk"
    status, bindings = api.get(f"/api/bindings/%2F/e/amq.direct/q/{name}")
    assert status == 200 and [(b["routing_key"], b["properties_key"]) for b in bindings] == [("rk", "rk")]
    assert api.get(f"/api/bindings/%2F/e/amq.direct/q/{name}/rk")[1]["destination"] == name
    status, queue_bindings = api.get(f"/api/queues/%2F/{name}/bindings")
    assert [(b["source"], b["routing_key"]) for b in queue_bindings] == [("", name), ("amq.direct", "rk")]

    publish = {"properties": {"delivery_mode": 2, "headers": {"h": 1}, "content_type": "text/plain"},
               "routing_key": "rk", "payload": "hello", "payload_encoding": "string"}
    assert api.json("POST", "/api/exchanges/%2F/amq.direct/publish", publish) == (200, {"routed": True})
    assert api.json("POST", "/api/exchanges/%2F/amq.direct/publish", {**publish, "routing_key": "none"}) == (
        200, {"routed": False})
    publish["payload"] = base64.b64encode(b"\xff\xfebinary").decode()
    publish["payload_encoding"] = "base64"
    assert api.json("POST", "/api/exchanges/%2F/amq.direct/publish", publish) == (200, {"routed": True})

    get = {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}
    status, messages = api.json("POST", f"/api/queues/%2F/{name}/get", get)
    assert status == 200 and len(messages) == 2
    first, second = messages
    assert (first["payload"], first["payload_encoding"], first["routing_key"], first["exchange"]) == (
        "hello", "string", "rk", "amq.direct")
    assert first["properties"]["headers"] == {"h": 1} and first["properties"]["delivery_mode"] == 2
    assert first["message_count"] == 1 and second["message_count"] == 0
    assert base64.b64decode(second["payload"]) == b"\xff\xfebinary" and second["payload_encoding"] == "base64"
    # Requeued: still there, now redelivered; then taken for good.
    status, again = api.json("POST", f"/api/queues/%2F/{name}/get", {**get, "count": 1, "ackmode": "ack_requeue_false"})
    assert again[0]["redelivered"] is True and again[0]["payload"] == "hello"
    status, queue = wait_until(lambda: (lambda r: r if r[1].get("messages") == 1 else None)(api.get(f"/api/queues/%2F/{name}")))
    assert queue["messages"] == 1
    assert api.request("DELETE", f"/api/queues/%2F/{name}/contents")[0] == 204
    assert wait_until(lambda: api.get(f"/api/queues/%2F/{name}")[1]["messages"] == 0)
    assert api.json("POST", f"/api/queues/%2F/{name}/get", get) == (200, [])
    assert api.request("DELETE", f"/api/bindings/%2F/e/amq.direct/q/{name}/rk")[0] == 204
    assert api.get(f"/api/bindings/%2F/e/amq.direct/q/{name}") == (200, [])
    api.request("DELETE", f"/api/queues/%2F/{name}")


def test_exchanges(api):
    name = unique("mx")
    assert api.json("PUT", f"/api/exchanges/%2F/{name}", {"type": "topic", "durable": True})[0] == 201
    status, exchange = api.get(f"/api/exchanges/%2F/{name}")
    assert (exchange["name"], exchange["type"], exchange["durable"], exchange["internal"]) == (name, "topic", True, False)
    status, body = api.json("PUT", f"/api/exchanges/%2F/{unique('mx')}", {"type": "no-such-type"})
    assert status == 400 and "no-such-type" in body["reason"]
    names = [e["name"] for e in api.get("/api/exchanges/%2F")[1]]
    assert name in names and "amq.direct" in names and "" in names
    assert api.request("DELETE", f"/api/exchanges/%2F/{name}")[0] == 204
    assert api.get(f"/api/exchanges/%2F/{name}")[0] == 404


def test_paging_sorting_filtering_columns(api):
    prefix = unique("page")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        assert api.json("PUT", f"/api/queues/%2F/{name}", {"durable": False})[0] == 201
    status, page = api.get(f"/api/queues?page=1&page_size=2&name={prefix}")
    assert status == 200
    assert (page["item_count"], page["filtered_count"], page["page_count"], page["page"], page["page_size"]) == (
        2, 5, 3, 1, 2)
    assert page["total_count"] >= 5
    assert [i["name"] for i in page["items"]] == names[:2]
    status, last = api.get(f"/api/queues?page=3&page_size=2&name={prefix}")
    assert [i["name"] for i in last["items"]] == names[4:]
    status, reverse = api.get(f"/api/queues?page=1&page_size=5&name={prefix}&sort=name&sort_reverse=true")
    assert [i["name"] for i in reverse["items"]] == names[::-1]
    status, regex = api.get(f"/api/queues?page=1&page_size=5&name={prefix}-[13]$&use_regex=true")
    assert [i["name"] for i in regex["items"]] == [names[1], names[3]]
    status, columns = api.get(f"/api/queues?page=1&page_size=5&name={prefix}&columns=name,vhost")
    assert all(set(item) == {"name", "vhost"} for item in columns["items"])
    assert api.get(f"/api/queues?page=9&page_size=2&name={prefix}")[0] == 400
    for name in names:
        api.request("DELETE", f"/api/queues/%2F/{name}")


def test_connections_channels_consumers_and_closing(api, params):
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        name = unique("cq")
        channel.queue_declare(name, auto_delete=True)
        channel.basic_qos(prefetch_count=7)
        channel.basic_consume(name, lambda *a: None, consumer_tag="mgmt-tag")
        found = wait_until(lambda: [c for c in api.get("/api/connections")[1]
                                    if c["client_properties"].get("product") == "Pika Python Client Library"
                                    and c["channels"] >= 1])
        assert found
        mine = found[-1]
        assert mine["user"] == "guest" and mine["vhost"] == "/" and mine["protocol"] == "AMQP 0-9-1"
        assert mine["name"].endswith(f":{params.port}") and mine["state"] == "running"
        status, one = api.get(f"/api/connections/{q(mine['name'])}")
        assert status == 200 and one["peer_port"] == mine["peer_port"]
        channels = wait_until(lambda: [c for c in api.get("/api/channels")[1]
                                       if c["connection_details"]["name"] == mine["name"] and c["consumer_count"] == 1])
        assert channels and channels[0]["prefetch_count"] == 7 and channels[0]["number"] == 1
        consumers = [c for c in api.get("/api/consumers")[1] if c["consumer_tag"] == "mgmt-tag"]
        assert consumers and consumers[0]["queue"] == {"name": name, "vhost": "/"}
        assert consumers[0]["prefetch_count"] == 7 and consumers[0]["ack_required"] is True
        status, queue = api.get(f"/api/queues/%2F/{name}")
        assert queue["consumers"] == 1 and queue["consumer_details"][0]["consumer_tag"] == "mgmt-tag"

        assert api.request("DELETE", f"/api/connections/{q(mine['name'])}", headers={"X-Reason": "test"})[0] == 204
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            connection.process_data_events(time_limit=10)
            connection.process_data_events(time_limit=10)
        assert closed.value.reply_code == 320
    finally:
        if connection.is_open:
            connection.close()


def test_vhosts_permissions_and_definitions(api, params):
    vhost = unique("vh")
    assert api.request("PUT", f"/api/vhosts/{vhost}")[0] == 201
    assert api.request("PUT", f"/api/vhosts/{vhost}")[0] == 204
    assert api.get(f"/api/vhosts/{vhost}")[1]["name"] == vhost
    assert api.get(f"/api/permissions/{vhost}/guest")[1]["configure"] == ".*"  # the creator's
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", params.port, vhost))
    connection.channel().queue_declare("in-vhost", durable=True)
    connection.close()
    assert [x["name"] for x in api.get(f"/api/queues/{vhost}")[1]] == ["in-vhost"]

    status, definitions = api.get("/api/definitions")
    assert status == 200
    assert {"name": vhost} in [{"name": v["name"]} for v in definitions["vhosts"]]
    assert any(x["name"] == "in-vhost" and x["vhost"] == vhost for x in definitions["queues"])
    imported = {"queues": [{"name": "imported", "vhost": vhost, "durable": True, "auto_delete": False,
                            "arguments": {}}],
                "exchanges": [{"name": "imported-x", "vhost": vhost, "type": "fanout", "durable": True,
                               "auto_delete": False, "internal": False, "arguments": {}}],
                "bindings": [{"source": "imported-x", "vhost": vhost, "destination": "imported",
                              "destination_type": "queue", "routing_key": "", "arguments": {}}]}
    status, _, _ = api.request("POST", "/api/definitions", imported)
    assert status in (201, 204)
    assert api.get(f"/api/queues/{vhost}/imported")[0] == 200
    assert [b["destination"] for b in api.get(f"/api/exchanges/{vhost}/imported-x/bindings/source")[1]] == ["imported"]

    assert api.request("DELETE", f"/api/vhosts/{vhost}")[0] == 204
    assert api.get(f"/api/vhosts/{vhost}")[0] == 404
    assert api.get(f"/api/queues/{vhost}")[0] == 404


def test_policies(api):
    name = unique("pol")
    queue = f"{name}-q"
    assert api.json("PUT", f"/api/queues/%2F/{queue}", {"durable": False})[0] == 201
    policy = {"pattern": f"^{name}", "definition": {"max-length": 2}, "priority": 1, "apply-to": "queues"}
    assert api.json("PUT", f"/api/policies/%2F/{name}", policy)[0] == 201
    status, got = api.get(f"/api/policies/%2F/{name}")
    assert (got["pattern"], got["definition"], got["apply-to"], got["priority"]) == (f"^{name}", {"max-length": 2}, "queues", 1)
    assert wait_until(lambda: api.get(f"/api/queues/%2F/{queue}")[1].get("policy") == name)
    for i in range(4):
        api.json("POST", "/api/exchanges/%2F/amq.default/publish",
                 {"properties": {}, "routing_key": queue, "payload": str(i), "payload_encoding": "string"})
    assert wait_until(lambda: api.get(f"/api/queues/%2F/{queue}")[1]["messages"] == 2)
    status, body = api.json("PUT", f"/api/policies/%2F/{name}-bad", {**policy, "definition": {"max-length": "x"}})
    assert status == 400
    assert api.request("DELETE", f"/api/policies/%2F/{name}")[0] == 204
    assert api.get(f"/api/policies/%2F/{name}")[0] == 404
    api.request("DELETE", f"/api/queues/%2F/{queue}")


def test_health_checks_and_aliveness(api, target_port):
    assert api.get("/api/health/checks/alarms") == (200, {"status": "ok"})
    assert api.get("/api/health/checks/local-alarms") == (200, {"status": "ok"})
    assert api.get(f"/api/health/checks/port-listener/{target_port}") == (200, {"status": "ok", "port": target_port})
    status, body = api.get("/api/health/checks/port-listener/1")
    assert status == 503 and body["status"] == "failed" and body["missing"] == 1
    assert api.get("/api/health/checks/virtual-hosts") == (200, {"status": "ok"})
    assert api.get("/api/aliveness-test/%2F") == (200, {"status": "ok"})


def rabbitmqadmin():
    return shutil.which("rabbitmqadmin")


@pytest.mark.skipif(rabbitmqadmin() is None and not os.environ.get("CI"),
                    reason="rabbitmqadmin (Debian's rabbitmq-server) not installed; CI installs it")
def test_rabbitmqadmin(mgmt_port):
    tool = rabbitmqadmin()
    assert tool, "rabbitmqadmin (Debian's rabbitmq-server) must be installed"
    base = [tool, "-H", "127.0.0.1", "-P", str(mgmt_port), "-u", "guest", "-p", "guest"]
    name = unique("admin")

    def run(*args):
        result = subprocess.run(base + list(args), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "queue declared" in run("declare", "queue", f"name={name}", "durable=false")
    assert name in run("list", "queues", "name", "messages")
    assert "Message published" in run("publish", "exchange=amq.default", f"routing_key={name}", "payload=from-admin")
    listed = json.loads(run("-f", "raw_json", "list", "queues", "name", "messages"))
    assert any(item["name"] == name for item in listed)
    assert "from-admin" in run("get", f"queue={name}", "ackmode=ack_requeue_false")
    assert "from-admin" not in run("get", f"queue={name}")
    assert "amq.direct" in run("list", "exchanges")
    assert name in run("list", "bindings")
    assert "queue deleted" in run("delete", "queue", f"name={name}")


@pytest.mark.warren_only
def test_changes_over_the_api_survive_a_restart(tmp_path):
    data = str(tmp_path / "data")
    broker = Broker(data_dir=data)
    try:
        api = API(broker.management_port)
        assert api.json("PUT", "/api/users/keeper", {"password": "pw", "tags": "management"})[0] == 201
        assert api.request("PUT", "/api/vhosts/kept")[0] == 201
        assert api.json("PUT", "/api/permissions/kept/keeper", {"configure": "", "write": ".*", "read": ".*"})[0] == 201
        assert api.json("PUT", "/api/policies/kept/limit",
                        {"pattern": ".*", "definition": {"max-length": 3}, "apply-to": "queues"})[0] == 201
        assert api.json("PUT", "/api/queues/kept/durable-q", {"durable": True})[0] == 201
        assert api.request("DELETE", "/api/users/guest")[0] == 204
        api = api.as_user("keeper", "pw")
        assert api.get("/api/whoami")[1]["name"] == "keeper"
    finally:
        broker.kill()
    broker = Broker(data_dir=data)
    try:
        api = API(broker.management_port, "keeper", "pw")
        assert api.get("/api/whoami") == (200, {"name": "keeper", "tags": ["management"]})
        assert api.as_user("guest", "guest").get("/api/whoami")[0] == 401  # deleted stays deleted
        assert [v["name"] for v in api.get("/api/vhosts")[1]] == ["kept"]
        assert api.get("/api/queues/kept/durable-q")[1]["policy"] == "limit"
        assert api.get("/api/policies/kept/limit")[1]["definition"] == {"max-length": 3}
    finally:
        broker.stop()


@pytest.mark.warren_only
def test_metrics_port_keeps_prometheus_open_and_the_rest_closed(broker):
    assert broker.http_get("/metrics", auth=None)[0] == 200
    assert broker.http_get("/api/definitions", auth=None)[0] == 401
    assert broker.http_get("/api/aliveness-test/%2F", auth=None)[0] == 401


@pytest.mark.warren_only
def test_metrics_basic_auth_when_asked():
    broker = Broker(env={"WARREN_METRICS_AUTH": "true"})
    try:
        assert broker.http_get("/metrics", auth=None)[0] == 401
        assert broker.http_get("/metrics", auth=("guest", "wrong"))[0] == 401
        api = API(broker.management_port)
        assert api.json("PUT", "/api/users/scraper", {"password": "s", "tags": "monitoring"})[0] == 201
        assert api.json("PUT", "/api/users/nobody", {"password": "n", "tags": ""})[0] == 201
        status, body = broker.http_get("/metrics", auth=("scraper", "s"))
        assert status == 200 and "rabbitmq_identity_info" in body
        assert broker.http_get("/metrics", auth=("nobody", "n"))[0] == 403
        assert broker.http_get("/healthz", auth=None)[0] == 200  # orchestrators' probes stay open
    finally:
        broker.stop()
