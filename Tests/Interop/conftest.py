"""Starts a warren broker process on 127.0.0.1, port 0, for the interop tests, and stops it by its PID."""

import os
import re
import shutil
import subprocess
import tempfile
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Broker:
    """A warren process. Each gets a data directory of its own (a fresh temporary one unless `data_dir` is given:
    give the same one again to restart a broker on its data)."""

    def __init__(self, *extra_args, env=None, data_dir=None):
        binary = os.environ.get("WARREN_BIN", os.path.join(ROOT, ".build", "debug", "warren"))
        self.binary = binary
        self.own_data_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="warren-data-")
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--management-port", "0",
             "--data-dir", self.data_dir, *extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.log = []
        self.port = None
        self.http_port = None
        self.management_port = None
        self.tls_port = None
        self.changed = threading.Condition()
        ready = threading.Event()

        def read_output():
            for line in self.process.stdout:
                with self.changed:
                    self.log.append(line)
                    self.changed.notify_all()
                match = re.search(r"AMQP listener on .*:(\d+)\s*$", line)
                if match and self.port is None:
                    self.port = int(match.group(1))
                tls = re.search(r"AMQPS listener on .*:(\d+)\s*$", line)
                if tls and self.tls_port is None:
                    self.tls_port = int(tls.group(1))
                management = re.search(r"management listener on .*:(\d+)\s*$", line)
                if management and self.management_port is None:
                    self.management_port = int(management.group(1))
                http = re.search(r"HTTP listener on .*:(\d+)\s*$", line)
                if http and self.http_port is None:
                    self.http_port = int(http.group(1))
                    ready.set()  # the HTTP listener opens last
            ready.set()

        self.reader = threading.Thread(target=read_output, daemon=True)
        self.reader.start()
        if not ready.wait(timeout=30) or (self.port is None and self.tls_port is None) or self.http_port is None:
            self.stop()
            raise RuntimeError("warren did not start:\n" + "".join(self.log))

    def kill(self):
        """Ends the broker with SIGKILL: nothing is flushed or synced on the way out."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=5)
        if self.own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def http_get(self, path, auth=("guest", "guest")):
        """GET from the broker's HTTP listener, with HTTP basic authentication unless auth is None: (status, body)."""
        import base64
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def logged(self, pattern):
        return any(re.search(pattern, line) for line in self.log)

    def wait_for_log(self, pattern, timeout=30):
        """Waits until the broker logs a line matching `pattern` (woken by each new line)."""
        with self.changed:
            return self.changed.wait_for(lambda: self.logged(pattern), timeout=timeout)


def pytest_configure(config):
    config.addinivalue_line("markers", "warren_only: behaviour where Warren differs from RabbitMQ on purpose")


def pytest_collection_modifyitems(config, items):
    """With AMQP_TARGET_PORT (another broker, RabbitMQ in CI), tests that need Warren's own process or test one of
    its deliberate differences are skipped; the rest must pass there too."""
    if not os.environ.get("AMQP_TARGET_PORT"):
        return
    for item in items:
        if "broker" in item.fixturenames or item.get_closest_marker("warren_only"):
            item.add_marker(pytest.mark.skip(reason="Warren only"))


@pytest.fixture(scope="session")
def broker():
    b = Broker()
    yield b
    b.stop()
    # The broker must never crash, whatever a test sent it.
    assert b.process.returncode == 0, "".join(b.log[-50:])


@pytest.fixture(scope="module")
def target_port(request):
    """The broker behaviour tests run against: Warren's, or the one on AMQP_TARGET_PORT (RabbitMQ, in CI)."""
    port = os.environ.get("AMQP_TARGET_PORT")
    if port:
        return int(port)
    return request.getfixturevalue("broker").port


@pytest.fixture
def params(target_port):
    import pika

    return pika.ConnectionParameters("127.0.0.1", target_port, heartbeat=0, blocked_connection_timeout=30)


@pytest.fixture
def connection(params):
    import pika

    c = pika.BlockingConnection(params)
    yield c
    if c.is_open:
        c.close()


@pytest.fixture
def channel(connection):
    return connection.channel()
