"""Monitoring over OCPP 2.0.1 (N02-N07): a station on a real dev CSMS that validates every payload
against the official schemas, with the monitoring task running as in the daemon."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from station.core.model import MeterReading
from station.ocpp.rpc import CallErrorReceived
from station.devtools.csms import DevCsms
from tests.ocpp_helpers import Rig, eventually, rig_on_dev_csms

POWER = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}}


@contextlib.asynccontextmanager
async def monitored(rig: Rig) -> AsyncIterator[Rig]:
    assert rig.core is not None
    task = asyncio.create_task(rig.core.monitoring.run())
    await asyncio.sleep(0)  # subscribed before the test makes changes
    try:
        yield rig
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig, monitored(rig):
        yield rig


def monitor(kind: str, value: float, severity: int = 4, target: dict[str, Any] = POWER, **extra: Any) -> dict[str, Any]:
    return {**target, "type": kind, "value": value, "severity": severity, **extra}


async def set_monitoring(rig: Rig, *items: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await rig.csms.call("CP", "SetVariableMonitoring", {"setMonitoringData": list(items)})
    return answer["setMonitoringResult"]


def power(rig: Rig, watts: float) -> None:
    assert rig.core is not None
    rig.core.on_meter_reading(MeterReading(energy_import_wh=1000.0, power_w=watts))


async def test_set_variable_monitoring_answers_each_element_with_its_component_variable_and_status(rig: Rig) -> None:
    results = await set_monitoring(
        rig,
        monitor("UpperThreshold", 7000),
        monitor("UpperThreshold", 8000),
        monitor("Delta", 1, target={"component": {"name": "NoSuchThing"}, "variable": {"name": "Power"}}),
        monitor("Delta", 1, target={"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Nope"}}),
        monitor("UpperThreshold", 1, target={"component": {"name": "ChargingStation"}, "variable": {"name": "Model"}}),
    )
    assert [r["status"] for r in results] == ["Accepted", "Duplicate", "UnknownComponent", "UnknownVariable",
                                              "UnsupportedMonitorType"]
    assert results[0]["id"] >= 1 and results[0]["component"] == POWER["component"]
    assert results[0]["variable"] == {"name": "Power"} and results[0]["type"] == "UpperThreshold"


async def test_a_tripped_threshold_sends_notify_event_and_then_cleared(rig: Rig) -> None:
    [result] = await set_monitoring(rig, monitor("UpperThreshold", 7000))
    mark = rig.csms.mark()
    power(rig, 7500.0)
    tripped = await rig.csms.wait_for("NotifyEvent", since=mark, timeout=10)
    [event] = tripped.payload["eventData"]
    assert event["component"] == POWER["component"] and event["variable"] == {"name": "Power"}
    assert (event["trigger"], event["actualValue"], event["variableMonitoringId"]) == ("Alerting", "7500", result["id"])
    assert event["eventNotificationType"] == "CustomMonitor" and "cleared" not in event
    mark = rig.csms.mark()
    power(rig, 3000.0)
    cleared = await rig.csms.wait_for("NotifyEvent", since=mark, timeout=10)
    assert cleared.payload["eventData"][0]["cleared"] is True


async def test_clear_variable_monitoring_removes_a_monitor_and_reports_unknown_ids(rig: Rig) -> None:
    [result] = await set_monitoring(rig, monitor("Delta", 500))
    answer = await rig.csms.call("CP", "ClearVariableMonitoring", {"id": [result["id"], 4242]})
    assert [(r["id"], r["status"]) for r in answer["clearMonitoringResult"]] == [
        (result["id"], "Accepted"), (4242, "NotFound")]


async def test_get_monitoring_report_sends_the_monitors_in_notify_monitoring_report(rig: Rig) -> None:
    [result] = await set_monitoring(rig, monitor("Delta", 500, severity=6))
    mark = rig.csms.mark()
    answer = await rig.csms.call("CP", "GetMonitoringReport", {"requestId": 7, "monitoringCriteria": ["DeltaMonitoring"]})
    assert answer["status"] == "Accepted"
    report = await rig.csms.wait_for("NotifyMonitoringReport", since=mark, timeout=10)
    assert report.payload["requestId"] == 7 and report.payload["seqNo"] == 0 and not report.payload.get("tbc")
    [entry] = report.payload["monitor"]
    assert entry["component"] == POWER["component"]
    assert entry["variableMonitoring"] == [{"id": result["id"], "transaction": False, "value": 500.0,
                                           "type": "Delta", "severity": 6}]


async def test_get_monitoring_report_with_nothing_selected_is_an_empty_result_set(rig: Rig) -> None:
    answer = await rig.csms.call("CP", "GetMonitoringReport", {
        "requestId": 8, "componentVariable": [{"component": {"name": "FiscalMetering"}}]})
    assert answer["status"] == "EmptyResultSet"


async def test_the_station_has_factory_monitors_that_set_monitoring_base_drops_and_restores(rig: Rig) -> None:
    async def report_ids(request_id: int) -> list[int] | str:
        mark = rig.csms.mark()
        answer = await rig.csms.call("CP", "GetMonitoringReport", {"requestId": request_id})
        if answer["status"] != "Accepted":
            return answer["status"]
        report = await rig.csms.wait_for("NotifyMonitoringReport", since=mark, timeout=10)
        return [m["id"] for entry in report.payload["monitor"] for m in entry["variableMonitoring"]]

    factory = await report_ids(1)
    assert isinstance(factory, list) and factory  # EVSE power above its hardware limit
    await set_monitoring(rig, monitor("Delta", 100))
    assert (await rig.csms.call("CP", "SetMonitoringBase", {"monitoringBase": "HardWiredOnly"}))["status"] == "Accepted"
    assert await report_ids(2) == "EmptyResultSet"
    assert (await rig.csms.call("CP", "SetMonitoringBase", {"monitoringBase": "FactoryDefault"}))["status"] == "Accepted"
    assert await report_ids(3) == factory


async def test_set_monitoring_level_filters_events_and_rejects_an_unknown_severity(rig: Rig) -> None:
    assert (await rig.csms.call("CP", "SetMonitoringLevel", {"severity": 2}))["status"] == "Accepted"
    assert (await rig.csms.call("CP", "SetMonitoringLevel", {"severity": 12}))["status"] == "Rejected"
    await set_monitoring(rig, monitor("UpperThreshold", 7000, severity=4), monitor("UpperThreshold", 9000, severity=1))
    mark = rig.csms.mark()
    power(rig, 9500.0)
    event = await rig.csms.wait_for("NotifyEvent", since=mark, timeout=10)
    await rig.settle()
    await asyncio.sleep(0.3)
    assert len(rig.csms.calls("NotifyEvent")[-1:]) == 1 and event.payload["eventData"][0]["actualValue"] == "9500"
    assert [c.payload["eventData"][0]["actualValue"] for c in rig.calls("NotifyEvent")] == ["9500"]


async def test_active_monitoring_level_and_base_are_readable_variables(rig: Rig) -> None:
    await rig.csms.call("CP", "SetMonitoringLevel", {"severity": 5})
    answer = await rig.csms.call("CP", "GetVariables", {"getVariableData": [
        {"component": {"name": "MonitoringCtrlr"}, "variable": {"name": "ActiveMonitoringLevel"}},
        {"component": {"name": "MonitoringCtrlr"}, "variable": {"name": "ActiveMonitoringBase"}}]})
    assert [r["attributeValue"] for r in answer["getVariableResult"]] == ["5", "All"]


async def test_more_monitors_than_items_per_message_is_an_occurrence_constraint_violation(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.device_model.set("MonitoringCtrlr", "ItemsPerMessage", 2, instance="SetVariableMonitoring", persist=False)
    with pytest.raises(CallErrorReceived) as error:
        await set_monitoring(rig, *(monitor("Delta", n + 1, severity=n) for n in range(3)))
    assert error.value.code == "OccurrenceConstraintViolation"


async def test_a_monitor_set_by_the_csms_survives_a_restart(tmp_path: Path) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig, monitored(rig):
        [result] = await set_monitoring(rig, monitor("UpperThreshold", 7000))
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig, monitored(rig):
        mark = rig.csms.mark()
        power(rig, 8000.0)
        event = await rig.csms.wait_for("NotifyEvent", since=mark, timeout=10)
        assert event.payload["eventData"][0]["variableMonitoringId"] == result["id"]


async def test_a_lost_controller_link_is_a_hard_wired_notification_queued_while_offline(tmp_path: Path) -> None:
    csms = await DevCsms().start()
    rig = await Rig("201", csms, tmp_path / "station.db").start()
    second = DevCsms(port=csms.port)
    try:
        async with monitored(rig):
            core = rig.core
            assert core is not None
            await csms.wait_for("StatusNotification", timeout=10)
            await csms.stop()
            await eventually(lambda: not core.csms_online)
            core.on_controller_link(1, False, "no status for 3 s")
            await eventually(lambda: core.store.outbox_depth() > 0)
            await second.start()
            event = await second.wait_for("NotifyEvent", timeout=15)
    finally:
        await rig.stop()
        await second.stop()
    [data] = event.payload["eventData"]
    assert data["component"] == {"name": "CPPWMController", "evse": {"id": 1}}
    assert (data["variable"], data["eventNotificationType"], data["actualValue"]) == (
        {"name": "Problem"}, "HardWiredNotification", "true")
    assert "no status for 3 s" in data["techInfo"]


async def test_a_16_session_drops_queued_monitoring_events_without_sending_anything(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig, monitored(rig):
        assert rig.core is not None
        rig.core.on_controller_link(1, False, "unplugged")
        await rig.wait_outbox_empty()
        assert rig.calls("NotifyEvent") == []


async def test_a_16_csms_learns_of_a_dead_meter_from_status_notification_error_code(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        assert rig.core is not None
        mark = rig.csms.mark()
        rig.core.on_meter_health(False, "no answer for 3 polls")
        status = await rig.csms.wait_for("StatusNotification", since=mark, timeout=10)
        assert (status.payload["status"], status.payload["errorCode"]) == ("Available", "PowerMeterFailure")


async def test_a_long_monitoring_report_is_sent_in_pages_with_tbc(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.device_model.set("DeviceDataCtrlr", "ItemsPerMessage", 1, instance="GetReport", persist=False)
    problem = {"component": {"name": "FiscalMetering"}, "variable": {"name": "Problem"}}
    await set_monitoring(rig, monitor("Delta", 100), monitor("Delta", 1, target=problem))
    mark = rig.csms.mark()
    assert (await rig.csms.call("CP", "GetMonitoringReport", {"requestId": 9}))["status"] == "Accepted"
    await eventually(lambda: len(rig.csms.calls("NotifyMonitoringReport")) == 2)
    pages = [c.payload for c in rig.csms.received[mark:] if c.action == "NotifyMonitoringReport" and c.kind == "call"]
    assert [(p["seqNo"], p.get("tbc", False), len(p["monitor"])) for p in pages] == [(0, True, 1), (1, False, 1)]


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_triggered_meter_values_is_refused_while_the_meter_does_not_answer(version: str, tmp_path: Path) -> None:
    async with rig_on_dev_csms(version, tmp_path / "station.db") as rig:
        assert rig.core is not None
        power(rig, 7000.0)
        rig.core.on_meter_health(False, "no answer for 3 polls")
        answer = await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "MeterValues"})
        assert answer["status"] == "Rejected"  # its last reading would be sent as measured now
