"""Benchmarks over an emulated cellular link (station/devtools/linkemu.py between station and CSMS).

    python -m tests.bench.cellular backlog --rtt 150        # one scenario by hand, prints JSON
    python -m tests.bench.cellular dead

- `backlog`: 10,000 queued transaction events replayed at a given RTT. OCPP-J allows one CALL in
  flight, so 10,000 events at 300 ms take 50 minutes; the rate is therefore measured over a
  window of the drain (steady state: every message costs the same round trip, nothing grows
  with the position in the queue), and the time for the whole backlog is extrapolated from it.
  Then live traffic is injected while the backlog still drains: an EV plug-in (the simulator
  reports it at once) → StatusNotification at the CSMS; a driver's token the station does not
  know (IPC `start`, as the local API or a reader would) → Authorize at the CSMS; and a
  RequestStartTransaction → its answer back at the CSMS. Finally the link is set to loopback speed so the rest of the 10,000
  drains in seconds, and all 10,000 are checked: none lost, none out of order.
- `dead`: a black hole in the middle of a charging session: time from black hole to the
  station resetting the connection (target: WebSocketPingInterval + ping timeout), and from
  the path's return to the first transaction event delivered; nothing lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from station.controller.simulator import SimulatorProcess
from station.core.clock import Clock
from station.core.store import Store
from station.devtools.linkemu import LinkEmulator, LinkProfile
from station.ipc.client import IpcClient
from tests.bench.common import STATION_ID, BenchCsms, compile_bytecode, latency_summary
from tests.bench.scenarios import STATUS_ACTIONS, _boot_arrival, _status_of, daemon
from tests.bench.workload import delivery_report, event_index, queue_transaction_events

JITTER = 0.1
"""Jitter as a fraction of the one-way delay (uniform ±)."""
TX_ACTIONS = {"TransactionEvent", "StartTransaction", "StopTransaction", "MeterValues"}


def _profile(rtt_ms: float) -> LinkProfile:
    return LinkProfile.rtt(rtt_ms, rtt_ms / 2 * JITTER)


def _rate_window_s(rtt_ms: float) -> float:
    """Long enough for ≥ 40 round trips, at least 6 s."""
    return max(6.0, 40 * rtt_ms / 1000)


def _link_env(link: LinkEmulator, csms: BenchCsms, **more: str) -> dict[str, str]:
    return {"OCPP_201_URL": link.url(csms.url("201")), "OCPP_16_URL": link.url(csms.url("16")), **more}


class _TxCounter:
    """Transaction messages from the bench station, counted incrementally as they arrive."""

    def __init__(self, csms: BenchCsms) -> None:
        self.csms, self.scanned = csms, 0
        self.found: list[tuple[Any, int]] = []

    def indexed(self) -> list[Any]:
        """Arrivals carrying one of the queued events (by index), in arrival order."""
        arrivals = self.csms.arrivals
        for k in range(self.scanned, len(arrivals)):
            a = arrivals[k]
            if a.item.kind == "call" and a.item.action in TX_ACTIONS and a.item.station_id == STATION_ID:
                index = event_index(a.item.action, a.item.payload)
                if index is not None:
                    self.found.append((a, index))
        self.scanned = len(arrivals)
        return [a for a, _ in self.found]

    def indices(self) -> list[int]:
        self.indexed()
        return [i for _, i in self.found]


async def backlog(workdir: Path, csms: BenchCsms, rtt_ms: float, count: int = 10_000, probes: int = 10) -> dict[str, Any]:
    store = Store(workdir / "state" / "station.db")
    queue_transaction_events(store, Clock(trusted=True), count)
    store.close()
    csms.forget()
    occupied, available = STATUS_ACTIONS["201"]
    async with SimulatorProcess(workdir, extra_args=["--plug-delay", "0"]) as sim, \
            LinkEmulator(csms.port, _profile(rtt_ms), seed=int(rtt_ms)) as link, \
            daemon(workdir, csms, sim.port, **_link_env(link, csms)) as (station, _, environment):
        await _boot_arrival(csms, 0, station, timeout=30)
        counter = _TxCounter(csms)
        async with asyncio.timeout(30):
            while not counter.indexed():
                await asyncio.sleep(0.05)
        # Rate: a window of the drain with no other traffic.
        await asyncio.sleep(_rate_window_s(rtt_ms))
        window = counter.indexed()
        rate = (len(window) - 1) / (window[-1].at - window[0].at)

        # Live traffic while the backlog still drains.
        ipc = IpcClient(environment["STATION_IPC_SOCKET"], timeout=30)
        status_waits, authorize_waits, answer_waits = [], [], []

        async def plug(plugged: bool) -> float:
            """Plug in (or out); the seconds until the CSMS has the StatusNotification."""
            await asyncio.sleep(random.uniform(0, rtt_ms / 1000))  # a random phase against the outbox
            since = len(csms.arrivals)
            t0 = time.monotonic()
            await sim.command("plug" if plugged else "unplug")
            await sim.command("send_status")
            wanted = occupied if plugged else available
            arrival = await csms.next_call("StatusNotification", since, lambda r: _status_of(r) == wanted, timeout=30)
            return arrival.at - t0

        try:
            for k in range(probes):
                status_waits.append(await plug(True))
                await asyncio.sleep(random.uniform(0, rtt_ms / 1000))
                since = len(csms.arrivals)
                t0 = time.monotonic()
                started = asyncio.create_task(ipc.start(1, f"DRIVER{k:04d}", "ISO14443"))  # unknown: asked online
                arrival = await csms.next_call("Authorize", since, timeout=30)
                authorize_waits.append(arrival.at - t0)
                await started
                await plug(False)
                status_waits.append(await plug(True))
                await asyncio.sleep(random.uniform(0, rtt_ms / 1000))
                t0 = time.monotonic()
                answer = await csms.call(STATION_ID, "RequestStartTransaction",
                                         {"idToken": {"idToken": f"REMOTE{k}", "type": "Central"}, "remoteStartId": k + 1,
                                          "evseId": 1}, timeout=30)
                answer_waits.append(time.monotonic() - t0)
                if answer.get("status") != "Accepted":
                    raise RuntimeError(f"RequestStartTransaction not accepted: {answer}")
                await plug(False)
        finally:
            await ipc.close()
        in_backlog = len(counter.indexed()) < count  # the probes really ran while the backlog drained

        link.set_profile(LinkProfile())  # the rest at loopback speed: only to check every event
        async with asyncio.timeout(max(120.0, count / 50)):
            while len(set(counter.indices())) < count:
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # anything sent twice would arrive now
    report = delivery_report(counter.indices(), count)
    rtt = rtt_ms / 1000
    return {
        "rtt_ms": rtt_ms, "jitter_ms": rtt_ms / 2 * JITTER, "queued": count,
        "rate_window_messages": len(window), "rate_window_s": round(window[-1].at - window[0].at, 2),
        "messages_per_s": round(rate, 3), "rate_target": round(0.9 / rtt, 3), "rate_vs_one_per_rtt": round(rate * rtt, 3),
        "backlog_minutes_extrapolated": round(count / rate / 60, 1),
        "lost": report["lost"], "duplicated": report["duplicated"], "in_order": report["in_order"],
        "probes_during_backlog": in_backlog,
        "status_wait": latency_summary([w * 1000 for w in status_waits]),
        "authorize_wait": latency_summary([w * 1000 for w in authorize_waits]),
        "authorize_wait_over_rtt_p99": round(max(authorize_waits) / rtt, 2),
        "remote_start_answer_wait": latency_summary([w * 1000 for w in answer_waits]),
        "status_wait_over_rtt_p99": round(max(status_waits) / rtt, 2),
        "answer_wait_over_rtt_p99": round(max(answer_waits) / rtt, 2),
    }


async def bare_backlog(workdir: Path, csms: BenchCsms, rtt_ms: float) -> dict[str, Any]:
    """The bare `ocpp` client sending the same TransactionEvents through the same emulated link:
    what the library and the emulator alone reach (one CALL in flight, nothing else)."""
    from tests.bench.scenarios import bare

    count = max(30, int(_rate_window_s(rtt_ms) * 1000 / rtt_ms))
    async with LinkEmulator(csms.port, _profile(rtt_ms), seed=int(rtt_ms) + 2) as link:
        result = await bare(workdir, csms, "replay", url=link.url(csms.url("201")), count=count)
    return {"rtt_ms": rtt_ms, "messages": count, "messages_per_s": round(result["messages_per_s"], 3),
            "rate_vs_one_per_rtt": round(result["messages_per_s"] * rtt_ms / 1000, 3)}


async def dead_connection(workdir: Path, csms: BenchCsms, *, rtt_ms: float = 150, ping_interval: int = 5,
                          ping_timeout: float = 5, black_hole_s: float = 15, trials: int = 2) -> dict[str, Any]:
    """Black hole mid-session → station resets the link; path back → first transaction event delivered."""
    csms.forget()
    detections, recoveries, reconnects = [], [], []
    async with SimulatorProcess(workdir, extra_args=["--plug-delay", "0"]) as sim, \
            LinkEmulator(csms.port, _profile(rtt_ms), seed=7) as link:
        env = _link_env(link, csms, STATION_PING_INTERVAL_SECONDS=str(ping_interval),
                        STATION_PING_TIMEOUT_SECONDS=str(ping_timeout),
                        STATION_BACKOFF_MIN_SECONDS="1", STATION_BACKOFF_MAX_SECONDS="60")  # the product's backoff
        async with daemon(workdir, csms, sim.port, **env) as (station, _, environment):
            await _boot_arrival(csms, 0, station, timeout=30)
            # The first StatusNotification follows the boot's answer: the station is online, so
            # the token below is asked at the CSMS (before it, a 150 ms link still has it offline).
            await csms.next_call("StatusNotification", 0, timeout=30)
            ipc = IpcClient(environment["STATION_IPC_SOCKET"], timeout=10)
            try:
                await sim.command("plug")
                await sim.command("send_status")
                await ipc.start(1, "BENCH-DEAD")
                await sim.command("ev_charge")
                await sim.command("send_status")
                await csms.next_call("TransactionEvent", 0, lambda r: r.payload["eventType"] == "Started", timeout=30)
                for _ in range(trials):
                    await asyncio.sleep(random.uniform(0, ping_interval))  # a random phase against the pings
                    link.black_hole()
                    holed = time.monotonic()
                    lost = await link.wait_event("client_closed", since=holed, timeout=ping_interval + ping_timeout + 30)
                    detections.append(lost.at - holed)
                    # Charging state changes while the path is dead: queued in the outbox.
                    for command in ("ev_pause", "ev_charge"):
                        await sim.command(command)
                        await sim.command("send_status")
                        await asyncio.sleep(0.5)
                    await asyncio.sleep(max(0.0, holed + black_hole_s - time.monotonic()))
                    since = len(csms.arrivals)
                    link.restore()
                    restored = time.monotonic()
                    connected = await link.wait_event("upstream_connected", since=restored, timeout=90)
                    first = await csms.next_call("TransactionEvent", since, timeout=90)
                    reconnects.append(connected.at - restored)
                    recoveries.append(first.at - restored)
                since = len(csms.arrivals)
                await sim.command("unplug")
                await sim.command("send_status")
                await csms.next_call("TransactionEvent", since, lambda r: r.payload["eventType"] == "Ended", timeout=30)
            finally:
                await ipc.close()
    by_seq: dict[int, list[str]] = {}
    for a in csms.arrivals:
        if a.item.kind == "call" and a.item.action == "TransactionEvent" and a.item.station_id == STATION_ID:
            by_seq.setdefault(int(a.item.payload["seqNo"]), []).append(json.dumps(a.item.payload, sort_keys=True))
    lost_events = sorted(set(range(max(by_seq) + 1)) - set(by_seq)) if by_seq else []
    differing = [s for s, copies in by_seq.items() if len(set(copies)) > 1]
    return {
        "rtt_ms": rtt_ms, "ping_interval_s": ping_interval, "ping_timeout_s": ping_timeout, "black_hole_s": black_hole_s,
        "detection_s": [round(d, 2) for d in detections], "detection_max_s": round(max(detections), 2),
        "detection_target_s": ping_interval + ping_timeout,
        "restore_to_reconnect_s": [round(r, 2) for r in reconnects],
        "restore_to_first_event_s": [round(r, 2) for r in recoveries], "restore_to_first_event_max_s": round(max(recoveries), 2),
        "events": len(by_seq), "lost": len(lost_events), "differing_copies": len(differing),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.cellular", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=("backlog", "dead"))
    parser.add_argument("--rtt", type=float, default=150)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and state here")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    os.environ.setdefault("STATION_ENV_FILE", os.devnull)
    compile_bytecode()

    async def run() -> dict[str, Any]:
        with contextlib.nullcontext(str(args.workdir)) if args.workdir else tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
            async with BenchCsms(heartbeat_interval=300) as csms:
                if args.scenario == "backlog":
                    return await backlog(Path(tmp), csms, args.rtt, args.events, args.probes)
                return await dead_connection(Path(tmp), csms, rtt_ms=args.rtt)

    print(json.dumps(asyncio.run(run()), indent=2))


if __name__ == "__main__":
    main()
