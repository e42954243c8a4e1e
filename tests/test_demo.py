"""`make demo` as a newcomer runs it, bounded by DEMO_SECONDS: every process starts, a session completes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from station.devtools.demo import free_port


@pytest.mark.parametrize("version", ["201", "16"])
def test_demo_plays_a_complete_session_and_exits_zero(version: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    env.update({"DEMO_SECONDS": "20", "OCPP_PRIMARY": version})
    result = subprocess.run([sys.executable, "-m", "station", "demo"], env=env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "OK: boot, status, heartbeat and a complete, metered transaction reached the CSMS" in out
    assert "status page: http://127.0.0.1:" in out
    assert re.search(r'Authorization: Bearer \$\(cat /\S+/api-token\)', out), out  # the path, not the token
    started = "TransactionEvent Started" if version == "201" else "← StartTransaction"
    ended = "TransactionEvent Ended" if version == "201" else "← StopTransaction"
    assert out.index(started) < out.index(ended)
    assert "connector 1 → Charging" in out


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
async def test_stopping_the_demo_with_a_signal_leaves_no_process_port_or_directory(sig: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_", "DEMO_"))}
    wanted = free_port()  # not 8080: another program (another demo) may hold it
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "demo", "--api-port", str(wanted), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert demo.stdout is not None
    out: list[str] = []
    children: list[int] = []
    rest = b""
    try:
        async with asyncio.timeout(60):
            while not all(any(mark in line for line in out)
                          for mark in ("working directory", "status page: http", "connector 1 → Available")):
                line = (await demo.stdout.readline()).decode()
                assert line, "".join(out)
                out.append(line)
        workdir = Path(re.search(r"working directory (\S+)", "".join(out)).group(1))  # type: ignore[union-attr]
        api_port = int(re.search(r"status page: http://127\.0\.0\.1:(\d+)/", "".join(out)).group(1))  # type: ignore[union-attr]
        children = _children(demo.pid)
        assert len(children) == 4, children  # meter and ESP32 simulators, station, API
        demo.send_signal(sig)
        rest, _ = await asyncio.wait_for(demo.communicate(), 30)
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
        left = [pid for pid in children if _alive(pid)]
        for pid in left:  # the test's own clean-up: a failing demo must not leave them to the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert demo.returncode == 0, "".join(out) + rest.decode()
    assert f"stopping every process ({sig.name})" in rest.decode()
    assert not left, left
    assert not workdir.exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", api_port)) != 0  # nobody listens on the API's port any more


async def test_the_demo_moves_the_api_to_another_port_when_its_port_was_taken_in_between(tmp_path: Path) -> None:
    """free_port said 8080 was free; another program bound it before the API did."""
    from station.devtools.demo import Demo

    demo = Demo(version="201", seconds=None, workdir=tmp_path)
    env = {"STATION_ENV_FILE": os.devnull, "OCPP_STATION_NAME": "DEMO", "OCPP_201_URL": "ws://127.0.0.1:9/",
           "STATION_IPC_SOCKET": str(tmp_path / "station.sock"), "STATION_API_TOKEN": "t" * 32}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        try:
            port = await demo.start_api(env, busy)
            assert port != busy
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.0\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 ")
            writer.close()
            assert [c.name for c in demo.children] == ["api"]
        finally:
            await demo.stop_all()


async def _run(command: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*shlex.split(command), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_every_command_the_demo_prints_reaches_the_running_demo() -> None:
    """The README's tour: `station status`, `--once`, `dev-csms call` and `station-api`, typed as printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_", "DEMO_"))}
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "demo", "--api-port", "0", env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert demo.stdout is not None
    out: list[str] = []
    try:
        async with asyncio.timeout(60):
            while sum("station-api" in line for line in out if " $ " in line) == 0:
                line = (await demo.stdout.readline()).decode()
                assert line, "".join(out)
                out.append(line)
        commands = [line.split(" $ ", 1)[1].split("   (")[0].strip() for line in out if " $ " in line]
        status, once, call, api = commands
        assert status.endswith(" status") and once.endswith(" --once") and " dev-csms call " in call

        code, text, err = await _run(status)
        assert code == 0, err
        assert "station DEMO_AC_001" in text and "CSMS: connected" in text
        code, text, err = await _run(once)
        assert code == 0, text + err
        assert json.loads(text)["mode"] == "daemon"
        code, text, err = await _run(call)
        assert code == 0, err
        assert '"action": "NotifyReport"' in text

        port = int(re.search(r"--bind 127\.0\.0\.1:(\d+)", api).group(1))  # type: ignore[union-attr]
        second = await asyncio.create_subprocess_exec(*shlex.split(api), stdin=asyncio.subprocess.DEVNULL,
                                                      stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            answer = b""
            async with asyncio.timeout(30):
                while b'"reachable":true' not in answer:
                    await asyncio.sleep(0.2)
                    with contextlib.suppress(OSError):
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                        writer.write(b"GET /health HTTP/1.0\r\n\r\n")
                        answer = await reader.read()
                        writer.close()
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.wait(), 30)
    finally:
        demo.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(demo.communicate(), 30)
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
    assert demo.returncode == 0
