"""End to end: a two-period charging profile from the dev CSMS reaches the ESP32 simulator at its boundary.

Real `station run` process, dev CSMS on 127.0.0.1, ESP32 simulator on a pty; per OCPP version.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms
from station.ocpp.base import iso
from tests.e2e import STATION_ID, DaemonProcess, running_station

BOUNDARY_S = 5
"""Second period starts this long after the profile's start: long enough to see the first one first."""


def offered(state: dict[str, Any]) -> int:
    return int(state["MAX"])


async def start_session(csms: DevCsms, sim: SimulatorProcess, version: str) -> None:
    await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
    await sim.command("plug")
    if version == "201":
        answer = await csms.call(STATION_ID, "RequestStartTransaction",
                                 {"idToken": {"idToken": "E2E-TAG", "type": "ISO14443"}, "remoteStartId": 1, "evseId": 1})
        assert answer["status"] == "Accepted"
        await csms.wait_for("TransactionEvent", STATION_ID, lambda r: r.payload["eventType"] == "Started", timeout=10)
    else:
        answer = await csms.call(STATION_ID, "RemoteStartTransaction", {"idTag": "E2E-TAG", "connectorId": 1})
        assert answer["status"] == "Accepted"
        await csms.wait_for("StartTransaction", STATION_ID, timeout=10)
    await sim.wait_for(lambda s: int(s["AUTH"]) == 1, timeout=10)  # authorized, EV not drawing yet


async def set_two_period_profile(csms: DevCsms, version: str, start: datetime) -> str:
    schedule = {"startSchedule": iso(start), "chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 12.0}, {"startPeriod": BOUNDARY_S, "limit": 8.0}]}
    common = {"stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute"}
    if version == "201":
        profile = {"id": 1, **common, "chargingSchedule": [{"id": 1, **schedule}]}
        answer = await csms.call(STATION_ID, "SetChargingProfile", {"evseId": 1, "chargingProfile": profile})
    else:
        profile = {"chargingProfileId": 1, **common, "chargingSchedule": schedule}
        answer = await csms.call(STATION_ID, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile})
    return str(answer["status"])


async def composite_limits(csms: DevCsms, version: str, duration: int) -> list[tuple[int, float]]:
    if version == "201":
        answer = await csms.call(STATION_ID, "GetCompositeSchedule", {"evseId": 1, "duration": duration})
        schedule = answer["schedule"]
    else:
        answer = await csms.call(STATION_ID, "GetCompositeSchedule", {"connectorId": 1, "duration": duration})
        schedule = answer["chargingSchedule"]
    assert answer["status"] == "Accepted"
    return [(int(p["startPeriod"]), float(p["limit"])) for p in schedule["chargingSchedulePeriod"]]


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_two_period_profile_changes_the_offered_current_at_its_boundary_and_survives_a_restart(
    tmp_path: Path, version: str
) -> None:
    async with running_station(tmp_path, version=version) as (csms, sim, daemon):
        assert sim is not None
        await start_session(csms, sim, version)
        start = datetime.now(UTC)
        boundary = start + timedelta(seconds=BOUNDARY_S)
        assert await set_two_period_profile(csms, version, start) == "Accepted"

        periods = await composite_limits(csms, version, 3600)
        assert [limit for _, limit in periods] == [12.0, 8.0]
        assert abs(periods[1][0] - BOUNDARY_S) <= 1  # the second period at the boundary, relative to "now"

        await sim.wait_for(lambda s: offered(s) == 12, timeout=BOUNDARY_S)
        await sim.wait_for(lambda s: offered(s) == 8, timeout=BOUNDARY_S + 10)
        assert datetime.now(UTC) >= boundary  # never before the boundary

        await daemon.stop()
        mark = csms.mark()
        again = await DaemonProcess(daemon.env, tmp_path / "station-2.log").start()
        try:
            await csms.wait_for("StatusNotification", STATION_ID, since=mark, timeout=20)
            assert await composite_limits(csms, version, 600) == [(0, 8.0)]  # the profile is still installed
            assert offered(await sim.command("state")) == 8
        finally:
            assert await again.stop() == 0


async def test_a_lower_limit_while_charging_reaches_the_esp32_when_the_ev_pauses(tmp_path: Path) -> None:
    """The firmware takes a new maximum only when not charging: the station holds it until the EV pauses."""
    async with running_station(tmp_path, version="201") as (csms, sim, _daemon):
        assert sim is not None
        await start_session(csms, sim, "201")
        await sim.command("ev_charge")
        before = offered(await sim.wait_for(lambda s: int(s["RL"]) == 1, timeout=10))
        start = datetime.now(UTC) - timedelta(seconds=2 * BOUNDARY_S)  # both periods have begun: 8 A now
        assert await set_two_period_profile(csms, "201", start) == "Accepted"
        assert await composite_limits(csms, "201", 60) == [(0, 8.0)]  # a round trip after the change
        assert offered(await sim.command("state")) == before != 8  # not sent while charging
        await sim.command("ev_pause")
        await sim.wait_for(lambda s: offered(s) == 8, timeout=10)
        await sim.command("ev_charge")
        state = await sim.wait_for(lambda s: int(s["RL"]) == 1, timeout=10)
        assert state["charging_current_a"] == 8
