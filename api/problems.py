"""Problems a technician should see at a glance, derived from the daemon's status, in the station's terms.

Computed here (not in the page) so that /status carries them for monitoring too. Each problem says
what is wrong (`what`), where (`where`: port, Modbus address, URL without credentials), since when
(`since`, UTC time of day) and the first thing to check (`check`); `message` is the four in one
line. The daemon's raw error text (pymodbus messages, `[Errno 111]`, ...) is in its log and in the
raw fields of /status, never in a problem: a technician acts on the station's words, a developer
reads the log.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

UNDERVOLTAGE_V = 207.0
"""230 V − 10 %: the lower bound of EN 50160 supply voltage."""

VERSION_LABELS = {"201": "2.0.1", "16": "1.6J"}


def version_label(version: Any) -> str:
    """The OCPP version as the page, /ready and the docs spell it: 2.0.1 or 1.6J."""
    return VERSION_LABELS.get(str(version), str(version)) if version else "?"


def public_url(url: Any) -> str:
    """The URL without credentials, query or fragment (where a password or token could hide)."""
    if not url:
        return "no URL configured"
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _time_of_day(stamp: Any) -> str:
    """'01:13:17 UTC' for an ISO 8601 time: a technician reads the time, the date is today's."""
    try:
        return datetime.fromisoformat(str(stamp)).astimezone(UTC).strftime("%H:%M:%S UTC")
    except ValueError:
        return str(stamp)


# --- the energy meter --------------------------------------------------------------------------
def _meter_what_and_check(reason: str, meter: dict[str, Any]) -> tuple[str, str]:
    text = reason.lower()
    if "port unavailable" in text or "port closed" in text or "cannot open" in text:
        return ("energy meter unreachable: the RS-485 adapter's serial port cannot be opened",
                "that the USB RS-485 adapter is plugged in and STATION_METER_PORT names it "
                "(ls -l /dev/serial/by-id/)")
    if "exception" in text and "response" in text:
        return ("energy meter answers with Modbus errors: it does not have the registers of the configured model",
                f"that the meter is an {meter.get('model') or '?'} (STATION_METER_MODEL), then its Modbus address")
    return ("energy meter not answering on the RS-485 bus",
            "the RS-485 wiring (adapter A to meter A, B to B: swapped A/B is the most common fault), "
            f"the meter's Modbus address ({meter.get('unit') or 'STATION_METER_UNIT'}) and baud rate "
            f"({meter.get('baud') or 'STATION_METER_BAUD'}) on the meter's own display, and that the display is on")


def _meter_where(meter: dict[str, Any]) -> str | None:
    if not meter:
        return None
    parts = [f"{meter.get('model') or 'meter'} on {meter.get('port') or '?'}"]
    if meter.get("unit") is not None:
        parts.append(f"Modbus address {meter['unit']}")
    if meter.get("baud") is not None:
        parts.append(f"{meter['baud']} baud")
    return ", ".join(parts)


def meter_problem(status: dict[str, Any]) -> str | None:
    """Why the energy meter is a problem now, or None (no meter, answering, or no verdict yet)."""
    found = _meter(status)
    return found["message"] if found else None


def _meter(status: dict[str, Any]) -> dict[str, str] | None:
    health = status.get("meter_health") or {}
    if health.get("healthy") is not False:
        return None
    meter = status.get("meter") or {}
    what, check = _meter_what_and_check(str(health.get("reason") or ""), meter)
    return _problem("meter_unhealthy", f"{what}: energy cannot be measured for billing", _meter_where(meter),
                    _time_of_day(health.get("since")) if health.get("since") else None, check)


# --- the CSMS ------------------------------------------------------------------------------------
def csms_trouble(ocpp: dict[str, Any]) -> tuple[str, str]:
    kind = ocpp.get("last_error_kind")
    error = str(ocpp.get("last_error") or "")
    if kind == "auth_failed":
        return ("the CSMS refuses the station's credentials (HTTP 401/403)",
                "that the station id (OCPP_STATION_NAME) and password are the ones the operator registered")
    if kind == "tls":
        return ("the secure connection (TLS) to the CSMS fails: certificate not accepted",
                "the station's clock (a wrong date makes certificates invalid), then the CA bundle "
                "(STATION_CA_BUNDLE) with the operator")
    if kind == "refused":
        return ("the CSMS turns the connection down (wrong path or OCPP version)",
                "the CSMS URL's path and the OCPP version with the operator (OCPP_201_URL / OCPP_16_URL)")
    if kind == "lost":
        return ("the connection to the CSMS dropped; reconnecting",
                "the station's internet connection (router, mobile signal)")
    if "refused" in error.lower() or "111" in error:
        return ("the CSMS server refuses connections: nothing answers at that address and port",
                "with the operator that the CSMS is running, and the host and port of the URL")
    if kind == "unreachable" or error:
        return ("the CSMS cannot be reached",
                "the station's internet connection (router, mobile signal, DNS), then the CSMS URL")
    return ("not connected to the CSMS yet", "the station's internet connection and the CSMS URL")


