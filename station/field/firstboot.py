"""First-boot provisioning of a device imaged from the golden SSD (``station-firstboot``).

The golden image carries no identity. The fleet tool writes one ``station-identity.env`` per
device onto the boot partition (FAT, readable from any laptop); at first boot this installs
it as ``/etc/ocpp_station.env`` (``root:station`` 0640: the daemon reads its configuration,
only root changes it), deletes the source (it holds the password on a world-readable partition),
generates the local API token, regenerates SSH host keys if the image has none, and runs
``station --once`` as the ``station`` user (release code never runs as root when it need not),
recording its result in ``/var/lib/station/firstboot.json``. Files in the station's state
directory are written through `station.storage.safefile` (the directory is the station user's). Running it again is safe: without an identity file it
keeps the installed identity, keeps the token, and only repeats the smoke test.

Exit codes: 0 provisioned and healthy, 2 no identity anywhere (device not provisioned),
65 identity file invalid (left in place for inspection), 10 provisioned but the smoke test
failed (see firstboot.json and docs/troubleshooting.md).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from station import envfile
from station.field import hostops
from station.storage import safefile

IDENTITY_NAME = "station-identity.env"
BOOT_DIRS = ("boot/firmware", "boot")
ENV_PATH = Path("etc/ocpp_station.env")
RECORD_PATH = Path("var/lib/station/firstboot.json")
REQUIRED = ("OCPP_STATION_NAME",)
URL_KEYS = ("OCPP_201_URL", "OCPP_16_URL")
TOKEN_KEY = "STATION_API_TOKEN"
ENV_MODE = 0o640
EXIT_OK, EXIT_UNPROVISIONED, EXIT_SMOKE_FAILED, EXIT_BAD_IDENTITY = 0, 2, 10, 65
TEMPLATES = (  # installed by install.sh; the source tree's copy when run from a checkout
    Path("opt/station/ocpp_station.env.template"),
    Path(__file__).resolve().parent.parent / "provisioning/ocpp_station.env.template",
)


def _template(root: Path) -> dict[str, str]:
    for candidate in TEMPLATES:
        path = root / candidate
        if path.is_file():
            return hostops.read_env(path)
    return {}


def find_identity(root: Path, boot_dirs: Sequence[str] = BOOT_DIRS) -> Path | None:
    for directory in boot_dirs:
        candidate = root / directory / IDENTITY_NAME
        if candidate.is_file():
            return candidate
    return None


def env_file_owner(root: Path) -> tuple[int, int] | None:
    """``(root, station's group)`` for the env file, from the tree's passwd; None when not root or unknown."""
    station = hostops.station_account(root)
    return (0, station.gid) if station is not None else None


def install_env_file(root: Path, text: str) -> None:
    """``/etc/ocpp_station.env``: root:station 0640, replaced in one rename, never through a link."""
    with safefile.open_dir(root / ENV_PATH.parent, make=0o755) as etc:
        etc.replace(ENV_PATH.name, text, mode=ENV_MODE, owner=env_file_owner(root))


def validate_identity(values: dict[str, str]) -> list[str]:
    """Problems with an identity (named by variable, never showing secret values)."""
    problems = [f"{key} is missing" for key in REQUIRED if not values.get(key)]
    if not any(values.get(key) for key in URL_KEYS):
        problems.append("neither OCPP_201_URL nor OCPP_16_URL is set")
    for key, value in values.items():
        try:
            envfile.check(key, value)
        except envfile.EnvFileError as exc:
            problems.append(str(exc))
    return problems


def _regenerate_ssh_host_keys(root: Path) -> str:
    ssh_dir = root / "etc/ssh"
    keygen = shutil.which("ssh-keygen")
    if not ssh_dir.is_dir():
        return "no /etc/ssh: skipped"
    if any(ssh_dir.glob("ssh_host_*_key")):
        return "present"
    if keygen is None:
        return "ssh-keygen missing: skipped"
    args = [keygen, "-A"] if root == Path("/") else [keygen, "-A", "-f", str(root)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    return "generated" if proc.returncode == 0 else f"ssh-keygen failed ({proc.returncode})"


def provision(root: Path = Path("/"), *, boot_dirs: Sequence[str] = BOOT_DIRS, smoke: bool = True) -> tuple[int, dict[str, object]]:
    """Install the identity if one waits, ensure the API token, run the smoke test; returns
    (exit code, record written to firstboot.json)."""
    env_path = root / ENV_PATH
    record: dict[str, object] = {"utc": hostops.utcnow()}
    current = hostops.read_env(env_path)
    identity_file = find_identity(root, boot_dirs)
    if identity_file is not None:
        identity = hostops.read_env(identity_file)
        problems = validate_identity(identity)
        if problems:
            record.update(identity="invalid", problems=problems, source=str(identity_file))
            return EXIT_BAD_IDENTITY, record
        base = current or _template(root)
        merged = {**base, **identity}
        if current.get(TOKEN_KEY) and not identity.get(TOKEN_KEY):
            merged[TOKEN_KEY] = current[TOKEN_KEY]
        record["identity"] = "installed"
        record["source"] = str(identity_file)
    elif current.get("OCPP_STATION_NAME"):
        merged = dict(current)
        record["identity"] = "kept"
    else:
        record["identity"] = "missing"
        record["detail"] = f"no {IDENTITY_NAME} in {', '.join('/' + d for d in boot_dirs)} and {ENV_PATH} has no station name"
        return EXIT_UNPROVISIONED, record
    token_generated = not merged.get(TOKEN_KEY)
    if token_generated:
        merged[TOKEN_KEY] = secrets.token_urlsafe(32)
    record["api_token"] = "generated" if token_generated else "kept"
    if merged != current:
        header = "Written by station-firstboot; identity from the fleet manifest. root:station, mode 0640."
        install_env_file(root, envfile.render(merged, header))
    if identity_file is not None:
        with safefile.open_dir(identity_file.parent) as boot:
            boot.unlink(identity_file.name)  # the password must not stay on the FAT boot partition
    record["station_id"] = merged.get("OCPP_STATION_NAME")
    record["ssh_host_keys"] = _regenerate_ssh_host_keys(root)
    code = EXIT_OK
    if smoke:
        result = hostops.run_smoke(root, user=hostops.station_account(root))
        record["smoke"] = result.summary()
        code = EXIT_OK if result.ok else EXIT_SMOKE_FAILED
    return code, record


def _write_record(root: Path, record: dict[str, object]) -> None:
    """firstboot.json in the station's state directory (created for the station user when missing)."""
    account = hostops.station_account(root)
    station = (account.uid, account.gid) if account is not None else None
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    with safefile.open_dir(root / RECORD_PATH.parent.parent, make=0o755) as var_lib, \
            var_lib.mkdir(RECORD_PATH.parent.name, mode=0o700, owner=station) as state:
        state.replace(RECORD_PATH.name, text, mode=0o640, owner=state.owner())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="station-firstboot", description=__doc__.split("\n\n")[0].replace("``", ""),
                                     epilog=next(p for p in __doc__.split("\n\n") if p.startswith("Exit codes")))
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("STATION_ROOT", "/")),
                        help="device root (default $STATION_ROOT or /)")
    parser.add_argument("--boot-dir", action="append", help="where station-identity.env may be (relative to root)")
    parser.add_argument("--no-smoke", action="store_true", help="skip station --once")
    args = parser.parse_args(argv)
    code, record = provision(args.root, boot_dirs=args.boot_dir or BOOT_DIRS, smoke=not args.no_smoke)
    record["exit_code"] = code
    _write_record(args.root, record)
    print(json.dumps(record, sort_keys=True))
    if code != EXIT_OK:
        print(f"station-firstboot: {record.get('detail') or record.get('problems') or 'smoke test failed'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
