"""provisioning/ansible/rollout.yml: batched rollout gated on `station --once`, run by real
ansible-playbook against localhost (connection: local), one temp root per "station"."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from station.field import update
from tests.provisioning_support import build_fake_wheel, fake_systemctl, make_release, offline_env, pip_command

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = REPO / "provisioning/ansible/rollout.yml"
ANSIBLE = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or shutil.which("ansible-playbook")
pytestmark = pytest.mark.skipif(ANSIBLE is None, reason="ansible-core not installed (it is in the test extra)")
STATIONS = ["cp-1", "cp-2", "cp-3", "cp-4"]


def current(root: Path) -> str | None:
    layout = update.Layout(root)
    return layout.version_of(layout.current)


def test_rollout_stops_past_the_failure_threshold_and_rolls_back_failed_stations(tmp_path: Path) -> None:
    systemctl, _ = fake_systemctl(tmp_path / "bin")
    wheel = build_fake_wheel(tmp_path / "wheels", "2.0.0")
    hosts = {}
    for name in STATIONS:
        root = tmp_path / name
        make_release(root, "1.0.0")
        update.switch("1.0.0", root=root)
        hosts[name] = {
            "station_root": str(root),
            # cp-2 cannot reach its CSMS on 2.0.0: its smoke test fails, 1.0.0 still passes.
            "station_env": {"FAKE_BROKEN_VERSIONS": "2.0.0" if name == "cp-2" else "",
                            "SYSTEMCTL": str(systemctl), "STATION_PIP": pip_command(), "PIP_NO_INDEX": "1"},
        }
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"stations": {"hosts": hosts, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "station_become": False,
        "station_update_cmd": f"{sys.executable} -m station.field.update",
        "rollout_batch": 2, "rollout_max_fail_percent": 25,
        "release_grace_seconds": 1, "release_interval_seconds": 0.1, "gate_retries": 1, "gate_delay_seconds": 0,
    }}}))
    env = offline_env(ANSIBLE_HOME=str(tmp_path / "ansible"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible/tmp"),
                      ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_FORKS="2")
    result = subprocess.run(
        [str(ANSIBLE), "-i", str(inventory), str(PLAYBOOK),
         "-e", "release_version=2.0.0", "-e", f"release_artefact={wheel}"],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out  # the rollout was stopped
    assert current(tmp_path / "cp-1") == "2.0.0", out
    assert current(tmp_path / "cp-2") == "1.0.0", out  # failed → back on the old release
    assert current(tmp_path / "cp-3") == "1.0.0" and current(tmp_path / "cp-4") == "1.0.0"
    assert not (tmp_path / "cp-3/opt/station/releases/2.0.0").exists()  # second batch never started
    assert "cp-2 failed release 2.0.0" in out


def test_healthy_rollout_updates_every_station_in_batches(tmp_path: Path) -> None:
    systemctl, log = fake_systemctl(tmp_path / "bin")
    wheel = build_fake_wheel(tmp_path / "wheels", "2.1.0")
    hosts = {}
    for name in STATIONS[:2]:
        root = tmp_path / name
        make_release(root, "1.0.0")
        update.switch("1.0.0", root=root)
        hosts[name] = {"station_root": str(root),
                       "station_env": {"SYSTEMCTL": str(systemctl), "STATION_PIP": pip_command(), "PIP_NO_INDEX": "1"}}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"stations": {"hosts": hosts, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "station_become": False,
        "station_update_cmd": f"{sys.executable} -m station.field.update", "rollout_batch": 2,
        "release_grace_seconds": 1, "release_interval_seconds": 0.1,
    }}}))
    env = offline_env(ANSIBLE_HOME=str(tmp_path / "ansible"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible/tmp"),
                      ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
    result = subprocess.run(
        [str(ANSIBLE), "-i", str(inventory), str(PLAYBOOK), "-e", "release_version=2.1.0", "-e", f"release_artefact={wheel}"],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(current(tmp_path / name) == "2.1.0" for name in STATIONS[:2])
    assert len(log.read_text().splitlines()) == 2  # one restart per station
