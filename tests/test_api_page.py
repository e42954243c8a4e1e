"""The technician status page in headless Chromium against the real API: plug a vehicle in, see the page change."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from station.core.model import MeterReading
from tests.station_rig import Daemon, daemon, serve_api, settings_for, sock_path, wait_for  # noqa: F401

assert daemon and sock_path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason="Chromium not installed: `apt-get install chromium` (make test does it as root)"),
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def test_plugging_in_a_vehicle_changes_the_page_live(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        async with httpx.AsyncClient(base_url=url) as api:
            await wait_for(lambda: _reachable(api), what="API sees the daemon")
        page = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        await page.goto(url + "/")
        status = page.get_by_test_id("connector-1-status")
        await expect(status).to_have_text("Available")
        await expect(page.get_by_test_id("daemon")).to_have_text("live")
        await expect(page.get_by_test_id("problems")).to_contain_text("No problems detected")

        daemon.core.on_meter_reading(MeterReading(energy_import_wh=12_000.0, power_w=7100.0,
                                                  voltage_v=(201.0, 229.0, 230.0)))
        daemon.core.request_start(1, "DRIVER0042")
        daemon.esp.plug()
        daemon.esp.ev_requests_charge()

        await expect(status).to_have_text("Charging")
        await expect(page.get_by_test_id("events")).to_contain_text("session started on connector 1")
        await expect(page.locator("#problems li[data-code=undervoltage]")).to_contain_text("201 V")
        await expect(page.get_by_test_id("connector-1")).to_contain_text("token ****0042")
        await page.screenshot(path=str(tmp_path / "status-page-phone.png"), full_page=True)
        if os.environ.get("STATION_SCREENSHOT_DIR"):
            shutil.copy(tmp_path / "status-page-phone.png", os.environ["STATION_SCREENSHOT_DIR"])


async def test_a_dead_meter_marks_the_connectors_reading_as_the_last_one(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        page = await browser.new_page()
        await page.goto(url + "/")
        daemon.core.on_meter_reading(MeterReading(energy_import_wh=12_000.0, power_w=7100.0))
        connector = page.get_by_test_id("connector-1")
        await expect(connector).to_contain_text("7.10 kW")
        await expect(connector).not_to_contain_text("not answering")
        daemon.core.on_meter_health(False, "3 polls in a row failed")
        await expect(connector).to_contain_text("not answering: last reading shown")
        await expect(page.locator("#problems li[data-code=meter_unhealthy]")).to_contain_text("RS-485 wiring")


async def test_the_page_shows_when_the_daemon_goes_away(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        page = await browser.new_page()
        await page.goto(url + "/")
        await expect(page.get_by_test_id("connector-1-status")).to_have_text("Available")
        await daemon.stop()
        await expect(page.get_by_test_id("problems")).to_contain_text("Station daemon unreachable")
        await expect(page.get_by_test_id("events")).to_contain_text("station daemon unreachable")


async def _reachable(api: httpx.AsyncClient) -> bool:
    return bool((await api.get("/health")).json()["daemon"]["reachable"])


async def test_a_reservation_shows_on_the_page_with_its_token_masked(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    from playwright.async_api import expect

    from station.core.reservations import Reservation

    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        page = await browser.new_page()
        await page.goto(url + "/")
        await expect(page.get_by_test_id("connector-1-status")).to_have_text("Available")
        expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        daemon.core.reservations.reserve(Reservation(31, 1, "DRIVER0077", "ISO14443", None, expires))
        await expect(page.get_by_test_id("connector-1-status")).to_have_text("Reserved")
        await expect(page.get_by_test_id("connector-1")).to_contain_text("for token ****0077")
        await expect(page.get_by_test_id("events")).to_contain_text("reservation 31 accepted on connector 1")
        assert "DRIVER0077" not in await page.content()


async def test_a_meter_that_stops_answering_shows_as_a_problem_on_the_page(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    from station.meter.client import ModbusMeter
    from station.meter.registers import ADL400
    from station.meter.sim_process import MeterSimProcess
    from tests.aio import running

    async with MeterSimProcess(tmp_path, energy_wh=500.0) as sim, serve_api(settings_for(tmp_path, sock_path)) as url:
        meter = ModbusMeter(str(sim.link), register_map=ADL400, poll_interval=0.1, timeout=0.2, retries=0,
                            on_reading=daemon.core.on_meter_reading, on_health=daemon.core.on_meter_health)
        daemon.facts["meter"] = {"port": str(sim.link), "model": "adl400"}
        async with running(meter.run()):
            page = await browser.new_page()
            await page.goto(url + "/")
            await expect(page.get_by_test_id("problems")).to_contain_text("No problems detected")
            await sim.command("fail", seconds=60)
            await expect(page.locator("#problems li[data-code=meter_unhealthy]")).to_contain_text(
                "adl400 on", timeout=15_000)
            await expect(page.get_by_test_id("events")).to_contain_text("energy meter stopped answering")
            await expect(page.locator("body")).not_to_contain_text("Modbus Error")  # pymodbus's words: the log's


async def test_last_events_keep_the_session_however_many_meter_readings_came_between(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        async with httpx.AsyncClient(base_url=url) as api:
            await wait_for(lambda: _reachable(api), what="API sees the daemon")
            daemon.core.request_start(1, "DRIVER0042")
            daemon.esp.plug()
            daemon.esp.ev_requests_charge()
            await wait_for(lambda: daemon.core.connectors[1].derived.status.value == "Charging", what="charging")
            for wh in range(1, 301):  # five minutes of charging at one reading a second
                daemon.core.on_meter_reading(MeterReading(energy_import_wh=float(wh), power_w=7000.0))
            daemon.esp.unplug()
            for wh in range(301, 401):
                daemon.core.on_meter_reading(MeterReading(energy_import_wh=300.0))
            daemon.core.on_meter_reading(MeterReading(energy_import_wh=300.5))

            async def all_seen() -> bool:
                recent = (await api.get("/events/recent")).json()
                return any(e["kind"] == "meter" and e["data"]["meter"]["energy_wh"] == 300.5 for e in recent)

            await wait_for(all_seen, what="the API to see the last meter reading")
        page = await browser.new_page()  # a technician opens the page after the session
        await page.goto(url + "/")
        events = page.get_by_test_id("events")
        await expect(events).to_contain_text("session started on connector 1")
        await expect(events).to_contain_text("session ended on connector 1")
        await expect(events).to_contain_text("connector 1: Charging")
        await expect(events).to_contain_text("connector 1: Available")


# --- what a technician sees in each situation (docs/api.md shows these screenshots) -------------------
SCREENSHOTS = os.environ.get("STATION_SCREENSHOTS")
"""A directory (docs/img) to write the page's screenshots to; unset: they go to the test's tmp_path."""
LAPTOP = {"width": 1024, "height": 760}


async def shoot(page: Any, tmp_path: Path, name: str) -> None:
    path = Path(SCREENSHOTS) / f"{name}.png" if SCREENSHOTS else tmp_path / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path), full_page=True)


async def open_page(browser: Any, url: str) -> Any:
    from playwright.async_api import expect

    page = await browser.new_page(viewport=LAPTOP)
    await page.goto(url + "/")
    await expect(page.get_by_test_id("daemon")).not_to_have_text("connecting…")
    return page


async def test_an_idle_station_shows_available_and_no_problems(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    daemon.core.on_meter_reading(MeterReading(energy_import_wh=1_204_500.0, power_w=0.0, voltage_v=(231.0, 229.5, 230.4)))
    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        page = await open_page(browser, url)
        await expect(page.get_by_test_id("connector-1-status")).to_have_text("Available")
        await expect(page.get_by_test_id("connector-1")).to_contain_text("not plugged in")
        await expect(page.get_by_test_id("problems")).to_have_text("No problems detected")
        await shoot(page, tmp_path, "idle")


async def test_a_charging_station_shows_the_session_power_and_energy(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        async with httpx.AsyncClient(base_url=url) as api:
            await wait_for(lambda: _reachable(api), what="API sees the daemon")
        daemon.core.on_meter_reading(MeterReading(energy_import_wh=1_204_500.0, power_w=0.0))
        daemon.core.request_start(1, "DRIVER0042")
        daemon.esp.plug()
        daemon.esp.ev_requests_charge()
        await wait_for(lambda: daemon.core.connectors[1].derived.status.value == "Charging", what="charging")
        daemon.core.on_meter_reading(MeterReading(energy_import_wh=1_207_350.0, power_w=11_040.0,
                                                  voltage_v=(231.0, 229.5, 230.4)))
        page = await open_page(browser, url)
        await expect(page.get_by_test_id("connector-1-status")).to_have_text("Charging")
        connector = page.get_by_test_id("connector-1")
        for words in ("plugged in, asking for energy", "token ****0042", "2.85 kWh", "11.04 kW"):
            await expect(connector).to_contain_text(words)
        await expect(page.get_by_test_id("events")).to_contain_text("session started on connector 1 (token ****0042)")
        await shoot(page, tmp_path, "charging")


async def test_a_hard_fault_says_what_it_means_and_what_to_check_not_plugged_in_pilot_e(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    from station.core.model import ControllerState, PilotState

    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        page = await open_page(browser, url)
        await expect(page.get_by_test_id("connector-1-status")).to_have_text("Available")
        daemon.esp._emit(pilot=PilotState.E, state=ControllerState.FAULT_HARD, relay_closed=False)
        await expect(page.get_by_test_id("connector-1-status")).to_have_text("Faulted")
        problem = page.locator("#problems li[data-code=connector_faulted]")
        await expect(problem).to_contain_text("Connector 1: the charge controller reports a hard fault")
        await expect(problem).to_contain_text("First check: unplug the vehicle; check the residual current device")
        connector = page.get_by_test_id("connector-1")
        await expect(connector).to_contain_text("unknown: pilot signal fault (state E)")
        await expect(connector).not_to_contain_text("plugged in (pilot E)")
        body = page.locator("body")
        for internal in ("InternalError", "FAULT_HARD"):
            await expect(body).not_to_contain_text(internal)
        await expect(page.get_by_test_id("events")).to_contain_text("connector 1 faulted: the charge controller reports")
        await shoot(page, tmp_path, "faulted")


async def test_a_csms_that_refuses_connections_is_said_in_words_without_the_library_error(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    daemon.facts["ocpp"] = {**daemon.facts["ocpp"], "connected": False, "version": "16", "failed_attempts": 7,
                            "url": "wss://csms.example.com/ocpp/TEST_STATION_1", "last_error_kind": "unreachable",
                            "last_error": "ConnectionRefusedError: [Errno 111] Connect call failed ('203.0.113.5', 443)"}
    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        page = await open_page(browser, url)
        problem = page.locator("#problems li[data-code=csms_unreachable]")
        await expect(problem).to_contain_text("The CSMS server refuses connections")
        await expect(problem).to_contain_text("wss://csms.example.com/ocpp/TEST_STATION_1 (OCPP 1.6J), 7 attempt(s) failed")
        await expect(problem).to_contain_text("First check: with the operator that the CSMS is running")
        await expect(page.get_by_test_id("csms")).to_contain_text("1.6J")
        for library in ("Errno", "ConnectionRefusedError", "OCPP 16"):
            await expect(page.locator("body")).not_to_contain_text(library)
        await shoot(page, tmp_path, "csms-down")


async def test_a_stopped_daemon_says_so_with_the_commands_to_check_first(
    tmp_path: Path, sock_path: Path, daemon: Daemon, browser: Any
) -> None:
    from playwright.async_api import expect

    async with serve_api(settings_for(tmp_path, sock_path)) as url:
        page = await open_page(browser, url)
        await expect(page.get_by_test_id("connector-1-status")).to_have_text("Available")
        await daemon.stop()
        await page.reload()
        problem = page.locator("#problems li[data-code=daemon_unreachable]")
        await expect(problem).to_contain_text("Station daemon unreachable")
        await expect(problem).to_contain_text(f"no daemon socket at {sock_path}")
        await expect(problem).to_contain_text("First check: systemctl status station and journalctl -u station -n 50")
        await shoot(page, tmp_path, "daemon-down")
