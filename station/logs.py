"""Logging: JSON lines for journald, readable colour on a terminal, secrets redacted everywhere."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "***"
_SECRET_KEYS = ("password", "token", "secret", "authorization", "private_key")
_secrets: set[str] = set()

TOKEN_KEYS = frozenset({
    "id_token", "idtoken", "idtag", "id_tag", "parentidtag", "parent_id_tag", "groupidtoken", "group_id_token",
    "group_id", "additionalidtoken",
})
"""Keys (lower-cased) whose values are drivers' tokens, in the core's JSON and in OCPP payloads."""
TOKEN_HINTS = ("idtoken", "idtag", "id_token", "group_id")
"""Every TOKEN_KEYS name contains one of these: a text without them holds no token field."""
_show_tokens = False


def show_tokens(show: bool) -> None:
    """STATION_LOG_DRIVER_TOKENS: let drivers' tokens into log lines (debugging only; never API/IPC answers)."""
    global _show_tokens
    _show_tokens = bool(show)


def tokens_shown() -> bool:
    return _show_tokens


def mask_token(token: Any) -> Any:
    """A driver token (an RFID UID is enough to clone a card) as its last 4 characters: `****0042`.

    Idempotent, so a value masked by the daemon is unchanged when the API masks it again.
    """
    if not isinstance(token, str):
        return token
    return "****" + token[-4:] if len(token) > 4 else "****"


def mask_tokens(value: Any) -> Any:
    """A copy of `value` with every driver token masked (dicts and lists walked; other values as they are)."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in TOKEN_KEYS:
                out[key] = mask_token(item) if isinstance(item, str) else mask_tokens(item)
            else:
                out[key] = mask_tokens(item)
        return out
    if isinstance(value, list):
        return [mask_tokens(v) for v in value]
    if isinstance(value, tuple):
        return tuple(mask_tokens(v) for v in value)
    return value


def may_hold_token(text: str) -> bool:
    low = text.lower()
    return any(hint in low for hint in TOKEN_HINTS)


def register_secrets(values: Iterable[str]) -> None:
    """Values that must never reach a log line, whatever field they hide in."""
    _secrets.update(v for v in values if v and len(v) >= 3)


def redact_text(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret_key(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact(v) for v in value)
    return value


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and _secret_name(key)


@functools.lru_cache(maxsize=1024)
def _secret_name(key: str) -> bool:
    """Field names repeat on every line: classified once each (a few µs per log line otherwise)."""
    return any(word in key.lower() for word in _SECRET_KEYS)


@functools.lru_cache(maxsize=1024)
def _token_name(key: str) -> bool:
    return key.lower() in TOKEN_KEYS and not _secret_name(key)


def redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if not _show_tokens and _token_name(key):  # idTag=...
            event_dict[key] = mask_tokens(value) if not isinstance(value, str) else mask_token(value)
            continue
        if not _show_tokens and isinstance(value, (dict, list, tuple)):
            value = mask_tokens(value)
        if _is_secret_key(key) and value is not None:
            event_dict[key] = REDACTED
        elif not isinstance(value, (int, float, bool)) and value is not None:
            event_dict[key] = _redact(value if isinstance(value, (str, dict, list, tuple)) else str(value))
    return event_dict


def _final_redaction(_: Any, __: str, rendered: str) -> str:
    """Last line of defence: tracebacks and reprs rendered after the per-field pass."""
    return redact_text(rendered)


LOG_FILE_BYTES = 10 * 1024 * 1024


class RotatingFile:
    """A log file for hosts without journald: at ``limit`` bytes it becomes ``<name>.1`` (the
    previous ``.1`` is dropped), so it never fills the disk. Line-buffered, like stderr."""

    def __init__(self, path: Path, limit: int = LOG_FILE_BYTES) -> None:
        self.path = Path(path)
        self.limit = limit
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A log, not state: no fsync per line (it would cost the SD card a write per log line); a
        # power cut may lose the last unsynced lines, which is accepted (issue 23).
        self._handle = self.path.open("a", encoding="utf-8", buffering=1)
        self._size = self._handle.tell()

    def write(self, text: str) -> int:
        written = self._handle.write(text)
        self._size += len(text)
        if self._size >= self.limit:
            self._rotate()
        return written

    def _rotate(self) -> None:
        self._handle.close()
        try:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except OSError:
            pass
        self._handle = self.path.open("a", encoding="utf-8", buffering=1)
        self._size = self._handle.tell()

    def flush(self) -> None:
        self._handle.flush()

    def isatty(self) -> bool:
        return False


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None, *,
              driver_tokens: bool = False) -> None:
    """Set up structlog (and stdlib logging of libraries) to write to `stream` (stderr by default).

    `driver_tokens` (STATION_LOG_DRIVER_TOKENS) shows drivers' tokens in log lines; masked otherwise.
    """
    show_tokens(driver_tokens)
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    tail: list[Any] = (
        []
        if use_console
        else [structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))]
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            *tail,
            redact_processor,
            renderer,
            _final_redaction,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries (websockets, pymodbus, uvicorn) log through stdlib: same format, same redaction.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                redact_processor,
                renderer,
                _final_redaction,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    # pymodbus logs an ERROR for every timed-out poll; the meter client counts and reports those itself.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)
