"""OCPP's configuration messages on the device model: 2.0.1 Get/SetVariables, 1.6 Get/ChangeConfiguration.

Translation only: what a variable is, what it accepts and what a change does lives in
`station.core.device_model`; here are the message shapes, the per-message limits
(DeviceDataCtrlr ItemsPerMessage / BytesPerMessage, GetConfigurationMaxKeys) and the version's
status words. A request over a limit is answered with the CALLERROR the spec names
(B06.FR.16/17 for GetVariables, the same for SetVariables): OccurrenceConstraintViolation for
too many entries, FormatViolation for too many bytes.
"""

from __future__ import annotations

from typing import Any

from station.core.device_model import AttributeType, DeviceModel, Entry, Result, Status
from station.ocpp.reason_codes import fit
from station.ocpp.rpc import RpcError

MAX_GET_VALUE = 2500
"""GetVariableResult.attributeValue's schema limit (ReportingValueSize can only be lower)."""
MAX_16_VALUE = 500


LIMITS_COMPONENT = {"SetVariableMonitoring": "MonitoringCtrlr", "ClearVariableMonitoring": "MonitoringCtrlr"}
"""Whose ItemsPerMessage / BytesPerMessage[message] limit a message; DeviceDataCtrlr otherwise."""


def check_limits(model: DeviceModel, message: str, items: int, size: int | None) -> None:
    """Raise the spec's CALLERROR when a request has more entries or bytes than the station takes."""
    component = LIMITS_COMPONENT.get(message, "DeviceDataCtrlr")
    most = int(model.value(component, "ItemsPerMessage", instance=message))
    if items > most:
        raise RpcError("OccurrenceConstraintViolation", f"{items} entries; at most {most} per {message}")
    limit = int(model.value(component, "BytesPerMessage", instance=message))
    if size is not None and size > limit:
        raise RpcError("FormatViolation", f"{size} bytes; at most {limit} per {message}")


def _lookup(model: DeviceModel, item: dict[str, Any]) -> tuple[dict[str, Any], Entry | None]:
    """The result's echo of the request (component, variable, attributeType: Actual when not given,
    B05.FR.12 / B06.FR.02) and its entry."""
    component, variable = item["component"], item["variable"]
    result: dict[str, Any] = {"component": component, "variable": variable,
                              "attributeType": item.get("attributeType", AttributeType.ACTUAL.value)}
    evse = component.get("evse") or {}
    found = model.find(component["name"], variable["name"], instance=variable.get("instance"),
                       component_instance=component.get("instance"), evse=evse.get("id"),
                       connector=evse.get("connectorId"))
    if isinstance(found, Status):
        result["attributeStatus"] = found.value
        return result, None
    return result, found


def value_size(model: DeviceModel) -> int:
    """Longest value reported: DeviceDataCtrlr.ReportingValueSize, at most the schema's 2500."""
    return min(MAX_GET_VALUE, int(model.value("DeviceDataCtrlr", "ReportingValueSize")))


def _fill(result: dict[str, Any], outcome: Result, size: int = MAX_GET_VALUE) -> None:
    """attributeStatus, the value read (if any, cut to `size`) and attributeStatusInfo of one result."""
    result["attributeStatus"] = outcome.status.value
    if outcome.value is not None and outcome.status == Status.ACCEPTED:
        result["attributeValue"] = outcome.value[:size]
    if outcome.reason is not None:
        result["attributeStatusInfo"] = {"reasonCode": fit(outcome.reason)}
        if outcome.info:
            result["attributeStatusInfo"]["additionalInfo"] = outcome.info[:512]


def get_variables(model: DeviceModel, payload: dict[str, Any], size: int | None = None) -> dict[str, Any]:
    items = payload["getVariableData"]
    check_limits(model, "GetVariables", len(items), size)
    longest = value_size(model)
    results = []
    for item in items:
        result, entry = _lookup(model, item)
        if entry is not None:
            _fill(result, model.read(entry, item.get("attributeType", AttributeType.ACTUAL.value)), longest)
        results.append(result)
    return {"getVariableResult": results}


def set_variables(model: DeviceModel, payload: dict[str, Any], size: int | None = None) -> dict[str, Any]:
    items = payload["setVariableData"]
    check_limits(model, "SetVariables", len(items), size)
    results = []
    for item in items:
        result, entry = _lookup(model, item)
        if entry is not None:
            _fill(result, model.write(entry, item["attributeValue"], item.get("attributeType", AttributeType.ACTUAL.value)))
        results.append(result)
    return {"setVariableResult": results}


# ---------------------------------------------------------------------------- OCPP 1.6
def _key_value(model: DeviceModel, entry: Entry) -> dict[str, Any]:
    assert entry.variable.key16 is not None
    row: dict[str, Any] = {"key": entry.variable.key16, "readonly": entry.read_only}
    row["value"] = (model.read(entry).value or "")[:MAX_16_VALUE]
    return row


def _readable(model: DeviceModel, entry: Entry) -> bool:
    return model.read(entry).status == Status.ACCEPTED


def get_configuration(model: DeviceModel, payload: dict[str, Any]) -> dict[str, Any]:
    """GetConfiguration: every key when none is named; unknown keys listed in `unknownKey`.

    A write-only key (AuthorizationKey) is never reported: not listed, and `unknownKey` when named
    (the 1.6 security whitepaper: a CSMS reading all keys must not get the password back)."""
    wanted = payload.get("key") or []
    if not wanted:
        return {"configurationKey": [_key_value(model, e) for e in model.keys16() if _readable(model, e)]}
    most = int(model.value("DeviceDataCtrlr", "ItemsPerMessage", instance="GetVariables"))
    if len(wanted) > most:
        raise RpcError("OccurrenceConstraintViolation", f"{len(wanted)} keys; GetConfigurationMaxKeys is {most}")
    known, unknown = [], []
    for key in wanted:
        entry = model.by_key16(key)
        if entry is None or not _readable(model, entry):
            unknown.append(key)
        else:
            known.append(_key_value(model, entry))
    result: dict[str, Any] = {"configurationKey": known}
    if unknown:
        result["unknownKey"] = unknown
    return result


def change_configuration(model: DeviceModel, payload: dict[str, Any]) -> dict[str, Any]:
    """ChangeConfiguration: NotSupported for an unknown key, Rejected for read-only or bad values."""
    entry = model.by_key16(payload["key"])
    if entry is None:
        return {"status": "NotSupported"}
    outcome = model.write(entry, payload["value"])
    if outcome.status in (Status.ACCEPTED, Status.REBOOT_REQUIRED):
        return {"status": outcome.status.value}
    return {"status": "Rejected"}
