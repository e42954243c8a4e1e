"""Every `station` command and tool refuses a bad value (port, missing directory, taken port) with one line and a
documented exit code, never a traceback; SIGTERM and SIGINT stop the long-running tools cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station import exitcodes

BAD = {
    "dev-csms port too large": (["dev-csms", "--port", "99999"], exitcodes.USAGE, "argument --port: expected a port"),
    "dev-csms port not a number": (["dev-csms", "--port", "x"], exitcodes.USAGE, "argument --port: expected a port"),
    "dev-csms control socket in a missing directory": (
        ["dev-csms", "--port", "0", "--control", "/nonexistent/dir/csms.ctl"], exitcodes.USAGE,
        "argument --control: directory /nonexistent/dir does not exist"),
    "dev-csms call port too large": (["dev-csms", "call", "CP", "Reset", "--port", "70000"], exitcodes.USAGE,
                                     "argument --port: expected a port"),
    "dev-csms call without a dev CSMS": (["dev-csms", "call", "CP", "Reset", "--control", "/nonexistent/x.ctl"],
                                         3, "no dev CSMS control socket at /nonexistent/x.ctl"),
    "esp32 simulator link in a missing directory": (
        ["sim", "esp32", "--link", "/nonexistent/dir/esp32", "--control", "{tmp}/esp32.sock"], exitcodes.USAGE,
        "argument --link: directory /nonexistent/dir does not exist"),
    "esp32 simulator link where nothing can be created": (
        ["sim", "esp32", "--link", "/proc/esp32", "--control", "{tmp}/esp32.sock"], exitcodes.CANNOT_LISTEN,
        "esp32 simulator: cannot create the device link /proc/esp32"),
    "meter simulator control socket in a missing directory": (
        ["sim", "meter", "--link", "{tmp}/meter", "--control", "/nonexistent/dir/meter.sock"], exitcodes.USAGE,
        "argument --control: directory /nonexistent/dir does not exist"),
    "unknown option": (["--bogus"], exitcodes.USAGE, "station: unrecognized arguments: --bogus"),
    "status without a daemon": (["status", "--ipc-socket", "/nonexistent/station.sock"], exitcodes.DAEMON_UNAVAILABLE,
                                "station daemon not reachable"),
    "env file that does not exist": (["config", "show", "--env-file", "/nonexistent/station.env"], exitcodes.CONFIG,
                                     "env file /nonexistent/station.env does not exist"),
}


def station(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    return subprocess.run([sys.executable, "-m", "station", *args], env={**env, "STATION_ENV_FILE": os.devnull},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_invocation_is_one_line_and_a_documented_exit_code(tmp_path: Path, case: str) -> None:
    argv, code, expected = BAD[case]
    result = station(*(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert result.returncode == code, result.stderr
    assert code in exitcodes.DESCRIPTIONS or code == 3  # `dev-csms call` documents its own codes in --help
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_the_dev_csms_on_a_taken_port_says_so_and_exits_69() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = station("dev-csms", "--port", str(taken.getsockname()[1]))
    assert result.returncode == exitcodes.CANNOT_LISTEN
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "dev CSMS cannot listen on 127.0.0.1:" in lines[0] and "address already in use" in lines[0]


def _wait_for(check: object, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("tool", ["dev-csms", "sim esp32", "sim meter"])
def test_a_signal_stops_a_tool_cleanly(tmp_path: Path, tool: str, sig: signal.Signals) -> None:
    argv = {"dev-csms": ["dev-csms", "--port", "0", "--control", str(tmp_path / "csms.ctl")],
            "sim esp32": ["sim", "esp32", "--link", str(tmp_path / "dev"), "--control", str(tmp_path / "ctl.sock")],
            "sim meter": ["sim", "meter", "--link", str(tmp_path / "dev"), "--control", str(tmp_path / "ctl.sock")]}[tool]
    ready = tmp_path / ("csms.ctl" if tool == "dev-csms" else "dev")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    proc = subprocess.Popen([sys.executable, "-m", "station", *argv], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: os.path.lexists(ready), proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
