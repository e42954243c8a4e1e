"""GetBaseReport / GetReport (OCPP 2.0.1 B07/B08): answered first, then NotifyReport pages, station on a
real dev CSMS (every payload validated against the official schemas on both ends)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.devtools.csms import Received
from station.ocpp.reports import paginate
from station.ocpp.rpc import CallErrorReceived
from tests.ocpp_helpers import Rig, rig_on_dev_csms


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        yield rig


async def report(rig: Rig, action: str, payload: dict[str, Any]) -> tuple[str, list[Received]]:
    """The answer's status and the NotifyReport pages that followed (until tbc false)."""
    mark = rig.csms.mark()
    answer = await rig.csms.call("CP", action, payload)
    if answer["status"] != "Accepted":
        return answer["status"], []
    await rig.csms.wait_for("NotifyReport", predicate=lambda r: r.payload["tbc"] is False, since=mark, timeout=10)
    return answer["status"], [r for r in rig.calls("NotifyReport") if r.payload["requestId"] == payload["requestId"]]


def entries(pages: list[Received]) -> list[dict[str, Any]]:
    return [item for page in pages for item in page.payload["reportData"]]


def find(items: list[dict[str, Any]], component: str, variable: str, **where: Any) -> dict[str, Any]:
    return next(i for i in items if i["component"]["name"] == component and i["variable"]["name"] == variable
                and all(i["component"].get(k) == v for k, v in where.items()))


