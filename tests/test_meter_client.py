"""The Modbus meter client against the meter simulator, a real subprocess on a real pty."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from station.core.model import MeterReading
from station.core.ports import EnergyMeter
from station.meter.client import ModbusMeter, effective_parity
from station.meter.registers import ADL400
from station.meter.sim_process import MeterSimError, MeterSimProcess
from tests.aio import eventually, running

NOMINAL_V = 230.0


class Recorder:
    """on_reading callback that keeps every reading it was given."""

    def __init__(self) -> None:
        self.readings: list[MeterReading] = []

    def __call__(self, reading: MeterReading) -> None:
        self.readings.append(reading)

    def count(self) -> int:
        return len(self.readings)


def make_meter(port: Path | str, on_reading: Callable[[MeterReading], object], **kw: object) -> ModbusMeter:
    options: dict[str, object] = {"poll_interval": 0.05, "timeout": 0.2, "retries": 1, "unhealthy_after": 3}
    options.update(kw)
    return ModbusMeter(str(port), register_map=ADL400, on_reading=on_reading, **options)  # type: ignore[arg-type]


async def test_readings_match_the_set_load_within_tolerance(tmp_path: Path) -> None:
    rec = Recorder()
    async with MeterSimProcess(tmp_path, load_a=16.0, energy_wh=1000.0) as sim:
        meter = make_meter(sim.link, rec)
        async with running(meter.run()):
            await eventually(lambda: rec.count() >= 3)
    reading = rec.readings[-1]
    assert reading.current_a is not None and reading.voltage_v is not None
    assert all(abs(a - 16.0) < 0.3 for a in reading.current_a)
    assert all(abs(v - NOMINAL_V) < 5.0 for v in reading.voltage_v)
    assert reading.power_w == pytest.approx(3 * NOMINAL_V * 16.0 * 0.99, rel=0.03)
    assert reading.frequency_hz == pytest.approx(50.0, abs=0.1)
    assert reading.power_factor == pytest.approx(0.99, abs=0.02)
    assert reading.energy_import_wh == 1000.0
    assert reading.energy_export_wh == 0.0
    assert reading.taken_at is not None


async def test_readings_follow_a_load_change(tmp_path: Path) -> None:
    rec = Recorder()
    async with MeterSimProcess(tmp_path, load_a=10.0) as sim:
        meter = make_meter(sim.link, rec)
        async with running(meter.run()):
            await eventually(lambda: rec.count() >= 1)
            await sim.command("set_load", current_a=32.0)
            await eventually(lambda: rec.readings[-1].current_a is not None and rec.readings[-1].current_a[0] > 31)
            await sim.command("set_load", current_a=0.0)
            await eventually(lambda: rec.readings[-1].power_w == 0.0)
    last = rec.readings[-1]
    assert last.current_a == (0.0, 0.0, 0.0)
    assert last.voltage_v is not None and all(abs(v - NOMINAL_V) < 5.0 for v in last.voltage_v)


async def test_energy_increases_while_loaded_and_never_decreases(tmp_path: Path) -> None:
    rec = Recorder()
    # 3600x: one second of 16 A three-phase charging adds ~11 kWh, i.e. ~110 register counts.
    async with MeterSimProcess(tmp_path, load_a=16.0, energy_wh=5000.0, speedup=3600.0) as sim:
        meter = make_meter(sim.link, rec)
        async with running(meter.run()):
            await eventually(lambda: rec.count() >= 1)
            first = rec.readings[0].energy_import_wh
            await eventually(lambda: rec.readings[-1].energy_import_wh >= first + 1000.0)
    energies = [r.energy_import_wh for r in rec.readings]
    assert energies == sorted(energies)
    assert all(e % 100.0 == 0 for e in energies)  # whole 0.1 kWh counts, as the ADL400 reports


async def test_failed_reads_are_retried_counted_and_never_produce_a_reading(tmp_path: Path) -> None:
    rec = Recorder()
    async with MeterSimProcess(tmp_path, load_a=16.0, energy_wh=2000.0) as sim:
        meter = make_meter(sim.link, rec)
        async with running(meter.run()):
            await eventually(lambda: meter.healthy)
            before = meter.last_reading
            await sim.command("fail", seconds=60)
            await eventually(lambda: meter.stats.consecutive_failures >= 1)
            count_at_failure = rec.count()
            await eventually(lambda: not meter.healthy)
            assert rec.count() == count_at_failure
            assert meter.last_reading is not None and before is not None
            assert meter.last_reading.energy_import_wh == before.energy_import_wh
    stats = meter.stats
    assert stats.polls_failed >= 3 and stats.consecutive_failures >= 3
    assert all(r.energy_import_wh == 2000.0 and r.voltage_v is not None for r in rec.readings)


async def test_meter_recovers_after_a_failure(tmp_path: Path) -> None:
    rec = Recorder()
    async with MeterSimProcess(tmp_path, load_a=8.0, energy_wh=3000.0) as sim:
        meter = make_meter(sim.link, rec)
        async with running(meter.run()):
            await eventually(lambda: meter.healthy)
            await sim.command("fail", seconds=60)
            await eventually(lambda: not meter.healthy)
            count_while_failing = rec.count()
            await sim.command("fail", seconds=0)  # the meter answers again
            await eventually(lambda: meter.healthy and rec.count() > count_while_failing)
    assert meter.stats.consecutive_failures == 0
    assert meter.stats.polls_failed >= 3
    assert all(r.energy_import_wh == 3000.0 for r in rec.readings)


class HealthLog:
    """on_health callback that keeps every verdict it was told."""

    def __init__(self) -> None:
        self.verdicts: list[tuple[bool, str]] = []

    def __call__(self, healthy: bool, reason: str) -> None:
        self.verdicts.append((healthy, reason))


async def test_a_meter_that_stops_answering_is_reported_unhealthy_once_then_healthy_again(tmp_path: Path) -> None:
    health = HealthLog()
    async with MeterSimProcess(tmp_path, load_a=8.0) as sim:
        meter = make_meter(sim.link, Recorder(), on_health=health)
        async with running(meter.run()):
            await eventually(lambda: health.verdicts == [(True, "valid reading")])
            await sim.command("fail", seconds=60)
            await eventually(lambda: len(health.verdicts) == 2)
            await eventually(lambda: meter.stats.consecutive_failures >= 6)  # still failing: no repeat
            await sim.command("fail", seconds=0)
            await eventually(lambda: len(health.verdicts) == 3)
    assert [v for v, _ in health.verdicts] == [True, False, True]
    assert "3 polls in a row failed" in health.verdicts[1][1]
    assert meter.last_error is not None


async def test_a_meter_dead_from_the_start_is_reported_unhealthy(tmp_path: Path) -> None:
    health = HealthLog()
    meter = make_meter(tmp_path / "no-such-port", Recorder(), reconnect_max=0.05, on_health=health)
    async with running(meter.run()):
        await eventually(lambda: bool(health.verdicts))
    assert health.verdicts[0][0] is False and "port unavailable" in health.verdicts[0][1]


async def test_probe_reads_once_and_says_why_a_dead_meter_gives_nothing(tmp_path: Path) -> None:
    from station.meter.client import MeterReadError

    rec = Recorder()
    async with MeterSimProcess(tmp_path, energy_wh=4200.0) as sim:
        meter = make_meter(sim.link, rec)
        assert (await meter.probe()).energy_import_wh == 4200.0
        await sim.command("fail", seconds=60)
        with pytest.raises(MeterReadError):
            await meter.probe()
    assert rec.count() == 0  # a probe publishes nothing


async def test_energy_going_backwards_is_flagged_and_not_passed_on(tmp_path: Path) -> None:
    rec = Recorder()
    async with MeterSimProcess(tmp_path, load_a=0.0, energy_wh=50_000.0) as sim:
        meter = make_meter(sim.link, rec)
        async with running(meter.run()):
            await eventually(lambda: rec.count() >= 1)
            await sim.command("set_energy", wh=20_000.0)
            await eventually(lambda: meter.stats.non_monotonic >= 3)
            assert all(r.energy_import_wh == 50_000.0 for r in rec.readings)
            assert meter.last_reading is not None and meter.last_reading.energy_import_wh == 50_000.0
            assert meter.healthy  # the meter answers; the register is what is wrong
            await sim.command("set_energy", wh=50_100.0)
            await eventually(lambda: rec.readings[-1].energy_import_wh == 50_100.0)
    assert min(r.energy_import_wh for r in rec.readings) == 50_000.0


async def test_port_that_disappears_is_reopened_when_it_returns(tmp_path: Path) -> None:
    rec = Recorder()
    sim = MeterSimProcess(tmp_path, load_a=16.0, energy_wh=7000.0)
    await sim.start()
    meter = make_meter(sim.link, rec, reconnect_max=0.2)
    try:
        async with running(meter.run()):
            await eventually(lambda: meter.healthy)
            await sim.stop()  # USB adapter unplugged: the pty vanishes under the open port
            await eventually(lambda: not meter.healthy)
            failed_while_gone = rec.count()
            sim = MeterSimProcess(tmp_path, load_a=16.0, energy_wh=7100.0)
            await sim.start()
            await eventually(lambda: rec.count() > failed_while_gone and meter.healthy)
    finally:
        await sim.stop()
    assert meter.stats.reconnects >= 1
    assert rec.readings[-1].energy_import_wh == 7100.0


async def test_missing_port_counts_failures_without_crashing(tmp_path: Path) -> None:
    rec = Recorder()
    meter = make_meter(tmp_path / "no-such-port", rec, reconnect_max=0.05)
    async with running(meter.run()) as task:
        await eventually(lambda: meter.stats.polls_failed >= 3)
        assert not task.done()
    assert rec.count() == 0
    assert not meter.healthy and meter.last_reading is None


async def test_raising_async_callback_is_logged_and_polling_continues(tmp_path: Path) -> None:
    calls = 0

    async def explode(reading: MeterReading) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("core bug")

    async with MeterSimProcess(tmp_path, load_a=6.0, energy_wh=100.0) as sim:
        meter = make_meter(sim.link, explode)
        async with running(meter.run()) as task:
            await eventually(lambda: calls >= 3)
            assert not task.done()
    assert meter.stats.polls_ok >= 3 and meter.last_reading is not None


async def test_simulator_refuses_bad_control_commands(tmp_path: Path) -> None:
    async with MeterSimProcess(tmp_path) as sim:
        with pytest.raises(MeterSimError, match="current_a"):
            await sim.command("set_load", current_a="lots")
        with pytest.raises(MeterSimError, match="unknown cmd"):
            await sim.command("explode")
        state = await sim.command("set_load", current_a=12.5)
    assert state["load_a"] == 12.5


def test_modbus_meter_satisfies_the_energy_meter_port() -> None:
    meter: EnergyMeter = make_meter("/dev/ttyUSB9", lambda r: None)
    assert meter.healthy is False and meter.last_reading is None


def test_parity_is_only_dropped_on_pseudo_terminals(tmp_path: Path) -> None:
    import os

    master, slave = os.openpty()
    try:
        link = tmp_path / "pty"
        link.symlink_to(os.ttyname(slave))
        assert effective_parity(str(link), "E") == "N"
    finally:
        os.close(master)
        os.close(slave)
    assert effective_parity("/dev/ttyUSB0", "E") == "E"
    assert effective_parity("/dev/serial/by-id/usb-FTDI-if00-port0", "O") == "O"


async def test_run_stops_when_cancelled_even_if_a_library_call_swallowed_the_cancellation(tmp_path: Path) -> None:
    swallowed = asyncio.Event()

    async def swallow_cancel(reading: MeterReading) -> None:
        # What asyncio.wait_for on Python 3.11 does when cancel and response coincide.
        if swallowed.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            swallowed.set()

    async with MeterSimProcess(tmp_path, load_a=6.0, energy_wh=100.0) as sim:
        meter = make_meter(sim.link, swallow_cancel)
        task = asyncio.create_task(meter.run())
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
    assert swallowed.is_set()
