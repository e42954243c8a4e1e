"""systemd notification protocol (sd_notify) without a dependency.

systemd starts ``station.service`` with ``Type=notify`` and ``WatchdogSec=``: it waits for
``READY=1`` before it calls the unit started, and restarts the daemon when ``WATCHDOG=1``
stops arriving. The pings come from the asyncio event loop itself, so a loop that is
blocked (a hung coroutine doing blocking I/O, a deadlock) stops pinging and gets restarted.

How the daemon uses it::

    from station import sdnotify

    async def main() -> None:
        ...                                   # open store, IPC socket, links
        watchdog = sdnotify.Watchdog.from_env()   # None unless systemd asked for it
        if watchdog is not None:
            watchdog.start()                  # owned task; pings at half of WATCHDOG_USEC
        sdnotify.ready()                      # only once the IPC socket accepts connections
        try:
            await stop_event.wait()
        finally:
            sdnotify.stopping()
            if watchdog is not None:
                await watchdog.stop()

Everything here is a silent no-op (returns ``False``) when ``$NOTIFY_SOCKET`` is unset, so
the same code runs under a terminal, in tests and under systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

__all__ = [
    "Watchdog",
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog_interval",
    "watchdog_ping",
    "watchdog_task",
]


def _address(raw: str) -> str | bytes:
    """Map ``$NOTIFY_SOCKET`` to a socket address; ``@name`` is Linux's abstract namespace."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def notify(state: str) -> bool:
    """Send one sd_notify datagram (e.g. ``"READY=1"``); ``False`` if not under systemd or it failed.

    Never raises: losing a notification must not take the daemon down — systemd's own
    timeouts cover the failure.
    """
    raw = os.environ.get("NOTIFY_SOCKET", "")
    if not raw or not state:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), _address(raw))
    except OSError:
        return False
    return True


def ready() -> bool:
    """Tell systemd the daemon is up (the unit becomes ``active``; ``station-api`` may start)."""
    return notify(f"READY=1\nMAINPID={os.getpid()}")


def stopping() -> bool:
    """Tell systemd a clean shutdown has begun (so the stop is not mistaken for a crash)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Free-form one-line status shown by ``systemctl status station``."""
    return notify("STATUS=" + text.replace("\n", " "))


def watchdog_ping() -> bool:
    """One ``WATCHDOG=1`` keep-alive."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or ``None`` if no watchdog applies.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; a child
    process (``station --once`` spawned by the daemon, say) must not ping on its behalf.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0 or not os.environ.get("NOTIFY_SOCKET"):
        return None
    return value / 2 / 1_000_000


async def watchdog_task(interval: float) -> None:
    """Ping ``WATCHDOG=1`` every ``interval`` seconds until cancelled (runs on the event loop)."""
    while True:
        watchdog_ping()
        await asyncio.sleep(interval)


class Watchdog:
    """Owner of the watchdog ping task: start it with the loop, stop it on shutdown."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls) -> Watchdog | None:
        """A watchdog at half of ``$WATCHDOG_USEC``, or ``None`` when systemd set none."""
        interval = watchdog_interval()
        return None if interval is None else cls(interval)

    def start(self) -> None:
        """Start pinging from the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                watchdog_task(self.interval), name="sd-watchdog"
            )

    async def stop(self) -> None:
        """Cancel the ping task and wait for it to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
