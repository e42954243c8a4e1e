"""The dev CSMS's CitrineOS quirks mode (docs/interop.md): each quirk as CitrineOS shows it, and the
station staying correct beside it (real core, real OCPP client, real WebSocket on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from station.core.model import MeterReading
from station.devtools.csms import main as csms_main
from station.devtools.csms_quirks import QUIRKS, CitrineQuirksCsms
from station.devtools.demo import free_port
from tests.aio import eventually
from tests.ocpp_helpers import BOOT_16, BOOT_201, Rig


# ------------------------------------------------------------------ a bare station on the wire
@contextlib.asynccontextmanager
async def wire(csms: CitrineQuirksCsms, version: str, station_id: str = "RAW") -> AsyncIterator[ClientConnection]:
    subprotocol = "ocpp2.0.1" if version == "201" else "ocpp1.6"
    async with connect(csms.url(version, station_id), subprotocols=[subprotocol]) as ws:  # type: ignore[list-item]
        yield ws


async def call(ws: ClientConnection, unique_id: str, action: str, payload: dict[str, Any]) -> list[Any]:
    await ws.send(json.dumps([2, unique_id, action, payload]))
    return await answer(ws, unique_id)


async def answer(ws: ClientConnection, unique_id: str) -> list[Any]:
    async with asyncio.timeout(10):
        while True:
            frame = json.loads(await ws.recv())
            if frame[0] in (3, 4) and frame[1] == unique_id:
                return list(frame)


async def unanswered(ws: ClientConnection, unique_id: str, action: str, payload: dict[str, Any]) -> None:
    await ws.send(json.dumps([2, unique_id, action, payload]))


STATUS_201 = {"timestamp": "2026-01-01T00:00:00Z", "connectorStatus": "Available", "evseId": 1, "connectorId": 1}


async def test_quirks_mode_knows_each_quirk_by_name() -> None:
    with pytest.raises(ValueError, match="unknown quirks"):
        CitrineQuirksCsms(quirks=["call-cache", "typo"])
    assert set(CitrineQuirksCsms().quirks) == set(QUIRKS)


async def test_dev_csms_cli_offers_citrineos_quirks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        csms_main(["--help"])
    assert "--quirks {citrineos}" in capsys.readouterr().out


async def test_first_status_notification_of_a_station_is_never_answered_and_later_ones_are() -> None:
    async with CitrineQuirksCsms(quirks=["first-status-dropped"]) as csms, wire(csms, "201") as ws:
        assert (await call(ws, "b1", "BootNotification", BOOT_201))[0] == 3
        await unanswered(ws, "s1", "StatusNotification", STATUS_201)
        heartbeat = await call(ws, "h1", "Heartbeat", {})  # answered: "s1" never is
        assert heartbeat[0] == 3
        assert (await call(ws, "s2", "StatusNotification", STATUS_201))[0] == 3
    assert [h.unique_id for h in csms.hits_of("first-status-dropped")] == ["s1"]


async def test_an_unanswered_call_holds_the_call_cache_and_calls_meanwhile_are_refused_in_progress() -> None:
    async with CitrineQuirksCsms(call_cache_seconds=0.5) as csms, wire(csms, "201") as ws:
        assert (await call(ws, "b1", "BootNotification", BOOT_201))[0] == 3
        await unanswered(ws, "s1", "StatusNotification", STATUS_201)
        refused = await call(ws, "h1", "Heartbeat", {})
        assert refused[:4] == [4, "h1", "RpcFrameworkError", "Call already in progress"]
        while (late := await call(ws, "h2", "Heartbeat", {}))[0] == 4:  # until the cache entry expires
            await asyncio.sleep(0.1)
        assert late[0] == 3
    assert [h.unique_id for h in csms.hits_of("call-cache")][:1] == ["h1"]


async def test_a_station_call_while_a_csms_call_awaits_its_answer_is_refused_in_progress() -> None:
    async with CitrineQuirksCsms() as csms, wire(csms, "201") as ws:
        assert (await call(ws, "b1", "BootNotification", BOOT_201))[0] == 3
        pending = asyncio.create_task(csms.call("RAW", "Reset", {"type": "OnIdle"}))
        async with asyncio.timeout(10):
            incoming = json.loads(await ws.recv())
        assert incoming[2] == "Reset"
        assert (await call(ws, "h1", "Heartbeat", {}))[2] == "RpcFrameworkError"
        await ws.send(json.dumps([3, incoming[1], {"status": "Accepted"}]))
        assert (await pending)["status"] == "Accepted"
        assert (await call(ws, "h2", "Heartbeat", {}))[0] == 3  # the slot is free again


async def test_ocpp16_security_event_notification_is_answered_internal_error() -> None:
    async with CitrineQuirksCsms() as csms, wire(csms, "16") as ws:
        assert (await call(ws, "b1", "BootNotification", BOOT_16))[0] == 3
        refused = await call(ws, "e1", "SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": "2026-01-01T00:00:00Z"})
        assert refused[:3] == [4, "e1", "InternalError"]
    async with CitrineQuirksCsms() as csms, wire(csms, "201") as ws:
        assert (await call(ws, "b1", "BootNotification", BOOT_201))[0] == 3
        accepted = await call(ws, "e1", "SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": "2026-01-01T00:00:00Z"})
        assert accepted[0] == 3


@pytest.mark.parametrize("action", ["LogStatusNotification", "FirmwareStatusNotification"])
async def test_status_notification_of_an_upload_or_update_without_request_id_is_refused(action: str) -> None:
    async with CitrineQuirksCsms() as csms, wire(csms, "201") as ws:
        assert (await call(ws, "b1", "BootNotification", BOOT_201))[0] == 3
        assert (await call(ws, "i1", action, {"status": "Idle"}))[:3] == [4, "i1", "InternalError"]
        busy = "Uploading" if action == "LogStatusNotification" else "Downloading"
        assert (await call(ws, "u1", action, {"status": busy, "requestId": 4}))[0] == 3
    assert [h.action for h in csms.hits_of("request-id-demanded")] == [action]


# ------------------------------------------------------------------ the station beside CitrineOS
@contextlib.asynccontextmanager
async def station(tmp_path: Path, version: str, **quirks: Any) -> AsyncIterator[Rig]:
    async with CitrineQuirksCsms(heartbeat_interval=300, **quirks) as csms:
        rig = await Rig(version, csms, tmp_path / "station.db").start()
        try:
            await csms.wait_connected("CP", timeout=10)
            yield rig
        finally:
            await rig.stop()


async def remote_start(rig: Rig) -> None:
    if rig.version == "201":
        answer = await rig.csms.call("CP", "RequestStartTransaction", {
            "idToken": {"idToken": "TAG1", "type": "ISO14443"}, "remoteStartId": 7, "evseId": 1})
    else:
        answer = await rig.csms.call("CP", "RemoteStartTransaction", {"idTag": "TAG1", "connectorId": 1})
    assert answer["status"] == "Accepted"
    assert rig.esp is not None
    rig.esp.plug()
    rig.esp.ev_requests_charge()


def started(rig: Rig) -> str:
    return "TransactionEvent" if rig.version == "201" else "StartTransaction"


@pytest.mark.parametrize("version", ["201", "16"])
async def test_after_its_first_status_notification_is_dropped_the_station_delivers_a_remote_started_session(
        tmp_path: Path, version: str) -> None:
    # The station's own answer timeout (3 s in the rig) outlasts the cache entry, as 30 s vs 30 s does.
    async with station(tmp_path, version, call_cache_seconds=1) as rig:
        csms = rig.csms
        await csms.wait_for("StatusNotification", "CP", timeout=10)
        assert len(csms.hits_of("first-status-dropped")) == 1
        mark = csms.mark()
        await remote_start(rig)
        await csms.wait_for(started(rig), "CP", since=mark, timeout=20)
        await csms.wait_for("StatusNotification", "CP", since=mark, timeout=20)  # Occupied reaches the CSMS


@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_connector_status_the_csms_dropped_is_sent_again_after_the_next_answered_heartbeat(
        tmp_path: Path, version: str) -> None:
    async with station(tmp_path, version, call_cache_seconds=1) as rig:
        csms = rig.csms
        dropped = await csms.wait_for("StatusNotification", "CP", timeout=10)
        assert (await csms.call("CP", "TriggerMessage", {"requestedMessage": "Heartbeat"}))["status"] == "Accepted"
        await csms.wait_for("Heartbeat", "CP", timeout=10)
        again = await csms.wait_for("StatusNotification", "CP", lambda r: r.unique_id != dropped.unique_id, timeout=20)
        field = "connectorStatus" if version == "201" else "status"
        assert again.payload[field] == dropped.payload[field] == "Available"


async def test_a_triggered_idle_log_status_refused_for_its_missing_request_id_leaves_the_station_serving(tmp_path: Path) -> None:
    async with station(tmp_path, "201", quirks=["request-id-demanded"]) as rig:
        csms = rig.csms
        await csms.wait_for("StatusNotification", "CP", timeout=10)
        mark = csms.mark()
        answer = await csms.call("CP", "TriggerMessage", {"requestedMessage": "LogStatusNotification"})
        assert answer["status"] == "Accepted"
        idle = await csms.wait_for("LogStatusNotification", "CP", since=mark, timeout=10)
        assert idle.payload == {"status": "Idle"}  # no stale requestId: optional when triggered while idle
        assert csms.hits_of("request-id-demanded")
        answer = await csms.call("CP", "TriggerMessage", {"requestedMessage": "Heartbeat"})
        assert answer["status"] == "Accepted"
        await csms.wait_for("Heartbeat", "CP", since=mark, timeout=10)


async def test_ocpp16_transaction_messages_pass_security_events_the_csms_answers_internal_error(tmp_path: Path) -> None:
    async with station(tmp_path, "16", quirks=["security-event-16-error"]) as rig:
        csms = rig.csms
        await csms.wait_for("StatusNotification", "CP", timeout=10)
        assert (await csms.call("CP", "ChangeConfiguration", {"key": "TransactionMessageRetryInterval", "value": "5"}))["status"] == "Accepted"
        assert rig.core is not None
        rig.core.security_events.record("TamperDetectionActivated", "lid opened")
        await csms.wait_for("SecurityEventNotification", "CP", timeout=10)
        await remote_start(rig)
        start = await csms.wait_for("StartTransaction", "CP", timeout=30)
        before = [r for r in csms.received[:csms.received.index(start)] if r.kind == "call" and r.action == "SecurityEventNotification"]
        assert len(before) == 1, "StartTransaction waited for the refused security event's retries"
        assert csms.hits_of("security-event-16-error")



@pytest.mark.parametrize("version", ["201", "16"])
async def test_a_session_started_offline_reaches_the_csms_before_the_status_it_leaves_unanswered(
        tmp_path: Path, version: str) -> None:
    # CitrineOS never answers a station's first StatusNotification: sent first at connect, it held the
    # queued Started back for the whole answer timeout (30 s). The queued transaction messages go first.
    csms = CitrineQuirksCsms(port=free_port(), heartbeat_interval=300, call_cache_seconds=1)
    rig = await Rig(version, csms, tmp_path / "station.db").start()
    try:
        assert rig.core is not None and rig.esp is not None
        rig.core.on_meter_reading(MeterReading(1000.0))
        rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
        rig.esp.plug()
        rig.esp.ev_requests_charge()
        assert [e.kind for e in rig.core.store.pending_outbox(100)][:1] == ["started"]
        await csms.start()
        dropped = await csms.wait_for("StatusNotification", "CP", timeout=20)
        assert [h.unique_id for h in csms.hits_of("first-status-dropped")] == [dropped.unique_id]
        calls = [r for r in csms.received[:csms.received.index(dropped)] if r.kind == "call"]
        first = next(r for r in calls if r.action == started(rig))
        if version == "201":
            assert first.payload["eventType"] == "Started" and first.payload["offline"] is True
        core = rig.core
        await eventually(lambda: "started" not in [e.kind for e in core.store.pending_outbox(100)], 20)
    finally:
        await rig.stop()
        await csms.stop()
