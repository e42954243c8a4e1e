"""Fuzzing the station's OCPP session with malformed frames over a real WebSocket (hypothesis).

A real station (core + SQLite + OCPP client) is connected to the dev CSMS on loopback;
the CSMS sends each generated frame raw, then a sentinel CALL. Whatever the frame,
the station must answer exactly as OCPP-J says (one CALLERROR with the right code and
message id, a CALLRESULT for a valid CALL, nothing for a stray response), never raise,
and keep the same connection. `make test` sends a few hundred frames per version,
`make soak` 10k in total.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocpp.messages import get_validator
from ocpp.v16.enums import Action as Action16
from ocpp.v201.enums import Action as Action201

from station.devtools.csms import DevCsms
from station.ocpp.rpc import LIBRARY_VERSION, error_code_for
from tests.ocpp_helpers import Rig, eventually
from tests.reliability import record

BOUNDED_FRAMES = 150
SOAK_FRAMES = 5000  # per version: 10k in total

SCHEMA_ERRORS = ("FormatViolation", "ProtocolError", "TypeConstraintViolation", "OccurrenceConstraintViolation",
                 "PropertyConstraintViolation")

VALID: dict[str, dict[str, dict[str, Any]]] = {
    "201": {
        "RequestStartTransaction": {"idToken": {"idToken": "T1", "type": "ISO14443"}, "remoteStartId": 1},
        "RequestStopTransaction": {"transactionId": "no-such-tx"},
        "Reset": {"type": "OnIdle"},
        "ChangeAvailability": {"operationalStatus": "Operative"},
        "UnlockConnector": {"evseId": 1, "connectorId": 1},
        "TriggerMessage": {"requestedMessage": "Heartbeat"},
        "GetVariables": {"getVariableData": [{"component": {"name": "OCPPCommCtrlr"},
                                              "variable": {"name": "HeartbeatInterval"}}]},
        "SetVariables": {"setVariableData": [{"attributeValue": "300", "component": {"name": "OCPPCommCtrlr"},
                                              "variable": {"name": "HeartbeatInterval"}}]},
        "SetChargingProfile": {"evseId": 1, "chargingProfile": {
            "id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}]}},
        "ClearChargingProfile": {},
        "GetCompositeSchedule": {"duration": 60, "evseId": 1},
        "SendLocalList": {"versionNumber": 1, "updateType": "Full"},
        "GetLocalListVersion": {},
        "ClearCache": {},
        "DataTransfer": {"vendorId": "x"},
    },
    "16": {
        "RemoteStartTransaction": {"idTag": "T1"},
        "RemoteStopTransaction": {"transactionId": 1},
        "Reset": {"type": "Soft"},
        "ChangeAvailability": {"connectorId": 1, "type": "Operative"},
        "UnlockConnector": {"connectorId": 1},
        "TriggerMessage": {"requestedMessage": "Heartbeat"},
        "GetConfiguration": {},
        "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "300"},
        "SetChargingProfile": {"connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": {
                "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}}},
        "ClearChargingProfile": {},
        "GetCompositeSchedule": {"connectorId": 1, "duration": 60},
        "SendLocalList": {"listVersion": 1, "updateType": "Full"},
        "GetLocalListVersion": {},
        "ClearCache": {},
        "DataTransfer": {"vendorId": "x"},
    },
}

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=36)
scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=24)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=8)


@st.composite
def mutated_payload(draw: st.DrawFn, example: dict[str, Any]) -> dict[str, Any]:
    payload = json.loads(json.dumps(example))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "replace", "add", "nested"]))
        keys = list(payload)
        if op == "drop" and keys:
            payload.pop(draw(st.sampled_from(keys)))
        elif op == "replace" and keys:
            payload[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "nested" and keys:
            key = draw(st.sampled_from(keys))
            if isinstance(payload[key], dict) and payload[key]:
                payload[key][draw(st.sampled_from(list(payload[key])))] = draw(json_values)
        else:
            payload[draw(st.text(max_size=12))] = draw(json_values)
    return payload


@st.composite
def frames(draw: st.DrawFn, version: str, handled: tuple[str, ...], unhandled: tuple[str, ...]) -> tuple[str, str]:
    """(category, frame text)."""
    uid = draw(ids)
    kind = draw(st.sampled_from(["not_json", "not_json_with_id", "not_array", "bad_type", "bad_call",
                                 "unknown_action", "unhandled_action", "payload", "payload", "payload",
                                 "stray_response"]))
    if kind == "not_json":
        text = draw(st.text(max_size=60).filter(lambda t: not _is_json(t)))
    elif kind == "not_json_with_id":
        action = draw(st.sampled_from(handled))
        text = f'[2,"{uid}","{action}",' + draw(st.sampled_from(['{"type":', "{", '{"a":NaX}', "", '{"x":1}}']))
    elif kind == "not_array":
        text = json.dumps(draw(st.just([]) | st.dictionaries(st.text(max_size=5), scalars, max_size=3) | scalars))
    elif kind == "bad_type":
        text = json.dumps([draw(st.integers(-5, 50).filter(lambda n: n not in (2, 3, 4)) | st.text(max_size=3)
                                | st.none()), uid, "Reset", {}])
    elif kind == "bad_call":
        body = draw(st.sampled_from([
            [2, uid], [2, uid, "Reset"], [2, uid, "Reset", {}, 5], [2, uid, 7, {}], [2, uid, "Reset", []],
            [2, uid, "Reset", "x"], [2, 5, "Reset", {}], [2, "", "Reset", {}], [2, "x" * 37, "Reset", {}],
            [2, None, "Reset", {}],
        ]))
        text = json.dumps(body)
    elif kind == "unknown_action":
        action = draw(st.text(min_size=1, max_size=30).filter(lambda a: not _known(a, version)))
        text = json.dumps([2, uid, action, draw(st.dictionaries(st.text(max_size=5), scalars, max_size=2))])
    elif kind == "unhandled_action":
        text = json.dumps([2, uid, draw(st.sampled_from(unhandled)), {}])
    elif kind == "payload":
        action = draw(st.sampled_from(handled))
        example = VALID[version].get(action, {})
        payload = draw(mutated_payload(example) | st.dictionaries(st.text(max_size=10), json_values, max_size=4))
        text = json.dumps([2, uid, action, payload])
    else:
        text = json.dumps(draw(st.sampled_from([
            [3, uid, {}], [4, uid, "GenericError", "", {}], [3, uid], [4, uid, "x"], [3, uid, "notadict"],
        ])))
    return kind, text


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _known(action: str, version: str) -> bool:
    enum = Action201 if version == "201" else Action16
    return action in {a.value for a in enum}


def expected_reply(kind: str, text: str, version: str, handled: tuple[str, ...]) -> tuple[str, str | None, set[str]]:
    """(reply kind: error/result/either/none, message id or None for any, acceptable error codes) — from OCPP-J alone."""
    def codes(*names: str) -> set[str]:
        return {error_code_for(n, version) for n in names}

    if kind in ("not_json", "not_array"):
        return "error", "-1", codes("RpcFrameworkError")
    msg = json.loads(text) if kind != "not_json_with_id" else None
    if kind == "not_json_with_id":
        uid = text.split('"')[1]
        return "error", uid, codes("RpcFrameworkError")
    assert isinstance(msg, list)
    uid = msg[1] if isinstance(msg[1], str) and 0 < len(msg[1]) <= 36 else "-1"
    if kind == "bad_type":
        return "error", uid, codes("MessageTypeNotSupported")
    if kind == "bad_call":
        return "error", uid, codes("RpcFrameworkError")
    if kind == "unknown_action":
        return "error", uid, codes("NotImplemented")
    if kind == "unhandled_action":
        return "error", uid, codes("NotSupported")
    if kind == "stray_response":
        return "none", None, set()
    action, payload = msg[2], msg[3]
    validator = get_validator(2, action, LIBRARY_VERSION[version])
    strict, lenient = validator.is_valid(payload), validator.is_valid(_integral_floats_as_ints(payload))
    if strict:
        return "result", uid, set()
    if lenient:
        # JSON has one number type; draft-06 counts 3.0 as an integer, draft-04 does not. Either verdict is fine.
        return "either", uid, codes(*SCHEMA_ERRORS)
    return "error", uid, codes(*SCHEMA_ERRORS)


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    return value


class FuzzTarget:
    """A real station session on a private event loop, so hypothesis can drive it example by example."""

    def __init__(self, tmp_path: Path, version: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.version = version
        self.tmp_path = tmp_path
        self.sentinels = itertools.count()
        self.csms: DevCsms | None = None
        self.rig: Rig | None = None

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    async def start(self) -> None:
        self.csms = await DevCsms(heartbeat_interval=300).start()
        self.rig = await Rig(self.version, self.csms, self.tmp_path / "state.db").start()
        await self.csms.wait_connected("CP")
        await self.csms.wait_for("StatusNotification", "CP", timeout=10)

    async def stop(self) -> None:
        assert self.rig is not None and self.csms is not None
        await self.rig.stop()
        await self.csms.stop()

    def handled_actions(self) -> tuple[str, ...]:
        assert self.rig is not None and self.rig.client is not None and self.rig.client.session is not None
        return tuple(sorted(self.rig.client.session.route_map))

    async def exchange(self, text: str) -> list[tuple[str, str, str | None]]:
        """Send `text`, then a sentinel CALL; the station's replies in between as (kind, id, errorCode)."""
        csms = self.csms
        assert csms is not None
        mark = len(csms.received)
        sentinel = f"sentinel-{next(self.sentinels)}"
        await csms.send_raw("CP", text)
        await csms.send_raw("CP", json.dumps([2, sentinel, "GetLocalListVersion", {}]))
        await eventually(lambda: any(r.unique_id == sentinel and r.kind != "call" for r in csms.received[mark:]), 10)
        replies = []
        for item in csms.received[mark:]:
            if item.kind == "call":
                continue
            if item.unique_id == sentinel:
                assert item.kind == "result", f"sentinel not answered normally after {text!r}"
                break
            replies.append((item.kind, item.unique_id, item.payload.get("errorCode") if item.kind == "error" else None))
        return replies


