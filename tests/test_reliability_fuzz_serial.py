"""Fuzzing the ESP32 status parser with mutated frame streams (hypothesis).

What the station relies on when the serial line is noisy, whatever the noise:
no exception escapes the parser, every byte is accounted for, the split into reads
does not matter, an intact frame is never lost next to a corrupted one, and an
accepted frame always holds in-range values. `make test` feeds a few thousand
frames; `make soak` feeds 100k.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest

from station.controller.protocol import (
    FIELD_RANGES,
    CommandParser,
    FrameParser,
    RejectedFrame,
    StatusFrame,
    encode_status_line,
    parse_status_line,
    status_fields,
)
from tests.reliability import record

FRAMES_PER_EXAMPLE = 8
BOUNDED_EXAMPLES = 250
SOAK_EXAMPLES = 100_000 // FRAMES_PER_EXAMPLE + 1

frame_fields = st.fixed_dictionaries({name: st.integers(lo, hi) for name, (lo, hi) in FIELD_RANGES.items()})


@st.composite
def mutated(draw: st.DrawFn, frame: bytes) -> bytes:
    """One to three byte-level mutations: flip, delete, insert, duplicate a slice, truncate."""
    data = bytearray(frame)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "delete", "insert", "dup", "truncate", "special"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del data[i]
        elif op == "insert":
            data.insert(i, draw(st.integers(0, 255)))
        elif op == "dup":
            j = draw(st.integers(i, min(len(data), i + 12)))
            data[i:i] = data[i:j]
        elif op == "truncate":
            del data[i:]
        else:
            data.insert(i, draw(st.sampled_from(b"<>;=\r\n-0")))
    return bytes(data)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[int]]:
    """A line of frames, some intact, some mutated, some plain noise; plus random read boundaries."""
    intact: list[bytes] = []
    parts: list[bytes] = []
    for _ in range(FRAMES_PER_EXAMPLE):
        frame = encode_status_line(draw(frame_fields))
        kind = draw(st.sampled_from(["intact", "mutated", "mutated", "noise"]))
        if kind == "intact":
            intact.append(frame)
            parts.append(frame + draw(st.sampled_from([b"", b"\r\n", b"\n"])))
        elif kind == "mutated":
            parts.append(draw(mutated(frame)))
        else:
            parts.append(draw(st.binary(max_size=40)))
    stream = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    return stream, intact, cuts


def _feed(chunks: list[bytes]) -> list[StatusFrame | RejectedFrame]:
    parser = FrameParser()
    out: list[StatusFrame | RejectedFrame] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    out.extend(parser.flush())
    return out


def _key(result: StatusFrame | RejectedFrame) -> tuple[object, ...]:
    if isinstance(result, StatusFrame):
        return ("ok", result.raw, result.status, result.request_id)
    return ("rejected", result.raw, result.reason)


def check_stream(stream: bytes, intact: list[bytes], cuts: list[int]) -> None:
    whole = _feed([stream])
    bounds = [0, *cuts, len(stream)]
    split = _feed([stream[a:b] for a, b in zip(bounds, bounds[1:])])
    # The read boundaries never change the outcome.
    assert [_key(r) for r in split] == [_key(r) for r in whole]
    # Every byte is reported (as a frame or as rejected bytes) except line breaks.
    assert sum(len(r.raw) for r in whole) == len(stream) - stream.count(b"\r") - stream.count(b"\n")
    accepted = [r for r in whole if isinstance(r, StatusFrame)]
    # An intact frame survives whatever corruption surrounds it, in order.
    it = iter(r.raw for r in accepted)
    assert all(any(raw == frame for raw in it) for frame in intact)
    # Whatever is accepted is a well-formed frame with every value in range: it re-encodes to itself.
    for frame in accepted:
        again = parse_status_line(encode_status_line(status_fields(frame.status)))
        assert isinstance(again, StatusFrame) and again.status == frame.status


def _fuzz(examples: int) -> None:
    counted = {"frames": 0, "rejected": 0}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(streams())
    def run(case: tuple[bytes, list[bytes], list[int]]) -> None:
        check_stream(*case)
        counted["frames"] += FRAMES_PER_EXAMPLE
        counted["rejected"] += FRAMES_PER_EXAMPLE - len(case[1])

    run()
    record("serial fuzz", trials=counted["frames"], faults=counted["rejected"], events_checked=counted["frames"])


def test_mutated_status_streams_never_raise_lose_intact_frames_or_accept_bad_values() -> None:
    _fuzz(BOUNDED_EXAMPLES)


@pytest.mark.slow
def test_soak_100k_mutated_status_frames() -> None:
    _fuzz(SOAK_EXAMPLES)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_command_parser_survives_arbitrary_bytes_in_any_split(data: bytes, sizes: list[int]) -> None:
    """The simulator's side of the line: raw noise never raises and parses the same however it arrives."""
    whole = CommandParser().feed(data)
    parser, pieces, i, k = CommandParser(), [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        pieces.extend(parser.feed(data[i:i + n]))
        i, k = i + n, k + 1
    assert [getattr(p, "code", None) for p in pieces if hasattr(p, "code")] == \
        [getattr(p, "code", None) for p in whole if hasattr(p, "code")]
