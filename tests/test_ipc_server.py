"""The daemon's Unix socket: methods, validation, event stream, and resilience to bad clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from station.core.model import MeterReading
from station.ipc import protocol
from station.ipc.client import DaemonUnavailable, IpcClient, IpcError
from station.ipc.server import IpcServer
from tests.station_rig import Daemon, daemon, settle, wait_for  # noqa: F401 (fixture)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "station" / "station.sock"


@pytest.fixture
async def client(daemon: Daemon, sock_path: Path) -> AsyncIterator[IpcClient]:
    async with IpcClient(sock_path, timeout=5) as c:
        yield c


async def raw_exchange(path: Path, payload: bytes) -> list[dict[str, Any]]:
    """Send raw bytes, half-close, read every answer line."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    lines = []
    while line := await asyncio.wait_for(reader.readline(), 5):
        lines.append(json.loads(line))
    writer.close()
    return lines


# --- socket lifecycle --------------------------------------------------------------
async def test_socket_is_created_with_mode_0660_in_a_directory_made_for_it(daemon: Daemon, sock_path: Path) -> None:
    mode = sock_path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


async def test_stale_socket_left_by_a_crashed_daemon_is_replaced(tmp_path: Path, sock_path: Path) -> None:
    sock_path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))
    stale.close()  # file stays, nobody listens
    d = Daemon(tmp_path, sock_path)
    try:
        await d.start()
        async with IpcClient(sock_path) as c:
            assert (await c.status())["station_id"] == "TEST_STATION_1"
    finally:
        await d.close()


async def test_a_second_daemon_refuses_to_take_over_a_live_socket(daemon: Daemon, sock_path: Path) -> None:
    other = IpcServer(sock_path, daemon.core, status=dict)
    with pytest.raises(RuntimeError, match="another daemon"):
        await other.start()


async def test_a_regular_file_at_the_socket_path_is_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "station.sock"
    path.write_text("not a socket")
    d = Daemon(tmp_path, path)
    try:
        with pytest.raises(RuntimeError, match="not a socket"):
            await d.start()
        assert path.read_text() == "not a socket"
    finally:
        await d.close()


async def test_close_removes_the_socket(daemon: Daemon, sock_path: Path) -> None:
    await daemon.stop()
    assert not sock_path.exists()


# --- reads -------------------------------------------------------------------------
async def test_status_merges_the_core_snapshot_with_the_daemon_facts(client: IpcClient) -> None:
    status = await client.status()
    assert status["station_id"] == "TEST_STATION_1"
    assert status["ocpp"]["connected"] is True
    assert status["connectors"][0]["status"] == "Available"
    assert status["outbox_depth"] == 0
    assert status["clock"]["trusted"] is True
    assert status["process"]["pid"] == os.getpid()


async def test_status_still_reports_the_core_when_daemon_facts_fail(daemon: Daemon, client: IpcClient) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("meter object gone")

    assert daemon.server is not None
    daemon.server._status = broken
    status = await client.status()
    assert status["connectors"][0]["id"] == 1
    assert "meter object gone" in status["status_error"]


async def test_connector_reports_one_connector_and_unknown_ones_are_not_found(client: IpcClient) -> None:
    assert (await client.connector(1))["id"] == 1
    assert [c["id"] for c in await client.connectors()] == [1]
    with pytest.raises(IpcError) as err:
        await client.connector(7)
    assert err.value.code == protocol.NOT_FOUND
    assert "connector 7 does not exist" in err.value.message


async def test_transactions_are_paginated_most_recent_first(daemon: Daemon, client: IpcClient) -> None:
    for n in range(3):
        await client.start(1, f"TOKEN{n}")
        daemon.esp.plug()
        await settle()
        daemon.esp.unplug()
        await settle()
    page = await client.transactions(limit=2, offset=0)
    assert page["total"] == 3 and len(page["items"]) == 2
    assert page["items"][0]["id_token"] == "****KEN2"  # masked: see the next test
    rest = await client.transactions(limit=2, offset=2)
    assert [t["id_token"] for t in rest["items"]] == ["****KEN0"]


