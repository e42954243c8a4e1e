"""GetVariables / SetVariables (2.0.1) and GetConfiguration / ChangeConfiguration (1.6) on the one
device model, station on a real dev CSMS (answers validated against the official schemas)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from station.ocpp.rpc import CallErrorReceived
from tests.ocpp_helpers import Rig, rig_on_dev_csms

CORE_KEYS_16 = {
    "AuthorizeRemoteTxRequests", "ClockAlignedDataInterval", "ConnectionTimeOut", "ConnectorPhaseRotation",
    "GetConfigurationMaxKeys", "HeartbeatInterval", "LocalAuthorizeOffline", "LocalPreAuthorize",
    "MeterValuesAlignedData", "MeterValuesSampledData", "MeterValueSampleInterval", "NumberOfConnectors",
    "ResetRetries", "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId", "StopTxnAlignedData",
    "StopTxnSampledData", "SupportedFeatureProfiles", "TransactionMessageAttempts", "TransactionMessageRetryInterval",
    "UnlockConnectorOnEVSideDisconnect", "WebSocketPingInterval",
    "LocalAuthListEnabled", "LocalAuthListMaxLength", "SendLocalListMaxLength",
    "ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods",
    "MaxChargingProfilesInstalled",
}


@pytest.fixture
async def rig201(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        yield rig


@pytest.fixture
async def rig16(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        yield rig


def cv(component: str, variable: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable}}
    if "evse" in extra:
        item["component"]["evse"] = extra.pop("evse")
    if "instance" in extra:
        item["variable"]["instance"] = extra.pop("instance")
    item.update(extra)
    return item


async def get(rig: Rig, *items: dict[str, Any]) -> list[dict[str, Any]]:
    return (await rig.csms.call("CP", "GetVariables", {"getVariableData": list(items)}))["getVariableResult"]


async def set_(rig: Rig, *items: dict[str, Any]) -> list[dict[str, Any]]:
    return (await rig.csms.call("CP", "SetVariables", {"setVariableData": list(items)}))["setVariableResult"]


# ---- 2.0.1 ---------------------------------------------------------------------------
async def test_get_variables_echoes_component_evse_variable_instance_and_attribute_type(rig201: Rig) -> None:
    asked = [cv("EVSE", "Power", evse={"id": 1}, attributeType="MaxSet"),
             cv("DeviceDataCtrlr", "ItemsPerMessage", instance="GetVariables", attributeType="Actual")]
    results = await get(rig201, *asked)
    for question, answer in zip(asked, results, strict=True):
        assert answer["component"] == question["component"] and answer["variable"] == question["variable"]
        assert answer["attributeType"] == question["attributeType"] and answer["attributeStatus"] == "Accepted"
    assert results[0]["attributeValue"] == "22080"  # 32 A x 230 V x 3 phases
    assert results[1]["attributeValue"] == "50"


async def test_get_variables_reads_live_station_state(rig201: Rig) -> None:
    results = await get(rig201, cv("ChargingStation", "AvailabilityState"), cv("EVSE", "AvailabilityState", evse={"id": 1}),
                        cv("Connector", "ConnectorType", evse={"id": 1, "connectorId": 1}), cv("ClockCtrlr", "DateTime"))
    assert [r["attributeStatus"] for r in results] == ["Accepted"] * 4
    assert results[0]["attributeValue"] == results[1]["attributeValue"] == "Available"
    assert results[2]["attributeValue"] == "sType2" and results[3]["attributeValue"].endswith("Z")


async def test_get_variables_statuses_for_what_cannot_be_read(rig201: Rig) -> None:
    results = await get(rig201, cv("NoSuchCtrlr", "Enabled"), cv("OCPPCommCtrlr", "NoSuchThing"),
                        cv("OCPPCommCtrlr", "HeartbeatInterval", attributeType="Target"),
                        cv("SecurityCtrlr", "BasicAuthPassword"), cv("EVSE", "Power", evse={"id": 9}),
                        cv("OCPPCommCtrlr", "MessageAttempts"))  # the instance is part of its name
    assert [r["attributeStatus"] for r in results] == [
        "UnknownComponent", "UnknownVariable", "NotSupportedAttributeType", "Rejected", "UnknownComponent",
        "UnknownVariable"]
    assert "attributeValue" not in results[3]


async def test_set_variables_statuses_and_reason_codes(rig201: Rig) -> None:
    results = await set_(
        rig201,
        cv("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="0"),
        cv("EVSE", "AvailabilityState", evse={"id": 1}, attributeValue="Faulted"),
        cv("TxCtrlr", "EVConnectionTimeOut", attributeValue="soon"),
        cv("TxCtrlr", "EVConnectionTimeOut", attributeValue="45", attributeType="MaxSet"),
        cv("NoSuchCtrlr", "Enabled", attributeValue="true"),
        cv("OCPPCommCtrlr", "MessageAttempts", instance="TransactionEvent", attributeValue="5"),
    )
    assert [r["attributeStatus"] for r in results] == [
        "Rejected", "Rejected", "Rejected", "NotSupportedAttributeType", "UnknownComponent", "Accepted"]
    assert [r.get("attributeStatusInfo", {}).get("reasonCode") for r in results[:3]] == [
        "ValueTooLow", "ReadOnly", "InvalidValue"]
    assert results[3]["attributeType"] == "MaxSet" and results[3]["attributeStatusInfo"]["reasonCode"] == "UnsupportedParam"
    assert results[0]["attributeType"] == "Actual"  # B05.FR.12: Actual when the request named none
    assert rig201.core is not None
    assert rig201.core.device_model.value("OCPPCommCtrlr", "MessageAttempts", instance="TransactionEvent") == 5


async def test_a_change_that_needs_a_restart_is_answered_reboot_required(rig201: Rig) -> None:
    assert rig201.core is not None
    rig201.core.device_model.bind("OCPPCommCtrlr", "NetworkConfigurationPriority", apply=lambda *_: None)
    results = await set_(rig201, cv("OCPPCommCtrlr", "NetworkConfigurationPriority", attributeValue="1"))
    assert results[0]["attributeStatus"] == "RebootRequired"


async def test_a_set_value_survives_a_restart(rig201: Rig) -> None:
    assert (await set_(rig201, cv("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="77")))[0]["attributeStatus"] == "Accepted"
    await rig201.stop()
    mark = rig201.csms.mark()
    await rig201.start()
    await rig201.csms.wait_for("StatusNotification", since=mark, timeout=10)
    results = await get(rig201, cv("OCPPCommCtrlr", "HeartbeatInterval"))
    # the dev CSMS's boot interval (300 s) applies for this run; the stored value is the CSMS's own setting
    assert rig201.core is not None and rig201.core.store.get("ocpp:HeartbeatInterval") == 77
    assert results[0]["attributeValue"] == "300"


async def test_more_get_variables_entries_than_items_per_message_is_an_occurrence_error(rig201: Rig) -> None:
    assert rig201.core is not None
    rig201.core.device_model.set("DeviceDataCtrlr", "ItemsPerMessage", 2, instance="GetVariables", persist=False)
    with pytest.raises(CallErrorReceived) as error:
        await get(rig201, *[cv("OCPPCommCtrlr", "HeartbeatInterval")] * 3)
    assert error.value.code == "OccurrenceConstraintViolation"
    assert len(await get(rig201, *[cv("OCPPCommCtrlr", "HeartbeatInterval")] * 2)) == 2


async def test_a_set_variables_request_over_bytes_per_message_is_a_format_error(rig201: Rig) -> None:
    assert rig201.core is not None
    rig201.core.device_model.set("DeviceDataCtrlr", "BytesPerMessage", 200, instance="SetVariables", persist=False)
    with pytest.raises(CallErrorReceived) as error:
        await set_(rig201, *[cv("OCPPCommCtrlr", "HeartbeatInterval", attributeValue="60")] * 3)
    assert error.value.code == "FormatViolation"
    assert rig201.core.device_model.value("OCPPCommCtrlr", "HeartbeatInterval") == 300


# ---- 1.6 ----------------------------------------------------------------------------
async def test_get_configuration_reports_every_core_key_with_its_readonly_flag(rig16: Rig) -> None:
    answer = await rig16.csms.call("CP", "GetConfiguration", {})
    keys = {k["key"]: k for k in answer["configurationKey"]}
    assert CORE_KEYS_16 <= set(keys), CORE_KEYS_16 - set(keys)
    assert keys["HeartbeatInterval"]["readonly"] is False and keys["NumberOfConnectors"] == {
        "key": "NumberOfConnectors", "readonly": True, "value": "1"}
    assert keys["GetConfigurationMaxKeys"]["value"] == "50"
    assert "AuthorizationKey" not in keys  # write-only: never read back


async def test_change_configuration_statuses(rig16: Rig) -> None:
    async def change(key: str, value: str) -> str:
        return str((await rig16.csms.call("CP", "ChangeConfiguration", {"key": key, "value": value}))["status"])

    assert await change("ConnectionTimeOut", "45") == "Accepted"
    assert await change("NumberOfConnectors", "2") == "Rejected"
    assert await change("HeartbeatInterval", "-5") == "Rejected"
    assert await change("NoSuchKey", "1") == "NotSupported"
    assert await change("AuthorizationKey", "0123456789abcdef0123") == "Rejected"  # no owner to use it yet
    assert rig16.core is not None and rig16.core.connection_timeout_s == 45


async def test_more_keys_than_get_configuration_max_keys_is_an_occurrence_error(rig16: Rig) -> None:
    assert rig16.core is not None
    rig16.core.device_model.set("DeviceDataCtrlr", "ItemsPerMessage", 1, instance="GetVariables", persist=False)
    with pytest.raises(CallErrorReceived) as error:
        await rig16.csms.call("CP", "GetConfiguration", {"key": ["HeartbeatInterval", "ConnectionTimeOut"]})
    assert error.value.code == "OccurenceConstraintViolation"  # 1.6 spelling


async def test_one_setting_seen_alike_by_both_versions(tmp_path: Path) -> None:
    async with rig_on_dev_csms("16", tmp_path / "station.db") as rig:
        await rig.csms.call("CP", "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "42"})
    async with rig_on_dev_csms("201", tmp_path / "station.db") as rig:
        results = await get(rig, cv("SampledDataCtrlr", "TxUpdatedInterval"))
    assert results[0]["attributeValue"] == "42"


def test_the_reconnect_backoff_is_reported_in_ocpp_words() -> None:
    from station.ocpp.client import backoff_variables
    from station.ocpp.connection import LinkParams

    assert backoff_variables(LinkParams("CP", backoff_min=2, backoff_max=60)) == {
        "RetryBackOffWaitMinimum": 2, "RetryBackOffRepeatTimes": 5, "RetryBackOffRandomRange": 58}


def test_monitoring_requests_are_limited_by_the_monitoring_controller(tmp_path: Path) -> None:
    from station.core.device_model import DeviceModel
    from station.core.standard_variables import STANDARD
    from station.core.store import Store
    from station.ocpp.rpc import RpcError
    from station.ocpp.variables import check_limits

    model = DeviceModel(Store(tmp_path / "station.db"), {1: (1,)})
    model.declare(*STANDARD)
    model.set("MonitoringCtrlr", "ItemsPerMessage", 2, instance="SetVariableMonitoring", persist=False)
    check_limits(model, "SetVariableMonitoring", 2, None)
    with pytest.raises(RpcError):
        check_limits(model, "SetVariableMonitoring", 3, None)
