"""AMQPS: pika, aio-pika and openssl s_client over TLS, certificate login (EXTERNAL), and what a TLS listener must
survive (untrusted clients, plain AMQP, garbage, stalled handshakes, renegotiation). The certificates are made by
openssl for this run (tls_support.py); no private key is committed. With TLS_TARGET_PORT (and AMQP_TARGET_PORT,
TLS_TARGET_PKI: the directory of the same files) the shared tests run against another broker, RabbitMQ in
`make test-rabbitmq`; the ones that start Warren with their own settings are Warren's."""

import asyncio
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess

import aio_pika
import pika
import pytest

from conftest import ROOT, Broker
from tls_support import make_pki
from test_hardening import frame, read_frames, short


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return os.environ.get("TLS_TARGET_PKI") or make_pki(str(tmp_path_factory.mktemp("pki")))


class Target:
    """The broker the shared tests talk to: its TLS and plain ports, and Warren's process (None for another)."""

    def __init__(self, tls_port, port, broker=None):
        self.tls_port, self.port, self.broker = tls_port, port, broker

    def wait_for_log(self, pattern):
        return self.broker is None or self.broker.wait_for_log(pattern)


def tls_flags(pki, verify="peer", handshake_timeout=1000):
    return ["--tls-port", "0", "--tls-cert", f"{pki}/server.pem", "--tls-key", f"{pki}/server.key",
            "--tls-verify", verify, "--tls-ca", f"{pki}/ca.pem", "--handshake-timeout", str(handshake_timeout)]


@pytest.fixture(scope="module", params=["one loop", "connection loops"])
def tls_broker(pki, request):
    """Warren twice: everything on the broker's loop (the default), and sockets with their TLS on loops of their
    own (`--connection-threads 2`, the plain listener's too), handing bytes to the broker's loop."""
    if os.environ.get("TLS_TARGET_PORT"):
        if request.param != "one loop":
            pytest.skip("Warren's connection loops: RabbitMQ runs once")
        yield Target(int(os.environ["TLS_TARGET_PORT"]), int(os.environ["AMQP_TARGET_PORT"]))
        return
    if request.param == "one loop":
        broker = Broker(*tls_flags(pki))
    else:
        broker = Broker(*tls_flags(pki), "--connection-threads", "2", env={"WARREN_CONNECTION_THREADS_PLAIN": "true"})
    yield Target(broker.tls_port, broker.port, broker)
    broker.stop()


warren_only = pytest.mark.warren_only


def client_context(pki, certificate=None, trust=True):
    context = ssl.create_default_context(cafile=f"{pki}/ca.pem" if trust else f"{pki}/other-ca.pem")
    if certificate:
        context.load_cert_chain(f"{pki}/{certificate}.pem", f"{pki}/{certificate}.key")
    return context


def parameters(broker, pki, certificate=None, external=False, **options):
    return pika.ConnectionParameters(
        host="127.0.0.1", port=broker.tls_port, ssl_options=pika.SSLOptions(client_context(pki, certificate), "localhost"),
        credentials=pika.credentials.ExternalCredentials() if external else pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, **options)


def round_trip(connection):
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"over tls")
    _, _, body = channel.basic_get(queue, auto_ack=True)
    return body


def still_serving(broker):
    """A plain connection and a TLS one both still work."""
    plain = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=broker.port))
    assert round_trip(plain) == b"over tls"
    plain.close()


def test_pika_publishes_and_consumes_over_tls_with_a_password(tls_broker, pki):
    connection = pika.BlockingConnection(parameters(tls_broker, pki))
    assert round_trip(connection) == b"over tls"
    connection.close()


@warren_only
def test_management_shows_a_tls_connection_with_its_version(tls_broker, pki):
    import json
    import urllib.request
    import base64

    connection = pika.BlockingConnection(parameters(tls_broker, pki, client_properties={"connection_name": "tls-one"}))
    request = urllib.request.Request(f"http://127.0.0.1:{tls_broker.broker.management_port}/api/connections")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        connections = json.load(response)
    mine = [c for c in connections if c["client_properties"].get("connection_name") == "tls-one"]
    assert mine and mine[0]["ssl"] is True and mine[0]["ssl_protocol"] == "tlsv1.3"
    connection.close()


