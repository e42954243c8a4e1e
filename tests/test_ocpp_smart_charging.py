"""SetChargingProfile / ClearChargingProfile / GetCompositeSchedule in both versions, over the dev CSMS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from station.ocpp.base import iso
from tests.ocpp_helpers import Rig, eventually, rig_on_dev_csms


@pytest.fixture(params=["201", "16"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms(request.param, tmp_path / "station.db") as rig:
        yield rig


def ocpp_profile(rig: Rig, pid: int, purpose: str, periods: list[tuple[int, float]], *, level: int = 0,
                 kind: str = "Absolute", start: datetime | None = None, unit: str = "A", **extra: Any) -> dict[str, Any]:
    schedule: dict[str, Any] = {"chargingRateUnit": unit,
                                "chargingSchedulePeriod": [{"startPeriod": s, "limit": a} for s, a in periods]}
    if start is not None:
        schedule["startSchedule"] = iso(start)
    if rig.version == "201":
        return {"id": pid, "stackLevel": level, "chargingProfilePurpose": purpose, "chargingProfileKind": kind,
                "chargingSchedule": [{"id": pid, **schedule}], **extra}
    purpose = "ChargePointMaxProfile" if purpose == "ChargingStationMaxProfile" else purpose
    return {"chargingProfileId": pid, "stackLevel": level, "chargingProfilePurpose": purpose,
            "chargingProfileKind": kind, "chargingSchedule": schedule, **extra}


async def set_profile(rig: Rig, connector: int, profile: dict[str, Any]) -> str:
    if rig.version == "201":
        answer = await rig.csms.call("CP", "SetChargingProfile", {"evseId": connector, "chargingProfile": profile})
    else:
        answer = await rig.csms.call("CP", "SetChargingProfile", {"connectorId": connector, "csChargingProfiles": profile})
    return str(answer["status"])


async def composite(rig: Rig, connector: int, duration: int, unit: str | None = None) -> dict[str, Any]:
    key = "evseId" if rig.version == "201" else "connectorId"
    payload: dict[str, Any] = {key: connector, "duration": duration}
    if unit:
        payload["chargingRateUnit"] = unit
    answer = await rig.csms.call("CP", "GetCompositeSchedule", payload)
    if answer["status"] != "Accepted":
        return answer
    return {"status": "Accepted", **(answer["schedule"] if rig.version == "201" else answer["chargingSchedule"])}


async def clear(rig: Rig, **criteria: Any) -> str:
    """criteria: id, connector, purpose, level (named once for both versions)."""
    if rig.version == "201":
        payload: dict[str, Any] = {}
        if "id" in criteria:
            payload["chargingProfileId"] = criteria["id"]
        found = {k: v for k, v in (("evseId", criteria.get("connector")), ("chargingProfilePurpose", criteria.get("purpose")),
                                   ("stackLevel", criteria.get("level"))) if v is not None}
        if found:
            payload["chargingProfileCriteria"] = found
    else:
        purpose = criteria.get("purpose")
        payload = {k: v for k, v in (("id", criteria.get("id")), ("connectorId", criteria.get("connector")),
                                     ("chargingProfilePurpose", "ChargePointMaxProfile" if purpose == "ChargingStationMaxProfile" else purpose),
                                     ("stackLevel", criteria.get("level"))) if v is not None}
    return str((await rig.csms.call("CP", "ClearChargingProfile", payload))["status"])


def limits(answer: dict[str, Any]) -> list[tuple[int, float]]:
    return [(p["startPeriod"], p["limit"]) for p in answer["chargingSchedulePeriod"]]


async def test_composite_schedule_reports_every_period_of_a_site_cap(rig: Rig) -> None:
    assert rig.core is not None
    now = rig.core.clock.now()
    assert await set_profile(rig, 0, ocpp_profile(rig, 1, "TxDefaultProfile", [(0, 16.0), (3600, 10.0)], start=now)) == "Accepted"
    answer = await composite(rig, 1, 7200)
    assert answer["status"] == "Accepted" and answer["chargingRateUnit"] == "A"
    got = limits(answer)
    assert [a for _, a in got] == [16.0, 10.0] and abs(got[1][0] - 3600) <= 1
    assert rig.core.connectors[1].limits["csms"] == 16


async def test_composite_schedule_is_capped_by_the_station_maximum_and_given_in_watts(rig: Rig) -> None:
    now = rig.core.clock.now()  # type: ignore[union-attr]
    await set_profile(rig, 0, ocpp_profile(rig, 1, "ChargingStationMaxProfile", [(0, 6900.0)], start=now, unit="W"))
    await set_profile(rig, 1, ocpp_profile(rig, 2, "TxDefaultProfile", [(0, 16.0)], start=now))
    assert limits(await composite(rig, 1, 600)) == [(0, 10.0)]
    assert limits(await composite(rig, 1, 600, unit="W")) == [(0, 6900.0)]


async def test_without_profiles_the_composite_is_the_hardware_limit(rig: Rig) -> None:
    assert limits(await composite(rig, 1, 60)) == [(0, 32.0)]
    assert (await composite(rig, 9, 60))["status"] == "Rejected"


async def test_a_tx_profile_without_a_transaction_is_rejected(rig: Rig) -> None:
    assert rig.core is not None
    profile = ocpp_profile(rig, 5, "TxProfile", [(0, 8.0)], kind="Relative")
    assert await set_profile(rig, 1, profile) == "Rejected"
    assert rig.core.charging.profiles == []


async def test_a_tx_profile_applies_to_the_running_transaction_and_ends_with_it(rig: Rig) -> None:
    assert rig.core is not None and rig.esp is not None
    rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    rig.esp.plug()
    tx = rig.core.connectors[1].transaction
    assert tx is not None
    if rig.version == "16":
        await eventually(lambda: tx.csms_id is not None)
        wrong = ocpp_profile(rig, 5, "TxProfile", [(0, 8.0)], kind="Relative", transactionId=int(tx.csms_id) + 1)  # type: ignore[arg-type]
        assert await set_profile(rig, 1, wrong) == "Rejected"
    assert await set_profile(rig, 1, ocpp_profile(rig, 5, "TxProfile", [(0, 8.0)], kind="Relative")) == "Accepted"
    await eventually(lambda: ("current", 8) in rig.esp.commands)  # type: ignore[union-attr]
    rig.core.request_stop(tx.id)
    assert rig.core.charging.profiles == [] and rig.core.connectors[1].limit_a == 32


async def test_station_maximum_on_a_connector_and_malformed_schedules_are_rejected(rig: Rig) -> None:
    now = rig.core.clock.now()  # type: ignore[union-attr]
    assert await set_profile(rig, 1, ocpp_profile(rig, 1, "ChargingStationMaxProfile", [(0, 16.0)], start=now)) == "Rejected"
    assert await set_profile(rig, 1, ocpp_profile(rig, 2, "TxDefaultProfile", [(60, 16.0)], start=now)) == "Rejected"
    assert await set_profile(rig, 1, ocpp_profile(rig, 3, "TxDefaultProfile", [(0, 16.0)], kind="Recurring", start=now)) == "Rejected"
    assert await set_profile(rig, 7, ocpp_profile(rig, 4, "TxDefaultProfile", [(0, 16.0)], start=now)) == "Rejected"


async def test_same_stack_level_and_purpose_replaces_in_16_and_is_rejected_in_201(rig: Rig) -> None:
    assert rig.core is not None
    now = rig.core.clock.now()
    await set_profile(rig, 1, ocpp_profile(rig, 1, "TxDefaultProfile", [(0, 16.0)], start=now))
    status = await set_profile(rig, 1, ocpp_profile(rig, 2, "TxDefaultProfile", [(0, 10.0)], start=now))
    ids = [p.id for p in rig.core.charging.profiles]
    if rig.version == "201":
        assert status == "Rejected" and ids == [1]
    else:
        assert status == "Accepted" and ids == [2]


async def test_daily_recurring_profile_follows_the_time_of_day(rig: Rig) -> None:
    assert rig.core is not None
    now = rig.core.clock.now()
    yesterday = now - timedelta(days=1, minutes=1)  # recurs daily: the limit changes in 23 h 59 min
    profile = ocpp_profile(rig, 1, "TxDefaultProfile", [(0, 11.0), (60, 20.0)], kind="Recurring", start=yesterday,
                           recurrencyKind="Daily")
    assert await set_profile(rig, 1, profile) == "Accepted"
    assert rig.core.connectors[1].limit_a == 20
    got = limits(await composite(rig, 1, 86400 + 120))
    assert [a for _, a in got] == [20.0, 11.0, 20.0]
    assert abs(got[1][0] - (86400 - 60)) <= 1 and abs(got[2][0] - 86400) <= 1


async def test_clear_by_id_purpose_and_stack_level(rig: Rig) -> None:
    assert rig.core is not None
    now = rig.core.clock.now()
    await set_profile(rig, 0, ocpp_profile(rig, 1, "ChargingStationMaxProfile", [(0, 20.0)], start=now))
    await set_profile(rig, 1, ocpp_profile(rig, 2, "TxDefaultProfile", [(0, 16.0)], level=1, start=now))
    await set_profile(rig, 1, ocpp_profile(rig, 3, "TxDefaultProfile", [(0, 12.0)], level=2, start=now))
    assert rig.core.connectors[1].limit_a == 12
    assert await clear(rig, purpose="TxDefaultProfile", level=2) == "Accepted"
    assert rig.core.connectors[1].limit_a == 16
    assert await clear(rig, id=1) == "Accepted"
    assert await clear(rig, id=1) == "Unknown"
    assert await clear(rig, connector=1) == "Accepted"
    assert rig.core.charging.profiles == [] and rig.core.connectors[1].limit_a == 32
