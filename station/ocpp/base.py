"""What both OCPP versions share: boot, heartbeat, status, the outbox pump, evidence, CSMS commands.

A session lives as long as one WebSocket connection. Version modules (`v201`, `v16`)
subclass `StationSession` and supply only what differs: payload shapes and the
names of CSMS-initiated actions (like zigpy/bellows' `ezsp/vN` over one base).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from station.core.station import AuthResult, Connector, StationCore
from station.core.store import OutboxEntry
from station.ocpp.rpc import CallErrorReceived, StrictChargePoint

log = structlog.get_logger("station.ocpp")

# Spec defaults (2.0.1 OCPPCommCtrlr / 1.6 core profile) for transaction message retries.
DEFAULT_TX_ATTEMPTS = 3
DEFAULT_TX_RETRY_INTERVAL = 60.0


@dataclass(slots=True)
class Exchange:
    """One OCPP exchange performed by the station: evidence for `station --once` and the API."""

    action: str
    direction: str  # "out": station → CSMS; "in": CSMS → station
    utc: str
    unique_id: str | None = None
    status: str | None = None
    rtt_ms: float | None = None
    response_summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action, "direction": self.direction, "status": self.status, "rtt_ms": self.rtt_ms,
            "timestamp": self.utc, "utc": self.utc, "unique_id": self.unique_id,
            "response_summary": self.response_summary, **({"error": self.error} if self.error else {}),
        }


def summarize(response: dict[str, Any]) -> dict[str, Any]:
    """status / interval / current_time of a response, where it has them (the field report's keys)."""
    summary: dict[str, Any] = {}
    status = response.get("status")
    if status is None:
        for key in ("idTagInfo", "idTokenInfo"):
            if isinstance(response.get(key), dict):
                status = response[key].get("status")
    if status is not None:
        summary["status"] = status
    if "interval" in response:
        summary["interval"] = response["interval"]
    if "heartbeatInterval" in response:
        summary["interval"] = response["heartbeatInterval"]
    if "currentTime" in response:
        summary["current_time"] = response["currentTime"]
    return summary


class Rejected(Exception):
    """The CSMS answered a transaction message, but not with acceptance."""


class StationSession(StrictChargePoint):
    """The station's side of one OCPP connection; version subclasses fill in the payloads."""

    version = ""

    def __init__(self, station_id: str, connection: Any, client: OcppClient) -> None:
        super().__init__(station_id, connection, self.version, side="station", response_timeout=30)
        self.client = client
        self.core: StationCore = client.core
        self.boot_accepted = asyncio.Event()
        self._last_call_id: dict[str, str] = {}
        self._pump_wake = asyncio.Event()
        self._sent_status: dict[int, tuple[str, str]] = {}

    # --- version hooks ---------------------------------------------------------------
    def boot_request(self) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def status_request(self, conn: Connector) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def status_key(self, conn: Connector) -> tuple[str, str]:
        """What the CSMS sees of a connector's status; a StatusNotification goes out when it changes."""
        raise NotImplementedError

    def authorize_request(self, id_token: str, token_type: str) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def transaction_request(self, entry: OutboxEntry) -> tuple[str, dict[str, Any]] | None:
        """The CALL for an outbox entry, or None when this version has nothing to send for it."""
        raise NotImplementedError

    def transaction_confirmed(self, entry: OutboxEntry, response: dict[str, Any]) -> None:
        """Act on the CSMS's answer (e.g. keep 1.6's transactionId, stop a deauthorized token)."""

    # --- framing hook: every frame is an event (metrics, live view) ------------------
    def on_frame(self, direction: str, action: str | None, message: list[Any]) -> None:
        if message and message[0] == 2 and direction == "out":
            self._last_call_id[str(message[2])] = str(message[1])
        kind = {2: "call", 3: "result", 4: "error"}.get(message[0] if message else 0, "?")
        self.core.events.publish("ocpp_message", action=action, direction=direction, type=kind,
                                 version=self.version)

    # --- calls with evidence ---------------------------------------------------------
    async def exchange(self, action: str, payload: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Send a CALL, record it as evidence, return the response payload."""
        started = time.perf_counter()
        record = Exchange(action, "out", datetime.now(UTC).isoformat())
        try:
            response = await self.request(action, payload, timeout=timeout)
        except CallErrorReceived as exc:
            record.status, record.error = "CallError", f"{exc.code}: {exc.description}"
            raise
        except TimeoutError:
            record.status, record.error = "Timeout", "no response"
            raise
        finally:
            record.unique_id = self._last_call_id.get(action)
            record.rtt_ms = round((time.perf_counter() - started) * 1000, 2)
            self.client.record(record)
        record.response_summary = summarize(response)
        record.status = record.response_summary.get("status", "Accepted")
        return response

    def note_incoming(self, action: str, status: str | None) -> None:
        self.client.record(Exchange(action, "in", datetime.now(UTC).isoformat(), status=status))

    # --- session lifecycle -----------------------------------------------------------
    async def run(self) -> None:
        reader = asyncio.create_task(self.start(), name="ocpp-reader")
        workers: list[asyncio.Task[Any]] = []
        try:
            await self._boot()
            self.core.set_csms_online(True)
            self.client.publish_state()
            await self.send_statuses(force=True)
            workers = [
                asyncio.create_task(self._heartbeats(), name="ocpp-heartbeat"),
                asyncio.create_task(self._pump(), name="ocpp-outbox"),
                asyncio.create_task(self._follow_core(), name="ocpp-events"),
            ]
            done, _ = await asyncio.wait([reader, *workers], return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.core.set_csms_online(False)
            for task in (*workers, reader):
                task.cancel()
            for task in (*workers, reader):
                with contextlib.suppress(BaseException):
                    await task

    async def _boot(self) -> None:
        """BootNotification until Accepted; Pending/Rejected are retried after the CSMS's interval."""
        while True:
            action, payload = self.boot_request()
            try:
                response = await self.exchange(action, payload)
            except (TimeoutError, CallErrorReceived) as exc:
                log.warning("boot notification not answered", error=str(exc))
                await asyncio.sleep(self.client.boot_retry_seconds)
                continue
            self.client.boot_exchange = self.client.exchanges[-1]
            self._trust_time(response.get("currentTime"))
            status = response.get("status")
            interval = int(response.get("interval") or response.get("heartbeatInterval") or 0)
            self.client.boot = {"status": status, "interval": interval, "current_time": response.get("currentTime"),
                                "at": datetime.now(UTC).isoformat(), "version": self.version}
            if status == "Accepted":
                if interval > 0:
                    self.client.heartbeat_seconds = interval
                self.boot_accepted.set()
                log.info("boot accepted", heartbeat_interval=self.client.heartbeat_seconds, ocpp=self.version)
                return
            wait = interval if interval > 0 else self.client.boot_retry_seconds
            log.warning("boot not accepted; retrying", status=status, retry_in_s=wait)
            await asyncio.sleep(wait)

    def _trust_time(self, value: Any) -> None:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                self.core.clock.trust(datetime.fromisoformat(value.replace("Z", "+00:00")), "csms")

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.client.heartbeat_seconds)
            await self.heartbeat()

    async def heartbeat(self) -> dict[str, Any]:
        response = await self.exchange("Heartbeat", {})
        self._trust_time(response.get("currentTime"))
        return response

    async def send_statuses(self, *, force: bool = False) -> None:
        for conn in self.core.connectors.values():
            key = self.status_key(conn)
            if force or self._sent_status.get(conn.id) != key:
                self._sent_status[conn.id] = key
                action, payload = self.status_request(conn)
                await self.exchange(action, payload)

    async def _follow_core(self) -> None:
        with self.core.events.subscribe() as sub:
            async for event in sub:
                if event.kind == "connector":
                    await self.send_statuses()
                elif event.kind == "transaction":
                    self._pump_wake.set()

    async def _pump(self) -> None:
        """Send outbox entries strictly in order; each leaves the outbox only once confirmed."""
        attempts, interval = self.client.tx_attempts, self.client.tx_retry_interval
        while True:
            progressed = False
            for entry in self.core.store.pending_outbox(50):
                if time.time() < entry.next_attempt:
                    break  # head-of-line: later messages wait for this one
                request = self.transaction_request(entry)
                if request is None:
                    self.core.store.ack_outbox(entry.id)
                    progressed = True
                    continue
                try:
                    response = await self.exchange(*request)
                    self.transaction_confirmed(entry, response)
                except (CallErrorReceived, Rejected) as exc:
                    park = entry.attempts + 1 >= attempts
                    self.core.store.retry_outbox(entry.id, str(exc), interval * (entry.attempts + 1), park=park)
                    (log.error if park else log.warning)(
                        "transaction message refused" + ("; parked for inspection" if park else "; will retry"),
                        transaction_id=entry.transaction_id, kind=entry.kind, seq_no=entry.seq_no, error=str(exc),
                    )
                    break
                self.core.store.ack_outbox(entry.id)
                progressed = True
            self.core.events.publish("outbox", depth=self.core.store.outbox_depth())
            if not progressed:
                self._pump_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._pump_wake.wait(), timeout=1.0)

    def timestamp_of(self, entry: OutboxEntry) -> str:
        s = entry.stamp
        return _iso(self.core.clock.correct(s.wall, s.mono, s.boot_id, s.trusted))

    async def authorize(self, id_token: str, token_type: str) -> AuthResult:
        response = await self.exchange(*self.authorize_request(id_token, token_type))
        info = response.get("idTokenInfo") or response.get("idTagInfo") or {}
        return AuthResult(info.get("status", "Invalid"), info.get("cacheExpiryDateTime") or info.get("expiryDate"))

    async def probe(self) -> list[dict[str, Any]]:
        """A fresh Heartbeat and StatusNotifications on this connection (for `station --once`)."""
        since = len(self.client.exchanges)
        await self.heartbeat()
        await self.send_statuses(force=True)
        return [e.to_json() for e in list(self.client.exchanges)[since:]]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class OcppClient:
    """Owns the CSMS link for the daemon: one `StationSession` per connection."""

    def __init__(self, params: Any, core: StationCore, *, heartbeat_seconds: int = 300) -> None:
        from station.ocpp.connection import OcppLink

        self.params = params
        self.core = core
        self.heartbeat_seconds = heartbeat_seconds
        self.boot_retry_seconds = 10.0
        self.tx_attempts = int(core.store.get("tx_attempts", DEFAULT_TX_ATTEMPTS))
        self.tx_retry_interval = float(core.store.get("tx_retry_interval", DEFAULT_TX_RETRY_INTERVAL))
        self.exchanges: deque[Exchange] = deque(maxlen=100)
        self.boot: dict[str, Any] | None = None
        self.boot_exchange: Exchange | None = None
        self.session: StationSession | None = None
        self.link = OcppLink(params, self._on_session, on_state=lambda _state: self.publish_state())
        core.authorizer = self

    def record(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)

    def publish_state(self) -> None:
        self.core.events.publish("csms", **self.status())

    def status(self) -> dict[str, Any]:
        state = self.link.state.as_dict()
        state["booted"] = bool(self.session and self.session.boot_accepted.is_set())
        state["boot"] = self.boot
        state["heartbeat_seconds"] = self.heartbeat_seconds
        return state

    async def run(self) -> None:
        await self.link.run()

    async def _on_session(self, ws: Any, version: str) -> None:
        session_class: Callable[..., StationSession]
        if version == "201":
            from station.ocpp.v201 import Session201 as session_class
        else:
            from station.ocpp.v16 import Session16 as session_class
        self.session = session_class(self.params.station_id, ws, self)
        try:
            await self.session.run()
        finally:
            self.session = None
            self.publish_state()

    async def authorize(self, id_token: str, token_type: str) -> AuthResult | None:
        session = self.session
        if session is None or not session.boot_accepted.is_set():
            return None
        try:
            return await session.authorize(id_token, token_type)
        except (TimeoutError, CallErrorReceived):
            return None

    async def probe(self) -> dict[str, Any]:
        session = self.session
        result: dict[str, Any] = {
            "status": self.status(),
            "boot": self.boot,
            "messages": [self.boot_exchange.to_json()] if self.boot_exchange else [],
        }
        if session is None or not session.boot_accepted.is_set():
            result["error"] = "not connected to the CSMS"
            return result
        try:
            result["messages"] += await session.probe()
        except (TimeoutError, CallErrorReceived) as exc:
            result["error"] = f"probe failed: {exc.__class__.__name__}: {exc}"
        return result


def link_params(settings: Any) -> Any:
    """The connection manager's parameters from the station settings."""
    from station.ocpp.connection import LinkParams

    return LinkParams(
        station_id=settings.station_name,
        password=settings.station_password.get_secret_value() if settings.station_password else None,
        primary=settings.ocpp_primary,
        url_201=settings.ocpp_201_url,
        url_16=settings.ocpp_16_url,
        security_profile=settings.security_profile,
        ca_bundle=settings.ca_bundle,
        client_cert=settings.client_cert,
        client_key=settings.client_key,
        fallback_after=settings.fallback_after,
        primary_retry_seconds=settings.primary_retry_seconds,
        backoff_min=settings.backoff_min_seconds,
        backoff_max=settings.backoff_max_seconds,
    )
