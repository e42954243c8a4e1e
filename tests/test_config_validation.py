"""One validation of every setting, the same for `config show`, `--once` and `station run`: a mistake is one
line naming the setting and the rule (never the secret), exit 78 (EX_CONFIG: systemd does not restart), and
never a traceback from deep inside the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from station import exitcodes
from station.config import METER_MODELS, ConfigError, load, load_api

SECRET = "Canary-pw-51d2"
COMMANDS = {"config show": ["config", "show"], "--once": ["--once", "--timeout", "5"], "run": ["run"]}


def station(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    base.update({"STATION_ENV_FILE": os.devnull, "OCPP_STATION_NAME": "CP_1", "OCPP_201_URL": "ws://127.0.0.1:9/",
                 "STATION_STATE_DIR": str(tmp_path / "state"), "STATION_IPC_SOCKET": str(tmp_path / "station.sock"),
                 "STATION_ESP32_PORT": str(tmp_path / "no-esp32")})
    return subprocess.run([sys.executable, "-m", "station", *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


MISTAKES = {
    "unknown meter model": ({"STATION_METER_PORT": "/dev/meter", "STATION_METER_MODEL": "xyz"}, [],
                            "STATION_METER_MODEL='xyz'"),
    "meter model in upper case": ({"STATION_METER_MODEL": "ADL400"}, [], "STATION_METER_MODEL='ADL400'"),
    "profile 2 beside a ws:// fallback": (
        {"OCPP_201_URL": "wss://csms.example/ocpp/", "OCPP_16_URL": "ws://csms.example/ocpp16/",
         "OCPP_STATION_PASSWORD": SECRET}, [], "needs wss:// on every CSMS URL, the fallback's too: OCPP_16_URL is ws://"),
    "password inside the URL": ({"OCPP_201_URL": f"ws://TECH:{SECRET}@csms.example/ocpp/"}, [],
                                "OCPP_201_URL='ws://***@csms.example/ocpp/': must not carry a user name or password"),
    "missing CA bundle": ({"STATION_CA_BUNDLE": "/nonexistent.pem"}, [], "STATION_CA_BUNDLE='/nonexistent.pem': no such file"),
    "backoff minimum above its maximum": ({}, ["--backoff-min-seconds", "100", "--backoff-max-seconds", "1"],
                                          "STATION_BACKOFF_MIN_SECONDS (100) must not exceed STATION_BACKOFF_MAX_SECONDS (1)"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_configuration_mistake_is_one_line_naming_the_setting_and_exit_78(tmp_path: Path, mistake: str,
                                                                             command: str) -> None:
    env, flags, expected = MISTAKES[mistake]
    result = station(tmp_path, *flags, *COMMANDS[command], env=env)
    assert result.returncode == exitcodes.CONFIG, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was written


@pytest.mark.parametrize("timeout", ["-5", "0"])
def test_once_refuses_a_timeout_that_is_not_positive(tmp_path: Path, timeout: str) -> None:
    result = station(tmp_path, "--once", "--timeout", timeout)
    assert result.returncode == exitcodes.CONFIG
    assert result.stderr.strip().splitlines() == [f"config error: --timeout {float(timeout):g}: must be more than 0 seconds"]


def test_config_show_masks_a_password_given_inside_the_url(tmp_path: Path) -> None:
    result = station(tmp_path, "config", "show", "--json", env={"OCPP_16_URL": f"ws://TECH:{SECRET}@csms.example/16/"})
    assert result.returncode == exitcodes.CONFIG
    assert SECRET not in result.stdout and "ws://***@csms.example/16/" in result.stdout


def test_a_misspelt_variable_is_warned_about_naming_the_nearest_setting(tmp_path: Path) -> None:
    env_file = tmp_path / "station.env"
    env_file.write_text("OCPP_STATION_NAME=CP_1\nOCPP_201_ULR=ws://127.0.0.1:9/\n")
    result = station(tmp_path, "config", "show", env={"STATION_ENV_FILE": str(env_file), "OCPP_201_URL": "",
                                                      "STATION_METER_PROT": "/dev/meter"})
    assert result.returncode == exitcodes.CONFIG  # no URL: the misspelt one is not read
    assert (f"config warning: unknown setting OCPP_201_ULR in {env_file} is ignored; did you mean OCPP_201_URL?"
            in result.stderr.splitlines())
    assert ("config warning: unknown setting STATION_METER_PROT in the environment is ignored; "
            "did you mean STATION_METER_PORT?" in result.stderr.splitlines())


def test_profile_2_with_wss_on_every_url_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in {"STATION_ENV_FILE": os.devnull, "OCPP_STATION_NAME": "CP_1", "OCPP_STATION_PASSWORD": SECRET,
                       "OCPP_201_URL": "wss://csms.example/a/", "OCPP_16_URL": "wss://csms.example/b/"}.items():
        monkeypatch.setenv(var, value)
    assert load().settings.ocpp_16_url == "wss://csms.example/b/"


def test_the_api_needs_neither_a_station_id_nor_a_csms_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith(("OCPP_", "STATION_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("STATION_ENV_FILE", os.devnull)
    settings = load_api({"api_bind": "127.0.0.1:8181"}).settings
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8181)
    with pytest.raises(ConfigError, match=r"^config error: STATION_API_BIND='127.0.0.1:99999': expected host:port"):
        load_api({"api_bind": "127.0.0.1:99999"})


def test_the_meter_models_accepted_are_the_register_maps_there_are() -> None:
    from station.meter.registers import MAPS

    assert set(METER_MODELS) == set(MAPS)
    from station.config import Settings

    assert Settings.model_fields["meter_model"].annotation.__args__ == METER_MODELS  # type: ignore[union-attr]


def test_station_api_refuses_a_bad_bind_naming_only_that_setting(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    result = subprocess.run([sys.executable, "-m", "api", "--bind", "127.0.0.1:99999"], capture_output=True, text=True,
                            env={**base, "STATION_ENV_FILE": os.devnull}, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == exitcodes.CONFIG
    assert result.stderr.strip().splitlines() == [
        "config error: STATION_API_BIND='127.0.0.1:99999': expected host:port with a port from 1 to 65535, "
        "e.g. 127.0.0.1:8080"]  # neither the station id nor a CSMS URL: the API uses neither


def test_status_warns_about_a_misspelt_socket_variable(tmp_path: Path) -> None:
    result = station(tmp_path, "status", env={"STATION_IPC_SOKET": str(tmp_path / "x.sock")})
    assert result.returncode == exitcodes.DAEMON_UNAVAILABLE
    assert result.stderr.splitlines()[0] == ("config warning: unknown setting STATION_IPC_SOKET in the environment is "
                                             "ignored; did you mean STATION_IPC_SOCKET?")


def test_a_deployed_env_file_with_the_deprecated_fallback_setting_still_loads_with_one_warning(tmp_path: Path) -> None:
    env_file = tmp_path / "station.env"
    env_file.write_text("OCPP_STATION_NAME=CP_1\nOCPP_201_URL=ws://127.0.0.1:9/\nSTATION_FALLBACK_AFTER=3\n")
    result = station(tmp_path, "config", "show", env={"STATION_ENV_FILE": str(env_file)})
    assert result.returncode == exitcodes.OK, result.stderr
    assert result.stderr.splitlines() == [
        f"config warning: STATION_FALLBACK_AFTER in {env_file} no longer has an effect: only a protocol answer "
        "switches OCPP versions now; an unreachable CSMS is retried on the same version (docs/ocpp.md, version "
        "choice); remove it"]
    assert "FALLBACK" not in result.stdout  # not a setting any more: not listed


def test_the_deprecated_fallback_flag_is_accepted_with_a_warning_and_not_offered_in_help(tmp_path: Path) -> None:
    result = station(tmp_path, "config", "show", "--fallback-after", "1")
    assert result.returncode == exitcodes.OK, result.stderr
    assert result.stderr.splitlines()[0].startswith("config warning: --fallback-after no longer has an effect: ")
    assert "fallback-after" not in station(tmp_path, "--help").stdout


def test_config_show_without_an_env_file_names_the_file_it_looked_for(tmp_path: Path) -> None:
    absent = tmp_path / "ocpp_station.env"  # stands in for /etc/ocpp_station.env, which this machine may have
    program = ("import pathlib, sys; import station.config; "
               f"station.config.DEFAULT_ENV_FILE = pathlib.Path({str(absent)!r}); "
               "from station.cli import main; sys.exit(main(['config', 'show']))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))},
                            stdin=subprocess.DEVNULL)
    assert result.returncode == exitcodes.CONFIG
    lines = result.stdout.splitlines()
    assert lines[0] == f"# env file: none ({absent} does not exist; give one with --env-file PATH or STATION_ENV_FILE)"
    name = next(line for line in lines if line.startswith("OCPP_STATION_NAME"))
    assert "(not set)" in name and "(default)" not in name and name.endswith("<-- MISSING")
