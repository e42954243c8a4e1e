"""ReservationStatusUpdate from the durable outbox (see `station.core.reservations`).

A reservation that ends by itself (Expired) or because its EVSE became unusable (Removed) is
reported in 2.0.1; 1.6 has no such message (its StatusNotification says the connector is free),
so the entry leaves the queue unsent there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from station.core.reservations import MESSAGE_KIND
from station.ocpp.outbox_kinds import register

if TYPE_CHECKING:
    from station.core.store import OutboxEntry
    from station.ocpp.base import BaseSession


@register(MESSAGE_KIND)
def reservation_status_update(session: BaseSession, entry: OutboxEntry) -> tuple[str, dict[str, Any]] | None:
    if session.VERSION == "16":
        return None
    return "ReservationStatusUpdate", {"reservationId": int(entry.data["reservation_id"]),
                                       "reservationUpdateStatus": str(entry.data["status"])}
