"""Behaviour both OCPP versions share; `v201.py` and `v16.py` only translate.

One `BaseSession` lives per WebSocket connection. Its life:

1. BootNotification until Accepted (Pending/Rejected: retry after the interval the CSMS gave);
   the CSMS's `currentTime` makes the clock trusted, so queued events get true timestamps.
   Boot happens once per process and OCPP version; a reconnect skips it.
2. The CSMS is "online" for the core; the transaction lane of the outbox starts at once, and
   every connector's current status is sent (statuses are not queued while offline, the present
   one is re-sent instead) once that lane has made its first pass over what waited at connect,
   then the other queued messages: a status the CSMS leaves unanswered (CitrineOS's first one)
   never holds an offline session's Started back by a call timeout (docs/ocpp.md, "Session
   behaviour").
3. Three loops run until the link drops: heartbeat at the CSMS's interval; the durable outbox
   replayed (an entry leaves the outbox only when the CSMS confirmed it; CALLERROR / no answer
   → retried after `interval × attempt`, parked after `attempts` tries, never dropped) in two
   lanes: transaction messages strictly in order, the other queued messages (security events,
   NotifyEvent, ...) each on its own schedule beside them, so a refused one never holds up a
   transaction message; connector events → StatusNotification. A transaction is bound to the version
   its Started went out in; its messages wait while the link runs the other version.

A version module provides the message shapes (`boot_payload`, `status_payload`,
`transaction_message`, ...) and its CSMS-initiated handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from ocpp.exceptions import OCPPError

from station.core.charging_profiles import (
    DEFAULT_PHASES,
    NOMINAL_VOLTAGE_V,
    ChargingProfile,
    Kind,
    Period,
    Purpose,
    Recurrency,
)
from station.core.station import AuthResult, Connector, StationCore
from station.core.store import LocalListTooLong, OutboxEntry, StoreError
from station.diagnostics.log_upload import LogAnswer, LogNote, LogRequest
from station.trust.firmware import FirmwareNote, FirmwareRequest
from station.core.security_events import MESSAGE_QUEUED
from station.ocpp import schema
from station.ocpp import meter_values as _meter_values  # noqa: F401 — registers its outbox kind
from station.ocpp import monitoring as _monitoring  # noqa: F401 — registers its outbox kind
from station.ocpp import reservations as _reservations  # noqa: F401 — registers its outbox kind
from station.ocpp import security_events as _security_events  # noqa: F401 — registers its outbox kind
from station.ocpp.outbox_kinds import UnknownKind, message_for
from station.ocpp.rpc import CallErrorReceived, StrictChargePoint, cancel_all, on_raw

if TYPE_CHECKING:
    from station.ocpp.client import OcppClient

log = structlog.get_logger("station.ocpp")

PHASES = DEFAULT_PHASES


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
    if "currentTime" in response:
        summary["current_time"] = response["currentTime"]
    return summary


class Unsendable(Exception):
    """An outbox entry that cannot be expressed in this version now (e.g. 1.6 without a transactionId)."""


# ------------------------------------------------------------------------ helpers
def iso(value: datetime) -> str:
    """OCPP timestamp: UTC, milliseconds, 'Z'."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def profile_purpose(text: str) -> Purpose | None:
    """An OCPP chargingProfilePurpose (either version's name for the station maximum); None if unsupported."""
    if text in ("ChargePointMaxProfile", "ChargingStationMaxProfile"):
        return Purpose.STATION_MAX
    return Purpose(text) if text in ("TxDefaultProfile", "TxProfile") else None


