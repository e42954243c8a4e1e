"""The power-cut soak: the real daemon with its state directory on the power-cut file system.

The daemon (`station run`, a real process) talks to the dev CSMS on loopback with a password
(security profile 1), drives charging sessions on the ESP32 and meter simulators, and is asked by
the CSMS, now and then, to change its password, reserve the connector, update its firmware (a
signed artefact on a loopback HTTP server) or store a network profile; on security profile 3
(client certificates), to renew its certificate. GetLog has its own short scenario
(`log_upload_cut_while_uploading`): the upload must be completed or reported failed. At a random
instant the power goes: the daemon and its children are frozen (SIGSTOP), the file system keeps
nothing more (tests/powercut/fs.py), the processes are SIGKILLed, the file system is mounted afresh
on what it kept, the root side's update flow is played by its files (a handed-over artefact
"installed"), and the daemon starts again.

After every restart the daemon must start and reconnect with a password the CSMS accepts (the old
one while a change was unanswered, else the new one). At the end, with the vehicle gone and the
outbox drained, the CSMS's record is checked:

- every transaction the CSMS saw Started has its Ended; seqNo runs 0..n without a gap;
- no event the CSMS acknowledged comes back as a different message (a second Started, another
  payload for a seqNo); identical retransmissions are allowed (at-least-once delivery);
- every request the station answered Accepted completed or was reported failed: a firmware
  request reached Installed or a failure status, a reservation was used, expired or removed (and
  said so), a network profile can still be named in NetworkConfigurationPriority, a password is
  the one the station logs in with, and so is the newest certificate it accepted (CertificateSigned).
  Anything else is *forgotten*.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import random
import signal
import sqlite3
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

from cryptography import x509
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidHeader
from websockets.headers import parse_authorization_basic
from websockets.http11 import Request, Response

from station.controller.simulator import SimulatorProcess
from station.devtools.csms import CertificateAuthority, DevCsms, Received
from station.field import update
from station.ipc.client import IpcClient
from station.meter.sim_process import MeterSimProcess
from station.storage.durable import durable_write_text, fsync_directory
from tests.e2e import STATION_ID, DaemonProcess, controller_link_up, station_env
from tests.firmware_helpers import ARTEFACT, WHEEL, artefact_server, sha256
from tests.pki_helpers import TestPki, key_pem, make_firmware_signer, make_pki
from tests.powercut.rig import PowerCutMount
from tests.reliability import record
from tests.upload_servers import http_upload_server

FIRST_PASSWORD = "powercut-pw-0-Zq81x7Kd"
LOG_DONE = {"Uploaded", "UploadFailure", "BadMessage", "PermissionDenied", "NotSupportedOperation", "AcceptedCanceled"}
FIRMWARE_FAILED = {"DownloadFailed", "InstallVerificationFailed", "InvalidSignature", "InstallationFailed",
                   "InvalidCertificate", "RevokedCertificate", "SignatureError"}
REQUESTS = {"none": 3, "password": 2, "reservation": 2, "firmware": 2, "network_profile": 2, "getlog": 1}
SESSION_ACTIONS = {"plug": 3, "ev_charge": 3, "ev_pause": 1, "unplug": 2, "ipc_start": 3, "ipc_stop": 1, "wait": 1}


class PasswordCsms(DevCsms):
    """The dev CSMS accepting a set of passwords: the old and the new one while a change is unanswered
    (the station may have stored either), only the new one once the station answered Accepted (OCPP
    A01: the CSMS switches). A station that forgot an accepted password is refused, and locked out."""

    def __init__(self, *, password: str | None = FIRST_PASSWORD, **options: Any) -> None:
        super().__init__(heartbeat_interval=30, passwords={STATION_ID: password} if password else None, **options)
        self.accepted = {password} if password else set()
        self.last_login: str | None = None

    def _check_auth(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.passwords is None:
            return None  # security profile 3: TLS checks the client certificate
        try:
            header = request.headers.get("Authorization")
            _user, password = parse_authorization_basic(header) if header else (None, None)
        except InvalidHeader:
            password = None
        if password is not None and any(hmac.compare_digest(password, p) for p in self.accepted):
            self.last_login = password
            return None
        self.auth_failures.append(STATION_ID)
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
        return response


@dataclass
class Asked:
    """One request the CSMS sent; `answer` is None when no answer reached the CSMS (cut first)."""

    kind: str
    ref: int | str
    answer: str | None = None
    waiting: bool = True
    """The CSMS's call has neither an answer nor a timeout yet."""
    until: datetime | None = None
    """A reservation's expiry: after it (and a grace) an unreported one counts as forgotten."""
    outcome: str = ""
    """completed | failed | forgotten (set by the check; only for Accepted ones)."""


