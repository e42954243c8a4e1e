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


NAMES_16 = {
    "InvalidCsmsCertificate": "InvalidCentralSystemCertificate",
    "InvalidChargingStationCertificate": "InvalidChargePointCertificate",
    "FailedToAuthenticateAtCsms": "FailedToAuthenticationAtCentralSystem",
    "CsmsFailedToAuthenticate": "CentralSystemFailedToAuthentication",
}
"""Events are recorded with their 2.0.1 names; the 1.6 whitepaper (edition 3, section 8) names these four differently."""


@register(MESSAGE_KIND)
def security_event_notification(session: BaseSession, entry: OutboxEntry) -> tuple[str, dict[str, Any]]:
    kind = str(entry.data["type"])
    if session.VERSION == "16":
        kind = NAMES_16.get(kind, kind)
    payload: dict[str, Any] = {"type": kind, "timestamp": session.event_time(entry)}
    if entry.data.get("tech_info"):
        payload["techInfo"] = str(entry.data["tech_info"])[:TECH_INFO_MAX]
    return "SecurityEventNotification", payload
