"""Clock-aligned boundaries and measurand selection (station/core/metering.py and the core's records)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from station.core.metering import next_boundary, unsupported
from station.core.model import MeterReading
from station.core.station import StationCore
from station.core.store import Store
from station.ocpp.meter_values import sampled_values
from tests.core_helpers import RecordingController

READING = MeterReading(1234.0, power_w=7000.0, current_a=(10.0, 10.0, 10.0), voltage_v=(230.0, 231.0, 229.0),
                       frequency_hz=50.0)


def test_the_boundary_is_a_multiple_of_the_interval_since_midnight() -> None:
    now = datetime(2026, 5, 1, 10, 7, 31, 500000, tzinfo=UTC)
    assert next_boundary(now, 900) == datetime(2026, 5, 1, 10, 15, tzinfo=UTC)
    assert next_boundary(datetime(2026, 5, 1, 10, 15, tzinfo=UTC), 900) == datetime(2026, 5, 1, 10, 30, tzinfo=UTC)


def test_an_interval_that_does_not_divide_a_day_restarts_at_midnight() -> None:
    late = datetime(2026, 5, 1, 23, 55, tzinfo=UTC)  # 7-hour grid: 0, 7, 14, 21 h; next is midnight, not 04:00
    assert next_boundary(late, 7 * 3600) == datetime(2026, 5, 2, 0, 0, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1)), st.integers(1, 86400))
def test_the_next_boundary_is_later_and_at_most_one_interval_away(naive: datetime, interval: int) -> None:
    now = naive.replace(tzinfo=UTC)
    boundary = next_boundary(now, interval)
    assert now < boundary
    assert (boundary - now).total_seconds() <= interval


def test_measurands_the_meter_does_not_provide_are_named() -> None:
    supported = {"Energy.Active.Import.Register", "Voltage"}
    assert unsupported("Energy.Active.Import.Register,Voltage", supported) == []
    assert unsupported("Voltage,SoC,Power.Offered", supported) == ["SoC", "Power.Offered"]
    assert unsupported("", supported) == []


def test_only_the_configured_measurands_are_sent() -> None:
    from station.core.station import meter_json

    values = sampled_values(meter_json(READING), "Sample.Periodic", as_text=False, measurands=["Voltage"])
    assert [(v["measurand"], v.get("phase")) for v in values] == [("Voltage", "L1-N"), ("Voltage", "L2-N"), ("Voltage", "L3-N")]


def core_with_meter(tmp_path: Path) -> tuple[StationCore, RecordingController]:
    core = StationCore(store=Store(tmp_path / "station.db"), measurands={"Energy.Active.Import.Register", "Voltage"})
    esp = RecordingController.attached(core)
    core.on_meter_reading(READING)
    return core, esp


async def test_each_transaction_message_records_the_measurands_of_its_moment_that_the_meter_has(tmp_path: Path) -> None:
    core, esp = core_with_meter(tmp_path)
    core.device_model.set("SampledDataCtrlr", "TxStartedMeasurands", "Energy.Active.Import.Register")
    core.device_model.set("SampledDataCtrlr", "TxEndedMeasurands", "Voltage,Frequency")
    core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    esp.plug()
    core.request_stop(connector_id=1)
    entries = {e.kind: e for e in core.store.pending_outbox(10)}
    assert entries["started"].data["measurands"] == ["Energy.Active.Import.Register"]
    assert entries["ended"].data["measurands"] == ["Voltage"]  # Frequency: this meter has none


async def test_clock_aligned_values_while_idle_are_durable_meter_values_stamped_on_the_boundary(tmp_path: Path) -> None:
    core, _ = core_with_meter(tmp_path)
    boundary = datetime(2026, 5, 1, 10, 15, tzinfo=UTC)
    core.record_clock_aligned(boundary)
    [entry] = core.store.pending_outbox(10)
    assert entry.kind == "meter_values" and entry.stamp.wall == boundary
    assert entry.data["measurands"] == ["Energy.Active.Import.Register"] and entry.data["context"] == "Sample.Clock"


async def test_send_during_idle_keeps_clock_aligned_values_out_of_transactions(tmp_path: Path) -> None:
    core, esp = core_with_meter(tmp_path)
    core.device_model.set("AlignedDataCtrlr", "SendDuringIdle", True)
    core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    esp.plug()
    before = core.store.outbox_depth()
    core.record_clock_aligned(datetime(2026, 5, 1, 10, 15, tzinfo=UTC))
    assert core.store.outbox_depth() == before


async def test_a_transaction_ending_before_the_meter_answers_after_a_restart_keeps_its_last_energy(
    tmp_path: Path,
) -> None:
    core, esp = core_with_meter(tmp_path)
    core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    esp.plug()
    core.on_meter_reading(MeterReading(1500.0))
    core.record_triggered_update(1)
    await core.close()
    core.store.close()
    restarted = StationCore(store=Store(tmp_path / "station.db"))  # no meter reading yet after the restart
    RecordingController.attached(restarted)  # the EV is gone: pilot A
    ended = [e for e in restarted.store.pending_outbox(20) if e.kind == "ended"]
    assert ended and ended[0].data["meter_stop_wh"] == 1500.0
    await restarted.close()
