"""The local state service: FastAPI in its own process, talking to the daemon only over IPC.

State endpoints answer 503 with the reason while the daemon is unreachable; /health
keeps answering. Control endpoints need the bearer token from configuration and are
logged with their outcome (here and, with the caller's pid, in the daemon).
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime (local `bearer`).
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from api import metrics
from api.daemon_link import DaemonLink
from api import docs_pages
from api.guard import BodyGuard, TokenBackoff
from api.settings import ApiSettings
from api.models import (
    AvailabilityRequest,
    AvailabilityResult,
    Check,
    Connector,
    DaemonReachability,
    DeviceVariable,
    ErrorBody,
    Health,
    LimitRequest,
    LimitResult,
    Outbox,
    Ready,
    ReleaseRequest,
    ReleaseResult,
    Reservation,
    StartRequest,
    StartResult,
    Status,
    StopResult,
    TransactionPage,
    UnlockResult,
)
from api.problems import link_down, meter_problem, problems, store_trouble, version_label
from station import __version__
from station.config import host_names
from station.ipc import protocol
from station.ipc.client import DaemonUnavailable, IpcClient, IpcError
from station.logs import mask_tokens, register_secrets  # the daemon masks too (IPC); again here, to be sure

log = structlog.get_logger(__name__)
STATIC = Path(__file__).parent / "static"
T = TypeVar("T")

MAX_EVENT_STREAMS = 32
"""Open /events streams (one per status page), well below the connection cap (api/serving.py)."""
HTTP_STATUS_OF = {
    protocol.INVALID_PARAMS: 422,
    protocol.NOT_FOUND: 404,
    protocol.REJECTED: 409,
    protocol.UNAVAILABLE: 503,
    protocol.METHOD_NOT_FOUND: 501,
}
ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The station daemon is not reachable (the reason is given)."},
}
CONTROL_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
    403: {"model": ErrorBody, "description": "Control endpoints are disabled (no token configured)."},
    404: {"model": ErrorBody, "description": "Unknown connector or transaction."},
    409: {"model": ErrorBody, "description": "Refused in the connector's current state (reason given)."},
    415: {"model": ErrorBody, "description": "The body is not JSON (Content-Type must be application/json)."},
    422: {"model": ErrorBody, "description": "Invalid request."},
}


def is_json(content_type: str | None) -> bool:
    """application/json or a +json type, parameters (charset) aside."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def allowed_hosts(bind_host: str, extra: list[str] | None = None) -> list[str]:
    """Host headers answered: loopback names, the configured bind name and STATION_API_HOSTS (DNS rebinding gets 400)."""
    hosts = ["localhost", "127.0.0.1", "[::1]"]
    name = f"[{bind_host}]" if ":" in bind_host else bind_host
    for host in [name.lower(), *(extra or [])]:
        if host not in hosts and host not in ("0.0.0.0", "[::]"):
            hosts.append(host)
    return hosts