def _csms_where(ocpp: dict[str, Any]) -> str:
    where = public_url(ocpp.get("url"))
    if ocpp.get("version"):
        where += f" (OCPP {version_label(ocpp['version'])})"
    if ocpp.get("failed_attempts"):
        where += f", {ocpp['failed_attempts']} attempt(s) failed"
    return where


# --- the charge controller (ESP32) ---------------------------------------------------------------
def link_down(reason: str, port: str) -> tuple[str, str]:
    text = reason.lower()
    if "cannot open" in text:
        return ("charge controller (ESP32) unreachable: its serial port cannot be opened",
                f"the USB cable between the Pi and the ESP32, and that {port} exists (STATION_ESP32_PORT)")
    if "no valid" in text or "not connected yet" in text:
        return ("charge controller (ESP32) sends no status: the port is open but nothing valid arrives",
                "that the ESP32 is powered and running (its LED), the serial cable, and the baud rate "
                "(STATION_ESP32_BAUD, 115200 by default)")
    return ("charge controller (ESP32) link lost", "the USB cable between the Pi and the ESP32, and the ESP32's power")


CONTROLLER_FAULTS = {
    # STATE codes of the field protocol (docs/hardware.md, station/controller/protocol.py)
    "FAULT_HARD": ("the charge controller reports a hard fault and opened the relay "
                   "(pilot error, power board or residual current device)",
                   "unplug the vehicle; check the residual current device (RCD) and the power board's LED in the "
                   "cabinet; if the fault stays without a vehicle, power-cycle the charge controller"),
    "HARDFAULT_END": ("a fault ended the session; the controller waits for the cable to be unplugged",
                      "unplug the cable; the connector returns to Available by itself"),
}
PILOT_FAULTS = {
    "E": ("control pilot error (state E): the pilot line is shorted or the vehicle reports an error",
          "the charging cable and plug for damage or water, then unplug and plug in again"),
    "F": ("the charge controller signals 'not available' on the pilot (state F)",
          "the charge controller's power and its LED; power-cycle it if it stays"),
}
POWER_BOARD_FAULT = ("the power board reports a fault (PB≠0): contactor or supply problem",
                     "the supply breaker and the contactor in the cabinet, then the power board's status LED")


def connector_fault(conn: dict[str, Any]) -> tuple[str, str] | None:
    """(what, first check) of a faulted connector whose controller answers; None if not faulted that way."""
    if conn.get("status") != "Faulted":
        return None
    state = conn.get("controller_state")
    if state in CONTROLLER_FAULTS:
        return CONTROLLER_FAULTS[state]
    if conn.get("pilot") in PILOT_FAULTS:
        return PILOT_FAULTS[conn["pilot"]]
    if conn.get("error_code") == "PowerSwitchFailure":
        return POWER_BOARD_FAULT
    return ("connector faulted", "the charge controller's LED and the cabinet's breakers")


def store_trouble(error: str) -> tuple[str, str]:
    """(what, first check) of a state database that cannot be written, from the daemon's error."""
    text = error.lower()
    if "readonly" in text or "read-only" in text:
        return ("the state database is read-only (the filesystem was remounted read-only?)",
                "mount | grep /var/lib/station for 'ro', then dmesg for SSD errors")
    if "full" in text or "no space" in text:
        return ("the disk is full", "df -h /var/lib/station and what fills it (logs, flight recorder)")
    return ("the state database cannot be written", "free disk space (df -h /var/lib/station), then the SSD "
            "(dmesg for I/O errors)")


# --- assembly ------------------------------------------------------------------------------------
def _problem(code: str, what: str, where: str | None, since: str | None, check: str,
             severity: str = "error") -> dict[str, str]:
    line = what[0].upper() + what[1:]
    if where:
        line += f" — {where}"
    if since:
        line += f", since {since}"
    line += f". First check: {check}."
    found = {"code": code, "severity": severity, "message": line, "what": what, "check": check}
    if where:
        found["where"] = where
    if since:
        found["since"] = since
    return found


