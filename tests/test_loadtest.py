"""`station loadtest` against the dev CSMS on loopback: every simulated station boots and charges."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from station.devtools.csms import DevCsms
from station.devtools.loadtest import Options, main, run_loadtest


@pytest.mark.parametrize("version", ["201", "16"])
async def test_five_simulated_stations_boot_and_complete_a_charging_session(version: str) -> None:
    ended = "TransactionEvent" if version == "201" else "StopTransaction"
    async with DevCsms(heartbeat_interval=1) as csms:
        options = Options(stations=5, csms=csms.url(version), ocpp=version, ramp=100, session_seconds=0.3,
                          idle_seconds=0.2, meter_seconds=0.1, report_every=0.5)
        stop = asyncio.Event()
        out = io.StringIO()
        running = asyncio.create_task(run_loadtest(options, stop, out))
        ids = [f"LOADTEST_{n:05d}" for n in range(1, 6)]
        for station_id in ids:
            await csms.wait_for(ended, station_id, lambda r: r.payload.get("eventType", "Ended") == "Ended", timeout=30)
        stop.set()
        summary = await running
    assert {r.station_id for r in csms.calls("BootNotification")} == set(ids)
    assert summary["booted_at_end"] == 5
    assert summary["errors_by_kind"] == {}
    assert summary["sessions_ended"] >= 5
    assert json.loads(out.getvalue().splitlines()[-1]) == summary


def test_a_csms_url_that_is_not_a_websocket_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stations", "1", "--csms", "http://127.0.0.1:9/"]) == 2
    assert "ws://" in capsys.readouterr().err
