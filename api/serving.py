"""How `station-api` holds its sockets: bounded connections, a header deadline, its own descriptor limit.

A local process that opens ~1,100 connections and sends a header line every 10 s used to take
the API down: uvicorn has no deadline for a request's headers and accepts connections until the
process runs out of descriptors (soft limit 1,024 under systemd); then it cannot accept the
technician's `/health` any more. The bounds live in the process itself, not only in the unit:

- at start the process raises its soft RLIMIT_NOFILE to the hard limit;
- at most `max_connections` connections are open (well below the descriptor limit, leaving room
  for the IPC socket, the log and asyncio accepting a burst of up to 100 connections in one go).
  When a new connection would exceed it, the connection that has waited longest for its request
  headers is dropped: a client that sends a whole request at once (a browser, curl, a monitor)
  is always served; a connection in the middle of a request (an SSE stream, a control call) is
  never dropped for a newcomer. If every connection is busy the newcomer is the one closed;
- a request's headers must be complete within `header_seconds` of the connection opening or of
  the previous answer (a keep-alive connection waits for its next request no longer than that),
  and its body (16 KiB at most, api/guard.py) within `header_seconds` more: a client dripping a
  body is cut too;
- headers larger than h11's incomplete-event cap (8 KiB here) are refused by h11 (400).

uvicorn's `limit_concurrency` is not used: it answers 503 only once a request's headers have
arrived, so it neither bounds descriptors nor helps against clients that never finish them.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

HEADER_SECONDS = 5.0
"""A request's headers arrive within this (a browser sends them in one packet)."""
MAX_CONNECTIONS = 256
"""Plenty for a station's technicians: a status page holds one SSE stream and a few requests."""
DESCRIPTOR_RESERVE = 200
"""Descriptors kept free below the soft limit: asyncio accepts up to 100 connections per loop
iteration before any of them is counted, plus the IPC socket, the log, the event loop's own."""
MAX_HEADER_BYTES = 8 * 1024


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(soft_limit: int, wanted: int = MAX_CONNECTIONS) -> int:
    return max(8, min(wanted, soft_limit - DESCRIPTOR_RESERVE))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap (see the module's docstring)."""

    cap = MAX_CONNECTIONS
    header_seconds = HEADER_SECONDS

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.waiting_since = time.monotonic()
        self._deadline: asyncio.TimerHandle | None = None

    def awaits_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE and self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        if len(self.connections) > self.cap:
            waiting = [c for c in self.connections
                       if c is not self and isinstance(c, GuardedH11Protocol) and c.awaits_headers()]
            victim = min(waiting, key=lambda c: c.waiting_since) if waiting else self
            victim.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self.waiting_since = time.monotonic()
        self._deadline = self.loop.call_later(self.header_seconds, self._header_deadline)

    def _header_deadline(self) -> None:
        self._deadline = None
        if self.awaits_headers():
            self.transport.abort()
        elif self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.header_seconds, self._body_deadline)

    def _body_deadline(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.transport.abort()


def listening_socket(host: str, port: int) -> socket.socket:
    """The bound, listening socket (raises OSError: port taken, address not on this machine, ...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def protocol_class(cap: int, header_seconds: float = HEADER_SECONDS) -> type[GuardedH11Protocol]:
    return type("StationH11Protocol", (GuardedH11Protocol,), {"cap": cap, "header_seconds": header_seconds})
