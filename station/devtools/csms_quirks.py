"""CitrineOS's quirks, reproduced by the dev CSMS: `station dev-csms --quirks citrineos`.

A real backend is imperfect, and the station must stay correct beside it (issue 22, docs/interop.md).
CitrineOS 1.8.3 showed four behaviours a station meets in the field; `CitrineQuirksCsms` is the dev
CSMS with each of them, so the station's handling of them is tested on every run without CitrineOS:

- `call-cache`: CitrineOS's router keeps ONE in-flight call per station in an in-memory cache
  (`maxCallLengthSeconds`, 30 s). A station CALL that arrives while the slot is taken is answered
  CALLERROR RpcFrameworkError "Call already in progress"; a CSMS call waits for the slot. A call
  the CSMS never answers holds the slot until it expires: the 30 s stall.
- `first-status-dropped`: the first StatusNotification of a station the CSMS has not stored yet
  gets no answer at all (its handler fails before the station row exists) and holds the slot.
- `security-event-16-error`: OCPP 1.6 SecurityEventNotification is answered CALLERROR InternalError.
- `request-id-demanded`: OCPP 2.0.1 LogStatusNotification / FirmwareStatusNotification without
  `requestId` is answered CALLERROR InternalError, though OCPP 2.0.1 makes it optional for a notification
  triggered while no upload or update is ongoing (status Idle).

Every time a quirk acts it is recorded in `hits` (station, quirk, action), for tests and the
interop table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import structlog

from station.devtools.csms import DevCsms, _StationSession

log = structlog.get_logger("station.devtools.csms")

QUIRKS = ("call-cache", "first-status-dropped", "security-event-16-error", "request-id-demanded")
CALL_CACHE_SECONDS = 30.0
"""CitrineOS's `maxCallLengthSeconds` in its shipped configuration."""


@dataclass(frozen=True)
class QuirkHit:
    """One time a quirk acted on a station's message."""

    station_id: str
    quirk: str
    action: str
    unique_id: str
    at: datetime


@dataclass
class _Slot:
    """The one call per station CitrineOS's cache tracks: whose it is and until when it is held."""

    owner: str  # "station" (a call it received) or "csms" (a call it sent)
    action: str
    unique_id: str
    until: float  # time.monotonic()


