"""`station --once`: is this station healthy and talking to its CSMS? One JSON document on stdout.

With the daemon running, everything is asked of the daemon over IPC (a CSMS allows one
connection per station id, so `--once` must not open a second one). Without it, `--once`
opens its own CSMS connection and reads the ESP32 and the meter directly, then closes everything.

Every check runs at the same time as the others, under a share of `--timeout` of its own
(`Budget`): a CSMS that never answers (a firewall black hole) or a hanging disk cannot keep
the ESP32, meter, clock, storage and power checks from being run and reported in time.
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
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from station import __version__, exitcodes
from station.core import pi_power
from station.config import ConfigError, Settings

PI_MODEL = Path("/proc/device-tree/model")
MIN_FREE_BYTES = 100 * 1024 * 1024
ESP32_WAIT_S = 3.0
"""Longest wait for the first status frame (the ESP32 answers a status request within a poll)."""
METER_WAIT_S = 3.0
LOCAL_CHECK_S = 3.0
"""Disk, offline queue and power checks: each gets at most this long (a hung mount must not block)."""
CHECK_ORDER = ("config", "csms", "esp32", "meter", "clock", "offline_queue", "state_store", "disk", "power",
               "time_limit")
T = TypeVar("T")


def _utc() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def check(name: str, ok: bool, detail: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail, **extra}


class Budget:
    """`--timeout` split between the checks: each gets min(its own cap, what is left minus a reserve).

    The reserve is kept for closing connections and printing the report, so the whole run
    ends within the limit even when every check uses its full share.
    """

    def __init__(self, total: float) -> None:
        self.total = max(1.0, total)
        self.reserve = min(1.0, 0.15 * self.total)
        self._deadline = time.monotonic() + self.total

    def left(self) -> float:
        return self._deadline - time.monotonic()

    def share(self, cap: float | None = None) -> float:
        usable = max(0.1, self.left() - self.reserve)
        return usable if cap is None else min(cap, usable)


def run_once(args: argparse.Namespace) -> int:
    from station.cli import _setup_logging, load_config

    started_utc, t0 = _utc(), time.perf_counter()
    budget = Budget(args.timeout)
    report: dict[str, Any] = {
        "ok": False, "exit_code": exitcodes.FAILURE, "station_id": None, "station_name": None,
        "software_version": __version__, "mode": None, "endpoint": None, "subprotocol": None,
        "ocpp": {"version": None, "url": None, "connected": False, "latency_ms": None},
        "messages": [], "esp32": {"link_up": False, "firmware": None, "connectors": []}, "checks": [],
        "run_started_utc": started_utc,
    }
    try:
        if not args.timeout > 0:  # also NaN
            raise ConfigError(f"config error: --timeout {args.timeout:g}: must be more than 0 seconds")
        loaded = load_config(args)
    except ConfigError as exc:
        _setup_logging(None, stream=sys.stderr)
        print(str(exc), file=sys.stderr)  # the JSON report says it too, for tools
        report["checks"].append(check("config", False, str(exc)))
        return _finish(report, exitcodes.CONFIG, t0)
    settings = loaded.settings
    _setup_logging(settings, stream=sys.stderr)
    report["station_id"] = report["station_name"] = settings.station_name
    results: dict[str, dict[str, Any]] = {"config": check("config", True, f"env file {loaded.env_file or '(none)'}")}
    try:
        asyncio.run(asyncio.wait_for(_probe(settings, report, results, budget),
                                     timeout=max(0.5, budget.left() - 0.2)))
    except TimeoutError:
        # Only reached when a check ignored its own share; whatever finished is still reported.
        results["time_limit"] = check("time_limit", False, f"--once did not finish within {budget.total:g} s")
    report["checks"] = _ordered(results)
    return _finish(report, _exit_code(report), t0)


def _ordered(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {name: i for i, name in enumerate(CHECK_ORDER)}
    return [results[name] for name in sorted(results, key=lambda n: rank.get(n, len(rank)))]


def _finish(report: dict[str, Any], code: int, t0: float) -> int:
    report["ok"] = code == exitcodes.OK
    report["exit_code"] = code
    report["exit_meaning"] = exitcodes.DESCRIPTIONS.get(code, "")
    report["run_finished_utc"] = _utc()
    report["duration_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    print(json.dumps(report, indent=2, default=str))
    return code


async def _probe(settings: Settings, report: dict[str, Any], results: dict[str, dict[str, Any]],
                 budget: Budget) -> None:
    from station.ipc.client import DaemonUnavailable, IpcClient

    local = [
        _bounded(results, "disk", lambda: _off_loop(lambda: _disk_check(settings.state_dir)), budget.share(LOCAL_CHECK_S)),
        _bounded(results, "power", lambda: _off_loop(_power_check), budget.share(LOCAL_CHECK_S)),
    ]
    local_tasks = [asyncio.ensure_future(c) for c in local]
    try:
        async with IpcClient(settings.ipc_socket, timeout=budget.share(ESP32_WAIT_S)) as client:
            status = await client.status()
            report["mode"] = "daemon"
            _from_daemon_status(report, results, status, settings.esp32_baud)
            await _bounded(results, "csms", lambda: _daemon_csms(client, report, status, budget.share()),
                           budget.share(), what="the daemon's CSMS probe")
    except DaemonUnavailable:
        if report["mode"] is None:
            report["mode"] = "standalone"
            await _standalone(settings, report, results, budget)
        else:  # the daemon answered `status`, then went away
            results.setdefault("csms", check("csms", False, "the daemon stopped answering during the probe",
                                             kind="unreachable"))
    finally:
        await asyncio.gather(*local_tasks, return_exceptions=True)


async def _bounded(results: dict[str, dict[str, Any]], name: str, run: Callable[[], Awaitable[dict[str, Any] | None]],
                   seconds: float, *, what: str | None = None, kind: str | None = None) -> None:
    """Run one check within `seconds`; a check that takes longer is reported as failed, naming the limit."""
    try:
        async with asyncio.timeout(seconds):
            result = await run()
    except TimeoutError:
        extra = {"kind": kind} if kind else {}
        results[name] = check(name, False, f"{what or 'the ' + name + ' check'} gave no result within "
                                           f"{seconds:.1f} s", timed_out=True, **extra)
        return
    if result is not None:
        results[name] = result


async def _off_loop(fn: Callable[[], T]) -> T:
    """Run a blocking call in a daemon thread: if it hangs (a dead mount), `--once` still ends on time.

    (`asyncio.to_thread` would be waited for by `asyncio.run` at exit.)
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def work() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting check
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name="once-check", daemon=True).start()
    return await future


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
        last = state.get("last_error")
        if error and last and last not in error:  # the daemon's "not connected": say why it is not
            detail = f"{error} (last attempt: {last})"
        if last and state.get("last_error_url") and last in detail:  # after a fallback: not the URL shown first
            detail += f" at {state['last_error_url']}"
    return check("csms", False, detail, kind=kind)


