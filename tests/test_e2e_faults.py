"""The real daemon beside an imperfect CSMS (issue 22): refused triggered sends, a Reset with calls in flight.

Every test here (like every e2e test) also fails on an unretrieved task exception or a traceback in
the daemon's log: `tests/conftest.py` checks the log of each daemon a test started.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ocpp.exceptions import InternalError

from station.devtools.csms import Received
from tests.e2e import STATION_ID, log_faults, running_station


def refuse(_: Received) -> dict[str, object]:
    raise InternalError(description="CSMS database down")


async def wait_log(daemon: object, text: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while text not in daemon.log():  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_triggered_firmware_status_the_csms_refuses_is_a_warning_in_the_daemon_log(
        version: str, tmp_path: Path) -> None:
    async with running_station(tmp_path, version=version) as (csms, _sim, daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        csms.override("FirmwareStatusNotification", refuse)
        mark = csms.mark()
        assert (await csms.call(STATION_ID, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"}))["status"] == "Accepted"
        await csms.wait_for("FirmwareStatusNotification", STATION_ID, since=mark, timeout=20)
        await wait_log(daemon, "refused by the peer")
        await daemon.stop()
        line = next(line for line in daemon.log().splitlines() if "refused by the peer" in line)
        assert '"level": "warning"' in line and "FirmwareStatusNotification" in line and "InternalError" in line
        assert log_faults(daemon.log()) == []
