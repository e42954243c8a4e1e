"""Which meter values go out when: measurands chosen by the CSMS, clock-aligned sampling.

- Sampled values (OCPP 2.0.1 J02, 1.6 MeterValuesSampledData / StopTxnSampledData): each
  transaction message records the measurands configured for its moment (Started, Updated,
  Ended), so a message replayed after a settings change still says what was asked then.
- Clock-aligned values (J01, 1.6 ClockAlignedDataInterval): at every multiple of
  AlignedDataCtrlr.Interval counted from midnight UTC, stamped with that boundary; during a
  transaction an `updated` event (trigger MeterValueClock), otherwise a durable `meter_values`
  message per connector; AlignedDataCtrlr.SendDuringIdle true: only while no transaction runs.
- The station accepts only measurands its meter provides (`supported`); the CSMS gets the
  spec's refusal for others (SetVariables Rejected / ChangeConfiguration Rejected).

Protocol-neutral: the OCPP side (station/ocpp/meter_values.py) turns readings into sampledValues.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from station.core.device_model import DeviceModel, Entry
    from station.core.station import StationCore

log = structlog.get_logger(__name__)

SENDABLE = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage", "Frequency")
"""Measurands a `MeterReading` can carry to the CSMS (what station/ocpp/meter_values.py formats)."""
DEFAULT_SAMPLED = ",".join(SENDABLE)

MEASURAND_SETTING = {
    "started": ("SampledDataCtrlr", "TxStartedMeasurands"),
    "updated": ("SampledDataCtrlr", "TxUpdatedMeasurands"),
    "ended": ("SampledDataCtrlr", "TxEndedMeasurands"),
    "clock": ("AlignedDataCtrlr", "Measurands"),
    "ended_clock": ("AlignedDataCtrlr", "TxEndedMeasurands"),
}

def sample_interval(seconds: Any) -> float:
    """TxUpdatedInterval / MeterValueSampleInterval in seconds; 0 means no periodic values (never due)."""
    value = float(seconds)
    return value if value > 0 else math.inf


def parse_measurands(text: Any) -> list[str]:
    """A comma-separated measurand list as configured ("" → none)."""
    return [m.strip() for m in str(text or "").split(",") if m.strip()]


def unsupported(text: str, supported: Iterable[str]) -> list[str]:
    """The measurands in `text` the station cannot provide (empty: the value may be accepted)."""
    allowed = set(supported)
    return [m for m in parse_measurands(text) if m not in allowed]


def bind_metering(model: DeviceModel, core: StationCore) -> None:
    """Own the metering variables of the device model (standard_variables.TRANSACTIONS).

    A measurand list is accepted only when the meter provides every measurand in it; a new
    AlignedDataCtrlr.Interval restarts the clock-aligned grid at once.
    """

    def meter_has(_: Entry, value: Any) -> str | None:
        missing = unsupported(str(value), core.measurands)
        if missing:
            return f"the meter does not measure {', '.join(missing)}"
        return None

    for component, variable in MEASURAND_SETTING.values():
        model.bind(component, variable, validate=meter_has, apply=_read_when_used)
    model.bind("AlignedDataCtrlr", "Interval", apply=lambda _, __: core.aligned.interval_changed())
    model.bind("AlignedDataCtrlr", "SendDuringIdle", apply=_read_when_used)


def _read_when_used(_: Entry, __: Any) -> None:
    """Nothing to do on a change: the value is read each time it is needed."""


def next_boundary(now: datetime, interval_s: float) -> datetime:
    """The next clock-aligned moment after `now`: a multiple of `interval_s` counted from midnight UTC.

    An interval that does not divide a day restarts at the next midnight (OCPP: "evenly spaced
    intervals per day, starting at 00:00:00").
    """
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = (now - midnight).total_seconds()
    steps = math.floor(elapsed / interval_s) + 1
    candidate = midnight + timedelta(seconds=steps * interval_s)
    next_midnight = midnight + timedelta(days=1)
    return min(candidate, next_midnight)


class AlignedSampler:
    """The task that records clock-aligned meter values; owned (started, cancelled) by the core."""

    def __init__(self, core: StationCore, interval_s: Callable[[], float], *,
                 record: Callable[[datetime], None] | None = None, name: str = "clock-aligned-meter-values") -> None:
        self.core = core
        self._interval_s = interval_s
        self._record = record or core.record_clock_aligned
        self._name = name
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    def interval_changed(self) -> None:
        """A new Interval applies from the next boundary of the new grid."""
        self._changed.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def interval(self) -> float:
        try:
            return max(0.0, float(self._interval_s()))
        except Exception:  # noqa: BLE001 — an unreadable setting means no clock-aligned values, not a dead task
            log.exception("clock-aligned meter values: interval unreadable")
            return 0.0

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            interval = self.interval()
            if interval <= 0:
                await self._changed.wait()
                continue
            boundary = next_boundary(self.core.clock.now(), interval)
            wait = (boundary - self.core.clock.now()).total_seconds()
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    await self._changed.wait()
                continue  # the interval changed: recompute the grid
            except TimeoutError:
                pass
            try:
                self._record(boundary)
            except Exception:  # noqa: BLE001 — one failed sample must not end clock-aligned sampling
                log.exception("clock-aligned meter values not recorded", boundary=boundary.isoformat())
