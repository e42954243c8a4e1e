"""ASGI gate in front of the API: bearer token before any body byte, and a cap on every body.

FastAPI reads and parses a request body before it runs the route's dependencies, so a token
check written as a dependency comes too late: an unauthenticated client could make the API
buffer (and parse) any amount of data. This gate runs first, on the raw ASGI messages:

- a request with a body-carrying method (POST, PUT, PATCH, DELETE: the control endpoints) is
  answered 403/401 from its headers alone when control is disabled or the token is wrong; the
  body is never read;
- every request with a body is capped at `max_body` bytes: a larger Content-Length is refused
  at once (413) and a chunked body is read only up to the cap, then refused (413) without the
  rest being buffered. Below the cap the body is handed on unchanged.

Failed token checks are reported to `on_auth_failure(client_host)` (the API forwards them to
the daemon, which raises one MaintenanceLoginFailed security event per burst), and slow the
client's next checks down (TokenBackoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INVALID_TOKEN = "invalid bearer token"
MAX_BODY = 16 * 1024
"""The largest control request (a start with a token) is about 100 bytes."""
GUARDED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class TokenBackoff:
    """Wrong tokens slow their client address down; they can never lock the right token out.

    After the n-th wrong token from an address (n counted while failures keep coming, forgotten
    after `forget_s` without one), that address's next token checks wait until `base_s * 2**(n-1)`
    seconds after the failure, at most `cap_s`. A request waits for the lockout *as it stood when
    the request arrived*: failures that come later never extend its wait, so a request with the
    right token is answered after at most `cap_s`, however hard another process on the same
    address (on a station every local process is 127.0.0.1) keeps guessing, and it is never
    refused. Nothing is answered early, so the wait leaks nothing about the token. Guessing is
    bounded by the requests allowed to wait, `max_waiting` per `cap_s`: from ~1,260 guesses/s
    without the wait to ~32/s, against a token of at least 24 characters (station/config.py
    MIN_TOKEN_LENGTH, ~140 bits). Waiting requests hold connections that are never dropped for a
    newcomer (api/serving.py), so their number is bounded below the connection cap: beyond
    `max_waiting`, a request during a lockout is answered 503 at once, its token unchecked (so the
    answer leaks nothing), and /health, the status page and the other requests keep the rest of the
    connections. Under such a flood from its own address a control request may get that 503 and is
    retried; it is never refused for its token, and no lockout outlasts the flood by more than `cap_s`.
    """

    def __init__(self, *, base_s: float = 0.1, cap_s: float = 4.0, forget_s: float = 60.0,
                 max_clients: int = 1024, max_waiting: int = 128,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_s, self.cap_s, self.forget_s, self.max_clients = base_s, cap_s, forget_s, max_clients
        self.max_waiting = max_waiting
        self.waiting = 0
        """Requests sleeping out a lockout now."""
        self.clock = clock
        self._clients: OrderedDict[str | None, tuple[int, float]] = OrderedDict()
        """Address → (failures in the current burst, time of the last one)."""

    def wait_s(self, client: str | None) -> float:
        """How long a request arriving now from `client` waits before its token is checked."""
        entry = self._clients.get(client)
        if entry is None:
            return 0.0
        failures, last = entry
        now = self.clock()
        if now - last > self.forget_s:
            del self._clients[client]
            return 0.0
        locked_until = last + min(self.cap_s, self.base_s * 2 ** min(failures - 1, 32))  # no float overflow
        return max(0.0, min(self.cap_s, locked_until - now))

    def failed(self, client: str | None) -> None:
        failures, last = self._clients.pop(client, (0, 0.0))
        now = self.clock()
        if now - last > self.forget_s:
            failures = 0
        self._clients[client] = (failures + 1, now)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)  # the address that failed longest ago


class BodyGuard:
    def __init__(self, app: ASGIApp, *, token: str, max_body: int = MAX_BODY,
                 on_auth_failure: Callable[[str | None], None] | None = None,
                 backoff: TokenBackoff | None = None) -> None:
        self.app = app
        self.backoff = backoff or TokenBackoff()
        self.token = token.encode()
        self.max_body = max_body
        self.on_auth_failure = on_auth_failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        # Reading the body of an "Expect: 100-continue" request would ask the client to send it.
        drain = None if headers.get("expect", b"").lower() == b"100-continue" else receive
        if scope["method"] in GUARDED_METHODS:
            client = scope.get("client")
            address = client[0] if client else None
            if self.token and (wait := self.backoff.wait_s(address)) > 0:
                if self.backoff.waiting >= self.backoff.max_waiting:
                    await _answer(send, 503, "too many token checks waiting after wrong tokens; retry in a few "
                                  "seconds", {"retry-after": str(round(self.backoff.cap_s))}, drain=drain)
                    return
                self.backoff.waiting += 1
                try:
                    await asyncio.sleep(wait)
                finally:
                    self.backoff.waiting -= 1
            refusal = self._refusal(headers.get("authorization"))
            if refusal is not None:
                if refusal[1] == INVALID_TOKEN:
                    self.backoff.failed(address)
                if refusal[0] == 401 and self.on_auth_failure is not None:
                    self.on_auth_failure(address)
                await _answer(send, *refusal, drain=drain)
                return
        length = headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                await _answer(send, 400, "invalid Content-Length")
                return
            if too_big:
                await _answer(send, 413, f"request body larger than {self.max_body} bytes")
                return
        if length is None and b"chunked" not in headers.get("transfer-encoding", b"").lower():
            await self.app(scope, receive, send)  # no body at all
            return
        body = await self._read_capped(receive)
        if body is None:
            await _answer(send, 413, f"request body larger than {self.max_body} bytes", drain=drain)
            return
        await self.app(scope, _replay(body, receive), send)

    def _refusal(self, authorization: bytes | None) -> tuple[int, str, dict[str, str]] | None:
        if not self.token:
            return 403, "control endpoints are disabled: STATION_API_TOKEN is not configured", {}
        scheme, _, credentials = (authorization or b"").partition(b" ")
        if not authorization or scheme.lower() != b"bearer" or not credentials.strip():
            return 401, "bearer token required (Authorization: Bearer <token>)", {"www-authenticate": "Bearer"}
        if not secrets.compare_digest(credentials.strip(), self.token):
            return 401, INVALID_TOKEN, {"www-authenticate": 'Bearer error="invalid_token"'}
        return None

    async def _read_capped(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it exceeds the cap (the rest is never read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect when the client goes

    return replay


DRAIN_BYTES = 1024 * 1024
DRAIN_SECONDS = 2.0


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None, *,
                  drain: Receive | None = None) -> None:
    """Send a refusal; with `drain`, discard what the client still sends (bounded) before closing.

    The status line goes out first. A client that stops sending when it sees it then gets the
    whole answer: closing with its body still unread would make the kernel reset the connection
    and the client would see a reset instead of the 401/413. Draining discards (memory stays
    flat) and ends after DRAIN_BYTES or DRAIN_SECONDS: a client that never stops is cut off.
    """
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    raw.append((b"connection", b"close"))  # the unread body (if any) is not waited for
    await send({"type": "http.response.start", "status": status, "headers": raw})
    if drain is not None:
        await _discard(drain)
    await send({"type": "http.response.body", "body": body})


async def _discard(receive: Receive) -> None:
    drained = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while drained <= DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                drained += len(message.get("body", b""))
