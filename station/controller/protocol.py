"""ESP32 charge-controller wire protocol: command encoding and strict, streaming frame parsing.

Pure code, no I/O, so that every byte-level rule can be tested exhaustively.  The
firmware is deployed and not ours: we must be exactly compatible with it and
stricter than it when reading (there is no checksum, so field validation is the
only defence against line noise).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from station.core.model import ControllerState, ControllerStatus, PilotState

# --------------------------------------------------------------------------- commands (Pi -> ESP32)

CMD_HEADER = 0x41
CMD_SEPARATOR = 0x2C
CMD_FOOTER = 0x10
CMD_LENGTH = 5

MIN_CURRENT_A = 6
MAX_CURRENT_A = 32


class CommandCode(enum.IntEnum):
    """Second byte of a command frame."""

    STATUS = 0x00
    AUTHORIZE = 0x01
    SET_MAX_CURRENT = 0x02
    STOP = 0x04


_FIXED_VALUES = {CommandCode.STATUS: 0x00, CommandCode.AUTHORIZE: 0x01, CommandCode.STOP: 0x07}


def _frame(code: CommandCode, value: int) -> bytes:
    return bytes((CMD_HEADER, code, CMD_SEPARATOR, value, CMD_FOOTER))


def encode_status_request() -> bytes:
    """`41 00 2C 00 10`: ask for one status line now."""
    return _frame(CommandCode.STATUS, 0x00)


def encode_authorize() -> bytes:
    """`41 01 2C 01 10`: allow the relay to close when the EV asks for charge."""
    return _frame(CommandCode.AUTHORIZE, 0x01)


def encode_stop() -> bytes:
    """`41 04 2C 07 10`: open the relay and end charging."""
    return _frame(CommandCode.STOP, 0x07)


def encode_set_max_current(amps: int) -> bytes:
    """`41 02 2C <amps> 10`; anything but a plain int in 6..32 is refused before it reaches the wire."""
    if isinstance(amps, bool) or not isinstance(amps, int):
        raise ValueError(f"max current must be an integer number of amps, got {amps!r}")
    if not MIN_CURRENT_A <= amps <= MAX_CURRENT_A:
        raise ValueError(f"max current must be {MIN_CURRENT_A}..{MAX_CURRENT_A} A, got {amps} A")
    return _frame(CommandCode.SET_MAX_CURRENT, amps)


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded, valid command frame (simulator side)."""

    code: CommandCode
    value: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class RejectedCommand:
    """Bytes the command parser could not accept."""

    raw: bytes
    reason: str


class CommandParser:
    """Parses Pi -> ESP32 command frames strictly by length.

    The footer 0x10 is also the value byte of a 16 A current set, so searching for
    the footer would mis-frame; instead a frame is any 5 bytes starting with
    `41 .. 2C .. 10`, and a bad header drops one byte to resync.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._noise = bytearray()

    def feed(self, data: bytes) -> list[Command | RejectedCommand]:
        self._buf += data
        out: list[Command | RejectedCommand] = []
        while self._buf:
            if self._buf[0] != CMD_HEADER:
                self._noise.append(self._buf.pop(0))
                continue
            if len(self._buf) < CMD_LENGTH:
                # A partial frame may still be completed; only a definite mismatch resyncs now.
                if len(self._buf) >= 3 and self._buf[2] != CMD_SEPARATOR:
                    self._noise.append(self._buf.pop(0))
                    continue
                break
            frame = bytes(self._buf[:CMD_LENGTH])
            if frame[2] != CMD_SEPARATOR or frame[4] != CMD_FOOTER:
                self._noise.append(self._buf.pop(0))
                continue
            if self._noise:
                out.append(RejectedCommand(bytes(self._noise), "bytes outside a command frame"))
                self._noise.clear()
            del self._buf[:CMD_LENGTH]
            out.append(_decode_command(frame))
        if self._noise and (self._buf or len(self._noise) >= 64):
            out.append(RejectedCommand(bytes(self._noise), "bytes outside a command frame"))
            self._noise.clear()
        return out


def _decode_command(frame: bytes) -> Command | RejectedCommand:
    try:
        code = CommandCode(frame[1])
    except ValueError:
        return RejectedCommand(frame, f"unknown command 0x{frame[1]:02X}")
    value = frame[3]
    if code is CommandCode.SET_MAX_CURRENT:
        if not MIN_CURRENT_A <= value <= MAX_CURRENT_A:
            return RejectedCommand(frame, f"max current {value} A outside {MIN_CURRENT_A}..{MAX_CURRENT_A}")
    elif value != _FIXED_VALUES[code]:
        return RejectedCommand(frame, f"{code.name} with value 0x{value:02X}")
    return Command(code, value, frame)


# --------------------------------------------------------------------------- status (ESP32 -> Pi)

FRAME_START = b"<STAT;"
FRAME_END = ord(">")
FRAME_OPEN = ord("<")
MAX_FRAME_LENGTH = 512
LINE_BREAKS = b"\r\n"

CP_CODES: dict[int, PilotState] = {
    0: PilotState.A,
    1: PilotState.B,
    2: PilotState.C,
    3: PilotState.D,
    4: PilotState.E,
    5: PilotState.F,
}
"""ASSUMPTION (see docs/hardware.md): the firmware's CP code counts IEC 61851 states A..F from 0."""
PILOT_CODES: dict[PilotState, int] = {v: k for k, v in CP_CODES.items()}

