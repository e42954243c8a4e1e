"""Monitoring wired into the running station: device model, event bus, hardware, clock.

`MonitoringService` owns the `Monitoring` engine of a `StationCore` and the one task that
drives it (`run`, spawned and cancelled by the daemon):

- threshold and delta monitors are checked when something they may watch changed: a meter
  reading, a connector or link change, a value written through the device model;
- periodic monitors are reported when due;
- hardware problems are told to the CSMS even when no monitor is set (N07, hard-wired
  notifications): the ESP32 link (CPPWMController.Problem), a fault the ESP32 reports
  (EVSE.Problem), the meter not answering (FiscalMetering.Problem), and the Pi's own supply
  and throttling (ELVSupply.Problem, Controller[Pi].Problem) where the kernel reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from station.core import pi_power
from station.core.device_model import AttributeType, DataType, Entry, Mutability, Status, Variable, format_value
from station.core.model import ConnectorStatus
from station.core.monitoring import Monitor, Monitoring, MonitorType, Reading, VariableRef, outbox_sink

if TYPE_CHECKING:
    from station.core.station import StationCore

log = structlog.get_logger(__name__)

STARTUP_GRACE_S = 10.0
"""A controller link that has not come up since the start is not a problem for this long: the
ESP32 needs a moment after the daemon opens the port (reported then if it is still down)."""

POWER_POLL_S = 5.0
"""How often the Pi's throttling flags are read (a sysfs read: cheap)."""

OVERLOAD_MARGIN = 1.1
"""The factory power monitor trips this far above the EVSE's hardware limit (MaxSet)."""

WATCHED_EVENTS = frozenset({"meter", "connector", "controller_link", "meter_health"})

SEVERITY = {"esp32_link": 1, "controller_fault": 1, "meter": 2, "pi_supply": 3, "pi_throttled": 5}
"""Severities of the hard-wired notifications (0 Danger … 9 Debug): a lost controller is a
hardware failure, a silent meter a system failure (charging goes on, billing does not)."""

MONITORING_VARIABLES = (
    Variable("MonitoringCtrlr", "ActiveMonitoringBase", DataType.OPTION_LIST, default="All",
             values_list=("All", "FactoryDefault", "HardWiredOnly")),
    Variable("MonitoringCtrlr", "ActiveMonitoringLevel", DataType.INTEGER, default=9, min_limit=0, max_limit=9),
    Variable("Controller", "Problem", DataType.BOOLEAN, default=False, component_instance="Pi",
             supports_monitoring=True, description="the Raspberry Pi is throttled (temperature or frequency cap)"),
    Variable("ELVSupply", "Problem", DataType.BOOLEAN, default=False, supports_monitoring=True,
             description="the Raspberry Pi's supply is below its minimum (under-voltage)"),
)
PI_THROTTLED = VariableRef("Controller", "Problem", component_instance="Pi")
PI_SUPPLY = VariableRef("ELVSupply", "Problem")


def ref_of(entry: Entry) -> VariableRef:
    return VariableRef(entry.component, entry.name, entry.evse, entry.connector,
                       entry.variable.component_instance, entry.variable.instance)


