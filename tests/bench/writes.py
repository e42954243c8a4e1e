"""(9) Write budget: what the daemon writes to storage per hour, which decides an SSD's or SD card's life.

Method. The figure is the daemon process's `write_bytes - cancelled_write_bytes` from
/proc/<pid>/io over a window: the bytes of page cache the process dirtied, i.e. what the kernel
hands to the device for it (4 KiB pages: a 100-byte append to a page written back since costs a
whole page again, as it costs the medium). SQLite's WAL and checkpoints, the flight recorder and
every durable state file are in it; the daemon's own log is not (it goes to a tmpfs here, to
journald on a station: outside the state directory). Not in it: the file system's journal and
metadata blocks (written by the kernel's jbd2 thread, per fsync) and the medium's own write
amplification; docs/reliability.md adds margins for both.

- idle: the daemon connected, the ESP32 (polled every 0.25 s) and the meter (polled every 1 s)
  simulators attached, no session; measured over `seconds` and scaled to an hour and a day.
- charging: a session in progress. Time-compressed: meter values every `sample_s` seconds instead
  of 60. The cost of one sample (stored, sent, marked delivered) is taken from the run with the
  recorder off, where nothing else is written (its idle rate is 0): c = bytes / samples. Each run
  is then brought back to one sample a minute by removing the extra samples' cost:
  rate_60 = rate - (samples/s - 1/60) * c. With the recorder on this keeps its per-second
  meter lines (charging changes the power every reading) unscaled, as they are at 60 s; the
  recorder's share of a sample (two OCPP frame lines) is not removed: an upper bound.
- backlog: 10,000 queued transaction events replayed after the daemon connects; the bytes from
  process start until the last one is acknowledged (the whole replay), per event and per hour of it.

Each with the flight recorder at its default size and off (STATION_FLIGHT_RECORDER_MB=0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from station.controller.simulator import SimulatorProcess
from station.core.clock import Clock
from station.core.store import Store
from station.meter.sim_process import MeterSimProcess
from tests.bench.common import STATION_ID, BenchCsms, Proc, free_port, python_argv
from tests.bench.workload import event_index, queue_transaction_events
from tests.e2e import station_env

MB = 1_000_000


def written_bytes(pid: int) -> int:
    """Bytes of page cache the process dirtied (and did not cancel by truncating before write-back)."""
    io = {line.split(":")[0]: int(line.split()[1]) for line in Path(f"/proc/{pid}/io").read_text().splitlines()}
    return io["write_bytes"] - io["cancelled_write_bytes"]


def state_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in state.rglob("*") if p.is_file())


@contextlib.asynccontextmanager
async def measured_daemon(directory: Path, csms: BenchCsms, port: Path | str, recorder: bool,
                          **env: str) -> AsyncIterator[Proc]:
    """The real daemon; its log on a tmpfs (/dev/shm) so that it is not counted as state writes."""
    logs = Path(tempfile.mkdtemp(prefix="station-bench-log-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    environment = station_env(directory, csms, port, station_id=STATION_ID, STATION_API_BIND=f"127.0.0.1:{free_port()}",
                              **({} if recorder else {"STATION_FLIGHT_RECORDER_MB": "0"}), **env)
    station = await Proc(python_argv("-m", "station", "run"), environment, logs / "station.log").start()
    try:
        yield station
    finally:
        await station.stop()
        shutil.copy(logs / "station.log", directory / "station.log")
        shutil.rmtree(logs, ignore_errors=True)


async def _connected(csms: BenchCsms, since: int, station: Proc) -> None:
    try:
        await csms.next_call("StatusNotification", since, lambda r: r.station_id == STATION_ID, timeout=30)
    except TimeoutError:
        raise RuntimeError(f"daemon did not connect:\n{station.log_tail()}") from None


def _rates(written: int, seconds: float) -> dict[str, float]:
    per_hour = written / seconds * 3600
    return {"bytes": written, "seconds": round(seconds, 2), "mb_per_hour": round(per_hour / MB, 3),
            "mb_per_day": round(per_hour * 24 / MB, 2)}


async def _window(pid: int, seconds: float) -> tuple[int, float]:
    before, started = written_bytes(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return written_bytes(pid) - before, time.monotonic() - started


async def idle(workdir: Path, csms: BenchCsms, *, recorder: bool, seconds: float) -> dict[str, Any]:
    async with MeterSimProcess(workdir) as meter, SimulatorProcess(workdir) as sim:
        since = len(csms.arrivals)
        async with measured_daemon(workdir, csms, sim.port, recorder, STATION_METER_PORT=str(meter.link)) as station:
            await _connected(csms, since, station)
            await asyncio.sleep(3)  # start-up writes (database, credentials) are not idle writes
            size_before = state_bytes(workdir / "state")
            written, elapsed = await _window(station.pid, seconds)
            grown = state_bytes(workdir / "state") - size_before
    return {"recorder": recorder, **_rates(written, elapsed), "state_dir_growth_bytes": grown}


async def charging(workdir: Path, csms: BenchCsms, *, recorder: bool, seconds: float, sample_s: int) -> dict[str, Any]:
    async with MeterSimProcess(workdir, energy_wh=1_000_000) as meter, \
            SimulatorProcess(workdir, extra_args=["--meter-control", str(meter.control)]) as sim:
        since = len(csms.arrivals)
        async with measured_daemon(workdir, csms, sim.port, recorder, STATION_METER_PORT=str(meter.link),
                                   STATION_METER_VALUE_SECONDS=str(sample_s)) as station:
            await _connected(csms, since, station)
            mark = len(csms.arrivals)
            answer = await csms.call(STATION_ID, "RequestStartTransaction",
                                     {"idToken": {"idToken": "WRITE-BUDGET", "type": "ISO14443"}, "remoteStartId": 1})
            assert answer["status"] == "Accepted", answer
            await sim.command("plug")
            await sim.command("ev_charge")
            await csms.next_call("TransactionEvent", mark, lambda r: r.payload.get("triggerReason") == "MeterValuePeriodic",
                                 timeout=30)
            first = len(csms.arrivals)
            written, elapsed = await _window(station.pid, seconds)
            samples = sum(1 for a in csms.arrivals[first:] if a.item.kind == "call" and a.item.action == "TransactionEvent"
                          and a.item.payload.get("triggerReason") == "MeterValuePeriodic")
            await sim.command("unplug")
    return {"recorder": recorder, "sample_s": sample_s, "samples": samples, **_rates(written, elapsed)}


def scale_to_60s(run: dict[str, Any], per_sample: float) -> None:
    """Add the rate at one meter value a minute (see the module docstring)."""
    extra_per_s = run["samples"] / run["seconds"] - 1 / 60
    at_60 = max(0.0, run["bytes"] / run["seconds"] - extra_per_s * per_sample)
    run.update(bytes_per_sample=round(per_sample), mb_per_hour_at_60s=round(at_60 * 3600 / MB, 3),
               mb_per_day_at_60s=round(at_60 * 86400 / MB, 2))


async def backlog(workdir: Path, csms: BenchCsms, *, recorder: bool, count: int) -> dict[str, Any]:
    store = Store(workdir / "state" / "station.db")
    queue_transaction_events(store, Clock(trusted=True), count)
    store.close()
    csms.forget()
    async with measured_daemon(workdir, csms, workdir / "no-esp32", recorder) as station:
        started = time.monotonic()
        seen: set[int] = set()
        scanned = 0
        deadline = started + max(120.0, count / 50)
        while len(seen) < count and time.monotonic() < deadline:
            arrivals = csms.arrivals
            for a in arrivals[scanned:]:
                if a.item.kind == "call" and a.item.station_id == STATION_ID and (
                        index := event_index(a.item.action or "", a.item.payload)) is not None:
                    seen.add(index)
            scanned = len(arrivals)
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the last acknowledgements marked in the store
        written, elapsed = written_bytes(station.pid), time.monotonic() - started
    if len(seen) < count:
        raise RuntimeError(f"backlog: {len(seen)} of {count} events arrived")
    return {"recorder": recorder, "events": count, **_rates(written, elapsed), "mb": round(written / MB, 2),
            "bytes_per_event": round(written / count)}


async def write_budget(step: Any, csms: BenchCsms, *, seconds: float, charging_seconds: float, sample_s: int,
                       events: int) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for recorder, tag in ((True, "on"), (False, "off")):
        csms.forget()
        raw[f"idle_{tag}"] = await idle(step(f"writes-idle-{tag}"), csms, recorder=recorder, seconds=seconds)
        csms.forget()
        raw[f"charging_{tag}"] = await charging(step(f"writes-charging-{tag}"), csms, recorder=recorder,
                                                seconds=charging_seconds, sample_s=sample_s)
        csms.forget()
        raw[f"backlog_{tag}"] = await backlog(step(f"writes-backlog-{tag}"), csms, recorder=recorder, count=events)
    csms.forget()
    off, idle_off = raw["charging_off"], raw["idle_off"]
    per_sample = max(0.0, off["bytes"] - idle_off["bytes"] / idle_off["seconds"] * off["seconds"]) / max(1, off["samples"])
    for tag in ("on", "off"):
        scale_to_60s(raw[f"charging_{tag}"], per_sample)
    return raw


def figures(raw: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for tag in ("on", "off"):
        suffix = "" if tag == "on" else "_off"
        out[f"writes_idle{suffix}_mb_h"] = raw[f"idle_{tag}"]["mb_per_hour"]
        out[f"writes_idle{suffix}_mb_day"] = raw[f"idle_{tag}"]["mb_per_day"]
        out[f"writes_charging{suffix}_mb_h"] = raw[f"charging_{tag}"]["mb_per_hour_at_60s"]
        out[f"writes_backlog{suffix}_mb"] = raw[f"backlog_{tag}"]["mb"]
        out[f"writes_backlog{suffix}_mb_h"] = raw[f"backlog_{tag}"]["mb_per_hour"]
    return out
