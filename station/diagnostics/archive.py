"""The diagnostics archive: one tar.gz a technician or the operator can read without the station.

Members (under one directory named like the archive):

- ``manifest.json`` — station, software version, log type, time window, what each member holds;
- ``station.log`` — the station's own log lines in the window: journald for its units on a
  device (``journalctl -u station -u station-api``), its log file (``STATION_LOG_FILE``) elsewhere;
- ``config.json`` — the effective configuration, secrets masked;
- ``state.json`` — a state snapshot (connectors, transactions, outbox, CSMS link, ESP32, meter);
- ``flight-recorder.log`` — raw ESP32 bytes, OCPP frames and meter readings in the window;
- ``security.log`` — the local security log (GetLog SecurityLog: this member and the manifest only).

Building is synchronous file work (compression): the daemon runs it in a worker thread so the
event loop keeps serving the charger. Every text member passes through ``mask`` (the configured
password and token are replaced wherever they hide) on top of the masking done at the source.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from station import __version__
from station.logs import mask_tokens

DIAGNOSTICS = "DiagnosticsLog"
SECURITY = "SecurityLog"
JOURNAL_UNITS = ("station", "station-api")
JOURNAL_TIMEOUT_S = 60.0
MAX_LOG_BYTES = 32 * 1024 * 1024
"""A station log larger than this in the window is cut (newest lines kept are not guaranteed: oldest first)."""
_SECRET_WORDS = ("password", "token", "secret", "authorization", "private_key", "privatekey", "authorizationkey")
_LOG_STAMP = re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d(?:\.\d+)?)")

SecurityLines = Callable[[datetime | None, datetime | None], Iterable[str]]


@dataclass
class Sources:
    """Where an archive's members come from (the daemon and `station report` fill it differently)."""

    station_id: str
    config: dict[str, Any]
    snapshot: dict[str, Any]
    recorder_lines: Callable[[float | None, float | None], Iterable[str]] | None = None
    log_file: Path | None = None
    journal: bool | None = None
    """None: use journald when this machine has it and no log file is configured."""
    security_lines: SecurityLines | None = None
    mask: Callable[[str], str] = field(default=lambda text: text)


@dataclass(frozen=True)
class Built:
    path: Path
    size_bytes: int
    seconds: float
    members: dict[str, int]
    """Member name → uncompressed bytes."""


def archive_name(station_id: str, log_type: str, when: datetime) -> str:
    kind = "security" if log_type == SECURITY else "diagnostics"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", station_id)[:64]
    return f"{safe}-{kind}-{when.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.tar.gz"


# ---------------------------------------------------------------------------------- members
def mask_config(values: dict[str, Any]) -> dict[str, Any]:
    """A configuration dump fit to leave the station: secret-named keys and secret values masked,
    URLs without user info or query."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if hasattr(value, "get_secret_value"):
            out[key] = "***" if value else ""
        elif any(word in key.lower() for word in _SECRET_WORDS):
            out[key] = "***" if value not in (None, "") else value
        elif isinstance(value, dict):
            out[key] = mask_config(value)
        elif isinstance(value, (list, tuple)):
            out[key] = [next(iter(mask_config({key: item}).values())) for item in value]
        elif isinstance(value, str) and "://" in value:
            out[key] = public_location(value)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        else:
            out[key] = str(value)
    return out


def public_location(url: str) -> str:
    """``scheme://host[:port]/path`` of a URL: no user info, no query (pre-signed tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def journal_available() -> bool:
    return shutil.which("journalctl") is not None and Path("/run/systemd/journal").exists()


