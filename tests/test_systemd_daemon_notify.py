"""The real `station run` tells systemd it is ready and keeps pinging the watchdog from its loop."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path

from tests.e2e import running_station


async def test_daemon_sends_ready_then_watchdog_pings(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sdn") as short:
        path = Path(short) / "notify"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            async with running_station(tmp_path, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000") as (
                csms, _sim, daemon,
            ):
                messages: list[str] = []
                async with asyncio.timeout(20):
                    while not (any("READY=1" in m for m in messages)
                               and sum("WATCHDOG=1" in m for m in messages) >= 2):
                        messages.append((await loop.sock_recv(sock, 4096)).decode())
                ready_at = next(i for i, m in enumerate(messages) if "READY=1" in m)
                assert any("WATCHDOG=1" in m for m in messages[ready_at:])
                stopping = asyncio.create_task(daemon.stop())
                async with asyncio.timeout(10):
                    while not any("STOPPING=1" in m for m in messages):
                        messages.append((await loop.sock_recv(sock, 4096)).decode())
                await stopping
        finally:
            sock.close()
