"""A hostile local process against the real `station-api`: slow clients, a foreign Host, token guessing.

Every probe runs on loopback against the API started as systemd starts it (its own process), or
against the real app under uvicorn when only the gate is under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.guard import TokenBackoff
from station.devtools.demo import free_port
from tests.station_rig import TOKEN, Daemon, api, auth, daemon, serve_api, settings_for, sock_path, wait_for  # noqa: F401
from tests.test_api_e2e import started_api

assert api and daemon and sock_path

SLOW_CLIENTS = 1100
HEADER_LINE_EVERY_S = 10


def api_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    env.update({"STATION_ENV_FILE": os.devnull, "STATION_API_BIND": f"127.0.0.1:{port}", "STATION_API_TOKEN": TOKEN,
                "STATION_IPC_SOCKET": str(tmp_path / "none.sock"), "STATION_LOG_FORMAT": "json"})
    return env


@contextlib.asynccontextmanager
async def api_under_1024_descriptors(tmp_path: Path) -> AsyncIterator[str]:
    """`station-api` started with soft and hard RLIMIT_NOFILE 1,024 (systemd's default soft limit)."""
    command = ("bash", "-c", f'ulimit -n 1024 && exec "{sys.executable}" -m api')
    async with started_api(api_env(tmp_path, free_port()), tmp_path / "api.log", command) as (url, _):
        yield url


async def health_within_2_s(url: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=2.0) as client:
        return (await client.get("/health")).status_code


async def test_health_answers_within_2_s_while_1100_slow_clients_hold_connections(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < SLOW_CLIENTS + 200:
        pytest.skip(f"this process may open only {hard} descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets: list[socket.socket] = []
    try:
        async with api_under_1024_descriptors(tmp_path) as url:
            port = int(url.rpartition(":")[2])
            for n in range(SLOW_CLIENTS):  # the request line and a first header line, never the end
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", port))
                sockets.append(s)
                if n % 50 == 49:
                    await asyncio.sleep(0.05)  # let the connections complete (the listen backlog is 2,048)
            await asyncio.sleep(0.5)
            for s in sockets:
                with contextlib.suppress(OSError):
                    s.send(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert await health_within_2_s(url) == 200
            await asyncio.sleep(HEADER_LINE_EVERY_S)
            for n, s in enumerate(sockets):  # those the API has not dropped yet send their next line
                with contextlib.suppress(OSError):
                    s.send(f"X-Slow-{n}: 1\r\n".encode())
            assert await health_within_2_s(url) == 200
    finally:
        for s in sockets:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_request_whose_headers_never_end_is_closed(tmp_path: Path) -> None:
    async with api_under_1024_descriptors(tmp_path) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rpartition(":")[2]))
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed by the API, nothing answered
        writer.close()


async def test_a_request_whose_body_never_ends_is_closed(tmp_path: Path) -> None:
    async with api_under_1024_descriptors(tmp_path) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rpartition(":")[2]))
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nx")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed by the API, nothing answered
        writer.close()


