"""Variable monitoring: monitors on device-model variables, and the events they raise.

OCPP 2.0.1 block N (N02-N08) in protocol-neutral form. A monitor watches one variable's Actual
value: UpperThreshold / LowerThreshold trip when the value goes strictly beyond the limit and
clear when it comes back (N07.FR.16/17, N07.FR.02); Delta trips when a number moved more than
`value` from the value last reported (any change for a non-number, N07.FR.18/19); Periodic and
PeriodicClockAligned report the value every `value` seconds (N08.FR.06/07).

Hardware problems are reported even when nobody set a monitor (`hardware`): the ESP32 link, a
controller fault, a meter that stops answering, the Pi's supply. They are hard-wired
notifications on the component's `Problem` variable, raised on the change and cleared when the
problem is gone.

Monitors persist (N07.FR.13). The engine does not send anything: every `MonitorEvent` goes to
`sink`, which queues it durably for the CSMS (the OCPP adapter turns it into NotifyEvent).
Which events are queued while offline (OfflineQueuingSeverity) and which are filtered by
SetMonitoringLevel (N05.FR.03, N07.FR.15) is decided here, so every version behaves alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
import time
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import structlog

from station.core.clock import Clock
from station.core.events import EventBus
from station.core.security_events import MESSAGE_QUEUED
from station.core.store import Store

log = structlog.get_logger(__name__)

MESSAGE_KIND = "notify_event"
"""Outbox kind of a queued monitoring event (NotifyEvent in 2.0.1)."""

MAX_MONITORS = 100
"""Custom monitors the station keeps; more are Rejected (a bound for memory and evaluation time)."""

SEVERITY_MIN, SEVERITY_MAX = 0, 9
NUMERIC_TYPES = frozenset({"decimal", "integer"})


class MonitorType(str, Enum):
    UPPER = "UpperThreshold"
    LOWER = "LowerThreshold"
    DELTA = "Delta"
    PERIODIC = "Periodic"
    CLOCK_ALIGNED = "PeriodicClockAligned"


class Origin(str, Enum):
    """Who set the monitor: the spec's eventNotificationType names."""

    HARDWIRED = "HardWiredMonitor"
    PRECONFIGURED = "PreconfiguredMonitor"
    CUSTOM = "CustomMonitor"


class Criterion(str, Enum):
    """GetMonitoringReport's monitoringCriteria."""

    THRESHOLD = "ThresholdMonitoring"
    DELTA = "DeltaMonitoring"
    PERIODIC = "PeriodicMonitoring"


CRITERION_TYPES = {
    Criterion.THRESHOLD: {MonitorType.UPPER, MonitorType.LOWER},
    Criterion.DELTA: {MonitorType.DELTA},
    Criterion.PERIODIC: {MonitorType.PERIODIC, MonitorType.CLOCK_ALIGNED},
}


@dataclass(frozen=True, slots=True)
class VariableRef:
    """A component/variable pair as OCPP names it (evse/connector/instances optional)."""

    component: str
    variable: str
    evse: int | None = None
    connector: int | None = None
    component_instance: str | None = None
    variable_instance: str | None = None

    def matches(self, other: VariableRef) -> bool:
        """`other` (a request's filter) selects this variable: absent fields match every value (N02.FR.15-17)."""
        return (
            self.component.lower() == other.component.lower()
            and (other.variable == "" or self.variable.lower() == other.variable.lower())
            and (other.evse is None or self.evse == other.evse)
            and (other.connector is None or self.connector == other.connector)
            and (other.component_instance is None or self.component_instance == other.component_instance)
            and (other.variable_instance is None or self.variable_instance == other.variable_instance)
        )


