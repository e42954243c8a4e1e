"""End to end: dev CSMS, ESP32 simulator, the real `station run` daemon and the real `station-api` process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from station.devtools.demo import free_port
from tests.e2e import STATION_ID, DaemonProcess, running_station
from tests.station_rig import sse_events, wait_for

TOKEN = "e2e-api-token-canary-51-long-enough"



@contextlib.asynccontextmanager
async def started_api(env: dict[str, str], log_path: Path, command: Sequence[str] = (sys.executable, "-m", "api")
                      ) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`station-api` (api/__main__.py, or `command` that execs it) as its own process with `env` (STATION_API_BIND
    included), past its first /health answer; yields its base URL and the process. Stopped with SIGTERM, killed
    if it lingers."""
    host_port = env["STATION_API_BIND"]
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(*command, env=env, stdout=log, stderr=log,
                                                    stdin=asyncio.subprocess.DEVNULL)
        url = f"http://{host_port}"
        try:
            async with httpx.AsyncClient(base_url=url) as client:
                async def up() -> bool:
                    assert proc.returncode is None, log_path.read_text()
                    with contextlib.suppress(httpx.TransportError):
                        return (await client.get("/health")).status_code == 200
                    return False

                await wait_for(up, timeout=20, what="station-api to listen")
            yield url, proc
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


@contextlib.asynccontextmanager
async def api_process(env: dict[str, str], log_path: Path) -> AsyncIterator[str]:
    """`station-api` as systemd runs it, beside the daemon of `env`; yields its base URL."""
    env = {**env, "STATION_API_BIND": f"127.0.0.1:{free_port()}", "STATION_API_TOKEN": TOKEN}
    async with started_api(env, log_path) as (url, _):
        yield url


async def test_a_technician_session_through_the_api_reaches_the_csms_and_shows_live(tmp_path: Path) -> None:
    async with running_station(tmp_path) as (csms, sim, daemon), \
            api_process(daemon.env, tmp_path / "api.log") as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as api:
        assert sim is not None
        ready = await wait_for(lambda: _ready(api), timeout=20, what="/ready 200 (CSMS connected, ESP32 up)")
        assert ready["esp32"]["ok"] and ready["csms"]["ok"]
        status = (await api.get("/status")).json()
        assert status["station_id"] == STATION_ID
        assert status["ocpp"]["version"] == "201" and status["ocpp"]["connected"] is True
        assert status["esp32"]["1"]["link_up"] is True
        assert {p["code"] for p in status["problems"]} <= {"clock_not_synced"}  # the test host may lack NTP

        seen: list[dict[str, Any]] = []
        reader = asyncio.ensure_future(sse_events(api, "/events", seen))
        try:
            started = await api.post("/connectors/1/start", json={"id_token": "TECH-E2E"},
                                     headers={"Authorization": f"Bearer {TOKEN}"})
            assert started.status_code == 200, started.text
            await sim.command("plug")
            await sim.command("ev_charge")
            event = await csms.wait_for("TransactionEvent", STATION_ID,
                                        lambda r: r.payload["eventType"] == "Started", timeout=10)
            assert event.payload["idToken"]["idToken"] == "TECH-E2E"
            await wait_for(lambda: _connector_status(api, "Charging"), what="connector Charging in the API")
            await wait_for(lambda: any(e["event"] == "transaction" and e["data"]["data"]["event"] == "started"
                                       for e in seen), what="transaction started on /events")

            stopped = await api.post("/connectors/1/stop", headers={"Authorization": f"Bearer {TOKEN}"})
            assert stopped.status_code == 200, stopped.text
            ended = await csms.wait_for("TransactionEvent", STATION_ID,
                                        lambda r: r.payload["eventType"] == "Ended", timeout=10)
            assert ended.payload["transactionInfo"]["stoppedReason"] == "Local"
            latest = (await api.get("/transactions", params={"limit": 1})).json()["items"][0]
            assert latest["stop_reason"] == "Local" and latest["id_token"] == "****-E2E"
        finally:
            reader.cancel()

        metrics = (await api.get("/metrics")).text
        assert 'station_ocpp_messages_total{action="TransactionEvent",direction="out"}' in metrics
        assert "station_csms_connected 1.0" in metrics
        assert 'station_esp32_link_up{connector="1"} 1.0' in metrics
        for path in ("/status", "/connectors", "/transactions", "/events/recent", "/metrics"):
            assert TOKEN not in (await api.get(path)).text
        assert TOKEN not in (tmp_path / "api.log").read_text() + daemon.log()


async def test_the_api_answers_503_while_the_daemon_restarts_and_reconnects_by_itself(tmp_path: Path) -> None:
    async with running_station(tmp_path) as (_csms, _sim, daemon), \
            api_process(daemon.env, tmp_path / "api.log") as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as api:
        await daemon.wait_ipc()
        await wait_for(lambda: _health(api, True), timeout=20, what="API reaches the daemon")
        assert await daemon.stop() == 0
        await wait_for(lambda: _health(api, False), what="API notices the daemon stopped")
        down = await api.get("/status")
        assert down.status_code == 503 and down.json()["detail"].startswith("station daemon not reachable")
        assert (await api.get("/health")).status_code == 200

        restarted = await DaemonProcess(daemon.env, tmp_path / "station2.log").start()
        try:
            await wait_for(lambda: _health(api, True), timeout=20, what="API reconnects to the new daemon")
            assert (await api.get("/status")).json()["station_id"] == STATION_ID
        finally:
            assert await restarted.stop() == 0


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium not installed: `apt-get install chromium`")
async def test_status_page_follows_a_vehicle_plugged_into_the_simulator(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    from tests.test_api_page import CHROMIUM_ARGS

    async with running_station(tmp_path) as (_csms, sim, daemon), \
            api_process(daemon.env, tmp_path / "api.log") as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as api, async_playwright() as pw:
        assert sim is not None
        await wait_for(lambda: _ready(api), timeout=20, what="station ready")
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            await page.goto(url + "/")
            status = page.get_by_test_id("connector-1-status")
            await expect(status).to_have_text("Available", timeout=10_000)
            await expect(page.locator("#csms-state")).to_have_text("connected")
            await sim.command("plug")
            await expect(status).to_have_text("Preparing", timeout=10_000)
            await expect(page.get_by_test_id("connector-1")).to_contain_text("plugged in")
            await expect(page.get_by_test_id("events")).to_contain_text("connector 1: Preparing")
            await page.screenshot(path=str(tmp_path / "status-page-e2e.png"), full_page=True)
            if os.environ.get("STATION_SCREENSHOT_DIR"):
                import shutil

                shutil.copy(tmp_path / "status-page-e2e.png", os.environ["STATION_SCREENSHOT_DIR"])
        finally:
            await browser.close()


async def _ready(api: httpx.AsyncClient) -> dict[str, Any] | None:
    response = await api.get("/ready")
    return response.json() if response.status_code == 200 else None


async def _health(api: httpx.AsyncClient, reachable: bool) -> bool:
    return bool((await api.get("/health")).json()["daemon"]["reachable"] is reachable)


async def _connector_status(api: httpx.AsyncClient, status: str) -> bool:
    return bool((await api.get("/connectors/1")).json()["status"] == status)
