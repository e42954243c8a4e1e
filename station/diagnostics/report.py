"""`station report`: the GetLog archive, written locally for a technician.

    station report [--out PATH] [--since 2h|ISO] [--until ISO] [--security]

With the daemon running, it asks the daemon (IPC ``diagnostics``) for the masked configuration,
a state snapshot and the security log, and the daemon flushes its flight recorder first.
Without the daemon it still writes an archive: configuration from the env file, a snapshot of
what the state database holds, the flight recorder and the log as they are on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from station import exitcodes
from station.diagnostics import archive
from station.storage import safefile

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_SINCE = "24h"


def parse_when(text: str, now: datetime) -> datetime:
    """``2h`` / ``30m`` / ``1d`` ago, or an ISO 8601 time (UTC when it names no zone)."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration like 2h nor an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None,
                        help="archive file or directory to write into (default: the current directory)")
    parser.add_argument("--since", default=DEFAULT_SINCE, help="oldest time: a duration like 2h, 30m, 1d or an "
                        "ISO 8601 time (default %(default)s); 'all' for everything kept")
    parser.add_argument("--until", default=None, help="latest time (ISO 8601; default now)")
    parser.add_argument("--security", action="store_true", help="the security log instead of the diagnostics archive")


DB_COPY_LIMIT = 256 * 1024 * 1024
"""Offline, the state database (and its WAL or journal) is copied before SQLite reads it; a larger file is not read."""
_DB_COMPANIONS = ("-wal", "-journal")
DB_QUERY_STEPS = 200_000_000
"""SQLite virtual-machine steps one offline query may take (the daemon's own database needs a tiny
fraction); the station user can plant a database whose view or table name loops for ever."""
_PROGRESS_EVERY = 10_000


@contextlib.contextmanager
def _database_copy(db: Path) -> Iterator[Any]:
    """A connection to a private copy of the state database, its WAL or rollback journal included.

    `sudo station report` runs as root and the database lies in the daemon user's directory. SQLite
    opens a database's companions (-journal, -wal, -shm) there by name, so a FIFO planted as
    `station.db-journal` hung root, and root created `-shm` files there. So the files are copied
    through descriptors safefile opened (regular, one link, at most DB_COPY_LIMIT bytes) into a
    directory of root's own (mkdtemp, 0700), and SQLite opens only the copy. OSError: not copied."""
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory(prefix="station-report-") as private:
        with safefile.open_dir(db.parent) as source, safefile.open_dir(private) as target:
            for name in (db.name, *(db.name + suffix for suffix in _DB_COMPANIONS)):
                if name != db.name and source.lstat(name) is None:
                    continue
                with source.open_read(name, DB_COPY_LIMIT) as src:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                 dir_fd=target.fd)
                    with os.fdopen(fd, "wb") as out:
                        copied = 0
                        while chunk := src.read(1024 * 1024):
                            copied += len(chunk)
                            if copied > DB_COPY_LIMIT:
                                raise safefile.UnsafeFile(f"{name} grew beyond {DB_COPY_LIMIT} bytes")
                            out.write(chunk)
        connection = sqlite3.connect(os.path.join(private, db.name), timeout=2)
        # The copy is the station user's work: its schema may hold views and names written to
        # loop or to call functions. Read it as untrusted, and end any query after a step budget.
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("PRAGMA query_only = ON")
        steps = [0]

        def over_budget() -> bool:
            steps[0] += _PROGRESS_EVERY
            return steps[0] > DB_QUERY_STEPS

        connection.set_progress_handler(over_budget, _PROGRESS_EVERY)
        try:
            yield connection
        finally:
            connection.close()


def _offline_snapshot(settings: Any) -> dict[str, Any]:
    """What the state database says when no daemon answers (a private copy of it is read)."""
    import sqlite3

    snapshot: dict[str, Any] = {"daemon": "not running (or its socket is not reachable)"}
    db = Path(settings.db_path)
    if not db.exists():
        snapshot["store"] = f"{db} does not exist"
        return snapshot
    try:
        with _database_copy(db) as connection:
            tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            snapshot["store"] = {t: connection.execute(f'SELECT COUNT(*) FROM "{t.replace(chr(34), chr(34) * 2)}"').fetchone()[0]
                                 for t in tables}
    except OSError as exc:
        snapshot["store"] = f"{db} (or its WAL/journal) is not a plain file: not read ({exc.strerror or exc})"
    except sqlite3.Error as exc:
        snapshot["store"] = f"unreadable: {exc.__class__.__name__}"
    return snapshot