async def test_drivers_tokens_leave_the_daemon_only_masked(daemon: Daemon, client: IpcClient) -> None:
    events = client.events()
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.1)
    await client.start(1, "CANARY-TAG-77")
    daemon.esp.plug()
    await settle()
    seen = [await asyncio.wait_for(first, 5)]
    with contextlib.suppress(TimeoutError):
        while True:
            seen.append(await asyncio.wait_for(events.__anext__(), 0.5))
    await events.aclose()
    answers = [await client.status(), await client.connectors(), await client.connector(1), await client.transactions()]
    text = json.dumps([answers, seen])
    assert "CANARY-TAG-77" not in text
    assert "****G-77" in text


async def test_transactions_reject_a_page_size_out_of_range(client: IpcClient) -> None:
    with pytest.raises(IpcError) as err:
        await client.transactions(limit=0)
    assert err.value.code == protocol.INVALID_PARAMS


# --- commands ----------------------------------------------------------------------
async def test_start_then_plug_in_starts_a_transaction(daemon: Daemon, client: IpcClient) -> None:
    result = await client.start(1, "TECH1")
    assert result["accepted"] and result["connector_id"] == 1 and result["transaction_id"] is None
    daemon.esp.plug()
    await settle()
    tx = (await client.connector(1))["transaction"]
    assert tx["id_token"] == "****ECH1" and daemon.core.connectors[1].transaction.id_token == "TECH1"


async def test_start_on_a_busy_connector_is_rejected_with_the_reason(client: IpcClient) -> None:
    await client.start(1, "TECH1")
    with pytest.raises(IpcError) as err:
        await client.start(1, "TECH2")
    assert err.value.code == protocol.REJECTED and "busy" in err.value.message


@pytest.mark.parametrize("token", ["", "   ", "x" * 21, "bad\ntoken"])
async def test_start_with_an_unusable_token_never_reaches_the_core(
    daemon: Daemon, client: IpcClient, token: str
) -> None:
    with pytest.raises(IpcError) as err:
        await client.start(1, token)
    assert err.value.code == protocol.INVALID_PARAMS
    assert not daemon.core.connectors[1].pending


async def test_stop_by_connector_ends_the_transaction(daemon: Daemon, client: IpcClient) -> None:
    await client.start(1, "TECH1")
    daemon.esp.plug()
    await settle()
    tx_id = daemon.core.connectors[1].transaction.id  # type: ignore[union-attr]
    result = await client.stop(connector_id=1)
    assert result == {"stopped": True, "connector_id": 1, "transaction_id": tx_id}
    assert daemon.store.get_transaction(tx_id).stop_reason == "Local"  # type: ignore[union-attr]


async def test_stop_by_unknown_transaction_id_is_not_found(client: IpcClient) -> None:
    with pytest.raises(IpcError) as err:
        await client.stop("no-such-tx")
    assert err.value.code == protocol.NOT_FOUND


async def test_stop_needs_exactly_one_target(client: IpcClient) -> None:
    with pytest.raises(IpcError) as err:
        await client.call("stop", {})
    assert err.value.code == protocol.INVALID_PARAMS
    with pytest.raises(IpcError):
        await client.call("stop", {"connector_id": 1, "transaction_id": "x"})


async def test_stop_with_nothing_running_is_rejected(client: IpcClient) -> None:
    with pytest.raises(IpcError) as err:
        await client.stop(connector_id=1)
    assert err.value.code == protocol.REJECTED


async def test_availability_inoperative_makes_the_connector_unavailable(client: IpcClient) -> None:
    assert (await client.availability(1, False))["status"] == "Accepted"
    assert (await client.connector(1))["status"] == "Unavailable"
    await client.availability(0, True)  # 0 = the whole station
    assert (await client.connector(1))["status"] == "Available"


async def test_availability_needs_a_boolean(client: IpcClient) -> None:
    with pytest.raises(IpcError) as err:
        await client.call("availability", {"connector_id": 1, "operative": "no"})
    assert err.value.code == protocol.INVALID_PARAMS


async def test_unlock_during_a_transaction_is_refused(daemon: Daemon, client: IpcClient) -> None:
    await client.start(1, "TECH1")
    daemon.esp.plug()
    await settle()
    with pytest.raises(IpcError) as err:
        await client.unlock(1)
    assert err.value.code == protocol.REJECTED and "ongoing transaction" in err.value.message


