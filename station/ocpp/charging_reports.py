"""GetChargingProfiles → ReportChargingProfiles (OCPP 2.0.1 K09), mixed into `V201Session`.

The core selects (`station.core.charging_profiles.select_profiles`); this module only reads the
request's criteria and writes the installed profiles back in OCPP's shape: one
ReportChargingProfiles per EVSE (evseId 0 for the station-wide ones), `tbc` on all but the last,
sent after the answer. CitrineOS asks after every SetChargingProfile / ClearChargingProfile and
after a remote-started transaction begins.
"""

from __future__ import annotations

from typing import Any

from station.core.charging_profiles import SOURCE, ChargingProfile, ProfileCriteria, Purpose
from station.ocpp.rpc import CallErrorReceived, after_raw, on_raw


def _time(value: Any) -> str:
    from station.ocpp.base import iso

    return iso(value)


def profile_json(p: ChargingProfile) -> dict[str, Any]:
    """An installed profile as a 2.0.1 ChargingProfileType (one schedule: no ISO 15118 here)."""
    periods = []
    for period in p.periods:
        item: dict[str, Any] = {"startPeriod": period.start_s, "limit": period.limit}
        if period.number_phases is not None:
            item["numberPhases"] = period.number_phases
        periods.append(item)
    schedule: dict[str, Any] = {"id": p.schedule_id if p.schedule_id is not None else p.id,
                                "chargingRateUnit": p.rate_unit.upper(), "chargingSchedulePeriod": periods}
    if p.start_schedule is not None:
        schedule["startSchedule"] = _time(p.start_schedule)
    if p.duration_s is not None:
        schedule["duration"] = p.duration_s
    profile: dict[str, Any] = {"id": p.id, "stackLevel": p.stack_level, "chargingProfilePurpose": p.purpose.value,
                               "chargingProfileKind": p.kind.value, "chargingSchedule": [schedule]}
    if p.recurrency is not None:
        profile["recurrencyKind"] = p.recurrency.value
    if p.valid_from is not None:
        profile["validFrom"] = _time(p.valid_from)
    if p.valid_to is not None:
        profile["validTo"] = _time(p.valid_to)
    if p.transaction_id is not None:
        profile["transactionId"] = p.transaction_id
    return profile


def criteria_of(payload: dict[str, Any]) -> ProfileCriteria | None:
    """The request's criteria for the core; None when they cannot match anything installed here
    (a purpose the station never holds, such as ChargingStationExternalConstraints)."""
    raw = payload.get("chargingProfile") or {}
    purpose = None
    if "chargingProfilePurpose" in raw:
        text = raw["chargingProfilePurpose"]
        if text not in {p.value for p in Purpose}:
            return None
        purpose = Purpose(text)
    evse = payload.get("evseId")
    return ProfileCriteria(
        evse_id=int(evse) if evse is not None else None, purpose=purpose,
        stack_level=int(raw["stackLevel"]) if raw.get("stackLevel") is not None else None,
        profile_ids=tuple(int(i) for i in raw.get("chargingProfileId") or ()),
        sources=tuple(str(s) for s in raw.get("chargingLimitSource") or ()))


class ChargingProfileReports:
    """The 2.0.1 session's GetChargingProfiles handler."""

    core: Any
    log: Any
    _profile_report: tuple[int, list[tuple[int, list[ChargingProfile]]]] | None = None

    @on_raw("GetChargingProfiles")
    def on_get_charging_profiles(self, payload: dict[str, Any]) -> dict[str, Any]:
        criteria = criteria_of(payload)
        found = self.core.charging.find(criteria) if criteria is not None else []
        if not found:
            self._profile_report = None
            return {"status": "NoProfiles"}  # K09.FR.06 (none installed that match)
        self._profile_report = (int(payload["requestId"]), found)
        return {"status": "Accepted"}

    @after_raw("GetChargingProfiles")
    async def after_get_charging_profiles(self, payload: dict[str, Any]) -> None:
        """One ReportChargingProfiles per EVSE, `tbc` on all but the last (K09.FR.04/05)."""
        prepared, self._profile_report = self._profile_report, None
        if prepared is None:
            return
        request_id, groups = prepared
        for index, (evse, profiles) in enumerate(groups):
            message: dict[str, Any] = {"requestId": request_id, "chargingLimitSource": SOURCE, "evseId": evse,
                                       "chargingProfile": [profile_json(p) for p in profiles]}
            if index < len(groups) - 1:
                message["tbc"] = True
            try:
                await self.request("ReportChargingProfiles", message)  # type: ignore[attr-defined]
            except (CallErrorReceived, TimeoutError) as exc:
                self.log.warning("ocpp: ReportChargingProfiles not confirmed; report abandoned",
                                 request_id=request_id, evse_id=evse, error=str(exc))
                return
