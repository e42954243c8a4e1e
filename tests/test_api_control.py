"""Technician controls through the API: bearer token, validation before the daemon, outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from tests.station_rig import TOKEN, Daemon, api, auth, daemon, serve_api, settings_for, settle, sock_path  # noqa: F401

assert api and daemon and sock_path

CONTROL_CALLS = [
    ("POST", "/connectors/1/start", {"id_token": "TECH1"}),
    ("POST", "/connectors/1/stop", None),
    ("POST", "/transactions/abc/stop", None),
    ("PUT", "/connectors/1/availability", {"operative": False}),
    ("POST", "/connectors/1/unlock", None),
    ("PUT", "/connectors/1/limit", {"amps": 16}),
    ("DELETE", "/connectors/1/limit", None),
]


async def test_every_control_endpoint_without_a_token_is_401_and_changes_nothing(
    api: httpx.AsyncClient, daemon: Daemon
) -> None:
    for method, path, body in CONTROL_CALLS:
        response = await api.request(method, path, json=body)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
    conn = daemon.core.connectors[1]
    assert conn.operative and not conn.pending and "local" not in conn.limits


async def test_every_control_endpoint_with_a_wrong_token_is_401(api: httpx.AsyncClient) -> None:
    for method, path, body in CONTROL_CALLS:
        response = await api.request(method, path, json=body, headers=auth("canary-api-token-7c1X"))
        assert response.status_code == 401, path
        assert response.json() == {"detail": "invalid bearer token"}


async def test_a_basic_auth_header_is_not_a_bearer_token(api: httpx.AsyncClient) -> None:
    response = await api.post("/connectors/1/unlock", auth=("technician", TOKEN))
    assert response.status_code == 401


async def test_the_token_is_never_echoed_in_answers_or_logs(api: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        responses = [
            await api.put("/connectors/1/limit", json={"amps": 16}, headers=auth()),
            await api.put("/connectors/1/limit", json={"amps": 3}, headers=auth()),
            await api.get("/status", headers=auth()),
        ]
    for response in responses:
        assert TOKEN not in response.text and TOKEN not in str(response.headers)
    assert TOKEN not in repr(logs)


async def test_control_is_403_when_no_token_is_configured(tmp_path: Path, sock_path: Path, daemon: Daemon) -> None:
    async with serve_api(settings_for(tmp_path, sock_path, token=None)) as url, httpx.AsyncClient(base_url=url) as c:
        response = await c.post("/connectors/1/unlock", headers=auth())
    assert response.status_code == 403
    assert "STATION_API_TOKEN is not configured" in response.json()["detail"]


async def test_start_then_plug_in_starts_a_session(api: httpx.AsyncClient, daemon: Daemon) -> None:
    response = await api.post("/connectors/1/start", json={"id_token": "TECH-0001"}, headers=auth())
    assert response.status_code == 200
    assert response.json()["accepted"] is True and response.json()["transaction_id"] is None
    daemon.esp.plug()
    await settle()
    tx = (await api.get("/connectors/1")).json()["transaction"]
    assert tx["id_token"] == "****0001"
    assert daemon.core.connectors[1].transaction.token_type == "Local"  # type: ignore[union-attr]


async def test_start_on_a_busy_connector_is_409_with_the_reason(api: httpx.AsyncClient) -> None:
    await api.post("/connectors/1/start", json={"id_token": "TECH1"}, headers=auth())
    response = await api.post("/connectors/1/start", json={"id_token": "TECH2"}, headers=auth())
    assert response.status_code == 409
    assert response.json() == {"detail": "start refused: connector busy"}


@pytest.mark.parametrize("body", [{}, {"id_token": ""}, {"id_token": "has space"}, {"id_token": "x" * 21},
                                  {"id_token": "T", "token_type": "Magic"}, {"id_token": "T", "extra": 1}])
async def test_start_with_bad_input_is_422_and_never_reaches_the_daemon(
    api: httpx.AsyncClient, daemon: Daemon, body: dict[str, object]
) -> None:
    response = await api.post("/connectors/1/start", json=body, headers=auth())
    assert response.status_code == 422
    assert response.json()["detail"]
    assert not daemon.core.connectors[1].pending


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    response = await api.put("/connectors/1/limit", content=b'{"amps": 1', headers={
        **auth(), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "malformed JSON body"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_json_is_415_saying_so(api: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {**auth(), **({"Content-Type": content_type} if content_type else {})}
    response = await api.put("/connectors/1/limit", content=b'{"amps": 16}', headers=headers)
    assert response.status_code == 415
    assert response.json()["detail"] == ("request body must be JSON: send Content-Type: application/json "
                                         f"(got {content_type or 'no Content-Type'})")


async def test_a_json_body_with_a_charset_is_json(api: httpx.AsyncClient) -> None:
    response = await api.put("/connectors/1/limit", content=b'{"amps": 16}', headers={
        **auth(), "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 200, response.text


async def test_stop_ends_the_session(api: httpx.AsyncClient, daemon: Daemon) -> None:
    await api.post("/connectors/1/start", json={"id_token": "TECH1"}, headers=auth())
    daemon.esp.plug()
    await settle()
    tx_id = daemon.core.connectors[1].transaction.id  # type: ignore[union-attr]
    response = await api.post("/connectors/1/stop", headers=auth())
    assert response.json() == {"stopped": True, "connector_id": 1, "transaction_id": tx_id}
    assert daemon.core.connectors[1].transaction is None


async def test_stop_by_transaction_id(api: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.core.request_start(1, "TECH1")
    daemon.esp.plug()
    await settle()
    tx_id = daemon.core.connectors[1].transaction.id  # type: ignore[union-attr]
    assert (await api.post(f"/transactions/{tx_id}/stop", headers=auth())).status_code == 200
    assert (await api.post(f"/transactions/{tx_id}/stop", headers=auth())).status_code == 404


async def test_stop_with_nothing_running_is_409(api: httpx.AsyncClient) -> None:
    response = await api.post("/connectors/1/stop", headers=auth())
    assert response.status_code == 409
    assert "no transaction or pending authorization" in response.json()["detail"]


async def test_availability_takes_a_connector_out_of_service_and_back(api: httpx.AsyncClient) -> None:
    response = await api.put("/connectors/1/availability", json={"operative": False}, headers=auth())
    assert response.json() == {"status": "Accepted", "connector_id": 1, "operative": False}
    assert (await api.get("/connectors/1")).json()["status"] == "Unavailable"
    await api.put("/connectors/0/availability", json={"operative": True}, headers=auth())
    assert (await api.get("/connectors/1")).json()["status"] == "Available"


@pytest.mark.parametrize("operative", ["no", 0, 1, "false", None])
async def test_availability_accepts_json_booleans_only(api: httpx.AsyncClient, daemon: Daemon, operative: object) -> None:
    response = await api.put("/connectors/1/availability", json={"operative": operative}, headers=auth())
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("operative: ")
    assert daemon.core.connectors[1].operative


@pytest.mark.parametrize("body", [{"amps": "16"}, {"amps": True}])
async def test_a_limit_is_a_json_number_only(api: httpx.AsyncClient, daemon: Daemon, body: object) -> None:
    response = await api.put("/connectors/1/limit", json=body, headers=auth())
    assert response.status_code == 422, response.text
    assert "local" not in daemon.core.connectors[1].limits


async def test_availability_during_a_session_is_scheduled(api: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.core.request_start(1, "TECH1")
    daemon.esp.plug()
    await settle()
    response = await api.put("/connectors/1/availability", json={"operative": False}, headers=auth())
    assert response.json()["status"] == "Scheduled"


async def test_unlock_while_charging_is_409(api: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.core.request_start(1, "TECH1")
    daemon.esp.plug()
    await settle()
    response = await api.post("/connectors/1/unlock", headers=auth())
    assert response.status_code == 409
    assert "ongoing transaction" in response.json()["detail"]


async def test_unlock_an_idle_connector(api: httpx.AsyncClient) -> None:
    response = await api.post("/connectors/1/unlock", headers=auth())
    assert response.json() == {"status": "Unlocked", "connector_id": 1}


async def test_limit_is_set_and_cleared(api: httpx.AsyncClient, daemon: Daemon) -> None:
    response = await api.put("/connectors/1/limit", json={"amps": 10}, headers=auth())
    assert response.json() == {"connector_id": 1, "local_limit_a": 10.0, "effective_limit_a": {"1": 10.0}}
    assert (await api.get("/connectors/1")).json()["limit_a"] == 10.0
    await api.delete("/connectors/1/limit", headers=auth())
    assert "local" not in daemon.core.connectors[1].limits


@pytest.mark.parametrize("amps", [3, 40, -2, "sixteen"])
async def test_a_limit_the_pilot_cannot_signal_is_422(api: httpx.AsyncClient, daemon: Daemon, amps: object) -> None:
    response = await api.put("/connectors/1/limit", json={"amps": amps}, headers=auth())
    assert response.status_code == 422
    assert "amps" in response.json()["detail"]
    assert "local" not in daemon.core.connectors[1].limits


async def test_control_on_an_unknown_connector_is_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/connectors/9/unlock", headers=auth())
    assert response.status_code == 404
    assert response.json()["detail"] == "connector 9 does not exist (this station has: 1)"


async def test_every_control_request_is_logged_with_its_outcome(api: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        await api.put("/connectors/1/limit", json={"amps": 12}, headers=auth())
        await api.post("/connectors/1/stop", headers=auth())
    done = next(e for e in logs if e["event"] == "control request done")
    refused = next(e for e in logs if e["event"] == "control request refused")
    assert done["action"] == "limit" and done["outcome"]["local_limit_a"] == 12.0 and done["client"] == "127.0.0.1"
    assert refused["action"] == "stop" and refused["status"] == 409


async def test_start_with_a_token_the_station_may_not_accept_offline_is_409_naming_the_decision(
        api: httpx.AsyncClient, daemon: Daemon) -> None:
    daemon.core.auth.settings.set("AuthCtrlr", "OfflineTxForUnknownIdEnabled", False)  # type: ignore[attr-defined]
    response = await api.post("/connectors/1/start", json={"id_token": "STRANGER"}, headers=auth())
    assert response.status_code == 409
    assert response.json() == {"detail": "start refused: token not authorized (Unknown, local_list)"}
    daemon.core.store.local_list_update(1, {"TECH-LIST": ("Accepted", None)}, full=True)
    accepted = await api.post("/connectors/1/start", json={"id_token": "TECH-LIST"}, headers=auth())
    assert accepted.json()["authorization"] == {"status": "Accepted", "source": "local_list"}


async def test_a_reservation_is_listed_with_its_token_masked_and_shown_on_its_connector(
        api: httpx.AsyncClient, daemon: Daemon) -> None:
    from datetime import UTC, datetime, timedelta

    from station.core.reservations import Reservation

    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert daemon.core.reservations.reserve(Reservation(5, 1, "DRIVER-0042", "ISO14443", None, expires)) == "Accepted"
    listed = (await api.get("/reservations")).json()
    assert listed == [{"id": 5, "connector_id": 1, "id_token": "****0042", "token_type": "ISO14443", "group_id": None,
                       "expires_at": expires, "connector_type": None}]
    connector = (await api.get("/connectors/1")).json()
    assert connector["status"] == "Reserved" and connector["reservation"]["id_token"] == "****0042"
    refused = await api.post("/connectors/1/start", json={"id_token": "TECH1"}, headers=auth())
    assert refused.status_code == 409 and "reserved" in refused.json()["detail"]
