"""A real IpcServer serving a real StationCore over a real SQLite file, and the real API under uvicorn.

The recording controller (tests/core_helpers.py) stands in for the ESP32 so that a test
can plug a vehicle in; `facts` is what the daemon would report about its own links.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.settings import ApiSettings, load
from station.core.clock import Clock
from station.core.station import StationCore
from station.core.store import Store
from station.ipc.server import IpcServer
from tests.core_helpers import RecordingController

TOKEN = "canary-api-token-7c1f-long-enough"


def daemon_facts(**overrides: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "station_id": "TEST_STATION_1",
        "software_version": "0.1.0",
        "uptime_s": 12.5,
        "ocpp": {"connected": True, "version": "201", "url": "ws://127.0.0.1:9/ocpp/TEST_STATION_1",
                 "last_error": None, "reconnects": 2, "last_sent_at": None, "last_received_at": None},
        "esp32": {"1": {"port": "/dev/pts/9", "link_up": True, "firmware": "1.4.2",
                        "stats": {"frames_ok": 100, "frames_rejected": 3, "bytes_discarded": 17}}},
        "meter": None,
    }
    facts.update(overrides)
    return facts


class Daemon:
    """The daemon's IPC face over a real core; `start()`/`stop()` simulate the process going up and down."""

    def __init__(self, state_dir: Path, socket_path: Path, *, probe: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.store = Store(state_dir / "station.db")
        self.core = StationCore(store=self.store, clock=Clock(trusted=True))
        # No CSMS here: a technician's start with any token is allowed as OfflineTxForUnknownIdEnabled allows it.
        self.core.auth.settings.set("AuthCtrlr", "OfflineTxForUnknownIdEnabled", True)  # type: ignore[attr-defined]
        self.esp = RecordingController(self.core)
        self.core.attach_controller(1, self.esp)
        self.facts = daemon_facts()
        self.socket_path = socket_path
        self.probe = probe
        self.server: IpcServer | None = None

    def link_up(self) -> None:
        self.core.on_controller_status(1, self.esp.current)

    async def start(self) -> IpcServer:
        self.server = IpcServer(self.socket_path, self.core, status=lambda: dict(self.facts), probe=self.probe)
        await self.server.start()
        return self.server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def close(self) -> None:
        await self.stop()
        await self.core.close()
        self.store.close()


def settings_for(tmp_path: Path, socket_path: Path, *, token: str | None = TOKEN, **values: str) -> ApiSettings:
    """The API's settings as `station-api` loads them (station.config.load_api); `values` by field name."""
    cli: dict[str, Any] = {
        "ipc_socket": socket_path,
        "api_bind": "127.0.0.1:8080",  # not used: tests hand uvicorn a bound socket
        "api_token": token or "",
        **values,
    }
    return load(cli, os.devnull)


@contextlib.asynccontextmanager
async def serve_api(settings: ApiSettings) -> AsyncIterator[str]:
    """The real app under uvicorn on 127.0.0.1, on a port the kernel picked; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # asyncio sets TCP_NODELAY only on sockets it creates; without it every keep-alive answer
    # waits ~40 ms for a delayed ACK (Nagle). Accepted sockets inherit the option on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(settings)
    app.state.link.retry_max_s = 0.5  # tests wait for reconnection; keep the backoff short
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started or task.done(), what="uvicorn start")
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def wait_for(condition: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy (sync or async); fail with `what` after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def sse_events(client: httpx.AsyncClient, url: str, into: list[dict[str, Any]]) -> None:
    """Collect SSE events (event name + JSON data) from `url` into `into` until cancelled."""
    import json

    async with client.stream("GET", url, timeout=None) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name, data = None, []
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data.append(line.partition(":")[2].strip())
            elif line == "" and data:
                into.append({"event": name, "data": json.loads("\n".join(data))})
                name, data = None, []


# --- fixtures (import them into a test module to use them) ---------------------------
@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "station.sock"


@pytest.fixture
async def daemon(tmp_path: Path, sock_path: Path) -> AsyncIterator[Daemon]:
    d = Daemon(tmp_path, sock_path)
    d.link_up()
    await d.start()
    yield d
    await d.close()


@pytest.fixture
async def api(tmp_path: Path, sock_path: Path, daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the real API (under uvicorn) in front of the real daemon side."""
    async with serve_api(settings_for(tmp_path, sock_path)) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        await wait_for(lambda: _reachable(c), what="API sees the daemon")
        yield c


async def _reachable(c: httpx.AsyncClient) -> bool:
    return bool((await c.get("/health")).json()["daemon"]["reachable"])