async def test_unlock_an_idle_unlocked_connector_reports_unlocked(client: IpcClient) -> None:
    assert (await client.unlock(1)) == {"status": "Unlocked", "connector_id": 1}


async def test_local_limit_is_applied_and_null_clears_it(daemon: Daemon, client: IpcClient) -> None:
    result = await client.limit(1, 10)
    assert result["effective_limit_a"] == {"1": 10.0}
    assert daemon.core.connectors[1].limits["local"] == 10.0
    await client.limit(1, None)
    assert "local" not in daemon.core.connectors[1].limits


@pytest.mark.parametrize("amps", [3, 33, -1, "16", True])
async def test_a_limit_the_pilot_cannot_signal_never_reaches_the_core(
    daemon: Daemon, client: IpcClient, amps: Any
) -> None:
    with pytest.raises(IpcError) as err:
        await client.limit(1, amps)
    assert err.value.code == protocol.INVALID_PARAMS
    assert "local" not in daemon.core.connectors[1].limits


async def test_unknown_parameters_are_named_in_the_error(client: IpcClient) -> None:
    with pytest.raises(IpcError) as err:
        await client.call("unlock", {"connector_id": 1, "force": True})
    assert "force" in err.value.message


async def test_control_actions_are_logged_with_outcome_and_caller(client: IpcClient) -> None:
    with capture_logs() as logs:
        await client.limit(1, 16)
        with pytest.raises(IpcError):
            await client.unlock(5)
    done = [e for e in logs if e["event"] == "control action"]
    refused = [e for e in logs if e["event"] == "control action refused"]
    assert done[0]["action"] == "limit" and done[0]["outcome"]["effective_limit_a"] == {"1": 16.0}
    assert done[0]["peer"]["pid"] == os.getpid()
    assert refused[0]["action"] == "unlock" and refused[0]["outcome"] == protocol.NOT_FOUND


# --- probe -------------------------------------------------------------------------
async def test_probe_returns_the_daemons_evidence(tmp_path: Path, sock_path: Path) -> None:
    async def probe() -> list[dict[str, Any]]:
        return [{"action": "Heartbeat", "status": "Accepted"}, {"action": "StatusNotification", "status": "Accepted"}]

    d = Daemon(tmp_path, sock_path, probe=probe)
    await d.start()
    try:
        async with IpcClient(sock_path) as c:
            assert [m["action"] for m in await c.probe()] == ["Heartbeat", "StatusNotification"]
    finally:
        await d.close()


async def test_probe_failure_is_an_unavailable_error_without_secrets(tmp_path: Path, sock_path: Path) -> None:
    from station.logs import register_secrets

    register_secrets(["probe-canary-password"])

    async def probe() -> None:
        raise ConnectionError("ws://st:probe-canary-password@csms refused")

    d = Daemon(tmp_path, sock_path, probe=probe)
    await d.start()
    try:
        async with IpcClient(sock_path) as c:
            with pytest.raises(IpcError) as err:
                await c.probe()
        assert err.value.code == protocol.UNAVAILABLE
        assert "refused" in err.value.message and "probe-canary-password" not in err.value.message
    finally:
        await d.close()


async def test_probe_without_a_csms_connection_says_so(client: IpcClient) -> None:
    with pytest.raises(IpcError) as err:
        await client.probe()
    assert err.value.code == protocol.UNAVAILABLE


async def test_a_slow_probe_does_not_hold_up_other_requests_on_the_same_connection(
    tmp_path: Path, sock_path: Path
) -> None:
    release = asyncio.Event()

    async def probe() -> str:
        await release.wait()
        return "done"

    d = Daemon(tmp_path, sock_path, probe=probe)
    await d.start()
    try:
        async with IpcClient(sock_path) as c:
            slow = asyncio.ensure_future(c.probe())
            assert (await c.status())["station_id"] == "TEST_STATION_1"
            assert not slow.done()
            release.set()
            assert await slow == "done"
    finally:
        await d.close()


