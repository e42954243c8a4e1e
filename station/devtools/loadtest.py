"""`station loadtest`: one process simulating N charging stations against a CSMS, for sizing a backend.

Each simulated station runs the station's own stack minus the hardware: the core (connectors,
authorization, transactions, durable outbox in an in-memory SQLite), the OCPP client (boot,
StatusNotification, Heartbeat at the CSMS's interval, Authorize, transaction messages, reconnect
with backoff; 2.0.1 or 1.6J) and, per connector, a simulated charge controller and energy meter.
Drivers plug in, present a token (Authorize), charge with meter values, stop and unplug, with
random pauses so the load is spread out.

    station loadtest --stations 1000 --csms ws://127.0.0.1:9000/ocpp201/ --duration 120

Every --report-every seconds one JSON line goes to stdout (stations booted, calls per second,
CSMS round trips p50/p99, errors, this process's CPU and memory); a summary line ends the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from station import exitcodes
from station.cliargs import Parser
from station.core.clock import Clock
from station.core.model import ControllerState, ControllerStatus, MeterReading, PilotState
from station.core.station import StationCore
from station.core.store import Store
from station.ocpp.base import Exchange
from station.ocpp.client import OcppClient, StationInfo
from station.ocpp.connection import LinkParams


@dataclass
class Options:
    stations: int
    csms: str
    ocpp: str = "201"
    duration: float | None = None
    ramp: float = 50.0
    connectors: int = 1
    session_seconds: float = 60.0
    idle_seconds: float = 30.0
    meter_seconds: float = 30.0
    prefix: str = "LOADTEST"
    report_every: float = 5.0
    password: str | None = None


# ------------------------------------------------------------------ simulated hardware
class SimulatedController:
    """A charge controller that confirms every command at once (the ChargeController port)."""

    link_up = True
    firmware = "loadtest"

    def __init__(self, core: StationCore, connector_id: int) -> None:
        self.core = core
        self.connector_id = connector_id
        self.status = ControllerStatus(PilotState.A, ControllerState.IDLE, False, False, 32, 32)

    def _report(self, **changes: Any) -> None:
        self.status = dataclasses.replace(self.status, **changes)
        self.core.on_controller_status(self.connector_id, self.status)

    async def authorize(self) -> None:
        charging = self.status.pilot is PilotState.C
        self._report(authorized=True, relay_closed=charging,
                     state=ControllerState.CHARGING if charging else ControllerState.READY)

    async def stop_charging(self) -> None:
        self._report(authorized=False, relay_closed=False, state=ControllerState.STOPPED)

    async def set_max_current(self, amps: int) -> None:
        self._report(max_current_a=amps)

    async def request_status(self) -> ControllerStatus | None:
        return self.status

    # the vehicle
    def plug(self) -> None:
        self._report(pilot=PilotState.B, state=ControllerState.EV_CONNECTED)

    def request_charge(self) -> None:
        on = self.status.authorized
        self._report(pilot=PilotState.C, relay_closed=on, state=ControllerState.CHARGING if on else self.status.state)

    def unplug(self) -> None:
        self._report(pilot=PilotState.A, relay_closed=False, authorized=False, state=ControllerState.IDLE)


# ------------------------------------------------------------------ statistics
@dataclass
class Stats:
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    rtt_ms: list[float] = field(default_factory=list)
    sessions_started: int = 0
    sessions_ended: int = 0

    def record(self, exchange: Exchange) -> None:
        if exchange.direction != "out":
            return
        self.calls[exchange.action] += 1
        if exchange.status in ("CallError", "Timeout"):
            self.errors[f"{exchange.action}: {exchange.status}"] += 1
        elif exchange.rtt_ms is not None:
            self.rtt_ms.append(exchange.rtt_ms)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# ------------------------------------------------------------------ one station
class SimulatedStation:
    def __init__(self, number: int, options: Options, stats: Stats) -> None:
        self.options = options
        self.stats = stats
        self.station_id = f"{options.prefix}_{number:05d}"
        connector_ids = range(1, options.connectors + 1)
        self.core = StationCore(store=Store(":memory:"), clock=Clock(trusted=True), connector_ids=connector_ids,
                                meter_value_seconds=options.meter_seconds, has_meter=True)
        self.controllers = {cid: SimulatedController(self.core, cid) for cid in connector_ids}
        for cid, controller in self.controllers.items():
            self.core.attach_controller(cid, controller)
            self.core.on_controller_status(cid, controller.status)
        url = options.csms
        params = LinkParams(self.station_id, password=options.password, primary=options.ocpp,
                            url_201=url if options.ocpp == "201" else None, url_16=url if options.ocpp == "16" else None,
                            backoff_min=1, backoff_max=30)
        self.client = OcppClient(params, self.core, info=StationInfo(serial_number=self.station_id), response_timeout=30)
        original = self.client.record

        def record(exchange: Exchange) -> None:
            stats.record(exchange)
            original(exchange)

        self.client.record = record  # type: ignore[method-assign]
        self._energy = {cid: random.uniform(0, 1e6) for cid in connector_ids}
        self.ever_booted = False

    @property
    def booted(self) -> bool:
        session = self.client.session
        booted = bool(session is not None and session.boot_accepted.is_set())
        self.ever_booted = self.ever_booted or booted
        return booted

    def why_not_booted(self) -> str:
        """One line: why this station has no accepted boot now (for the summary's `not_booted`)."""
        state = self.client.link.state
        if state.connected:
            status = (self.client.boot or {}).get("status")
            return f"BootNotification {status}" if status else "no BootNotification response"
        if state.last_error_kind is not None:
            return f"{state.last_error_kind.value}: {state.last_error}"
        return "not connected yet"

    async def run(self) -> None:
        drivers = [asyncio.create_task(self._driver(cid), name=f"{self.station_id}-{cid}") for cid in self.controllers]
        try:
            await self.client.run()
        finally:
            for task in drivers:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)
            await self.core.close()
            self.core.store.close()

    async def _driver(self, cid: int) -> None:
        """Sessions on one connector, forever: idle, plug, token, charge, stop, unplug."""
        o = self.options
        controller = self.controllers[cid]
        while not self.booted:
            await asyncio.sleep(0.5)
        while True:
            await asyncio.sleep(random.uniform(0.5, 1.5) * o.idle_seconds)
            controller.plug()
            token = f"LT{random.randrange(10**8):08d}"
            result = await self.core.authorize_token(token, "ISO14443")
            if result.status != "Accepted":
                controller.unplug()
                continue
            accepted, _ = self.core.request_start(cid, token, "ISO14443", trigger="Authorized")
            if not accepted:
                controller.unplug()
                continue
            self.stats.sessions_started += 1
            controller.request_charge()
            end = time.monotonic() + random.uniform(0.5, 1.5) * o.session_seconds
            while time.monotonic() < end:
                self._meter(cid, charging=True)
                await asyncio.sleep(min(1.0, max(0.05, end - time.monotonic())))
            self.core.request_stop(connector_id=cid, reason="Local", trigger="StopAuthorized")
            self.stats.sessions_ended += 1
            await asyncio.sleep(random.uniform(0.05, 0.2) * o.idle_seconds)
            controller.unplug()
            self._meter(cid, charging=False)

    def _meter(self, cid: int, *, charging: bool) -> None:
        power = 11_000.0 if charging else 0.0
        self._energy[cid] += power / 3600
        amps = 16.0 if charging else 0.0
        self.core.on_meter_reading(MeterReading(round(self._energy[cid], 1), power, (amps, amps, amps),
                                                (230.0, 230.0, 230.0), 50.0), cid)


