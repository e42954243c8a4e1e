"""ESP32 charge controller + EV simulator on a pseudo-terminal, with fault injection.

The station talks to it exactly as to the real board: through a serial device
path (a symlink to the pty's slave side), with the real wire protocol.  A Unix
control socket (JSON lines) plays the EV and the technician: plug, let the EV ask
for charge, pause, unplug, faults, and line faults (garbage, truncated or corrupted
frames, silence, reboot, slow answers, the USB device vanishing).

Run:  python -m station.controller.simulator --link /tmp/esp32 --control /tmp/esp32.ctl
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.cliargs import Parser, new_path, positive
from station.controller.protocol import (
    FIELD_RANGES,
    MAX_CURRENT_A,
    MIN_CURRENT_A,
    PILOT_CODES,
    Command,
    CommandCode,
    CommandParser,
    encode_status_line,
)
from station.core.model import ControllerState, PilotState

FIELDS_AND_ID = {*FIELD_RANGES, "ID"}
# Pilot voltage as the firmware reports it (ADC mV after the divider), per IEC 61851 state.
PILOT_MV = {PilotState.A: 3931, PilotState.B: 3010, PilotState.C: 2080, PilotState.D: 1150,
            PilotState.E: 0, PilotState.F: 0}
PROXIMITY_MV = {0: 2457, 13: 1830, 20: 1340, 32: 780, 63: 320}
PROXIMITY_CODE = {0: 0, 13: 1, 20: 2, 32: 3, 63: 4}


PWM_SCALES = {"8bit": 255, "permille": 1000, "10bit": 1023}
"""Full scale of the PWM field: the deployed firmware's 0..255; other builds report per mille or 10-bit."""


def pwm_for(amps: int, scale: str = "8bit") -> int:
    """IEC 61851 duty (amps / 0.6 %) scaled to the firmware's PWM field (0..255 unless `scale` says otherwise)."""
    return round(amps / 0.6 * PWM_SCALES[scale] / 100)


@dataclass
class EvState:
    """Physical world plus controller memory; everything the status line is derived from."""

    plugged: bool = False
    ev_requests: bool = False
    authorized: bool = False
    max_current_a: int = 16
    cable_a: int = 32
    stopped: bool = False
    fault: str | None = None  # "pilot" (CP=E) or "power_board" (PB=1)
    fault_ended: bool = False  # fault cleared while plugged: HARDFAULT_END until unplug
    was_charging: bool = False
    plug_detect_until: float = 0.0


