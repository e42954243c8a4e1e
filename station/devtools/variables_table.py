"""Print the device model as the Markdown table of docs/ocpp.md (`python -m station.devtools.variables_table`).

Built from a real core and OCPP client (no connection is opened), so what the table says about
access matches what a station answers: a variable whose behaviour is not wired yet shows as
read-only, exactly as GetVariables / GetConfiguration report it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from station.core.device_model import AttributeType, DeviceModel, Entry, Mutability, format_value


def station_model(db: Path) -> DeviceModel:
    from station.core.station import StationCore
    from station.core.store import Store
    from station.ocpp.client import OcppClient
    from station.ocpp.connection import LinkParams

    core = StationCore(store=Store(db))
    OcppClient(LinkParams("CP", url_201="ws://127.0.0.1:9/"), core)
    return core.device_model


def _name(entry: Entry) -> str:
    v = entry.variable
    component = v.component + (f"[{v.component_instance}]" if v.component_instance else "")
    if v.scope.value == "evse":
        component += " (per EVSE)"
    elif v.scope.value == "connector":
        component += " (per connector)"
    return f"{component} | {v.name}" + (f"[{v.instance}]" if v.instance else "")


def _access(entry: Entry) -> str:
    parts = []
    for spec in entry.variable.attributes():
        mutability = entry.mutability(spec)
        short = {Mutability.READ_ONLY: "R", Mutability.WRITE_ONLY: "W", Mutability.READ_WRITE: "RW"}[mutability]
        parts.append(short if spec.type == AttributeType.ACTUAL else f"{spec.type.value} {short}")
    return ", ".join(parts)


def rows(model: DeviceModel) -> list[str]:
    out = ["| component | variable | 1.6 key | access | persisted | default / value | notes |",
           "|---|---|---|---|---|---|---|"]
    for entry in model.entries(include16=True):
        v = entry.variable
        name = f"(1.6 only) | {v.key16}" if v.only16 else _name(entry)
        persisted = "yes" if v.writable and not entry.read_only else "—"
        if v.secret:
            value = "(secret)"
        elif entry.getters.get(AttributeType.ACTUAL):
            value = "live"
        else:
            value = format_value(model.current(entry))
        notes = [v.description] if v.description else []
        if v.owner_required and entry.read_only and v.mutability != Mutability.READ_ONLY:
            notes.append("read-only until the feature acting on it is wired")
        if v.reboot_required:
            notes.append("change takes effect after a restart")
        if v.unit:
            notes.append(f"unit {v.unit}")
        out.append(f"| {name} | {v.key16 or ''} | {_access(entry)} | {persisted} | {value.replace('|', '/')} | {'; '.join(notes)} |")
    return out


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(rows(station_model(Path(tmp) / "station.db"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
