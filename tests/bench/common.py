"""What every benchmark needs: a time-stamping dev CSMS, the real processes, /proc figures, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import sys
import time
import tty
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station.controller.protocol import FrameParser, StatusFrame
from ocpp.messages import MessageType

from station.devtools.csms import DevCsms, Received
from station.ocpp import schema

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STATION_ID = "BENCH_AC_001"


# ------------------------------------------------------------------ statistics
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """min / median / max over repeated runs."""
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "max": round(max(values), digits)}


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3),
            "max_ms": round(max(ms), 3)}


# ------------------------------------------------------------------ processes
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (utime and stime from /proc/PID/stat)."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process: system is the kernel's share (syscalls, fsync, loopback)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


async def idle_cpu_percent(pids: dict[str, int], seconds: float) -> dict[str, float]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    await asyncio.sleep(seconds)
    return {name: round((cpu_seconds(pid) - before[name]) / seconds * 100, 3) for name, pid in pids.items()}


def compile_bytecode() -> None:
    """Write the station's and the API's bytecode, as an install does (pip; provisioning/install.sh).

    The units (and this machine's shells) set PYTHONDONTWRITEBYTECODE, so an editable checkout
    without it would compile every module at every start: ~0.5 s more start-up on a loaded
    machine, a cost no installed station pays.
    """
    import compileall
    import importlib.util

    for package in ("station", "api"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            compileall.compile_dir(os.path.dirname(spec.origin), quiet=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A real subprocess with its output in a log file; stopped with SIGTERM, killed if it lingers."""

    def __init__(self, argv: list[str], env: dict[str, str] | None, log_path: Path) -> None:
        self.argv, self.env, self.log_path = argv, env, log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0

    async def start(self) -> Proc:
        self._log = self.log_path.open("ab")
        self.started = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdout=self._log, stderr=self._log, stdin=asyncio.subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self, timeout: float = 10) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        self._log.close()
        return code

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]


DAEMON_PREFIX: list[str] = []
"""Put in front of the daemon's command line (a CPU limit, see `CpuLimit`); empty: none."""


class CpuLimit:
    """The daemon (and its start-up child) in a cgroup with a CPU quota: a Raspberry Pi-sized CPU.

    cgroup v2 (`cpu.max`) where the unified hierarchy has the cpu controller, else cgroup v1
    (`cpu.cfs_quota_us` / `cpu.cfs_period_us`). A short period (10 ms) so the quota behaves like a
    slower core rather than full speed followed by long pauses. Needs write access to the
    cgroup file system (root); the group is removed afterwards.
    """

    PERIOD_US = 10_000

    def __init__(self, cores: float) -> None:
        self.cores = cores
        name = f"station-bench-{os.getpid()}"
        unified = Path("/sys/fs/cgroup")
        if "cpu" in (unified / "cgroup.controllers").read_text(errors="replace").split() if (unified / "cgroup.controllers").exists() else False:
            self.version, self.path = 2, unified / name
        elif Path("/sys/fs/cgroup/cpu").is_dir():
            self.version, self.path = 1, Path("/sys/fs/cgroup/cpu") / name
        else:
            raise RuntimeError("no cgroup cpu controller on this machine")

    def __enter__(self) -> CpuLimit:
        self.path.mkdir()
        quota = max(1000, int(self.cores * self.PERIOD_US))
        if self.version == 2:
            (self.path / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        DAEMON_PREFIX[:] = ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "cpu-limited"]
        return self

    def __exit__(self, *exc: object) -> None:
        DAEMON_PREFIX.clear()
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def describe(self) -> str:
        return (f"cgroup v{self.version} {self.path}: {self.cores:g} of one core "
                f"(quota {int(self.cores * self.PERIOD_US)} µs per {self.PERIOD_US} µs)")


# ------------------------------------------------------------------ CSMS with arrival times
@dataclass
class Arrival:
    at: float  # time.monotonic() in the CSMS process (CLOCK_MONOTONIC is shared by all processes)
    item: Received


class BenchCsms(DevCsms):
    """The dev CSMS, unchanged, plus the monotonic arrival time of every frame it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[Arrival] = []
        self.arrived = asyncio.Event()

    def _record(self, item: Received) -> None:
        self.arrivals.append(Arrival(time.monotonic(), item))
        self.arrived.set()
        super()._record(item)

    async def start(self) -> BenchCsms:
        """Compile the validators the benchmarks use first, so no measured exchange pays a compile
        (the serial tap runs in this process too and would stall meanwhile)."""
        for version in ("2.0.1", "1.6"):
            await schema.warm_up(version)
            for action in ("BootNotification", "StatusNotification", "Heartbeat", "RemoteStartTransaction"):
                for message_type_id in (MessageType.Call, MessageType.CallResult):
                    schema.compiled_validator(message_type_id, action, version)
        await super().start()
        return self

    def forget(self) -> None:
        """Drop what was recorded so far (long runs keep memory flat)."""
        self.arrivals.clear()
        self.received.clear()

    async def next_call(self, action: str, since: int, predicate: Any = None, timeout: float = 5) -> Arrival:
        """The first CALL `action` at arrival index >= since (matching predicate)."""
        async with asyncio.timeout(timeout):
            while True:
                for a in self.arrivals[since:]:
                    if a.item.kind == "call" and a.item.action == action and (predicate is None or predicate(a.item)):
                        return a
                self.arrived.clear()
                await self.arrived.wait()


# ------------------------------------------------------------------ serial tap
@dataclass
class TapRecord:
    to_esp32: list[tuple[float, bytes]] = field(default_factory=list)
    from_esp32: list[tuple[float, StatusFrame]] = field(default_factory=list)


class SerialTap:
    """A pty between the daemon and the ESP32 simulator that time-stamps what crosses it.

    The daemon opens `self.port` as it would /dev/esp32; bytes are passed on unchanged in
    both directions (a few tens of microseconds each way, included in every figure). Commands
    to the ESP32 are recorded with the time they were read; status frames with the time the
    complete frame was read (i.e. when the station could first know of a change).
    """

    def __init__(self, directory: Path, esp32_device: Path) -> None:
        self.port = directory / "esp32-tap"
        self.esp32_device = esp32_device
        self.record = TapRecord()
        self.changed = asyncio.Event()
        self._parser = FrameParser()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SerialTap]:
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        device = os.open(os.path.realpath(self.esp32_device), os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(device)
        with contextlib.suppress(FileNotFoundError):
            self.port.unlink()
        os.symlink(os.ttyname(slave), self.port)

        def from_station() -> None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                data = os.read(master, 4096)
                self.record.to_esp32.append((time.monotonic(), data))
                os.write(device, data)
                self.changed.set()

        def from_esp32() -> None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                data = os.read(device, 4096)
                os.write(master, data)
                now = time.monotonic()
                for result in self._parser.feed(data):
                    if isinstance(result, StatusFrame):
                        self.record.from_esp32.append((now, result))
                self.changed.set()

        loop.add_reader(master, from_station)
        loop.add_reader(device, from_esp32)
        try:
            yield self
        finally:
            loop.remove_reader(master)
            loop.remove_reader(device)
            for fd in (master, slave, device):
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                self.port.unlink()

    async def wait(self, condition: Any, timeout: float = 5) -> Any:
        async with asyncio.timeout(timeout):
            while not (found := condition()):
                self.changed.clear()
                await self.changed.wait()
            return found
