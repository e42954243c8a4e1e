"""When the energy meter counts as not answering: one rule, so every surface says the same.

The daemon applies it to `StationCore.meter_health`, which is what /status, the status page, /ready,
the metrics, StatusNotification's PowerMeterFailure and the FiscalMetering Problem variable show;
`station status` and `station --once` (beside the daemon) print that same verdict.

A meter that answers gives a valid reading at least every `stale_after` seconds: one poll interval,
then one poll in which every try but the last timed out on every register block. No valid reading
for longer than that, or none in that long since polling started, means it does not answer. (The
meter client's own rule, 3 failed polls in a row, comes later and only confirms it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


def stale_after(poll_interval_s: float, timeout_s: float, retries: int, blocks: int) -> float:
    """The longest a meter that answers can go without a valid reading, in seconds."""
    return poll_interval_s + (retries + 1) * max(1, blocks) * timeout_s


class MeterHealthSink(Protocol):
    @property
    def meter_answers(self) -> bool: ...

    def on_meter_health(self, healthy: bool, reason: str) -> None: ...


@dataclass
class MeterFreshness:
    """Times (monotonic seconds) of the start of polling and of the last valid reading, and the verdict from them."""

    limit_s: float
    started: float | None = None
    last_reading: float | None = None

    def polling_started(self, now: float) -> None:
        self.started = now

    def reading(self, now: float, core: MeterHealthSink | None = None) -> None:
        """A valid reading arrived: fresh again (and `core` told so, if it had the meter as not answering)."""
        self.last_reading = now
        if core is not None and not core.meter_answers:
            core.on_meter_health(True, "valid reading")

    def age(self, now: float) -> float | None:
        return None if self.last_reading is None else now - self.last_reading

    def silence(self, now: float) -> str | None:
        """Why the meter counts as not answering at `now`, or None (answering, or too early to say)."""
        if self.last_reading is not None:
            age = now - self.last_reading
            if age > self.limit_s:
                return f"no valid reading for more than {self.limit_s:g} s (a meter that answers gives one at least that often)"
            return None
        if self.started is not None and now - self.started > self.limit_s:
            return f"no valid reading since polling started, more than {self.limit_s:g} s ago"
        return None

    def apply(self, now: float, core: MeterHealthSink) -> None:
        """Tell `core` the meter stopped answering as soon as the rule says so (a reading says it answers again)."""
        reason = self.silence(now)
        if reason is not None and core.meter_answers:
            core.on_meter_health(False, reason)
