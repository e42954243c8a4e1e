"""Development CSMS: a small OCPP 2.0.1 + 1.6J central system on the `ocpp` library.

One port serves both versions; the version is chosen by WebSocket subprotocol negotiation and
the upgrade is refused (HTTP 400) when none of the offered subprotocols is accepted. The
station id is the last path segment (`ws://host:port/anything/ORGE_AC_001`). Every frame is
logged (`csms <- ORGE_AC_001 BootNotification {...}`) and received messages are recorded for
tests and the demo, which also drive the station through `call()`.

Run alone: `python -m station.devtools.csms --port 9000` (or `station dev-csms`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import itertools
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from ocpp.exceptions import NotSupportedError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHeader, NegotiationError
from websockets.headers import parse_authorization_basic
from websockets.http11 import Request, Response

from station import exitcodes
from station.ocpp.rpc import SUBPROTOCOL, VERSION_BY_SUBPROTOCOL, StrictChargePoint

log = structlog.get_logger("station.devtools.csms")

Override = Callable[["Received"], dict[str, Any] | Awaitable[dict[str, Any]]]
"""Replaces the dev CSMS's answer to one action; raise an `ocpp.exceptions.OCPPError` for a CALLERROR."""

_EMPTY_201 = (
    "StatusNotification MeterValues SecurityEventNotification FirmwareStatusNotification "
    "LogStatusNotification NotifyReport NotifyEvent NotifyMonitoringReport NotifyChargingLimit "
    "ClearedChargingLimit ReportChargingProfiles ReservationStatusUpdate NotifyCustomerInformation "
    "NotifyDisplayMessages PublishFirmwareStatusNotification NotifyEVChargingSchedule"
).split()
_EMPTY_16 = (
    "StatusNotification MeterValues DiagnosticsStatusNotification FirmwareStatusNotification "
    "SecurityEventNotification LogStatusNotification SignedFirmwareStatusNotification"
).split()


@dataclass(frozen=True)
class Received:
    """One frame the CSMS received. `kind` is "call", "result" or "error" (answers to our calls)."""

    station_id: str
    version: str
    action: str
    payload: dict[str, Any]
    at: datetime
    unique_id: str
    kind: str = "call"


