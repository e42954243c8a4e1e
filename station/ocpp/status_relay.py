"""The newest undelivered status of a background job (remote update, log upload) on its way to the CSMS.

Such statuses are not queued: while the link is down only the newest one is kept and it is sent
after the reconnect (the session flushes every relay when it starts). A status counts as
delivered once the CSMS confirmed it; `on_delivered` then runs (the firmware updater forgets a
final result only after that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog

from station.ocpp.rpc import CallErrorReceived

if TYPE_CHECKING:
    from station.ocpp.base import BaseSession

log = structlog.get_logger("station.ocpp")

Note = TypeVar("Note")


class StatusRelay(Generic[Note]):
    def __init__(
        self,
        session: Callable[[], BaseSession | None],
        send: Callable[[BaseSession, Note], Awaitable[None]],
        label: str,
        *,
        on_delivered: Callable[[Note], None] | None = None,
        superseded_in_task: str | None = None,
    ) -> None:
        """`superseded_in_task`: a send cancelled together with a task of this name (the job that
        produced the status, replaced by a newer one) drops the status instead of keeping it."""
        self._session = session
        self._send = send
        self.label = label
        self._on_delivered = on_delivered
        self._superseded_in_task = superseded_in_task
        self._unsent: Note | None = None
        self._lock = asyncio.Lock()

    async def notify(self, note: Note) -> None:
        # An equal status again (the updater repeats its final result until it is confirmed) keeps the
        # one waiting, so a send already under way clears it: sent twice otherwise.
        if note != self._unsent:
            self._unsent = note
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            note, session = self._unsent, self._session()
            if note is None or session is None or not session.accepted:
                return
            try:
                await self._send(session, note)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._superseded_in_task and task is not None and task.get_name() == self._superseded_in_task \
                        and self._unsent is note:
                    self._unsent = None
                raise
            except (CallErrorReceived, TimeoutError) as exc:
                log.warning(f"ocpp: {self.label} not confirmed", status=_status(note), error=str(exc))
                return
            except Exception as exc:  # noqa: BLE001 — link closed mid-call: sent again after reconnect
                log.warning(f"ocpp: {self.label} not sent", status=_status(note), error=exc.__class__.__name__)
                return
            if self._unsent is note:
                self._unsent = None
            if self._on_delivered is not None:
                self._on_delivered(note)


def _status(note: Any) -> str:
    status = getattr(note, "status", None)
    return str(getattr(status, "value", status))
