"""/docs and /redoc work on a maintenance network without internet: every asset comes from the API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.station_rig import serve_api, settings_for
from tests.test_api_page import CHROMIUM, CHROMIUM_ARGS, browser  # noqa: F401 — the Chromium fixture

assert browser


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_reference_only_the_apis_own_assets(tmp_path: Path, page: str) -> None:
    async with serve_api(settings_for(tmp_path, tmp_path / "none.sock")) as url, \
            httpx.AsyncClient(base_url=url) as api:
        html = (await api.get(page)).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/static-docs/") for a in assets), assets
        assert "://" not in html.replace(url, "")  # no CDN, no web font
        for asset in assets:
            assert (await api.get(asset)).status_code == 200


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed")
async def test_swagger_ui_renders_with_every_request_outside_the_station_blocked(tmp_path: Path, browser: Any) -> None:
    from playwright.async_api import expect

    async with serve_api(settings_for(tmp_path, tmp_path / "none.sock")) as url:
        page = await browser.new_page()
        outside: list[str] = []

        async def only_the_station(route: Any) -> None:
            if route.request.url.startswith(url):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        await page.route("**/*", only_the_station)
        await page.goto(url + "/docs")
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Charge point station")
        await expect(page.locator(".opblock-summary-path").first).to_be_visible()
        assert outside == []


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed")
async def test_redoc_renders_with_every_request_outside_the_station_blocked(tmp_path: Path, browser: Any) -> None:
    from playwright.async_api import expect

    async with serve_api(settings_for(tmp_path, tmp_path / "none.sock")) as url:
        page = await browser.new_page()
        outside: list[str] = []

        async def only_the_station(route: Any) -> None:
            if route.request.url.startswith(url) or route.request.url.startswith("data:"):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        await page.route("**/*", only_the_station)
        await page.goto(url + "/redoc")
        await expect(page.locator("h1").first).to_contain_text("Charge point station")
        await expect(page.get_by_text("/connectors/{connector_id}/start").first).to_be_attached()
        await page.wait_for_load_state("networkidle")
        assert outside == []
