"""`station run` serves with validated settings, without the configuration libraries in the daemon.

`station run` validates in a short-lived child while the daemon's process imports its modules;
any other spelling (`station --env-file F run`) validates in-process and execs the daemon.
"""

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
    (tmp_path / "ca.pem").write_text("PEM")  # a CA bundle must exist
    env_file.write_text(
        "OCPP_STATION_NAME=ORGE_AC_001\n"
        f"OCPP_STATION_PASSWORD={CANARY}\n"
        "OCPP_201_URL=wss://csms.example/ocpp/\n"
        f"STATION_CA_BUNDLE={tmp_path / 'ca.pem'}\n"
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


def _daemon_env(tmp_path: Path, **more: str) -> dict[str, str]:
    (tmp_path / "empty.env").write_text("")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))},
        "STATION_ENV_FILE": str(tmp_path / "empty.env"),
        "OCPP_STATION_NAME": "HANDOVER1",
        "OCPP_STATION_PASSWORD": CANARY,
        "OCPP_201_URL": "ws://127.0.0.1:9/ocpp/",
        "STATION_STATE_DIR": str(tmp_path / "state"),
        "STATION_IPC_SOCKET": str(tmp_path / "run" / "station.sock"),
        "STATION_ESP32_PORT": str(tmp_path / "no-such-tty"),
        "STATION_LOG_FORMAT": "json",
        **more,
    }


async def _serve_and_inspect(env: dict[str, str], *argv: str) -> tuple[list[bytes], str, bytes]:
    """Start `python -m station ARGV`, wait for its IPC socket; (cmdline, maps, stderr) of the daemon."""
    sock = Path(env["STATION_IPC_SOCKET"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", *argv, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            while not sock.exists():
                assert proc.returncode is None, "daemon exited"
                await asyncio.sleep(0.05)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await proc.communicate()
    assert proc.returncode == 0
    return cmdline, maps, stderr


async def test_station_run_serves_in_the_started_process_without_pydantic(tmp_path: Path) -> None:
    cmdline, maps, stderr = await _serve_and_inspect(_daemon_env(tmp_path), "run")
    assert cmdline[1:4] == [b"-m", b"station", b"run"]  # the process systemd started is the daemon
    assert CANARY.encode() not in b" ".join(cmdline)
    assert "pydantic" not in maps  # pydantic_core is a shared object: mapped once imported
    assert "cryptography" not in maps  # imported only while a firmware update is verified
    assert b"station stopped" in stderr and CANARY.encode() not in stderr


async def test_station_run_after_global_flags_execs_the_daemon_without_pydantic(tmp_path: Path) -> None:
    env = _daemon_env(tmp_path)
    cmdline, maps, stderr = await _serve_and_inspect(env, "--env-file", env["STATION_ENV_FILE"], "run")
    assert b"station.handover" in cmdline  # same PID, now the daemon's interpreter
    assert CANARY.encode() not in b" ".join(cmdline)
    assert "pydantic" not in maps
    assert b"station stopped" in stderr and CANARY.encode() not in stderr


async def test_station_run_with_a_broken_configuration_exits_78_with_the_reason(tmp_path: Path) -> None:
    env = _daemon_env(tmp_path)
    del env["OCPP_STATION_NAME"]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "station", "run", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    assert proc.returncode == 78
    assert b"OCPP_STATION_NAME is missing" in stderr and CANARY.encode() not in stderr


async def test_station_run_with_an_unknown_flag_is_a_usage_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "station", "run", "--no-such-flag",
                                                env=_daemon_env(tmp_path), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    assert proc.returncode == 2 and b"--no-such-flag" in stderr
