"""The station's protocol-neutral brain: connectors, authorization, transactions, limits, availability.

Inputs arrive from the hardware links (`on_controller_status`, `on_controller_link`,
`on_meter_reading`) and from command sources (OCPP adapter, IPC); after each,
`_reconcile` recomputes the connector's status, starts or ends transactions and
decides what the charge controller must be told. Commands to the controller run
in one actuator task per connector, because a link's confirmation arrives
through the same callback that triggered the command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from datetime import datetime
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from station.core.authorization import Authorization, Settings
from station.core.clock import Clock, Stamp
from station.core.metering import (
    MEASURAND_SETTING,
    SENDABLE,
    AlignedSampler,
    bind_metering,
    parse_measurands,
    sample_interval,
)
from station.core.tx_ended import TxEndedSamples
from station.core.connector import DerivedStatus, derive_status, relay_may_close
from station.core.device_model import DeviceModel
from station.core.device_state import bind_core
from station.core.monitoring_service import MonitoringService
from station.core.standard_variables import STANDARD
from station.core.events import EventBus
from station.core.security_events import MESSAGE_QUEUED, SecurityEventLog
from station.core.smart_charging import SmartCharging
from station.core.reservations import Reservations
from station.core import tx_points
from station.core.model import ConnectorStatus, ControllerState, ControllerStatus, MeterReading, PilotState
from station.core.ports import ChargeController, ControllerError
from station.core.store import OutboxEntry, Store, StoreError, TransactionRecord

log = structlog.get_logger(__name__)

AuthStatus = Literal["Accepted", "Blocked", "Expired", "Invalid", "Unknown", "ConcurrentTx", "NoCredit"]


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: str
    expires_at: str | None = None
    group_id: str | None = None
    """groupIdToken (2.0.1) or parentIdTag (1.6): tokens of one group may stop each other's transactions."""


class Authorizer(Protocol):
    """Asks the CSMS whether a token may charge; None when the CSMS cannot be asked now."""

    async def authorize(self, id_token: str, token_type: str) -> AuthResult | None: ...


@dataclass(slots=True)
class PendingAuthorization:
    id_token: str
    token_type: str
    remote_start_id: int | None
    trigger: str
    expires_mono: float
    group_id: str | None = None
    reservation_id: int | None = None
    """The reservation this authorization used (ended at authorization, named in the Started event)."""


@dataclass(slots=True)
class Connector:
    id: int
    controller: ChargeController | None = None
    report: ControllerStatus | None = None
    link_up: bool = False
    link_reason: str = "not connected yet"
    link_since: datetime | None = None
    """When the ESP32 link last went up or down (None: down since the daemon started); the status page says "since"."""
    status_since: datetime | None = None
    """When the OCPP status last changed (None: the status it started with)."""
    operative: bool = True
    inoperative_scheduled: bool = False
    derived: DerivedStatus = field(
        default_factory=lambda: DerivedStatus(ConnectorStatus.FAULTED, "InternalError", "charge controller link down")
    )
    transaction: TransactionRecord | None = None
    pending: PendingAuthorization | None = None
    limits: dict[str, float] = field(default_factory=dict)
    last_meter: MeterReading | None = None
    last_periodic: float = 0.0
    actuator: asyncio.Task[None] | None = None
    actuate_again: bool = False
    last_command_error: str | None = None
    points_seen: set[str] = field(default_factory=set)
    """Transaction points (tx_points) that held during the running transaction: only those can end it."""
    ev_wait_deadline: float | None = None
    """A transaction started before an EV was plugged in (TxStartPoint Authorized) ends at this time."""
    deauthorized: tuple[str, str, tuple[str, str] | None] | None = None
    """(reason, trigger, stop token) of a stop request that only deauthorized the running transaction."""
    reservation: dict[str, Any] | None = None
    """The reservation this connector shows (set when the status is derived)."""

    @property
    def limit_a(self) -> float:
        return min(self.limits.values()) if self.limits else 32.0

    @property
    def vehicle_present(self) -> bool:
        return self.report is not None and self.report.pilot in (PilotState.B, PilotState.C, PilotState.D)

    def to_json(self) -> dict[str, Any]:
        r = self.report
        return {
            "id": self.id,
            "status": self.derived.status.value,
            "error_code": self.derived.error_code,
            "info": self.derived.info,
            "charging_state": self.derived.charging_state,
            "operative": self.operative,
            "inoperative_scheduled": self.inoperative_scheduled,
            "status_since": self.status_since.isoformat() if self.status_since else None,
            "controller_link": {"up": self.link_up, "reason": self.link_reason,
                                "since": self.link_since.isoformat() if self.link_since else None,
                                "firmware": self.controller.firmware if self.controller else None},
            "pilot": r.pilot.value if r else None,
            "controller_state": r.state.name if r else None,
            "relay_closed": r.relay_closed if r else None,
            "controller_authorized": r.authorized if r else None,
            "offered_current_a": r.max_current_a if r else None,
            "limit_a": self.limit_a,
            "limits": dict(self.limits),
            "transaction": self.transaction.to_json() if self.transaction else None,
            "pending_authorization": bool(self.pending),
            "meter": meter_json(self.last_meter),
            "last_command_error": self.last_command_error,
            "reservation": self.reservation,
        }


def _log_actuator_failure(task: asyncio.Task[None]) -> None:
    """The core owns its actuator tasks: a failure other than a refused command is logged once."""
    if not task.cancelled() and task.exception() is not None:
        log.error("charge controller actuator failed", task=task.get_name(), exc_info=task.exception())


