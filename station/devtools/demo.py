"""`station demo`: the whole charge point on one machine, no hardware.

Separate real processes — ESP32 + EV simulator and meter simulator (each on a pseudo-terminal),
the station daemon and the API — plus the development CSMS hosted here, so the script can
play the operator's part (remote start/stop) and check what reached the backend.

The station and the API read an env file in the working directory (`station.env`), and the demo
prints the exact commands that reach them from another terminal (`station --env-file ... status`,
`--once`, `station-api`, `dev-csms call`): the README's tour, against the running demo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station import envfile, exitcodes
from station.devtools.csms import DevCsms
from station.devtools.csms_control import ControlServer

STATION_ID = "DEMO_AC_001"
METER_SPEEDUP = 60
"""The demo's sessions last seconds; the meter's register counts 0.1 kWh steps."""
REQUIRED = ("BootNotification", "StatusNotification", "Heartbeat")


def free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on 127.0.0.1:`port` (Linux /proc): a connection that
    succeeds may reach whichever program took the port first."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A = LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return True
    return False


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Stop the demo like Ctrl-C does (`kill PID`, a closed terminal): every child stopped, the work dir removed."""


def say(who: str, text: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    # After SIGHUP the terminal is gone: narration must not abort the clean-up.
    with contextlib.suppress(OSError, ValueError):
        print(f"{stamp}  {who:<8} {text}", flush=True)


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    pump: asyncio.Task[None] | None = None


def command_path(name: str) -> str:
    """How to type this installation's `station` / `station-api` from the current directory (`.venv/bin/station`
    when run by `make demo`): the plain name only when the shell would find that very script."""
    script = Path(sys.executable).parent / name
    if not script.exists():
        return f"{sys.executable} -m {'api' if name == 'station-api' else 'station'}"
    found = shutil.which(name)
    if found and Path(found).resolve() == script.resolve():
        return name
    with contextlib.suppress(ValueError):
        relative = os.path.relpath(script)
        if not relative.startswith(".."):
            return relative
    return str(script)


@dataclass
class Demo:
    version: str
    seconds: float | None
    api_port_wanted: int | None = None
    """`--api-port`: the API's port (0 = any free one); None = 8080 when free, else any free one."""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="station-demo-")))
    children: list[Child] = field(default_factory=list)
    api_port: int = 0
    csms: DevCsms | None = None
    control: ControlServer | None = None
    """`station dev-csms call ... --control <workdir>/csms.ctl` reaches the demo's CSMS through it."""
    stopped_by: str | None = None
    """Name of the signal that stopped the demo (SIGTERM, SIGHUP), if one did."""
    stopping: bool = False
    """`stop_all` runs: a signal now must not cancel it half-way."""

    # --- processes ---------------------------------------------------------------------
    async def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        log_path = self.workdir / f"{name}.log"
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        child = Child(name, process, log_path)
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)
        return child

    async def _pump(self, child: Child) -> None:
        assert child.process.stdout is not None
        with child.log_path.open("w") as log:
            async for raw in child.process.stdout:
                line = raw.decode(errors="replace").rstrip()
                log.write(line + "\n")
                log.flush()
                if child.name == "station":
                    self._narrate_station(line)

    def _narrate_station(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        text = str(event.get("event", ""))
        if text == "connector status":
            say("station", f"connector {event.get('connector_id')} → {event.get('status')}"
                + (f" ({event['info']})" if event.get("info") else ""))
        elif text in ("transaction started", "transaction ended", "boot accepted"):
            detail = {k: event[k] for k in ("transaction_id", "reason", "energy_wh", "heartbeat_interval") if k in event}
            say("station", " ".join([text, *(f"{k}={v}" for k, v in detail.items())]))
        elif text.startswith("ocpp link: connected") or text == "charge controller link":
            say("station", text if text != "charge controller link" else
                f"ESP32 link {'up' if event.get('up') else 'DOWN'}: {event.get('reason')}")
        elif event.get("level") in ("error", "critical"):
            say("station", f"ERROR {text}")

    async def stop_all(self) -> None:
        self.stopping = True
        for child in reversed(self.children):
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                await asyncio.wait_for(child.process.wait(), 8)
            except TimeoutError:
                say("demo", f"{child.name} did not stop within 8 s; killing it")
                child.process.kill()
                await child.process.wait()
            if child.pump:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.pump, 2)
        if self.control is not None:
            await self.control.close()
        if self.csms:
            await self.csms.stop()

    # --- the simulated world --------------------------------------------------------------
    async def ev(self, cmd: str, **params: Any) -> None:
        reader, writer = await asyncio.open_unix_connection(str(self.workdir / "esp32.sock"))
        writer.write((json.dumps({"cmd": cmd, **params}) + "\n").encode())
        await writer.drain()
        await reader.readline()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def start_api(self, env: dict[str, str], port: int, attempts: int = 3) -> int:
        """Start the API and return the port it listens on.

        `free_port` only says a port was free a moment ago; another program may take it before
        the API binds (8080 is popular). Then the API exits, and the demo tries another port
        instead of announcing a status page nobody serves.
        """
        for _ in range(attempts):
            child = await self.spawn("api", "-m", "api", env={**env, "STATION_API_BIND": f"127.0.0.1:{port}"})
            deadline = time.monotonic() + 15
            while child.process.returncode is None and time.monotonic() < deadline:
                if _listens(child.process.pid, port):
                    return port
                await asyncio.sleep(0.1)
            if child.process.returncode is None:
                raise RuntimeError(f"the API did not listen on 127.0.0.1:{port} within 15 s")
            if child.pump is not None:  # the process is gone: its output ends
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.pump, 2)
            self.children.remove(child)
            say("demo", f"the API could not listen on 127.0.0.1:{port} (taken by another program?); trying another port")
            port = free_port()
        raise RuntimeError(f"the API could not start ({attempts} ports tried; see {self.workdir / 'api.log'})")

    async def wait_for_path(self, path: Path, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} did not appear within {timeout:.0f} s (see logs in {self.workdir})")
            await asyncio.sleep(0.05)

    def _watch_csms(self) -> asyncio.Task[None]:
        async def watch() -> None:
            assert self.csms is not None
            seen = 0
            while True:
                await asyncio.sleep(0.1)
                for item in self.csms.received[seen:]:
                    if item.kind == "call":
                        say("CSMS", f"← {item.action} {_brief(item.action, item.payload)}".rstrip())
                seen = len(self.csms.received)

        return asyncio.create_task(watch())

    # --- the script -----------------------------------------------------------------------
    async def main(self) -> int:
        """`run()` with SIGTERM and SIGHUP turned into a cancellation, so its clean-up runs as for Ctrl-C."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(sig: signal.Signals) -> None:
            if self.stopped_by is None:
                self.stopped_by = sig.name
                if not self.stopping:  # a signal must not interrupt the clean-up itself
                    task.cancel()

        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        try:
            return await self.run()
        except asyncio.CancelledError:
            if self.stopped_by is None:
                raise
            return exitcodes.OK
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    async def run(self) -> int:
        self.csms = DevCsms(port=free_port(9000), heartbeat_interval=5)
        await self.csms.start()
        self.control = ControlServer(self.csms, self.workdir / "csms.ctl")
        await self.control.start()
        watcher = self._watch_csms()
        self.api_port = free_port(8080 if self.api_port_wanted is None else self.api_port_wanted or None)
        token = secrets.token_urlsafe(32)  # station-api needs at least 24 characters
        token_file = self.workdir / "api-token"  # for the control endpoints; gone with the work dir
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n")
        d = self.workdir
        settings = {
            "OCPP_STATION_NAME": STATION_ID,
            "OCPP_PRIMARY": self.version,
            "OCPP_201_URL": self.csms.url("201"),
            "OCPP_16_URL": self.csms.url("16"),
            "STATION_ESP32_PORT": str(d / "esp32"),
            "STATION_METER_PORT": str(d / "meter"),
            "STATION_METER_VALUE_SECONDS": "5",
            "STATION_STATE_DIR": str(d / "state"),
            "STATION_IPC_SOCKET": str(d / "station.sock"),
            "STATION_API_BIND": f"127.0.0.1:{self.api_port}",
            "STATION_API_TOKEN": token,
            "STATION_LOG_FORMAT": "json",
            "STATION_BACKOFF_MIN_SECONDS": "0.5",
            "STATION_BACKOFF_MAX_SECONDS": "5",
        }
        env_file = d / "station.env"
        self.write_env_file(env_file, settings)
        env = {"STATION_ENV_FILE": str(env_file)}
        try:
            say("demo", f"working directory {d} (process logs: *.log)")
            say("demo", f"CSMS listening on {self.csms.url(self.version)} (OCPP {_label(self.version)})")
            # The meter counts in 0.1 kWh steps: at real speed a short demo session would bill 0 Wh.
            await self.spawn("meter-sim", "-m", "station", "sim", "meter", "--link", str(d / "meter"),
                             "--control", str(d / "meter.sock"), "--energy-wh", "1520300",
                             "--speedup", str(METER_SPEEDUP))
            say("demo", f"meter simulator: energy counts {METER_SPEEDUP}x faster than real time "
                        "(one second of charging bills one minute)")
            await self.spawn("esp32-sim", "-m", "station", "sim", "esp32", "--link", str(d / "esp32"),
                             "--control", str(d / "esp32.sock"), "--meter-control", str(d / "meter.sock"))
            await self.wait_for_path(d / "esp32")
            await self.wait_for_path(d / "esp32.sock")
            await self.wait_for_path(d / "meter")
            await self.spawn("station", "-m", "station", "run", env=env)
            port = await self.start_api(env, self.api_port)
            if port != self.api_port:  # moved: the env file says where the API listens
                self.api_port, settings["STATION_API_BIND"] = port, f"127.0.0.1:{port}"
                self.write_env_file(env_file, settings)
            say("demo", f"status page: http://127.0.0.1:{self.api_port}/   (API docs: /docs)")
            say("demo", f"control endpoints (docs/api.md): curl -H \"Authorization: Bearer $(cat {token_file})\" "
                        f"-X POST http://127.0.0.1:{self.api_port}/connectors/1/unlock")
            await self.csms.wait_for("StatusNotification", STATION_ID, timeout=20)
            self.print_commands(env_file)
            if self.seconds is None:
                say("demo", "playing charging sessions until Ctrl-C")
                while True:
                    await self.session(charge_s=30)
                    await asyncio.sleep(10)
            else:
                started = time.monotonic()
                await self.session(charge_s=max(4.0, self.seconds - 12))
                remaining = self.seconds - (time.monotonic() - started)
                if remaining > 0:
                    await asyncio.sleep(remaining)
                return self.verdict()
        except (RuntimeError, TimeoutError) as exc:
            say("demo", f"FAILED: {exc or 'timed out'} — logs in {d}")
            return exitcodes.FAILURE
        finally:
            watcher.cancel()
            say("demo", "stopping every process" + (f" ({self.stopped_by})" if self.stopped_by else ""))
            await self.stop_all()
        return exitcodes.OK

    @staticmethod
    def write_env_file(path: Path, settings: dict[str, str]) -> None:
        """The demo station's settings (the API token too: mode 0600, removed with the work dir)."""
        envfile.write_atomic(path, envfile.render(settings, header="station demo: the station's and the API's "
                                                  "settings (station --env-file THIS-FILE ...)"), mode=0o600)

    def print_commands(self, env_file: Path) -> None:
        """The README's tour against this demo, each command exactly as it is typed in another terminal."""
        assert self.control is not None
        station, api = command_path("station"), command_path("station-api")
        say("demo", "in another terminal while the demo runs, these commands reach it:")
        say("demo", f"$ {station} --env-file {env_file} status")
        say("demo", f"$ {station} --env-file {env_file} --once")
        say("demo", f"$ {station} dev-csms call {STATION_ID} GetBaseReport "
                    f"'{{\"requestId\": 1, \"reportBase\": \"FullInventory\"}}' --wait-for NotifyReport "
                    f"--control {self.control.path}")
        say("demo", f"$ {api} --env-file {env_file} --bind 127.0.0.1:{free_port()}   "
                    "(a second API beside the demo's, on another port; Ctrl-C stops it)")

    async def session(self, charge_s: float) -> None:
        assert self.csms is not None
        say("EV", "cable plugged in")
        await self.ev("plug")
        await asyncio.sleep(1.0)
        start = ("RequestStartTransaction", {"idToken": {"idToken": "DEMO-RFID-1", "type": "ISO14443"},
                                             "remoteStartId": int(time.time()) % 100000, "evseId": 1})
        if self.version == "16":
            start = ("RemoteStartTransaction", {"idTag": "DEMO-RFID-1", "connectorId": 1})
        say("CSMS", f"→ {start[0]} (driver authorized in the app)")
        answer = await self.csms.call(STATION_ID, *start)
        say("CSMS", f"  answer: {answer.get('status')}")
        await asyncio.sleep(0.5)
        say("EV", "requests charge (state C)")
        await self.ev("ev_charge")
        await asyncio.sleep(charge_s)
        tx = self._current_transaction()
        say("CSMS", "→ stop the session")
        if self.version == "16":
            await self.csms.call(STATION_ID, "RemoteStopTransaction", {"transactionId": tx})
        else:
            await self.csms.call(STATION_ID, "RequestStopTransaction", {"transactionId": tx})
        await asyncio.sleep(1.5)
        say("EV", "cable unplugged")
        await self.ev("unplug")
        await asyncio.sleep(1.0)

    def _current_transaction(self) -> Any:
        assert self.csms is not None
        for item in reversed(self.csms.received):
            if item.kind == "call" and item.action == "TransactionEvent" and item.payload["eventType"] == "Started":
                return item.payload["transactionInfo"]["transactionId"]
            if item.kind == "call" and item.action == "StartTransaction":
                return self.csms.last_transaction_id
        raise RuntimeError("the CSMS never saw the transaction start")

    def verdict(self) -> int:
        assert self.csms is not None
        actions = [r.action for r in self.csms.received if r.kind == "call"]
        tx = [r for r in self.csms.received if r.kind == "call" and r.action in
              ("TransactionEvent", "StartTransaction", "StopTransaction")]
        started = any(r.action == "StartTransaction" or r.payload.get("eventType") == "Started" for r in tx)
        ended = any(r.action == "StopTransaction" or r.payload.get("eventType") == "Ended" for r in tx)
        missing = [a for a in REQUIRED if a not in actions]
        missing += [] if started else ["transaction start"]
        missing += [] if ended else ["transaction end"]
        readings = [wh for wh in map(_energy_wh, tx) if wh is not None]
        missing += [] if len(readings) >= 2 and readings[-1] > readings[0] else ["a rising energy reading"]
        counts = {a: actions.count(a) for a in dict.fromkeys(actions)}
        say("demo", f"CSMS received: {counts}")
        if missing:
            say("demo", f"FAILED: the CSMS never received {', '.join(missing)}")
            return exitcodes.FAILURE
        say("demo", "OK: boot, status, heartbeat and a complete, metered transaction reached the CSMS")
        return exitcodes.OK


