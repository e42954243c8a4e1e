"""Live events over SSE and the Prometheus exposition, fed by the daemon's event stream."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from station.core.model import MeterReading
from tests.station_rig import Daemon, api, daemon, settle, sock_path, sse_events, wait_for  # noqa: F401

assert api and daemon and sock_path


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_sse_streams_a_plug_in_as_it_happens(api: httpx.AsyncClient, daemon: Daemon) -> None:
    seen: list[dict[str, Any]] = []
    reader = asyncio.ensure_future(sse_events(api, "/events", seen))
    try:
        await wait_for(lambda: seen, what="first SSE event")
        assert seen[0]["event"] == "daemon" and seen[0]["data"]["data"]["reachable"] is True
        daemon.core.request_start(1, "DRIVERTOKEN9")
        daemon.esp.plug()
        await wait_for(lambda: any(e["event"] == "transaction" for e in seen), what="transaction event")
        tx_event = next(e for e in seen if e["event"] == "transaction")
        assert tx_event["data"]["data"]["event"] == "started"
        assert tx_event["data"]["data"]["transaction"]["id_token"] == "****KEN9"
        await wait_for(lambda: any(e["event"] == "connector" for e in seen), what="connector event")
        statuses = [e["data"]["data"]["connector"]["status"] for e in seen if e["event"] == "connector"]
        assert "Available" not in statuses  # vehicle plugged in, session authorized
    finally:
        reader.cancel()


async def test_recent_events_are_kept_for_a_page_that_opens_later(api: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.core.on_meter_reading(MeterReading(energy_import_wh=5.0))
    recent = await wait_for(lambda: _recent(api, "meter"), what="meter event in /events/recent")
    assert recent[-1]["data"]["meter"]["energy_wh"] == 5.0


async def _recent(api: httpx.AsyncClient, kind: str) -> list[dict[str, Any]]:
    return [e for e in (await api.get("/events/recent")).json() if e["kind"] == kind]


async def test_metrics_count_ocpp_messages_by_action_and_direction(api: httpx.AsyncClient, daemon: Daemon) -> None:
    for _ in range(2):
        daemon.core.events.publish("ocpp_message", action="Heartbeat", direction="out", type="call", version="201")
    daemon.core.events.publish("ocpp_message", action="Heartbeat", direction="in", type="result", version="201")
    key = ("station_ocpp_messages_total", (("action", "Heartbeat"), ("direction", "out")))

    async def counted() -> bool:
        return samples((await api.get("/metrics")).text).get(key) == 2.0

    await wait_for(counted, what="two outgoing heartbeats counted")
    values = samples((await api.get("/metrics")).text)
    assert values[("station_ocpp_messages_total", (("action", "Heartbeat"), ("direction", "in")))] == 1.0


async def test_metrics_expose_links_queue_frame_errors_energy_and_memory(
    api: httpx.AsyncClient, daemon: Daemon
) -> None:
    daemon.core.on_meter_reading(MeterReading(energy_import_wh=1000.0, power_w=7200.0))
    daemon.core.request_start(1, "T1")
    daemon.esp.plug()
    await settle()
    daemon.core.on_meter_reading(MeterReading(energy_import_wh=1750.0, power_w=7200.0))
    response = await api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    assert values[("station_daemon_up", ())] == 1.0
    assert values[("station_csms_connected", ())] == 1.0
    assert values[("station_csms_reconnects_total", ())] == 2.0
    assert values[("station_offline_queue_depth", ())] >= 1.0  # the transaction messages await the CSMS
    assert values[("station_esp32_link_up", (("connector", "1"),))] == 1.0
    assert values[("station_serial_frame_errors_total", (("connector", "1"),))] == 3.0
    assert values[("station_session_energy_wh", (("connector", "1"),))] == 750.0
    assert values[("station_connector_status", (("connector", "1"), ("status", "Available")))] == 0.0
    assert sum(v for (name, _), v in values.items() if name == "station_connector_status") == 1.0
    assert values[("station_daemon_resident_memory_bytes", ())] > 0
    assert values[("process_resident_memory_bytes", ())] > 0
