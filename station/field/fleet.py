"""Fleet manifest → one ``station-identity.env`` per device (``station-fleet``).

The manifest (CSV or YAML) lists every station with its CSMS endpoints and a *reference*
to its password, never the password itself::

    station_id,ocpp_primary,ocpp_201_url,ocpp_16_url,password_ref
    CP-0001,201,wss://csms.example.com/ocpp/,,env:CP_0001_PASSWORD
    CP-0002,16,,wss://legacy.example.com/ocpp16/,file:CP-0002

``env:NAME`` reads the environment, ``file:KEY`` reads KEY from the ``--secrets`` file (a
0600 ``KEY=value`` file kept out of the manifest's repository). Optional columns
``heartbeat_seconds`` and any ``STATION_*`` name are copied through. YAML takes the same keys,
either as a list or as ``{defaults: {...}, stations: [...]}``.

Validation is all-or-nothing: duplicate ids, bad ids, bad or credential-carrying URLs,
unknown primaries and unresolved secrets are all reported (row by row, secrets never
shown) and no file is written. Output: ``OUT/<station_id>/station-identity.env`` (0600), to
copy onto that device's boot partition.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from station import envfile
from station.field.firstboot import IDENTITY_NAME
from station.storage import safefile

EXIT_OK, EXIT_USAGE, EXIT_INVALID = 0, 2, 65
_ID = re.compile(r"^[A-Za-z0-9*\-_=:+|@.]{1,48}$")  # OCPP identifierString, 48 chars max
_EXTRA = re.compile(r"^STATION_[A-Z0-9_]+$")
FORBIDDEN = {"password", "ocpp_station_password", "secret"}
MANIFEST_MAX_BYTES = 16 * 1024 * 1024


class ManifestError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Station:
    station_id: str
    values: dict[str, str]
    """The identity file's variables, password included."""


def load_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV or YAML manifest as string dicts (YAML ``defaults`` merged in)."""
    if path.suffix.lower() in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError:
            raise ManifestError(["YAML manifests need PyYAML: pip install 'ocpp-station[fleet]'"]) from None
        data: Any = yaml.safe_load(safefile.read_bytes(path, MANIFEST_MAX_BYTES).decode("utf-8"))
        defaults: Mapping[str, Any] = {}
        if isinstance(data, dict):
            defaults = data.get("defaults") or {}
            data = data.get("stations")
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise ManifestError([f"{path}: expected a list of stations (or defaults + stations)"])
        return [{str(k): "" if v is None else str(v) for k, v in {**defaults, **item}.items()} for item in data]
    text = safefile.read_bytes(path, MANIFEST_MAX_BYTES).decode("utf-8")
    rows = csv.DictReader(io.StringIO(text, newline=""))
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]


def check_url(label: str, url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in {"ws", "wss"}:
        return f"{label} must start with ws:// or wss://"
    if not parts.hostname:
        return f"{label} has no host"
    if parts.username or parts.password:
        return f"{label} carries credentials; use password_ref"
    try:
        parts.port  # noqa: B018 — raises on a bad port
    except ValueError:
        return f"{label} has a bad port"
    return None


def resolve_secret(ref: str, secrets: Mapping[str, str], environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(password, problem): ``env:NAME`` or ``file:KEY``; anything else is refused."""
    kind, _, name = ref.partition(":")
    if kind == "env" and name:
        return (environ[name], None) if environ.get(name) else (None, f"environment variable {name} is not set")
    if kind == "file" and name:
        return (secrets[name], None) if secrets.get(name) else (None, f"secret {name} is not in the secrets file")
    return None, "password_ref must be env:NAME or file:KEY (passwords never go in the manifest)"