def _clock_check(trusted: bool, source: str | None) -> dict[str, Any]:
    if trusted:
        return check("clock", True, f"clock trusted (source: {source or 'system time sync'})")
    return check("clock", False, "clock not synchronized (no NTP sync and no CSMS time yet)")


KIND_NAMES = {"started": "transaction", "updated": "transaction", "ended": "transaction",
              "security_event": "security event", "notify_event": "NotifyEvent (monitoring)",
              "reservation_status": "reservation status", "meter_values": "meter values"}
"""What each outbox kind is, in the words `--once` and `station status` use."""


def describe_waiting(kinds: dict[str, int]) -> str:
    """'1 transaction message, 2 security event messages': counted by kind, never all called transactions."""
    counts: dict[str, int] = {}
    for kind, n in sorted(kinds.items()):
        name = KIND_NAMES.get(kind, kind)
        counts[name] = counts.get(name, 0) + n
    return ", ".join(f"{n} {name} message{'' if n == 1 else 's'}" for name, n in counts.items() if n)


def _queue_check(depth: int, connected: bool, kinds: dict[str, int] | None = None) -> dict[str, Any]:
    if depth < 0:
        return check("offline_queue", False, "state database unreadable", depth=depth)
    if depth == 0:
        return check("offline_queue", True, "no messages waiting for the CSMS", depth=0)
    what = describe_waiting(kinds) if kinds and sum(kinds.values()) == depth else \
        f"{depth} message{'' if depth == 1 else 's'}"
    return check("offline_queue", connected, f"{what} waiting"
                 + (" (being sent)" if connected else " (CSMS not connected)"), depth=depth, by_kind=kinds)