@dataclass
class Figures:
    cuts: int = 0
    transactions: int = 0
    events: int = 0
    lost: int = 0
    duplicated: int = 0
    resent: int = 0
    forgotten: int = 0
    failed: int = 0
    completed: int = 0
    failed_restarts: int = 0
    lockouts: int = 0
    """Restarts after which the station could not log in again (the CSMS refused what it presented)."""
    refused_logins: int = 0
    renewals: int = 0
    """Certificates the station accepted (profile 3 soak)."""
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.cuts} cuts, {self.transactions} transactions, {self.events} TransactionEvents, lost {self.lost}, "
                f"duplicated {self.duplicated}, resent (identical) {self.resent}; accepted requests: "
                f"{self.completed} completed, {self.failed} reported failed, {self.forgotten} forgotten; "
                f"failed restarts {self.failed_restarts}, lockouts {self.lockouts}, refused logins {self.refused_logins}"
                + (f", certificates accepted {self.renewals}" if self.renewals else ""))


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class ModuleDaemon(DaemonProcess):
    """`python -m MODULE run`: the daemon, or a deliberately broken variant of it (tests/powercut/plain_job_save.py)."""

    def __init__(self, env: dict[str, str], log_path: Path, module: str) -> None:
        super().__init__(env, log_path)
        self.module = module

    async def start(self) -> ModuleDaemon:
        self._log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, "run", env=self.env, stdout=self._log, stderr=self._log,
            stdin=asyncio.subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])
        return self


class IssuingCa:
    """The test CA signing the stations' CSRs, remembering what it issued and when (renewal check)."""

    def __init__(self, pki: TestPki) -> None:
        self.ca = CertificateAuthority(pki.ca_pem, key_pem(pki.ca_key))
        self.issued: list[tuple[datetime, int]] = []

    def sign(self, csr_pem: str) -> str:
        chain = self.ca.sign(csr_pem)
        self.issued.append((datetime.now(UTC), x509.load_pem_x509_certificate(chain.encode()).serial_number))
        return chain