def utc_now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _StationSession(StrictChargePoint):
    """The CSMS end of one station's connection."""

    def __init__(self, csms: DevCsms, station_id: str, ws: ServerConnection, version: str) -> None:
        super().__init__(station_id, ws, version, side="csms", log=log)
        self.csms = csms
        self.ws = ws
        actions = _EMPTY_201 if version == "201" else _EMPTY_16
        answers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {a: (lambda p: {}) for a in actions}
        answers.update(csms._answers(version))
        self.route_map = {}
        for action in sorted(set(answers) | set(csms.overrides)):
            self.route_map[action] = {"_on_action": self._handler(action, answers.get(action)), "_skip_schema_validation": False}

    def _handler(self, action: str, default: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Callable[..., Any]:
        async def handle(payload: dict[str, Any]) -> dict[str, Any]:
            override = self.csms.overrides.get(action)
            if override is not None:
                received = self.csms._last_call(self.id, action) or Received(self.id, self.version, action, payload, datetime.now(timezone.utc), "")
                answer = override(received)
                return await answer if asyncio.iscoroutine(answer) else answer  # type: ignore[return-value]
            if default is None:
                raise NotSupportedError(details={"cause": f"the dev CSMS has no answer for {action}"})
            return default(payload)

        handle._raw_payload = True  # type: ignore[attr-defined]
        return handle

    def on_frame(self, direction: str, action: str | None, message: list[Any]) -> None:
        if direction != "in" or not message:
            return
        kind = {2: "call", 3: "result", 4: "error"}.get(message[0], "call")
        if kind == "call":
            payload = message[3]
        elif kind == "result":
            payload = message[2]
        else:
            payload = {"errorCode": message[2], "errorDescription": message[3], "errorDetails": message[4]}
        self.csms._record(Received(self.id, self.version, action or "?", payload, datetime.now(timezone.utc), str(message[1]), kind))


class DevCsms:
    """A development CSMS serving OCPP 2.0.1 and 1.6J on one port; see the module docstring."""

    session_type: type[_StationSession] = _StationSession
    """The CSMS end of each connection (csms_quirks.py plugs in CitrineOS's behaviour here)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        boot_status: str = "Accepted",
        heartbeat_interval: int = 60,
        passwords: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        accept_subprotocols: Sequence[str] = ("ocpp2.0.1", "ocpp1.6"),
        tokens: dict[str, str] | None = None,
        default_token_status: str = "Accepted",
        certificate_authority: CertificateAuthority | None = None,
    ) -> None:
        self.host = host
        self.certificate_authority = certificate_authority
        """Signs the stations' CSRs (SignCertificate → CertificateSigned); None: SignCertificate is Rejected."""
        self._background: set[asyncio.Task[Any]] = set()
        self.peer_certificates: dict[str, bytes | None] = {}
        """DER of the client certificate each station presented on its latest connection (profile 3)."""
        self._requested_port = port
        self.boot_status = boot_status
        self.heartbeat_interval = heartbeat_interval
        self.passwords = dict(passwords) if passwords is not None else None
        self.ssl_context = ssl_context
        self.accept_subprotocols = tuple(accept_subprotocols)
        self.tokens: dict[str, str] = dict(tokens or {})
        self.default_token_status = default_token_status
        self.overrides: dict[str, Override] = {}
        self.received: list[Received] = []
        self.auth_failures: list[str] = []
        self._sessions: dict[str, _StationSession] = {}
        self._server: Server | None = None
        self._changed = asyncio.Condition()
        self._transaction_ids = itertools.count(1)
        self.last_transaction_id: int | None = None
        """The transactionId given to the latest 1.6 StartTransaction."""
        self.port = port

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> DevCsms:
        self._server = await serve(
            self._serve_station,
            self.host,
            self._requested_port,
            subprotocols=["ocpp2.0.1", "ocpp1.6"],  # type: ignore[list-item]
            select_subprotocol=self._select_subprotocol,
            process_request=self._check_auth,
            ssl=self.ssl_context,
            ping_interval=20,
            ping_timeout=20,
        )
        sockets = list(self._server.sockets)
        self.port = sockets[0].getsockname()[1]
        log.info(f"csms listening on {self.url('201')} and {self.url('16')}", subprotocols=list(self.accept_subprotocols))
        return self

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            log.info("csms stopped")

    async def __aenter__(self) -> DevCsms:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, version: str = "201", station_id: str | None = None) -> str:
        """Endpoint base URL for `version`; ends in '/' so the station appends its id (unless given)."""
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://{self.host}:{self.port}/ocpp{version}/{station_id or ''}"

    # ---------------------------------------------------------------- serving
    def _select_subprotocol(self, connection: ServerConnection, offered: Sequence[str]) -> str:
        """First offered subprotocol we accept (read live, so tests can change it); else HTTP 400."""
        for subprotocol in offered:
            if subprotocol in self.accept_subprotocols:
                return subprotocol
        log.warning(f"csms: refusing upgrade; offered {list(offered)}, accepting {list(self.accept_subprotocols)}")
        raise NegotiationError(f"no acceptable subprotocol; expected one of {', '.join(self.accept_subprotocols)}")

    def _check_auth(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.passwords is None:
            return None
        station_id = _station_id(request.path)
        try:
            header = request.headers.get("Authorization")
            username, password = parse_authorization_basic(header) if header else (None, None)
        except InvalidHeader:
            username, password = None, None
        expected = self.passwords.get(station_id)
        if expected is None:
            return None  # passwords are required of the stations listed, not of every station
        if username == station_id and password is not None and hmac.compare_digest(password, expected):
            return None
        self.auth_failures.append(station_id)
        log.warning(f"csms: authentication failed for {station_id}")
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
        return response

    async def _serve_station(self, ws: ServerConnection) -> None:
        station_id = _station_id(ws.request.path if ws.request else "/")
        version = VERSION_BY_SUBPROTOCOL.get(ws.subprotocol or "", "201")
        session = self.session_type(self, station_id, ws, version)
        ssl_object = ws.transport.get_extra_info("ssl_object") if ws.transport is not None else None
        self.peer_certificates[station_id] = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        previous = self._sessions.get(station_id)
        self._sessions[station_id] = session
        if previous is not None:
            log.warning(f"csms: {station_id} connected again; closing the previous connection")
            await previous.ws.close(1000, "replaced by a new connection")
        log.info(f"csms: {station_id} connected with {ws.subprotocol}")
        await self._notify()
        try:
            await session.start()
        except ConnectionClosed:
            pass
        finally:
            if self._sessions.get(station_id) is session:
                del self._sessions[station_id]
            log.info(f"csms: {station_id} disconnected")
            await self._notify()

    def _answers(self, version: str) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        def boot(_: dict[str, Any]) -> dict[str, Any]:
            return {"currentTime": utc_now_text(), "interval": self.heartbeat_interval, "status": self.boot_status}

        def heartbeat(_: dict[str, Any]) -> dict[str, Any]:
            return {"currentTime": utc_now_text()}

        def data_transfer(_: dict[str, Any]) -> dict[str, Any]:
            return {"status": "UnknownVendorId"}

        if version == "201":

            def token_info(token: dict[str, Any]) -> dict[str, Any]:
                return {"status": self.tokens.get(str(token.get("idToken")), self.default_token_status)}

            return {
                "BootNotification": boot,
                "Heartbeat": heartbeat,
                "DataTransfer": data_transfer,
                "Authorize": lambda p: {"idTokenInfo": token_info(p["idToken"])},
                "TransactionEvent": lambda p: {"idTokenInfo": token_info(p["idToken"])} if "idToken" in p else {},
                "NotifyEVChargingNeeds": lambda p: {"status": "Accepted"},
                "SignCertificate": lambda p: self._sign_certificate(p, version),
            }

        def tag_info(tag: str) -> dict[str, Any]:
            return {"status": self.tokens.get(tag, self.default_token_status)}

        return {
            "BootNotification": boot,
            "Heartbeat": heartbeat,
            "DataTransfer": data_transfer,
            "Authorize": lambda p: {"idTagInfo": tag_info(p["idTag"])},
            "StartTransaction": lambda p: {"transactionId": self._new_transaction_id(), "idTagInfo": tag_info(p["idTag"])},
            "StopTransaction": lambda p: {"idTagInfo": tag_info(p["idTag"])} if "idTag" in p else {},
            "SignCertificate": lambda p: self._sign_certificate(p, version),
        }

    def _sign_certificate(self, payload: dict[str, Any], version: str) -> dict[str, Any]:
        """Accept a CSR when a CA is configured, and send the signed chain right after the answer."""
        if self.certificate_authority is None:
            return {"status": "Rejected"}
        station_id = next((r.station_id for r in reversed(self.received) if r.action == "SignCertificate"), None)
        if station_id is None:
            return {"status": "Rejected"}
        try:
            chain = self.certificate_authority.sign(payload["csr"])
        except ValueError as exc:
            log.warning(f"csms: CSR of {station_id} not signed: {exc}")
            return {"status": "Rejected"}
        request: dict[str, Any] = {"certificateChain": chain}
        if version == "201":
            request["certificateType"] = "ChargingStationCertificate"

        async def deliver() -> None:
            await asyncio.sleep(0.05)  # after the SignCertificate answer
            with contextlib.suppress(LookupError, ConnectionClosed, TimeoutError):
                await self.call(station_id, "CertificateSigned", request)

        task = asyncio.get_running_loop().create_task(deliver(), name="csms-certificate-signed")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return {"status": "Accepted"}

    def _new_transaction_id(self) -> int:
        self.last_transaction_id = next(self._transaction_ids)
        return self.last_transaction_id

    # ------------------------------------------------------------- recording
    def _record(self, item: Received) -> None:
        self.received.append(item)
        asyncio.get_running_loop().create_task(self._notify())

    def _last_call(self, station_id: str, action: str) -> Received | None:
        for item in reversed(self.received):
            if item.station_id == station_id and item.action == action and item.kind == "call":
                return item
        return None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --------------------------------------------------------------- test API
    def mark(self) -> int:
        """Index to pass as `since` so `wait_for` only looks at messages received after now."""
        return len(self.received)

    def calls(self, action: str | None = None, station_id: str | None = None) -> list[Received]:
        """Station-initiated CALLs received so far, optionally filtered."""
        return [
            r
            for r in self.received
            if r.kind == "call" and (action is None or r.action == action) and (station_id is None or r.station_id == station_id)
        ]

    async def wait_for(
        self,
        action: str | Collection[str],
        station_id: str | None = None,
        predicate: Callable[[Received], bool] | None = None,
        timeout: float = 5,
        *,
        since: int = 0,
    ) -> Received:
        """The first CALL `action` (or one of several) from `station_id`, matching `predicate`, received at index >= `since`."""
        actions = {action} if isinstance(action, str) else set(action)

        def find() -> Received | None:
            for item in self.received[since:]:
                if item.kind != "call" or item.action not in actions:
                    continue
                if station_id is not None and item.station_id != station_id:
                    continue
                if predicate is not None and not predicate(item):
                    continue
                return item
            return None

        async with asyncio.timeout(timeout):
            async with self._changed:
                while (found := find()) is None:
                    await self._changed.wait()
                return found

    async def wait_connected(self, station_id: str, timeout: float = 5, *, connected: bool = True) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                while self.connected(station_id) != connected:
                    await self._changed.wait()

    def connected(self, station_id: str) -> bool:
        return station_id in self._sessions

    def stations(self) -> list[str]:
        """Ids of the stations connected now, sorted (for error messages that name who is there)."""
        return sorted(self._sessions)

    def version_of(self, station_id: str) -> str | None:
        session = self._sessions.get(station_id)
        return session.version if session else None

    def override(self, action: str, answer: Override | None) -> None:
        """Answer `action` with `answer` from now on (None restores the default); applies to new connections too."""
        if answer is None:
            self.overrides.pop(action, None)
        else:
            self.overrides[action] = answer
        for session in self._sessions.values():
            if action not in session.route_map:
                session.route_map[action] = {"_on_action": session._handler(action, None), "_skip_schema_validation": False}

    async def call(self, station_id: str, action: str, payload: dict[str, Any], *, timeout: float = 10, validate: bool = True) -> dict[str, Any]:
        """Send a CSMS-initiated CALL; returns the response payload, raises CallErrorReceived on CALLERROR."""
        session = self._sessions.get(station_id)
        if session is None:
            raise LookupError(f"station {station_id} is not connected")
        return await session.request(action, payload, timeout=timeout, validate=validate)

    async def send_raw(self, station_id: str, text: str) -> None:
        """Send an arbitrary frame (malformed-frame tests)."""
        session = self._sessions.get(station_id)
        if session is None:
            raise LookupError(f"station {station_id} is not connected")
        log.info(f"csms -> {station_id} raw {text[:200]}")
        await session.ws.send(text)

    async def disconnect(self, station_id: str, *, abort: bool = False) -> None:
        """Drop a station's connection: a clean close, or `abort=True` to cut TCP without a close frame."""
        session = self._sessions.get(station_id)
        if session is None:
            return
        if abort:
            session.ws.transport.abort()
        else:
            await session.ws.close(1001, "closed by dev CSMS")
        with contextlib.suppress(TimeoutError):
            await self.wait_connected(station_id, timeout=5, connected=False)


@dataclass(frozen=True)
class CertificateAuthority:
    """A test CA that signs station CSRs into client certificates (dev and tests only)."""

    certificate_pem: str
    key_pem: bytes = field(repr=False)
    days: float = 365

    @classmethod
    def from_files(cls, cert: str, key: str) -> CertificateAuthority:
        with open(cert, "rb") as c, open(key, "rb") as k:
            return cls(c.read().decode(), k.read())

    def sign(self, csr_pem: str) -> str:
        """The client certificate for a CSR (subject kept, clientAuth), PEM; ValueError for a bad CSR."""
        import datetime as dt

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID

        csr = x509.load_pem_x509_csr(csr_pem.encode())
        if not csr.is_signature_valid:
            raise ValueError("CSR signature invalid")
        ca = x509.load_pem_x509_certificate(self.certificate_pem.encode())
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject).public_key(csr.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


def _station_id(path: str) -> str:
    segments = [s for s in urlsplit(path).path.split("/") if s]
    return unquote(segments[-1]) if segments else ""


# --------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from station.cliargs import Parser, new_path, port

    parser = Parser(
        prog="station dev-csms",
        description="Development CSMS serving OCPP 2.0.1 and 1.6J on one port (chosen by subprotocol).",
        epilog="While it runs, `station dev-csms call STATION ACTION '{json}' [--wait-for ACTION]` sends a "
               "station any CALL and prints the answer and the follow-ups (see `station dev-csms call --help`).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=9000, help="port to listen on (default 9000, 0 = any free port)")
    parser.add_argument("--boot-status", choices=("Accepted", "Pending", "Rejected"), default="Accepted", help="BootNotification answer")
    parser.add_argument("--heartbeat-interval", type=int, default=60, help="heartbeat interval returned at boot, seconds")
    parser.add_argument("--password", action="append", default=[], metavar="STATION=PASSWORD", help="require basic auth for STATION (repeatable)")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve wss:// with this certificate and key (PEM)")
    parser.add_argument("--client-ca", metavar="CA", help="with --tls: require client certificates signed by this CA (profile 3)")
    parser.add_argument("--sign-with", nargs=2, metavar=("CA_CERT", "CA_KEY"),
                        help="sign the stations' CSRs (SignCertificate) with this CA and send them back (CertificateSigned)")
    parser.add_argument("--only", choices=("201", "16"), help="accept only this OCPP version")
    parser.add_argument("--quirks", choices=("citrineos",), help="behave like CitrineOS where it matters to a station (docs/interop.md)")
    parser.add_argument("--control", type=new_path, metavar="PATH",
                        help="control socket for `station dev-csms call` (default: derived from the port)")
    return parser


async def _serve_forever(csms: DevCsms, control: Path | None = None) -> None:
    from station.devtools.csms_control import ControlServer, control_path

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with csms:
        server = ControlServer(csms, control or control_path(csms.port))
        await server.start()
        try:
            print(f"dev CSMS listening: {csms.url('201')}<station id> (OCPP 2.0.1), {csms.url('16')}<station id> (OCPP 1.6)", flush=True)
            print(f"control: station dev-csms call STATION ACTION '{{json}}' --control {server.path}", flush=True)
            await stop.wait()
        finally:
            await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dev CSMS until SIGINT/SIGTERM; exit code 2 for bad arguments. `call ...`: see csms_control."""
    if argv is not None and list(argv[:1]) == ["call"]:
        from station.devtools import csms_control

        return csms_control.main(argv[1:])
    args = build_parser().parse_args(argv)
    passwords: dict[str, str] | None = None
    if args.password:
        passwords = {}
        for item in args.password:
            station, sep, password = item.partition("=")
            if not sep or not station:
                print(f"--password expects STATION=PASSWORD, got {station or item.split('=')[0]!r}=***", file=sys.stderr)
                return 2
            passwords[station] = password
    context: ssl.SSLContext | None = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(args.tls[0], args.tls[1])
            if args.client_ca:
                context.load_verify_locations(args.client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            print(f"--tls: cannot load certificate/key: {exc}", file=sys.stderr)
            return 2
    authority: CertificateAuthority | None = None
    if args.sign_with:
        try:
            authority = CertificateAuthority.from_files(*args.sign_with)
        except OSError as exc:
            print(f"--sign-with: cannot read CA certificate/key: {exc.strerror or exc}", file=sys.stderr)
            return 2
    subprotocols = (SUBPROTOCOL[args.only],) if args.only else ("ocpp2.0.1", "ocpp1.6")
    csms_type = DevCsms
    if args.quirks:
        from station.devtools.csms_quirks import CitrineQuirksCsms

        csms_type = CitrineQuirksCsms
    csms = csms_type(
        args.host,
        args.port,
        boot_status=args.boot_status,
        heartbeat_interval=args.heartbeat_interval,
        passwords=passwords,
        ssl_context=context,
        accept_subprotocols=subprotocols,
        certificate_authority=authority,
    )
    try:
        asyncio.run(_serve_forever(csms, args.control))
    except OSError as exc:
        print(f"dev CSMS cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return exitcodes.CANNOT_LISTEN
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