def _readable_time(text: str) -> str:
    """'2026-12-07T11:41:17.123456+00:00 (why)' → '2026-12-07 11:41:17 UTC (why)': what a technician reads."""
    stamp, sep, rest = text.partition(" ")
    try:
        moment = datetime.fromisoformat(stamp).astimezone(UTC)
    except ValueError:
        return text
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") + sep + rest


def esp32_problem(port: str | None, reason: str, since: str | None, baud: int | None) -> str:
    """A technician's sentence for an ESP32 link that is down: what, where, since when, what to check first."""
    where = f" on {port}" if port else ""
    when = f" since {_readable_time(since)}" if since else ""
    if reason.startswith("cannot open") or reason.startswith("no device"):
        first = ("check the ESP32's USB/serial cable and that STATION_ESP32_PORT names its device "
                 "(ls -l /dev/serial/by-id/)")
    else:
        first = ("the port opens but no valid status frame arrives: check the wiring (TX/RX, ground), the baud "
                 f"rate ({baud or '?'} here, STATION_ESP32_BAUD; the firmware must use the same), the ESP32's power "
                 "(its LED) and that its firmware runs (reset it)")
    return f"ESP32 charge controller{where} not answering{when} ({reason}): {first}"


def _esp32_section(report: dict[str, Any], connectors: list[dict[str, Any]], link_up: bool,
                   firmware: Any, ports: dict[int, str | None] | None = None, baud: int | None = None,
                   started: str | None = None) -> dict[str, Any]:
    report["esp32"] = {
        "link_up": link_up,
        "firmware": firmware,
        "connectors": [
            {k: c.get(k) for k in ("id", "status", "error_code", "pilot", "controller_state", "relay_closed")}
            for c in connectors
        ],
    }
    if link_up:
        return check("esp32", True, "status frames received")
    problems = []
    for c in connectors:
        link = c["controller_link"]
        if not link["up"]:
            problems.append(esp32_problem((ports or {}).get(c["id"]), link["reason"], link.get("since") or started,
                                          baud))
    return check("esp32", False, "; ".join(dict.fromkeys(problems)))


METER_HINT = ("check the RS-485 wiring (A/B), the Modbus address (STATION_METER_UNIT), the baud rate "
              "(STATION_METER_BAUD) and the meter's own display")


def meter_check(meter: dict[str, Any] | None) -> dict[str, Any]:
    """From the daemon's `meter` status: skipped without a meter, failed while it does not answer."""
    if meter is None:
        return check("meter", True, "skipped: no energy meter configured (STATION_METER_PORT empty)", skipped=True)
    stats = meter.get("stats") or {}
    age, limit = meter.get("last_reading_age_s"), meter.get("stale_after_s")
    if meter.get("healthy") and age is not None and limit is not None and age > limit:
        # The daemon still calls it healthy (it waits for 3 failed polls), but the last reading is old.
        return check("meter", False, f"{meter.get('model')} on {meter.get('port')}: no valid reading for {age:.1f} s "
                     f"(expected every {limit:g} s at most); {METER_HINT}",
                     consecutive_failures=stats.get("consecutive_failures", 0))
    if meter.get("healthy"):
        return check("meter", True, f"{meter.get('model')} on {meter.get('port')} answers "
                     f"({stats.get('polls_ok', 0)} good polls)")
    if not stats.get("polls_ok") and not stats.get("polls_failed"):
        # The daemon has just started: no poll has ended yet, so nothing is known to be wrong.
        return check("meter", True, f"{meter.get('model')} on {meter.get('port')}: not polled yet")
    failures = stats.get("consecutive_failures", 0)
    reason = meter.get("last_error") or "no answer"
    return check("meter", False, f"{meter.get('model')} on {meter.get('port')}: no valid reading "
                 f"({failures} failed polls in a row; last: {reason}); energy cannot be billed; {METER_HINT}",
                 consecutive_failures=failures)