class MonitoringService:
    def __init__(self, core: StationCore, *, throttled_path: Path = pi_power.THROTTLED_PATH,
                 power_poll_s: float = POWER_POLL_S) -> None:
        self.core = core
        self.model = core.device_model
        self.throttled_path = throttled_path
        self.power_poll_s = power_poll_s
        self._started: float | None = None
        self._seen_up: set[int] = set()
        model = self.model
        model.declare(*MONITORING_VARIABLES)
        model.set_default("MonitoringCtrlr", "Enabled", True)
        self.engine = Monitoring(
            resolve=self.resolve,
            sink=outbox_sink(core.store, core.clock, core.events),
            save=lambda state: core.store.put("monitoring:state", state),
            load=lambda: core.store.get("monitoring:state"),
            online=lambda: core.csms_online,
            offline_severity=lambda: int(model.value("MonitoringCtrlr", "OfflineQueuingSeverity")),
            transaction_on=self._transaction_on,
            enabled=lambda: bool(model.value("MonitoringCtrlr", "Enabled")),
            preconfigured=self._preconfigured(),
            wall=core.clock.now,
        )
        model.bind("MonitoringCtrlr", "Available", get=lambda _: True)
        model.bind("MonitoringCtrlr", "Enabled", apply=lambda _entry, _value: self.engine.evaluate())
        model.bind("MonitoringCtrlr", "OfflineQueuingSeverity", apply=lambda _entry, _value: None)  # read when needed
        model.bind("MonitoringCtrlr", "ActiveMonitoringBase", get=lambda _: self.engine.state.base)
        model.bind("MonitoringCtrlr", "ActiveMonitoringLevel", get=lambda _: self.engine.state.level)
        model.bind("Controller", "Problem", component_instance="Pi",
                   get=lambda _: PI_THROTTLED in self.engine.state.problems)
        model.bind("ELVSupply", "Problem", get=lambda _: PI_SUPPLY in self.engine.state.problems)
        model.listeners.append(self._on_value_changed)

    # ---- device model ------------------------------------------------------------------
    def resolve(self, ref: VariableRef) -> Reading | str:
        found = self.model.find(ref.component, ref.variable, instance=ref.variable_instance,
                                component_instance=ref.component_instance, evse=ref.evse, connector=ref.connector)
        if isinstance(found, Status):
            return found.value
        variable = found.variable
        write_only = variable.secret or variable.mutability == Mutability.WRITE_ONLY
        value: str | None = None
        if not write_only:
            try:
                current = self.model.current(found)
            except Exception:  # noqa: BLE001 — a broken getter: the monitor waits for a readable value
                log.exception("monitoring: variable unreadable", variable=found.path)
                current = None
            if isinstance(current, float):
                current = round(current, 3)  # a meter's noise digits say nothing
            value = None if current is None else format_value(current)
        return Reading(value, variable.data_type.value, variable.supports_monitoring, variable.min_limit,
                       variable.max_limit, write_only)

    def _on_value_changed(self, entry: Entry, _attribute: Any, _value: Any) -> None:
        if self.engine.state.monitors:
            self.engine.evaluate([ref_of(entry)])

    def _transaction_on(self, evse: int | None) -> str | None:
        connectors = self.core.connectors
        targets = [connectors[evse]] if evse in connectors else list(connectors.values()) if evse is None else []
        return next((c.transaction.id for c in targets if c.transaction is not None), None)

    def _preconfigured(self) -> list[Monitor]:
        """Factory monitors: an EVSE drawing more than its hardware limit (SetMonitoringBase restores them)."""
        monitors = []
        for index, evse in enumerate(sorted(self.core.connectors), start=1):
            entry = self.model.find("EVSE", "Power", evse=evse)
            if isinstance(entry, Status):
                continue
            limit = self.model.current(entry, AttributeType.MAX_SET)
            if limit is not None:  # MaxSet is at 230 V: +10 % for the supply's tolerance (EN 50160)
                monitors.append(Monitor(1000 + index, ref_of(entry), MonitorType.UPPER,
                                        round(float(limit) * OVERLOAD_MARGIN), 3))
        return monitors

    # ---- hardware -----------------------------------------------------------------------
    def check_hardware(self) -> None:
        """Hard-wired notifications for the controller links, controller faults and the meter."""
        hardware = self.engine.hardware
        starting = self._started is not None and time.monotonic() - self._started < STARTUP_GRACE_S
        for cid, conn in self.core.connectors.items():
            if conn.link_up:
                self._seen_up.add(cid)
            elif starting and cid not in self._seen_up:
                continue  # not up yet since the start: give the ESP32 its moment
            hardware(VariableRef("CPPWMController", "Problem", evse=cid), not conn.link_up,
                     severity=SEVERITY["esp32_link"], tech_code="LinkLost" if not conn.link_up else None,
                     tech_info=None if conn.link_up else f"ESP32 link down: {conn.link_reason}")
            faulted = conn.link_up and conn.derived.status == ConnectorStatus.FAULTED
            hardware(VariableRef("EVSE", "Problem", evse=cid), faulted, severity=SEVERITY["controller_fault"],
                     tech_code=conn.derived.error_code if faulted else None,
                     tech_info=conn.derived.info if faulted else None)
        health = self.core.meter_health
        if health is not None:
            sick = not health.get("healthy", True)
            hardware(VariableRef("FiscalMetering", "Problem"), sick, severity=SEVERITY["meter"],
                     tech_code="NoResponse" if sick else None,
                     tech_info=f"energy meter: {health.get('reason')}" if sick else None)

    def check_power(self) -> None:
        """The Pi's under-voltage and throttling flags, where the kernel reports them."""
        value = pi_power.read_throttled(self.throttled_path)
        if value is None:
            return
        hardware = self.engine.hardware
        undervoltage = bool(value & pi_power.UNDERVOLTAGE_NOW)
        hardware(PI_SUPPLY, undervoltage, severity=SEVERITY["pi_supply"], tech_code="UnderVoltage" if undervoltage else None,
                 tech_info="Raspberry Pi supply: under-voltage now" if undervoltage else None)
        throttled = pi_power.describe(value, pi_power.THROTTLED_NOW)
        hardware(PI_THROTTLED, bool(throttled),
                 severity=SEVERITY["pi_throttled"], tech_code="Throttled" if throttled else None,
                 tech_info="Raspberry Pi: " + ", ".join(throttled) if throttled else None)

    # ---- the task -------------------------------------------------------------------------
    async def run(self) -> None:
        """Evaluate on every relevant change, report periodic monitors when due, poll the Pi's power."""
        loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        next_power = loop.time()
        with self.core.events.subscribe() as events:
            self.check_hardware()
            self.engine.evaluate()
            while True:
                now = loop.time()
                if now >= next_power:
                    self.check_power()
                    self.check_hardware()
                    next_power = now + self.power_poll_s
                due = self.engine.due_in()
                wait = max(0.0, min(next_power - loop.time(), due if due is not None else self.power_poll_s))
                event = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        event = await events.get()
                if event is not None and event.kind in WATCHED_EVENTS:
                    self.check_hardware()
                    self.engine.evaluate()
                self.engine.tick()

