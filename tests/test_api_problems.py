"""Problem flags derived from the daemon's status (api/problems.py): what a technician reads at a glance."""

from __future__ import annotations

from typing import Any

from api.problems import problems

HEALTHY: dict[str, Any] = {"ocpp": {"connected": True, "parked_messages": 0, "held_messages": 0},
                           "clock": {"trusted": True}, "connectors": []}


def flags(**changes: Any) -> dict[str, dict[str, str]]:
    status = {**HEALTHY, **changes}
    return {p["code"]: p for p in problems(status)}


def test_a_healthy_station_has_no_problems() -> None:
    assert flags() == {}


def test_parked_messages_are_a_warning_that_names_the_way_to_release_them() -> None:
    found = flags(ocpp={**HEALTHY["ocpp"], "parked_messages": 2})["outbox_parked"]
    assert found["severity"] == "warning"
    assert found["message"].startswith("2 message(s) refused by the CSMS are parked")
    assert "station outbox" in found["message"]


def test_messages_held_for_the_other_ocpp_version_are_a_warning() -> None:
    found = flags(ocpp={**HEALTHY["ocpp"], "held_messages": 3})["outbox_held"]
    assert found["severity"] == "warning" and found["message"].startswith("3 message(s) wait for")


def test_a_dead_meter_says_since_when_in_utc_time_of_day() -> None:
    found = flags(meter={"model": "adl400", "port": "/dev/meter"},
                  meter_health={"healthy": False, "reason": "3 polls in a row failed",
                                "since": "2026-11-30T01:13:17.861563+00:00"})["meter_unhealthy"]
    assert found["message"] == ("energy meter adl400 on /dev/meter not answering since 01:13:17 UTC "
                                "(3 polls in a row failed): energy cannot be measured for billing")