def build(rows: Sequence[Mapping[str, str]], secrets: Mapping[str, str], environ: Mapping[str, str]) -> list[Station]:
    """Validate every row and resolve its secret; raise :class:`ManifestError` listing all problems."""
    problems: list[str] = []
    stations: list[Station] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=2 if rows and "station_id" in rows[0] else 1):
        where = f"row {number}"
        for key in row:
            if key.lower() in FORBIDDEN and row[key]:
                problems.append(f"{where}: column {key!r} would put a secret in the manifest; use password_ref")
        station_id = row.get("station_id", "")
        if not _ID.match(station_id):
            problems.append(f"{where}: station_id {station_id!r} must be 1-48 of A-Z a-z 0-9 * - _ = : + | @ .")
        elif station_id in seen:
            problems.append(f"{where}: duplicate station_id {station_id!r} (first in row {seen[station_id]})")
        else:
            seen[station_id] = number
        where = f"{where} ({station_id})"
        primary = row.get("ocpp_primary") or "201"
        if primary not in {"201", "16"}:
            problems.append(f"{where}: ocpp_primary must be 201 or 16, not {primary!r}")
        values = {"OCPP_STATION_NAME": station_id, "OCPP_PRIMARY": primary}
        for column, variable in (("ocpp_201_url", "OCPP_201_URL"), ("ocpp_16_url", "OCPP_16_URL")):
            url = row.get(column, "")
            if url:
                problem = check_url(column, url)
                if problem:
                    problems.append(f"{where}: {problem}")
                values[variable] = url
        if not values.get("OCPP_201_URL" if primary == "201" else "OCPP_16_URL"):
            problems.append(f"{where}: no URL for its primary OCPP version {primary}")
        if row.get("heartbeat_seconds"):
            if not row["heartbeat_seconds"].isdigit():
                problems.append(f"{where}: heartbeat_seconds must be a whole number")
            values["OCPP_HEARTBEAT_SECONDS"] = row["heartbeat_seconds"]
        for key, value in row.items():
            if _EXTRA.match(key) and value:
                values[key] = value
        password, problem = resolve_secret(row.get("password_ref", ""), secrets, environ)
        if problem:
            problems.append(f"{where}: {problem}")
        elif password is not None:
            values["OCPP_STATION_PASSWORD"] = password
        for key, value in values.items():
            try:
                envfile.check(key, value)
            except envfile.EnvFileError as exc:
                problems.append(f"{where}: {exc}")
        stations.append(Station(station_id, values))
    if not rows:
        problems.append("the manifest lists no stations")
    if problems:
        raise ManifestError(problems)
    return stations


def read_secrets(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    with safefile.open_dir(path.parent) as directory, directory.open_read(path.name, MANIFEST_MAX_BYTES) as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        text = handle.read(MANIFEST_MAX_BYTES).decode("utf-8")
    if mode & 0o077:
        print(f"station-fleet: warning: {path} is readable by others (mode {mode:o}); chmod 600", file=sys.stderr)
    return envfile.parse(text)


def write_identities(stations: Sequence[Station], out: Path) -> list[Path]:
    written = []
    with safefile.open_dir(out, make=0o700) as directory:
        for station in stations:
            header = f"Identity of {station.station_id}: copy to the boot partition of that device."
            with directory.mkdir(station.station_id, mode=0o700) as station_dir:
                station_dir.replace(IDENTITY_NAME, envfile.render(station.values, header), mode=0o600)
            written.append(out / station.station_id / IDENTITY_NAME)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="station-fleet", description="Turn a fleet manifest into per-device identity files.")
    parser.add_argument("manifest", type=Path, help="CSV or YAML manifest")
    parser.add_argument("--secrets", type=Path, help="KEY=value file holding the passwords named by file:KEY")
    parser.add_argument("--out", type=Path, help="output directory (one subdirectory per station)")
    parser.add_argument("--check", action="store_true", help="validate only, write nothing")
    args = parser.parse_args(argv)
    if not args.check and args.out is None:
        parser.error("--out is required unless --check")
    try:
        stations = build(load_rows(args.manifest), read_secrets(args.secrets), os.environ)
    except ManifestError as exc:
        for problem in exc.problems:
            print(f"station-fleet: {problem}", file=sys.stderr)
        print(f"station-fleet: {len(exc.problems)} problem(s); nothing written", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"station-fleet: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        print(f"{len(stations)} stations valid")
        return EXIT_OK
    for path in write_identities(stations, args.out):
        print(path)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
