"""One line per thing that happened to the station, for the status page's event list.

The daemon's event stream carries more than happenings: internal bookkeeping (`message_queued`),
one `csms` event per link state *and* per boot outcome (a reconnect is two events), a connector
event when only its reservation or limit changed, the offline queue's depth on every message.
The narrator keeps what it last told and says something only when the station's state changed:
a session started or ended, a connector's status, a link (CSMS, ESP32, meter, daemon) going down
or coming back, the offline queue starting or finishing. Everything else gets no text (None).
It runs once in the API (api/daemon_link.py) so every page and /events/recent tell the same story.
"""

from __future__ import annotations

from typing import Any

from api.problems import connector_fault, csms_trouble, link_down, public_url, version_label


STATUS_WORDS = {
    "Available": "free, no vehicle",
    "Preparing": "vehicle plugged in, no session yet",
    "Occupied": "vehicle plugged in, no session yet",
    "SuspendedEV": "the vehicle paused charging",
    "SuspendedEVSE": "the station holds charging back (limit or authorization)",
    "Finishing": "session over, the vehicle may be unplugged",
    "Reserved": "reserved",
    "Unavailable": "out of service",
}
"""OCPP statuses (the names the CSMS sees) with what they mean at the station."""


class Narrator:
    def __init__(self) -> None:
        self.csms_connected: bool | None = None
        self.connector_status: dict[Any, str] = {}
        self.link_up: dict[Any, bool] = {}
        self.meter_healthy: bool | None = None
        self.queue_empty = True

    def text(self, event: dict[str, Any]) -> str | None:
        kind = event.get("kind")
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        handler = getattr(self, f"_{kind}", None)
        return handler(data) if handler is not None else None

    def _connector(self, d: dict[str, Any]) -> str | None:
        conn = d.get("connector") or {}
        cid, status = d.get("connector_id"), conn.get("status")
        if status is None or self.connector_status.get(cid) == status:
            return None  # a reservation or a limit changed, not the status
        self.connector_status[cid] = status
        fault = connector_fault(conn) if (conn.get("controller_link") or {}).get("up") else None
        if fault is not None:
            return f"connector {cid} faulted: {fault[0]}"
        words = STATUS_WORDS.get(status)
        return f"connector {cid}: {status} ({words})" if words else f"connector {cid}: {status}"

    def _transaction(self, d: dict[str, Any]) -> str | None:
        tx = d.get("transaction") or {}
        cid = tx.get("connector_id")
        if d.get("event") == "started":
            return f"session started on connector {cid} (token {tx.get('id_token') or '–'})"
        if d.get("event") == "ended":
            energy = tx.get("energy_wh")
            kwh = f", {energy / 1000:.2f} kWh" if isinstance(energy, (int, float)) else ""
            return f"session ended on connector {cid} ({tx.get('stop_reason') or d.get('trigger') or 'ended'}{kwh})"
        return None  # periodic meter values and charging-state updates: the connector rows tell those

    def _csms(self, d: dict[str, Any]) -> str | None:
        connected = bool(d.get("connected"))
        if connected == self.csms_connected or (self.csms_connected is None and not connected
                                                 and not d.get("last_error")):
            return None  # the boot outcome of the same connection, or another failed attempt while down
        self.csms_connected = connected
        if connected:
            return f"CSMS connected: OCPP {version_label(d.get('version'))} to {public_url(d.get('url'))}"
        return f"CSMS not connected: {csms_trouble(d)[0]}"

    def _controller_link(self, d: dict[str, Any]) -> str | None:
        cid, up = d.get("connector_id"), bool(d.get("up"))
        if self.link_up.get(cid) == up:
            return None
        self.link_up[cid] = up
        if up:
            return f"charge controller (ESP32) of connector {cid} answers"
        return f"connector {cid}: {link_down(str(d.get('reason') or ''), 'the ESP32 port')[0]}"

    def _meter_health(self, d: dict[str, Any]) -> str | None:
        healthy = bool(d.get("healthy"))
        if healthy == self.meter_healthy:
            return None
        self.meter_healthy = healthy
        return "energy meter answers again" if healthy else "energy meter stopped answering"

    def _outbox(self, d: dict[str, Any]) -> str | None:
        empty = not d.get("depth")
        if empty == self.queue_empty:
            return None
        self.queue_empty = empty
        return "all queued messages delivered to the CSMS" if empty else "messages for the CSMS queued (not yet confirmed)"

    def _reservation(self, d: dict[str, Any]) -> str | None:
        where = f"connector {d['connector_id']}" if d.get("connector_id") is not None else "any connector"
        return f"reservation {d.get('reservation_id')} {str(d.get('status') or '').lower()} on {where}"

    def _daemon(self, d: dict[str, Any]) -> str | None:
        return "station daemon reachable" if d.get("reachable") else f"station daemon unreachable: {d.get('error') or ''}"
