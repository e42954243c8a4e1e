"""Drive a running dev CSMS from the shell: send a station any CALL and watch what it sends back.

    station dev-csms --port 9000 &                      # listens for control on a Unix socket too
    station dev-csms call CP001 GetBaseReport '{"requestId": 1, "reportBase": "FullInventory"}' \\
        --wait-for NotifyReport                          # the answer, then every page until tbc=false
    station dev-csms call CP001 GetLog '{...}' --wait-for LogStatusNotification --until status=Uploaded,UploadFailure

The running dev CSMS listens on `control_path(port)` (a 0600 Unix socket; `--control PATH` to
choose). One request per connection, JSON lines both ways:

    → {"station": "CP001", "action": "GetBaseReport", "payload": {...},
       "wait_for": ["NotifyReport"], "until": {"tbc": ["false"]}, "timeout": 30}
    ← {"kind": "result", "action": ..., "payload": {...}}          (or "kind": "error", code, description)
    ← {"kind": "message", "action": "NotifyReport", "payload": {...}} (each follow-up from the station)
    ← {"kind": "done", "reason": "until" | "timeout" | "no wait"}

Follow-ups are the station's CALLs named in `wait_for` that arrive after the request was sent. The
watch ends at the first one matching `until` (field → accepted values, compared as text), or —
without `until` — at the first one that does not say `"tbc": true`; or after `timeout` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import OCPPError

from station.ocpp.rpc import CallErrorReceived

if TYPE_CHECKING:
    from station.devtools.csms import DevCsms, Received

Emit = Callable[[dict[str, Any]], Awaitable[None]]
MAX_REQUEST = 1 << 20


def control_path(port: int) -> Path:
    """Where the dev CSMS listening on `port` takes control requests (unless told otherwise)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"station-dev-csms-{port}.sock"


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def finished(message: Received, until: dict[str, list[str]]) -> bool:
    if until:
        return any(_text(message.payload.get(field)) in values for field, values in until.items())
    return message.payload.get("tbc") is not True


class ControlServer:
    """The dev CSMS's control socket (owned by `_serve_forever`, closed with it)."""

    def __init__(self, csms: DevCsms, path: Path) -> None:
        self.csms = csms
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path), limit=MAX_REQUEST)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)

        async def emit(message: dict[str, Any]) -> None:
            writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
            await writer.drain()

        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict) or not isinstance(request.get("payload", {}), dict):
                    raise ValueError("expected a JSON object with a payload object")
            except ValueError as exc:
                await emit({"kind": "error", "code": "BadRequest", "description": str(exc)})
                return
            await self.run(request, emit)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def run(self, request: dict[str, Any], emit: Emit) -> None:
        station, action = str(request.get("station", "")), str(request.get("action", ""))
        wait_for = [str(a) for a in request.get("wait_for") or []]
        until = {str(k): [str(v) for v in vs] for k, vs in (request.get("until") or {}).items()}
        timeout = float(request.get("timeout", 30))
        since = self.csms.mark()
        try:
            answer = await self.csms.call(station, action, request.get("payload") or {}, timeout=timeout)
        except LookupError:
            connected = ", ".join(self.csms.stations()) or "none"
            await emit({"kind": "error", "code": "NotConnected",
                        "description": f"station {station!r} is not connected (connected: {connected})"})
            return
        except CallErrorReceived as exc:
            await emit({"kind": "error", "code": exc.code, "description": exc.description, "details": exc.details})
            return
        except TimeoutError:
            await emit({"kind": "error", "code": "Timeout", "description": f"no answer within {timeout:g} s"})
            return
        except OCPPError as exc:  # our request or the station's answer violates the schema
            # Raised here, before sending (or on the station's answer): say which. The library's
            # details hold the Call object itself: pass on the JSON-able reason only.
            cause = exc.details.get("cause") if isinstance(exc.details, dict) else None
            version = {"16": "1.6", "201": "2.0.1"}.get(str(self.csms.version_of(station)), "?")
            description = (f"not sent: {action} is not an OCPP {version} action (the station's version)"
                           if exc.code == "NotImplemented" else f"{exc.description} (checked by the dev CSMS)")
            await emit({"kind": "error", "code": exc.code, "description": description,
                        "details": {"cause": str(cause)} if cause else {}})
            return
        await emit({"kind": "result", "action": action, "payload": answer})
        if not wait_for:
            await emit({"kind": "done", "reason": "no wait"})
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = await self.csms.wait_for(wait_for, station, timeout=max(0.0, deadline - time.monotonic()),
                                                   since=since)
            except TimeoutError:
                await emit({"kind": "done", "reason": "timeout"})
                return
            received = self.csms.received
            since = next(i for i in range(since, len(received)) if received[i] is message) + 1
            await emit({"kind": "message", "action": message.action, "payload": message.payload})
            if finished(message, until):
                await emit({"kind": "done", "reason": "until"})
                return