FIELD_RANGES: dict[str, tuple[int, int]] = {
    "CP": (0, 5),
    "CPV": (0, 65535),
    "PP": (0, 9),
    "PPV": (0, 65535),
    "RL": (0, 1),
    "LOCK": (0, 1),
    "MOTOR": (0, 9),
    "PWM": (0, 255),
    "MAX": (0, 80),
    "CABLE": (0, 80),
    "AUTH": (0, 1),
    "STATE": (0, 8),
    "PB": (0, 255),
    "STOP": (0, 1),
}
"""Every field the firmware sends, with its documented (inclusive) range."""
REQUIRED_FIELDS: tuple[str, ...] = tuple(FIELD_RANGES)
"""The firmware's fields in its order (what `encode_status_line` writes)."""
ACTED_FIELDS: tuple[str, ...] = ("CP", "STATE", "RL", "AUTH", "STOP", "MAX", "PB", "LOCK")
"""Fields the station acts on: pilot, state, relay, authorization, stop and current limit drive the
connector and the transaction; PB≠0 makes it Faulted and LOCK decides whether an unlock may be sent.
Missing, not an integer or out of range, they reject the frame (no checksum: this is the noise guard)."""
INFO_FIELDS: tuple[str, ...] = tuple(f for f in REQUIRED_FIELDS if f not in ACTED_FIELDS)
"""Informational fields (voltages, proximity, lock motor, PWM, cable rating): an unexpected value
is a warning, never a rejection. Another firmware build may scale PWM differently (per mille:
267 at 16 A) or report a proximity code this station does not know; that must not fault a session."""
ID_RANGE = (0, 2**32 - 1)

_INT = re.compile(rb"-?[0-9]{1,10}")
_KEY = re.compile(rb"[A-Za-z][A-Za-z0-9_]{0,31}")


@dataclass(frozen=True, slots=True)
class FieldWarning:
    """An informational field with a value outside the documented protocol (the frame is still used)."""

    field: str
    value: str
    """The value as sent (text, at most 20 characters), or "" when the field was missing."""
    reason: str


@dataclass(frozen=True, slots=True)
class StatusFrame:
    """A valid status line: the controller's status plus the request id if the firmware echoed one."""

    status: ControllerStatus
    request_id: int | None
    raw: bytes
    warnings: tuple[FieldWarning, ...] = ()
    """Informational fields out of range, not integers or missing; their values in `status` are as
    sent when they are integers, else 0."""


@dataclass(frozen=True, slots=True)
class RejectedFrame:
    """Bytes that did not form a valid status line, with the reason (for counting and logging)."""

    raw: bytes
    reason: str


ParseResult = StatusFrame | RejectedFrame


class FrameParser:
    """Streaming status-line parser: keeps every byte, frames on `<STAT;` ... `>`, resyncs on `<`.

    Results depend only on the byte stream, never on how it was split into `feed`
    calls.  Bytes outside any frame (other than CR/LF line ends) are reported as a
    RejectedFrame once the run of noise ends, so nothing disappears silently.
    """

    def __init__(self, max_frame_length: int = MAX_FRAME_LENGTH) -> None:
        self._max = max_frame_length
        self._cand: bytearray | None = None
        self._noise = bytearray()

    def feed(self, data: bytes) -> list[ParseResult]:
        out: list[ParseResult] = []
        for byte in data:
            cand = self._cand
            if byte == FRAME_OPEN:
                self._flush_noise(out)
                if cand is not None:
                    out.append(RejectedFrame(bytes(cand), "truncated frame: new '<' before '>'"))
                self._cand = bytearray((byte,))
            elif cand is None:
                if byte in LINE_BREAKS:
                    self._flush_noise(out)
                else:
                    self._noise.append(byte)
                    if len(self._noise) >= self._max:
                        self._flush_noise(out)
            elif byte in LINE_BREAKS:
                out.append(RejectedFrame(bytes(cand), "truncated frame: line break before '>'"))
                self._cand = None
            else:
                cand.append(byte)
                n = len(cand)
                if n <= len(FRAME_START):
                    if cand != FRAME_START[:n]:
                        out.append(RejectedFrame(bytes(cand), "not a status frame (expected '<STAT;')"))
                        self._cand = None
                elif byte == FRAME_END:
                    out.append(parse_status_line(bytes(cand)))
                    self._cand = None
                elif n >= self._max:
                    out.append(RejectedFrame(bytes(cand), f"frame longer than {self._max} bytes"))
                    self._cand = None
        return out

    def flush(self) -> list[ParseResult]:
        """End of stream (port closed): report whatever is still buffered as rejected."""
        out: list[ParseResult] = []
        self._flush_noise(out)
        if self._cand is not None:
            out.append(RejectedFrame(bytes(self._cand), "unfinished frame at end of stream"))
            self._cand = None
        return out

    def _flush_noise(self, out: list[ParseResult]) -> None:
        if self._noise:
            out.append(RejectedFrame(bytes(self._noise), "noise: bytes outside a frame"))
            self._noise.clear()


