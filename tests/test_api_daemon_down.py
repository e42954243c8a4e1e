"""The API outlives the daemon: health says so, state answers 503 with the reason, and it comes back by itself."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.station_rig import Daemon, auth, serve_api, settings_for, sse_events, wait_for


async def test_without_a_daemon_health_answers_and_state_is_503_with_the_reason(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "station.sock"
    async with serve_api(settings_for(tmp_path, sock)) as url, httpx.AsyncClient(base_url=url) as api:
        health = await api.get("/health")
        assert health.status_code == 200
        assert health.json()["daemon"]["reachable"] is False
        assert "no daemon socket" in health.json()["daemon"]["error"]
        for path in ("/status", "/connectors", "/connectors/1", "/transactions"):
            response = await api.get(path)
            assert response.status_code == 503, path
            assert response.json()["detail"].startswith("station daemon not reachable: no daemon socket at")
        ready = await api.get("/ready")
        assert ready.status_code == 503 and ready.json()["daemon"]["ok"] is False
        assert (await api.post("/connectors/1/unlock", headers=auth())).status_code == 503
        metrics = await api.get("/metrics")
        assert metrics.status_code == 200 and "station_daemon_up 0.0" in metrics.text


async def test_the_api_reconnects_when_the_daemon_comes_back_and_notices_when_it_goes(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "station.sock"
    daemon = Daemon(tmp_path, sock)
    daemon.link_up()
    try:
        async with serve_api(settings_for(tmp_path, sock)) as url, httpx.AsyncClient(base_url=url) as api:
            assert (await api.get("/status")).status_code == 503
            seen: list[dict[str, Any]] = []
            reader = asyncio.ensure_future(sse_events(api, "/events", seen))

            await daemon.start()
            await wait_for(lambda: _reachable(api), what="API reconnects to the daemon")
            assert (await api.get("/status")).json()["station_id"] == "TEST_STATION_1"
            daemon.esp.plug()  # events flow again without the browser reconnecting
            await wait_for(lambda: any(e["event"] == "connector" for e in seen), what="event after reconnection")

            await daemon.stop()
            await wait_for(lambda: _unreachable(api), what="API notices the daemon is gone")
            assert (await api.get("/connectors")).status_code == 503
            daemon_events = [e["data"]["data"]["reachable"] for e in seen if e["event"] == "daemon"]
            assert daemon_events[0] is False and True in daemon_events and daemon_events[-1] is False

            await daemon.start()
            await wait_for(lambda: _reachable(api), what="API reconnects a second time")
            reader.cancel()
    finally:
        await daemon.close()


async def _reachable(api: httpx.AsyncClient) -> bool:
    return bool((await api.get("/health")).json()["daemon"]["reachable"])


async def _unreachable(api: httpx.AsyncClient) -> bool:
    return not await _reachable(api)
