"""The device model's live variables, read from the core's state (availability, power, clock...).

Kept apart from `station.py` so the core's transaction logic stays readable; `StationCore`
calls `bind_core` once, after its connectors exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from station.core.charging_profiles import DEFAULT_PHASES, NOMINAL_VOLTAGE_V
from station.core.device_model import AttributeType, DeviceModel, Entry
from station.core.model import ConnectorStatus

if TYPE_CHECKING:
    from station.core.station import Connector, StationCore

AVAILABILITY = {
    ConnectorStatus.AVAILABLE: "Available",
    ConnectorStatus.RESERVED: "Reserved",
    ConnectorStatus.UNAVAILABLE: "Unavailable",
    ConnectorStatus.FAULTED: "Faulted",
}
"""OCPP 2.0.1 availability of a connector; every other 1.6 status means Occupied."""


def availability(conn: Connector) -> str:
    return AVAILABILITY.get(conn.derived.status, "Occupied")


def station_availability(core: StationCore) -> str:
    """The station's: the EVSEs' common state, else Available if one EVSE is, else Occupied."""
    states = {availability(c) for c in core.connectors.values()}
    if len(states) == 1:
        return states.pop()
    return "Available" if "Available" in states else "Occupied"


def bind_core(model: DeviceModel, core: StationCore) -> None:
    conns = core.connectors

    def conn(entry: Entry) -> Connector:
        assert entry.evse is not None
        return conns[entry.evse]

    def power(entry: Entry) -> float | None:
        reading = conn(entry).last_meter
        return reading.power_w if reading is not None else None

    def max_power(entry: Entry) -> float:
        amps = conn(entry).limits.get("hardware", 32.0)
        return round(amps * NOMINAL_VOLTAGE_V * DEFAULT_PHASES, 1)

    def firmware(entry: Entry) -> str:
        controller = conn(entry).controller
        return (controller.firmware or "") if controller is not None else ""

    def local_list_entries(_: Entry) -> int:
        return core.store.local_list_size()

    bindings: list[tuple[str, str, dict[str, Any]]] = [
        ("ChargingStation", "AvailabilityState", {"get": lambda _: station_availability(core)}),
        ("ChargingStation", "Problem", {"get": lambda _: any(c.derived.status == ConnectorStatus.FAULTED for c in conns.values())}),
        ("ChargingStation", "NumberOfConnectors", {"get": lambda _: len(conns)}),
        ("EVSE", "AvailabilityState", {"get": lambda e: availability(conn(e))}),
        ("EVSE", "Problem", {"get": lambda e: conn(e).derived.status == ConnectorStatus.FAULTED}),
        ("EVSE", "Power", {"get": power}),
        ("EVSE", "Power", {"get": max_power, "attribute": AttributeType.MAX_SET}),
        ("Connector", "AvailabilityState", {"get": lambda e: availability(conn(e))}),
        ("CPPWMController", "FirmwareVersion", {"get": firmware}),
        ("CPPWMController", "Problem", {"get": lambda e: not conn(e).link_up}),
        ("ClockCtrlr", "DateTime", {"get": lambda _: core.clock.now()}),
        ("LocalAuthListCtrlr", "Entries", {"get": local_list_entries}),
        ("SmartChargingCtrlr", "Entries", {"get": lambda _: len(core.charging.profiles), "instance": "ChargingProfiles"}),
    ]
    for component, variable, how in bindings:
        model.bind(component, variable, **how)
    model.set_default("ChargingStation", "ConnectorPhaseRotation", ",".join(f"{c}.RST" for c in (0, *conns)))
