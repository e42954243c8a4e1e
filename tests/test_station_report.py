"""`station report`: the diagnostics archive written locally, with and without the daemon."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import tarfile
from pathlib import Path

from station.diagnostics.archive import bounded_lines
from station.diagnostics.recorder import FlightRecorder
from tests.e2e import CANARY_PASSWORD, STATION_ID, running_station


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, mode="r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


async def report(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "station", "report", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def offline_env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    return {**base, "STATION_ENV_FILE": os.devnull, "OCPP_STATION_NAME": STATION_ID, "OCPP_201_URL": "ws://127.0.0.1:9/",
            "OCPP_STATION_PASSWORD": CANARY_PASSWORD, "STATION_STATE_DIR": str(tmp_path / "state"),
            "STATION_IPC_SOCKET": str(tmp_path / "absent.sock"), "STATION_LOG_FILE": str(tmp_path / "station.log")}


async def test_report_without_the_daemon_archives_what_is_on_disk(tmp_path: Path) -> None:
    recorder = FlightRecorder(tmp_path / "state" / "flight-recorder")
    recorder.record("esp32-1", "rx", "S,A,1")
    recorder.close()
    (tmp_path / "station.log").write_text('{"event": "station starting", "timestamp": "2099-01-01T00:00:00Z"}\n'
                                          '{"event": "recent line", "timestamp": "%s"}\n' % "2026-11-30T00:00:00Z")
    code, out, err = await report(offline_env(tmp_path), "--out", str(tmp_path / "report.tar.gz"), "--since", "all")
    assert code == 0, err
    content = members(tmp_path / "report.tar.gz")
    assert json.loads(content["state.json"])["daemon"].startswith("not running")
    assert b"esp32-1 rx S,A,1" in content["flight-recorder.log"]
    assert b"recent line" in content["station.log"]
    assert CANARY_PASSWORD.encode() not in b"".join(content.values())
    assert "without the daemon" in out


async def test_report_with_the_daemon_running_holds_its_state_and_fresh_frames(tmp_path: Path) -> None:
    async with running_station(tmp_path, STATION_LOG_FILE=str(tmp_path / "daemon.log"),
                               OCPP_STATION_PASSWORD=CANARY_PASSWORD) as (csms, _sim, daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        (tmp_path / "out").mkdir()
        code, out, err = await report(daemon.env, "--out", str(tmp_path / "out") + "/")
    assert code == 0, err
    [archive] = list((tmp_path / "out").glob("*.tar.gz"))
    content = members(archive)
    assert json.loads(content["state.json"])["connectors"][0]["id"] == 1
    assert b" ocpp out StatusNotification " in content["flight-recorder.log"]
    assert b"station starting" in content["station.log"]
    assert CANARY_PASSWORD.encode() not in b"".join(content.values())
    assert "from the running daemon" in out


async def test_report_refuses_a_time_it_cannot_read(tmp_path: Path) -> None:
    code, _out, err = await report(offline_env(tmp_path), "--since", "yesterday-ish")
    assert code == 2 and "neither a duration" in err


async def test_report_of_the_security_log_without_the_daemon_reads_the_state_database(tmp_path: Path) -> None:
    from station.core.clock import Clock
    from station.core.events import EventBus
    from station.core.security_events import SecurityEventLog
    from station.core.store import Store

    (tmp_path / "state").mkdir()
    store = Store(tmp_path / "state" / "station.db")
    SecurityEventLog(store, Clock(), EventBus()).record("ResetOrReboot", "technician test")
    store.close()
    code, _out, err = await report(offline_env(tmp_path), "--security", "--out", str(tmp_path / "sec.tar.gz"))
    assert code == 0, err
    content = members(tmp_path / "sec.tar.gz")
    assert set(content) == {"manifest.json", "security.log"}
    assert b"ResetOrReboot critical technician test" in content["security.log"]


def test_an_over_long_line_is_cut_and_the_lines_after_it_still_read() -> None:
    raw = io.BytesIO(b"first\n" + b"x" * 100 + b"\nafter\n")
    assert list(bounded_lines(raw, line_cap=10)) == ["first\n", "x" * 10 + "\n", "after\n"]


def test_only_the_first_cap_bytes_of_a_file_are_read() -> None:
    assert list(bounded_lines(io.BytesIO(b"one\ntwo\nthree\n"), cap=8)) == ["one\n", "two\n"]
