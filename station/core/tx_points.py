"""When a transaction starts and ends: TxCtrlr.TxStartPoint / TxStopPoint (OCPP 2.0.1 E01-E03, E06).

A transaction *starts* at the first listed point reached and *ends* as soon as one listed
point no longer holds. What this station can detect, from the ESP32's pilot state and relay:

| point | holds while |
|---|---|
| EVConnected | an EV is plugged in (pilot B, C or D) |
| Authorized | the session is authorized (a token accepted, not yet stopped) |
| PowerPathClosed | both: the relay may close (the station's power path is available to the EV) |
| EnergyTransfer | the relay is closed and the EV draws (pilot C/D) |

ParkingBayOccupancy (no bay sensor) and DataSigned (the meter does not sign) cannot be detected:
a value naming them is refused. TxCtrlr.StopTxOnEVSideDisconnect (1.6
StopTransactionOnEVSideDisconnect): true, unplugging deauthorizes the session and counts as the EV
leaving; false, an unplug alone never ends the transaction (the EV may come back).
Pure functions; the core (`station.py`) feeds them its connector's facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from station.core.device_model import DeviceModel, Entry
    from station.core.station import StationCore

DETECTABLE = ("EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer")
UNDETECTABLE = {"ParkingBayOccupancy": "no parking bay sensor", "DataSigned": "the meter does not sign its readings"}
DEFAULT_START = frozenset({"PowerPathClosed"})
DEFAULT_STOP = frozenset({"EVConnected", "Authorized"})


@dataclass(frozen=True, slots=True)
class Facts:
    ev_connected: bool
    authorized: bool
    energy: bool


def parse(text: Any) -> frozenset[str]:
    return frozenset(p.strip() for p in str(text or "").split(",") if p.strip())


def refusal(_: Entry | None, value: Any) -> str | None:
    """Why a TxStartPoint / TxStopPoint value cannot be honoured here (device-model validator)."""
    points = parse(value)
    if not points:
        return "name at least one point"
    missing = [f"{p} ({UNDETECTABLE[p]})" for p in sorted(points) if p in UNDETECTABLE]
    return f"not detectable on this station: {', '.join(missing)}" if missing else None


def holds(point: str, facts: Facts) -> bool:
    if point == "EVConnected":
        return facts.ev_connected
    if point == "Authorized":
        return facts.authorized
    if point == "PowerPathClosed":
        return facts.ev_connected and facts.authorized
    if point == "EnergyTransfer":
        return facts.energy
    return False


def start_reached(points: frozenset[str], facts: Facts) -> bool:
    return any(holds(p, facts) for p in points)


def first_broken(points: frozenset[str], facts: Facts, *, seen: set[str]) -> str | None:
    """The stop point that held during the transaction (`seen`) and no longer does, or None.

    A point never reached does not end anything: a transaction started at plug-in is not ended
    by "Authorized" before its token came, nor one started at authorization by "EVConnected"
    before the EV came (EVConnectionTimeOut ends that one).
    """
    for point in ("EVConnected", "PowerPathClosed", "Authorized", "EnergyTransfer"):
        if point in points and point in seen and not holds(point, facts):
            return point
    return None


def ends_on_deauthorization(points: frozenset[str]) -> bool:
    """A stop request ends the transaction at once (else it only opens the relay; the EV's unplug ends it)."""
    return bool(points & {"Authorized", "PowerPathClosed", "EnergyTransfer"})


def bind_tx_points(model: DeviceModel, core: StationCore) -> None:
    """Own TxCtrlr.TxStartPoint / TxStopPoint / StopTxOnEVSideDisconnect: read at every decision."""
    model.bind("TxCtrlr", "TxStartPoint", validate=refusal, apply=lambda _, __: core.reconcile_all())
    model.bind("TxCtrlr", "TxStopPoint", validate=refusal, apply=lambda _, __: core.reconcile_all())
    model.bind("TxCtrlr", "StopTxOnEVSideDisconnect", apply=lambda _, __: None)
