"""The composite-schedule evaluator: properties over random profile stacks, then one test per rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from station.core.charging_profiles import (
    ChargingProfile,
    Kind,
    Period,
    ProfileCriteria,
    Purpose,
    Recurrency,
    TxContext,
    composite_schedule,
    limit_at,
    next_change,
    profile_limit,
    select_profiles,
    validate,
)

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
TX = TxContext("tx-1", T0 - timedelta(minutes=5))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def profile(pid: int = 1, *, purpose: Purpose = Purpose.TX_DEFAULT, level: int = 0, connector: int = 1,
            kind: Kind = Kind.ABSOLUTE, start: datetime | None = T0, periods: tuple[tuple[int, float], ...] = ((0, 16.0),),
            **kw: object) -> ChargingProfile:
    return ChargingProfile(
        id=pid, connector_id=0 if purpose is Purpose.STATION_MAX else connector, stack_level=level, purpose=purpose,
        kind=kind, periods=tuple(Period(s, a) for s, a in periods),
        start_schedule=start if kind is not Kind.RELATIVE else None,
        transaction_id=TX.transaction_id if purpose is Purpose.TX else None, **kw,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------------ strategies
@st.composite
def periods(draw: st.DrawFn) -> tuple[tuple[int, float], ...]:
    starts = sorted(draw(st.sets(st.integers(1, 7200), max_size=4)))
    limits = draw(st.lists(st.integers(0, 64).map(float), min_size=len(starts) + 1, max_size=len(starts) + 1))
    return tuple(zip([0, *starts], limits, strict=True))


@st.composite
def profiles(draw: st.DrawFn, pid: int) -> ChargingProfile:
    kind = draw(st.sampled_from(Kind))
    purpose = draw(st.sampled_from(Purpose))
    extra: dict[str, object] = {}
    if kind is Kind.RECURRING:
        extra["recurrency"] = draw(st.sampled_from(Recurrency))
    if draw(st.booleans()):
        extra["duration_s"] = draw(st.integers(1, 10_000))
    if draw(st.booleans()):
        extra["valid_from"] = at(draw(st.integers(-7200, 7200)))
    if draw(st.booleans()):
        extra["valid_to"] = at(draw(st.integers(7201, 20_000)))
    return profile(pid, purpose=purpose, level=draw(st.integers(0, 8)), connector=draw(st.sampled_from([0, 1])),
                   kind=kind, start=at(draw(st.integers(-10_000, 10_000))), periods=draw(periods()), **extra)


@st.composite
def stacks(draw: st.DrawFn) -> list[ChargingProfile]:
    n = draw(st.integers(0, 6))
    return [draw(profiles(pid)) for pid in range(1, n + 1)]


times = st.integers(-20_000, 30_000).map(at)
txs = st.sampled_from([None, TX])


# ------------------------------------------------------------------------ properties
@settings(max_examples=100, deadline=None)
@given(stacks(), times, txs)
def test_composite_never_exceeds_the_station_maximum(stack: list[ChargingProfile], t: datetime, tx: TxContext | None) -> None:
    cap = limit_at([p for p in stack if p.purpose is Purpose.STATION_MAX], 1, t, tx)
    limit = limit_at(stack, 1, t, tx)
    if cap is not None:
        assert limit is not None and limit <= cap


@settings(max_examples=100, deadline=None)
@given(stacks(), times, periods())
def test_the_highest_stack_level_in_force_wins_within_a_purpose(stack: list[ChargingProfile], t: datetime,
                                                                  top_periods: tuple[tuple[int, float], ...]) -> None:
    defaults = [p for p in stack if p.purpose is Purpose.TX_DEFAULT]
    top = profile(99, level=9, start=t - timedelta(seconds=3600), periods=top_periods)  # above every drawn level
    assert limit_at([*defaults, top], 1, t) == profile_limit(top, t)


@settings(max_examples=100, deadline=None)
@given(periods(), st.integers(0, 10_000))
def test_the_limit_at_t_is_the_last_period_that_has_begun(schedule: tuple[tuple[int, float], ...], elapsed: int) -> None:
    p = profile(periods=schedule)
    expected = [limit for start, limit in schedule if start <= elapsed][-1]
    assert limit_at([p], 1, at(elapsed)) == expected


@settings(max_examples=100, deadline=None)
@given(stacks(), times)
def test_a_tx_profile_in_force_overrides_the_default(stack: list[ChargingProfile], t: datetime) -> None:
    stack = [p for p in stack if p.purpose is not Purpose.TX]
    tx_profile = profile(50, purpose=Purpose.TX, level=0, start=t, periods=((0, 7.0),))
    caps = [p for p in stack if p.purpose is Purpose.STATION_MAX]
    cap = limit_at(caps, 1, t, TX)
    assert limit_at([*stack, tx_profile], 1, t, TX) == (7.0 if cap is None else min(7.0, cap))


@settings(max_examples=100, deadline=None)
@given(stacks(), times, txs, st.floats(0.0, 1.0, exclude_max=True))
def test_the_composite_holds_until_the_next_change(stack: list[ChargingProfile], t: datetime, tx: TxContext | None,
                                                   fraction: float) -> None:
    after = next_change(stack, 1, t, tx)
    assert after is None or after > t
    horizon = after if after is not None else t + timedelta(days=30)
    span_us = (horizon - t) // timedelta(microseconds=1)
    probe = t + timedelta(microseconds=min(int(span_us * fraction), span_us - 1))  # strictly before the change
    assert limit_at(stack, 1, probe, tx) == limit_at(stack, 1, t, tx)


@settings(max_examples=100, deadline=None)
@given(stacks(), times, st.integers(1, 40_000), st.data())
def test_the_composite_schedule_gives_the_limit_at_every_instant(stack: list[ChargingProfile], start: datetime,
                                                                 duration: int, data: st.DataObject) -> None:
    schedule = composite_schedule(stack, 1, start, duration)
    offsets = [offset for offset, _ in schedule.periods]
    assert offsets[0] == 0 and offsets == sorted(set(offsets)) and offsets[-1] < duration
    assert all(a[1] != b[1] for a, b in zip(schedule.periods, schedule.periods[1:], strict=False))
    u = data.draw(st.integers(0, duration - 1))
    expected = [amps for offset, amps in schedule.periods if offset <= u][-1]
    assert limit_at(stack, 1, start + timedelta(seconds=u), None, origin=start) == expected


# ------------------------------------------------------------------------ rules
def test_site_cap_example_16_amps_now_10_amps_from_six_pm() -> None:
    midnight = datetime(2026, 11, 23, tzinfo=UTC)
    cap = profile(kind=Kind.RECURRING, recurrency=Recurrency.DAILY, start=midnight,
                  periods=((0, 16.0), (18 * 3600, 10.0)))
    noon_next_day = midnight + timedelta(days=1, hours=12)
    assert limit_at([cap], 1, noon_next_day) == 16
    assert next_change([cap], 1, noon_next_day) == midnight + timedelta(days=1, hours=18)
    assert limit_at([cap], 1, midnight + timedelta(days=1, hours=18)) == 10
    assert limit_at([cap], 1, midnight + timedelta(days=2, minutes=1)) == 16
    schedule = composite_schedule([cap], 1, noon_next_day, 12 * 3600)
    assert schedule.periods == [(0, 16.0), (6 * 3600, 10.0)]


def test_weekly_recurrence_repeats_after_seven_days() -> None:
    p = profile(kind=Kind.RECURRING, recurrency=Recurrency.WEEKLY, duration_s=3600, periods=((0, 8.0),))
    assert limit_at([p], 1, at(7 * 86400 + 60)) == 8
    assert limit_at([p], 1, at(86400 + 60)) is None


def test_a_profile_outside_its_validity_is_not_in_force() -> None:
    p = profile(valid_from=at(60), valid_to=at(120))
    assert [limit_at([p], 1, at(s)) for s in (59, 60, 119, 120)] == [None, 16, 16, None]


def test_after_its_duration_a_profile_gives_way_to_a_lower_stack_level() -> None:
    low = profile(1, level=0, periods=((0, 20.0),))
    high = profile(2, level=3, duration_s=600, periods=((0, 8.0),))
    assert limit_at([low, high], 1, at(599)) == 8
    assert limit_at([low, high], 1, at(600)) == 20


def test_a_relative_profile_counts_from_the_transaction_start() -> None:
    p = profile(kind=Kind.RELATIVE, periods=((0, 16.0), (600, 10.0)))
    assert limit_at([p], 1, TX.started_at + timedelta(seconds=599), TX) == 16
    assert limit_at([p], 1, TX.started_at + timedelta(seconds=600), TX) == 10


def test_a_relative_profile_waits_at_its_first_period_until_a_transaction_starts() -> None:
    p = profile(kind=Kind.RELATIVE, periods=((0, 16.0), (600, 10.0)))
    assert limit_at([p], 1, at(10_000)) == 16 and next_change([p], 1, at(10_000)) is None


def test_a_tx_profile_of_another_transaction_is_ignored() -> None:
    p = profile(purpose=Purpose.TX, periods=((0, 6.0),))
    assert limit_at([p], 1, T0, TxContext("other", T0)) is None
    assert limit_at([p], 1, T0, TX) == 6


def test_watts_become_amps_per_phase_at_230_volts() -> None:
    three = replace(profile(), rate_unit="W", periods=(Period(0, 11040.0),))
    one = replace(profile(), rate_unit="W", periods=(Period(0, 3680.0, 1),))
    assert limit_at([three], 1, T0) == 16 and limit_at([one], 1, T0) == 16


def test_a_connector_profile_beats_a_station_wide_default_at_the_same_level() -> None:
    station_wide = profile(1, connector=0, periods=((0, 20.0),))
    own = profile(2, connector=1, periods=((0, 12.0),))
    assert limit_at([own, station_wide], 1, T0) == 12 and limit_at([station_wide], 2, T0) == 20


def test_the_station_maximum_caps_a_higher_default() -> None:
    cap = profile(1, purpose=Purpose.STATION_MAX, periods=((0, 10.0),))
    assert limit_at([cap, profile(2, periods=((0, 16.0),))], 1, T0) == 10


def test_malformed_profiles_are_refused_with_a_reason() -> None:
    good = profile()
    assert validate(good) is None
    cases = {
        "first period": replace(good, periods=(Period(5, 16.0),)),
        "increase": replace(good, periods=(Period(0, 16.0), Period(0, 10.0))),
        "stack level": replace(good, stack_level=9),
        "whole station": replace(good, purpose=Purpose.STATION_MAX, connector_id=1),
        "needs a connector": replace(good, purpose=Purpose.TX, connector_id=0),
        "startSchedule": replace(good, start_schedule=None),
        "recurrencyKind": replace(good, kind=Kind.RECURRING),
        "validTo": replace(good, valid_from=at(10), valid_to=at(5)),
        "rate unit": replace(good, rate_unit="kW"),
    }
    for words, bad in cases.items():
        assert words in (validate(bad) or ""), words


def test_a_profile_survives_its_json_form() -> None:
    p = profile(kind=Kind.RECURRING, recurrency=Recurrency.DAILY, valid_from=at(-5), valid_to=at(5), duration_s=60,
                periods=((0, 16.0), (30, 10.0)))
    assert ChargingProfile.from_json(p.to_json()) == p


# ------------------------------------------------------------------ GetChargingProfiles selection
INSTALLED = [profile(1, purpose=Purpose.STATION_MAX, level=2), profile(2, level=3, connector=1),
             profile(3, level=1, connector=1), profile(4, level=0, connector=2)]


def test_no_evse_selects_every_profile_grouped_per_evse_with_the_station_wide_ones_first() -> None:
    found = select_profiles(INSTALLED, ProfileCriteria())
    assert [(evse, [p.id for p in group]) for evse, group in found] == [(0, [1]), (1, [3, 2]), (2, [4])]


def test_evse_0_selects_only_the_station_wide_profiles() -> None:
    assert [(e, [p.id for p in g]) for e, g in select_profiles(INSTALLED, ProfileCriteria(evse_id=0))] == [(0, [1])]


def test_purpose_and_stack_level_must_both_match() -> None:
    criteria = ProfileCriteria(purpose=Purpose.TX_DEFAULT, stack_level=3)
    assert [(e, [p.id for p in g]) for e, g in select_profiles(INSTALLED, criteria)] == [(1, [2])]


def test_profile_ids_select_alone_whatever_the_other_criteria() -> None:
    criteria = ProfileCriteria(profile_ids=(1, 4), stack_level=7)
    assert [(e, [p.id for p in g]) for e, g in select_profiles(INSTALLED, criteria)] == [(0, [1]), (2, [4])]


def test_a_source_other_than_the_csms_selects_nothing() -> None:
    assert select_profiles(INSTALLED, ProfileCriteria(sources=("EMS", "SO"))) == []
    assert len(select_profiles(INSTALLED, ProfileCriteria(sources=("CSO",)))) == 3


def test_a_profile_keeps_its_schedule_id_through_the_store() -> None:
    stored = replace(profile(9), schedule_id=77)
    assert ChargingProfile.from_json(stored.to_json()) == stored
