"""The device model on its own: declarations, parsing and validation, persistence, hooks, secrets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from station.core.device_model import (
    Attribute,
    AttributeType,
    DataType,
    DeviceModel,
    Invalid,
    Mutability,
    Scope,
    Status,
    Variable,
    format_value,
    parse_value,
)
from station.core.standard_variables import STANDARD
from station.core.store import Store

INTERVAL = Variable("TestCtrlr", "Interval", DataType.INTEGER, Mutability.READ_WRITE, default=30, min_limit=1,
                    max_limit=3600, key16="TestInterval")
MODE = Variable("TestCtrlr", "Mode", DataType.OPTION_LIST, Mutability.READ_WRITE, default="Fast",
                values_list=("Fast", "Slow"))
ORDER = Variable("TestCtrlr", "Order", DataType.SEQUENCE_LIST, Mutability.READ_WRITE, default="A",
                 values_list=("A", "B", "C"))
SECRET = Variable("TestCtrlr", "Password", DataType.STRING, Mutability.READ_WRITE, secret=True, min_limit=4,
                  max_limit=40)
LATER = Variable("TestCtrlr", "Later", DataType.BOOLEAN, Mutability.READ_WRITE, default=False, owner_required=True)
REBOOT = Variable("TestCtrlr", "Slot", DataType.INTEGER, Mutability.READ_WRITE, default=1, reboot_required=True)
LIMITED = Variable("TestCtrlr", "Power", DataType.DECIMAL, scope=Scope.EVSE, unit="W",
                   extra=(Attribute(AttributeType.MAX_SET, default=22080.0),))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "station.db")
    yield store
    store.close()


def make(store: Store, *variables: Variable, evses: int = 2) -> DeviceModel:
    model = DeviceModel(store, {e: (1,) for e in range(1, evses + 1)})
    model.declare(*variables)
    return model


def test_a_written_value_persists_across_a_restart(store: Store, tmp_path: Path) -> None:
    model = make(store, INTERVAL)
    assert model.write(model.entry("TestCtrlr", "Interval"), "120").status == Status.ACCEPTED
    again = make(Store(tmp_path / "station.db"), INTERVAL)
    assert again.value("TestCtrlr", "Interval") == 120


def test_a_change_runs_the_apply_hook_with_the_typed_value(store: Store) -> None:
    model = make(store, INTERVAL)
    seen: list[Any] = []
    model.bind("TestCtrlr", "Interval", apply=lambda entry, value: seen.append(value))
    model.write(model.entry("TestCtrlr", "Interval"), " 45 ")
    assert seen == [45]


def test_values_outside_the_limits_are_rejected_with_a_reason_and_not_stored(store: Store) -> None:
    model = make(store, INTERVAL)
    entry = model.entry("TestCtrlr", "Interval")
    for text in ("0", "3601", "soon", "1.5", ""):
        result = model.write(entry, text)
        assert result.status == Status.REJECTED and result.reason in Invalid.REASONS, text
    assert model.value("TestCtrlr", "Interval") == 30


def test_option_and_sequence_lists_accept_only_listed_values(store: Store) -> None:
    model = make(store, MODE, ORDER)
    assert model.write(model.entry("TestCtrlr", "Mode"), "Slow").status == Status.ACCEPTED
    assert model.write(model.entry("TestCtrlr", "Mode"), "Fast,Slow").status == Status.REJECTED
    assert model.write(model.entry("TestCtrlr", "Order"), "C, A").status == Status.ACCEPTED
    assert model.value("TestCtrlr", "Order") == "C,A"
    assert model.write(model.entry("TestCtrlr", "Order"), "A,A").status == Status.REJECTED
    assert model.write(model.entry("TestCtrlr", "Order"), "D").status == Status.REJECTED


def test_read_only_values_cannot_be_written_but_the_station_may_set_them(store: Store) -> None:
    model = make(store, LIMITED)
    entry = model.entry("TestCtrlr", "Power", evse=1)
    assert model.write(entry, "1000").reason == "ReadOnly"
    model.set("TestCtrlr", "Power", 1000.0, evse=1, persist=False)
    assert model.read(entry).value == "1000"


def test_attributes_other_than_actual_are_read_where_declared(store: Store) -> None:
    model = make(store, LIMITED)
    entry = model.entry("TestCtrlr", "Power", evse=2)
    assert model.read(entry, "MaxSet").value == "22080"
    assert model.read(entry, "Target").status == Status.NOT_SUPPORTED_ATTRIBUTE_TYPE


def test_a_live_getter_answers_for_its_own_evse(store: Store) -> None:
    model = make(store, LIMITED)
    model.bind("TestCtrlr", "Power", get=lambda entry: 100.0 * (entry.evse or 0))
    assert [model.read(model.entry("TestCtrlr", "Power", evse=e)).value for e in (1, 2)] == ["100", "200"]


def test_unknown_component_and_unknown_variable_are_told_apart(store: Store) -> None:
    model = make(store, INTERVAL, LIMITED)
    assert model.find("NoSuchCtrlr", "Interval") == Status.UNKNOWN_COMPONENT
    assert model.find("TestCtrlr", "NoSuchThing") == Status.UNKNOWN_VARIABLE
    assert model.find("testctrlr", "INTERVAL") is model.entry("TestCtrlr", "Interval")
    assert model.find("TestCtrlr", "Power", evse=3) == Status.UNKNOWN_COMPONENT


def test_a_secret_is_write_only_and_never_logged(store: Store) -> None:
    model = make(store, SECRET)
    model.bind("TestCtrlr", "Password", apply=lambda *_: None)
    entry = model.entry("TestCtrlr", "Password")
    with capture_logs() as logs:
        assert model.write(entry, "CANARY-SECRET-42").status == Status.ACCEPTED
    assert "CANARY-SECRET-42" not in repr(logs)
    assert model.read(entry).status == Status.REJECTED and model.read(entry).reason == "WriteOnly"
    assert "CANARY-SECRET-42" not in repr(model.snapshot())
    assert model.value("TestCtrlr", "Password") == "CANARY-SECRET-42"  # the station itself may read it


def test_a_variable_nobody_acts_on_yet_is_read_only(store: Store) -> None:
    model = make(store, LATER)
    entry = model.entry("TestCtrlr", "Later")
    assert entry.read_only and model.write(entry, "true").status == Status.REJECTED
    model.bind("TestCtrlr", "Later", apply=lambda *_: None)
    assert not entry.read_only and model.write(entry, "true").status == Status.ACCEPTED


def test_a_change_that_needs_a_restart_says_so(store: Store) -> None:
    model = make(store, REBOOT)
    assert model.write(model.entry("TestCtrlr", "Slot"), "2").status == Status.REBOOT_REQUIRED
    assert model.value("TestCtrlr", "Slot") == 2


def test_a_value_stored_under_its_legacy_key_is_read(store: Store) -> None:
    store.put("meter_value_seconds", 15.0)
    model = make(store, *STANDARD)
    assert model.value("SampledDataCtrlr", "TxUpdatedInterval") == 15


def test_a_stored_value_that_no_longer_fits_falls_back_to_the_default(store: Store) -> None:
    store.put("dm:TestCtrlr/Interval/Actual", 99999)
    assert make(store, INTERVAL).value("TestCtrlr", "Interval") == 30


def test_declaring_the_same_variable_twice_differently_is_an_error(store: Store) -> None:
    model = make(store, INTERVAL)
    model.declare(INTERVAL)  # identical: fine
    with pytest.raises(ValueError):
        model.declare(Variable("TestCtrlr", "Interval", DataType.DECIMAL))


def test_the_standard_declarations_are_consistent(store: Store) -> None:
    model = make(store, *STANDARD)
    keys = [e.variable.key16 for e in model.keys16()]
    assert len(keys) == len({k.lower() for k in keys if k})
    for entry in model.entries(include16=True):
        spec = entry.attribute(AttributeType.ACTUAL)
        default = entry.defaults.get(AttributeType.ACTUAL, spec.default if spec else None)
        if default is not None and entry.variable.data_type != DataType.STRING:
            parse_value(entry.variable, format_value(default))  # every default is a valid value


def test_the_required_variables_the_issue_names_exist(store: Store) -> None:
    model = make(store, *STANDARD)
    for component, variable, where in (
        ("ChargingStation", "AvailabilityState", {}), ("EVSE", "AvailabilityState", {"evse": 1}),
        ("Connector", "ConnectorType", {"evse": 1, "connector": 1}),
        ("DeviceDataCtrlr", "ItemsPerMessage", {"instance": "GetReport"}),
        ("DeviceDataCtrlr", "BytesPerMessage", {"instance": "SetVariables"}),
        ("OCPPCommCtrlr", "NetworkConfigurationPriority", {}), ("ClockCtrlr", "DateTime", {}),
        ("OCPPCommCtrlr", "WebSocketPingInterval", {}),
    ):
        assert not isinstance(model.find(component, variable, **where), Status), (component, variable)


# ---- parsing (property-based) ---------------------------------------------------------
@given(st.integers(min_value=1, max_value=3600))
def test_every_integer_in_range_round_trips(number: int) -> None:
    assert parse_value(INTERVAL, format_value(number)) == number


@given(st.integers().filter(lambda n: n < 1 or n > 3600))
def test_every_integer_out_of_range_is_refused(number: int) -> None:
    with pytest.raises(Invalid):
        parse_value(INTERVAL, str(number))


@given(st.text(max_size=60))
def test_any_text_is_either_a_valid_integer_or_refused_cleanly(text: str) -> None:
    try:
        value = parse_value(INTERVAL, text)
    except Invalid as exc:
        assert exc.reason in Invalid.REASONS
    else:
        assert isinstance(value, int) and 1 <= value <= 3600


@given(st.lists(st.sampled_from(("A", "B", "C")), unique=True, min_size=1))
def test_sequence_lists_keep_their_order(items: list[str]) -> None:
    assert parse_value(ORDER, ",".join(items)) == ",".join(items)


@given(st.datetimes(timezones=st.just(UTC)))
def test_date_times_round_trip_to_the_second(when: datetime) -> None:
    variable = Variable("ClockCtrlr", "DateTime", DataType.DATETIME)
    assert parse_value(variable, format_value(when)) == when.replace(microsecond=0)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_decimals_refuse_what_is_not_finite(number: float) -> None:
    variable = Variable("TestCtrlr", "Level", DataType.DECIMAL)
    try:
        parsed = parse_value(variable, repr(number))
    except Invalid:
        assert number != number or number in (float("inf"), float("-inf"))
    else:
        assert parsed == number