def _label(version: str) -> str:
    return "2.0.1" if version == "201" else "1.6J"


def _energy_wh(received: Any) -> float | None:
    """The energy register a transaction message carries (Wh), if any."""
    payload = received.payload
    if received.action in ("StartTransaction", "StopTransaction"):
        value = payload.get("meterStart", payload.get("meterStop"))
        return None if value is None else float(value)
    for mv in payload.get("meterValue", []):
        for sample in mv["sampledValue"]:
            if sample.get("measurand") == "Energy.Active.Import.Register" and "phase" not in sample:
                return float(sample["value"])
    return None


def _brief(action: str, payload: dict[str, Any]) -> str:
    if action == "StatusNotification":
        return f"connector {payload.get('connectorId') or payload.get('evseId')}: " \
               f"{payload.get('connectorStatus') or payload.get('status')}"
    if action == "TransactionEvent":
        samples = {s.get("measurand"): s["value"] for mv in payload.get("meterValue", []) for s in mv["sampledValue"]
                   if "phase" not in s}
        meter = ""
        if "Energy.Active.Import.Register" in samples:
            meter = f" energy {samples['Energy.Active.Import.Register']} Wh"
        if "Power.Active.Import" in samples:
            meter += f", power {samples['Power.Active.Import']} W"
        return f"{payload['eventType']} seq {payload['seqNo']} ({payload['triggerReason']}){meter}"
    if action in ("StartTransaction", "StopTransaction"):
        return f"meter {payload.get('meterStart', payload.get('meterStop'))} Wh"
    if action == "NotifyEvent":
        return "; ".join(f"{e['component']['name']}.{e['variable']['name']} = {e.get('actualValue')} ({e.get('trigger')})"
                         for e in payload.get("eventData", []))
    if action == "SecurityEventNotification":
        return str(payload.get("type", ""))
    if action == "BootNotification":
        return str(payload.get("reason", ""))
    if action == "MeterValues":
        values = {v.get("measurand"): v["value"] for v in payload["meterValue"][0]["sampledValue"] if "phase" not in v}
        return f"energy {values.get('Energy.Active.Import.Register')} Wh, power {values.get('Power.Active.Import')} W"
    return ""


def run_demo(args: argparse.Namespace) -> int:
    from station import logs

    logs.configure("console" if sys.stderr.isatty() else "json", "warning")
    seconds = args.seconds if args.seconds is not None else (
        float(os.environ["DEMO_SECONDS"]) if os.environ.get("DEMO_SECONDS") else None)
    version = args.ocpp or os.environ.get("OCPP_PRIMARY", "201")
    if version not in ("201", "16"):
        print(f"demo: OCPP_PRIMARY={version!r}: expected 201 or 16", file=sys.stderr)
        return exitcodes.CONFIG
    demo = Demo(version=version, seconds=seconds, api_port_wanted=args.api_port)
    try:
        code = asyncio.run(demo.main())
    except KeyboardInterrupt:
        code = exitcodes.OK
    if code == exitcodes.OK:
        shutil.rmtree(demo.workdir, ignore_errors=True)
    return code
