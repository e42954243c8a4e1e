"""Reservations (OCPP 2.0.1 H01-H04, 1.6 ReserveNow/CancelReservation), kept in SQLite so they survive restarts.

A reservation holds one connector (EVSE) for one idToken (or its group) until its expiry time:

* for a given connector: that connector shows Reserved while it is free, and only the reserved
  token (or a token of its group) may start there;
* for any connector (2.0.1 without evseId, 1.6 connectorId 0): no connector is singled out, but
  starts by other tokens are refused when they would leave fewer free connectors than such
  reservations; when the free connectors are just enough, they all show Reserved (H01.FR.xx);
* it ends when its token is authorized there (used; the Started event names it), when the CSMS
  cancels it, at its expiry time (ReservationStatusUpdate Expired), or when its connector is made
  inoperative or goes Faulted (Removed).

Expiry is checked by the core's tick against the station clock (the CSMS's absolute expiryDateTime).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from station.core.authorization import parse_utc
from station.core.model import ConnectorStatus
from station.core.security_events import MESSAGE_QUEUED
from station.core.store import StoreError

if TYPE_CHECKING:
    from station.core.station import Connector, StationCore

log = structlog.get_logger(__name__)

MESSAGE_KIND = "reservation_status"
"""Outbox kind of an end the CSMS did not cause (Expired, Removed): 2.0.1 ReservationStatusUpdate."""
REPORTED = ("Expired", "Removed")
ANY_CONNECTOR_TYPES = {None, "Unknown", "Undetermined"}
"""A ReserveNow connectorType that names no particular type."""

@dataclass(frozen=True, slots=True)
class Reservation:
    id: int
    connector_id: int | None
    """None: any connector."""
    id_token: str
    token_type: str
    group_id: str | None
    expires_at: str
    connector_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, id_token: str, group_id: str | None) -> bool:
        return id_token == self.id_token or (group_id is not None and group_id == self.group_id)


class Reservations:
    """The core's reservations; the core asks it before a start and when it derives a status."""

    def __init__(self, core: StationCore) -> None:
        self.core = core
        self.by_id: dict[int, Reservation] = {}
        for row in core.store.reservations():
            r = Reservation(**row)
            self.by_id[r.id] = r
            log.info("reservation restored", reservation_id=r.id, connector_id=r.connector_id, expires_at=r.expires_at)

    def setting(self, variable: str) -> Any:
        """ReservationCtrlr's variables (declared in station/core/standard_variables.py)."""
        return self.core.auth.settings.get("ReservationCtrlr", variable)

    def _types(self) -> set[str]:
        dm = self.core.device_model
        return {str(dm.value("Connector", "ConnectorType", evse=cid, connector=1)) for cid in self.core.connectors}

    # ---- views -------------------------------------------------------------------------
    def for_connector(self, connector_id: int) -> Reservation | None:
        return next((r for r in self.by_id.values() if r.connector_id == connector_id), None)

    def _floating(self) -> list[Reservation]:
        return [r for r in self.by_id.values() if r.connector_id is None]

    def _free(self, conn: Connector) -> bool:
        return (conn.operative and not conn.transaction and not conn.pending and not conn.vehicle_present
                and conn.derived.status not in (ConnectorStatus.FAULTED, ConnectorStatus.UNAVAILABLE))

    def _free_unreserved(self) -> list[Connector]:
        return [c for c in self.core.connectors.values() if self._free(c) and self.for_connector(c.id) is None]

    def shows_reserved(self, conn: Connector) -> Reservation | None:
        """The reservation that makes a free connector show Reserved, if any."""
        specific = self.for_connector(conn.id)
        if specific is not None:
            return specific
        floating = self._floating()
        if floating and conn.link_up:
            free = self._free_unreserved()
            if conn in free and len(free) <= len(floating):
                return floating[0]
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in sorted(self.by_id.values(), key=lambda r: r.id)]

    # ---- the start rule ----------------------------------------------------------------
    def refusal(self, conn: Connector, id_token: str, group_id: str | None) -> str | None:
        """Why `id_token` may not start on `conn` because of a reservation (None: it may)."""
        specific = self.for_connector(conn.id)
        if specific is not None:
            return None if specific.matches(id_token, group_id) else f"connector reserved (reservation {specific.id})"
        floating = [r for r in self._floating() if not r.matches(id_token, group_id)]
        if not floating:
            return None
        left = [c for c in self._free_unreserved() if c is not conn]
        if len(left) < len(floating):  # the others' reservations need that many free connectors afterwards
            return f"every free connector is reserved (reservation {floating[0].id})"
        return None

    def used(self, conn: Connector, id_token: str, group_id: str | None) -> int | None:
        """`id_token` is authorized on `conn`: the reservation it fulfils ends; its id (for the Started event)."""
        r = self.for_connector(conn.id)
        if r is None or not r.matches(id_token, group_id):
            r = next((f for f in self._floating() if f.matches(id_token, group_id)), None)
        if r is None:
            return None
        self._drop(r, "Used")
        return r.id

    # ---- CSMS requests -----------------------------------------------------------------
    def reserve(self, reservation: Reservation) -> str:
        """ReserveNow: Accepted, Faulted, Occupied, Rejected or Unavailable (both versions' vocabulary)."""
        if not self.setting("Enabled") or not self.setting("Available"):
            return "Rejected"
        if reservation.connector_type not in ANY_CONNECTOR_TYPES and reservation.connector_type not in self._types():
            return "Rejected"  # no connector of that type here (Connector.ConnectorType, e.g. sType2)
        expires = parse_utc(reservation.expires_at)
        if expires is None or expires <= self.core.clock.now():
            return "Rejected"
        previous = self.by_id.get(reservation.id)  # same id: this one replaces it (H01.FR.02)
        others = {k: v for k, v in self.by_id.items() if k != reservation.id}
        if reservation.connector_id is None:
            if not self.setting("NonEvseSpecific"):
                return "Rejected"
            status = self._any_status(others)
        else:
            conn = self.core.connectors.get(reservation.connector_id)
            if conn is None:
                return "Rejected"
            status = self._connector_status(conn, others)
        if status != "Accepted":
            return status
        try:
            self.core.store.reservation_put(reservation.to_json())
        except StoreError:
            return "Rejected"
        self.by_id[reservation.id] = reservation
        log.info("reservation accepted", reservation_id=reservation.id, connector_id=reservation.connector_id,
                 expires_at=reservation.expires_at, replaced=previous is not None)
        self._changed(reservation, "Accepted", previous)
        return "Accepted"

    def _connector_status(self, conn: Connector, others: dict[int, Reservation]) -> str:
        if conn.derived.status == ConnectorStatus.FAULTED:
            return "Faulted"
        if not conn.operative or conn.derived.status == ConnectorStatus.UNAVAILABLE:
            return "Unavailable"
        if not self._free(conn) or any(r.connector_id == conn.id for r in others.values()):
            return "Occupied"
        floating = [r for r in others.values() if r.connector_id is None]
        left = [c for c in self._free_unreserved() if c is not conn]
        return "Occupied" if len(left) < len(floating) else "Accepted"

    def _any_status(self, others: dict[int, Reservation]) -> str:
        conns = list(self.core.connectors.values())
        reserved = {r.connector_id for r in others.values() if r.connector_id is not None}
        free = [c for c in conns if self._free(c) and c.id not in reserved]
        if len(free) > len([r for r in others.values() if r.connector_id is None]):
            return "Accepted"
        if all(c.derived.status == ConnectorStatus.FAULTED for c in conns):
            return "Faulted"
        if all(not c.operative or c.derived.status == ConnectorStatus.UNAVAILABLE for c in conns):
            return "Unavailable"
        return "Occupied"

    def cancel(self, reservation_id: int) -> bool:
        """CancelReservation: False when there is no such reservation."""
        r = self.by_id.get(reservation_id)
        if r is None:
            return False
        self._drop(r, "Cancelled")
        return True

    # ---- ending by themselves -------------------------------------------------------------
    def expire(self, now: datetime) -> None:
        """Called every tick: reservations past their expiry time end (ReservationStatusUpdate Expired)."""
        for r in list(self.by_id.values()):
            expires = parse_utc(r.expires_at)
            if expires is None or expires <= now:
                self._drop(r, "Expired")

    def connector_unusable(self, connector_id: int) -> None:
        """A connector made inoperative or gone faulted loses its reservation (ReservationStatusUpdate Removed)."""
        r = self.for_connector(connector_id)
        if r is not None:
            self._drop(r, "Removed")

    def _drop(self, r: Reservation, status: str) -> None:
        """End a reservation; an end the CSMS did not cause is queued for it in the same commit
        (durable outbox: it reaches the CSMS after an outage or a kill -9)."""
        message = (MESSAGE_KIND, self.core.clock.stamp(), {"reservation_id": r.id, "status": status}) \
            if status in REPORTED else None
        try:
            self.core.store.reservation_delete(r.id, message)
        except StoreError:
            message = None  # still ends now; a restart brings it back until its expiry, then reports it
        self.by_id.pop(r.id, None)
        log.info("reservation ended", reservation_id=r.id, connector_id=r.connector_id, status=status)
        self._changed(r, status, None)
        if message is not None:
            self.core.publish_in_order(MESSAGE_QUEUED, message=MESSAGE_KIND)

    def _changed(self, r: Reservation, status: str, previous: Reservation | None) -> None:
        """Re-derive the statuses it may alter (Reserved shown or not), then publish the change.

        Status first: the CSMS sees the connector Available before ReservationStatusUpdate (TC_H_07).
        Within a connector's pass (used, faulted) that pass derives the status itself; other
        connectors follow on the next tick.
        """
        if not self.core.in_pass:
            touched = {r.connector_id, previous.connector_id if previous else None}
            for conn in self.core.connectors.values():
                if None in touched or conn.id in touched:
                    self.core.refresh(conn)
        self.core.publish_in_order("reservation", reservation_id=r.id, status=status, connector_id=r.connector_id,
                                   reservation=r.to_json())
