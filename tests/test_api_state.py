"""The API's read side, under uvicorn, in front of a real daemon side (IPC server + core + SQLite)."""

from __future__ import annotations

import httpx

from station.core.model import MeterReading
from tests.station_rig import Daemon, api, daemon, settle, sock_path  # noqa: F401 - fixtures

assert api and daemon and sock_path


async def test_health_reports_the_api_alive_and_the_daemon_reachable(api: httpx.AsyncClient) -> None:
    body = (await api.get("/health")).json()
    assert body["status"] == "ok"
    assert body["daemon"]["reachable"] is True and body["daemon"]["error"] is None


async def test_ready_reports_each_dependency_and_is_200_when_all_are_up(api: httpx.AsyncClient) -> None:
    response = await api.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] and body["daemon"]["ok"] and body["esp32"]["ok"] and body["csms"]["ok"]


async def test_ready_is_503_and_names_what_is_down(api: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.facts["ocpp"] = {**daemon.facts["ocpp"], "connected": False, "last_error": "connection refused"}
    daemon.core.on_controller_link(1, False, "no valid frame for 3 s")
    response = await api.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["daemon"]["ok"] is True
    assert body["esp32"] == {"ok": False, "detail": "connector 1: charge controller (ESP32) sends no status: "
                                                    "the port is open but nothing valid arrives"}
    assert body["csms"]["ok"] is False
    assert body["csms"]["detail"].startswith("The CSMS server refuses connections")


async def test_status_carries_station_versions_links_queue_and_clock(api: httpx.AsyncClient) -> None:
    body = (await api.get("/status")).json()
    assert body["station_id"] == "TEST_STATION_1"
    assert body["software_version"] == "0.1.0"
    assert body["ocpp"]["version"] == "201" and body["ocpp"]["connected"] is True
    assert body["esp32"]["1"]["firmware"] == "1.4.2"
    assert body["outbox_depth"] == 0
    assert body["clock"]["trusted"] is True
    assert body["problems"] == []


async def test_status_flags_undervoltage_unsynced_clock_and_unreachable_csms(
    api: httpx.AsyncClient, daemon: Daemon
) -> None:
    daemon.core.on_meter_reading(MeterReading(energy_import_wh=10.0, voltage_v=(201.5, 0.0, 0.0)))
    daemon.core.clock.trusted = False
    daemon.facts["ocpp"] = {**daemon.facts["ocpp"], "connected": False, "last_error": "timeout"}
    problems = {p["code"]: p for p in (await api.get("/status")).json()["problems"]}
    assert set(problems) == {"undervoltage", "clock_not_synced", "csms_unreachable"}
    assert "202 V" in problems["undervoltage"]["message"] or "201 V" in problems["undervoltage"]["message"]
    assert problems["csms_unreachable"]["what"] == "the CSMS cannot be reached"
    assert "timeout" not in problems["csms_unreachable"]["message"]


async def test_status_flags_an_esp32_link_down(api: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.core.on_controller_link(1, False, "port closed")
    codes = [p["code"] for p in (await api.get("/status")).json()["problems"]]
    assert codes == ["esp32_link_down"]


async def test_status_warns_of_esp32_values_outside_the_protocol(api: httpx.AsyncClient, daemon: Daemon) -> None:
    esp = daemon.facts["esp32"]["1"]
    daemon.facts["esp32"] = {"1": {**esp, "warnings": ["PWM=267 outside 0..255"]}}
    problems = (await api.get("/status")).json()["problems"]
    assert [(p["code"], p["severity"]) for p in problems] == [("esp32_unexpected_values", "warning")]
    assert "PWM=267 outside 0..255" in problems[0]["message"]


async def test_connectors_list_and_single_connector(api: httpx.AsyncClient) -> None:
    listed = (await api.get("/connectors")).json()
    assert [c["id"] for c in listed] == [1]
    one = (await api.get("/connectors/1")).json()
    assert one["status"] == "Available" and one["controller_link"]["up"] is True


async def test_unknown_connector_is_404_with_a_clear_message(api: httpx.AsyncClient) -> None:
    response = await api.get("/connectors/4")
    assert response.status_code == 404
    assert response.json() == {"detail": "connector 4 does not exist (this station has: 1)"}


async def test_connector_id_must_be_a_positive_integer(api: httpx.AsyncClient) -> None:
    response = await api.get("/connectors/abc")
    assert response.status_code == 422
    assert "connector_id" in response.json()["detail"]


async def test_transactions_are_paginated_and_tokens_masked(api: httpx.AsyncClient, daemon: Daemon) -> None:
    for n in range(3):
        daemon.core.request_start(1, f"DRIVERTOKEN{n}")
        daemon.esp.plug()
        await settle()
        daemon.esp.unplug()
        await settle()
    page = (await api.get("/transactions", params={"limit": 2})).json()
    assert page["total"] == 3 and page["limit"] == 2 and len(page["items"]) == 2
    assert page["items"][0]["id_token"] == "****KEN2"
    assert "DRIVERTOKEN" not in (await api.get("/transactions")).text
    second = (await api.get("/transactions", params={"limit": 2, "offset": 2})).json()
    assert len(second["items"]) == 1


async def test_transactions_reject_bad_paging(api: httpx.AsyncClient) -> None:
    assert (await api.get("/transactions", params={"limit": 0})).status_code == 422
    assert (await api.get("/transactions", params={"offset": -1})).status_code == 422


async def test_openapi_documents_every_endpoint(api: httpx.AsyncClient) -> None:
    assert (await api.get("/docs")).status_code == 200
    paths = (await api.get("/openapi.json")).json()["paths"]
    for path in ("/health", "/ready", "/status", "/connectors", "/connectors/{connector_id}", "/transactions",
                 "/events", "/metrics", "/connectors/{connector_id}/start", "/connectors/{connector_id}/stop",
                 "/connectors/{connector_id}/availability", "/connectors/{connector_id}/unlock",
                 "/connectors/{connector_id}/limit", "/device-model"):
        assert path in paths, path


async def test_status_page_is_served_at_the_root(api: httpx.AsyncClient) -> None:
    response = await api.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")


async def test_device_model_is_served_read_only_with_secrets_masked(api: httpx.AsyncClient, daemon: Daemon) -> None:
    model = daemon.core.device_model
    model.bind("SecurityCtrlr", "BasicAuthPassword", apply=lambda *_: None)
    model.write(model.entry("SecurityCtrlr", "BasicAuthPassword"), "CANARY-PASSWORD-0123")
    answer = await api.get("/device-model")
    assert answer.status_code == 200 and "CANARY-PASSWORD-0123" not in answer.text
    names = {(r["component"]["name"], r["variable"]["name"]) for r in answer.json()}
    assert {("ChargingStation", "AvailabilityState"), ("ClockCtrlr", "DateTime"), ("EVSE", "Power")} <= names
    assert set((await api.get("/openapi.json")).json()["paths"]["/device-model"]) == {"get"}  # no way to write
