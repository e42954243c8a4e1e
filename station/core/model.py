"""Protocol-neutral domain types shared by hardware links, the core and the adapters.

Nothing here knows about OCPP versions, serial ports or Modbus: hardware links
translate their wire data into these types, the OCPP adapters translate them out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class PilotState(str, enum.Enum):
    """IEC 61851-1 control pilot states."""

    A = "A"  # no vehicle
    B = "B"  # vehicle connected, not requesting charge
    C = "C"  # vehicle requests charge
    D = "D"  # vehicle requests charge, ventilation required
    E = "E"  # short circuit / no power (error)
    F = "F"  # EVSE not available (error)


class ConnectorStatus(str, enum.Enum):
    """Connector status as the CSMS sees it (OCPP 1.6 vocabulary, a superset of 2.0.1's)."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class ControllerState(enum.IntEnum):
    """The charge controller's own charging state (ESP32 `STATE=` values)."""

    HARDFAULT_END = 0
    IDLE = 1
    CABLE_DETECT = 2
    EV_CONNECTED = 3
    READY = 4
    CHARGING = 5
    PAUSED = 6
    STOPPED = 7
    FAULT_HARD = 8


@dataclass(frozen=True, slots=True)
class ControllerStatus:
    """One validated status report from a charge controller."""

    pilot: PilotState
    state: ControllerState
    relay_closed: bool
    authorized: bool
    max_current_a: int
    cable_current_a: int
    locked: bool = False
    stop_requested: bool = False
    power_board_fault: bool = False
    pwm_duty: int = 0
    pilot_mv: int = 0
    proximity_mv: int = 0
    extras: dict[str, str] = field(default_factory=dict)
    """Free-text fields the firmware may add (WARNING=, MSG=, ...)."""


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One successful poll of an energy meter. Units: Wh, W, A, V, Hz."""

    energy_import_wh: float
    power_w: float | None = None
    current_a: tuple[float, float, float] | None = None
    voltage_v: tuple[float, float, float] | None = None
    frequency_hz: float | None = None
    power_factor: float | None = None
    energy_export_wh: float | None = None
    taken_at: datetime | None = None
