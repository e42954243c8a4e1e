"""Strict RPC framing: every broken or unknown CALL gets the right CALLERROR and the link stays up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from station.devtools.csms import DevCsms, Received
from station.ocpp.rpc import (CallErrorReceived, StrictChargePoint, error_code_for, frame_text, mask_url_secrets,
                              payload_text, redact)
from tests.ocpp_helpers import boot_payload


@pytest.fixture(params=["201", "16"])
async def link(request: pytest.FixtureRequest) -> AsyncIterator[tuple[DevCsms, StrictChargePoint]]:
    version = request.param
    async with DevCsms() as csms:
        async with connect(csms.url(version, "CP"), subprotocols=["ocpp2.0.1" if version == "201" else "ocpp1.6"]) as ws:
            cp = StrictChargePoint("CP", ws, version)
            task = asyncio.create_task(cp.start())
            await csms.wait_connected("CP")
            yield csms, cp
            task.cancel()


async def error_answer(csms: DevCsms, unique_id: str) -> Received:
    """The CALLERROR the station sent for `unique_id` (recorded by the CSMS)."""
    async with asyncio.timeout(5):
        while True:
            for item in csms.received:
                if item.kind == "error" and item.unique_id == unique_id:
                    return item
            await asyncio.sleep(0.01)


async def assert_link_still_works(csms: DevCsms, cp: StrictChargePoint) -> None:
    answer = await cp.request("BootNotification", boot_payload(cp.version))
    assert answer["status"] == "Accepted"
    assert csms.connected("CP")


async def test_invalid_json_gets_rpc_framework_error_with_recovered_id(link: tuple[DevCsms, StrictChargePoint]) -> None:
    csms, cp = link
    await csms.send_raw("CP", '[2,"abc123","Reset",{"type":')
    error = await error_answer(csms, "abc123")
    assert error.payload["errorCode"] == error_code_for("RpcFrameworkError", cp.version)
    await assert_link_still_works(csms, cp)


async def test_unrecoverable_frame_gets_rpc_framework_error_with_id_minus_one(link: tuple[DevCsms, StrictChargePoint]) -> None:
    csms, cp = link
    await csms.send_raw("CP", "{not json at all")
    error = await error_answer(csms, "-1")
    assert error.payload["errorCode"] == ("RpcFrameworkError" if cp.version == "201" else "FormationViolation")
    await assert_link_still_works(csms, cp)


async def test_json_that_is_not_an_array_gets_rpc_framework_error(link: tuple[DevCsms, StrictChargePoint]) -> None:
    csms, cp = link
    await csms.send_raw("CP", json.dumps({"hello": "world"}))
    error = await error_answer(csms, "-1")
    assert error.payload["errorCode"] == error_code_for("RpcFrameworkError", cp.version)
    await assert_link_still_works(csms, cp)


async def test_unknown_message_type_gets_message_type_not_supported(link: tuple[DevCsms, StrictChargePoint]) -> None:
    csms, cp = link
    await csms.send_raw("CP", json.dumps([7, "typ7", "Reset", {}]))
    error = await error_answer(csms, "typ7")
    assert error.payload["errorCode"] == ("MessageTypeNotSupported" if cp.version == "201" else "GenericError")
    await assert_link_still_works(csms, cp)


async def test_unknown_action_gets_not_implemented(link: tuple[DevCsms, StrictChargePoint]) -> None:
    csms, cp = link
    with pytest.raises(CallErrorReceived) as error:
        await csms.call("CP", "MakeCoffee", {"sugar": 2}, validate=False)
    assert error.value.code == "NotImplemented"
    await assert_link_still_works(csms, cp)


async def test_known_but_unhandled_action_gets_not_supported(link: tuple[DevCsms, StrictChargePoint]) -> None:
    csms, cp = link
    with pytest.raises(CallErrorReceived) as error:
        await csms.call("CP", "ClearCache", {})
    assert error.value.code == "NotSupported"


async def test_schema_violation_gets_format_violation_in_each_versions_spelling(link: tuple[DevCsms, StrictChargePoint]) -> None:
    csms, cp = link
    from station.ocpp.rpc import on_raw

    async def on_reset(payload: dict[str, object]) -> dict[str, object]:
        return {"status": "Accepted"}

    handler = on_raw("Reset")(on_reset)
    cp.route_map["Reset"] = {"_on_action": handler, "_skip_schema_validation": False}
    payload = {"type": "Immediate", "unexpected": True} if cp.version == "201" else {"type": "Hard", "unexpected": True}
    with pytest.raises(CallErrorReceived) as error:
        await csms.call("CP", "Reset", payload, validate=False)
    assert error.value.code == ("FormatViolation" if cp.version == "201" else "FormationViolation")
    good = {"type": "Immediate"} if cp.version == "201" else {"type": "Hard"}
    assert await csms.call("CP", "Reset", good) == {"status": "Accepted"}


async def test_handler_crash_gets_internal_error_without_details(link: tuple[DevCsms, StrictChargePoint]) -> None:
    csms, cp = link
    from station.ocpp.rpc import on_raw

    async def broken(payload: dict[str, object]) -> dict[str, object]:
        raise RuntimeError("secret-password-in-exception")

    cp.route_map["ClearCache"] = {"_on_action": on_raw("ClearCache")(broken), "_skip_schema_validation": False}
    with pytest.raises(CallErrorReceived) as error:
        await csms.call("CP", "ClearCache", {})
    assert error.value.code == "InternalError"
    assert "secret" not in json.dumps([error.value.description, error.value.details])
    await assert_link_still_works(csms, cp)


def test_redact_masks_passwords_and_secret_configuration_values() -> None:
    set_variables = {"setVariableData": [{"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}, "attributeValue": "hunter2"}]}
    change_configuration = {"key": "AuthorizationKey", "value": "hunter2"}
    nested = {"network": {"password": "hunter2", "user": "u"}}
    for payload in (set_variables, change_configuration, nested):
        assert "hunter2" not in json.dumps(redact("X", payload))
    assert redact("X", {"key": "HeartbeatInterval", "value": "60"}) == {"key": "HeartbeatInterval", "value": "60"}


def test_logged_payload_is_cut_from_the_compact_frame_else_serialised_again() -> None:
    payload = {"eventType": "Updated", "meterValue": [{"sampledValue": [{"value": 1.5}]}], "note": "\u00fc"}
    call = [2, "id-1", "TransactionEvent", payload]
    assert payload_text(json.dumps(call, separators=(",", ":")), call) == frame_text(payload)
    result = [3, "id-1", {"status": "Accepted"}]
    assert payload_text(json.dumps(result, separators=(",", ":")), result) == '{"status":"Accepted"}'
    assert payload_text(json.dumps(call), call) is None  # not compact: the caller serialises the payload itself
    assert payload_text(json.dumps(call, separators=(",", ":")).encode(), call) is None
    error = [4, "id-1", "InternalError", "x", {}]
    assert payload_text(json.dumps(error, separators=(",", ":")), error) is None


async def test_frame_logs_never_contain_secrets(link: tuple[DevCsms, StrictChargePoint]) -> None:
    from structlog.testing import capture_logs

    csms, cp = link
    if cp.version == "201":
        payload = {"setVariableData": [{"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}, "attributeValue": "hunter2-secret"}]}
        action = "SetVariables"
    else:
        payload = {"key": "AuthorizationKey", "value": "hunter2-secret"}
        action = "ChangeConfiguration"
    with capture_logs() as logs:
        with pytest.raises(CallErrorReceived):
            await csms.call("CP", action, payload)
    assert any(action in entry["event"] for entry in logs)
    assert "hunter2-secret" not in repr(logs)


def test_logged_urls_lose_their_credentials_and_presigned_query_but_keep_host_path_and_checksum() -> None:
    frame = ('{"firmware": {"location": "https://fleet:Pw-1@dl.example/r/s-1.0.whl'
             '?X-Amz-Signature=abc123&X-Amz-Credential=AKIA#sha256=00ff"}}')
    masked = mask_url_secrets(frame)
    assert "Pw-1" not in masked and "abc123" not in masked and "AKIA" not in masked
    assert "https://***@dl.example/r/s-1.0.whl?***#sha256=00ff" in masked
    assert mask_url_secrets('{"idToken": "no url?here"}') == '{"idToken": "no url?here"}'
