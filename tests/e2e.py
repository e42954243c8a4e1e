"""Start the real station daemon as a subprocess next to a real dev CSMS and the ESP32 simulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms
from station.meter.sim_process import MeterSimProcess

STATION_ID = "E2E_AC_001"
CANARY_PASSWORD = "canary-pw-Zq81x"


def station_env(directory: Path, csms: DevCsms, esp32_port: Path | str, *, station_id: str = STATION_ID,
                **extra: str) -> dict[str, str]:
    """The daemon's and the API's environment: everything on loopback and under `directory`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
    return {
        **base,
        "STATION_ENV_FILE": os.devnull,
        "OCPP_STATION_NAME": station_id,
        "OCPP_201_URL": csms.url("201"),
        "OCPP_16_URL": csms.url("16"),
        "STATION_ESP32_PORT": str(esp32_port),
        "STATION_STATE_DIR": str(directory / "state"),
        "STATION_IPC_SOCKET": str(directory / "station.sock"),
        "STATION_LOG_FORMAT": "json",
        "STATION_BACKOFF_MIN_SECONDS": "0.2",
        "STATION_BACKOFF_MAX_SECONDS": "1",
        **extra,
    }


LOG_FAULTS = ("Task exception was never retrieved", "Traceback (most recent call last)", '"exc_type":')
"""Text that never belongs in a daemon's log: an unowned task's failure, a traceback (as text, or as the
JSON log format's structured `exception`)."""

started_daemons: list[DaemonProcess] = []
"""Daemons started by the running test; `tests/conftest.py` checks their logs when it ends."""


def log_faults(text: str) -> list[str]:
    """The lines of a daemon log that hold a LOG_FAULTS text (with the line after, for the cause)."""
    lines = text.splitlines()
    return [" | ".join(lines[i:i + 2])[:600] for i, line in enumerate(lines) if any(f in line for f in LOG_FAULTS)]


class DaemonProcess:
    def __init__(self, env: dict[str, str], log_path: Path, *, faults_allowed: bool = False) -> None:
        """`faults_allowed`: the test provokes a crash on purpose; its log is not checked for tracebacks."""
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.faults_allowed = faults_allowed
        started_daemons.append(self)

    async def start(self) -> DaemonProcess:
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "station", "run", env=self.env, stdout=self._log, stderr=self._log,
            stdin=asyncio.subprocess.DEVNULL,
        )
        return self

    async def wait_ipc(self, timeout: float = 10) -> None:
        socket_path = Path(self.env["STATION_IPC_SOCKET"])
        async with asyncio.timeout(timeout):
            while not socket_path.exists():
                assert self.proc is not None and self.proc.returncode is None, self.log()
                await asyncio.sleep(0.05)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def controller_link_up(daemon: DaemonProcess, client: Any) -> None:
    """Until the daemon's status (over `client`, its IPC) shows the controller link up; fails if it exits first."""
    while True:
        assert daemon.proc is not None
        if daemon.proc.returncode is not None:
            raise AssertionError(f"daemon exited with {daemon.proc.returncode}")
        with contextlib.suppress(Exception):
            status = await client.status()
            if status["connectors"][0]["controller_link"]["up"]:
                return
        await asyncio.sleep(0.05)


async def station_cli(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """`station ARGS` run as a technician types it, with `env`: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station", *args, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def running_station(
    directory: Path, *, version: str = "201", simulator: bool = True, sim_args: list[str] | None = None, **extra: str
) -> AsyncIterator[tuple[DevCsms, SimulatorProcess | None, DaemonProcess]]:
    async with DevCsms(heartbeat_interval=2) as csms:
        sim_cm = SimulatorProcess(directory, interval=5, extra_args=sim_args) if simulator else contextlib.nullcontext()
        async with sim_cm as sim:
            port = sim.port if sim else directory / "no-esp32"
            env = station_env(directory, csms, port, OCPP_PRIMARY=version, **extra)
            daemon = await DaemonProcess(env, directory / "station.log").start()
            try:
                yield csms, sim, daemon
            finally:
                await daemon.stop()


@contextlib.asynccontextmanager
async def metered_station(
    directory: Path, *, energy_wh: float, speedup: float = 200, esp_interval: float = 5.0,
    esp_args: Sequence[str] = (), meter_follows_esp32: bool = True, **extra: str,
) -> AsyncIterator[tuple[DevCsms, MeterSimProcess, SimulatorProcess, DaemonProcess]]:
    """The real daemon with the ESP32 and meter simulators as processes, on a dev CSMS (heartbeat 30 s),
    past its first StatusNotification. `meter_follows_esp32`: the ESP32 simulator tells the meter the
    current it lets the EV draw; `extra`: more environment for the daemon."""
    async with (
        DevCsms(heartbeat_interval=30) as csms,
        MeterSimProcess(directory, speedup=speedup, energy_wh=energy_wh) as meter,
        SimulatorProcess(directory, interval=esp_interval, extra_args=[
            *(["--meter-control", str(meter.control)] if meter_follows_esp32 else []), *esp_args]) as esp,
    ):
        env = station_env(directory, csms, esp.port, STATION_METER_PORT=str(meter.link),
                          STATION_METER_POLL_SECONDS="0.2", **extra)
        daemon = await DaemonProcess(env, directory / "station.log").start()
        try:
            await csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            yield csms, meter, esp, daemon
        finally:
            await daemon.stop()
