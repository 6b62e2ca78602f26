"""Structured logs: JSON lines with the configured level, and never a message body or a token,
even at DEBUG."""
from __future__ import annotations

import io
import logging
import signal
import sys
import uuid

import orjson

from switchboard.config import LogConfig
from switchboard.logs import JsonFormatter, setup
from switchboard.proto.v1 import client_pb2 as pb
from tests.ops.node import Node
from tests.support.raw import RawClient
from tests.support.rawflow import direct, receive_and_ack, request, send


def test_json_formatter_keeps_extras_and_tracebacks():
    record = logging.LogRecord("switchboard.x", logging.WARNING, __file__, 1, "closed %s", ("a",),
                               None)
    record.user = "alice"
    line = orjson.loads(JsonFormatter("n3").format(record))
    assert (line["level"], line["node"], line["logger"], line["msg"], line["user"]) == (
        "WARNING", "n3", "switchboard.x", "closed a", "alice")
    assert line["ts"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in orjson.loads(JsonFormatter("n3").format(record))["exc"]


def test_setup_quiets_per_connection_lines_unless_debug():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("picows").level)
    try:
        stream = io.StringIO()
        setup(LogConfig(level="INFO", format="json"), "n0", stream)
        assert logging.getLogger("picows").level == logging.WARNING
        logging.getLogger("switchboard.test").info("hello %d", 1)
        logging.getLogger("switchboard.test").debug("not shown")
        assert [orjson.loads(line)["msg"] for line in stream.getvalue().splitlines()] == ["hello 1"]
        text = io.StringIO()
        setup(LogConfig(level="DEBUG", format="text"), "host-a-w1", text)
        assert logging.getLogger("picows").level == logging.DEBUG
        logging.getLogger("switchboard.test").info("hello %d", 2)
        assert text.getvalue().split()[2:5] == ["INFO", "host-a-w1", "switchboard.test:"]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("picows").setLevel(saved[2])


async def test_no_body_or_token_in_any_log_line_at_debug(tmp_path):
    secret_text = f"body-{uuid.uuid4().hex}"
    node = await Node(tmp_path / "data", env={"SWITCHBOARD_LOG_LEVEL": "DEBUG"}).start()
    try:
        alice_token = node.token("alice")
        alice = await RawClient.connect(node.url, alice_token)
        await alice.recv("welcome")
        bob = await RawClient.connect(node.url)  # authenticates with an Auth frame instead
        bob.send(auth=pb.Auth(token=node.token("bob")))
        await bob.recv("welcome")
        chat = await direct(alice, "bob")
        await send(alice, chat, secret_text.encode())
        [got] = await receive_and_ack(bob, 1)
        assert got.body == secret_text.encode()
        history = await request(bob, history=pb.History(chat_id=chat, limit=10))
        assert history.history_page.messages[0].body == secret_text.encode()
        bob.send_bytes(b"\xff" + secret_text.encode())  # malformed: closed 4000, and logged?
        await bob.closed()
        node.signal(signal.SIGTERM)
        assert await node.wait(15) == 0
    finally:
        node.stop()
    raw = node.log_path.read_bytes()
    lines = raw.decode().splitlines()
    assert any(orjson.loads(line)["level"] == "DEBUG" for line in lines)  # close reasons
    assert {orjson.loads(line)["node"] for line in lines} == {"n0"}  # every line names it
    assert any("New connection accepted" in line for line in lines)  # picows, DEBUG only
    for line in lines:
        assert set(orjson.loads(line)) >= {"ts", "level", "logger", "msg"}
    assert secret_text.encode() not in raw
    assert secret_text.encode().hex().encode() not in raw
    assert alice_token.encode() not in raw
