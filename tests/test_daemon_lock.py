"""A second `station run` on the same state directory refuses before it touches it: one line, a documented exit
code, and no "StartupOfTheDevice" event in the running daemon's database (which it would send to the CSMS)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from station import exitcodes


def daemon_env(tmp_path: Path, socket_name: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    return {**base, "STATION_ENV_FILE": os.devnull, "OCPP_STATION_NAME": "CP_1", "OCPP_201_URL": "ws://127.0.0.1:9/",
            "STATION_STATE_DIR": str(tmp_path / "state"), "STATION_IPC_SOCKET": str(tmp_path / socket_name),
            "STATION_ESP32_PORT": str(tmp_path / "no-esp32"), "STATION_LOG_FORMAT": "json"}


@contextlib.contextmanager
def first_daemon(tmp_path: Path, socket_name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `station run` answering on `socket_name`, stopped with SIGTERM (killed after 30 s) on leaving."""
    first = subprocess.Popen([sys.executable, "-m", "station", "run"], env=daemon_env(tmp_path, socket_name),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / socket_name).exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        yield first
    finally:
        first.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.wait(30)
        if first.poll() is None:
            first.kill()
            first.wait()


def test_a_second_daemon_on_the_same_state_directory_refuses_without_writing_an_event(tmp_path: Path) -> None:
    with first_daemon(tmp_path, "first.sock") as first:
        second = subprocess.run([sys.executable, "-m", "station", "run"], env=daemon_env(tmp_path, "second.sock"),
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert second.returncode == exitcodes.ALREADY_RUNNING, second.stderr
    assert second.stderr.strip().splitlines() == [
        f"station: another station daemon already runs on {tmp_path / 'state'} (it holds "
        f"{tmp_path / 'state' / 'station.lock'}); stop it first (systemctl stop station) or give this one its own "
        "STATION_STATE_DIR"]
    assert not (tmp_path / "second.sock").exists()
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "station.db")) as db:
        starts = db.execute("SELECT COUNT(*) FROM security_log WHERE type = 'StartupOfTheDevice'").fetchone()[0]
    assert starts == 1  # the first daemon's own
    assert first.returncode == 0


def test_a_second_daemon_on_the_same_socket_refuses_in_one_line(tmp_path: Path) -> None:
    with first_daemon(tmp_path, "station.sock"):
        env = {**daemon_env(tmp_path, "station.sock"), "STATION_STATE_DIR": str(tmp_path / "other-state")}
        second = subprocess.run([sys.executable, "-m", "station", "run"], env=env, capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL)
    assert second.returncode == exitcodes.ALREADY_RUNNING, second.stderr
    assert second.stderr.strip().splitlines() == [
        f"station: another station daemon already answers on {tmp_path / 'station.sock'}; stop it first "
        "(systemctl stop station) or give this one its own STATION_IPC_SOCKET"]
    assert not (tmp_path / "other-state" / "station.db").exists()
