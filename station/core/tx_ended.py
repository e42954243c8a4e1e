"""Meter readings a transaction keeps for its end message (OCPP 2.0.1 J02 / J01, 1.6 transactionData).

The TransactionEvent Ended (1.6 StopTransaction `transactionData`) carries, besides the
`Transaction.End` value, the readings taken during the transaction:

| series | 2.0.1 | 1.6 | context | measurands |
|---|---|---|---|---|
| sampled | every `SampledDataCtrlr.TxEndedInterval` s from the start | every `MeterValueSampleInterval` s | `Transaction.Begin` at the start, then `Sample.Periodic` | `SampledDataCtrlr.TxEndedMeasurands` (`StopTxnSampledData`) |
| aligned | every `AlignedDataCtrlr.TxEndedInterval` s of the day (from 00:00 UTC) | every `ClockAlignedDataInterval` s | `Sample.Clock` | `AlignedDataCtrlr.TxEndedMeasurands` (`StopTxnAlignedData`) |

An interval of 0, or an empty measurand list, keeps nothing. The version is the transaction's
(the one its first message went out in), else the latest CSMS connection's. Readings are stored with the
transaction in SQLite (`tx_samples`): a restart keeps them, and the commit that stores the end
message removes them. A series holds at most `KEEP` readings: beyond that every second one is
dropped (`store.thin`), so a long session keeps covering its whole length at a coarser step; the
OCPP side also caps the message's size (station/ocpp/meter_values.py, `ENDED_BYTES_MAX`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from station.core.metering import AlignedSampler, sample_interval
from station.core.store import StoreError

if TYPE_CHECKING:
    from station.core.device_model import DeviceModel, Entry
    from station.core.station import Connector, StationCore
    from station.core.store import TransactionRecord

log = structlog.get_logger(__name__)

KEEP = 60
"""Readings kept per series and transaction (sampled, aligned): ≤ 121 meterValue entries with the end value."""

CONTEXT_MOMENT = {"Transaction.Begin": "ended", "Sample.Periodic": "ended", "Sample.Clock": "ended_clock"}
"""Which measurand setting (station.core.metering.MEASURAND_SETTING) filters a kept reading."""


@dataclass(slots=True)
class _Track:
    """Where a running transaction's sampled series stands (rebuilt after a restart from its start time)."""

    transaction_id: str
    start: float
    interval: float
    slot: int


class TxEndedSamples:
    """Owns the readings kept for end messages: the sampled series (from the core's tick) and the
    2.0.1 aligned series (its own clock-aligned task; 1.6's follows ClockAlignedDataInterval)."""

    def __init__(self, core: StationCore, model: DeviceModel) -> None:
        self.core = core
        self.sampled_201 = sample_interval(model.value("SampledDataCtrlr", "TxEndedInterval"))
        self.aligned = AlignedSampler(core, lambda: model.value("AlignedDataCtrlr", "TxEndedInterval"),
                                      record=lambda boundary: self.clock_boundary(boundary, "201"),
                                      name="tx-ended-clock-aligned-meter-values")
        self._tracks: dict[int, _Track] = {}
        model.bind("SampledDataCtrlr", "TxEndedInterval", apply=self._sampled_interval_changed)
        model.bind("AlignedDataCtrlr", "TxEndedInterval", apply=lambda _, __: self.aligned.interval_changed())

    def _sampled_interval_changed(self, _: Entry, value: Any) -> None:
        self.sampled_201 = sample_interval(value)  # the tracks pick it up at the next tick

    async def close(self) -> None:
        await self.aligned.close()

    def version(self, tx: TransactionRecord) -> str:
        return tx.ocpp_version or self.core.csms_version or self.core.last_csms_version or "201"

    def sampled_interval(self, tx: TransactionRecord) -> float:
        """Seconds between sampled readings for this transaction's end message (inf: none)."""
        interval = self.core.meter_value_seconds if self.version(tx) == "16" else self.sampled_201
        return interval if interval > 0 else math.inf

    # --- the sampled series ------------------------------------------------------
    def started(self, conn: Connector) -> None:
        """The transaction's first reading (context Transaction.Begin) when its sampled series is on."""
        tx = conn.transaction
        assert tx is not None
        interval = self.sampled_interval(tx)
        self._tracks[conn.id] = _Track(tx.id, self.core.clock.now().timestamp(), interval, 0)
        if math.isfinite(interval):
            self._keep(conn, "sampled", "Transaction.Begin", self.core.clock.now())

    def tick(self, conn: Connector, now: datetime) -> None:
        """A reading every interval from the transaction's start (slot k at start + k·interval)."""
        tx = conn.transaction
        if tx is None:
            return
        interval = self.sampled_interval(tx)
        track = self._tracks.get(conn.id)
        if track is None or track.transaction_id != tx.id or track.interval != interval:
            # a restored transaction, or a new interval: its grid starts from the next slot
            start = track.start if track is not None and track.transaction_id == tx.id else _epoch(tx.started_at, now)
            slot = _slot(now.timestamp() - start, interval)
            self._tracks[conn.id] = _Track(tx.id, start, interval, slot)
            return
        if not math.isfinite(interval):
            return
        slot = _slot(now.timestamp() - track.start, interval)
        if slot > track.slot:
            track.slot = slot
            self._keep(conn, "sampled", "Sample.Periodic", now)

    # --- the aligned series --------------------------------------------------------
    def clock_boundary(self, boundary: datetime, grid: str) -> None:
        """A boundary of the 2.0.1 TxEndedInterval grid ("201") or of ClockAlignedDataInterval ("16"):
        transactions of that version keep their reading."""
        for conn in self.core.connectors.values():
            if conn.transaction is not None and self.version(conn.transaction) == grid:
                self._keep(conn, "aligned", "Sample.Clock", boundary)

    # --- the end --------------------------------------------------------------------
    def for_end(self, tx: TransactionRecord) -> dict[str, Any]:
        """What the end message adds: the kept readings and the measurands that filter each context."""
        self._tracks = {cid: t for cid, t in self._tracks.items() if t.transaction_id != tx.id}
        samples = self.core.store.tx_samples(tx.id)
        if not samples:
            return {}
        measurands = {context: self.core.selected_measurands(moment) for context, moment in CONTEXT_MOMENT.items()}
        return {"ended_samples": samples, "ended_measurands": measurands}

    def _keep(self, conn: Connector, series: str, context: str, at: datetime) -> None:
        tx = conn.transaction
        if tx is None or conn.last_meter is None or not self.core.meter_answers:
            return  # a dead meter's last reading, kept with a later time, would claim a new measurement
        if not self.core.selected_measurands(CONTEXT_MOMENT[context]):
            return
        from station.core.station import meter_json  # the module that imports this one

        meter = meter_json(conn.last_meter)
        assert meter is not None
        try:
            self.core.store.add_tx_sample(tx.id, series, context, at.isoformat(), meter, keep=KEEP)
        except StoreError:
            log.error("meter reading for the transaction's end message not kept", transaction_id=tx.id, context=context)


def _slot(elapsed: float, interval: float) -> int:
    return int(elapsed // interval) if math.isfinite(interval) and elapsed > 0 else 0


def _epoch(started_at: str, fallback: datetime) -> float:
    try:
        return datetime.fromisoformat(started_at).timestamp()
    except ValueError:
        return fallback.timestamp()
