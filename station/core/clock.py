"""Wall-clock trust for a computer without a real-time clock.

A Raspberry Pi boots with a wrong date until time sync (or the CSMS) tells it
the time. Events recorded before that keep their monotonic stamp so that
their true time can be reconstructed once the time is known.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
STEP_S = 2.0
"""A correction larger than this is a time change worth a SettingSystemTime security event
(the same bound below which a trusted clock is not corrected at all)."""


@dataclass(frozen=True, slots=True)
class Stamp:
    wall: datetime
    mono: float
    boot_id: str
    trusted: bool


def kernel_clock_synchronized() -> bool:
    """True when the kernel says NTP keeps the clock (adjtimex state TIME_OK)."""
    if TIMESYNC_FLAG.exists():
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex; modes=0 → read only
        state = libc.adjtimex(buf)
        return state == 0
    except (OSError, AttributeError):
        return False


class Clock:
    def __init__(self, trusted: bool | None = None) -> None:
        self.boot_id = uuid.uuid4().hex
        self.trusted = kernel_clock_synchronized() if trusted is None else trusted
        self.trust_source = "system" if self.trusted else None
        self._offset = timedelta(0)
        self.on_step: Callable[[float, str], object] | None = None
        """Called with (seconds, source) when the station's time jumps by more than STEP_S."""

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def stamp(self) -> Stamp:
        return Stamp(self.now(), time.monotonic(), self.boot_id, self.trusted)

    def trust(self, true_now: datetime, source: str) -> None:
        """Learn the true time (e.g. the CSMS's currentTime); correct if we are off by > 2 s."""
        if true_now.tzinfo is None:
            true_now = true_now.replace(tzinfo=UTC)
        drift = true_now - datetime.now(UTC)
        if not self.trusted or abs(drift.total_seconds()) > 2:
            step = (drift - self._offset).total_seconds()
            self._offset = drift
            if abs(step) > STEP_S and self.on_step is not None:
                self.on_step(step, source)
        if not self.trusted:
            self.trusted = True
            self.trust_source = source

    def correct(self, wall: datetime, mono: float, boot_id: str, trusted: bool) -> datetime:
        """Best estimate of when something stamped (wall, mono) really happened."""
        if trusted or not self.trusted or boot_id != self.boot_id:
            return wall
        return self.now() - timedelta(seconds=time.monotonic() - mono)
