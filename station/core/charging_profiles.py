"""Charging profiles (smart charging) as pure data and the composite-schedule evaluator.

Protocol-neutral: the OCPP adapters translate SetChargingProfile payloads into `ChargingProfile`
and the composite back into GetCompositeSchedule answers. Everything here is a pure function of
the installed profiles, a connector, a time and the connector's transaction, so it can be tested
with properties rather than clocks.

The rules (OCPP 1.6 §3.13 / 2.0.1 K, "composite schedule"):
- A profile is *in force* at t when t is inside [validFrom, validTo), its schedule has started
  (Absolute: startSchedule; Recurring: the latest daily/weekly recurrence of startSchedule;
  Relative: the transaction's start) and not run past `duration`, and one of its periods has begun.
- Within one purpose the in-force profile with the highest stack level wins (a connector-specific
  profile beats a station-wide one at the same level).
- TxProfile (bound to the running transaction) overrides TxDefaultProfile.
- ChargingStationMaxProfile (ChargePointMaxProfile in 1.6) caps the result.
- Limits in W become per-phase amps at `NOMINAL_VOLTAGE_V` × phases (3 unless the period says).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

NOMINAL_VOLTAGE_V = 230.0
"""Phase voltage assumed when converting W limits to A (the station measures, but plans nominal)."""
DEFAULT_PHASES = 3
MAX_STACK_LEVEL = 8
"""Advertised as ChargeProfileMaxStackLevel / SmartChargingCtrlr.ProfileStackLevel."""
MAX_PERIODS = 48
"""Periods per schedule (ChargingScheduleMaxPeriods / SmartChargingCtrlr.PeriodsPerSchedule): half-hourly for a day."""
MAX_PROFILES = 24
"""Profiles installed at once (MaxChargingProfilesInstalled / SmartChargingCtrlr.Entries)."""
MAX_COMPOSITE_PERIODS = 1024
"""A composite schedule is cut after this many periods (a week of minute-long periods would not fit an answer)."""


class Purpose(str, enum.Enum):
    STATION_MAX = "ChargingStationMaxProfile"  # 1.6: ChargePointMaxProfile
    TX_DEFAULT = "TxDefaultProfile"
    TX = "TxProfile"


class Kind(str, enum.Enum):
    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"


class Recurrency(str, enum.Enum):
    DAILY = "Daily"
    WEEKLY = "Weekly"


RECURRENCE = {Recurrency.DAILY: timedelta(days=1), Recurrency.WEEKLY: timedelta(days=7)}


@dataclass(frozen=True, slots=True)
class Period:
    start_s: int
    """Seconds after the schedule's start at which this limit begins."""
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    id: int
    connector_id: int
    """0 = the whole station (station max, or a TxDefault for every connector)."""
    stack_level: int
    purpose: Purpose
    kind: Kind
    periods: tuple[Period, ...]
    rate_unit: str = "A"  # "A" or "W"
    recurrency: Recurrency | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    start_schedule: datetime | None = None
    duration_s: int | None = None
    transaction_id: str | None = None
    """TxProfile only: the core's id of the transaction it belongs to (None until a remote start begins one)."""
    schedule_id: int | None = None
    """The CSMS's id of the profile's schedule (2.0.1 chargingSchedule.id), reported back as given."""

    def period_amps(self, period: Period) -> float:
        """A period's limit as per-phase amps (W at the nominal voltage over its phases)."""
        if self.rate_unit.upper() == "W":
            return float(period.limit) / (NOMINAL_VOLTAGE_V * (period.number_phases or DEFAULT_PHASES))
        return float(period.limit)

    def to_json(self) -> dict[str, Any]:
        def t(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id, "connector_id": self.connector_id, "stack_level": self.stack_level,
            "purpose": self.purpose.value, "kind": self.kind.value, "rate_unit": self.rate_unit,
            "periods": [[p.start_s, p.limit, p.number_phases] for p in self.periods],
            "recurrency": self.recurrency.value if self.recurrency else None,
            "valid_from": t(self.valid_from), "valid_to": t(self.valid_to),
            "start_schedule": t(self.start_schedule), "duration_s": self.duration_s,
            "transaction_id": self.transaction_id, "schedule_id": self.schedule_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChargingProfile:
        def t(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            id=int(data["id"]), connector_id=int(data["connector_id"]), stack_level=int(data["stack_level"]),
            purpose=Purpose(data["purpose"]), kind=Kind(data["kind"]), rate_unit=str(data.get("rate_unit", "A")),
            periods=tuple(Period(int(s), float(limit), phases) for s, limit, phases in data["periods"]),
            recurrency=Recurrency(data["recurrency"]) if data.get("recurrency") else None,
            valid_from=t(data.get("valid_from")), valid_to=t(data.get("valid_to")),
            start_schedule=t(data.get("start_schedule")), duration_s=data.get("duration_s"),
            transaction_id=data.get("transaction_id"), schedule_id=data.get("schedule_id"),
        )


@dataclass(frozen=True, slots=True)
class TxContext:
    """The transaction running on a connector, as far as profiles care."""

    transaction_id: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class CompositeSchedule:
    """Limits (per-phase amps; None = no profile limits this stretch) from `start` for `duration_s`."""

    start: datetime
    duration_s: int
    periods: list[tuple[int, float | None]] = field(default_factory=list)
    """(seconds after start, amps) — each runs until the next one."""


SOURCE = "CSO"
"""Who installed the station's profiles: the CSMS (OCPP's chargingLimitSource "CSO"); the station
takes no limits from an EMS, SO or 15118 EV as charging profiles."""


@dataclass(frozen=True, slots=True)
class ProfileCriteria:
    """Which installed profiles a CSMS asks about (2.0.1 GetChargingProfiles, K09)."""

    evse_id: int | None = None
    """None: every profile; 0: the station-wide ones only; n: those installed on EVSE n."""
    purpose: Purpose | None = None
    stack_level: int | None = None
    profile_ids: tuple[int, ...] = ()
    """When given, these ids alone select (K09.FR.03: ids or the other criteria)."""
    sources: tuple[str, ...] = ()


def select_profiles(profiles: Sequence[ChargingProfile], criteria: ProfileCriteria) -> list[tuple[int, list[ChargingProfile]]]:
    """The profiles matching `criteria`, grouped per EVSE (station-wide first), lowest stack level first."""
    if criteria.sources and SOURCE not in criteria.sources:
        return []
    groups: dict[int, list[ChargingProfile]] = {}
    for p in profiles:
        if criteria.evse_id is not None and p.connector_id != criteria.evse_id:
            continue
        if criteria.profile_ids:
            if p.id not in criteria.profile_ids:
                continue
        elif ((criteria.purpose is not None and p.purpose is not criteria.purpose)
              or (criteria.stack_level is not None and p.stack_level != criteria.stack_level)):
            continue
        groups.setdefault(p.connector_id, []).append(p)
    return [(evse, sorted(found, key=lambda p: (p.stack_level, p.id))) for evse, found in sorted(groups.items())]


def validate(profile: ChargingProfile) -> str | None:
    """Why a profile cannot be installed regardless of station state, or None if it is well-formed."""
    if not 0 <= profile.stack_level <= MAX_STACK_LEVEL:
        return f"stack level must be 0..{MAX_STACK_LEVEL}"
    if profile.connector_id < 0:
        return "negative connector id"
    if profile.purpose is Purpose.STATION_MAX and profile.connector_id != 0:
        return "a station maximum profile applies to the whole station (id 0)"
    if profile.purpose is Purpose.TX and profile.connector_id == 0:
        return "a TxProfile needs a connector"
    if profile.rate_unit.upper() not in ("A", "W"):
        return f"unknown rate unit {profile.rate_unit!r}"
    if not profile.periods:
        return "no schedule periods"
    if len(profile.periods) > MAX_PERIODS:
        return f"at most {MAX_PERIODS} periods per schedule"
    if profile.periods[0].start_s != 0:
        return "the first period must start at 0"
    starts = [p.start_s for p in profile.periods]
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        return "period starts must increase"
    if any(p.limit < 0 for p in profile.periods):
        return "negative limit"
    if any(p.number_phases not in (None, 1, 2, 3) for p in profile.periods):
        return "numberPhases must be 1..3"
    if profile.kind in (Kind.ABSOLUTE, Kind.RECURRING) and profile.start_schedule is None:
        return f"an {profile.kind.value} profile needs startSchedule"
    if profile.kind is Kind.RECURRING and profile.recurrency is None:
        return "a Recurring profile needs recurrencyKind"
    if profile.duration_s is not None and profile.duration_s <= 0:
        return "duration must be positive"
    if profile.valid_from and profile.valid_to and profile.valid_to <= profile.valid_from:
        return "validTo must be after validFrom"
    for when in (profile.valid_from, profile.valid_to, profile.start_schedule):
        if when is not None and when.tzinfo is None:
            return "timestamps need a time zone"
    return None


# ------------------------------------------------------------------------ one profile
def _schedule_start(p: ChargingProfile, t: datetime, tx: TxContext | None, origin: datetime | None) -> datetime | None:
    """When the schedule run that covers t began."""
    if p.kind is Kind.RELATIVE:
        if tx is not None:
            return tx.started_at
        return origin if origin is not None else t  # no transaction: as if one started at the origin
    assert p.start_schedule is not None
    if p.kind is Kind.ABSOLUTE:
        return p.start_schedule
    every = RECURRENCE[p.recurrency or Recurrency.DAILY]
    return p.start_schedule + every * ((t - p.start_schedule) // every)


def _applies(p: ChargingProfile, t: datetime, tx: TxContext | None) -> bool:
    if p.valid_from is not None and t < p.valid_from:
        return False
    if p.valid_to is not None and t >= p.valid_to:
        return False
    return p.purpose is not Purpose.TX or (tx is not None and p.transaction_id == tx.transaction_id)


def profile_limit(p: ChargingProfile, t: datetime, tx: TxContext | None = None,
                  origin: datetime | None = None) -> float | None:
    """The profile's limit at t in per-phase amps, or None when it is not in force then."""
    if not _applies(p, t, tx):
        return None
    start = _schedule_start(p, t, tx, origin)
    if start is None or t < start:
        return None
    elapsed = t - start
    if p.duration_s is not None and elapsed >= timedelta(seconds=p.duration_s):
        return None
    begun = [q for q in p.periods if timedelta(seconds=q.start_s) <= elapsed]
    return p.period_amps(begun[-1]) if begun else None


def _boundaries(p: ChargingProfile, t: datetime, tx: TxContext | None, origin: datetime | None) -> Iterable[datetime]:
    """Times after which this profile's contribution may change (a superset is fine)."""
    yield from (b for b in (p.valid_from, p.valid_to) if b is not None)
    if p.kind is Kind.RELATIVE and tx is None and origin is None:
        return  # no transaction yet: stays at its first period until one starts
    start = _schedule_start(p, t, tx, origin)
    if start is None:
        return
    starts = [start]
    if p.kind is Kind.RECURRING:
        starts.append(start + RECURRENCE[p.recurrency or Recurrency.DAILY])
    for s in starts:
        yield s
        yield from (s + timedelta(seconds=q.start_s) for q in p.periods)
        if p.duration_s is not None:
            yield s + timedelta(seconds=p.duration_s)


# ------------------------------------------------------------------------ composite
def _relevant(p: ChargingProfile, connector_id: int) -> bool:
    if p.purpose is Purpose.STATION_MAX:
        return True
    if connector_id == 0:
        return False  # the station as a whole: only its maximum profile speaks for it
    if p.purpose is Purpose.TX:
        return p.connector_id == connector_id
    return p.connector_id in (0, connector_id)


def _winner(profiles: Sequence[ChargingProfile], purpose: Purpose, t: datetime, tx: TxContext | None,
            origin: datetime | None) -> float | None:
    best: tuple[tuple[int, bool], float] | None = None
    for p in profiles:
        if p.purpose is not purpose:
            continue
        amps = profile_limit(p, t, tx, origin)
        if amps is None:
            continue
        rank = (p.stack_level, p.connector_id != 0)
        if best is None or rank > best[0]:
            best = (rank, amps)
    return best[1] if best else None


def limit_at(profiles: Sequence[ChargingProfile], connector_id: int, t: datetime, tx: TxContext | None = None,
             origin: datetime | None = None) -> float | None:
    """The composite limit (per-phase amps) on a connector at t; None when no profile limits it.

    `origin` stands in for the start of a Relative schedule when no transaction runs (a composite
    schedule asked for ahead of a session); without it such profiles stay at their first period.
    """
    mine = [p for p in profiles if _relevant(p, connector_id)]
    station_max = _winner(mine, Purpose.STATION_MAX, t, tx, origin)
    tx_limit = _winner(mine, Purpose.TX, t, tx, origin)
    if tx_limit is None:
        tx_limit = _winner(mine, Purpose.TX_DEFAULT, t, tx, origin)
    limits = [x for x in (tx_limit, station_max) if x is not None]
    return min(limits) if limits else None


def next_change(profiles: Sequence[ChargingProfile], connector_id: int, t: datetime, tx: TxContext | None = None,
                origin: datetime | None = None) -> datetime | None:
    """The earliest time after t at which the composite may change (None: never, as things stand)."""
    times = [b for p in profiles if _relevant(p, connector_id) for b in _boundaries(p, t, tx, origin) if b > t]
    return min(times) if times else None


def composite_schedule(profiles: Sequence[ChargingProfile], connector_id: int, start: datetime, duration_s: int,
                       tx: TxContext | None = None) -> CompositeSchedule:
    """The composite over [start, start + duration) as periods, merged where the limit stays the same."""
    end = start + timedelta(seconds=duration_s)
    origin = start if tx is None else None
    result = CompositeSchedule(start, duration_s)
    at = start
    while at < end and len(result.periods) < MAX_COMPOSITE_PERIODS:
        amps = limit_at(profiles, connector_id, at, tx, origin)
        offset = int((at - start).total_seconds())
        if result.periods and result.periods[-1][0] == offset:
            result.periods[-1] = (offset, amps)  # sub-second boundaries collapse onto whole seconds
        elif not result.periods or result.periods[-1][1] != amps:
            result.periods.append((offset, amps))
        after = next_change(profiles, connector_id, at, tx, origin)
        if after is None:
            break
        at = after
    # a collapse may have left two equal neighbours
    merged: list[tuple[int, float | None]] = []
    for offset, amps in result.periods:
        if not merged or merged[-1][1] != amps:
            merged.append((offset, amps))
    result.periods[:] = merged
    return result