# --- events ------------------------------------------------------------------------
async def test_subscribe_streams_events_as_they_happen(daemon: Daemon, sock_path: Path) -> None:
    client = IpcClient(sock_path)
    subscribed = asyncio.Event()
    seen: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in client.events(on_subscribed=subscribed.set):
            seen.append(event)

    task = asyncio.ensure_future(collect())
    await asyncio.wait_for(subscribed.wait(), 5)
    daemon.core.on_meter_reading(MeterReading(energy_import_wh=1234.0, voltage_v=(230.0, 231.0, 229.0)))
    await wait_for(lambda: any(e["kind"] == "meter" for e in seen), what="meter event")
    meter = next(e for e in seen if e["kind"] == "meter")
    assert meter["data"]["meter"]["energy_wh"] == 1234.0 and "at" in meter
    task.cancel()


async def test_a_burst_of_events_reaches_the_subscriber_complete_and_in_order(daemon: Daemon, sock_path: Path) -> None:
    subscribed = asyncio.Event()
    energies: list[float] = []
    kinds: set[str] = set()

    async def collect() -> None:
        async for event in IpcClient(sock_path).events(on_subscribed=subscribed.set):
            kinds.add(event["kind"])
            if event["kind"] == "meter":
                energies.append(event["data"]["meter"]["energy_wh"])

    task = asyncio.ensure_future(collect())
    await asyncio.wait_for(subscribed.wait(), 5)
    for burst in range(3):  # bursts written while the previous one is still being held back
        for k in range(300):
            daemon.core.on_meter_reading(MeterReading(energy_import_wh=float(burst * 300 + k)))
        await asyncio.sleep(0)
    await wait_for(lambda: len(energies) == 900, what="every meter event")
    assert energies == [float(k) for k in range(900)]
    assert "ipc_events_dropped" not in kinds
    task.cancel()


async def test_subscription_can_be_limited_to_some_kinds(daemon: Daemon, sock_path: Path) -> None:
    subscribed = asyncio.Event()
    seen: list[str] = []

    async def collect() -> None:
        async for event in IpcClient(sock_path).events(["connector"], on_subscribed=subscribed.set):
            seen.append(event["kind"])

    task = asyncio.ensure_future(collect())
    await asyncio.wait_for(subscribed.wait(), 5)
    daemon.core.on_meter_reading(MeterReading(energy_import_wh=1.0))
    daemon.esp.plug()
    await wait_for(lambda: seen, what="connector event")
    assert set(seen) == {"connector"}
    task.cancel()


async def test_a_subscriber_that_hangs_up_is_unsubscribed(daemon: Daemon, sock_path: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(protocol.encode({"id": 1, "method": "subscribe"}))
    await reader.readline()
    server = daemon.server
    assert server is not None
    await wait_for(lambda: server.subscribers == 1, what="subscription")
    writer.close()
    await wait_for(lambda: server.subscribers == 0 and not daemon.core.events._subs, what="unsubscription")


async def test_event_stream_ends_with_daemon_unavailable_when_the_daemon_stops(
    daemon: Daemon, sock_path: Path
) -> None:
    subscribed = asyncio.Event()

    async def consume() -> None:
        async for _ in IpcClient(sock_path).events(on_subscribed=subscribed.set):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(subscribed.wait(), 5)
    await daemon.stop()
    with pytest.raises(DaemonUnavailable):
        await asyncio.wait_for(task, 5)


# --- misbehaving clients -------------------------------------------------------------
async def test_garbage_is_answered_with_a_parse_error_and_the_connection_keeps_working(
    daemon: Daemon, sock_path: Path
) -> None:
    answers = await raw_exchange(sock_path, b"\xff\xfe garbage\n[1,2]\n" + protocol.encode({"id": 5, "method": "connectors"}))
    assert answers[0]["error"]["code"] == protocol.PARSE_ERROR
    assert answers[1]["error"]["code"] == protocol.INVALID_REQUEST
    assert answers[2]["id"] == 5 and answers[2]["result"][0]["id"] == 1


async def test_unknown_method_lists_the_known_ones(daemon: Daemon, sock_path: Path) -> None:
    answers = await raw_exchange(sock_path, protocol.encode({"id": "a", "method": "reboot"}))
    assert answers == [{"id": "a", "error": {"code": protocol.METHOD_NOT_FOUND, "message": answers[0]["error"]["message"]}}]
    assert "status" in answers[0]["error"]["message"]


async def test_an_endless_line_closes_only_that_connection(daemon: Daemon, sock_path: Path, client: IpcClient) -> None:
    reader, writer = await asyncio.open_unix_connection(str(sock_path))
    writer.write(b"x" * (protocol.MAX_REQUEST_BYTES + 10))  # fits the socket buffer: no EPIPE on our side
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the daemon hung up
    assert json.loads(answer)["error"]["code"] == protocol.INVALID_REQUEST
    assert (await client.status())["station_id"] == "TEST_STATION_1"


async def test_a_client_vanishing_mid_request_leaves_the_daemon_serving(daemon: Daemon, sock_path: Path) -> None:
    for _ in range(5):
        _, writer = await asyncio.open_unix_connection(str(sock_path))
        writer.write(protocol.encode({"id": 1, "method": "status"}))
        writer.close()
    async with IpcClient(sock_path) as c:
        assert (await c.status())["connectors"]


async def test_too_many_clients_are_turned_away_but_existing_ones_keep_working(
    daemon: Daemon, sock_path: Path, client: IpcClient
) -> None:
    assert daemon.server is not None
    daemon.server.max_connections = 2
    assert await client.connectors()  # connection 1
    async with IpcClient(sock_path) as second:
        assert await second.connectors()  # connection 2
        reader, writer = await asyncio.open_unix_connection(str(sock_path))
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert answer["error"]["code"] == protocol.TOO_MANY
        writer.close()
    assert await client.connectors()


# --- client ------------------------------------------------------------------------
async def test_client_without_a_daemon_raises_daemon_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnavailable, match="no daemon socket"):
        await IpcClient(tmp_path / "none.sock").status()


