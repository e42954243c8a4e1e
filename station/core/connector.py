"""A connector's status, derived from what the charge controller reports.

One pure function holds the whole mapping (documented in docs/hardware.md,
"State mapping"), so the table and the code cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from station.core.model import ConnectorStatus, ControllerState, ControllerStatus, PilotState

FAULT_STATES = {ControllerState.HARDFAULT_END, ControllerState.FAULT_HARD}
VEHICLE_PRESENT = {PilotState.B, PilotState.C, PilotState.D}
VEHICLE_REQUESTS_CHARGE = {PilotState.C, PilotState.D}


@dataclass(frozen=True, slots=True)
class DerivedStatus:
    status: ConnectorStatus
    error_code: str = "NoError"
    info: str | None = None
    charging_state: str = "Idle"
    """OCPP 2.0.1 ChargingStateEnum: Charging, EVConnected, SuspendedEV, SuspendedEVSE, Idle."""


def derive_status(
    controller: ControllerStatus | None,
    *,
    link_up: bool,
    operative: bool,
    in_transaction: bool,
    limit_suspended: bool = False,
) -> DerivedStatus:
    """Map (controller report, link, availability, transaction) to the connector's OCPP status.

    | condition (first match wins)                    | status        | charging state |
    |-------------------------------------------------|---------------|----------------|
    | ESP32 link down                                 | Faulted       | Idle           |
    | STATE 0/8, CP E/F, or power board fault         | Faulted       | Idle           |
    | CP A (no vehicle)                               | Available / Unavailable if inoperative | Idle |
    | inoperative, no transaction                     | Unavailable   | EVConnected    |
    | CHARGING with relay closed                      | Charging      | Charging       |
    | transaction, limit below 6 A                    | SuspendedEVSE | SuspendedEVSE  |
    | transaction, PAUSED or CP B                     | SuspendedEV   | SuspendedEV    |
    | transaction, CP C/D, relay open                 | SuspendedEVSE | SuspendedEVSE  |
    | STOPPED, no transaction                         | Finishing     | EVConnected    |
    | vehicle present, no transaction                 | Preparing     | EVConnected    |
    """
    if not link_up or controller is None:
        return DerivedStatus(ConnectorStatus.FAULTED, "InternalError", "charge controller link down")
    c = controller
    if c.state in FAULT_STATES:
        return DerivedStatus(ConnectorStatus.FAULTED, "InternalError", f"controller state {c.state.name}")
    if c.pilot in (PilotState.E, PilotState.F):
        return DerivedStatus(ConnectorStatus.FAULTED, "OtherError", f"control pilot state {c.pilot.value}")
    if c.power_board_fault:
        return DerivedStatus(ConnectorStatus.FAULTED, "PowerSwitchFailure", "power board fault")
    if c.pilot == PilotState.A:
        return DerivedStatus(ConnectorStatus.AVAILABLE if operative else ConnectorStatus.UNAVAILABLE)
    if not operative and not in_transaction:
        return DerivedStatus(ConnectorStatus.UNAVAILABLE, charging_state="EVConnected")
    if c.state == ControllerState.CHARGING and c.relay_closed:
        return DerivedStatus(ConnectorStatus.CHARGING, charging_state="Charging")
    if in_transaction:
        if limit_suspended:
            return DerivedStatus(ConnectorStatus.SUSPENDED_EVSE, charging_state="SuspendedEVSE")
        if c.state == ControllerState.PAUSED or c.pilot == PilotState.B:
            return DerivedStatus(ConnectorStatus.SUSPENDED_EV, charging_state="SuspendedEV")
        return DerivedStatus(ConnectorStatus.SUSPENDED_EVSE, charging_state="SuspendedEVSE")
    if c.state == ControllerState.STOPPED:
        return DerivedStatus(ConnectorStatus.FINISHING, charging_state="EVConnected")
    return DerivedStatus(ConnectorStatus.PREPARING, charging_state="EVConnected")


def relay_may_close(
    controller: ControllerStatus | None, *, link_up: bool, operative: bool, authorized_transaction: bool,
    limit_a: float,
) -> bool:
    """The safety rule: the controller may be authorized to close the relay only if all hold."""
    if not (link_up and controller and operative and authorized_transaction and limit_a >= 6):
        return False
    if controller.state in FAULT_STATES or controller.power_board_fault:
        return False
    return controller.pilot in VEHICLE_PRESENT
