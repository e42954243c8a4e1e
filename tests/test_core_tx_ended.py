"""Readings kept for a transaction's end message (station/core/tx_ended.py): the sampled series on
SampledDataCtrlr.TxEndedInterval, the bounded store and its thinning, and the end message's share."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from station.core.model import MeterReading
from station.core.station import StationCore
from station.core.store import Store, thin
from station.core.tx_ended import KEEP
from tests.core_helpers import RecordingController

ENERGY = "Energy.Active.Import.Register"


@given(st.lists(st.integers(), min_size=3, max_size=300, unique=True))
def test_thinning_halves_a_series_and_keeps_its_first_and_last(items: list[int]) -> None:
    kept = thin(items)
    assert kept[0] == items[0] and kept[-1] == items[-1]
    assert len(kept) == len(items) // 2 + 1
    assert kept == [i for i in items if i in set(kept)]  # a subsequence, order kept


def test_a_series_beyond_its_bound_is_thinned_not_cut(tmp_path: Path) -> None:
    store = Store(tmp_path / "station.db")
    for n in range(KEEP + 1):
        store.add_tx_sample("tx", "sampled", "Sample.Periodic", f"2026-05-01T10:{n // 60:02d}:{n % 60:02d}+00:00",
                            {"energy_wh": float(n)}, keep=KEEP)
    energies = [s["meter"]["energy_wh"] for s in store.tx_samples("tx")]
    assert len(energies) == KEEP // 2 + 1
    assert energies[0] == 0.0 and energies[-1] == float(KEEP)  # the whole session still covered
    assert energies == sorted(energies)


def test_series_are_bounded_separately(tmp_path: Path) -> None:
    store = Store(tmp_path / "station.db")
    store.add_tx_sample("tx", "aligned", "Sample.Clock", "2026-05-01T10:00:00+00:00", {"energy_wh": 1.0}, keep=2)
    for n in range(5):
        store.add_tx_sample("tx", "sampled", "Sample.Periodic", f"2026-05-01T10:00:0{n}+00:00", {"energy_wh": n}, keep=2)
    assert [s["context"] for s in store.tx_samples("tx")].count("Sample.Clock") == 1


def core_with_meter(tmp_path: Path, **kw: object) -> tuple[StationCore, RecordingController]:
    core = StationCore(store=Store(tmp_path / "station.db"), **kw)  # type: ignore[arg-type]
    esp = RecordingController.attached(core)
    core.on_meter_reading(MeterReading(1000.0))
    core.device_model.set("SampledDataCtrlr", "TxEndedMeasurands", ENERGY)
    core.device_model.set("SampledDataCtrlr", "TxEndedInterval", 60)
    return core, esp


def start(core: StationCore, esp: RecordingController) -> None:
    core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    esp.plug()
    assert core.connectors[1].transaction is not None


async def test_the_sampled_series_starts_with_transaction_begin_and_follows_the_interval(tmp_path: Path) -> None:
    core, esp = core_with_meter(tmp_path)
    start(core, esp)
    conn = core.connectors[1]
    begin = core.clock.now()
    for seconds, energy in ((30, 1100.0), (61, 1200.0), (90, 1300.0), (125, 1400.0)):
        core.on_meter_reading(MeterReading(energy))
        core.tx_ended.tick(conn, begin + timedelta(seconds=seconds))
    kept = core.store.tx_samples(conn.transaction.id)  # type: ignore[union-attr]
    assert [(s["context"], s["meter"]["energy_wh"]) for s in kept] == [
        ("Transaction.Begin", 1000.0), ("Sample.Periodic", 1200.0), ("Sample.Periodic", 1400.0)]


async def test_no_reading_is_kept_while_the_meter_does_not_answer(tmp_path: Path) -> None:
    """Its last reading, kept with a later time, would claim a measurement nobody made."""
    core, esp = core_with_meter(tmp_path)
    start(core, esp)
    conn = core.connectors[1]
    begin = core.clock.now()
    core.on_meter_health(False, "3 polls in a row failed")
    core.tx_ended.tick(conn, begin + timedelta(seconds=61))
    core.tx_ended.clock_boundary(begin + timedelta(seconds=90), "201")
    core.on_meter_health(True, "reading again")
    core.on_meter_reading(MeterReading(1500.0))
    core.tx_ended.tick(conn, begin + timedelta(seconds=125))
    kept = core.store.tx_samples(conn.transaction.id)  # type: ignore[union-attr]
    assert [(s["context"], s["meter"]["energy_wh"]) for s in kept] == [
        ("Transaction.Begin", 1000.0), ("Sample.Periodic", 1500.0)]


async def test_interval_0_or_no_measurands_keep_nothing(tmp_path: Path) -> None:
    core, esp = core_with_meter(tmp_path)
    core.device_model.set("SampledDataCtrlr", "TxEndedInterval", 0)
    start(core, esp)
    conn = core.connectors[1]
    core.tx_ended.tick(conn, core.clock.now() + timedelta(seconds=600))
    core.device_model.set("SampledDataCtrlr", "TxEndedInterval", 60)
    core.device_model.set("SampledDataCtrlr", "TxEndedMeasurands", "")
    core.tx_ended.tick(conn, core.clock.now() + timedelta(seconds=1200))
    core.tx_ended.tick(conn, core.clock.now() + timedelta(seconds=1300))
    assert core.store.tx_samples(conn.transaction.id) == []  # type: ignore[union-attr]


async def test_the_end_message_takes_the_readings_and_the_store_lets_them_go_in_the_same_commit(tmp_path: Path) -> None:
    core, esp = core_with_meter(tmp_path)
    start(core, esp)
    conn = core.connectors[1]
    tx_id = conn.transaction.id  # type: ignore[union-attr]
    core.on_meter_reading(MeterReading(1500.0))
    core.tx_ended.tick(conn, core.clock.now() + timedelta(seconds=60))
    core.request_stop(connector_id=1)
    ended = [e for e in core.store.pending_outbox(20) if e.kind == "ended"][0]
    assert [s["context"] for s in ended.data["ended_samples"]] == ["Transaction.Begin", "Sample.Periodic"]
    assert ended.data["ended_measurands"]["Sample.Periodic"] == [ENERGY]
    assert core.store.tx_samples(tx_id) == []


async def test_readings_survive_a_restart_and_the_series_goes_on_from_the_start_time(tmp_path: Path) -> None:
    core, esp = core_with_meter(tmp_path)
    start(core, esp)
    tx_id = core.connectors[1].transaction.id  # type: ignore[union-attr]
    begin = core.clock.now()
    core.tx_ended.tick(core.connectors[1], begin + timedelta(seconds=65))
    core.store.close()  # kill -9: nothing more is written by this core

    again = StationCore(store=Store(tmp_path / "station.db"))
    conn = again.connectors[1]
    assert conn.transaction is not None and conn.transaction.id == tx_id
    again.on_meter_reading(MeterReading(2000.0))
    again.tx_ended.tick(conn, begin + timedelta(seconds=100))  # the restored series' grid: next slot at 120 s
    again.tx_ended.tick(conn, begin + timedelta(seconds=121))
    contexts = [s["context"] for s in again.store.tx_samples(tx_id)]
    assert contexts == ["Transaction.Begin", "Sample.Periodic", "Sample.Periodic"]


async def test_readings_of_a_transaction_no_longer_open_are_dropped_when_the_store_opens(tmp_path: Path) -> None:
    store = Store(tmp_path / "station.db")
    store.add_tx_sample("gone", "sampled", "Sample.Periodic", "2026-05-01T10:00:00+00:00", {"energy_wh": 1.0}, keep=KEEP)
    store.close()
    assert Store(tmp_path / "station.db").tx_samples("gone") == []