async def test_client_reconnects_on_the_next_call_after_a_daemon_restart(daemon: Daemon, client: IpcClient) -> None:
    assert await client.connectors()
    await daemon.stop()
    with pytest.raises(DaemonUnavailable):
        await client.connectors()
    await daemon.start()
    assert (await client.connectors())[0]["id"] == 1


# --- device model view -------------------------------------------------------------
def _variable(rows: list[dict[str, Any]], component: str, variable: str) -> dict[str, Any]:
    return next(r for r in rows if r["component"]["name"] == component and r["variable"]["name"] == variable)


async def test_device_model_lists_every_variable_with_its_value_and_characteristics(client: IpcClient) -> None:
    rows = await client.device_model()
    heartbeat = _variable(rows, "OCPPCommCtrlr", "HeartbeatInterval")
    assert heartbeat["attributes"] == [{"type": "Actual", "mutability": "ReadWrite", "persistent": True, "value": "300"}]
    assert heartbeat["characteristics"]["unit"] == "s" and heartbeat["key16"] == "HeartbeatInterval"
    connector = _variable(rows, "Connector", "ConnectorType")
    assert connector["component"] == {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}


async def test_device_model_masks_a_secret_value_even_once_it_is_set(daemon: Daemon, client: IpcClient) -> None:
    model = daemon.core.device_model
    model.bind("SecurityCtrlr", "BasicAuthPassword", apply=lambda *_: None)
    assert model.write(model.entry("SecurityCtrlr", "BasicAuthPassword"), "CANARY-PASSWORD-0123").status == "Accepted"
    rows = await client.device_model()
    password = _variable(rows, "SecurityCtrlr", "BasicAuthPassword")
    assert password["attributes"][0]["value"] == "***"
    assert "CANARY-PASSWORD-0123" not in json.dumps(rows)


async def test_failed_logins_reported_by_the_api_raise_one_security_event_per_burst(daemon: Daemon, client: IpcClient) -> None:
    first = await client.call("login_failed", {"source": "local API from 10.0.0.7", "count": 3})
    again = await client.call("login_failed", {"source": "local API from 10.0.0.7", "count": 40})
    assert first == {"event": True} and again == {"event": False}
    events = daemon.core.security_events.between()
    assert [(e.type, e.tech_info) for e in events] == [("MaintenanceLoginFailed", "failed login: local API from 10.0.0.7")]


@pytest.mark.parametrize("params", [{}, {"source": ""}, {"source": "x" * 101}, {"source": "api", "count": 0},
                                    {"source": "api", "extra": 1}])
async def test_a_malformed_login_failure_report_is_refused(client: IpcClient, params: dict[str, Any]) -> None:
    with pytest.raises(IpcError) as err:
        await client.call("login_failed", params)
    assert err.value.code == protocol.INVALID_PARAMS