async def test_event_streams_are_bounded_so_they_cannot_fill_the_connections(api: httpx.AsyncClient) -> None:
    from api.app import MAX_EVENT_STREAMS

    port = api.base_url.port
    streams = []
    try:
        for _ in range(MAX_EVENT_STREAMS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            streams.append(writer)
        response = await api.get("/events")
        assert response.status_code == 503 and "too many open event streams" in response.json()["detail"]
        assert (await api.get("/health")).status_code == 200
    finally:
        for writer in streams:
            writer.close()


@pytest.mark.parametrize("host", ["evil.attacker.example", "evil.attacker.example:8080", "192.0.2.7"])
async def test_a_request_for_another_host_name_is_refused(api: httpx.AsyncClient, host: str) -> None:
    for path in ("/status", "/device-model", "/transactions", "/events/recent", "/health"):
        response = await api.get(path, headers={"Host": host})
        assert response.status_code == 400, path
    assert (await api.put("/connectors/1/availability", json={"operative": False},
                          headers={**auth(), "Host": host})).status_code == 400


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST"])
async def test_loopback_host_names_are_answered(api: httpx.AsyncClient, host: str) -> None:
    assert (await api.get("/status", headers={"Host": host})).status_code == 200


async def test_an_http_1_0_request_without_a_host_header_is_answered(api: httpx.AsyncClient) -> None:
    """A health check such as `printf 'GET /health HTTP/1.0\\r\\n\\r\\n' | nc`: no browser omits Host."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api.base_url.port)
    writer.write(b"GET /health HTTP/1.0\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer


async def test_an_http_1_1_request_without_a_host_header_is_refused(api: httpx.AsyncClient) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.base_url.port)
    writer.write(b"GET /status HTTP/1.1\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400")


async def test_the_configured_bind_name_is_answered(tmp_path: Path, sock_path: Path, daemon: Daemon) -> None:
    settings = settings_for(tmp_path, sock_path, api_bind="station-0042.local:8080")
    async with serve_api(settings) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/health", headers={"Host": "station-0042.local:8080"})).status_code == 200
        assert (await client.get("/health", headers={"Host": "station-0043.local"})).status_code == 400


async def test_host_names_configured_for_a_maintenance_network_are_answered(
    tmp_path: Path, sock_path: Path, daemon: Daemon
) -> None:
    settings = settings_for(tmp_path, sock_path, api_bind="0.0.0.0:8080", api_hosts="192.168.7.20, station-0042.lan")
    async with serve_api(settings) as url, httpx.AsyncClient(base_url=url) as client:
        for host in ("192.168.7.20:8080", "station-0042.lan", "127.0.0.1:8080"):
            assert (await client.get("/health", headers={"Host": host})).status_code == 200, host
        assert (await client.get("/health", headers={"Host": "0.0.0.0:8080"})).status_code == 400


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_tokens_make_the_clients_next_check_wait_doubling_up_to_4_s() -> None:
    clock = Clock()
    backoff = TokenBackoff(clock=clock)
    waits = []
    for _ in range(8):
        backoff.failed("127.0.0.1")
        waits.append(backoff.wait_s("127.0.0.1"))
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 4.0, 4.0])


def test_thousands_of_wrong_tokens_keep_the_wait_at_4_s() -> None:
    backoff = TokenBackoff(clock=Clock())
    for _ in range(5000):
        backoff.failed("127.0.0.1")
    assert backoff.wait_s("127.0.0.1") == pytest.approx(4.0)


def test_another_clients_wrong_tokens_do_not_delay_a_client() -> None:
    backoff = TokenBackoff(clock=Clock())
    for _ in range(10):
        backoff.failed("127.0.0.2")
    assert backoff.wait_s("127.0.0.1") == 0.0


def test_the_wait_ends_with_the_lockout_and_is_forgotten_after_a_quiet_minute() -> None:
    clock = Clock()
    backoff = TokenBackoff(clock=clock)
    for _ in range(10):
        backoff.failed("127.0.0.1")
    clock.now += 1.0
    assert backoff.wait_s("127.0.0.1") == pytest.approx(3.0)
    clock.now += 61
    assert backoff.wait_s("127.0.0.1") == 0.0
    backoff.failed("127.0.0.1")
    assert backoff.wait_s("127.0.0.1") == pytest.approx(0.1)  # a new burst starts again at the bottom


async def test_requests_waiting_out_a_lockout_are_bounded_and_health_still_answers(
    tmp_path: Path, sock_path: Path, daemon: Daemon
) -> None:
    from api.app import create_app  # noqa: F401 — serve_api builds it; the backoff is injected below
    from tests import station_rig

    backoff = TokenBackoff(base_s=2.0, cap_s=2.0, max_waiting=2)
    original = station_rig.create_app
    station_rig.create_app = lambda settings: original(settings, backoff=backoff)  # type: ignore[assignment]
    try:
        async with serve_api(settings_for(tmp_path, sock_path)) as url, \
                httpx.AsyncClient(base_url=url, timeout=10) as client:
            wrong = auth("wrong-token-padded-to-24-characters")
            assert (await client.post("/connectors/1/unlock", headers=wrong)).status_code == 401  # lockout: 2 s
            answers = await asyncio.gather(*(client.post("/connectors/1/unlock", headers=wrong) for _ in range(3)),
                                           client.get("/health"))
            assert sorted(r.status_code for r in answers) == [200, 401, 401, 503]
            (busy,) = [r for r in answers if r.status_code == 503]
            assert busy.headers["retry-after"] == "2" and "retry" in busy.json()["detail"]
    finally:
        station_rig.create_app = original  # type: ignore[assignment]


async def test_the_right_token_is_accepted_while_another_process_keeps_guessing(
    api: httpx.AsyncClient, daemon: Daemon
) -> None:
    """Both clients are 127.0.0.1, as every local process on a station is: the guesser cannot lock the technician out."""
    guessing = True

    async def guesser() -> None:
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=10) as other:
            n = 0
            while guessing:
                await asyncio.gather(*(other.put("/connectors/1/limit", json={"amps": 6},
                                                 headers=auth(f"guess-{n}-{i}-padding-to-24-chars")) for i in range(5)))
                n += 1

    task = asyncio.ensure_future(guesser())
    try:
        await asyncio.sleep(1.0)  # several failures in: the lockout is at work
        for _ in range(3):
            response = await api.put("/connectors/1/limit", json={"amps": 16}, headers=auth())
            assert response.status_code == 200, response.text
        assert daemon.core.connectors[1].limits["local"] == 16
    finally:
        guessing = False
        await task
