"""`make interop`: the station daemon driven through a scripted operator scenario, in both OCPP versions.

Against the dev CSMS in CitrineOS-quirks mode (station/devtools/csms_quirks.py) always; and, only when
the operator has a CitrineOS running and says where (CITRINEOS_URL), through CitrineOS's REST API as
well. This harness never installs, builds or starts CitrineOS (docs/interop.md says why and how to
run one). Everything else is real and on loopback: the daemon (`station run`), the ESP32 + EV and
meter simulators as processes, and a link emulator between station and CSMS for the outage.

Scenarios: boot, connector status (after CitrineOS dropped the first one), report, Get/SetVariables
(1.6: Get/ChangeConfiguration), a remote and a local session with meter values, an outage in the
middle of a session, and a reset. Prints a table: scenario, version, result, duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import DevCsms, Received
from station.devtools.csms_quirks import CALL_CACHE_SECONDS, CitrineQuirksCsms
from station.devtools.linkemu import LinkEmulator
from station.ipc.client import DaemonUnavailable, IpcClient
from station.ipc.protocol import IpcError
from station.meter.sim_process import MeterSimProcess

STATION_ID = "INTEROP_AC_001"
TOKEN_REMOTE = "INTEROP-APP-1"
TOKEN_LOCAL = "INTEROP-RFID-1"
LABEL = {"201": "2.0.1", "16": "1.6"}
SCENARIO_TIMEOUT = 240.0
"""Generous: a scenario's duration, printed, shows a slow path; only a wedged one fails by time."""


class ScenarioFailed(Exception):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise ScenarioFailed(message)


@dataclass
class Result:
    scenario: str
    version: str
    result: str
    seconds: float
    note: str = ""


