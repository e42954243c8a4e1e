"""station-migrate-csms: new endpoint kept only if BootNotification is accepted in time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from station import envfile
from station.field import migrate
from tests.provisioning_support import calls, fake_systemctl

OLD = "wss://old.example/ocpp/"
NEW = "wss://new.example/ocpp/"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    systemctl, log = fake_systemctl(tmp_path / "bin")
    monkeypatch.setenv("SYSTEMCTL", str(systemctl))
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/ocpp_station.env").write_text(f"OCPP_STATION_NAME='CP-1'\nOCPP_PRIMARY='201'\nOCPP_201_URL='{OLD}'\n")
    (root / "etc/ocpp_station.env").chmod(0o600)
    (root / "log").symlink_to(log)
    return root


def smoke_accepting(monkeypatch: pytest.MonkeyPatch, root: Path, url: str, failure_code: int = 3) -> None:
    """`station --once` stand-in: healthy only while the env file names `url`."""
    monkeypatch.setenv("STATION_SMOKE_CMD", f"sh -c 'grep -q \"^OCPP_201_URL=.{url}\" {root}/etc/ocpp_station.env || exit {failure_code}'")


def test_accepted_endpoint_is_kept_with_the_old_one_as_fallback(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smoke_accepting(monkeypatch, root, NEW)
    code, record = migrate.migrate(NEW, root=root, limit=1, interval=0.05)
    assert code == 0 and record["action"] == "migrated"
    values = envfile.read(root / "etc/ocpp_station.env")
    assert values["OCPP_201_URL"] == NEW and values["OCPP_201_URL_PREVIOUS"] == OLD
    assert calls(root / "log") == ["restart station.service station-api.service"]


def test_endpoint_that_never_accepts_is_reverted_after_the_limit(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smoke_accepting(monkeypatch, root, OLD)
    code, record = migrate.migrate(NEW, root=root, limit=0.3, interval=0.05)
    assert code == migrate.EXIT_REVERTED and record["action"] == "reverted"
    assert envfile.read(root / "etc/ocpp_station.env")["OCPP_201_URL"] == OLD
    assert len(calls(root / "log")) == 2
    logged = json.loads((root / "var/lib/station-update/migrations.jsonl").read_text().splitlines()[-1])
    assert logged["action"] == "reverted" and int(str(logged["attempts"])) >= 2


def test_authentication_failure_reverts_at_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smoke_accepting(monkeypatch, root, OLD, failure_code=4)
    code, record = migrate.migrate(NEW, root=root, limit=60, interval=0.05)
    assert code == migrate.EXIT_REVERTED and record["attempts"] == 1


def test_env_file_stays_0600_through_migration(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smoke_accepting(monkeypatch, root, NEW)
    migrate.migrate(NEW, root=root, limit=1, interval=0.05)
    assert (root / "etc/ocpp_station.env").stat().st_mode & 0o777 == 0o600


def test_manual_revert_restores_the_previous_url(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smoke_accepting(monkeypatch, root, "wss://")
    migrate.migrate(NEW, root=root, limit=1, interval=0.05)
    assert migrate.main(["--revert", "--root", str(root)]) == 0
    values = envfile.read(root / "etc/ocpp_station.env")
    assert values["OCPP_201_URL"] == OLD and values["OCPP_201_URL_PREVIOUS"] == NEW


def test_bad_url_is_refused_without_touching_anything(root: Path) -> None:
    before = (root / "etc/ocpp_station.env").read_text()
    assert migrate.main(["https://new.example/", "--root", str(root)]) == migrate.EXIT_USAGE
    assert (root / "etc/ocpp_station.env").read_text() == before
