"""Pinned software updates with automatic rollback (``station-update``).

Releases live side by side under ``/opt/station/releases/<version>``, each with its own venv;
``/opt/station/current`` and ``/opt/station/previous`` are relative symlinks. An update
installs the new release, switches ``current``, restarts the units and runs ``station --once``
(as the daemon's ``station`` user: the release's own code needs no root) until it passes or a grace
period ends; otherwise it switches back, restarts, and records
why. Every outcome is appended to ``/var/lib/station-update/history.jsonl``.

Python API (used by the OCPP UpdateFirmware handler and by tests)::

    from station.field import update
    update.install_release(Path("/tmp/ocpp_station-1.5.0-py3-none-any.whl"), "1.5.0", root=Path("/"))
    result = update.switch_and_verify("1.5.0", root=Path("/"), grace_seconds=120)
    result.ok, result.action, result.detail        # "updated" | "rolled-back" | ...

The daemon itself runs unprivileged and would be killed by its own restart, so it does not
call these directly: it downloads and checks the artefact, then calls :func:`request_update`,
which leaves ``/var/lib/station/update/request.json`` for ``station-update.path`` to pick up;
the outcome appears in ``/var/lib/station/update/result.json`` (see :func:`read_result`)
after the restart, ready for FirmwareStatusNotification (Installed, or InstallationFailed
with the rollback detail). A request the root side refuses (``Result.refused``: signature,
verification, downgrade) changes nothing and says why; see :func:`run_request`.

CLI exit codes: 0 updated (or rolled back on request), 1 update failed and was rolled back,
2 usage or install error (nothing switched), 3 rollback failed too (needs a technician).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from station.field import hostops
from station.field import request_intake as intake
from station.storage import safefile
from station.update_request import UpdateError, check_version, clear_result, read_result, request_update

EXIT_OK = 0
EXIT_ROLLED_BACK = 1
EXIT_USAGE = 2
EXIT_ROLLBACK_FAILED = 3
DEFAULT_GRACE_S = 120.0
DEFAULT_INTERVAL_S = 5.0
KEEP_RELEASES = 3
REQUEST_DIR = Path("var/lib/station/update")
@dataclass(frozen=True)
class Layout:
    """Where releases and update records live below a root (``/`` on a device)."""

    root: Path

    @property
    def base(self) -> Path:
        return self.root / "opt/station"

    @property
    def releases(self) -> Path:
        return self.base / "releases"

    @property
    def current(self) -> Path:
        return self.base / "current"

    @property
    def previous(self) -> Path:
        return self.base / "previous"

    @property
    def history(self) -> Path:
        return self.root / "var/lib/station-update/history.jsonl"

    def release(self, version: str) -> Path:
        return self.releases / version

    def version_of(self, link: Path) -> str | None:
        """Release a symlink points at (``None`` if it is missing)."""
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    def installed(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        return sorted(p.name for p in self.releases.iterdir() if (p / ".complete").exists())


@dataclass
class Result:
    """What an update or rollback did; also one line of the history log."""

    ok: bool
    action: str
    """updated | rolled-back (automatic) | rollback (by hand) | rollback-failed | failed | unchanged"""
    version: str | None
    previous: str | None
    detail: str
    started_utc: str = field(default_factory=hostops.utcnow)
    finished_utc: str = ""
    smoke: dict[str, object] | None = None
    attempts: int = 0
    refused: str | None = None
    """Why the root side would not install a daemon's request: signature | verification | downgrade."""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@contextlib.contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """One update at a time per device (the path unit, a technician and Ansible may collide)."""
    with safefile.open_dir(layout.base, make=0o755) as base:
        fd = os.open(".update.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600,
                     dir_fd=base.fd)
    with os.fdopen(fd, "r+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpdateError("another station-update is running") from None
        yield


def _pip_command(pip: Sequence[str] | None) -> list[str] | None:
    if pip is not None:
        return list(pip)
    override = os.environ.get("STATION_PIP")
    return shlex.split(override) if override else None


def install_release(
    artefact: Path | str,
    version: str,
    *,
    root: Path = Path("/"),
    pip: Sequence[str] | None = None,
    wheelhouse: Path | None = None,
    python: str | None = None,
    sha256: str | None = None,
) -> Path:
    """Install ``artefact`` as release ``version`` beside the others; returns its directory.

    ``artefact`` is a wheel, an sdist, a source directory or a pip requirement such as
    ``git+https://host/station.git@v1.5.0``. An already complete release is left alone.
    ``pip`` (or ``$STATION_PIP``) is a pip command line used as ``PIP --python VENV install``
    with a venv created without pip; by default the new venv's own pip is used.
    ``wheelhouse`` installs offline from a directory of wheels.

    ``sha256`` (a verified artefact's digest) is kept in the release as the name of an empty file
    (``.artefact-sha256-<hex>``): an installed release is reused only for that same artefact,
    never for another one that claims the same version.
    """
    layout = Layout(root)
    check_version(version)
    target = layout.release(version)
    if (target / ".complete").exists():
        recorded = list(target.glob(".artefact-sha256-*"))
        if sha256 is not None and recorded and not (target / f".artefact-sha256-{sha256}").exists():
            raise UpdateError(f"release {version} is already installed from another artefact; not replaced")
        return target
    with safefile.open_dir(layout.releases, make=0o755) as releases:
        releases.rmtree(version)
        releases.mkdir(version, mode=0o755).close()
    interpreter = python or os.environ.get("STATION_PYTHON") or "python3"
    pip_cmd = _pip_command(pip)
    venv = target / "venv"
    pip_args = ["install", "--quiet", "--disable-pip-version-check"]
    if wheelhouse is not None:
        pip_args += ["--no-index", "--find-links", str(wheelhouse)]
    steps: list[list[str]]
    if pip_cmd is None:
        steps = [[interpreter, "-m", "venv", str(venv)], [str(venv / "bin/python"), "-m", "pip", *pip_args, str(artefact)]]
    else:
        steps = [
            [interpreter, "-m", "venv", "--without-pip", str(venv)],
            [*pip_cmd, "--python", str(venv / "bin/python"), *pip_args, str(artefact)],
        ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            _remove_release(layout, version)
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise UpdateError(f"installing {version} failed at `{step[0]} {step[1]}`: {' | '.join(tail)}")
    if not (venv / "bin/station").exists():
        _remove_release(layout, version)
        raise UpdateError(f"artefact {artefact} did not provide the `station` command")
    with safefile.open_dir(target) as release:
        release.replace("VERSION", version + "\n")
        if sha256 is not None:
            release.replace(f".artefact-sha256-{sha256}", b"")
        release.replace(".complete", b"")
    return target


def _remove_release(layout: Layout, version: str) -> None:
    with contextlib.suppress(OSError), safefile.open_dir(layout.releases) as releases:
        releases.rmtree(version)


def _point(link: Path, version: str) -> None:
    """Atomically (rename) make ``link`` → ``releases/<version>``."""
    with safefile.open_dir(link.parent) as base:
        base.replace_symlink(link.name, f"releases/{version}")


def switch(version: str, *, root: Path = Path("/")) -> str | None:
    """Make ``version`` current and the old current ``previous``; returns the old current."""
    layout = Layout(root)
    if not (layout.release(version) / ".complete").exists():
        raise UpdateError(f"release {version} is not installed")
    old = layout.version_of(layout.current)
    if old == version:
        return old
    if old is not None:
        _point(layout.previous, old)
    _point(layout.current, version)
    return old


def _record(layout: Layout, result: Result) -> Result:
    result.finished_utc = hostops.utcnow()
    hostops.append_jsonl(layout.history, result.to_json())
    return result


def _give_up(code: int) -> bool:
    """Failures that waiting will not cure: the new release cannot read or use its config."""
    return code in (hostops.EXIT_CONFIG, hostops.EXIT_AUTH_FAILURE)


def switch_and_verify(
    version: str,
    *,
    root: Path = Path("/"),
    grace_seconds: float = DEFAULT_GRACE_S,
    interval: float = DEFAULT_INTERVAL_S,
) -> Result:
    """Switch to an installed release, restart, and keep it only if ``station --once`` passes.

    If the smoke test has not passed within ``grace_seconds``, switch back to the release
    that was current before, restart again and check it once more. The outcome is logged.
    """
    layout = Layout(root)
    check_version(version)
    with _locked(layout):
        old = switch(version, root=root)
        if old == version:
            result = Result(True, "unchanged", version, old, f"{version} is already current")
            return _record(layout, result)
        hostops.restart_units()
        smoke, attempts = hostops.wait_healthy(root, grace_seconds, interval, give_up_on=_give_up, user=hostops.station_account(root))
        if smoke.ok:
            prune(root=root)
            result = Result(True, "updated", version, old, f"{version} healthy", smoke=smoke.summary(), attempts=attempts)
            return _record(layout, result)
        reason = f"{version} failed the smoke test (exit {smoke.exit_code}) after {attempts} attempt(s)"
        if old is None:
            return _record(layout, Result(False, "failed", version, None, reason + "; no earlier release to go back to", smoke=smoke.summary(), attempts=attempts))
        _point(layout.current, old)
        _point(layout.previous, version)
        hostops.restart_units()
        back, _ = hostops.wait_healthy(root, grace_seconds, interval, give_up_on=_give_up, user=hostops.station_account(root))
        action = "rolled-back" if back.ok else "rollback-failed"
        detail = f"{reason}; rolled back to {old}" + ("" if back.ok else f", which is unhealthy too (exit {back.exit_code})")
        return _record(layout, Result(False, action, old, version, detail, smoke=smoke.summary(), attempts=attempts))


def update(
    version: str,
    artefact: Path | str,
    *,
    root: Path = Path("/"),
    grace_seconds: float = DEFAULT_GRACE_S,
    interval: float = DEFAULT_INTERVAL_S,
    pip: Sequence[str] | None = None,
    wheelhouse: Path | None = None,
    allow_downgrade: bool = False,
    sha256: str | None = None,
) -> Result:
    """:func:`install_release` then :func:`switch_and_verify`; install errors are recorded too.

    A version below the current one is refused unless ``allow_downgrade`` (root asked for it:
    ``station-update --allow-downgrade``); the current version again changes nothing.
    """
    layout = Layout(root)
    current = layout.version_of(layout.current)
    problem = downgrade_problem(version, current)
    if problem and not allow_downgrade:
        return _record(layout, Result(False, "failed", current, current, problem, refused="downgrade"))
    if version == current:
        return _record(layout, Result(True, "unchanged", current, layout.version_of(layout.previous),
                                      f"{version} is already current"))
    try:
        install_release(artefact, version, root=root, pip=pip, wheelhouse=wheelhouse, sha256=sha256)
    except UpdateError as exc:
        return _record(layout, Result(False, "failed", current, current, str(exc)))
    return switch_and_verify(version, root=root, grace_seconds=grace_seconds, interval=interval)


def downgrade_problem(version: str, current: str | None) -> str | None:
    """Why installing `version` over `current` is a downgrade (None: it is not); versions as pip orders them."""
    from packaging.version import InvalidVersion, Version

    if current is None:
        return None
    try:
        older = Version(version) < Version(current)
    except InvalidVersion:
        return f"cannot order {version} against the running {current}: refused as a possible downgrade"
    return f"downgrade from {current} to {version} refused (root may allow it: station-update --allow-downgrade)" if older else None


def rollback(
    *,
    root: Path = Path("/"),
    only_from: str | None = None,
    grace_seconds: float = DEFAULT_GRACE_S,
    interval: float = DEFAULT_INTERVAL_S,
) -> Result:
    """Go back to ``previous`` by hand (``only_from``: only if that version is current)."""
    layout = Layout(root)
    with _locked(layout):
        current = layout.version_of(layout.current)
        previous = layout.version_of(layout.previous)
        if only_from is not None and current != only_from:
            return _record(layout, Result(True, "unchanged", current, previous, f"{only_from} is not current; nothing to roll back"))
        if previous is None or not (layout.release(previous) / ".complete").exists():
            return _record(layout, Result(False, "failed", current, previous, "no previous release to roll back to"))
        _point(layout.current, previous)
        if current is not None:
            _point(layout.previous, current)
        hostops.restart_units()
        smoke, attempts = hostops.wait_healthy(root, grace_seconds, interval, give_up_on=_give_up, user=hostops.station_account(root))
        detail = f"rolled back from {current} to {previous}" + ("" if smoke.ok else f"; smoke test fails (exit {smoke.exit_code})")
        return _record(layout, Result(smoke.ok, "rollback", previous, current, detail, smoke=smoke.summary(), attempts=attempts))


def prune(*, root: Path = Path("/"), keep: int = KEEP_RELEASES) -> list[str]:
    """Delete old releases beyond the ``keep`` newest installed, never current or previous."""
    layout = Layout(root)
    pinned = {layout.version_of(layout.current), layout.version_of(layout.previous)}
    by_age = sorted(layout.installed(), key=lambda v: (layout.release(v) / ".complete").stat().st_mtime)
    removable = [v for v in by_age if v not in pinned]
    doomed = removable[: max(0, len(by_age) - keep)]
    for version in doomed:
        _remove_release(layout, version)
    return doomed


def run_request(request: Path, *, root: Path = Path("/"), grace_seconds: float = DEFAULT_GRACE_S,
                interval: float = DEFAULT_INTERVAL_S, allow_downgrade: bool = False) -> Result:
    """``station-update.service`` side: carry out a request and leave ``result.json`` beside it.

    The request lives in the daemon's directory: it is read, the artefact copied and verified,
    and the result written without following any link there (:mod:`station.field.request_intake`).
    The version installed is the one inside the verified wheel; a request naming another version
    is refused (the CSMS, or whoever wrote the request, asked for something else than it sent).
    """
    directory = request.parent
    state_dir = directory.parent
    staged: Path | None = None
    try:
        with intake.open_dir(directory) as daemon_dir:
            data = intake.read_small(daemon_dir, request.name, intake.REQUEST_MAX_BYTES)
        wanted = intake.parse_request(data, state_dir)
        staged = intake.stage(wanted, state_dir, root)
        how = intake.verify(wanted, staged, root)
        version = intake.artefact_version(staged)
        if version != wanted.version:
            raise intake.Refused("verification", f"the request names version {wanted.version} but the signed"
                                 f" artefact is version {version}")
    except UpdateError as exc:
        if staged is not None:
            intake.unstage(staged)
        current = Layout(root).version_of(Layout(root).current)
        result = _record(Layout(root), Result(False, "failed", current, current, f"request refused: {exc}",
                                              refused=getattr(exc, "kind", None)))
    else:
        try:
            result = update(version, staged, root=root, grace_seconds=grace_seconds, interval=interval,
                            allow_downgrade=allow_downgrade, sha256=wanted.sha256)
            result.detail = f"{result.detail} ({how})"
        finally:
            intake.unstage(staged)
    intake.remove_request(directory, request.name)
    with contextlib.suppress(UpdateError, OSError):  # the daemon's directory may be gone; history has it
        intake.write_result(directory, result.to_json())
    return result


# --- CLI ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="station-update",
        description="Install a pinned station release beside the current one, switch to it, and "
        "roll back automatically unless `station --once` passes within the grace period.",
        epilog="Exit codes: 0 done, 1 update failed and rolled back, 2 usage/install error "
        "(nothing switched), 3 rollback failed too. History: /var/lib/station-update/history.jsonl.",
    )
    parser.add_argument("version", nargs="?", help="release version to install and switch to")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--artefact", help="wheel, sdist or source directory of that version")
    source.add_argument("--git", metavar="URL", help="install the git tag VERSION (or --tag) from URL")
    parser.add_argument("--tag", help="git tag when it differs from VERSION (e.g. v1.5.0)")
    parser.add_argument("--wheelhouse", type=Path, help="install offline from this directory of wheels")
    parser.add_argument("--rollback", action="store_true", help="go back to the previous release")
    parser.add_argument("--from", dest="only_from", metavar="VERSION", help="with --rollback: only if VERSION is current")
    parser.add_argument("--from-request", type=Path, metavar="FILE", help="carry out a request left by the daemon")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, help="seconds for the smoke test to pass (default %(default)s)")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds between smoke attempts (default %(default)s)")
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("STATION_ROOT", "/")), help="device root (default $STATION_ROOT or /)")
    parser.add_argument("--status", action="store_true", help="print current/previous/installed releases")
    parser.add_argument("--allow-downgrade", action="store_true",
                        help="install or switch to a version below the current one (refused otherwise)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root: Path = args.root
    try:
        if args.status:
            layout = Layout(root)
            print(json.dumps({"current": layout.version_of(layout.current), "previous": layout.version_of(layout.previous), "installed": layout.installed()}))
            return EXIT_OK
        if args.rollback:
            result = rollback(root=root, only_from=args.only_from, grace_seconds=args.grace, interval=args.interval)
        elif args.from_request is not None:
            result = run_request(args.from_request, root=root, grace_seconds=args.grace, interval=args.interval,
                                 allow_downgrade=args.allow_downgrade)
        elif args.version:
            check_version(args.version)
            if args.git:
                artefact: Path | str = f"git+{args.git}@{args.tag or args.version}"
            elif args.artefact:
                artefact = Path(args.artefact)
            else:
                artefact = ""
                if not (Layout(root).release(args.version) / ".complete").exists():
                    raise UpdateError(f"release {args.version} is not installed: give --artefact or --git")
            result = update(args.version, artefact, root=root, grace_seconds=args.grace, interval=args.interval,
                            wheelhouse=args.wheelhouse, allow_downgrade=args.allow_downgrade)
        else:
            _parser().print_usage(sys.stderr)
            print("station-update: give a VERSION, --rollback or --status", file=sys.stderr)
            return EXIT_USAGE
    except UpdateError as exc:
        print(f"station-update: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result.to_json(), sort_keys=True))
    if result.ok:
        return EXIT_OK
    if result.action == "rolled-back":
        return EXIT_ROLLED_BACK
    if result.action == "rollback-failed":
        return EXIT_ROLLBACK_FAILED
    return EXIT_USAGE if result.action == "failed" else EXIT_ROLLED_BACK


if __name__ == "__main__":
    raise SystemExit(main())
