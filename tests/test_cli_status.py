"""`station status`: the summary a technician reads on the station's console."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e import station_cli
from tests.station_rig import Daemon, daemon, sock_path  # noqa: F401

assert daemon and sock_path


def cli_env(socket: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    env.update(STATION_ENV_FILE=os.devnull, STATION_IPC_SOCKET=str(socket))
    return env


async def test_status_says_when_the_meter_does_not_answer(daemon: Daemon, sock_path: Path) -> None:
    daemon.facts["meter"] = {"port": "/dev/meter", "model": "adl400", "healthy": False}
    daemon.core.on_meter_health(False, "3 polls in a row failed")
    code, out, err = await station_cli(cli_env(sock_path), "status")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("meter"))
    assert line.startswith("meter adl400 on /dev/meter: NOT answering since ") and "(3 polls in a row failed)" in line


async def test_status_shows_an_answering_meter_in_one_word(daemon: Daemon, sock_path: Path) -> None:
    daemon.facts["meter"] = {"port": "/dev/meter", "model": "adl400", "healthy": True}
    code, out, err = await station_cli(cli_env(sock_path), "status")
    assert code == 0, err
    assert "meter adl400 on /dev/meter: answering" in out.splitlines()


async def test_status_says_a_meter_not_read_yet_is_too_early_to_tell_as_once_does(daemon: Daemon, sock_path: Path) -> None:
    daemon.facts["meter"] = {"port": "/dev/meter", "model": "adl400", "healthy": True,
                             "stats": {"polls_ok": 0, "polls_failed": 1, "consecutive_failures": 1}}
    code, out, err = await station_cli(cli_env(sock_path), "status")
    assert code == 0, err
    assert "meter adl400 on /dev/meter: no reading yet (polling just started)" in out.splitlines()
