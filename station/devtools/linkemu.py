"""A cellular link on loopback: an asyncio TCP proxy between station and CSMS that delays, stalls and drops.

    python -m station.devtools.linkemu --to 127.0.0.1:9000 --listen 127.0.0.1:9001 --rtt-ms 150 --jitter-ms 20

Why a proxy and not `tc netem`: traffic control is system-wide and needs root; on a machine shared
with other work it would slow everything down. The proxy shapes only the connections made to it.

What it emulates, per direction of each TCP connection (bytes are never reordered):

- one-way delay and jitter: each chunk is released at `arrival + delay ± jitter`, but never before
  the chunk in front of it (TCP delivers in order, so jitter delays, it never overtakes);
- bandwidth: a chunk occupies the link for `len / bandwidth` before its delay starts;
- loss bursts as stalls: TCP hides a lost segment behind a retransmission, so what the
  application sees is a pause; `stall(seconds)` pauses both directions now, `loss_rate` starts
  such a pause (`loss_stall_s`) at a random chunk;
- black hole: nothing is forwarded and nothing is closed (a NAT box that forgot the mapping);
  bytes, half-closes and resets wait, as retransmissions would, until `restore()`; connections
  opened meanwhile are held too (their handshake never completes);
- cut: every connection is reset at once.

Used by tests/ (a black hole in the middle of a charging session) and tests/bench/ (backlog
under latency, dead connection detection). By hand: SIGUSR1 toggles the black hole, SIGUSR2 cuts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import random
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CHUNK = 65536

_EOF = b""
"""Queued marker: the sender half-closed; forwarded as a half-close after the bytes before it."""


@dataclass(frozen=True)
class LinkProfile:
    """How the link behaves; `rtt_ms` is twice the one-way delay."""

    delay_s: float = 0.0
    """One-way delay, each direction."""
    jitter_s: float = 0.0
    """Each chunk's delay is drawn from delay ± jitter (uniform), never below 0."""
    bandwidth_bps: float | None = None
    """Bits per second, each direction; None: unlimited."""
    loss_rate: float = 0.0
    """Probability per chunk that a loss burst (a stall of `loss_stall_s`) starts at it."""
    loss_stall_s: float = 0.2
    """How long a loss burst stalls the direction (Linux's minimum retransmission timeout)."""

    @classmethod
    def rtt(cls, rtt_ms: float, jitter_ms: float = 0.0, **more: float | None) -> LinkProfile:
        return cls(delay_s=rtt_ms / 2000, jitter_s=jitter_ms / 1000, **more)  # type: ignore[arg-type]


@dataclass
class Event:
    at: float  # time.monotonic()
    kind: str  # accepted, upstream_connected, client_closed, server_closed, cut
    connection: int


class _Direction:
    """One direction of one connection: a queue of (release time, bytes) written in order."""

    def __init__(self, emulator: LinkEmulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 closed_kind: str, connection: int) -> None:
        self.emulator = emulator
        self.reader = reader
        self.writer: asyncio.StreamWriter | None = None  # set once the far side exists
        self.source_writer = writer
        self.closed_kind = closed_kind
        self.connection = connection
        self.queue: deque[tuple[float, bytes | None]] = deque()  # None: the sender reset the connection
        self.wake = asyncio.Event()
        self.last_release = 0.0
        self.link_free = 0.0
        self.stalled_until = 0.0
        self.bytes = 0

    def release_time(self, size: int, now: float) -> float:
        p = self.emulator.profile
        start = now
        if p.bandwidth_bps:
            start = max(now, self.link_free) + size * 8 / p.bandwidth_bps
            self.link_free = start
        delay = p.delay_s
        if p.jitter_s:
            delay = max(0.0, delay + self.emulator.rng.uniform(-p.jitter_s, p.jitter_s))
        if p.loss_rate and self.emulator.rng.random() < p.loss_rate:
            self.stalled_until = max(self.stalled_until, now + p.loss_stall_s)
        release = max(start + delay, self.last_release, self.stalled_until)
        self.last_release = release
        return release

    async def read_loop(self) -> None:
        """Read as fast as the sender writes; stamp each chunk with its release time."""
        try:
            while True:
                data = await self.reader.read(CHUNK)
                now = time.monotonic()
                self.queue.append((self.release_time(len(data), now), data))
                self.wake.set()
                if not data:
                    break
        except (ConnectionError, OSError):
            self.queue.append((max(time.monotonic(), self.last_release), None))
            self.wake.set()
        self.emulator._event(self.closed_kind, self.connection)

    async def write_loop(self) -> None:
        """Deliver each chunk at its release time, unless the link is a black hole or stalled."""
        assert self.writer is not None
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            release, data = self.queue[0]
            await self.emulator._passable(release)
            self.queue.popleft()
            if data is None:
                self.writer.transport.abort()
                return
            if data == _EOF:
                with contextlib.suppress(OSError):
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                return
            self.bytes += len(data)
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, OSError):
                self.source_writer.transport.abort()
                return


