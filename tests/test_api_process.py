"""`station-api` as a process: what it says and how it exits when it cannot run, and how it stops."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from station.exitcodes import CANNOT_LISTEN
from station.devtools.demo import free_port
from tests.station_rig import TOKEN, wait_for
from tests.test_api_e2e import started_api

CONFIG = 78


def env_for(tmp_path: Path, **values: str) -> dict[str, str]:
    """Only what station-api uses: no station name, no CSMS URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    env.update({"STATION_ENV_FILE": os.devnull, "STATION_IPC_SOCKET": str(tmp_path / "none.sock"),
                "STATION_API_BIND": f"127.0.0.1:{free_port()}", "STATION_API_TOKEN": TOKEN, **values})
    return env


async def run_api(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "api", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                stdin=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("station-api did not exit") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines()


async def test_a_taken_port_exits_69_with_one_line_naming_the_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = await run_api(env_for(tmp_path), "--bind", f"127.0.0.1:{port}")
    assert code == CANNOT_LISTEN == 69
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"station-api: cannot listen on 127.0.0.1:{port}: Address already in use")


async def test_an_address_not_on_this_machine_exits_69(tmp_path: Path) -> None:
    code, lines = await run_api(env_for(tmp_path), "--bind", "192.0.2.1:8080")
    assert code == 69 and len(lines) == 1 and "cannot listen on 192.0.2.1:8080" in lines[0], lines


async def test_a_short_token_is_refused_at_start_with_exit_78_naming_the_setting(tmp_path: Path) -> None:
    secret = "short-token-123"
    code, lines = await run_api(env_for(tmp_path, STATION_API_TOKEN=secret))
    assert code == CONFIG
    assert len(lines) == 1, lines
    assert lines[0].startswith("config error: STATION_API_TOKEN='***': too short (15 characters): "
                               "at least 24")
    assert secret not in lines[0]


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.1:99999", "127.0.0.1:http", ":8080"])
async def test_a_bad_bind_setting_is_one_line_and_exit_78(tmp_path: Path, bind: str) -> None:
    code, lines = await run_api(env_for(tmp_path, STATION_API_BIND=bind))
    assert code == CONFIG and lines == [f"config error: STATION_API_BIND='{bind}': "
                                        "expected host:port with a port from 1 to 65535, e.g. 127.0.0.1:8080"]


async def test_a_bad_bind_flag_is_one_line_and_exit_78(tmp_path: Path) -> None:
    code, lines = await run_api(env_for(tmp_path), "--bind", "127.0.0.1:99999")
    assert code == CONFIG and len(lines) == 1 and "STATION_API_BIND='127.0.0.1:99999'" in lines[0]


async def test_the_api_runs_without_a_station_name_or_csms_url(tmp_path: Path) -> None:
    async with started_api(env_for(tmp_path), tmp_path / "api.log") as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/health")).json()["daemon"]["reachable"] is False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_api_while_a_client_holds_the_event_stream(tmp_path: Path, sig: signal.Signals) -> None:
    async with started_api(env_for(tmp_path), tmp_path / "api.log") as (url, proc):
        async with httpx.AsyncClient(base_url=url, timeout=None) as client:
            async with client.stream("GET", "/events") as stream:
                lines = stream.aiter_lines()
                await wait_for(lambda: anext(lines), what="the first event")
                proc.send_signal(sig)
                # A stop asked for, not a kill: exit 0 (uvicorn would end the process by raising the signal again).
                assert await asyncio.wait_for(proc.wait(), 15) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_while_the_api_starts_stops_it_with_exit_0(tmp_path: Path, sig: signal.Signals) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "api", env=env_for(tmp_path),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL)
    assert proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b'"listening"' in line, line  # the app and the server are still to be built
        proc.send_signal(sig)
        rest = await asyncio.wait_for(proc.stderr.read(), 15)
        assert await proc.wait() == 0, rest
        assert b'"signal": "%s", "event": "stopped"' % sig.name.encode() in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