def _from_daemon_status(report: dict[str, Any], results: dict[str, dict[str, Any]], status: dict[str, Any],
                        baud: int | None = None) -> None:
    _ocpp_section(report, status.get("ocpp", {}), [])
    connectors = status.get("connectors", [])
    links = status.get("esp32", {})
    started = None
    if isinstance(status.get("uptime_s"), (int, float)):
        started = datetime.fromtimestamp(time.time() - status["uptime_s"], UTC).isoformat() + " (the daemon's start)"
    results["esp32"] = _esp32_section(
        report, connectors, all(c["controller_link"]["up"] for c in connectors),
        next((v.get("firmware") for v in links.values() if v.get("firmware")), None),
        ports={int(cid): v.get("port") for cid, v in links.items()}, baud=baud, started=started)
    results["meter"] = meter_check(status.get("meter"))
    clock = status.get("clock", {})
    results["clock"] = _clock_check(bool(clock.get("trusted")), clock.get("source"))
    results["offline_queue"] = _queue_check(int(status.get("outbox_depth", -1)),
                                            bool(status.get("ocpp", {}).get("connected")), status.get("outbox_by_kind"))
    store = status.get("store", {})
    if not store.get("healthy", True):
        results["state_store"] = check("state_store", False, f"state database: {store.get('last_error')}")


async def _daemon_csms(client: Any, report: dict[str, Any], status: dict[str, Any], seconds: float) -> dict[str, Any]:
    from station.ipc.client import DaemonUnavailable, IpcError

    try:
        probe = await client.probe(timeout=seconds)
    except (DaemonUnavailable, IpcError) as exc:
        _ocpp_section(report, status.get("ocpp", {}), [])
        return check("csms", False, f"the daemon's CSMS probe failed: {exc}", kind="unreachable")
    state = probe.get("status") or status.get("ocpp", {})
    messages = probe.get("messages", [])
    _ocpp_section(report, state, messages)
    return _csms_check(state, messages, probe.get("error"))