def parse_status_line(raw: bytes) -> ParseResult:
    """Validate one complete `<STAT;...>` candidate."""
    if not (raw.startswith(FRAME_START) and raw.endswith(b">")):
        return RejectedFrame(raw, "not framed as <STAT;...>")
    body = raw[len(FRAME_START) : -1]
    segments = body.split(b";")
    if segments and segments[-1] == b"":
        segments.pop()  # the firmware terminates the last field with ';'
    values: dict[str, int] = {}
    extras: dict[str, str] = {}
    warnings: list[FieldWarning] = []
    request_id: int | None = None
    seen: set[bytes] = set()
    for seg in segments:
        key, eq, value = seg.partition(b"=")
        if not eq or not _KEY.fullmatch(key):
            return RejectedFrame(raw, f"malformed field {seg[:40]!r}")
        if key in seen:
            return RejectedFrame(raw, f"duplicate field {key.decode()}")
        seen.add(key)
        name = key.decode("ascii")
        if name in INFO_FIELDS:
            lo, hi = FIELD_RANGES[name]
            shown = value[:20].decode("ascii", errors="replace")
            if not _INT.fullmatch(value):
                warnings.append(FieldWarning(name, shown, f"{name}={shown!r} is not an integer"))
                values[name] = 0
                continue
            values[name] = int(value)
            if not lo <= values[name] <= hi:
                warnings.append(FieldWarning(name, shown, f"{name}={values[name]} outside {lo}..{hi}"))
        elif name in FIELD_RANGES or name == "ID":
            if not _INT.fullmatch(value):
                return RejectedFrame(raw, f"{name}={value[:20]!r} is not an integer")
            number = int(value)
            lo, hi = FIELD_RANGES.get(name, ID_RANGE)
            if not lo <= number <= hi:
                return RejectedFrame(raw, f"{name}={number} outside {lo}..{hi}")
            if name == "ID":
                request_id = number
            else:
                values[name] = number
        else:
            extras[name] = value.decode("utf-8", errors="replace")
    missing = [f for f in ACTED_FIELDS if f not in values]
    if missing:
        return RejectedFrame(raw, f"missing field(s) {','.join(missing)}")
    for name in INFO_FIELDS:
        if name not in values:
            warnings.append(FieldWarning(name, "", f"{name} missing"))
            values[name] = 0
    status = ControllerStatus(
        pilot=CP_CODES[values["CP"]],
        state=ControllerState(values["STATE"]),
        relay_closed=values["RL"] == 1,
        authorized=values["AUTH"] == 1,
        max_current_a=values["MAX"],
        cable_current_a=values["CABLE"],
        locked=values["LOCK"] == 1,
        stop_requested=values["STOP"] == 1,
        power_board_fault=values["PB"] != 0,
        pwm_duty=values["PWM"],
        pilot_mv=values["CPV"],
        proximity_mv=values["PPV"],
        extras=extras,
    )
    return StatusFrame(status, request_id, raw, tuple(warnings))


def encode_status_line(fields: dict[str, int | str], request_id: int | None = None) -> bytes:
    """Build a status line in the firmware's field order (simulator and tests).

    `fields` holds the required fields by wire name; any other keys are appended
    as extra free-text fields after the standard ones.
    """
    parts = [b"<STAT"]
    if request_id is not None:
        parts.append(b"ID=%d" % request_id)
    for name in REQUIRED_FIELDS:
        parts.append(f"{name}={fields[name]}".encode())
    for name, value in fields.items():
        if name not in FIELD_RANGES:
            parts.append(f"{name}={value}".encode())
    return b";".join(parts) + b";>"


def status_fields(status: ControllerStatus, *, pp: int = 0, motor: int = 0, pb: int = 0) -> dict[str, int | str]:
    """Wire fields for a ControllerStatus (inverse of parsing, for the simulator and tests)."""
    fields: dict[str, int | str] = {
        "CP": PILOT_CODES[status.pilot],
        "CPV": status.pilot_mv,
        "PP": pp,
        "PPV": status.proximity_mv,
        "RL": int(status.relay_closed),
        "LOCK": int(status.locked),
        "MOTOR": motor,
        "PWM": status.pwm_duty,
        "MAX": status.max_current_a,
        "CABLE": status.cable_current_a,
        "AUTH": int(status.authorized),
        "STATE": int(status.state),
        "PB": pb if pb else int(status.power_board_fault),
        "STOP": int(status.stop_requested),
    }
    fields.update(status.extras)
    return fields