def test_aio_pika_over_tls(tls_broker, pki):
    async def run():
        connection = await aio_pika.connect(
            host="127.0.0.1", port=tls_broker.tls_port, login="guest", password="guest", ssl=True,
            ssl_context=client_context(pki))
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("", exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(b"aio over tls"), routing_key=queue.name)
            message = await queue.get(timeout=5)
            assert message.body == b"aio over tls"
            await message.ack()

    asyncio.run(run())


@pytest.mark.parametrize("version,expected", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_openssl_s_client_then_an_amqp_handshake(tls_broker, pki, version, expected):
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_broker.tls_port}", version, "-CAfile", f"{pki}/ca.pem",
         "-verify_return_error", "-ign_eof", "-brief"],
        input=b"AMQP\x00\x00\x09\x01", capture_output=True, timeout=20)
    # The broker answers the protocol header with connection.start (class 10, method 10) and closes the
    # connection after the handshake timeout.
    assert result.stdout[:1] == b"\x01" and result.stdout[7:11] == b"\x00\x0a\x00\x0a", result.stdout[:40]
    assert b"PLAIN" in result.stdout and b"AMQPLAIN" in result.stdout
    assert expected.encode() in result.stderr


def test_external_logs_in_as_the_certificates_common_name(tls_broker, pki):
    connection = pika.BlockingConnection(parameters(tls_broker, pki, certificate="client-guest", external=True))
    assert round_trip(connection) == b"over tls"
    connection.close()
    assert tls_broker.wait_for_log(r"connection open: user 'guest'")


def test_external_for_an_unknown_user_is_refused_with_403(tls_broker, pki):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        pika.BlockingConnection(parameters(tls_broker, pki, certificate="client-nobody", external=True))
    assert "403" in str(refused.value) and "EXTERNAL" in str(refused.value)
    assert tls_broker.wait_for_log(r"login refused for user 'nobody' with mechanism EXTERNAL")


def external_offered(sock):
    """Sends the protocol header; returns the mechanisms of connection.start."""
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    (_, _, payload), = read_frames(sock, 1)
    table_length = struct.unpack(">I", payload[6:10])[0]
    at = 10 + table_length
    length = struct.unpack(">I", payload[at:at + 4])[0]
    return payload[at + 4:at + 4 + length].decode()


def test_external_is_refused_on_the_plain_port(tls_broker):
    sock = socket.create_connection(("127.0.0.1", tls_broker.port), timeout=10)
    assert "EXTERNAL" not in external_offered(sock).split()
    start_ok = struct.pack(">HH", 10, 11) + struct.pack(">I", 0) + short("EXTERNAL") + struct.pack(">I", 0) \
        + short("en_US")
    sock.sendall(frame(1, 0, start_ok))
    try:
        (_, _, close), = read_frames(sock, 1)
    except (ConnectionResetError, AssertionError):
        # RabbitMQ ends the socket during the handshake ("invalid authentication mechanism 'EXTERNAL'" in its log).
        assert tls_broker.broker is None
        return
    finally:
        sock.close()
    assert close[:4] == struct.pack(">HH", 10, 50)
    code = struct.unpack(">H", close[4:6])[0]
    assert code == 503 and b"unknown authentication mechanism 'EXTERNAL'" in close


def test_external_is_offered_with_a_verified_certificate(tls_broker, pki):
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=10) as raw:
        with client_context(pki, "client-guest").wrap_socket(raw, server_hostname="localhost") as sock:
            offered = external_offered(sock).split()
            assert "EXTERNAL" in offered and "PLAIN" in offered


@warren_only
def test_external_is_not_offered_without_a_certificate(tls_broker, pki):
    # RabbitMQ's ssl auth plugin offers EXTERNAL on every TLS connection (and refuses it without a certificate);
    # Warren offers it only when there is a verified certificate to log in with.
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=10) as raw:
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as sock:
            assert external_offered(sock) == "PLAIN AMQPLAIN"


def test_a_login_name_from_the_subject_alternative_name(pki):
    broker = Broker(*tls_flags(pki), env={"WARREN_TLS_CERT_LOGIN_FROM": "subject_alternative_name"})
    try:
        # CN=nobody, SAN DNS:guest: the SAN names the user.
        connection = pika.BlockingConnection(parameters(broker, pki, certificate="client-san", external=True))
        assert round_trip(connection) == b"over tls"
        connection.close()
    finally:
        broker.stop()


