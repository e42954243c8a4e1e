"""`make demo` as a newcomer runs it, bounded by DEMO_SECONDS: every process starts, a session completes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("version", ["201", "16"])
def test_demo_plays_a_complete_session_and_exits_zero(version: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    env.update({"DEMO_SECONDS": "20", "OCPP_PRIMARY": version})
    result = subprocess.run([sys.executable, "-m", "station", "demo"], env=env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "OK: boot, status, heartbeat and a complete, metered transaction reached the CSMS" in out
    assert "status page: http://127.0.0.1:" in out
    started = "TransactionEvent Started" if version == "201" else "← StartTransaction"
    ended = "TransactionEvent Ended" if version == "201" else "← StopTransaction"
    assert out.index(started) < out.index(ended)
    assert "connector 1 → Charging" in out
