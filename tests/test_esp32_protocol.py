"""Specification of the ESP32 wire protocol: command encoding, strict status framing, resync."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest

from station.controller.protocol import (
    ACTED_FIELDS,
    FIELD_RANGES,
    INFO_FIELDS,
    MAX_FRAME_LENGTH,
    REQUIRED_FIELDS,
    Command,
    CommandCode,
    CommandParser,
    FrameParser,
    RejectedCommand,
    RejectedFrame,
    StatusFrame,
    encode_authorize,
    encode_set_max_current,
    encode_status_line,
    encode_status_request,
    encode_stop,
    status_fields,
)
from station.core.model import ControllerState, PilotState

REAL_LINE = (
    b"<STAT;CP=0;CPV=3931;PP=0;PPV=2457;RL=0;LOCK=0;MOTOR=0;PWM=255;MAX=12;"
    b"CABLE=0;AUTH=0;STATE=1;PB=0;STOP=0;>"
)

# --------------------------------------------------------------------------- strategies

required_fields = st.fixed_dictionaries(
    {name: st.integers(lo, hi) for name, (lo, hi) in FIELD_RANGES.items()}
)
extra_keys = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", max_size=11),
).filter(lambda k: k not in FIELD_RANGES and k != "ID")
extra_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=";<>"),
    max_size=30,
)
extras = st.dictionaries(extra_keys, extra_values, max_size=3)
request_ids = st.none() | st.integers(0, 2**32 - 1)


@st.composite
def valid_frames(draw: st.DrawFn) -> tuple[bytes, dict[str, int], dict[str, str], int | None]:
    fields = draw(required_fields)
    more = draw(extras)
    rid = draw(request_ids)
    return encode_status_line({**fields, **more}, rid), fields, more, rid


garbage = st.binary(max_size=40)


def unexpected_values(name: str, texts: list[str]) -> st.SearchStrategy[int | str]:
    """A value of field `name` outside its documented range, or one of `texts` (not integers)."""
    lo, hi = FIELD_RANGES[name]
    return (st.integers(min_value=-(10**9), max_value=lo - 1) | st.integers(min_value=hi + 1, max_value=10**9)
            | st.sampled_from(texts))


def parse_all(data: bytes) -> list[StatusFrame | RejectedFrame]:
    parser = FrameParser()
    return parser.feed(data) + parser.flush()


def good(results: list[StatusFrame | RejectedFrame]) -> list[bytes]:
    return [r.raw for r in results if isinstance(r, StatusFrame)]


# --------------------------------------------------------------------------- status frames


def test_real_line_at_rest_parses_to_idle_state_a() -> None:
    (frame,) = FrameParser().feed(REAL_LINE)
    assert isinstance(frame, StatusFrame)
    s = frame.status
    assert frame.request_id is None
    assert (s.pilot, s.state) == (PilotState.A, ControllerState.IDLE)
    assert (s.relay_closed, s.authorized, s.locked, s.stop_requested, s.power_board_fault) == (
        False, False, False, False, False,
    )
    assert (s.max_current_a, s.cable_current_a, s.pwm_duty) == (12, 0, 255)
    assert (s.pilot_mv, s.proximity_mv) == (3931, 2457)


@pytest.mark.parametrize(("cp", "pilot"), list(zip(range(6), "ABCDEF")))
def test_cp_code_maps_to_iec_61851_state(cp: int, pilot: str) -> None:
    line = REAL_LINE.replace(b"CP=0", b"CP=%d" % cp)
    (frame,) = FrameParser().feed(line)
    assert isinstance(frame, StatusFrame)
    assert frame.status.pilot is PilotState(pilot)


def test_flags_map_relay_auth_fault_stop_and_lock() -> None:
    line = REAL_LINE
    for a, b in [(b"RL=0", b"RL=1"), (b"AUTH=0", b"AUTH=1"), (b"PB=0", b"PB=3"),
                 (b"STOP=0", b"STOP=1"), (b"LOCK=0", b"LOCK=1")]:
        line = line.replace(a, b)
    (frame,) = FrameParser().feed(line)
    assert isinstance(frame, StatusFrame)
    s = frame.status
    assert s.relay_closed and s.authorized and s.power_board_fault and s.stop_requested and s.locked


@settings(deadline=None)
@given(valid_frames())
def test_valid_frame_roundtrips_every_field(frame: tuple[bytes, dict[str, int], dict[str, str], int | None]) -> None:
    raw, fields, more, rid = frame
    (result,) = FrameParser().feed(raw)
    assert isinstance(result, StatusFrame), result
    assert result.request_id == rid
    assert result.raw == raw
    assert result.status.extras == more
    assert status_fields(result.status, pp=fields["PP"], motor=fields["MOTOR"], pb=fields["PB"]) == {
        **fields, **more,
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_frames(), min_size=1, max_size=3), st.lists(garbage, min_size=4, max_size=4))
def test_stream_split_at_every_byte_boundary_gives_identical_results(
    frames: list[tuple[bytes, dict[str, int], dict[str, str], int | None]], noise: list[bytes]
) -> None:
    stream = noise[0] + b"\r\n".join(f[0] for f in frames) + noise[1] + REAL_LINE[:30] + noise[2] + REAL_LINE + noise[3]
    whole = parse_all(stream)
    for cut in range(len(stream) + 1):
        parser = FrameParser()
        split = parser.feed(stream[:cut]) + parser.feed(stream[cut:]) + parser.flush()
        assert split == whole, cut


@settings(deadline=None)
@given(st.binary(max_size=600), st.integers(1, 17))
def test_byte_by_byte_feeding_equals_chunked_feeding(stream: bytes, chunk: int) -> None:
    parser = FrameParser()
    chunked = [r for i in range(0, len(stream), chunk) for r in parser.feed(stream[i : i + chunk])]
    assert chunked + parser.flush() == parse_all(stream)


@settings(deadline=None)
@given(st.lists(st.tuples(garbage, valid_frames()), max_size=5), garbage)
def test_garbage_between_frames_never_loses_a_valid_frame(
    pairs: list[tuple[bytes, tuple[bytes, dict[str, int], dict[str, str], int | None]]], tail: bytes
) -> None:
    stream = b"".join(g + f[0] for g, f in pairs) + tail
    found = good(parse_all(stream))
    expected = [f[0] for _, f in pairs]
    it = iter(found)
    assert all(any(x == e for x in it) for e in expected), (expected, found)


@settings(deadline=None)
@given(st.binary(max_size=2000))
def test_every_byte_is_kept_and_reported_except_line_breaks(stream: bytes) -> None:
    results = parse_all(stream)
    assert b"".join(r.raw for r in results) == bytes(b for b in stream if b not in b"\r\n")
    assert all(len(r.raw) <= MAX_FRAME_LENGTH for r in results)


def test_noise_before_a_frame_is_reported_as_rejected_bytes() -> None:
    results = FrameParser().feed(b"\x00\xffjunk" + REAL_LINE)
    assert results[0] == RejectedFrame(b"\x00\xffjunk", "noise: bytes outside a frame")
    assert isinstance(results[1], StatusFrame)


def test_truncated_frame_is_rejected_and_next_frame_resyncs() -> None:
    results = FrameParser().feed(REAL_LINE[:40] + REAL_LINE)
    assert isinstance(results[0], RejectedFrame) and "truncated" in results[0].reason
    assert results[0].raw == REAL_LINE[:40]
    assert isinstance(results[1], StatusFrame)


def test_line_break_inside_frame_means_truncation() -> None:
    results = FrameParser().feed(REAL_LINE[:40] + b"\r\n" + REAL_LINE)
    assert isinstance(results[0], RejectedFrame) and "line break" in results[0].reason
    assert isinstance(results[1], StatusFrame)


def test_overlong_frame_is_capped_and_parser_resyncs() -> None:
    results = FrameParser().feed(b"<STAT;MSG=" + b"x" * 2000 + b">" + REAL_LINE)
    assert isinstance(results[0], RejectedFrame) and "longer than" in results[0].reason
    assert len(results[0].raw) == MAX_FRAME_LENGTH
    assert isinstance(results[-1], StatusFrame)


def test_other_frame_types_are_rejected_without_swallowing_the_next() -> None:
    results = FrameParser().feed(b"<BOOT;v=1>" + REAL_LINE)
    assert isinstance(results[0], RejectedFrame) and "<STAT;" in results[0].reason
    assert isinstance(results[-1], StatusFrame)


@pytest.mark.parametrize(
    ("field", "bad", "reason_part"),
    [
        ("STATE", b"9", "STATE=9 outside 0..8"),
        ("STATE", b"-1", "STATE=-1 outside"),
        ("CP", b"6", "CP=6 outside"),
        ("RL", b"2", "RL=2 outside"),
        ("AUTH", b"x", "AUTH=b'x' is not an integer"),
        ("MAX", b"", "MAX=b'' is not an integer"),
        ("MAX", b"81", "MAX=81 outside"),
        ("PB", b"256", "PB=256 outside"),
        ("LOCK", b"2", "LOCK=2 outside"),
        ("STOP", b"+1", "is not an integer"),
    ],
)
def test_an_acted_on_field_out_of_range_or_non_numeric_rejects_the_frame_with_reason(field: str, bad: bytes, reason_part: str) -> None:
    fields = dict(zip(REQUIRED_FIELDS, [0] * len(REQUIRED_FIELDS)))
    line = encode_status_line(fields).replace(f";{field}=0;".encode(), f";{field}=".encode() + bad + b";")
    (result,) = FrameParser().feed(line)
    assert isinstance(result, RejectedFrame)
    assert reason_part in result.reason


@settings(max_examples=60, deadline=None)
@given(valid_frames(), st.sampled_from(ACTED_FIELDS), st.data())
def test_any_corrupted_acted_on_field_is_rejected(
    frame: tuple[bytes, dict[str, int], dict[str, str], int | None], name: str, data: st.DataObject
) -> None:
    _, fields, more, rid = frame
    corrupt = data.draw(unexpected_values(name, ["", "x", "1a", "0x1", "1.0", "١"]))
    raw = encode_status_line({**fields, name: corrupt, **more}, rid)
    results = parse_all(raw)
    assert not good(results)
    assert any(name in r.reason for r in results if isinstance(r, RejectedFrame))


@settings(deadline=None)
@given(valid_frames(), st.sampled_from(ACTED_FIELDS))
def test_missing_acted_on_field_is_rejected(
    frame: tuple[bytes, dict[str, int], dict[str, str], int | None], name: str
) -> None:
    raw, fields, _, _ = frame
    cut = raw.replace(f";{name}={fields[name]};".encode(), b";", 1)
    (result,) = FrameParser().feed(cut)
    assert isinstance(result, RejectedFrame) and name in result.reason


@pytest.mark.parametrize(
    ("field", "bad", "reason"),
    [
        ("PWM", b"267", "PWM=267 outside 0..255"),  # per-mille duty at 16 A (another firmware build)
        ("PWM", b"1023", "PWM=1023 outside 0..255"),  # 10-bit PWM
        ("PP", b"12", "PP=12 outside 0..9"),  # a proximity code this station does not know
        ("MOTOR", b"-1", "MOTOR=-1 outside 0..9"),
        ("CPV", b"3.9", "CPV='3.9' is not an integer"),
        ("CABLE", b" 13", "CABLE=' 13' is not an integer"),
    ],
)
def test_an_informational_field_out_of_range_is_a_warning_not_a_rejection(field: str, bad: bytes, reason: str) -> None:
    at_rest = {k.decode(): int(v) for k, v in (f.split(b"=") for f in REAL_LINE[6:-2].split(b";"))}
    (result,) = FrameParser().feed(encode_status_line({**at_rest, field: bad.decode()}))
    assert isinstance(result, StatusFrame), result
    assert [w.reason for w in result.warnings] == [reason]
    assert result.warnings[0].field == field and result.status.state is ControllerState.IDLE


@settings(max_examples=80, deadline=None)
@given(valid_frames(), st.sampled_from(INFO_FIELDS), st.data())
def test_any_corrupted_informational_field_keeps_the_frame_and_the_acted_on_values(
    frame: tuple[bytes, dict[str, int], dict[str, str], int | None], name: str, data: st.DataObject
) -> None:
    _, fields, more, rid = frame
    corrupt = data.draw(unexpected_values(name, ["", "x", "1a", "0x1", "1.0"]))
    raw = encode_status_line({**fields, name: corrupt, **more}, rid)
    (result,) = [r for r in parse_all(raw) if isinstance(r, StatusFrame)]
    assert [w.field for w in result.warnings] == [name]
    assert str(corrupt)[:20] == result.warnings[0].value
    reference = parse_all(encode_status_line({**fields, **more}, rid))[0]
    assert isinstance(reference, StatusFrame)
    for attribute in ("pilot", "state", "relay_closed", "authorized", "stop_requested", "max_current_a",
                      "locked", "power_board_fault", "extras"):
        assert getattr(result.status, attribute) == getattr(reference.status, attribute)
    if isinstance(corrupt, int) and name == "PWM":
        assert result.status.pwm_duty == corrupt  # kept as sent: informational, shown as it came


@settings(deadline=None)
@given(valid_frames(), st.sampled_from(INFO_FIELDS))
def test_a_missing_informational_field_is_a_warning(
    frame: tuple[bytes, dict[str, int], dict[str, str], int | None], name: str
) -> None:
    raw, fields, _, _ = frame
    cut = raw.replace(f";{name}={fields[name]};".encode(), b";", 1)
    (result,) = FrameParser().feed(cut)
    assert isinstance(result, StatusFrame)
    assert [(w.field, w.reason) for w in result.warnings] == [(name, f"{name} missing")]


@given(valid_frames())
def test_a_frame_within_the_protocol_has_no_warnings(
    frame: tuple[bytes, dict[str, int], dict[str, str], int | None]
) -> None:
    (result,) = FrameParser().feed(frame[0])
    assert isinstance(result, StatusFrame) and result.warnings == ()


def test_duplicate_field_is_rejected() -> None:
    (result,) = FrameParser().feed(REAL_LINE.replace(b"STOP=0;", b"STOP=0;STATE=5;"))
    assert isinstance(result, RejectedFrame) and "duplicate field STATE" in result.reason


def test_non_integer_request_id_is_rejected() -> None:
    (result,) = FrameParser().feed(REAL_LINE.replace(b"<STAT;", b"<STAT;ID=abc;"))
    assert isinstance(result, RejectedFrame) and "ID=" in result.reason


def test_extra_free_text_fields_are_kept_not_rejected() -> None:
    line = REAL_LINE.replace(b"STOP=0;", b"STOP=0;WARNING=temp high 71C;MSG=fw=2.3.1 ok;")
    (result,) = FrameParser().feed(line)
    assert isinstance(result, StatusFrame)
    assert result.status.extras == {"WARNING": "temp high 71C", "MSG": "fw=2.3.1 ok"}


def test_request_id_is_reported_when_echoed() -> None:
    (result,) = FrameParser().feed(REAL_LINE.replace(b"<STAT;", b"<STAT;ID=42;"))
    assert isinstance(result, StatusFrame) and result.request_id == 42


def test_flush_reports_an_unfinished_tail() -> None:
    parser = FrameParser()
    assert parser.feed(REAL_LINE[:20]) == []
    (tail,) = parser.flush()
    assert tail.raw == REAL_LINE[:20] and "unfinished" in tail.reason


# --------------------------------------------------------------------------- commands


def test_every_allowed_command_encodes_to_its_exact_bytes() -> None:
    assert encode_status_request() == bytes.fromhex("41002C0010")
    assert encode_authorize() == bytes.fromhex("41012C0110")
    assert encode_stop() == bytes.fromhex("41042C0710")
    for amps in range(6, 33):
        assert encode_set_max_current(amps) == bytes((0x41, 0x02, 0x2C, amps, 0x10))


@pytest.mark.parametrize("amps", [5, 33, 0, -6, 255, 256, True, False, 16.0, "16", None, 6.5])
def test_set_max_current_refuses_anything_but_an_int_6_to_32(amps: object) -> None:
    with pytest.raises(ValueError):
        encode_set_max_current(amps)  # type: ignore[arg-type]


def test_command_parser_reads_16_amps_whose_value_equals_the_footer() -> None:
    frames = CommandParser().feed(bytes.fromhex("41022C1010") + bytes.fromhex("41002C0010"))
    assert frames == [
        Command(CommandCode.SET_MAX_CURRENT, 16, bytes.fromhex("41022C1010")),
        Command(CommandCode.STATUS, 0, bytes.fromhex("41002C0010")),
    ]


command_frames = st.sampled_from([encode_status_request(), encode_authorize(), encode_stop()]) | st.integers(
    6, 32
).map(encode_set_max_current)


@settings(deadline=None)
@given(st.lists(command_frames, max_size=8), st.data())
def test_command_stream_parses_identically_however_it_is_split(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser = CommandParser()
    out: list[Command | RejectedCommand] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        out += parser.feed(stream[a:b])
    assert [c.raw for c in out] == frames
    assert all(isinstance(c, Command) for c in out)


@given(st.binary(max_size=12).filter(lambda b: 0x41 not in b), command_frames)
def test_command_parser_resyncs_after_a_bad_header(noise: bytes, frame: bytes) -> None:
    out = CommandParser().feed(noise + frame)
    assert isinstance(out[-1], Command) and out[-1].raw == frame
    if noise:
        assert isinstance(out[0], RejectedCommand) and out[0].raw == noise


def test_command_parser_resyncs_when_a_header_byte_is_not_a_frame() -> None:
    out = CommandParser().feed(b"\x41\x41\x01\x2c\x01\x10")
    assert out == [RejectedCommand(b"\x41", "bytes outside a command frame"),
                   Command(CommandCode.AUTHORIZE, 1, bytes.fromhex("41012C0110"))]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("41032C0010", "unknown command 0x03"),
        ("41022C0510", "max current 5 A"),
        ("41022C2110", "max current 33 A"),
        ("41012C0010", "AUTHORIZE with value 0x00"),
        ("41042C0110", "STOP with value 0x01"),
    ],
)
def test_command_parser_rejects_commands_the_firmware_does_not_know(raw: str, reason: str) -> None:
    (out,) = CommandParser().feed(bytes.fromhex(raw))
    assert isinstance(out, RejectedCommand) and reason in out.reason