def test_a_client_that_does_not_trust_the_ca_cannot_connect_and_the_broker_goes_on(tls_broker, pki):
    context = client_context(pki, trust=False)
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="localhost")
    still_serving(tls_broker)


def test_a_certificate_from_an_unknown_ca_is_refused(tls_broker, pki):
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
        pika.BlockingConnection(parameters(tls_broker, pki, certificate="client-other"))
    assert tls_broker.wait_for_log(r"TLS error, closing the connection: .*CERTIFICATE_VERIFY_FAILED")
    still_serving(tls_broker)


@warren_only
def test_no_client_certificate_when_one_is_required(pki):
    broker = Broker(*tls_flags(pki, verify="require"))
    try:
        with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError, ConnectionError)):
            connection = pika.BlockingConnection(parameters(broker, pki))
            connection.channel()
        connection = pika.BlockingConnection(parameters(broker, pki, certificate="client-guest"))
        assert round_trip(connection) == b"over tls"
        connection.close()
    finally:
        broker.stop()


def closed_by_broker(sock):
    """Reads until the broker closes the socket; True if it did (within the socket's timeout)."""
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


def test_plain_amqp_sent_to_the_tls_port_is_closed(tls_broker):
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=10) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        assert closed_by_broker(sock)
    assert tls_broker.wait_for_log(r"TLS error, closing the connection")
    still_serving(tls_broker)


def test_garbage_instead_of_a_client_hello_is_closed(tls_broker):
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05" + os.urandom(5) + os.urandom(2000))
        assert closed_by_broker(sock)
    still_serving(tls_broker)


def test_a_stalled_tls_handshake_is_closed_after_the_handshake_timeout(tls_broker):
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        assert closed_by_broker(sock)
    assert tls_broker.wait_for_log(r"handshake not completed within 1000 ms")
    still_serving(tls_broker)


@warren_only
def test_renegotiation_is_refused_and_the_broker_goes_on(pki):
    # s_client's "R" line asks for a renegotiation (TLS 1.2); the broker's TLS library refuses it with an alert and
    # the connection ends. A broker of its own: the shared one's short handshake timeout would close it first.
    broker = Broker(*tls_flags(pki, handshake_timeout=10000))
    process = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{broker.tls_port}", "-tls1_2", "-CAfile", f"{pki}/ca.pem"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output = b""
        while b"Extended master secret" not in output or not output.endswith(b"---\n"):  # the session is printed
            line = process.stdout.readline()
            assert line, output
            output += line
        process.stdin.write(b"R\n")
        process.stdin.flush()
        output += process.stdout.read()  # until the broker closes
        process.wait(timeout=20)
        assert b"RENEGOTIATING" in output, output[-400:]
        assert broker.wait_for_log(r"TLS error, closing the connection: .*NO_RENEGOTIATION")
        still_serving(broker)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        broker.stop()


def answers_over_tls(pki, *flags, env=None, check=None):
    """Starts Warren with these flags and environment; a pika round trip over TLS must work (after `check`)."""
    broker = Broker(*flags, env=env)
    try:
        if check:
            check(broker)
        connection = pika.BlockingConnection(parameters(broker, pki))
        assert round_trip(connection) == b"over tls"
        connection.close()
    finally:
        broker.stop()


@warren_only
def test_an_encrypted_key_with_its_password_from_the_environment(pki):
    flags = tls_flags(pki)
    flags[flags.index(f"{pki}/server.key")] = f"{pki}/server.enc.key"
    answers_over_tls(pki, *flags, env={"WARREN_TLS_KEY_PASSWORD": "s3cret"})


@warren_only
def test_a_wrong_key_password_stops_the_start_with_a_clear_message(pki):
    flags = tls_flags(pki)
    flags[flags.index(f"{pki}/server.key")] = f"{pki}/server.enc.key"
    binary = os.environ.get("WARREN_BIN", os.path.join(ROOT, ".build", "debug", "warren"))
    result = subprocess.run([binary, "--port", "0", "--metrics-port", "0", "--management-port", "0", *flags],
                            capture_output=True, text=True, timeout=30, env={**os.environ, "WARREN_TLS_KEY_PASSWORD": "wrong"})
    assert result.returncode != 0
    assert "tls_key" in result.stdout and "server.enc.key" in result.stdout


