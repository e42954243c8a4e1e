"""The device model end to end: a real dev CSMS process driven from its command line
(`station dev-csms call`), the real daemon with the ESP32 simulator, both OCPP versions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.controller.simulator import SimulatorProcess
from station.ipc.client import IpcClient
from tests.e2e import STATION_ID, DaemonProcess, station_env
from tests.test_ocpp_variables import CORE_KEYS_16


@dataclass
class CsmsProcess:
    """`station dev-csms` as a real process, its control socket at `control`."""

    proc: asyncio.subprocess.Process
    port: int
    control: Path

    def url(self, version: str = "201") -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp{version}/"


@contextlib.asynccontextmanager
async def csms_process(directory: Path) -> AsyncIterator[CsmsProcess]:
    control = directory / "csms.ctl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "dev-csms", "--port", "0", "--heartbeat-interval", "60",
        "--control", str(control), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            banner = (await proc.stdout.readline()).decode()
            while not control.exists():
                await asyncio.sleep(0.05)
        port = int(re.search(r"ws://127\.0\.0\.1:(\d+)/", banner).group(1))  # type: ignore[union-attr]
        yield CsmsProcess(proc, port, control)
    finally:
        proc.terminate()
        await proc.wait()


async def cli(csms: CsmsProcess, *args: str) -> tuple[int, list[dict[str, Any]]]:
    """`station dev-csms call ...`: exit code and the JSON lines it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "dev-csms", "call", "--control", str(csms.control), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, [json.loads(line) for line in out.decode().splitlines() if line.strip()]


@contextlib.asynccontextmanager
async def station(directory: Path, csms: CsmsProcess, version: str, **extra: str) -> AsyncIterator[DaemonProcess]:
    async with SimulatorProcess(directory, interval=5) as sim:
        env = station_env(directory, csms, sim.port, OCPP_PRIMARY=version, **extra)  # type: ignore[arg-type]
        daemon = await DaemonProcess(env, directory / "station.log").start()
        try:
            await daemon.wait_ipc(20)
            async with IpcClient(env["STATION_IPC_SOCKET"], timeout=5) as ipc:
                async with asyncio.timeout(30):
                    while not (await ipc.status())["ocpp"].get("booted"):
                        await asyncio.sleep(0.1)
            yield daemon
        finally:
            await daemon.stop()


async def test_full_inventory_from_the_command_line_of_a_running_dev_csms(tmp_path: Path) -> None:
    async with csms_process(tmp_path) as csms, station(tmp_path, csms, "201"):
        code, lines = await cli(csms, STATION_ID, "GetBaseReport", '{"requestId": 5, "reportBase": "FullInventory"}',
                                "--wait-for", "NotifyReport")
    assert code == 0, lines
    assert lines[0] == {"kind": "result", "action": "GetBaseReport", "payload": {"status": "Accepted"}}
    pages = [line["payload"] for line in lines if line["kind"] == "message"]
    assert [p["seqNo"] for p in pages] == list(range(len(pages))) and pages[-1]["tbc"] is False
    assert lines[-1] == {"kind": "done", "reason": "until"}
    items = {(i["component"]["name"], i["variable"]["name"]): i for p in pages for i in p["reportData"]}
    assert items[("ChargingStation", "AvailabilityState")]["variableAttribute"][0]["value"] == "Available"
    assert items[("CPPWMController", "Problem")]["variableAttribute"][0]["value"] == "false"  # the ESP32 link is up
    assert items[("SecurityCtrlr", "Identity")]["variableAttribute"][0]["value"] == STATION_ID


async def test_a_variable_set_from_the_command_line_survives_a_daemon_restart(tmp_path: Path) -> None:
    variable = {"component": {"name": "TxCtrlr"}, "variable": {"name": "EVConnectionTimeOut"}}
    async with csms_process(tmp_path) as csms:
        async with station(tmp_path, csms, "201"):
            code, lines = await cli(csms, STATION_ID, "SetVariables",
                                    json.dumps({"setVariableData": [variable | {"attributeValue": "45"}]}))
            assert code == 0 and lines[0]["payload"]["setVariableResult"][0]["attributeStatus"] == "Accepted"
        async with station(tmp_path, csms, "201"):
            code, lines = await cli(csms, STATION_ID, "GetVariables", json.dumps({"getVariableData": [variable]}))
    assert code == 0 and lines[0]["payload"]["getVariableResult"][0]["attributeValue"] == "45"


async def test_get_configuration_from_the_command_line_on_1_6(tmp_path: Path) -> None:
    async with csms_process(tmp_path) as csms, station(tmp_path, csms, "16"):
        code, lines = await cli(csms, STATION_ID, "ChangeConfiguration", '{"key": "MeterValueSampleInterval", "value": "20"}')
        assert code == 0 and lines[0]["payload"] == {"status": "Accepted"}
        code, lines = await cli(csms, STATION_ID, "GetConfiguration", '{"key": ["MeterValueSampleInterval", "Nope"]}')
        assert code == 0
        assert lines[0]["payload"] == {"configurationKey": [{"key": "MeterValueSampleInterval", "readonly": False, "value": "20"}],
                                       "unknownKey": ["Nope"]}
        code, lines = await cli(csms, STATION_ID, "GetConfiguration")
    keys = {k["key"] for k in lines[0]["payload"]["configurationKey"]}
    assert code == 0 and CORE_KEYS_16 <= keys, CORE_KEYS_16 - keys


async def test_the_command_line_names_a_station_that_is_not_connected(tmp_path: Path) -> None:
    async with csms_process(tmp_path) as csms:
        code, lines = await cli(csms, "NOBODY", "GetBaseReport", '{"requestId": 1, "reportBase": "FullInventory"}')
    assert code == 1 and lines == [{"kind": "error", "code": "NotConnected", "description": "station 'NOBODY' is not connected (connected: none)"}]
