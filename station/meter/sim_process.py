"""Run the meter simulator as a real subprocess and talk to its control socket.

Tests, benchmarks and the ESP32 simulator's integration use this instead of
an in-process fake, so the station talks to the meter through a pty only,
exactly as it would talk to hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any


class MeterSimError(Exception):
    """The simulator did not start, or refused a control command."""


class MeterSimProcess:
    """`async with MeterSimProcess(tmp_path) as sim:` → sim.link is the serial port path."""

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "meter",
        speedup: float = 1.0,
        load_a: float = 0.0,
        energy_wh: float = 0.0,
        seed: int | None = 1,
        model: str = "adl400",
        startup_timeout: float = 15.0,
    ) -> None:
        self.link = workdir / f"{name}.tty"
        self.control = workdir / f"{name}.sock"
        self.log_path = workdir / f"{name}.log"
        self._args = [
            "--link", str(self.link),
            "--control", str(self.control),
            "--model", model,
            "--speedup", repr(speedup),
            "--load", repr(load_a),
            "--energy-wh", repr(energy_wh),
        ]  # fmt: skip
        if seed is not None:
            self._args += ["--seed", str(seed)]
        self._startup_timeout = startup_timeout
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Output goes to a file, not a pipe: an unread pipe would block a chatty simulator.
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "station.meter.simulator", *self._args,
                stdout=log, stderr=log, env=env,
            )  # fmt: skip
        try:
            await asyncio.wait_for(self._wait_ready(), self._startup_timeout)
        except (TimeoutError, MeterSimError):
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        while True:
            if self.proc.returncode is not None:
                output = self.log_path.read_text(errors="replace")[-2000:]
                raise MeterSimError(f"meter simulator exited {self.proc.returncode}: {output}")
            if self.link.exists() and self.control.exists():
                with contextlib.suppress(OSError, MeterSimError):
                    await self.command("state")
                    return
            await asyncio.sleep(0.02)

    async def command(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send one control command and return the simulator's reply (raises if refused)."""
        reader, writer = await asyncio.open_unix_connection(str(self.control))
        try:
            writer.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not line:
            raise MeterSimError(f"no reply to {cmd}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise MeterSimError(reply.get("error", f"{cmd} refused"))
        return reply

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within a few seconds."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def __aenter__(self) -> MeterSimProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
