"""Strict OCPP-J RPC framing on top of `ocpp.ChargePoint`, shared by the station and the dev CSMS.

The `ocpp` library (2.1.0) leaves gaps a field station cannot afford:

- invalid JSON, a frame that is not an array, or an unknown MessageTypeId get no reply at
  all (the peer waits for its timeout); here they are answered with CALLERROR
  RpcFrameworkError / MessageTypeNotSupported (2.0.1) or FormationViolation / GenericError
  (1.6, whose error vocabulary has neither), with the recoverable message id or "-1";
- NotImplemented and NotSupported are swapped relative to the spec (an unknown action must
  get NotImplemented, a known action we do not handle NotSupported);
- 1.6 spells its schema error FormationViolation (and OccurenceConstraintViolation);
- a response that fails our own schema check would be reported to the peer as the peer's
  FormatViolation; it is our bug, so it becomes InternalError;
- every frame is logged by the library at INFO verbatim, secrets included.

Frames are logged here instead, once, with secrets masked. Handlers are the library's
`@on` handlers (snake_case keyword arguments, dataclass result); a handler decorated with
`@on_raw` receives the camelCase payload dict as-is and may return a camelCase dict.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import is_dataclass
from typing import Any, Literal

import structlog
from ocpp.charge_point import (
    ChargePoint,
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult, MessageType
from ocpp.routing import after, on

from station.logs import TOKEN_KEYS, mask_token, may_hold_token, tokens_shown
from station.ocpp.callslot import CallSlot
from station.ocpp.schema import known_actions, validate_payload

Version = Literal["201", "16"]
"""OCPP version as the configuration names it (`OCPP_PRIMARY`)."""

SUBPROTOCOL: dict[str, str] = {"201": "ocpp2.0.1", "16": "ocpp1.6"}
LIBRARY_VERSION: dict[str, str] = {"201": "2.0.1", "16": "1.6"}
VERSION_BY_SUBPROTOCOL: dict[str, str] = {v: k for k, v in SUBPROTOCOL.items()}

MASK = "***"
SECRET_KEYS = frozenset({"password", "basicauthpassword", "authorizationkey", "privatekey"})
"""Payload keys (lower-cased) whose values never reach a log line."""
SECRET_CONFIG_KEYS = frozenset({"authorizationkey", "basicauthpassword"})
"""1.6 configuration keys / 2.0.1 variable names whose values are secrets."""

_quiet_library_logger = logging.getLogger("station.ocpp.library")
_quiet_library_logger.addHandler(logging.NullHandler())
_quiet_library_logger.propagate = False
_quiet_library_logger.disabled = True

SECRET_HINTS = ("password", "authorizationkey", "privatekey")
"""Every SECRET_KEYS / SECRET_CONFIG_KEYS name contains one of these: a frame without them needs no redaction."""


def may_hold_secret(text: str) -> bool:
    """False when no secret name (nor, unless shown, a driver token's field) occurs in the frame text.

    Substring tests; a regex costs ~10x more.
    """
    low = text.lower()
    return any(hint in low for hint in SECRET_HINTS) or (not tokens_shown() and may_hold_token(text))


_URL_USERINFO = re.compile(r"(://)[^/@\s\"]+@")
_URL_QUERY = re.compile(r"(://[^\s\"?#]*)\?[^\s\"#]*")


def mask_url_secrets(text: str) -> str:
    """`user:password@` and the query (a pre-signed URL's token) of any URL in a logged frame
    (UpdateFirmware and GetLog locations) become `***`."""
    if "://" not in text:
        return text
    if "@" in text:
        text = _URL_USERINFO.sub(r"\1***@", text)
    return _URL_QUERY.sub(r"\1?***", text) if "?" in text else text


_ID_IN_BROKEN_FRAME = re.compile(r'^\s*\[\s*\d+\s*,\s*"([^"\\]{1,36})"')


async def cancel_all(tasks: Any) -> None:
    """Cancel tasks and wait until they are really done.

    Cancels again while any is left: Python 3.11's `asyncio.wait_for` (used inside the `ocpp`
    library) can swallow a cancellation, which would otherwise hang shutdown. Our own
    cancellation still propagates (no `suppress(BaseException)` around an await).
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # mark retrieved; errors were logged where they happened


def log_failure(task: asyncio.Future[Any], what: str, logger: Any = None) -> None:
    """Make the caller the owner of `task`'s failure: logged once when it ends (a refused or
    unanswered CALL as a warning, anything else as an error with its traceback), never left to
    asyncio's "Task exception was never retrieved"."""

    def done(finished: asyncio.Future[Any]) -> None:
        if finished.cancelled() or finished.exception() is None:
            return
        exc = finished.exception()
        out = logger or structlog.get_logger("station.ocpp")
        if isinstance(exc, (CallErrorReceived, TimeoutError, ConnectionError)):
            out.warning(f"{what} failed", action=getattr(exc, "action", None), error=str(exc)[:300])
        else:
            out.error(f"{what} failed", exc_info=exc)

    task.add_done_callback(done)


class CallErrorReceived(Exception):
    """The peer answered our CALL with a CALLERROR."""

    def __init__(self, action: str, code: str, description: str, details: Any) -> None:
        super().__init__(f"{action}: {code} {description}")
        self.action = action
        self.code = code
        self.description = description
        self.details = details


class CallTimeout(TimeoutError):
    """Our CALL got no answer in time (a TimeoutError that names the action)."""

    def __init__(self, action: str, seconds: float) -> None:
        super().__init__(f"{action}: no answer within {seconds:g} s")
        self.action = action


class _RpcError(OCPPError):
    """An error whose code we choose per version (the library has no class for some codes).

    A handler raises it to answer with a CALLERROR (the code is translated per version)."""

    def __init__(self, code: str, description: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(description=description, details=details or {})
        self.code = code


RpcError = _RpcError


def on_raw(action: str, *, skip_schema_validation: bool = False) -> Callable[..., Any]:
    """Like `ocpp.routing.on`, but the handler gets `payload` (camelCase dict) and may return a dict."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        inner = on(action, skip_schema_validation=skip_schema_validation)(func)
        inner._raw_payload = True  # type: ignore[attr-defined]
        return inner

    return decorator


def after_raw(action: str) -> Callable[..., Any]:
    """Like `ocpp.routing.after` (runs once the response is sent), with the camelCase `payload`."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        inner = after(action)(func)
        inner._raw_payload = True  # type: ignore[attr-defined]
        return inner

    return decorator


def error_code_for(code: str, version: str) -> str:
    """Translate an error code into the vocabulary of `version` ("201" or "16")."""
    if version == "16":
        return {
            "FormatViolation": "FormationViolation",
            "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
            "RpcFrameworkError": "FormationViolation",
            "MessageTypeNotSupported": "GenericError",
        }.get(code, code)
    return {
        "FormationViolation": "FormatViolation",
        "OccurenceConstraintViolation": "OccurrenceConstraintViolation",
    }.get(code, code)


def redact(action: str | None, payload: Any) -> Any:
    """A copy of `payload` for a log line: secrets masked (passwords, keys, secret variables), and
    drivers' tokens masked to their tail (`****0042`) unless STATION_LOG_DRIVER_TOKENS shows them.
    One walk does both (a 1.3 KB TransactionEvent took two, ~35 µs)."""
    return _redact(action, payload, not tokens_shown())


def _redact(action: str | None, payload: Any, tokens: bool) -> Any:
    if isinstance(payload, list):
        return [_redact(action, item, tokens) for item in payload]
    if not isinstance(payload, dict):
        return payload
    out: dict[str, Any] = {}
    for key, value in payload.items():
        low = key.lower() if isinstance(key, str) else key
        if low in SECRET_KEYS and value is not None:
            out[key] = MASK
        elif tokens and low in TOKEN_KEYS:
            out[key] = mask_token(value) if isinstance(value, str) else _redact(action, value, tokens)
        else:
            out[key] = _redact(action, value, tokens)
    # 1.6 ChangeConfiguration / GetConfiguration entries: {"key": ..., "value": ...}
    key_name = payload.get("key")
    if isinstance(key_name, str) and key_name.lower() in SECRET_CONFIG_KEYS and "value" in out:
        out["value"] = MASK
    # 2.0.1 Set/GetVariables entries: {"variable": {"name": ...}, "attributeValue": ...}
    variable = payload.get("variable")
    if isinstance(variable, dict) and str(variable.get("name", "")).lower() in SECRET_CONFIG_KEYS:
        for value_key in ("attributeValue", "value"):
            if value_key in out:
                out[value_key] = MASK
    return out


def frame_text(message: Any) -> str:
    """Compact JSON for log lines."""
    try:
        return json.dumps(message, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return repr(message)


def payload_text(raw: Any, message: list[Any]) -> str | None:
    """The CALL / CALLRESULT payload's text cut out of the frame as it crossed the wire.

    Saves serialising a 1.3 KB TransactionEvent a second time just to log it. Only when the
    frame starts with exactly the compact head (ours and the library's do); else None.
    """
    if not isinstance(raw, str) or not message or message[0] not in (2, 3) or not raw.endswith("]"):
        return None
    head = json.dumps(message[:-1], separators=(",", ":"))[:-1] + ","
    return raw[len(head):-1] if raw.startswith(head) else None


def _logs_info(logger: Any) -> bool:
    """False when `logger` drops INFO (level warning, or the bench's CSMS): then no frame text is built."""
    enabled = getattr(logger, "is_enabled_for", None)
    return bool(enabled(logging.INFO)) if enabled is not None else True


class StrictChargePoint(ChargePoint):
    """An OCPP-J endpoint (either side) with strict framing and redacted frame logging.

    `peer_id` is the station id; `side` ("station" or "csms") only labels log lines.
    """

    def __init__(
        self,
        peer_id: str,
        connection: Any,
        version: str,
        *,
        side: str = "station",
        response_timeout: float = 30,
        log: Any = None,
    ) -> None:
        if version not in SUBPROTOCOL:
            raise ValueError(f"unknown OCPP version {version!r}; expected '201' or '16'")
        self.version = version
        self._ocpp_version = LIBRARY_VERSION[version]
        super().__init__(peer_id, connection, response_timeout=response_timeout, logger=_quiet_library_logger)
        self._call_lock = CallSlot()  # one CALL in flight; live calls before queued ones (callslot.py)
        self.side = side
        self.log = log or structlog.get_logger("station.ocpp")
        self._actions_of_pending: dict[str, str] = {}
        self.call_size: int | None = None
        """Bytes of the CALL being handled (for DeviceDataCtrlr.BytesPerMessage)."""
        self.draining = False
        """Set by `drain` before the process exits: no new CALL leaves (it waits until cancelled)."""
        self._in_flight = asyncio.Event()
        """Set while a CALL of ours is sent and not yet answered (or timed out)."""

    # ----------------------------------------------------------------- logging
    def _log_frame(self, direction: str, action: str | None, message: list[Any], unique_id: Any,
                   raw: Any = None) -> None:
        self.on_frame(direction, action, message)
        logging_on = _logs_info(self.log)
        if not logging_on and not self.records_wire:
            return
        if self.side == "csms":
            prefix = f"csms {'<-' if direction == 'in' else '->'} {self.id}"
        else:
            prefix = f"ocpp {'->' if direction == 'out' else '<-'}"
        kind = {2: "", 3: " result", 4: " error"}.get(message[0] if message else 0, "")
        body = message[-1] if message and message[0] in (2, 3) else message[2:] if message else []
        text = payload_text(raw, message) or frame_text(body)
        if may_hold_secret(text):  # walking the payload costs more than the rest of the frame
            text = frame_text(redact(action, body))
        text = mask_url_secrets(text)
        if self.records_wire:
            self.on_wire(direction, f"{action or '?'}{kind} {unique_id} {text}")
        if not logging_on:
            return
        self.log.info(
            f"{prefix} {action or '?'}{kind} {text}",
            station_id=self.id,
            ocpp=self.version,
            direction=direction,
            unique_id=unique_id,
        )

    def on_frame(self, direction: str, action: str | None, message: list[Any]) -> None:
        """Hook for subclasses that record traffic (the dev CSMS); `message` is the parsed frame."""

    records_wire = False
    """True: `on_wire` gets every frame, masked exactly as for the frame log (one masking for both)."""

    def on_wire(self, direction: str, text: str) -> None:
        """Hook for the station's flight recorder: `<action>[ result| error] <unique id> <masked payload>`."""

    async def _send(self, message: str, parsed: list[Any] | None = None) -> None:
        """Log and send one frame; `parsed` is the frame as a list when the caller has it (saves a parse)."""
        if parsed is None:
            try:
                parsed = json.loads(message)
            except ValueError:
                parsed = []
        if parsed:
            action = parsed[2] if parsed[0] == 2 else self._actions_of_pending.pop(str(parsed[1]), None)
            self._log_frame("out", action, parsed, parsed[1], message)
        await self._connection.send(message)

    async def _send_error(self, unique_id: str, code: str, description: str, details: dict[str, Any] | None = None) -> None:
        frame = CallError(unique_id, error_code_for(code, self.version), description, details or {})
        await self._send(frame.to_json())

    # ----------------------------------------------------------------- receive
    async def route_message(self, raw_msg: Any) -> None:  # noqa: C901 — one flat dispatch reads best
        """Parse one frame strictly; answer every unparseable CALL instead of ignoring it."""
        try:
            msg = json.loads(raw_msg)
        except (TypeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: nested too deep to parse (200,000 arrays fit in well under 1 MiB).
            match = _ID_IN_BROKEN_FRAME.match(raw_msg if isinstance(raw_msg, str) else "")
            unique_id = match.group(1) if match else "-1"
            why = "nested too deep" if isinstance(exc, RecursionError) else "not valid JSON"
            self.log.warning(f"ocpp: frame is {why}", station_id=self.id, unique_id=unique_id)
            await self._send_error(unique_id, "RpcFrameworkError", f"Message is {why}")
            return
        if not isinstance(msg, list) or not msg:
            self.log.warning("ocpp: frame is not a JSON array", station_id=self.id)
            await self._send_error("-1", "RpcFrameworkError", "Message is not a non-empty JSON array")
            return
        unique_id = msg[1] if len(msg) > 1 and isinstance(msg[1], str) and 0 < len(msg[1]) <= 36 else None
        type_id = msg[0]
        if type_id not in (MessageType.Call, MessageType.CallResult, MessageType.CallError):
            self.log.warning("ocpp: unsupported MessageTypeId", station_id=self.id, type_id=frame_text(type_id))
            await self._send_error(unique_id or "-1", "MessageTypeNotSupported", f"MessageTypeId {frame_text(type_id)} is not supported")
            return
        if type_id == MessageType.Call:
            if unique_id is None or len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(msg[3], dict):
                self.log.warning("ocpp: malformed CALL", station_id=self.id, unique_id=unique_id)
                await self._send_error(unique_id or "-1", "RpcFrameworkError", "CALL must be [2, messageId, action, {payload}]")
                return
            self._log_frame("in", msg[2], msg, unique_id, raw_msg)
            self.call_size = len(raw_msg.encode()) if isinstance(raw_msg, str) else len(raw_msg)
            await self._handle_strict_call(Call(unique_id, msg[2], msg[3]))
            return
        # CALLRESULT / CALLERROR: never answered, only matched to our pending CALL.
        expected_len = 3 if type_id == MessageType.CallResult else 5
        if unique_id is None or len(msg) != expected_len:
            self.log.warning("ocpp: malformed response frame dropped", station_id=self.id, frame_type=type_id)
            return
        action = self._actions_of_pending.get(unique_id)
        self._log_frame("in", action, msg, unique_id, raw_msg)
        if type_id == MessageType.CallResult:
            if not isinstance(msg[2], dict):
                self.log.warning("ocpp: CALLRESULT payload is not an object; dropped", station_id=self.id)
                return
            self._response_queue.put_nowait(CallResult(unique_id, msg[2]))
        else:
            self._response_queue.put_nowait(CallError(unique_id, str(msg[2]), str(msg[3]), msg[4]))

    async def _handle_strict_call(self, msg: Call) -> None:
        handlers = self.route_map.get(msg.action)
        if handlers is None or "_on_action" not in handlers:
            known = self._is_known_action(msg.action)
            code = "NotSupported" if known else "NotImplemented"
            text = "Action is recognised but not supported" if known else "Action is not known by this receiver"
            await self._send_error(msg.unique_id, code, text, {"action": msg.action})
            return
        skip_validation = handlers.get("_skip_schema_validation", False)
        if not skip_validation:
            try:
                validate_payload(msg, self._ocpp_version)
            except OCPPError as error:
                await self._send_error(msg.unique_id, error.code, error.description, _safe_details(error))
                return
        handler = handlers["_on_action"]
        try:
            if getattr(handler, "_raw_payload", False):
                response = handler(payload=msg.payload)
            else:
                kwargs = camel_to_snake_case(msg.payload)
                if "call_unique_id" in inspect.signature(handler).parameters:
                    kwargs["call_unique_id"] = msg.unique_id
                response = handler(**kwargs)
            if inspect.isawaitable(response):
                response = await response
        except OCPPError as error:
            await self._send_error(msg.unique_id, error.code, error.description, _safe_details(error))
            return
        except Exception:  # noqa: BLE001 — a handler bug must not take the link down
            self.log.exception("ocpp: handler failed", station_id=self.id, action=msg.action)
            await self._send_error(msg.unique_id, "InternalError", "An internal error occurred")
            return
        if is_dataclass(response):
            payload = snake_to_camel_case(remove_nones(serialize_as_dict(response)))
        elif isinstance(response, dict):
            payload = response
        else:
            self.log.error("ocpp: handler returned no payload", station_id=self.id, action=msg.action)
            await self._send_error(msg.unique_id, "InternalError", "An internal error occurred")
            return
        result = msg.create_call_result(payload)
        if not skip_validation:
            try:
                validate_payload(result, self._ocpp_version)
            except OCPPError as error:
                self.log.error("ocpp: our response violates the schema", station_id=self.id, action=msg.action, cause=str(error.details.get("cause", ""))[:300])
                await self._send_error(msg.unique_id, "InternalError", "Response could not be built")
                return
        self._actions_of_pending[msg.unique_id] = msg.action
        await self._send(result.to_json(), [MessageType.CallResult, result.unique_id, result.payload])
        after = handlers.get("_after_action")
        if after is not None:
            follow_up = after(payload=msg.payload) if getattr(after, "_raw_payload", False) else after(**camel_to_snake_case(msg.payload))
            if inspect.isawaitable(follow_up):
                task = asyncio.ensure_future(follow_up)
                self._after_tasks.add(task)
                task.add_done_callback(self._after_tasks.discard)
                task.add_done_callback(lambda done: self._follow_up_done(msg.action, done))

    async def drain(self, timeout: float) -> bool:
        """Before the process exits: send no new CALL and wait up to `timeout` s for the answer to
        the one in flight, so a message the peer handles is not lost and sent again after the
        restart. True when nothing was left in flight."""
        self.draining = True
        try:
            async with asyncio.timeout(timeout):
                while self._in_flight.is_set():
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return False
        return True

    def _follow_up_done(self, action: str, task: asyncio.Future[Any]) -> None:
        """The owner of an `after_raw` follow-up (a triggered send, a report): its failure is logged
        here, once, instead of as asyncio's "Task exception was never retrieved"."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, CallErrorReceived):
            self.log.warning(f"ocpp: {exc.action} after {action} refused by the peer", station_id=self.id,
                             action=exc.action, error=f"{exc.code}: {exc.description}")
        elif isinstance(exc, TimeoutError):
            sent = getattr(exc, "action", None)
            self.log.warning(f"ocpp: {sent or 'a message'} after {action} got no answer", station_id=self.id,
                             action=sent or action, error=str(exc) or "no answer")
        elif isinstance(exc, (OCPPError, ConnectionError)) or exc.__class__.__name__.startswith("ConnectionClosed"):
            self.log.warning(f"ocpp: a message sent after {action} failed", station_id=self.id, action=action,
                             error=f"{exc.__class__.__name__}: {exc}"[:300])
        else:
            self.log.error(f"ocpp: follow-up of {action} failed", station_id=self.id, action=action, exc_info=exc)

    async def _response_for(self, unique_id: str, timeout: float) -> Any:
        """The answer to our CALL `unique_id` (others are stale and dropped); TimeoutError after `timeout`."""
        async with asyncio.timeout(timeout):
            while True:
                response = await self._response_queue.get()
                if response.unique_id == unique_id:
                    return response
                self.log.warning("ocpp: dropped a response to an earlier call", station_id=self.id, unique_id=response.unique_id)

    @property
    def _after_tasks(self) -> set[asyncio.Future[Any]]:
        tasks = self.__dict__.setdefault("_after_task_set", set())
        return tasks

    def _is_known_action(self, action: str) -> bool:
        return action in known_actions(self._ocpp_version)

    # -------------------------------------------------------------------- send
    async def request(self, action: str, payload: dict[str, Any], *, validate: bool = True, timeout: float | None = None,
                      queued: bool = False) -> dict[str, Any]:
        """Send a CALL with a camelCase payload; return the CALLRESULT payload.

        `queued`: a message from a backlog (the outbox); live calls waiting for the one CALL
        slot go first. Raises CallErrorReceived on CALLERROR, asyncio.TimeoutError when no
        answer comes, and OCPPError when our own payload violates the schema.
        """
        call = Call(str(uuid.uuid4()), action, payload)
        if validate:
            validate_payload(call, self._ocpp_version)
        async with self._call_lock.hold(queued=queued):
            if self.draining:  # the process is about to exit: nothing new leaves, the call waits to be cancelled
                await asyncio.get_running_loop().create_future()
            # Drop answers to calls that timed out earlier so they cannot be mistaken for ours.
            while not self._response_queue.empty():
                self._response_queue.get_nowait()
            self._actions_of_pending[call.unique_id] = action
            self._in_flight.set()
            try:
                await self._send(call.to_json(), [MessageType.Call, call.unique_id, action, call.payload])
                response = await self._response_for(call.unique_id, timeout or self._response_timeout)
            except TimeoutError:
                raise CallTimeout(action, timeout or self._response_timeout) from None
            finally:
                self._in_flight.clear()
                self._actions_of_pending.pop(call.unique_id, None)
        if response.message_type_id == MessageType.CallError:
            raise CallErrorReceived(action, response.error_code, response.error_description, response.error_details)
        if validate:
            response.action = action
            validate_payload(response, self._ocpp_version)
        return response.payload


def _safe_details(error: OCPPError) -> dict[str, Any]:
    """Error details for the peer: the cause only, never the echoed message (may hold secrets)."""
    details = error.details if isinstance(error.details, dict) else {}
    cause = details.get("cause")
    return {"cause": str(cause)[:300]} if cause else {}
