"""Wire format of the daemon's Unix socket: one JSON object per line, UTF-8.

Request  `{"id": 1, "method": "status", "params": {}}`
Response `{"id": 1, "result": ...}` or `{"id": 1, "error": {"code": "not_found", "message": "..."}}`
After a successful `subscribe`, every further line from the daemon is one event
(`Event.to_json()`: `{"kind", "at", "data"}`) until either side closes.

Error codes are short strings so that a client (the API) can map them to HTTP
statuses without parsing messages.
"""

from __future__ import annotations

import json
from typing import Any, Final

MAX_REQUEST_BYTES: Final = 64 * 1024
"""Longest request line the daemon reads; a longer one closes that connection."""
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
"""Longest line a client accepts (a status with many connectors stays far below)."""

PARSE_ERROR: Final = "parse_error"
INVALID_REQUEST: Final = "invalid_request"
METHOD_NOT_FOUND: Final = "method_not_found"
INVALID_PARAMS: Final = "invalid_params"
NOT_FOUND: Final = "not_found"
REJECTED: Final = "rejected"
UNAVAILABLE: Final = "unavailable"
INTERNAL: Final = "internal"
TOO_MANY: Final = "too_many_connections"


class IpcError(Exception):
    """An error answer from the daemon (or a request the server refuses); `code` is one of the constants."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def encode(message: dict[str, Any]) -> bytes:
    """One line; `default=str` so that datetimes and paths in status never break an answer."""
    return json.dumps(message, separators=(",", ":"), default=str, ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise IpcError(PARSE_ERROR, f"not a JSON line: {exc}") from None
    if not isinstance(message, dict):
        raise IpcError(INVALID_REQUEST, "expected a JSON object")
    return message