def charging_profile(connector_id: int, raw: dict[str, Any], schedule: dict[str, Any], *, profile_id: int,
                     transaction_id: str | None = None) -> ChargingProfile | str:
    """An OCPP chargingProfile (both versions name its fields alike) as the core's profile, or why not."""
    purpose = profile_purpose(raw["chargingProfilePurpose"])
    if purpose is None:
        return f"purpose {raw['chargingProfilePurpose']} not supported"
    periods = tuple(Period(int(p["startPeriod"]), float(p["limit"]), p.get("numberPhases"))
                    for p in schedule.get("chargingSchedulePeriod") or [])
    times: dict[str, datetime | None] = {}
    for key, text in (("validFrom", raw.get("validFrom")), ("validTo", raw.get("validTo")),
                      ("startSchedule", schedule.get("startSchedule"))):
        times[key] = parse_time(text) if text else None
        if text and times[key] is None:
            return f"{key} is not a timestamp"
    return ChargingProfile(
        id=profile_id, connector_id=connector_id, stack_level=int(raw["stackLevel"]),
        purpose=purpose,
        kind=Kind(raw["chargingProfileKind"]), periods=periods, rate_unit=str(schedule.get("chargingRateUnit", "A")),
        recurrency=Recurrency(raw["recurrencyKind"]) if raw.get("recurrencyKind") else None,
        valid_from=times["validFrom"], valid_to=times["validTo"], start_schedule=times["startSchedule"],
        duration_s=int(schedule["duration"]) if schedule.get("duration") is not None else None,
        transaction_id=transaction_id,
    )


def composite_periods(core: StationCore, connector_id: int, duration_s: int, unit: str) -> tuple[datetime, list[dict[str, Any]]]:
    """GetCompositeSchedule: the profiles' composite capped by the station's other limits (hardware, local)."""
    targets = list(core.connectors.values()) if connector_id == 0 else [core.connectors[connector_id]]
    other = [a for c in targets for source, a in c.limits.items() if source != "csms"]
    cap = min(other) if other else 32.0  # as Connector.limit_a with no source
    start = core.clock.now().replace(microsecond=0)
    schedule = core.charging.composite(connector_id, duration_s, start)
    periods: list[dict[str, Any]] = []
    for offset, amps in schedule.periods:
        limit = cap if amps is None else min(amps, cap)
        if unit.upper() == "W":
            limit *= NOMINAL_VOLTAGE_V * PHASES
        value = round(limit, 1)
        if periods and periods[-1]["limit"] == value:
            continue
        periods.append({"startPeriod": offset, "limit": value})
    return start, periods


def log_request(payload: dict[str, Any]) -> LogRequest:
    """A GetLog (2.0.1, and 1.6 with the security whitepaper: same fields) as a version-neutral request."""
    params = payload["log"]
    return LogRequest(
        location=params["remoteLocation"], log_type=payload["logType"], request_id=int(payload["requestId"]),
        since=parse_time(params["oldestTimestamp"]) if params.get("oldestTimestamp") else None,
        until=parse_time(params["latestTimestamp"]) if params.get("latestTimestamp") else None,
        retries=payload.get("retries"), retry_interval_s=payload.get("retryInterval"), origin="GetLog",
    )


OUTBOX_BATCH = 100
"""Outbox entries read per pass; also the most confirmed entries awaiting their shared delete."""


class _LaneWake:
    """Wakes both outbox lanes (a transaction event, a queued message, a released entry)."""

    def __init__(self) -> None:
        self.transaction = asyncio.Event()
        self.message = asyncio.Event()

    def set(self) -> None:
        self.transaction.set()
        self.message.set()


class _ConfirmedIds(list[int]):
    """Ids the CSMS confirmed that are not deleted yet, in order; `in` is a set lookup."""

    def __init__(self) -> None:
        super().__init__()
        self._set: set[int] = set()

    def append(self, entry_id: int) -> None:
        super().append(entry_id)
        self._set.add(entry_id)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._set


