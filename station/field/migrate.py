"""Move a station to a new CSMS endpoint, reverting by itself if it never gets in
(``station-migrate-csms``).

How seed operators moved chargers: change the URL in ``/etc/ocpp_station.env``, keep the old
one beside it (``OCPP_201_URL_PREVIOUS`` / ``OCPP_16_URL_PREVIOUS``) as the fallback, restart
the daemon and wait for ``station --once`` to report a BootNotification accepted by the new
CSMS (exit 0). If that does not happen within ``--limit`` seconds — or the new CSMS rejects
the password (exit 4) or the configuration is unusable (exit 78), which waiting cannot
fix — the previous URL goes back, the daemon restarts, and the outcome is logged in
``/var/lib/station-update/migrations.jsonl``. ``--revert`` goes back to the fallback by hand.

Exit codes: 0 migrated (or reverted on request), 1 new endpoint failed and was reverted,
2 usage error, 3 reverted but the old endpoint is unhealthy too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from station import envfile
from station.field import hostops
from station.field.fleet import check_url

ENV_PATH = Path("etc/ocpp_station.env")
LOG_PATH = Path("var/lib/station-update/migrations.jsonl")
EXIT_OK, EXIT_REVERTED, EXIT_USAGE, EXIT_REVERT_FAILED = 0, 1, 2, 3
DEFAULT_LIMIT_S = 300.0


def _variable(version: str) -> str:
    return "OCPP_201_URL" if version == "201" else "OCPP_16_URL"


def _write(root: Path, values: dict[str, str]) -> None:
    path = root / ENV_PATH
    info = path.stat()
    header = "Written by station-migrate-csms (previous URLs kept as *_PREVIOUS). Mode 0600."
    owner = (info.st_uid, info.st_gid) if os.geteuid() == 0 else None
    envfile.write_atomic(path, envfile.render(values, header), owner=owner)


def _give_up(code: int) -> bool:
    return code in (hostops.EXIT_AUTH_FAILURE, hostops.EXIT_CONFIG)


def migrate(url: str, *, version: str | None = None, root: Path = Path("/"), limit: float = DEFAULT_LIMIT_S, interval: float = 5.0) -> tuple[int, dict[str, object]]:
    """Switch the endpoint for ``version`` (default: the configured primary) to ``url``."""
    values = envfile.read(root / ENV_PATH)
    version = version or values.get("OCPP_PRIMARY", "201")
    variable = _variable(version)
    old = values.get(variable, "")
    problem = check_url("new URL", url)
    if problem or not values.get("OCPP_STATION_NAME"):
        return EXIT_USAGE, {"ok": False, "detail": problem or f"{ENV_PATH} has no station identity"}
    record: dict[str, object] = {"utc": hostops.utcnow(), "variable": variable, "new": url, "previous": old}
    if old == url:
        return EXIT_OK, {**record, "ok": True, "action": "unchanged"}
    updated = {**values, variable: url}
    if old:
        updated[f"{variable}_PREVIOUS"] = old
    _write(root, updated)
    hostops.restart_units()
    smoke, attempts = hostops.wait_healthy(root, limit, interval, give_up_on=_give_up)
    record.update(attempts=attempts, smoke=smoke.summary())
    if smoke.ok:
        code, record = EXIT_OK, {**record, "ok": True, "action": "migrated"}
    else:
        _write(root, values)
        hostops.restart_units()
        back = hostops.run_smoke(root)
        reverted_ok = back.ok
        record.update(ok=False, action="reverted" if reverted_ok else "revert-unhealthy", after_revert=back.summary(),
                      detail=f"new endpoint not accepted (exit {smoke.exit_code}) after {attempts} attempt(s); {variable} restored")
        code = EXIT_REVERTED if reverted_ok else EXIT_REVERT_FAILED
    hostops.append_jsonl(root / LOG_PATH, record)
    return code, record


def revert(*, version: str | None = None, root: Path = Path("/")) -> tuple[int, dict[str, object]]:
    """Put the ``*_PREVIOUS`` URL back (and keep the abandoned one as the new fallback)."""
    values = envfile.read(root / ENV_PATH)
    variable = _variable(version or values.get("OCPP_PRIMARY", "201"))
    previous = values.get(f"{variable}_PREVIOUS")
    if not previous:
        return EXIT_USAGE, {"ok": False, "detail": f"no {variable}_PREVIOUS to go back to"}
    _write(root, {**values, variable: previous, f"{variable}_PREVIOUS": values.get(variable, "")})
    hostops.restart_units()
    smoke = hostops.run_smoke(root)
    record = {"utc": hostops.utcnow(), "ok": smoke.ok, "action": "revert", "variable": variable, "new": previous, "smoke": smoke.summary()}
    hostops.append_jsonl(root / LOG_PATH, record)
    return (EXIT_OK if smoke.ok else EXIT_REVERT_FAILED), record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="station-migrate-csms", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="new CSMS URL (ws:// or wss://, no credentials)")
    parser.add_argument("--ocpp", choices=["201", "16"], help="which endpoint (default: OCPP_PRIMARY)")
    parser.add_argument("--limit", type=float, default=DEFAULT_LIMIT_S, help="seconds for BootNotification to be accepted (default %(default)s)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between checks (default %(default)s)")
    parser.add_argument("--revert", action="store_true", help="go back to the previous URL")
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("STATION_ROOT", "/")))
    args = parser.parse_args(argv)
    if args.revert:
        code, record = revert(version=args.ocpp, root=args.root)
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