class Esp32Simulator:
    """The simulated board: pty, state machine, periodic status, control socket."""

    def __init__(
        self,
        link: Path,
        control: Path,
        *,
        interval: float = 5.0,
        echo_id: bool = False,
        max_current: int = 16,
        cable: int = 32,
        plug_delay: float = 0.3,
        meter_control: Path | None = None,
        pwm_scale: str = "8bit",
    ) -> None:
        if pwm_scale not in PWM_SCALES:
            raise ValueError(f"pwm_scale must be one of {', '.join(PWM_SCALES)}")
        self.pwm_scale = pwm_scale
        self.link = link
        self.control = control
        self.interval = interval
        self.echo_id = echo_id
        self.default_max = max_current
        self.plug_delay = plug_delay
        self.meter_control = meter_control
        self.ev = EvState(max_current_a=max_current, cable_a=cable)
        self.parser = CommandParser()
        self.master: int | None = None
        self.slave: int | None = None
        self.silent_until = 0.0
        self.slow = 0.0
        self.request_id = 0
        self.rejected_commands = 0
        self.extras: dict[str, str] = {}
        self.commands: list[str] = []
        self._last_current = -1
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ pty

    def open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass through as on a UART
        os.set_blocking(master, False)
        self.master, self.slave = master, slave
        tmp = self.link.with_name(self.link.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link)  # atomic re-point
        self._loop.add_reader(master, self._on_readable)

    def close_pty(self) -> None:
        """The USB device vanishes: the link's open port errors and the path disappears."""
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        if self.master is not None:
            self._loop.remove_reader(self.master)
            os.close(self.master)
        if self.slave is not None:
            os.close(self.slave)
        self.master = self.slave = None
        self.parser = CommandParser()

    def _on_readable(self) -> None:
        assert self.master is not None
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO: nobody has the slave open; our own slave fd normally prevents this
        if self.silent():
            return  # a hung or rebooting ESP32 loses what it is sent
        for cmd in self.parser.feed(data):
            if not isinstance(cmd, Command):
                self.rejected_commands += 1
                continue
            if self.slow > 0:
                self._loop.call_later(self.slow, self._handle, cmd)
            else:
                self._handle(cmd)

    def write(self, data: bytes) -> None:
        """Write to the line; like a UART with nobody listening, drop what does not fit."""
        if self.master is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master, data)

    def silent(self) -> bool:
        return self._loop.time() < self.silent_until

    # ------------------------------------------------------------------ state machine

    def _handle(self, cmd: Command) -> None:
        if self.silent():
            return
        ev = self.ev
        self.commands.append(cmd.code.name)
        if cmd.code is CommandCode.STATUS:
            self.request_id = (self.request_id + 1) % 65536
            self.send_status(self.request_id if self.echo_id else None)
        elif cmd.code is CommandCode.AUTHORIZE:
            if ev.fault is None and not ev.fault_ended and not ev.stopped:
                ev.authorized = True
        elif cmd.code is CommandCode.STOP:
            ev.authorized = False
            if ev.plugged:
                ev.stopped = True
        elif cmd.code is CommandCode.SET_MAX_CURRENT:
            if self.controller_state() is not ControllerState.CHARGING:  # firmware rule
                ev.max_current_a = cmd.value
        self.after_change()

    def pilot(self) -> PilotState:
        ev = self.ev
        if ev.fault == "pilot":
            return PilotState.E
        if not ev.plugged:
            return PilotState.A
        return PilotState.C if ev.ev_requests else PilotState.B

    def controller_state(self) -> ControllerState:
        ev = self.ev
        if ev.fault is not None:
            return ControllerState.FAULT_HARD
        if ev.fault_ended:
            return ControllerState.HARDFAULT_END
        if not ev.plugged:
            return ControllerState.IDLE
        if ev.stopped:
            return ControllerState.STOPPED
        if self._loop.time() < ev.plug_detect_until:
            return ControllerState.CABLE_DETECT
        if not ev.authorized:
            return ControllerState.EV_CONNECTED
        if ev.ev_requests:
            return ControllerState.CHARGING
        return ControllerState.PAUSED if ev.was_charging else ControllerState.READY

    def charging_current(self) -> int:
        if self.controller_state() is not ControllerState.CHARGING:
            return 0
        return min(self.ev.max_current_a, self.ev.cable_a)

    def fields(self) -> dict[str, int | str]:
        ev = self.ev
        state = self.controller_state()
        pilot = self.pilot()
        cable = ev.cable_a if ev.plugged else 0
        offering = ev.authorized and ev.plugged and state in (
            ControllerState.READY, ControllerState.CHARGING, ControllerState.PAUSED)
        return {
            "CP": PILOT_CODES[pilot],
            "CPV": PILOT_MV[pilot],
            "PP": PROXIMITY_CODE.get(cable, 1),
            "PPV": PROXIMITY_MV.get(cable, 1000),
            "RL": int(state is ControllerState.CHARGING),
            "LOCK": int(ev.plugged and (ev.authorized or state is ControllerState.CHARGING)),
            "MOTOR": 0,
            "PWM": (pwm_for(min(ev.max_current_a, cable or ev.max_current_a), self.pwm_scale) if offering
                    else PWM_SCALES[self.pwm_scale]),
            "MAX": ev.max_current_a,
            "CABLE": cable,
            "AUTH": int(ev.authorized),
            "STATE": int(state),
            "PB": int(ev.fault == "power_board"),
            "STOP": int(ev.stopped),
            **self.extras,
        }

    def send_status(self, request_id: int | None = None) -> None:
        self.write(encode_status_line(self.fields(), request_id) + b"\r\n")

    def after_change(self) -> None:
        """Track charging history and tell the meter simulator when the current changes."""
        if self.controller_state() is ControllerState.CHARGING:
            self.ev.was_charging = True
        current = self.charging_current()
        if current != self._last_current:
            self._last_current = current
            self._spawn(self._notify_meter(current))

    async def _notify_meter(self, current: int) -> None:
        if self.meter_control is None:
            return
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            async with asyncio.timeout(1.0):
                reader, writer = await asyncio.open_unix_connection(str(self.meter_control))
                writer.write(json.dumps({"cmd": "set_load", "current_a": current}).encode() + b"\n")
                await writer.drain()
                with contextlib.suppress(Exception):
                    await reader.readline()
                writer.close()

    def reboot_state(self) -> None:
        """A reset ESP32 forgets authorization, limits, stop and faults; the cable stays plugged."""
        ev = self.ev
        ev.authorized = ev.stopped = ev.was_charging = ev.fault_ended = False
        ev.fault = None
        ev.max_current_a = self.default_max
        self.parser = CommandParser()

    # ------------------------------------------------------------------ control socket

    async def control_command(self, req: dict[str, Any]) -> dict[str, Any]:
        """Apply one control request; returns the reply (always includes the resulting state)."""
        cmd = req.get("cmd")
        ev = self.ev
        now = self._loop.time()
        if cmd == "plug":
            if not ev.plugged:
                ev.plugged, ev.ev_requests, ev.stopped, ev.was_charging = True, False, False, False
                ev.cable_a = int(req.get("cable_a", ev.cable_a))
                ev.plug_detect_until = now + self.plug_delay
                self._loop.call_later(self.plug_delay + 0.01, self.after_change)
        elif cmd == "unplug":
            ev.plugged = ev.ev_requests = ev.stopped = ev.was_charging = ev.fault_ended = False
            ev.authorized = False  # a session ends with the cable
        elif cmd == "ev_charge":
            if not ev.plugged:
                return {"ok": False, "error": "no EV plugged"}
            ev.ev_requests = True
        elif cmd == "ev_pause":
            ev.ev_requests = False
        elif cmd == "fault":
            kind = req.get("kind", "pilot")
            if kind not in ("pilot", "power_board"):
                return {"ok": False, "error": "kind must be pilot or power_board"}
            ev.fault, ev.authorized = kind, False
        elif cmd == "clear_fault":
            if ev.fault is not None:
                ev.fault = None
                ev.fault_ended = ev.plugged
        elif cmd == "state":
            pass
        elif cmd == "garbage":
            self.write(bytes(random.getrandbits(8) for _ in range(int(req.get("n", 64)))))
        elif cmd == "truncated":
            line = encode_status_line(self.fields())
            self.write(line[: random.randint(6, len(line) - 2)])
        elif cmd == "corrupted":
            line = encode_status_line(self.fields())
            field = str(req.get("field", "STATE"))
            start = line.index(f";{field}=".encode()) + len(field) + 2
            end = line.index(b";", start)
            self.write(line[:start] + str(req.get("value", "9x")).encode() + line[end:] + b"\r\n")
        elif cmd == "silence":
            self.silent_until = now + float(req.get("seconds", 5.0))
        elif cmd == "reboot":
            self.silent_until = now + float(req.get("seconds", 1.5))
            self.reboot_state()
        elif cmd == "slow":
            self.slow = float(req.get("seconds", 0.0))
        elif cmd == "disconnect":
            self.close_pty()
            self._loop.call_later(float(req.get("seconds", 1.0)), self.open_pty)
        elif cmd == "extra":
            key = str(req["key"])
            if not key.isidentifier() or key.upper() in FIELDS_AND_ID:
                return {"ok": False, "error": f"bad extra field name {key!r}"}
            if req.get("value") is None:
                self.extras.pop(key, None)
            else:
                self.extras[key] = str(req["value"]).replace(";", ",").replace(">", ")").replace("<", "(")
        elif cmd == "pwm_scale":
            scale = str(req.get("scale", "8bit"))
            if scale not in PWM_SCALES:
                return {"ok": False, "error": f"scale must be one of {', '.join(PWM_SCALES)}"}
            self.pwm_scale = scale
        elif cmd == "send_status":
            self.send_status()
        else:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        self.after_change()
        # Like the real board, state changes are only reported by the next periodic line or
        # the next status request: the station has to poll to learn of them promptly.
        return {"ok": True, "state": self.state_dict()}

    def state_dict(self) -> dict[str, Any]:
        state = self.controller_state()
        return {
            **self.fields(),
            "state_name": state.name,
            "pilot": self.pilot().value,
            "charging_current_a": self.charging_current(),
            "plugged": self.ev.plugged,
            "ev_requests": self.ev.ev_requests,
            "silent": self.silent(),
            "slow_s": self.slow,
            "port_present": self.master is not None,
            "rejected_commands": self.rejected_commands,
            "commands": list(self.commands[-20:]),
        }

    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("request must be a JSON object")
                    reply = await self.control_command(req)
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # ------------------------------------------------------------------ main loop

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, stop: asyncio.Event) -> None:
        self.open_pty()
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()
        server = await asyncio.start_unix_server(self._serve_control, path=str(self.control))
        self.after_change()
        try:
            while not stop.is_set():
                if not self.silent():
                    self.send_status()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            server.close()
            self.close_pty()
            with contextlib.suppress(FileNotFoundError):
                self.control.unlink()
            for task in list(self._tasks):
                task.cancel()


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="station sim esp32",
        description=(
            "Simulated ESP32 charge controller with an EV, on a pseudo-terminal.\n"
            "The station opens --link exactly as it opens /dev/esp32 (115200 8N1, same wire protocol).\n"
            "Drive the EV and inject faults with JSON lines on the --control socket, e.g.\n"
            "  echo '{\"cmd\": \"plug\"}' | socat - UNIX-CONNECT:/tmp/esp32.ctl\n\n"
            "EV:     plug [cable_a], unplug, ev_charge, ev_pause, fault [kind: pilot|power_board],\n"
            "        clear_fault, state\n"
            "Faults: garbage [n], truncated, corrupted [field, value], silence [seconds],\n"
            "        reboot [seconds], slow [seconds], disconnect [seconds], extra key [value],\n"
            "        send_status, pwm_scale [scale: 8bit|permille|10bit]\n"
            "See docs/hardware.md for the state machine and every command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--link", required=True, type=new_path, metavar="PATH",
                   help="serial device path to create (symlink to the pty), e.g. /tmp/esp32")
    p.add_argument("--control", required=True, type=new_path, metavar="PATH", help="Unix socket for control commands (JSON lines)")
    p.add_argument("--interval", type=positive, default=5.0, metavar="SECONDS", help="seconds between unsolicited status lines (5)")
    p.add_argument("--echo-id", action="store_true", help="add ID=<n> to answers to status requests")
    p.add_argument("--max-current", type=int, default=16, choices=range(MIN_CURRENT_A, MAX_CURRENT_A + 1),
                   metavar="A", help="current limit after boot, 6..32 A (16)")
    p.add_argument("--cable", type=int, default=32, metavar="A", help="current rating of the plugged cable, A (32)")
    p.add_argument("--plug-delay", type=float, default=0.3, metavar="SECONDS",
                   help="seconds in CABLE_DETECT after plugging before the EV is seen (0.3)")
    p.add_argument("--meter-control", type=new_path, default=None, metavar="PATH",
                   help="meter simulator control socket; told the charging current as it changes")
    p.add_argument("--pwm-scale", choices=tuple(PWM_SCALES), default="8bit",
                   help="full scale of the PWM field: 8bit 0..255 (the deployed firmware), permille 0..1000 "
                        "or 10bit 0..1023 (other firmware builds)")
    return p


