"""The flight recorder: a bounded on-disk ring of masked lines, read back by time window."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.core.model import MeterReading
from station.diagnostics.recorder import FlightRecorder, stamp_of


class FakeClock:
    def __init__(self, now: float = 1_780_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_ring_never_holds_more_than_its_segments(tmp_path: Path) -> None:
    recorder = FlightRecorder(tmp_path, segment_bytes=4096, segments=3)
    for i in range(2000):
        recorder.record("esp32-1", "rx", f"frame {i:05d} " + "x" * 40)
    recorder.close()
    paths = recorder.segment_paths()
    assert len(paths) <= 3
    assert sum(p.stat().st_size for p in paths) <= 3 * (4096 + 100)
    assert "frame 01999" in paths[-1].read_text() or "frame 01999" in paths[-2].read_text()


def test_a_restart_continues_in_a_new_segment_and_keeps_the_bound(tmp_path: Path) -> None:
    for run in range(5):
        recorder = FlightRecorder(tmp_path, segment_bytes=4096, segments=3)
        recorder.record("ocpp", "out", f"run {run}")
        recorder.close()
    names = [p.name for p in FlightRecorder(tmp_path, segment_bytes=4096, segments=3).segment_paths()]
    assert len(names) == 3 and names[-1] == "flight-000006.log"


def test_lines_are_read_back_within_the_time_window(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = FlightRecorder(tmp_path, clock=clock)
    for i in range(10):
        clock.now = 1_780_000_000.0 + i * 60
        recorder.record("meter-1", "-", f"reading {i}")
    recorder.flush()
    lines = list(recorder.lines(1_780_000_000.0 + 120, 1_780_000_000.0 + 300))
    assert [line.rsplit(" ", 1)[1].strip() for line in lines] == ["2", "3", "4", "5"]
    assert lines[0].startswith(stamp_of(1_780_000_000.0 + 120))


def test_every_line_passes_the_mask_before_it_is_written(tmp_path: Path) -> None:
    recorder = FlightRecorder(tmp_path, mask=lambda text: text.replace("registered-secret", "***"))
    recorder.record("ocpp", "in", 'SetVariables 1 {"attributeValue":"registered-secret"}')
    recorder.close()
    text = "".join(p.read_text() for p in recorder.segment_paths())
    assert "registered-secret" not in text and "SetVariables" in text


def test_an_unwritable_directory_pauses_recording_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    recorder = FlightRecorder(blocker / "ring")
    recorder.record("esp32-1", "rx", "data")
    assert recorder.lines_written == 0 and list(recorder.lines()) == []


def test_binary_serial_bytes_are_written_escaped_on_one_line(tmp_path: Path) -> None:
    recorder = FlightRecorder(tmp_path)
    recorder.esp32(1, "tx", b"\x41\x02\x2c\x20\x10")
    recorder.esp32(1, "rx", b"S,A,1\r\n")
    recorder.flush()
    lines = list(recorder.lines())
    assert len(lines) == 2
    assert lines[0].endswith(" esp32-1 tx A\\x02, \\x10\n")
    assert lines[1].endswith(" esp32-1 rx S,A,1\\r\\n\n")


def test_a_log_file_window_keeps_untimed_lines_with_the_line_before_them(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from station.diagnostics.archive import file_lines

    log = tmp_path / "station.log"
    log.with_name("station.log.1").write_text('{"timestamp": "2026-11-30T09:59:00Z", "event": "rotated away"}\n')
    log.write_text('{"timestamp": "2026-11-30T10:00:00Z", "event": "in window"}\n'
                   "Traceback (most recent call last):\n"
                   '{"timestamp": "2026-11-30T11:00:00Z", "event": "after the window"}\n'
                   "  a traceback line of the late entry\n")
    lines = list(file_lines(log, datetime(2026, 11, 30, 9, 59, 30, tzinfo=UTC), datetime(2026, 11, 30, 10, 30, tzinfo=UTC)))
    assert lines == ['{"timestamp": "2026-11-30T10:00:00Z", "event": "in window"}\n', "Traceback (most recent call last):\n"]


def test_the_journal_is_asked_for_the_station_units_in_utc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    from datetime import UTC, datetime

    from station.diagnostics.archive import journal_lines

    fake = tmp_path / "journalctl"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    lines = list(journal_lines(datetime(2026, 11, 30, 10, tzinfo=UTC), datetime(2026, 11, 30, 11, tzinfo=UTC)))
    assert lines == ["--no-pager -o short-iso -u station -u station-api --since 2026-11-30 10:00:00 UTC "
                     "--until 2026-11-30 11:00:00 UTC\n"]


def poll(recorder: FlightRecorder, clock: FakeClock, status: bytes, times: int) -> None:
    for _ in range(times):
        clock.now += 0.25
        recorder.esp32(1, "tx", b"A\x00")
        recorder.esp32(1, "rx", status)


def texts(recorder: FlightRecorder) -> list[str]:
    recorder.flush()
    return [line.split(" ", 3)[3].rstrip("\n") for line in recorder.lines()]


def test_identical_esp32_polls_are_counted_and_the_count_precedes_the_change(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = FlightRecorder(tmp_path, clock=clock)
    poll(recorder, clock, b"STATE=1", 40)
    poll(recorder, clock, b"STATE=2", 1)
    assert texts(recorder) == [  # the 41st poll's request is a repeat too: counted with the others
        "A\\x00", "STATE=1",
        f"= 40 identical, the last at {stamp_of(clock.now)}", f"= 39 identical, the last at {stamp_of(clock.now - 0.25)}",
        "STATE=2"]


def test_an_unchanged_esp32_exchange_is_written_in_full_again_after_the_repeat_period(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = FlightRecorder(tmp_path, clock=clock, repeat_seconds=60)
    poll(recorder, clock, b"STATE=1", 4 * 61)
    assert texts(recorder).count("STATE=1") == 2


def test_flush_writes_the_pending_count_so_an_archive_shows_the_repeats(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = FlightRecorder(tmp_path, clock=clock)
    poll(recorder, clock, b"STATE=1", 3)
    assert texts(recorder)[-1].startswith("= 2 identical")


def reading(power: float, energy: float = 1000.0, volts: float = 230.0) -> MeterReading:
    return MeterReading(energy_import_wh=energy, power_w=power, voltage_v=(volts, volts, volts))


def test_a_meter_reading_with_unchanged_energy_and_power_is_written_at_most_every_meter_period(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = FlightRecorder(tmp_path, clock=clock, meter_seconds=30)
    for second in range(61):
        clock.now += 1
        recorder.meter(1, reading(0.0, volts=230 + second % 3 / 10))  # only the voltage noise changes
    assert len(texts(recorder)) == 3


def test_a_meter_reading_with_changed_power_is_written_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = FlightRecorder(tmp_path, clock=clock)
    for power in (0.0, 7000.0, 7100.0):
        clock.now += 1
        recorder.meter(1, reading(power))
    assert len(texts(recorder)) == 3


def test_with_repeat_and_meter_periods_zero_every_line_is_kept(tmp_path: Path) -> None:
    clock = FakeClock()
    recorder = FlightRecorder(tmp_path, clock=clock, repeat_seconds=0, meter_seconds=0)
    poll(recorder, clock, b"STATE=1", 5)
    recorder.meter(1, reading(0.0))
    recorder.meter(1, reading(0.0))
    assert len(texts(recorder)) == 12