def fuzz(tmp_path: Path, version: str, count: int) -> None:
    target = FuzzTarget(tmp_path, version)
    target.run(target.start())
    checked = {"frames": 0, "replies": 0}
    try:
        handled = target.handled_actions()
        enum = Action201 if version == "201" else Action16
        unhandled = tuple(sorted(a.value for a in enum if a.value not in handled))

        @settings(max_examples=count, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.filter_too_much])
        @given(frames(version, handled, unhandled))
        def check(case: tuple[str, str]) -> None:
            kind, text = case
            want, uid, codes = expected_reply(kind, text, version, handled)
            replies = target.run(target.exchange(text))
            checked["frames"] += 1
            if want == "none":
                assert replies == [], f"{text!r} got {replies}"
                return
            assert len(replies) == 1, f"{text!r} got {replies}"
            got_kind, got_id, got_code = replies[0]
            checked["replies"] += 1
            assert got_kind == want or want == "either", f"{text!r}: expected {want} {codes}, got {replies[0]}"
            assert uid is None or got_id == uid, f"{text!r}: reply id {got_id!r}, expected {uid!r}"
            if got_kind == "error":
                assert got_code in codes, f"{text!r}: {got_code} not in {codes}"

        check()
        # The link never dropped: one boot, the same connection throughout.
        assert target.csms is not None and target.csms.connected("CP")
        boots = len(target.csms.calls("BootNotification", "CP"))
        assert boots == 1
    finally:
        target.run(target.stop())
        target.loop.close()
        record("ocpp fuzz", trials=checked["frames"], faults=checked["frames"], events_checked=checked["replies"],
               crashes=0 if "boots" not in locals() else boots - 1)


@pytest.mark.parametrize("version", ["201", "16"])
def test_malformed_ocpp_frames_get_the_right_callerror_and_the_link_stays_up(tmp_path: Path, version: str) -> None:
    fuzz(tmp_path, version, BOUNDED_FRAMES)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["201", "16"])
def test_soak_10k_malformed_ocpp_frames(tmp_path: Path, version: str) -> None:
    fuzz(tmp_path, version, SOAK_FRAMES)
