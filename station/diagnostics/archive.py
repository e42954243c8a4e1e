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
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from station import __version__
from station.logs import mask_tokens
from station.storage import safefile

DIAGNOSTICS = "DiagnosticsLog"
SECURITY = "SecurityLog"
JOURNAL_UNITS = ("station", "station-api")
JOURNAL_TIMEOUT_S = 60.0
MAX_LOG_BYTES = 32 * 1024 * 1024
"""A station log larger than this in the window is cut (newest lines kept are not guaranteed: oldest first)."""
_SECRET_WORDS = ("password", "token", "secret", "authorization", "private_key", "privatekey", "authorizationkey")
_LOG_STAMP = re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d(?:\.\d+)?)")

SecurityLines = Callable[[datetime | None, datetime | None], Iterable[str]]

READ_CAP_BYTES = 64 * 1024 * 1024
"""At most this much of one log file or recorder segment is read. The daemon's own are far smaller
(the log rotates at 10 MiB, a recorder segment at 2 MiB); a bigger one was put there by someone
else (the daemon's user, for `sudo station report`), and is read only this far."""
LINE_CAP_BYTES = 2 * 1024 * 1024
"""A longer line (a logged frame is at most 1 MiB) is cut here and the rest of it skipped, so no
line, not even a planted file of zeros without a newline, is ever held whole in memory."""


def bounded_lines(raw: BinaryIO, cap: int = READ_CAP_BYTES, line_cap: int = LINE_CAP_BYTES) -> Iterator[str]:
    """The lines of the first `cap` bytes of `raw`, decoded as UTF-8 (errors replaced); a line
    longer than `line_cap` is cut there and ends with the newline it was cut at."""
    left = cap
    while left > 0:
        chunk = raw.readline(min(line_cap, left))
        if not chunk:
            return
        left -= len(chunk)
        if len(chunk) == line_cap and not chunk.endswith(b"\n"):
            while left > 0:  # skip the rest of the over-long line
                rest = raw.readline(min(line_cap, left))
                left -= len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            chunk += b"\n"
        yield chunk.decode("utf-8", errors="replace")


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
    goes with the line before it. The rotated predecessor (``.1``) is read first.

    `sudo station report` reads the daemon's log as root, in a directory the daemon's user
    writes: a name there that is a link, a FIFO or a hard link is skipped, never followed."""
    low = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if since else ""
    high = until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.999999") if until else "~"
    keep = False
    try:
        directory = safefile.open_dir(path.parent)
    except OSError:
        return
    with directory:
        for name in (path.name + ".1", path.name):
            try:
                raw = directory.open_read(name, limit=None)
            except OSError:
                continue
            with raw:
                for line in bounded_lines(raw):
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
    """Text collected into a nameless scratch file in the target directory, then added to the tar."""

    def __init__(self, directory: safefile.SafeDir, name: str) -> None:
        self.name = name
        self.handle = directory.scratch()
        self.size = 0
        self.cut = False

    def write_lines(self, lines: Iterable[str], mask: Callable[[str], str], limit: int = MAX_LOG_BYTES) -> None:
        for line in lines:
            data = mask(line if line.endswith("\n") else line + "\n").encode("utf-8", errors="replace")
            if self.size + len(data) > limit:
                self.cut = True
                data = b"(cut: member larger than the archive allows)\n"
                self.handle.write(data)
                self.size += len(data)
                break
            self.handle.write(data)
            self.size += len(data)

    def close(self) -> None:
        self.handle.close()


def build(target_dir: Path, sources: Sources, *, log_type: str = DIAGNOSTICS, since: datetime | None = None,
          until: datetime | None = None, now: datetime | None = None, name: str | None = None,
          create_dir: bool = True) -> Built:
    """Write the archive into ``target_dir``; returns where, how large, how long it took.

    ``create_dir`` False: a missing ``target_dir`` is an error (FileNotFoundError), never created.
    Everything goes through `station.storage.safefile` (run as root by `sudo station report`, the
    directory may be another user's): members are nameless scratch files, the archive a fresh file
    under an unpredictable name renamed into place, never a planted link written through."""
    import tarfile  # only when an archive is built

    started = time.perf_counter()
    now = now or datetime.now(UTC)
    name = name or archive_name(sources.station_id, log_type, now)
    base = name.removesuffix(".tar.gz")
    mask = sources.mask
    members: list[_Member] = []
    manifest: dict[str, Any] = {
        "station_id": sources.station_id, "software_version": __version__, "log_type": log_type,
        "created": now.astimezone(UTC).isoformat(), "oldest": since.isoformat() if since else None,
        "latest": until.isoformat() if until else None, "members": {},
    }
    with safefile.open_dir(target_dir, make=0o750 if create_dir else None) as directory:
        try:
            if log_type == SECURITY:
                member = _Member(directory, "security.log")
                members.append(member)
                if sources.security_lines is not None:
                    member.write_lines(sources.security_lines(since, until), mask)
                    manifest["members"]["security.log"] = "the station's local security log"
                else:
                    member.write_lines(["(this station keeps no security log yet)\n"], mask)
                    manifest["members"]["security.log"] = "no security log"
            else:
                origin, lines = station_log_lines(sources, since, until)
                member = _Member(directory, "station.log")
                members.append(member)
                member.write_lines(lines, mask)
                manifest["members"]["station.log"] = f"the station's log lines; source: {origin}"
                for member_name, data, what in (
                    ("config.json", sources.config, "effective configuration, secrets masked"),
                    ("state.json", sources.snapshot, "state snapshot when the archive was built"),
                ):
                    member = _Member(directory, member_name)
                    members.append(member)
                    data = mask_tokens(mask_config(data) if member_name == "config.json" else data)  # drivers' tokens too
                    member.write_lines([json.dumps(data, indent=2, sort_keys=True, default=str)], mask)
                    manifest["members"][member_name] = what
                member = _Member(directory, "flight-recorder.log")
                members.append(member)
                if sources.recorder_lines is not None:
                    member.write_lines(sources.recorder_lines(since.timestamp() if since else None,
                                                              until.timestamp() if until else None), mask)
                    manifest["members"]["flight-recorder.log"] = "raw ESP32 bytes, OCPP frames, meter readings"
                else:
                    member.write_lines(["(flight recorder off)\n"], mask)
                    manifest["members"]["flight-recorder.log"] = "flight recorder off"
            for member in members:
                if member.cut:
                    manifest["members"][member.name] += " (cut at the size limit)"
            with directory.writer(name, mode=0o640) as raw, \
                    tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                data = json.dumps(manifest, indent=2).encode()
                info = tarfile.TarInfo(f"{base}/manifest.json")
                info.size, info.mtime, info.mode = len(data), int(now.timestamp()), 0o644
                tar.addfile(info, io.BytesIO(data))
                for member in members:
                    member.handle.flush()
                    member.handle.seek(0)
                    info = tarfile.TarInfo(f"{base}/{member.name}")
                    info.size, info.mtime, info.mode = member.size, int(now.timestamp()), 0o644
                    tar.addfile(info, member.handle)
        finally:
            for member in members:
                member.close()
        size = directory.lstat(name).st_size  # type: ignore[union-attr]
    sizes = {"manifest.json": len(json.dumps(manifest, indent=2))} | {m.name: m.size for m in members}
    return Built(Path(target_dir) / name, size, time.perf_counter() - started, sizes)
