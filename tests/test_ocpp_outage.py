"""Outage mid-session, station restart, refused transaction messages, boot Pending/Rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocpp.exceptions import InternalError

from station.core.model import MeterReading
from station.devtools.csms import DevCsms, Received
from tests.ocpp_helpers import Rig, eventually

VERSIONS = ["201", "16"]


def transaction_calls(received: list[Received]) -> list[Received]:
    wanted = {"TransactionEvent", "StartTransaction", "StopTransaction", "MeterValues"}
    return [r for r in received if r.kind == "call" and r.action in wanted]


@pytest.mark.parametrize("version", VERSIONS)
async def test_outage_mid_session_queues_events_and_replays_them_in_order_after_a_restart(version: str, tmp_path: Path) -> None:
    db = tmp_path / "station.db"
    first_csms = await DevCsms().start()
    port = first_csms.port
    rig = await Rig(version, first_csms, db).start()
    assert rig.core is not None and rig.esp is not None
    await first_csms.wait_for("StatusNotification", timeout=10)
    rig.core.on_meter_reading(MeterReading(1000.0))
    rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    rig.esp.plug()
    rig.esp.ev_requests_charge()
    await rig.wait_outbox_empty()
    # The CSMS goes away in the middle of the session.
    await first_csms.stop()
    core = rig.core
    await eventually(lambda: not core.csms_online)
    core.on_meter_reading(MeterReading(1400.0, power_w=7000.0))
    core.meter_value_seconds = 0
    core.tick()
    core.on_meter_reading(MeterReading(1800.0, power_w=7000.0))
    core.tick()
    core.request_stop(connector_id=1, reason="Local", trigger="StopAuthorized")
    queued = [(e.kind, e.seq_no) for e in core.store.pending_outbox(100)]
    assert [kind for kind, _ in queued] == ["updated", "updated", "ended"]
    assert all(e.offline for e in core.store.pending_outbox(100))
    # Power cut: the station restarts from its SQLite file, then the CSMS comes back.
    await rig.stop()
    second_csms = DevCsms(port=port)
    rig2 = await Rig(version, second_csms, db).start(trusted=False)
    await second_csms.start()
    try:
        await rig2.wait_outbox_empty(timeout=15)
        before, after = transaction_calls(first_csms.received), transaction_calls(second_csms.received)
        if version == "201":
            events = [r.payload for r in before + after]
            assert [e["seqNo"] for e in events] == list(range(len(events)))  # contiguous, none lost or duplicated
            assert [e["eventType"] for e in events] == ["Started", *["Updated"] * (len(events) - 2), "Ended"]
            replayed = [r.payload for r in after]
            assert [e["seqNo"] for e in replayed] == [s for _, s in queued]
            assert all(e.get("offline") is True for e in replayed)
            assert not any(e.get("offline") for e in (r.payload for r in before))
        else:
            assert [r.action for r in before] == ["StartTransaction"]
            assert [r.action for r in after] == ["MeterValues", "MeterValues", "StopTransaction"]
            tx_id = after[-1].payload["transactionId"]
            assert tx_id == 1 and all(r.payload["transactionId"] == tx_id for r in after)
            assert after[-1].payload["meterStop"] == 1800
        assert rig2.core is not None and rig2.core.store.parked_outbox() == []
    finally:
        await rig2.stop()
        await second_csms.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_refused_transaction_message_is_retried_then_parked_not_dropped(version: str, tmp_path: Path) -> None:
    def refuse(_: Received) -> dict[str, object]:
        raise InternalError(description="CSMS database down")

    async with DevCsms() as csms:
        rig = Rig(version, csms, tmp_path / "station.db")
        from station.core.store import Store

        seed = Store(rig.db)
        seed.put("ocpp:TransactionMessageAttempts", 2)
        seed.put("ocpp:TransactionMessageRetryInterval", 0)
        seed.close()
        await rig.start()
        assert rig.core is not None and rig.esp is not None
        await csms.wait_for("StatusNotification", timeout=10)
        action = "TransactionEvent" if version == "201" else "StartTransaction"
        csms.override(action, refuse)
        rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
        rig.esp.plug()
        core = rig.core
        await eventually(lambda: len(core.store.parked_outbox()) >= 1 and core.store.outbox_depth() == 0)
        parked = core.store.parked_outbox()
        assert parked[0].kind == "started"
        assert all(p.attempts == 2 and "InternalError" in (p.last_error or "") for p in parked)
        assert len(rig.calls(action)) == 2 * len(parked)  # each tried exactly twice, then kept, not resent
        assert rig.client is not None and rig.client.status()["parked_messages"] == len(parked)
        await rig.stop()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("status", ["Pending", "Rejected"])
async def test_boot_not_accepted_is_retried_and_nothing_else_is_sent_until_accepted(version: str, status: str, tmp_path: Path) -> None:
    async with DevCsms(boot_status=status, heartbeat_interval=0) as csms:
        rig = await Rig(version, csms, tmp_path / "station.db").start()
        first = await csms.wait_for("BootNotification", timeout=10)
        await csms.wait_for("BootNotification", since=csms.received.index(first) + 1, timeout=10)
        assert {r.action for r in csms.calls()} == {"BootNotification"}
        assert rig.core is not None and not rig.core.csms_online
        csms.boot_status = "Accepted"
        status_sent = await csms.wait_for("StatusNotification", timeout=10)
        boots = csms.calls("BootNotification")
        assert csms.received.index(boots[-1]) < csms.received.index(status_sent)
        await eventually(lambda: rig.core is not None and rig.core.csms_online)
        await rig.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_events_recorded_before_the_clock_was_trusted_get_corrected_timestamps(version: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    csms = DevCsms()
    await csms.start()
    port = csms.port
    await csms.stop()
    later = DevCsms(port=port)
    rig = Rig(version, later, tmp_path / "station.db")
    await rig.start(trusted=False)
    assert rig.core is not None and rig.esp is not None and rig.clock is not None
    rig.clock._offset = timedelta(days=-400)  # the Pi booted with a date far in the past
    rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    rig.esp.plug()
    await later.start()
    try:
        await rig.wait_outbox_empty()
        sent = transaction_calls(later.received)[0]
        stamp = datetime.fromisoformat(sent.payload["timestamp"].replace("Z", "+00:00"))
        assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)
    finally:
        await rig.stop()
        await later.stop()
