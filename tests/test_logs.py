"""Logging: JSON lines off a terminal, secrets redacted wherever they appear."""

from __future__ import annotations

import io
import json
import logging

import structlog

from station import logs

CANARY = "canary-S3cret-42"


def capture() -> io.StringIO:
    stream = io.StringIO()
    logs.register_secrets([CANARY])
    logs.configure("auto", "info", stream=stream)
    return stream


def test_non_terminal_output_is_json_lines() -> None:
    stream = capture()
    structlog.get_logger("t").info("hello", n=1)
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["event"] == "hello" and record["n"] == 1 and record["level"] == "info"


def test_secret_inside_any_value_is_redacted() -> None:
    stream = capture()
    structlog.get_logger("t").info("connecting", url=f"ws://id:{CANARY}@h/", extra={"nested": [CANARY]})
    assert CANARY not in stream.getvalue()
    assert "***" in stream.getvalue()


def test_secret_named_fields_are_redacted() -> None:
    stream = capture()
    structlog.get_logger("t").info("x", password="whatever", api_token="abc")
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["password"] == "***" and record["api_token"] == "***"


def test_secret_in_an_exception_is_redacted() -> None:
    stream = capture()
    try:
        raise ValueError(f"login failed for {CANARY}")
    except ValueError:
        structlog.get_logger("t").exception("failed")
    assert CANARY not in stream.getvalue()


def test_library_logs_through_stdlib_are_redacted() -> None:
    stream = capture()
    logging.getLogger("websockets.client").warning("header %s", CANARY)
    assert CANARY not in stream.getvalue()
    assert "header ***" in stream.getvalue()
