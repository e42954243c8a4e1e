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


def _events(csms: object, type_: str) -> list[object]:
    return [r for r in csms.calls("SecurityEventNotification", STATION_ID)  # type: ignore[attr-defined]
            if r.payload["type"] == type_]


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_reset_lets_the_reset_event_be_answered_before_the_exit_and_never_sends_it_again(
        version: str, tmp_path: Path) -> None:
    """Issue 22 defect 5: ResetOrReboot went out 15 ms before the socket closed, was lost and sent again."""
    from tests.e2e import DaemonProcess

    async with running_station(tmp_path, version=version) as (csms, _sim, daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        await csms.wait_for("SecurityEventNotification", STATION_ID, timeout=20,
                            predicate=lambda r: r.payload["type"] == "StartupOfTheDevice")
        answer = await csms.call(STATION_ID, "Reset", {"type": "Immediate"} if version == "201" else {"type": "Soft"})
        assert answer["status"] == "Accepted"
        assert daemon.proc is not None
        async with asyncio.timeout(20):
            code = await daemon.proc.wait()  # the daemon exits for the restart (systemd starts it again)
        assert code == 0
        assert len(_events(csms, "ResetOrReboot")) == 1, "the event was not delivered before the exit"
        assert "SecurityEventNotification result" in daemon.log()
        await daemon.stop()
        mark = csms.mark()
        again = await DaemonProcess(daemon.env, tmp_path / "station-2.log").start()
        try:
            await csms.wait_for("SecurityEventNotification", STATION_ID, since=mark, timeout=20,
                                predicate=lambda r: r.payload["type"] == "StartupOfTheDevice")
        finally:
            await again.stop()
    assert len(_events(csms, "ResetOrReboot")) == 1


async def test_sigterm_waits_for_the_answer_in_flight_and_sends_nothing_new(tmp_path: Path) -> None:
    """A SIGTERM while a call waits for its answer: the answer is awaited (bounded), nothing is sent after."""
    answered = asyncio.Event()
    release = asyncio.Event()

    async with running_station(tmp_path) as (csms, _sim, daemon):
        await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
        await csms.wait_for("SecurityEventNotification", STATION_ID, timeout=20)

        async def slow_heartbeat(_: Received) -> dict[str, object]:
            answered.set()
            await release.wait()
            from station.devtools.csms import utc_now_text

            return {"currentTime": utc_now_text()}

        csms.override("Heartbeat", slow_heartbeat)
        assert (await csms.call(STATION_ID, "TriggerMessage", {"requestedMessage": "Heartbeat"}))["status"] == "Accepted"
        await answered.wait()
        assert daemon.proc is not None
        daemon.proc.send_signal(__import__("signal").SIGTERM)
        await wait_log(daemon, "station stopping")
        mark = csms.mark()
        release.set()
        async with asyncio.timeout(20):
            assert await daemon.proc.wait() == 0
    log = daemon.log()
    assert log.index("station stopping") < log.index("ocpp <- Heartbeat result")  # answered, then the exit
    assert [r.action for r in csms.received[mark:] if r.kind == "call"] == []