# ------------------------------------------------------------------------- session
class BaseSession(StrictChargePoint):
    """One connection's worth of OCPP; subclassed once per version."""

    VERSION = ""

    def __init__(self, client: OcppClient, ws: Any) -> None:
        super().__init__(client.params.station_id, ws, self.VERSION, response_timeout=client.response_timeout)
        self.client = client
        self.core: StationCore = client.core
        self.accepted = False
        self.boot_accepted = asyncio.Event()
        self._last_call_id: dict[str, str] = {}
        self._outbox_wake = _LaneWake()
        self._heartbeat_changed = asyncio.Event()
        self._sent_status: dict[int, Any] = {}
        self._first_pass_done = asyncio.Event()
        """The transaction lane has passed once over the messages queued at connect (sent them, or
        stopped at one not due or not confirmed): the connect-time statuses go after it."""
        self._connect_statuses_sent = asyncio.Event()
        """Set once the connect-time statuses were sent (answered or not): the other queued messages follow."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._confirmed = _ConfirmedIds()
        self.records_wire = client.recorder is not None

    # ---- version hooks -------------------------------------------------------
    def boot_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def status_payload(self, conn: Connector) -> tuple[Any, dict[str, Any]]:
        """(dedup key, StatusNotification payload)."""
        raise NotImplementedError

    def transaction_message(self, entry: OutboxEntry) -> tuple[str, dict[str, Any]] | None:
        """The CALL for an outbox entry, or None when this version has no message for it."""
        raise NotImplementedError

    def on_transaction_confirmed(self, entry: OutboxEntry, response: dict[str, Any]) -> None:
        """React to the CSMS's answer (store the 1.6 transactionId, stop on a refused token...)."""

    def authorize_payload(self, id_token: str, token_type: str) -> dict[str, Any]:
        raise NotImplementedError

    def firmware_status_payload(self, note: FirmwareNote, *, triggered: bool = False) -> dict[str, Any] | None:
        """FirmwareStatusNotification for a status, or None when this version has no word for it."""
        raise NotImplementedError

    def authorize_result(self, response: dict[str, Any]) -> AuthResult:
        raise NotImplementedError

    def _apply_profile(self, connector_id: int, raw: dict[str, Any]) -> str | None:
        """Install a charging profile given in the version's shape; why not, or None when installed."""
        raise NotImplementedError

    # ---- remote start (both versions) ----------------------------------------------------
    def remote_start_profile(self, connector_id: int | None, profile: dict[str, Any] | None) -> None:
        """The charging profile a remote start carries, installed once the session is accepted."""
        if profile and connector_id:
            reason = self._apply_profile(connector_id, profile)
            if reason:
                self.log.warning("ocpp: charging profile of the remote start not installed", reason=reason)

    async def start_authorized_remotely(self, connector_id: int | None, id_token: str, token_type: str,
                                        remote_start_id: int | None, profile: dict[str, Any] | None) -> None:
        """AuthorizeRemoteStart (1.6 AuthorizeRemoteTxRequests): after the answer, the token is
        authorized as if presented at the station (local list, cache, Authorize), then started."""
        outcome = await self.core.auth.start(connector_id, id_token, token_type, trigger="RemoteStart",
                                             remote_start_id=remote_start_id)
        if outcome.accepted:
            self.remote_start_profile(connector_id, profile)
        else:
            self.log.warning("ocpp: remote start not carried out", reason=outcome.reason)

    # ---- evidence and live events ---------------------------------------------------
    def on_frame(self, direction: str, action: str | None, message: list[Any]) -> None:
        """Every frame becomes an `ocpp_message` event; answered CSMS calls become evidence."""
        kind = {2: "call", 3: "result", 4: "error"}.get(message[0] if message else 0, "?")
        if kind == "call" and direction == "out":
            self._last_call_id[str(message[2])] = str(message[1])
        elif kind in ("result", "error") and direction == "out" and action:
            status = summarize(message[2]).get("status") if kind == "result" and isinstance(message[2], dict) else "CallError"
            self.client.record(Exchange(action, "in", datetime.now(UTC).isoformat(), unique_id=str(message[1]),
                                        status=str(status) if status is not None else "Accepted"))
        self.core.events.publish("ocpp_message", action=action, direction=direction, type=kind, version=self.version)

    def on_wire(self, direction: str, text: str) -> None:
        """Every frame goes to the flight recorder, masked as in the frame log."""
        recorder = self.client.recorder
        if recorder is not None:
            recorder.record("ocpp", direction, text)

    async def request(self, action: str, payload: dict[str, Any], *, validate: bool = True,
                      timeout: float | None = None, queued: bool = False) -> dict[str, Any]:
        """A CALL to the CSMS, recorded as evidence (status, round trip) for `station --once` and the API."""
        started = time.perf_counter()
        record = Exchange(action, "out", datetime.now(UTC).isoformat())
        try:
            response = await super().request(action, payload, validate=validate, timeout=timeout, queued=queued)
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
        record.status = str(record.response_summary.get("status", "Accepted"))
        return response

    async def probe(self) -> list[dict[str, Any]]:
        """A fresh Heartbeat and StatusNotifications on this connection (for `station --once`)."""
        since = self.client.exchanges_recorded
        await self.send_heartbeat(raise_errors=True)
        for conn in self.core.connectors.values():
            await self.send_status(conn, force=True)
        new = min(self.client.exchanges_recorded - since, len(self.client.exchanges))
        return [e.to_json() for e in list(self.client.exchanges)[len(self.client.exchanges) - new:]]

    # ---- life ------------------------------------------------------------------
    async def run(self) -> None:
        """Serve this connection until it drops (the link cancels us then)."""
        receiver = asyncio.create_task(self.start(), name="ocpp-receive")
        main = asyncio.create_task(self._main(), name="ocpp-main")
        try:
            done, _ = await asyncio.wait({receiver, main}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise ConnectionClosed / bugs for the link to log
        finally:
            self.core.set_csms_online(False)
            await cancel_all((receiver, main, *self._tasks, *self._after_tasks))

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda done: self._follow_up_done(name, done))  # its failure is logged once
        return task

    async def _main(self) -> None:
        if self.client.boot_accepted_version != self.VERSION:
            await self._boot()
        self.accepted = True
        self.boot_accepted.set()
        self.core.set_csms_online(True, self.VERSION)
        self.client.publish_state()
        with self.core.events.subscribe() as events:
            self.spawn(self._heartbeat_loop(), "ocpp-heartbeat")
            self.spawn(self._outbox_loop(), "ocpp-outbox")
            self.spawn(self._connect_statuses(), "ocpp-connect-status")
            self.spawn(schema.warm_up(self._ocpp_version), "ocpp-schema-warm-up")
            async for event in events:
                if event.kind == "connector":
                    conn = self.core.connectors.get(int(event.data["connector_id"]))
                    if conn is not None:
                        await self.send_status(conn)
                elif event.kind in ("transaction", MESSAGE_QUEUED) or (event.kind == "outbox" and event.data.get("released")):
                    self._outbox_wake.set()

    async def _connect_statuses(self) -> None:
        """Every connector's current status (2.0.1 B01), after the transaction lane's first pass
        over what was queued when the link came up (docs/ocpp.md, "Session behaviour"); then the
        background jobs' statuses. A connector whose status a connector event already sent on this
        connection is not sent twice."""
        await self._first_pass_done.wait()
        try:
            for conn in self.core.connectors.values():
                await self.send_status(conn)
        finally:
            self._connect_statuses_sent.set()
        self.spawn(self.client.flush_firmware(), "ocpp-firmware-status")
        self.spawn(self.client.flush_log_status(), "ocpp-log-status")
        self.spawn(self.client.renewal.watch(), "ocpp-certificate-expiry")

    async def _boot(self) -> None:
        while True:
            response = await self.request("BootNotification", self.boot_payload())
            self.client.boot_exchange = self.client.exchanges[-1]
            self.trust_time(response.get("currentTime"))
            interval = int(response.get("interval") or 0)
            status = response.get("status")
            self.client.boot = {"status": status, "interval": interval, "current_time": response.get("currentTime"),
                                "at": datetime.now(UTC).isoformat(), "version": self.VERSION}
            if status == "Accepted":
                if interval > 0:
                    self.client.set_heartbeat_interval(interval, persist=False)
                self.client.boot_accepted_version = self.VERSION
                log.info(f"ocpp: boot accepted by the CSMS (OCPP {self.VERSION})", heartbeat_s=self.client.heartbeat_seconds)
                return
            wait = interval if interval > 0 else self.client.boot_retry_seconds
            log.warning(f"ocpp: boot {status}; retrying in {wait} s")
            await asyncio.sleep(wait)

    def trust_time(self, text: Any) -> None:
        when = parse_time(text) if isinstance(text, str) else None
        if when is not None:
            was = self.core.clock.trusted
            self.core.clock.trust(when, "csms")
            if not was:
                log.info("clock trusted from the CSMS's currentTime", now=iso(self.core.clock.now()))

    async def controller_first(self) -> None:
        """Yield once before answering a remote start, so the charge controller is told first.

        The core has stored the start and started the connector's actuator (with any charging
        profile already applied); one loop turn lets it write the command to the ESP32 before
        the answer is serialised, validated, logged and sent (a few hundred µs here, more on a
        Raspberry Pi). The driver waits on the command, the CSMS only on the answer.
        """
        await asyncio.sleep(0)

    # ---- shutdown ----------------------------------------------------------------
    async def settle_outbox(self, timeout: float) -> None:
        """Wait (at most `timeout` s) until neither outbox lane holds anything it would send now: before
        a Reset the final transaction messages (transaction lane) and the ResetOrReboot event (message
        lane) reach the CSMS first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.accepted and self._sendable_now():
                    await asyncio.sleep(0.02)

    def _sendable_now(self) -> bool:
        """A lane would send an entry now: the transaction lane's head (strict order: nothing behind a head
        that waits for its retry goes out), any due message."""
        try:
            store = self.core.store
            head = [e for e in store.pending_outbox(OUTBOX_BATCH, version=self.VERSION, lane="transaction")
                    if e.id not in self._confirmed][:1]
            if head and head[0].next_attempt <= time.time():
                return True
            due = store.pending_outbox(OUTBOX_BATCH, due_only=True, version=self.VERSION, lane="message")
        except Exception:  # noqa: BLE001 — a broken store: nothing to wait for
            return False
        return any(e.id not in self._confirmed for e in due)

    async def drain(self, timeout: float) -> bool:
        """Send nothing new, wait for the answer in flight, delete what the CSMS confirmed."""
        done = await super().drain(timeout)
        self._flush_confirmed()
        return done

    # ---- heartbeat ---------------------------------------------------------------
    def heartbeat_changed(self) -> None:
        self._heartbeat_changed.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            self._heartbeat_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.client.heartbeat_seconds):
                    await self._heartbeat_changed.wait()
                continue  # interval changed: start waiting afresh
            await self.send_heartbeat()

    async def send_heartbeat(self, *, raise_errors: bool = False) -> None:
        try:
            response = await self.request("Heartbeat", {})
        except (CallErrorReceived, TimeoutError) as exc:
            if raise_errors:
                raise
            log.warning("ocpp: heartbeat not answered", error=str(exc))
            return
        self.trust_time(response.get("currentTime"))
        if not self._connect_statuses_sent.is_set():
            return  # the connect-time statuses are still on their way
        for conn in self.core.connectors.values():
            if conn.id not in self._sent_status:
                await self.send_status(conn)

    # ---- status ------------------------------------------------------------------
    async def send_status(self, conn: Connector, *, force: bool = False) -> None:
        key, payload = self.status_payload(conn)
        if not force and self._sent_status.get(conn.id) == key:
            return
        self._sent_status[conn.id] = key
        try:
            await self.request("StatusNotification", payload)
        except (CallErrorReceived, TimeoutError) as exc:
            log.warning("ocpp: StatusNotification not confirmed", connector_id=conn.id, error=str(exc) or type(exc).__name__)
            self._sent_status.pop(conn.id, None)  # sent again after the next answered Heartbeat (docs/interop.md)

    # ---- remote update -------------------------------------------------------------
    async def send_firmware_status(self, note: FirmwareNote, *, triggered: bool = False) -> None:
        payload = self.firmware_status_payload(note, triggered=triggered)
        if payload is not None:
            await self.request("FirmwareStatusNotification", payload)

    async def start_firmware_update(self, request: FirmwareRequest) -> tuple[str, str]:
        """(answer status, reason) for an UpdateFirmware; the work begins in `launch_firmware_update`."""
        if self.client.firmware is None:
            return "Rejected", "remote update not configured"
        answer = await self.client.firmware.start(request)
        self.log.info("ocpp: UpdateFirmware", status=answer.status, reason=answer.reason or None)
        return answer.status, answer.reason

    def launch_firmware_update(self) -> None:
        if self.client.firmware is not None:
            self.client.firmware.launch()

    # ---- log uploads -------------------------------------------------------------------
    def log_status_message(self, note: LogNote, *, triggered: bool = False) -> tuple[str, dict[str, Any]] | None:
        """(action, payload) reporting a log upload's status, or None when this version has no word for it."""
        raise NotImplementedError

    async def send_log_status(self, note: LogNote, *, triggered: bool = False) -> None:
        message = self.log_status_message(note, triggered=triggered)
        if message is not None:
            await self.request(*message)

    async def start_log_upload(self, request: LogRequest) -> LogAnswer:
        """The answer to a GetLog / GetDiagnostics; the work begins in `launch_log_upload`."""
        if self.client.logs is None:
            return LogAnswer("Rejected", reason="log upload not configured")
        answer = await self.client.logs.check_target(request) or self.client.logs.start(request)
        self.log.info(f"ocpp: {request.origin}", status=answer.status, filename=answer.filename, reason=answer.reason or None)
        return answer

    def launch_log_upload(self) -> None:
        if self.client.logs is not None:
            self.client.logs.launch()

    # ---- outbox ------------------------------------------------------------------
    def wake_outbox(self) -> None:
        self._outbox_wake.set()

    async def _outbox_loop(self) -> None:
        """The outbox's two lanes side by side: a refused status report, security event or NotifyEvent
        is retried on its own schedule and never holds up a transaction message (issue 22)."""
        try:
            async with asyncio.TaskGroup() as lanes:
                lanes.create_task(self._transaction_lane(), name="ocpp-outbox-transactions")
                lanes.create_task(self._message_lane(), name="ocpp-outbox-messages")
        except BaseExceptionGroup as failed:
            # A lane's send failed (the link closed under it) and the other lane was cancelled with it:
            # the owner gets that failure itself, reported like any follow-up's (a closed link is a
            # warning), not an "unhandled" ExceptionGroup with a traceback in the log.
            raise failed.exceptions[0] from None
        finally:
            self._flush_confirmed()

    def _read_lane(self, lane: str, *, due_only: bool = False) -> list[OutboxEntry]:
        try:
            # Messages of a transaction bound to the other version wait for it (docs/ocpp.md).
            entries = self.core.store.pending_outbox(OUTBOX_BATCH, version=self.VERSION, lane=lane, due_only=due_only)
        except Exception as exc:  # noqa: BLE001 — a broken store is reported, the link stays
            log.error("ocpp: cannot read the outbox", error=str(exc))
            return []
        return [e for e in entries if e.id not in self._confirmed]

    async def _transaction_lane(self) -> None:
        """Transaction messages strictly in order: a refused one is retried before any later one."""
        wake = self._outbox_wake.transaction
        while True:
            wake.clear()
            self._flush_confirmed()
            entries = self._read_lane("transaction")
            if not entries:
                self._first_pass_done.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await wake.wait()
                continue
            backlog = len(entries) >= OUTBOX_BATCH  # replaying a queue: share the deletes' fsync
            for entry in entries:
                wait = entry.next_attempt - time.time()
                if wait > 0:
                    self._first_pass_done.set()  # nothing more to send now: the statuses need not wait for it
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await wake.wait()  # a release (station outbox release) retries at once
                    break  # re-read: keep strict order
                if not await self._deliver(entry):
                    break
                if not backlog:
                    self._flush_confirmed()
            self._first_pass_done.set()

    async def _message_lane(self) -> None:
        """The other queued messages in order of recording, each on its own retry schedule: one the
        CSMS refused waits for its next attempt without holding up those behind it."""
        wake = self._outbox_wake.message
        await self._connect_statuses_sent.wait()  # B01's order: boot, statuses, then these
        while True:
            wake.clear()
            self._flush_confirmed()
            entries = self._read_lane("message", due_only=True)
            for entry in entries:
                await self._deliver(entry)
            self._flush_confirmed()
            if len(entries) >= OUTBOX_BATCH:
                continue
            try:
                due = self.core.store.next_outbox_attempt("message")
            except Exception:  # noqa: BLE001 — reported by _read_lane on the next pass
                due = None
            # Due already: a message queued meanwhile (its wake is set: no wait) or one the store could
            # not update or delete (refused write): retried a second later, never in a tight loop.
            now = time.time()
            wait = 5.0 if due is None else min(5.0, due - now) if due > now else 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await wake.wait()

    async def _deliver(self, entry: OutboxEntry) -> bool:
        """Send one entry; True when it left the queue (confirmed, skipped or parked).

        A confirmed entry is deleted by `_flush_confirmed`: at once normally, and while a backlog
        is replayed in one commit with the others confirmed in the same pass (at most
        `OUTBOX_BATCH`): deletion still follows the CSMS's confirmation, only the fsync is shared.
        """
        try:
            message = self.transaction_message(entry) if entry.is_transaction else message_for(self, entry)
        except (Unsendable, UnknownKind) as exc:
            return self._failed(entry, str(exc), park_now=True)
        if message is None:
            log.debug("ocpp: outbox entry has no message in this version", entry=entry.id, kind=entry.kind)
            self._confirmed.append(entry.id)
            return True
        action, payload = message
        if entry.kind == "started":
            try:  # before it can reach the CSMS: a Started sent once binds the transaction to this version
                self.core.pin_transaction_version(entry.transaction_id, self.VERSION)
            except StoreError:
                return False
        try:
            response = await self.request(action, payload, queued=True)  # live calls may go first
        except CallErrorReceived as exc:
            return self._failed(entry, f"CALLERROR {exc.code}: {exc.description}")
        except TimeoutError:
            # No answer is not a refusal: the CSMS may be slow or may even have stored it. Retried
            # (at-least-once) until answered, never parked, so a slow CSMS loses nothing.
            return self._failed(entry, "no answer from the CSMS", may_park=False)
        except OCPPError as exc:  # our payload or their answer violates the schema
            return self._failed(entry, f"{exc.code}: {exc.details.get('cause', '') if isinstance(exc.details, dict) else ''}"[:300])
        self._confirmed.append(entry.id)
        if not entry.is_transaction:
            return True
        try:
            self.on_transaction_confirmed(entry, response)
        except Exception:  # noqa: BLE001 — the CSMS confirmed; never resend because our follow-up failed
            log.exception("ocpp: handling the CSMS's transaction answer failed", entry=entry.id)
        return True

    def _flush_confirmed(self) -> None:
        """Delete the confirmed entries (one commit); on a store error they stay listed and are retried."""
        if not self._confirmed:
            return
        try:
            self.core.store.ack_outbox_many(self._confirmed)
        except StoreError:
            return
        self._confirmed = _ConfirmedIds()
        self.core.events.publish("outbox", depth=self._depth())

    def _depth(self) -> int:
        try:
            return self.core.store.outbox_depth()
        except Exception:  # noqa: BLE001
            return -1

    def _failed(self, entry: OutboxEntry, error: str, *, park_now: bool = False, may_park: bool = True) -> bool:
        attempts = entry.attempts + 1
        model = self.core.device_model
        limit = int(model.value("OCPPCommCtrlr", "MessageAttempts", instance="TransactionEvent"))
        interval = float(model.value("OCPPCommCtrlr", "MessageAttemptInterval", instance="TransactionEvent"))
        park = park_now or (may_park and attempts >= limit)
        delay = interval * min(attempts, limit)
        try:
            self.core.store.retry_outbox(entry.id, error, delay, park=park)
        except StoreError:
            return False
        self.core.events.publish("outbox", depth=self._depth())
        if park:
            log.error(
                "ocpp: queued message parked for inspection (not sent again)",
                entry=entry.id, transaction_id=entry.transaction_id, kind=entry.kind, seq_no=entry.seq_no,
                attempts=attempts, error=error,
            )
            return True
        log.warning(
            f"ocpp: queued message not confirmed; retry {attempts}/{limit} in {delay:g} s",
            entry=entry.id, transaction_id=entry.transaction_id, kind=entry.kind, error=error,
        )
        return False

    def event_time(self, entry: OutboxEntry) -> str:
        """When the event really happened: corrected if it was stamped before the clock was trusted."""
        s = entry.stamp
        return iso(self.core.clock.correct(s.wall, s.mono, s.boot_id, s.trusted))

    # --- CSMS calls answered alike in both versions ----------------------------------------
    def update_local_list(self, version: int, full: bool, entries: dict[str, tuple[str, str | None] | None]) -> str:
        """SendLocalList, once the version's payload is read: the answer's status."""
        if not full and version <= self.core.store.local_list_version():
            return "VersionMismatch"
        try:
            self.core.store.local_list_update(version, entries, full=full, max_entries=self.core.auth.local_list_limit())
        except (StoreError, LocalListTooLong):
            return "Failed"
        return "Accepted"

    @on_raw("ClearCache")
    def on_clear_cache(self, payload: dict[str, Any]) -> dict[str, Any]:
        if not self.core.auth.setting("AuthCacheCtrlr", "Enabled"):
            return {"status": "Rejected"}  # C11.FR.04: no cache in use, nothing was cleared
        try:
            self.core.store.cache_clear()
        except StoreError:
            return {"status": "Rejected"}
        return {"status": "Accepted"}

    @on_raw("DataTransfer")
    def on_data_transfer(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.log.info("ocpp: DataTransfer from an unknown vendor rejected", vendor_id=payload.get("vendorId"))
        return {"status": "UnknownVendorId"}
