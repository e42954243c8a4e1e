"""Workloads shared by the benchmarks and their smoke tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from station.core.clock import Clock
from station.core.store import OutboxEntry, Store, TransactionRecord

KINDS = ("started", "updated", "updated", "ended")
TRIGGERS = ("CablePluggedIn", "MeterValuePeriodic", "MeterValuePeriodic", "EVCommunicationLost")
ENERGY_BASE_WH = 100_000.0


def queue_transaction_events(store: Store, clock: Clock, count: int, *, chunk: int = 1000) -> None:
    """Queue `count` transaction events as a station offline would: started, 2 × updated, ended per transaction.

    Each event carries a full meter reading whose energy (ENERGY_BASE_WH + index) identifies
    it at the CSMS, so lost and duplicated messages can be counted in either OCPP version.
    """
    for first in range(0, count, chunk):
        with store.transaction("bench: queue events") as db:
            for i in range(first, min(count, first + chunk)):
                number, step = divmod(i, len(KINDS))
                kind = KINDS[step]
                tx = TransactionRecord(
                    id=f"bench-{number:06d}", connector_id=1, id_token="BENCHTAG", token_type="ISO14443",
                    remote_start_id=None, started_at=clock.now().isoformat(), seq_next=step + 1,
                    meter_start_wh=ENERGY_BASE_WH + number * len(KINDS), charging_state="Charging",
                )
                if kind == "ended":
                    tx.ended_at, tx.stop_reason = clock.now().isoformat(), "EVDisconnected"
                    tx.meter_stop_wh = ENERGY_BASE_WH + i
                store.save_transaction(db, tx)
                meter = {"energy_wh": ENERGY_BASE_WH + i, "power_w": 7360.0, "current_a": [10.7, 10.6, 10.7],
                         "voltage_v": [230.1, 229.8, 230.4], "frequency_hz": 50.0}
                store.append_outbox(db, OutboxEntry(
                    id=0, transaction_id=tx.id, connector_id=1, kind=kind, seq_no=step, trigger=TRIGGERS[step],
                    stamp=clock.stamp(), offline=True, data={
                        "id_token": tx.id_token, "token_type": tx.token_type, "remote_start_id": None,
                        "charging_state": "Charging", "meter": meter, "meter_start_wh": tx.meter_start_wh,
                        "meter_stop_wh": tx.meter_stop_wh, "stop_reason": tx.stop_reason, "has_meter": True,
                    },
                ))


def event_index(action: str, payload: dict[str, Any]) -> int | None:
    """Which queued event a CSMS-received message carries (None: not a transaction message)."""
    energy: float | None = None
    if action == "TransactionEvent":
        for sample in (payload.get("meterValue") or [{}])[0].get("sampledValue", []):
            if sample.get("measurand") == "Energy.Active.Import.Register":
                energy = float(sample["value"])
    elif action == "StopTransaction":
        energy = float(payload["meterStop"])
    elif action == "StartTransaction":
        energy = float(payload["meterStart"])
    elif action == "MeterValues" and payload.get("transactionId") is not None:
        for sample in (payload.get("meterValue") or [{}])[0].get("sampledValue", []):
            if sample.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register":
                energy = float(sample["value"])
    return None if energy is None else int(round(energy - ENERGY_BASE_WH))


def delivery_report(indices: Iterable[int | None], count: int) -> dict[str, Any]:
    """lost / duplicated / out of order, from the event indices in CSMS arrival order."""
    seen = [i for i in indices if i is not None]
    counts = Counter(seen)
    return {
        "expected": count,
        "received": len(seen),
        "lost": sum(1 for i in range(count) if counts[i] == 0),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "in_order": seen == sorted(seen),
    }
