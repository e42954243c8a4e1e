"""`station --once` as a technician runs it: a subprocess, one JSON document, a meaningful exit code."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from station import exitcodes
from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms
from station.meter.sim_process import MeterSimProcess
from tests.e2e import CANARY_PASSWORD, STATION_ID, DaemonProcess, station_cli, station_env

REQUIRED_KEYS = {
    "ok", "station_id", "software_version", "ocpp", "messages", "esp32", "checks", "duration_ms",
    "station_name", "endpoint", "subprotocol", "run_started_utc", "run_finished_utc",
}


async def run_once(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = await station_cli(env, "--once", *args)
    assert CANARY_PASSWORD not in out + err
    report = json.loads(out)  # exactly one JSON document, nothing else
    assert code == report["exit_code"]
    return code, report, err


def checks(report: dict[str, Any]) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in report["checks"]}


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[str]:
    """A TCP listener that accepts and never answers (a firewall or proxy dropping the traffic)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/x"
    finally:
        for writer in held:
            writer.close()
        server.close()


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


@pytest.mark.parametrize("limit", [5.0, 15.0])
async def test_once_against_a_csms_that_never_answers_exits_3_naming_the_timeout(tmp_path: Path, limit: float) -> None:
    async with black_hole() as url, SimulatorProcess(tmp_path) as sim, MeterSimProcess(tmp_path) as meter:
        csms = DevCsms()
        env = station_env(tmp_path, csms, sim.port, OCPP_201_URL=url, OCPP_16_URL="", STATION_METER_PORT=str(meter.link))
        args = ["--timeout", f"{limit:g}"] if limit != 15.0 else []  # 15 s is the default
        code, report, _ = await run_once(env, *args)
    assert code == exitcodes.CSMS_UNREACHABLE, report["checks"]
    csms_check = next(c for c in report["checks"] if c["name"] == "csms")
    assert csms_check["kind"] == "unreachable" and url in csms_check["detail"]
    assert re.search(r"within \d+(\.\d)? s", csms_check["detail"]), csms_check
    assert "timed out during opening handshake" in csms_check["detail"]


async def test_once_against_a_csms_that_never_answers_still_runs_every_other_check_in_time(tmp_path: Path) -> None:
    async with black_hole() as url, SimulatorProcess(tmp_path) as sim, MeterSimProcess(tmp_path) as meter:
        env = station_env(tmp_path, DevCsms(), sim.port, OCPP_201_URL=url, OCPP_16_URL="",
                          STATION_METER_PORT=str(meter.link))
        _, report, _ = await run_once(env, "--timeout", "5")
    assert checks(report) == {"config": True, "csms": False, "esp32": True, "meter": True, "clock": checks(report)["clock"],
                              "offline_queue": True, "disk": True, "power": True}
    assert report["esp32"]["link_up"] is True
    assert report["duration_ms"] <= 5000  # the limit is the behaviour under test


async def test_a_healthy_once_reports_no_link_error_for_its_own_clean_disconnect(tmp_path: Path) -> None:
    async with DevCsms() as csms, SimulatorProcess(tmp_path) as sim:
        code, report, stderr = await run_once(station_env(tmp_path, csms, sim.port))
    assert code == exitcodes.OK, report
    assert report["ocpp"]["last_error"] is None
    warnings = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert not [w for w in warnings if w["level"] == "warning" and "disconnected" in w["event"]], warnings


async def test_once_with_the_daemon_behind_a_black_hole_exits_3_saying_why_it_is_not_connected(tmp_path: Path) -> None:
    from station.ipc.client import IpcClient

    async with black_hole() as url, SimulatorProcess(tmp_path) as sim:
        env = station_env(tmp_path, DevCsms(), sim.port, OCPP_201_URL=url, OCPP_16_URL="")
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        try:
            await daemon.wait_ipc()
            async with IpcClient(env["STATION_IPC_SOCKET"]) as client, asyncio.timeout(60):
                while not (await client.status())["ocpp"].get("last_error"):
                    await asyncio.sleep(0.2)
            code, report, _ = await run_once(env, "--timeout", "5")
        finally:
            await daemon.stop()
    assert code == exitcodes.CSMS_UNREACHABLE and report["mode"] == "daemon"
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "csms")
    assert "timed out during opening handshake" in detail, detail
    assert checks(report)["esp32"] is True


async def test_once_with_the_primary_unreachable_says_whether_the_other_version_answers(tmp_path: Path) -> None:
    dead = DevCsms()
    await dead.start()
    await dead.stop()  # keep its URL, nobody listening
    async with DevCsms() as csms, SimulatorProcess(tmp_path) as sim:
        env = station_env(tmp_path, csms, sim.port, OCPP_201_URL=dead.url("201"))
        code, report, _ = await run_once(env)
    assert code == exitcodes.CSMS_UNREACHABLE  # the daemon would not connect: it keeps retrying 2.0.1
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "csms")
    assert f"OCPP 1.6J at {csms.url('16')}{STATION_ID} answers (BootNotification accepted" in detail, detail
    assert "the daemon keeps retrying OCPP 2.0.1" in detail and "only a refusal of the version switches" in detail
    assert report["other_version"]["answers"] is True and report["subprotocol"] == "ocpp2.0.1"


async def test_once_with_both_versions_unreachable_says_both_were_tried(tmp_path: Path) -> None:
    dead = DevCsms()
    await dead.start()
    await dead.stop()
    async with SimulatorProcess(tmp_path) as sim:
        code, report, _ = await run_once(station_env(tmp_path, dead, sim.port), "--timeout", "8")
    assert code == exitcodes.CSMS_UNREACHABLE
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "csms")
    assert f"OCPP 1.6J at {dead.url('16')}{STATION_ID} fails too" in detail, detail
    assert report["other_version"]["answers"] is False


async def test_once_with_only_the_primary_configured_says_only_it_was_tried(tmp_path: Path) -> None:
    dead = DevCsms()
    await dead.start()
    await dead.stop()
    async with SimulatorProcess(tmp_path) as sim:
        code, report, _ = await run_once(station_env(tmp_path, dead, sim.port, OCPP_16_URL=""), "--timeout", "8")
    assert code == exitcodes.CSMS_UNREACHABLE
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "csms")
    assert detail.endswith("(only OCPP 2.0.1 was tried: no other CSMS URL is configured)"), detail
    assert "other_version" not in report
