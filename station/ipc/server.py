"""The daemon's side of the Unix socket: state reads, technician commands and the event stream.

Everything a local client may do goes through here, so this is where requests are
validated (nothing the core would reject reaches it) and where every control action
is logged with its outcome and the caller's pid/uid. One misbehaving client (garbage,
an endless line, a vanished peer, a reader that never reads) only loses its own
connection: each connection is its own task and writes are bounded by the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from station.core.security_events import LoginFailureBursts
from station.core.station import StationCore
from station.ipc import protocol
from station.ipc.protocol import IpcError
from station.logs import mask_tokens, redact_text

log = structlog.get_logger(__name__)

StatusFn = Callable[[], dict[str, Any]]
ProbeFn = Callable[[], Awaitable[Any]]
DiagnosticsFn = Callable[[str | None, str | None], dict[str, Any]]
"""(since, until as ISO text) → what `station report` needs from the daemon (masked config, snapshot, security log)."""

MAX_CONNECTIONS = 32
MAX_IN_FLIGHT = 8
"""Requests one connection may have running at once (a slow probe must not hold up status)."""
MAX_TOKEN_LENGTH = 20
"""OCPP 1.6 idTag length (2.0.1 allows 36): a token valid under both versions."""
TOKEN_TYPES = ("Local", "Central", "ISO14443", "ISO15693", "KeyCode", "eMAID", "MacAddress", "NoAuthorization")
MAX_PAGE = 500
PROBE_TIMEOUT_S = 30.0
CONTROL_METHODS = frozenset({"start", "stop", "availability", "unlock", "limit", "outbox_release", "present_token"})
MAX_RELEASE_IDS = 1000
STREAM_COALESCE_S = 0.02
"""After a write to a subscriber, events wait this long and go out together (one write, one wake-up).