class HostGate(TrustedHostMiddleware):
    """Answers only the allowed Host names (DNS rebinding gets 400), and a request with no Host header at
    all: only HTTP/1.0 may omit it (a health check, `printf 'GET /health HTTP/1.0\\r\\n\\r\\n' | nc`), and
    a browser, the one a rebinding page drives, always sends it."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not any(k == b"host" for k, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: ApiSettings, *, link: DaemonLink | None = None,
               backoff: TokenBackoff | None = None) -> FastAPI:
    link = link or DaemonLink(settings.ipc_socket)
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    register_secrets([token])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await link.start()
        log.info("station api started", socket=str(settings.ipc_socket), control=bool(token))
        try:
            yield
        finally:
            await link.close()

    app = FastAPI(
        docs_url=None,  # the default /docs and /redoc load their scripts from a public CDN: see api/docs_pages.py
        redoc_url=None,
        title="Charge point station — local API",
        version=__version__,
        description="State, live events, metrics and technician controls of this charge point. "
                    "Control endpoints need `Authorization: Bearer <STATION_API_TOKEN>`.",
        lifespan=lifespan,
    )
    app.state.link = link
    docs_pages.add(app)
    # Token and body size are checked on the raw request, before FastAPI reads any body (api/guard.py).
    app.add_middleware(BodyGuard, token=token, on_auth_failure=link.report_auth_failure,
                       backoff=backoff or TokenBackoff())
    # Added last, so it runs first: a page of another site's name (DNS rebinding) never reaches a route.
    app.add_middleware(HostGate, allowed_hosts=allowed_hosts(settings.api_host, host_names(settings.api_hosts)),
                       www_redirect=False)
    bearer = HTTPBearer(auto_error=False, description="STATION_API_TOKEN from the station's configuration.")

    # --- plumbing ----------------------------------------------------------------------
    def daemon_down(reason: str) -> str:
        since = link.changed_at.astimezone(UTC).strftime("%H:%M:%S UTC")
        return (f"station daemon not reachable: {reason}; since {since}. First check: systemctl status station "
                "and journalctl -u station -n 50")

    async def daemon(fn: Callable[[IpcClient], Awaitable[T]]) -> T:
        try:
            return await link.call(fn)
        except DaemonUnavailable as exc:
            raise HTTPException(503, daemon_down(str(exc))) from None
        except IpcError as exc:
            raise HTTPException(HTTP_STATUS_OF.get(exc.code, 502), exc.message) from None

    def authorized(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if not token:
            raise HTTPException(403, "control endpoints are disabled: STATION_API_TOKEN is not configured")
        if creds is None:
            raise HTTPException(401, "bearer token required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    async def control(request: Request, action: str, fn: Callable[[IpcClient], Awaitable[T]], **fields: Any) -> T:
        client = request.client.host if request.client else None
        try:
            result = await daemon(fn)
        except HTTPException as exc:
            log.warning("control request refused", action=action, client=client, status=exc.status_code,
                        reason=exc.detail, **fields)
            raise
        log.info("control request done", action=action, client=client, outcome=result, **fields)
        return result

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        content_type = request.headers.get("content-type")
        if any(e.get("loc", ())[:1] == ("body",) for e in errors) and not is_json(content_type):
            # FastAPI parses only a JSON body; anything else reaches validation as "not a dictionary".
            return JSONResponse({"detail": f"request body must be JSON: send Content-Type: application/json "
                                           f"(got {content_type or 'no Content-Type'})"}, status_code=415)
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"detail": "malformed JSON body"}, status_code=400)
        parts = []
        for e in errors:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    # --- health ------------------------------------------------------------------------
    @app.get("/health", response_model=Health, tags=["health"],
             summary="Liveness of the API (answers even when the daemon is down)")
    async def health() -> Health:
        return Health(api_version=__version__, daemon=DaemonReachability(
            reachable=link.reachable, socket=str(settings.ipc_socket), error=link.last_error,
            since=link.changed_at.isoformat()))

    @app.get("/ready", response_model=Ready, tags=["health"], responses={503: {"model": Ready}},
             summary="Daemon reachable, ESP32 link up, CSMS connected, state database writable, "
                     "meter answering (503 unless all)")
    async def ready() -> JSONResponse:
        try:
            status = await link.call(lambda c: c.status())
        except (DaemonUnavailable, IpcError) as exc:
            down = Check(ok=False, detail="unknown: daemon not reachable")
            detail = daemon_down(str(exc)) if isinstance(exc, DaemonUnavailable) else str(exc)
            body = Ready(ready=False, daemon=Check(ok=False, detail=detail), esp32=down, csms=down)
            return JSONResponse(body.model_dump(), status_code=503)
        links = [(c.get("id"), c.get("controller_link") or {}) for c in status.get("connectors") or []]
        esp_down = [f"connector {cid}: {link_down(str(lk.get('reason') or ''), 'the ESP32 port')[0]}"
                    for cid, lk in links if not lk.get("up")]
        ocpp = status.get("ocpp") or {}
        connected = bool(ocpp.get("connected", status.get("csms_online")))
        store = status.get("store") or {}
        store_ok = bool(store.get("healthy", True))
        meter_down = meter_problem(status)
        meter = None if not status.get("meter") else Check(ok=not meter_down, detail=meter_down or "meter answers")
        body = Ready(
            ready=not esp_down and connected and store_ok and not meter_down,
            daemon=Check(ok=True, detail="daemon answers on " + str(settings.ipc_socket)),
            esp32=Check(ok=not esp_down, detail="; ".join(esp_down) or f"{len(links)} link(s) up"),
            csms=Check(ok=connected, detail=(f"connected (OCPP {version_label(ocpp.get('version'))})" if connected
                                             else next(p["message"] for p in problems(status)
                                                       if p["code"] == "csms_unreachable"))),
            store=Check(ok=store_ok, detail="state database writable" if store_ok else
                        f"{store_trouble(str(store.get('last_error') or ''))[0]} "
                        f"({store.get('unsaved_events', 0)} event(s) waiting in memory)"),
            meter=meter,
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    # --- state -------------------------------------------------------------------------
    @app.get("/status", response_model=Status, tags=["state"], responses=ERRORS,
             summary="Station, versions, CSMS and ESP32 links, offline queue, clock, problems")
    async def status() -> dict[str, Any]:
        result = await daemon(lambda c: c.status())
        result["problems"] = problems(result, link.problems_seen)
        return mask_tokens(result)  # type: ignore[no-any-return]

    @app.get("/connectors", response_model=list[Connector], tags=["state"], responses=ERRORS)
    async def connectors() -> list[dict[str, Any]]:
        return mask_tokens(await daemon(lambda c: c.connectors()))  # type: ignore[no-any-return]

    @app.get("/connectors/{connector_id}", response_model=Connector, tags=["state"],
             responses={**ERRORS, 404: {"model": ErrorBody, "description": "No such connector."}})
    async def connector(connector_id: Annotated[int, PathParam(ge=1)]) -> dict[str, Any]:
        return mask_tokens(await daemon(lambda c: c.connector(connector_id)))  # type: ignore[no-any-return]

    @app.get("/reservations", response_model=list[Reservation], tags=["state"], responses=ERRORS,
             summary="Reservations the CSMS made (ReserveNow), by id; tokens masked")
    async def reservations() -> list[dict[str, Any]]:
        return mask_tokens(await daemon(lambda c: c.reservations()))  # type: ignore[no-any-return]

    @app.get("/transactions", response_model=TransactionPage, tags=["state"], responses=ERRORS,
             summary="Recent transactions, most recent first")
    async def transactions(limit: Annotated[int, Query(ge=1, le=500)] = 20,
                           offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        return mask_tokens(await daemon(lambda c: c.transactions(limit, offset)))  # type: ignore[no-any-return]

    @app.get("/device-model", response_model=list[DeviceVariable], tags=["state"], responses=ERRORS,
             summary="Every OCPP variable (the device model) with its value; read-only, secrets masked")
    async def device_model() -> list[dict[str, Any]]:
        return await daemon(lambda c: c.device_model())

    def stream_slot() -> None:
        # Streams are never dropped for a newcomer (api/serving.py): unbounded, they would fill the
        # connection cap and lock everyone out. Checked as a dependency: before the stream starts.
        if link.streams >= MAX_EVENT_STREAMS:
            raise HTTPException(503, f"too many open event streams ({MAX_EVENT_STREAMS}): close a status page")

    @app.get("/events", response_class=EventSourceResponse, tags=["state"], dependencies=[Depends(stream_slot)],
             summary="Live events (Server-Sent Events): connector, transaction, meter, csms, daemon, ...")
    async def events() -> AsyncIterator[ServerSentEvent]:
        queue = link.subscribe()
        try:
            # The current state first (marked initial), so a client knows where it stands before any change.
            initial = {"kind": "daemon", "at": link.changed_at.isoformat(),
                       "data": {"reachable": link.reachable, "error": link.last_error, "initial": True}}
            yield ServerSentEvent(event="daemon", retry=2000, data={**initial, "text": link.narrator.text(initial)})
            while True:
                event = await queue.get()
                yield ServerSentEvent(event=str(event.get("kind") or "message"), data=mask_tokens(event))
        finally:
            link.unsubscribe(queue)

    @app.get("/events/recent", tags=["state"],
             summary="The last events the API saw, oldest first: the last 50 connector, transaction, link, "
                     "problem and daemon events, and the last 10 of each routine kind (meter readings, "
                     "offline queue, periodic transaction updates)")
    async def recent_events() -> list[dict[str, Any]]:
        return mask_tokens(link.recent())  # type: ignore[no-any-return]

    @app.get("/metrics", tags=["state"], response_class=Response,
             summary="Prometheus exposition (answers even when the daemon is down: station_daemon_up 0)")
    async def prometheus() -> Response:
        try:
            status = await link.call(lambda c: c.status())
        except (DaemonUnavailable, IpcError):
            status = None
        return Response(metrics.render(link, status), media_type="text/plain; version=0.0.4; charset=utf-8")

    # --- control -----------------------------------------------------------------------
    guarded = [Depends(authorized)]

    @app.post("/connectors/{connector_id}/start", response_model=StartResult, tags=["control"],
              dependencies=guarded, responses=CONTROL_ERRORS,
              summary="Authorize a local session; it starts when a vehicle is (or gets) plugged in")
    async def start(request: Request, connector_id: Annotated[int, PathParam(ge=1)], body: StartRequest) -> Any:
        return await control(request, "start", lambda c: c.start(connector_id, body.id_token, body.token_type),
                             connector_id=connector_id)

    @app.post("/connectors/{connector_id}/stop", response_model=StopResult, tags=["control"],
              dependencies=guarded, responses=CONTROL_ERRORS,
              summary="Stop the session (or cancel the pending authorization) on a connector")
    async def stop(request: Request, connector_id: Annotated[int, PathParam(ge=1)]) -> Any:
        return await control(request, "stop", lambda c: c.stop(connector_id=connector_id), connector_id=connector_id)

    @app.post("/transactions/{transaction_id}/stop", response_model=StopResult, tags=["control"],
              dependencies=guarded, responses=CONTROL_ERRORS, summary="Stop an ongoing transaction by id")
    async def stop_transaction(request: Request,
                               transaction_id: Annotated[str, PathParam(min_length=1, max_length=64)]) -> Any:
        return await control(request, "stop", lambda c: c.stop(transaction_id), transaction_id=transaction_id)

    @app.put("/connectors/{connector_id}/availability", response_model=AvailabilityResult, tags=["control"],
             dependencies=guarded, responses=CONTROL_ERRORS,
             summary="Set a connector (0 = whole station) operative or inoperative")
    async def availability(request: Request, connector_id: Annotated[int, PathParam(ge=0)],
                           body: AvailabilityRequest) -> Any:
        return await control(request, "availability", lambda c: c.availability(connector_id, body.operative),
                             connector_id=connector_id, operative=body.operative)

    @app.post("/connectors/{connector_id}/unlock", response_model=UnlockResult, tags=["control"],
              dependencies=guarded, responses=CONTROL_ERRORS, summary="Release the cable lock (not while charging)")
    async def unlock(request: Request, connector_id: Annotated[int, PathParam(ge=1)]) -> Any:
        return await control(request, "unlock", lambda c: c.unlock(connector_id), connector_id=connector_id)

    @app.put("/connectors/{connector_id}/limit", response_model=LimitResult, tags=["control"],
             dependencies=guarded, responses=CONTROL_ERRORS,
             summary="Set (or clear with null) the local current limit; connector 0 = all")
    async def set_limit(request: Request, connector_id: Annotated[int, PathParam(ge=0)], body: LimitRequest) -> Any:
        return await control(request, "limit", lambda c: c.limit(connector_id, body.amps),
                             connector_id=connector_id, amps=body.amps)

    @app.delete("/connectors/{connector_id}/limit", response_model=LimitResult, tags=["control"],
                dependencies=guarded, responses=CONTROL_ERRORS, summary="Clear the local current limit")
    async def clear_limit(request: Request, connector_id: Annotated[int, PathParam(ge=0)]) -> Any:
        return await control(request, "limit", lambda c: c.limit(connector_id, None),
                             connector_id=connector_id, amps=None)

    @app.get("/outbox/parked", response_model=Outbox, tags=["state"], responses=ERRORS,
             summary="Queued messages (transactions, security and monitoring events) the CSMS refused too often (parked, not sent until released)")
    async def parked() -> Any:
        return await daemon(lambda c: c.outbox())

    @app.post("/outbox/parked/release", response_model=ReleaseResult, tags=["control"],
              dependencies=guarded, responses=CONTROL_ERRORS,
              summary="Send parked messages again with fresh attempts (all, or the ids given)")
    async def release_parked(request: Request, body: ReleaseRequest | None = None) -> Any:
        ids = body.ids if body is not None else None
        return await control(request, "outbox_release", lambda c: c.release_parked(ids), ids=ids)

    # --- status page -------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


__all__ = ["create_app", "mask_tokens"]
