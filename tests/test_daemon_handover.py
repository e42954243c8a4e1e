"""`station run` validates the settings, then execs the daemon without the configuration libraries."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from station import handover
from station.config import Settings, load

CANARY = "canary-Pw-51c2e"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith(("OCPP_", "STATION_")):
            monkeypatch.delenv(var)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    env_file = tmp_path / "ocpp_station.env"
    env_file.write_text(
        "OCPP_STATION_NAME=ORGE_AC_001\n"
        f"OCPP_STATION_PASSWORD={CANARY}\n"
        "OCPP_201_URL=wss://csms.example/ocpp/\n"
        "STATION_CA_BUNDLE=/etc/ssl/ca.pem\n"
        f"STATION_STATE_DIR={tmp_path / 'state'}\n"
        "STATION_API_BIND=[::1]:8081\n"
        "STATION_ESP32_POLL_SECONDS=0.5\n"
    )
    return load(env_file=env_file).settings


def test_handed_over_settings_carry_every_validated_value_and_derived_property(settings: Settings) -> None:
    received = handover.decode(handover.encode(settings))
    for name in [*Settings.model_fields, *handover.DERIVED]:
        sent, got = getattr(settings, name), getattr(received, name)
        if hasattr(sent, "get_secret_value"):
            assert got.get_secret_value() == sent.get_secret_value()
        else:
            assert got == sent and type(got) is type(sent), name
    assert received.secrets() == settings.secrets() == [CANARY]
    assert received.api_token is None


def test_handed_over_secrets_do_not_show_in_reprs(settings: Settings) -> None:
    received = handover.decode(handover.encode(settings))
    assert CANARY not in repr(received) and CANARY not in str(received.station_password)
    assert bool(received.station_password)


async def test_station_run_becomes_a_daemon_process_without_pydantic(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "station.sock"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))},
        "STATION_ENV_FILE": str(tmp_path / "empty.env"),
        "OCPP_STATION_NAME": "HANDOVER1",
        "OCPP_STATION_PASSWORD": CANARY,
        "OCPP_201_URL": "ws://127.0.0.1:9/ocpp/",
        "STATION_STATE_DIR": str(tmp_path / "state"),
        "STATION_IPC_SOCKET": str(sock),
        "STATION_ESP32_PORT": str(tmp_path / "no-such-tty"),
        "STATION_LOG_FORMAT": "json",
    }
    (tmp_path / "empty.env").write_text("")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", "run", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            while not sock.exists():
                assert proc.returncode is None, "daemon exited"
                await asyncio.sleep(0.05)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert b"station.handover" in cmdline  # same PID, now the daemon's interpreter
        assert CANARY.encode() not in b" ".join(cmdline)
        assert "pydantic" not in maps  # pydantic_core is a shared object: mapped once imported
        assert "cryptography" not in maps  # imported only while a firmware update is verified
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await proc.communicate()
    assert proc.returncode == 0
    assert b"station stopped" in stderr and CANARY.encode() not in stderr
