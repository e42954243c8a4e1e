"""Configuration: precedence, the field's variable names, secret masking, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from station.config import ConfigError, Settings, describe, load, variable_of

CANARY = "canary-Pw-7f3a9"


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "ocpp_station.env"
    path.write_text(
        "OCPP_STATION_NAME=ORGE_AC_001\n"
        f"OCPP_STATION_PASSWORD={CANARY}\n"
        "OCPP_PRIMARY=16\n"
        "OCPP_201_URL=wss://csms.example/ocpp/ORGE_AC_001\n"
        "OCPP_16_URL=ws://csms.example/ocpp16/\n"
        "OCPP_HEARTBEAT_SECONDS=120\n"
        "STATION_ESP32_PORT=/dev/ttyUSB7\n"
    )
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith(("OCPP_", "STATION_")) and var != "STATION_ENV_FILE":
            monkeypatch.delenv(var)


def test_field_variable_names_are_read_from_the_env_file(env_file: Path) -> None:
    s = load(env_file=env_file).settings
    assert s.station_name == "ORGE_AC_001"
    assert s.station_password is not None and s.station_password.get_secret_value() == CANARY
    assert s.ocpp_primary == "16"
    assert s.ocpp_201_url == "wss://csms.example/ocpp/ORGE_AC_001"
    assert s.ocpp_16_url == "ws://csms.example/ocpp16/"
    assert s.heartbeat_seconds == 120


def test_environment_overrides_the_env_file(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCPP_HEARTBEAT_SECONDS", "30")
    loaded = load(env_file=env_file)
    assert loaded.settings.heartbeat_seconds == 30
    assert loaded.sources["heartbeat_seconds"] == "env"


@pytest.mark.parametrize(("text", "profile"), [("0", 0), ("2", 2), ("3", 3)])
def test_the_security_profile_is_read_from_the_environment(env_file: Path, monkeypatch: pytest.MonkeyPatch,
                                                           text: str, profile: int, tmp_path: Path) -> None:
    monkeypatch.setenv("STATION_SECURITY_PROFILE", text)
    monkeypatch.setenv("OCPP_16_URL", "wss://csms.example/ocpp16/")  # profiles 2 and 3: TLS on every URL
    for var in ("STATION_CLIENT_CERT", "STATION_CLIENT_KEY"):  # profile 3: a certificate and its key
        (tmp_path / var).write_text("PEM")
        monkeypatch.setenv(var, str(tmp_path / var))
    assert load(env_file=env_file).settings.security_profile == profile


def test_a_security_profile_above_3_is_refused(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATION_SECURITY_PROFILE", "4")
    with pytest.raises(ConfigError, match="STATION_SECURITY_PROFILE"):
        load(env_file=env_file)


def test_cli_flag_overrides_the_environment(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATION_ESP32_PORT", "/dev/ttyAMA0")
    loaded = load({"esp32_port": "/dev/esp32"}, env_file=env_file)
    assert loaded.settings.esp32_port == "/dev/esp32"
    assert loaded.sources["esp32_port"] == "cli"


def test_sources_name_the_env_file_and_defaults(env_file: Path) -> None:
    loaded = load(env_file=env_file)
    assert loaded.sources["station_name"] == f"file:{env_file}"
    assert loaded.sources["max_current_a"] == "default"


def test_config_rows_mask_secrets(env_file: Path) -> None:
    rows = {r["variable"]: r for r in describe(load(env_file=env_file))}
    assert rows["OCPP_STATION_PASSWORD"]["value"] == "***"
    assert CANARY not in repr(rows)


def test_invalid_value_names_the_variable_and_the_expectation(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCPP_HEARTBEAT_SECONDS", "often")
    with pytest.raises(ConfigError) as err:
        load(env_file=env_file)
    assert "OCPP_HEARTBEAT_SECONDS='often'" in str(err.value)
    assert "integer" in str(err.value)


def test_invalid_primary_version_is_explained(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCPP_PRIMARY", "20")
    with pytest.raises(ConfigError, match=r"OCPP_PRIMARY='20': .*'201' or '16'"):
        load(env_file=env_file)


def test_missing_station_name_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "e.env"
    path.write_text("OCPP_201_URL=ws://127.0.0.1:9/\n")
    with pytest.raises(ConfigError, match="OCPP_STATION_NAME is missing"):
        load(env_file=path)


def test_missing_csms_url_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "e.env"
    path.write_text("OCPP_STATION_NAME=X1\n")
    with pytest.raises(ConfigError, match="OCPP_201_URL or OCPP_16_URL must be set"):
        load(env_file=path)


def test_non_websocket_url_is_refused(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCPP_201_URL", "http://csms.example/")
    with pytest.raises(ConfigError, match="OCPP_201_URL='http://csms.example/': expected a ws:// or wss:// URL"):
        load(env_file=env_file)


def test_secret_in_an_invalid_setting_is_masked_in_the_error(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATION_API_TOKEN", "")
    monkeypatch.setenv("STATION_MAX_CURRENT_A", "64")
    with pytest.raises(ConfigError) as err:
        load(env_file=env_file)
    assert CANARY not in str(err.value)
    assert "STATION_MAX_CURRENT_A='64'" in str(err.value)


def test_named_env_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(env_file=tmp_path / "nope.env")


def test_unreadable_env_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "binary.env"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot be read"):
        load(env_file=path)


def test_unparseable_env_file_line_is_an_error_naming_the_line_not_its_text(tmp_path: Path) -> None:
    path = tmp_path / "broken.env"
    path.write_text(f"OCPP_STATION_NAME=ORGE_AC_001\nOCPP_STATION_PASSWORD=\"{CANARY}\n")
    with pytest.raises(ConfigError, match="line 2 is not KEY=value") as err:
        load(env_file=path)
    assert CANARY not in str(err.value)


def run_station(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    return subprocess.run([sys.executable, "-m", "station", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=60)


def test_config_show_prints_sources_and_masks_the_password(env_file: Path) -> None:
    result = run_station("config", "show", "--env-file", str(env_file), "--esp32-port", "/dev/x",
                         env={"OCPP_HEARTBEAT_SECONDS": "45"})
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line and not line.startswith("#")}
    assert "***" in lines["OCPP_STATION_PASSWORD"]
    assert "(cli)" in lines["STATION_ESP32_PORT"]
    assert "(env)" in lines["OCPP_HEARTBEAT_SECONDS"]
    assert f"(file:{env_file})" in lines["OCPP_STATION_NAME"]


def test_bad_config_exits_78_with_one_line_and_no_traceback(env_file: Path) -> None:
    result = run_station("config", "show", "--env-file", str(env_file), env={"OCPP_HEARTBEAT_SECONDS": "x"})
    assert result.returncode == 78
    assert result.stderr.strip().splitlines() == [
        "config error: OCPP_HEARTBEAT_SECONDS='x': Input should be a valid integer, unable to parse string as an integer"
    ]
    assert "Traceback" not in result.stderr


def test_run_with_bad_config_exits_78(tmp_path: Path) -> None:
    result = run_station("run", env={"STATION_ENV_FILE": str(tmp_path / "missing.env")})
    assert result.returncode == 78
    assert "does not exist" in result.stderr


def test_version_flag_prints_the_version() -> None:
    from station import __version__

    result = run_station("--version")
    assert result.stdout.strip() == f"station {__version__}"


def test_help_lists_commands_and_exit_codes() -> None:
    result = run_station("--help")
    assert result.returncode == 0
    for word in ("run", "status", "demo", "config", "--once", "78", "configuration error"):
        assert word in result.stdout


def test_env_file_and_flags_given_before_the_command_are_kept(env_file: Path) -> None:
    result = run_station("--env-file", str(env_file), "--esp32-port", "/dev/ttyAMA0", "config", "show")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line and not line.startswith("#")}
    assert f"(file:{env_file})" in lines["OCPP_STATION_NAME"]
    assert "/dev/ttyAMA0" in lines["STATION_ESP32_PORT"] and "(cli)" in lines["STATION_ESP32_PORT"]


def test_config_show_without_csms_settings_shows_every_setting_and_marks_the_missing_ones(tmp_path: Path) -> None:
    result = run_station("config", "show", env={"STATION_ENV_FILE": os.devnull, "OCPP_STATION_PASSWORD": CANARY})
    assert result.returncode == 78
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line and not line.startswith("#")}
    assert set(lines) == {variable_of(name) for name in Settings.model_fields}
    assert lines["OCPP_STATION_NAME"].endswith("<-- MISSING")
    assert "<-- MISSING (set OCPP_201_URL or OCPP_16_URL)" in lines["OCPP_201_URL"]
    assert "<--" not in lines["STATION_ESP32_PORT"] and "/dev/esp32" in lines["STATION_ESP32_PORT"]
    assert "***" in lines["OCPP_STATION_PASSWORD"] and CANARY not in result.stdout + result.stderr
    assert "OCPP_STATION_NAME is missing" in result.stderr


def test_config_show_marks_an_invalid_value_and_still_shows_the_rest(env_file: Path) -> None:
    result = run_station("config", "show", "--json", "--env-file", str(env_file), env={"STATION_CONNECTORS": "nine"})
    assert result.returncode == 78
    shown = json.loads(result.stdout)
    rows = {r["variable"]: r for r in shown["settings"]}
    assert shown["ok"] is False and len(rows) == len(Settings.model_fields)
    assert rows["STATION_CONNECTORS"]["problem"].startswith("INVALID: ")
    assert rows["OCPP_STATION_NAME"]["value"] == "ORGE_AC_001" and rows["OCPP_STATION_NAME"]["problem"] is None


async def test_status_needs_only_the_ipc_socket(tmp_path: Path) -> None:
    import asyncio

    from tests.station_rig import Daemon

    daemon = Daemon(tmp_path, tmp_path / "station.sock")
    await daemon.start()
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "station", "status",
            env={**base, "STATION_ENV_FILE": os.devnull, "STATION_IPC_SOCKET": str(daemon.socket_path)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await daemon.close()
    assert proc.returncode == 0, err.decode()
    assert "station TEST_STATION_1" in out.decode()