async def _standalone(settings: Settings, report: dict[str, Any], results: dict[str, dict[str, Any]],
                      budget: Budget) -> None:
    """Own CSMS connection (primary, then fallback), direct ESP32 and meter reads; everything closed after."""
    from station.controller.link import Esp32Link
    from station.core.clock import Clock
    from station.core.station import StationCore
    from station.core.store import Store

    # Loaded before any check starts: under load these imports take a second or more, which must
    # come out of the whole run's reserve, not out of the CSMS check's share.
    import station.ocpp.client  # noqa: F401
    import station.ocpp.v16  # noqa: F401
    import station.ocpp.v201  # noqa: F401

    core = StationCore(store=Store(":memory:"), clock=Clock(), connector_ids=range(1, settings.connectors + 1))
    ports = [p.strip() for p in settings.esp32_port.split(",") if p.strip()]
    links = {
        cid: Esp32Link(ports[min(cid, len(ports)) - 1], baud=settings.esp32_baud,
                       on_status=lambda s, cid=cid: core.on_controller_status(cid, s),
                       on_link=lambda up, why, cid=cid: core.on_controller_link(cid, up, why),
                       poll_interval=0.1, link_timeout=settings.esp32_link_timeout_seconds)
        for cid in core.connectors
    }
    link_tasks = [asyncio.create_task(link.run()) for link in links.values()]
    esp32_settled = asyncio.Event()

    async def esp32() -> dict[str, Any]:
        waited = budget.share(ESP32_WAIT_S)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(waited):
                    while not all(c.link_up for c in core.connectors.values()):
                        await asyncio.sleep(0.05)
        finally:
            esp32_settled.set()
        connectors = [c.to_json() for c in core.connectors.values()]
        for c in connectors:  # "not connected yet" says nothing to a technician: say what this check saw
            link = c["controller_link"]
            if not link["up"] and link["reason"] == "not connected yet":
                port = links[c["id"]].port
                link["reason"] = (f"no valid status frame within {waited:.1f} s" if Path(port).exists()
                                  else f"no device {port}")
                link["since"] = None
        return _esp32_section(report, connectors, all(link.link_up for link in links.values()),
                              next((link.firmware for link in links.values() if link.firmware), None),
                              ports={cid: link.port for cid, link in links.items()}, baud=settings.esp32_baud)

    csms_seconds = budget.share()
    try:
        await asyncio.gather(
            _bounded(results, "esp32", esp32, budget.share(ESP32_WAIT_S + 0.5)),
            _bounded(results, "meter", lambda: _standalone_meter(settings, budget.share(METER_WAIT_S)),
                     budget.share(METER_WAIT_S + 0.5)),
            _bounded(results, "offline_queue", lambda: _off_loop(lambda: _queue_check(*_stored_queue(settings))),
                     budget.share(LOCAL_CHECK_S)),
            _standalone_csms(settings, core, report, results, csms_seconds, esp32_settled),
        )
    finally:
        for task in link_tasks:
            task.cancel()
        await asyncio.gather(*link_tasks, return_exceptions=True)
        results["clock"] = _clock_check(core.clock.trusted, core.clock.trust_source)
        await core.close()


async def _standalone_meter(settings: Settings, seconds: float) -> dict[str, Any]:
    if not settings.meter_port:
        return meter_check(None)
    from station.meter.client import MeterReadError, ModbusMeter
    from station.meter.registers import MAPS

    meter = ModbusMeter(settings.meter_port, register_map=MAPS[settings.meter_model], unit=settings.meter_unit,
                        baud=settings.meter_baud, on_reading=lambda _: None, retries=1,
                        timeout=max(0.2, min(1.0, seconds / 3)))
    where = f"{settings.meter_model} on {settings.meter_port}"
    try:
        reading = await meter.probe()
    except MeterReadError as exc:
        return check("meter", False, f"{where}: no valid reading ({exc}); energy cannot be billed")
    return check("meter", True, f"{where} answers: {reading.energy_import_wh:.0f} Wh imported",
                 energy_wh=reading.energy_import_wh)


