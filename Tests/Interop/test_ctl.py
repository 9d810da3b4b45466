"""`warren ctl`, the command-line client of the management API: against Warren's management port, or RabbitMQ's
management plugin with MANAGEMENT_TARGET_PORT (the same API, so the same commands work)."""

import json
import os
import subprocess
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def warren():
    return os.environ.get("WARREN_BIN", os.path.join(ROOT, ".build", "debug", "warren"))


@pytest.fixture(scope="module")
def address(request):
    port = os.environ.get("MANAGEMENT_TARGET_PORT") or request.getfixturevalue("broker").management_port
    return f"127.0.0.1:{port}"


def ctl(address, *args, check=True):
    result = subprocess.run([warren(), "ctl", *args, "--address", address], capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_list_purge_delete(address, channel):
    queue = f"ctl-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue, durable=False)
    for i in range(3):
        channel.basic_publish("", queue, f"m{i}".encode())
    table = ctl(address, "list", "queues").stdout
    assert table.splitlines()[0].split()[:3] == ["vhost", "name", "type"]
    assert any(line.split()[1] == queue for line in table.splitlines()[1:])
    listed = json.loads(ctl(address, "list", "queues", "--format", "json").stdout)
    assert any(item["name"] == queue for item in listed)
    assert "purged" in ctl(address, "purge", queue).stdout
    assert channel.queue_declare(queue, passive=True).method.message_count == 0
    assert "deleted" in ctl(address, "delete", "queue", queue).stdout
    refused = ctl(address, "purge", queue, check=False)
    assert refused.returncode == 1 and "404" in refused.stderr
    for kind in ["exchanges", "bindings", "connections", "channels", "consumers", "users", "vhosts", "policies"]:
        ctl(address, "list", kind)


def test_policies_users_permissions(address, channel):
    name = f"ctlp-{uuid.uuid4().hex[:6]}"
    assert "set policy" in ctl(address, "set-policy", name, f"^{name}", '{"max-length": 1}', "--apply-to", "queues").stdout
    assert name in ctl(address, "list", "policies").stdout
    assert "cleared" in ctl(address, "clear-policy", name).stdout
    assert name not in ctl(address, "list", "policies").stdout
    bad = ctl(address, "set-policy", name, ".*", "not json", check=False)
    assert bad.returncode == 64
    user = f"ctlu-{uuid.uuid4().hex[:6]}"
    ctl(address, "add-user", user, "pw", "--tags", "management")
    ctl(address, "set-permissions", user, "--configure", "", "--read", ".*", "--write", ".*")
    assert user in ctl(address, "list", "users").stdout
    # The new user may list its vhost's queues but not the users.
    mine = subprocess.run([warren(), "ctl", "list", "users", "--address", address, "--user", user, "--password", "pw"],
                          capture_output=True, text=True, timeout=60)
    assert mine.returncode == 1 and "Not administrator user" in mine.stderr
    ctl(address, "delete", "user", user)


def test_limits(address):
    import base64
    import urllib.request

    def vhost_limits():
        request = urllib.request.Request(f"http://{address}/api/vhost-limits/%2F")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    user = f"ctll-{uuid.uuid4().hex[:6]}"
    ctl(address, "add-user", user, "pw")
    try:
        assert f"for user '{user}'" in ctl(address, "set-limit", "--for-user", user, "max-connections", "5").stdout
        assert "for vhost '/'" in ctl(address, "set-limit", "max-queues", "70000").stdout
        assert vhost_limits() == [{"vhost": "/", "value": {"max-queues": 70000}}]
        ctl(address, "clear-limit", "max-queues")
        assert vhost_limits() == []
        ctl(address, "clear-limit", "--for-user", user, "max-connections")
        bad = ctl(address, "set-limit", "bogus", "1", check=False)
        assert bad.returncode == 1 and "Unrecognised" in bad.stderr
    finally:
        ctl(address, "delete", "user", user)


def test_export_import(address, tmp_path):
    queue = f"ctle-{uuid.uuid4().hex[:6]}"
    definitions = {"queues": [{"name": queue, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}]}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(definitions))
    assert "imported" in ctl(address, "import", str(path)).stdout
    out = tmp_path / "out.json"
    ctl(address, "export", "--file", str(out))
    exported = json.loads(out.read_text())
    assert any(q["name"] == queue for q in exported["queues"])
    ctl(address, "delete", "queue", queue)


def test_unreachable_and_usage_errors():
    down = subprocess.run([warren(), "ctl", "list", "queues", "--address", "127.0.0.1:1"], capture_output=True,
                          text=True, timeout=60)
    assert down.returncode == 3 and "cannot reach" in down.stderr
    usage = subprocess.run([warren(), "ctl", "list", "nothing"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 64
