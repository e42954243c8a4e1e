"""One function per benchmark figure; each runs real processes once and returns JSON-ready numbers.

Time stamps are `time.monotonic()` (CLOCK_MONOTONIC, the same clock in every process on the
machine). The harness hosts the CSMS; the daemon, the API, the ESP32 simulator and the
baseline client are separate processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from station.controller.protocol import encode_authorize
from station.controller.simulator import SimulatorProcess
from station.core.clock import Clock
from station.core.model import PilotState
from station.core.store import Store
from tests.bench.common import (
    STATION_ID,
    BenchCsms,
    Proc,
    SerialTap,
    cpu_seconds,
    cpu_split,
    free_port,
    idle_cpu_percent,
    latency_summary,
    python_argv,
    rss_mb,
)
from tests.bench.workload import delivery_report, event_index, queue_transaction_events
from tests.e2e import station_env

AUTHORIZE = encode_authorize()
STATUS_ACTIONS = {"201": ("Occupied", "Available"), "16": ("Preparing", "Available")}


def _status_of(item: Any) -> str | None:
    return item.payload.get("connectorStatus") or item.payload.get("status")


@contextlib.asynccontextmanager
async def daemon(directory: Path, csms: BenchCsms, port: Path | str, *, api: bool = False,
                 **env: str) -> AsyncIterator[tuple[Proc, Proc | None, dict[str, str]]]:
    """The real daemon (`python -m station run`) and optionally the API (`python -m api`)."""
    environment = station_env(directory, csms, port, station_id=STATION_ID, STATION_API_BIND=f"127.0.0.1:{free_port()}", **env)
    from tests.bench.common import DAEMON_PREFIX

    station = await Proc([*DAEMON_PREFIX, *python_argv("-m", "station", "run")], environment, directory / "station.log").start()
    api_proc: Proc | None = None
    try:
        if api:
            api_proc = await Proc(python_argv("-m", "api"), environment, directory / "api.log").start()
        yield station, api_proc, environment
    finally:
        if api_proc is not None:
            await api_proc.stop()
        await station.stop()


async def _boot_arrival(csms: BenchCsms, since: int, station: Proc, timeout: float = 20) -> float:
    try:
        arrival = await csms.next_call("BootNotification", since, lambda r: r.station_id == STATION_ID, timeout=timeout)
    except TimeoutError:
        raise RuntimeError(f"daemon did not boot:\n{station.log_tail()}") from None
    return arrival.at


async def _api_ready(environment: dict[str, str], timeout: float = 20) -> None:
    host, _, port = environment["STATION_API_BIND"].rpartition(":")
    async with asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"GET /health HTTP/1.0\r\n\r\n")
                await writer.drain()
                line = await reader.readline()
                writer.close()
                if line:
                    return
            await asyncio.sleep(0.05)


# --------------------------------------------------------------- (5) start, (4) memory and idle CPU
async def start_and_idle(workdir: Path, csms: BenchCsms, idle_seconds: float) -> dict[str, Any]:
    """Process start → BootNotification at the CSMS; RSS after start; idle CPU; `station --once` wall time."""
    async with SimulatorProcess(workdir) as sim:
        since = len(csms.arrivals)
        async with daemon(workdir, csms, sim.port, api=True) as (station, api, environment):
            boot_at = await _boot_arrival(csms, since, station)
            assert api is not None
            await _api_ready(environment)
            await asyncio.sleep(2)  # let start-up work settle (first status, heartbeat schedule)
            rss = {"daemon_mb": round(rss_mb(station.pid), 1), "api_mb": round(rss_mb(api.pid), 1)}
            cpu = await idle_cpu_percent({"daemon": station.pid, "api": api.pid}, idle_seconds)
            started = time.monotonic()
            once = await asyncio.create_subprocess_exec(
                *python_argv("-m", "station", "--once"), env=environment,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await once.communicate()
            once_s = time.monotonic() - started
    try:
        once_report = json.loads(out)
        once_ok = once.returncode == 0
    except ValueError:
        once_report, once_ok = {"stderr": err.decode(errors="replace")[-500:]}, False
    return {
        "start_to_boot_s": boot_at - station.started,
        "rss_after_start": rss,
        "idle_cpu_percent": cpu,
        "idle_seconds": idle_seconds,
        "once_wall_s": once_s,
        "once_exit_code": once.returncode,
        "once_ok": once_ok,
        "once_checks_failed": [c.get("name") for c in once_report.get("checks", []) if not c.get("ok", True)],
    }


# --------------------------------------------------------------- (3) replay and (4) memory after it
async def replay(workdir: Path, csms: BenchCsms, count: int, version: str = "201") -> dict[str, Any]:
    """`count` queued transaction events replayed by the daemon after it connects."""
    store = Store(workdir / "state" / "station.db")
    queue_transaction_events(store, Clock(trusted=True), count)
    store.close()
    csms.forget()
    async with daemon(workdir, csms, workdir / "no-esp32", api=True, OCPP_PRIMARY=version) as (station, api, environment):
        await _boot_arrival(csms, 0, station)
        assert api is not None
        await _api_ready(environment)
        actions = {"TransactionEvent", "StartTransaction", "StopTransaction", "MeterValues"}

        found: list[Any] = []
        scanned = 0

        def transaction_messages() -> list[Any]:
            # Only the arrivals since the last look: rescanning all 10,000 every 50 ms cost the
            # harness (and so the CPU the daemon shares with it) a quarter of its time.
            nonlocal scanned
            arrivals = csms.arrivals
            for k in range(scanned, len(arrivals)):
                a = arrivals[k]
                if a.item.kind == "call" and a.item.action in actions and a.item.station_id == STATION_ID:
                    found.append(a)
            scanned = len(arrivals)
            return found

        cpu_before = {"daemon": cpu_seconds(station.pid), "csms": cpu_seconds(os.getpid())}
        split_before = cpu_split(station.pid)
        deadline = time.monotonic() + max(60.0, count / 100)
        while len(transaction_messages()) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        cpu_us = {k: round((cpu_seconds(pid) - cpu_before[k]) * 1e6 / count)
                  for k, pid in (("daemon", station.pid), ("csms", os.getpid()))}
        split_after = cpu_split(station.pid)
        cpu_us["daemon_system"] = round((split_after[1] - split_before[1]) * 1e6 / count)
        await asyncio.sleep(0.5)  # anything sent twice would arrive now
        messages = transaction_messages()
        rss = {"daemon_mb": round(rss_mb(station.pid), 1), "api_mb": round(rss_mb(api.pid), 1)}
    report = delivery_report((event_index(a.item.action, a.item.payload) for a in messages), count)
    store = Store(workdir / "state" / "station.db")
    depth = store.outbox_depth()
    store.close()
    seconds = messages[-1].at - messages[0].at if len(messages) > 1 else float("nan")
    return {"version": version, "messages_per_s": (len(messages) - 1) / seconds if seconds else 0.0,
            "seconds": seconds, **report, "outbox_left": depth, "rss_after_events": rss,
            "cpu_us_per_message": cpu_us}


# --------------------------------------------------------------- (1) status latency, (2) remote start
async def latency(workdir: Path, csms: BenchCsms, *, version: str, status_events: int, push: bool,
                  remote_starts: int, poll_seconds: float) -> dict[str, Any]:
    """ESP32 state change → StatusNotification at the CSMS; CSMS remote start → authorize frame on the wire.

    push=False: the change is left for the station's poll to find (what a real board does).
    push=True: the simulator reports the change at once (`send_status`), as if a poll had just
    been sent; this isolates the station's own share.
    """
    async with SimulatorProcess(workdir, extra_args=["--plug-delay", "0"]) as sim:
        tap = SerialTap(workdir, sim.port)
        async with tap.running():
            csms.forget()
            async with daemon(workdir, csms, tap.port, OCPP_PRIMARY=version,
                              STATION_ESP32_POLL_SECONDS=str(poll_seconds)) as (station, _, _):
                await _boot_arrival(csms, 0, station)
                occupied, available = STATUS_ACTIONS[version]
                await csms.next_call("StatusNotification", 0, lambda r: _status_of(r) == available, timeout=10)
                await asyncio.sleep(0.3)
                samples: list[dict[str, float]] = []
                for k in range(status_events):
                    plug = k % 2 == 0
                    want_pilot, want_status = (PilotState.B, occupied) if plug else (PilotState.A, available)
                    since = len(csms.arrivals)
                    t0 = time.monotonic()
                    await sim.command("plug" if plug else "unplug")
                    if push:
                        await sim.command("send_status")
                    arrival = await csms.next_call("StatusNotification", since, lambda r, s=want_status: _status_of(r) == s)
                    wire = next(t for t, f in tap.record.from_esp32 if t >= t0 and f.status.pilot is want_pilot)
                    samples.append({"total": arrival.at - t0, "to_wire": wire - t0, "station": arrival.at - wire})
                    tap.record.from_esp32.clear()
                    if len(csms.arrivals) > 5000:
                        csms.forget()
                    # A random phase against the poll: otherwise each change would follow the last poll closely.
                    await asyncio.sleep(random.uniform(0.002, 0.002 + (0 if push else poll_seconds)))
                remote = await _remote_starts(csms, sim, tap, version, remote_starts) if remote_starts else []
    result: dict[str, Any] = {"version": version, "push": push, "poll_seconds": poll_seconds}
    if samples:
        result["status"] = {
            "total": latency_summary([s["total"] * 1000 for s in samples]),
            "change_to_wire": latency_summary([s["to_wire"] * 1000 for s in samples]),
            "wire_to_csms": latency_summary([s["station"] * 1000 for s in samples]),
        }
    if remote:
        result["remote_start"] = latency_summary([r * 1000 for r in remote])
        result["remote_start_samples_ms"] = [round(r * 1000, 3) for r in remote]
    return result


async def _remote_starts(csms: BenchCsms, sim: SimulatorProcess, tap: SerialTap, version: str, count: int) -> list[float]:
    occupied, available = STATUS_ACTIONS[version]
    action = "RequestStartTransaction" if version == "201" else "RemoteStartTransaction"
    latencies = []
    for k in range(count):
        since = len(csms.arrivals)
        await sim.command("plug")
        await sim.command("send_status")
        await csms.next_call("StatusNotification", since, lambda r: _status_of(r) == occupied)
        payload: dict[str, Any] = (
            {"idToken": {"idToken": f"REMOTE{k}", "type": "Central"}, "remoteStartId": k + 1, "evseId": 1}
            if version == "201" else {"idTag": f"REMOTE{k}", "connectorId": 1})
        tap.record.to_esp32.clear()
        tap.record.from_esp32.clear()
        t0 = time.monotonic()
        response = await csms.call(STATION_ID, action, payload)
        if response.get("status") != "Accepted":
            raise RuntimeError(f"{action} not accepted: {response}")
        written = await tap.wait(lambda: next((t for t, data in tap.record.to_esp32 if AUTHORIZE in data), None))
        latencies.append(written - t0)
        # Let the ESP32 confirm before the EV leaves, as a car would: an unplug racing the
        # command would leave the station retrying it (1 s) into the next sample.
        await tap.wait(lambda: any(t > written and f.status.authorized for t, f in tap.record.from_esp32))
        await asyncio.sleep(0.005)
        since = len(csms.arrivals)
        await sim.command("unplug")
        await sim.command("send_status")
        await csms.next_call("StatusNotification", since, lambda r: _status_of(r) == available)
        await asyncio.sleep(0.01)
    return latencies


# --------------------------------------------------------------- baseline: the bare library client
async def bare(workdir: Path, csms: BenchCsms, mode: str, *, url: str | None = None, **options: Any) -> dict[str, Any]:
    """The bare library client doing `mode`; `url`: another way to the CSMS (the link emulator)."""
    out = workdir / f"bare-{mode}.json"
    argv = python_argv("-m", "tests.bench.bare_client", mode, "--url", url or csms.url("201"), "--out", str(out),
                       *[f"--{k}={v}" for k, v in options.items()])
    # The previous bare client (same station id) has exited, but the CSMS may not have seen its
    # connection close yet: a remote start sent now would go to that dead session and time out.
    await csms.wait_connected("BARE_LIBRARY_CP", timeout=10, connected=False)
    since = len(csms.arrivals)
    client = await Proc(argv, None, workdir / f"bare-{mode}.log").start()
    task = None
    if mode == "remote":
        task = asyncio.create_task(_bare_remote(csms, int(options["count"])))
    assert client.proc is not None
    code = await client.proc.wait()
    client._log.close()
    sent = await task if task is not None else []
    if code != 0:
        raise RuntimeError(f"bare client failed:\n{client.log_tail()}")
    result = json.loads(out.read_text())
    mine = [a for a in csms.arrivals[since:] if a.item.station_id == "BARE_LIBRARY_CP" and a.item.kind == "call"]
    boot = next(a.at for a in mine if a.item.action == "BootNotification")
    figures: dict[str, Any] = {"start_to_boot_s": boot - client.started}
    if mode == "status":
        arrivals = [a.at for a in mine if a.item.action == "StatusNotification"]
        figures["status"] = latency_summary([(a - t) * 1000 for a, t in zip(arrivals, result["sent"], strict=True)])
    elif mode == "replay":
        events = [a.at for a in mine if a.item.action == "TransactionEvent"]
        figures["messages_per_s"] = (len(events) - 1) / (events[-1] - events[0])
    elif mode == "remote":
        figures["remote_start"] = latency_summary([(r - s) * 1000 for r, s in zip(result["remote_starts"], sent, strict=True)])
    return figures


async def _bare_remote(csms: BenchCsms, count: int) -> list[float]:
    async with asyncio.timeout(30):
        while not csms.connected("BARE_LIBRARY_CP"):
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    sent = []
    for k in range(count):
        sent.append(time.monotonic())
        await csms.call("BARE_LIBRARY_CP", "RequestStartTransaction",
                        {"idToken": {"idToken": f"REMOTE{k}", "type": "Central"}, "remoteStartId": k + 1})
        await asyncio.sleep(0.005)
    return sent


# --------------------------------------------------------------- (8) device model report
async def full_inventory(workdir: Path, csms: BenchCsms, repeats: int = 5) -> dict[str, Any]:
    """GetBaseReport FullInventory against the real daemon: request → last NotifyReport, pages, bytes, RSS."""
    async with SimulatorProcess(workdir) as sim:
        since = len(csms.arrivals)
        async with daemon(workdir, csms, sim.port) as (station, _, _):
            await _boot_arrival(csms, since, station)
            await asyncio.sleep(1)
            rss_before = round(rss_mb(station.pid), 1)
            durations: list[float] = []
            pages: list[Any] = []
            for request_id in range(1, repeats + 1):
                mark = len(csms.arrivals)
                started = time.monotonic()
                answer = await csms.call(STATION_ID, "GetBaseReport", {"requestId": request_id, "reportBase": "FullInventory"})
                assert answer["status"] == "Accepted", answer
                last = await csms.next_call("NotifyReport", mark, lambda r: r.payload["tbc"] is False, timeout=30)
                durations.append(last.at - started)
                pages = [a.item.payload for a in csms.arrivals[mark:]
                         if a.item.kind == "call" and a.item.action == "NotifyReport"]
            rss = round(rss_mb(station.pid), 1)
    sizes = [len(json.dumps(p, separators=(",", ":"))) for p in pages]
    return {"entries": sum(len(p["reportData"]) for p in pages), "pages": len(pages), "bytes": sum(sizes),
            "largest_page_bytes": max(sizes), "seconds": latency_summary([d * 1000 for d in durations]),
            "rss_before_mb": rss_before, "rss_after_mb": rss}
