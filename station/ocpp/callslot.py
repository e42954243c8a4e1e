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

    The slot is handed straight to the next live waiter on release (no barging). When only
    queued waiters wait, the hand-off waits one loop turn: the task that just finished a live
    call (the status relay, with the next connector event already in hand) may ask again at
    once and goes first; otherwise the first queued waiter gets the slot. Queued waiters are
    served in order. Usable as `async with slot:` (a live call), like the `asyncio.Lock` it
    replaces.
    """

    def __init__(self) -> None:
        self._busy = False
        self._live: deque[asyncio.Future[None]] = deque()
        self._queued: deque[asyncio.Future[None]] = deque()
        self._hand_off_pending = False

    def locked(self) -> bool:
        return self._busy

    @property
    def live_waiting(self) -> int:
        return sum(1 for f in self._live if not f.done())

    async def acquire(self, *, queued: bool = False) -> None:
        if not self._busy and not self._live and (not queued or not self._queued):
            self._busy = True  # a live call may take a free slot ahead of queued waiters
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
        if self._hand_to(self._live):
            return
        self._busy = False
        if self._queued and not self._hand_off_pending:
            self._hand_off_pending = True
            asyncio.get_running_loop().call_soon(self._hand_off_queued)

    def _hand_off_queued(self) -> None:
        self._hand_off_pending = False
        if not self._busy and not self._hand_to(self._live):
            self._hand_to(self._queued)

    def _hand_to(self, waiters: deque[asyncio.Future[None]]) -> bool:
        while waiters:
            future = waiters.popleft()
            if not future.done():
                self._busy = True  # the slot now belongs to that waiter
                future.set_result(None)
                return True
        return False

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
