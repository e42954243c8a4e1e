"""Attacks on the root-side tools by the `station` user (issue 21): `nobody` stands in for `station`,
owns the state directory and plants links where root is about to write or read; the root tool runs
as a real process. Each test failed on the code before the fix."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.provisioning_support import fake_systemctl

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays root against the station user: needs root")
NOBODY = pwd.getpwnam("nobody")
REPO = Path(__file__).resolve().parents[1]


def root_only_file(path: Path, text: str = "root:$6$secret:19000:0:99999:7:::\n") -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def untouched(path: Path, text: str = "root:$6$secret:19000:0:99999:7:::\n") -> bool:
    info = path.lstat()
    return (stat.S_ISREG(info.st_mode) and path.read_text() == text and (info.st_uid, info.st_gid) == (0, 0)
            and stat.S_IMODE(info.st_mode) == 0o600)


def run_root_tool(module: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO, check=False)


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A device tree: root's env file, the station user's state directory."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    env = root / "etc/ocpp_station.env"
    env.write_text("OCPP_STATION_NAME='CP-1'\nOCPP_201_URL='wss://old.example/ocpp/'\nOCPP_STATION_PASSWORD='pw-1234567890123456'\n")
    env.chmod(0o640)
    state = root / "var/lib/station"
    state.mkdir(parents=True)
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    return root


# ------------------------------------------------------------------------- station-migrate-csms
def test_migrate_csms_does_not_write_or_chown_through_links_the_station_user_planted(device: Path, tmp_path: Path) -> None:
    """Finding 1: a link at the old fixed temp name (and at the history file) pointing at a root-only
    file made `station-migrate-csms` write JSON into it and hand it to the station user."""
    shadow = root_only_file(tmp_path / "shadow")
    state = device / "var/lib/station"
    for planted in (".network-profiles.json.new", "network-profiles.jsonl"):
        (state / planted).symlink_to(shadow)
        os.lchown(state / planted, NOBODY.pw_uid, NOBODY.pw_gid)
    systemctl, _log = fake_systemctl(tmp_path / "bin")
    done = run_root_tool("station.field.migrate", "wss://new.example/ocpp/", "--root", str(device), "--limit", "0.1",
                         "--interval", "0.05", env={"SYSTEMCTL": str(systemctl), "STATION_SMOKE_CMD": "false"})
    assert done.returncode in (1, 3), done.stderr
    assert untouched(shadow)
    profiles = (state / "network-profiles.json").lstat()
    assert stat.S_ISREG(profiles.st_mode) and profiles.st_uid == NOBODY.pw_uid
    assert stat.S_IMODE(profiles.st_mode) == 0o600
