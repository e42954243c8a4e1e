"""The write-budget benchmark's measure and arithmetic (tests/bench/writes.py, backlog_writes.py)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from station.storage.durable import durable_write
from tests.bench.backlog_writes import replay
from tests.bench.writes import scale_to_60s, written_bytes


def test_written_bytes_counts_what_this_process_writes_to_a_disk_file(tmp_path: Path) -> None:
    before = written_bytes(os.getpid())
    durable_write(tmp_path / "state.bin", os.urandom(1_000_000))
    grown = written_bytes(os.getpid()) - before
    if grown == 0:
        pytest.skip(f"{tmp_path} is not on a block device (tmpfs?): /proc/PID/io write_bytes stays 0 there")
    assert grown >= 1_000_000


def test_a_compressed_charging_run_is_brought_back_to_one_meter_value_a_minute() -> None:
    run = {"bytes": 60 * 1000 + 12 * 30_000, "seconds": 60.0, "samples": 12}  # 1000 B/s + 12 samples of 30 KB
    scale_to_60s(run, per_sample=30_000)
    assert run["mb_per_hour_at_60s"] == round((1000 + 30_000 / 60) * 3600 / 1e6, 3)


def test_the_backlog_breakdown_replays_the_store_calls_it_measures(tmp_path: Path) -> None:
    for name in ("pin", "ack"):
        (tmp_path / name).mkdir()
    replay(tmp_path / "pin", 40, kinds=("pin",))
    replay(tmp_path / "ack", 40, kinds=("ack",), batch=7)
    pinned = sqlite3.connect(tmp_path / "pin" / "station.db")
    assert pinned.execute("SELECT COUNT(*), COUNT(ocpp_version) FROM transactions").fetchone() == (10, 10)
    assert pinned.execute("SELECT COUNT(*) FROM outbox").fetchone() == (40,)
    acknowledged = sqlite3.connect(tmp_path / "ack" / "station.db")
    assert acknowledged.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
