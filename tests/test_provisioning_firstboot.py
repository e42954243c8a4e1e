"""station-firstboot: identity from the boot partition → /etc/ocpp_station.env, safely re-runnable."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from station import envfile
from station.field import firstboot

IDENTITY = "OCPP_STATION_NAME='CP-0042'\nOCPP_STATION_PASSWORD='s3cr$t #pw'\nOCPP_201_URL='wss://csms.example/ocpp/'\n"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STATION_SMOKE_CMD", "sh -c 'echo {\"ok\": true}'")
    (tmp_path / "boot/firmware").mkdir(parents=True)
    return tmp_path


def test_identity_file_is_installed_0640_and_removed_from_the_boot_partition(root: Path) -> None:
    source = root / "boot/firmware/station-identity.env"
    source.write_text(IDENTITY)
    assert firstboot.main(["--root", str(root)]) == 0
    env_path = root / "etc/ocpp_station.env"
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o640  # root:station: the daemon reads, cannot write
    values = envfile.read(env_path)
    assert values["OCPP_STATION_NAME"] == "CP-0042"
    assert values["OCPP_STATION_PASSWORD"] == "s3cr$t #pw"  # survives quoting intact
    assert len(values["STATION_API_TOKEN"]) >= 32
    assert not source.exists()


def test_smoke_result_is_recorded_without_secrets(root: Path) -> None:
    (root / "boot/firmware/station-identity.env").write_text(IDENTITY)
    firstboot.main(["--root", str(root)])
    text = (root / "var/lib/station/firstboot.json").read_text()
    record = json.loads(text)
    assert record["identity"] == "installed" and record["smoke"]["exit_code"] == 0
    assert "s3cr$t" not in text and envfile.read(root / "etc/ocpp_station.env")["STATION_API_TOKEN"] not in text


def test_rerun_without_identity_file_keeps_identity_and_token(root: Path) -> None:
    (root / "boot/firmware/station-identity.env").write_text(IDENTITY)
    firstboot.main(["--root", str(root)])
    before = (root / "etc/ocpp_station.env").read_text()
    assert firstboot.main(["--root", str(root)]) == 0
    assert (root / "etc/ocpp_station.env").read_text() == before
    assert json.loads((root / "var/lib/station/firstboot.json").read_text())["identity"] == "kept"


def test_new_identity_file_replaces_identity_but_keeps_the_api_token(root: Path) -> None:
    (root / "boot/firmware/station-identity.env").write_text(IDENTITY)
    firstboot.main(["--root", str(root)])
    token = envfile.read(root / "etc/ocpp_station.env")["STATION_API_TOKEN"]
    (root / "boot/firmware/station-identity.env").write_text(IDENTITY.replace("CP-0042", "CP-0043"))
    firstboot.main(["--root", str(root)])
    values = envfile.read(root / "etc/ocpp_station.env")
    assert values["OCPP_STATION_NAME"] == "CP-0043" and values["STATION_API_TOKEN"] == token


def test_without_any_identity_the_device_reports_unprovisioned(root: Path) -> None:
    assert firstboot.main(["--root", str(root)]) == firstboot.EXIT_UNPROVISIONED
    assert not (root / "etc/ocpp_station.env").exists()
    assert json.loads((root / "var/lib/station/firstboot.json").read_text())["identity"] == "missing"


def test_invalid_identity_is_left_in_place_and_nothing_installed(root: Path) -> None:
    source = root / "boot/firmware/station-identity.env"
    source.write_text("OCPP_STATION_PASSWORD='x'\n")
    assert firstboot.main(["--root", str(root)]) == firstboot.EXIT_BAD_IDENTITY
    assert source.exists() and not (root / "etc/ocpp_station.env").exists()


def test_failing_smoke_test_gives_exit_10_but_keeps_the_identity(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATION_SMOKE_CMD", "sh -c 'exit 3'")
    (root / "boot/station-identity.env").write_text(IDENTITY)  # older images: /boot
    assert firstboot.main(["--root", str(root)]) == firstboot.EXIT_SMOKE_FAILED
    assert envfile.read(root / "etc/ocpp_station.env")["OCPP_STATION_NAME"] == "CP-0042"