def _journal_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def journal_lines(since: datetime | None, until: datetime | None) -> Iterator[str]:
    """The station's units' journal in the window (``-o short-iso``)."""
    command = ["journalctl", "--no-pager", "-o", "short-iso"]
    for unit in JOURNAL_UNITS:
        command += ["-u", unit]
    if since is not None:
        command += ["--since", _journal_time(since)]
    if until is not None:
        command += ["--until", _journal_time(until)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=JOURNAL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        yield f"(journalctl failed: {exc.__class__.__name__})\n"
        return
    if done.returncode != 0:
        yield f"(journalctl exit {done.returncode}: {done.stderr.decode(errors='replace').strip()[:200]})\n"
    yield from io.StringIO(done.stdout.decode("utf-8", errors="replace"))


def file_lines(path: Path, since: datetime | None, until: datetime | None) -> Iterator[str]:
    """Lines of a log file whose time stamp is in the window; a line without one (a traceback's)
    goes with the line before it. The rotated predecessor (``.1``) is read first."""
    low = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if since else ""
    high = until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.999999") if until else "~"
    keep = False
    for candidate in (path.with_name(path.name + ".1"), path):
        try:
            handle = candidate.open(encoding="utf-8", errors="replace")
        except OSError:
            continue
        with handle:
            for line in handle:
                match = _LOG_STAMP.search(line, 0, 200)
                if match:
                    stamp = f"{match.group(1)}T{match.group(2)}"
                    keep = low <= stamp <= high
                if keep:
                    yield line


def station_log_lines(sources: Sources, since: datetime | None, until: datetime | None) -> tuple[str, Iterable[str]]:
    """(where the lines come from, the lines)."""
    if sources.log_file is not None and (sources.journal is not True):
        return f"file {sources.log_file}", file_lines(sources.log_file, since, until)
    use_journal = journal_available() if sources.journal is None else sources.journal
    if use_journal:
        return f"journald units {', '.join(JOURNAL_UNITS)}", journal_lines(since, until)
    return "none (no STATION_LOG_FILE and no journald on this machine)", ()


# ---------------------------------------------------------------------------------- building
class _Member:
    """Text collected into memory-bounded chunks on a temp file, then added to the tar."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.path = directory / f".{name}.part"
        self.handle = self.path.open("w", encoding="utf-8", newline="\n")
        self.size = 0
        self.cut = False

    def write_lines(self, lines: Iterable[str], mask: Callable[[str], str], limit: int = MAX_LOG_BYTES) -> None:
        for line in lines:
            text = mask(line if line.endswith("\n") else line + "\n")
            if self.size + len(text) > limit:
                self.cut = True
                self.handle.write("(cut: member larger than the archive allows)\n")
                break
            self.handle.write(text)
            self.size += len(text)

    def close(self) -> None:
        self.handle.close()


def build(target_dir: Path, sources: Sources, *, log_type: str = DIAGNOSTICS, since: datetime | None = None,
          until: datetime | None = None, now: datetime | None = None, name: str | None = None) -> Built:
    """Write the archive into ``target_dir``; returns where, how large, how long it took."""
    import tarfile  # only when an archive is built

    started = time.perf_counter()
    now = now or datetime.now(UTC)
    name = name or archive_name(sources.station_id, log_type, now)
    base = name.removesuffix(".tar.gz")
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    mask = sources.mask
    members: list[_Member] = []
    manifest: dict[str, Any] = {
        "station_id": sources.station_id, "software_version": __version__, "log_type": log_type,
        "created": now.astimezone(UTC).isoformat(), "oldest": since.isoformat() if since else None,
        "latest": until.isoformat() if until else None, "members": {},
    }
    try:
        if log_type == SECURITY:
            member = _Member(target_dir, "security.log")
            members.append(member)
            if sources.security_lines is not None:
                member.write_lines(sources.security_lines(since, until), mask)
                manifest["members"]["security.log"] = "the station's local security log"
            else:
                member.write_lines(["(this station keeps no security log yet)\n"], mask)
                manifest["members"]["security.log"] = "no security log"
        else:
            origin, lines = station_log_lines(sources, since, until)
            member = _Member(target_dir, "station.log")
            members.append(member)
            member.write_lines(lines, mask)
            manifest["members"]["station.log"] = f"the station's log lines; source: {origin}"
            for member_name, data, what in (
                ("config.json", sources.config, "effective configuration, secrets masked"),
                ("state.json", sources.snapshot, "state snapshot when the archive was built"),
            ):
                member = _Member(target_dir, member_name)
                members.append(member)
                data = mask_tokens(mask_config(data) if member_name == "config.json" else data)  # drivers' tokens too
                member.write_lines([json.dumps(data, indent=2, sort_keys=True, default=str)], mask)
                manifest["members"][member_name] = what
            member = _Member(target_dir, "flight-recorder.log")
            members.append(member)
            if sources.recorder_lines is not None:
                member.write_lines(sources.recorder_lines(since.timestamp() if since else None,
                                                          until.timestamp() if until else None), mask)
                manifest["members"]["flight-recorder.log"] = "raw ESP32 bytes, OCPP frames, meter readings"
            else:
                member.write_lines(["(flight recorder off)\n"], mask)
                manifest["members"]["flight-recorder.log"] = "flight recorder off"
        for member in members:
            member.close()
            if member.cut:
                manifest["members"][member.name] += " (cut at the size limit)"
        path = target_dir / name
        tmp = target_dir / f".{name}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with open(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(f"{base}/manifest.json")
            info.size, info.mtime, info.mode = len(data), int(now.timestamp()), 0o644
            tar.addfile(info, io.BytesIO(data))
            for member in members:
                info = tar.gettarinfo(str(member.path), arcname=f"{base}/{member.name}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with member.path.open("rb") as handle:
                    tar.addfile(info, handle)
        os.replace(tmp, path)
    finally:
        for member in members:
            if not member.handle.closed:
                member.handle.close()
            member.path.unlink(missing_ok=True)
        (target_dir / f".{name}.part").unlink(missing_ok=True)
    sizes = {"manifest.json": len(json.dumps(manifest, indent=2))} | {m.name: m.size for m in members}
    return Built(path, path.stat().st_size, time.perf_counter() - started, sizes)
