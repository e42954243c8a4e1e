"""`make bench`: every figure of issues 10 and 18, side by side with the bare-library baseline.

    python -m tests.bench [--runs 3] [--events 10000] [--quick] [--no-cellular] [--only writes] [--out bench-results.json]

Writes bench-results.json (every run's raw figures plus min/median/max) and prints a table.
Targets are the issues'; a figure that misses one is marked MISS, never hidden. The loopback
scenarios run `--runs` times; the cellular ones (tests/bench/cellular.py: backlog at RTT 50,
150 and 300 ms through the link emulator, live messages during it, a black hole) once, in the
first run (the loopback and cellular scenarios took 517 s at bed5cf6). "before" is the figure measured before issue 18. The write budget (tests/bench/writes.py, issue 23)
runs once, in the first run, and adds ~5.5 minutes (about 15 in all); `--only writes` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import cellular, scenarios, writes
from tests.bench.common import BenchCsms, CpuLimit, compile_bytecode, spread

# (key, label, unit, target, "max" = lower is better / "min" = higher is better)
FIGURES: list[tuple[str, str, str, float | None, str]] = [
    ("status_total_p50_ms", "(1) ESP32 change → CSMS, poll 0.25 s, p50", "ms", None, "max"),
    ("status_total_p99_ms", "(1) ESP32 change → CSMS, poll 0.25 s, p99", "ms", 10.0, "max"),
    ("status_poll_share_p50_ms", "(1)   of which waiting for the poll, p50", "ms", None, "max"),
    ("status_station_p99_ms", "(1)   of which station (wire → CSMS), p99", "ms", 10.0, "max"),
    ("status_push_p50_ms", "(1) change reported at once → CSMS, p50", "ms", None, "max"),
    ("status_push_p99_ms", "(1) change reported at once → CSMS, p99", "ms", 10.0, "max"),
    ("remote_201_p50_ms", "(2) RequestStartTransaction → authorize frame, p50", "ms", None, "max"),
    ("remote_201_p99_ms", "(2) RequestStartTransaction → authorize frame, p99", "ms", 10.0, "max"),
    ("remote_16_p50_ms", "(2) RemoteStartTransaction (1.6) → authorize frame, p50", "ms", None, "max"),
    ("remote_16_p99_ms", "(2) RemoteStartTransaction (1.6) → authorize frame, p99", "ms", 10.0, "max"),
    ("replay_msgs_per_s", "(3) offline replay, 2.0.1", "msg/s", 2000.0, "min"),
    ("replay_daemon_cpu_us_per_msg", "(3)   daemon CPU per message", "µs", 300.0, "max"),  # issue 18 target
    ("replay_csms_cpu_us_per_msg", "(3)   dev CSMS (harness) CPU per message", "µs", None, "max"),
    ("replay_lost", "(3)   lost", "", 0.0, "max"),
    ("replay_duplicated", "(3)   duplicated", "", 0.0, "max"),
    ("rss_daemon_start_mb", "(4) daemon RSS after start", "MB", 40.0, "max"),
    ("rss_daemon_events_mb", "(4) daemon RSS after the replay", "MB", 40.0, "max"),
    ("rss_api_start_mb", "(4) API RSS after start", "MB", 55.0, "max"),
    ("rss_api_events_mb", "(4) API RSS after the replay", "MB", 55.0, "max"),
    ("idle_cpu_daemon_pct", "(4) daemon idle CPU", "%", 0.5, "max"),
    ("idle_cpu_api_pct", "(4) API idle CPU", "%", 0.5, "max"),
    ("start_to_boot_s", "(5) process start → BootNotification", "s", 0.5, "max"),
    ("once_wall_s", "(5) station --once wall time (daemon running)", "s", 2.0, "max"),
]
RTTS = (50, 150, 300)
for _rtt in RTTS:
    FIGURES += [
        (f"backlog_{_rtt}_msgs_per_s", f"(6) backlog replay, RTT {_rtt} ms", "msg/s", round(0.9 * 1000 / _rtt, 2), "min"),
        (f"backlog_{_rtt}_minutes", f"(6)   the whole backlog takes (extrapolated)", "min", None, "max"),
        (f"live_status_{_rtt}_p50_ms", f"(6)   plug-in → StatusNotification during it, p50", "ms", None, "max"),
        (f"live_status_{_rtt}_p99_ms", f"(6)   plug-in → StatusNotification during it, p99", "ms", 2.0 * _rtt, "max"),
        (f"live_authorize_{_rtt}_p50_ms", f"(6)   unknown token → Authorize during it, p50", "ms", None, "max"),
        (f"live_authorize_{_rtt}_p99_ms", f"(6)   unknown token → Authorize during it, p99", "ms", 2.0 * _rtt, "max"),
        (f"live_answer_{_rtt}_p50_ms", f"(6)   RequestStartTransaction answer during it, p50", "ms", None, "max"),
        (f"live_answer_{_rtt}_p99_ms", f"(6)   RequestStartTransaction answer during it, p99", "ms", 2.0 * _rtt, "max"),
    ]
FIGURES += [
    ("inventory_p50_ms", "(8) GetBaseReport FullInventory → last NotifyReport, p50", "ms", None, "max"),
    ("inventory_max_ms", "(8)   slowest of the runs", "ms", None, "max"),
    ("inventory_bytes", "(8)   NotifyReport payload bytes in all", "B", None, "max"),
    ("inventory_entries", "(8)   variables reported", "", None, "min"),
    ("inventory_pages", "(8)   NotifyReport pages (ItemsPerMessage[GetReport] 100)", "", None, "max"),
    ("rss_daemon_inventory_mb", "(8) daemon RSS after the reports", "MB", 40.0, "max"),
]
FIGURES += [
    ("backlog_lost", "(6) backlog: lost (all RTTs, all 10,000 checked)", "", 0.0, "max"),
    ("backlog_out_of_order", "(6) backlog: runs delivered out of order", "", 0.0, "max"),
    ("dead_detection_max_s", "(7) black hole → connection reset (ping 5 s + timeout 5 s)", "s", 10.0, "max"),
    ("dead_restore_to_event_max_s", "(7) path back → first transaction event", "s", None, "max"),
    ("dead_lost", "(7) black hole: lost events", "", 0.0, "max"),
]
FIGURES += [
    ("writes_idle_mb_day", "(9) writes at idle, flight recorder on (default)", "MB/day", 50.0, "max"),
    ("writes_idle_mb_h", "(9)   the same per hour", "MB/h", None, "max"),
    ("writes_idle_off_mb_h", "(9)   recorder off", "MB/h", None, "max"),
    ("writes_charging_mb_h", "(9) writes charging, meter values every 60 s, recorder on", "MB/h", None, "max"),
    ("writes_charging_off_mb_h", "(9)   recorder off", "MB/h", None, "max"),
    ("writes_backlog_mb", "(9) writes replaying the backlog (--events, 10,000), recorder on", "MB", None, "max"),
    ("writes_backlog_mb_h", "(9)   per hour of replay", "MB/h", None, "max"),
    ("writes_backlog_off_mb", "(9)   recorder off", "MB", None, "max"),
]
BASELINE: dict[str, str] = {
    "status_station_p99_ms": "bare_status_p99_ms",
    "status_push_p99_ms": "bare_status_p99_ms",
    "status_push_p50_ms": "bare_status_p50_ms",
    "remote_201_p50_ms": "bare_remote_p50_ms",
    "remote_201_p99_ms": "bare_remote_p99_ms",
    "replay_msgs_per_s": "bare_replay_msgs_per_s",
    "start_to_boot_s": "bare_start_to_boot_s",
    **{f"backlog_{r}_msgs_per_s": f"bare_backlog_{r}_msgs_per_s" for r in RTTS},
}
BEFORE: dict[str, float] = {
    "start_to_boot_s": 0.837,
    "replay_daemon_cpu_us_per_msg": 802.0,
    "replay_msgs_per_s": 834.0,
    "rss_daemon_start_mb": 39.0,
    "rss_daemon_events_mb": 40.2,
}
"""Medians of `make bench` at adecc1e (docs/performance.md), the figures issue 18 started from."""


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(), "load_at_start": os.getloadavg()}


async def one_run(base: Path, args: argparse.Namespace, run: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    work = base / f"run{run}"
    async with BenchCsms(heartbeat_interval=300) as csms:
        def step(name: str) -> Path:
            path = work / name
            path.mkdir(parents=True)
            print(f"  run {run}: {name}", file=sys.stderr, flush=True)
            return path

        if run == 1 and (args.only in (None, "writes")):
            raw["writes"] = w = await writes.write_budget(step, csms, seconds=args.write_seconds,
                                                         charging_seconds=args.write_seconds, sample_s=args.write_sample_s,
                                                         events=args.events)
            figures.update(writes.figures(w))
        if args.only == "writes":
            return {"figures": figures, "raw": raw}

        raw["start"] = s = await scenarios.start_and_idle(step("start"), csms, args.idle_seconds)
        figures.update(start_to_boot_s=s["start_to_boot_s"], once_wall_s=s["once_wall_s"],
                       rss_daemon_start_mb=s["rss_after_start"]["daemon_mb"], rss_api_start_mb=s["rss_after_start"]["api_mb"],
                       idle_cpu_daemon_pct=s["idle_cpu_percent"]["daemon"], idle_cpu_api_pct=s["idle_cpu_percent"]["api"])
        raw["bare_boot"] = b = await scenarios.bare(step("bare-boot"), csms, "boot")
        figures["bare_start_to_boot_s"] = b["start_to_boot_s"]

        raw["replay"] = r = await scenarios.replay(step("replay"), csms, args.events)
        figures.update(replay_msgs_per_s=r["messages_per_s"], replay_lost=r["lost"], replay_duplicated=r["duplicated"],
                       rss_daemon_events_mb=r["rss_after_events"]["daemon_mb"], rss_api_events_mb=r["rss_after_events"]["api_mb"],
                       replay_daemon_cpu_us_per_msg=r["cpu_us_per_message"]["daemon"],
                       replay_csms_cpu_us_per_msg=r["cpu_us_per_message"]["csms"])
        csms.forget()
        raw["bare_replay"] = b = await scenarios.bare(step("bare-replay"), csms, "replay", count=args.events)
        figures["bare_replay_msgs_per_s"] = b["messages_per_s"]
        csms.forget()

        raw["push"] = p = await scenarios.latency(step("latency-push"), csms, version="201", status_events=args.status_events,
                                                  push=True, remote_starts=args.remote_starts, poll_seconds=0.25)
        figures.update(status_push_p50_ms=p["status"]["total"]["p50_ms"], status_push_p99_ms=p["status"]["total"]["p99_ms"],
                       remote_201_p50_ms=p["remote_start"]["p50_ms"], remote_201_p99_ms=p["remote_start"]["p99_ms"])
        raw["bare_status"] = b = await scenarios.bare(step("bare-status"), csms, "status", count=args.status_events)
        figures.update(bare_status_p50_ms=b["status"]["p50_ms"], bare_status_p99_ms=b["status"]["p99_ms"])
        raw["bare_remote"] = b = await scenarios.bare(step("bare-remote"), csms, "remote", count=args.remote_starts)
        figures.update(bare_remote_p50_ms=b["remote_start"]["p50_ms"], bare_remote_p99_ms=b["remote_start"]["p99_ms"])

        raw["poll"] = q = await scenarios.latency(step("latency-poll"), csms, version="201", status_events=args.poll_events,
                                                  push=False, remote_starts=0, poll_seconds=0.25)
        figures.update(status_total_p50_ms=q["status"]["total"]["p50_ms"], status_total_p99_ms=q["status"]["total"]["p99_ms"],
                       status_poll_share_p50_ms=q["status"]["change_to_wire"]["p50_ms"],
                       status_station_p99_ms=q["status"]["wire_to_csms"]["p99_ms"])
        raw["remote16"] = v = await scenarios.latency(step("latency-16"), csms, version="16", status_events=0, push=True,
                                                      remote_starts=max(20, args.remote_starts // 2), poll_seconds=0.25)
        figures.update(remote_16_p50_ms=v["remote_start"]["p50_ms"], remote_16_p99_ms=v["remote_start"]["p99_ms"])
        raw["inventory"] = n = await scenarios.full_inventory(step("inventory"), csms)
        figures.update(inventory_p50_ms=n["seconds"]["p50_ms"], inventory_max_ms=n["seconds"]["max_ms"],
                       inventory_bytes=n["bytes"], inventory_entries=n["entries"], inventory_pages=n["pages"],
                       rss_daemon_inventory_mb=n["rss_after_mb"])
        csms.forget()
        if run == 1 and not args.no_cellular:
            await cellular_figures(step, csms, args, figures, raw)
    return {"figures": figures, "raw": raw}


async def cellular_figures(step: Any, csms: BenchCsms, args: argparse.Namespace, figures: dict[str, Any],
                           raw: dict[str, Any]) -> None:
    lost = out_of_order = 0
    for rtt in RTTS:
        csms.forget()
        raw[f"backlog_{rtt}"] = b = await cellular.backlog(step(f"backlog-{rtt}"), csms, rtt, args.events, args.probes)
        lost += b["lost"]
        out_of_order += 0 if b["in_order"] else 1
        figures.update({f"backlog_{rtt}_msgs_per_s": b["messages_per_s"], f"backlog_{rtt}_minutes": b["backlog_minutes_extrapolated"],
                        f"live_status_{rtt}_p50_ms": b["status_wait"]["p50_ms"], f"live_status_{rtt}_p99_ms": b["status_wait"]["p99_ms"],
                        f"live_answer_{rtt}_p50_ms": b["remote_start_answer_wait"]["p50_ms"],
                        f"live_answer_{rtt}_p99_ms": b["remote_start_answer_wait"]["p99_ms"]})
        figures.update({f"live_authorize_{rtt}_p50_ms": b["authorize_wait"]["p50_ms"],
                        f"live_authorize_{rtt}_p99_ms": b["authorize_wait"]["p99_ms"]})
        csms.forget()
        await csms.wait_connected("BARE_LIBRARY_CP", timeout=10, connected=False)
        raw[f"bare_backlog_{rtt}"] = c = await cellular.bare_backlog(step(f"bare-backlog-{rtt}"), csms, rtt)
        figures[f"bare_backlog_{rtt}_msgs_per_s"] = c["messages_per_s"]
    figures.update(backlog_lost=lost, backlog_out_of_order=out_of_order)
    csms.forget()
    raw["dead"] = d = await cellular.dead_connection(step("dead"), csms, trials=args.dead_trials)
    figures.update(dead_detection_max_s=d["detection_max_s"], dead_restore_to_event_max_s=d["restore_to_first_event_max_s"],
                   dead_lost=d["lost"])


def verdict(value: float, target: float | None, sense: str) -> str:
    if target is None:
        return ""
    ok = value <= target if sense == "max" else value >= target
    return "ok" if ok else "MISS"


def table(summary: dict[str, dict[str, float]]) -> str:
    lines = [f"{'figure':<58} {'before':>9} {'min':>9} {'median':>9} {'max':>9}  {'target':>9}  {'':4}  baseline (median, ratio)",
             "-" * 140]
    for key, label, unit, target, sense in FIGURES:
        if key not in summary:
            continue
        s = summary[key]
        target_text = "" if target is None else f"{'≤' if sense == 'max' else '≥'}{target:g} {unit}"
        base = ""
        if key in BASELINE and BASELINE[key] in summary:
            b = summary[BASELINE[key]]["median"]
            base = f"{b:.3f} {unit}  ×{s['median'] / b:.2f}" if b else ""
        before = f"{BEFORE[key]:>9.3f}" if key in BEFORE else " " * 9
        lines.append(f"{label:<58} {before} {s['min']:>9.3f} {s['median']:>9.3f} {s['max']:>9.3f}  {target_text:>9}  "
                     f"{verdict(s['median'], target, sense):4}  {base}")
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "settings": vars(args) | {"out": str(args.out)}, "runs": []}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
        for run in range(1, args.runs + 1):
            results["runs"].append(await one_run(Path(tmp), args, run))
    keys = results["runs"][0]["figures"].keys()  # the cellular figures exist in the first run only
    results["summary"] = {k: spread([r["figures"][k] for r in results["runs"] if k in r["figures"]]) for k in keys}
    results["targets"] = {key: {"target": target, "sense": sense, "verdict": verdict(results["summary"][key]["median"], target, sense)}
                          for key, _, _, target, sense in FIGURES if target is not None and key in results["summary"]}
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=10_000, help="queued transaction events to replay")
    parser.add_argument("--status-events", type=int, default=1000, help="state changes reported at once")
    parser.add_argument("--poll-events", type=int, default=100, help="state changes found by the 0.25 s poll")
    parser.add_argument("--remote-starts", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--probes", type=int, default=10, help="live messages of each kind during each backlog")
    parser.add_argument("--dead-trials", type=int, default=2, help="black holes in the dead-connection scenario")
    parser.add_argument("--no-cellular", action="store_true", help="skip the emulated-link scenarios")
    parser.add_argument("--daemon-cpu", type=float, default=None, metavar="CORES",
                        help="limit the daemon to this fraction of one core (cgroup CPU quota; a Pi-sized run)")
    parser.add_argument("--only", choices=["writes"], default=None,
                        help="run one group of scenarios alone, once (writes: the write budget)")
    parser.add_argument("--write-seconds", type=float, default=60.0, help="write budget: measuring window per scenario")
    parser.add_argument("--write-sample-s", type=int, default=5,
                        help="write budget: meter value interval while charging (scaled to 60 s)")
    parser.add_argument("--quick", action="store_true", help="small counts, one run (checks the harness)")
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    args = parser.parse_args()
    if args.only:
        args.runs = 1
    if args.quick:
        args.runs, args.events, args.status_events, args.poll_events, args.remote_starts, args.idle_seconds = 1, 500, 40, 10, 10, 3
        args.probes, args.dead_trials, args.write_seconds = 3, 1, 10.0
    logging.disable(logging.WARNING)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # the CSMS's frame log
    os.environ.setdefault("STATION_ENV_FILE", os.devnull)
    compile_bytecode()
    limit = CpuLimit(args.daemon_cpu) if args.daemon_cpu else contextlib.nullcontext()
    with limit:
        if args.daemon_cpu:
            print(f"daemon limited: {limit.describe()}", file=sys.stderr)  # type: ignore[union-attr]
        results = asyncio.run(amain(args))
    if args.daemon_cpu:
        results["machine"]["daemon_cpu_limit"] = limit.describe()  # type: ignore[union-attr]
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nmachine: {results['machine']['cpu']}, {results['machine']['nproc']} CPUs, Python "
          f"{results['machine']['python']}; {args.runs} run(s) in {results['wall_seconds']} s")
    print(table(results["summary"]))
    print(f"\nfull results: {args.out}")


if __name__ == "__main__":
    main()
