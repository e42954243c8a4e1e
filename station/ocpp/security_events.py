"""SecurityEventNotification from the durable outbox (see `station.core.security_events`).

Both versions carry the same payload: 2.0.1 natively, 1.6 through the security whitepaper's
extension (its schema ships with the `ocpp` package). The timestamp is when the event happened,
corrected if it was recorded before the clock was trusted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from station.core.security_events import MESSAGE_KIND, TECH_INFO_MAX
from station.ocpp.outbox_kinds import register

if TYPE_CHECKING:
    from station.core.store import OutboxEntry
    from station.ocpp.base import BaseSession


@register(MESSAGE_KIND)
def security_event_notification(session: BaseSession, entry: OutboxEntry) -> tuple[str, dict[str, Any]]:
    payload: dict[str, Any] = {"type": str(entry.data["type"]), "timestamp": session.event_time(entry)}
    if entry.data.get("tech_info"):
        payload["techInfo"] = str(entry.data["tech_info"])[:TECH_INFO_MAX]
    return "SecurityEventNotification", payload