class PowerCutSoak:
    def __init__(self, directory: Path, rng: random.Random, *, requests: dict[str, int] | None = None,
                 daemon_module: str = "station", pki: TestPki | None = None) -> None:
        self.dir = directory
        self.rng = rng
        self.requests = dict(requests or REQUESTS)
        self.daemon_module = daemon_module
        self.mount = PowerCutMount(directory)
        self.state = self.mount.root / "state"
        self.pki = pki
        self.issuer = IssuingCa(pki) if pki is not None else None
        self.csms = PasswordCsms() if pki is None else PasswordCsms(
            password=None, ssl_context=pki.server_context(require_client_cert=True),
            certificate_authority=self.issuer)  # type: ignore[arg-type]
        self.daemon: DaemonProcess | None = None
        self.sim: SimulatorProcess | None = None
        self.env: dict[str, str] = {}
        self.asked: list[Asked] = []
        self.calls: set[asyncio.Task[None]] = set()
        self.figures = Figures()
        self.password_serial = 0
        self.passwords_seen = [FIRST_PASSWORD]
        self.secrets: dict[int | str, str] = {}
        """Password change number → the password (the problems name the number, never the password)."""
        self.request_ids = iter(range(1, 1 << 30))
        self.signer = make_firmware_signer()
        self.http: Any = None
        self.uploads: Any = None

    # ---- the daemon --------------------------------------------------------------------
    async def daemon_up(self) -> IpcClient:
        assert self.daemon is None
        mark, refused = self.csms.mark(), len(self.csms.auth_failures)
        self.daemon = await ModuleDaemon(self.env, self.dir / "station.log", self.daemon_module).start()
        client = IpcClient(self.env["STATION_IPC_SOCKET"], timeout=5)
        try:
            async with asyncio.timeout(30):
                await controller_link_up(self.daemon, client)
                while not any(r.action == "StatusNotification" and r.kind == "call" and r.station_id == STATION_ID
                              for r in self.csms.received[mark:]):
                    if self.pki is None and len(self.csms.auth_failures) >= refused + 3 and \
                            self.csms.accepted != set(self.passwords_seen):
                        # Locked out: counted, then let it in with whatever it kept, to go on cutting.
                        self.figures.lockouts += 1
                        self.figures.problems.append(f"restart {self.figures.cuts}: locked out (the CSMS refused the "
                                                     f"password the station came back with)")
                        self.csms.accepted = set(self.passwords_seen)
                    await asyncio.sleep(0.1)
        except (AssertionError, TimeoutError) as exc:
            self.figures.failed_restarts += 1
            if self.pki is not None:
                self.figures.lockouts += 1  # profile 3: no certificate the TLS handshake takes
            await client.close()
            tail = self.daemon.log()[-3000:]
            raise AssertionError(f"restart {self.figures.cuts}: the daemon did not start and reconnect ({exc!r}); "
                                 f"auth failures {len(self.csms.auth_failures)}; log tail:\n{tail}") from None
        return client

    def signal_all(self, sig: int) -> None:
        """`sig` to the daemon first (it starts nothing more), then to every process it started."""
        assert self.daemon is not None and self.daemon.proc is not None
        pid = self.daemon.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        for child in descendants(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    async def power_cut(self) -> None:
        """Everything stops at one instant: the processes are frozen (no answer leaves after the
        cut), the file system keeps nothing more, then the processes are killed."""
        assert self.daemon is not None
        self.signal_all(signal.SIGSTOP)
        self.mount.cut()
        self.signal_all(signal.SIGKILL)
        await self.daemon.stop(signal.SIGKILL)
        self.daemon = None
        self.figures.cuts += 1
        await asyncio.to_thread(self.mount.restart)
        self.play_update_flow()

    def play_update_flow(self) -> None:
        """station-update.service (root) between boots: a handed-over artefact is installed, the result left."""
        request = self.state / "update" / "request.json"
        if request.exists():
            result = update.Result(True, "updated", "9.9.0", "0.1.0", "9.9.0 healthy")
            durable_write_text(self.state / "update" / "result.json", json.dumps(result.to_json()))
            request.unlink()
            fsync_directory(request.parent)

    # ---- CSMS requests -------------------------------------------------------------------
    def ask(self, kind: str, ref: int | str, action: str, payload: dict[str, Any],
            answer_of: Callable[[dict[str, Any]], str], on_answer: Callable[[str], None] | None = None,
            until: datetime | None = None) -> Asked:
        asked = Asked(kind, ref, until=until)
        self.asked.append(asked)

        async def call() -> None:
            try:
                with contextlib.suppress(Exception):  # no answer: the cut came first
                    asked.answer = answer_of(await self.csms.call(STATION_ID, action, payload, timeout=5))
                    if on_answer is not None:
                        on_answer(asked.answer)
            finally:
                asked.waiting = False

        task = asyncio.get_running_loop().create_task(call())
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)
        return asked

    def outstanding(self, kind: str) -> bool:
        return any(a.kind == kind and (a.waiting or a.answer == "Accepted" and not self.ended(a)) for a in self.asked)

    def ended(self, asked: Asked) -> bool:
        return self.outcome(asked) in ("completed", "failed")

    def change_password(self) -> None:
        self.password_serial += 1
        new = f"powercut-pw-{self.password_serial}-{self.rng.randrange(1 << 30):x}"
        self.csms.accepted.add(new)
        self.passwords_seen.append(new)

        def settled(answer: str) -> None:
            if answer == "Accepted":
                self.csms.accepted = {new}

        self.secrets[self.password_serial] = new
        self.ask("password", self.password_serial, "SetVariables", {"setVariableData": [{
            "component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}, "attributeValue": new}]},
            lambda a: a["setVariableResult"][0]["attributeStatus"], settled)

    def settle_password(self) -> None:
        """After a reconnect: a change left unanswered is decided by the password the station logged in with."""
        if len(self.csms.accepted) > 1 and self.csms.last_login is not None:
            self.csms.accepted = {self.csms.last_login}

    async def use_reservation(self, ipc: IpcClient) -> None:
        """The driver it was made for arrives: plugs in and authorizes (the Started event names it)."""
        assert self.sim is not None
        await asyncio.sleep(self.rng.uniform(0, 1))
        with contextlib.suppress(Exception):
            await self.sim.command("plug")
            await asyncio.sleep(0.2)
            await ipc.start(1, "RES-TAG")

    def reserve(self) -> None:
        rid = next(self.request_ids)
        expiry = datetime.now(UTC) + timedelta(seconds=self.rng.uniform(1.5, 4))
        self.ask("reservation", rid, "ReserveNow", {
            "id": rid, "expiryDateTime": expiry.isoformat(), "evseId": 1,
            "idToken": {"idToken": "RES-TAG", "type": "ISO14443"}}, lambda a: a["status"], until=expiry)

    def update_firmware(self) -> Asked | None:
        if self.outstanding("firmware"):
            return None
        rid = next(self.request_ids)
        location = self.http.url(f"/releases/{WHEEL}") + f"#sha256={sha256(ARTEFACT)}"
        return self.ask("firmware", rid, "UpdateFirmware", {"requestId": rid, "firmware": {
            "location": location, "retrieveDateTime": datetime.now(UTC).isoformat(),
            "signingCertificate": self.signer.certificate_pem, "signature": self.signer.sign(ARTEFACT)}},
            lambda a: a["status"])

    def get_log(self) -> Asked | None:
        if self.outstanding("getlog"):
            return None
        rid = next(self.request_ids)
        return self.ask("getlog", rid, "GetLog", {"logType": "DiagnosticsLog", "requestId": rid, "log": {
            "remoteLocation": self.uploads.url("/logs/")}}, lambda a: a["status"])

    def renew(self) -> None:
        self.ask("renewal", next(self.request_ids), "TriggerMessage",
                 {"requestedMessage": "SignChargingStationCertificate"}, lambda a: a["status"])

    def presented(self) -> int | None:
        der = self.csms.peer_certificates.get(STATION_ID)
        return x509.load_der_x509_certificate(der).serial_number if der else None

    def accepted_certificates(self) -> list[int]:
        """Serials of the certificates the station answered CertificateSigned Accepted for, in order."""
        assert self.issuer is not None
        answers = [r for r in self.csms.received if r.kind == "result" and r.action == "CertificateSigned"]
        accepted = []
        for index, (at, serial) in enumerate(self.issuer.issued):
            until = self.issuer.issued[index + 1][0] if index + 1 < len(self.issuer.issued) else None
            if any(r.payload.get("status") == "Accepted" and r.at >= at and (until is None or r.at < until)
                   for r in answers):
                accepted.append(serial)
        return accepted

    def network_profile(self) -> None:
        slot = self.rng.randint(1, 3)
        self.ask("network_profile", slot, "SetNetworkProfile", {"configurationSlot": slot, "connectionData": {
            "ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": self.csms.url("201"),
            "messageTimeout": 30, "securityProfile": 1, "ocppInterface": "Wired0"}}, lambda a: a["status"])

    # ---- one cycle -----------------------------------------------------------------------
    async def session_actions(self, ipc: IpcClient) -> None:
        assert self.sim is not None
        if self.rng.random() < 0.6:  # most cycles start a session (or find one running)
            with contextlib.suppress(Exception):
                await self.sim.command("plug")
                await ipc.start(1, self.rng.choice(["TAG-1", "TAG-2"]))
                await self.sim.command("ev_charge")
        for _ in range(self.rng.randint(2, 6)):
            action = self.rng.choices(list(SESSION_ACTIONS), weights=list(SESSION_ACTIONS.values()))[0]
            with contextlib.suppress(Exception):  # refused commands are part of the game
                if action in ("plug", "ev_charge", "ev_pause", "unplug"):
                    await self.sim.command(action)
                elif action == "ipc_start":
                    await ipc.start(1, self.rng.choice(["TAG-1", "TAG-2"]))
                elif action == "ipc_stop":
                    await ipc.stop(connector_id=1)
            await asyncio.sleep(self.rng.uniform(0, 0.3))

    async def cycle(self) -> None:
        ipc = await self.daemon_up()
        self.settle_password()
        try:
            kind = self.rng.choices(list(self.requests), weights=list(self.requests.values()))[0]
            ask = {"none": lambda: None, "password": self.change_password, "reservation": self.reserve,
                   "firmware": self.update_firmware, "network_profile": self.network_profile, "getlog": self.get_log,
                   "renewal": self.renew}[kind]
            if kind == "reservation":
                # On a free connector (no session, no vehicle: the ESP32 simulator reports once a second),
                # then, half the time, its driver arrives; the power goes during either.
                assert self.sim is not None
                with contextlib.suppress(Exception):
                    await ipc.stop(connector_id=1)
                await self.sim.command("unplug")
                await asyncio.sleep(1.2)
                ask()
                await asyncio.sleep(0.1)
                actions = asyncio.get_running_loop().create_task(
                    self.use_reservation(ipc) if self.rng.random() < 0.5 else asyncio.sleep(0))
                await asyncio.sleep(self.rng.uniform(0, 1.5))
            else:
                actions = asyncio.get_running_loop().create_task(self.session_actions(ipc))
                await asyncio.sleep(self.rng.uniform(0, 1))
                ask()
                await asyncio.sleep(self.rng.uniform(0, 2.0 if kind in ("firmware", "renewal") else 0.5))
            await self.power_cut()
            actions.cancel()
            with contextlib.suppress(BaseException):
                await actions
        finally:
            await ipc.close()

    async def drain(self) -> IpcClient:
        """Vehicle gone, daemon up until every transaction ended, the outbox is empty and every
        accepted firmware request and reservation ended; bounded (what is still open is judged)."""
        assert self.sim is not None
        await self.sim.command("unplug")
        ipc = await self.daemon_up()
        self.settle_password()
        db = self.state / "station.db"
        loop = asyncio.get_running_loop()
        deadline, quiet_since, heard = loop.time() + 90, loop.time(), len(self.csms.received)
        while loop.time() < deadline and loop.time() - quiet_since < 12:  # judged after 12 s without news
            if len(self.csms.received) != heard:
                quiet_since, heard = loop.time(), len(self.csms.received)
            if self.calls:
                await asyncio.wait(set(self.calls))
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                open_tx = con.execute("SELECT COUNT(*) FROM transactions WHERE ended_at IS NULL").fetchone()[0]
                queued = con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            now = datetime.now(UTC)
            waiting = [a for a in self.asked if a.answer == "Accepted" and a.kind in ("firmware", "reservation", "getlog")
                       and not self.ended(a) and (a.until is None or now < a.until + timedelta(seconds=10))]
            if any(self.statuses(a)[-1:] == ["Installing"] for a in waiting) and \
                    (self.state / "update" / "request.json").exists():
                await ipc.close()
                assert self.daemon is not None
                await self.daemon.stop(signal.SIGTERM)  # the update flow restarts the daemon
                self.daemon = None
                self.play_update_flow()
                ipc = await self.daemon_up()
                continue
            if open_tx == 0 and queued == 0 and not waiting:
                break
            await asyncio.sleep(0.3)
        return ipc

    # ---- outcomes ----------------------------------------------------------------------
    def statuses(self, asked: Asked) -> list[str]:
        return [r.payload["status"] for r in self.csms.calls("FirmwareStatusNotification", STATION_ID)
                if r.payload.get("requestId") == asked.ref]

    def outcome(self, asked: Asked) -> str:
        if asked.kind == "firmware":
            statuses = self.statuses(asked)
            if "Installed" in statuses:
                return "completed"
            return "failed" if FIRMWARE_FAILED & set(statuses) else "open"
        if asked.kind == "getlog":
            done = [r.payload["status"] for r in self.csms.calls("LogStatusNotification", STATION_ID)
                    if r.payload.get("requestId") == asked.ref and r.payload["status"] in LOG_DONE]
            return "open" if not done else "completed" if done[0] == "Uploaded" else "failed"
        if asked.kind == "reservation":
            for r in self.csms.calls("ReservationStatusUpdate", STATION_ID):
                if r.payload.get("reservationId") == asked.ref:
                    return "completed" if r.payload.get("reservationUpdateStatus") == "Expired" else "failed"
            for r in self.csms.calls("TransactionEvent", STATION_ID):
                if r.payload.get("reservationId") == asked.ref:
                    return "completed"
            return "open"
        return "open"

    async def judge_requests(self) -> None:
        latest_password = next((a for a in reversed(self.asked) if a.kind == "password" and a.answer == "Accepted"), None)
        slots = {a.ref for a in self.asked if a.kind == "network_profile" and a.answer == "Accepted"}
        known_slots: set[Any] = set()
        for slot in sorted(slots):
            answer = await self.csms.call(STATION_ID, "SetVariables", {"setVariableData": [{
                "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NetworkConfigurationPriority"},
                "attributeValue": f"{slot},0"}]})
            if answer["setVariableResult"][0]["attributeStatus"] != "Rejected":
                known_slots.add(slot)
        if self.issuer is not None:
            # A certificate the station accepted is the one it logs in with, unless a later one replaced it.
            accepted = self.accepted_certificates()
            self.figures.renewals = len(accepted)
            if accepted and self.presented() != accepted[-1]:
                self.figures.forgotten += 1
                self.figures.problems.append(f"certificate {accepted[-1]:x} answered Accepted (CertificateSigned), "
                                             f"the station logs in with {self.presented() or 0:x}")
        for asked in self.asked:
            if asked.answer != "Accepted" or asked.kind == "renewal":
                continue
            if asked.kind == "password":
                logs_in_with_it = self.csms.last_login == self.secrets[asked.ref]
                asked.outcome = "completed" if asked is not latest_password or logs_in_with_it else "forgotten"
            elif asked.kind == "network_profile":
                asked.outcome = "completed" if asked.ref in known_slots else "forgotten"
            else:
                outcome = self.outcome(asked)
                asked.outcome = "forgotten" if outcome == "open" else outcome
            if asked.outcome == "forgotten":
                self.figures.problems.append(f"{asked.kind} {asked.ref}: answered Accepted, then forgotten")
        self.figures.forgotten += sum(a.outcome == "forgotten" for a in self.asked)
        self.figures.failed = sum(a.outcome == "failed" for a in self.asked)
        self.figures.completed = sum(a.outcome == "completed" for a in self.asked)
        self.figures.refused_logins = len(self.csms.auth_failures)
        if self.csms.auth_failures:
            self.figures.problems.append(f"{len(self.csms.auth_failures)} logins refused")


def check_transactions(received: list[Received], figures: Figures) -> None:
    """What the CSMS saw of the transactions: each Started has its Ended, seqNo 0..n, nothing re-sent as new."""
    events = [r for r in received if r.kind == "call" and r.action == "TransactionEvent" and r.station_id == STATION_ID]
    by_tx: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in events:
        by_tx[r.payload["transactionInfo"]["transactionId"]][int(r.payload["seqNo"])].append(r.payload)
    figures.transactions, figures.events = len(by_tx), len(events)
    for tx_id, seqs in by_tx.items():
        missing = sorted(set(range(max(seqs) + 1)) - set(seqs))
        if missing:
            figures.lost += len(missing)
            figures.problems.append(f"{tx_id}: seqNo {missing} never reached the CSMS (it got {sorted(seqs)})")
        for seq, copies in seqs.items():
            if len(copies) > 1:
                figures.resent += len(copies) - 1
                if any(json.dumps(c, sort_keys=True) != json.dumps(copies[0], sort_keys=True) for c in copies):
                    figures.duplicated += 1
                    figures.problems.append(f"{tx_id} seqNo {seq}: received {len(copies)} times with different content")
        kinds = [seqs[s][0]["eventType"] for s in sorted(seqs)]
        extra = max(0, kinds.count("Started") - 1) + max(0, kinds.count("Ended") - 1)
        figures.duplicated += extra
        if kinds[0] != "Started" or extra:
            figures.problems.append(f"{tx_id}: Started/Ended not exactly once at the ends: {kinds}")
        if kinds[-1] != "Ended":
            figures.lost += 1
            figures.problems.append(f"{tx_id}: the CSMS saw it start and never end: {kinds}")


@contextlib.asynccontextmanager
async def powered_station(tmp_path: Path, soak: PowerCutSoak) -> AsyncIterator[PowerCutSoak]:
    """The CSMS, the simulators, the artefact server and the mount up; the daemon started once with
    the manufacturer's root installed (kept: a first cut follows its Accepted); yields with no daemon
    running. On the way out, the daemon (if any) and everything else is stopped."""
    await soak.csms.start()
    soak.mount.start()
    try:
        with artefact_server() as http, http_upload_server() as uploads:
            http.files[f"/releases/{WHEEL}"] = (200, ARTEFACT)
            soak.http, soak.uploads = http, uploads
            async with (
                MeterSimProcess(tmp_path, speedup=200, energy_wh=1_000_000) as meter,
                SimulatorProcess(tmp_path, interval=1, extra_args=["--meter-control", str(meter.control)]) as sim,
            ):
                soak.sim = sim
                credentials = {"OCPP_STATION_PASSWORD": FIRST_PASSWORD} if soak.pki is None else {
                    "STATION_CA_BUNDLE": str(soak.pki.ca), "STATION_CLIENT_CERT": str(soak.pki.client_cert),
                    "STATION_CLIENT_KEY": str(soak.pki.client_key)}
                soak.env = station_env(
                    tmp_path, soak.csms, sim.port, STATION_STATE_DIR=str(soak.state), OCPP_PRIMARY="201",
                    STATION_METER_VALUE_SECONDS="1", OCPP_HEARTBEAT_SECONDS="30",
                    STATION_METER_PORT=str(meter.link), STATION_METER_POLL_SECONDS="0.2",
                    STATION_LOG_UPLOAD_ALLOW_LOCAL="true", **credentials)  # the upload server is on loopback
                soak.env.pop("OCPP_16_URL")
                try:
                    ipc = await soak.daemon_up()
                    await ipc.close()
                    installed = await soak.csms.call(STATION_ID, "InstallCertificate", {
                        "certificateType": "ManufacturerRootCertificate", "certificate": soak.signer.root_pem})
                    assert installed == {"status": "Accepted"}
                    if soak.pki is not None:  # the CSR's organization (A02)
                        await soak.csms.call(STATION_ID, "SetVariables", {"setVariableData": [{
                            "component": {"name": "SecurityCtrlr"}, "variable": {"name": "OrganizationName"},
                            "attributeValue": "Test CPO"}]})
                    soak.mount.sync()  # set-up, not under test (a root installed long before the cuts)
                    await soak.power_cut()
                    yield soak
                finally:
                    if soak.daemon is not None:
                        await soak.daemon.stop(signal.SIGKILL)
                        soak.daemon = None
    finally:
        for task in list(soak.calls):
            task.cancel()
        await soak.csms.stop()
        await asyncio.to_thread(soak.mount.stop)


async def finish(soak: PowerCutSoak) -> Figures:
    """Drain, judge the requests and the transactions, stop the daemon cleanly."""
    ipc = await soak.drain()
    await soak.judge_requests()
    await ipc.close()
    assert soak.daemon is not None
    await soak.daemon.stop(signal.SIGTERM)
    soak.daemon = None
    check_transactions(soak.csms.received, soak.figures)
    return soak.figures


def report(soak: PowerCutSoak, area: str) -> None:
    figures = soak.figures
    by_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for a in soak.asked:
        by_kind[a.kind][a.outcome or (a.answer or "unanswered")] += 1
    print(f"{area}: {figures.line()}")
    print(f"{area}: requests " + "; ".join(f"{k}: {dict(v)}" for k, v in sorted(by_kind.items())))
    for problem in figures.problems[:20]:
        print(f"{area}: PROBLEM {problem[:400]}")
    record(area, trials=figures.cuts, faults=figures.cuts, events_checked=figures.events, lost=figures.lost,
           duplicated=figures.duplicated, resent=figures.resent, forgotten=figures.forgotten,
           failed_restarts=figures.failed_restarts, lockouts=figures.lockouts)


async def run_power_cuts(tmp_path: Path, cuts: int, *, area: str = "power-cut consistency",
                         requests: dict[str, int] | None = None, pki: TestPki | None = None,
                         daemon_module: str = "station") -> Figures:
    seed = int(os.environ.get("STATION_POWERCUT_SEED", random.randrange(1 << 30)))
    print(f"power cuts: seed {seed} (STATION_POWERCUT_SEED={seed} reproduces the schedule)")
    soak = PowerCutSoak(tmp_path, random.Random(seed), requests=requests, pki=pki, daemon_module=daemon_module)
    try:
        async with powered_station(tmp_path, soak):
            for _ in range(cuts - 1):
                await soak.cycle()
            await finish(soak)
    except AssertionError as exc:  # a failed restart: reported with the figures so far
        soak.figures.problems.insert(0, str(exc))
    report(soak, area)
    return soak.figures


async def firmware_cut_once_saved(tmp_path: Path, daemon_module: str = "station",
                                  area: str = "power-cut firmware request") -> Figures:
    """UpdateFirmware answered Accepted, the power goes as soon as the station reports Downloading
    (the request is saved by then), the daemon restarts on what the file system kept."""
    soak = PowerCutSoak(tmp_path, random.Random(0), daemon_module=daemon_module)
    async with powered_station(tmp_path, soak):
        ipc = await soak.daemon_up()
        await ipc.close()
        mark = soak.csms.mark()
        asked = soak.update_firmware()
        assert asked is not None
        await soak.csms.wait_for("FirmwareStatusNotification", STATION_ID,
                                 lambda r: r.payload["status"] == "Downloading", since=mark, timeout=20)
        await soak.power_cut()
        try:
            await finish(soak)
        except AssertionError as exc:
            soak.figures.problems.insert(0, str(exc))
    report(soak, area)
    return soak.figures


class _Always(dict[str, float]):
    """`delay_s` for every path: each upload is held back this long (an upload still running)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def get(self, key: str, default: float | None = None) -> float:  # type: ignore[override]
        return self.seconds


async def log_upload_cut_while_uploading(tmp_path: Path) -> Figures:
    """GetLog answered Accepted, the power goes while the archive is being uploaded (the upload server
    holds its answer), the daemon restarts on what the file system kept."""
    soak = PowerCutSoak(tmp_path, random.Random(0))
    async with powered_station(tmp_path, soak):
        soak.uploads.delay_s = _Always(3.0)
        ipc = await soak.daemon_up()
        await ipc.close()
        mark = soak.csms.mark()
        asked = soak.get_log()
        assert asked is not None
        await soak.csms.wait_for("LogStatusNotification", STATION_ID,
                                 lambda r: r.payload["status"] == "Uploading", since=mark, timeout=20)
        await soak.power_cut()
        soak.uploads.delay_s = {}
        try:
            await finish(soak)
        except AssertionError as exc:
            soak.figures.problems.insert(0, str(exc))
    report(soak, "power-cut log upload")
    return soak.figures


RENEWAL_REQUESTS = {"none": 1, "renewal": 4, "reservation": 1}
"""Security profile 3 (client certificates): renewals, with sessions and a few reservations around them."""


async def run_renewal_power_cuts(tmp_path: Path, cuts: int, *, area: str = "power-cut renewals") -> Figures:
    """The soak on security profile 3: the CSMS triggers certificate renewals, the power goes at random
    instants; the station must always log in again, with the newest certificate it accepted."""
    pki = make_pki(tmp_path / "pki", station_id=STATION_ID)
    return await run_power_cuts(tmp_path, cuts, area=area, requests=RENEWAL_REQUESTS, pki=pki)
