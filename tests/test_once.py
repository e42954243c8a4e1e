"""`station --once` as a technician runs it: a subprocess, one JSON document, a meaningful exit code."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from station import exitcodes
from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms
from tests.e2e import CANARY_PASSWORD, STATION_ID, DaemonProcess, station_env

REQUIRED_KEYS = {
    "ok", "station_id", "software_version", "ocpp", "messages", "esp32", "checks", "duration_ms",
    "station_name", "endpoint", "subprotocol", "run_started_utc", "run_finished_utc",
}


async def run_once(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "--once", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert CANARY_PASSWORD not in out.decode() + err.decode()
    report = json.loads(out)  # exactly one JSON document, nothing else
    assert proc.returncode == report["exit_code"]
    return proc.returncode, report, err.decode()


def checks(report: dict[str, Any]) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in report["checks"]}


def actions(report: dict[str, Any]) -> list[str]:
    return [m["action"] for m in report["messages"]]


@pytest.mark.parametrize("version", ["201", "16"])
async def test_once_without_daemon_boots_reports_and_exits_zero(tmp_path: Path, version: str) -> None:
    async with DevCsms() as csms, SimulatorProcess(tmp_path) as sim:
        env = station_env(tmp_path, csms, sim.port, OCPP_PRIMARY=version, OCPP_STATION_PASSWORD=CANARY_PASSWORD)
        code, report, _ = await run_once(env)
    assert code == exitcodes.OK, report
    assert REQUIRED_KEYS <= report.keys()
    assert report["mode"] == "standalone"
    assert report["subprotocol"] == ("ocpp2.0.1" if version == "201" else "ocpp1.6")
    assert {"BootNotification", "StatusNotification", "Heartbeat"} <= set(actions(report))
    boot = report["messages"][0]
    assert boot["response_summary"]["status"] == "Accepted" and boot["unique_id"] and boot["utc"]
    assert report["esp32"]["link_up"] is True
    assert {"config", "csms", "esp32", "clock", "disk", "offline_queue", "power"} <= checks(report).keys()


@pytest.mark.parametrize("version", ["201", "16"])
async def test_once_with_daemon_asks_the_daemon_and_keeps_its_csms_connection(tmp_path: Path, version: str) -> None:
    async with DevCsms(heartbeat_interval=30) as csms, SimulatorProcess(tmp_path) as sim:
        env = station_env(tmp_path, csms, sim.port, OCPP_STATION_PASSWORD=CANARY_PASSWORD, OCPP_PRIMARY=version)
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        try:
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            heartbeats_before = len(csms.calls("Heartbeat", STATION_ID))
            code, report, _ = await run_once(env)
            assert code == exitcodes.OK, report
            assert report["mode"] == "daemon"
            assert report["subprotocol"] == ("ocpp2.0.1" if version == "201" else "ocpp1.6")
            assert {"BootNotification", "StatusNotification", "Heartbeat"} <= set(actions(report))
            assert len(csms.calls("Heartbeat", STATION_ID)) == heartbeats_before + 1
            assert len(csms.calls("BootNotification", STATION_ID)) == 1
            assert csms.connected(STATION_ID)
        finally:
            await daemon.stop()
        assert CANARY_PASSWORD not in daemon.log()


async def test_once_with_csms_down_exits_csms_unreachable(tmp_path: Path) -> None:
    csms = DevCsms()
    await csms.start()
    await csms.stop()  # keep its URL, nobody listening
    async with SimulatorProcess(tmp_path) as sim:
        code, report, _ = await run_once(station_env(tmp_path, csms, sim.port), "--timeout", "8")
    assert code == exitcodes.CSMS_UNREACHABLE
    assert checks(report)["csms"] is False and report["ok"] is False


async def test_once_with_wrong_password_exits_auth_failed(tmp_path: Path) -> None:
    async with DevCsms(passwords={STATION_ID: "the-right-one"}) as csms, SimulatorProcess(tmp_path) as sim:
        env = station_env(tmp_path, csms, sim.port, OCPP_STATION_PASSWORD=CANARY_PASSWORD)
        code, report, _ = await run_once(env)
    assert code == exitcodes.AUTH_FAILED
    assert next(c for c in report["checks"] if c["name"] == "csms")["kind"] == "auth_failed"


async def test_once_without_esp32_exits_esp32_unreachable(tmp_path: Path) -> None:
    async with DevCsms() as csms:
        code, report, _ = await run_once(station_env(tmp_path, csms, tmp_path / "no-such-tty"))
    assert code == exitcodes.ESP32_UNREACHABLE
    assert report["esp32"]["link_up"] is False
    assert checks(report)["csms"] is True


async def test_once_with_broken_config_exits_78_and_still_prints_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    env.update({"STATION_ENV_FILE": os.devnull, "OCPP_STATION_NAME": STATION_ID, "OCPP_201_URL": "http://x/"})
    code, report, err = await run_once(env)
    assert code == exitcodes.CONFIG
    assert checks(report)["config"] is False
    assert "OCPP_201_URL" in next(c["detail"] for c in report["checks"] if c["name"] == "config")
