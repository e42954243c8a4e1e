"""Security events: local security log, durable SecurityEventNotification in both versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ocpp.messages import Call, _validate_payload

from station.core import store as store_module
from station.core.clock import Clock
from station.core.security_events import MESSAGE_KIND, LoginFailureBursts, SecurityEventLog
from station.core.events import EventBus
from station.core.station import StationCore
from station.core.store import Store
from station.devtools.csms import DevCsms, Received
from tests.ocpp_helpers import Rig, eventually

VERSIONS = ["201", "16"]
SCHEMA_VERSION = {"201": "2.0.1", "16": "1.6"}


def assert_valid(version: str, received: Received) -> None:
    """The library's own validator (draft-4 jsonschema over the official schema) accepts the payload."""
    _validate_payload(Call(received.unique_id, received.action, received.payload), SCHEMA_VERSION[version])


def security_log(tmp_path: Path) -> SecurityEventLog:
    return SecurityEventLog(Store(tmp_path / "station.db"), Clock(trusted=True), EventBus())


# ------------------------------------------------------------------ the core's log and queue
def test_an_event_is_written_to_the_security_log_and_queued_for_the_csms(tmp_path: Path) -> None:
    log = security_log(tmp_path)
    log.record("StartupOfTheDevice", "device booted")
    [queued] = log.store.pending_outbox()
    assert (queued.kind, queued.transaction_id, queued.data) == (
        MESSAGE_KIND, "", {"type": "StartupOfTheDevice", "tech_info": "device booted"})
    [entry] = log.between()
    assert (entry.type, entry.tech_info, entry.critical) == ("StartupOfTheDevice", "device booted", True)


def test_events_survive_closing_the_database_without_a_shutdown(tmp_path: Path) -> None:
    log = security_log(tmp_path)
    log.record("ResetOrReboot", "Immediate reset")
    log.store._db.close()  # no checkpoint, like a kill -9 after the commit
    reopened = Store(tmp_path / "station.db")
    assert [e.data["type"] for e in reopened.pending_outbox()] == ["ResetOrReboot"]
    assert [r["type"] for r in reopened.security_log()] == ["ResetOrReboot"]


def test_the_security_log_is_read_between_two_timestamps(tmp_path: Path) -> None:
    log = security_log(tmp_path)
    before = datetime.now(UTC)
    log.record("InvalidMessages", "first")
    middle = datetime.now(UTC)
    log.record("InvalidMessages", "second")
    assert [e.tech_info for e in log.between(before, middle)] == ["first"]
    assert [e.tech_info for e in log.between(middle, None)] == ["second"]
    assert [e.tech_info for e in log.between(None, before - timedelta(seconds=1))] == []
    lines = list(log.export_lines())
    assert lines[0].endswith(" InvalidMessages first") and lines[0][:4].isdigit()


def test_the_security_log_keeps_only_its_newest_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "SECURITY_LOG_ROWS", 3)
    log = security_log(tmp_path)
    for n in range(5):
        log.record("InvalidMessages", f"n{n}")
    assert [e.tech_info for e in log.between()] == ["n2", "n3", "n4"]
    assert len(log.store.pending_outbox()) == 5  # delivery is not bounded: the CSMS gets every one


def test_tech_info_is_one_line_cut_to_the_schemas_255_characters(tmp_path: Path) -> None:
    log = security_log(tmp_path)
    log.record("InvalidMessages", "line one\nline two " + "x" * 400)
    info = log.store.pending_outbox()[0].data["tech_info"]
    assert len(info) == 255 and "\n" not in info and info.startswith("line one line two")


def test_an_unknown_event_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown security event type"):
        security_log(tmp_path).record("SomethingHappened")


def test_a_refused_disk_write_is_logged_not_raised(tmp_path: Path) -> None:
    log = security_log(tmp_path)
    log.store._db.close()
    assert log.record("StartupOfTheDevice") is None


def test_a_clock_step_raises_setting_system_time(tmp_path: Path) -> None:
    core = StationCore(store=Store(tmp_path / "station.db"), clock=Clock(trusted=False))
    core.clock.trust(datetime.now(UTC) + timedelta(hours=3), "csms")
    [event] = core.security_events.between()
    assert event.type == "SettingSystemTime" and "+10800" in (event.tech_info or "") and "csms" in (event.tech_info or "")


def test_a_clock_trusted_without_a_step_raises_no_event(tmp_path: Path) -> None:
    core = StationCore(store=Store(tmp_path / "station.db"), clock=Clock(trusted=False))
    core.clock.trust(datetime.now(UTC), "csms")
    core.clock.trust(datetime.now(UTC) + timedelta(seconds=1), "csms")
    assert core.security_events.between() == []


def test_failed_logins_in_one_burst_raise_one_event() -> None:
    now = [0.0]
    reported: list[str] = []
    bursts = LoginFailureBursts(reported.append, quiet_s=60, monotonic=lambda: now[0])
    for _ in range(50):
        bursts.failed("local API from 127.0.0.1")
        now[0] += 1
    assert len(reported) == 1
    now[0] += 61
    bursts.failed("local API from 127.0.0.1")
    assert len(reported) == 2 and "previous burst: 50 failures" in reported[1]


