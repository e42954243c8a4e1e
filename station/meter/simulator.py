"""Modbus RTU energy meter simulator on a pseudo-terminal.

Stands in for the meter on the RS-485 bus: the station opens the pty's slave
side (exposed through a symlink, `--link`) exactly as it opens the USB RS-485
adapter, and pymodbus's RTU server answers on the master side from a register
map (default: the ADL400). Current, power and energy follow a load set through
a control Unix socket (JSON lines), which the ESP32 simulator drives when the
charging current changes; faults are injected the same way.

Control commands (one JSON object per line, one JSON reply per line):
  {"cmd": "set_load", "current_a": 16.0}   per-phase current drawn by the EV
  {"cmd": "state"}                          current values and settings
  {"cmd": "fail", "seconds": 5}             stop answering for a while
  {"cmd": "set_energy", "wh": 1000}         set the import register (may go backwards)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import sys
import termios
import tty
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from station import exitcodes
from station.cliargs import Parser, new_path
from station.meter.registers import MAPS, RegisterMap, get_map

log = structlog.get_logger(__name__)

NOMINAL_V = 230.0
NOMINAL_HZ = 50.0
LOADED_PF = 0.99


@dataclass
class MeterPhysics:
    """What a three-phase meter would measure for a balanced EV load.

    Energy integrates the noise-free power over (monotonic) time, multiplied
    by `speedup` so tests and demos see the 0.1 kWh register move in seconds.
    """

    speedup: float = 1.0
    seed: int | None = None
    load_a: float = 0.0
    energy_import_wh: float = 0.0
    energy_export_wh: float = 0.0
    _last: float | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def nominal_power_w(self) -> float:
        return 3 * NOMINAL_V * self.load_a * (LOADED_PF if self.load_a > 0 else 1.0)

    def advance(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self.energy_import_wh += self.nominal_power_w * (now - self._last) / 3600.0 * self.speedup
        self._last = now

    def set_load(self, now: float, current_a: float) -> None:
        self.advance(now)
        self.load_a = current_a

    def set_energy(self, now: float, wh: float) -> None:
        self.advance(now)
        self.energy_import_wh = wh

    def sample(self, now: float) -> dict[str, float]:
        """One measurement, with the small noise a real meter shows."""
        self.advance(now)
        gauss = self._rng.gauss
        loaded = self.load_a > 0
        pf = min(1.0, LOADED_PF + gauss(0, 0.002)) if loaded else 1.0
        values: dict[str, float] = {
            "frequency": NOMINAL_HZ + gauss(0, 0.01),
            "power_factor": pf,
            "energy_import": self.energy_import_wh,
            "energy_export": self.energy_export_wh,
            "energy_total": self.energy_import_wh + self.energy_export_wh,
        }
        total = 0.0
        for phase in ("l1", "l2", "l3"):
            volts = NOMINAL_V + gauss(0, 0.8)
            amps = max(0.0, self.load_a + gauss(0, 0.03)) if loaded else 0.0
            watts = volts * amps * pf
            total += watts
            values[f"voltage_{phase}"] = volts
            values[f"current_{phase}"] = amps
            values[f"power_{phase}"] = watts
        values["power_total"] = total
        return values


class _PtyTransport(asyncio.Transport):
    """The pty master as an asyncio transport for pymodbus's server protocol.

    pymodbus opens serial ports by path, but a pty master has no path of its
    own; this small transport hands the master's bytes to the same protocol
    object the library would have used. While `muted()` is true, incoming
    bytes are dropped unanswered, like a meter that lost power.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, protocol: Any, muted: Any) -> None:
        super().__init__()
        self._loop = loop
        self._fd = fd
        self._protocol = protocol
        self._muted = muted
        self._closing = False

    def start(self) -> None:
        self._loop.add_reader(self._fd, self._read_ready)
        self._protocol.connection_made(self)

    def _read_ready(self) -> None:
        try:
            data = os.read(self._fd, 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no slave opener at the moment; we keep one, so rare
            return
        if data and not self._muted():
            self._protocol.data_received(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
            # Nobody reading the bus: the reply is lost, as on a real RS-485 line.
            os.write(self._fd, bytes(data))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)

    def is_closing(self) -> bool:
        return self._closing

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol


class MeterSimulator:
    """The meter: physics, a Modbus RTU server on a pty and a control socket."""

    def __init__(
        self,
        link: Path,
        control: Path,
        *,
        register_map: RegisterMap,
        unit: int = 1,
        speedup: float = 1.0,
        seed: int | None = None,
        energy_wh: float = 0.0,
    ) -> None:
        self.link = link
        self.control = control
        self.map = register_map
        self.unit = unit
        self.physics = MeterPhysics(speedup=speedup, seed=seed, energy_import_wh=energy_wh)
        self._loop = asyncio.get_running_loop()
        self._mute_until = 0.0
        self.requests = 0
        self._span_start = min(r.address for r in register_map.registers.values())
        self._span_end = max(r.end for r in register_map.registers.values())

    def muted(self) -> bool:
        return self._loop.time() < self._mute_until

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        """Refresh the whole register image from the physics before each read."""
        self.requests += 1
        for name, value in self.physics.sample(self._loop.time()).items():
            if name in self.map.registers:
                reg = self.map.registers[name]
                offset = reg.address - start_address
                registers[offset : offset + reg.kind.words] = self.map.encode(name, value)
        return None

    def _device(self) -> SimDevice:
        # One plain register block over the whole span: the reserved registers
        # between values read as 0, as on the ADL400, so merged reads succeed.
        block = SimData(
            address=self._span_start,
            count=self._span_end - self._span_start,
            values=0,
            datatype=DataType.REGISTERS,
        )
        return SimDevice(id=self.unit, simdata=[block], action=self._on_access)

    def state(self) -> dict[str, Any]:
        now = self._loop.time()
        self.physics.advance(now)
        return {
            "ok": True,
            "model": self.map.model,
            "unit": self.unit,
            "load_a": self.physics.load_a,
            "power_w": round(self.physics.nominal_power_w, 3),
            "energy_import_wh": round(self.physics.energy_import_wh, 3),
            "energy_export_wh": self.physics.energy_export_wh,
            "failing_for_s": round(max(0.0, self._mute_until - now), 3),
            "requests": self.requests,
            "speedup": self.physics.speedup,
            "link": str(self.link),
        }

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """Apply one control command; the reply says what happened."""
        cmd = message.get("cmd")
        now = self._loop.time()
        if cmd == "state":
            return self.state()
        if cmd == "set_load":
            amps = _number(message, "current_a", low=0.0, high=100.0)
            self.physics.set_load(now, amps)
            log.info("meter_sim.load", current_a=amps)
            return self.state()
        if cmd == "fail":
            seconds = _number(message, "seconds", low=0.0, high=3600.0)
            self._mute_until = now + seconds
            log.info("meter_sim.fail", seconds=seconds)
            return self.state()
        if cmd == "set_energy":
            wh = _number(message, "wh", low=0.0, high=0xFFFFFFFF * 100.0)
            self.physics.set_energy(now, wh)
            log.info("meter_sim.energy", wh=wh)
            return self.state()
        raise ValueError(f"unknown cmd {cmd!r}; use set_load, state, fail or set_energy")

    async def _control_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        raise ValueError("expected a JSON object")
                    reply = self.handle(message)
                except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def run(self, stop: asyncio.Event) -> None:
        master, slave = os.openpty()
        try:
            tty.setraw(slave, termios.TCSANOW)
            os.set_blocking(master, False)
            _replace_symlink(self.link, os.ttyname(slave))
            server = ModbusSerialServer(self._device(), framer=FramerType.RTU, port=str(self.link))
            # pymodbus opens serial ports by path; serve the pty master through our transport.
            server.call_create = partial(self._create_transport, server, master)  # type: ignore[method-assign]
            await server.serve_forever(background=True)
            with contextlib.suppress(FileNotFoundError):
                self.control.unlink()
            control = await asyncio.start_unix_server(self._control_client, path=str(self.control))
            log.info("meter_sim.ready", link=str(self.link), pty=os.ttyname(slave), control=str(self.control))
            try:
                await stop.wait()
            finally:
                control.close()
                await server.shutdown()
        finally:
            for path in (self.link, self.control):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            os.close(master)
            os.close(slave)

    async def _create_transport(self, server: ModbusSerialServer, fd: int) -> tuple[_PtyTransport, Any]:
        protocol = server.handle_new_connection()
        transport = _PtyTransport(self._loop, fd, protocol, self.muted)
        self._loop.call_soon(transport.start)
        return transport, protocol


def _number(message: dict[str, Any], key: str, *, low: float, high: float) -> float:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number")
    if not low <= value <= high:
        raise ValueError(f"{key} must be within {low}..{high}")
    return float(value)


def _replace_symlink(link: Path, target: str) -> None:
    """Point `link` at the pty atomically, so a station never sees a missing port mid-swap."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="station sim meter",
        description=(
            "Simulate a Modbus RTU energy meter on a pseudo-terminal. Point the station at the "
            "--link path (STATION_METER_PORT) and drive the load through the --control socket."
        ),
        epilog=(
            'control socket: JSON lines, e.g. {"cmd":"set_load","current_a":16}, {"cmd":"state"}, '
            '{"cmd":"fail","seconds":5}, {"cmd":"set_energy","wh":1000}'
        ),
    )
    parser.add_argument("--link", required=True, type=new_path, help="symlink to create for the pty slave, e.g. /tmp/meter")
    parser.add_argument("--control", required=True, type=new_path, help="Unix socket path for control commands")
    parser.add_argument("--model", default="adl400", choices=sorted(MAPS), help="register map (default: adl400)")
    parser.add_argument("--unit", type=int, default=1, help="Modbus unit id to answer as (default: 1)")
    parser.add_argument(
        "--speedup",
        type=float,
        default=1.0,
        help="energy accumulates this many times faster than real time (default: 1)",
    )
    parser.add_argument("--energy-wh", type=float, default=0.0, help="initial import energy register in Wh")
    parser.add_argument("--load", type=float, default=0.0, help="initial per-phase load current in A")
    parser.add_argument("--seed", type=int, default=None, help="seed the measurement noise (reproducible runs)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    sim = MeterSimulator(
        args.link,
        args.control,
        register_map=get_map(args.model),
        unit=args.unit,
        speedup=args.speedup,
        seed=args.seed,
        energy_wh=args.energy_wh,
    )
    loop = asyncio.get_running_loop()
    sim.physics.set_load(loop.time(), args.load)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.run(stop)


def main(argv: list[str] | None = None) -> int:
    """Entry point shared by `station sim meter` and `python -m station.meter.simulator`."""
    args = build_parser().parse_args(argv)
    if not 1 <= args.unit <= 247:
        print("--unit must be 1..247", file=sys.stderr)
        return 2
    if args.speedup <= 0:
        print("--speedup must be positive", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"meter simulator: cannot create the device link {args.link} and the control socket {args.control}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return exitcodes.CANNOT_LISTEN
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