@dataclass(slots=True)
class Monitor:
    id: int
    ref: VariableRef
    type: MonitorType
    value: float
    severity: int
    transaction: bool = False
    origin: Origin = Origin.CUSTOM
    # --- runtime state (persisted too: a tripped threshold stays tripped across a restart, N07.FR.14)
    tripped: bool = False
    reference: str | None = None
    """Delta: the value last reported (or seen when the monitor was set)."""
    due: float | None = None
    """Periodic: POSIX time of the next report."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ref"] = asdict(self.ref)
        data["type"] = self.type.value
        data["origin"] = self.origin.value
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> Monitor:
        return Monitor(**{**data, "ref": VariableRef(**data["ref"]), "type": MonitorType(data["type"]),
                          "origin": Origin(data["origin"])})


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """One NotifyEvent eventData entry, protocol-neutral."""

    event_id: int
    timestamp: datetime
    trigger: str  # Alerting | Delta | Periodic
    actual_value: str
    ref: VariableRef
    notification_type: str  # HardWiredNotification | HardWiredMonitor | PreconfiguredMonitor | CustomMonitor
    severity: int
    cleared: bool = False
    monitor_id: int | None = None
    tech_code: str | None = None
    tech_info: str | None = None
    transaction_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["timestamp"] = self.timestamp.isoformat()
        data["ref"] = asdict(self.ref)
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> MonitorEvent:
        return MonitorEvent(**{**data, "timestamp": datetime.fromisoformat(data["timestamp"]),
                               "ref": VariableRef(**data["ref"])})


@dataclass(frozen=True, slots=True)
class Reading:
    """A monitored variable as the device model has it now."""

    value: str | None
    """Actual value as text (None: unreadable now, e.g. write-only or the meter gives none)."""
    data_type: str
    supports_monitoring: bool = True
    min_limit: float | None = None
    max_limit: float | None = None
    write_only: bool = False


def as_number(text: str | None) -> float | None:
    if text is None:
        return None
    if text.lower() in ("true", "false"):
        return 1.0 if text.lower() == "true" else 0.0
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def next_clock_aligned(now: float, interval_s: float) -> float:
    """The next multiple of `interval_s` seconds since midnight UTC strictly after `now` (N08.FR.07).

    Alignment restarts at midnight: an interval that does not divide a day has a short last slot."""
    day = math.floor(now / 86400) * 86400
    steps = math.floor((now - day) / interval_s) + 1
    return min(day + steps * interval_s, day + 86400)


@dataclass(slots=True)
class SetResult:
    status: str  # Accepted | UnknownComponent | UnknownVariable | UnsupportedMonitorType | Rejected | Duplicate
    monitor_id: int | None = None
    reason: str | None = None


Resolver = Callable[[VariableRef], "Reading | str"]
"""The device model's answer for a variable: its reading, or "UnknownComponent" / "UnknownVariable"."""