async def _standalone_csms(settings: Settings, core: Any, report: dict[str, Any],
                           results: dict[str, dict[str, Any]], seconds: float, esp32_settled: asyncio.Event) -> None:
    """BootNotification, StatusNotification(s) and a Heartbeat on a connection of our own, within `seconds`."""
    deadline = time.monotonic() + seconds
    from dataclasses import replace

    from station.ocpp.client import OcppClient, link_params
    from station.ocpp.connection import LinkConfigError, OcppLink, public_url

    # Two connection attempts at least fit in the share (primary and fallback, or one retry).
    open_timeout = max(0.5, min(4.0, seconds / 2.2))
    try:
        params = replace(link_params(settings), fallback_after=1, backoff_min=0.1, backoff_max=0.3,
                         open_timeout=open_timeout)
        client = OcppClient(params, core, heartbeat_seconds=settings.heartbeat_seconds)
    except LinkConfigError as exc:
        results["config"] = check("config", False, str(exc))
        return
    finished = asyncio.Event()
    error: list[str] = []
    step = ["connecting"]

    async def one_shot(ws: Any, version: str) -> None:
        from station.ocpp.v16 import V16Session
        from station.ocpp.v201 import V201Session

        session = V201Session(client, ws) if version == "201" else V16Session(client, ws)
        reader = asyncio.create_task(session.start())
        try:
            step[0] = "waiting for the BootNotification response"
            wait = max(0.1, deadline - time.monotonic())
            try:
                response = await session.request("BootNotification", session.boot_payload(), timeout=wait)
            except TimeoutError:
                raise TimeoutError(f"no BootNotification response within {wait:.1f} s") from None
            session.trust_time(response.get("currentTime"))
            if response.get("status") == "Accepted":
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await esp32_settled.wait()
                step[0] = "sending StatusNotification"
                for conn in core.connectors.values():
                    await session.send_status(conn, force=True)
                step[0] = "waiting for the Heartbeat response"
                await session.send_heartbeat(raise_errors=True)
        except Exception as exc:  # noqa: BLE001 - reported in the check
            error.append(f"{exc.__class__.__name__}: {exc}")
        finished.set()
        try:
            # Keep the connection open until the state is read: --once closes it itself, cleanly.
            await asyncio.Event().wait()
        finally:
            reader.cancel()

    from station.trust.credentials import Credentials

    # What the daemon uses: a password, certificate or profile the CSMS set, read without writing anything.
    credentials = Credentials(settings.state_dir, params, read_only=True)
    client.link = OcppLink(params, one_shot, credentials=credentials)
    link_task = asyncio.create_task(client.link.run())
    attempts_allowed = 4  # primary, fallback, and one retry of each
    timed_out = False
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            while not finished.is_set() and client.link.state.failed_attempts < attempts_allowed:
                kind = client.link.state.last_error_kind
                if kind is not None and kind.value == "auth_failed":
                    break
                await asyncio.sleep(0.05)
    except TimeoutError:
        timed_out = True
    state = client.link.state.as_dict()
    state["version"] = state.get("version") or client.link.state.preferred_version
    state["url"] = state.get("url") or public_url(client.link.url_for(state["version"]) or "") or None
    messages = [e.to_json() for e in client.exchanges]
    _ocpp_section(report, state, messages)
    report["ocpp"]["connected"] = bool(messages)
    if timed_out and not error:
        attempts = client.link.state.failed_attempts
        last = state.get("last_error")
        detail = (f"no answer from {state['url'] or 'the CSMS'} within {seconds:.1f} s ({step[0]}; "
                  f"{attempts} failed connection attempt(s), {open_timeout:.1f} s each at most"
                  + (f"; last: {last}" if last else "") + "): a firewall or proxy may drop the traffic")
        results["csms"] = check("csms", False, detail, kind=state.get("last_error_kind") or "unreachable",
                                timed_out=True)
    else:
        results["csms"] = _csms_check(state, messages, error[0] if error else None)
    # Recorded first, closed after: a slow close (a half-open TCP connection) must not lose the verdict.
    link_task.cancel()
    await asyncio.wait([link_task], timeout=0.5)


def _stored_queue(settings: Settings) -> tuple[int, bool, dict[str, int]]:
    """(depth, connected=False, by kind) of the state database's queue; depth -1 when it cannot be read."""
    if not settings.db_path.exists():
        return 0, False, {}
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True)) as db:
            kinds = {str(k): int(n) for k, n in
                     db.execute("SELECT kind, COUNT(*) FROM outbox WHERE parked=0 GROUP BY kind")}
    except sqlite3.Error:
        return -1, False, {}
    return sum(kinds.values()), False, kinds


def _disk_check(state_dir: Path) -> dict[str, Any]:
    probe = state_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb = usage.free // (1024 * 1024)
    ok = usage.free >= MIN_FREE_BYTES
    return check("disk", ok, f"{free_mb} MB free in {probe}" + ("" if ok else " (below 100 MB)"), free_mb=free_mb)


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
        problems += pi_power.describe(value)
    except (OSError, subprocess.SubprocessError, AttributeError, ValueError):
        problems.append("vcgencmd get_throttled unavailable")
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=3).stdout
        if re.search(r"[Uu]nder-?voltage", log):
            problems.append("under-voltage reported in the kernel log")
    except (OSError, subprocess.SubprocessError):
        pass
    return check("power", not problems, "; ".join(problems) or f"{model}: no throttling, no under-voltage")
