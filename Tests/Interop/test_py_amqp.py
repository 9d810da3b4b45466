"""Interop tests: py-amqp (from PyPI; logs in with AMQPLAIN by default) against a warren process."""

import os

import amqp
import pytest


def test_amqplain_login_publish_and_get(target_port):
    with amqp.Connection(f"127.0.0.1:{target_port}", userid="guest", password="guest", login_method="AMQPLAIN") as conn:
        expected = "RabbitMQ" if os.environ.get("AMQP_TARGET_PORT") else "Warren"
        assert conn.server_properties["product"] == expected
        ch = conn.channel()
        queue, _, _ = ch.queue_declare("", exclusive=True)
        ch.confirm_select()
        ch.basic_publish(amqp.Message("via py-amqp", content_type="text/plain", application_headers={"k": "v"}),
                         routing_key=queue)
        message = ch.basic_get(queue, no_ack=True)
        assert message.body == "via py-amqp"
        assert message.properties["application_headers"] == {"k": "v"}


def test_amqplain_wrong_password_refused(target_port):
    conn = amqp.Connection(f"127.0.0.1:{target_port}", userid="guest", password="nope", login_method="AMQPLAIN")
    with pytest.raises(amqp.exceptions.AccessRefused):
        conn.connect()
