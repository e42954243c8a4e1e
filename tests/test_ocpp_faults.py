"""Faults a real CSMS exposed (issue 22) and the CSMS-side misuse of issue 21, against the strict dev CSMS."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import InternalError
from structlog.testing import capture_logs

from station.core.model import MeterReading
from station.devtools.csms import Received
from tests.ocpp_helpers import Rig, eventually, rig_on_dev_csms


@pytest.fixture(params=["201", "16"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms(request.param, tmp_path / "station.db") as rig:
        yield rig


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler (where "Task exception was never retrieved" goes)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(None)


def refuse(_: Received) -> dict[str, object]:
    raise InternalError(description="CSMS database down")


async def _refused_triggered_send(rig: Rig, requested: str, action: str) -> list[dict[str, Any]]:
    """Trigger `requested` with the CSMS refusing `action`; the log lines the station wrote meanwhile."""
    rig.csms.override(action, refuse)
    mark = rig.csms.mark()
    trigger = "TriggerMessage" if rig.version == "201" or requested in ("MeterValues", "FirmwareStatusNotification") \
        else "ExtendedTriggerMessage"
    with capture_logs() as logs:
        answer = await rig.csms.call("CP", trigger, {"requestedMessage": requested})
        assert answer["status"] == "Accepted"
        await rig.csms.wait_for(action, since=mark, timeout=10)
        await eventually(lambda: any(e.get("log_level") == "warning" and e.get("action") == action for e in logs))
        await asyncio.sleep(0)
    gc.collect()
    return logs


@pytest.mark.parametrize(("requested", "action16"), [
    ("FirmwareStatusNotification", "FirmwareStatusNotification"),
    ("LogStatusNotification", "LogStatusNotification"),
    ("MeterValues", "MeterValues"),
])
async def test_a_refused_triggered_send_is_logged_once_as_a_warning_never_as_an_unretrieved_task_exception(
        rig: Rig, loop_errors: list[dict[str, Any]], requested: str, action16: str) -> None:
    assert rig.core is not None
    rig.core.on_meter_reading(MeterReading(1234.0, power_w=0.0))
    logs = await _refused_triggered_send(rig, requested, requested if rig.version == "201" else action16)
    warnings = [e for e in logs if e.get("log_level") == "warning" and e.get("action") == (requested if rig.version == "201" else action16)]
    assert len(warnings) == 1 and "InternalError" in warnings[0]["error"]
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")]
    assert not [c for c in loop_errors if "never retrieved" in str(c.get("message"))]


@pytest.mark.parametrize(("evse", "connector"), [(1, 7), (2, 1), (0, 1)])
async def test_unlock_of_an_unknown_evse_or_connector_is_unknown_connector(rig: Rig, evse: int, connector: int) -> None:
    """F05.FR.03 (TC_F_10_CS); 1.6: NotSupported ("no connector lock, or ConnectorId is unknown")."""
    if rig.version == "201":
        answer = await rig.csms.call("CP", "UnlockConnector", {"evseId": evse, "connectorId": connector})
        assert answer["status"] == "UnknownConnector"
    else:
        if evse == 0:
            pytest.skip("1.6 connectorId is > 0 by schema")
        answer = await rig.csms.call("CP", "UnlockConnector", {"connectorId": evse if connector == 1 else connector})
        assert answer["status"] == "NotSupported"


def test_reason_codes_fit_the_schema_as_listed_codes_or_whole_words_never_cut() -> None:
    from station.ocpp.reason_codes import fit, reason_code

    assert reason_code("unreadable signing certificate: no PEM data") == "InvalidCertificate"
    assert reason_code("unknown evse") == "UnknownEvse"
    assert reason_code("extraordinarily lengthy explanation") == "Extraordinarily"
    assert fit("UnsupportedMonitorType") == "UnsupportedMonitor"
    for text in ("no free connector", "signed firmware required", "connector faulted: pilot state E",
                 "a reason with averyveryverylongwordthatdoesnotfit"):
        assert 0 < len(reason_code(text)) <= 20


async def test_an_unreadable_signing_certificate_is_answered_with_a_reason_code_that_fits(tmp_path: Path) -> None:
    """The code CitrineOS got cut to "UnreadableSigningCer" is a listed code now (InvalidCertificate)."""
    from station.devtools.csms import DevCsms
    from station.trust.firmware import FirmwareUpdater

    async with DevCsms(heartbeat_interval=300) as csms:
        rig = Rig("201", csms, tmp_path / "station.db")
        rig.firmware = FirmwareUpdater(tmp_path / "state", poll_seconds=0.05, manufacturer_roots=lambda: "")
        await rig.start()
        try:
            await csms.wait_for("StatusNotification", timeout=10)
            answer = await csms.call("CP", "UpdateFirmware", {"requestId": 3, "firmware": {
                "location": "https://firmware.invalid/station.whl", "retrieveDateTime": "2026-01-01T00:00:00Z",
                "signingCertificate": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----",
                "signature": "c2ln"}})
        finally:
            await rig.stop()
    assert answer["status"] == "InvalidCertificate"
    assert answer["statusInfo"]["reasonCode"] == "InvalidCertificate"


async def test_a_frame_nested_too_deep_to_parse_gets_a_callerror_and_the_session_stays_up(rig: Rig) -> None:
    """Issue 21 finding 7: 200,000 nested arrays (400 kB) raised RecursionError and dropped the session."""
    assert rig.client is not None
    session = rig.client.session
    mark = rig.csms.mark()
    depth = 200_000
    await rig.csms.send_raw("CP", '[2,"deep-1","Heartbeat",' + "[" * depth + "]" * depth + "]")

    def errors() -> list[Received]:
        return [r for r in rig.csms.received[mark:] if r.kind == "error" and r.unique_id == "deep-1"]

    await eventually(lambda: bool(errors()))
    error = errors()[0]
    assert error.payload["errorCode"] == ("RpcFrameworkError" if rig.version == "201" else "FormationViolation")
    answer = await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert answer["status"] == "Accepted"
    assert rig.client.session is session  # the same connection: no reconnect


async def _set_variables(rig: Rig, *items: tuple[str, str, str]) -> None:
    answer = await rig.csms.call("CP", "SetVariables", {"setVariableData": [
        {"component": {"name": c}, "variable": {"name": v}, "attributeValue": value} for c, v, value in items]})
    assert {r["attributeStatus"] for r in answer["setVariableResult"]} == {"Accepted"}


def _event(rig: Rig, kind: str, since: int = 0) -> Any:
    return rig.csms.wait_for("TransactionEvent", since=since, timeout=10,
                             predicate=lambda r: r.payload["eventType"] == kind)


async def test_201_remote_start_after_plug_in_answers_the_running_transaction_id_and_names_its_remote_start_id(
        tmp_path: Path) -> None:
    """F01 with TxStartPoint EVConnected: the transaction began at plug-in; the CSMS matches its request to it."""
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        assert rig.esp is not None
        await _set_variables(rig, ("TxCtrlr", "TxStartPoint", "EVConnected"))
        rig.esp.plug()
        started = await _event(rig, "Started")
        tx_id = started.payload["transactionInfo"]["transactionId"]
        mark = rig.csms.mark()
        answer = await rig.csms.call("CP", "RequestStartTransaction", {
            "idToken": {"idToken": "LATE-TOKEN", "type": "ISO14443"}, "remoteStartId": 77, "evseId": 1})
        assert answer == {"status": "Accepted", "transactionId": tx_id}
        updated = await rig.csms.wait_for("TransactionEvent", since=mark, timeout=10,
                                          predicate=lambda r: r.payload["triggerReason"] == "RemoteStart")
        assert updated.payload["eventType"] == "Updated"
        assert updated.payload["transactionInfo"]["remoteStartId"] == 77
        assert updated.payload["transactionInfo"]["transactionId"] == tx_id


async def test_201_remote_start_without_evse_after_plug_in_authorizes_the_running_transaction(tmp_path: Path) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        assert rig.esp is not None
        await _set_variables(rig, ("TxCtrlr", "TxStartPoint", "EVConnected"))
        rig.esp.plug()
        tx_id = (await _event(rig, "Started")).payload["transactionInfo"]["transactionId"]
        answer = await rig.csms.call("CP", "RequestStartTransaction", {
            "idToken": {"idToken": "LATE-TOKEN", "type": "ISO14443"}, "remoteStartId": 78})
        assert answer == {"status": "Accepted", "transactionId": tx_id}


async def test_201_a_token_with_no_ev_plugged_in_starts_the_transaction_idle_and_ev_connected_follows_the_plug(
        tmp_path: Path) -> None:
    """TxStartPoint Authorized: no EV is connected at the start, so Started says Idle (defect 8)."""
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        assert rig.esp is not None and rig.core is not None
        await _set_variables(rig, ("TxCtrlr", "TxStartPoint", "Authorized"))
        ok, _ = rig.core.request_start(1, "TOKEN-1", "ISO14443", trigger="Authorized")
        assert ok
        started = await _event(rig, "Started")
        assert started.payload["transactionInfo"]["chargingState"] == "Idle"
        mark = rig.csms.mark()
        rig.esp.plug()
        changed = await rig.csms.wait_for("TransactionEvent", since=mark, timeout=10,
                                          predicate=lambda r: r.payload["triggerReason"] == "ChargingStateChanged")
        assert changed.payload["transactionInfo"]["chargingState"] != "Idle"


async def _charging(rig: Rig) -> str:
    assert rig.esp is not None
    assert (await rig.csms.call("CP", "RequestStartTransaction", {
        "idToken": {"idToken": "TOKEN-1", "type": "ISO14443"}, "remoteStartId": 5, "evseId": 1}))["status"] == "Accepted"
    rig.esp.plug()
    rig.esp.ev_requests_charge()
    charging = await rig.csms.wait_for("TransactionEvent", timeout=10,
                                       predicate=lambda r: r.payload["transactionInfo"].get("chargingState") == "Charging")
    return str(charging.payload["transactionInfo"]["transactionId"])


async def test_201_ended_after_a_remote_stop_with_the_ev_still_plugged_in_says_ev_connected(tmp_path: Path) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        tx_id = await _charging(rig)
        mark = rig.csms.mark()
        assert (await rig.csms.call("CP", "RequestStopTransaction", {"transactionId": tx_id}))["status"] == "Accepted"
        ended = await _event(rig, "Ended", since=mark)
        assert ended.payload["triggerReason"] == "RemoteStop"
        assert ended.payload["transactionInfo"]["chargingState"] == "EVConnected"


async def test_201_ended_by_an_unplug_says_idle(tmp_path: Path) -> None:
    """TC_E_37_CS: EVCommunicationLost, chargingState Idle, stoppedReason EVDisconnected."""
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        assert rig.esp is not None
        await _charging(rig)
        mark = rig.csms.mark()
        rig.esp.unplug()
        ended = await _event(rig, "Ended", since=mark)
        assert ended.payload["transactionInfo"]["chargingState"] == "Idle"
        assert ended.payload["transactionInfo"]["stoppedReason"] == "EVDisconnected"


async def test_a_too_deep_frame_with_no_readable_message_id_is_answered_with_id_minus_one(rig: Rig) -> None:
    mark = rig.csms.mark()
    depth = 200_000
    await rig.csms.send_raw("CP", "[" * depth + "]" * depth)

    def errors() -> list[Received]:
        return [r for r in rig.csms.received[mark:] if r.kind == "error" and r.unique_id == "-1"]

    await eventually(lambda: bool(errors()))
    assert (await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "Heartbeat"}))["status"] == "Accepted"


async def test_a_triggered_send_the_csms_never_answers_is_logged_once_as_a_warning(
        tmp_path: Path, loop_errors: list[dict[str, Any]]) -> None:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        assert rig.core is not None
        rig.core.on_meter_reading(MeterReading(1234.0, power_w=0.0))
        silent = asyncio.Event()

        async def never(_: Received) -> dict[str, object]:
            await silent.wait()
            return {}

        rig.csms.override("MeterValues", never)
        with capture_logs() as logs:
            assert (await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "MeterValues"}))["status"] == "Accepted"
            await eventually(lambda: any(e.get("log_level") == "warning" and "no answer" in str(e.get("error"))
                                         for e in logs))
        silent.set()
        gc.collect()
    warnings = [e for e in logs if e.get("log_level") == "warning" and e.get("action") == "MeterValues"]
    assert len(warnings) == 1 and "no answer" in warnings[0]["error"]
    assert not [c for c in loop_errors if "never retrieved" in str(c.get("message"))]


async def test_a_background_task_whose_owner_logs_its_failure_never_leaves_it_unretrieved(
        loop_errors: list[dict[str, Any]]) -> None:
    from station.ocpp.rpc import CallErrorReceived, log_failure

    async def refused() -> None:
        raise CallErrorReceived("SignCertificate", "InternalError", "CSMS database down", {})

    with capture_logs() as logs:
        task = asyncio.create_task(refused(), name="ocpp-certificate-renewal")
        log_failure(task, "ocpp: certificate renewal")
        await asyncio.wait({task})
        await asyncio.sleep(0)
    del task
    gc.collect()
    assert [(e["log_level"], e["action"]) for e in logs if e["event"] == "ocpp: certificate renewal failed"] == [
        ("warning", "SignCertificate")]
    assert not [c for c in loop_errors if "never retrieved" in str(c.get("message"))]