# ------------------------------------------------------------------------- CSMS backends
class DevOperator:
    """The operator's side on the dev CSMS: its calls, and what it received (observable)."""

    name = "dev CSMS (CitrineOS quirks)"
    observes = True

    def __init__(self, csms: DevCsms) -> None:
        self.csms = csms

    async def call(self, version: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.csms.call(STATION_ID, action, payload, timeout=60)

    def mark(self) -> int:
        return self.csms.mark()

    async def saw(self, action: str, predicate: Callable[[Received], bool] | None = None, *, since: int = 0,
                  timeout: float = 60) -> Received:
        return await self.csms.wait_for(action, STATION_ID, predicate, timeout=timeout, since=since)

    def calls(self, action: str, since: int = 0) -> list[Received]:
        return [r for r in self.csms.received[since:] if r.kind == "call" and r.action == action and r.station_id == STATION_ID]


MODULE = {
    "RequestStartTransaction": "evdriver", "RequestStopTransaction": "evdriver",
    "RemoteStartTransaction": "evdriver", "RemoteStopTransaction": "evdriver",
    "GetBaseReport": "reporting", "GetVariables": "monitoring", "SetVariables": "monitoring",
    "GetConfiguration": "configuration", "ChangeConfiguration": "configuration",
    "Reset": "configuration", "TriggerMessage": "configuration",
}
"""CitrineOS's module (default endpoint prefix) for each message its REST API sends."""


class CitrineOperator:
    """The operator's side on a running CitrineOS: message endpoints `POST /ocpp/<version>/<module>/<action>`.

    CitrineOS answers such a request with whether it sent the call (`{"success": true}`); the
    station's answer goes to a callback, so here the station's side is checked instead (IPC)."""

    observes = False

    def __init__(self, rest_url: str, tenant_id: str = "1") -> None:
        self.rest_url = rest_url.rstrip("/")
        self.tenant_id = tenant_id
        self.name = f"CitrineOS at {self.rest_url}"

    async def call(self, version: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        path = f"/ocpp/{LABEL[version]}/{MODULE[action]}/{action[0].lower()}{action[1:]}"
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(self.rest_url + path, params={"identifier": STATION_ID, "tenantId": self.tenant_id},
                                         json=payload)
        check(response.status_code < 300, f"CitrineOS {path}: HTTP {response.status_code} {response.text[:200]}")
        body = response.json()
        confirmations = body if isinstance(body, list) else [body]
        check(all(c.get("success") for c in confirmations), f"CitrineOS did not send {action}: {body}")
        return {"status": "Accepted", "citrineos": body}

    def mark(self) -> int:
        return 0


Operator = DevOperator | CitrineOperator


# ------------------------------------------------------------------------- the station's processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """`station run` as a process; `restart()` plays systemd's Restart=always after a Reset."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "station", "run", env=self.env, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def ipc(self) -> IpcClient:
        return IpcClient(self.env["STATION_IPC_SOCKET"], timeout=15)

    async def status(self) -> dict[str, Any]:
        async with self.ipc() as ipc:
            return await ipc.status()

    async def until(self, what: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(Exception):
                        status = await self.status()
                        if condition(status):
                            return status
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise ScenarioFailed(f"the station never reported {what} within {timeout:g} s") from None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def connector(status: dict[str, Any]) -> dict[str, Any]:
    return dict(status["connectors"][0])


def transaction(status: dict[str, Any]) -> dict[str, Any] | None:
    return connector(status).get("transaction")


# ------------------------------------------------------------------------- the scenario
@dataclass
class Run:
    version: str
    operator: Operator
    daemon: Daemon
    esp: SimulatorProcess
    link: LinkEmulator
    results: list[Result] = field(default_factory=list)

    @property
    def v201(self) -> bool:
        return self.version == "201"

    async def scenario(self, name: str, body: Callable[[], Awaitable[str | None]], *, needs_observation: bool = False) -> bool:
        if needs_observation and not self.operator.observes:
            self.results.append(Result(name, LABEL[self.version], "SKIP", 0.0, "needs the CSMS's received messages"))
            return True
        started = time.monotonic()
        try:
            async with asyncio.timeout(SCENARIO_TIMEOUT):
                note = await body()
            result, ok = "PASS", True
        except (ScenarioFailed, TimeoutError, AssertionError, OSError, LookupError, IpcError, DaemonUnavailable) as exc:
            note, result, ok = f"{type(exc).__name__}: {exc}"[:200], "FAIL", False
            await self.tidy()
        self.results.append(Result(name, LABEL[self.version], result, time.monotonic() - started, note or ""))
        print(f"  {result:<4} {name} ({time.monotonic() - started:.1f} s){' — ' + note if note else ''}", flush=True)
        return ok

    async def tidy(self) -> None:
        """After a failed scenario: no session, no EV, the link up, so the next scenario starts clean."""
        self.link.restore()
        with contextlib.suppress(Exception):
            if self.daemon.proc is not None and self.daemon.proc.returncode is not None:
                await self.daemon.start()
            async with self.daemon.ipc() as ipc:
                if transaction(await ipc.status()) is not None:
                    await ipc.stop(connector_id=1)
            await self._unplug()

    # --- steps ---------------------------------------------------------------------
    async def boot(self) -> str:
        await self.daemon.until("a connection to the CSMS", lambda s: bool(s.get("csms_online")), timeout=90)
        if isinstance(self.operator, DevOperator):
            boot = await self.operator.saw("BootNotification")
            return f"reason {boot.payload.get('reason', 'n/a (1.6)')}"
        return "online"

    async def status_after_drop(self) -> str:
        assert isinstance(self.operator, DevOperator)
        first = await self.operator.saw("StatusNotification")
        again = await self.operator.saw("StatusNotification", lambda r: r.unique_id != first.unique_id, timeout=120)
        field_name = "connectorStatus" if self.v201 else "status"
        return f"first dropped; {again.payload[field_name]} delivered {(again.at - first.at).total_seconds():.0f} s later"

    async def report(self) -> str:
        mark = self.operator.mark()
        if self.v201:
            answer = await self.operator.call(self.version, "GetBaseReport", {"requestId": 9001, "reportBase": "FullInventory"})
            check(answer["status"] == "Accepted", f"GetBaseReport answered {answer}")
            if isinstance(self.operator, DevOperator):
                await self.operator.saw("NotifyReport", lambda r: not r.payload.get("tbc", False), since=mark, timeout=60)
                parts = self.operator.calls("NotifyReport", mark)
                return f"{sum(len(p.payload.get('reportData', [])) for p in parts)} attributes in {len(parts)} NotifyReport"
            return "GetBaseReport sent"
        answer = await self.operator.call(self.version, "GetConfiguration", {})
        if isinstance(self.operator, DevOperator):
            keys = answer.get("configurationKey", [])
            check(len(keys) > 10, f"only {len(keys)} configuration keys")
            return f"{len(keys)} configuration keys"
        return "GetConfiguration sent"

    async def variables(self) -> str:
        if self.v201:
            target = {"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}}
            answer = await self.operator.call(self.version, "SetVariables", {"setVariableData": [{**target, "attributeValue": "5"}]})
            if isinstance(self.operator, DevOperator):
                check(answer["setVariableResult"][0]["attributeStatus"] == "Accepted", f"SetVariables: {answer}")
                read = await self.operator.call(self.version, "GetVariables", {"getVariableData": [target]})
                check(read["getVariableResult"][0].get("attributeValue") == "5", f"GetVariables: {read}")
        else:
            answer = await self.operator.call(self.version, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "5"})
            if isinstance(self.operator, DevOperator):
                check(answer["status"] == "Accepted", f"ChangeConfiguration: {answer}")
                read = await self.operator.call(self.version, "GetConfiguration", {"key": ["MeterValueSampleInterval"]})
                check(read["configurationKey"][0]["value"] == "5", f"GetConfiguration: {read}")
        async with self.daemon.ipc() as ipc:
            model = await ipc.device_model()
        wanted = ("SampledDataCtrlr", "TxUpdatedInterval")  # 1.6: MeterValueSampleInterval
        value = next((a.get("value") for v in model if (v["component"].get("name"), v["variable"].get("name")) == wanted
                      for a in v["attributes"] if a.get("type") == "Actual"), None)
        check(str(value) == "5", f"the station holds {wanted[0]}.{wanted[1]} = {value!r}")
        return "written and read back: 5 s" if isinstance(self.operator, DevOperator) else "written; the station holds 5 s"

    async def triggered_idle(self) -> str:
        """TriggerMessage for the log and firmware status while idle: Idle without a requestId (CitrineOS refuses it)."""
        mark = self.operator.mark()
        for message in ("LogStatusNotification", "FirmwareStatusNotification"):
            answer = await self.operator.call(self.version, "TriggerMessage", {"requestedMessage": message})
            check(answer["status"] == "Accepted", f"TriggerMessage {message} answered {answer}")
            if isinstance(self.operator, DevOperator):
                sent = await self.operator.saw(message, since=mark)
                check(sent.payload == {"status": "Idle"}, f"{message} sent {sent.payload}")
        answer = await self.operator.call(self.version, "TriggerMessage", {"requestedMessage": "Heartbeat"})
        check(answer["status"] == "Accepted", f"TriggerMessage Heartbeat answered {answer}")
        if isinstance(self.operator, DevOperator):
            await self.operator.saw("Heartbeat", since=mark)
        await asyncio.sleep(1)
        unretrieved = self.daemon.log_path.read_text(errors="replace").count("Task exception was never retrieved")
        check(unretrieved == 0, f"the daemon logged {unretrieved} unretrieved task exception(s)")
        return "both sent as Idle without requestId; the station serves on"

    async def _plug(self) -> None:
        await self.esp.command("plug")
        await self.daemon.until("the EV plugged in", lambda s: connector(s).get("pilot") in ("B", "C", "D"), timeout=30)

    async def _unplug(self) -> None:
        await self.esp.command("unplug")
        await self.daemon.until("the connector free", lambda s: connector(s).get("pilot") == "A" and transaction(s) is None,
                                timeout=30)

    async def _charge(self, seconds: float) -> None:
        await self.esp.command("ev_charge")
        await self.daemon.until("charging", lambda s: (transaction(s) or {}).get("charging_state") == "Charging", timeout=60)
        await asyncio.sleep(seconds)

    async def _present(self) -> None:
        async with self.daemon.ipc() as ipc:
            await ipc.present_token(TOKEN_LOCAL)

    async def _delivered(self, mark: int, *, offline_part: bool = False) -> str:
        """The session as the CSMS received it: started, metered (rising energy), ended; seqNo contiguous."""
        if not isinstance(self.operator, DevOperator):
            async with self.daemon.ipc() as ipc:
                async with asyncio.timeout(120):
                    while (await ipc.outbox())["depth"]:
                        await asyncio.sleep(0.5)
            return "station's outbox emptied"
        if self.v201:
            ended = await self.operator.saw("TransactionEvent", lambda r: r.payload["eventType"] == "Ended", since=mark, timeout=150)
            tx_id = ended.payload["transactionInfo"]["transactionId"]
            events = [r.payload for r in self.operator.calls("TransactionEvent") if r.payload["transactionInfo"]["transactionId"] == tx_id]
            seq = sorted({e["seqNo"] for e in events})
            check(seq == list(range(seq[0], seq[0] + len(seq))), f"seqNo not contiguous: {seq}")
            energy = [float(sv["value"]) for e in events for mv in e.get("meterValue", []) for sv in mv["sampledValue"]
                      if sv.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"]
            offline = sum(1 for e in events if e.get("offline"))
            first = next(r for r in self.operator.calls("TransactionEvent", mark) if r.payload["eventType"] == "Started")
            self._prompt(first, offline_part)
            check(len(energy) >= 2 and energy[-1] > energy[0], f"energy readings {energy[:3]}…{energy[-2:]}")
            check(not offline_part or offline, "no event was marked offline=true")
            return f"{len(events)} events, seqNo {seq[0]}..{seq[-1]}, {energy[-1] - energy[0]:.0f} Wh" + (
                f", {offline} offline" if offline_part else "")
        stop = await self.operator.saw("StopTransaction", since=mark, timeout=150)
        start = self.operator.calls("StartTransaction", mark)
        check(start, "no StartTransaction")
        self._prompt(start[-1], offline_part)
        values = len(self.operator.calls("MeterValues", mark))
        wh = stop.payload["meterStop"] - start[-1].payload["meterStart"]
        check(wh > 0, f"meterStop - meterStart = {wh}")
        return f"Start/Stop + {values} MeterValues, {wh} Wh"

    def _prompt(self, started: Received, offline_part: bool) -> None:
        """A session's start reaches a connected CSMS at once (issue 22: not behind a refused message)."""
        lag = (started.at - datetime.fromisoformat(started.payload["timestamp"].replace("Z", "+00:00"))).total_seconds()
        check(offline_part or lag < 10, f"{started.action} reached the CSMS {lag:.0f} s after the start")

    async def remote_session(self) -> str:
        mark = self.operator.mark()
        if self.v201:
            answer = await self.operator.call(self.version, "RequestStartTransaction", {
                "idToken": {"idToken": TOKEN_REMOTE, "type": "Central"}, "remoteStartId": 4711, "evseId": 1})
        else:
            answer = await self.operator.call(self.version, "RemoteStartTransaction", {"idTag": TOKEN_REMOTE, "connectorId": 1})
        check(answer["status"] == "Accepted", f"remote start answered {answer}")
        await self._plug()
        await self._charge(12)
        tx = transaction(await self.daemon.status())
        check(tx is not None, "no transaction at the station")
        assert tx is not None
        if self.v201:
            answer = await self.operator.call(self.version, "RequestStopTransaction", {"transactionId": tx["id"]})
        else:
            status = await self.daemon.until("the CSMS's transactionId", lambda s: (transaction(s) or {}).get("csms_id") is not None,
                                             timeout=SCENARIO_TIMEOUT - 20)
            answer = await self.operator.call(self.version, "RemoteStopTransaction", {"transactionId": int(transaction(status)["csms_id"])})  # type: ignore[index]
        check(answer["status"] == "Accepted", f"remote stop answered {answer}")
        await self.daemon.until("the session's end", lambda s: transaction(s) is None)
        await self._unplug()
        return await self._delivered(mark)

    async def local_session(self) -> str:
        mark = self.operator.mark()
        await self._plug()
        await self._present()
        await self._charge(12)
        await self._present()  # the same card again stops it
        await self.daemon.until("the session's end", lambda s: transaction(s) is None)
        await self._unplug()
        return await self._delivered(mark)

    async def outage(self) -> str:
        mark = self.operator.mark()
        await self._plug()
        await self._present()
        await self._charge(4)
        self.link.black_hole()  # nothing passes, new connections hang: the CSMS is gone
        self.link.cut()
        await self.daemon.until("the CSMS lost", lambda s: not s.get("csms_online"), timeout=90)
        await asyncio.sleep(12)  # charging on, offline: meter values queue
        await self._present()
        await self.daemon.until("the session's end", lambda s: transaction(s) is None)
        await self._unplug()
        self.link.restore()
        await self.daemon.until("the CSMS back", lambda s: bool(s.get("csms_online")), timeout=120)
        return await self._delivered(mark, offline_part=True)

    async def reset(self) -> str:
        mark = self.operator.mark()
        answer = await self.operator.call(self.version, "Reset", {"type": "Immediate"} if self.v201 else {"type": "Hard"})
        check(answer["status"] == "Accepted", f"Reset answered {answer}")
        assert self.daemon.proc is not None
        code = await asyncio.wait_for(self.daemon.proc.wait(), 60)
        check(code == 0, f"the daemon exited {code} for the reset")
        await self.daemon.start()  # systemd's Restart=always
        await self.daemon.until("a connection after the reset", lambda s: bool(s.get("csms_online")), timeout=120)
        if isinstance(self.operator, DevOperator):
            boot = await self.operator.saw("BootNotification", since=mark, timeout=60)
            return f"rebooted; boot reason {boot.payload.get('reason', 'n/a (1.6)')}"
        return "rebooted and online"

    async def play(self) -> None:
        if not await self.scenario("boot", self.boot):
            return
        await self.scenario("status after the dropped first one", self.status_after_drop, needs_observation=True)
        await self.scenario("report", self.report)
        await self.scenario("Get/SetVariables" if self.v201 else "Get/ChangeConfiguration", self.variables)
        if self.v201:
            await self.scenario("triggered idle Log/FirmwareStatusNotification", self.triggered_idle)
        await self.scenario("remote session + meter values", self.remote_session)
        await self.scenario("local session + meter values", self.local_session)
        await self.scenario("outage mid-session", self.outage)
        await self.scenario("reset", self.reset)


# ------------------------------------------------------------------------- one version, one backend
async def run_version(version: str, operator_for: Callable[[], Awaitable[tuple[Operator, str, Callable[[], Awaitable[None]]]]],
                      workdir: Path) -> list[Result]:
    """Start simulators, link emulator and daemon against the CSMS `operator_for` provides; play the scenario."""
    workdir.mkdir(parents=True, exist_ok=True)
    operator, csms_url, close = await operator_for()
    parts = urlsplit(csms_url)
    try:
        async with (
            LinkEmulator(parts.port or 80, target_host=parts.hostname or "127.0.0.1") as link,
            MeterSimProcess(workdir, speedup=60, energy_wh=1520300) as meter,
            SimulatorProcess(workdir, interval=1, extra_args=["--meter-control", str(meter.control)]) as esp,
        ):
            url = link.url(csms_url)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OCPP_", "STATION_"))}
            env.update({
                "STATION_ENV_FILE": os.devnull, "OCPP_STATION_NAME": STATION_ID, "OCPP_PRIMARY": version,
                "OCPP_201_URL" if version == "201" else "OCPP_16_URL": url,
                "STATION_ESP32_PORT": str(esp.port), "STATION_METER_PORT": str(meter.link),
                "STATION_METER_POLL_SECONDS": "0.5", "STATION_METER_VALUE_SECONDS": "5",
                "STATION_STATE_DIR": str(workdir / "state"), "STATION_IPC_SOCKET": str(workdir / "station.sock"),
                "STATION_LOG_FORMAT": "json", "STATION_BACKOFF_MIN_SECONDS": "1", "STATION_BACKOFF_MAX_SECONDS": "5",
            })
            other = "OCPP_16_URL" if version == "201" else "OCPP_201_URL"
            env[other] = url  # one endpoint: the version under test is the only one offered there
            daemon = Daemon(env, workdir / "station.log")
            await daemon.start()
            run = Run(version, operator, daemon, esp, link)
            try:
                await run.play()
            finally:
                await daemon.stop()
                if any(r.result == "FAIL" for r in run.results):
                    print(f"  station log tail ({daemon.log_path}):\n{daemon.log_tail()}", flush=True)
            return run.results
    finally:
        await close()


def dev_backend(version: str, call_cache_seconds: float, operators: list[DevOperator]) -> Callable[[], Awaitable[tuple[Operator, str, Callable[[], Awaitable[None]]]]]:
    async def make() -> tuple[Operator, str, Callable[[], Awaitable[None]]]:
        subprotocol = "ocpp2.0.1" if version == "201" else "ocpp1.6"
        csms = CitrineQuirksCsms(heartbeat_interval=10, accept_subprotocols=(subprotocol,), call_cache_seconds=call_cache_seconds)
        await csms.start()
        operator = DevOperator(csms)
        operators.append(operator)
        return operator, csms.url(version), csms.stop

    return make


def citrine_backend(rest_url: str, ocpp_url: str) -> Callable[[], Awaitable[tuple[Operator, str, Callable[[], Awaitable[None]]]]]:
    async def make() -> tuple[Operator, str, Callable[[], Awaitable[None]]]:
        async def nothing() -> None:
            return None

        return CitrineOperator(rest_url, os.environ.get("CITRINEOS_TENANT_ID", "1")), ocpp_url.rstrip("/") + "/", nothing

    return make


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    try:
        with socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme in ("https", "wss") else 80)), timeout=3):
            return True
    except OSError:
        return False


def table(results: Sequence[Result]) -> str:
    rows = [("scenario", "version", "result", "duration", "note")] + [
        (r.scenario, r.version, r.result, f"{r.seconds:.1f} s", r.note) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    return "\n".join(lines)


async def citrine_part(versions: Sequence[str], workroot: Path) -> list[Result]:
    """The scenario through a CitrineOS the operator runs, when CITRINEOS_URL names one that answers."""
    rest = os.environ.get("CITRINEOS_URL", "")
    if not rest or not reachable(rest):
        print(f"\nCitrineOS: not reachable at CITRINEOS_URL (skipped){f' [{rest}]' if rest else ''}", flush=True)
        return []
    host = urlsplit(rest).hostname
    results: list[Result] = []
    for version in versions:
        ocpp = os.environ.get(f"CITRINEOS_OCPP{version}_URL", "")
        if not ocpp and version == "201":
            ocpp = f"ws://{host}:8081/"
        if not ocpp or not reachable(ocpp):
            print(f"\nCitrineOS OCPP {LABEL[version]}: no endpoint reachable (set CITRINEOS_OCPP{version}_URL; skipped)", flush=True)
            continue
        print(f"\nCitrineOS at {rest}, OCPP {LABEL[version]} via {ocpp}:", flush=True)
        results += await run_version(version, citrine_backend(rest, ocpp), workroot / f"citrineos-{version}")
    if results:
        print("\n" + table(results), flush=True)
    return results


async def amain(args: argparse.Namespace) -> int:
    workroot = Path(tempfile.mkdtemp(prefix="station-interop-"))
    results: list[Result] = []
    operators: list[DevOperator] = []
    started = time.monotonic()
    try:
        for version in args.versions:
            print(f"dev CSMS, CitrineOS quirks, OCPP {LABEL[version]}:", flush=True)
            results += await run_version(version, dev_backend(version, args.call_cache_seconds, operators), workroot / f"dev-{version}")
        print("\n" + table(results), flush=True)
        hits: dict[str, int] = {}
        for operator in operators:
            assert isinstance(operator.csms, CitrineQuirksCsms)
            for hit in operator.csms.hits:
                key = f"{hit.quirk} on {hit.action}"
                hits[key] = hits.get(key, 0) + 1
        print("\nquirks that acted: " + (", ".join(f"{k} ×{n}" for k, n in hits.items()) or "none"), flush=True)
        results += await citrine_part(args.versions, workroot)
    finally:
        failed = any(r.result == "FAIL" for r in results)
        if args.keep or failed:
            print(f"\ninterop run: {time.monotonic() - started:.0f} s; logs kept in {workroot}", flush=True)
        else:
            shutil.rmtree(workroot, ignore_errors=True)
            print(f"\ninterop run: {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m station.devtools.interop", description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=lambda s: s.split(","), default=["201", "16"], help="201,16 (default both)")
    parser.add_argument("--call-cache-seconds", type=float, default=CALL_CACHE_SECONDS,
                        help=f"how long the quirky CSMS leaves a dropped call unanswered (CitrineOS: {CALL_CACHE_SECONDS:g})")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (kept anyway when a scenario fails)")
    args = parser.parse_args(argv)
    # The table is the output; the dev CSMS's frame log (info) would bury it. Warnings still show.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not set(args.versions) <= set(LABEL):
        parser.error("--versions takes 201 and/or 16")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