# ------------------------------------------------------------------ the run
def _process_figures(since: tuple[float, float]) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    wall = time.monotonic()
    rss = 0.0
    with contextlib.suppress(OSError):
        for line in open("/proc/self/status"):  # noqa: SIM115 — tiny read
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return {"cpu_percent": round((cpu - since[0]) / max(1e-9, wall - since[1]) * 100, 1), "rss_mb": round(rss, 1),
            "_cpu": cpu, "_wall": wall}


async def run_loadtest(options: Options, stop: asyncio.Event | None = None, out: Any = sys.stdout) -> dict[str, Any]:
    """Run until `stop` is set or `options.duration` passes; returns the summary (also printed)."""
    stop = stop or asyncio.Event()
    stats = Stats()
    stations: list[SimulatedStation] = []
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    mark = (usage.ru_utime + usage.ru_stime, started)
    peak = {"cpu_percent": 0.0, "rss_mb": 0.0}
    last_calls = 0

    def report(final: bool = False) -> dict[str, Any]:
        nonlocal mark, last_calls
        figures = _process_figures(mark)
        mark = (figures.pop("_cpu"), figures.pop("_wall"))
        total = sum(stats.calls.values())
        line = {
            "t": round(time.monotonic() - started, 1),
            "stations": len(stations),
            "booted": sum(1 for s in stations if s.booted),
            "calls": total,
            "calls_per_s": round((total - last_calls) / max(1e-9, options.report_every), 1),
            "rtt_p50_ms": _percentile(stats.rtt_ms, 50),
            "rtt_p99_ms": _percentile(stats.rtt_ms, 99),
            "errors": sum(stats.errors.values()),
            "sessions_started": stats.sessions_started,
            "outbox_depth": sum(s.core.store.outbox_depth() for s in stations),
            **figures,
        }
        last_calls = total
        stats.rtt_ms.clear()
        if not final:
            for key in peak:
                peak[key] = max(peak[key], float(line[key]))
        return line

    async def reporter() -> None:
        while True:
            await asyncio.sleep(options.report_every)
            print(json.dumps(report()), file=out, flush=True)

    reporting = asyncio.create_task(reporter())
    try:
        async with asyncio.timeout(options.duration):
            for number in range(1, options.stations + 1):
                if stop.is_set():
                    break
                station = SimulatedStation(number, options, stats)
                stations.append(station)
                tasks.append(asyncio.create_task(station.run(), name=station.station_id))
                await asyncio.sleep(1 / options.ramp)
            await stop.wait()
    except TimeoutError:
        pass
    finally:
        reporting.cancel()
        final = report(final=True)
        not_booted = Counter(s.why_not_booted() for s in stations if not s.booted)  # before the links close
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, reporting, return_exceptions=True)
    ever_booted = sum(1 for s in stations if s.ever_booted)
    summary = {
        "summary": True, "stations": options.stations, "ocpp": options.ocpp, "seconds": final["t"],
        "ok": ever_booted > 0, "booted_at_end": final["booted"], "ever_booted": ever_booted,
        "not_booted": dict(not_booted.most_common()),
        "calls_by_action": dict(stats.calls), "errors_by_kind": dict(stats.errors),
        "sessions_started": stats.sessions_started, "sessions_ended": stats.sessions_ended,
        "peak_cpu_percent": peak["cpu_percent"], "peak_rss_mb": max(peak["rss_mb"], final["rss_mb"]),
        "rss_mb_at_end": final["rss_mb"],
    }
    print(json.dumps(summary), file=out, flush=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="station loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, required=True, help="number of simulated stations")
    p.add_argument("--csms", required=True, metavar="URL",
                   help="CSMS endpoint; a URL ending in / gets each station id appended")
    p.add_argument("--ocpp", choices=("201", "16"), default="201", help="OCPP version (201)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    p.add_argument("--ramp", type=float, default=50.0, metavar="N", help="stations started per second (50)")
    p.add_argument("--connectors", type=int, default=1, help="connectors per station (1)")
    p.add_argument("--session-seconds", type=float, default=60.0, metavar="S", help="mean charging session (60)")
    p.add_argument("--idle-seconds", type=float, default=30.0, metavar="S", help="mean pause between sessions (30)")
    p.add_argument("--meter-seconds", type=float, default=30.0, metavar="S", help="meter value interval (30)")
    p.add_argument("--prefix", default="LOADTEST", help="station ids are PREFIX_00001 ... (LOADTEST)")
    p.add_argument("--report-every", type=float, default=5.0, metavar="S", help="seconds between report lines (5)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stations < 1 or args.ramp <= 0 or args.connectors < 1:
        print("--stations, --ramp and --connectors must be positive", file=sys.stderr)
        return 2
    if not args.csms.startswith(("ws://", "wss://")):
        print(f"--csms must be a ws:// or wss:// URL, got {args.csms!r}", file=sys.stderr)
        return 2
    options = Options(
        stations=args.stations, csms=args.csms, ocpp=args.ocpp, duration=args.duration, ramp=args.ramp,
        connectors=args.connectors, session_seconds=args.session_seconds, idle_seconds=args.idle_seconds,
        meter_seconds=args.meter_seconds, prefix=args.prefix, report_every=args.report_every,
        password=os.environ.get("OCPP_STATION_PASSWORD") or None,
    )
    _quiet_logs()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per station

    async def amain() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await run_loadtest(options, stop)

    return verdict(asyncio.run(amain()))


def verdict(summary: dict[str, Any]) -> int:
    """Exit code of a run: a sizing run in which no station ever booted measured nothing, and says why."""
    if summary["ok"]:
        return exitcodes.OK
    reasons = summary["not_booted"]
    why = "; ".join(f"{count} × {reason}" for reason, count in reasons.items()) or "no station was started"
    print(f"loadtest: FAILED: none of the {summary['stations']} stations booted: {why}", file=sys.stderr)
    if reasons and all(reason.startswith("auth_failed") for reason in reasons):
        return exitcodes.AUTH_FAILED
    return exitcodes.CSMS_UNREACHABLE


def _quiet_logs() -> None:
    """Warnings and errors only, each text once: N stations logging every frame would measure the terminal."""
    import structlog

    seen: set[str] = set()

    def once(_: Any, __: str, event: Any) -> Any:
        # N stations share one configuration: the same warning N times would bury the rest;
        # the report counts the errors per kind.
        text = str(event.get("event"))
        if text in seen:
            raise structlog.DropEvent
        seen.add(text)
        return event

    structlog.configure(processors=[once, *structlog.get_config()["processors"]],
                        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))  # stdout carries the report
    logging.getLogger().setLevel(logging.WARNING)


if __name__ == "__main__":
    raise SystemExit(main())
