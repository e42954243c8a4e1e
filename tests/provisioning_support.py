"""Shared test doubles for the provisioning tests: a tiny installable release and a systemctl stub.

The release wheel is real (pip installs it into a real venv), but instead of the whole
daemon its `station` command only answers `--once`: healthy, unless its own version is
listed in $FAKE_BROKEN_VERSIONS (then exit 3, "CSMS unreachable").
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import sys
import zipfile
from pathlib import Path

FAKE_STATION = '''\
import json, os, sys

VERSION = "@VERSION@"

def main() -> int:
    v = VERSION
    if "--once" in sys.argv:
        ok = v not in os.environ.get("FAKE_BROKEN_VERSIONS", "").split(",")
        print(json.dumps({"ok": ok, "station_id": "CP-TEST", "software_version": v}))
        return 0 if ok else 3
    return 0
'''
SCRIPTS = ("station", "station-api", "station-update", "station-firstboot")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_fake_wheel(directory: Path, version: str) -> Path:
    """`ocpp_station-<version>-py3-none-any.whl` with console scripts backed by FAKE_STATION."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = f"ocpp_station-{version}.dist-info"
    files = {
        "fake_station_release.py": FAKE_STATION.replace("@VERSION@", version).encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: ocpp-station\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": (
            "[console_scripts]\n" + "".join(f"{s} = fake_station_release:main\n" for s in SCRIPTS)
        ).encode(),
    }
    record = [_record_line(name, data) for name, data in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"ocpp_station-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def pip_command() -> str:
    """pip of the test interpreter, used with --python so release venvs skip ensurepip (fast)."""
    return f"{sys.executable} -m pip"


def fake_systemctl(directory: Path) -> tuple[Path, Path]:
    """A `systemctl` stand-in appending its arguments to a log; returns (script, log)."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "systemctl.log"
    script = directory / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit 0\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def offline_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: no PyPI, no pip noise."""
    env = dict(os.environ)
    env.update({"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra})
    return env


def make_release(root: Path, version: str) -> Path:
    """A ready release directory without pip (fast): its `station --once` behaves like the
    fake wheel's. For tests where the release is scenery, not the thing under test."""
    release = root / "opt/station/releases" / version
    bin_dir = release / "venv/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "station"
    script.write_text(
        "#!/bin/sh\n"
        f'case ",$FAKE_BROKEN_VERSIONS," in *",{version},"*)\n'
        f'  echo \'{{"ok": false, "software_version": "{version}"}}\'; exit 3;;\n'
        "esac\n"
        f'echo \'{{"ok": true, "software_version": "{version}"}}\'\n'
    )
    script.chmod(0o755)
    (release / "VERSION").write_text(version + "\n")
    (release / ".complete").touch()
    return release