A replay makes two `ocpp_message` events per message: written one by one, the socket writes
and the API's wake-ups cost more CPU than the message itself (docs/performance.md). The
first event after a quiet spell is written at once; only a burst is held up, by at most this.
"""


class IpcServer:
    """Serves `core` (and the daemon's own facts from `status`) on the Unix socket at `path`."""

    def __init__(
        self,
        path: Path,
        core: StationCore,
        status: StatusFn,
        probe: ProbeFn | None = None,
        *,
        diagnostics: DiagnosticsFn | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.path = Path(path)
        self.core = core
        self._status = status
        self._probe = probe
        self._diagnostics = diagnostics
        self.max_connections = max_connections
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.subscribers = 0
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "status": self._m_status,
            "connectors": self._m_connectors,
            "connector": self._m_connector,
            "transactions": self._m_transactions,
            "device_model": self._m_device_model,
            "reservations": self._m_reservations,
            "start": self._m_start,
            "present_token": self._m_present_token,
            "stop": self._m_stop,
            "availability": self._m_availability,
            "unlock": self._m_unlock,
            "limit": self._m_limit,
            "probe": self._m_probe,
            "login_failed": self._m_login_failed,
            "outbox": self._m_outbox,
            "outbox_release": self._m_outbox_release,
            "diagnostics": self._m_diagnostics,
        }
        self.login_failures = LoginFailureBursts(
            lambda info: core.security_events.record("MaintenanceLoginFailed", info))
        """Failed local logins (the API's token checks): one security event per burst."""

    # --- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Create the parent directory, replace a stale socket, listen, chmod 0660."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._remove_stale_socket()
        self._server = await asyncio.start_unix_server(
            self._accept, path=str(self.path), limit=protocol.MAX_REQUEST_BYTES
        )
        # Owner and group (the API's and the technicians' group) may talk to the daemon, nobody else.
        os.chmod(self.path, 0o660)
        log.info("ipc listening", path=str(self.path))

    async def _remove_stale_socket(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise RuntimeError(f"{self.path} exists and is not a socket; refusing to replace it")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)), 2.0)
        except (OSError, TimeoutError):
            self.path.unlink(missing_ok=True)
            log.info("stale ipc socket replaced", path=str(self.path))
            return
        writer.close()
        raise RuntimeError(f"another daemon already answers on {self.path}")

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()
        log.info("ipc closed", path=str(self.path))

    # --- connections --------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > self.max_connections:
                await self._send(writer, {"id": None, "error": IpcError(
                    protocol.TOO_MANY, f"more than {self.max_connections} clients connected").to_json()})
                return
            await Connection(self, reader, writer).serve()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only close() cancels connections, and awaits them. Ending normally keeps asyncio's
            # stream callback (which asks the task for its exception) from logging a spurious error.
            pass
        except Exception:  # noqa: BLE001 - one connection's bug must not reach the daemon
            log.exception("ipc connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(protocol.encode(message))
        await writer.drain()

    async def dispatch(self, method: str, params: dict[str, Any], peer: dict[str, int]) -> Any:
        handler = self._methods.get(method)
        if handler is None:
            raise IpcError(protocol.METHOD_NOT_FOUND,
                           f"unknown method {method!r}; known: {', '.join(sorted([*self._methods, 'subscribe']))}")
        if method not in CONTROL_METHODS:
            return await handler(params)
        try:
            result = await handler(params)
        except IpcError as exc:
            log.warning("control action refused", action=method, params=mask_tokens(params), peer=peer,
                        outcome=exc.code, reason=exc.message)
            raise
        log.info("control action", action=method, params=mask_tokens(params), peer=peer, outcome=result)
        return result

    # --- reads ----------------------------------------------------------------------
    async def _m_status(self, params: dict[str, Any]) -> dict[str, Any]:
        _no_params(params)
        result = self.core.snapshot()
        try:
            result.update(self._status())
        except Exception as exc:  # noqa: BLE001 - a broken daemon fact must not hide the core's state
            log.exception("daemon status failed")
            result["status_error"] = redact_text(f"{exc.__class__.__name__}: {exc}")
        result["process"] = _process_facts()
        result["ipc"] = {"path": str(self.path), "clients": len(self._connections), "subscribers": self.subscribers}
        return result

    async def _m_diagnostics(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "since", "until")
        if self._diagnostics is None:
            raise IpcError(protocol.UNAVAILABLE, "this daemon builds no diagnostics")
        since, until = params.get("since"), params.get("until")
        for value in (since, until):
            if value is not None and not isinstance(value, str):
                raise IpcError(protocol.INVALID_PARAMS, "since and until are ISO 8601 text")
        return self._diagnostics(since, until)

    async def _m_connectors(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        _no_params(params)
        return [c.to_json() for c in self.core.connectors.values()]

    async def _m_connector(self, params: dict[str, Any]) -> dict[str, Any]:
        cid = self._connector_id(params)
        return self.core.connectors[cid].to_json()

    async def _m_transactions(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "limit", "offset")
        limit = _int(params, "limit", default=20, low=1, high=MAX_PAGE)
        offset = _int(params, "offset", default=0, low=0)
        items = self.core.store.recent_transactions(limit, offset)
        return {"items": [t.to_json() for t in items], "total": self.core.store.count_transactions(),
                "limit": limit, "offset": offset}

    async def _m_device_model(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        _no_params(params)
        return self.core.device_model.snapshot()

    # --- commands -------------------------------------------------------------------
    async def _m_reservations(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        _no_params(params)
        return self.core.reservations.snapshot()

    def _token(self, params: dict[str, Any]) -> tuple[str, str]:
        token = params.get("id_token")
        if not isinstance(token, str) or not token.strip() or len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
            raise IpcError(protocol.INVALID_PARAMS,
                           f"id_token: expected 1..{MAX_TOKEN_LENGTH} printable characters")
        token_type = params.get("token_type", "Local")
        if token_type not in TOKEN_TYPES:
            raise IpcError(protocol.INVALID_PARAMS, f"token_type: expected one of {', '.join(TOKEN_TYPES)}")
        return token, token_type

    async def _m_present_token(self, params: dict[str, Any]) -> dict[str, Any]:
        """What the RFID reader does with a card: stop the transaction it may stop, else start one."""
        _only(params, "connector_id", "id_token", "token_type")
        cid = self._connector_id(params, optional=True)
        token, token_type = self._token({"token_type": "ISO14443", **params})
        result = await self.core.auth.present(token, token_type, cid)
        if result["action"] == "refused":
            raise IpcError(protocol.REJECTED, f"token refused: {result['reason']}")
        return result

    async def _m_start(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "connector_id", "id_token", "token_type")
        cid = self._connector_id(params, optional=True)
        token, token_type = self._token(params)
        outcome = await self.core.auth.start(cid, token, token_type, trigger="Authorized")
        if not outcome.accepted:
            raise IpcError(protocol.REJECTED, f"start refused: {outcome.reason}")
        conn = self.core.connectors[cid] if cid is not None else next(
            (c for c in self.core.connectors.values()
             if (c.pending and c.pending.id_token == token) or (c.transaction and c.transaction.id_token == token)),
            None)
        tx = conn.transaction if conn else None
        return {"accepted": True, "connector_id": conn.id if conn else None,
                "transaction_id": tx.id if tx else None,
                "authorization": outcome.decision.to_json() if outcome.decision else None,
                "detail": "transaction started" if tx else "authorized: the transaction starts when a vehicle is plugged in"}

    async def _m_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "connector_id", "transaction_id")
        tx_id = params.get("transaction_id")
        has_cid = params.get("connector_id") is not None
        if (tx_id is None) == (not has_cid):
            raise IpcError(protocol.INVALID_PARAMS, "give exactly one of transaction_id or connector_id")
        if tx_id is not None:
            if not isinstance(tx_id, str) or not tx_id:
                raise IpcError(protocol.INVALID_PARAMS, "transaction_id: expected a non-empty string")
            if not self.core.request_stop(tx_id, reason="Local", trigger="StopAuthorized"):
                raise IpcError(protocol.NOT_FOUND, f"no ongoing transaction {tx_id}")
            return {"stopped": True, "transaction_id": tx_id}
        cid = self._connector_id(params)
        tx = self.core.connectors[cid].transaction
        if not self.core.request_stop(None, connector_id=cid, reason="Local", trigger="StopAuthorized"):
            raise IpcError(protocol.REJECTED, f"connector {cid} has no transaction or pending authorization to stop")
        return {"stopped": True, "connector_id": cid, "transaction_id": tx.id if tx else None}

    async def _m_availability(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "connector_id", "operative")
        cid = self._connector_id(params, allow_station=True)
        operative = params.get("operative")
        if not isinstance(operative, bool):
            raise IpcError(protocol.INVALID_PARAMS, "operative: expected true or false")
        status = self.core.set_availability(cid, operative)
        if status == "Rejected":
            raise IpcError(protocol.REJECTED, f"availability change refused for connector {cid}")
        return {"status": status, "connector_id": cid, "operative": operative}

    async def _m_unlock(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "connector_id")
        cid = self._connector_id(params)
        status = self.core.unlock(cid)
        if status == "OngoingAuthorizedTransaction":
            raise IpcError(protocol.REJECTED, f"connector {cid} has an ongoing transaction: stop it first")
        if status != "Unlocked":
            raise IpcError(protocol.REJECTED, f"connector {cid} did not unlock ({status}): the controller "
                           "releases the cable lock only when it is not charging")
        return {"status": status, "connector_id": cid}

    async def _m_limit(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "connector_id", "amps")
        cid = self._connector_id(params, allow_station=True)
        if "amps" not in params:
            raise IpcError(protocol.INVALID_PARAMS, "amps: required (a number, or null to clear the local limit)")
        amps = params["amps"]
        if amps is not None:
            if isinstance(amps, bool) or not isinstance(amps, (int, float)) or amps != amps:
                raise IpcError(protocol.INVALID_PARAMS, "amps: expected a number of amperes or null")
            hardware = min(c.limits.get("hardware", 32.0) for c in self.core.connectors.values())
            if amps != 0 and not 6 <= amps <= hardware:
                raise IpcError(protocol.INVALID_PARAMS, f"amps: expected 0 (suspend charging) or 6..{hardware:g} A; "
                               "6 A is the lowest current IEC 61851 can signal")
            amps = float(amps)
        if not self.core.set_limit(cid, amps, "local"):
            raise IpcError(protocol.NOT_FOUND, f"connector {cid} does not exist")
        targets = self.core.connectors.values() if cid == 0 else [self.core.connectors[cid]]
        return {"connector_id": cid, "local_limit_a": amps,
                "effective_limit_a": {str(c.id): c.limit_a for c in targets}}

    async def _m_login_failed(self, params: dict[str, Any]) -> dict[str, Any]:
        """The API saw `count` failed token checks from `source` (e.g. "local API from 10.0.0.7")."""
        _only(params, "source", "count")
        source = params.get("source")
        if not isinstance(source, str) or not 0 < len(source) <= 100:
            raise IpcError(protocol.INVALID_PARAMS, "source: expected a string of 1..100 characters")
        count = _int(params, "count", default=1, low=1, high=1_000_000)
        return {"event": self.login_failures.failed(source, count)}

    async def _m_outbox(self, params: dict[str, Any]) -> dict[str, Any]:
        """The queue's depth and its parked entries (refused by the CSMS, kept for the operator)."""
        _no_params(params)
        store = self.core.store
        return {"depth": store.outbox_depth(), "parked": [e.summary() for e in store.parked_outbox()],
                "unfinished_by_version": store.versions_needed()}

    async def _m_outbox_release(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "ids")
        ids = params.get("ids")
        if ids is not None and (not isinstance(ids, list) or len(ids) > MAX_RELEASE_IDS or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids)):
            raise IpcError(protocol.INVALID_PARAMS, f"ids: expected a list of at most {MAX_RELEASE_IDS} entry ids, "
                           "or nothing to release every parked entry")
        released = self.core.release_parked(ids)
        if ids and not released:
            raise IpcError(protocol.NOT_FOUND, "none of these entries is parked")
        return {"released": released}

    async def _m_probe(self, params: dict[str, Any]) -> Any:
        _no_params(params)
        if self._probe is None:
            raise IpcError(protocol.UNAVAILABLE, "this daemon has no CSMS connection to probe")
        try:
            return await asyncio.wait_for(self._probe(), PROBE_TIMEOUT_S)
        except TimeoutError:
            raise IpcError(protocol.UNAVAILABLE, f"CSMS probe gave no answer within {PROBE_TIMEOUT_S:g} s") from None
        except IpcError:
            raise
        except Exception as exc:  # noqa: BLE001 - the probe's failure is the answer
            raise IpcError(protocol.UNAVAILABLE,
                           redact_text(f"CSMS probe failed: {exc.__class__.__name__}: {exc}")) from None

    # --- validation -------------------------------------------------------------------
    def _connector_id(self, params: dict[str, Any], *, optional: bool = False, allow_station: bool = False) -> Any:
        value = params.get("connector_id")
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise IpcError(protocol.INVALID_PARAMS, "connector_id: expected an integer"
                           + (" (0 = the whole station)" if allow_station else ""))
        if value == 0 and allow_station:
            return 0
        if value not in self.core.connectors:
            known = ", ".join(str(c) for c in self.core.connectors)
            raise IpcError(protocol.NOT_FOUND, f"connector {value} does not exist (this station has: {known})")
        return value


class Connection:
    """One client: requests run as tasks (answers may come out of order, matched by id)."""

    def __init__(self, server: IpcServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = _peer_credentials(writer)
        self._write_lock = asyncio.Lock()
        self._requests: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def serve(self) -> None:
        try:
            while True:
                try:
                    line = await self.reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        await self.reply(None, error=IpcError(protocol.PARSE_ERROR, "incomplete line at end of input"))
                    return
                except asyncio.LimitOverrunError:
                    await self.reply(None, error=IpcError(
                        protocol.INVALID_REQUEST, f"request line longer than {protocol.MAX_REQUEST_BYTES} bytes; closing"))
                    log.warning("ipc client sent an oversized line; connection closed", peer=self.peer)
                    return
                if not line.strip():
                    continue
                try:
                    request = protocol.decode(line)
                    req_id, method, params = _parse_request(request)
                except IpcError as exc:
                    await self.reply(_id_of(line), error=exc)
                    continue
                if method == "subscribe":
                    await self.stream(req_id, params)
                    return
                await self._slots.acquire()
                task = asyncio.ensure_future(self.handle(req_id, method, params))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
        finally:
            for task in list(self._requests):
                task.cancel()
            await asyncio.gather(*self._requests, return_exceptions=True)

    async def handle(self, req_id: Any, method: str, params: dict[str, Any]) -> None:
        try:
            result = await self.server.dispatch(method, params, self.peer)
        except IpcError as exc:
            await self.reply(req_id, error=exc)
        except Exception as exc:  # noqa: BLE001 - answered, logged, daemon untouched
            log.exception("ipc method failed", method=method)
            await self.reply(req_id, error=IpcError(protocol.INTERNAL, redact_text(
                f"{method} failed inside the daemon: {exc.__class__.__name__}")))
        else:
            await self.reply(req_id, result=result)
        finally:
            self._slots.release()

    async def reply(self, req_id: Any, *, result: Any = None, error: IpcError | None = None) -> None:
        message: dict[str, Any] = {"id": req_id}
        if error is not None:
            message["error"] = error.to_json()
        else:
            message["result"] = mask_tokens(result)  # drivers' tokens never leave the daemon in clear
        await self.write(message)

    async def write(self, message: dict[str, Any]) -> None:
        await self.write_lines(protocol.encode(message))

    async def write_lines(self, data: bytes) -> None:
        async with self._write_lock:
            self.writer.write(data)
            await self.writer.drain()

    async def stream(self, req_id: Any, params: dict[str, Any]) -> None:
        """Events until the client goes away; its queue drops the oldest events if it reads too slowly."""
        kinds = params.get("kinds")
        if kinds is not None and (not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds)):
            await self.reply(req_id, error=IpcError(protocol.INVALID_PARAMS, "kinds: expected a list of event kinds"))
            return
        wanted = set(kinds) if kinds else None
        # Wait for requests already running so their answers precede the stream.
        await asyncio.gather(*self._requests, return_exceptions=True)
        with self.server.core.events.subscribe() as sub:
            self.server.subscribers += 1
            try:
                await self.reply(req_id, result={"subscribed": True, "kinds": sorted(wanted) if wanted else None})
                gone = asyncio.ensure_future(_until_eof(self.reader))
                reported_drops = 0
                try:
                    while True:
                        getter = asyncio.ensure_future(sub.get())
                        done, _ = await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
                        if gone in done:
                            getter.cancel()
                            return
                        batch = [getter.result()]
                        while not sub.queue.empty():
                            batch.append(sub.queue.get_nowait())
                        lines: list[bytes] = []
                        if sub.dropped != reported_drops:
                            reported_drops = sub.dropped
                            lines.append(protocol.encode({"kind": "ipc_events_dropped", "at": batch[0].at.isoformat(),
                                                          "data": {"dropped_total": reported_drops}}))
                        lines.extend(protocol.encode(mask_tokens(e.to_json())) for e in batch if wanted is None or e.kind in wanted)
                        if lines:
                            await self.write_lines(b"".join(lines))
                            await asyncio.sleep(STREAM_COALESCE_S)
                finally:
                    gone.cancel()
            finally:
                self.server.subscribers -= 1


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Drain (and ignore) what a subscribed client sends; returns when it hangs up."""
    while await reader.read(4096):
        pass


def _parse_request(request: dict[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    req_id = request.get("id")
    if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, (int, str))):
        raise IpcError(protocol.INVALID_REQUEST, "id: expected an integer or a string")
    method = request.get("method")
    if not isinstance(method, str):
        raise IpcError(protocol.INVALID_REQUEST, "method: expected a string")
    params = request.get("params") or {}
    if not isinstance(params, dict):
        raise IpcError(protocol.INVALID_PARAMS, "params: expected an object")
    return req_id, method, params


def _id_of(line: bytes) -> Any:
    """Best effort: echo the id of a request we could not accept, so the client can match the error."""
    try:
        request = protocol.decode(line)
    except IpcError:
        return None
    req_id = request.get("id")
    return req_id if isinstance(req_id, (int, str)) and not isinstance(req_id, bool) else None


def _no_params(params: dict[str, Any]) -> None:
    _only(params)


def _only(params: dict[str, Any], *allowed: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "no parameters"
        raise IpcError(protocol.INVALID_PARAMS, f"unknown parameter(s) {', '.join(unknown)}; expected: {expected}")


def _int(params: dict[str, Any], name: str, *, default: int, low: int, high: int | None = None) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise IpcError(protocol.INVALID_PARAMS, f"{name}: expected an integer {bound}")
    return value


def _peer_credentials(writer: asyncio.StreamWriter) -> dict[str, int]:
    """pid/uid/gid of the client process (SO_PEERCRED), for the control-action log."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return {}
    pid, uid, gid = struct.unpack("3i", raw)
    return {"pid": pid, "uid": uid, "gid": gid}


def _process_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"pid": os.getpid()}
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        facts["rss_bytes"] = pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        facts["rss_bytes"] = None
    return facts
