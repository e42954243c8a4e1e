"""The API's connection to the daemon: calls, one shared event subscription, reachability.

The API must keep answering while the daemon is down (health says so, state endpoints
answer 503) and come back by itself. One background task holds a single event
subscription for the whole API, re-subscribing with capped backoff; it feeds the SSE
clients, the recent-events list of the status page and the message counters of /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from api.narration import Narrator
from station.ipc.client import DaemonUnavailable, IpcClient, IpcError

log = structlog.get_logger(__name__)

T = TypeVar("T")

RECENT_EVENTS = 50
"""Events a technician reads (connector, transaction start/end, links, problems, daemon) kept for the page."""
RECENT_ROUTINE = 10
"""Routine events, each kind in a buffer of its own so they never push the others out: one meter reading
a second (and an offline-queue change and a periodic transaction update per meter value) would empty the
list of a whole charging session within a minute."""


def routine_kind(event: dict[str, Any]) -> str | None:
    """The routine buffer an event goes to, or None for the events a technician reads."""
    kind = event.get("kind")
    if kind in ("meter", "outbox"):
        return str(kind)
    data = event.get("data")
    if kind == "transaction" and isinstance(data, dict) and data.get("event") == "updated":
        return "transaction_updated"
    return None
SUBSCRIBER_QUEUE = 256


class DaemonLink:
    def __init__(self, socket_path: Path, *, retry_min_s: float = 0.2, retry_max_s: float = 5.0,
                 call_timeout_s: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.client = IpcClient(socket_path, timeout=call_timeout_s)
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.reachable = False
        self.last_error: str | None = "not connected yet"
        self.changed_at = datetime.now(UTC)
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._routine: dict[str, deque[dict[str, Any]]] = {}
        self.messages: Counter[tuple[str, str]] = Counter()
        """OCPP messages seen on the daemon's event stream, by (action, direction)."""
        self.events_seen = 0
        self.narrator = Narrator()
        self.problems_seen: dict[str, str] = {}
        """Problem → the time this API first saw it (api/problems.py), for those the daemon gives no time for."""
        self.events_dropped = 0
        self.resubscriptions = 0
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = False
        self._auth_failures = 0
        self._auth_client: str | None = None
        self._auth_task: asyncio.Task[None] | None = None
        self._retry_now = asyncio.Event()
        """Set by a successful call while the subscription waits out its backoff: the daemon is back,
        subscribe now rather than miss the events of the next seconds (a session just started)."""

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._pump())
        self._task.set_name("daemon-events")

    async def close(self) -> None:
        for task in (self._task, self._auth_task):
            # Cancel until it ends: on Python 3.11 a cancel that lands as the backoff's asyncio.timeout
            # fires is turned into that TimeoutError and swallowed, and the pump would wait on forever
            # (the API's shutdown with it: SIGTERM would not stop the process).
            while task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
            if task is not None:
                with contextlib.suppress(BaseException):
                    task.result()
        await self.client.close()

    # --- failed token checks → the daemon's security events --------------------------
    def report_auth_failure(self, client: str | None) -> None:
        """Count a failed token check; the daemon hears of them at most once a second, counted.

        The daemon turns them into one MaintenanceLoginFailed security event per burst. Coalescing
        here keeps a password-guessing client from turning each guess into an IPC round trip.
        """
        self._auth_failures += 1
        self._auth_client = client
        if self._auth_task is None or self._auth_task.done():
            self._auth_task = asyncio.ensure_future(self._flush_auth_failures())
            self._auth_task.set_name("auth-failure-report")

    async def _flush_auth_failures(self) -> None:
        while self._auth_failures:
            count, self._auth_failures = self._auth_failures, 0
            params = {"source": f"local API from {self._auth_client or 'unknown'}", "count": count}
            try:
                await self.call(lambda c: c.call("login_failed", params))
            except (DaemonUnavailable, IpcError) as exc:
                log.warning("failed logins not reported to the daemon", count=count, error=str(exc))
            await asyncio.sleep(1.0)

    async def call(self, fn: Callable[[IpcClient], Awaitable[T]]) -> T:
        """Run one client call, keeping `reachable` right (raises DaemonUnavailable / IpcError)."""
        try:
            result = await fn(self.client)
        except DaemonUnavailable as exc:
            self._set_reachable(False, str(exc))
            raise
        self._set_reachable(True, None)
        if not self._subscribed:
            self._retry_now.set()
        return result

    # --- fan-out to SSE clients ---------------------------------------------------
    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    @property
    def streams(self) -> int:
        return len(self._subscribers)

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def _broadcast(self, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            if queue.full():  # a slow browser loses its oldest events, nobody else notices
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    # --- the shared subscription ------------------------------------------------------
    async def _pump(self) -> None:
        delay = self.retry_min_s

        def subscribed() -> None:
            nonlocal delay
            delay = self.retry_min_s
            self._subscribed = True
            self._set_reachable(True, None)

        while True:
            self._retry_now.clear()
            try:
                async for event in self.client.events(on_subscribed=subscribed):
                    self._on_event(event)
            except DaemonUnavailable as exc:
                self._set_reachable(False, str(exc))
            except Exception as exc:  # noqa: BLE001 - the pump must outlive any surprise
                log.exception("daemon event stream failed")
                self._set_reachable(False, f"event stream failed: {exc.__class__.__name__}")
            self._subscribed = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._retry_now.wait()
            delay = min(self.retry_max_s, delay * 2)
            self.resubscriptions += 1

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events_seen += 1
        kind = event.get("kind")
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        if kind == "ocpp_message":
            self.messages[(str(data.get("action") or "unknown"), str(data.get("direction") or "unknown"))] += 1
            return  # counted, not shown: at one per frame they would flood the page
        if kind == "ipc_events_dropped":
            self.events_dropped = int(data.get("dropped_total") or 0)
        event["text"] = self.narrator.text(event)  # None: not a happening of its own (the page lists none)
        self._remember(event)
        self._broadcast(event)

    def _remember(self, event: dict[str, Any]) -> None:
        routine = routine_kind(event)
        if routine is None:
            self._recent.append(event)
        else:
            self._routine.setdefault(routine, deque(maxlen=RECENT_ROUTINE)).append(event)

    def recent(self) -> list[dict[str, Any]]:
        """The last events, oldest first: up to RECENT_EVENTS notable ones plus the latest routine ones."""
        merged = [*self._recent, *(e for buffer in self._routine.values() for e in buffer)]
        return sorted(merged, key=lambda e: str(e.get("at") or ""))

    def _set_reachable(self, reachable: bool, error: str | None) -> None:
        if reachable == self.reachable:
            if error:
                self.last_error = error
            return
        self.reachable, self.last_error, self.changed_at = reachable, error, datetime.now(UTC)
        if not reachable:
            self.narrator = Narrator()  # a restarted daemon connects anew: its links are news again
        (log.info if reachable else log.warning)("station daemon " + ("reachable" if reachable else "unreachable"),
                                                 socket=str(self.socket_path), error=error)
        event: dict[str, Any] = {"kind": "daemon", "at": self.changed_at.isoformat(),
                                 "data": {"reachable": reachable, "error": error}}
        event["text"] = self.narrator.text(event)
        self._remember(event)
        self._broadcast(event)