async def test_full_inventory_reports_every_variable_in_pages_with_seq_no_and_tbc(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.device_model.set("DeviceDataCtrlr", "ItemsPerMessage", 10, instance="GetReport", persist=False)
    status, pages = await report(rig, "GetBaseReport", {"requestId": 7, "reportBase": "FullInventory"})
    assert status == "Accepted"
    assert [p.payload["seqNo"] for p in pages] == list(range(len(pages))) and len(pages) > 5
    assert [p.payload["tbc"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert all(len(p.payload["reportData"]) <= 10 for p in pages)
    assert len({p.payload["generatedAt"] for p in pages}) == 1
    items = entries(pages)
    assert len(items) == len(list(rig.core.device_model.entries()))
    power = find(items, "EVSE", "Power", evse={"id": 1})
    assert [a["type"] for a in power["variableAttribute"]] == ["Actual", "MaxSet"]
    assert power["variableCharacteristics"] == {"dataType": "decimal", "supportsMonitoring": True, "unit": "W"}
    heartbeat = find(items, "OCPPCommCtrlr", "HeartbeatInterval")["variableAttribute"][0]
    assert heartbeat == {"type": "Actual", "mutability": "ReadWrite", "persistent": True, "constant": False, "value": "300"}


async def test_a_write_only_value_is_reported_without_its_value(rig: Rig) -> None:
    _, pages = await report(rig, "GetBaseReport", {"requestId": 8, "reportBase": "ConfigurationInventory"})
    password = find(entries(pages), "SecurityCtrlr", "BasicAuthPassword")["variableAttribute"][0]
    assert password["mutability"] == "WriteOnly" and "value" not in password


async def test_configuration_inventory_holds_only_what_the_operator_can_set(rig: Rig) -> None:
    _, pages = await report(rig, "GetBaseReport", {"requestId": 9, "reportBase": "ConfigurationInventory"})
    items = entries(pages)
    assert all(a["mutability"] != "ReadOnly" for i in items for a in i["variableAttribute"])
    names = {(i["component"]["name"], i["variable"]["name"]) for i in items}
    assert ("OCPPCommCtrlr", "HeartbeatInterval") in names and ("ChargingStation", "AvailabilityState") not in names


async def test_summary_inventory_reports_availability_and_problems(rig: Rig) -> None:
    assert rig.core is not None and rig.esp is not None
    rig.core.on_controller_link(1, False, "test: cable cut")
    _, pages = await report(rig, "GetBaseReport", {"requestId": 10, "reportBase": "SummaryInventory"})
    items = {(i["component"]["name"], i["variable"]["name"]): i["variableAttribute"][0].get("value") for i in entries(pages)}
    assert items[("ChargingStation", "AvailabilityState")] == "Faulted"
    assert items[("Connector", "AvailabilityState")] == "Faulted"
    assert items[("CPPWMController", "Problem")] == "true"
    assert ("FiscalMetering", "Problem") not in items  # false: not a problem


async def test_get_report_with_criteria_and_a_component_variable(rig: Rig) -> None:
    wanted = [{"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "AvailabilityState"}}]
    status, _ = await report(rig, "GetReport", {"requestId": 11, "componentCriteria": ["Problem"], "componentVariable": wanted})
    assert status == "EmptyResultSet"
    status, pages = await report(rig, "GetReport", {"requestId": 12, "componentCriteria": ["Available"], "componentVariable": wanted})
    assert status == "Accepted"
    assert [(i["component"], i["variable"]) for i in entries(pages)] == [
        ({"name": "EVSE", "evse": {"id": 1}}, {"name": "AvailabilityState"})]


async def test_get_report_component_without_variable_or_instance_matches_all_of_them(rig: Rig) -> None:
    _, pages = await report(rig, "GetReport", {"requestId": 13, "componentVariable": [
        {"component": {"name": "DeviceDataCtrlr"}, "variable": {"name": "ItemsPerMessage"}},
        {"component": {"name": "EVSE"}}]})
    items = entries(pages)
    assert sorted(i["variable"]["instance"] for i in items if i["component"]["name"] == "DeviceDataCtrlr") == [
        "GetReport", "GetVariables", "SetVariables"]
    assert {i["variable"]["name"] for i in items if i["component"]["name"] == "EVSE"} >= {"AvailabilityState", "Power"}


async def test_get_report_for_an_unknown_component_is_an_empty_result_set(rig: Rig) -> None:
    status, _ = await report(rig, "GetReport", {"requestId": 14, "componentVariable": [{"component": {"name": "NoSuchCtrlr"}}]})
    assert status == "EmptyResultSet"
    assert not [r for r in rig.calls("NotifyReport") if r.payload["requestId"] == 14]


async def test_get_report_with_more_entries_than_items_per_message_is_an_occurrence_error(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.device_model.set("DeviceDataCtrlr", "ItemsPerMessage", 2, instance="GetReport", persist=False)
    with pytest.raises(CallErrorReceived) as error:
        await rig.csms.call("CP", "GetReport", {"requestId": 15, "componentVariable": [
            {"component": {"name": "EVSE"}}, {"component": {"name": "Connector"}}, {"component": {"name": "ClockCtrlr"}}]})
    assert error.value.code == "OccurrenceConstraintViolation"


async def test_pages_stay_within_bytes_per_message(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.device_model.set("DeviceDataCtrlr", "BytesPerMessage", 2000, instance="GetReport", persist=False)
    _, pages = await report(rig, "GetBaseReport", {"requestId": 16, "reportBase": "FullInventory"})
    assert all(len(json.dumps(p.payload, separators=(",", ":"))) <= 2000 for p in pages)


async def test_a_second_report_while_one_is_sent_is_rejected(rig: Rig) -> None:
    gate: list[Any] = []

    async def slow(received: Received) -> dict[str, Any]:
        gate.append(received)
        await asyncio.sleep(1.0)
        return {}

    rig.csms.override("NotifyReport", slow)
    first = await rig.csms.call("CP", "GetBaseReport", {"requestId": 17, "reportBase": "FullInventory"})
    second = await rig.csms.call("CP", "GetBaseReport", {"requestId": 18, "reportBase": "FullInventory"})
    assert first["status"] == "Accepted" and second["status"] == "Rejected"


@given(st.lists(st.text(max_size=300), max_size=60), st.integers(1, 20), st.integers(200, 5000))
def test_pages_keep_order_and_limits(texts: list[str], max_items: int, max_bytes: int) -> None:
    items = [{"n": i, "text": t} for i, t in enumerate(texts)]
    pages = paginate(items, max_items, max_bytes)
    assert [i for page in pages for i in page] == items
    for page in pages:
        assert 1 <= len(page) <= max_items
        if len(page) > 1:
            assert len(json.dumps(page, separators=(",", ":"))) + 160 <= max_bytes + len(page)
