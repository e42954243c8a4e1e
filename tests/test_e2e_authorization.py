"""End to end, both versions: the real daemon, the ESP32 simulator and the dev CSMS.

Offline starts with an unknown token (refused, or allowed by OfflineTxForUnknownIdEnabled and then
stopped when the CSMS refuses the token), and a reservation that only its token may use and that
expires on time after a daemon restart.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms
from station.ipc.client import IpcClient, IpcError
from tests.e2e import STATION_ID, DaemonProcess, station_env

SUBPROTOCOL = {"201": ("ocpp2.0.1",), "16": ("ocpp1.6",)}


class Station:
    def __init__(self, directory: Path, csms: DevCsms, sim: SimulatorProcess, env: dict[str, str], version: str) -> None:
        self.dir, self.csms, self.sim, self.env, self.version = directory, csms, sim, env, version
        self.daemon: DaemonProcess | None = None

    async def start(self) -> None:
        self.daemon = await DaemonProcess(self.env, self.dir / "station.log").start()
        await self.daemon.wait_ipc(20)
        await self.csms.wait_connected(STATION_ID, timeout=30)

    async def restart(self) -> None:
        assert self.daemon is not None
        assert await self.daemon.stop() == 0
        await self.csms.wait_connected(STATION_ID, timeout=10, connected=False)
        await self.start()

    def ipc(self) -> IpcClient:
        return IpcClient(self.env["STATION_IPC_SOCKET"], timeout=15)

    async def until(self, condition: Any, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                async with self.ipc() as ipc:
                    status = await ipc.status()
                if condition(status):
                    return status
                await asyncio.sleep(0.1)

    async def configure(self, v201: tuple[str, str, str], key16: str, value: str) -> None:
        if self.version == "201":
            answer = await self.csms.call(STATION_ID, "SetVariables", {"setVariableData": [
                {"component": {"name": v201[0]}, "variable": {"name": v201[1]}, "attributeValue": value}]})
            assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted", answer
        else:
            answer = await self.csms.call(STATION_ID, "ChangeConfiguration", {"key": key16, "value": value})
            assert answer["status"] == "Accepted", answer

    async def offline(self) -> None:
        self.csms.accept_subprotocols = ()
        await self.csms.disconnect(STATION_ID)
        await self.until(lambda s: not s["csms_online"])

    async def online(self) -> None:
        self.csms.accept_subprotocols = SUBPROTOCOL[self.version]  # back on the version under test
        await self.csms.wait_connected(STATION_ID, timeout=30)


@asynccontextmanager
async def station(tmp_path: Path, version: str) -> AsyncIterator[Station]:
    async with (
        DevCsms(heartbeat_interval=30, accept_subprotocols=SUBPROTOCOL[version]) as csms,
        SimulatorProcess(tmp_path, interval=1) as sim,
    ):
        env = station_env(tmp_path, csms, sim.port, OCPP_PRIMARY=version)
        rig = Station(tmp_path, csms, sim, env, version)
        await rig.start()
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        try:
            yield rig
        finally:
            if rig.daemon is not None:
                await rig.daemon.stop()


def status_of(rig: Station, r: Any) -> str:
    return str(r.payload["connectorStatus" if rig.version == "201" else "status"])


@pytest.mark.parametrize("version", ["201", "16"])
async def test_offline_a_local_start_with_an_unknown_token_is_refused(tmp_path: Path, version: str) -> None:
    async with station(tmp_path, version) as rig:
        await rig.offline()
        async with rig.ipc() as ipc:
            with pytest.raises(IpcError) as refused:
                await ipc.start(1, "STRANGER-1")
        assert "Unknown" in refused.value.message
        connector = (await rig.until(lambda s: True))["connectors"][0]
        assert connector["pending_authorization"] is False and connector["transaction"] is None


@pytest.mark.parametrize("version", ["201", "16"])
async def test_offline_unknown_token_charges_when_allowed_and_a_csms_refusing_it_stops_the_charge(
        tmp_path: Path, version: str) -> None:
    async with station(tmp_path, version) as rig:
        await rig.configure(("AuthCtrlr", "OfflineTxForUnknownIdEnabled"), "AllowOfflineTxForUnknownId", "true")
        rig.csms.tokens["STRANGER-2"] = "Invalid"
        await rig.offline()
        async with rig.ipc() as ipc:
            started = await ipc.start(1, "STRANGER-2")
        assert started["authorization"] == {"status": "Accepted", "source": "offline_unknown"}
        await rig.sim.command("plug")
        await rig.sim.command("ev_charge")
        await rig.sim.wait_for(lambda s: s["RL"] in ("1", 1), timeout=15)  # charging while offline
        mark = rig.csms.mark()
        await rig.online()
        if version == "201":
            first = await rig.csms.wait_for("TransactionEvent", STATION_ID, since=mark, timeout=20)
            assert first.payload["eventType"] == "Started" and first.payload["offline"] is True
            ended = await rig.csms.wait_for("TransactionEvent", STATION_ID,
                                            lambda r: r.payload["eventType"] == "Ended", since=mark, timeout=20)
            assert ended.payload["transactionInfo"]["stoppedReason"] == "DeAuthorized"
            assert ended.payload["triggerReason"] == "Deauthorized"
        else:
            await rig.csms.wait_for("StartTransaction", STATION_ID, since=mark, timeout=20)
            ended = await rig.csms.wait_for("StopTransaction", STATION_ID, since=mark, timeout=20)
            assert ended.payload["reason"] == "DeAuthorized"
        state = await rig.sim.wait_for(lambda s: s["RL"] in ("0", 0) and "STOP" in s["commands"], timeout=15)
        assert state["AUTH"] in ("0", 0)


def in_seconds(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def ocpp_time(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def reserve(rig: Station, rid: int, token: str, expires: datetime) -> str:
    if rig.version == "201":
        answer = await rig.csms.call(STATION_ID, "ReserveNow", {
            "id": rid, "evseId": 1, "expiryDateTime": ocpp_time(expires), "idToken": {"idToken": token, "type": "ISO14443"}})
    else:
        answer = await rig.csms.call(STATION_ID, "ReserveNow", {
            "reservationId": rid, "connectorId": 1, "expiryDate": ocpp_time(expires), "idTag": token})
    return str(answer["status"])


@pytest.mark.parametrize("version", ["201", "16"])
async def test_only_the_reserved_token_starts_and_a_reservation_expires_on_time_after_a_restart(
        tmp_path: Path, version: str) -> None:
    async with station(tmp_path, version) as rig:
        # 1. A reservation used by its token: others are refused, its start names it.
        assert await reserve(rig, 1, "RES-OWNER", in_seconds(120)) == "Accepted"
        await rig.csms.wait_for("StatusNotification", STATION_ID, lambda r: status_of(rig, r) == "Reserved", timeout=10)
        async with rig.ipc() as ipc:
            with pytest.raises(IpcError) as refused:
                await ipc.start(1, "SOMEONE")
            assert "reserved" in refused.value.message
            await ipc.start(1, "RES-OWNER")
        await rig.sim.command("plug")
        start = "TransactionEvent" if version == "201" else "StartTransaction"
        started = await rig.csms.wait_for(start, STATION_ID, timeout=20)
        assert started.payload["reservationId"] == 1
        await rig.sim.command("unplug")
        await rig.until(lambda s: s["connectors"][0]["transaction"] is None and s["connectors"][0]["status"] == "Available")

        # 2. A reservation that outlives the daemon and expires on time after its restart.
        expires = in_seconds(12)
        assert await reserve(rig, 2, "RES-LATE", expires) == "Accepted"
        await rig.restart()
        mark = rig.csms.mark()
        reserved = await rig.until(lambda s: s["connectors"][0]["status"] == "Reserved")
        assert reserved["reservations"][0]["id"] == 2
        cli = await asyncio.create_subprocess_exec(sys.executable, "-m", "station", "status", env=rig.env,
                                                   stdout=asyncio.subprocess.PIPE)
        out = (await asyncio.wait_for(cli.communicate(), 30))[0].decode()
        assert "connector 1: Reserved" in out and "reservation 2 until" in out and "RES-LATE" not in out
        async with rig.ipc() as ipc:
            with pytest.raises(IpcError):
                await ipc.start(1, "SOMEONE")
        available = await rig.csms.wait_for("StatusNotification", STATION_ID,
                                            lambda r: status_of(rig, r) == "Available", since=mark, timeout=30)
        assert expires <= available.at <= expires + timedelta(seconds=3)
        if version == "201":
            update = await rig.csms.wait_for("ReservationStatusUpdate", STATION_ID, since=mark, timeout=5)
            assert update.payload == {"reservationId": 2, "reservationUpdateStatus": "Expired"}
            assert expires <= update.at <= expires + timedelta(seconds=3)
