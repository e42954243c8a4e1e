"""A dead energy meter is visible wherever a technician or an operator looks (real daemon, API and meter processes)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from station import exitcodes
from station.meter.sim_process import MeterSimProcess
from tests.e2e import running_station
from tests.station_rig import wait_for
from tests.test_api_e2e import api_process
from tests.test_once import checks, run_once


async def test_a_dead_meter_is_a_problem_in_status_ready_metrics_and_once(tmp_path: Path) -> None:
    async with MeterSimProcess(tmp_path, energy_wh=1000.0) as meter, \
            running_station(tmp_path, STATION_METER_PORT=str(meter.link), STATION_METER_POLL_SECONDS="0.2") \
            as (_, _, daemon), api_process(daemon.env, tmp_path / "api.log") as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as api:
        await wait_for(lambda: _ready(api), timeout=30, what="station ready with a healthy meter")
        await meter.command("fail", seconds=120)

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
    async with MeterSimProcess(tmp_path) as meter, \
            running_station(tmp_path, STATION_METER_PORT=str(meter.link), STATION_METER_POLL_SECONDS="0.2") \
            as (_, _, daemon), api_process(daemon.env, tmp_path / "api.log") as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as api:
        await wait_for(lambda: _ready(api), timeout=30, what="station ready with a healthy meter")
        await meter.command("fail", seconds=120)
        await wait_for(lambda: _not_ready(api), timeout=30, what="/ready failing on the meter")
        await meter.command("fail", seconds=0)
        await wait_for(lambda: _ready(api), timeout=30, what="/ready again once the meter answers")
        assert "station_meter_up 1.0" in (await api.get("/metrics")).text


async def _ready(api: httpx.AsyncClient) -> bool:
    return (await api.get("/ready")).status_code == 200


async def _not_ready(api: httpx.AsyncClient) -> bool:
    return (await api.get("/ready")).status_code == 503
