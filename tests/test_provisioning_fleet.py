"""station-fleet: manifest → identity files, with validation and secrets kept out of the manifest."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from station import envfile
from station.field import fleet

HEADER = "station_id,ocpp_primary,ocpp_201_url,ocpp_16_url,password_ref,STATION_MAX_CURRENT_A\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = write(tmp_path, "secrets.env", "CP-0002='from-file'\n")
    path.chmod(0o600)
    return path


def test_csv_manifest_produces_one_0600_identity_per_station(
    tmp_path: Path, secrets_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CP1_PASSWORD", "from-env")
    manifest = write(tmp_path, "fleet.csv", HEADER
                     + "CP-0001,201,wss://csms.example/ocpp/,,env:CP1_PASSWORD,16\n"
                     + "CP-0002,16,,ws://legacy.example:9000/ocpp16/,file:CP-0002,\n")
    out = tmp_path / "out"
    assert fleet.main([str(manifest), "--secrets", str(secrets_file), "--out", str(out)]) == 0
    first = out / "CP-0001/station-identity.env"
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert envfile.read(first) == {
        "OCPP_STATION_NAME": "CP-0001", "OCPP_PRIMARY": "201", "OCPP_201_URL": "wss://csms.example/ocpp/",
        "STATION_MAX_CURRENT_A": "16", "OCPP_STATION_PASSWORD": "from-env",
    }
    assert envfile.read(out / "CP-0002/station-identity.env")["OCPP_STATION_PASSWORD"] == "from-file"


def test_yaml_manifest_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "pw")
    manifest = write(tmp_path, "fleet.yaml", """
defaults: {ocpp_primary: "201", ocpp_201_url: "wss://csms.example/ocpp/", password_ref: "env:PW"}
stations:
  - {station_id: CP-A}
  - {station_id: CP-B, heartbeat_seconds: 60}
""")
    stations = fleet.build(fleet.load_rows(manifest), {}, {"PW": "pw"})
    assert [s.station_id for s in stations] == ["CP-A", "CP-B"]
    assert stations[1].values["OCPP_HEARTBEAT_SECONDS"] == "60"


def test_every_problem_is_reported_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANARY_PW", "canary-secret-123")
    manifest = write(tmp_path, "fleet.csv", HEADER
                     + "CP-1,201,wss://csms.example/ocpp/,,env:CANARY_PW,\n"
                     + "CP-1,201,wss://csms.example/ocpp/,,env:CANARY_PW,\n"
                     + "CP-2,201,https://csms.example/ocpp/,,env:CANARY_PW,\n"
                     + "CP-3,201,wss://user:pw@csms.example/,,env:CANARY_PW,\n"
                     + "CP 4,201,wss://csms.example/,,env:CANARY_PW,\n"
                     + "CP-5,16,wss://csms.example/,,env:CANARY_PW,\n"
                     + "CP-6,201,wss://csms.example/,,hunter2,\n"
                     + "CP-7,201,wss://csms.example/,,env:UNSET_VARIABLE,\n")
    out = tmp_path / "out"
    assert fleet.main([str(manifest), "--out", str(out)]) == fleet.EXIT_INVALID
    err = capsys.readouterr().err
    for expected in ("duplicate station_id 'CP-1'", "ws:// or wss://", "carries credentials", "'CP 4'",
                     "no URL for its primary OCPP version 16", "password_ref must be env:NAME or file:KEY",
                     "UNSET_VARIABLE is not set"):
        assert expected in err
    assert "canary-secret-123" not in err and "hunter2" not in err
    assert not out.exists()


def test_a_password_column_in_the_manifest_is_refused(tmp_path: Path) -> None:
    manifest = write(tmp_path, "fleet.csv", "station_id,ocpp_201_url,password\nCP-1,wss://c.example/,clear\n")
    with pytest.raises(fleet.ManifestError, match="would put a secret in the manifest"):
        fleet.build(fleet.load_rows(manifest), {}, {})


def test_check_mode_validates_without_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PW", "x")
    manifest = write(tmp_path, "fleet.csv", HEADER + "CP-1,201,wss://csms.example/,,env:PW,\n")
    assert fleet.main([str(manifest), "--check"]) == 0
    assert "1 stations valid" in capsys.readouterr().out
