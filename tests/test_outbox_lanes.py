"""A refused non-transaction message never holds up a transaction message (issue 22, defect 1).

The CSMS answers one kind of queued message with CALLERROR InternalError (as CitrineOS does for a
1.6 SecurityEventNotification) while a session starts. The retry interval is an hour: had the
refused message kept the head of the queue, the transaction's first message would wait for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ocpp.exceptions import InternalError

from station.core.security_events import MESSAGE_QUEUED
from station.core.monitoring import MonitorEvent, VariableRef
from station.core.station import StationCore
from station.core.store import Store
from station.devtools.csms import DevCsms, Received
from tests.ocpp_helpers import Rig, eventually


def refuse(_: Received) -> dict[str, object]:
    raise InternalError(description="CSMS database refused the row")


def queue(core: StationCore, kind: str, data: dict[str, object]) -> None:
    with core.store.transaction("queue a message") as db:
        core.store.append_message(db, kind, core.clock.stamp(), data)
    core.events.publish(MESSAGE_QUEUED, message=kind)


def security_event(core: StationCore) -> None:
    core.security_events.record("TamperDetectionActivated", "lid opened")


def notify_event(core: StationCore) -> None:
    event = MonitorEvent(7, datetime.now(UTC), "Alerting", "61", VariableRef("EVSE", "Power", evse=1),
                         "CustomMonitor", 4, monitor_id=3)
    queue(core, "notify_event", event.to_json())


def reservation_update(core: StationCore) -> None:
    queue(core, "reservation_status", {"reservation_id": 5, "status": "Expired"})


def idle_meter_values(core: StationCore) -> None:
    queue(core, "meter_values", {"connector_id": 1, "context": "Sample.Clock", "measurands": None,
                                 "meter": {"energy_wh": 1200.0, "power_w": 0.0, "current_a": None, "voltage_v": None,
                                           "frequency_hz": None}})


QUEUED: list[tuple[str, str, Callable[[StationCore], None]]] = [
    ("201", "SecurityEventNotification", security_event),
    ("16", "SecurityEventNotification", security_event),
    ("201", "NotifyEvent", notify_event),
    ("201", "ReservationStatusUpdate", reservation_update),
    ("201", "MeterValues", idle_meter_values),
    ("16", "MeterValues", idle_meter_values),
]


def started(version: str) -> tuple[str, Callable[[Received], bool]]:
    if version == "16":
        return "StartTransaction", lambda r: True
    return "TransactionEvent", lambda r: r.payload["eventType"] == "Started"


@contextlib.asynccontextmanager
async def running_rig(version: str, tmp_path: Path, *, attempts: int, interval: int) -> AsyncIterator[tuple[DevCsms, Rig]]:
    """A dev CSMS and a station on it with the transaction-message retry settings, past its first StatusNotification."""
    async with DevCsms() as csms:
        seed = Store(tmp_path / "station.db")
        seed.put("ocpp:TransactionMessageAttempts", attempts)
        seed.put("ocpp:TransactionMessageRetryInterval", interval)
        seed.close()
        rig = await Rig(version, csms, tmp_path / "station.db").start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            assert rig.core is not None and rig.esp is not None
            yield csms, rig
        finally:
            await rig.stop()


@pytest.mark.parametrize(("version", "action", "make"), QUEUED, ids=[f"{v}-{a}" for v, a, _ in QUEUED])
async def test_a_refused_queued_message_does_not_hold_up_the_started_transaction_message(
        version: str, action: str, make: Callable[[StationCore], None], tmp_path: Path) -> None:
    async with running_rig(version, tmp_path, attempts=5, interval=3600) as (csms, rig):
        csms.override(action, refuse)
        mark = csms.mark()
        make(rig.core)
        await csms.wait_for(action, since=mark, timeout=10)  # refused once: next attempt in an hour
        tx_action, is_started = started(version)
        rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
        rig.esp.plug()
        await csms.wait_for(tx_action, predicate=is_started, since=mark, timeout=10)
        refused = [r for r in csms.calls(action) if csms.received.index(r) >= mark
                   and (action != "MeterValues" or "transactionId" not in r.payload)]
        assert len(refused) == 1  # sent once, refused, waiting for its own next attempt
        waiting = rig.core.store.pending_outbox(lane="message")
        assert [e.attempts for e in waiting] == [1]


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_refused_status_notification_does_not_hold_up_the_started_transaction_message(
        version: str, tmp_path: Path) -> None:
    async with running_rig(version, tmp_path, attempts=5, interval=3600) as (csms, rig):
        csms.override("StatusNotification", refuse)
        mark = csms.mark()
        tx_action, is_started = started(version)
        rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
        rig.esp.plug()
        await csms.wait_for(tx_action, predicate=is_started, since=mark, timeout=10)
        assert csms.calls("StatusNotification")[-1].payload  # the status went out and was refused


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_queued_message_refused_every_time_is_parked_while_the_session_is_reported_in_full(
        version: str, tmp_path: Path) -> None:
    async with running_rig(version, tmp_path, attempts=2, interval=0) as (csms, rig):
        core = rig.core
        csms.override("SecurityEventNotification", refuse)
        security_event(core)
        core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
        rig.esp.plug()
        await eventually(lambda: core.store.parked_count() == 1 and core.store.queued_for_transaction() == 0)
        parked = core.store.parked_outbox()
        assert [(p.kind, p.attempts) for p in parked] == [("security_event", 2)]
        assert "InternalError" in (parked[0].last_error or "")
        assert len(csms.calls("SecurityEventNotification")) == 2
        csms.override("SecurityEventNotification", None)  # the CSMS is fixed; the operator releases it
        assert core.release_parked(None) == [parked[0].id]
        await rig.wait_outbox_empty()
        assert len(csms.calls("SecurityEventNotification")) == 3