@dataclass(slots=True)
class MonitoringState:
    """What persists: monitors, level, base, id counters."""

    monitors: dict[int, Monitor] = field(default_factory=dict)
    level: int = SEVERITY_MAX
    base: str = "All"
    next_monitor_id: int = 1
    next_event_id: int = 1
    problems: set[VariableRef] = field(default_factory=set)
    """Hardware problems reported and not cleared yet: a problem gone while the daemon was down is cleared."""

    def to_json(self) -> dict[str, Any]:
        return {"monitors": [m.to_json() for m in self.monitors.values()], "level": self.level, "base": self.base,
                "next_monitor_id": self.next_monitor_id, "next_event_id": self.next_event_id,
                "problems": [asdict(ref) for ref in self.problems]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> MonitoringState:
        monitors = {m.id: m for m in (Monitor.from_json(item) for item in data.get("monitors") or [])}
        return MonitoringState(monitors, int(data.get("level", SEVERITY_MAX)), str(data.get("base", "All")),
                               int(data.get("next_monitor_id", 1)), int(data.get("next_event_id", 1)),
                               {VariableRef(**ref) for ref in data.get("problems") or []})


def validate(monitor_type: MonitorType, value: float, reading: Reading) -> str | None:
    """Why a monitor cannot be set on this variable (the SetMonitoringResult status), or None."""
    if not reading.supports_monitoring:
        return "UnsupportedMonitorType"
    numeric = reading.data_type in NUMERIC_TYPES
    if monitor_type in (MonitorType.UPPER, MonitorType.LOWER):
        if not numeric:
            return "UnsupportedMonitorType"
        if (reading.min_limit is not None and value < reading.min_limit) or (
                reading.max_limit is not None and value > reading.max_limit):
            return "Rejected"  # N04.FR.06
    if monitor_type is MonitorType.DELTA and value < 0:
        return "Rejected"  # N04.FR.14
    if monitor_type in (MonitorType.PERIODIC, MonitorType.CLOCK_ALIGNED) and value <= 0:
        return "Rejected"
    return None


def tripped(monitor: Monitor, number: float) -> bool:
    """Strictly beyond the threshold: not on it (N07.FR.16/17)."""
    return number > monitor.value if monitor.type is MonitorType.UPPER else number < monitor.value


def delta_exceeded(monitor: Monitor, value: str, numeric: bool) -> bool:
    if monitor.reference is None:
        return False
    if not numeric:
        return value != monitor.reference  # N07.FR.19: every change
    now, before = as_number(value), as_number(monitor.reference)
    if now is None or before is None:
        return value != monitor.reference
    return abs(now - before) > monitor.value  # N07.FR.18


def first_due(monitor: Monitor, now: float) -> float:
    if monitor.type is MonitorType.CLOCK_ALIGNED:
        return next_clock_aligned(now, monitor.value)
    return now + monitor.value


def criteria_types(criteria: Iterable[str]) -> set[MonitorType] | None:
    """The monitor types a report's criteria select (None: all); raises ValueError for an unknown one."""
    selected: set[MonitorType] = set()
    given = False
    for text in criteria:
        given = True
        selected |= CRITERION_TYPES[Criterion(text)]
    return selected if given else None


def with_reference(monitor: Monitor, reading: Reading | str) -> Monitor:
    """A new Delta monitor starts from the present value; thresholds start cleared (N07.FR.11 checks them at once)."""
    if monitor.type is MonitorType.DELTA and not isinstance(reading, str):
        return replace(monitor, reference=reading.value)
    return monitor




Sink = Callable[[MonitorEvent], None]
"""Queues one event for the CSMS (durably; the OCPP adapter sends it as NotifyEvent)."""


def outbox_sink(store: Store, clock: Clock, events: EventBus) -> Sink:
    """The daemon's sink: the generic durable outbox (`Store.append_message`), then a wake-up for the pump."""

    def queue(event: MonitorEvent) -> None:
        with store.transaction("queue monitoring event") as db:
            store.append_message(db, MESSAGE_KIND, clock.stamp(), event.to_json())
        events.publish(MESSAGE_QUEUED, message=MESSAGE_KIND)

    return queue

STATE_KEY = "monitoring:state"


class Monitoring:
    """The station's monitors, their evaluation, and the events they raise.

    `resolve` reads a variable from the device model; `sink` queues an event durably; `online`
    says whether the CSMS is reachable now; `offline_severity` gives OfflineQueuingSeverity;
    `transaction_on` gives the transaction running on an EVSE (None: none); `enabled` is
    MonitoringCtrlr.Enabled (off: monitors are kept but raise nothing; hard-wired hardware
    notifications still go out). `save` / `load`
    persist the state (the store's key/value table in the daemon).
    """

    def __init__(self, *, resolve: Resolver, sink: Sink, save: Callable[[dict[str, Any]], None],
                 load: Callable[[], dict[str, Any] | None], online: Callable[[], bool] = lambda: True,
                 offline_severity: Callable[[], int] = lambda: SEVERITY_MAX,
                 transaction_on: Callable[[int | None], str | None] = lambda evse: None,
                 enabled: Callable[[], bool] = lambda: True,
                 preconfigured: Iterable[Monitor] = (), wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._resolve = resolve
        self._sink = sink
        self._save = save
        self._online = online
        self._offline_severity = offline_severity
        self._transaction_on = transaction_on
        self._enabled = enabled
        self._preconfigured = [replace(m, origin=Origin.PRECONFIGURED) for m in preconfigured]
        self._wall = wall
        saved = load()
        if saved is None:
            self.state = MonitoringState()
            self._activate_preconfigured()
        else:
            self.state = MonitoringState.from_json(saved)

    # ---- CSMS requests ------------------------------------------------------------
    def set_monitor(self, ref: VariableRef, monitor_type: str, value: float, severity: int, *,
                    monitor_id: int | None = None, transaction: bool = False) -> SetResult:
        """One SetMonitoringData element (N04): the result's status and the monitor's id."""
        reading = self._resolve(ref)
        if isinstance(reading, str):
            return SetResult(reading)  # N04.FR.03 / N04.FR.04
        try:
            kind = MonitorType(monitor_type)
        except ValueError:
            return SetResult("UnsupportedMonitorType")
        if not SEVERITY_MIN <= severity <= SEVERITY_MAX:
            return SetResult("Rejected", reason="severity must be 0-9")
        why = validate(kind, value, reading)
        if why is not None:
            return SetResult(why, reason="value outside the variable's range" if why == "Rejected" else None)
        monitors = self.state.monitors
        if monitor_id is not None:
            existing = monitors.get(monitor_id)
            if existing is None:
                return SetResult("Rejected", reason="no monitor with this id")  # N04.FR.13
            if existing.ref != ref:
                return SetResult("Rejected", reason="a monitor cannot move to another variable")  # N04.FR.16
            if existing.origin is Origin.HARDWIRED:
                return SetResult("Rejected", reason="hard-wired monitor")  # N04.FR.18
        for other in monitors.values():
            if other.id != monitor_id and other.ref == ref and other.type is kind and other.severity == severity:
                return SetResult("Duplicate", other.id)  # N04.FR.10
        if monitor_id is None and len(monitors) >= MAX_MONITORS:
            return SetResult("Rejected", reason=f"at most {MAX_MONITORS} monitors")
        if monitor_id is None:
            monitor_id = self.state.next_monitor_id
            self.state.next_monitor_id += 1  # N04.FR.11
        monitor = with_reference(Monitor(monitor_id, ref, kind, value, severity, transaction, Origin.CUSTOM), reading)
        if kind in (MonitorType.PERIODIC, MonitorType.CLOCK_ALIGNED):
            monitor.due = first_due(monitor, self._wall().timestamp())
        monitors[monitor_id] = monitor  # N04.FR.12 / N04.FR.15: a replaced preconfigured one becomes custom
        self._persist()
        self.evaluate([ref])  # N07.FR.11: a new threshold is checked against the present value at once
        return SetResult("Accepted", monitor_id)

    def clear(self, monitor_id: int) -> str:
        """ClearVariableMonitoring for one id (N06): Accepted, NotFound or Rejected."""
        monitor = self.state.monitors.get(monitor_id)
        if monitor is None:
            return "NotFound"
        if monitor.origin is Origin.HARDWIRED:
            return "Rejected"
        del self.state.monitors[monitor_id]  # N07.FR.12: no "cleared" event for a removed monitor
        self._persist()
        return "Accepted"

    def set_base(self, base: str) -> str:
        """SetMonitoringBase (N03): All keeps custom monitors; FactoryDefault and HardWiredOnly drop them."""
        if base not in ("All", "FactoryDefault", "HardWiredOnly"):
            return "NotSupported"
        monitors = self.state.monitors
        if base in ("FactoryDefault", "HardWiredOnly"):
            for monitor_id in [i for i, m in monitors.items() if m.origin is not Origin.HARDWIRED]:
                del monitors[monitor_id]
        if base in ("All", "FactoryDefault"):
            self._activate_preconfigured()
        self.state.base = base
        self._persist()
        return "Accepted"

    def set_level(self, severity: int) -> str:
        """SetMonitoringLevel (N05): only events of this severity or more urgent (lower) are sent."""
        if not SEVERITY_MIN <= severity <= SEVERITY_MAX:
            return "Rejected"
        self.state.level = severity
        self._persist()
        return "Accepted"

    def report(self, criteria: Iterable[str] = (), refs: Iterable[VariableRef] = ()) -> list[Monitor]:
        """The monitors a GetMonitoringReport selects (N02.FR.05-17); ValueError for an unknown criterion."""
        types = criteria_types(criteria)
        filters = list(refs)
        return [m for m in sorted(self.state.monitors.values(), key=lambda m: m.id)
                if (types is None or m.type in types) and (not filters or any(m.ref.matches(f) for f in filters))]

    # ---- evaluation ---------------------------------------------------------------
    def evaluate(self, refs: Iterable[VariableRef] | None = None) -> None:
        """Check threshold and delta monitors (all, or those on `refs`) against the present values."""
        if not self.state.monitors or not self._enabled():
            return
        wanted = None if refs is None else set(refs)
        changed = False
        for monitor in list(self.state.monitors.values()):
            if monitor.type in (MonitorType.PERIODIC, MonitorType.CLOCK_ALIGNED):
                continue
            if wanted is not None and monitor.ref not in wanted:
                continue
            changed |= self._check(monitor)
        if changed:
            self._persist()

    def _check(self, monitor: Monitor) -> bool:
        reading = self._resolve(monitor.ref)
        if isinstance(reading, str) or reading.value is None and not reading.write_only:
            return False
        transaction_id = self._transaction_on(monitor.ref.evse)
        if monitor.transaction and transaction_id is None:
            return False
        value = reading.value or ""
        if monitor.type is MonitorType.DELTA:
            if monitor.reference is None:
                monitor.reference = value
                return True
            if not delta_exceeded(monitor, value, reading.data_type in NUMERIC_TYPES):
                return False
            monitor.reference = value
            self._raise(monitor, "Delta", reading, transaction_id=transaction_id)
            return True
        number = as_number(value)
        if number is None:
            return False
        now_tripped = tripped(monitor, number)
        if now_tripped == monitor.tripped:
            return False
        monitor.tripped = now_tripped
        self._raise(monitor, "Alerting", reading, cleared=not now_tripped, transaction_id=transaction_id)
        return True

    def due_in(self) -> float | None:
        """Seconds until the next periodic monitor is due (None: none is set)."""
        dues = [m.due for m in self.state.monitors.values() if m.due is not None]
        return None if not dues else max(0.0, min(dues) - self._wall().timestamp())

    def tick(self) -> None:
        """Report every periodic monitor that is due (N08.FR.06/07); a disabled controller skips the report."""
        now = self._wall().timestamp()
        enabled = self._enabled()
        changed = False
        for monitor in list(self.state.monitors.values()):
            if monitor.due is None or monitor.due > now:
                continue
            reading = self._resolve(monitor.ref)
            transaction_id = self._transaction_on(monitor.ref.evse)
            if enabled and not isinstance(reading, str) and (transaction_id is not None or not monitor.transaction):
                self._raise(monitor, "Periodic", reading, transaction_id=transaction_id)
            monitor.due = first_due(monitor, now) if monitor.type is MonitorType.CLOCK_ALIGNED else max(
                monitor.due + monitor.value, now)
            changed = True
        if changed:
            self._persist()

    def hardware(self, ref: VariableRef, problem: bool, *, severity: int, tech_code: str | None = None,
                 tech_info: str | None = None) -> None:
        """A hardware problem seen (or gone) without any monitor: a hard-wired notification on its change."""
        if (ref in self.state.problems) == problem:
            return  # no change (healthy from the start: nothing to tell)
        if problem:
            self.state.problems.add(ref)
        else:
            self.state.problems.discard(ref)
        self._emit(MonitorEvent(
            event_id=self._next_event_id(), timestamp=self._wall(), trigger="Alerting",
            actual_value="true" if problem else "false", ref=ref, notification_type="HardWiredNotification",
            severity=severity, cleared=not problem, tech_code=tech_code, tech_info=(tech_info or "")[:500] or None,
            transaction_id=self._transaction_on(ref.evse)))
        self._persist()

    # ---- internals ------------------------------------------------------------------
    def _raise(self, monitor: Monitor, trigger: str, reading: Reading, *, cleared: bool = False,
               transaction_id: str | None = None) -> None:
        value = "" if reading.write_only or reading.value is None else reading.value  # N07.FR.10
        self._emit(MonitorEvent(
            event_id=self._next_event_id(), timestamp=self._wall(), trigger=trigger, actual_value=value[:2500],
            ref=monitor.ref, notification_type=monitor.origin.value, severity=monitor.severity, cleared=cleared,
            monitor_id=monitor.id, transaction_id=transaction_id))

    def _emit(self, event: MonitorEvent) -> None:
        if event.severity > self.state.level:
            return  # N05.FR.03 / N07.FR.15
        if not self._online() and event.severity > self._offline_severity():
            log.info("monitoring: event not queued while offline (severity above OfflineQueuingSeverity)",
                     component=event.ref.component, variable=event.ref.variable, severity=event.severity)
            return  # N07.FR.04 / N08.FR.03: only these are queued
        try:
            self._sink(event)
        except Exception:  # noqa: BLE001 — a full disk must not stop the evaluation of other monitors
            log.exception("monitoring: event could not be queued", event_id=event.event_id)

    def _next_event_id(self) -> int:
        event_id = self.state.next_event_id
        self.state.next_event_id += 1
        return event_id

    def _activate_preconfigured(self) -> None:
        for monitor in self._preconfigured:
            if monitor.id not in self.state.monitors:
                self.state.monitors[monitor.id] = replace(monitor)
                self.state.next_monitor_id = max(self.state.next_monitor_id, monitor.id + 1)

    def _persist(self) -> None:
        try:
            self._save(self.state.to_json())
        except Exception:  # noqa: BLE001 — kept in memory; saved with the next change
            log.warning("monitoring: monitors could not be saved")
