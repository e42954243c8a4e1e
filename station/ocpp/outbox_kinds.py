"""CALLs for the outbox's non-transaction messages (security events, NotifyEvent, ...).

The durable outbox (`station.core.store`) carries transaction messages and, with an empty
transaction id, any other station→CSMS message that must survive outages and kill -9
(`Store.append_message`). The session's pump asks `message_for` for the CALL of such an entry;
each kind registers one builder here, next to the module that owns the message:

    @register("security_event")
    def security_event(session: BaseSession, entry: OutboxEntry) -> tuple[str, dict] | None: ...

A builder returns (action, payload), or None when the session's OCPP version has no such
message (the entry is then dropped as delivered). Registered builders are imported by
`station.ocpp.base`, so registration happens before the first session runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from station.core.store import OutboxEntry
    from station.ocpp.base import BaseSession

Builder = Callable[["BaseSession", "OutboxEntry"], "tuple[str, dict[str, Any]] | None"]

_BUILDERS: dict[str, Builder] = {}


def register(kind: str) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        if kind in _BUILDERS and _BUILDERS[kind] is not builder:
            raise ValueError(f"outbox kind {kind!r} registered twice")
        _BUILDERS[kind] = builder
        return builder

    return decorate


class UnknownKind(LookupError):
    """An outbox entry of a kind no builder knows (written by a newer version, say): kept, parked."""


def message_for(session: BaseSession, entry: OutboxEntry) -> tuple[str, dict[str, Any]] | None:
    builder = _BUILDERS.get(entry.kind)
    if builder is None:
        raise UnknownKind(f"no OCPP message for outbox kind {entry.kind!r}")
    return builder(session, entry)
