"""GetChargingProfiles → ReportChargingProfiles (OCPP 2.0.1 K09) over the strict dev CSMS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from station.devtools.csms import Received
from tests.ocpp_helpers import Rig, rig_on_dev_csms


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        yield rig


def profile(pid: int, purpose: str, level: int, limit: float, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "stackLevel": level, "chargingProfilePurpose": purpose, "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": 100 + pid, "chargingRateUnit": "A",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}], **extra}


async def install(rig: Rig) -> None:
    for evse, body in ((0, profile(1, "ChargingStationMaxProfile", 0, 32.0)),
                       (1, profile(2, "TxDefaultProfile", 1, 16.0)),
                       (1, profile(3, "TxDefaultProfile", 0, 20.0)),
                       (0, profile(4, "TxDefaultProfile", 2, 10.0))):
        answer = await rig.csms.call("CP", "SetChargingProfile", {"evseId": evse, "chargingProfile": body})
        assert answer["status"] == "Accepted"


async def ask(rig: Rig, request_id: int, criteria: dict[str, Any], evse: int | None = None) -> tuple[str, list[Received]]:
    """The answer's status and, when Accepted, the reports up to the one without tbc."""
    mark = rig.csms.mark()
    payload: dict[str, Any] = {"requestId": request_id, "chargingProfile": criteria}
    if evse is not None:
        payload["evseId"] = evse
    answer = await rig.csms.call("CP", "GetChargingProfiles", payload)
    if answer["status"] != "Accepted":
        return answer["status"], []
    await rig.csms.wait_for("ReportChargingProfiles", since=mark, predicate=lambda r: not r.payload.get("tbc"))
    return answer["status"], [r for r in rig.csms.calls("ReportChargingProfiles") if rig.csms.received.index(r) >= mark]


async def test_all_installed_profiles_are_reported_one_message_per_evse_tbc_on_all_but_the_last(rig: Rig) -> None:
    await install(rig)
    status, reports = await ask(rig, 7, {})
    assert status == "Accepted"
    assert [(r.payload["evseId"], [p["id"] for p in r.payload["chargingProfile"]], r.payload.get("tbc", False))
            for r in reports] == [(0, [1, 4], True), (1, [3, 2], False)]
    assert all(r.payload["requestId"] == 7 and r.payload["chargingLimitSource"] == "CSO" for r in reports)
    first = reports[1].payload["chargingProfile"][1]
    assert first["chargingSchedule"][0]["id"] == 102  # the schedule's id as the CSMS gave it
    assert first["chargingSchedule"][0]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 16.0}]


async def test_evse_0_reports_only_the_station_wide_profiles(rig: Rig) -> None:
    await install(rig)
    _, reports = await ask(rig, 8, {}, evse=0)
    assert [(r.payload["evseId"], [p["id"] for p in r.payload["chargingProfile"]]) for r in reports] == [(0, [1, 4])]


async def test_an_evse_and_a_purpose_report_the_matching_profiles_of_that_evse(rig: Rig) -> None:
    await install(rig)
    _, reports = await ask(rig, 9, {"chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 1}, evse=1)
    assert [(r.payload["evseId"], [p["id"] for p in r.payload["chargingProfile"]]) for r in reports] == [(1, [2])]


async def test_a_list_of_profile_ids_reports_exactly_those(rig: Rig) -> None:
    await install(rig)
    _, reports = await ask(rig, 10, {"chargingProfileId": [3, 4]})
    assert [[p["id"] for p in r.payload["chargingProfile"]] for r in reports] == [[4], [3]]


@pytest.mark.parametrize("criteria", [{"chargingProfileId": [99]}, {"chargingLimitSource": ["EMS"]},
                                      {"chargingProfilePurpose": "ChargingStationExternalConstraints"},
                                      {"chargingProfilePurpose": "TxProfile"}],
                         ids=["unknown-id", "other-source", "external-constraints", "no-tx-profile"])
async def test_criteria_that_match_nothing_are_answered_no_profiles_and_nothing_is_reported(
        rig: Rig, criteria: dict[str, Any]) -> None:
    await install(rig)
    mark = rig.csms.mark()
    status, _ = await ask(rig, 11, criteria)
    assert status == "NoProfiles"
    await rig.csms.call("CP", "GetChargingProfiles", {"requestId": 12, "chargingProfile": {}, "evseId": 1})
    await rig.csms.wait_for("ReportChargingProfiles", since=mark)
    assert all(r.payload["requestId"] == 12 for r in rig.csms.calls("ReportChargingProfiles"))


async def test_no_profiles_installed_is_answered_no_profiles(rig: Rig) -> None:
    status, _ = await ask(rig, 13, {})
    assert status == "NoProfiles"


async def test_the_tx_profile_of_a_remote_start_is_reported_with_its_transaction_id(rig: Rig) -> None:
    assert rig.esp is not None
    tx_profile = profile(9, "TxProfile", 0, 12.0)
    answer = await rig.csms.call("CP", "RequestStartTransaction", {
        "idToken": {"idToken": "REMOTE-1", "type": "Central"}, "remoteStartId": 44, "evseId": 1,
        "chargingProfile": tx_profile})
    assert answer["status"] == "Accepted"
    rig.esp.plug()
    started = await rig.csms.wait_for("TransactionEvent", predicate=lambda r: r.payload["eventType"] == "Started")
    status, reports = await ask(rig, 14, {"chargingProfilePurpose": "TxProfile"}, evse=1)
    assert status == "Accepted"
    [reported] = reports[0].payload["chargingProfile"]
    assert reported["id"] == 9
    assert reported["transactionId"] == started.payload["transactionInfo"]["transactionId"]
