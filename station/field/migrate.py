"""Move a station to a new CSMS endpoint, reverting by itself if it never gets in
(``station-migrate-csms``).

The same mechanism as OCPP's SetNetworkProfile + NetworkConfigurationPriority
(``station.network_profiles``): the new URL becomes a network profile in the daemon's state
directory and goes first in the priority, the previous order stays behind it. The daemon is
restarted; it tries the new endpoint (``NetworkProfileConnectionAttempts`` times) and, when it
cannot get in, falls back to the profile that last worked on its own, so the station is never
stranded. This tool waits for ``station --once`` to report a BootNotification accepted *through
the new endpoint* within ``--limit`` seconds. If the daemon fell back instead, or the new CSMS
rejects the password (exit 4), or the configuration is unusable (exit 78), or the limit passes,
the previous priority goes back, the daemon restarts, and the outcome is logged in
``/var/lib/station-update/migrations.jsonl`` (the daemon's own record of each attempt is in
``network-profiles.jsonl`` in its state directory). ``--revert`` restores the priority from
before the last migration. ``/etc/ocpp_station.env`` is not changed: its URLs stay profile 0.

Exit codes: 0 migrated (or reverted on request), 1 new endpoint failed and was reverted,
2 usage error, 3 reverted but the old endpoint is unhealthy too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from station import envfile
from station.field import hostops
from station.network_profiles import CONFIGURED_SLOT, SLOTS, NetworkProfile, ProfileFile, ProfileState, refusal
from station.storage import safefile

ENV_PATH = Path("etc/ocpp_station.env")
LOG_PATH = Path("var/lib/station-update/migrations.jsonl")
DEFAULT_STATE_DIR = "/var/lib/station"
EXIT_OK, EXIT_REVERTED, EXIT_USAGE, EXIT_REVERT_FAILED = 0, 1, 2, 3
DEFAULT_LIMIT_S = 300.0


def _state_dir(root: Path, values: dict[str, str]) -> Path:
    return root / (values.get("STATION_STATE_DIR") or DEFAULT_STATE_DIR).lstrip("/")


def _configured_security_profile(values: dict[str, str]) -> int:
    """The profile the station runs with now (as `resolve_security_profile` infers it)."""
    explicit = values.get("STATION_SECURITY_PROFILE")
    if explicit and explicit.isdigit():
        return int(explicit)
    primary = values.get("OCPP_201_URL") if values.get("OCPP_PRIMARY", "201") == "201" else values.get("OCPP_16_URL")
    secure = (primary or values.get("OCPP_201_URL") or values.get("OCPP_16_URL") or "").startswith("wss://")
    if secure and values.get("STATION_CLIENT_CERT"):
        return 3
    if values.get("OCPP_STATION_PASSWORD"):
        return 2 if secure else 1
    return 0


def _owner(path: Path) -> tuple[int, int] | None:
    """Root writes the daemon's file for the daemon's user: the owner of its state directory, read
    from the directory's descriptor (reached without following a link); None when it does not exist."""
    if os.geteuid() != 0:
        return None
    try:
        with safefile.open_dir(path) as directory:
            return directory.owner()
    except FileNotFoundError:
        return None


def _slot_for(state: ProfileState, url: str) -> int:
    for slot, profile in state.profiles.items():
        if profile.url == url:
            return slot
    free = [s for s in SLOTS if s != CONFIGURED_SLOT and s not in state.priority and s != state.last_good]
    return free[0] if free else max(s for s in SLOTS if s != state.last_good)


def _expected(smoke: hostops.SmokeResult) -> str | None:
    ocpp = (smoke.report or {}).get("ocpp")
    return ocpp.get("url") if isinstance(ocpp, dict) else None


def _give_up(code: int) -> bool:
    return code in (hostops.EXIT_AUTH_FAILURE, hostops.EXIT_CONFIG)


@dataclass(frozen=True)
class Staged:
    profiles: ProfileFile
    profile: NetworkProfile
    endpoint: str
    previous: list[int]
    owner: tuple[int, int] | None
    changed: bool


def stage(url: str, *, version: str | None = None, root: Path = Path("/")) -> Staged | str:
    """Write ``url`` as the first network profile in the daemon's state directory (what the daemon
    reads at its next start); why not, as text, when it cannot be used."""
    values = hostops.read_env(root / ENV_PATH)
    station_id = values.get("OCPP_STATION_NAME")
    if not station_id:
        return f"{ENV_PATH} has no station identity"
    version = version or values.get("OCPP_PRIMARY", "201")
    state_dir = _state_dir(root, values)
    profiles = ProfileFile(state_dir)
    state = profiles.load()
    active = _configured_security_profile(values)
    profile = NetworkProfile(_slot_for(state, url), url, version, active, source="migrate")
    why = refusal(profile, active_security_profile=active, has_password=bool(values.get("OCPP_STATION_PASSWORD")),
                  has_client_cert=bool(values.get("STATION_CLIENT_CERT")))
    if why is not None:
        return f"new URL refused: {why[1]}"
    previous = list(state.priority)
    owner = _owner(state_dir)
    endpoint = profile.endpoint(station_id)
    if previous and previous[0] == profile.slot and state.profiles.get(profile.slot) == profile:
        return Staged(profiles, profile, endpoint, previous, owner, changed=False)
    state.profiles[profile.slot] = profile
    state.priority = [profile.slot, *[s for s in previous if s != profile.slot]]
    profiles.save(state, owner=owner)
    profiles.record("migrate", owner=owner, profile={"slot": profile.slot, "url": endpoint, "version": version}, priority=state.priority)
    return Staged(profiles, profile, endpoint, previous, owner, changed=True)


