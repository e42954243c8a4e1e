"""sd_notify: the daemon's READY/WATCHDOG messages reach a real Unix datagram socket."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from station import sdnotify


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket playing systemd, with $NOTIFY_SOCKET pointing at it."""
    # Short directory: AF_UNIX paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        path = Path(tmp) / "notify"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        try:
            yield sock
        finally:
            sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_is_a_noop_returning_false_without_notify_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False


def test_notify_returns_false_when_the_socket_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock")
    assert sdnotify.notify("READY=1") is False


def test_ready_sends_ready_1_with_mainpid(notify_socket: socket.socket) -> None:
    assert sdnotify.ready() is True
    message = _recv(notify_socket).split("\n")
    assert "READY=1" in message
    assert f"MAINPID={os.getpid()}" in message


def test_status_and_stopping_are_sent_as_single_datagrams(notify_socket: socket.socket) -> None:
    assert sdnotify.status("charging\non 2 connectors")
    assert _recv(notify_socket) == "STATUS=charging on 2 connectors"
    assert sdnotify.stopping()
    assert _recv(notify_socket) == "STOPPING=1"


def test_abstract_namespace_socket_is_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"station-test-{os.getpid()}-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1")
        assert _recv(sock) == "READY=1"


def test_watchdog_interval_is_half_of_watchdog_usec(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 15.0


def test_watchdog_is_disabled_for_another_watchdog_pid(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
    assert sdnotify.Watchdog.from_env() is None


def test_watchdog_is_disabled_without_watchdog_usec(notify_socket: socket.socket) -> None:
    assert sdnotify.Watchdog.from_env() is None


async def test_watchdog_pings_from_the_event_loop_until_stopped(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # 10 ms between pings
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    watchdog = sdnotify.Watchdog.from_env()
    assert watchdog is not None and watchdog.interval == 0.01
    notify_socket.setblocking(False)
    loop = asyncio.get_running_loop()
    watchdog.start()
    try:
        for _ in range(3):
            data = await asyncio.wait_for(loop.sock_recv(notify_socket, 4096), timeout=5)
            assert data == b"WATCHDOG=1"
    finally:
        await watchdog.stop()
    assert watchdog._task is None
