"""The API's settings are validated by station.config, once, for `station-api` and `station` alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from station import exitcodes
from station.config import ConfigError, load, load_api

SHORT = "short-token-123"


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    return {**env, "STATION_ENV_FILE": os.devnull, **values}


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith(("OCPP_", "STATION_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("STATION_ENV_FILE", os.devnull)


def test_a_short_api_token_is_a_warning_for_the_daemon_never_a_stop_and_never_shown(tmp_path: Path) -> None:
    """Only station-api reads the token: a short one must not take a charging station off the road."""
    result = subprocess.run([sys.executable, "-m", "station", "config", "show"], capture_output=True, text=True,
                            env=clean_env(OCPP_STATION_NAME="CP_1", OCPP_201_URL="ws://127.0.0.1:9/",
                                          STATION_API_TOKEN=SHORT), timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0
    assert result.stderr.strip().splitlines() == [
        "config warning: STATION_API_TOKEN='***': too short (15 characters): at least 24 are needed; generate one "
        "with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))' (station-api refuses to start until "
        "this is fixed; the daemon runs without it)"]
    assert SHORT not in result.stdout + result.stderr


@pytest.mark.parametrize("variable, value", [("STATION_API_TOKEN", SHORT), ("STATION_API_BIND", "127.0.0.1")])
def test_a_mistake_in_a_setting_only_the_api_reads_stops_the_api_not_the_daemon(
        no_settings: None, monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    for name, given in {"OCPP_STATION_NAME": "CP_1", "OCPP_201_URL": "ws://127.0.0.1:9/", variable: value}.items():
        monkeypatch.setenv(name, given)
    daemon = load()
    assert [line for line in daemon.warnings if line.startswith(f"config warning: {variable}=")]
    with pytest.raises(ConfigError, match=rf"^config error: {variable}="):
        load_api()


def test_an_api_token_with_a_space_is_refused(no_settings: None) -> None:
    with pytest.raises(ConfigError, match=r"^config error: STATION_API_TOKEN='\*\*\*': must not contain spaces$"):
        load_api({"api_token": "a-long-enough-token-with a-space-in-it"})


def test_an_empty_api_token_disables_control_instead_of_failing(no_settings: None) -> None:
    assert load_api({"api_token": ""}).settings.api_token is None


@pytest.mark.parametrize("hosts", ["station.lan:8080", "http://station.lan", "a b", "*.lan"])
def test_api_host_names_with_a_port_scheme_space_or_wildcard_are_refused(no_settings: None, hosts: str) -> None:
    with pytest.raises(ConfigError, match=r"^config error: STATION_API_HOSTS=.*expected host names or addresses "
                                          r"without port, comma-separated$"):
        load_api({"api_hosts": hosts})


def test_api_host_names_and_ipv6_addresses_are_accepted(no_settings: None) -> None:
    from station.config import host_names

    settings = load_api({"api_hosts": "192.168.7.20, Station-0042.lan, fd00::7"}).settings
    assert host_names(settings.api_hosts) == ["192.168.7.20", "station-0042.lan", "[fd00::7]"]


@pytest.mark.parametrize("bind", ["[]:8080", "127.0.0.1:0", "127.0.0.1:65536"])
def test_a_bind_without_host_or_with_port_out_of_range_is_refused(no_settings: None, bind: str) -> None:
    with pytest.raises(ConfigError, match=r"port from 1 to 65535"):
        load_api({"api_bind": bind})


def test_an_ipv6_bind_gives_host_and_port(no_settings: None) -> None:
    settings = load_api({"api_bind": "[::1]:8181"}).settings
    assert (settings.api_host, settings.api_port) == ("::1", 8181)


def test_the_daemon_and_the_api_mask_the_secrets_they_read(no_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    token, password = "t" * 30, "p" * 12
    monkeypatch.setenv("OCPP_STATION_PASSWORD", password)  # a secret has no flag
    daemon = load({"station_name": "CP_1", "ocpp_201_url": "ws://127.0.0.1:9/", "api_token": token}).settings
    assert daemon.secrets() == [password, token]
    assert load_api({"api_token": token}).settings.secrets() == [token]  # the API reads no password


def test_station_api_warns_about_a_misspelt_setting_naming_the_nearest(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "api", "--bind", "127.0.0.1:99999"], capture_output=True,
                            text=True, env=clean_env(STATION_API_HOST="192.168.7.20"), timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == exitcodes.CONFIG
    assert result.stderr.strip().splitlines() == [
        "config warning: unknown setting STATION_API_HOST in the environment is ignored; did you mean "
        "STATION_API_HOSTS?",
        "config error: STATION_API_BIND='127.0.0.1:99999': expected host:port with a port from 1 to 65535, "
        "e.g. 127.0.0.1:8080"]


def test_a_bad_name_among_several_api_host_names_is_named(no_settings: None) -> None:
    with pytest.raises(ConfigError, match=r"^config error: STATION_API_HOSTS='192.168.7.20, station.lan:8080': "
                                          r"expected host names or addresses without port, comma-separated "
                                          r"\('station.lan:8080' is not one\)$"):
        load_api({"api_hosts": "192.168.7.20, station.lan:8080"})
