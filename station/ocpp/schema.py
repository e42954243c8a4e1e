"""OCPP payload validation against the `ocpp` library's own JSON schemas, compiled once.

Why not `ocpp.messages.validate_payload`: it walks the schema with `jsonschema` (a
TransactionEvent with meter values costs ~10 ms of CPU on an x86 core, several times that
on a Raspberry Pi) and does so in a thread pool, so each message also waits for the GIL
(switch interval 5 ms). Four validations per exchange made it the station's largest
per-message cost (see docs/performance.md). Here the same schema files are compiled with
`fastjsonschema` into plain Python functions (tens of microseconds) and run inline.

The verdict stays the library's: only a payload the compiled check *passes* skips the
library. When the compiled check finds a fault, the library's validator is asked and
raises its usual OCPPError (same codes, same messages); should it disagree, the payload
passes. The three 1.6 messages the library parses with `decimal.Decimal` (its workaround
for `multipleOf: 0.1`) always go to the library, which also converts their payload.
"""

from __future__ import annotations

import asyncio
import decimal
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import ocpp
from ocpp.messages import Call, CallResult, MessageType, _validate_payload, get_validator

Validator = Callable[[Any], Any]

_SCHEMA_ROOT = Path(ocpp.__file__).resolve().parent
_compiled: dict[tuple[int, str, str], Validator | None] = {}

_DECIMAL_CALLS_16 = frozenset({"SetChargingProfile", "RemoteStartTransaction"})
_DECIMAL_RESULTS_16 = frozenset({"GetCompositeSchedule"})


def _schema_path(message_type_id: int, action: str, ocpp_version: str) -> Path:
    """The schema file the library itself would read (same naming rules as `ocpp.messages.get_validator`)."""
    name = action
    if message_type_id == MessageType.CallResult:
        name += "Response"
    elif ocpp_version != "1.6":
        name += "Request"
    if ocpp_version == "2.0":
        name += "_v1p0"
    return _SCHEMA_ROOT / ("v" + ocpp_version.replace(".", "")) / "schemas" / f"{name}.json"


def compiled_validator(message_type_id: int, action: str, ocpp_version: str) -> Validator | None:
    """The compiled check for one message kind, or None when only the library can judge it."""
    key = (message_type_id, action, ocpp_version)
    if key not in _compiled:
        try:
            schema = json.loads(_schema_path(*key).read_text(encoding="utf-8-sig"))
            # Like the library's Draft4Validator (no format checker): "format" is not enforced.
            # No detailed exceptions: the library words the error anyway, and they made the generated
            # code 6x larger (RequestStartTransaction: 244 KB; compiling it raised RSS by 9 MB).
            _compiled[key] = fastjsonschema.compile(schema, use_formats=False, use_default=False,
                                                    detailed_exceptions=False)
        except (OSError, ValueError, fastjsonschema.JsonSchemaDefinitionException):
            _compiled[key] = None
    return _compiled[key]


@functools.cache
def known_actions(ocpp_version: str) -> frozenset[str]:
    """Every action `ocpp_version` defines, read from the library's schema file names.

    Same set as the library's `Action` enums, without importing `ocpp.v201` / `ocpp.v16`
    (their message dataclasses cost ~4.5 MB of resident memory the station never uses).
    """
    directory = _SCHEMA_ROOT / ("v" + ocpp_version.replace(".", "")) / "schemas"
    suffix = "Request.json" if ocpp_version != "1.6" else ".json"
    return frozenset(
        p.name.removesuffix(suffix) for p in directory.glob("*.json")
        if p.name.endswith(suffix) and not p.name.endswith("Response.json")
    )


LATENCY_CRITICAL: dict[str, tuple[str, ...]] = {
    "2.0.1": ("RequestStartTransaction", "RequestStopTransaction", "TransactionEvent", "Authorize"),
    "1.6": ("RemoteStopTransaction", "StartTransaction", "StopTransaction", "MeterValues", "Authorize"),
}
"""Messages whose first use must not pay the compile (tens of ms each): a remote start waits on them."""


async def warm_up_boot(ocpp_version: str) -> None:
    """BootNotification's validators (~20 ms of compiling here) while the first connection is opened:
    on a real link the TCP, TLS and WebSocket handshakes take round trips the compile fits into."""
    for message_type_id in (MessageType.Call, MessageType.CallResult):
        await asyncio.sleep(0)
        compiled_validator(message_type_id, "BootNotification", ocpp_version)


async def warm_up(ocpp_version: str) -> None:
    """Compile the latency-critical validators now, one per loop turn, instead of on first use.

    In 1.6 the library itself checks RemoteStartTransaction (and SetChargingProfile): its
    validators, and with them jsonschema (imported on demand, see jsonschema_on_demand.py), are
    built now too, so the first remote start does not pay for them.
    """
    for action in LATENCY_CRITICAL.get(ocpp_version, ()):
        for message_type_id in (MessageType.Call, MessageType.CallResult):
            compiled_validator(message_type_id, action, ocpp_version)
            await asyncio.sleep(0)
    if ocpp_version == "1.6":
        for action in sorted(_DECIMAL_CALLS_16):
            get_validator(MessageType.Call, action, ocpp_version, parse_float=decimal.Decimal)
            await asyncio.sleep(0)


def _needs_library(message: Call | CallResult, ocpp_version: str) -> bool:
    if ocpp_version != "1.6":
        return False
    if isinstance(message, Call):
        return message.action in _DECIMAL_CALLS_16
    return message.action in _DECIMAL_RESULTS_16


def validate_payload(message: Call | CallResult, ocpp_version: str) -> None:
    """Raise the library's OCPPError when `message.payload` violates its schema; else return."""
    if type(message) in (Call, CallResult) and not _needs_library(message, ocpp_version):
        check = compiled_validator(message.message_type_id, message.action, ocpp_version)
        if check is not None:
            try:
                check(message.payload)
                return
            except fastjsonschema.JsonSchemaValueException:
                pass  # let the library phrase the error (or overrule us)
    _validate_payload(message, ocpp_version)
