"""Installed charging profiles in the core: persisted, followed over time, offered to the controller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from station.core.charging_profiles import MAX_PERIODS, MAX_PROFILES, ChargingProfile, Kind, Period, Purpose
from station.core.clock import Clock
from station.core.model import ConnectorStatus, ControllerState, PilotState
from station.core.station import StationCore
from station.core.store import Store
from tests.core_helpers import RecordingController
from tests.ocpp_helpers import eventually


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[StationCore]:
    core = StationCore(store=Store(tmp_path / "station.db"), clock=Clock(trusted=True))
    yield core
    await core.close()
    core.store.close()


@pytest.fixture
async def esp(core: StationCore) -> RecordingController:
    return RecordingController.attached(core)


def absolute(pid: int, start: datetime, *periods: tuple[int, float], purpose: Purpose = Purpose.TX_DEFAULT,
             level: int = 0, connector: int = 1, **kw: object) -> ChargingProfile:
    return ChargingProfile(id=pid, connector_id=connector, stack_level=level, purpose=purpose, kind=Kind.ABSOLUTE,
                           periods=tuple(Period(s, a) for s, a in periods), start_schedule=start, **kw)  # type: ignore[arg-type]


async def charging_session(core: StationCore, esp: RecordingController, *, charge: bool = False) -> None:
    ok, _ = core.request_start(1, "TAG")
    assert ok
    esp.plug()
    if charge:
        esp.ev_requests_charge()
    await eventually(lambda: esp.current.authorized)


async def test_an_installed_profile_becomes_the_csms_limit_at_once(core: StationCore) -> None:
    assert core.charging.install(absolute(1, core.clock.now(), (0, 12.0))) is None
    assert core.connectors[1].limits["csms"] == 12 and core.connectors[1].limit_a == 12


async def test_the_limit_follows_the_schedule_to_the_next_period(core: StationCore, esp: RecordingController) -> None:
    await charging_session(core, esp)  # authorized, EV not drawing yet: the firmware takes new limits
    core.charging.install(absolute(1, core.clock.now(), (0, 16.0), (1, 10.0)))
    await eventually(lambda: ("current", 16) in esp.commands)
    await eventually(lambda: core.connectors[1].limit_a == 10, timeout=5)
    await eventually(lambda: ("current", 10) in esp.commands)
    assert esp.current.max_current_a == 10


async def test_a_limit_change_while_charging_waits_until_the_ev_pauses(core: StationCore, esp: RecordingController) -> None:
    await charging_session(core, esp, charge=True)
    assert esp.current.state == ControllerState.CHARGING
    core.charging.install(absolute(1, core.clock.now(), (0, 10.0)))
    await asyncio.sleep(0.05)
    assert core.connectors[1].limit_a == 10 and ("current", 10) not in esp.commands  # firmware ignores it now
    esp._emit(pilot=PilotState.B, relay_closed=False, state=ControllerState.PAUSED)
    await eventually(lambda: ("current", 10) in esp.commands)


async def test_a_limit_below_six_amps_suspends_the_session(core: StationCore, esp: RecordingController) -> None:
    core.charging.install(absolute(1, core.clock.now(), (0, 0.0)))
    core.request_start(1, "TAG")
    esp.plug()
    await asyncio.sleep(0.05)
    assert ("authorize", None) not in esp.commands
    assert core.connectors[1].derived.status == ConnectorStatus.SUSPENDED_EVSE


async def test_profiles_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "station.db"
    first = StationCore(store=Store(db), clock=Clock(trusted=True))
    now = first.clock.now()
    first.charging.install(absolute(7, now - timedelta(hours=1), (0, 16.0), (7200, 10.0)))
    await first.close()
    first.store.close()
    again = StationCore(store=Store(db), clock=Clock(trusted=True))
    try:
        assert [p.id for p in again.charging.profiles] == [7]
        assert again.connectors[1].limits["csms"] == 16
        assert [a for _, a in again.charging.composite(1, 3 * 3600).periods] == [16.0, 10.0]
    finally:
        await again.close()
        again.store.close()


async def test_flat_limits_from_before_profiles_are_migrated(tmp_path: Path) -> None:
    store = Store(tmp_path / "station.db")
    store.put("ocpp:limits", {"1": 13.0})
    core = StationCore(store=store, clock=Clock(trusted=True))
    try:
        assert core.connectors[1].limits["csms"] == 13 and store.get("ocpp:limits") is None
        assert core.charging.clear(connector_id=1) == 1 and "csms" not in core.connectors[1].limits
    finally:
        await core.close()
        store.close()


async def test_a_tx_profile_needs_the_running_transaction_and_ends_with_it(core: StationCore, esp: RecordingController) -> None:
    tx_profile = absolute(3, core.clock.now(), (0, 8.0), purpose=Purpose.TX)
    assert "no transaction" in (core.charging.install(tx_profile) or "")
    await charging_session(core, esp)
    assert core.charging.install(tx_profile) is None
    assert core.connectors[1].limit_a == 8
    assert core.charging.profiles[0].transaction_id == core.connectors[1].transaction.id  # type: ignore[union-attr]
    core.request_stop(connector_id=1)
    assert core.charging.profiles == [] and "csms" not in core.connectors[1].limits


async def test_a_tx_profile_sent_with_a_remote_start_binds_to_the_transaction_it_starts(core: StationCore, esp: RecordingController) -> None:
    core.request_start(1, "TAG")
    assert core.charging.install(absolute(4, core.clock.now(), (0, 9.0), purpose=Purpose.TX)) is None
    assert "csms" not in core.connectors[1].limits  # not in force before its transaction
    esp.plug()
    await eventually(lambda: core.connectors[1].transaction is not None)
    assert core.charging.profiles[0].transaction_id == core.connectors[1].transaction.id  # type: ignore[union-attr]
    assert core.connectors[1].limit_a == 9


async def test_same_purpose_and_stack_level_replaces_or_is_refused(core: StationCore) -> None:
    now = core.clock.now()
    core.charging.install(absolute(1, now, (0, 16.0)))
    assert "already" in (core.charging.install(absolute(2, now, (0, 10.0)), replace_same_stack=False) or "")
    assert core.charging.install(absolute(1, now, (0, 11.0)), replace_same_stack=False) is None  # same id: update
    assert core.charging.install(absolute(2, now, (0, 10.0)), replace_same_stack=True) is None
    assert [p.id for p in core.charging.profiles] == [2] and core.connectors[1].limit_a == 10


async def test_clear_by_criteria_removes_only_the_matching_profiles(core: StationCore) -> None:
    now = core.clock.now()
    core.charging.install(absolute(1, now, (0, 20.0), purpose=Purpose.STATION_MAX, connector=0))
    core.charging.install(absolute(2, now, (0, 16.0), level=1))
    core.charging.install(absolute(3, now, (0, 12.0), level=2))
    assert core.charging.clear(purpose=Purpose.TX_DEFAULT, stack_level=2) == 1
    assert core.connectors[1].limit_a == 16
    assert core.charging.clear(profile_id=1, purpose=Purpose.TX) == 1  # an id wins over criteria
    assert core.charging.clear(connector_id=5) == 0
    assert [p.id for p in core.charging.profiles] == [2]


async def test_close_cancels_the_evaluation_task(core: StationCore) -> None:
    core.charging.install(absolute(1, core.clock.now(), (0, 16.0), (3600, 10.0)))
    task = core.charging._task
    assert task is not None and not task.done()
    await core.close()
    assert task.done()


async def test_installed_profiles_and_periods_are_bounded(core: StationCore) -> None:
    now = core.clock.now()
    slots = [(Purpose.TX_DEFAULT, level, c) for c in (0, 1) for level in range(9)]
    slots += [(Purpose.STATION_MAX, level, 0) for level in range(9)]
    for pid, (purpose, level, connector) in enumerate(slots[:MAX_PROFILES]):
        assert core.charging.install(absolute(pid, now, (0, 16.0), purpose=purpose, level=level, connector=connector)) is None
    purpose, level, connector = slots[MAX_PROFILES]
    extra = absolute(99, now, (0, 16.0), purpose=purpose, level=level, connector=connector)
    assert "installed already" in (core.charging.install(extra) or "")
    assert core.charging.install(absolute(0, now, (0, 10.0))) is None  # replacing one is fine
    many = tuple((i * 60, 16.0) for i in range(MAX_PERIODS + 1))
    assert "periods" in (core.charging.install(absolute(0, now, *many)) or "")


async def test_status_shows_the_installed_profiles_and_the_next_change(core: StationCore) -> None:
    now = core.clock.now()
    core.charging.install(absolute(1, now, (0, 16.0), (600, 10.0)))
    shown = core.snapshot()["smart_charging"]
    assert [p["id"] for p in shown["profiles"]] == [1]
    assert shown["next_change"] == (now + timedelta(seconds=600)).isoformat()