def meter_json(reading: MeterReading | None) -> dict[str, Any] | None:
    if reading is None:
        return None
    return {
        "energy_wh": reading.energy_import_wh,
        "power_w": reading.power_w,
        "current_a": list(reading.current_a) if reading.current_a else None,
        "voltage_v": list(reading.voltage_v) if reading.voltage_v else None,
        "frequency_hz": reading.frequency_hz,
    }


class StationCore:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock | None = None,
        connector_ids: Iterable[int] = (1,),
        max_current_a: int = 32,
        meter_value_seconds: float = 60.0,
        connection_timeout_s: float = 60.0,
        has_meter: bool = False,
        settings: Settings | None = None,
        measurands: Iterable[str] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or Clock()
        self.events = EventBus()
        self.security_events = SecurityEventLog(store, self.clock, self.events)
        """record(type, tech_info): local security log + durable SecurityEventNotification."""
        self.clock.on_step = self._clock_stepped
        self.authorizer: Authorizer | None = None
        self.csms_online = False
        self.csms_version: str | None = None
        """The OCPP version of the CSMS connection while online ("201" / "16")."""
        self.last_csms_version: str | None = None
        """The OCPP version of the latest CSMS connection (kept while offline)."""
        self.has_meter = has_meter
        self.meter_health: dict[str, Any] | None = None
        """The meter's last verdict: {"healthy", "reason", "since"}; None until it has one (or no meter)."""
        connector_ids = list(connector_ids)
        self.device_model = DeviceModel(store, {cid: (1,) for cid in connector_ids})
        """Every setting and fact the CSMS and the local API see (`station.core.device_model`)."""
        dm = self.device_model
        dm.declare(*STANDARD)
        dm.set_default("SampledDataCtrlr", "TxUpdatedInterval", max(1, round(meter_value_seconds)))
        dm.set_default("TxCtrlr", "EVConnectionTimeOut", max(1, round(connection_timeout_s)))
        self.meter_value_seconds = sample_interval(dm.value("SampledDataCtrlr", "TxUpdatedInterval"))
        self.connection_timeout_s = float(dm.value("TxCtrlr", "EVConnectionTimeOut"))
        dm.bind("SampledDataCtrlr", "TxUpdatedInterval",
                apply=lambda _, v: setattr(self, "meter_value_seconds", sample_interval(v)))
        dm.bind("TxCtrlr", "EVConnectionTimeOut", apply=lambda _, v: setattr(self, "connection_timeout_s", float(v)))
        self.connectors: dict[int, Connector] = {}
        for cid in connector_ids:
            conn = Connector(cid, operative=bool(store.get(f"operative:{cid}", True)))
            conn.limits["hardware"] = float(max_current_a)
            self.connectors[cid] = conn
        for tx in store.open_transactions():
            if tx.connector_id in self.connectors:
                self.connectors[tx.connector_id].transaction = tx
                log.info("transaction restored", transaction_id=tx.id, connector_id=tx.connector_id)
        self.measurands = frozenset(SENDABLE if measurands is None else measurands)
        """What the meter can provide; the only measurands a CSMS may choose (station/core/metering.py)."""
        self.aligned = AlignedSampler(self, lambda: dm.value("AlignedDataCtrlr", "Interval"))
        """Clock-aligned meter values (AlignedDataCtrlr.Interval / ClockAlignedDataInterval)."""
        bind_metering(dm, self)
        self.tx_ended = TxEndedSamples(self, dm)
        """Readings kept for end messages (SampledDataCtrlr / AlignedDataCtrlr TxEndedInterval)."""
        tx_points.bind_tx_points(dm, self)
        self.auth = Authorization(self, settings or dm)
        """Who may charge (local list, cache, CSMS) and what a refused token's transaction may still do."""
        self.reservations = Reservations(self)
        self._closing = False
        self._unsaved: list[tuple[TransactionRecord, OutboxEntry]] = []
        self._unsaved_logged = False
        self._holding = 0
        self._held_events: list[tuple[str, dict[str, Any]]] = []
        self._held_actuations: list[Connector] = []
        self.charging = SmartCharging(self)
        """Installed charging profiles; their composite is the `csms` limit source."""
        self.charging.reevaluate()
        bind_core(dm, self)
        self.monitoring = MonitoringService(self)
        """Variable monitors and hardware notifications (NotifyEvent); its task is run by the daemon."""

    def _clock_stepped(self, seconds: float, source: str) -> None:
        self.security_events.record("SettingSystemTime", f"clock moved by {seconds:+.1f} s (time from {source})")

    # --- wiring -----------------------------------------------------------------
    def attach_controller(self, connector_id: int, controller: ChargeController) -> None:
        self.connectors[connector_id].controller = controller

    async def close(self) -> None:
        self._closing = True
        await self.charging.close()
        await self.aligned.close()
        await self.tx_ended.close()
        tasks = [c.actuator for c in self.connectors.values() if c.actuator and not c.actuator.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- hardware inputs --------------------------------------------------------
    def on_controller_status(self, connector_id: int, report: ControllerStatus) -> None:
        conn = self.connectors[connector_id]
        previous = conn.report
        conn.report = report
        if not conn.link_up:
            self.on_controller_link(connector_id, True, "valid status frame")
            return
        if previous != report:
            self._reconcile(conn)

    def on_controller_link(self, connector_id: int, up: bool, reason: str) -> None:
        conn = self.connectors[connector_id]
        if conn.link_up == up:
            conn.link_reason = reason  # still down, maybe for a new reason (`status`, `--once` show it)
            return
        conn.link_up, conn.link_reason, conn.link_since = up, reason, self.clock.now()
        (log.info if up else log.warning)("charge controller link", connector_id=connector_id, up=up, reason=reason)
        self.events.publish("controller_link", connector_id=connector_id, up=up, reason=reason)
        self._reconcile(conn)

    def on_meter_reading(self, reading: MeterReading, connector_id: int = 1) -> None:
        conn = self.connectors.get(connector_id)
        if conn is None:
            return
        conn.last_meter = reading
        self.events.publish("meter", connector_id=connector_id, meter=meter_json(reading))
        self.auth.enforce_energy(conn)

    @property
    def meter_answers(self) -> bool:
        """No verdict that the meter stopped answering (a station without a meter has none either)."""
        return self.meter_health is None or bool(self.meter_health["healthy"])

    def current_reading(self, conn: Connector) -> MeterReading | None:
        """The connector's reading as a measurement of now: none while the meter does not answer
        (its last reading would be stamped as measured now, e.g. for a triggered MeterValues)."""
        return conn.last_meter if self.meter_answers else None

    def on_meter_health(self, healthy: bool, reason: str) -> None:
        """The meter answers again, or stopped answering: billing depends on it, so this is a
        station problem (status, /ready, metrics) and a `meter_health` event (monitoring subscribes)."""
        previous = self.meter_health
        if previous is not None and previous["healthy"] == healthy:
            return
        self.meter_health = {"healthy": healthy, "reason": reason, "since": self.clock.now().isoformat()}
        if not healthy:
            log.error("energy meter not answering: energy cannot be measured for billing", reason=reason)
        elif previous is not None:
            log.info("energy meter answers again", reason=reason)
        self.events.publish("meter_health", **self.meter_health)
        for conn in self.connectors.values():
            self._reconcile(conn)

    def tick(self) -> None:
        """Periodic duties: meter values during transactions, expired authorizations, retrying failed commands."""
        now = time.monotonic()
        self.charging.ensure_running()
        self.aligned.ensure_running()
        self.tx_ended.aligned.ensure_running()
        wall = self.clock.now()
        self.reservations.expire(wall)
        if self._unsaved and self._save_unsaved():
            self.events.publish("outbox", depth=self._outbox_depth())
        for conn in self.connectors.values():
            if conn.pending and now > conn.pending.expires_mono:
                log.info("authorization expired: no vehicle plugged in", connector_id=conn.id)
                conn.pending = None
                self._publish_connector(conn)
            if conn.transaction and conn.ev_wait_deadline is not None and now > conn.ev_wait_deadline:
                log.info("transaction ended: no vehicle plugged in", connector_id=conn.id)  # TxStartPoint Authorized
                with self._one_pass():
                    self._end_transaction(conn, "Timeout", "EVConnectTimeout")
                    self._reconcile(conn)
                continue
            if conn.transaction:
                self.tx_ended.tick(conn, wall)
            if conn.transaction and now - conn.last_periodic >= self.meter_value_seconds:
                conn.last_periodic = now
                if self.meter_answers:  # else its last reading would go out as measured now
                    self._record(conn, "updated", "MeterValuePeriodic")
            if conn.last_command_error is not None and not (conn.actuator and not conn.actuator.done()):
                # A command the controller did not confirm (a stop above all) is retried, not forgotten:
                # the controller's status may not change again to trigger it.
                self._actuate(conn)
            if conn.transaction and conn.transaction.id in self.auth.invalid_limits:
                self.auth.enforce_energy(conn)
            elif self.reservations.by_id and not conn.transaction:
                self._reconcile(conn)  # another connector's change may make this one show Reserved

    def set_csms_online(self, online: bool, version: str | None = None) -> None:
        self.csms_online = online
        self.csms_version = version if online else None
        if online and version:
            self.last_csms_version = version

    # --- commands ---------------------------------------------------------------
    async def authorize_token(self, id_token: str, token_type: str = "ISO14443") -> AuthResult:
        """The authorization decision for a token (`core.auth.check`: local list, cache, CSMS per the settings)."""
        decision = await self.auth.check(id_token, token_type)
        return AuthResult(decision.status, None, decision.group_id)

    def refresh(self, conn: Connector) -> None:
        """Re-derive a connector's status after something outside its inputs changed (a reservation)."""
        self._reconcile(conn)

    def start_refusal(self, connector_id: int | None, id_token: str, group_id: str | None = None, *,
                      reservations: bool = True) -> str | None:
        """Why a session for `id_token` cannot start on `connector_id` (None: any connector) now, or None.

        `reservations=False`: leave reservations out (the token's group may still be learnt by Authorize).
        """
        if connector_id and connector_id not in self.connectors:
            return "unknown connector"
        if group_id is None:
            group_id = self.auth.group_of(id_token)
        conn = self._pick_connector(connector_id, id_token, group_id)
        if conn is None:
            return "no free connector"
        if (conn.transaction and conn.transaction.id_token is not None) or conn.pending:
            return "connector busy"
        if not conn.operative:
            return "connector unavailable"
        if conn.derived.status == ConnectorStatus.FAULTED:
            return f"connector faulted: {conn.derived.info}"
        return self.reservations.refusal(conn, id_token, group_id) if reservations else None

    def request_start(
        self,
        connector_id: int | None,
        id_token: str,
        token_type: str = "Central",
        remote_start_id: int | None = None,
        trigger: str = "RemoteStart",
        group_id: str | None = None,
    ) -> tuple[bool, str]:
        """Start a session for an authorized token on a connector (plug-in may come later): (accepted, reason).

        The token is not checked here (`core.auth.start` does that first); reservations are.
        """
        if group_id is None:
            group_id = self.auth.group_of(id_token)
        refusal = self.start_refusal(connector_id, id_token, group_id)
        if refusal is not None:
            return False, refusal
        conn = self._pick_connector(connector_id, id_token, group_id)
        assert conn is not None
        with self._one_pass():
            reservation_id = self.reservations.used(conn, id_token, group_id)  # H01: the EVSE is no longer reserved
        conn.pending = PendingAuthorization(
            id_token, token_type, remote_start_id, trigger, time.monotonic() + self.connection_timeout_s, group_id,
            reservation_id,
        )
        log.info("session authorized", connector_id=conn.id, trigger=trigger, remote_start_id=remote_start_id)
        self._reconcile(conn)
        return True, "accepted"

    def request_stop(self, transaction_id: str | None = None, *, connector_id: int | None = None,
                     reason: str = "Remote", trigger: str = "RemoteStop",
                     stop_token: tuple[str, str] | None = None) -> bool:
        """End a transaction (or drop a pending authorization). `stop_token`: (idToken, type) of the token
        that stopped it, when one did (2.0.1 Ended `idToken`, 1.6 StopTransaction `idTag`)."""
        for conn in self.connectors.values():
            tx = conn.transaction
            if tx and (tx.id == transaction_id or (transaction_id is None and conn.id == connector_id)):
                with self._one_pass():
                    if tx_points.ends_on_deauthorization(self._points("TxStopPoint")) or not tx.authorized:
                        self._end_transaction(conn, reason, trigger, stop_token)
                    else:  # TxStopPoint EVConnected only: the relay opens, the unplug ends the transaction
                        self._deauthorize(conn, reason, trigger, stop_token)
                    self._reconcile(conn)
                return True
            if transaction_id is None and conn.id == connector_id and conn.pending:
                conn.pending = None
                self._reconcile(conn)
                return True
        return False

    def set_availability(self, connector_id: int, operative: bool) -> str:
        """'Accepted', 'Scheduled' (after the running transaction) or 'Rejected' (unknown connector)."""
        targets = list(self.connectors.values()) if connector_id == 0 else [self.connectors.get(connector_id)]
        if None in targets:
            return "Rejected"
        scheduled = False
        for conn in targets:
            assert conn is not None
            if not operative and conn.transaction:
                conn.inoperative_scheduled, scheduled = True, True
                continue
            conn.operative, conn.inoperative_scheduled = operative, False
            self._persist(f"operative:{conn.id}", operative)
            if not operative:
                self.reservations.connector_unusable(conn.id)
            self._reconcile(conn)
        return "Scheduled" if scheduled else "Accepted"

    def unlock(self, connector_id: int) -> str:
        """The controller has no unlock command: it releases the lock itself when not charging."""
        conn = self.connectors.get(connector_id)
        if conn is None:
            return "UnknownConnector"
        if conn.transaction:
            return "OngoingAuthorizedTransaction"
        if conn.report is not None and not conn.report.locked:
            return "Unlocked"
        return "UnlockFailed"

    def set_limit(self, connector_id: int, amps: float | None, source: str) -> bool:
        """Set or clear (None) a current limit from `source` (csms, local, ...); the lowest wins."""
        targets = list(self.connectors.values()) if connector_id == 0 else [self.connectors.get(connector_id)]
        if None in targets:
            return False
        for conn in targets:
            assert conn is not None
            if amps is None:
                conn.limits.pop(source, None)
            else:
                conn.limits[source] = max(0.0, float(amps))
            log.info("current limit", connector_id=conn.id, source=source, amps=amps, effective=conn.limit_a)
            self._reconcile(conn)
        return True

    def set_csms_transaction_id(self, transaction_id: str, csms_id: str) -> None:
        """The id the CSMS gave a transaction (OCPP 1.6 StartTransaction), kept for later messages."""
        self.store.set_csms_transaction_id(transaction_id, csms_id)
        for conn in self.connectors.values():
            if conn.transaction and conn.transaction.id == transaction_id:
                conn.transaction.csms_id = csms_id

    def pin_transaction_version(self, transaction_id: str, version: str) -> None:
        """Bind a transaction to the OCPP version its first message goes out in (docs/ocpp.md,
        "Version switches"): all its later messages wait for that version."""
        self.store.pin_version(transaction_id, version)
        for conn in self.connectors.values():
            if conn.transaction and conn.transaction.id == transaction_id and conn.transaction.ocpp_version is None:
                conn.transaction.ocpp_version = version

    def transaction_by_csms_id(self, csms_id: str) -> TransactionRecord | None:
        return next((c.transaction for c in self.connectors.values()
                     if c.transaction and c.transaction.csms_id == csms_id), None)

    def set_meter_value_interval(self, seconds: float) -> None:
        """Persisted through the device model (SampledDataCtrlr.TxUpdatedInterval), applied at once."""
        try:
            self.device_model.set("SampledDataCtrlr", "TxUpdatedInterval", max(1, round(seconds)))
        except StoreError:
            self.meter_value_seconds = seconds

    def record_triggered_update(self, connector_id: int) -> bool:
        """The CSMS asked for the transaction's state now (TriggerMessage): an `updated` event,
        trigger `Trigger`, through the outbox like every other one. False without a transaction."""
        conn = self.connectors.get(connector_id)
        if conn is None or conn.transaction is None:
            return False
        self._record(conn, "updated", "Trigger")
        return True

    def end_all_transactions(self, reason: str, trigger: str) -> int:
        ended = 0
        with self._one_pass():
            for conn in self.connectors.values():
                if conn.transaction:
                    self._end_transaction(conn, reason, trigger)
                    self._reconcile(conn)
                    ended += 1
        return ended

    def transaction_status(self, transaction_id: str | None) -> tuple[bool | None, bool]:
        """(ongoing — None when no id was asked about —, messages still queued) for GetTransactionStatus (E14).

        Queued means recorded and not yet confirmed by the CSMS (parked ones included: they are
        not delivered either), for that transaction or, without an id, for any transaction.
        """
        queued = self.store.queued_for_transaction(transaction_id) > 0 or any(
            tx.id == transaction_id or transaction_id is None for tx, _ in self._unsaved)
        if transaction_id is None:
            return None, queued
        ongoing = any(c.transaction is not None and c.transaction.id == transaction_id for c in self.connectors.values())
        return ongoing, queued

    def release_parked(self, entry_ids: list[int] | None = None) -> list[int]:
        """An operator sends parked outbox entries (all, or these) again, with fresh attempts."""
        released = self.store.release_parked(entry_ids)
        if released:
            log.warning("parked transaction messages released by the operator", entries=released)
            self.events.publish("outbox", depth=self._outbox_depth(), released=released)
        return released

    # --- views --------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "connectors": [c.to_json() for c in self.connectors.values()],
            "outbox_depth": self._outbox_depth(),
            "csms_online": self.csms_online,
            "clock": {"trusted": self.clock.trusted, "source": self.clock.trust_source,
                      "now": self.clock.now().isoformat()},
            "store": {"healthy": self.store.healthy and not self._unsaved, "last_error": self.store.last_error,
                      "unsaved_events": len(self._unsaved)},
            "has_meter": self.has_meter,
            "meter_health": self.meter_health,
            "smart_charging": self.charging.snapshot(),
            "reservations": self.reservations.snapshot(),
        }

    def _outbox_depth(self) -> int:
        try:
            return self.store.outbox_depth()
        except Exception:  # noqa: BLE001 - a broken store must not break a status read
            return -1

    # --- internals ----------------------------------------------------------------
    def _pick_connector(self, connector_id: int | None, id_token: str = "", group_id: str | None = None) -> Connector | None:
        if connector_id:
            return self.connectors.get(connector_id)
        waiting = [c for c in self.connectors.values() if c.transaction and c.transaction.id_token is None
                   and not c.pending]  # started by the EV alone: the token authorizes it (F01)
        if waiting:
            return waiting[0]
        free = [c for c in self.connectors.values() if not c.transaction and not c.pending and c.operative
                and self.reservations.refusal(c, id_token, group_id) is None]
        plugged = [c for c in free if c.vehicle_present]
        return (plugged or free or [None])[0]

    @contextmanager
    def _one_pass(self) -> Iterator[None]:
        """Hold the records, commands and events of one pass, then release them in the order that matters.

        A remote start records Started and, in the same pass, ChargingStateChanged: written
        together they cost one fsync instead of two before the controller may be told anything.
        On release: (1) the records are committed — a start is durable before energy can flow —
        (2) the actuators are started, so the controller command goes out before (3) the events
        (OCPP, IPC) are relayed, in the order they happened and each with its own snapshot.
        """
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if self._holding == 0:
                self._release()

    def _release(self) -> None:
        if self._unsaved:
            self._save_unsaved()  # on a store error the events wait in memory, as in `_record`
        actuations, self._held_actuations = self._held_actuations, []
        for conn in actuations:
            self._actuate(conn)
        events, self._held_events = self._held_events, []
        depth: int | None = None
        for kind, data in events:
            if kind == "transaction":
                if depth is None:
                    depth = self._outbox_depth()
                data["outbox_depth"] = depth
            self.events.publish(kind, **data)

    @property
    def in_pass(self) -> bool:
        """A connector's pass is running (its records, commands and events are held until it ends)."""
        return self._holding > 0

    def publish_in_order(self, kind: str, **data: Any) -> None:
        """Publish an event; inside a pass it waits for the pass's own events (status first)."""
        self._publish(kind, **data)

    def _publish(self, kind: str, **data: Any) -> None:
        if self._holding:
            self._held_events.append((kind, data))
        else:
            self.events.publish(kind, **data)

    def _reconcile(self, conn: Connector) -> None:
        if self._closing:
            return
        with self._one_pass():
            self._reconcile_pass(conn)

    def reconcile_all(self) -> None:
        """Re-decide every connector (a setting that changes the decisions, e.g. TxStartPoint)."""
        for conn in self.connectors.values():
            self._reconcile(conn)

    def _points(self, variable: str) -> frozenset[str]:
        try:
            points = tx_points.parse(self.device_model.value("TxCtrlr", variable))
        except Exception:  # noqa: BLE001 — unreadable: the defaults
            points = frozenset()
        if not points or tx_points.refusal(None, ",".join(points)):
            return tx_points.DEFAULT_START if variable == "TxStartPoint" else tx_points.DEFAULT_STOP
        return points

    def _stop_on_ev_disconnect(self) -> bool:
        try:
            return bool(self.device_model.value("TxCtrlr", "StopTxOnEVSideDisconnect"))
        except Exception:  # noqa: BLE001
            return True

    def _facts(self, conn: Connector) -> tx_points.Facts:
        report, tx = conn.report, conn.transaction
        ev = conn.link_up and conn.vehicle_present
        energy = bool(ev and report is not None and report.relay_closed and report.pilot in (PilotState.C, PilotState.D))
        authorized = tx.authorized if tx is not None else conn.pending is not None
        return tx_points.Facts(ev_connected=ev, authorized=authorized, energy=energy)

    def _transaction_points(self, conn: Connector) -> None:
        """Start or end the connector's transaction by TxStartPoint / TxStopPoint (station/core/tx_points.py)."""
        report, tx = conn.report, conn.transaction
        if tx is not None and conn.link_up and report is not None:
            self._maybe_end(conn, tx, report)
        tx = conn.transaction
        if tx is not None and tx.id_token is None and conn.pending is not None:
            self._authorize_running(conn)
        if conn.transaction is not None or not conn.link_up:
            return
        if conn.pending is None and (not conn.operative or conn.derived.status == ConnectorStatus.FAULTED):
            return  # a start without a token (EVConnected, EnergyTransfer) only on a usable connector
        if tx_points.start_reached(self._points("TxStartPoint"), self._facts(conn)):
            self._start_transaction(conn)

    def _maybe_end(self, conn: Connector, tx: TransactionRecord, report: ControllerStatus) -> None:
        unplugged = report.pilot == PilotState.A
        stop_on_unplug = self._stop_on_ev_disconnect()
        if unplugged and tx.authorized and stop_on_unplug:
            tx.authorized = False  # StopTxOnEVSideDisconnect: unplugging deauthorizes the session
        facts = self._facts(conn)
        conn.points_seen.update(p for p in tx_points.DETECTABLE if tx_points.holds(p, facts))
        if tx.id_token is not None:
            conn.points_seen.add("Authorized")  # authorized once, also before a restart
        if facts.ev_connected:
            conn.ev_wait_deadline = None
        broken = tx_points.first_broken(self._points("TxStopPoint"), facts, seen=conn.points_seen)
        if broken is None or (unplugged and not stop_on_unplug and broken != "EnergyTransfer"):
            return  # StopTxOnEVSideDisconnect false: an unplug alone does not end it
        if unplugged and conn.deauthorized is not None:  # stopped earlier, ended now by the EV leaving
            self._end_transaction(conn, conn.deauthorized[0], "EVDeparted", conn.deauthorized[2])
        elif unplugged:
            self._end_transaction(conn, "EVDisconnected", "EVCommunicationLost")
        elif conn.deauthorized is not None:
            self._end_transaction(conn, *conn.deauthorized)
        elif broken == "EnergyTransfer":
            self._end_transaction(conn, "StoppedByEV" if report.pilot == PilotState.B else "Other", "ChargingStateChanged")
        else:
            self._end_transaction(conn, "DeAuthorized", "Deauthorized")

    def _authorize_running(self, conn: Connector) -> None:
        """A token for a transaction that started without one (TxStartPoint EVConnected / EnergyTransfer)."""
        pending, tx = conn.pending, conn.transaction
        assert pending is not None and tx is not None
        conn.pending = None
        tx.id_token, tx.token_type, tx.authorized = pending.id_token, pending.token_type, True
        if tx.remote_start_id is None:
            tx.remote_start_id = pending.remote_start_id
        self._record(conn, "updated", "Authorized" if pending.trigger != "RemoteStart" else "RemoteStart",
                     {"token_update": True})
        log.info("transaction authorized", transaction_id=tx.id, connector_id=conn.id)

    def _deauthorize(self, conn: Connector, reason: str, trigger: str, stop_token: tuple[str, str] | None) -> None:
        """A stop request while TxStopPoint lacks Authorized: charging stops, the transaction waits for the unplug."""
        tx = conn.transaction
        assert tx is not None
        tx.authorized = False
        conn.deauthorized = (reason, trigger, stop_token)
        self._record(conn, "updated", trigger, {"stop_id_token": stop_token[0], "stop_token_type": stop_token[1]}
                     if stop_token else None)
        log.info("transaction deauthorized; ends when the EV is unplugged", transaction_id=tx.id, connector_id=conn.id)

    def _reconcile_pass(self, conn: Connector) -> None:
        report = conn.report
        self._transaction_points(conn)
        if not conn.transaction and conn.inoperative_scheduled:
            conn.operative, conn.inoperative_scheduled = False, False
            self._persist(f"operative:{conn.id}", False)
        derived = derive_status(
            report,
            link_up=conn.link_up,
            operative=conn.operative,
            in_transaction=conn.transaction is not None,
            limit_suspended=conn.limit_a < 6,
        )
        if derived.error_code == "NoError" and self.meter_health is not None and not self.meter_health["healthy"]:
            # The connector still charges; 1.6 tells the CSMS through StatusNotification's errorCode.
            derived = dataclasses.replace(derived, error_code="PowerMeterFailure", info="energy meter not answering")
        previous_reservation = conn.reservation
        if derived.status == ConnectorStatus.AVAILABLE and (shown := self.reservations.shows_reserved(conn)):
            derived = dataclasses.replace(derived, status=ConnectorStatus.RESERVED)
            conn.reservation = shown.to_json()
        else:
            conn.reservation = None
        changed = derived != conn.derived or conn.reservation != previous_reservation
        faulted_now = derived.status == ConnectorStatus.FAULTED and conn.derived.status != ConnectorStatus.FAULTED
        charging_changed = derived.charging_state != conn.derived.charging_state
        if derived.status != conn.derived.status:
            conn.status_since = self.clock.now()
        conn.derived = derived
        if conn.transaction and charging_changed and derived.charging_state != conn.transaction.charging_state:
            conn.transaction.charging_state = derived.charging_state
            self._record(conn, "updated", "ChargingStateChanged")
        if changed:
            log.info("connector status", connector_id=conn.id, status=derived.status.value,
                     error_code=derived.error_code, info=derived.info)
            self._publish_connector(conn)
        if faulted_now:
            self.reservations.connector_unusable(conn.id)  # TC_H_20: a faulted EVSE loses its reservation
        self._actuate(conn)

    def _publish_connector(self, conn: Connector) -> None:
        self._publish("connector", connector_id=conn.id, connector=conn.to_json())

    def _start_transaction(self, conn: Connector) -> None:
        pending = conn.pending  # None: started by the EV alone (TxStartPoint EVConnected / EnergyTransfer)
        conn.pending = None
        stamp = self.clock.stamp()
        tx = TransactionRecord(
            id=str(uuid.uuid4()),
            connector_id=conn.id,
            id_token=pending.id_token if pending else None,
            token_type=pending.token_type if pending else None,
            remote_start_id=pending.remote_start_id if pending else None,
            started_at=stamp.wall.isoformat(),
            meter_start_wh=conn.last_meter.energy_import_wh if conn.last_meter else None,
            authorized=pending is not None,
        )
        if not (conn.link_up and conn.vehicle_present):
            tx.charging_state = "Idle"  # e.g. TxStartPoint Authorized: a token, no EV plugged in yet
        conn.transaction = tx
        conn.last_periodic = time.monotonic()
        conn.points_seen, conn.deauthorized = set(), None
        conn.ev_wait_deadline = None if conn.vehicle_present else time.monotonic() + self.connection_timeout_s
        reservation_id = pending.reservation_id if pending else None  # used when the token was authorized
        self._record(conn, "started", pending.trigger if pending else "CablePluggedIn",
                     {"reservation_id": reservation_id} if reservation_id is not None else None)
        self.tx_ended.started(conn)
        log.info("transaction started", transaction_id=tx.id, connector_id=conn.id)
        self.charging.transaction_started(conn)

    def _end_transaction(self, conn: Connector, reason: str, trigger: str,
                         stop_token: tuple[str, str] | None = None) -> None:
        tx = conn.transaction
        assert tx is not None
        tx.ended_at = self.clock.now().isoformat()
        tx.stop_reason = reason
        tx.meter_stop_wh = conn.last_meter.energy_import_wh if conn.last_meter else tx.last_energy_wh
        # The state the transaction ends in (TC_E_22_CS, TC_E_37_CS): energy transfer has stopped, so
        # EVConnected while the EV is still plugged in, Idle once it is gone (or never came).
        tx.charging_state = "EVConnected" if conn.link_up and conn.vehicle_present else "Idle"
        conn.points_seen, conn.ev_wait_deadline, conn.deauthorized = set(), None, None
        extra: dict[str, Any] = {"stop_id_token": stop_token[0], "stop_token_type": stop_token[1]} if stop_token else {}
        extra.update(self.tx_ended.for_end(tx))  # removed from the store with the end message's commit
        self._record(conn, "ended", trigger, extra or None)
        conn.transaction = None
        self.auth.transaction_ended(conn, tx.id)
        log.info("transaction ended", transaction_id=tx.id, connector_id=conn.id, reason=reason,
                 energy_wh=tx.energy_wh)
        self.charging.transaction_ended(tx.id)

    def selected_measurands(self, moment: str) -> list[str]:
        """The measurands configured for `moment` (started, updated, ended, clock) the meter provides."""
        try:
            configured = parse_measurands(self.device_model.value(*MEASURAND_SETTING[moment]))
        except Exception:  # noqa: BLE001 — an unreadable setting: send what the meter has
            configured = list(SENDABLE)
        return [m for m in configured if m in self.measurands]

    def record_clock_aligned(self, boundary: datetime) -> None:
        """Clock-aligned meter values for every connector with a reading, stamped with the boundary.

        During a transaction: an `updated` event (trigger MeterValueClock) in its outbox sequence;
        outside one: a durable `meter_values` message. AlignedDataCtrlr.SendDuringIdle true: only
        while no transaction runs on the station.
        """
        self.tx_ended.clock_boundary(boundary, "16")  # 1.6 StopTxnAlignedData follows ClockAlignedDataInterval
        idle_only = bool(self.device_model.value("AlignedDataCtrlr", "SendDuringIdle"))
        if idle_only and any(c.transaction for c in self.connectors.values()):
            return
        stamp = Stamp(boundary, time.monotonic(), self.clock.boot_id, self.clock.trusted)
        measurands = self.selected_measurands("clock")
        idle: list[Connector] = []
        with self._one_pass():
            for conn in self.connectors.values():
                if conn.last_meter is None or not self.meter_answers:
                    continue
                if conn.transaction is not None:
                    self._record(conn, "updated", "MeterValueClock", stamp=stamp)
                else:
                    idle.append(conn)
        if not idle:
            return
        try:
            with self.store.transaction("record clock-aligned meter values") as db:
                for conn in idle:
                    self.store.append_message(db, "meter_values", stamp, {
                        "connector_id": conn.id, "meter": meter_json(conn.last_meter), "measurands": measurands,
                        "context": "Sample.Clock"}, offline=not self.csms_online)
        except StoreError:
            log.error("clock-aligned meter values not recorded: state database refused the write")
            return
        self.events.publish(MESSAGE_QUEUED, message="meter_values")

    def _record(self, conn: Connector, kind: str, trigger: str, extra: dict[str, Any] | None = None, *,
                stamp: Stamp | None = None) -> None:
        """Persist the transaction's new state and its outbox message in one SQLite transaction."""
        tx = conn.transaction
        assert tx is not None
        moment = "clock" if trigger == "MeterValueClock" else kind
        if conn.last_meter is not None:
            tx.last_energy_wh = conn.last_meter.energy_import_wh
        entry = OutboxEntry(
            id=0,
            transaction_id=tx.id,
            connector_id=conn.id,
            kind=kind,
            seq_no=tx.seq_next,
            trigger=trigger,
            stamp=stamp or self.clock.stamp(),
            # Offline for the CSMS that will get it: no link, or a link in the other OCPP version.
            offline=not self.csms_online or tx.ocpp_version not in (None, self.csms_version),
            data={
                "id_token": tx.id_token,
                "token_type": tx.token_type,
                "remote_start_id": tx.remote_start_id,
                "charging_state": tx.charging_state,
                "meter": meter_json(conn.last_meter),
                "meter_start_wh": tx.meter_start_wh,
                "meter_stop_wh": tx.meter_stop_wh,
                "stop_reason": tx.stop_reason,
                "has_meter": self.has_meter,
                "measurands": self.selected_measurands(moment),
                **(extra or {}),
            },
        )
        tx.seq_next += 1
        self._unsaved.append((dataclasses.replace(tx), entry))
        if self._holding:  # committed with the pass's other records (`_one_pass`)
            self._held_events.append(("transaction", {"event": kind, "trigger": trigger, "transaction": tx.to_json()}))
            return
        self._save_unsaved()
        self.events.publish("transaction", event=kind, trigger=trigger, transaction=tx.to_json(),
                            outbox_depth=self._outbox_depth())

    def _save_unsaved(self) -> bool:
        """Write the events not yet stored, oldest first, in one SQLite transaction.

        When the state database cannot be written (disk full, read-only) charging goes on;
        the events wait here, in order and with their seqNo, and are written by the next
        event or tick once it can be. Nothing already stored is touched, no seqNo is skipped.
        """
        if not self._unsaved:
            return True
        try:
            with self.store.transaction("record transaction events") as db:
                for tx, entry in self._unsaved:
                    self.store.save_transaction(db, tx)
                    self.store.append_outbox(db, entry)
                    if entry.kind == "ended":  # its message holds the kept readings now
                        self.store.drop_tx_samples(db, tx.id)
        except StoreError as exc:
            if not self._unsaved_logged:
                log.error("transaction events not persisted; kept in memory and retried",
                          waiting=len(self._unsaved), error=str(exc))
                self._unsaved_logged = True
            return False
        if self._unsaved_logged:
            log.info("state database writable again; waiting transaction events stored", stored=len(self._unsaved))
            self._unsaved_logged = False
        self._unsaved.clear()
        return True

    def _persist(self, key: str, value: Any) -> None:
        try:
            self.store.put(key, value)
        except StoreError:
            pass

    def _desired(self, conn: Connector) -> tuple[bool, int]:
        """(relay may close, current to offer in whole amps)."""
        allowed = relay_may_close(
            conn.report, link_up=conn.link_up, operative=conn.operative or conn.inoperative_scheduled,
            authorized_transaction=conn.transaction.authorized if conn.transaction is not None else conn.pending is not None,
            limit_a=conn.limit_a,
        )
        return allowed, max(6, min(32, math.floor(conn.limit_a)))

    def _actuate(self, conn: Connector) -> None:
        if conn.controller is None or not conn.link_up:
            return
        if self._holding:
            if conn not in self._held_actuations:
                self._held_actuations.append(conn)
            return
        if conn.actuator and not conn.actuator.done():
            conn.actuate_again = True
            return
        conn.actuator = asyncio.get_running_loop().create_task(self._actuator(conn), name=f"actuator-{conn.id}")
        conn.actuator.add_done_callback(_log_actuator_failure)

    async def _actuator(self, conn: Connector) -> None:
        while True:
            conn.actuate_again = False
            try:
                await self._apply(conn)
                conn.last_command_error = None
            except ControllerError as exc:
                conn.last_command_error = str(exc)
                log.error("charge controller command failed", connector_id=conn.id, error=str(exc))
            if not conn.actuate_again or self._closing:
                return

    async def _apply(self, conn: Connector) -> None:
        controller, report = conn.controller, conn.report
        if controller is None or report is None or not conn.link_up:
            return
        allowed, amps = self._desired(conn)
        charging = report.state == ControllerState.CHARGING or report.relay_closed
        if allowed:
            if report.max_current_a != amps and not charging:
                await controller.set_max_current(amps)
            if not report.authorized:
                await controller.authorize()
        elif report.authorized or report.relay_closed:
            await controller.stop_charging()
