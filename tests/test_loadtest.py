"""`station loadtest` against the dev CSMS on loopback: every simulated station boots and charges."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from station import exitcodes
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


async def _loadtest_process(csms_url: str, *args: str, password: str | None = None) -> tuple[int, dict[str, object], str]:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    if password is not None:
        env["OCPP_STATION_PASSWORD"] = password
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "loadtest", "--csms", csms_url, "--report-every", "1", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out.decode().splitlines()[-1]), err.decode()


async def test_a_run_in_which_no_station_boots_fails_and_says_why() -> None:
    ids = [f"LOADTEST_{n:05d}" for n in range(1, 4)]
    async with DevCsms(passwords={station_id: "the-right-one" for station_id in ids}) as csms:
        code, summary, err = await _loadtest_process(csms.url("201"), "--stations", "3", "--duration", "4",
                                                     password="a-wrong-one")
    assert code == exitcodes.AUTH_FAILED
    assert summary["ok"] is False and summary["booted_at_end"] == 0
    assert "none of the 3 stations booted: 3 × auth_failed: HTTP 401" in err
    assert "a-wrong-one" not in err


async def test_a_run_against_a_csms_nobody_answers_fails_as_unreachable() -> None:
    csms = DevCsms()
    await csms.start()
    url = csms.url("201")
    await csms.stop()
    code, summary, err = await _loadtest_process(url, "--stations", "2", "--duration", "3")
    assert code == exitcodes.CSMS_UNREACHABLE
    assert "none of the 2 stations booted" in err and "unreachable" in err
    assert summary["not_booted"]


async def test_a_warning_every_simulated_station_logs_is_printed_once() -> None:
    async with DevCsms() as csms:
        code, summary, err = await _loadtest_process(csms.url("201"), "--stations", "4", "--duration", "2")
    assert code == 0 and summary["booted_at_end"] == 4
    assert err.count("no authentication configured") == 1, err

