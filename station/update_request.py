"""The daemon's side of a software update: leave a request, read the outcome.

Kept apart from :mod:`station.field.update` (the root-side flow and its CLI) so that the daemon, which
only ever writes ``request.json`` and reads ``result.json``, does not carry that code in memory.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from station.storage.durable import durable_unlink, durable_write_text

PROJECT = "ocpp-station"
"""The distribution an update installs (a wheel of it, and nothing else), for both sides."""
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")


class UpdateError(Exception):
    """The update could not be carried out; nothing was switched."""


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise UpdateError(f"bad version {version!r}: letters, digits and . + _ - only")
    return version


def request_update(artefact: Path, version: str, *, sha256: str, signing_certificate: str | None = None,
                   signature: str | None = None, state_dir: Path = Path("/var/lib/station")) -> Path:
    """Daemon side: ask ``station-update.path`` to install ``artefact`` (already downloaded into
    ``<state_dir>/firmware/`` and verified). Returns the request file; the daemon will be restarted.

    The root side trusts none of it: it copies the artefact and checks the SHA-256 and the
    signature (``signing_certificate``, ``signature``: UpdateFirmware's) on its own copy.
    """
    check_version(version)
    directory = state_dir / "update"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "result.json").unlink(missing_ok=True)
    utc = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Durable before the daemon answers or restarts: a cut must not leave an empty request.json.
    durable_write_text(directory / "request.json", json.dumps({
        "version": version, "artefact": str(artefact), "sha256": sha256,
        "signing_certificate": signing_certificate, "signature": signature, "utc": utc}))
    return directory / "request.json"


def read_result(*, state_dir: Path = Path("/var/lib/station")) -> dict[str, object] | None:
    """Daemon side, after start: the outcome of the last requested update, if any."""
    path = state_dir / "update" / "result.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clear_result(*, state_dir: Path = Path("/var/lib/station")) -> None:
    """Daemon side: the outcome was reported to the CSMS; never report it again."""
    durable_unlink(state_dir / "update" / "result.json")  # a lost removal would report it again
