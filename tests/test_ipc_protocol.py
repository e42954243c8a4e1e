"""The JSON-lines framing: any input line is either a request object or a clean IpcError."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from station.ipc import protocol
from station.ipc.protocol import IpcError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_an_object_or_a_clean_error(line: bytes) -> None:
    try:
        message = protocol.decode(line)
    except IpcError as exc:
        assert exc.code in (protocol.PARSE_ERROR, protocol.INVALID_REQUEST)
    else:
        assert isinstance(message, dict)


@settings(deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_encoding_is_one_line_that_decodes_back(message: dict[str, Any]) -> None:
    line = protocol.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert protocol.decode(line) == message


def test_values_json_cannot_express_are_sent_as_text() -> None:
    from datetime import UTC, datetime
    from pathlib import Path

    line = protocol.encode({"at": datetime(2030, 1, 2, tzinfo=UTC), "path": Path("/run/x.sock")})
    assert protocol.decode(line) == {"at": "2030-01-02 00:00:00+00:00", "path": "/run/x.sock"}