def _offline_security(settings: Any, since: datetime | None, until: datetime | None) -> list[str] | None:
    """The security log as the state database holds it (times as stamped: the daemon corrects
    those taken before its clock was trusted; without it they are shown as recorded)."""
    import sqlite3

    try:
        with _database_copy(Path(settings.db_path)) as connection:
            rows = connection.execute("SELECT wall, type, tech_info, critical FROM security_log ORDER BY id").fetchall()
    except (OSError, sqlite3.Error):
        return None
    lines = []
    for wall, kind, info, critical in rows:
        try:
            at = datetime.fromisoformat(wall)
        except ValueError:
            continue
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        if (since is None or at >= since) and (until is None or at <= until):
            stamp = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            lines.append(f"{stamp} {kind}{' critical' if critical else ''}{' ' + info if info else ''} (uncorrected)")
    return lines


def recorder_lines(directory: Path, since: float | None, until: float | None) -> Iterator[str]:
    """The flight recorder's lines in the window, read as `recorder.read_lines` does but safely: run as
    root, the ring is in the daemon user's directory, so a segment that is a link, a FIFO or a hard
    link (or a linked ring directory) is skipped, never followed."""
    from station.diagnostics.recorder import SEGMENT_NAME, lines_in_window

    try:
        ring = safefile.open_dir(directory)
    except OSError:
        return
    with ring:
        for name in sorted(n for n in ring.listdir() if SEGMENT_NAME.match(n)):
            try:
                raw = ring.open_read(name, limit=None)
            except OSError:
                continue
            with raw:
                if since is not None and os.fstat(raw.fileno()).st_mtime < since - 1:
                    continue  # last written before the window opened
                yield from lines_in_window(archive.bounded_lines(raw), since, until)


def _recorder_dir(settings: Any, answered: object) -> Path:
    """The ring of the configured state directory. A directory the daemon names over IPC is never
    taken: the daemon's user could make it name any directory root can read."""
    configured = Path(settings.state_dir) / "flight-recorder"
    if answered and Path(str(answered)) != configured:
        print(f"station report: ignoring the recorder directory the daemon named ({answered}); "
              f"reading {configured}", file=sys.stderr)
    return configured


def output_place(out: str | None) -> tuple[Path, str | None]:
    """(existing directory, archive name or None for the default) for ``--out``; ValueError saying why
    not. A missing directory is never created: `sudo station report` must not make directories."""
    path = Path(out) if out else Path.cwd()
    if not out or out.endswith("/") or path.is_dir():
        directory, name = path, None
    else:
        directory, name = path.parent, path.name
    if not directory.is_dir():
        raise ValueError(f"--out: directory {directory} does not exist (create it first)")
    return directory, name


async def _from_daemon(socket: Path, since: datetime | None, until: datetime | None) -> dict[str, Any] | None:
    from station.ipc.client import DaemonUnavailable, IpcClient
    from station.ipc.protocol import IpcError

    try:
        async with IpcClient(socket, timeout=10) as client:
            return await client.call("diagnostics", {"since": since.isoformat() if since else None,
                                                     "until": until.isoformat() if until else None})
    except (DaemonUnavailable, IpcError, OSError, TimeoutError) as exc:
        detail = exc if isinstance(exc, DaemonUnavailable) else f"{socket}: {exc}"  # the former names the socket
        print(f"station report: daemon not reachable: {detail}; archiving what is on disk", file=sys.stderr)
        return None


def run(args: argparse.Namespace, settings: Any, settings_values: dict[str, Any]) -> int:
    from station import logs

    logs.register_secrets(settings.secrets())
    now = datetime.now(UTC)
    try:
        since = None if args.since in (None, "", "all") else parse_when(args.since, now)
        until = parse_when(args.until, now) if args.until else None
    except ValueError as exc:
        print(f"station report: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        directory, name = output_place(args.out)
    except ValueError as exc:
        print(f"station report: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    daemon = asyncio.run(_from_daemon(settings.ipc_socket, since, until))
    recorder_dir = _recorder_dir(settings, daemon.get("recorder") if daemon is not None else None)
    security: list[str] | None = None
    if daemon is not None:
        config, snapshot = daemon["config"], daemon["snapshot"]
        security = daemon.get("security")
    else:
        config, snapshot = {"settings": settings_values}, _offline_snapshot(settings)
        security = _offline_security(settings, since, until)
    sources = archive.Sources(
        station_id=settings.station_name, config=config, snapshot=snapshot,
        recorder_lines=lambda low, high: recorder_lines(recorder_dir, low, high),
        log_file=getattr(settings, "log_file", None),
        security_lines=(lambda _low, _high: security) if security is not None else None,
        mask=logs.redact_text,
    )
    log_type = archive.SECURITY if args.security else archive.DIAGNOSTICS
    try:
        built = archive.build(directory, sources, log_type=log_type, since=since, until=until, now=now, name=name,
                              create_dir=False)
    except OSError as exc:
        print(f"station report: cannot write the archive into {directory}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.FAILURE
    source = "from the running daemon" if daemon is not None else "without the daemon (not reachable)"
    print(f"{built.path}  {built.size_bytes} bytes in {built.seconds:.2f} s, state {source}")
    return exitcodes.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m station.diagnostics.report`); `station report` is the usual one."""
    from station.cli import main as cli_main

    return cli_main(["report", *(argv or sys.argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
