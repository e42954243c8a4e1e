"""Problem flags a technician should see at a glance, derived from the daemon's status.

Computed here (not in the page) so that /status carries them for monitoring too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

UNDERVOLTAGE_V = 207.0
"""230 V − 10 %: the lower bound of EN 50160 supply voltage."""


def meter_problem(status: dict[str, Any]) -> str | None:
    """Why the energy meter is a problem now, or None (no meter, answering, or no verdict yet)."""
    health = status.get("meter_health") or {}
    if health.get("healthy") is not False:
        return None
    meter = status.get("meter") or {}
    where = f" {meter.get('model')} on {meter.get('port')}" if meter.get("port") else ""
    return (f"energy meter{where} not answering since {_time_of_day(health.get('since'))} ({health.get('reason')}): "
            "energy cannot be measured for billing")


def _time_of_day(stamp: Any) -> str:
    """'01:13:17 UTC' for an ISO 8601 time: a technician reads the time, the date is today's."""
    try:
        return datetime.fromisoformat(str(stamp)).astimezone(UTC).strftime("%H:%M:%S UTC")
    except ValueError:
        return str(stamp)


def problems(status: dict[str, Any]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []

    def flag(code: str, message: str, severity: str = "error") -> None:
        found.append({"code": code, "severity": severity, "message": message})

    ocpp = status.get("ocpp") or {}
    connected = ocpp.get("connected") if "connected" in ocpp else status.get("csms_online")
    if not connected:
        detail = ocpp.get("last_error") or "not connected"
        flag("csms_unreachable", f"CSMS unreachable: {detail}")
    clock = status.get("clock") or {}
    if clock and not clock.get("trusted"):
        flag("clock_not_synced", "clock not synchronized (no NTP and no time from the CSMS yet)", "warning")
    parked, held = ocpp.get("parked_messages") or 0, ocpp.get("held_messages") or 0
    if parked:
        flag("outbox_parked", f"{parked} message(s) refused by the CSMS are parked (kept, not sent): "
             "see why with station outbox (or GET /outbox/parked); release them once the CSMS side is fixed",
             "warning")
    if held:
        flag("outbox_held", f"{held} message(s) wait for the other OCPP version (their transaction began on it); "
             "the station returns to it when it can", "warning")
    meter = meter_problem(status)
    if meter:
        flag("meter_unhealthy", meter)
    store = status.get("store") or {}
    if store and store.get("healthy") is False:
        flag("store_unhealthy", f"state database cannot be written: {store.get('last_error') or 'unknown error'}")
    for cid, esp in sorted((status.get("esp32") or {}).items()):
        warnings = (esp or {}).get("warnings") or []
        if warnings:
            flag("esp32_unexpected_values", f"connector {cid}: the ESP32 sends values outside the documented "
                 f"protocol ({'; '.join(warnings)}); informational fields only, frames still accepted", "warning")
    for conn in status.get("connectors") or []:
        cid = conn.get("id")
        link = conn.get("controller_link") or {}
        if not link.get("up"):
            flag("esp32_link_down", f"connector {cid}: ESP32 link down ({link.get('reason') or 'no reason given'})")
        elif conn.get("status") == "Faulted":
            flag("connector_faulted", f"connector {cid} faulted: {conn.get('error_code')} {conn.get('info') or ''}".strip())
        volts = ((conn.get("meter") or {}).get("voltage_v")) or []
        low = [v for v in volts if isinstance(v, (int, float)) and 0 < v < UNDERVOLTAGE_V]
        if low:
            # A phase at 0 V is taken as not wired (single-phase supply on a three-phase meter).
            flag("undervoltage", f"connector {cid}: supply voltage {min(low):.0f} V is below {UNDERVOLTAGE_V:.0f} V")
    return found