# ------------------------------------------------------------------ delivery over OCPP
@pytest.mark.parametrize("version", VERSIONS)
async def test_events_recorded_offline_reach_the_csms_in_order_after_a_restart(version: str, tmp_path: Path) -> None:
    db = tmp_path / "station.db"
    csms = await DevCsms().start()
    port = csms.port
    rig = await Rig(version, csms, db).start()
    assert rig.core is not None
    await csms.wait_for("StatusNotification", timeout=10)
    await csms.stop()
    core = rig.core
    await eventually(lambda: not core.csms_online)
    core.security_events.record("InvalidCsmsCertificate", "certificate verify failed")
    core.security_events.record("ReconfigurationOfSecurityParameters", "SecurityCtrlr.BasicAuthPassword changed")
    core.security_events.record("ResetOrReboot", "Immediate reset requested by the CSMS")
    await rig.stop()  # power cut with everything still queued
    second = DevCsms(port=port)
    rig2 = await Rig(version, second, db).start(trusted=False)
    await second.start()
    try:
        await rig2.wait_outbox_empty(timeout=15)
        events = second.calls("SecurityEventNotification")
        invalid_csms = "InvalidCsmsCertificate" if version == "201" else "InvalidCentralSystemCertificate"  # whitepaper name
        assert [e.payload["type"] for e in events] == [
            invalid_csms, "ReconfigurationOfSecurityParameters", "ResetOrReboot"]
        assert events[0].payload["techInfo"] == "certificate verify failed"
        for event in events:
            assert_valid(version, event)
    finally:
        await rig2.stop()
        await second.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_refused_event_is_retried_not_dropped(version: str, tmp_path: Path) -> None:
    from ocpp.exceptions import InternalError

    refusals = [2]

    def flaky(_: Received) -> dict[str, object]:
        if refusals[0]:
            refusals[0] -= 1
            raise InternalError(description="CSMS database busy")
        return {}

    async with DevCsms() as csms:
        rig = await Rig(version, csms, tmp_path / "station.db").start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            assert rig.client is not None and rig.core is not None
            rig.core.store.put("ocpp:TransactionMessageRetryInterval", 0)
            rig.core.store.put("ocpp:TransactionMessageAttempts", 5)
            csms.overrides["SecurityEventNotification"] = flaky
            rig.core.security_events.record("TamperDetectionActivated", "lid opened")
            await rig.wait_outbox_empty()
            sent = csms.calls("SecurityEventNotification")
            assert [e.payload["type"] for e in sent] == ["TamperDetectionActivated"] * 3
        finally:
            await rig.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_csms_reset_raises_reset_or_reboot(version: str, tmp_path: Path) -> None:
    async with DevCsms() as csms:
        rig = await Rig(version, csms, tmp_path / "station.db").start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            payload = {"type": "Immediate"} if version == "201" else {"type": "Hard"}
            await csms.call(rig.station_id, "Reset", payload)
            event = await csms.wait_for("SecurityEventNotification", timeout=10)
            assert event.payload["type"] == "ResetOrReboot"
            # the restart follows once the event is answered (issue 22: Reset drains)
            await eventually(lambda: rig.resets == ["Immediate" if version == "201" else "Hard"])
            assert_valid(version, event)
        finally:
            await rig.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_firmware_updated_is_raised_once_even_when_the_station_restarts_before_reporting_it(
    version: str, tmp_path: Path
) -> None:
    from tests.test_ocpp_firmware import leave_result, updater

    leave_result(tmp_path / "state", ok=True, request_id=42 if version == "201" else None)
    csms = await DevCsms().start()
    port = csms.port
    await csms.stop()  # the update flow finished while the CSMS was unreachable
    rig = Rig(version, csms, tmp_path / "station.db")
    rig.firmware = updater(tmp_path / "state")
    await rig.start()
    assert rig.core is not None
    core = rig.core
    await eventually(lambda: [e.type for e in core.security_events.between()] == ["FirmwareUpdated"])
    await rig.stop()  # power cut before anything was reported
    second = DevCsms(port=port)
    rig2 = Rig(version, second, tmp_path / "station.db")
    rig2.firmware = updater(tmp_path / "state")
    await second.start()
    await rig2.start()
    try:
        event = await second.wait_for("SecurityEventNotification", timeout=10)
        await second.wait_for("FirmwareStatusNotification", predicate=lambda r: r.payload["status"] == "Installed",
                              timeout=10)
        await rig2.wait_outbox_empty()
        assert event.payload["type"] == "FirmwareUpdated" and "9.9.0" in event.payload["techInfo"]
        assert len(second.calls("SecurityEventNotification")) == 1
        assert rig2.core is not None and [e.type for e in rig2.core.security_events.between()] == ["FirmwareUpdated"]
        assert_valid(version, event)
    finally:
        await rig2.stop()
        await second.stop()
