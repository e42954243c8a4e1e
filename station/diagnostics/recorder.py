"""The flight recorder: the last hours of raw ESP32 bytes, OCPP frames and meter readings on disk.

When a driver complains, the question is nearly always "what exactly went over the wire?". The
log has the OCPP frames but not the ESP32 bytes nor every meter reading, and journald may have
rotated them away. The recorder keeps all three in one time-ordered text ring:

    2026-11-30T00:12:03.123Z ocpp out Heartbeat 6f1… {}
    2026-11-30T00:12:03.140Z esp32-1 rx S,C,2,32,0,0\\r\\n
    2026-11-30T00:12:04.001Z meter-1 - {"energy_wh": 1234.0, …}

Writes are budgeted (issue 23: an SD card or SSD lives by the bytes written to it): at idle the
ESP32 is polled four times a second with the same answer and the meter read every second with
only its voltage noise changing, ~90 MB a day if every line were kept. So by default an ESP32
line identical to the previous one of its direction is counted, not written, and the count is
written (``= N identical``) with the next different line, at `flush`, or after
``repeat_seconds``; a meter reading whose energy and power did not change is written at most
every ``meter_seconds``. Idle writes stay well under 50 MB a day (docs/reliability.md); with
``repeat_seconds=0`` and ``meter_seconds=0`` every line is kept.

Cost per message is one formatted line appended to a buffered file (no fsync: losing the last
second on a power cut is acceptable for a diagnostic aid); the buffer is flushed when it is a
second old or when an archive is built. Memory stays bounded (one file buffer) and so does the
disk: ``segments`` files of at most ``segment_bytes`` each, the oldest deleted on rotation.

OCPP frames arrive masked exactly as the frame log masks them (`StrictChargePoint.on_wire`: one
masking for both — `station.ocpp.rpc.redact`, URL user info and queries); every line also passes
``mask`` (the configured password and API token, wherever they hide) before it is written: the
ring is included in archives that leave the station.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

from station.core.station import meter_json

log = structlog.get_logger("station.diagnostics")

SEGMENT_BYTES = 2 * 1024 * 1024
SEGMENTS = 4
FLUSH_SECONDS = 1.0
REPEAT_SECONDS = 60.0
"""An unchanged ESP32 exchange is written once, then its repetitions counted for this long."""
METER_SECONDS = 30.0
"""A meter reading with unchanged energy and power is written at most this often."""
REOPEN_SECONDS = 60.0
_NAME = re.compile(r"^flight-(\d{6})\.log$")
SEGMENT_NAME = _NAME
STAMP_LENGTH = len("2026-11-30T00:12:03.123Z")


def stamp_of(when: float) -> str:
    """The recorder's timestamp for an epoch time (fixed width, so lines compare as text)."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(when * 1000) % 1000:03d}Z"


