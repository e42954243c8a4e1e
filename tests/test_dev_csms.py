"""The development CSMS: both versions on one port, recording, test API, CLI arguments."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from station.devtools.csms import DevCsms, build_parser, main
from station.ocpp.rpc import CallErrorReceived, StrictChargePoint
from tests.ocpp_helpers import BOOT_16, BOOT_201


async def test_serves_2_0_1_and_records_boot_notification() -> None:
    async with DevCsms(heartbeat_interval=42) as csms:
        async with connect(csms.url("201", "CP1"), subprotocols=["ocpp2.0.1"]) as ws:
            cp = StrictChargePoint("CP1", ws, "201")
            task = asyncio.create_task(cp.start())
            answer = await cp.request("BootNotification", BOOT_201)
            task.cancel()
        assert answer["status"] == "Accepted" and answer["interval"] == 42
        seen = await csms.wait_for("BootNotification", station_id="CP1")
        assert seen.version == "201" and seen.payload == BOOT_201


async def test_serves_1_6_on_the_same_port_and_numbers_transactions() -> None:
    async with DevCsms() as csms:
        async with connect(csms.url("16", "CP2"), subprotocols=["ocpp1.6"]) as ws:
            cp = StrictChargePoint("CP2", ws, "16")
            task = asyncio.create_task(cp.start())
            await cp.request("BootNotification", BOOT_16)
            start = {"connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": "2024-01-01T00:00:00Z"}
            first = await cp.request("StartTransaction", start)
            second = await cp.request("StartTransaction", start)
            assert csms.version_of("CP2") == "16"
            task.cancel()
        assert (first["transactionId"], second["transactionId"]) == (1, 2)
        assert [r.action for r in csms.calls(station_id="CP2")] == ["BootNotification", "StartTransaction", "StartTransaction"]


async def test_refuses_upgrade_when_no_offered_subprotocol_is_accepted() -> None:
    async with DevCsms(accept_subprotocols=("ocpp1.6",)) as csms:
        with pytest.raises(InvalidStatus) as refused:
            await connect(csms.url("201", "CP3"), subprotocols=["ocpp2.0.1"])
        assert refused.value.response.status_code == 400


async def test_basic_auth_rejects_wrong_password_with_401() -> None:
    async with DevCsms(passwords={"CP4": "s3cret"}) as csms:
        headers = {"Authorization": "Basic Q1A0Ondyb25n"}  # CP4:wrong
        with pytest.raises(InvalidStatus) as refused:
            await connect(csms.url("201", "CP4"), subprotocols=["ocpp2.0.1"], additional_headers=headers)
        assert refused.value.response.status_code == 401
        assert csms.auth_failures == ["CP4"]


async def test_authorize_answers_configured_token_status() -> None:
    async with DevCsms(tokens={"BLOCKED": "Blocked"}) as csms:
        async with connect(csms.url("201", "CP5"), subprotocols=["ocpp2.0.1"]) as ws:
            cp = StrictChargePoint("CP5", ws, "201")
            task = asyncio.create_task(cp.start())
            blocked = await cp.request("Authorize", {"idToken": {"idToken": "BLOCKED", "type": "ISO14443"}})
            fine = await cp.request("Authorize", {"idToken": {"idToken": "OTHER", "type": "ISO14443"}})
            task.cancel()
        assert blocked["idTokenInfo"]["status"] == "Blocked"
        assert fine["idTokenInfo"]["status"] == "Accepted"


async def test_override_turns_an_answer_into_a_callerror() -> None:
    from ocpp.exceptions import InternalError

    def fail(_: object) -> dict[str, object]:
        raise InternalError(description="database down")

    async with DevCsms() as csms:
        csms.override("Heartbeat", fail)
        async with connect(csms.url("201", "CP6"), subprotocols=["ocpp2.0.1"]) as ws:
            cp = StrictChargePoint("CP6", ws, "201")
            task = asyncio.create_task(cp.start())
            with pytest.raises(CallErrorReceived) as error:
                await cp.request("Heartbeat", {})
            task.cancel()
        assert error.value.code == "InternalError"


async def test_call_reaches_the_station_and_records_its_answer() -> None:
    async with DevCsms() as csms:
        async with connect(csms.url("201", "CP7"), subprotocols=["ocpp2.0.1"]) as ws:
            cp = StrictChargePoint("CP7", ws, "201")
            task = asyncio.create_task(cp.start())
            await csms.wait_connected("CP7")
            with pytest.raises(CallErrorReceived) as error:
                await csms.call("CP7", "Reset", {"type": "Immediate"})
            task.cancel()
        assert error.value.code == "NotSupported"  # a known action the bare session does not handle
        assert any(r.kind == "error" and r.action == "Reset" for r in csms.received)


async def test_disconnect_drops_the_station() -> None:
    async with DevCsms() as csms:
        async with connect(csms.url("201", "CP8"), subprotocols=["ocpp2.0.1"]) as ws:
            await csms.wait_connected("CP8")
            await csms.disconnect("CP8")
            assert not csms.connected("CP8")
            await ws.wait_closed()
            assert ws.close_code == 1001


def test_cli_parses_passwords_and_tls() -> None:
    args = build_parser().parse_args(["--port", "0", "--password", "A=1", "--password", "B=2", "--tls", "c.pem", "k.pem"])
    assert args.password == ["A=1", "B=2"] and args.tls == ["c.pem", "k.pem"] and args.port == 0


def test_cli_rejects_password_without_station(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--password", "nopassword"]) == 2
    assert "STATION=PASSWORD" in capsys.readouterr().err


def test_received_payloads_are_json_serialisable() -> None:
    from datetime import datetime, timezone

    from station.devtools.csms import Received

    item = Received("CP", "201", "Heartbeat", {}, datetime.now(timezone.utc), "1")
    assert json.dumps(item.payload) == "{}"


async def test_dev_csms_password_flag_requires_basic_auth_for_that_station_only(tmp_path: Path) -> None:
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "dev-csms", "--port", str(port), "--password", "T1=s3cret",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
    try:
        base = f"ws://127.0.0.1:{port}/ocpp201"
        async with asyncio.timeout(20):
            while True:
                try:
                    async with connect(f"{base}/OTHER", subprotocols=["ocpp2.0.1"]):
                        break  # another station needs no password
                except OSError:
                    await asyncio.sleep(0.1)
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{base}/T1", subprotocols=["ocpp2.0.1"])
        assert refused.value.response.status_code == 401
        ok = {"Authorization": "Basic VDE6czNjcmV0"}  # T1:s3cret
        async with connect(f"{base}/T1", subprotocols=["ocpp2.0.1"], additional_headers=ok):
            pass
    finally:
        proc.terminate()
        await proc.wait()
