"""The real daemon beside an imperfect CSMS (issue 22): refused triggered sends, a Reset with calls in flight.

Every test here (like every e2e test) also fails on an unretrieved task exception or a traceback in
the daemon's log: `tests/conftest.py` checks the log of each daemon a test started.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import InternalError

from station.devtools.csms import Received
from tests.e2e import STATION_ID, DaemonProcess, log_faults, running_station


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


async def start_again(daemon: Any, csms: Any, tmp_path: Path) -> int:
    """The restart systemd would do after an exit for a Reset: a new daemon on the same settings until it has
    reported StartupOfTheDevice, then stopped. Returns the CSMS's mark from before it started."""
    mark = csms.mark()
    again = await DaemonProcess(daemon.env, tmp_path / "station-2.log").start()
    try:
        await csms.wait_for("SecurityEventNotification", STATION_ID, since=mark, timeout=20,
                            predicate=lambda r: r.payload["type"] == "StartupOfTheDevice")
    finally:
        await again.stop()
    return mark


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_reset_lets_the_reset_event_be_answered_before_the_exit_and_never_sends_it_again(
        version: str, tmp_path: Path) -> None:
    """Issue 22 defect 5: ResetOrReboot went out 15 ms before the socket closed, was lost and sent again."""
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
        await start_again(daemon, csms, tmp_path)
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


def _queued(db: Path) -> list[tuple[str, str]]:
    """(kind, transaction id) of every outbox entry still stored."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return [(str(kind), str(tx)) for kind, tx in conn.execute("SELECT kind, transaction_id FROM outbox ORDER BY id")]


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_reset_during_a_charge_delivers_the_end_and_the_reset_event_on_both_lanes_before_the_exit_once(
        version: str, tmp_path: Path) -> None:
    """The transaction lane's end message and the message lane's ResetOrReboot are answered before the
    exit and deleted with it: the outbox the restart reads holds neither, so neither goes out twice."""
    async with running_station(tmp_path, version=version) as (csms, sim, daemon):
        assert sim is not None and daemon.proc is not None
        await csms.wait_for("SecurityEventNotification", STATION_ID, timeout=20,
                            predicate=lambda r: r.payload["type"] == "StartupOfTheDevice")
        await sim.command("plug")
        if version == "201":
            await csms.call(STATION_ID, "RequestStartTransaction",
                            {"idToken": {"idToken": "RESET-1", "type": "ISO14443"}, "remoteStartId": 9})
            await csms.wait_for("TransactionEvent", STATION_ID, lambda r: r.payload["eventType"] == "Started", timeout=20)
        else:
            await csms.call(STATION_ID, "RemoteStartTransaction", {"connectorId": 1, "idTag": "RESET-1"})
            await csms.wait_for("StartTransaction", STATION_ID, timeout=20)
        answer = await csms.call(STATION_ID, "Reset", {"type": "Immediate"} if version == "201" else {"type": "Soft"})
        assert answer["status"] == "Accepted"
        async with asyncio.timeout(30):
            assert await daemon.proc.wait() == 0  # the exit for the restart (systemd starts the daemon again)
        ends = (csms.calls("StopTransaction", STATION_ID) if version == "16" else
                [r for r in csms.calls("TransactionEvent", STATION_ID) if r.payload["eventType"] == "Ended"])
        assert len(ends) == 1 and len(_events(csms, "ResetOrReboot")) == 1
        left = _queued(tmp_path / "state" / "station.db")
        await daemon.stop()
        mark = await start_again(daemon, csms, tmp_path)
    assert left == []
    assert [r.action for r in csms.received[mark:] if r.kind == "call" and r.action in ("StopTransaction", "TransactionEvent")
            and (r.action == "StopTransaction" or r.payload["eventType"] == "Ended")] == []
    assert len(_events(csms, "ResetOrReboot")) == 1