class FlightRecorder:
    """A size-bounded ring of text lines in ``directory``; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        segments: int = SEGMENTS,
        flush_seconds: float = FLUSH_SECONDS,
        repeat_seconds: float = REPEAT_SECONDS,
        meter_seconds: float = METER_SECONDS,
        clock: Callable[[], float] = time.time,
        mask: Callable[[str], str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = max(4096, segment_bytes)
        self.segments = max(2, segments)
        self.flush_seconds = flush_seconds
        self.repeat_seconds = repeat_seconds
        self.meter_seconds = meter_seconds
        self._last: dict[tuple[str, str], tuple[str, float]] = {}
        """(source, direction) -> (last text written, when)."""
        self._repeats: dict[tuple[str, str], tuple[int, float]] = {}
        """(source, direction) -> (identical lines not written since, when the last of them came)."""
        self._meter_last: dict[str, tuple[Any, Any, float]] = {}
        self._clock = clock
        self._mask = mask
        self._file: TextIO | None = None
        self._size = 0
        self._index = 0
        self._second = -1
        self._prefix = ""
        self._last_flush = 0.0
        self._retry_at = 0.0
        self.lines_written = 0
        self._open()

    # ---- segments ------------------------------------------------------------------
    def segment_paths(self) -> list[Path]:
        """The ring's files, oldest first."""
        return segment_paths(self.directory)

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            existing = self.segment_paths()
            last = int(_NAME.match(existing[-1].name).group(1)) if existing else 0  # type: ignore[union-attr]
            self._index = last + 1
            for old in existing[: max(0, len(existing) - (self.segments - 1))]:
                old.unlink(missing_ok=True)
            path = self.directory / f"flight-{self._index % 1_000_000:06d}.log"
            # A log, not state: never fsynced (see the module docstring); a power cut may lose the
            # unsynced tail of the ring, which is accepted (issue 23).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._file = open(fd, "w", buffering=65536, encoding="utf-8", errors="replace", newline="\n")  # noqa: SIM115
            self._size = 0
        except OSError as exc:
            self._file = None
            self._retry_at = self._clock() + REOPEN_SECONDS
            log.warning("flight recorder: cannot write; recording paused", directory=str(self.directory),
                        error=f"{exc.__class__.__name__}: {exc.strerror or exc}")
            return

    def _rotate(self) -> None:
        self._close_file()
        self._open()

    def _close_file(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass

    # ---- writing -------------------------------------------------------------------
    def record(self, source: str, direction: str, text: str) -> None:
        """Append one line; never raises (a full disk pauses recording, it never stops the station)."""
        now = self._clock()
        handle = self._file
        if handle is None:
            if now < self._retry_at:
                return
            self._open()
            handle = self._file
            if handle is None:
                return
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        if "\n" in text or "\r" in text:
            text = text.replace("\r", "\\r").replace("\n", "\\n")
        if self._mask is not None:
            text = self._mask(text)
        line = f"{self._prefix}{int(now * 1000) % 1000:03d}Z {source} {direction} {text}\n"
        try:
            handle.write(line)
            if now - self._last_flush >= self.flush_seconds:
                handle.flush()
                self._last_flush = now
        except OSError as exc:
            self._close_file()
            self._retry_at = now + REOPEN_SECONDS
            log.warning("flight recorder: write failed; recording paused", error=f"{exc.__class__.__name__}: {exc.strerror or exc}")
            return
        self.lines_written += 1
        self._size += len(line)
        if self._size >= self.segment_bytes:
            self._rotate()

    def esp32(self, connector_id: int, direction: str, data: bytes) -> None:
        """Raw serial bytes as they crossed the port (``rx`` from the ESP32, ``tx`` to it); a repeat
        of the previous bytes of the same direction is counted (see the module docstring)."""
        source, text = f"esp32-{connector_id}", repr(data)[2:-1]
        key, now = (source, direction), self._clock()
        last = self._last.get(key)
        if last is not None and last[0] == text and now - last[1] < self.repeat_seconds:
            count, _ = self._repeats.get(key, (0, now))
            self._repeats[key] = (count + 1, now)
            return
        for pending in [k for k in self._repeats if k[0] == source]:  # counts before the change they precede
            self._write_repeats(pending)
        self.record(source, direction, text)
        self._last[key] = (text, now)

    def _write_repeats(self, key: tuple[str, str]) -> None:
        count, when = self._repeats.pop(key, (0, 0.0))
        if count:
            self.record(key[0], key[1], f"= {count} identical, the last at {stamp_of(when)}")

    def meter(self, connector_id: int, reading: Any) -> None:
        """A meter reading; one with the energy and power of the last written one waits `meter_seconds`."""
        source, value, now = f"meter-{connector_id}", meter_json(reading), self._clock()
        energy, power = (value.get("energy_wh"), value.get("power_w")) if isinstance(value, dict) else (None, None)
        last = self._meter_last.get(source)
        if last is not None and (last[0], last[1]) == (energy, power) and now - last[2] < self.meter_seconds:
            return
        self._meter_last[source] = (energy, power, now)
        self.record(source, "-", _compact(value))

    def flush(self) -> None:
        for key in list(self._repeats):  # an archive shows the repeats up to now
            self._write_repeats(key)
        if self._file is not None:
            try:
                self._file.flush()
            except OSError:
                self._close_file()
            self._last_flush = self._clock()

    def close(self) -> None:
        self.flush()
        self._close_file()

    # ---- reading -------------------------------------------------------------------
    def lines(self, since: float | None = None, until: float | None = None) -> Iterator[str]:
        """Recorded lines between two epoch times (inclusive), oldest first; flush first."""
        return read_lines(self.directory, since, until)

    def size_bytes(self) -> int:
        total = 0
        for path in self.segment_paths():
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total


def segment_paths(directory: Path) -> list[Path]:
    """A ring's files, oldest first."""
    try:
        names = sorted(p.name for p in Path(directory).iterdir() if _NAME.match(p.name))
    except OSError:
        return []
    return [Path(directory) / n for n in names]


def read_lines(directory: Path, since: float | None = None, until: float | None = None) -> Iterator[str]:
    """A ring's lines between two epoch times (inclusive), oldest first, without writing to it
    (`station report` reads the running daemon's ring this way)."""
    for path in segment_paths(directory):
        try:
            if since is not None and path.stat().st_mtime < since - 1:
                continue  # last written before the window opened
            with path.open(encoding="utf-8", errors="replace") as handle:
                yield from lines_in_window(handle, since, until)
        except OSError:
            continue


def lines_in_window(lines: Iterable[str], since: float | None, until: float | None) -> Iterator[str]:
    """One segment's whole lines stamped between two epoch times (inclusive); stops at the first later one.
    Pure (no file access), so `station report` can feed it the lines it reads safely as root."""
    low = stamp_of(since) if since is not None else ""
    high = stamp_of(until) if until is not None else "~"
    for line in lines:
        stamp = line[:STAMP_LENGTH]
        if stamp > high:
            break
        if stamp >= low and line.endswith("\n"):
            yield line


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), default=str)