class LinkEmulator:
    """The proxy. `async with LinkEmulator(port_of_csms, profile) as link:` then connect to `link.port`."""

    def __init__(self, target_port: int, profile: LinkProfile | None = None, *, target_host: str = "127.0.0.1",
                 host: str = "127.0.0.1", port: int = 0, seed: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.profile = profile or LinkProfile()
        self.host, self.port = host, port
        self.rng = random.Random(seed)
        self.events: list[Event] = []
        self.stalled_until = 0.0
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        self._connections: dict[int, tuple[asyncio.StreamWriter, list[asyncio.StreamWriter], set[asyncio.Task[None]]]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self.black_holed_at: float | None = None

    # ------------------------------------------------------------------ life
    async def start(self) -> LinkEmulator:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        self._open.set()  # held connections see their reset and end
        # The handlers end on their own once reset; cancelling them would make asyncio's stream
        # callback log the cancellation as an error.
        _, pending = await asyncio.wait(self._handlers, timeout=2) if self._handlers else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LinkEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url(self, csms_url: str) -> str:
        """`csms_url` (ws://127.0.0.1:CSMS_PORT/...) pointed at this proxy instead."""
        host, port = self.target
        return csms_url.replace(f"{host}:{port}", f"{self.host}:{self.port}", 1)

    # --------------------------------------------------------------- faults
    def set_profile(self, profile: LinkProfile) -> None:
        """Change delay, jitter, bandwidth or loss; applies to bytes read from now on."""
        self.profile = profile

    def update(self, **changes: float | None) -> None:
        self.profile = dataclasses.replace(self.profile, **changes)  # type: ignore[arg-type]

    def stall(self, seconds: float) -> None:
        """A loss burst now: nothing moves in either direction for `seconds`, then everything does, in order."""
        self.stalled_until = max(self.stalled_until, time.monotonic() + seconds)
        self._changed.set()

    def black_hole(self) -> None:
        """Stop forwarding without closing anything (held bytes flow again after `restore`)."""
        if self._open.is_set():
            self.black_holed_at = time.monotonic()
            self._event("black_hole", 0)
        self._open.clear()

    def restore(self) -> None:
        if not self._open.is_set():
            self._event("restored", 0)
        self.black_holed_at = None
        self._open.set()

    @property
    def is_black_hole(self) -> bool:
        return not self._open.is_set()

    def cut(self) -> None:
        """Reset every connection now (both ends see the connection die)."""
        for cid, (client, upstreams, _) in list(self._connections.items()):
            client.transport.abort()
            for upstream in upstreams:
                upstream.transport.abort()
            self._event("cut", cid)

    # ---------------------------------------------------------- observation
    @property
    def connections(self) -> int:
        """Connections currently open through the proxy."""
        return len(self._connections)

    def first(self, kind: str, since: float = 0.0) -> Event | None:
        return next((e for e in self.events if e.kind == kind and e.at >= since), None)

    async def wait_event(self, kind: str, since: float = 0.0, timeout: float = 30.0) -> Event:
        """The first event `kind` at or after `since` (time.monotonic()), waiting for it if needed."""
        async with asyncio.timeout(timeout):
            while (event := self.first(kind, since)) is None:
                self._changed.clear()
                await self._changed.wait()
        return event

    def _event(self, kind: str, connection: int) -> None:
        self.events.append(Event(time.monotonic(), kind, connection))
        self._changed.set()

    async def _passable(self, release: float) -> None:
        """Return once `release` has passed and the link is not a black hole (re-checked after stalls)."""
        while True:
            await self._open.wait()
            wait = max(release, self.stalled_until) - time.monotonic()
            if wait <= 0:
                if self._open.is_set():
                    return
                continue
            await asyncio.sleep(wait)

    # ------------------------------------------------------------ serving
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        cid = next(self._ids)
        self._event("accepted", cid)
        upstreams: list[asyncio.StreamWriter] = []
        tasks: set[asyncio.Task[None]] = set()
        self._connections[cid] = (writer, upstreams, tasks)
        _no_delay(writer)
        up = _Direction(self, reader, writer, "client_closed", cid)
        up_reader = asyncio.create_task(up.read_loop())
        tasks.add(up_reader)
        try:
            await self._passable(0.0)  # a black hole swallows the handshake of new connections too
            if up_reader.done() and up.queue and up.queue[-1][1] is None:
                return  # the station gave up (reset) before the path came back
            try:
                up_stream, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            upstreams.append(up_writer)
            _no_delay(up_writer)
            self._event("upstream_connected", cid)
            down = _Direction(self, up_stream, up_writer, "server_closed", cid)
            down.writer = writer
            up.writer = up_writer
            tasks.update({asyncio.create_task(up.write_loop()), asyncio.create_task(down.read_loop()),
                          asyncio.create_task(down.write_loop())})
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.transport.abort()
            for w in upstreams:
                w.transport.abort()
            self._connections.pop(cid, None)
            self._handlers.discard(task)


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --------------------------------------------------------------------- by hand
def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m station.devtools.linkemu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", required=True, type=_address, help="the CSMS, HOST:PORT")
    parser.add_argument("--listen", default="127.0.0.1:0", type=_address, help="where stations connect, HOST:PORT")
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--bandwidth-kbps", type=float, default=None)
    parser.add_argument("--loss", type=float, default=0.0, help="probability per chunk of a loss burst")
    parser.add_argument("--loss-stall-ms", type=float, default=200.0)
    return parser


async def _serve(args: argparse.Namespace, announce: Callable[[str], None] = print) -> None:
    profile = LinkProfile.rtt(args.rtt_ms, args.jitter_ms, loss_rate=args.loss, loss_stall_s=args.loss_stall_ms / 1000,
                              bandwidth_bps=args.bandwidth_kbps * 1000 if args.bandwidth_kbps else None)
    link = LinkEmulator(args.to[1], profile, target_host=args.to[0], host=args.listen[0], port=args.listen[1])
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, lambda: link.restore() if link.is_black_hole else link.black_hole())
    loop.add_signal_handler(signal.SIGUSR2, link.cut)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with link:
        announce(f"linkemu: {link.host}:{link.port} -> {args.to[0]}:{args.to[1]}, {profile}")
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(_serve(build_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

