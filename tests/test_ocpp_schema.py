"""Compiled schema validation gives the `ocpp` library's verdicts, only faster."""

from __future__ import annotations

import decimal
from typing import Any

import pytest
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallResult, _validate_payload

from station.ocpp.rpc import SECRET_CONFIG_KEYS, SECRET_KEYS, may_hold_secret
from station.ocpp.schema import compiled_validator, known_actions, validate_payload

METER = [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [
    {"value": 1234.5, "context": "Sample.Periodic", "measurand": "Energy.Active.Import.Register",
     "unitOfMeasure": {"unit": "Wh"}},
    {"value": 230.1, "context": "Sample.Periodic", "measurand": "Voltage", "phase": "L1-N",
     "unitOfMeasure": {"unit": "V"}},
]}]
EVENT = {"eventType": "Updated", "timestamp": "2026-01-01T00:00:00Z", "triggerReason": "MeterValuePeriodic",
         "seqNo": 3, "transactionInfo": {"transactionId": "tx-1", "chargingState": "Charging"},
         "evse": {"id": 1, "connectorId": 1}, "meterValue": METER}

VALID: list[tuple[Call | CallResult, str]] = [
    (Call("1", "TransactionEvent", EVENT), "2.0.1"),
    (Call("2", "BootNotification", {"chargingStation": {"model": "AC22", "vendorName": "Orge"}, "reason": "PowerUp"}), "2.0.1"),
    (Call("3", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}), "1.6"),
    (Call("4", "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"}), "1.6"),
]

INVALID: list[tuple[Call, str]] = [
    (Call("5", "TransactionEvent", {**EVENT, "seqNo": "three"}), "2.0.1"),  # type
    (Call("6", "TransactionEvent", {k: v for k, v in EVENT.items() if k != "seqNo"}), "2.0.1"),  # required
    (Call("7", "TransactionEvent", {**EVENT, "surprise": 1}), "2.0.1"),  # additionalProperties
    (Call("8", "TransactionEvent", {**EVENT, "eventType": "Paused"}), "2.0.1"),  # enum
    (Call("9", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "x" * 21}), "1.6"),  # enum
    (Call("10", "Authorize", {"idTag": "x" * 21}), "1.6"),  # maxLength
]


def _library_error(message: Call | CallResult, version: str) -> OCPPError | None:
    try:
        _validate_payload(message, version)
    except OCPPError as exc:
        return exc
    return None


@pytest.mark.parametrize(("message", "version"), VALID)
def test_payloads_the_library_accepts_pass(message: Call | CallResult, version: str) -> None:
    assert _library_error(message, version) is None
    assert compiled_validator(message.message_type_id, message.action, version) is not None
    validate_payload(message, version)


@pytest.mark.parametrize(("message", "version"), INVALID)
def test_payloads_the_library_rejects_raise_the_library_error(message: Call, version: str) -> None:
    expected = _library_error(message, version)
    assert expected is not None
    with pytest.raises(OCPPError) as raised:
        validate_payload(message, version)
    assert type(raised.value) is type(expected)
    assert raised.value.code == expected.code


def test_results_are_checked_against_the_response_schema() -> None:
    ok = CallResult("1", {"currentTime": "2026-01-01T00:00:00Z", "interval": 60, "status": "Accepted"})
    ok.action = "BootNotification"
    validate_payload(ok, "2.0.1")
    bad = CallResult("2", {"currentTime": "2026-01-01T00:00:00Z", "interval": 60, "status": "Maybe"})
    bad.action = "BootNotification"
    with pytest.raises(OCPPError):
        validate_payload(bad, "2.0.1")


def test_date_time_format_is_not_enforced_like_the_library() -> None:
    message = Call("1", "Heartbeat", {})
    result = CallResult("1", {"currentTime": "not a date"})
    result.action = message.action
    assert _library_error(result, "2.0.1") is None
    validate_payload(result, "2.0.1")


def test_decimal_parsed_16_messages_keep_the_library_behaviour() -> None:
    payload: dict[str, Any] = {"connectorId": 1, "csChargingProfiles": {
        "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": {
            "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 21.4}]}}}
    message = Call("1", "SetChargingProfile", payload)
    validate_payload(message, "1.6")
    limit = message.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
    assert isinstance(limit, decimal.Decimal)


def test_unknown_actions_get_the_library_error() -> None:
    with pytest.raises(OCPPError) as raised:
        validate_payload(Call("1", "NoSuchAction", {}), "2.0.1")
    assert raised.value.code == "NotImplemented"


def test_every_secret_name_triggers_the_redaction_path() -> None:
    for name in SECRET_KEYS | SECRET_CONFIG_KEYS:
        assert may_hold_secret(f'{{"{name.upper()}": "x"}}')
        assert may_hold_secret(f'{{"key": "{name}"}}')
    assert not may_hold_secret('{"status": "Accepted", "currentTime": "2026-11-30T01:00:00Z"}')


def test_a_driver_token_takes_the_redaction_path_unless_tokens_are_shown() -> None:
    from station import logs

    frame = '{"idToken": {"idToken": "ABC", "type": "ISO14443"}}'
    assert may_hold_secret(frame)
    logs.show_tokens(True)
    try:
        assert not may_hold_secret(frame)
    finally:
        logs.show_tokens(False)


@pytest.mark.parametrize("version", ["2.0.1", "1.6"])
def test_known_actions_are_the_library_action_enum(version: str) -> None:
    from ocpp.v16.enums import Action as Action16
    from ocpp.v201.enums import Action as Action201

    enum = Action201 if version == "2.0.1" else Action16
    assert known_actions(version) == {a.value for a in enum}
