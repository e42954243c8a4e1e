"""station-migrate-csms: the new endpoint becomes the first network profile (the mechanism of OCPP
SetNetworkProfile) and stays only if BootNotification is accepted through it in time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from station.field import migrate
from station.network_profiles import ProfileFile
from tests.provisioning_support import calls, fake_systemctl

OLD = "wss://old.example/ocpp/"
NEW = "wss://new.example/ocpp/"

DAEMON_STANDIN = '''
import json, os, sys
from pathlib import Path
state_file = Path(sys.argv[1]) / "network-profiles.json"
state = json.loads(state_file.read_text()) if state_file.exists() else {"profiles": {}, "priority": [0]}
accepting = os.environ.get("ACCEPTING", "").split(",")
for slot in state["priority"]:
    url = sys.argv[2] if slot == 0 else state["profiles"][str(slot)]["url"]
    if url in accepting:  # what the daemon does: each profile in priority order, fallback to the next
        print(json.dumps({"ok": True, "station_id": "CP-1", "ocpp": {"url": url + "CP-1"}}))
        sys.exit(0)
sys.exit(int(os.environ.get("FAIL_CODE", "3")))
'''


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    systemctl, log = fake_systemctl(tmp_path / "bin")
    monkeypatch.setenv("SYSTEMCTL", str(systemctl))
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/ocpp_station.env").write_text(
        f"OCPP_STATION_NAME='CP-1'\nOCPP_PRIMARY='201'\nOCPP_201_URL='{OLD}'\nOCPP_STATION_PASSWORD='pw-123456'\n")
    (root / "etc/ocpp_station.env").chmod(0o600)
    (root / "var/lib/station").mkdir(parents=True)
    (root / "log").symlink_to(log)
    script = tmp_path / "standin.py"
    script.write_text(DAEMON_STANDIN)
    monkeypatch.setenv("STATION_SMOKE_CMD", f"{sys.executable} {script} {root}/var/lib/station {OLD}")
    return root


def state(root: Path) -> ProfileFile:
    return ProfileFile(root / "var/lib/station")


def test_accepted_endpoint_goes_first_with_the_old_one_behind_it(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCEPTING", f"{OLD},{NEW}")
    code, record = migrate.migrate(NEW, root=root, limit=1, interval=0.05)
    assert code == 0 and record["action"] == "migrated"
    loaded = state(root).load()
    assert loaded.priority == [1, 0] and loaded.profiles[1].url == NEW
    assert calls(root / "log") == ["restart station.service station-api.service"]
    assert f"OCPP_201_URL='{OLD}'" in (root / "etc/ocpp_station.env").read_text()  # profile 0 stays as installed


def test_when_the_daemon_falls_back_the_previous_priority_is_restored(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCEPTING", OLD)
    code, record = migrate.migrate(NEW, root=root, limit=5, interval=0.05)
    assert code == migrate.EXIT_REVERTED and record["action"] == "reverted"
    assert "fell back" in str(record["detail"]) and record["attempts"] == 1
    assert state(root).load().priority == [0]
    assert len(calls(root / "log")) == 2
    logged = json.loads((root / "var/lib/station-update/migrations.jsonl").read_text().splitlines()[-1])
    assert logged["action"] == "reverted"
    assert [h["event"] for h in state(root).history()] == ["migrate", "migrate-revert"]


def test_an_endpoint_that_never_answers_is_reverted_after_the_limit(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCEPTING", "")
    code, record = migrate.migrate(NEW, root=root, limit=0.3, interval=0.05)
    assert code == migrate.EXIT_REVERT_FAILED and int(str(record["attempts"])) >= 2
    assert state(root).load().priority == [0]


def test_authentication_failure_reverts_at_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCEPTING", "")
    monkeypatch.setenv("FAIL_CODE", "4")
    code, record = migrate.migrate(NEW, root=root, limit=60, interval=0.05)
    assert record["attempts"] == 1 and state(root).load().priority == [0]


def test_profile_file_is_0600(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCEPTING", f"{OLD},{NEW}")
    migrate.migrate(NEW, root=root, limit=1, interval=0.05)
    assert (root / "var/lib/station/network-profiles.json").stat().st_mode & 0o777 == 0o600


def test_manual_revert_restores_the_priority_before_the_migration(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCEPTING", f"{OLD},{NEW}")
    migrate.migrate(NEW, root=root, limit=1, interval=0.05)
    assert migrate.main(["--revert", "--root", str(root)]) == 0
    assert state(root).load().priority == [0]


@pytest.mark.parametrize("url", ["https://new.example/", "ws://new.example/ocpp/"])
def test_a_url_that_cannot_work_is_refused_without_touching_anything(root: Path, url: str) -> None:
    # https: not a WebSocket; ws:// while the station runs security profile 2 (wss + password): a downgrade
    (root / "etc/ocpp_station.env").write_text((root / "etc/ocpp_station.env").read_text())
    assert migrate.main([url, "--root", str(root)]) == migrate.EXIT_USAGE
    assert not (root / "var/lib/station/network-profiles.json").exists()
    assert calls(root / "log") == []
