"""Every CSMS-initiated call, in both versions, against the real core and store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from station.core.model import MeterReading
from tests.ocpp_helpers import Rig, eventually, rig_on_dev_csms


@pytest.fixture(params=["201", "16"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms(request.param, tmp_path / "station.db") as rig:
        yield rig


def v(rig: Rig, v201: Any, v16: Any) -> Any:
    return v201 if rig.version == "201" else v16


async def call(rig: Rig, action201: str, payload201: dict[str, Any], action16: str, payload16: dict[str, Any]) -> dict[str, Any]:
    if rig.version == "201":
        return await rig.csms.call("CP", action201, payload201)
    return await rig.csms.call("CP", action16, payload16)


async def test_change_availability_makes_the_connector_unavailable_and_back(rig: Rig) -> None:
    mark = rig.csms.mark()
    answer = await call(rig, "ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 1}},
                        "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
    assert answer["status"] == "Accepted"
    key = v(rig, "connectorStatus", "status")
    await rig.csms.wait_for("StatusNotification", predicate=lambda r: r.payload[key] == "Unavailable", since=mark, timeout=10)
    assert rig.core is not None and rig.core.store.get("operative:1") is False
    await call(rig, "ChangeAvailability", {"operationalStatus": "Operative"}, "ChangeAvailability", {"connectorId": 0, "type": "Operative"})
    await rig.csms.wait_for("StatusNotification", predicate=lambda r: r.payload[key] == "Available", since=mark, timeout=10)


async def test_unlock_connector_reports_unlocked_when_idle(rig: Rig) -> None:
    answer = await call(rig, "UnlockConnector", {"evseId": 1, "connectorId": 1}, "UnlockConnector", {"connectorId": 1})
    assert answer["status"] == "Unlocked"


async def test_trigger_message_sends_the_requested_message_after_answering(rig: Rig) -> None:
    assert rig.core is not None
    for message in ("StatusNotification", "Heartbeat"):
        mark = rig.csms.mark()
        answer = await call(rig, "TriggerMessage", {"requestedMessage": message}, "TriggerMessage", {"requestedMessage": message})
        assert answer["status"] == "Accepted"
        await rig.csms.wait_for(message, since=mark, timeout=10)
    rig.core.on_meter_reading(MeterReading(1234.0, power_w=0.0))
    mark = rig.csms.mark()
    answer = await call(rig, "TriggerMessage", {"requestedMessage": "MeterValues"}, "TriggerMessage", {"requestedMessage": "MeterValues"})
    assert answer["status"] == "Accepted"
    sent = await rig.csms.wait_for("MeterValues", since=mark, timeout=10)
    assert sent.payload["meterValue"][0]["sampledValue"][0]["measurand"] == "Energy.Active.Import.Register"


async def test_trigger_message_for_an_unsupported_message_is_not_implemented(rig: Rig) -> None:
    if rig.version == "16":
        pytest.skip("the station answers every TriggerMessage 1.6 defines")
    answer = await rig.csms.call("CP", "TriggerMessage", {"requestedMessage": "PublishFirmwareStatusNotification"})
    assert answer["status"] == "NotImplemented"


async def test_get_variables_and_configuration_report_known_and_unknown_keys(rig: Rig) -> None:
    if rig.version == "201":
        answer = await rig.csms.call("CP", "GetVariables", {"getVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NoSuchThing"}},
            {"component": {"name": "NoSuchCtrlr"}, "variable": {"name": "Enabled"}},
        ]})
        results = answer["getVariableResult"]
        assert results[0]["attributeStatus"] == "Accepted" and results[0]["attributeValue"] == "300"
        assert [r["attributeStatus"] for r in results[1:]] == ["UnknownVariable", "UnknownComponent"]
    else:
        answer = await rig.csms.call("CP", "GetConfiguration", {"key": ["HeartbeatInterval", "NoSuchKey"]})
        assert answer["configurationKey"] == [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]
        assert answer["unknownKey"] == ["NoSuchKey"]
        everything = await rig.csms.call("CP", "GetConfiguration", {})
        assert {"MeterValueSampleInterval", "NumberOfConnectors"} <= {k["key"] for k in everything["configurationKey"]}


async def test_set_variables_persist_and_apply_the_meter_value_interval(rig: Rig) -> None:
    assert rig.core is not None
    if rig.version == "201":
        answer = await rig.csms.call("CP", "SetVariables", {"setVariableData": [
            {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}, "attributeValue": "15"},
            {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "AvailabilityState"}, "attributeValue": "Faulted"},
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}, "attributeValue": "soon"},
        ]})
        assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted", "Rejected", "Rejected"]
    else:
        assert (await rig.csms.call("CP", "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "15"}))["status"] == "Accepted"
        assert (await rig.csms.call("CP", "ChangeConfiguration", {"key": "NumberOfConnectors", "value": "4"}))["status"] == "Rejected"
        assert (await rig.csms.call("CP", "ChangeConfiguration", {"key": "NoSuchKey", "value": "1"}))["status"] == "NotSupported"
    assert rig.core.meter_value_seconds == 15 and rig.core.store.get("meter_value_seconds") == 15


async def test_websocket_ping_interval_is_read_written_persisted_and_applied_to_the_link(rig: Rig) -> None:
    assert rig.core is not None and rig.client is not None
    if rig.version == "201":
        variable = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "WebSocketPingInterval"}}
        before = (await rig.csms.call("CP", "GetVariables", {"getVariableData": [variable]}))["getVariableResult"][0]
        answer = await rig.csms.call("CP", "SetVariables", {"setVariableData": [variable | {"attributeValue": "7"}]})
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
    else:
        before = (await rig.csms.call("CP", "GetConfiguration", {"key": ["WebSocketPingInterval"]}))["configurationKey"][0]
        before["attributeValue"] = before["value"]
        answer = await rig.csms.call("CP", "ChangeConfiguration", {"key": "WebSocketPingInterval", "value": "7"})
        assert answer["status"] == "Accepted"
    assert before["attributeValue"] == "20"  # LinkParams' default until the CSMS sets one
    assert rig.client.link.ping_interval == 7 and rig.core.store.get("ocpp:WebSocketPingInterval") == 7


async def test_charging_profile_sets_a_current_limit_that_reaches_the_controller_and_clears(rig: Rig) -> None:
    assert rig.core is not None and rig.esp is not None
    rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    rig.esp.plug()  # the controller is given a current only for an authorized session
    periods = [{"startPeriod": 0, "limit": 10.0}]
    if rig.version == "201":
        profile = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                   "chargingSchedule": [{"id": 1, "chargingRateUnit": "A", "chargingSchedulePeriod": periods}]}
        answer = await rig.csms.call("CP", "SetChargingProfile", {"evseId": 1, "chargingProfile": profile})
    else:
        profile = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
                   "chargingProfileKind": "Relative", "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": periods}}
        answer = await rig.csms.call("CP", "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile})
    assert answer["status"] == "Accepted"
    assert rig.core.connectors[1].limit_a == 10
    await eventually(lambda: ("current", 10) in rig.esp.commands)  # type: ignore[union-attr]
    composite = await call(rig, "GetCompositeSchedule", {"evseId": 1, "duration": 3600}, "GetCompositeSchedule", {"connectorId": 1, "duration": 3600})
    schedule = v(rig, composite.get("schedule"), composite.get("chargingSchedule"))
    assert composite["status"] == "Accepted" and schedule["chargingSchedulePeriod"][0]["limit"] == 10
    cleared = await call(rig, "ClearChargingProfile", {"chargingProfileCriteria": {"evseId": 1}}, "ClearChargingProfile", {"connectorId": 1})
    assert cleared["status"] == "Accepted" and rig.core.connectors[1].limit_a == 32


async def test_local_list_is_stored_versioned_and_used_for_authorization(rig: Rig) -> None:
    assert rig.core is not None
    if rig.version == "201":
        answer = await rig.csms.call("CP", "SendLocalList", {"versionNumber": 3, "updateType": "Full", "localAuthorizationList": [
            {"idToken": {"idToken": "LOCAL1", "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}}]})
        version = (await rig.csms.call("CP", "GetLocalListVersion", {}))["versionNumber"]
        stale = await rig.csms.call("CP", "SendLocalList", {"versionNumber": 2, "updateType": "Differential"})
    else:
        answer = await rig.csms.call("CP", "SendLocalList", {"listVersion": 3, "updateType": "Full", "localAuthorizationList": [
            {"idTag": "LOCAL1", "idTagInfo": {"status": "Accepted"}}]})
        version = (await rig.csms.call("CP", "GetLocalListVersion", {}))["listVersion"]
        stale = await rig.csms.call("CP", "SendLocalList", {"listVersion": 2, "updateType": "Differential"})
    assert answer["status"] == "Accepted" and version == 3 and stale["status"] == "VersionMismatch"
    assert (await rig.core.authorize_token("LOCAL1")).status == "Accepted"
    assert rig.calls("Authorize") == []  # the local list answered, not the CSMS


async def test_clear_cache_is_accepted(rig: Rig) -> None:
    assert (await rig.csms.call("CP", "ClearCache", {}))["status"] == "Accepted"


async def test_data_transfer_is_rejected_cleanly(rig: Rig) -> None:
    answer = await rig.csms.call("CP", "DataTransfer", {"vendorId": "com.example", "messageId": "x", "data": "y"})
    assert answer["status"] == "UnknownVendorId"
    assert rig.csms.connected("CP")


async def test_reset_ends_the_transaction_and_asks_the_daemon_to_restart(rig: Rig) -> None:
    assert rig.core is not None and rig.esp is not None
    rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    rig.esp.plug()
    answer = await call(rig, "Reset", {"type": "Immediate"}, "Reset", {"type": "Hard"})
    assert answer["status"] == "Accepted"
    await eventually(lambda: rig.resets == [v(rig, "Immediate", "Hard")])
    assert rig.core.connectors[1].transaction is None
    reason = v(rig, "ImmediateReset", "HardReset")
    if rig.version == "201":
        ended = await rig.csms.wait_for("TransactionEvent", predicate=lambda r: r.payload["eventType"] == "Ended", timeout=10)
        assert ended.payload["transactionInfo"]["stoppedReason"] == reason
    else:
        ended = await rig.csms.wait_for("StopTransaction", timeout=10)
        assert ended.payload["reason"] == reason


async def test_remote_start_on_a_busy_connector_is_rejected(rig: Rig) -> None:
    assert rig.core is not None
    rig.core.request_start(1, "TAG1", "ISO14443", trigger="Authorized")
    answer = await call(rig, "RequestStartTransaction", {"idToken": {"idToken": "T2", "type": "Central"}, "remoteStartId": 1, "evseId": 1},
                        "RemoteStartTransaction", {"idTag": "T2", "connectorId": 1})
    assert answer["status"] == "Rejected"


async def test_remote_stop_of_an_unknown_transaction_is_rejected(rig: Rig) -> None:
    answer = await call(rig, "RequestStopTransaction", {"transactionId": "nope"}, "RemoteStopTransaction", {"transactionId": 999})
    assert answer["status"] == "Rejected"