def migrate(url: str, *, version: str | None = None, root: Path = Path("/"), limit: float = DEFAULT_LIMIT_S,
            interval: float = 5.0) -> tuple[int, dict[str, object]]:
    """Make ``url`` the first network profile (OCPP ``version``, default the configured primary)."""
    staged = stage(url, version=version, root=root)
    if isinstance(staged, str):
        return EXIT_USAGE, {"ok": False, "detail": staged}
    record: dict[str, object] = {"utc": hostops.utcnow(), "slot": staged.profile.slot, "new": url,
                                 "version": staged.profile.version, "previous_priority": staged.previous}
    if not staged.changed:
        return EXIT_OK, {**record, "ok": True, "action": "unchanged"}
    hostops.restart_units()
    smoke, attempts = hostops.wait_healthy(root, limit, interval, give_up_on=_give_up, user=hostops.station_account(root))
    record.update(attempts=attempts, smoke=smoke.summary(), connected_to=_expected(smoke))
    if smoke.ok and _expected(smoke) == staged.endpoint:
        code, record = EXIT_OK, {**record, "ok": True, "action": "migrated"}
    else:
        fell_back = smoke.ok
        code, back = _restore(root, staged.profiles, staged.previous, staged.owner)
        detail = ("the daemon could not connect through the new endpoint and fell back" if fell_back
                  else f"new endpoint not accepted (exit {smoke.exit_code}) after {attempts} check(s)")
        record.update(ok=False, action="reverted" if code == EXIT_OK else "revert-unhealthy", after_revert=back,
                      detail=f"{detail}; previous priority {staged.previous} restored")
        code = EXIT_REVERTED if code == EXIT_OK else EXIT_REVERT_FAILED
    hostops.append_jsonl(root / LOG_PATH, record)
    return code, record


def _restore(root: Path, profiles: ProfileFile, priority: list[int], owner: tuple[int, int] | None) -> tuple[int, dict[str, object]]:
    state = profiles.load()
    state.priority = [s for s in priority if s == CONFIGURED_SLOT or s in state.profiles] or [CONFIGURED_SLOT]
    profiles.save(state, owner=owner)
    profiles.record("migrate-revert", owner=owner, priority=state.priority)
    hostops.restart_units()
    back = hostops.run_smoke(root, user=hostops.station_account(root))
    return (EXIT_OK if back.ok else EXIT_REVERT_FAILED), back.summary()


def revert(*, root: Path = Path("/")) -> tuple[int, dict[str, object]]:
    """Restore the priority from before the last migration."""
    values = hostops.read_env(root / ENV_PATH)
    state_dir = _state_dir(root, values)
    profiles = ProfileFile(state_dir)
    migrations = [h for h in profiles.history(500) if h.get("event") == "migrate"]
    try:
        logged = [json.loads(line) for line in safefile.read_bytes(root / LOG_PATH).decode().splitlines() if line.strip()]
    except (OSError, ValueError):
        logged = []
    before = next((r.get("previous_priority") for r in reversed(logged) if isinstance(r.get("previous_priority"), list)), None)
    if not migrations or before is None:
        return EXIT_USAGE, {"ok": False, "detail": "no migration to revert"}
    code, back = _restore(root, profiles, [int(s) for s in before], _owner(state_dir))
    record = {"utc": hostops.utcnow(), "ok": code == EXIT_OK, "action": "revert", "priority": before, "smoke": back}
    hostops.append_jsonl(root / LOG_PATH, record)
    return code, record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="station-migrate-csms", description=__doc__.split("\n\n")[0].replace("``", ""),
                                     epilog=next(p for p in __doc__.split("\n\n") if p.startswith("Exit codes")))
    parser.add_argument("url", nargs="?", help="new CSMS URL (ws:// or wss://, no credentials)")
    parser.add_argument("--ocpp", choices=["201", "16"], help="OCPP version of the new endpoint (default: OCPP_PRIMARY)")
    parser.add_argument("--limit", type=float, default=DEFAULT_LIMIT_S, help="seconds for BootNotification to be accepted (default %(default)s)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between checks (default %(default)s)")
    parser.add_argument("--revert", action="store_true", help="go back to the priority before the last migration")
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("STATION_ROOT", "/")),
                        help="device root (default $STATION_ROOT or /)")
    args = parser.parse_args(argv)
    if args.revert:
        code, record = revert(root=args.root)
    elif args.url:
        code, record = migrate(args.url, version=args.ocpp, root=args.root, limit=args.limit, interval=args.interval)
    else:
        parser.error("give the new URL or --revert")
    print(json.dumps(record, sort_keys=True))
    if code not in (EXIT_OK,):
        print(f"station-migrate-csms: {record.get('detail') or record.get('action')}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
