"""The `station` command as a shell pipeline sees it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """`station config show | head -3`: head exits, the next write finds the pipe closed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    env.update(STATION_ENV_FILE=os.devnull, OCPP_STATION_NAME="PIPE_1", OCPP_201_URL="ws://127.0.0.1:9/ocpp/")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "station", "config", "show"], env=env, stdout=write_end,
                              stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(write_end)
    assert b"Traceback" not in proc.stderr and b"BrokenPipeError" not in proc.stderr, proc.stderr.decode()
    assert proc.returncode == 141


def test_a_subcommand_help_starts_with_a_short_usage_not_every_settings_flag() -> None:
    for args in (["outbox"], ["status"], ["run"], ["config", "show"], ["report"]):
        out = subprocess.run([sys.executable, "-m", "station", *args, "--help"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL).stdout
        usage = out.split("\n\n", 1)[0]
        assert usage.count("\n") == 0 and "[SETTINGS FLAGS]" in usage, usage