async def _amain(args: argparse.Namespace) -> None:
    sim = Esp32Simulator(
        args.link, args.control, interval=args.interval, echo_id=args.echo_id,
        max_current=args.max_current, cable=args.cable, plug_delay=args.plug_delay,
        meter_control=args.meter_control, pwm_scale=args.pwm_scale,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.run(stop)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `station sim esp32` and `python -m station.controller.simulator`."""
    from station import exitcodes

    args = build_parser().parse_args(argv)
    try:
        asyncio.run(_amain(args))
    except OSError as exc:
        print(f"esp32 simulator: cannot create the device link {args.link} and the control socket {args.control}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return exitcodes.CANNOT_LISTEN
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 130
    return 0


# ---------------------------------------------------------------------- test / demo helper


class SimulatorProcess:
    """Runs the simulator as a real subprocess (like hardware) and sends it control commands.

    Usage: `async with SimulatorProcess(tmp_path, interval=5) as sim: await sim.command("plug")`;
    `sim.port` is the serial device path to give the link.
    """

    def __init__(self, directory: Path, *, interval: float = 5.0, extra_args: list[str] | None = None) -> None:
        self.port = directory / "esp32"
        self.control = directory / "esp32.ctl"
        self.interval = interval
        self.extra_args = extra_args or []
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SimulatorProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "station.controller.simulator",
            "--link", str(self.port), "--control", str(self.control),
            "--interval", str(self.interval), *self.extra_args,
        )
        async with asyncio.timeout(10):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"simulator exited with {self.proc.returncode}")
                with contextlib.suppress(OSError):
                    await self.command("state")
                    return self
                await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def command(self, cmd: str, **params: Any) -> dict[str, Any]:
        """Send one control command; raises RuntimeError if the simulator refuses it."""
        reader, writer = await asyncio.open_unix_connection(str(self.control))
        try:
            writer.write(json.dumps({"cmd": cmd, **params}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
        finally:
            writer.close()
        if not reply.get("ok"):
            raise RuntimeError(f"simulator refused {cmd}: {reply.get('error')}")
        return reply["state"]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Poll the simulator's state until predicate(state) holds."""
        async with asyncio.timeout(timeout):
            while True:
                state = await self.command("state")
                if predicate(state):
                    return state
                await asyncio.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main())
