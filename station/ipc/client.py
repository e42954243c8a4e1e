"""Typed async client of the daemon's Unix socket, shared by the API, `station status` and `station --once`.

One connection carries any number of concurrent requests (answers matched by id);
it is opened on first use and reopened on the next call after the daemon went away,
so a long-lived user (the API) reconnects by itself. `events()` uses a connection
of its own because a subscribed connection carries only events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from station.ipc import protocol
from station.ipc.protocol import IpcError

__all__ = ["DaemonUnavailable", "IpcClient", "IpcError"]

DEFAULT_TIMEOUT_S = 10.0


class DaemonUnavailable(Exception):
    """The daemon cannot be reached: no socket, connection refused, no permission, or it went away."""


class IpcClient:
    def __init__(self, path: Path | str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._connect_lock = asyncio.Lock()

    async def __aenter__(self) -> IpcClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    # --- typed calls ------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """The core's snapshot merged with the daemon's own facts (OCPP link, ESP32 link, meter, uptime)."""
        return dict(await self.call("status"))

    async def connectors(self) -> list[dict[str, Any]]:
        return list(await self.call("connectors"))

    async def connector(self, connector_id: int) -> dict[str, Any]:
        return dict(await self.call("connector", {"connector_id": connector_id}))

    async def transactions(self, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """`{"items": [...], "total": n, "limit": .., "offset": ..}`, most recent first."""
        return dict(await self.call("transactions", {"limit": limit, "offset": offset}))

    async def device_model(self) -> list[dict[str, Any]]:
        """Every device-model variable with its value (secrets masked): what the CSMS can read."""
        return list(await self.call("device_model"))

    async def start(self, connector_id: int | None, id_token: str, token_type: str = "Local") -> dict[str, Any]:
        params: dict[str, Any] = {"connector_id": connector_id, "id_token": id_token, "token_type": token_type}
        return dict(await self.call("start", params))

    async def present_token(self, id_token: str, token_type: str = "ISO14443", connector_id: int | None = None) -> dict[str, Any]:
        """Hold a token to the (virtual) RFID reader: stops the transaction it may stop, else starts one."""
        return dict(await self.call("present_token", {"connector_id": connector_id, "id_token": id_token,
                                                      "token_type": token_type}))

    async def reservations(self) -> list[dict[str, Any]]:
        return list(await self.call("reservations"))

    async def stop(self, transaction_id: str | None = None, *, connector_id: int | None = None) -> dict[str, Any]:
        params = {"transaction_id": transaction_id} if transaction_id is not None else {"connector_id": connector_id}
        return dict(await self.call("stop", params))

    async def availability(self, connector_id: int, operative: bool) -> dict[str, Any]:
        return dict(await self.call("availability", {"connector_id": connector_id, "operative": operative}))

    async def unlock(self, connector_id: int) -> dict[str, Any]:
        return dict(await self.call("unlock", {"connector_id": connector_id}))

    async def limit(self, connector_id: int, amps: float | None) -> dict[str, Any]:
        """Set (or clear with None) the local current limit; connector 0 = every connector."""
        return dict(await self.call("limit", {"connector_id": connector_id, "amps": amps}))

    async def outbox(self) -> dict[str, Any]:
        """`{"depth", "parked": [entry summaries], "unfinished_by_version"}`."""
        return dict(await self.call("outbox"))

    async def release_parked(self, ids: list[int] | None = None) -> dict[str, Any]:
        """Send parked outbox entries again (all when `ids` is None); `{"released": [ids]}`."""
        return dict(await self.call("outbox_release", {} if ids is None else {"ids": ids}))

    async def probe(self, timeout: float | None = None) -> Any:
        """Ask the daemon for a fresh Heartbeat + StatusNotification on its own CSMS connection."""
        return await self.call("probe", timeout=timeout)

    # --- transport ----------------------------------------------------------------------
    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Send one request and wait for its answer; raises IpcError (daemon said no) or DaemonUnavailable."""
        await self._ensure_connected()
        assert self._writer is not None
        req_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            self._writer.write(protocol.encode({"id": req_id, "method": method, "params": params or {}}))
            await self._writer.drain()
            return await asyncio.wait_for(future, timeout or self.timeout)
        except TimeoutError:
            raise DaemonUnavailable(f"no answer to {method!r} within {timeout or self.timeout:g} s") from None
        except (ConnectionError, OSError) as exc:
            await self._drop(f"connection lost: {exc.__class__.__name__}")
            raise DaemonUnavailable(f"connection to the daemon lost: {exc.__class__.__name__}") from None
        finally:
            self._pending.pop(req_id, None)

    async def _ensure_connected(self) -> None:
        if self.connected:
            return
        async with self._connect_lock:
            if self.connected:
                return
            self._reader, self._writer = await _open(self.path, self.timeout)
            self._receiver = asyncio.ensure_future(self._receive(self._reader))

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        reason = "the daemon closed the connection"
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    message = protocol.decode(line)
                except IpcError:
                    continue
                future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
                if future is None or future.done():
                    continue
                if "error" in message:
                    err = message["error"] if isinstance(message["error"], dict) else {}
                    future.set_exception(IpcError(str(err.get("code", protocol.INTERNAL)),
                                                  str(err.get("message", "error without message"))))
                else:
                    future.set_result(message.get("result"))
        except (ConnectionError, OSError, ValueError) as exc:
            reason = f"connection lost: {exc.__class__.__name__}"
        finally:
            self._fail_pending(reason)
            if self._reader is reader:
                assert self._writer is not None
                self._writer.close()
                self._reader = self._writer = None

    def _fail_pending(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(DaemonUnavailable(reason))

    async def _drop(self, reason: str) -> None:
        self._fail_pending(reason)
        writer, receiver = self._writer, self._receiver
        self._reader = self._writer = None
        self._receiver = None
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def close(self) -> None:
        await self._drop("client closed")

    # --- events -------------------------------------------------------------------------
    async def events(
        self, kinds: list[str] | None = None, *, on_subscribed: Callable[[], None] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Live events (`{"kind", "at", "data"}`) on a dedicated connection; ends with DaemonUnavailable.

        `on_subscribed` is called once the daemon confirmed the subscription (before any event).
        """
        reader, writer = await _open(self.path, self.timeout)
        try:
            writer.write(protocol.encode({"id": 0, "method": "subscribe", "params": {"kinds": kinds}}))
            await writer.drain()
            answer = await asyncio.wait_for(reader.readline(), self.timeout)
            if not answer:
                raise DaemonUnavailable("the daemon closed the connection before subscribing")
            message = protocol.decode(answer)
            if "error" in message:
                err = message["error"]
                raise IpcError(str(err.get("code")), str(err.get("message")))
            if on_subscribed is not None:
                on_subscribed()
            while True:
                line = await reader.readline()
                if not line:
                    raise DaemonUnavailable("the daemon closed the event stream")
                with contextlib.suppress(IpcError):
                    yield protocol.decode(line)
        except TimeoutError:
            raise DaemonUnavailable("the daemon did not answer the subscription") from None
        except (ConnectionError, OSError, ValueError) as exc:
            raise DaemonUnavailable(f"event stream lost: {exc.__class__.__name__}") from None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _open(path: Path, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=protocol.MAX_RESPONSE_BYTES), timeout
        )
    except FileNotFoundError:
        raise DaemonUnavailable(f"no daemon socket at {path} (is the station daemon running?)") from None
    except ConnectionRefusedError:
        raise DaemonUnavailable(f"daemon socket {path} refuses connections (daemon stopped?)") from None
    except PermissionError:
        raise DaemonUnavailable(f"no permission to open {path} (needs the station group)") from None
    except TimeoutError:
        raise DaemonUnavailable(f"daemon socket {path} did not accept within {timeout:g} s") from None
    except OSError as exc:
        raise DaemonUnavailable(f"cannot connect to {path}: {exc.strerror or exc.__class__.__name__}") from None