def peer_subject(port, pki):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as sock:
            return dict(item[0] for item in sock.getpeercert()["subject"])["commonName"]


@warren_only
def test_sighup_reloads_the_certificate_without_dropping_connections(pki, tmp_path):
    shutil.copy(f"{pki}/server.pem", tmp_path / "cert.pem")
    shutil.copy(f"{pki}/server.key", tmp_path / "key.pem")
    broker = Broker("--tls-port", "0", "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"))
    try:
        kept = pika.BlockingConnection(parameters(broker, pki))
        assert peer_subject(broker.tls_port, pki) == "localhost"
        shutil.copy(f"{pki}/server2.pem", tmp_path / "cert.pem")
        shutil.copy(f"{pki}/server2.key", tmp_path / "key.pem")
        broker.process.send_signal(signal.SIGHUP)
        assert broker.wait_for_log(r"SIGHUP: TLS certificate and key read again")
        assert peer_subject(broker.tls_port, pki) == "localhost-reloaded"
        assert round_trip(kept) == b"over tls"  # the connection made before the reload goes on
        kept.close()
    finally:
        broker.stop()


@warren_only
def test_tls_only_with_the_plain_listener_off(pki):
    def no_plain_port(broker):
        assert broker.port is None and broker.tls_port

    answers_over_tls(pki, *tls_flags(pki), env={"WARREN_AMQP_PLAIN": "false"}, check=no_plain_port)


@warren_only
def test_check_config_names_the_line_of_a_key_that_does_not_match_its_certificate(pki, tmp_path):
    config = tmp_path / "warren.yaml"
    config.write_text(f"server:\n  tls_cert: {pki}/server.pem\n  tls_key: {pki}/client-guest.key\n")
    binary = os.environ.get("WARREN_BIN", os.path.join(ROOT, ".build", "debug", "warren"))
    result = subprocess.run([binary, "check-config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"{config}:3:" in result.stderr and "client-guest.key" in result.stderr, result.stderr
    config.write_text(f"server:\n  tls_cert: {pki}/missing.pem\n  tls_key: {pki}/server.key\n")
    result = subprocess.run([binary, "check-config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and f"{config}:2:" in result.stderr and "missing.pem" in result.stderr, result.stderr


@warren_only
def test_https_on_the_management_and_metrics_ports_and_warren_health_over_it(pki):
    import base64
    import json
    import urllib.request

    broker = Broker(*tls_flags(pki), env={"WARREN_MANAGEMENT_TLS": "true", "WARREN_METRICS_TLS": "true"})
    binary = os.environ.get("WARREN_BIN", os.path.join(ROOT, ".build", "debug", "warren"))
    try:
        context = client_context(pki)
        request = urllib.request.Request(f"https://localhost:{broker.management_port}/api/overview")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            assert json.load(response)["product_name"] == "Warren"
        with urllib.request.urlopen(f"https://localhost:{broker.http_port}/metrics", timeout=10,
                                    context=context) as response:
            assert b"rabbitmq_connections" in response.read()
        # Plain HTTP to an HTTPS port gets nothing.
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{broker.http_port}/healthz", timeout=10)
        health = subprocess.run(
            [binary, "health", "--address", f"https://127.0.0.1:{broker.http_port}", "--ca", f"{pki}/ca.pem"],
            capture_output=True, text=True, timeout=30)
        assert health.returncode == 0, health.stderr
        untrusted = subprocess.run(
            [binary, "health", "--address", f"https://127.0.0.1:{broker.http_port}", "--ca", f"{pki}/other-ca.pem"],
            capture_output=True, text=True, timeout=30)
        assert untrusted.returncode == 1
        insecure = subprocess.run(
            [binary, "health", "--address", f"127.0.0.1:{broker.http_port}", "--insecure"],
            capture_output=True, text=True, timeout=30)
        assert insecure.returncode == 0, insecure.stderr
        listing = subprocess.run(
            [binary, "ctl", "list", "queues", "--address", f"https://localhost:{broker.management_port}", "--ca",
             f"{pki}/ca.pem"], capture_output=True, text=True, timeout=30)
        assert listing.returncode == 0, listing.stderr
        still_serving(broker)
    finally:
        broker.stop()