def problems(status: dict[str, Any], first_seen: dict[str, str] | None = None,
             now: datetime | None = None) -> list[dict[str, str]]:
    """The problems in `status`. `first_seen` (kept by the caller across calls) dates those the daemon
    gives no time for: the first time this API saw them."""
    found: list[dict[str, str]] = []
    stamp = _time_of_day((now or datetime.now(UTC)).isoformat())
    memory = first_seen if first_seen is not None else {}
    current: set[str] = set()

    def seen(key: str) -> str:
        current.add(key)
        return memory.setdefault(key, stamp)

    ocpp = status.get("ocpp") or {}
    connected = ocpp.get("connected") if "connected" in ocpp else status.get("csms_online")
    if not connected:
        what, check = csms_trouble(ocpp)
        found.append(_problem("csms_unreachable", what, _csms_where(ocpp), seen("csms"), check))
    clock = status.get("clock") or {}
    if clock and not clock.get("trusted"):
        found.append(_problem("clock_not_synced", "clock not synchronized (no NTP and no time from the CSMS yet)",
                              None, seen("clock"), "the network (NTP needs internet); the CSMS sets the time when "
                              "it accepts the station", "warning"))
    parked, held = ocpp.get("parked_messages") or 0, ocpp.get("held_messages") or 0
    if parked:
        found.append(_problem("outbox_parked", f"{parked} message(s) refused by the CSMS are parked (kept, not sent)",
                              None, seen("parked"), "why, with station outbox (or GET /outbox/parked); release them "
                              "once the CSMS side is fixed", "warning"))
    if held:
        found.append(_problem("outbox_held", f"{held} message(s) wait for the other OCPP version "
                              "(their transaction began on it)", None, seen("held"),
                              "nothing: the station returns to that version when it can", "warning"))
    meter = _meter(status)
    if meter:
        found.append(meter)
    store = status.get("store") or {}
    if store and store.get("healthy") is False:
        waiting = store.get("unsaved_events") or 0
        what, check = store_trouble(str(store.get("last_error") or ""))
        found.append(_problem("store_unhealthy", f"{what}: sessions are kept in memory only ({waiting} event(s) "
                              "waiting)", "/var/lib/station", seen("store"), check))
    for cid, esp in sorted((status.get("esp32") or {}).items()):
        warnings = (esp or {}).get("warnings") or []
        if warnings:
            found.append(_problem("esp32_unexpected_values", f"connector {cid}: the ESP32 sends values outside the "
                                  f"documented protocol ({'; '.join(warnings)}); informational fields only, frames "
                                  "still accepted", (esp or {}).get("port"), seen(f"esp32-values-{cid}"),
                                  "the ESP32 firmware version against docs/hardware.md", "warning"))
    for conn in status.get("connectors") or []:
        cid = conn.get("id")
        link = conn.get("controller_link") or {}
        port = ((status.get("esp32") or {}).get(str(cid)) or {}).get("port") or "the ESP32 port"
        if not link.get("up"):
            what, check = link_down(str(link.get("reason") or ""), port)
            since = _time_of_day(link["since"]) if link.get("since") else seen(f"link-{cid}")
            found.append(_problem("esp32_link_down", f"connector {cid}: {what}", port, since, check))
        else:
            fault = connector_fault(conn)
            if fault is not None:
                since = _time_of_day(conn["status_since"]) if conn.get("status_since") else seen(f"fault-{cid}")
                found.append(_problem("connector_faulted", f"connector {cid}: {fault[0]}",
                                      f"charge controller on {port}", since, fault[1]))
        volts = ((conn.get("meter") or {}).get("voltage_v")) or []
        low = [v for v in volts if isinstance(v, (int, float)) and 0 < v < UNDERVOLTAGE_V]
        if low:
            # A phase at 0 V is taken as not wired (single-phase supply on a three-phase meter).
            found.append(_problem("undervoltage", f"connector {cid}: supply voltage {min(low):.0f} V is below "
                                  f"{UNDERVOLTAGE_V:.0f} V", None, seen(f"volts-{cid}"),
                                  "the supply at the meter's terminals and other large loads on the site"))
    for key in set(memory) - current:
        del memory[key]
    return found