class _QuirkSession(_StationSession):
    csms: CitrineQuirksCsms

    def __init__(self, csms: DevCsms, station_id: str, ws: Any, version: str) -> None:
        super().__init__(csms, station_id, ws, version)
        self._slot: _Slot | None = None

    def _held(self) -> _Slot | None:
        if self._slot is not None and time.monotonic() >= self._slot.until:
            log.info(f"csms quirk: call cache entry {self._slot.action} {self._slot.unique_id} of {self.id} expired")
            self._slot = None
        return self._slot

    async def route_message(self, raw_msg: Any) -> None:
        try:
            msg = json.loads(raw_msg)
        except (TypeError, ValueError, UnicodeDecodeError):
            msg = None
        is_call = (isinstance(msg, list) and len(msg) == 4 and msg[0] == 2 and isinstance(msg[1], str)
                   and isinstance(msg[2], str) and isinstance(msg[3], dict))
        if not is_call:
            slot = self._held()
            if slot is not None and slot.owner == "csms" and isinstance(msg, list) and len(msg) > 1 and msg[1] == slot.unique_id:
                self._slot = None  # the station answered our call
            await super().route_message(raw_msg)
            return
        assert isinstance(msg, list)
        unique_id, action, payload = msg[1], msg[2], msg[3]
        quirks = self.csms.quirks
        slot = self._held()
        if "call-cache" in quirks and slot is not None:
            self._log_frame("in", action, msg, unique_id, raw_msg)
            self.csms._hit(self.id, "call-cache", action, unique_id)
            await self._refuse(action, unique_id, "RpcFrameworkError", "Call already in progress", {})
            return
        if "first-status-dropped" in quirks and action == "StatusNotification" and self.id not in self.csms.stored_stations:
            self.csms.stored_stations.add(self.id)
            self._log_frame("in", action, msg, unique_id, raw_msg)
            self.csms._hit(self.id, "first-status-dropped", action, unique_id)
            if "call-cache" in quirks:
                self._slot = _Slot("station", action, unique_id, time.monotonic() + self.csms.call_cache_seconds)
            return  # never answered
        if "security-event-16-error" in quirks and self.version == "16" and action == "SecurityEventNotification":
            self._log_frame("in", action, msg, unique_id, raw_msg)
            self.csms._hit(self.id, "security-event-16-error", action, unique_id)
            await self._refuse(action, unique_id, "InternalError", "Call failed", {})
            return
        if ("request-id-demanded" in quirks and self.version == "201" and action in ("LogStatusNotification", "FirmwareStatusNotification")
                and "requestId" not in payload):
            self._log_frame("in", action, msg, unique_id, raw_msg)
            self.csms._hit(self.id, "request-id-demanded", action, unique_id)
            await self._refuse(action, unique_id, "InternalError", "Call failed", {"details": "requestId is undefined"})
            return
        await super().route_message(raw_msg)

    async def _refuse(self, action: str, unique_id: str, code: str, description: str, details: dict[str, Any]) -> None:
        self._actions_of_pending[unique_id] = action  # names the action in the frame log
        await self._send_error(unique_id, code, description, details)

    async def request(self, action: str, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """A CSMS call takes the station's cache slot, waiting (as CitrineOS's retry queue does) while it is held."""
        if "call-cache" not in self.csms.quirks:
            return await super().request(action, payload, **kwargs)  # type: ignore[no-any-return]
        while self._held() is not None:
            await asyncio.sleep(0.05)
        slot = self._slot = _Slot("csms", action, "", time.monotonic() + self.csms.call_cache_seconds)
        try:
            return await super().request(action, payload, **kwargs)  # type: ignore[no-any-return]
        finally:
            if self._slot is slot:
                self._slot = None

    async def _send(self, message: str, parsed: list[Any] | None = None) -> None:
        if parsed is None:
            with contextlib.suppress(ValueError):
                parsed = json.loads(message)
        slot = self._slot
        if slot is not None and slot.owner == "csms" and not slot.unique_id and parsed and parsed[0] == 2:
            slot.unique_id = str(parsed[1])  # the CSMS call that holds the slot is this one
        await super()._send(message, parsed)


class CitrineQuirksCsms(DevCsms):
    """The dev CSMS behaving like CitrineOS 1.8.3 where that matters to a station (module docstring)."""

    session_type = _QuirkSession

    def __init__(self, *args: Any, quirks: Collection[str] = QUIRKS, call_cache_seconds: float = CALL_CACHE_SECONDS,
                 **kwargs: Any) -> None:
        """`quirks`: which of QUIRKS act; `call_cache_seconds`: how long an unanswered call holds the slot."""
        super().__init__(*args, **kwargs)
        unknown = set(quirks) - set(QUIRKS)
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {', '.join(QUIRKS)}")
        self.quirks = frozenset(quirks)
        self.call_cache_seconds = call_cache_seconds
        self.stored_stations: set[str] = set()
        """Stations whose row exists (after their first StatusNotification): later ones are handled."""
        self.hits: list[QuirkHit] = []

    def _hit(self, station_id: str, quirk: str, action: str, unique_id: str) -> None:
        log.info(f"csms quirk {quirk}: {action} {unique_id} of {station_id}")
        self.hits.append(QuirkHit(station_id, quirk, action, unique_id, datetime.now(timezone.utc)))

    def hits_of(self, quirk: str, station_id: str | None = None) -> list[QuirkHit]:
        return [h for h in self.hits if h.quirk == quirk and (station_id is None or h.station_id == station_id)]
