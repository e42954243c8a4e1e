"""The two things provisioning tools do to a running device: restart units, run the smoke test.

Both are external commands chosen by environment variables so that tests (and odd devices)
can replace them at the boundary:

- ``SYSTEMCTL``: the systemctl binary (tests point it at a script recording its calls);
- ``STATION_SMOKE_CMD``: the health check, default ``<root>/opt/station/current/venv/bin/station
  --once``, whose exit codes mean 0 healthy, 3 CSMS unreachable, 4 authentication failure,
  78 configuration error (anything else non-zero: unhealthy).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from station import envfile
from station.storage import safefile

DAEMON_UNITS = ("station.service", "station-api.service")
EXIT_HEALTHY = 0
EXIT_CSMS_UNREACHABLE = 3
EXIT_AUTH_FAILURE = 4
EXIT_CONFIG = 78
SMOKE_TIMEOUT_S = 60.0


ENV_MAX_BYTES = 1024 * 1024


def read_env(path: Path) -> dict[str, str]:
    """An env file's values (missing → empty), read without following a link, FIFO or hard link."""
    try:
        return envfile.parse(safefile.read_bytes(path, ENV_MAX_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return {}


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``$SYSTEMCTL`` (default ``systemctl``) with ``args``; never raises on failure."""
    command = [*shlex.split(os.environ.get("SYSTEMCTL", "systemctl")), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(command, 127, "", f"{exc.__class__.__name__}: {exc}")


def restart_units(units: Sequence[str] = DAEMON_UNITS) -> bool:
    """Restart the daemon and the API so they run the release behind ``current``."""
    return systemctl("restart", *units).returncode == 0


def smoke_command(root: Path) -> list[str]:
    override = os.environ.get("STATION_SMOKE_CMD")
    if override:
        return shlex.split(override)
    return [str(root / "opt/station/current/venv/bin/station"), "--once"]


@dataclass(frozen=True)
class SmokeResult:
    exit_code: int
    report: dict[str, object] | None
    """The ``--once`` JSON document (secret-free by contract), if it printed one."""
    utc: str

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_HEALTHY

    def summary(self) -> dict[str, object]:
        """What goes into logs and state files: exit code, time and the report's ``ok``/checks."""
        out: dict[str, object] = {"exit_code": self.exit_code, "utc": self.utc}
        if self.report is not None:
            for key in ("ok", "station_id", "software_version", "checks"):
                if key in self.report:
                    out[key] = self.report[key]
        return out


@dataclass(frozen=True)
class Account:
    """A user to run a command as: uid, primary gid, supplementary groups."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def station_account(root: Path, user: str = "station") -> Account | None:
    """The daemon's user as the tree's root-owned ``etc/passwd`` and ``etc/group`` name it; None when
    not running as root or the tree has no such user (a development tree)."""
    if os.geteuid() != 0:
        return None
    try:
        with safefile.open_dir(root / "etc") as etc:
            passwd = etc.read_text("passwd", 4 * 1024 * 1024)
            group = etc.read_text("group", 4 * 1024 * 1024) if etc.lstat("group") else ""
    except OSError:
        return None
    entry = next((f for f in (line.split(":") for line in passwd.splitlines()) if len(f) >= 4 and f[0] == user), None)
    if entry is None:
        return None
    groups = tuple(int(f[2]) for f in (line.split(":") for line in group.splitlines())
                   if len(f) >= 4 and f[2].isdigit() and user in f[3].split(","))
    return Account(int(entry[2]), int(entry[3]), groups)


def run_smoke(root: Path, timeout: float = SMOKE_TIMEOUT_S, *, user: Account | None = None) -> SmokeResult:
    """One ``station --once``; a missing binary or a hang counts as unhealthy (exit 127/124).

    ``user``: run it as that user (root-side tools pass the daemon's user: the smoke test is the whole
    release's code talking to the CSMS, the ESP32 and the meter, and needs no root)."""
    drop: dict[str, object] = {}
    if user is not None:
        drop = {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups), "umask": 0o077,
                "cwd": "/"}
    try:
        proc = subprocess.run(
            smoke_command(root), capture_output=True, text=True, timeout=timeout, check=False, **drop  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired:
        return SmokeResult(124, None, utcnow())
    except OSError:
        return SmokeResult(127, None, utcnow())
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    return SmokeResult(proc.returncode, report if isinstance(report, dict) else None, utcnow())


def wait_healthy(
    root: Path,
    grace_seconds: float,
    interval: float,
    *,
    give_up_on: Callable[[int], bool] = lambda code: False,
    clock: Callable[[], float] = time.monotonic,
    user: Account | None = None,
) -> tuple[SmokeResult, int]:
    """Run the smoke test until it passes or ``grace_seconds`` have passed.

    A freshly restarted daemon needs a moment to reach its CSMS, so one failed check is not
    a verdict; ``give_up_on(exit_code)`` ends the wait early for failures that waiting cannot
    fix (a rejected password). Returns the last result and the number of attempts.
    """
    deadline = clock() + grace_seconds
    attempts = 0
    while True:
        attempts += 1
        result = run_smoke(root, timeout=max(5.0, min(SMOKE_TIMEOUT_S, deadline - clock() + 5)), user=user)
        if result.ok or give_up_on(result.exit_code) or clock() + interval > deadline:
            return result, attempts
        time.sleep(interval)


def append_jsonl(path: Path, record: dict[str, object]) -> None:
    """Append one JSON line, fsynced (history logs survive crashes line by line); never through a link."""
    with safefile.open_dir(path.parent, make=0o755) as directory:
        directory.append(path.name, json.dumps(record, sort_keys=True) + "\n", mode=0o644)
