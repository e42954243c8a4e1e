"""A dead energy meter is visible wherever a technician or an operator looks (real daemon, API and meter processes)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from station import exitcodes
from station.meter.sim_process import MeterSimProcess
from tests.e2e import DaemonProcess, running_station, station_cli
from tests.station_rig import wait_for
from tests.test_api_e2e import api_process
from tests.test_once import checks, run_once


@contextlib.asynccontextmanager
async def meter_failing(tmp_path: Path, **meter: Any) -> AsyncIterator[tuple[MeterSimProcess, DaemonProcess,
                                                                           httpx.AsyncClient]]:
    """The daemon on a simulated meter (`meter`: its options) and the API in front of it; once the station is
    ready, the meter stops answering (for 120 s). Yields the meter, the daemon and an API client."""
    async with MeterSimProcess(tmp_path, **meter) as sim, \
            running_station(tmp_path, STATION_METER_PORT=str(sim.link), STATION_METER_POLL_SECONDS="0.2") \
            as (_, _, daemon), api_process(daemon.env, tmp_path / "api.log") as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as api:
        await wait_for(lambda: _ready(api), timeout=30, what="station ready with a healthy meter")
        await sim.command("fail", seconds=120)
        yield sim, daemon, api


async def test_a_dead_meter_is_a_problem_in_status_ready_metrics_and_once(tmp_path: Path) -> None:
    async with meter_failing(tmp_path, energy_wh=1000.0) as (_, daemon, api):

        async def meter_problem() -> list[dict[str, str]]:
            problems = (await api.get("/status")).json()["problems"]
            return [p for p in problems if p["code"] == "meter_unhealthy"]

        problem = (await wait_for(meter_problem, timeout=30, what="a meter problem in /status"))[0]
        assert problem["severity"] == "error" and "energy meter" in problem["message"].lower()
        ready = await api.get("/ready")
        assert ready.status_code == 503 and ready.json()["meter"]["ok"] is False
        metrics = (await api.get("/metrics")).text
        assert "station_meter_up 0.0" in metrics
        code, report, _ = await run_once(daemon.env)
        assert code == exitcodes.DEGRADED and checks(report)["meter"] is False, report


async def test_a_meter_that_answers_again_clears_the_problem(tmp_path: Path) -> None:
    async with meter_failing(tmp_path) as (meter, _, api):
        await wait_for(lambda: _not_ready(api), timeout=30, what="/ready failing on the meter")
        await meter.command("fail", seconds=0)
        await wait_for(lambda: _ready(api), timeout=30, what="/ready again once the meter answers")
        assert "station_meter_up 1.0" in (await api.get("/metrics")).text


async def _ready(api: httpx.AsyncClient) -> bool:
    return (await api.get("/ready")).status_code == 200


async def _not_ready(api: httpx.AsyncClient) -> bool:
    return (await api.get("/ready")).status_code == 503


async def test_every_surface_has_a_dead_meter_as_not_answering_with_the_same_verdict(tmp_path: Path) -> None:
    async with meter_failing(tmp_path, energy_wh=1000.0) as (_, daemon, api):
        await wait_for(lambda: _not_ready(api), timeout=30, what="/ready failing on the meter")
        health = (await api.get("/status")).json()["meter_health"]
        code, out, err = await station_cli(daemon.env, "status")
        assert code == 0, err
        line = next(line for line in out.splitlines() if line.startswith("meter"))
        # The same verdict (reason and since), not a second opinion computed elsewhere.
        assert f"NOT answering since {health['since']} ({health['reason']})" in line, (line, health)
        _, report, _ = await run_once(daemon.env)
        detail = next(c["detail"] for c in report["checks"] if c["name"] == "meter")
        assert f"not answering since {health['since']} ({health['reason']})" in detail
