"""Reading and atomically writing ``KEY=value`` env files (``/etc/ocpp_station.env`` and friends).

The same file is read by systemd (``EnvironmentFile=``) and by python-dotenv (the settings
loader). Their quoting rules differ except for one safe subset: single-quoted values without
quotes, backslashes or control characters. Everything written here uses that subset, so a
password with ``$``, ``#`` or spaces means the same thing to both readers.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class EnvFileError(ValueError):
    """A key or value that cannot be written so both systemd and dotenv read it back intact."""


def read(path: Path) -> dict[str, str]:
    """Values of an env file (missing file → empty); unset (``KEY``-only) lines are dropped."""
    if not path.exists():
        return {}
    return parse(path.read_text(encoding="utf-8"))


def parse(text: str) -> dict[str, str]:
    """Values of an env file's text (root-side tools read the bytes through `station.storage.safefile`)."""
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    return {k: v for k, v in values.items() if v is not None}


def check(key: str, value: str) -> None:
    """Raise :class:`EnvFileError` (naming the key, never the value) if it cannot be stored."""
    if not _KEY.match(key):
        raise EnvFileError(f"{key!r} is not a valid variable name")
    if "'" in value or "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise EnvFileError(f"{key}: value contains a quote, backslash or control character")


def render(values: Mapping[str, str], header: str = "") -> str:
    """File text: optional ``#`` header lines, then ``KEY='value'`` lines in the given order."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in values.items():
        check(key, value)
        lines.append(f"{key}='{value}'")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str, *, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` in one rename: readers see the old or the new file, never a partial one.

    The temporary file gets its final mode before any secret is written into it.
    """
    from station.storage.durable import durable_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    durable_write_text(path, text, mode=mode, owner=owner)  # and durable: the rename survives a power cut


def owner_in_tree(root: Path, user: str) -> tuple[int, int] | None:
    """``(uid, gid)`` of ``user`` from ``root/etc/passwd``; ``None`` if unknown or not root."""
    if os.geteuid() != 0:
        return None
    passwd = root / "etc/passwd"
    if not passwd.exists():
        return None
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user:
            return int(fields[2]), int(fields[3])
    return None