# ------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from station.cliargs import Parser, port, positive

    parser = Parser(
        prog="station dev-csms call",
        description="Send a CALL to a station connected to a running dev CSMS; print the answer and the "
                    "station's follow-up messages as JSON lines.")
    parser.add_argument("station", help="station id as it connected")
    parser.add_argument("action", help="OCPP action, e.g. GetBaseReport, GetVariables, ChangeConfiguration")
    parser.add_argument("payload", nargs="?", default="{}", help="the request payload as JSON (default {})")
    parser.add_argument("--port", type=port, default=9000, help="the dev CSMS's port, to find its control socket")
    parser.add_argument("--control", type=Path, help="the control socket (default: derived from --port)")
    parser.add_argument("--wait-for", action="append", default=[], metavar="ACTION",
                        help="print the station's CALLs of this action that follow (repeatable)")
    parser.add_argument("--until", action="append", default=[], metavar="FIELD=V1[,V2]",
                        help="stop at the follow-up whose FIELD has one of these values (default: at the first "
                             "one not saying \"tbc\": true, i.e. the last page of a report)")
    parser.add_argument("--timeout", type=positive, default=30, help="seconds for the answer and the follow-ups")
    return parser


async def call(path: Path, request: dict[str, Any], out: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Send one control request; `out` gets every line; returns the last one."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 24)
    last: dict[str, Any] = {}
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        while line := await reader.readline():
            last = json.loads(line)
            out(last)
            if last.get("kind") in ("error", "done"):
                break
    finally:
        writer.close()
    return last


def main(argv: Sequence[str] | None = None) -> int:
    """0: answered (and the follow-ups ended as asked); 1: CALLERROR / not connected; 2: usage; 3: no dev CSMS; 4: timeout."""
    args = build_parser().parse_args(argv)
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        print(f"payload: not JSON: {exc}", file=sys.stderr)
        return 2
    until: dict[str, list[str]] = {}
    for item in args.until:
        field, sep, values = item.partition("=")
        if not sep or not field:
            print(f"--until expects FIELD=VALUE[,VALUE], got {item!r}", file=sys.stderr)
            return 2
        until[field] = values.split(",")
    request = {"station": args.station, "action": args.action, "payload": payload, "wait_for": args.wait_for,
               "until": until, "timeout": args.timeout}
    path = args.control or control_path(args.port)
    try:
        last = asyncio.run(call(path, request, lambda line: print(json.dumps(line), flush=True)))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError, PermissionError) as exc:
        print(f"no dev CSMS control socket at {path}: {exc.strerror or exc} "
              "(is `station dev-csms` running? give its --port, or --control PATH as it printed)", file=sys.stderr)
        return 3
    if not last:
        print(f"the dev CSMS at {path} closed the control connection without an answer (see its log)", file=sys.stderr)
        return 1
    if last.get("kind") == "error":
        return 1
    return 4 if last.get("reason") == "timeout" else 0
