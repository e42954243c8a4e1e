"""The OCPP client the daemon runs: link + per-connection version session.

    client = OcppClient(link_params, core, on_reset=...)
    await client.run()          # until cancelled

It is also the core's `Authorizer`: Authorize goes to the CSMS while a session is up and
accepted, otherwise the core falls back to its local list and cache. Its settings
(HeartbeatInterval, message attempts...) live in the core's device model; it binds the
communication variables it owns there.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog

from station import __version__
from station.core.station import AuthResult, StationCore
from station.core.store import StoreError
from station.trust.firmware import FirmwareNote, FirmwareStatus, FirmwareUpdater
from station.diagnostics.log_upload import JOB_TASK_NAME, LogNote, LogStatus, LogUploader
from station.diagnostics.recorder import FlightRecorder
from station.ocpp.base import BaseSession, Exchange
from station.ocpp.connection import LinkParams, LinkState, OcppLink, VersionRefused, public_url
from station.ocpp import schema
from station.ocpp.endpoints import Endpoints
from station.ocpp.rpc import LIBRARY_VERSION, CallErrorReceived, cancel_all, log_failure
from station.ocpp.status_relay import StatusRelay
from station.ocpp.security import Renewal, report_event

if TYPE_CHECKING:
    from station.trust.credentials import Credentials

log = structlog.get_logger("station.ocpp")

VERSION_REFUSALS = frozenset({"NotImplemented", "NotSupported", "ProtocolError", "FormatViolation",
                              "FormationViolation"})
"""CALLERROR codes to a BootNotification that mean "not this OCPP version here": the link switches."""

DRAIN_S = 3.0
"""At exit, the longest wait for the answer to the call in flight (issue 22: Reset drains)."""
RESET_SETTLE_S = 5.0
"""Before a Reset, the longest wait for the outbox to send what it can (Ended, ResetOrReboot)."""

ResetCallback = Callable[[str], Awaitable[None]]
"""Called after a Reset was accepted and transactions were ended; "Immediate"/"Hard" or "OnIdle"/"Soft"."""


@dataclass(frozen=True)
class StationInfo:
    """What BootNotification says about the hardware."""

    vendor: str = "Orge"
    model: str = "AC22"
    serial_number: str | None = None
    firmware_version: str = __version__


class OcppClient:
    def __init__(
        self,
        params: LinkParams,
        core: StationCore,
        *,
        info: StationInfo | None = None,
        heartbeat_seconds: int = 300,
        boot_retry_seconds: float = 60,
        response_timeout: float = 30,
        on_reset: ResetCallback | None = None,
        on_link_state: Callable[[LinkState], None] | None = None,
        firmware: FirmwareUpdater | None = None,
        credentials: Credentials | None = None,
        logs: LogUploader | None = None,
        recorder: FlightRecorder | None = None,
        boot_reason: str = "PowerUp",
        endpoints: Endpoints | None = None,
    ) -> None:
        self.params = params
        self.core = core
        self.boot_reason = boot_reason
        """Why this process started (station.boot_reason); 2.0.1 BootNotification's `reason`."""
        self.info = info or StationInfo()
        self.boot_retry_seconds = boot_retry_seconds
        self.response_timeout = response_timeout
        self.on_reset = on_reset
        self._on_link_state = on_link_state
        self.credentials = credentials
        """Password, client certificate, profile and roots the CSMS may change; None: fixed (tests, --once)."""
        self._owned: set[asyncio.Task[Any]] = set()
        self.renewal = Renewal(self)
        if credentials is not None:
            credentials.on_event = lambda kind, info: report_event(self, kind, info)
        self.endpoints = endpoints
        """Network connection profiles (SetNetworkProfile, NetworkConfigurationPriority); None: the configured URLs only."""
        self._link_changed = asyncio.Event()
        self._failures_at_connect = 0
        if endpoints is not None:
            endpoints.on_outcome = self._profile_outcome
        self.link = self._new_link(endpoints.params() if endpoints is not None else params)
        self.session: BaseSession | None = None
        self.boot_accepted_version: str | None = None
        self._remembered: tuple[str, str] | None = None
        self.exchanges: deque[Exchange] = deque(maxlen=100)
        self.exchanges_recorded = 0
        """Exchanges ever recorded: `exchanges` is bounded, its length stops growing once it is full."""
        self.boot: dict[str, Any] | None = None
        self.boot_exchange: Exchange | None = None
        """Evidence of the BootNotification this process's link was accepted with."""
        self._reset_task: asyncio.Task[None] | None = None
        self.firmware = firmware
        """Remote update (UpdateFirmware); None: requests are refused."""
        self._firmware_status: StatusRelay[FirmwareNote] = StatusRelay(
            lambda: self.session, lambda session, note: session.send_firmware_status(note),
            "FirmwareStatusNotification", on_delivered=self._firmware_delivered)
        if firmware is not None:
            firmware.notify = self._firmware_status.notify
            firmware.security_event = core.security_events.record
        self.logs = logs
        """Log uploads (GetLog, GetDiagnostics); None: requests are refused."""
        self.recorder = recorder
        """The flight recorder every OCPP frame is written to; None: not recorded."""
        self._log_status: StatusRelay[LogNote] = StatusRelay(
            lambda: self.session, lambda session, note: session.send_log_status(note), "log status",
            superseded_in_task=JOB_TASK_NAME,  # a replaced upload's status is not sent again
            on_delivered=logs.delivered if logs is not None else None)  # a final status delivered ends the saved request
        if logs is not None:
            logs.notify = self._log_status.notify
        self._bind_variables(heartbeat_seconds)
        core.authorizer = self

    def _bind_variables(self, heartbeat_seconds: int) -> None:
        model = self.core.device_model
        model.set_default("OCPPCommCtrlr", "HeartbeatInterval", max(1, int(heartbeat_seconds)))
        model.bind("OCPPCommCtrlr", "HeartbeatInterval", apply=lambda *_: self._heartbeat_changed())
        model.bind("OCPPCommCtrlr", "MessageTimeout", instance="Default", get=lambda _: round(self.response_timeout))
        model.bind("OCPPCommCtrlr", "WebSocketPingInterval", apply=lambda _, seconds: self.link.set_ping_interval(seconds))
        model.bind("OCPPCommCtrlr", "NetworkConfigurationPriority", get=lambda _: self._priority(),
                   apply=lambda _, order: self._set_priority(str(order)))
        for variable, value in backoff_variables(self.link.params).items():  # live: the link's full-jitter backoff
            model.bind("OCPPCommCtrlr", variable, get=lambda _, v=variable: backoff_variables(self.link.params)[v])
        model.bind("SecurityCtrlr", "Identity", get=lambda _: self.params.station_id)
        model.bind("SecurityCtrlr", "SecurityProfile", get=lambda _: self.link.profile,
                   apply=lambda _, profile: self.raise_security_profile(int(profile)))
        model.bind("SecurityCtrlr", "BasicAuthPassword", apply=lambda _, text: self.change_password(str(text)))
        model.bind("SecurityCtrlr", "CertificateEntries",
                   get=lambda _: self.credentials.roots.count() if self.credentials else 0)
        model.bind("SecurityCtrlr", "AdditionalRootCertificateCheck",
                   get=lambda _: bool(self.credentials and self.credentials.additional_root_check))
        info = self.info
        for variable, value in (("Model", info.model), ("VendorName", info.vendor),
                                ("SerialNumber", info.serial_number or ""), ("FirmwareVersion", info.firmware_version)):
            model.set_default("ChargingStation", variable, value)

    def _priority(self) -> str:
        return self.endpoints.priority() if self.endpoints is not None else "0"

    def _set_priority(self, order: str) -> None:
        """NetworkConfigurationPriority: used from the next start; ValueError names an unknown slot."""
        if self.endpoints is None:
            raise ValueError("this station keeps no network profiles")
        self.endpoints.set_priority(order)

    def _new_link(self, params: LinkParams) -> OcppLink:
        params = replace(params, start_version=self._remembered_version(params))
        link = OcppLink(params, self._on_session, on_state=self._link_state_changed, credentials=self.credentials,
                        needs=self.core.store.versions_needed, on_security_event=self.core.security_events.record)
        model = self.core.device_model  # WebSocketPingInterval: the CSMS's value, else the configured one
        model.set_default("OCPPCommCtrlr", "WebSocketPingInterval", round(params.ping_interval))
        link.set_ping_interval(int(model.value("OCPPCommCtrlr", "WebSocketPingInterval")))
        return link

    async def run(self) -> None:
        """Keep the CSMS link up until cancelled (and watch for a remote update's outcome)."""
        watcher = asyncio.create_task(self.firmware.run(), name="firmware-result") if self.firmware else None
        if self.logs is not None:
            self.logs.resume()  # a log upload accepted before a restart is carried on or reported failed
        warm = asyncio.create_task(schema.warm_up_boot(LIBRARY_VERSION[self.link.primary]), name="ocpp-boot-warm-up")
        try:
            if self.endpoints is not None and self.endpoints.switching:
                await self._run_profiles(self.endpoints)
            else:
                await self.link.run()
        finally:
            await cancel_all([warm])
            if self._reset_task is not None:
                self._reset_task.cancel()
            await cancel_all([t for t in (watcher, *self._owned) if t is not None])
            if self.logs is not None:
                await self.logs.close()

    async def _run_profiles(self, endpoints: Endpoints) -> None:
        """Run the link on one network profile after the other (see station.ocpp.endpoints)."""
        while True:
            task = asyncio.create_task(self.link.run(), name="ocpp-link")
            self._failures_at_connect = self.link.state.failed_attempts
            try:
                while not task.done():
                    attempts = max(1, int(self.core.device_model.value("OCPPCommCtrlr", "NetworkProfileConnectionAttempts")))
                    failures = self.link.state.failed_attempts - self._failures_at_connect
                    if failures >= attempts and not endpoints.staying:
                        break
                    self._link_changed.clear()
                    waiter = asyncio.ensure_future(self._link_changed.wait())
                    try:
                        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
            finally:
                await cancel_all([task])
            failures = self.link.state.failed_attempts - self._failures_at_connect
            endpoints.failed(failures, self.link.state.last_error)
            self.boot_accepted_version = None  # B10.FR.10: a BootNotification on the new connection
            self.link = self._new_link(endpoints.params())

    def _profile_outcome(self, entry: dict[str, Any]) -> None:
        self.core.events.publish("network_profile", **entry)

    def own(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task of the client (renewal, reconnects) to cancel it on shutdown."""
        self._owned.add(task)
        task.add_done_callback(self._owned.discard)
        log_failure(task, f"ocpp: {task.get_name()}", log)

    # ---- observability -----------------------------------------------------------------
    def _link_state_changed(self, state: LinkState) -> None:
        if state.connected:
            self._failures_at_connect = state.failed_attempts
        self._link_changed.set()
        self.publish_state()
        if self._on_link_state is not None:
            self._on_link_state(state)

    def record(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        self.exchanges_recorded += 1

    # ---- version last accepted per CSMS endpoint (issue 22) ------------------------------
    @staticmethod
    def _endpoint_key(params: LinkParams) -> str:
        urls = (public_url(params.url_201 or ""), public_url(params.url_16 or ""))
        return "ocpp:accepted_version:" + "|".join(urls)

    def _remembered_version(self, params: LinkParams) -> str | None:
        """The version this CSMS endpoint last accepted a BootNotification in: the link starts there."""
        try:
            version = self.core.store.get(self._endpoint_key(params))
        except Exception:  # noqa: BLE001 — a broken store: start with the primary
            return None
        return version if version in ("201", "16") else None

    def _remember_version(self, version: str) -> None:
        """Durably (SQLite): after a restart during an outage the station still offers this version."""
        key = self._endpoint_key(self.link.params)
        if self._remembered == (key, version):
            return
        try:
            if self.core.store.get(key) != version:
                self.core.store.put(key, version)
        except Exception as exc:  # noqa: BLE001 — not remembered: the next start offers the primary
            log.warning("ocpp: accepted version not remembered", error=str(exc))
            return
        self._remembered = (key, version)

    def publish_state(self) -> None:
        session = self.session
        if session is not None and session.boot_accepted.is_set():
            self._remember_version(session.VERSION)
        if self.endpoints is not None and self.session is not None and self.session.boot_accepted.is_set():
            self.endpoints.accepted(self.core.security_events.record)
        self.core.events.publish("csms", **self.status())

    def status(self) -> dict[str, Any]:
        """Link state plus boot outcome and heartbeat interval; JSON-ready, no secrets."""
        state = self.link.state.as_dict()
        state["booted"] = bool(self.session and self.session.boot_accepted.is_set())
        state["boot"] = self.boot
        state["heartbeat_seconds"] = self.heartbeat_seconds
        if self.endpoints is not None:
            state["network_profile"] = self.endpoints.describe(self.endpoints.slot)
        try:
            state["parked_messages"] = self.core.store.parked_count()
            state["unfinished_by_version"] = self.core.store.versions_needed()
            version = self.link.state.version if self.link.state.connected else None
            state["held_messages"] = self.core.store.held_outbox(version) if version else None
        except Exception:  # noqa: BLE001 — a broken store must not break a status read
            state["parked_messages"] = state["unfinished_by_version"] = state["held_messages"] = None
        return state

    async def probe(self) -> dict[str, Any]:
        """Heartbeat + StatusNotifications now, with their evidence (for `station --once`)."""
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

    async def _on_session(self, ws: Any, version: str) -> None:
        from station.ocpp.v16 import V16Session
        from station.ocpp.v201 import V201Session

        session: BaseSession = V201Session(self, ws) if version == "201" else V16Session(self, ws)
        self.session = session
        try:
            await session.run()
        except CallErrorReceived as exc:
            if exc.action == "BootNotification" and not session.boot_accepted.is_set() and exc.code in VERSION_REFUSALS:
                raise VersionRefused(f"BootNotification answered {exc.code}") from None
            raise
        finally:
            if self.session is session:
                self.session = None
            self.publish_state()

    # ---- Authorizer ----------------------------------------------------------------
    async def authorize(self, id_token: str, token_type: str) -> AuthResult | None:
        session = self.session
        if session is None or not session.accepted:
            return None
        try:
            response = await session.request("Authorize", session.authorize_payload(id_token, token_type), timeout=10)
        except (CallErrorReceived, TimeoutError, ConnectionError) as exc:
            log.warning("ocpp: Authorize not answered; using local authorization", error=str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 — link closed mid-call etc.
            log.warning("ocpp: Authorize failed; using local authorization", error=exc.__class__.__name__)
            return None
        return session.authorize_result(response)

    # ---- remote update (FirmwareStatusNotification) ------------------------------------
    def firmware_note(self) -> FirmwareNote:
        """The status a triggered FirmwareStatusNotification reports."""
        return self.firmware.current() if self.firmware is not None else FirmwareNote(FirmwareStatus.IDLE)

    async def flush_firmware(self) -> None:
        """Send the latest undelivered firmware status (after a reconnect: the session calls this)."""
        await self._firmware_status.flush()

    def _firmware_delivered(self, note: FirmwareNote) -> None:
        """A final status is confirmed to the updater once the CSMS has it."""
        if note.final and self.firmware is not None:
            self.firmware.confirm_result()

    # ---- log uploads (LogStatusNotification / DiagnosticsStatusNotification) -------------
    def log_note(self) -> LogNote:
        """The status a triggered log status notification reports."""
        return self.logs.current() if self.logs is not None else LogNote(LogStatus.IDLE)

    async def flush_log_status(self) -> None:
        """Send the latest undelivered log status (after a reconnect: the session calls this)."""
        await self._log_status.flush()

    # ---- heartbeat interval (OCPPCommCtrlr.HeartbeatInterval) ------------------------
    @property
    def heartbeat_seconds(self) -> int:
        return int(self.core.device_model.value("OCPPCommCtrlr", "HeartbeatInterval"))

    # ---- security settings (A01, A05) -------------------------------------------------
    def change_password(self, text: str) -> None:
        """BasicAuthPassword / AuthorizationKey: stored 0600, tried on a reconnect right after the answer."""
        if self.credentials is None:
            raise ValueError("the password is fixed by the station's configuration")
        self.credentials.set_password(text, self.session.VERSION if self.session else "201")
        if self.link.profile in (1, 2):
            self._reconnect_soon()

    def raise_security_profile(self, profile: int) -> None:
        """SecurityCtrlr.SecurityProfile / SecurityProfile: only up (A05); ValueError says why not."""
        if self.credentials is None:
            raise ValueError("the security profile is fixed by the station's configuration")
        self.credentials.raise_profile(profile)
        self._reconnect_soon()

    def profile_refusal(self, profile: int) -> str | None:
        """Why the security profile cannot be raised to `profile` now (for SetNetworkProfile); None: it can."""
        if self.credentials is None:
            return "the security profile is fixed by the station's configuration"
        return self.credentials.profile_refusal(profile)

    def _reconnect_soon(self) -> None:
        async def reconnect() -> None:
            await asyncio.sleep(0.3)  # the answer goes out first
            await self.link.disconnect()

        self.own(asyncio.get_running_loop().create_task(reconnect(), name="ocpp-reconnect"))

    def set_heartbeat_interval(self, seconds: int, *, persist: bool) -> None:
        """The CSMS's interval (BootNotification: this run only; SetVariables: persisted)."""
        try:
            self.core.device_model.set("OCPPCommCtrlr", "HeartbeatInterval", max(1, int(seconds)), persist=persist)
        except StoreError:
            self.core.device_model.set("OCPPCommCtrlr", "HeartbeatInterval", max(1, int(seconds)), persist=False)

    def _heartbeat_changed(self) -> None:
        if self.session is not None:
            self.session.heartbeat_changed()

    # ---- reset and shutdown -------------------------------------------------------------
    async def drain(self, timeout: float = DRAIN_S) -> None:
        """Before the process exits (Reset, SIGTERM): nothing new is sent; the answer to the call in
        flight is awaited (bounded), so nothing the CSMS answered is sent again after the restart."""
        session = self.session
        if session is not None and session.accepted:
            if not await session.drain(timeout):
                log.warning("ocpp: exiting with a call unanswered", waited_s=timeout)

    def schedule_reset(self, kind: str, *, when_idle: bool) -> None:
        """Run `on_reset(kind)` shortly (after the response went out) or once no transaction runs."""
        if self._reset_task is not None and not self._reset_task.done():
            return
        self._reset_task = asyncio.get_running_loop().create_task(self._reset(kind, when_idle), name="ocpp-reset")
        log_failure(self._reset_task, "ocpp: reset", log)

    async def _reset(self, kind: str, when_idle: bool) -> None:
        while when_idle and any(c.transaction for c in self.core.connectors.values()):
            await asyncio.sleep(1)
        await asyncio.sleep(0.2)  # let the response and the final transaction messages go out first
        log.warning("ocpp: reset requested by the CSMS", kind=kind)
        self.core.security_events.record("ResetOrReboot", f"{kind} reset requested by the CSMS")
        if self.session is not None:  # the final transaction messages and this event go out first
            await self.session.settle_outbox(RESET_SETTLE_S)
        if self.on_reset is not None:
            await self.on_reset(kind)


def backoff_variables(params: LinkParams) -> dict[str, int]:
    """The reconnect backoff in OCPP's words: wait at least `backoff_min`, double it up to
    `backoff_max` (RepeatTimes doublings), a random part of up to max - min (full jitter)."""
    low, high = max(1.0, float(params.backoff_min)), max(1.0, float(params.backoff_max))
    return {"RetryBackOffWaitMinimum": round(params.backoff_min),
            "RetryBackOffRepeatTimes": max(0, math.ceil(math.log2(high / low))) if high > low else 0,
            "RetryBackOffRandomRange": max(0, round(params.backoff_max - params.backoff_min))}


def link_params(settings: Any) -> LinkParams:
    """The connection manager's parameters from the station settings."""
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
        primary_retry_seconds=settings.primary_retry_seconds,
        version_return_seconds=settings.version_return_seconds,
        backoff_min=settings.backoff_min_seconds,
        backoff_max=settings.backoff_max_seconds,
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
    )
