"""Protocol-neutral meter readings → OCPP sampledValue lists (same measurands in both versions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from station.core.store import thin
from station.ocpp.outbox_kinds import register

if TYPE_CHECKING:
    from station.core.store import OutboxEntry
    from station.ocpp.base import BaseSession

PHASES = ("L1", "L2", "L3")


def decimal_text(value: float) -> str:
    """A reading as 1.6's "raw decimal" string: no exponent, no trailing zeroes, thousandths kept.

    Not "%g": six significant digits turn a 12.3 MWh register into "1.23457e+07" (50 Wh lost).
    """
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def sampled_values(meter: dict[str, Any] | None, context: str, *, as_text: bool,
                   measurands: list[str] | None = None) -> list[dict[str, Any]]:
    """Energy.Active.Import.Register, Power.Active.Import, Current.Import and Voltage per phase, Frequency.

    `as_text`: OCPP 1.6 carries values as strings with a flat `unit`; 2.0.1 as numbers with unitOfMeasure.
    `measurands`: only these (as configured when the value was recorded); None: all of them.
    """
    if not meter or meter.get("energy_wh") is None:
        return []
    if measurands is not None:
        wanted = set(measurands)
        return [s for s in sampled_values(meter, context, as_text=as_text) if s["measurand"] in wanted]
    samples: list[tuple[str, float, str, str | None]] = [
        ("Energy.Active.Import.Register", meter["energy_wh"], "Wh", None)
    ]
    if meter.get("power_w") is not None:
        samples.append(("Power.Active.Import", meter["power_w"], "W", None))
    for measurand, key, unit, suffix in (("Current.Import", "current_a", "A", ""), ("Voltage", "voltage_v", "V", "-N")):
        for phase, value in zip(PHASES, meter.get(key) or (), strict=False):
            samples.append((measurand, value, unit, phase + suffix))
    if meter.get("frequency_hz") is not None:
        samples.append(("Frequency", meter["frequency_hz"], "Hz" if as_text else "Hz", None))
    out = []
    for measurand, value, unit, phase in samples:
        rounded = round(float(value), 3)
        item: dict[str, Any] = {"value": decimal_text(rounded) if as_text else rounded, "context": context,
                                "measurand": measurand}
        if as_text:
            if unit != "Hz":  # 1.6's UnitOfMeasure has no Hz: Frequency is unitless there
                item["unit"] = unit
        else:
            item["unitOfMeasure"] = {"unit": unit}
        if phase:
            item["phase"] = phase
        out.append(item)
    return out


ENDED_BYTES_MAX = 64 * 1024
"""Most bytes of JSON the end message's meter values may take. Over it, every second kept reading
goes (the first and the Transaction.End value stay) until they fit: a long session with a short
TxEndedInterval still ends with one message a CSMS accepts. 2.0.1 with all five measurands: about
1 KB per reading; the energy register alone: about 150 bytes."""


_VALUE_BYTES_MAX = 160
"""Upper bound of one sampledValue's JSON (the longest measurand, context and phase: about 125)."""
_ENTRY_BYTES_MAX = 64
"""Upper bound of a meterValue's JSON besides its sampledValues (timestamp, keys, brackets)."""


def ended_meter_values(data: dict[str, Any], end_value: dict[str, Any] | None, *, as_text: bool) -> list[dict[str, Any]]:
    """The end message's meterValue (1.6 transactionData): the readings the transaction kept
    (station/core/tx_ended.py), oldest first, each with its context's measurands, then `end_value`
    (context Transaction.End); thinned to ENDED_BYTES_MAX."""
    chosen = data.get("ended_measurands") or {}
    kept = [(s["timestamp"], s["context"], s.get("meter"), chosen.get(s["context"]))
            for s in data.get("ended_samples") or []]
    legacy = data.get("aligned") or {}  # an end message queued by an older version: clock readings only
    kept += [(v["timestamp"], "Sample.Clock", v.get("meter"), legacy.get("measurands")) for v in legacy.get("values") or []]
    out = []
    for at, context, meter, measurands in sorted(kept, key=lambda k: datetime.fromisoformat(k[0])):
        samples = sampled_values(meter, context, as_text=as_text, measurands=measurands)
        if samples:
            stamp = datetime.fromisoformat(at).astimezone(UTC).isoformat(timespec="milliseconds")
            out.append({"timestamp": stamp.replace("+00:00", "Z"), "sampledValue": samples})
    if end_value is not None:
        out.append(end_value)
    # Most end messages are far below the cap: an upper bound spares serialising them to measure.
    if sum(len(v["sampledValue"]) for v in out) * _VALUE_BYTES_MAX + len(out) * _ENTRY_BYTES_MAX <= ENDED_BYTES_MAX:
        return out
    while len(out) > 2 and len(json.dumps(out, separators=(",", ":"))) > ENDED_BYTES_MAX:
        out = thin(out)
    return out


@register("meter_values")
def meter_values_message(session: BaseSession, entry: OutboxEntry) -> tuple[str, dict[str, Any]] | None:
    """Meter values outside a transaction (clock-aligned while idle): MeterValues in both versions."""
    data = entry.data
    as_text = session.VERSION == "16"
    samples = sampled_values(data.get("meter"), str(data.get("context") or "Sample.Clock"), as_text=as_text,
                             measurands=data.get("measurands"))
    if not samples:
        return None
    value = [{"timestamp": session.event_time(entry), "sampledValue": samples}]
    if as_text:
        return "MeterValues", {"connectorId": int(data["connector_id"]), "meterValue": value}
    return "MeterValues", {"evseId": int(data["connector_id"]), "meterValue": value}
