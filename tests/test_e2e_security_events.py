"""Security events of the real daemon reach the dev CSMS after an outage and a kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import pytest
from ocpp.messages import Call, _validate_payload

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms, Received
from tests.e2e import STATION_ID, DaemonProcess, station_env

VERSIONS = ["201", "16"]
SCHEMA_VERSION = {"201": "2.0.1", "16": "1.6"}


def queued_events(db: Path) -> list[str]:
    """Queued security events; none while the daemon is still creating its tables."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            return [row[0] for row in con.execute("SELECT data FROM outbox WHERE kind='security_event' ORDER BY id")]
        except sqlite3.OperationalError:
            return []


async def wait_queued(db: Path, count: int, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not db.exists() or len(queued_events(db)) < count:
            await asyncio.sleep(0.05)


def security_events(csms: DevCsms) -> list[Received]:
    return csms.calls("SecurityEventNotification", station_id=STATION_ID)


@pytest.mark.parametrize("version", VERSIONS)
async def test_startup_events_queued_during_an_outage_survive_kill_9_and_reach_the_csms_in_order(
    version: str, tmp_path: Path
) -> None:
    csms = await DevCsms(heartbeat_interval=5).start()
    port = csms.port
    await csms.stop()  # the CSMS is down while the station starts twice
    db = tmp_path / "state" / "station.db"
    async with SimulatorProcess(tmp_path, interval=5) as sim:
        env = station_env(tmp_path, DevCsms(port=port), sim.port, OCPP_PRIMARY=version)
        env["OCPP_201_URL"] = f"ws://127.0.0.1:{port}/ocpp201/"
        env["OCPP_16_URL"] = f"ws://127.0.0.1:{port}/ocpp16/"
        first = await DaemonProcess(env, tmp_path / "station.log").start()
        await wait_queued(db, 1)
        await first.stop(signal.SIGKILL)
        second = await DaemonProcess(env, tmp_path / "station.log").start()
        await wait_queued(db, 2)
        await second.stop(signal.SIGKILL)
        third = await DaemonProcess(env, tmp_path / "station.log").start()
        revived = await DevCsms(port=port, heartbeat_interval=5).start()
        try:
            async with asyncio.timeout(30):
                while len(security_events(revived)) < 3 or queued_events(db):
                    await asyncio.sleep(0.05)
            events = security_events(revived)
            assert [e.payload["type"] for e in events] == ["StartupOfTheDevice"] * 3
            # The first start after a boot says so; the restarts say the daemon restarted.
            assert [e.payload["techInfo"].split(";")[0] for e in events][1:] == ["daemon restarted"] * 2
            stamps = [e.payload["timestamp"] for e in events]
            assert stamps == sorted(stamps)
            for event in events:
                _validate_payload(Call(event.unique_id, event.action, event.payload), SCHEMA_VERSION[version])
        finally:
            await third.stop()
            await revived.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_reset_from_the_csms_is_reported_after_the_daemon_restarts(version: str, tmp_path: Path) -> None:
    async with DevCsms(heartbeat_interval=5) as csms, SimulatorProcess(tmp_path, interval=5) as sim:
        env = station_env(tmp_path, csms, sim.port, OCPP_PRIMARY=version)
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        await csms.wait_for("SecurityEventNotification", STATION_ID, timeout=20)  # StartupOfTheDevice
        await csms.call(STATION_ID, "Reset", {"type": "Immediate"} if version == "201" else {"type": "Hard"})
        assert await asyncio.wait_for(daemon.proc.wait(), 20) == 0  # type: ignore[union-attr]
        await daemon.stop()
        restarted = await DaemonProcess(env, tmp_path / "station.log").start()
        try:
            async with asyncio.timeout(20):
                while [e.payload["type"] for e in security_events(csms)][-2:] != ["ResetOrReboot", "StartupOfTheDevice"]:
                    await asyncio.sleep(0.05)
            reset = [e.payload for e in security_events(csms) if e.payload["type"] == "ResetOrReboot"]
            assert "reset requested by the CSMS" in reset[0]["techInfo"]
            # At least once: a copy confirmed while the daemon stopped may come again, identical.
            assert all(copy == reset[0] for copy in reset)
        finally:
            await restarted.stop()


async def test_a_burst_of_wrong_api_tokens_reaches_the_csms_as_one_maintenance_login_failed(tmp_path: Path) -> None:
    import httpx

    from tests.test_api_e2e import api_process

    async with DevCsms(heartbeat_interval=5) as csms, SimulatorProcess(tmp_path, interval=5) as sim:
        env = station_env(tmp_path, csms, sim.port)
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        try:
            await csms.wait_for("SecurityEventNotification", STATION_ID, timeout=20)  # StartupOfTheDevice
            async with api_process(env, tmp_path / "api.log") as url, httpx.AsyncClient(base_url=url) as api:
                # At once, as a guesser would: one after the other, each waits out the previous failure (api/guard.py).
                answers = await asyncio.gather(*(api.post("/connectors/1/start", json={"id_token": "TAG"},
                                                          headers={"Authorization": f"Bearer guess-{n}"})
                                                 for n in range(20)))
                assert {r.status_code for r in answers} == {401}
                event = await csms.wait_for("SecurityEventNotification", STATION_ID,
                                            predicate=lambda r: r.payload["type"] == "MaintenanceLoginFailed", timeout=10)
                await asyncio.sleep(2.5)  # the rest of the burst reaches the daemon and raises nothing more
            logins = [e for e in security_events(csms) if e.payload["type"] == "MaintenanceLoginFailed"]
            assert len(logins) == 1 and "local API from 127.0.0.1" in event.payload["techInfo"]
            assert "guess" not in event.payload["techInfo"]
            _validate_payload(Call(event.unique_id, event.action, event.payload), "2.0.1")
        finally:
            await daemon.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_csms_time_an_hour_ahead_moves_the_clock_and_raises_setting_system_time(version: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    def boot_an_hour_ahead(_: Received) -> dict[str, object]:
        ahead = datetime.now(UTC) + timedelta(hours=1)
        return {"currentTime": ahead.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "interval": 5,
                "status": "Accepted"}

    async with DevCsms(heartbeat_interval=5) as csms, SimulatorProcess(tmp_path, interval=5) as sim:
        csms.overrides["BootNotification"] = boot_an_hour_ahead
        env = station_env(tmp_path, csms, sim.port, OCPP_PRIMARY=version)
        daemon = await DaemonProcess(env, tmp_path / "station.log").start()
        try:
            event = await csms.wait_for("SecurityEventNotification", STATION_ID,
                                        predicate=lambda r: r.payload["type"] == "SettingSystemTime", timeout=20)
            assert "+36" in event.payload["techInfo"] and "csms" in event.payload["techInfo"]
            sent_at = datetime.fromisoformat(event.payload["timestamp"].replace("Z", "+00:00"))
            assert sent_at > datetime.now(UTC) + timedelta(minutes=55)  # stamped on the corrected clock
            _validate_payload(Call(event.unique_id, event.action, event.payload), SCHEMA_VERSION[version])
            await asyncio.sleep(6)  # a heartbeat later: the CSMS's time no longer moves the clock
            steps = [e for e in security_events(csms) if e.payload["type"] == "SettingSystemTime"]
            assert len(steps) == 1
        finally:
            await daemon.stop()
