"""Variable monitoring (OCPP 2.0.1 N02-N08) in the protocol-neutral engine."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.core import monitoring_service
from station.core.clock import Clock
from station.core.monitoring_service import PI_SUPPLY, PI_THROTTLED, MonitoringService
from station.core.station import StationCore
from station.core.store import Store
from station.core.monitoring import (
    MESSAGE_KIND,
    Monitor,
    MonitorEvent,
    Monitoring,
    MonitorType,
    Origin,
    Reading,
    VariableRef,
    next_clock_aligned,
)

POWER = VariableRef("EVSE", "Power", evse=1)
PROBLEM = VariableRef("FiscalMetering", "Problem", evse=1)
MODEL = VariableRef("ChargingStation", "Model")


class Rig:
    """A monitoring engine over a dict of variable values, with a settable clock and online flag."""

    def __init__(self, saved: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.values: dict[VariableRef, Reading] = {
            POWER: Reading("0", "decimal", min_limit=0, max_limit=22000),
            PROBLEM: Reading("false", "boolean"),
            MODEL: Reading("ORGE-AC", "string", supports_monitoring=False),
        }
        self.events: list[MonitorEvent] = []
        self.saved = saved
        self.now = datetime(2026, 11, 30, 10, 0, 7, tzinfo=UTC)
        self.online = True
        self.offline_severity = 9
        self.transaction: str | None = None
        self.engine = Monitoring(
            resolve=self.resolve, sink=self.events.append, save=self.save, load=lambda: self.saved,
            online=lambda: self.online, offline_severity=lambda: self.offline_severity,
            transaction_on=lambda evse: self.transaction, wall=lambda: self.now, **kwargs)

    def resolve(self, ref: VariableRef) -> Reading | str:
        if ref in self.values:
            return self.values[ref]
        known = {r.component for r in self.values}
        return "UnknownVariable" if ref.component in known else "UnknownComponent"

    def save(self, state: dict[str, Any]) -> None:
        self.saved = state

    def power(self, watts: float) -> None:
        self.values[POWER] = Reading(str(watts), "decimal", min_limit=0, max_limit=22000)
        self.engine.evaluate([POWER])

    def restarted(self) -> Rig:
        rig = Rig(self.saved)
        rig.values = self.values
        return rig


def test_an_upper_threshold_trips_only_when_the_value_goes_beyond_it() -> None:
    rig = Rig()
    result = rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    assert result.status == "Accepted" and result.monitor_id == 1
    rig.power(7000)
    assert rig.events == []
    rig.power(7400)
    [event] = rig.events
    assert (event.trigger, event.cleared, event.actual_value, event.monitor_id) == ("Alerting", False, "7400", 1)
    assert event.notification_type == "CustomMonitor"


def test_a_tripped_threshold_sends_cleared_when_the_value_returns() -> None:
    rig = Rig()
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    rig.power(7400)
    rig.power(7300)
    rig.power(6000)
    assert [e.cleared for e in rig.events] == [False, True]


def test_a_lower_threshold_trips_below_its_value() -> None:
    rig = Rig()
    rig.power(500)
    rig.engine.set_monitor(POWER, "LowerThreshold", 100, 4)
    rig.power(100)
    rig.power(20)
    assert [(e.actual_value, e.cleared) for e in rig.events] == [("20", False)]


def test_a_new_threshold_is_checked_against_the_present_value_at_once() -> None:
    rig = Rig()
    rig.power(9000)
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    assert [e.actual_value for e in rig.events] == ["9000"]


def test_a_numeric_delta_monitor_reports_moves_larger_than_its_value_from_the_last_report() -> None:
    rig = Rig()
    rig.power(1000)
    rig.engine.set_monitor(POWER, "Delta", 500, 5)
    rig.power(1400)
    rig.power(1600)
    rig.power(1900)
    assert [(e.trigger, e.actual_value) for e in rig.events] == [("Delta", "1600")]


def test_a_delta_monitor_on_a_boolean_reports_every_change() -> None:
    rig = Rig()
    rig.engine.set_monitor(PROBLEM, "Delta", 1, 5)
    rig.values[PROBLEM] = Reading("true", "boolean")
    rig.engine.evaluate()
    rig.values[PROBLEM] = Reading("false", "boolean")
    rig.engine.evaluate()
    assert [e.actual_value for e in rig.events] == ["true", "false"]


@pytest.mark.parametrize(("ref", "kind", "value", "status"), [
    (VariableRef("Nope", "Power"), "UpperThreshold", 1, "UnknownComponent"),
    (VariableRef("EVSE", "Nope", evse=1), "UpperThreshold", 1, "UnknownVariable"),
    (MODEL, "Delta", 1, "UnsupportedMonitorType"),
    (PROBLEM, "UpperThreshold", 1, "UnsupportedMonitorType"),
    (POWER, "UpperThreshold", 30000, "Rejected"),
    (POWER, "Delta", -5, "Rejected"),
    (POWER, "Periodic", 0, "Rejected"),
])
def test_set_monitor_gives_the_spec_status_for_what_it_cannot_monitor(ref: VariableRef, kind: str, value: float,
                                                                      status: str) -> None:
    assert Rig().engine.set_monitor(ref, kind, value, 4).status == status


def test_a_second_monitor_of_the_same_type_and_severity_is_a_duplicate() -> None:
    rig = Rig()
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    assert rig.engine.set_monitor(POWER, "UpperThreshold", 8000, 4).status == "Duplicate"
    assert rig.engine.set_monitor(POWER, "UpperThreshold", 8000, 3).status == "Accepted"


def test_an_id_replaces_its_monitor_but_cannot_move_it_to_another_variable() -> None:
    rig = Rig()
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    assert rig.engine.set_monitor(POWER, "UpperThreshold", 8000, 4, monitor_id=1).status == "Accepted"
    assert rig.engine.state.monitors[1].value == 8000
    assert rig.engine.set_monitor(PROBLEM, "Delta", 1, 4, monitor_id=1).status == "Rejected"
    assert rig.engine.set_monitor(POWER, "Delta", 1, 4, monitor_id=99).status == "Rejected"


def test_clear_answers_accepted_then_not_found() -> None:
    rig = Rig()
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    assert rig.engine.clear(1) == "Accepted"
    assert rig.engine.clear(1) == "NotFound"


def test_removing_a_tripped_threshold_sends_no_cleared_event() -> None:
    rig = Rig()
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    rig.power(8000)
    rig.engine.clear(1)
    rig.power(0)
    assert [e.cleared for e in rig.events] == [False]


def test_monitors_and_a_tripped_state_survive_a_restart() -> None:
    rig = Rig()
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    rig.power(8000)
    again = rig.restarted()
    again.power(100)
    assert [e.cleared for e in again.events] == [True]
    assert again.engine.set_monitor(POWER, "Delta", 10, 4).monitor_id == 2


def test_the_monitoring_level_filters_less_severe_events() -> None:
    rig = Rig()
    assert rig.engine.set_level(3) == "Accepted"
    assert rig.engine.set_level(10) == "Rejected"
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    rig.engine.set_monitor(POWER, "UpperThreshold", 9000, 2)
    rig.power(9500)
    assert [e.severity for e in rig.events] == [2]


def test_offline_only_events_at_or_below_the_offline_severity_are_queued() -> None:
    rig = Rig()
    rig.online, rig.offline_severity = False, 3
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    rig.engine.set_monitor(POWER, "UpperThreshold", 9000, 2)
    rig.power(9500)
    assert [e.severity for e in rig.events] == [2]


def test_a_periodic_monitor_reports_every_interval() -> None:
    rig = Rig()
    rig.engine.set_monitor(POWER, "Periodic", 60, 8)
    assert rig.engine.due_in() == pytest.approx(60)
    rig.now += timedelta(seconds=59)
    rig.engine.tick()
    rig.now += timedelta(seconds=1)
    rig.engine.tick()
    rig.now += timedelta(seconds=60)
    rig.engine.tick()
    assert [e.trigger for e in rig.events] == ["Periodic", "Periodic"]


def test_a_clock_aligned_monitor_reports_on_the_clock() -> None:
    rig = Rig()  # 10:00:07
    rig.engine.set_monitor(POWER, "PeriodicClockAligned", 900, 8)
    assert rig.engine.due_in() == pytest.approx(900 - 7)
    rig.now = datetime(2026, 11, 30, 10, 15, 0, tzinfo=UTC)
    rig.engine.tick()
    assert [e.timestamp.minute for e in rig.events] == [15]
    assert rig.engine.due_in() == pytest.approx(900)


def test_a_transaction_monitor_is_quiet_without_a_transaction() -> None:
    rig = Rig()
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4, transaction=True)
    rig.power(8000)
    assert rig.events == []
    rig.transaction = "tx-1"
    rig.power(8100)
    assert [e.transaction_id for e in rig.events] == ["tx-1"]


def test_a_hardware_problem_is_reported_without_a_monitor_and_cleared_once() -> None:
    rig = Rig()
    rig.engine.hardware(PROBLEM, False, severity=1)
    rig.engine.hardware(PROBLEM, True, severity=1, tech_code="NoResponse", tech_info="meter not answering")
    rig.engine.hardware(PROBLEM, True, severity=1)
    rig.engine.hardware(PROBLEM, False, severity=1)
    assert [(e.notification_type, e.cleared, e.tech_code) for e in rig.events] == [
        ("HardWiredNotification", False, "NoResponse"), ("HardWiredNotification", True, None)]


def test_a_hardware_problem_gone_while_the_daemon_was_down_is_cleared_after_the_restart() -> None:
    rig = Rig()
    rig.engine.hardware(PROBLEM, True, severity=1)
    again = rig.restarted()
    again.engine.hardware(PROBLEM, False, severity=1)
    assert [e.cleared for e in again.events] == [True]


def test_event_ids_keep_rising_across_a_restart() -> None:
    rig = Rig()
    rig.engine.hardware(PROBLEM, True, severity=1)
    again = rig.restarted()
    again.engine.hardware(PROBLEM, False, severity=1)
    assert again.events[0].event_id > rig.events[0].event_id


def test_factory_default_drops_custom_monitors_and_restores_preconfigured_ones() -> None:
    preset = Monitor(100, POWER, MonitorType.UPPER, 21000, 3)
    rig = Rig(preconfigured=[preset])
    assert rig.engine.state.monitors[100].origin is Origin.PRECONFIGURED
    rig.engine.set_monitor(POWER, "Delta", 100, 5)
    rig.engine.clear(100)
    assert rig.engine.set_base("All") == "Accepted"
    assert set(rig.engine.state.monitors) == {100, 101}
    rig.engine.set_base("FactoryDefault")
    assert set(rig.engine.state.monitors) == {100}
    rig.engine.set_base("HardWiredOnly")
    assert rig.engine.state.monitors == {}


def test_a_report_selects_by_criteria_and_component_variable() -> None:
    rig = Rig()
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    rig.engine.set_monitor(POWER, "Delta", 100, 5)
    rig.engine.set_monitor(PROBLEM, "Delta", 1, 5)
    assert [m.id for m in rig.engine.report(["DeltaMonitoring"])] == [2, 3]
    assert [m.id for m in rig.engine.report([], [VariableRef("EVSE", "")])] == [1, 2]
    assert [m.id for m in rig.engine.report(["ThresholdMonitoring"], [VariableRef("FiscalMetering", "Problem")])] == []
    with pytest.raises(ValueError):
        rig.engine.report(["NoSuchCriterion"])


def test_an_event_round_trips_through_json() -> None:
    rig = Rig()
    rig.engine.hardware(PROBLEM, True, severity=1, tech_info="x")
    assert MonitorEvent.from_json(rig.events[0].to_json()) == rig.events[0]


@given(st.floats(min_value=0, max_value=10 * 86400), st.sampled_from([1, 7, 60, 900, 3600, 86400]))
def test_the_next_clock_aligned_time_is_the_next_multiple_after_now(now: float, interval: int) -> None:
    due = next_clock_aligned(now, interval)
    assert now < due <= now + interval
    assert (due % 86400) % interval == pytest.approx(0, abs=1e-6) or due % 86400 == pytest.approx(0, abs=1e-6)


def test_a_disabled_monitoring_controller_raises_no_monitor_event_but_still_reports_hardware() -> None:
    enabled = [False]
    rig = Rig(enabled=lambda: enabled[0])
    rig.engine.set_monitor(POWER, "UpperThreshold", 7000, 4)
    rig.power(8000)
    rig.engine.hardware(PROBLEM, True, severity=1)
    assert [e.notification_type for e in rig.events] == ["HardWiredNotification"]
    enabled[0] = True
    rig.power(8100)
    assert [e.notification_type for e in rig.events] == ["HardWiredNotification", "CustomMonitor"]


@pytest.fixture
def station_core(tmp_path: Path) -> StationCore:
    return StationCore(store=Store(tmp_path / "station.db"), clock=Clock(trusted=True))


def queued(core: StationCore) -> list[MonitorEvent]:
    return [MonitorEvent.from_json(e.data) for e in core.store.pending_outbox() if e.kind == MESSAGE_KIND]


def test_the_pi_supply_flags_become_hard_wired_notifications(station_core: StationCore, tmp_path: Path) -> None:
    flags = tmp_path / "get_throttled"
    service = MonitoringService(station_core, throttled_path=flags)
    service.check_power()  # no file: not a Pi, nothing reported
    flags.write_text("0x50005\n")  # under-voltage now + throttled now (+ history bits)
    service.check_power()
    flags.write_text("0x50000\n")  # history only: both problems gone
    service.check_power()
    events = queued(station_core)
    assert [(e.ref, e.cleared) for e in events] == [
        (PI_SUPPLY, False), (PI_THROTTLED, False), (PI_SUPPLY, True), (PI_THROTTLED, True)]
    assert events[1].tech_info == "Raspberry Pi: throttled now"
    assert station_core.device_model.value("ELVSupply", "Problem") is False


def test_a_controller_link_not_up_yet_after_start_is_reported_only_after_the_grace(
        station_core: StationCore, monkeypatch: pytest.MonkeyPatch) -> None:
    service = MonitoringService(station_core)
    service._started = time.monotonic()  # as `run` sets it
    service.check_hardware()
    assert queued(station_core) == []
    monkeypatch.setattr(monitoring_service, "STARTUP_GRACE_S", 0.0)
    service.check_hardware()
    assert [e.ref for e in queued(station_core)] == [VariableRef("CPPWMController", "Problem", evse=1)]
