"""`station --once`: is this station healthy and talking to its CSMS? One JSON document on stdout.

With the daemon running, everything is asked of the daemon over IPC (a CSMS allows one
connection per station id, so `--once` must not open a second one). Without it, `--once`
opens its own CSMS connection and reads the ESP32 directly, then closes everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station import __version__, exitcodes
from station.config import ConfigError, Settings

PI_MODEL = Path("/proc/device-tree/model")
MIN_FREE_BYTES = 100 * 1024 * 1024


def _utc() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def check(name: str, ok: bool, detail: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail, **extra}


def run_once(args: argparse.Namespace) -> int:
    from station.cli import _setup_logging, load_config

    started_utc, t0 = _utc(), time.perf_counter()
    report: dict[str, Any] = {
        "ok": False, "exit_code": exitcodes.FAILURE, "station_id": None, "station_name": None,
        "software_version": __version__, "mode": None, "endpoint": None, "subprotocol": None,
        "ocpp": {"version": None, "url": None, "connected": False, "latency_ms": None},
        "messages": [], "esp32": {"link_up": False, "firmware": None, "connectors": []}, "checks": [],
        "run_started_utc": started_utc,
    }
    try:
        loaded = load_config(args)
    except ConfigError as exc:
        _setup_logging(None, stream=sys.stderr)
        report["checks"].append(check("config", False, str(exc)))
        return _finish(report, exitcodes.CONFIG, t0)
    settings = loaded.settings
    _setup_logging(settings, stream=sys.stderr)
    report["station_id"] = report["station_name"] = settings.station_name
    report["checks"].append(check("config", True, f"env file {loaded.env_file or '(none)'}"))
    try:
        code = asyncio.run(asyncio.wait_for(_probe(settings, report), timeout=max(1.0, args.timeout)))
    except TimeoutError:
        report["checks"].append(check("time_limit", False, f"--once did not finish within {args.timeout:g} s"))
        code = _exit_code(report)
    return _finish(report, code, t0)


def _finish(report: dict[str, Any], code: int, t0: float) -> int:
    report["ok"] = code == exitcodes.OK
    report["exit_code"] = code
    report["exit_meaning"] = exitcodes.DESCRIPTIONS.get(code, "")
    report["run_finished_utc"] = _utc()
    report["duration_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    print(json.dumps(report, indent=2, default=str))
    return code


async def _probe(settings: Settings, report: dict[str, Any]) -> int:
    from station.ipc.client import DaemonUnavailable, IpcClient

    try:
        async with IpcClient(settings.ipc_socket) as client:
            status = await client.status()
            probe = await client.probe()
        report["mode"] = "daemon"
        _from_daemon(report, status, probe)
    except DaemonUnavailable:
        report["mode"] = "standalone"
        await _standalone(settings, report)
    report["checks"].append(_disk_check(settings.state_dir))
    report["checks"].append(_power_check())
    return _exit_code(report)


def _exit_code(report: dict[str, Any]) -> int:
    failed = {c["name"]: c for c in report["checks"] if not c["ok"]}
    if "config" in failed:
        return exitcodes.CONFIG
    csms = failed.get("csms")
    if csms is not None:
        return exitcodes.AUTH_FAILED if csms.get("kind") == "auth_failed" else exitcodes.CSMS_UNREACHABLE
    if "esp32" in failed:
        return exitcodes.ESP32_UNREACHABLE
    return exitcodes.DEGRADED if failed else exitcodes.OK


def _ocpp_section(report: dict[str, Any], state: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    version = state.get("version")
    rtts = [m["rtt_ms"] for m in messages if m.get("action") == "Heartbeat" and m.get("rtt_ms") is not None]
    report["ocpp"] = {
        "version": {"201": "2.0.1", "16": "1.6"}.get(version or "", None),
        "url": state.get("url"),
        "connected": bool(state.get("connected")),
        "latency_ms": rtts[-1] if rtts else None,
        "security_profile": state.get("security_profile"),
        "last_error": state.get("last_error"),
    }
    report["endpoint"] = state.get("url")
    report["subprotocol"] = {"201": "ocpp2.0.1", "16": "ocpp1.6"}.get(version or "")
    report["messages"] = messages


def _csms_check(state: dict[str, Any], messages: list[dict[str, Any]], error: str | None) -> dict[str, Any]:
    by_action = {m["action"]: m for m in messages if m.get("direction") == "out"}
    boot = by_action.get("BootNotification")
    needed = [a for a in ("BootNotification", "StatusNotification", "Heartbeat") if a not in by_action]
    if boot and boot.get("status") == "Accepted" and not needed and not error:
        return check("csms", True, f"BootNotification accepted; Heartbeat round trip "
                     f"{by_action['Heartbeat'].get('rtt_ms')} ms")
    kind = state.get("last_error_kind") or ("refused" if boot else "unreachable")
    if boot and boot.get("status") != "Accepted":
        detail = f"BootNotification {boot.get('status')}"
        kind = "refused"
    else:
        detail = error or state.get("last_error") or f"no answer to {', '.join(needed)}"
    return check("csms", False, detail, kind=kind)


def _clock_check(trusted: bool, source: str | None) -> dict[str, Any]:
    if trusted:
        return check("clock", True, f"clock trusted (source: {source or 'system time sync'})")
    return check("clock", False, "clock not synchronized (no NTP sync and no CSMS time yet)")


def _queue_check(depth: int, connected: bool) -> dict[str, Any]:
    if depth < 0:
        return check("offline_queue", False, "state database unreadable", depth=depth)
    if depth == 0:
        return check("offline_queue", True, "no transaction messages waiting", depth=0)
    return check("offline_queue", connected, f"{depth} transaction messages waiting"
                 + (" (being sent)" if connected else " (CSMS not connected)"), depth=depth)


def _esp32_section(report: dict[str, Any], connectors: list[dict[str, Any]], link_up: bool, firmware: Any) -> None:
    report["esp32"] = {
        "link_up": link_up,
        "firmware": firmware,
        "connectors": [
            {k: c.get(k) for k in ("id", "status", "error_code", "pilot", "controller_state", "relay_closed")}
            for c in connectors
        ],
    }
    if link_up:
        report["checks"].append(check("esp32", True, "status frames received"))
    else:
        reasons = {c["controller_link"]["reason"] for c in connectors if not c["controller_link"]["up"]}
        report["checks"].append(check("esp32", False, "no valid status frame from the ESP32: " + "; ".join(reasons)))


def _from_daemon(report: dict[str, Any], status: dict[str, Any], probe: dict[str, Any]) -> None:
    state = probe.get("status") or status.get("ocpp", {})
    messages = probe.get("messages", [])
    _ocpp_section(report, state, messages)
    report["checks"].append(_csms_check(state, messages, probe.get("error")))
    connectors = status.get("connectors", [])
    links = status.get("esp32", {})
    _esp32_section(report, connectors, all(c["controller_link"]["up"] for c in connectors),
                   next((v.get("firmware") for v in links.values() if v.get("firmware")), None))
    clock = status.get("clock", {})
    report["checks"].append(_clock_check(bool(clock.get("trusted")), clock.get("source")))
    report["checks"].append(_queue_check(int(status.get("outbox_depth", -1)), bool(state.get("connected"))))
    store = status.get("store", {})
    if not store.get("healthy", True):
        report["checks"].append(check("state_store", False, f"state database: {store.get('last_error')}"))


async def _standalone(settings: Settings, report: dict[str, Any]) -> None:
    """Own CSMS connection (primary, then fallback) and a direct ESP32 read; everything closed after."""
    from station.controller.link import Esp32Link
    from station.core.clock import Clock
    from station.core.station import StationCore
    from station.core.store import Store
    from station.ocpp.client import OcppClient, link_params
    from station.ocpp.connection import LinkConfigError, OcppLink

    core = StationCore(store=Store(":memory:"), clock=Clock(), connector_ids=range(1, settings.connectors + 1))
    ports = [p.strip() for p in settings.esp32_port.split(",") if p.strip()]
    links = {
        cid: Esp32Link(ports[min(cid, len(ports)) - 1], baud=settings.esp32_baud,
                       on_status=lambda s, cid=cid: core.on_controller_status(cid, s),
                       on_link=lambda up, why, cid=cid: core.on_controller_link(cid, up, why),
                       poll_interval=0.1, link_timeout=settings.esp32_link_timeout_seconds)
        for cid in core.connectors
    }
    tasks = [asyncio.create_task(link.run()) for link in links.values()]
    # The ESP32 answers a status request within a poll; give it a moment before reporting statuses.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            while not all(c.link_up for c in core.connectors.values()):
                await asyncio.sleep(0.05)
    done = asyncio.Event()
    error: list[str] = []
    params = link_params(settings)
    try:
        from dataclasses import replace

        params = replace(params, fallback_after=1, backoff_min=0.1, backoff_max=0.3, open_timeout=4)
        client = OcppClient(params, core, heartbeat_seconds=settings.heartbeat_seconds)
    except LinkConfigError as exc:
        report["checks"].append(check("config", False, str(exc)))
        client = None
    if client is not None:
        async def one_shot(ws: Any, version: str) -> None:
            from station.ocpp.v16 import V16Session
            from station.ocpp.v201 import V201Session

            session = V201Session(client, ws) if version == "201" else V16Session(client, ws)
            reader = asyncio.create_task(session.start())
            try:
                response = await session.request("BootNotification", session.boot_payload(), timeout=4)
                session.trust_time(response.get("currentTime"))
                if response.get("status") == "Accepted":
                    for conn in core.connectors.values():
                        await session.send_status(conn, force=True)
                    await session.send_heartbeat(raise_errors=True)
            except Exception as exc:  # noqa: BLE001 - reported in the check
                error.append(f"{exc.__class__.__name__}: {exc}")
            finally:
                reader.cancel()
                done.set()

        client.link = OcppLink(params, one_shot)
        link_task = asyncio.create_task(client.link.run())
        attempts_allowed = 4  # primary, fallback, and one retry of each
        while not done.is_set() and client.link.state.failed_attempts < attempts_allowed:
            if client.link.state.last_error_kind is not None and client.link.state.last_error_kind.value == "auth_failed":
                break
            await asyncio.sleep(0.05)
        state = client.link.state.as_dict()
        state["version"] = state.get("version") or client.link.state.preferred_version
        link_task.cancel()
        await asyncio.gather(link_task, return_exceptions=True)
        messages = [e.to_json() for e in client.exchanges]
        _ocpp_section(report, state, messages)
        report["ocpp"]["connected"] = bool(messages)
        report["checks"].append(_csms_check(state, messages, error[0] if error else None))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    connectors = [c.to_json() for c in core.connectors.values()]
    _esp32_section(report, connectors, all(link.link_up for link in links.values()),
                   next((link.firmware for link in links.values() if link.firmware), None))
    report["checks"].append(_clock_check(core.clock.trusted, core.clock.trust_source))
    report["checks"].append(_queue_check(_stored_depth(settings), False))
    await core.close()


def _stored_depth(settings: Settings) -> int:
    if not settings.db_path.exists():
        return 0
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox WHERE parked=0").fetchone()[0])
    except sqlite3.Error:
        return -1


def _disk_check(state_dir: Path) -> dict[str, Any]:
    probe = state_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb = usage.free // (1024 * 1024)
    ok = usage.free >= MIN_FREE_BYTES
    return check("disk", ok, f"{free_mb} MB free in {probe}" + ("" if ok else " (below 100 MB)"), free_mb=free_mb)


_THROTTLE_BITS = {
    0: "under-voltage now", 1: "ARM frequency capped now", 2: "throttled now", 3: "soft temperature limit now",
    16: "under-voltage has occurred", 17: "frequency capping has occurred", 18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


def _power_check() -> dict[str, Any]:
    """Raspberry Pi power sanity: `vcgencmd get_throttled` = 0x0 and no under-voltage in the kernel log."""
    try:
        model = PI_MODEL.read_text(errors="replace").strip("\x00\n")
    except OSError:
        model = ""
    if "Raspberry Pi" not in model:
        return check("power", True, "skipped: not a Raspberry Pi", skipped=True)
    problems: list[str] = []
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=3).stdout
        value = int(re.search(r"0x[0-9a-fA-F]+", out).group(0), 16)  # type: ignore[union-attr]
        problems += [text for bit, text in _THROTTLE_BITS.items() if value & (1 << bit)]
    except (OSError, subprocess.SubprocessError, AttributeError, ValueError):
        problems.append("vcgencmd get_throttled unavailable")
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=3).stdout
        if re.search(r"[Uu]nder-?voltage", log):
            problems.append("under-voltage reported in the kernel log")
    except (OSError, subprocess.SubprocessError):
        pass
    return check("power", not problems, "; ".join(problems) or f"{model}: no throttling, no under-voltage")
