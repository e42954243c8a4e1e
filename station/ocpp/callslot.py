"""The one CALL an OCPP-J endpoint may have in flight, handed out live-first.

OCPP-J (2.0.1 part 4, §4.1.1; 1.6J §4.1.1) lets each side have one CALL outstanding. While a
backlog of queued transaction messages drains over a cellular link, every one of them holds
that slot for a round trip. A live message (a StatusNotification after a plug-in, an Authorize
while a driver waits at the station, a Heartbeat) must not queue behind the rest of the
backlog: it takes the slot as soon as the message in flight is answered. A FIFO lock would
give it to an outbox message that merely asked first.

Queued messages keep their order among themselves (one outbox loop asks at a time), so a
transaction's events are never reordered; only live messages overtake them, which OCPP allows
(statuses and authorizations are not transaction messages). Answers to the CSMS's calls do not
take the slot at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any


class CallSlot:
    """A lock with two classes of waiters: live ones are served before queued ones.

    The slot is handed straight to the next waiter on release (no barging), so a caller that
    releases and asks again at once goes behind everyone already waiting in its class.
    Usable as `async with slot:` (a live call), like the `asyncio.Lock` it replaces.
    """

    def __init__(self) -> None:
        self._busy = False
        self._live: deque[asyncio.Future[None]] = deque()
        self._queued: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        return self._busy

    @property
    def live_waiting(self) -> int:
        return sum(1 for f in self._live if not f.done())

    async def acquire(self, *, queued: bool = False) -> None:
        if not self._busy and not self._live and not self._queued:
            self._busy = True
            return
        waiters = self._queued if queued else self._live
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed to us just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
            raise

    def release(self) -> None:
        for waiters in (self._live, self._queued):
            while waiters:
                future = waiters.popleft()
                if not future.done():
                    future.set_result(None)  # the slot stays busy: it now belongs to that waiter
                    return
        self._busy = False

    @contextlib.asynccontextmanager
    async def hold(self, *, queued: bool = False) -> AsyncIterator[None]:
        await self.acquire(queued=queued)
        try:
            yield
        finally:
            self.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: Any) -> None:
        self.release()
